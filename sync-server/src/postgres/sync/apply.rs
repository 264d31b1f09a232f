//! Writing what judging decided: sales, voids, quarantine, folded lease
//! reports, derived tallies, shifts and the device's sync record.

use super::*;

/// A counter's own tally of the slots named (`$1` the device, `$2` the
/// slots): its sales there and the places its voids gave back, through
/// `sales_by_device_slot` (V6), never every sale the counter ever made.
pub const TALLY_SQL: &str = "SELECT s.slot_id, COALESCE(SUM(s.admissions), 0)::bigint,
        COALESCE(SUM(s.admissions) FILTER (WHERE v.places_returned = 1), 0)::bigint
 FROM sales s LEFT JOIN counter_voids v ON v.sale_id = s.sale_id
 WHERE s.device_id = $1 AND s.slot_id = ANY($2) GROUP BY s.slot_id";

/// A counter's seqs received above its acknowledged one (`$2`), stored or
/// quarantined, through the `(device_id, terminal_seq)` key and
/// `quarantine_by_device`.
pub const RECEIVED_SEQS_SQL: &str = "SELECT terminal_seq FROM sales WHERE device_id = $1 AND terminal_seq > $2
 UNION SELECT terminal_seq FROM quarantine WHERE device_id = $1 AND kind = 'sale' AND terminal_seq > $2
 ORDER BY 1";

/// A counter's highest seq received: the last entry of the same two
/// indexes.
pub const MAX_SEQ_SQL: &str = "SELECT GREATEST(COALESCE((SELECT MAX(terminal_seq) FROM sales WHERE device_id = $1), 0),
                 COALESCE((SELECT MAX(terminal_seq) FROM quarantine WHERE device_id = $1 AND kind = 'sale'), 0))";

impl Round<'_, '_> {
    pub(super) async fn apply(
        &mut self,
        request: &SyncRequest,
        plan: Plan,
        void_ids: Vec<Uuid>,
        shift_ids: Vec<Uuid>,
    ) -> R<Acks> {
        let touched = self.write_sales_and_voids(request, &plan).await?;
        self.write_quarantine(request, &plan.quarantine).await?;
        self.fold_reports(request).await?;
        self.derive_tallies(request, touched).await?;
        self.write_shifts(request, &plan.shifts).await?;
        let acked_seq = self.record_device_sync(request).await?;
        Ok(Acks {
            acked_seq,
            sales_stored: u32::try_from(plan.accepted.len()).unwrap_or(u32::MAX),
            sales_duplicate: plan.duplicates,
            voids: void_ids,
            shifts: shift_ids,
        })
    }

    /// Moves a locked slot's ledger with one change to one of its leases.
    pub(super) fn follow_lease(&mut self, slot: SlotId, change: SlotChange) -> R<()> {
        if change.is_empty() {
            return Ok(());
        }
        if !self.locked.contains(&slot) {
            return Err(bookkeeping(format!(
                "slot {slot} would change without its row locked"
            )));
        }
        if let Some(row) = self.slots.get_mut(&slot) {
            change.apply(&mut row.ledger)?;
            self.moved.insert(slot);
        }
        Ok(())
    }

