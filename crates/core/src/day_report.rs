//! The day report assembled from the facts a backend loads: every sum, every
//! VAT split, every "what is missing" judgement and every order of lines is
//! made here, once, so the report of one history is the same whichever
//! backend stored it. A backend's loader only reads rows of the day asked for
//! ([`DayBounds`]) and hands them over as they are; [`assemble`] does the
//! rest and runs [`DayReport::check`] on the result.

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use uuid::Uuid;

use crate::ids::{DeviceId, LeaseId};
use crate::slot::SlotId;

use crate::api::report::{
    ChannelReport, ConflictLine, CounterUploads, DayReport, LeaseHeld, Missing, OnlineChannelLine,
    OverCapacity, PaymentRow, QuarantineLine, RefundCount, RefundLine, RefundsSummary, ShiftLine,
    SlotLine, VatRow, WaitlistReport,
};
use crate::api::sync::OpenShift;
use crate::clock::from_ms;
use crate::pricing::PricedLine;
use crate::vat::{cancelled_split, format_rate};

/// A museum day as instants (milliseconds, `[start_ms, end_ms)`, in the
/// museum's zone: 23 or 25 hours on a DST change) and as slot ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DayBounds {
    pub date: Date,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Slot ids read `YYYY-MM-DDTHH:MM`: every slot of the day sorts from
    /// `YYYY-MM-DDT` up to, not including, `YYYY-MM-DDU`, a range the slot-id
    /// indexes serve (a `LIKE` pattern may not use them).
    pub slots_from: String,
    pub slots_to: String,
}

impl DayBounds {
    pub fn of(date: Date, tz: &TimeZone) -> Result<DayBounds, String> {
        let start = date
            .to_zoned(tz.clone())
            .map_err(|e| e.to_string())?
            .timestamp()
            .as_millisecond();
        let end = date
            .tomorrow()
            .and_then(|d| d.to_zoned(tz.clone()))
            .map_err(|e| e.to_string())?
            .timestamp()
            .as_millisecond();
        Ok(DayBounds {
            date,
            start_ms: start,
            end_ms: end,
            slots_from: format!("{date}T"),
            slots_to: format!("{date}U"),
        })
    }
}

/// An online order made that day.
#[derive(Clone, Debug)]
pub struct OrderFact {
    pub total: i64,
    pub admissions: i64,
    pub lines: Vec<PricedLine>,
    pub channel: String,
}

/// One product of one order some of whose tickets were cancelled that day:
/// how many were cancelled before the day (`before`) and on it (`now`).
#[derive(Clone, Debug)]
pub struct CancelledFact {
    pub product_id: String,
    pub before: u32,
    pub now: u32,
    /// Admissions of the tickets cancelled that day.
    pub admits: i64,
    /// The ticket's own price and rate, when stored; else the order line's.
    pub price: Option<i64>,
    pub vat_bp: Option<u32>,
    pub lines: Vec<PricedLine>,
    pub channel: String,
}

#[derive(Clone, Debug)]
pub struct CounterFact {
    pub device_id: Uuid,
    pub name: String,
}

/// A counter sale made that day.
#[derive(Clone, Debug)]
pub struct SaleFact {
    pub device_id: Uuid,
    pub total: i64,
    pub admissions: i64,
    pub lines: Vec<PricedLine>,
    pub method: String,
}

/// A counter void made that day, with its sale's admissions and lines.
#[derive(Clone, Debug)]
pub struct VoidFact {
    pub device_id: Uuid,
    pub refund: i64,
    pub method: String,
    pub admissions: i64,
    pub lines: Vec<PricedLine>,
}

/// What the server has of a shift's cash (all of its sales and voids,
/// whatever their day).
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerCash {
    pub cash_sales: i64,
    pub cash_refunds: i64,
}

/// A shift closed (Z report received) or opened that day.
#[derive(Clone, Debug)]
pub struct ClosedShiftFact {
    pub shift_id: Uuid,
    pub device_id: Uuid,
    pub cashier: String,
    pub opened_at_ms: i64,
    pub closed_at_ms: i64,
    pub float: i64,
    pub expected_cash: i64,
    pub counted_cash: i64,
    pub server: ServerCash,
}

