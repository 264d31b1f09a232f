//! Reading one day's figures out of the database.

use std::collections::BTreeMap;

use jiff::civil::Date;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::from_ms;
use tessera_core::pricing::PricedLine;
use tessera_core::vat::{cancelled_split, format_rate};
use uuid::Uuid;

use super::{
    ChannelReport, ConflictLine, CounterUploads, DayReport, LeaseHeld, Missing, OnlineChannelLine,
    OverCapacity, PaymentRow, QuarantineLine, RefundCount, RefundLine, RefundsSummary, ShiftLine,
    SlotLine, VatRow, WaitlistReport,
};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Data(String),
}

fn lines_of(json: &str) -> Result<Vec<PricedLine>, ReportError> {
    serde_json::from_str(json)
        .map_err(|e| ReportError::Data(format!("stored sale lines unreadable: {e}")))
}

fn uuid(text: &str) -> Result<Uuid, ReportError> {
    Uuid::parse_str(text).map_err(|e| ReportError::Data(e.to_string()))
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

/// The slot ids of one day, as a range the slot-id indexes can serve (a
/// `LIKE 'date%'` pattern cannot use them: SQLite's LIKE ignores case, the
/// indexes do not).
pub(crate) struct SlotRange {
    pub from: String,
    pub to: String,
}

impl SlotRange {
    /// Slot ids read `YYYY-MM-DDTHH:MM`: every one of `date` sorts from
    /// `YYYY-MM-DDT` up to, not including, `YYYY-MM-DDU`.
    pub fn of(date: Date) -> SlotRange {
        SlotRange {
            from: format!("{date}T"),
            to: format!("{date}U"),
        }
    }
}

pub fn day_report(
    conn: &Connection,
    catalogue: &Catalogue,
    date: Date,
    now: Timestamp,
) -> Result<DayReport, ReportError> {
    let tz = catalogue
        .time_zone()
        .map_err(|e| ReportError::Data(e.to_string()))?;
    let start = date
        .to_zoned(tz.clone())
        .map_err(|e| ReportError::Data(e.to_string()))?
        .timestamp()
        .as_millisecond();
    let end = date
        .tomorrow()
        .and_then(|d| d.to_zoned(tz.clone()))
        .map_err(|e| ReportError::Data(e.to_string()))?
        .timestamp()
        .as_millisecond();
    let slot_prefix = SlotRange::of(date);

    let (online, online_channels) = online_channel(conn, start, end)?;
    let mut channels = vec![online];
    let counters = counters(conn)?;
    for (device_id, name) in &counters {
        let c = counter_channel(conn, device_id, name, start, end)?;
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
        date,
        museum: catalogue.museum.name.clone(),
        currency: catalogue.museum.currency.to_string(),
        generated_at: now,
        shifts: shifts(conn, &counters, start, end)?,
        missing: missing(conn, &counters, &slot_prefix, start, end)?,
        slots: slots(conn, &slot_prefix)?,
        conflicts: conflicts(conn, &slot_prefix)?,
        quarantine: quarantine(conn, &slot_prefix, start, end)?,
        waitlist: waitlist(conn, &slot_prefix)?,
        channels,
        total,
        online_channels,
        refunds: refunds(conn, start, end)?,
        does_not_add_up: None,
    };
    // A report that does not balance says so in every form it takes (HTTP,
    // screen, CLI), instead of only making the CLI exit 1.
    report.does_not_add_up = report.check().err();
    Ok(report)
}

/// Where the entries of the day's waiting lists stand.
fn waitlist(conn: &Connection, slot_prefix: &SlotRange) -> Result<WaitlistReport, ReportError> {
    let mut report = WaitlistReport::default();
    let mut stmt = conn.prepare(
        "SELECT state, COUNT(*), COALESCE(SUM(party), 0) FROM waitlist
         WHERE slot_id >= ?1 AND slot_id < ?2 GROUP BY state",
    )?;
    let rows = stmt.query_map(params![slot_prefix.from, slot_prefix.to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u32>(1)?,
            r.get::<_, u32>(2)?,
        ))
    })?;
    for row in rows {
        let (state, entries, admissions) = row?;
        let count = match state.as_str() {
            "waiting" => &mut report.waiting,
            "offered" => &mut report.offered,
            "taken" => &mut report.taken,
            "expired" => &mut report.expired,
            "removed" => &mut report.unserved,
            other => return Err(ReportError::Data(format!("waiting-list state {other:?}"))),
        };
        count.entries += entries;
        count.admissions += admissions;
    }
    Ok(report)
}

