//! Judging one sync body as a whole: which of its sales are repeats, which
//! are new and stand, which go to quarantine and why; what each void does to
//! the places of its sale; which closed shifts are stored; and the order in
//! which the accepted sales and voids are written.
//!
//! The server drives a `Judging` through the body one item at a time, each
//! time handing it the facts it loaded for that item (what it already stores
//! under the sale's id or seq, the catalogue version the sale names, the
//! sale's slot and lease, the ticket ids it already has, the sale a void
//! names, whether a supervisor approved the void, the server's clock, the
//! lease as it stood at each sale's seq). `Judging` never looks anything up
//! itself: it is the same judgement for every backend, and a test drives it
//! from memory. What it ends with, a `Plan`, is what the backend writes.

use std::collections::{BTreeMap, HashMap, HashSet};

use uuid::Uuid;

use crate::api::sync::{OpenShift, SaleRecord, SyncRequest};
use crate::catalogue::Catalogue;
use crate::inventory::LeaseTotals;
use crate::leases::{void_counts_in_lease, LeaseState};
use crate::limits;
use crate::reconcile::{self, ReportError};
use crate::slot::SlotId;
use crate::ticket_code::KeyRing;

use super::{
    judge_sale_money, judge_shift, judge_void, replay_lease, void_places, LeaseEvent, LeaseHistory,
    SaleVerdict, VoidPlaces,
};

/// Why a sync body is refused as a whole once judged against what the
/// server stores: what no honest counter sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchRefusal {
    #[error("sale {sale} is stored as #{stored} and now arrives as #{seq} (seq tampered)")]
    SeqChanged { sale: Uuid, stored: u64, seq: u64 },
    #[error("sale #{seq} of this counter is already sale {other}, not {sale} (seq tampered)")]
    SeqTaken { seq: u64, other: String, sale: Uuid },
    #[error(transparent)]
    Report(#[from] ReportError),
}

impl BatchRefusal {
    /// The body names a lease of another counter: not a malformed body but
    /// one this counter may not send.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, BatchRefusal::Report(ReportError::NotYours { .. }))
    }
}

/// A sale the server already holds (stored or quarantined), by its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownSale {
    pub device: Uuid,
    pub seq: u64,
}

/// What the server knows that bears on one new sale.
#[derive(Clone, Copy, Debug)]
pub struct SaleFacts<'a> {
    /// The catalogue version the sale names (None: the server lacks it).
    pub catalogue: Option<&'a Catalogue>,
    /// The entry window of the sale's slot (None: no such slot).
    pub slot_window_minutes: Option<u16>,
    pub lease: Option<&'a LeaseState>,
    /// Which of the sale's tickets the server already stores.
    pub tickets_stored: &'a HashSet<Uuid>,
}

/// An upload set aside for a supervisor, by its index in the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quarantine {
    Sale {
        index: usize,
        reason: String,
    },
    Void {
        index: usize,
        /// The seq of its sale, when known.
        seq: Option<u64>,
        reason: String,
    },
    Shift {
        index: usize,
        reason: String,
    },
}

/// The sale a void names, wherever the server has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoidTarget {
    /// Stored, or new in this body and accepted so far.
    Sale {
        lease: Uuid,
        slot: SlotId,
        admissions: u32,
        total: i64,
        tickets: Vec<Uuid>,
        voided: bool,
    },
    Quarantined(Option<u64>),
    Unknown,
}

/// A void that passed its own checks and waits for the server's approval
/// check and its places.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoidCheck {
    pub lease: Uuid,
    pub slot: SlotId,
    pub admissions: u32,
    pub tickets: Vec<Uuid>,
}

/// A new void and what the server decided it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoidPlan {
    pub index: usize,
    pub lease: Uuid,
    pub admissions: u32,
    pub places: VoidPlaces,
}