/// A shift still open at its counter's last sync.
#[derive(Clone, Debug)]
pub struct OpenShiftFact {
    pub device_id: Uuid,
    pub shift: OpenShift,
    pub server: ServerCash,
}

/// A counter's sync progress.
#[derive(Clone, Debug)]
pub struct SyncFact {
    pub device_id: Uuid,
    pub acked_seq: u64,
    pub max_seq: u64,
    pub reported_seq: u64,
    pub last_sync_at_ms: i64,
    pub shift_open: bool,
}

/// A lease of the day's slots, not revoked, with places still unsold.
#[derive(Clone, Debug)]
pub struct LeaseHeldFact {
    pub counter: String,
    pub lease_id: Uuid,
    pub slot_id: SlotId,
    pub escrow: u32,
    pub sold: u32,
    /// Revoked by a supervisor: its places went back to the slot, so none
    /// are held over.
    pub revoked: bool,
    pub last_sync_at_ms: Option<i64>,
}

/// One slot of the day with its sums.
#[derive(Clone, Debug)]
pub struct SlotFact {
    pub slot_id: SlotId,
    pub capacity: u32,
    pub sold_online: i64,
    /// Counter admissions sold, less those a void put back on sale.
    pub sold_counter: i64,
    pub admitted: i64,
    pub over_capacity: i64,
    pub kept_by_voids: i64,
}

/// Waiting-list entries of the day's slots in one state.
#[derive(Clone, Debug)]
pub struct WaitlistFact {
    pub state: String,
    pub entries: u32,
    pub admissions: u32,
}

/// Everything a day report is made of, as loaded.
#[derive(Clone, Debug)]
pub struct DayFacts {
    pub bounds: DayBounds,
    pub museum: String,
    pub currency: String,
    pub generated_at: Timestamp,
    pub orders: Vec<OrderFact>,
    pub cancelled: Vec<CancelledFact>,
    /// Distinct (order, time) pairs of the day's cancellations: one visitor's
    /// request cancels the tickets it names at one time.
    pub cancellations: u32,
    /// Every counter (also revoked ones: their sales still count).
    pub counters: Vec<CounterFact>,
    pub sales: Vec<SaleFact>,
    pub voids: Vec<VoidFact>,
    pub closed_shifts: Vec<ClosedShiftFact>,
    pub open_shifts: Vec<OpenShiftFact>,
    pub syncs: Vec<SyncFact>,
    pub leases_held: Vec<LeaseHeldFact>,
    pub over_capacity: Vec<OverCapacity>,
    pub slots: Vec<SlotFact>,
    pub conflicts: Vec<ConflictLine>,
    pub quarantine: Vec<QuarantineLine>,
    pub waitlist: Vec<WaitlistFact>,
    pub refunds_by_state: Vec<RefundCount>,
    pub refunds_by_reason: Vec<RefundCount>,
    pub refunds_failed: Vec<RefundLine>,
}

/// Facts that cannot be read as a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactError {
    #[error("waiting-list state {0:?}")]
    WaitlistState(String),
}

/// Per-rate VAT sums, built line by line (lines are already rounded).
#[derive(Default)]
struct Vat(BTreeMap<u32, (i64, i64, i64)>);

impl Vat {
    fn add(&mut self, lines: &[PricedLine], sign: i64) {
        for l in lines {
            let e = self.0.entry(l.vat_bp).or_default();
            e.0 += sign * l.amounts.net;
            e.1 += sign * l.amounts.tax;
            e.2 += sign * l.amounts.gross;
        }
    }

    fn rows(self) -> Vec<VatRow> {
        self.0
            .into_iter()
            .map(|(rate_bp, (net, tax, gross))| VatRow {
                rate_bp,
                label: format_rate(rate_bp),
                net,
                tax,
                gross,
            })
            .collect()
    }
}

