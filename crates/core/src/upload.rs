//! Judging what a counter uploads, as pure rules: the server loads the facts
//! (the lease as it stood at each sale's seq, the catalogue version a sale
//! names, the gate admissions it knows of, its own clock), calls these, and
//! writes what they decide.
//!
//! A sale that fails a rule is *quarantined*, never dropped and never allowed
//! to block the sales after it: the counter's acknowledged seq moves past it
//! and a supervisor sees it with its reason. Only a malformed body (what no
//! honest counter sends: seqs out of order or range, one id twice) is refused
//! as a whole.
//!
//! The rules for one item live here; `batch` judges a whole body with them.

pub mod batch;

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::api::sync::{Payment, PaymentMethod, SaleRecord, ShiftRecord, SyncRequest, VoidRecord};
use crate::catalogue::Catalogue;
use crate::inventory::LeaseTotals;
use crate::limits::{self, LimitError};
use crate::pricing::{price_cart, CartLimits, CartLine, Channel};

/// A lease's totals as the counter knew them from just after `after_seq`
/// onwards: grants it could use and releases it had made.
///
/// The server records one step whenever a sync changes a lease, tagged with
/// the counter's highest seq at that sync: a grant answered to that sync can
/// only be used by later sales, and a release it reports was made before any
/// later sale. A sale is judged against the step in force at its seq, never
/// against the lease's current size (a release made after the sale would
/// otherwise make an honest sale look like an oversell).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseStep {
    pub after_seq: u64,
    pub totals: LeaseTotals,
}

/// The steps of one lease, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseHistory {
    steps: Vec<LeaseStep>,
}

impl LeaseHistory {
    /// `steps` in the order they were recorded: of two steps at one seq,
    /// the later one counts (the sort is stable).
    pub fn new(mut steps: Vec<LeaseStep>) -> LeaseHistory {
        steps.sort_by_key(|s| s.after_seq);
        LeaseHistory { steps }
    }

    /// What the lease escrowed when sale `seq` was made: the latest step
    /// recorded strictly before it (nothing, before the first grant).
    pub fn escrow_at(&self, seq: u64) -> u32 {
        let i = self.steps.partition_point(|s| s.after_seq < seq);
        match i {
            0 => 0,
            i => self.steps[i - 1].totals.escrow(),
        }
    }

    pub fn steps(&self) -> &[LeaseStep] {
        &self.steps
    }
}

/// One change to a lease's sold count, as the counter made them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    Sale {
        sale_id: Uuid,
        seq: u64,
        admissions: u32,
    },
    /// A void whose places the counter put back in this lease.
    Void {
        sale_id: Uuid,
        after_seq: u64,
        admissions: u32,
    },
}

impl LeaseEvent {
    /// A void happened after sale `after_seq` and before the next one.
    fn order(&self) -> (u64, u8) {
        match self {
            LeaseEvent::Sale { seq, .. } => (*seq, 0),
            LeaseEvent::Void { after_seq, .. } => (*after_seq, 1),
        }
    }
}

/// Events in the order the counter made them. A void can only follow its
/// sale, so one that claims to come earlier is moved just after it.
fn in_order(events: &[LeaseEvent]) -> Vec<&LeaseEvent> {
    let sale_seq: HashMap<Uuid, u64> = events
        .iter()
        .filter_map(|e| match e {
            LeaseEvent::Sale { sale_id, seq, .. } => Some((*sale_id, *seq)),
            LeaseEvent::Void { .. } => None,
        })
        .collect();
    let mut ordered: Vec<&LeaseEvent> = events.iter().collect();
    ordered.sort_by_key(|e| match e {
        LeaseEvent::Void {
            sale_id, after_seq, ..
        } => (
            (*after_seq).max(sale_seq.get(sale_id).copied().unwrap_or(0)),
            1,
        ),
        other => other.order(),
    });
    ordered
}

/// What the replay decided for one sale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaleVerdict {
    Accepted,
    Quarantined(String),
}

