//! Loading one day's facts from the SQLite backend: every query bounded by
//! the day asked for (its instants, or its slot-id range) and served by an
//! index. The report itself is assembled by core (`day_report::assemble`),
//! the same for every backend.

use jiff::civil::Date;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::from_ms;
use tessera_core::day_report::{
    assemble, CancelledFact, ClosedShiftFact, CounterFact, DayBounds, DayFacts, LeaseHeldFact,
    OpenShiftFact, OrderFact, SaleFact, ServerCash, SlotFact, SyncFact, VoidFact, WaitlistFact,
};
use tessera_core::ids::{DeviceId, SaleId};
use tessera_core::slot::SlotId;
use uuid::Uuid;

use super::{
    ConflictLine, DayReport, OverCapacity, QuarantineLine, RefundCount, RefundLine, ReportError,
};
use tessera_core::pricing::PricedLine;

fn lines_of(json: &str) -> Result<Vec<PricedLine>, ReportError> {
    super::lines_of(json)
}

fn uuid(text: &str) -> Result<Uuid, ReportError> {
    Uuid::parse_str(text).map_err(|e| ReportError::Data(e.to_string()))
}

impl From<rusqlite::Error> for ReportError {
    fn from(e: rusqlite::Error) -> Self {
        ReportError::Storage(e.to_string())
    }
}

pub fn day_report(
    conn: &Connection,
    catalogue: &Catalogue,
    date: Date,
    now: Timestamp,
) -> Result<DayReport, ReportError> {
    let facts = load(conn, catalogue, date, now)?;
    Ok(assemble(facts)?)
}

/// The day's facts as this database has them.
pub fn load(
    conn: &Connection,
    catalogue: &Catalogue,
    date: Date,
    now: Timestamp,
) -> Result<DayFacts, ReportError> {
    let tz = catalogue
        .time_zone()
        .map_err(|e| ReportError::Data(e.to_string()))?;
    let day = DayBounds::of(date, &tz).map_err(ReportError::Data)?;
    let (orders, cancelled, cancellations) = online(conn, &day)?;
    let counters = counters(conn)?;
    let mut sales = Vec::new();
    let mut voids = Vec::new();
    let mut syncs = Vec::new();
    for c in &counters {
        counter_day(conn, c.device_id, &day, &mut sales, &mut voids)?;
        if let Some(s) = sync_of(conn, c.device_id)? {
            syncs.push(s);
        }
    }
    let (closed_shifts, open_shifts) = shifts(conn, &day)?;
    let (refunds_by_state, refunds_by_reason, refunds_failed) = refunds(conn, &day)?;
    Ok(DayFacts {
        museum: catalogue.museum.name.clone(),
        currency: catalogue.museum.currency.to_string(),
        generated_at: now,
        orders,
        cancelled,
        cancellations,
        counters,
        sales,
        voids,
        closed_shifts,
        open_shifts,
        syncs,
        leases_held: leases_held(conn, &day)?,
        over_capacity: over_capacity(conn, &day)?,
        slots: slots(conn, &day)?,
        conflicts: conflicts(conn, &day)?,
        quarantine: quarantine(conn, &day)?,
        waitlist: waitlist(conn, &day)?,
        refunds_by_state,
        refunds_by_reason,
        refunds_failed,
        bounds: day,
    })
}