/// The day's reconciliation; `does_not_add_up` is set if its own sums
/// disagree, so every form of it (HTTP, screen, CLI) says so.
pub fn assemble(facts: DayFacts) -> Result<DayReport, FactError> {
    let mut counters = facts.counters.clone();
    // By name as Rust orders text, not as a database collates it: the same
    // order on every backend.
    counters.sort_by(|a, b| (&a.name, a.device_id).cmp(&(&b.name, b.device_id)));
    let (online, online_channels) = online_channel(&facts);
    let mut channels = vec![online];
    for counter in &counters {
        let c = counter_channel(&facts, counter);
        if c.sales_count > 0 || c.voids_count > 0 {
            channels.push(c);
        }
    }
    let mut total = ChannelReport {
        channel: "total".into(),
        ..ChannelReport::default()
    };
    for c in &channels {
        total.absorb(c);
    }
    let mut report = DayReport {
        date: facts.bounds.date,
        museum: facts.museum.clone(),
        currency: facts.currency.clone(),
        generated_at: facts.generated_at,
        shifts: shifts(&facts, &counters),
        missing: missing(&facts, &counters),
        slots: slots(&facts),
        conflicts: sorted(facts.conflicts.clone(), |c| {
            (c.first_at, c.ticket_id, c.second_at)
        }),
        quarantine: sorted(facts.quarantine.clone(), |q| {
            (q.received_at, q.terminal_seq, q.item_id)
        }),
        waitlist: waitlist(&facts.waitlist)?,
        channels,
        total,
        online_channels,
        refunds: RefundsSummary {
            by_state: sorted(facts.refunds_by_state.clone(), |r| r.key.clone()),
            by_reason: sorted(facts.refunds_by_reason.clone(), |r| r.key.clone()),
            needs_attention: sorted(facts.refunds_failed.clone(), |r| {
                (r.created_at, r.refund_id.clone())
            }),
        },
        does_not_add_up: None,
    };
    report.does_not_add_up = report.check().err();
    Ok(report)
}

fn sorted<T, K: Ord>(mut v: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    v.sort_by_key(key);
    v
}

/// The online channel's takings, and the same split by who sold each order.
/// Sales count on the day the order was made; tickets cancelled from "my
/// booking" count as refunds on the day they were cancelled, each at its own
/// price and VAT rate.
fn online_channel(facts: &DayFacts) -> (ChannelReport, Vec<OnlineChannelLine>) {
    let mut c = ChannelReport {
        channel: "online".into(),
        ..ChannelReport::default()
    };
    let mut by: BTreeMap<String, OnlineChannelLine> = BTreeMap::new();
    let mut vat = Vat::default();
    for o in &facts.orders {
        c.sales_count += 1;
        c.admissions += o.admissions;
        c.gross_sales += o.total;
        vat.add(&o.lines, 1);
        let line = line_of(&mut by, &o.channel);
        line.orders += 1;
        line.admissions += o.admissions;
        line.gross_sales += o.total;
    }
    // The VAT a line gives back is the line as it stood before the day's
    // cancellations minus the line after them (`cancelled_split`), so a line
    // cancelled over several days gives back exactly the tax it was sold with.
    for x in &facts.cancelled {
        if x.now == 0 {
            continue;
        }
        let of_line = x.lines.iter().find(|l| l.product_id == x.product_id);
        let price = x.price.or(of_line.map(|l| l.unit_price)).unwrap_or(0);
        let rate = x.vat_bp.or(of_line.map(|l| l.vat_bp)).unwrap_or(0);
        let quantity = of_line.map_or(x.before + x.now, |l| l.quantity);
        let split = cancelled_split(price, quantity, rate, x.before, x.now);
        c.refunds += split.gross;
        c.admissions -= x.admits;
        let e = vat.0.entry(rate).or_default();
        e.0 -= split.net;
        e.1 -= split.tax;
        e.2 -= split.gross;
        let line = line_of(&mut by, &x.channel);
        line.refunds += split.gross;
        line.admissions -= x.admits;
    }
    c.voids_count = facts.cancellations;
    c.net_takings = c.gross_sales - c.refunds;
    c.vat = vat.rows();
    c.payments = vec![PaymentRow {
        method: "online".into(),
        sales: c.gross_sales,
        refunds: c.refunds,
        net: c.net_takings,
    }];
    let mut lines: Vec<OnlineChannelLine> = by
        .into_values()
        .map(|mut l| {
            l.net_takings = l.gross_sales - l.refunds;
            l
        })
        .collect();
    // The shop first, then partners by name.
    lines.sort_by_key(|l| (l.channel != "web", l.channel.clone()));
    (c, lines)
}