/// Replays a lease's new events on top of what the server already counted
/// (`sold`: admissions of stored sales minus voids that returned places) and
/// decides each sale: a sale is accepted while the lease, as it stood at the
/// sale's seq, covers it. A revoked lease accepts everything (those sales are
/// flagged over capacity by the caller, never lost). Voids of sales this
/// replay quarantined return nothing: those places were never counted.
///
/// Returns the verdicts by sale id and the lease's sold count afterwards.
pub fn replay_lease(
    sold: u32,
    history: &LeaseHistory,
    revoked: bool,
    events: &[LeaseEvent],
) -> (HashMap<Uuid, SaleVerdict>, u32) {
    let ordered = in_order(events);
    let mut count = u64::from(sold);
    let mut verdicts = HashMap::new();
    let mut quarantined = HashSet::new();
    for event in ordered {
        match *event {
            LeaseEvent::Sale {
                sale_id,
                seq,
                admissions,
            } => {
                if verdicts.contains_key(&sale_id) {
                    continue;
                }
                let escrow = history.escrow_at(seq);
                let after = count + u64::from(admissions);
                if revoked || after <= u64::from(escrow) {
                    count = after;
                    verdicts.insert(sale_id, SaleVerdict::Accepted);
                } else {
                    quarantined.insert(sale_id);
                    verdicts.insert(
                        sale_id,
                        SaleVerdict::Quarantined(format!(
                            "goes beyond its lease: {after} places sold of {escrow} the lease held at sale #{seq}"
                        )),
                    );
                }
            }
            LeaseEvent::Void {
                sale_id,
                admissions,
                ..
            } => {
                if !quarantined.contains(&sale_id) {
                    count = count.saturating_sub(u64::from(admissions));
                }
            }
        }
    }
    let sold = u32::try_from(count).unwrap_or(u32::MAX);
    (verdicts, sold)
}

/// Why a body is refused as a whole: only what no honest counter sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("sales must come in increasing terminal_seq order: #{seq} after #{previous}")]
    SeqOrder { seq: u64, previous: u64 },
    #[error("sale {0} appears twice in one body")]
    DuplicateSale(Uuid),
    #[error("void {0} appears twice in one body with different contents")]
    DuplicateVoid(Uuid),
    #[error("shift {0} appears twice in one body with different contents")]
    DuplicateShift(Uuid),
}

/// Checks a sync body's shape and removes exact repeats (the same void or
/// shift sent twice; two voids of one sale keep the first), so that what is
/// left can be judged item by item. Nothing here looks at the database.
pub fn normalise_body(request: &mut SyncRequest) -> Result<(), BodyError> {
    limits::count("sales", request.sales.len(), limits::SALES_PER_SYNC)?;
    limits::count("voids", request.voids.len(), limits::VOIDS_PER_SYNC)?;
    limits::count("leases", request.leases.len(), limits::LEASES_PER_SYNC)?;
    limits::count("wants", request.wants.len(), limits::WANTS_PER_SYNC)?;
    limits::count("shifts", request.shifts.len(), limits::SHIFTS_PER_SYNC)?;
    limits::count(
        "own_tallies",
        request.own_tallies.len(),
        limits::LEASES_PER_SYNC,
    )?;
    if request.last_seq != 0 {
        limits::seq("last_seq", request.last_seq)?;
    }
    let mut previous = 0;
    let mut sale_ids = HashSet::new();
    for sale in &request.sales {
        limits::seq("terminal_seq", sale.terminal_seq)?;
        if sale.terminal_seq <= previous {
            return Err(BodyError::SeqOrder {
                seq: sale.terminal_seq,
                previous,
            });
        }
        previous = sale.terminal_seq;
        if !sale_ids.insert(sale.sale_id) {
            return Err(BodyError::DuplicateSale(sale.sale_id));
        }
    }
    let mut voids: Vec<VoidRecord> = Vec::with_capacity(request.voids.len());
    let mut void_of_sale: HashSet<Uuid> = HashSet::new();
    for v in request.voids.drain(..) {
        limits::int_range("after_seq", v.after_seq, 0, limits::MAX_SEQ)?;
        if let Some(first) = voids.iter().find(|k| k.void_id == v.void_id) {
            if *first != v {
                return Err(BodyError::DuplicateVoid(v.void_id));
            }
            continue;
        }
        // A second void of the same sale voids nothing more; it is
        // acknowledged with the first so the counter stops sending it.
        if !void_of_sale.insert(v.sale_id) {
            continue;
        }
        voids.push(v);
    }
    request.voids = voids;
    let mut shifts: Vec<ShiftRecord> = Vec::with_capacity(request.shifts.len());
    for s in request.shifts.drain(..) {
        for seq in [s.first_seq, s.last_seq].into_iter().flatten() {
            limits::int_range("shift seq", seq, 0, limits::MAX_SEQ)?;
        }
        if let Some(first) = shifts.iter().find(|k| k.shift_id == s.shift_id) {
            if *first != s {
                return Err(BodyError::DuplicateShift(s.shift_id));
            }
            continue;
        }
        shifts.push(s);
    }
    request.shifts = shifts;
    Ok(())
}