/// The online channel's takings, and the same split by who sold each order
/// (`web` and each trusted channel). Sales count on the day the order was
/// made; tickets cancelled from "my booking" count as refunds on the day
/// they were cancelled, each at its own price and VAT rate.
fn online_channel(
    conn: &Connection,
    start: i64,
    end: i64,
) -> Result<(ChannelReport, Vec<OnlineChannelLine>), ReportError> {
    let mut c = ChannelReport {
        channel: "online".into(),
        ..ChannelReport::default()
    };
    let mut by: BTreeMap<String, OnlineChannelLine> = BTreeMap::new();
    let mut vat = Vat::default();
    let mut stmt = conn.prepare(
        "SELECT total, admissions, lines, channel FROM orders WHERE created_at >= ?1 AND created_at < ?2",
    )?;
    let rows = stmt.query_map(params![start, end], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (total, admissions, lines, channel) = row?;
        c.sales_count += 1;
        c.admissions += admissions;
        c.gross_sales += total;
        vat.add(&lines_of(&lines)?, 1);
        let line = by
            .entry(channel.clone())
            .or_insert_with(|| OnlineChannelLine {
                channel,
                ..OnlineChannelLine::default()
            });
        line.orders += 1;
        line.admissions += admissions;
        line.gross_sales += total;
    }
    // Cancellations, per order line: the VAT a line gives back is the line
    // as it stood before the day's cancellations minus the line after them
    // (`cancelled_split`), so a line cancelled over several days gives back
    // exactly the tax it was sold with.
    let mut stmt = conn.prepare(
        "SELECT t.product_id,
                SUM(CASE WHEN t.cancelled_at < ?1 THEN 1 ELSE 0 END),
                SUM(CASE WHEN t.cancelled_at >= ?1 THEN 1 ELSE 0 END),
                SUM(CASE WHEN t.cancelled_at >= ?1 THEN t.admits ELSE 0 END),
                MAX(t.price), MAX(t.vat_bp), o.lines, o.channel
         FROM tickets t JOIN orders o ON o.order_id = t.order_id
         WHERE t.cancelled_at < ?2
           AND t.order_id IN (SELECT order_id FROM tickets WHERE cancelled_at >= ?1 AND cancelled_at < ?2)
         GROUP BY t.order_id, t.product_id",
    )?;
    let rows = stmt.query_map(params![start, end], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u32>(1)?,
            r.get::<_, u32>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<u32>>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, String>(7)?,
        ))
    })?;
    for row in rows {
        let (product, before, now, admits, price, vat_bp, lines, channel) = row?;
        if now == 0 {
            continue;
        }
        let lines = lines_of(&lines)?;
        let of_line = lines.iter().find(|l| l.product_id == product);
        let price = price.or(of_line.map(|l| l.unit_price)).unwrap_or(0);
        let rate = vat_bp.or(of_line.map(|l| l.vat_bp)).unwrap_or(0);
        let quantity = of_line.map_or(before + now, |l| l.quantity);
        let split = cancelled_split(price, quantity, rate, before, now);
        c.refunds += split.gross;
        c.admissions -= admits;
        let e = vat.0.entry(rate).or_default();
        e.0 -= split.net;
        e.1 -= split.tax;
        e.2 -= split.gross;
        let line = by
            .entry(channel.clone())
            .or_insert_with(|| OnlineChannelLine {
                channel,
                ..OnlineChannelLine::default()
            });
        line.refunds += split.gross;
        line.admissions -= admits;
    }
    // One cancellation is one visitor's request: the tickets it named share
    // their time.
    let cancellations: u32 = conn.query_row(
        "SELECT COUNT(*) FROM (SELECT DISTINCT order_id, cancelled_at FROM tickets
                               WHERE cancelled_at >= ?1 AND cancelled_at < ?2)",
        params![start, end],
        |r| r.get(0),
    )?;
    c.voids_count = cancellations;
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
    Ok((c, lines))
}

