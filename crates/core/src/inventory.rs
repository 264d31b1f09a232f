//! The one inventory of a slot, and how counters' leases draw on it.
//!
//! Per slot the server holds `capacity`, `sold_online`, `held_online` (unexpired
//! checkout holds) and `leased` (the sum of what every live lease escrows). The
//! invariant, checked by every write:
//!
//! ```text
//! sold_online + held_online + leased <= capacity
//! ```
//!
//! Counter sales count against their lease, never on top. A lease's escrow is
//! `granted_total - released_total`: both totals only grow, so a terminal and
//! the server can exchange them any number of times, in any order, and agree by
//! taking the maximum. The server never shrinks a lease on its own clock; it
//! *recalls* (asks), and the terminal releases what it has not sold.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::online::SlotAvailability;
use crate::slot::Slot;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotLedger {
    pub capacity: u32,
    pub sold_online: u32,
    pub held_online: u32,
    /// Σ escrow of the slot's leases (sold or not by their terminals).
    pub leased: u32,
    /// Admissions sold from a revoked lease after its revocation: accepted so
    /// no sale is lost, but they were never inside the escrow. Reported, and
    /// kept out of what may still be sold.
    pub over_capacity: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum InventoryError {
    #[error("sold out: {requested} places requested, {available} left")]
    SoldOut { requested: u32, available: u32 },
    #[error(
        "capacity cannot be set to {requested}: {committed} places are taken \
         ({sold_online} sold online, {held_online} held in online checkouts, {leased} leased to counters, \
         {over_capacity} sold by revoked counters beyond their leases)"
    )]
    CapacityBelowCommitted {
        requested: u32,
        committed: u64,
        sold_online: u32,
        held_online: u32,
        leased: u32,
        over_capacity: u32,
    },
    #[error("inventory bookkeeping error: {0}")]
    Bookkeeping(&'static str),
    #[error("invariant broken: {sold_online} sold + {held_online} held + {leased} leased > capacity {capacity}")]
    InvariantBroken {
        capacity: u32,
        sold_online: u32,
        held_online: u32,
        leased: u32,
    },
}

impl SlotLedger {
    pub fn with_capacity(capacity: u32) -> Self {
        SlotLedger {
            capacity,
            ..SlotLedger::default()
        }
    }

    /// Places promised to someone: sold online, in a checkout, or escrowed.
    pub fn committed(&self) -> u64 {
        u64::from(self.sold_online) + u64::from(self.held_online) + u64::from(self.leased)
    }

    /// Places nobody has yet: what online can hold and leases can be granted from.
    pub fn available(&self) -> u32 {
        let taken = self.committed() + u64::from(self.over_capacity);
        u64::from(self.capacity).saturating_sub(taken) as u32
    }

    pub fn check(&self) -> Result<(), InventoryError> {
        if self.committed() > u64::from(self.capacity) {
            return Err(InventoryError::InvariantBroken {
                capacity: self.capacity,
                sold_online: self.sold_online,
                held_online: self.held_online,
                leased: self.leased,
            });
        }
        Ok(())
    }

    fn take(&self, n: u32) -> Result<(), InventoryError> {
        let available = self.available();
        if n > available {
            return Err(InventoryError::SoldOut {
                requested: n,
                available,
            });
        }
        Ok(())
    }

    /// An online checkout reserves `n` places.
    pub fn hold(&mut self, n: u32) -> Result<(), InventoryError> {
        self.take(n)?;
        self.held_online += n;
        Ok(())
    }

    /// A hold expired or was cancelled: its places return.
    pub fn release_hold(&mut self, n: u32) -> Result<(), InventoryError> {
        self.held_online = self
            .held_online
            .checked_sub(n)
            .ok_or(InventoryError::Bookkeeping("released more than was held"))?;
        Ok(())
    }

    /// A hold became a paid order: held places become sold ones.
    pub fn confirm_hold(&mut self, n: u32) -> Result<(), InventoryError> {
        self.release_hold(n)?;
        self.sold_online += n;
        Ok(())
    }

    /// An online order was cancelled (refund): its places return.
    pub fn unsell_online(&mut self, n: u32) -> Result<(), InventoryError> {
        self.sold_online = self
            .sold_online
            .checked_sub(n)
            .ok_or(InventoryError::Bookkeeping("cancelled more than was sold"))?;
        Ok(())
    }

    pub fn grant_lease(&mut self, n: u32) -> Result<(), InventoryError> {
        self.take(n)?;
        self.leased += n;
        Ok(())
    }