/// Re-derives a counter sale's prices, VAT, total and admissions from the
/// catalogue version it names, and checks its payment. `Err` is the reason
/// to quarantine it.
pub fn judge_sale_money(catalogue: &Catalogue, sale: &SaleRecord) -> Result<(), String> {
    limits::count("lines", sale.lines.len(), limits::LINES_PER_SALE).map_err(|e| e.to_string())?;
    limits::text("cashier", &sale.cashier, limits::STAFF_NAME_CHARS).map_err(|e| e.to_string())?;
    let cart: Vec<CartLine> = sale
        .lines
        .iter()
        .map(|l| CartLine {
            product_id: l.product_id.clone(),
            quantity: l.quantity,
            membership_numbers: l.membership_numbers.clone(),
        })
        .collect();
    let priced = price_cart(catalogue, &cart, Channel::Counter, CartLimits::COUNTER)
        .map_err(|e| format!("cannot be priced: {e}"))?;
    for (sent, derived) in sale.lines.iter().zip(&priced.lines) {
        let same = sent.product_id == derived.product_id
            && sent.quantity == derived.quantity
            && sent.unit_price == derived.unit_price
            && sent.vat_bp == derived.vat_bp
            && sent.amounts == derived.amounts
            && sent.admits_each == derived.admits_each;
        if !same {
            return Err(format!(
                "line {} differs from the catalogue: {} x {} at {} (VAT {} bp), the catalogue says {} at {} (VAT {} bp)",
                sent.product_id,
                sent.quantity,
                sent.product_id,
                sent.unit_price,
                sent.vat_bp,
                derived.product_id,
                derived.unit_price,
                derived.vat_bp
            ));
        }
    }
    if sale.total != priced.total {
        return Err(format!(
            "total {} differs from the catalogue's {}",
            sale.total.amount, priced.total.amount
        ));
    }
    if sale.admissions != priced.admissions || sale.admissions == 0 {
        return Err(format!(
            "admissions {} differ from its lines' {}",
            sale.admissions, priced.admissions
        ));
    }
    check_payment(&sale.payment, priced.total.amount)
}

/// A payment covers exactly the total; every amount within range.
pub fn check_payment(p: &Payment, total: i64) -> Result<(), String> {
    let range = |field, v| limits::amount(field, v).map_err(|e| e.to_string());
    range("payment amount", p.amount)?;
    if p.amount != total {
        return Err(format!(
            "payment {} does not match the total {total}",
            p.amount
        ));
    }
    match p.method {
        PaymentMethod::Cash => {
            let tendered = p.tendered.ok_or("cash payment without a tendered amount")?;
            range("tendered", tendered)?;
            if tendered < p.amount || p.change != Some(tendered - p.amount) {
                return Err(format!(
                    "tendered {tendered} and change {:?} do not add up to {}",
                    p.change, p.amount
                ));
            }
        }
        PaymentMethod::Card => {
            if p.tendered.is_some() || p.change.is_some_and(|c| c != 0) {
                return Err("a card payment has no tendered cash or change".into());
            }
        }
    }
    Ok(())
}

