//! Leases: sizing and grants on the locked slots, the lease history
//! steps, and the slot rows written back.

use super::*;

impl Round<'_, '_> {
    /// Grants on locked slots and recalls for this counter's slots
    /// (`leases::size_slot`); returns the recalls by lease.
    pub(super) async fn size_leases(&mut self, request: &SyncRequest) -> R<HashMap<Uuid, u32>> {
        let online = self.online_devices().await?;
        let mut recalls = HashMap::new();
        for (slot, need) in self.slots_to_size(request) {
            let Some(sizing) = self.decide_size(slot, need, &online) else {
                continue;
            };
            // A grant changes the slot: only on its locked row. A recall is
            // an ask to the counter and changes nothing here.
            if sizing.decision.grant > 0 && self.locked.contains(&slot) {
                self.grant(slot, sizing).await?;
            }
            if let (Some(lease), recall @ 1..) = (sizing.lease, sizing.decision.recall) {
                recalls.insert(lease, recall);
                metrics::counter!("tessera_lease_recalls_total").increment(1);
            }
        }
        Ok(recalls)
    }

    /// Writes a grant, opening the counter's lease for the slot if it has
    /// none.
    pub(super) async fn grant(&mut self, slot: SlotId, sizing: Sizing) -> R<()> {
        let n = sizing.decision.grant;
        let lease_id = match sizing.lease {
            Some(id) => id,
            None => {
                let id = new_id();
                self.tx
                    .execute(
                        "INSERT INTO leases (lease_id, device_id, slot_id, granted_total, released_total, created_at)
                         VALUES ($1, $2, $3, 0, 0, $4)",
                        &[&id, &self.device, &slot.to_string(), &self.now_ms],
                    )
                    .await?;
                self.leases
                    .insert(id, LeaseState::new(id, self.device, slot));
                id
            }
        };
        let row = self
            .slots
            .get_mut(&slot)
            .ok_or_else(|| bookkeeping(format!("slot {slot} vanished")))?;
        row.ledger.grant_lease(n)?;
        self.moved.insert(slot);
        if let Some(lease) = self.leases.get_mut(&lease_id) {
            lease.grant(n);
        }
        self.tx
            .execute(
                "UPDATE leases SET granted_total = granted_total + $2, unused_reported = unused_reported + $2 WHERE lease_id = $1",
                &[&lease_id, &i32_of(n)?],
            )
            .await?;
        metrics::counter!("tessera_lease_grants_total").increment(1);
        Ok(())
    }

    /// Records each of this counter's leases that changed in this round,
    /// tagged with the counter's highest seq: later sales are judged
    /// against it.
    pub(super) async fn record_lease_steps(&self, request: &SyncRequest) -> R<()> {
        let reported: HashSet<Uuid> = request.leases.iter().map(|l| l.lease_id).collect();
        let mine: Vec<(Uuid, LeaseTotals)> = self
            .leases
            .values()
            .filter(|l| leases::steps_in_sync(l, self.device, self.today, &reported))
            .map(|l| (l.lease_id, l.totals))
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = mine.iter().map(|(id, _)| *id).collect();
        let mut last: HashMap<Uuid, LeaseTotals> = HashMap::new();
        for row in self
            .tx
            .query(
                "SELECT DISTINCT ON (lease_id) lease_id, granted_total, released_total FROM lease_history
                 WHERE lease_id = ANY($1) ORDER BY lease_id, after_seq DESC, step DESC",
                &[&ids],
            )
            .await?
        {
            last.insert(
                row.try_get(0)?,
                LeaseTotals {
                    granted_total: u32_at(&row, 1)?,
                    released_total: u32_at(&row, 2)?,
                },
            );
        }
        let after_seq = i64_of(batch::step_seq(request))?;
        for (lease, totals) in mine {
            if batch::needs_step(last.get(&lease).copied(), totals) {
                self.tx
                    .execute(
                        "INSERT INTO lease_history (lease_id, after_seq, granted_total, released_total) VALUES ($1, $2, $3, $4)",
                        &[
                            &lease,
                            &after_seq,
                            &i32_of(totals.granted_total)?,
                            &i32_of(totals.released_total)?,
                        ],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes the ledgers this round moved (their rows are locked), bumps
    /// their versions and tells every process; returns the rows as written.
    pub(super) async fn write_slots(&mut self) -> R<Vec<CachedSlot>> {
        let mut changed = Vec::with_capacity(self.moved.len());
        for slot in &self.moved {
            let Some(row) = self.slots.get(slot) else {
                continue;
            };
            let written = self
                .tx
                .query_one(
                    &format!(
                        "UPDATE slots SET leased = $2, over_capacity = $3, version = version + 1
                         WHERE slot_id = $1 RETURNING {SLOT_COLUMNS}"
                    ),
                    &[
                        &slot.to_string(),
                        &i32_of(row.ledger.leased)?,
                        &i32_of(row.ledger.over_capacity)?,
                    ],
                )
                .await?;
            let written = cached_slot(&written)?;
            self.notify.insert(*slot);
            changed.push(written);
        }
        for row in &changed {
            self.slots.insert(row.slot.id, row.clone());
        }
        if !self.notify.is_empty() {
            self.tx
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[&CHANGES, &slots_payload(&self.notify)],
                )
                .await?;
        }
        Ok(changed)
    }
}