fn waitlist(conn: &Connection, day: &DayBounds) -> Result<Vec<WaitlistFact>, ReportError> {
    let mut stmt = conn.prepare(
        "SELECT state, COUNT(*), COALESCE(SUM(party), 0) FROM waitlist
         WHERE slot_id >= ?1 AND slot_id < ?2 GROUP BY state",
    )?;
    let rows = stmt.query_map(params![day.slots_from, day.slots_to], |r| {
        Ok(WaitlistFact {
            state: r.get(0)?,
            entries: r.get(1)?,
            admissions: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Orders made that day, the order lines with tickets cancelled that day,
/// and how many cancellations (one visitor's request each) there were.
fn online(
    conn: &Connection,
    day: &DayBounds,
) -> Result<(Vec<OrderFact>, Vec<CancelledFact>, u32), ReportError> {
    let mut orders = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT total, admissions, lines, channel FROM orders WHERE created_at >= ?1 AND created_at < ?2",
    )?;
    let rows = stmt.query_map(params![day.start_ms, day.end_ms], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (total, admissions, lines, channel) = row?;
        orders.push(OrderFact {
            total,
            admissions,
            lines: lines_of(&lines)?,
            channel,
        });
    }
    let mut cancelled = Vec::new();
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
    let rows = stmt.query_map(params![day.start_ms, day.end_ms], |r| {
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
        let (product_id, before, now, admits, price, vat_bp, lines, channel) = row?;
        cancelled.push(CancelledFact {
            product_id,
            before,
            now,
            admits,
            price,
            vat_bp,
            lines: lines_of(&lines)?,
            channel,
        });
    }
    let cancellations: u32 = conn.query_row(
        "SELECT COUNT(*) FROM (SELECT DISTINCT order_id, cancelled_at FROM tickets
                               WHERE cancelled_at >= ?1 AND cancelled_at < ?2)",
        params![day.start_ms, day.end_ms],
        |r| r.get(0),
    )?;
    Ok((orders, cancelled, cancellations))
}

type RefundFacts = (Vec<RefundCount>, Vec<RefundCount>, Vec<RefundLine>);

fn refunds(conn: &Connection, day: &DayBounds) -> Result<RefundFacts, ReportError> {
    let mut counts = Vec::new();
    for column in ["status", "reason"] {
        let mut stmt = conn.prepare(&format!(
            "SELECT {column}, COUNT(*), COALESCE(SUM(amount), 0) FROM refunds
             WHERE created_at >= ?1 AND created_at < ?2 GROUP BY {column}"
        ))?;
        let rows = stmt.query_map(params![day.start_ms, day.end_ms], |r| {
            Ok(RefundCount {
                key: r.get(0)?,
                count: r.get(1)?,
                amount: r.get(2)?,
            })
        })?;
        counts.push(rows.collect::<rusqlite::Result<Vec<_>>>()?);
    }
    // Refunds the provider refused stay on every day's report until a person
    // has given the money back: not bounded by the day, by design.
    let mut stmt = conn.prepare(
        "SELECT refund_id, payment_id, amount, reason, last_error, created_at FROM refunds
         WHERE status = 'failed'",
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
    let failed = rows.collect::<rusqlite::Result<_>>()?;
    let by_reason = counts.pop().unwrap_or_default();
    let by_state = counts.pop().unwrap_or_default();
    Ok((by_state, by_reason, failed))
}

fn counters(conn: &Connection) -> Result<Vec<CounterFact>, ReportError> {
    let mut stmt = conn.prepare("SELECT device_id, name FROM devices WHERE role = 'counter'")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (device, name) = row?;
        out.push(CounterFact {
            device_id: uuid(&device)?,
            name,
        });
    }
    Ok(out)
}

/// One counter's sales and voids of the day (by its device-and-time indexes).
fn counter_day(
    conn: &Connection,
    device: Uuid,
    day: &DayBounds,
    sales: &mut Vec<SaleFact>,
    voids: &mut Vec<VoidFact>,
) -> Result<(), ReportError> {
    let id = device.to_string();
    let mut stmt = conn.prepare_cached(
        "SELECT total, admissions, lines, payment_method FROM sales
         WHERE device_id = ?1 AND created_at >= ?2 AND created_at < ?3",
    )?;
    let rows = stmt.query_map(params![id, day.start_ms, day.end_ms], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (total, admissions, lines, method) = row?;
        sales.push(SaleFact {
            device_id: device,
            total,
            admissions,
            lines: lines_of(&lines)?,
            method,
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT v.refund, v.refund_method, s.admissions, s.lines FROM counter_voids v JOIN sales s ON s.sale_id = v.sale_id
         WHERE v.device_id = ?1 AND v.at >= ?2 AND v.at < ?3",
    )?;
    let rows = stmt.query_map(params![id, day.start_ms, day.end_ms], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (refund, method, admissions, lines) = row?;
        voids.push(VoidFact {
            device_id: device,
            refund,
            method,
            admissions,
            lines: lines_of(&lines)?,
        });
    }
    Ok(())
}

fn server_cash(conn: &Connection, shift_id: &str) -> Result<ServerCash, ReportError> {
    let cash_sales: i64 = conn.query_row(
        "SELECT COALESCE(SUM(total), 0) FROM sales WHERE shift_id = ?1 AND payment_method = 'cash'",
        params![shift_id],
        |r| r.get(0),
    )?;
    let cash_refunds: i64 = conn.query_row(
        "SELECT COALESCE(SUM(refund), 0) FROM counter_voids WHERE shift_id = ?1 AND refund_method = 'cash'",
        params![shift_id],
        |r| r.get(0),
    )?;
    Ok(ServerCash {
        cash_sales,
        cash_refunds,
    })
}

fn shifts(
    conn: &Connection,
    day: &DayBounds,
) -> Result<(Vec<ClosedShiftFact>, Vec<OpenShiftFact>), ReportError> {
    let mut closed = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT shift_id, device_id, cashier, opened_at, closed_at, float, expected_cash, counted_cash FROM shifts
         WHERE (closed_at >= ?1 AND closed_at < ?2) OR (opened_at >= ?1 AND opened_at < ?2)",
    )?;
    let rows = stmt.query_map(params![day.start_ms, day.end_ms], |r| {
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
        let (shift_id, device, cashier, opened, closed_at, float, expected, counted) = row?;
        closed.push(ClosedShiftFact {
            shift_id: uuid(&shift_id)?,
            device_id: uuid(&device)?,
            cashier,
            opened_at_ms: opened,
            closed_at_ms: closed_at,
            float,
            expected_cash: expected,
            counted_cash: counted,
            server: server_cash(conn, &shift_id)?,
        });
    }
    // Shifts still open at their counter's last sync (one row per device).
    let mut open = Vec::new();
    let mut stmt =
        conn.prepare("SELECT device_id, open_shift FROM device_sync WHERE open_shift IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for row in rows {
        let (device, json) = row?;
        let shift: tessera_core::api::sync::OpenShift =
            serde_json::from_str(&json).map_err(|e| ReportError::Data(e.to_string()))?;
        let server = server_cash(conn, &shift.shift_id.to_string())?;
        open.push(OpenShiftFact {
            device_id: uuid(&device)?,
            shift,
            server,
        });
    }
    Ok((closed, open))
}

fn sync_of(conn: &Connection, device: Uuid) -> Result<Option<SyncFact>, ReportError> {
    Ok(conn
        .query_row(
            "SELECT acked_seq, max_seq, reported_seq, last_sync_at, open_shift IS NOT NULL
             FROM device_sync WHERE device_id = ?1",
            params![device.to_string()],
            |r| {
                Ok(SyncFact {
                    device_id: device,
                    acked_seq: r.get(0)?,
                    max_seq: r.get(1)?,
                    reported_seq: r.get(2)?,
                    last_sync_at_ms: r.get(3)?,
                    shift_open: r.get(4)?,
                })
            },
        )
        .optional()?)
}

fn leases_held(conn: &Connection, day: &DayBounds) -> Result<Vec<LeaseHeldFact>, ReportError> {
    let mut stmt = conn.prepare(
        "SELECT d.name, l.lease_id, l.slot_id, l.granted_total - l.released_total, l.sold, s.last_sync_at,
                l.revoked_escrow IS NOT NULL
         FROM leases l JOIN devices d ON d.device_id = l.device_id LEFT JOIN device_sync s ON s.device_id = l.device_id
         WHERE l.slot_id >= ?1 AND l.slot_id < ?2",
    )?;
    let rows = stmt.query_map(params![day.slots_from, day.slots_to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, SlotId>(2)?,
            r.get::<_, u32>(3)?,
            r.get::<_, u32>(4)?,
            r.get::<_, Option<i64>>(5)?,
            r.get::<_, bool>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (counter, lease, slot_id, escrow, sold, last_sync, revoked) = row?;
        out.push(LeaseHeldFact {
            counter,
            lease_id: uuid(&lease)?,
            slot_id,
            escrow,
            sold,
            revoked,
            last_sync_at_ms: last_sync,
        });
    }
    Ok(out)
}

fn over_capacity(conn: &Connection, day: &DayBounds) -> Result<Vec<OverCapacity>, ReportError> {
    let mut stmt = conn.prepare(
        "SELECT d.name, s.sale_id, s.terminal_seq, s.slot_id, s.over_capacity FROM sales s JOIN devices d ON d.device_id = s.device_id
         WHERE s.slot_id >= ?1 AND s.slot_id < ?2 AND s.over_capacity > 0",
    )?;
    let rows = stmt.query_map(params![day.slots_from, day.slots_to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (counter, sale, terminal_seq, slot_id, admissions_over) = row?;
        out.push(OverCapacity {
            counter,
            sale_id: SaleId(uuid(&sale)?),
            terminal_seq,
            slot_id,
            admissions_over,
        });
    }
    Ok(out)
}

fn slots(conn: &Connection, day: &DayBounds) -> Result<Vec<SlotFact>, ReportError> {
    let mut stmt = conn.prepare(
        "SELECT s.slot_id, s.capacity, s.sold_online,
                (SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE slot_id = s.slot_id)
                  - (SELECT COALESCE(SUM(x.admissions), 0) FROM counter_voids v JOIN sales x ON x.sale_id = v.sale_id
                     WHERE x.slot_id = s.slot_id AND v.places_returned = 1),
                (SELECT COALESCE(SUM(admits), 0) FROM redemptions WHERE slot_id = s.slot_id),
                (SELECT COALESCE(SUM(over_capacity), 0) FROM sales WHERE slot_id = s.slot_id),
                (SELECT COALESCE(SUM(kept), 0) FROM leases WHERE slot_id = s.slot_id)
         FROM slots s WHERE s.slot_id >= ?1 AND s.slot_id < ?2",
    )?;
    let rows = stmt.query_map(params![day.slots_from, day.slots_to], |r| {
        Ok(SlotFact {
            slot_id: r.get(0)?,
            capacity: r.get(1)?,
            sold_online: r.get(2)?,
            sold_counter: r.get(3)?,
            admitted: r.get(4)?,
            over_capacity: r.get(5)?,
            kept_by_voids: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn conflicts(conn: &Connection, day: &DayBounds) -> Result<Vec<ConflictLine>, ReportError> {
    let mut stmt = conn.prepare(
        "SELECT ticket_id, slot_id, first_gate, first_at, second_gate, second_at FROM gate_conflicts
         WHERE slot_id >= ?1 AND slot_id < ?2",
    )?;
    let rows = stmt.query_map(params![day.slots_from, day.slots_to], |r| {
        Ok(ConflictLine {
            ticket_id: r.get(0)?,
            slot_id: r.get(1)?,
            first_gate: r.get(2)?,
            first_at: from_ms(r.get(3)?),
            second_gate: r.get(4)?,
            second_at: from_ms(r.get(5)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn quarantine(conn: &Connection, day: &DayBounds) -> Result<Vec<QuarantineLine>, ReportError> {
    let mut stmt = conn.prepare(
        "SELECT COALESCE(d.name, q.device_id), q.device_id, q.kind, q.item_id, q.terminal_seq, q.slot_id, q.reason,
                q.device_at, q.received_at, q.body
         FROM quarantine q LEFT JOIN devices d ON d.device_id = q.device_id
         WHERE q.resolved_at IS NULL
           AND ((q.slot_id >= ?1 AND q.slot_id < ?2) OR (q.received_at >= ?3 AND q.received_at < ?4))",
    )?;
    let rows = stmt.query_map(
        params![day.slots_from, day.slots_to, day.start_ms, day.end_ms],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<u64>>(4)?,
                r.get::<_, Option<SlotId>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, String>(9)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (counter, device, kind, item, seq, slot_id, reason, device_at, received_at, body) =
            row?;
        // Stored by the server from a parsed body, so it parses; if it
        // somehow does not, the reason still shows.
        let body = super::quarantined_upload(&kind, &body);
        out.push(QuarantineLine {
            counter,
            device_id: DeviceId(uuid(&device)?),
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
