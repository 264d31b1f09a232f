//! The round's answer to its counter: live slots and tallies,
//! quarantined uploads, and the leases both ends now agree are settled.

use super::*;
use tessera_core::inventory::availability_line;

/// A counter's uploads still in quarantine (`$1` the device, `$2` how many
/// at most), through `quarantine_open_by_device` (V6), not every item it
/// ever had quarantined.
pub const OPEN_QUARANTINE_SQL: &str = "SELECT kind, item_id, terminal_seq, reason FROM quarantine
 WHERE device_id = $1 AND resolved_at IS NULL ORDER BY received_at, terminal_seq LIMIT $2";

impl Round<'_, '_> {
    pub(super) async fn respond(
        &self,
        request: &SyncRequest,
        acks: Acks,
        recalls: HashMap<Uuid, u32>,
    ) -> R<SyncResponse> {
        let reported: HashSet<Uuid> = request.leases.iter().map(|l| l.lease_id).collect();
        let leases = leases::grants_in_sync(
            self.leases.values(),
            self.device,
            self.today,
            &reported,
            &recalls,
        );
        let (slots, tallies) = self.live_slots().await?;
        let (staff, keys) = {
            let staff = self
                .c
                .cache
                .staff
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .for_counters
                .clone();
            (staff, self.c.cache.keys().public.as_ref().clone())
        };
        let version = self.c.catalogue_version;
        Ok(SyncResponse {
            server_time: from_ms(self.now_ms),
            acked_seq: acks.acked_seq,
            sales_stored: acks.sales_stored,
            sales_duplicate: acks.sales_duplicate,
            voids_acked: acks.voids,
            shifts_acked: acks.shifts,
            leases,
            catalogue_version: version,
            catalogue: (version != request.catalogue_version)
                .then(|| self.c.catalogue.as_ref().clone()),
            staff,
            keys,
            slots,
            tallies,
            quarantined: self.quarantined().await?,
            settled_leases: self.settled_leases(),
        })
    }

    /// Today's and tomorrow's slots as they stand after this round, and
    /// their tallies: the counters' from `tallies`, online sales as the
    /// online actor.
    pub(super) async fn live_slots(&self) -> R<(Vec<SlotAvailability>, Tallies)> {
        let from = SlotId::new(self.today, 0).map_err(bookkeeping)?.to_string();
        let after = self
            .today
            .tomorrow()
            .and_then(|d| d.tomorrow())
            .map_err(bookkeeping)?;
        let until = SlotId::new(after, 0).map_err(bookkeeping)?.to_string();
        let rows = self
            .tx
            .query(
                &format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id >= $1 AND slot_id < $2 ORDER BY slot_id"),
                &[&from, &until],
            )
            .await?;
        let mut tallies = Tallies::default();
        for row in self
            .tx
            .query(
                "SELECT slot_id, state FROM tallies WHERE slot_id >= $1 AND slot_id < $2",
                &[&from, &until],
            )
            .await?
        {
            let slot = slot_at(&row, 0)?;
            let state: String = row.try_get(1)?;
            if let Ok(t) = serde_json::from_str(&state) {
                tallies.0.insert(slot, t);
            }
        }
        let mut slots = Vec::with_capacity(rows.len());
        for row in &rows {
            let v = cached_slot(row)?;
            let id = v.slot.id;
            if v.ledger.sold_online > 0 {
                tallies.set_actor(ONLINE_ACTOR, id, u64::from(v.ledger.sold_online), 0);
            }
            slots.push(availability_line(
                &v.slot,
                &v.ledger,
                tallies.net(&id),
                self.now_ms,
            ));
        }
        Ok((slots, tallies))
    }

    /// This counter's uploads still in quarantine, for its status screen.
    pub(super) async fn quarantined(&self) -> R<Vec<Quarantined>> {
        let rows = self
            .tx
            .query(OPEN_QUARANTINE_SQL, &[&self.device, &QUARANTINE_LISTED])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Quarantined {
                    kind: r.try_get(0)?,
                    id: r.try_get(1)?,
                    terminal_seq: r
                        .try_get::<_, Option<i64>>(2)?
                        .and_then(|s| u64::try_from(s).ok()),
                    reason: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The counter's leases whose slot is over and that nothing can change
    /// any more.
    pub(super) fn settled_leases(&self) -> Vec<Uuid> {
        self.leases
            .values()
            .filter(|l| l.device_id == self.device)
            .filter(|l| {
                let over = self
                    .slots
                    .get(&l.slot)
                    .is_some_and(|s| s.slot.is_over(self.now_ms));
                l.is_settled(over)
            })
            .map(|l| l.lease_id)
            .collect()
    }
}
