//! One lease as the counter holds it: what it may still sell, what it tells
//! the server, and how the server's word (a grant, a recall, a revocation),
//! a sale, a void and the end of the slot change it. The counter's engine
//! loads its lease from its replica, calls these and writes the result, so
//! the counter's side of the lease protocol is stated once, here, beside the
//! server's (`leases`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::sync::{LeaseGrant, LeaseReport};
use crate::inventory::LeaseTotals;
use crate::slot::SlotId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterLease {
    pub lease_id: Uuid,
    pub slot: SlotId,
    pub totals: LeaseTotals,
    /// Admissions this counter sold from the lease (less those voided back
    /// into it).
    pub sold: u32,
    /// A supervisor revoked it: it sells nothing more.
    pub revoked: bool,
}

/// What the server's word about a lease changed on this counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantApplied {
    /// Places newly granted.
    pub granted: u32,
    /// Places given back because the server recalled them.
    pub returned: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CounterLeaseError {
    #[error("{requested} places requested, {left} left in this counter's lease")]
    NotEnough { requested: u32, left: u32 },
    /// The server names another lease for a slot this counter already has
    /// one for: the counter keeps its own (its sales count against it).
    #[error("the server names lease {named} for a slot this counter holds lease {held} for")]
    Foreign { held: Uuid, named: Uuid },
}

impl CounterLease {
    /// A lease the server just granted.
    pub fn from_grant(grant: &LeaseGrant) -> CounterLease {
        CounterLease {
            lease_id: grant.lease_id,
            slot: grant.slot_id,
            totals: LeaseTotals {
                granted_total: grant.granted_total,
                released_total: grant.released_total,
            },
            sold: 0,
            revoked: grant.revoked,
        }
    }

    /// Places this counter can still sell without asking anyone.
    pub fn left(&self) -> u32 {
        if self.revoked {
            return 0;
        }
        self.totals.escrow().saturating_sub(self.sold)
    }

    /// Whether a waiting sale of `need` places can be made from the lease.
    pub fn covers(&self, need: u32) -> bool {
        need <= self.left()
    }

    /// Takes a sale's places; refused (and nothing changes) beyond `left`.
    pub fn sell(&mut self, admissions: u32) -> Result<(), CounterLeaseError> {
        let left = self.left();
        if admissions > left {
            return Err(CounterLeaseError::NotEnough {
                requested: admissions,
                left,
            });
        }
        self.sold += admissions;
        Ok(())
    }

    /// A void before the slot: its places go back into the lease.
    pub fn void_back(&mut self, admissions: u32) {
        self.sold = self.sold.saturating_sub(admissions);
    }

    /// Follows the server's word about this lease: totals only grow (a late
    /// or repeated answer changes nothing), a revocation sticks, and a
    /// recall gives back what is unsold, never more.
    pub fn apply_grant(&mut self, grant: &LeaseGrant) -> Result<GrantApplied, CounterLeaseError> {
        if grant.lease_id != self.lease_id {
            return Err(CounterLeaseError::Foreign {
                held: self.lease_id,
                named: grant.lease_id,
            });
        }
        let before = self.totals.granted_total;
        self.totals.merge(LeaseTotals {
            granted_total: grant.granted_total,
            released_total: grant.released_total,
        });
        self.revoked |= grant.revoked;
        let mut applied = GrantApplied {
            granted: self.totals.granted_total - before,
            returned: 0,
        };
        if grant.recall > 0 && !grant.revoked {
            applied.returned = self.give_back(grant.recall);
        }
        Ok(applied)
    }

    /// Applies a new lease's first grant (with its recall, if any).
    pub fn first_grant(grant: &LeaseGrant) -> (CounterLease, GrantApplied) {
        let mut lease = CounterLease::from_grant(grant);
        let mut applied = GrantApplied {
            granted: lease.totals.escrow(),
            returned: 0,
        };
        if grant.recall > 0 && !grant.revoked {
            applied.returned = lease.give_back(grant.recall);
        }
        (lease, applied)
    }