    /// Accepted sales and voids in the order the counter made them; returns
    /// the slots whose tallies they change.
    pub(super) async fn write_sales_and_voids(
        &mut self,
        request: &SyncRequest,
        plan: &Plan,
    ) -> R<BTreeSet<SlotId>> {
        let key_id: Option<i32> = self
            .tx
            .query_opt(
                "SELECT key_id FROM devices WHERE device_id = $1",
                &[&self.device],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .flatten();
        let mut touched = BTreeSet::new();
        for write in batch::write_order(request, plan) {
            match write {
                Write::Sale(i) => {
                    let sale = &request.sales[i];
                    let key_id = key_id.ok_or_else(|| {
                        bookkeeping("a counter without a ticket key uploaded a sale")
                    })?;
                    touched.insert(sale.slot_id);
                    self.store_sale(key_id, sale).await?;
                }
                Write::Void(k) => {
                    let vp = &plan.voids[k];
                    if let Some(slot) = self.store_void(&request.voids[vp.index], vp).await? {
                        touched.insert(slot);
                    }
                }
            }
        }
        Ok(touched)
    }

    pub(super) async fn store_sale(&mut self, key_id: i32, sale: &SaleRecord) -> R<()> {
        let Some(lease) = self.leases.get_mut(&sale.lease_id) else {
            return Err(bookkeeping(format!("lease {} vanished", sale.lease_id)));
        };
        let counted = lease.count_sale(sale.admissions);
        let slot = lease.slot;
        self.follow_lease(slot, counted.slot)?;
        let admissions = i32_of(sale.admissions)?;
        self.tx
            .execute(
                "INSERT INTO sales (sale_id, device_id, terminal_seq, lease_id, slot_id, shift_id, cashier, created_at, received_at,
                                    lines, total, currency, admissions, payment_method, tendered, change, over_capacity)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
                &[
                    &sale.sale_id,
                    &self.device,
                    &i64_of(sale.terminal_seq)?,
                    &sale.lease_id,
                    &sale.slot_id.to_string(),
                    &sale.shift_id,
                    &sale.cashier,
                    &sale.created_at.as_millisecond(),
                    &self.now_ms,
                    &json(&sale.lines)?,
                    &sale.total.amount,
                    &sale.total.currency.as_str(),
                    &admissions,
                    &sale.payment.method.as_str(),
                    &sale.payment.tendered,
                    &sale.payment.change,
                    &i32_of(counted.over)?,
                ],
            )
            .await?;
        self.tx
            .execute(
                "UPDATE leases SET sold = sold + $2 WHERE lease_id = $1",
                &[&sale.lease_id, &admissions],
            )
            .await?;
        let slot_text = sale.slot_id.to_string();
        for t in &sale.tickets {
            self.tx
                .execute(
                    "INSERT INTO tickets (ticket_id, slot_id, product_id, admits, code, channel, sale_id, key_id)
                     VALUES ($1, $2, $3, $4, $5, 'counter', $6, $7)",
                    &[
                        &t.ticket_id,
                        &slot_text,
                        &t.product_id,
                        &i32::from(t.admits),
                        &t.code,
                        &sale.sale_id,
                        &key_id,
                    ],
                )
                .await?;
        }
        if counted.over > 0 {
            tracing::warn!(sale = %sale.sale_id, over = counted.over, slot = %sale.slot_id, "sale from a revoked lease: accepted, flagged over capacity");
            metrics::counter!("tessera_sales_over_capacity_total").increment(1);
        }
        metrics::counter!("tessera_admissions_sold_total", "channel" => "counter")
            .increment(u64::from(sale.admissions));
        Ok(())
    }

    /// Stores a void as the server decided it; returns the slot whose tally
    /// it changes.
    pub(super) async fn store_void(&mut self, v: &VoidRecord, vp: &VoidPlan) -> R<Option<SlotId>> {
        let returned = vp.places == VoidPlaces::Returned;
        self.write_void(v, returned).await?;
        metrics::counter!("tessera_counter_voids_total").increment(1);
        // Its tickets no longer admit: every process's gates re-fetch their
        // voided lists (PostgreSQL folds a round's identical NOTIFYs).
        self.tx
            .execute(
                "SELECT pg_notify($1, $2)",
                &[
                    &crate::postgres::schema::CHANGES,
                    &crate::postgres::cache::topic_payload(
                        tessera_core::api::events::DeviceTopic::Voided,
                    ),
                ],
            )
            .await?;
        let Some(lease) = self.leases.get_mut(&vp.lease) else {
            return Ok(None);
        };
        let counted = lease.count_void(vp.places, vp.admissions);
        let (slot, sold, kept, revoked_escrow) =
            (lease.slot, lease.sold, lease.kept, lease.revoked_escrow);
        if counted.kept_aside {
            tracing::warn!(void = %v.void_id, sale = %v.sale_id, "void of an admitted or started ticket: its places stay out of sale");
        }
        self.follow_lease(slot, counted.slot)?;
        self.tx
            .execute(
                "UPDATE leases SET sold = $2, kept = $3, revoked_escrow = $4 WHERE lease_id = $1",
                &[
                    &vp.lease,
                    &i32_of(sold)?,
                    &i32_of(kept)?,
                    &revoked_escrow.map(i32_of).transpose()?,
                ],
            )
            .await?;
        if let Some(overflow) = counted.reflag_to {
            self.reflag(vp.lease, v.sale_id, overflow).await?;
        }
        Ok(returned.then_some(slot))
    }