fn refunds(conn: &Connection, start: i64, end: i64) -> Result<RefundsSummary, ReportError> {
    let mut summary = RefundsSummary::default();
    for (column, out) in [
        ("status", &mut summary.by_state),
        ("reason", &mut summary.by_reason),
    ] {
        let mut stmt = conn.prepare(&format!(
            "SELECT {column}, COUNT(*), COALESCE(SUM(amount), 0) FROM refunds
             WHERE created_at >= ?1 AND created_at < ?2 GROUP BY {column} ORDER BY {column}"
        ))?;
        let rows = stmt.query_map(params![start, end], |r| {
            Ok(RefundCount {
                key: r.get(0)?,
                count: r.get(1)?,
                amount: r.get(2)?,
            })
        })?;
        *out = rows.collect::<rusqlite::Result<_>>()?;
    }
    let mut stmt = conn.prepare(
        "SELECT refund_id, payment_id, amount, reason, last_error, created_at FROM refunds
         WHERE status = 'failed' ORDER BY created_at",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RefundLine {
            refund_id: r.get(0)?,
            payment_id: r.get(1)?,
            amount: r.get(2)?,
            reason: r.get(3)?,
            last_error: r.get(4)?,
            created_at: from_ms(r.get(5)?),
        })
    })?;
    summary.needs_attention = rows.collect::<rusqlite::Result<_>>()?;
    Ok(summary)
}

fn counters(conn: &Connection) -> Result<Vec<(String, String)>, ReportError> {
    let mut stmt =
        conn.prepare("SELECT device_id, name FROM devices WHERE role = 'counter' ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn counter_channel(
    conn: &Connection,
    device: &str,
    name: &str,
    start: i64,
    end: i64,
) -> Result<ChannelReport, ReportError> {
    let mut c = ChannelReport {
        channel: name.to_string(),
        device_id: Some(uuid(device)?),
        ..ChannelReport::default()
    };
    let mut vat = Vat::default();
    let mut pay: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    pay.insert("cash".into(), (0, 0));
    pay.insert("card".into(), (0, 0));
    let mut stmt = conn.prepare(
        "SELECT total, admissions, lines, payment_method FROM sales WHERE device_id = ?1 AND created_at >= ?2 AND created_at < ?3",
    )?;
    let rows = stmt.query_map(params![device, start, end], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (total, admissions, lines, method) = row?;
        c.sales_count += 1;
        c.admissions += admissions;
        c.gross_sales += total;
        vat.add(&lines_of(&lines)?, 1);
        pay.entry(method).or_default().0 += total;
    }
    let mut stmt = conn.prepare(
        "SELECT v.refund, v.refund_method, s.admissions, s.lines FROM counter_voids v JOIN sales s ON s.sale_id = v.sale_id
         WHERE v.device_id = ?1 AND v.at >= ?2 AND v.at < ?3",
    )?;
    let rows = stmt.query_map(params![device, start, end], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (refund, method, admissions, lines) = row?;
        c.voids_count += 1;
        c.refunds += refund;
        c.admissions -= admissions;
        vat.add(&lines_of(&lines)?, -1);
        pay.entry(method).or_default().1 += refund;
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
    Ok(c)
}

fn name_of<'a>(counters: &'a [(String, String)], device: &str) -> &'a str {
    counters
        .iter()
        .find(|(d, _)| d == device)
        .map(|(_, n)| n.as_str())
        .unwrap_or("unknown counter")
}

/// float + cash sales - cash refunds of a shift, from what the server has.
fn server_cash(conn: &Connection, shift_id: &str, float: i64) -> Result<i64, ReportError> {
    let sales: i64 = conn.query_row(
        "SELECT COALESCE(SUM(total), 0) FROM sales WHERE shift_id = ?1 AND payment_method = 'cash'",
        params![shift_id],
        |r| r.get(0),
    )?;
    let refunds: i64 = conn.query_row(
        "SELECT COALESCE(SUM(refund), 0) FROM counter_voids WHERE shift_id = ?1 AND refund_method = 'cash'",
        params![shift_id],
        |r| r.get(0),
    )?;
    Ok(float + sales - refunds)
}

