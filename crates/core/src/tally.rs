//! Live sales tallies: per slot, a grow-only counter per actor (each terminal,
//! and "online" for the server's own channel), merged with the `crdts` crate.
//!
//! A terminal merges the server's tallies with its own to show "places left in
//! the museum" including its unsynced sales; the server merges what terminals
//! report. Tallies are a fast view, never the truth: the sales log is, and the
//! tests check that the two agree after a sync.

use std::collections::BTreeMap;

use crdts::{CmRDT, CvRDT, GCounter};
use serde::{Deserialize, Serialize};

use crate::slot::SlotId;

/// The server's own actor name for online sales.
pub const ONLINE_ACTOR: &str = "online";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SlotTally {
    pub sold: GCounter<String>,
    pub voided: GCounter<String>,
}

impl SlotTally {
    /// Admissions sold and not voided, over every actor.
    pub fn net(&self) -> u64 {
        let sold = to_u64(&self.sold.read());
        let voided = to_u64(&self.voided.read());
        sold.saturating_sub(voided)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tallies(pub BTreeMap<SlotId, SlotTally>);

impl Tallies {
    /// Sets `actor`'s running totals for a slot (totals only grow; a smaller
    /// value is ignored by the merge).
    pub fn set_actor(&mut self, actor: &str, slot: SlotId, sold_total: u64, voided_total: u64) {
        let mut mine = SlotTally::default();
        let dot = mine.sold.inc_many(actor.to_string(), sold_total);
        mine.sold.apply(dot);
        let dot = mine.voided.inc_many(actor.to_string(), voided_total);
        mine.voided.apply(dot);
        self.0.entry(slot).or_default().merge_from(mine);
    }

    pub fn add_sale(&mut self, actor: &str, slot: SlotId, admissions: u64) {
        let entry = self.0.entry(slot).or_default();
        let dot = entry.sold.inc_many(actor.to_string(), admissions);
        entry.sold.apply(dot);
    }

    pub fn add_void(&mut self, actor: &str, slot: SlotId, admissions: u64) {
        let entry = self.0.entry(slot).or_default();
        let dot = entry.voided.inc_many(actor.to_string(), admissions);
        entry.voided.apply(dot);
    }

    pub fn merge(&mut self, other: Tallies) {
        for (slot, tally) in other.0 {
            self.0.entry(slot).or_default().merge_from(tally);
        }
    }

    pub fn net(&self, slot: &SlotId) -> u64 {
        self.0.get(slot).map(SlotTally::net).unwrap_or(0)
    }
}

impl SlotTally {
    fn merge_from(&mut self, other: SlotTally) {
        self.sold.merge(other.sold);
        self.voided.merge(other.voided);
    }
}

fn to_u64(n: &num::BigUint) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_are_idempotent_and_order_free() {
        let slot: SlotId = "2026-12-02T10:00".parse().unwrap();
        let mut a = Tallies::default();
        a.add_sale("t1", slot, 3);
        a.add_sale("t1", slot, 2);
        let mut b = Tallies::default();
        b.add_sale("t2", slot, 4);
        b.add_void("t2", slot, 1);
        let mut x = a.clone();
        x.merge(b.clone());
        x.merge(b.clone());
        let mut y = b.clone();
        y.merge(a.clone());
        assert_eq!(x.net(&slot), 8);
        assert_eq!(y.net(&slot), 8);
        // A stale report of t1 (only 3 sold) does not lower the merged count.
        let mut stale = Tallies::default();
        stale.set_actor("t1", slot, 3, 0);
        x.merge(stale);
        assert_eq!(x.net(&slot), 8);
    }
}