fn line_of<'a>(
    by: &'a mut BTreeMap<String, OnlineChannelLine>,
    channel: &str,
) -> &'a mut OnlineChannelLine {
    by.entry(channel.to_string())
        .or_insert_with(|| OnlineChannelLine {
            channel: channel.to_string(),
            ..OnlineChannelLine::default()
        })
}

fn counter_channel(facts: &DayFacts, counter: &CounterFact) -> ChannelReport {
    let mut c = ChannelReport {
        channel: counter.name.clone(),
        device_id: Some(DeviceId(counter.device_id)),
        ..ChannelReport::default()
    };
    let mut vat = Vat::default();
    let mut pay: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    pay.insert("cash".into(), (0, 0));
    pay.insert("card".into(), (0, 0));
    for s in facts
        .sales
        .iter()
        .filter(|s| s.device_id == counter.device_id)
    {
        c.sales_count += 1;
        c.admissions += s.admissions;
        c.gross_sales += s.total;
        vat.add(&s.lines, 1);
        pay.entry(s.method.clone()).or_default().0 += s.total;
    }
    for v in facts
        .voids
        .iter()
        .filter(|v| v.device_id == counter.device_id)
    {
        c.voids_count += 1;
        c.refunds += v.refund;
        c.admissions -= v.admissions;
        vat.add(&v.lines, -1);
        pay.entry(v.method.clone()).or_default().1 += v.refund;
    }
    c.net_takings = c.gross_sales - c.refunds;
    c.vat = vat.rows();
    c.payments = pay
        .into_iter()
        .map(|(method, (sales, refunds))| PaymentRow {
            method,
            sales,
            refunds,
            net: sales - refunds,
        })
        .collect();
    c
}

fn name_of(counters: &[CounterFact], device: Uuid) -> String {
    counters
        .iter()
        .find(|c| c.device_id == device)
        .map_or_else(|| "unknown counter".to_string(), |c| c.name.clone())
}

/// float + cash sales - cash refunds, from what the server has.
fn server_expected(float: i64, cash: ServerCash) -> i64 {
    float + cash.cash_sales - cash.cash_refunds
}

fn shifts(facts: &DayFacts, counters: &[CounterFact]) -> Vec<ShiftLine> {
    let mut out: Vec<ShiftLine> = facts
        .closed_shifts
        .iter()
        .map(|s| {
            let server_expected_cash = server_expected(s.float, s.server);
            ShiftLine {
                counter: name_of(counters, s.device_id),
                shift_id: s.shift_id,
                cashier: s.cashier.clone(),
                opened_at: from_ms(s.opened_at_ms),
                closed_at: Some(from_ms(s.closed_at_ms)),
                float: s.float,
                expected_cash: Some(s.expected_cash),
                counted_cash: Some(s.counted_cash),
                over_short: Some(s.counted_cash - s.expected_cash),
                z_received: true,
                server_expected_cash,
                not_uploaded_cash: Some(s.expected_cash - server_expected_cash),
            }
        })
        .collect();
    out.sort_by_key(|s| (s.opened_at, s.shift_id));
    // Shifts still open at their counter's last sync: no Z report yet.
    let mut open: Vec<&OpenShiftFact> = facts.open_shifts.iter().collect();
    open.sort_by_key(|o| (o.shift.opened_at, o.shift.shift_id));
    for o in open {
        let closed_already = out.iter().any(|s| s.shift_id == o.shift.shift_id);
        if closed_already || o.shift.opened_at.as_millisecond() >= facts.bounds.end_ms {
            continue;
        }
        out.push(ShiftLine {
            counter: name_of(counters, o.device_id),
            shift_id: o.shift.shift_id,
            cashier: o.shift.cashier.clone(),
            opened_at: o.shift.opened_at,
            closed_at: None,
            float: o.shift.float,
            expected_cash: None,
            counted_cash: None,
            over_short: None,
            z_received: false,
            server_expected_cash: server_expected(o.shift.float, o.server),
            not_uploaded_cash: None,
        });
    }
    out
}

