//! One counter's lease as the server counts it, and how the server sizes a
//! slot's leases.
//!
//! `inventory` holds the slot-level arithmetic (`SlotLedger`, `LeaseTotals`,
//! `LeasePolicy`); this module holds what the server knows about one lease
//! beyond its totals — what was sold from it, what its counter last said it
//! could still sell, the escrow frozen by a revocation, places kept out of
//! sale — and every rule that changes those. Each change returns a
//! `SlotChange`: how the lease's footprint on its slot moved, which the
//! backend applies to the slot's ledger. Sizing decides, from the slot's
//! ledger and all its leases, what to grant or recall; the backend writes it.
//! Nothing here reads a clock or a database: `now` and the facts are inputs.

use std::collections::{BTreeMap, HashMap, HashSet};

use uuid::Uuid;

use crate::api::sync::{LeaseGrant, LeaseWant};
use crate::catalogue::Catalogue;
use crate::inventory::{InventoryError, LeaseDecision, LeasePolicy, LeaseTotals, SlotLedger};
use crate::slot::{SlotError, SlotId};
use crate::upload::{self, VoidPlaces};

/// A counter that synced this recently counts as online when leases are sized.
pub const ONLINE_WINDOW_MS: i64 = 15_000;

/// A lease as the server counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseState {
    pub lease_id: Uuid,
    pub device_id: Uuid,
    pub slot: SlotId,
    pub totals: LeaseTotals,
    /// Admissions of the sales stored from it, minus voids that returned
    /// their places to it.
    pub sold: u32,
    /// What its counter last said it could still sell, read against grants
    /// and releases it had not heard of.
    pub unused_reported: u32,
    /// Set when a supervisor revoked it: what it counts against its slot
    /// from then on (what was sold from it at the time).
    pub revoked_escrow: Option<u32>,
    /// Places a void put back in the counter's lease that the server keeps
    /// out of sale (the ticket was admitted, or its slot had started).
    pub kept: u32,
}

/// What a lease takes from its slot: its escrow, and places on top of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub escrow: u32,
    pub over_capacity: u32,
}

impl Footprint {
    /// What a slot's leases take from it together: the slot ledger's
    /// `leased` and `over_capacity` by the leases alone.
    pub fn of<'a>(leases: impl IntoIterator<Item = &'a LeaseState>) -> Footprint {
        leases
            .into_iter()
            .map(LeaseState::footprint)
            .fold(Footprint::default(), |sum, f| Footprint {
                escrow: sum.escrow + f.escrow,
                over_capacity: sum.over_capacity + f.over_capacity,
            })
    }
}

/// How one change to a lease moves its slot's ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "the slot's ledger must follow the lease"]
pub struct SlotChange {
    pub before: Footprint,
    pub after: Footprint,
}

impl SlotChange {
    pub fn is_empty(&self) -> bool {
        self.before == self.after
    }

    /// Places back on sale (escrow the lease no longer holds).
    pub fn returned(&self) -> u32 {
        self.before.escrow.saturating_sub(self.after.escrow)
    }

    /// Applies the change to the slot's ledger. A lease's escrow only grows
    /// through a grant (`SlotLedger::grant_lease`, which checks capacity), so
    /// a change that would grow it is a bookkeeping error.
    pub fn apply(&self, ledger: &mut SlotLedger) -> Result<(), InventoryError> {
        if self.after.escrow > self.before.escrow {
            return Err(InventoryError::Bookkeeping(
                "a lease's escrow grew outside a grant",
            ));
        }
        ledger.shrink_lease(self.returned())?;
        ledger.over_capacity = (ledger.over_capacity + self.after.over_capacity)
            .saturating_sub(self.before.over_capacity);
        Ok(())
    }
}

/// What counting one stored sale did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaleCount {
    /// Admissions of this sale beyond what its revoked lease held: the
    /// sale's over-capacity flag.
    pub over: u32,
    pub slot: SlotChange,
}