    pub(super) async fn write_void(&self, v: &VoidRecord, returned: bool) -> R<()> {
        // The approver the server verified, not the name the counter sent.
        let mut approved_by = v.approved_by.clone();
        if let Some(approval) = v.approval_id {
            self.tx
                .execute(
                    "UPDATE approvals SET used_by = $2 WHERE approval_id = $1 AND used_by IS NULL",
                    &[&approval, &v.void_id.to_string()],
                )
                .await?;
            if let Some(row) = self
                .tx
                .query_opt(
                    "SELECT approved_by FROM approvals WHERE approval_id = $1",
                    &[&approval],
                )
                .await?
            {
                approved_by = row.try_get(0)?;
            }
        }
        self.tx
            .execute(
                "INSERT INTO counter_voids (void_id, sale_id, device_id, after_seq, at, shift_id, approved_by, reason,
                                            returned_to_lease, refund, refund_method, received_at, places_returned)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    &v.void_id,
                    &v.sale_id,
                    &self.device,
                    &i64_of(v.after_seq)?,
                    &v.at.as_millisecond(),
                    &v.shift_id,
                    &approved_by,
                    &v.reason,
                    &i32::from(v.returned_to_lease),
                    &v.refund,
                    &v.refund_method.as_str(),
                    &self.now_ms,
                    &i32::from(returned),
                ],
            )
            .await?;
        // Voided as of the server's receipt: the counter's clock stays in
        // counter_voids.at.
        self.tx
            .execute(
                "UPDATE sales SET voided_at = $2 WHERE sale_id = $1",
                &[&v.sale_id, &self.now_ms],
            )
            .await?;
        self.tx
            .execute(
                "UPDATE tickets SET voided_at = $2 WHERE sale_id = $1",
                &[&v.sale_id, &self.now_ms],
            )
            .await?;
        Ok(())
    }

    /// After a void on a revoked lease, its sales' over-capacity flags follow
    /// what the lease is still over (`reconcile::lower_flags`).
    pub(super) async fn reflag(&self, lease: Uuid, voided_sale: Uuid, overflow: u32) -> R<()> {
        let rows = self
            .tx
            .query(
                "SELECT sale_id, over_capacity FROM sales WHERE lease_id = $1 AND over_capacity > 0 ORDER BY terminal_seq DESC",
                &[&lease],
            )
            .await?;
        let flagged = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, u32_at(r, 1)?)))
            .collect::<R<Vec<(Uuid, u32)>>>()?;
        for (sale, over) in reconcile::lower_flags(&flagged, voided_sale, overflow) {
            self.tx
                .execute(
                    "UPDATE sales SET over_capacity = $2 WHERE sale_id = $1",
                    &[&sale, &i32_of(over)?],
                )
                .await?;
        }
        Ok(())
    }

    pub(super) async fn write_quarantine(
        &self,
        request: &SyncRequest,
        quarantine: &[Quarantine],
    ) -> R<()> {
        for q in quarantine {
            let q = QuarantineItem::of(request, q).map_err(bookkeeping)?;
            self.tx
                .execute(
                    "INSERT INTO quarantine (item_id, kind, device_id, terminal_seq, slot_id, reason, body, device_at, received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (item_id) DO NOTHING",
                    &[
                        &q.id,
                        &q.kind,
                        &self.device,
                        &q.seq.map(i64_of).transpose()?,
                        &q.slot.map(|s| s.to_string()),
                        &q.reason,
                        &q.body,
                        &q.device_at,
                        &self.now_ms,
                    ],
                )
                .await?;
        }
        Ok(())
    }

    /// Folds each lease report into its lease (`reconcile::fold_report`).
    pub(super) async fn fold_reports(&mut self, request: &SyncRequest) -> R<()> {
        for report in &request.leases {
            let Some(lease) = self.leases.get_mut(&report.lease_id) else {
                continue;
            };
            let before = (lease.totals.released_total, lease.unused_reported);
            let change = reconcile::fold_report(lease, report);
            let (slot, released, unused) = (
                lease.slot,
                lease.totals.released_total,
                lease.unused_reported,
            );
            self.follow_lease(slot, change)?;
            // A report that changes nothing writes nothing: a round costs
            // what is live, not the counter's past.
            if before == (released, unused) {
                continue;
            }
            self.tx
                .execute(
                    "UPDATE leases SET released_total = $2, unused_reported = $3 WHERE lease_id = $1",
                    &[&report.lease_id, &i32_of(released)?, &i32_of(unused)?],
                )
                .await?;
        }
        Ok(())
    }

    /// The counter's live tallies, derived from what the server stored
    /// (never taken from the counter's word); what it reported is compared
    /// and a difference logged. Written for the slots this round changed
    /// (their rows are locked, so two rounds never write one tally at once);
    /// another slot's tally already says what its sales log says.
    pub(super) async fn derive_tallies(
        &mut self,
        request: &SyncRequest,
        touched: BTreeSet<SlotId>,
    ) -> R<()> {
        let mut slots = touched.clone();
        slots.extend(
            request
                .own_tallies
                .keys()
                .filter(|s| self.slots.contains_key(s)),
        );
        if slots.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = slots.iter().map(ToString::to_string).collect();
        let rows = self.tx.query(TALLY_SQL, &[&self.device, &ids]).await?;
        let mut derived: BTreeMap<SlotId, ActorTally> =
            slots.iter().map(|s| (*s, ActorTally::default())).collect();
        for row in &rows {
            derived.insert(
                slot_at(row, 0)?,
                ActorTally {
                    sold: u64_at(row, 1)?,
                    voided: u64_at(row, 2)?,
                },
            );
        }
        let dev = self.device.to_string();
        for (slot, d) in &derived {
            let reported = request.own_tallies.get(slot);
            if reconcile::tally_differs(reported, *d) {
                tracing::warn!(device = %dev, %slot, ?reported, derived = ?d,
                    "counter's tallies differ from its uploads; the server's count is used");
                metrics::counter!("tessera_tally_mismatch_total").increment(1);
            }
        }
        let write: Vec<String> = touched
            .iter()
            .filter(|s| self.locked.contains(s))
            .map(ToString::to_string)
            .collect();
        if write.is_empty() {
            return Ok(());
        }
        let mut tallies = Tallies::default();
        for row in self
            .tx
            .query(
                "SELECT slot_id, state FROM tallies WHERE slot_id = ANY($1)",
                &[&write],
            )
            .await?
        {
            let slot = slot_at(&row, 0)?;
            let state: String = row.try_get(1)?;
            match serde_json::from_str(&state) {
                Ok(t) => {
                    tallies.0.insert(slot, t);
                }
                Err(e) => {
                    tracing::warn!(%slot, error = %e, "unreadable tally; it rebuilds as counters sync")
                }
            }
        }
        for slot in touched.iter().filter(|s| self.locked.contains(s)) {
            let d = derived.get(slot).copied().unwrap_or_default();
            tallies.set_actor(&dev, *slot, d.sold, d.voided);
            let Some(state) = tallies.0.get(slot) else {
                continue;
            };
            self.tx
                .execute(
                    "INSERT INTO tallies (slot_id, state) VALUES ($1, $2)
                     ON CONFLICT (slot_id) DO UPDATE SET state = excluded.state",
                    &[&slot.to_string(), &json(state)?],
                )
                .await?;
            self.notify.insert(*slot);
        }
        Ok(())
    }

    pub(super) async fn write_shifts(&self, request: &SyncRequest, shifts: &[usize]) -> R<()> {
        for &i in shifts {
            let s = &request.shifts[i];
            let sales_count = i32::try_from(s.sales_count)
                .map_err(|_| bookkeeping("shift sales count out of range"))?;
            let voids_count = i32::try_from(s.voids_count)
                .map_err(|_| bookkeeping("shift voids count out of range"))?;
            self.tx
                .execute(
                    "INSERT INTO shifts (shift_id, device_id, cashier, opened_at, closed_at, float, cash_sales, card_sales,
                        cash_refunds, card_refunds, expected_cash, counted_cash, first_seq, last_seq, sales_count, voids_count, received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                     ON CONFLICT (shift_id) DO NOTHING",
                    &[
                        &s.shift_id,
                        &self.device,
                        &s.cashier,
                        &s.opened_at.as_millisecond(),
                        &s.closed_at.as_millisecond(),
                        &s.float,
                        &s.cash_sales,
                        &s.card_sales,
                        &s.cash_refunds,
                        &s.card_refunds,
                        &s.expected_cash,
                        &s.counted_cash,
                        &s.first_seq.map(i64_of).transpose()?,
                        &s.last_seq.map(i64_of).transpose()?,
                        &sales_count,
                        &voids_count,
                        &self.now_ms,
                    ],
                )
                .await?;
        }
        Ok(())
    }

    /// The counter's sync record (its row is locked by this round); returns
    /// the acknowledged seq: the highest below which nothing is missing,
    /// stored and quarantined sales both counting as received.
    pub(super) async fn record_device_sync(&self, request: &SyncRequest) -> R<u64> {
        let open_shift = match &request.open_shift {
            Some(s) if batch::open_shift_storable(s) => Some(json(s)?),
            Some(_) => {
                tracing::warn!(device = %self.device, "open shift out of range; not stored");
                None
            }
            None => None,
        };
        let row = self
            .tx
            .query_one(
                "SELECT acked_seq FROM device_sync WHERE device_id = $1",
                &[&self.device],
            )
            .await?;
        let before: i64 = row.try_get(0)?;
        let seqs = self
            .tx
            .query(RECEIVED_SEQS_SQL, &[&self.device, &before])
            .await?;
        let acked = batch::contiguous_ack(
            u64::try_from(before).unwrap_or(0),
            seqs.iter().map(|r| u64_at(r, 0)),
        )?;
        let row = self.tx.query_one(MAX_SEQ_SQL, &[&self.device]).await?;
        let max_seq: i64 = row.try_get(0)?;
        let reported = i64_of(request.last_seq)?.max(max_seq);
        self.tx
            .execute(
                "UPDATE device_sync SET acked_seq = $2, max_seq = $3, last_sync_at = $4,
                     reported_seq = GREATEST(reported_seq, $5), open_shift = $6
                 WHERE device_id = $1",
                &[
                    &self.device,
                    &i64_of(acked)?,
                    &max_seq,
                    &self.now_ms,
                    &reported,
                    &open_shift,
                ],
            )
            .await?;
        Ok(acked)
    }
}
