//! Judging a round's uploads: each sale's and void's stored facts are
//! loaded here and `tessera_core::upload::batch::Judging` decides.

use super::*;

impl Round<'_, '_> {
    pub(super) async fn judge(&self, request: &SyncRequest) -> R<Result<Plan, StoreError>> {
        let mut judging = Judging::new(request, self.device);
        if let Err(r) = self.judge_sales(request, &mut judging).await? {
            return Ok(Err(refusal(r)));
        }
        self.judge_voids(request, &mut judging).await?;
        // Each lease's new sales and voids replayed against the lease as it
        // stood at each sale's seq.
        let events =
            judging.lease_events(|id| self.leases.get(id).is_some_and(LeaseState::is_revoked));
        let at_upload = self.leases_at_upload(&events).await?;
        judging.settle(batch::replay_leases(&events, &at_upload));
        Ok(judging.finish(|id| self.leases.get(id)).map_err(refusal))
    }

    pub(super) async fn judge_sales(
        &self,
        request: &SyncRequest,
        judging: &mut Judging<'_>,
    ) -> R<Result<(), BatchRefusal>> {
        let keyring = self.device_keyring().await?;
        let mut older: HashMap<u64, Option<Catalogue>> = HashMap::new();
        for (i, sale) in request.sales.iter().enumerate() {
            match judging.is_new(i, self.known_sale(sale.sale_id).await?) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(r) => return Ok(Err(r)),
            }
            if let Err(r) = judging.seq_is_free(i, self.seq_taken_by(sale.terminal_seq).await?) {
                return Ok(Err(r));
            }
            let tickets_stored = self.stored_tickets(sale).await?;
            let version = sale.catalogue_version;
            if version != 0 && version != self.c.catalogue_version && !older.contains_key(&version)
            {
                let loaded = self.catalogue_version(version).await?;
                older.insert(version, loaded);
            }
            let catalogue = if version == 0 || version == self.c.catalogue_version {
                Some(self.c.catalogue.as_ref())
            } else {
                older.get(&version).and_then(Option::as_ref)
            };
            let facts = SaleFacts {
                catalogue,
                slot_window_minutes: self.slots.get(&sale.slot_id).map(|s| s.slot.window_minutes),
                lease: self.leases.get(&sale.lease_id),
                tickets_stored: &tickets_stored,
            };
            judging.judge_sale(i, &facts, &keyring);
        }
        Ok(Ok(()))
    }

    /// Voids: of this counter's sales, once each, decided by the server.
    pub(super) async fn judge_voids(
        &self,
        request: &SyncRequest,
        judging: &mut Judging<'_>,
    ) -> R<()> {
        for (i, v) in request.voids.iter().enumerate() {
            if self.void_known(v.void_id).await? {
                continue;
            }
            let target = match judging.void_target_here(v.sale_id) {
                Some(target) => target,
                None => self.stored_void_target(v.sale_id).await?,
            };
            let Some(check) = judging.judge_void(i, target) else {
                continue;
            };
            // Only a void the server approved (the supervisor's PIN checked
            // by the server, never by the counter) is applied.
            if let Err(reason) =
                upload::check_void_approval(self.device, v, self.stored_approval(v).await?.as_ref())
            {
                judging.refuse_void(i, reason);
                continue;
            }
            let places = self.void_places(v, &check).await?;
            judging.plan_void(i, &check, places);
        }
        Ok(())
    }

    /// What decides a void's places: its lease revoked or not, its slot's
    /// start, and whether a gate admitted any of its tickets.
    pub(super) async fn void_places(&self, v: &VoidRecord, check: &VoidCheck) -> R<VoidPlaces> {
        let revoked = self
            .leases
            .get(&check.lease)
            .is_some_and(LeaseState::is_revoked);
        let starts = self
            .slots
            .get(&check.slot)
            .map(|s| s.slot.starts_at.as_millisecond())
            .unwrap_or(i64::MIN);
        Ok(batch::decide_void_places(
            v.returned_to_lease,
            revoked,
            starts,
            self.now_ms,
            self.admitted(&check.tickets).await?,
        ))
    }

    /// The leases the replay needs, as they stood at each seq.
    pub(super) async fn leases_at_upload(
        &self,
        events: &BTreeMap<Uuid, Vec<LeaseEvent>>,
    ) -> R<HashMap<Uuid, LeaseAtUpload>> {
        let mut out = HashMap::new();
        for id in events.keys() {
            let Some(lease) = self.leases.get(id) else {
                continue;
            };
            let steps = self.lease_steps(*id).await?;
            out.insert(
                *id,
                LeaseAtUpload {
                    sold: lease.sold,
                    revoked: lease.is_revoked(),
                    history: batch::history_or_now(steps, lease.totals),
                },
            );
        }
        Ok(out)
    }

    pub(super) async fn device_keyring(&self) -> R<KeyRing> {
        let row = self
            .tx
            .query_opt(
                "SELECT k.key_id, k.public_key FROM devices d JOIN signing_keys k ON k.key_id = d.key_id WHERE d.device_id = $1",
                &[&self.device],
            )
            .await?;
        let mut ring = KeyRing::new();
        if let Some(row) = row {
            let id: i32 = row.try_get(0)?;
            let bytes: Vec<u8> = row.try_get(1)?;
            if let (Ok(id), Ok(bytes)) = (u32::try_from(id), <[u8; 32]>::try_from(bytes)) {
                // A revoked key still verifies what the device signed before:
                // uploads are history, not admissions.
                let _ = ring.insert(id, bytes, false);
            }
        }
        Ok(ring)
    }

    pub(super) async fn catalogue_version(&self, version: u64) -> R<Option<Catalogue>> {
        let Ok(v) = i64::try_from(version) else {
            return Ok(None);
        };
        let row = self
            .tx
            .query_opt(
                "SELECT catalogue FROM catalogue_versions WHERE version = $1",
                &[&v],
            )
            .await?;
        Ok(row
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .and_then(|t| serde_json::from_str::<Catalogue>(&t).ok()))
    }

    /// A sale already stored or quarantined under this id.
    pub(super) async fn known_sale(&self, sale_id: Uuid) -> R<Option<KnownSale>> {
        let row = self
            .tx
            .query_opt(
                "SELECT terminal_seq, device_id FROM sales WHERE sale_id = $1
                 UNION ALL SELECT terminal_seq, device_id FROM quarantine WHERE item_id = $1 AND kind = 'sale'
                 LIMIT 1",
                &[&sale_id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let seq: Option<i64> = row.try_get(0)?;
        Ok(Some(KnownSale {
            seq: seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            device: row.try_get(1)?,
        }))
    }

    pub(super) async fn seq_taken_by(&self, seq: u64) -> R<Option<String>> {
        let seq = i64_of(seq)?;
        let row = self
            .tx
            .query_opt(
                "SELECT sale_id FROM sales WHERE device_id = $1 AND terminal_seq = $2
                 UNION ALL SELECT item_id FROM quarantine WHERE device_id = $1 AND kind = 'sale' AND terminal_seq = $2
                 LIMIT 1",
                &[&self.device, &seq],
            )
            .await?;
        Ok(row
            .map(|r| r.try_get::<_, Uuid>(0))
            .transpose()?
            .map(|id| id.to_string()))
    }

    pub(super) async fn stored_tickets(&self, sale: &SaleRecord) -> R<HashSet<Uuid>> {
        if sale.tickets.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<Uuid> = sale.tickets.iter().map(|t| t.ticket_id).collect();
        let rows = self
            .tx
            .query(
                "SELECT ticket_id FROM tickets WHERE ticket_id = ANY($1)",
                &[&ids],
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(SyncError::from))
            .collect()
    }

    pub(super) async fn void_known(&self, void_id: Uuid) -> R<bool> {
        Ok(self
            .tx
            .query_opt(
                "SELECT 1 FROM counter_voids WHERE void_id = $1 UNION ALL SELECT 1 FROM quarantine WHERE item_id = $1 LIMIT 1",
                &[&void_id],
            )
            .await?
            .is_some())
    }

    /// Whether a gate admitted any of these tickets, online or offline.
    pub(super) async fn admitted(&self, tickets: &[Uuid]) -> R<bool> {
        if tickets.is_empty() {
            return Ok(false);
        }
        let row = self
            .tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM scans WHERE ticket_id = ANY($1))
                     OR EXISTS (SELECT 1 FROM redemptions WHERE ticket_id = ANY($1))",
                &[&tickets],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The sale a void names, as the server stores it.
    pub(super) async fn stored_void_target(&self, sale_id: Uuid) -> R<VoidTarget> {
        let row = self
            .tx
            .query_opt(
                "SELECT lease_id, slot_id, admissions, total, voided_at FROM sales WHERE sale_id = $1 AND device_id = $2",
                &[&sale_id, &self.device],
            )
            .await?;
        if let Some(row) = row {
            let tickets = self
                .tx
                .query(
                    "SELECT ticket_id FROM tickets WHERE sale_id = $1",
                    &[&sale_id],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<Vec<Uuid>, _>>()?;
            return Ok(VoidTarget::Sale {
                lease: row.try_get(0)?,
                slot: slot_at(&row, 1)?,
                admissions: u32_at(&row, 2)?,
                total: row.try_get(3)?,
                tickets,
                voided: row.try_get::<_, Option<i64>>(4)?.is_some(),
            });
        }
        let quarantined = self
            .tx
            .query_opt(
                "SELECT terminal_seq FROM quarantine WHERE item_id = $1 AND device_id = $2 AND kind = 'sale'",
                &[&sale_id, &self.device],
            )
            .await?;
        Ok(match quarantined {
            Some(row) => VoidTarget::Quarantined(
                row.try_get::<_, Option<i64>>(0)?
                    .and_then(|s| u64::try_from(s).ok()),
            ),
            None => VoidTarget::Unknown,
        })
    }

    /// The approval a void carries, as the server stored it. A row whose
    /// ids do not read approves nothing: this void is refused, the rest of
    /// the upload goes on.
    pub(super) async fn stored_approval(&self, v: &VoidRecord) -> R<Option<StoredApproval>> {
        let Some(approval) = v.approval_id else {
            return Ok(None);
        };
        let row = self
            .tx
            .query_opt(
                "SELECT device_id, action, subject, approved_by, used_by FROM approvals WHERE approval_id = $1",
                &[&approval],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let subject: String = row.try_get(2)?;
        let used_by: Option<String> = row.try_get(4)?;
        let Ok(subject) = Uuid::parse_str(&subject) else {
            return Ok(None);
        };
        let used_by = match used_by {
            None => None,
            Some(u) => match Uuid::parse_str(&u) {
                Ok(u) => Some(u),
                Err(_) => return Ok(None),
            },
        };
        Ok(Some(StoredApproval {
            device_id: row.try_get(0)?,
            action: row.try_get(1)?,
            subject,
            approved_by: row.try_get(3)?,
            used_by,
        }))
    }

    /// A lease's recorded steps (none for a lease older than the history).
    pub(super) async fn lease_steps(&self, lease: Uuid) -> R<Vec<LeaseStep>> {
        let rows = self
            .tx
            .query(
                // Two steps may share an after_seq (two rounds with no sale between):
                // core keeps their order and the later one counts.
                "SELECT after_seq, granted_total, released_total FROM lease_history
                 WHERE lease_id = $1 ORDER BY after_seq, step",
                &[&lease],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseStep {
                    after_seq: u64_at(r, 0)?,
                    totals: LeaseTotals {
                        granted_total: u32_at(r, 1)?,
                        released_total: u32_at(r, 2)?,
                    },
                })
            })
            .collect()
    }
}