/// What a void did to its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoidCount {
    pub slot: SlotChange,
    /// The places stay out of sale although the counter put them back.
    pub kept_aside: bool,
    /// A void on a revoked lease returned places: the over-capacity flags of
    /// its sales must add up to this (`reconcile::lower_flags`).
    pub reflag_to: Option<u32>,
}

impl LeaseState {
    pub fn new(lease_id: Uuid, device_id: Uuid, slot: SlotId) -> LeaseState {
        LeaseState {
            lease_id,
            device_id,
            slot,
            totals: LeaseTotals::default(),
            sold: 0,
            unused_reported: 0,
            revoked_escrow: None,
            kept: 0,
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_escrow.is_some()
    }

    /// Whether nothing can change this lease any more, once its slot is
    /// over: a supervisor revoked it, or the counter gave back all it did not
    /// sell and every sale reached the server (the escrow is what was sold).
    /// Both ends then stop carrying it in syncs.
    pub fn is_settled(&self, slot_over: bool) -> bool {
        slot_over
            && (self.is_revoked()
                || (self.unused_reported == 0 && self.totals.escrow() <= self.sold))
    }

    /// Whether `device` holds this lease for `slot`.
    pub fn belongs_to(&self, device: Uuid, slot: SlotId) -> bool {
        self.device_id == device && self.slot == slot
    }

    /// What this lease counts against its slot's capacity.
    pub fn escrow(&self) -> u32 {
        self.revoked_escrow.unwrap_or(self.totals.escrow())
    }

    /// Admissions sold from a revoked lease beyond what it held at revocation.
    pub fn overflow(&self) -> u32 {
        self.revoked_escrow
            .map(|e| self.sold.saturating_sub(e))
            .unwrap_or(0)
    }

    /// Places this lease takes from its slot on top of its escrow.
    pub fn over_capacity(&self) -> u32 {
        self.overflow() + self.kept
    }

    pub fn footprint(&self) -> Footprint {
        Footprint {
            escrow: self.escrow(),
            over_capacity: self.over_capacity(),
        }
    }

    /// What the lease can still sell, as far as the server knows: its
    /// counter's last report, never more than escrow minus the sales already
    /// uploaded.
    pub fn unused(&self) -> u32 {
        self.totals
            .escrow()
            .saturating_sub(self.sold)
            .min(self.unused_reported)
    }

    /// Adds `n` granted places (the slot's ledger granted them first).
    pub fn grant(&mut self, n: u32) {
        self.totals.granted_total += n;
        self.unused_reported += n;
    }

    /// A supervisor revokes the lease: it keeps what was sold from it, the
    /// rest goes back on sale, and whatever it sells later is over capacity.
    /// Revoking twice changes nothing.
    pub fn revoke(&mut self) -> SlotChange {
        let before = self.footprint();
        if self.revoked_escrow.is_none() {
            self.revoked_escrow = Some(self.sold);
        }
        SlotChange {
            before,
            after: self.footprint(),
        }
    }

    /// Counts a stored sale of `admissions` against the lease.
    pub fn count_sale(&mut self, admissions: u32) -> SaleCount {
        let before = self.footprint();
        let overflow = self.overflow();
        self.sold += admissions;
        SaleCount {
            over: self.overflow().saturating_sub(overflow),
            slot: SlotChange {
                before,
                after: self.footprint(),
            },
        }
    }

    /// Counts a void of a sale of `admissions` as the server decided its
    /// places (`upload::void_places`).
    pub fn count_void(&mut self, places: VoidPlaces, admissions: u32) -> VoidCount {
        let before = self.footprint();
        let revoked = self.is_revoked();
        let mut kept_aside = false;
        match places {
            VoidPlaces::Returned => {
                self.sold = self.sold.saturating_sub(admissions);
                // A revoked lease sells nothing more: places it no longer
                // needs go back to the slot, not into its escrow.
                if let Some(escrow) = self.revoked_escrow {
                    if self.sold < escrow {
                        self.revoked_escrow = Some(self.sold);
                    }
                }
            }
            VoidPlaces::Kept if !revoked => {
                self.sold = self.sold.saturating_sub(admissions);
                self.kept += admissions;
                kept_aside = true;
            }
            VoidPlaces::Kept | VoidPlaces::NotReturned => {}
        }
        VoidCount {
            slot: SlotChange {
                before,
                after: self.footprint(),
            },
            kept_aside,
            reflag_to: (revoked && places == VoidPlaces::Returned).then(|| self.overflow()),
        }
    }
}

/// Whether a void changes its lease's sold count: the counter put the places
/// back in its lease (a revoked lease: the server returned them).
pub fn void_counts_in_lease(places: VoidPlaces, lease_revoked: bool) -> bool {
    match places {
        VoidPlaces::Returned => true,
        VoidPlaces::Kept => !lease_revoked,
        VoidPlaces::NotReturned => false,
    }
}

/// Counters heard from within `ONLINE_WINDOW_MS` of `now_ms`.
pub fn online_devices<'a>(
    last_sync: impl IntoIterator<Item = (&'a Uuid, &'a i64)>,
    now_ms: i64,
) -> HashSet<Uuid> {
    last_sync
        .into_iter()
        .filter(|(_, at)| now_ms - **at <= ONLINE_WINDOW_MS)
        .map(|(d, _)| *d)
        .collect()
}