    /// A terminal released unsold places, or a supervisor revoked a lease.
    pub fn shrink_lease(&mut self, n: u32) -> Result<(), InventoryError> {
        self.leased = self
            .leased
            .checked_sub(n)
            .ok_or(InventoryError::Bookkeeping(
                "shrank leases by more than they hold",
            ))?;
        Ok(())
    }

    pub fn set_capacity(&mut self, capacity: u32) -> Result<(), InventoryError> {
        let committed = self.committed() + u64::from(self.over_capacity);
        if u64::from(capacity) < committed {
            return Err(InventoryError::CapacityBelowCommitted {
                requested: capacity,
                committed,
                sold_online: self.sold_online,
                held_online: self.held_online,
                leased: self.leased,
                over_capacity: self.over_capacity,
            });
        }
        self.capacity = capacity;
        Ok(())
    }
}

/// A lease as both ends count it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTotals {
    /// Every admission ever granted to this lease.
    pub granted_total: u32,
    /// Every admission the terminal ever gave back.
    pub released_total: u32,
}

impl LeaseTotals {
    pub fn escrow(&self) -> u32 {
        self.granted_total.saturating_sub(self.released_total)
    }

    /// Merges another view of the same lease: both totals only grow.
    pub fn merge(&mut self, other: LeaseTotals) {
        self.granted_total = self.granted_total.max(other.granted_total);
        self.released_total = self.released_total.max(other.released_total);
    }
}

/// How the server sizes leases.
///
/// The rule: let `pool` be the places nobody has sold yet that are either
/// free or sitting unused in the leases of online terminals. Each terminal's
/// target is `pool / (share_divisor × (terminals + 1))`, at most `max_lease`.
/// Far from full that is generous (a terminal rarely waits for the network);
/// as the slot fills the target shrinks, and once fewer places are left than
/// `share_divisor` shares per terminal it is zero: terminals then hold only
/// what a waiting sale needs, so at sell-out almost nothing is stranded in
/// leases. A terminal holding more than twice its target is recalled down to
/// the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasePolicy {
    pub share_divisor: u32,
    pub max_lease: u32,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy {
            share_divisor: 4,
            max_lease: 40,
        }
    }
}

/// What the server tells one terminal about one slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseDecision {
    pub grant: u32,
    pub recall: u32,
}

impl LeasePolicy {
    pub fn target(&self, pool: u32, terminals: u32) -> u32 {
        let shares = self.share_divisor.max(1).saturating_mul(terminals + 1);
        (pool / shares).min(self.max_lease)
    }

    /// `unused`: what the terminal says it can still sell from its lease;
    /// `need`: places a sale at its counter is waiting for (0 if none).
    pub fn decide(
        &self,
        available: u32,
        pool: u32,
        terminals: u32,
        unused: u32,
        need: u32,
    ) -> LeaseDecision {
        let target = self.target(pool, terminals);
        let want = target.max(need);
        if unused < want {
            return LeaseDecision {
                grant: (want - unused).min(available),
                recall: 0,
            };
        }
        let keep = if target == 0 { need } else { want };
        let too_much = if target == 0 {
            unused > need
        } else {
            unused > 2 * want
        };
        if too_much {
            return LeaseDecision {
                grant: 0,
                recall: unused - keep,
            };
        }
        LeaseDecision::default()
    }
}

/// A checkout hold's time to live, in milliseconds (a configured duration
/// too long for an `i64` is "for ever", not a wrap-around).
pub fn hold_ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// When a hold taken at `now_ms` runs out.
pub fn hold_expires_at(now_ms: i64, ttl_ms: i64) -> i64 {
    now_ms.saturating_add(ttl_ms)
}

/// Whether a hold that runs out at `expires_ms` still keeps its places at
/// `now_ms`. From that moment on, its places count as free (whether or not
/// a sweep has released them yet) and it can no longer be confirmed. The
/// SQL twin, in every query that selects open or due holds, is
/// `expires_at > now` (open) and `expires_at <= now` (due).
pub fn hold_is_open(expires_ms: i64, now_ms: i64) -> bool {
    now_ms < expires_ms
}