/// What judging a body decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Indexes in `request.sales` of the new sales to store.
    pub accepted: Vec<usize>,
    pub duplicates: u32,
    pub voids: Vec<VoidPlan>,
    /// Indexes in `request.shifts` to store.
    pub shifts: Vec<usize>,
    pub quarantine: Vec<Quarantine>,
}

/// A lease's facts for the replay of a body's sales and voids on it.
#[derive(Clone, Debug)]
pub struct LeaseAtUpload {
    pub sold: u32,
    pub revoked: bool,
    pub history: LeaseHistory,
}

/// One body being judged.
#[derive(Debug)]
pub struct Judging<'r> {
    request: &'r SyncRequest,
    device: Uuid,
    candidates: Vec<usize>,
    quarantined_here: HashMap<Uuid, u64>,
    seen_tickets: HashSet<Uuid>,
    plan: Plan,
}

impl<'r> Judging<'r> {
    pub fn new(request: &'r SyncRequest, device: Uuid) -> Judging<'r> {
        Judging {
            request,
            device,
            candidates: Vec::new(),
            quarantined_here: HashMap::new(),
            seen_tickets: HashSet::new(),
            plan: Plan::default(),
        }
    }

    /// Step 1 of a sale: a sale the server already holds is a repeat
    /// (`Ok(false)`), unless it now claims another seq or counter.
    pub fn is_new(&mut self, index: usize, known: Option<KnownSale>) -> Result<bool, BatchRefusal> {
        let sale = &self.request.sales[index];
        let Some(known) = known else {
            return Ok(true);
        };
        if known.device != self.device || known.seq != sale.terminal_seq {
            return Err(BatchRefusal::SeqChanged {
                sale: sale.sale_id,
                stored: known.seq,
                seq: sale.terminal_seq,
            });
        }
        self.plan.duplicates += 1;
        Ok(false)
    }

    /// Step 2 of a new sale: its seq is not another sale's (`taken_by`).
    pub fn seq_is_free(&self, index: usize, taken_by: Option<String>) -> Result<(), BatchRefusal> {
        let sale = &self.request.sales[index];
        match taken_by {
            None => Ok(()),
            Some(other) => Err(BatchRefusal::SeqTaken {
                seq: sale.terminal_seq,
                other,
                sale: sale.sale_id,
            }),
        }
    }

    /// Step 3 of a new sale: its own facts; it becomes a candidate for the
    /// replay on its lease, or goes to quarantine.
    pub fn judge_sale(&mut self, index: usize, facts: &SaleFacts<'_>, keyring: &KeyRing) {
        let sale = &self.request.sales[index];
        match check_sale(self.device, sale, facts, keyring, &self.seen_tickets) {
            Ok(tickets) => {
                self.seen_tickets.extend(tickets);
                self.candidates.push(index);
            }
            Err(reason) => self.quarantine_sale(index, reason),
        }
    }

    fn quarantine_sale(&mut self, index: usize, reason: String) {
        let sale = &self.request.sales[index];
        self.quarantined_here
            .insert(sale.sale_id, sale.terminal_seq);
        self.plan
            .quarantine
            .push(Quarantine::Sale { index, reason });
    }

    /// The sale a void names, if it is in this body (quarantined here, or a
    /// candidate); otherwise the server looks it up.
    pub fn void_target_here(&self, sale_id: Uuid) -> Option<VoidTarget> {
        if let Some(seq) = self.quarantined_here.get(&sale_id) {
            return Some(VoidTarget::Quarantined(Some(*seq)));
        }
        self.candidates
            .iter()
            .map(|&i| &self.request.sales[i])
            .find(|s| s.sale_id == sale_id)
            .map(|s| VoidTarget::Sale {
                lease: s.lease_id,
                slot: s.slot_id,
                admissions: s.admissions,
                total: s.total.amount,
                tickets: s.tickets.iter().map(|t| t.ticket_id).collect(),
                voided: false,
            })
    }

    /// Step 1 of a new void: its sale and its own fields. `None`: nothing
    /// more to do (a repeat of a void already applied, or quarantined).
    pub fn judge_void(&mut self, index: usize, target: VoidTarget) -> Option<VoidCheck> {
        let v = &self.request.voids[index];
        match target {
            VoidTarget::Sale { voided: true, .. } => None,
            VoidTarget::Sale {
                lease,
                slot,
                admissions,
                total,
                tickets,
                ..
            } => match judge_void(v, total) {
                Ok(()) => Some(VoidCheck {
                    lease,
                    slot,
                    admissions,
                    tickets,
                }),
                Err(reason) => {
                    self.refuse_void(index, reason);
                    None
                }
            },
            VoidTarget::Quarantined(seq) => {
                self.quarantine_void(index, seq, "its sale is quarantined".into());
                None
            }
            VoidTarget::Unknown => {
                let reason = format!(
                    "names sale {}, which this counter never uploaded",
                    v.sale_id
                );
                self.quarantine_void(index, None, reason);
                None
            }
        }
    }

    /// A void the server cannot apply (e.g. no supervisor approval it knows).
    pub fn refuse_void(&mut self, index: usize, reason: String) {
        self.quarantine_void(index, None, reason);
    }

    fn quarantine_void(&mut self, index: usize, seq: Option<u64>, reason: String) {
        self.plan
            .quarantine
            .push(Quarantine::Void { index, seq, reason });
    }

    /// Step 2 of a void: what it does to the places, decided by the server.
    pub fn plan_void(&mut self, index: usize, check: &VoidCheck, places: VoidPlaces) {
        self.plan.voids.push(VoidPlan {
            index,
            lease: check.lease,
            admissions: check.admissions,
            places,
        });
    }

    /// The new sales and the voids that change a sold count, by lease, in
    /// the order the counter made them; `revoked` says which leases are.
    pub fn lease_events(&self, revoked: impl Fn(&Uuid) -> bool) -> BTreeMap<Uuid, Vec<LeaseEvent>> {
        let mut by_lease: BTreeMap<Uuid, Vec<LeaseEvent>> = BTreeMap::new();
        for &i in &self.candidates {
            let s = &self.request.sales[i];
            by_lease
                .entry(s.lease_id)
                .or_default()
                .push(LeaseEvent::Sale {
                    sale_id: s.sale_id,
                    seq: s.terminal_seq,
                    admissions: s.admissions,
                });
        }
        for vp in &self.plan.voids {
            if void_counts_in_lease(vp.places, revoked(&vp.lease)) {
                let v = &self.request.voids[vp.index];
                by_lease
                    .entry(vp.lease)
                    .or_default()
                    .push(LeaseEvent::Void {
                        sale_id: v.sale_id,
                        after_seq: v.after_seq,
                        admissions: vp.admissions,
                    });
            }
        }
        by_lease
    }

    /// Step 3: the replay on each lease (`replay_leases`) decided; the sales
    /// it refused go to quarantine, and so do voids of quarantined sales.
    pub fn settle(&mut self, mut refused: HashMap<Uuid, String>) {
        for i in std::mem::take(&mut self.candidates) {
            let sale = &self.request.sales[i];
            match refused.remove(&sale.sale_id) {
                Some(reason) => self.quarantine_sale(i, reason),
                None => self.plan.accepted.push(i),
            }
        }
        for vp in std::mem::take(&mut self.plan.voids) {
            let v = &self.request.voids[vp.index];
            match self.quarantined_here.get(&v.sale_id) {
                Some(seq) => {
                    let reason = "its sale is quarantined".into();
                    self.quarantine_void(vp.index, Some(*seq), reason)
                }
                None => self.plan.voids.push(vp),
            }
        }
    }

    /// Step 4: closed shifts and lease reports; the plan to write.
    pub fn finish<'l>(
        mut self,
        lease: impl Fn(&Uuid) -> Option<&'l LeaseState>,
    ) -> Result<Plan, BatchRefusal> {
        for (index, s) in self.request.shifts.iter().enumerate() {
            match judge_shift(s) {
                Ok(()) => self.plan.shifts.push(index),
                Err(reason) => self
                    .plan
                    .quarantine
                    .push(Quarantine::Shift { index, reason }),
            }
        }
        for report in &self.request.leases {
            reconcile::check_report(self.device, report, lease(&report.lease_id))?;
        }
        Ok(self.plan)
    }
}