fn missing(facts: &DayFacts, counters: &[CounterFact]) -> Missing {
    let mut m = Missing::default();
    let day = &facts.bounds;
    for counter in counters {
        let Some(sync) = facts
            .syncs
            .iter()
            .find(|s| s.device_id == counter.device_id)
        else {
            continue;
        };
        let active_today = (sync.last_sync_at_ms >= day.start_ms
            && sync.last_sync_at_ms < day.end_ms)
            || facts.sales.iter().any(|s| s.device_id == counter.device_id);
        if !active_today {
            continue;
        }
        let (acked, max_seq, reported) = (sync.acked_seq, sync.max_seq, sync.reported_seq);
        let mut problems = Vec::new();
        if max_seq > acked {
            problems.push(format!(
                "sales after #{acked} are missing (received up to #{max_seq}): an upload was lost or is still running"
            ));
        }
        if reported > max_seq {
            problems.push(format!(
                "{} sale(s) made at the counter (up to #{reported}) have not been uploaded yet",
                reported - max_seq
            ));
        }
        if sync.shift_open {
            let at = from_ms(sync.last_sync_at_ms);
            problems.push(format!(
                "shift still open and no Z report: last heard from at {at}; sales after that are not known to the server"
            ));
        }
        if !problems.is_empty() {
            m.counters.push(CounterUploads {
                counter: counter.name.clone(),
                device_id: DeviceId(counter.device_id),
                acked_seq: acked,
                highest_seq_received: max_seq,
                reported_seq: reported,
                last_sync_at: Some(from_ms(sync.last_sync_at_ms)),
                shift_open: sync.shift_open,
                problem: problems.join("; "),
            });
        }
    }
    m.leases_held = facts
        .leases_held
        .iter()
        .filter(|l| !l.revoked && l.escrow > l.sold)
        .map(|l| LeaseHeld {
            counter: l.counter.clone(),
            lease_id: LeaseId(l.lease_id),
            slot_id: l.slot_id,
            escrow: l.escrow,
            sold: l.sold,
            unsold: l.escrow - l.sold,
            last_sync_at: l.last_sync_at_ms.map(from_ms),
        })
        .collect();
    m.leases_held.sort_by(|a, b| {
        (a.slot_id, &a.counter, a.lease_id).cmp(&(b.slot_id, &b.counter, b.lease_id))
    });
    m.over_capacity = sorted(facts.over_capacity.clone(), |o| {
        (o.slot_id, o.terminal_seq, o.sale_id)
    });
    m
}

fn slots(facts: &DayFacts) -> Vec<SlotLine> {
    let mut out: Vec<SlotLine> = facts
        .slots
        .iter()
        .map(|s| SlotLine {
            slot_id: s.slot_id,
            capacity: s.capacity,
            sold_online: s.sold_online,
            sold_counter: s.sold_counter,
            admitted: s.admitted,
            no_shows: (s.sold_online + s.sold_counter - s.admitted).max(0),
            over_capacity: s.over_capacity,
            kept_by_voids: s.kept_by_voids,
        })
        .collect();
    out.sort_by_key(|s| s.slot_id);
    out
}