    /// Gives back up to `n` unsold places; how many went back.
    fn give_back(&mut self, n: u32) -> u32 {
        let give = n.min(self.left());
        self.totals.released_total += give;
        give
    }

    /// Once the slot is over nobody can sell its places: everything unsold
    /// goes back. Returns how many.
    pub fn give_back_unsold(&mut self) -> u32 {
        self.give_back(self.left())
    }

    /// Nothing left to sell or give back (or revoked): once every sale and
    /// void from it is acknowledged and its slot is over, it can settle.
    pub fn is_spent(&self) -> bool {
        self.left() == 0
    }

    /// What this counter tells the server about the lease.
    pub fn report(&self) -> LeaseReport {
        LeaseReport {
            lease_id: self.lease_id,
            slot_id: self.slot,
            granted_total: self.totals.granted_total,
            released_total: self.totals.released_total,
            unused: self.left(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(granted: u32, released: u32, recall: u32, revoked: bool) -> LeaseGrant {
        LeaseGrant {
            lease_id: Uuid::from_u128(7),
            slot_id: "2026-12-02T10:00".parse().expect("slot"),
            granted_total: granted,
            released_total: released,
            recall,
            revoked,
        }
    }

    #[test]
    fn a_counter_sells_only_what_its_lease_holds() {
        let (mut lease, applied) = CounterLease::first_grant(&grant(10, 0, 0, false));
        assert_eq!(applied.granted, 10);
        lease.sell(8).expect("8 of 10");
        assert_eq!(
            lease.sell(3),
            Err(CounterLeaseError::NotEnough {
                requested: 3,
                left: 2
            })
        );
        assert_eq!(lease.sold, 8, "a refused sale takes nothing");
        lease.void_back(2);
        assert_eq!(lease.left(), 4);
    }

    #[test]
    fn a_recall_gives_back_only_what_is_unsold_and_answers_only_grow_totals() {
        let (mut lease, _) = CounterLease::first_grant(&grant(10, 0, 0, false));
        lease.sell(7).expect("sale");
        let applied = lease.apply_grant(&grant(10, 0, 5, false)).expect("ours");
        assert_eq!(applied.returned, 3, "only the 3 unsold go back");
        assert_eq!(lease.report().unused, 0);
        // A late answer naming older totals changes nothing.
        let applied = lease.apply_grant(&grant(6, 0, 0, false)).expect("ours");
        assert_eq!(applied, GrantApplied::default());
        assert_eq!(lease.totals.granted_total, 10);
        assert_eq!(lease.totals.released_total, 3);
        let applied = lease.apply_grant(&grant(14, 3, 0, false)).expect("ours");
        assert_eq!(applied.granted, 4);
        assert_eq!(lease.left(), 4);
    }

    #[test]
    fn a_revoked_lease_sells_nothing_and_a_foreign_lease_is_refused() {
        let (mut lease, _) = CounterLease::first_grant(&grant(10, 0, 0, false));
        lease.apply_grant(&grant(10, 0, 0, true)).expect("ours");
        assert!(lease.is_spent());
        assert!(lease.sell(1).is_err());
        // A later answer without the flag does not undo a revocation.
        lease.apply_grant(&grant(10, 0, 0, false)).expect("ours");
        assert!(lease.revoked);
        let mut other = grant(5, 0, 0, false);
        other.lease_id = Uuid::from_u128(8);
        assert!(matches!(
            lease.apply_grant(&other),
            Err(CounterLeaseError::Foreign { .. })
        ));
    }

    #[test]
    fn at_the_end_of_its_slot_the_unsold_goes_back() {
        let (mut lease, _) = CounterLease::first_grant(&grant(10, 0, 0, false));
        lease.sell(4).expect("sale");
        assert_eq!(lease.give_back_unsold(), 6);
        assert!(lease.is_spent());
        assert_eq!(lease.report().released_total, 6);
        assert_eq!(lease.give_back_unsold(), 0, "twice gives nothing more");
    }
}