/// One slot's line of availability, as the shop, the booking API and the
/// counters see it: what the ledger leaves (nothing once the window is
/// over) and what has been sold on every channel, net of returns. The
/// caller's `ledger` counts only holds still open at `now_ms`.
pub fn availability_line(
    slot: &Slot,
    ledger: &SlotLedger,
    sold: u64,
    now_ms: i64,
) -> SlotAvailability {
    let past = slot.is_over(now_ms);
    SlotAvailability {
        slot_id: slot.id,
        starts_at: slot.starts_at,
        ends_at: slot.ends_at,
        capacity: ledger.capacity,
        available: if past { 0 } else { ledger.available() },
        sold: u32::try_from(sold).unwrap_or(u32::MAX),
        past,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    enum Op {
        Hold(u32),
        ReleaseHold(usize),
        ConfirmHold(usize),
        SyncTerminal {
            terminal: usize,
            sell: u32,
            need: u32,
        },
        Recall {
            terminal: usize,
        },
        Revoke {
            terminal: usize,
        },
        SetCapacity(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u32..30).prop_map(Op::Hold),
            any::<usize>().prop_map(Op::ReleaseHold),
            any::<usize>().prop_map(Op::ConfirmHold),
            (0usize..4, 0u32..20, 0u32..10).prop_map(|(terminal, sell, need)| Op::SyncTerminal {
                terminal,
                sell,
                need
            }),
            (0usize..4).prop_map(|terminal| Op::Recall { terminal }),
            (0usize..4).prop_map(|terminal| Op::Revoke { terminal }),
            (0u32..400).prop_map(Op::SetCapacity),
        ]
    }

    /// A terminal's own view: what it was granted, released and sold.
    #[derive(Default, Debug)]
    struct Terminal {
        totals: LeaseTotals,
        sold: u32,
        revoked: bool,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn no_sequence_of_operations_breaks_the_invariant(capacity in 0u32..300, ops in prop::collection::vec(op(), 1..200)) {
            let policy = LeasePolicy::default();
            let mut ledger = SlotLedger::with_capacity(capacity);
            let mut holds: Vec<u32> = Vec::new();
            let mut terminals: BTreeMap<usize, Terminal> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Hold(n) => {
                        let before = ledger;
                        match ledger.hold(n) {
                            Ok(()) => holds.push(n),
                            Err(InventoryError::SoldOut { available, .. }) => {
                                prop_assert!(n > available);
                                prop_assert_eq!(ledger, before);
                            }
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                    Op::ReleaseHold(i) if !holds.is_empty() => {
                        let n = holds.remove(i % holds.len());
                        ledger.release_hold(n).unwrap();
                    }
                    Op::ConfirmHold(i) if !holds.is_empty() => {
                        let n = holds.remove(i % holds.len());
                        ledger.confirm_hold(n).unwrap();
                    }
                    Op::SyncTerminal { terminal, sell, need } => {
                        let t = terminals.entry(terminal).or_default();
                        if t.revoked { continue; }
                        // The terminal sells only within its escrow.
                        let unused = t.totals.escrow() - t.sold;
                        t.sold += sell.min(unused);
                        let unused = t.totals.escrow() - t.sold;
                        let pool = ledger.available() + unused;
                        let d = policy.decide(ledger.available(), pool, 3, unused, need);
                        if d.grant > 0 {
                            ledger.grant_lease(d.grant).unwrap();
                            t.totals.granted_total += d.grant;
                        }
                        if d.recall > 0 {
                            prop_assert!(d.recall <= unused);
                            t.totals.released_total += d.recall;
                            ledger.shrink_lease(d.recall).unwrap();
                        }
                    }
                    Op::Recall { terminal } => {
                        if let Some(t) = terminals.get_mut(&terminal) {
                            if t.revoked { continue; }
                            let unused = t.totals.escrow() - t.sold;
                            t.totals.released_total += unused;
                            ledger.shrink_lease(unused).unwrap();
                        }
                    }
                    Op::Revoke { terminal } => {
                        if let Some(t) = terminals.get_mut(&terminal) {
                            if t.revoked { continue; }
                            // The server knows only what was reported: all of it here.
                            let unused = t.totals.escrow() - t.sold;
                            ledger.shrink_lease(unused).unwrap();
                            t.revoked = true;
                        }
                    }
                    Op::SetCapacity(n) => {
                        let before = ledger;
                        if ledger.set_capacity(n).is_err() {
                            prop_assert!(u64::from(n) < before.committed());
                            prop_assert_eq!(ledger, before);
                        }
                    }
                    _ => {}
                }
                prop_assert!(ledger.check().is_ok(), "{:?}", ledger);
                let escrow: u32 = terminals.values().map(|t| if t.revoked { t.sold } else { t.totals.escrow() }).sum();
                prop_assert_eq!(ledger.leased, escrow);
                prop_assert_eq!(ledger.held_online, holds.iter().sum::<u32>());
                // What was actually sold, by both channels, plus open checkouts, fits.
                let sold: u32 = ledger.sold_online + terminals.values().map(|t| t.sold).sum::<u32>();
                prop_assert!(u64::from(sold) + u64::from(ledger.held_online) <= u64::from(ledger.capacity));
            }
        }

        #[test]
        fn lease_totals_merge_in_any_order(a in any::<(u16, u16)>(), b in any::<(u16, u16)>(), c in any::<(u16, u16)>()) {
            let t = |(g, r): (u16, u16)| LeaseTotals { granted_total: g.into(), released_total: r.into() };
            let mut x = t(a); x.merge(t(b)); x.merge(t(c));
            let mut y = t(c); y.merge(t(a)); y.merge(t(b)); y.merge(t(b));
            prop_assert_eq!(x, y);
        }
    }

    #[test]
    fn leases_shrink_as_the_slot_fills() {
        let p = LeasePolicy::default();
        assert_eq!(p.target(1000, 3), 40);
        assert_eq!(p.target(160, 3), 10);
        assert_eq!(p.target(15, 3), 0);
        // A waiting customer is served even when the target is zero.
        assert_eq!(
            p.decide(5, 5, 3, 0, 2),
            LeaseDecision {
                grant: 2,
                recall: 0
            }
        );
        // Near the end, unused places are recalled.
        assert_eq!(
            p.decide(0, 10, 3, 8, 0),
            LeaseDecision {
                grant: 0,
                recall: 8
            }
        );
        // Far from full, a modest surplus is left alone.
        assert_eq!(p.decide(900, 900, 3, 60, 0), LeaseDecision::default());
    }

    #[test]
    fn capacity_refusal_names_the_numbers() {
        let mut l = SlotLedger::with_capacity(100);
        l.hold(10).unwrap();
        l.confirm_hold(5).unwrap();
        l.grant_lease(20).unwrap();
        let msg = l.set_capacity(10).unwrap_err().to_string();
        assert!(msg.contains("30 places are taken"), "{msg}");
        assert!(
            msg.contains("5 sold online") && msg.contains("5 held") && msg.contains("20 leased"),
            "{msg}"
        );
    }

    /// Issue 9: "384 taken" while the parts it listed added up to less; the
    /// places sold over capacity by a revoked lease were left out.
    #[test]
    fn capacity_refusal_adds_up_to_the_parts_it_lists() {
        let mut l = SlotLedger::with_capacity(120);
        l.hold(4).unwrap();
        l.confirm_hold(3).unwrap();
        l.grant_lease(100).unwrap();
        l.over_capacity = 8;
        let err = l.set_capacity(10).unwrap_err();
        let InventoryError::CapacityBelowCommitted {
            committed,
            sold_online,
            held_online,
            leased,
            over_capacity,
            ..
        } = err.clone()
        else {
            panic!("{err:?}")
        };
        assert_eq!(
            committed,
            u64::from(sold_online + held_online + leased + over_capacity)
        );
        // The numbers in the text add up too.
        let msg = err.to_string();
        let (taken, parts) = msg.split_once(" places are taken (").expect("shape");
        let taken: u64 = taken.rsplit(' ').next().unwrap().parse().unwrap();
        let sum: u64 = parts
            .split(", ")
            .map(|p| p.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert_eq!((taken, sum), (112, 112), "{msg}");
    }

    #[test]
    fn a_hold_is_open_until_its_moment_and_never_wraps() {
        assert!(hold_is_open(1_000, 999));
        assert!(!hold_is_open(1_000, 1_000));
        assert_eq!(hold_expires_at(i64::MAX - 5, 600_000), i64::MAX);
        assert_eq!(hold_ttl_ms(Duration::from_secs(600)), 600_000);
        assert_eq!(hold_ttl_ms(Duration::MAX), i64::MAX);
    }

    #[test]
    fn a_slot_over_shows_nothing_available_but_keeps_what_it_sold() {
        let starts = jiff::Timestamp::from_millisecond(1_000_000).unwrap();
        let ends = jiff::Timestamp::from_millisecond(2_000_000).unwrap();
        let slot = Slot {
            id: "2026-12-03T10:00".parse().unwrap(),
            window_minutes: 15,
            starts_at: starts,
            ends_at: ends,
            capacity: 10,
        };
        let ledger = SlotLedger {
            capacity: 10,
            sold_online: 3,
            held_online: 2,
            ..SlotLedger::default()
        };
        let open = availability_line(&slot, &ledger, 4, 1_999_999);
        assert_eq!((open.available, open.sold, open.past), (5, 4, false));
        let over = availability_line(&slot, &ledger, u64::MAX, 2_000_000);
        assert_eq!((over.available, over.sold, over.past), (0, u32::MAX, true));
    }
}