/// The slots to size for one counter and what a sale there waits for: the
/// slots it wants (capped by `upload::cap_need` against the catalogue's
/// largest ticket and the slot's free places; a slot the server does not have, `free` None, is ignored), and
/// every slot of its leases that are not revoked (need 0).
pub fn slots_to_size<'a>(
    wants: &[LeaseWant],
    catalogue: &Catalogue,
    free: impl Fn(&SlotId) -> Option<u32>,
    own_leases: impl IntoIterator<Item = &'a LeaseState>,
) -> BTreeMap<SlotId, u32> {
    let max_admits = catalogue
        .products
        .iter()
        .map(|p| p.admits)
        .max()
        .unwrap_or(1);
    let mut slots = BTreeMap::new();
    for want in wants {
        if let Some(free) = free(&want.slot_id) {
            let need = upload::cap_need(want.need, max_admits, free);
            slots.insert(want.slot_id, need);
        }
    }
    for lease in own_leases {
        if !lease.is_revoked() {
            slots.entry(lease.slot).or_insert(0);
        }
    }
    slots
}

/// One slot as sizing sees it.
#[derive(Clone, Copy, Debug)]
pub struct SlotToSize<'a> {
    pub device: Uuid,
    /// Places a sale at this counter is waiting for.
    pub need: u32,
    pub ends_at_ms: i64,
    pub available: u32,
    /// Every lease of the slot, this counter's included.
    pub leases: &'a [&'a LeaseState],
    /// Counters heard from recently, this one included.
    pub online: &'a HashSet<Uuid>,
    pub now_ms: i64,
}

/// What sizing decided for one counter's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// The counter's lease for the slot, if it has one (a grant without one
    /// opens a new lease).
    pub lease: Option<Uuid>,
    pub decision: LeaseDecision,
}

/// Grants and recalls for one counter's slot by the rule in `LeasePolicy`:
/// the pool is what is free plus what online counters hold unused. Nothing
/// for a slot that is over or a lease that was revoked.
pub fn size_slot(policy: &LeasePolicy, slot: &SlotToSize<'_>) -> Option<Sizing> {
    if slot.now_ms >= slot.ends_at_ms {
        return None;
    }
    let mine = slot.leases.iter().find(|l| l.device_id == slot.device);
    if mine.is_some_and(|l| l.is_revoked()) {
        return None;
    }
    let unused = mine.map(|l| l.unused()).unwrap_or(0);
    let pooled: u32 = slot
        .leases
        .iter()
        .filter(|l| !l.is_revoked() && slot.online.contains(&l.device_id))
        .map(|l| l.unused())
        .sum();
    let terminals = slot.online.len().max(1) as u32;
    let decision = policy.decide(
        slot.available,
        slot.available + pooled,
        terminals,
        unused,
        slot.need,
    );
    Some(Sizing {
        lease: mine.map(|l| l.lease_id),
        decision: LeaseDecision {
            grant: decision.grant,
            // Only a lease the counter holds can be recalled.
            recall: if mine.is_some() { decision.recall } else { 0 },
        },
    })
}