fn shifts(
    conn: &Connection,
    counters: &[(String, String)],
    start: i64,
    end: i64,
) -> Result<Vec<ShiftLine>, ReportError> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT shift_id, device_id, cashier, opened_at, closed_at, float, expected_cash, counted_cash FROM shifts
         WHERE (closed_at >= ?1 AND closed_at < ?2) OR (opened_at >= ?1 AND opened_at < ?2) ORDER BY opened_at",
    )?;
    let rows = stmt.query_map(params![start, end], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
        ))
    })?;
    for row in rows {
        let (shift_id, device, cashier, opened, closed, float, expected, counted) = row?;
        let server_expected_cash = server_cash(conn, &shift_id, float)?;
        out.push(ShiftLine {
            counter: name_of(counters, &device).to_string(),
            shift_id: uuid(&shift_id)?,
            cashier,
            opened_at: from_ms(opened),
            closed_at: Some(from_ms(closed)),
            float,
            expected_cash: Some(expected),
            counted_cash: Some(counted),
            over_short: Some(counted - expected),
            z_received: true,
            server_expected_cash,
            not_uploaded_cash: Some(expected - server_expected_cash),
        });
    }
    // Shifts still open at their counter's last sync: no Z report yet.
    let mut stmt =
        conn.prepare("SELECT device_id, open_shift FROM device_sync WHERE open_shift IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (device, json) = row?;
        let open: tessera_core::api::sync::OpenShift =
            serde_json::from_str(&json).map_err(|e| ReportError::Data(e.to_string()))?;
        let opened = open.opened_at.as_millisecond();
        let closed_already = out.iter().any(|s| s.shift_id == open.shift_id);
        if closed_already || opened >= end {
            continue;
        }
        let id = open.shift_id.to_string();
        out.push(ShiftLine {
            counter: name_of(counters, &device).to_string(),
            shift_id: open.shift_id,
            cashier: open.cashier,
            opened_at: open.opened_at,
            closed_at: None,
            float: open.float,
            expected_cash: None,
            counted_cash: None,
            over_short: None,
            z_received: false,
            server_expected_cash: server_cash(conn, &id, open.float)?,
            not_uploaded_cash: None,
        });
    }
    Ok(out)
}