/// A new sale's own facts: its slot and lease, prices and payment from the
/// catalogue version it names, and tickets signed by this counter that match
/// its lines, none seen before. `Ok`: its ticket ids; `Err`: the reason to
/// quarantine it.
pub fn check_sale(
    device: Uuid,
    sale: &SaleRecord,
    facts: &SaleFacts<'_>,
    keyring: &KeyRing,
    seen_tickets: &HashSet<Uuid>,
) -> Result<HashSet<Uuid>, String> {
    let catalogue = facts.catalogue.ok_or_else(|| {
        format!(
            "names catalogue version {}, which the server does not have",
            sale.catalogue_version
        )
    })?;
    let window = facts
        .slot_window_minutes
        .ok_or_else(|| format!("unknown slot {}", sale.slot_id))?;
    match facts.lease {
        Some(l) if l.belongs_to(device, sale.slot_id) => {}
        Some(_) => {
            return Err(format!(
                "lease {} is not this counter's lease for {}",
                sale.lease_id, sale.slot_id
            ))
        }
        None => return Err(format!("unknown lease {}", sale.lease_id)),
    }
    judge_sale_money(catalogue, sale)?;
    let mut counted: BTreeMap<&str, u32> = BTreeMap::new();
    let mut in_sale = HashSet::new();
    for t in &sale.tickets {
        let claims = keyring
            .verify(&t.code)
            .map_err(|e| format!("ticket {}: {e}", t.ticket_id))?;
        let admits = catalogue.product(&t.product_id).map(|p| p.admits);
        let matches = claims.ticket_id == t.ticket_id
            && claims.slot == sale.slot_id
            && claims.product_id == t.product_id
            && claims.admits == t.admits
            && admits == Some(t.admits)
            && claims.window_minutes == window;
        if !matches {
            return Err(format!("ticket {} does not match its code", t.ticket_id));
        }
        if !in_sale.insert(t.ticket_id) || seen_tickets.contains(&t.ticket_id) {
            return Err(format!("ticket {} appears twice", t.ticket_id));
        }
        if facts.tickets_stored.contains(&t.ticket_id) {
            return Err(format!("ticket {} belongs to another sale", t.ticket_id));
        }
        *counted.entry(t.product_id.as_str()).or_default() += 1;
    }
    let mut expected: BTreeMap<&str, u32> = BTreeMap::new();
    for line in &sale.lines {
        *expected.entry(line.product_id.as_str()).or_default() += line.quantity;
    }
    if counted != expected {
        return Err("its tickets do not match its lines".into());
    }
    Ok(in_sale)
}