/// A void's own fields: who approved it, why, and a refund no larger than the
/// sale. `Err` is the reason to quarantine it.
pub fn judge_void(v: &VoidRecord, sale_total: i64) -> Result<(), String> {
    limits::text("approved_by", &v.approved_by, limits::STAFF_NAME_CHARS)
        .map_err(|e| e.to_string())?;
    limits::text("reason", &v.reason, limits::VOID_REASON_CHARS).map_err(|e| e.to_string())?;
    limits::amount("refund", v.refund).map_err(|e| e.to_string())?;
    if v.refund > sale_total {
        return Err(format!(
            "refund {} is more than the sale's total {sale_total}",
            v.refund
        ));
    }
    Ok(())
}

/// A closed shift's money, range-checked. `Err` is the reason to quarantine it.
pub fn judge_shift(s: &ShiftRecord) -> Result<(), String> {
    let check = |field, v| limits::amount(field, v).map_err(|e: LimitError| e.to_string());
    check("float", s.float)?;
    check("cash_sales", s.cash_sales)?;
    check("card_sales", s.card_sales)?;
    check("cash_refunds", s.cash_refunds)?;
    check("card_refunds", s.card_refunds)?;
    check("counted_cash", s.counted_cash)?;
    limits::int_range(
        "expected_cash",
        s.expected_cash,
        -limits::MAX_AMOUNT_MINOR,
        2 * limits::MAX_AMOUNT_MINOR,
    )
    .map_err(|e| e.to_string())?;
    limits::text("cashier", &s.cashier, limits::STAFF_NAME_CHARS).map_err(|e| e.to_string())
}

/// What a counter's void does to the places of its sale, as the server
/// decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoidPlaces {
    /// Back in the counter's lease (and so, once released, on sale).
    Returned,
    /// The counter put them back in its lease, but the server knows better
    /// (the slot had started by its clock, or a gate admitted the ticket): the
    /// lease stays as the counter counts it, and the slot keeps the places
    /// aside so they are never sold twice.
    Kept,
    /// The counter kept them sold; nothing changes.
    NotReturned,
}

/// Whether a void returns places: only if the counter returned them to its
/// lease, the slot has not started by the *server's* clock, and no gate the
/// server knows of admitted any of the sale's tickets.
pub fn void_places(
    counter_returned: bool,
    slot_starts_at_ms: i64,
    server_now_ms: i64,
    admitted: bool,
) -> VoidPlaces {
    if !counter_returned {
        VoidPlaces::NotReturned
    } else if admitted || server_now_ms >= slot_starts_at_ms {
        VoidPlaces::Kept
    } else {
        VoidPlaces::Returned
    }
}

/// What a counter's "I need n places" may ask for: no more than one sale can
/// need (its tickets times the most any ticket admits, and the counter's cart
/// limit), and no more than the slot has free.
pub fn cap_need(need: u32, max_admits_per_ticket: u8, free: u32) -> u32 {
    let one_sale = limits::TICKETS_PER_ORDER
        .saturating_mul(u32::from(max_admits_per_ticket.max(1)))
        .min(CartLimits::COUNTER.max_admissions);
    need.min(one_sale).min(free)
}

/// An approval as the server stored it when a supervisor's PIN matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredApproval {
    pub device_id: Uuid,
    /// `ApprovalRequest::action`.
    pub action: String,
    /// `ApprovalRequest::subject`.
    pub subject: Uuid,
    pub approved_by: String,
    /// The void that used it, once one did.
    pub used_by: Option<Uuid>,
}

