//! Locking a counter's round and loading what its rules need: the
//! device row, the slots it touches (locked in slot-id order), the leases
//! of its live slots, and the slots worth sizing.

use super::*;

impl Round<'_, '_> {
    /// Serialises this counter's rounds across processes.
    pub(super) async fn lock_device(&self) -> R<()> {
        self.tx
            .execute(
                "INSERT INTO device_sync (device_id, last_sync_at) VALUES ($1, $2) ON CONFLICT (device_id) DO NOTHING",
                &[&self.device, &self.now_ms],
            )
            .await?;
        self.tx
            .query_one(
                "SELECT 1 FROM device_sync WHERE device_id = $1 FOR UPDATE",
                &[&self.device],
            )
            .await?;
        Ok(())
    }

    pub(super) fn first_live_slot(&self) -> R<SlotId> {
        leases::first_live_slot(self.today).map_err(bookkeeping)
    }

    /// Loads the counter's live leases and the slots the round concerns,
    /// then locks (in slot order) the slots it may change and re-reads them
    /// and their leases.
    pub(super) async fn load_and_lock(&mut self, request: &SyncRequest) -> R<()> {
        let first = self.first_live_slot()?.to_string();
        let own = self
            .tx
            .query(&own_leases_sql(), &[&self.device, &first])
            .await?;
        for row in &own {
            let lease = lease_from_row(row)?;
            self.leases.insert(lease.lease_id, lease);
        }
        // Slots the upload changes: its sales', its reports', its voids'
        // (as stored, whatever the body claims).
        let mut upload: BTreeSet<SlotId> = BTreeSet::new();
        upload.extend(request.sales.iter().map(|s| s.slot_id));
        upload.extend(request.leases.iter().map(|l| l.slot_id));
        let named: Vec<Uuid> = request
            .sales
            .iter()
            .map(|s| s.lease_id)
            .chain(request.leases.iter().map(|l| l.lease_id))
            .filter(|id| !self.leases.contains_key(id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !named.is_empty() {
            for row in self
                .tx
                .query(
                    "SELECT slot_id FROM leases WHERE lease_id = ANY($1)",
                    &[&named],
                )
                .await?
            {
                upload.insert(slot_at(&row, 0)?);
            }
        }
        let voided: Vec<Uuid> = request.voids.iter().map(|v| v.sale_id).collect();
        if !voided.is_empty() {
            for row in self
                .tx
                .query(
                    "SELECT DISTINCT slot_id FROM sales WHERE sale_id = ANY($1)",
                    &[&voided],
                )
                .await?
            {
                upload.insert(slot_at(&row, 0)?);
            }
        }
        // Slots sizing looks at, and those of the counter's leases (the
        // answer says which are over); read without a lock.
        let mut seen: BTreeSet<SlotId> = request.wants.iter().map(|w| w.slot_id).collect();
        seen.extend(self.leases.values().map(|l| l.slot));
        self.read_slots(&seen, false).await?;
        let predicted = self.predicted_grants(request).await?;
        let lock: BTreeSet<SlotId> = upload.union(&predicted).copied().collect();
        self.read_slots(&lock, true).await?;
        Ok(())
    }

    /// Reads slot rows and all their leases; `lock`: `FOR UPDATE`, in slot
    /// order, before any lease row.
    pub(super) async fn read_slots(&mut self, ids: &BTreeSet<SlotId>, lock: bool) -> R<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let sql = if lock {
            format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = ANY($1) ORDER BY slot_id FOR UPDATE")
        } else {
            format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = ANY($1)")
        };
        for row in self.tx.query(&sql, &[&ids]).await? {
            let slot = cached_slot(&row)?;
            if lock {
                self.locked.insert(slot.slot.id);
            }
            self.slots.insert(slot.slot.id, slot);
        }
        for row in self.tx.query(&slot_leases_sql(), &[&ids]).await? {
            let lease = lease_from_row(&row)?;
            self.leases.insert(lease.lease_id, lease);
        }
        Ok(())
    }

    /// Counters heard from recently, this one included.
    pub(super) async fn online_devices(&self) -> R<HashSet<Uuid>> {
        let rows = self
            .tx
            .query(
                "SELECT device_id, last_sync_at FROM device_sync WHERE last_sync_at >= $1",
                &[&(self.now_ms - leases::ONLINE_WINDOW_MS)],
            )
            .await?;
        let mut last: HashMap<Uuid, i64> = HashMap::with_capacity(rows.len() + 1);
        for row in &rows {
            last.insert(row.try_get(0)?, row.try_get(1)?);
        }
        last.insert(self.device, self.now_ms);
        Ok(leases::online_devices(&last, self.now_ms))
    }

    /// The slots to size for this counter (`leases::slots_to_size`) and what
    /// a sale there waits for.
    pub(super) fn slots_to_size(&self, request: &SyncRequest) -> BTreeMap<SlotId, u32> {
        leases::slots_to_size(
            &request.wants,
            &self.c.catalogue,
            |s| self.slots.get(s).map(|row| row.ledger.available()),
            self.leases.values().filter(|l| l.device_id == self.device),
        )
    }

    pub(super) fn decide_size(
        &self,
        slot: SlotId,
        need: u32,
        online: &HashSet<Uuid>,
    ) -> Option<Sizing> {
        let row = self.slots.get(&slot)?;
        let of_slot: Vec<&LeaseState> = self.leases.values().filter(|l| l.slot == slot).collect();
        leases::size_slot(
            &self.c.policy,
            &SlotToSize {
                device: self.device,
                need,
                ends_at_ms: row.slot.ends_at.as_millisecond(),
                available: row.ledger.available(),
                leases: &of_slot,
                online,
                now_ms: self.now_ms,
            },
        )
    }

    /// Slots where sizing, on rows read without a lock, would grant: they
    /// are locked with the upload's slots and sized again on fresh rows.
    pub(super) async fn predicted_grants(&self, request: &SyncRequest) -> R<BTreeSet<SlotId>> {
        let online = self.online_devices().await?;
        Ok(self
            .slots_to_size(request)
            .into_iter()
            .filter(|(slot, need)| {
                self.decide_size(*slot, *need, &online)
                    .is_some_and(|s| s.decision.grant > 0)
            })
            .map(|(slot, _)| slot)
            .collect())
    }
}