/// What a void does to its sale's places: `void_places`, except that a
/// revoked lease sells nothing more, so its counter's word on returning
/// places does not matter and the server decides alone.
pub fn decide_void_places(
    counter_returned: bool,
    lease_revoked: bool,
    slot_starts_at_ms: i64,
    server_now_ms: i64,
    admitted: bool,
) -> VoidPlaces {
    void_places(
        counter_returned || lease_revoked,
        slot_starts_at_ms,
        server_now_ms,
        admitted,
    )
}

/// Replays each lease's new events against the lease as it stood at each
/// sale's seq; returns the refused sales with their reasons. A lease the
/// server does not have (`leases` lacks it) is skipped: its sales were
/// already quarantined.
pub fn replay_leases(
    events: &BTreeMap<Uuid, Vec<LeaseEvent>>,
    leases: &HashMap<Uuid, LeaseAtUpload>,
) -> HashMap<Uuid, String> {
    let mut refused = HashMap::new();
    for (lease_id, events) in events {
        let Some(lease) = leases.get(lease_id) else {
            continue;
        };
        let (verdicts, _) = replay_lease(lease.sold, &lease.history, lease.revoked, events);
        for (sale, verdict) in verdicts {
            if let SaleVerdict::Quarantined(reason) = verdict {
                refused.insert(sale, reason);
            }
        }
    }
    refused
}