/// Where the entries of the day's waiting lists stand.
fn waitlist(facts: &[WaitlistFact]) -> Result<WaitlistReport, FactError> {
    let mut report = WaitlistReport::default();
    for f in facts {
        let count = match f.state.as_str() {
            "waiting" => &mut report.waiting,
            "offered" => &mut report.offered,
            "taken" => &mut report.taken,
            "expired" => &mut report.expired,
            "removed" => &mut report.unserved,
            other => return Err(FactError::WaitlistState(other.to_string())),
        };
        count.entries += f.entries;
        count.admissions += f.admissions;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vat::split_gross;

    fn line(product: &str, quantity: u32, unit_price: i64, vat_bp: u32) -> PricedLine {
        PricedLine {
            product_id: product.into(),
            name: product.into(),
            quantity,
            unit_price,
            vat_bp,
            amounts: split_gross(unit_price * i64::from(quantity), vat_bp),
            admits_each: 1,
            membership_numbers: Vec::new(),
        }
    }

    fn empty(date: Date) -> DayFacts {
        DayFacts {
            bounds: DayBounds::of(date, &TimeZone::get("Europe/Paris").expect("tz")).expect("day"),
            museum: "M".into(),
            currency: "EUR".into(),
            generated_at: Timestamp::UNIX_EPOCH,
            orders: Vec::new(),
            cancelled: Vec::new(),
            cancellations: 0,
            counters: Vec::new(),
            sales: Vec::new(),
            voids: Vec::new(),
            closed_shifts: Vec::new(),
            open_shifts: Vec::new(),
            syncs: Vec::new(),
            leases_held: Vec::new(),
            over_capacity: Vec::new(),
            slots: Vec::new(),
            conflicts: Vec::new(),
            quarantine: Vec::new(),
            waitlist: Vec::new(),
            refunds_by_state: Vec::new(),
            refunds_by_reason: Vec::new(),
            refunds_failed: Vec::new(),
        }
    }

    #[test]
    fn a_day_of_online_counter_sales_a_void_and_a_cancellation_adds_up() {
        let date = Date::constant(2026, 3, 29); // a DST change in Paris
        let mut f = empty(date);
        assert_eq!(f.bounds.end_ms - f.bounds.start_ms, 23 * 3_600_000);
        let desk = Uuid::from_u128(1);
        f.orders.push(OrderFact {
            total: 3 * 1_700,
            admissions: 3,
            lines: vec![line("adult", 3, 1_700, 550)],
            channel: "web".into(),
        });
        f.orders.push(OrderFact {
            total: 900,
            admissions: 1,
            lines: vec![line("child", 1, 900, 550)],
            channel: "partner".into(),
        });
        f.cancelled.push(CancelledFact {
            product_id: "adult".into(),
            before: 0,
            now: 1,
            admits: 1,
            price: Some(1_700),
            vat_bp: Some(550),
            lines: vec![line("adult", 3, 1_700, 550)],
            channel: "web".into(),
        });
        f.cancellations = 1;
        f.counters.push(CounterFact {
            device_id: desk,
            name: "Desk".into(),
        });
        f.sales.push(SaleFact {
            device_id: desk,
            total: 2_000,
            admissions: 2,
            lines: vec![line("adult", 2, 1_000, 2_000)],
            method: "cash".into(),
        });
        f.voids.push(VoidFact {
            device_id: desk,
            refund: 2_000,
            method: "cash".into(),
            admissions: 2,
            lines: vec![line("adult", 2, 1_000, 2_000)],
        });
        f.slots.push(SlotFact {
            slot_id: SlotId::new(date, 600).expect("slot"),
            capacity: 50,
            sold_online: 3,
            sold_counter: 0,
            admitted: 1,
            over_capacity: 0,
            kept_by_voids: 0,
        });
        let report = assemble(f).expect("assembles");
        assert_eq!(report.does_not_add_up, None);
        report.check().expect("adds up");
        let online = &report.channels[0];
        assert_eq!(online.gross_sales, 6_000);
        assert_eq!(online.refunds, 1_700);
        assert_eq!(online.admissions, 3);
        assert_eq!(report.online_channels[0].channel, "web");
        assert_eq!(report.channels[1].net_takings, 0);
        assert_eq!(report.total.net_takings, 6_000 - 1_700);
        assert_eq!(report.slots[0].no_shows, 2);
    }

    #[test]
    fn an_unknown_waiting_list_state_is_an_error_not_a_silent_zero() {
        let mut f = empty(Date::constant(2026, 5, 1));
        f.waitlist.push(WaitlistFact {
            state: "lost".into(),
            entries: 1,
            admissions: 2,
        });
        assert!(matches!(assemble(f), Err(FactError::WaitlistState(_))));
    }

    #[test]
    fn only_unrevoked_leases_with_unsold_places_are_held_over() {
        let date = Date::constant(2026, 12, 3);
        let mut f = empty(date);
        let slot: SlotId = "2026-12-03T10:00".parse().unwrap();
        let fact = |n: u128, escrow: u32, sold: u32, revoked: bool| LeaseHeldFact {
            counter: "Counter A".into(),
            lease_id: Uuid::from_u128(n),
            slot_id: slot,
            escrow,
            sold,
            revoked,
            last_sync_at_ms: None,
        };
        f.leases_held = vec![
            fact(1, 10, 4, false),
            fact(2, 10, 4, true),
            fact(3, 6, 6, false),
        ];
        let report = assemble(f).expect("report");
        let held = &report.missing.leases_held;
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(
            (held[0].lease_id, held[0].unsold),
            (LeaseId(Uuid::from_u128(1)), 6)
        );
    }
}