/// Whether an uploaded void may be applied: it carries an approval this
/// server issued to this very counter for voiding this very sale, not used
/// by another void (the same void sent again may use it again). `Ok`: the
/// approver to record; `Err`: why the void is refused.
pub fn check_void_approval(
    device: Uuid,
    void: &VoidRecord,
    stored: Option<&StoredApproval>,
) -> Result<String, String> {
    let Some(approval) = void.approval_id else {
        return Err(format!(
            "void {} carries no supervisor approval from the server",
            void.void_id
        ));
    };
    let Some(stored) = stored else {
        return Err(format!(
            "void {}: approval {approval} was not issued by this server",
            void.void_id
        ));
    };
    let bound = crate::api::approvals::ApprovalRequest::Void {
        sale_id: void.sale_id,
    };
    if stored.device_id != device
        || stored.action != bound.action()
        || stored.subject != bound.subject()
        || stored.used_by.is_some_and(|u| u != void.void_id)
    {
        return Err(format!(
            "void {}: approval {approval} does not approve voiding sale {} from this counter",
            void.void_id, void.sale_id
        ));
    }
    Ok(stored.approved_by.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn step(after_seq: u64, granted_total: u32, released_total: u32) -> LeaseStep {
        LeaseStep {
            after_seq,
            totals: LeaseTotals {
                granted_total,
                released_total,
            },
        }
    }

    fn id(n: u64) -> Uuid {
        Uuid::from_u64_pair(0, n)
    }

    #[test]
    fn a_release_after_a_sale_does_not_make_it_an_oversell() {
        // Granted 10 before sale 1; sold 5 (one admission each), voided the
        // 5th after it, released the 6 unused when the slot closed (reported
        // with last_seq 5).
        let history = LeaseHistory::new(vec![step(0, 10, 0), step(5, 10, 6)]);
        let mut events: Vec<LeaseEvent> = (1..=5)
            .map(|s| LeaseEvent::Sale {
                sale_id: id(s),
                seq: s,
                admissions: 1,
            })
            .collect();
        events.push(LeaseEvent::Void {
            sale_id: id(5),
            after_seq: 5,
            admissions: 1,
        });
        let (verdicts, sold) = replay_lease(0, &history, false, &events);
        assert!(verdicts.values().all(|v| *v == SaleVerdict::Accepted));
        assert_eq!(sold, 4);
        // The old rule, against the lease's current escrow (4), refused #5.
        assert_eq!(history.escrow_at(u64::MAX), 4);
    }

    #[test]
    fn a_sale_beyond_its_lease_is_quarantined_and_later_sales_still_count() {
        let history = LeaseHistory::new(vec![step(0, 2, 0)]);
        let events = [
            LeaseEvent::Sale {
                sale_id: id(1),
                seq: 1,
                admissions: 2,
            },
            LeaseEvent::Sale {
                sale_id: id(2),
                seq: 2,
                admissions: 1,
            },
            // Voiding the quarantined sale returns nothing.
            LeaseEvent::Void {
                sale_id: id(2),
                after_seq: 2,
                admissions: 1,
            },
        ];
        let (verdicts, sold) = replay_lease(0, &history, false, &events);
        assert_eq!(verdicts[&id(1)], SaleVerdict::Accepted);
        assert!(matches!(verdicts[&id(2)], SaleVerdict::Quarantined(_)));
        assert_eq!(sold, 2);
    }

    #[test]
    fn void_places_follow_the_servers_clock_and_gates() {
        assert_eq!(void_places(true, 1000, 999, false), VoidPlaces::Returned);
        assert_eq!(void_places(true, 1000, 1000, false), VoidPlaces::Kept);
        assert_eq!(void_places(true, 1000, 10, true), VoidPlaces::Kept);
        assert_eq!(void_places(false, 1000, 10, false), VoidPlaces::NotReturned);
    }

    #[test]
    fn need_is_capped() {
        assert_eq!(
            cap_need(u32::MAX, 4, 1_000_000),
            (limits::TICKETS_PER_ORDER * 4).min(CartLimits::COUNTER.max_admissions)
        );
        assert_eq!(cap_need(u32::MAX, 4, 7), 7);
        assert_eq!(cap_need(3, 1, 7), 3);
    }

    #[test]
    fn payments_refunds_and_floats_are_range_checked() {
        let cash = |tendered: i64, change: i64| Payment {
            method: PaymentMethod::Cash,
            amount: 1500,
            tendered: Some(tendered),
            change: Some(change),
        };
        assert_eq!(check_payment(&cash(2000, 500), 1500), Ok(()));
        assert!(check_payment(&cash(i64::MAX, i64::MAX - 1500), 1500).is_err());
        assert!(check_payment(&cash(1000, -500), 1500).is_err());
        let negative = Payment {
            method: PaymentMethod::Card,
            amount: -1500,
            tendered: None,
            change: None,
        };
        assert!(check_payment(&negative, -1500).is_err());
    }

    /// An honest counter: sells within its lease, voids (returning places),
    /// releases unused places, and syncs now and then. Every sync records a
    /// step tagged with its highest seq.
    #[derive(Debug, Clone)]
    enum Act {
        Sell(u32),
        Void(usize),
        Release(u32),
        Sync(u32),
    }

    fn act() -> impl Strategy<Value = Act> {
        prop_oneof![
            4 => (1u32..5).prop_map(Act::Sell),
            1 => (0usize..50).prop_map(Act::Void),
            1 => (0u32..10).prop_map(Act::Release),
            1 => (0u32..10).prop_map(Act::Sync),
        ]
    }

    proptest! {
        /// However an honest counter's history is cut into uploads, no sale
        /// of it is quarantined, and the server ends with the counter's count.
        #[test]
        fn an_honest_counter_is_never_quarantined(
            acts in proptest::collection::vec(act(), 1..120),
            cuts in proptest::collection::vec(1usize..40, 1..10),
        ) {
            let mut totals = LeaseTotals { granted_total: 10, released_total: 0 };
            let mut steps = vec![LeaseStep { after_seq: 0, totals }];
            let mut sold = 0u32;
            let mut seq = 0u64;
            let mut sales: Vec<(u64, u32, bool)> = Vec::new();
            let mut events = Vec::new();
            for a in acts {
                match a {
                    Act::Sell(n) => {
                        if sold + n <= totals.escrow() {
                            seq += 1;
                            sold += n;
                            sales.push((seq, n, false));
                            events.push(LeaseEvent::Sale { sale_id: id(seq), seq, admissions: n });
                        }
                    }
                    Act::Void(i) => {
                        if let Some(s) = sales.get_mut(i) {
                            if !s.2 {
                                s.2 = true;
                                sold -= s.1;
                                events.push(LeaseEvent::Void { sale_id: id(s.0), after_seq: seq, admissions: s.1 });
                            }
                        }
                    }
                    Act::Release(n) => {
                        totals.released_total += n.min(totals.escrow() - sold);
                    }
                    Act::Sync(grant) => {
                        steps.push(LeaseStep { after_seq: seq, totals });
                        totals.granted_total += grant;
                        steps.push(LeaseStep { after_seq: seq, totals });
                    }
                }
            }
            steps.push(LeaseStep { after_seq: seq, totals });
            // The server learns the whole history of steps as syncs go by;
            // the events arrive in rounds cut by seq.
            let history = LeaseHistory::new(steps);
            let mut server_sold = 0;
            let mut from = 0u64;
            let mut bounds: Vec<u64> = cuts.iter().map(|c| *c as u64).collect();
            bounds.push(u64::MAX);
            bounds.sort();
            for to in bounds {
                let round: Vec<LeaseEvent> = events
                    .iter()
                    .copied()
                    .filter(|e| { let (s, _) = e.order(); s > from && s <= to })
                    .collect();
                let (verdicts, after) = replay_lease(server_sold, &history, false, &round);
                prop_assert!(verdicts.values().all(|v| *v == SaleVerdict::Accepted), "{verdicts:?}");
                server_sold = after;
                from = to;
                if from == u64::MAX { break; }
            }
            prop_assert_eq!(server_sold, sold);
        }

        /// Whatever a counter sends, the places the server counts as sold
        /// never exceed what the lease held at any accepted sale's seq.
        #[test]
        fn no_upload_sells_beyond_the_lease(
            steps in proptest::collection::vec((0u64..40, 0u32..30, 0u32..30), 1..6),
            raw in proptest::collection::vec((0u8..2, 1u64..40, 0u32..8, 0u64..40), 0..60),
            start in 0u32..10,
        ) {
            let history = LeaseHistory::new(
                steps.iter().map(|&(a, g, r)| step(a, g.max(r), r)).collect(),
            );
            let events: Vec<LeaseEvent> = raw
                .iter()
                .map(|&(kind, seq, n, target)| if kind == 0 {
                    LeaseEvent::Sale { sale_id: id(seq), seq, admissions: n }
                } else {
                    LeaseEvent::Void { sale_id: id(target), after_seq: seq, admissions: n }
                })
                .collect();
            let (verdicts, _) = replay_lease(start, &history, false, &events);
            // Re-run the accepted ones: each one fits its lease as it stood.
            let ordered = in_order(&events);
            let mut count = u64::from(start);
            let mut seen = HashSet::new();
            for e in ordered {
                match *e {
                    LeaseEvent::Sale { sale_id, seq, admissions } => {
                        if !seen.insert(sale_id) { continue; }
                        if verdicts.get(&sale_id) == Some(&SaleVerdict::Accepted) {
                            count += u64::from(admissions);
                            prop_assert!(count <= u64::from(history.escrow_at(seq)));
                        }
                    }
                    LeaseEvent::Void { sale_id, admissions, .. } => {
                        if !matches!(verdicts.get(&sale_id), Some(SaleVerdict::Quarantined(_))) {
                            count = count.saturating_sub(u64::from(admissions));
                        }
                    }
                }
            }
        }
    }

    fn approved(device: Uuid, sale: Uuid) -> StoredApproval {
        StoredApproval {
            device_id: device,
            action: "void".into(),
            subject: sale,
            approved_by: "Sam".into(),
            used_by: None,
        }
    }

    #[test]
    fn a_void_needs_the_approval_issued_for_that_sale_on_that_counter() {
        let (device, sale, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut void = VoidRecord {
            void_id: Uuid::now_v7(),
            sale_id: sale,
            after_seq: 1,
            at: jiff::Timestamp::UNIX_EPOCH,
            shift_id: None,
            approved_by: "whoever the counter says".into(),
            approval_id: None,
            reason: "wrong ticket".into(),
            returned_to_lease: true,
            refund: 1500,
            refund_method: PaymentMethod::Cash,
        };
        let stored = approved(device, sale);
        assert!(
            check_void_approval(device, &void, Some(&stored)).is_err(),
            "no approval id"
        );
        void.approval_id = Some(Uuid::now_v7());
        assert!(
            check_void_approval(device, &void, None).is_err(),
            "not issued here"
        );
        assert_eq!(
            check_void_approval(device, &void, Some(&stored)),
            Ok("Sam".into())
        );
        assert!(
            check_void_approval(other, &void, Some(&stored)).is_err(),
            "another counter"
        );
        let for_other_sale = approved(device, other);
        assert!(check_void_approval(device, &void, Some(&for_other_sale)).is_err());
        let used_elsewhere = StoredApproval {
            used_by: Some(Uuid::now_v7()),
            ..stored.clone()
        };
        assert!(check_void_approval(device, &void, Some(&used_elsewhere)).is_err());
        let used_by_this = StoredApproval {
            used_by: Some(void.void_id),
            ..stored
        };
        assert_eq!(
            check_void_approval(device, &void, Some(&used_by_this)),
            Ok("Sam".into()),
            "the same void sent again"
        );
    }
}