/// One write of the plan, in the order the counter made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Index in `request.sales`.
    Sale(usize),
    /// Index in `plan.voids`.
    Void(usize),
}

/// Accepted sales and voids in the order the counter made them: a void
/// happened after sale `after_seq` and before the next, and can only follow
/// its sale, whatever its `after_seq` claims.
pub fn write_order(request: &SyncRequest, plan: &Plan) -> Vec<Write> {
    let mut order: Vec<((u64, u8), Write)> = Vec::new();
    let mut seq_of: HashMap<Uuid, u64> = HashMap::new();
    for &i in &plan.accepted {
        let sale = &request.sales[i];
        seq_of.insert(sale.sale_id, sale.terminal_seq);
        order.push(((sale.terminal_seq, 0), Write::Sale(i)));
    }
    for (k, vp) in plan.voids.iter().enumerate() {
        let v = &request.voids[vp.index];
        let after = v
            .after_seq
            .max(seq_of.get(&v.sale_id).copied().unwrap_or(0));
        order.push(((after, 1), Write::Void(k)));
    }
    order.sort_by_key(|(key, _)| *key);
    order.into_iter().map(|(_, w)| w).collect()
}

/// The highest seq below which nothing is missing, from the last one
/// acknowledged and the seqs received above it (stored or quarantined, in
/// increasing order, as the backend reads them: reading stops at the first
/// gap).
pub fn contiguous_ack<E>(
    acked: u64,
    received_above: impl IntoIterator<Item = Result<u64, E>>,
) -> Result<u64, E> {
    let mut acked = acked;
    for seq in received_above {
        if seq? != acked + 1 {
            break;
        }
        acked += 1;
    }
    Ok(acked)
}

/// The seq a sync's lease steps are tagged with: the counter's highest seq,
/// sent or not.
pub fn step_seq(request: &SyncRequest) -> u64 {
    let received = request.sales.last().map(|s| s.terminal_seq).unwrap_or(0);
    request.last_seq.max(received)
}

/// Whether a lease's totals differ from its last recorded step.
pub fn needs_step(last: Option<LeaseTotals>, now: LeaseTotals) -> bool {
    last != Some(now)
}

/// An open shift is shown to the supervisor as it is; one whose float or
/// cashier is out of range is not stored (the counter checks it too).
pub fn open_shift_storable(s: &OpenShift) -> bool {
    limits::amount("float", s.float).is_ok()
        && limits::text("cashier", &s.cashier, limits::STAFF_NAME_CHARS).is_ok()
}

/// The lease as it stood at each seq: its recorded steps, or, for a lease
/// older than the history, its totals now.
pub fn history_or_now(steps: Vec<super::LeaseStep>, now: LeaseTotals) -> LeaseHistory {
    if steps.is_empty() {
        return LeaseHistory::new(vec![super::LeaseStep {
            after_seq: 0,
            totals: now,
        }]);
    }
    LeaseHistory::new(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_stop_at_the_first_gap() {
        let ok = |v: Vec<u64>| v.into_iter().map(Ok::<u64, ()>);
        assert_eq!(contiguous_ack(3, ok(vec![4, 5, 7])), Ok(5));
        assert_eq!(contiguous_ack(0, ok(vec![])), Ok(0));
    }
}