fn missing(
    conn: &Connection,
    counters: &[(String, String)],
    slot_prefix: &SlotRange,
    start: i64,
    end: i64,
) -> Result<Missing, ReportError> {
    let mut m = Missing::default();
    for (device, name) in counters {
        let row: Option<(u64, u64, u64, i64, Option<String>)> = conn
            .query_row(
                "SELECT acked_seq, max_seq, reported_seq, last_sync_at, open_shift FROM device_sync WHERE device_id = ?1",
                params![device],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((acked, max_seq, reported, last_sync, open_shift)) = row else {
            continue;
        };
        let active_today = last_sync >= start && last_sync < end
            || conn.query_row(
                "SELECT COUNT(*) FROM sales WHERE device_id = ?1 AND created_at >= ?2 AND created_at < ?3",
                params![device, start, end],
                |r| r.get::<_, i64>(0),
            )? > 0;
        if !active_today {
            continue;
        }
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
        if open_shift.is_some() {
            let at = from_ms(last_sync);
            problems.push(format!(
                "shift still open and no Z report: last heard from at {at}; sales after that are not known to the server"
            ));
        }
        if !problems.is_empty() {
            m.counters.push(CounterUploads {
                counter: name.clone(),
                device_id: uuid(device)?,
                acked_seq: acked,
                highest_seq_received: max_seq,
                reported_seq: reported,
                last_sync_at: Some(from_ms(last_sync)),
                shift_open: open_shift.is_some(),
                problem: problems.join("; "),
            });
        }
    }

    let mut stmt = conn.prepare(
        "SELECT d.name, l.lease_id, l.slot_id, l.granted_total - l.released_total, l.sold, s.last_sync_at
         FROM leases l JOIN devices d ON d.device_id = l.device_id LEFT JOIN device_sync s ON s.device_id = l.device_id
         WHERE l.slot_id >= ?1 AND l.slot_id < ?2 AND l.revoked_at IS NULL AND l.granted_total - l.released_total > l.sold
         ORDER BY l.slot_id, d.name",
    )?;
    let rows = stmt.query_map(params![slot_prefix.from, slot_prefix.to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, u32>(3)?,
            r.get::<_, u32>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    for row in rows {
        let (counter, lease, slot_id, escrow, sold, last_sync) = row?;
        m.leases_held.push(LeaseHeld {
            counter,
            lease_id: uuid(&lease)?,
            slot_id,
            escrow,
            sold,
            unsold: escrow - sold,
            last_sync_at: last_sync.map(from_ms),
        });
    }

    let mut stmt = conn.prepare(
        "SELECT d.name, s.sale_id, s.terminal_seq, s.slot_id, s.over_capacity FROM sales s JOIN devices d ON d.device_id = s.device_id
         WHERE s.slot_id >= ?1 AND s.slot_id < ?2 AND s.over_capacity > 0 ORDER BY s.slot_id",
    )?;
    let rows = stmt.query_map(params![slot_prefix.from, slot_prefix.to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ))
    })?;
    for row in rows {
        let (counter, sale, seq, slot_id, over) = row?;
        m.over_capacity.push(OverCapacity {
            counter,
            sale_id: uuid(&sale)?,
            terminal_seq: seq,
            slot_id,
            admissions_over: over,
        });
    }
    Ok(m)
}

fn slots(conn: &Connection, slot_prefix: &SlotRange) -> Result<Vec<SlotLine>, ReportError> {
    let mut stmt = conn.prepare(
        "SELECT s.slot_id, s.capacity, s.sold_online,
                (SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE slot_id = s.slot_id)
                  - (SELECT COALESCE(SUM(x.admissions), 0) FROM counter_voids v JOIN sales x ON x.sale_id = v.sale_id
                     WHERE x.slot_id = s.slot_id AND v.places_returned = 1),
                (SELECT COALESCE(SUM(admits), 0) FROM redemptions WHERE slot_id = s.slot_id),
                (SELECT COALESCE(SUM(over_capacity), 0) FROM sales WHERE slot_id = s.slot_id),
                (SELECT COALESCE(SUM(kept), 0) FROM leases WHERE slot_id = s.slot_id)
         FROM slots s WHERE s.slot_id >= ?1 AND s.slot_id < ?2 ORDER BY s.slot_id",
    )?;
    let rows = stmt.query_map(params![slot_prefix.from, slot_prefix.to], |r| {
        let online: i64 = r.get(2)?;
        let counter: i64 = r.get(3)?;
        let admitted: i64 = r.get(4)?;
        Ok(SlotLine {
            slot_id: r.get(0)?,
            capacity: r.get(1)?,
            sold_online: online,
            sold_counter: counter,
            admitted,
            no_shows: (online + counter - admitted).max(0),
            over_capacity: r.get(5)?,
            kept_by_voids: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn conflicts(conn: &Connection, slot_prefix: &SlotRange) -> Result<Vec<ConflictLine>, ReportError> {
    let mut stmt = conn.prepare(
        "SELECT ticket_id, slot_id, first_gate, first_at, second_gate, second_at FROM gate_conflicts
         WHERE slot_id >= ?1 AND slot_id < ?2 ORDER BY first_at",
    )?;
    let rows = stmt.query_map(params![slot_prefix.from, slot_prefix.to], |r| {
        Ok(ConflictLine {
            ticket_id: r.get(0)?,
            slot_id: r.get(1)?,
            first_gate: r.get(2)?,
            first_at: from_ms(r.get(3)?),
            second_gate: r.get(4)?,
            second_at: from_ms(r.get(5)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn quarantine(
    conn: &Connection,
    slot_prefix: &SlotRange,
    start: i64,
    end: i64,
) -> Result<Vec<QuarantineLine>, ReportError> {
    let mut stmt = conn.prepare(
        "SELECT COALESCE(d.name, q.device_id), q.device_id, q.kind, q.item_id, q.terminal_seq, q.slot_id, q.reason,
                q.device_at, q.received_at, q.body
         FROM quarantine q LEFT JOIN devices d ON d.device_id = q.device_id
         WHERE q.resolved_at IS NULL
           AND ((q.slot_id >= ?1 AND q.slot_id < ?2) OR (q.received_at >= ?3 AND q.received_at < ?4))
         ORDER BY q.received_at, q.terminal_seq",
    )?;
    let rows = stmt.query_map(params![slot_prefix.from, slot_prefix.to, start, end], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<u64>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, Option<i64>>(7)?,
            r.get::<_, i64>(8)?,
            r.get::<_, String>(9)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (counter, device, kind, item, seq, slot_id, reason, device_at, received_at, body) =
            row?;
        // Stored by the server from a parsed body, so it parses; if it
        // somehow does not, the reason still shows.
        let body = super::quarantined_upload(&kind, &body);
        out.push(QuarantineLine {
            counter,
            device_id: uuid(&device)?,
            kind,
            item_id: uuid(&item)?,
            terminal_seq: seq,
            slot_id,
            reason,
            device_at: device_at.map(from_ms),
            received_at: from_ms(received_at),
            body,
        });
    }
    Ok(out)
}