/// Whether a sync records a step of this lease in its history: a lease of
/// this counter for today or later, or one it reported.
pub fn steps_in_sync(
    lease: &LeaseState,
    device: Uuid,
    today: jiff::civil::Date,
    reported: &HashSet<Uuid>,
) -> bool {
    lease.device_id == device && (lease.slot.date >= today || reported.contains(&lease.lease_id))
}

/// The leases a sync answers its counter with, in slot order: those
/// [`steps_in_sync`] selects, each with what the server recalls of it. An
/// older lease the counter still reports stays in the answer: a grant whose
/// answer was lost before its day ended would otherwise never reach the
/// counter, which could then never give it back, and it would never settle.
pub fn grants_in_sync<'a>(
    leases: impl IntoIterator<Item = &'a LeaseState>,
    device: Uuid,
    today: jiff::civil::Date,
    reported: &HashSet<Uuid>,
    recalls: &HashMap<Uuid, u32>,
) -> Vec<LeaseGrant> {
    let mut grants: Vec<LeaseGrant> = leases
        .into_iter()
        .filter(|l| steps_in_sync(l, device, today, reported))
        .map(|l| LeaseGrant {
            lease_id: l.lease_id,
            slot_id: l.slot,
            granted_total: l.totals.granted_total,
            released_total: l.totals.released_total,
            recall: recalls.get(&l.lease_id).copied().unwrap_or(0),
            revoked: l.is_revoked(),
        })
        .collect();
    grants.sort_by_key(|g| g.slot_id);
    grants
}

/// The first slot that is live for counters on the museum day `today`:
/// yesterday's first. Slots from here on (and their leases) are what the
/// server keeps at hand and what a counter's sync looks at; older ones only
/// matter while a lease of theirs is unsettled, which the backends add by
/// their own query. Yesterday, not today: late reports of yesterday's sales
/// still arrive, and a counter whose clock runs a little behind the server's
/// still calls yesterday "today" around midnight.
pub fn first_live_slot(today: jiff::civil::Date) -> Result<SlotId, SlotError> {
    // Only the first day jiff knows has no yesterday; ticket codes cannot
    // carry it anyway.
    let yesterday = today
        .yesterday()
        .map_err(|_| SlotError::DateOutOfRange(today))?;
    SlotId::new(yesterday, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> SlotId {
        "2026-12-02T10:00".parse().expect("slot")
    }

    fn lease(granted: u32) -> LeaseState {
        let mut l = LeaseState::new(Uuid::from_u64_pair(0, 1), Uuid::from_u64_pair(0, 2), slot());
        l.grant(granted);
        l
    }

    #[test]
    fn a_late_sale_from_a_revoked_lease_is_over_capacity() {
        let mut l = lease(10);
        assert_eq!(l.count_sale(4).over, 0);
        let change = l.revoke();
        assert_eq!(change.returned(), 6);
        let late = l.count_sale(3);
        assert_eq!(late.over, 3);
        assert_eq!(late.slot.after.over_capacity, 3);
        let mut ledger = SlotLedger::with_capacity(20);
        ledger.grant_lease(10).unwrap();
        change.apply(&mut ledger).unwrap();
        late.slot.apply(&mut ledger).unwrap();
        assert_eq!((ledger.leased, ledger.over_capacity), (4, 3));
    }

    #[test]
    fn a_returned_void_on_a_revoked_lease_gives_places_back() {
        let mut l = lease(10);
        let _ = l.count_sale(4);
        let _ = l.revoke();
        let _ = l.count_sale(2);
        let v = l.count_void(VoidPlaces::Returned, 3);
        // sold 3 of an escrow of 4: one place back, no overflow left.
        assert_eq!(v.slot.returned(), 1);
        assert_eq!(v.reflag_to, Some(0));
        assert_eq!(l.over_capacity(), 0);
    }

    #[test]
    fn kept_places_sit_on_top_of_the_escrow() {
        let mut l = lease(10);
        let _ = l.count_sale(4);
        let v = l.count_void(VoidPlaces::Kept, 2);
        assert!(v.kept_aside);
        assert_eq!(
            (l.sold, l.kept, l.escrow(), l.over_capacity()),
            (2, 2, 10, 2)
        );
    }

    #[test]
    fn sizing_recalls_only_an_existing_lease_and_skips_revoked_ones() {
        let policy = LeasePolicy::default();
        let online: HashSet<Uuid> = [Uuid::from_u64_pair(0, 2)].into();
        let mut l = lease(30);
        l.unused_reported = 30;
        let leases = [&l];
        let ask = SlotToSize {
            device: l.device_id,
            need: 0,
            ends_at_ms: 100,
            available: 0,
            leases: &leases,
            online: &online,
            now_ms: 0,
        };
        let s = size_slot(&policy, &ask).expect("sized");
        // A pool of 30 over one online counter: a target of 3, the rest recalled.
        assert_eq!(s.decision.recall, 27);
        assert_eq!(size_slot(&policy, &SlotToSize { now_ms: 100, ..ask }), None);
        let mut revoked = l.clone();
        let _ = revoked.revoke();
        let leases = [&revoked];
        assert_eq!(
            size_slot(
                &policy,
                &SlotToSize {
                    leases: &leases,
                    ..ask
                }
            ),
            None
        );
    }

    #[test]
    fn yesterdays_slots_stay_live_for_late_counters_older_ones_do_not() {
        use jiff::civil::date;
        let first = first_live_slot(date(2026, 12, 3)).expect("a date tickets can carry");
        assert_eq!(first.to_string(), "2026-12-02T00:00");
        let late_yesterday: SlotId = "2026-12-02T17:30".parse().expect("slot");
        let two_days_ago: SlotId = "2026-12-01T17:30".parse().expect("slot");
        assert!(late_yesterday >= first);
        assert!(two_days_ago < first);
        // New year: yesterday is in the year before.
        assert_eq!(
            first_live_slot(date(2027, 1, 1)).map(|s| s.to_string()),
            Ok("2026-12-31T00:00".to_string())
        );
        // A day whose yesterday no ticket can carry is refused, not wrapped.
        assert!(first_live_slot(date(2000, 1, 1)).is_err());
    }

    #[test]
    fn a_sync_answers_its_own_live_leases_and_the_old_ones_it_reports_in_slot_order() {
        let (me, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let today: jiff::civil::Date = "2026-12-03".parse().unwrap();
        let at = |day: &str, time: &str| -> SlotId { format!("{day}T{time}").parse().unwrap() };
        let late = LeaseState::new(Uuid::from_u128(10), me, at("2026-12-03", "15:00"));
        let early = LeaseState::new(Uuid::from_u128(11), me, at("2026-12-03", "10:00"));
        let old_reported = LeaseState::new(Uuid::from_u128(12), me, at("2026-12-01", "10:00"));
        let old_silent = LeaseState::new(Uuid::from_u128(13), me, at("2026-12-01", "11:00"));
        let theirs = LeaseState::new(Uuid::from_u128(14), other, at("2026-12-03", "10:00"));
        let reported = HashSet::from([old_reported.lease_id]);
        let recalls = HashMap::from([(late.lease_id, 3)]);
        let grants = grants_in_sync(
            [&late, &early, &old_reported, &old_silent, &theirs],
            me,
            today,
            &reported,
            &recalls,
        );
        let ids: Vec<Uuid> = grants.iter().map(|g| g.lease_id).collect();
        assert_eq!(ids, [old_reported.lease_id, early.lease_id, late.lease_id]);
        assert_eq!(grants[2].recall, 3);
        assert_eq!(grants[1].recall, 0);
    }
}
