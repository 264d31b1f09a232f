//! Loading one day's facts from PostgreSQL for the day report: the same
//! facts as the SQLite loader (`reports::sqlite`), from the same tables,
//! every query bounded by the day asked for (its instants or its slot-id
//! range) and served by V1/V3/V6's indexes (tests/pg_plans.rs checks their
//! plans on a database with months of history); the report is assembled by core
//! (`tessera_core::day_report::assemble`), so both backends add up alike.
//!
//! All reads run in one REPEATABLE READ, READ ONLY transaction: the report
//! is one snapshot of the books, even while other processes keep selling
//! and admitting (a sale cannot appear in a slot's sums and be missing from
//! its channel's).

use jiff::civil::Date;
use jiff::Timestamp;
use tessera_core::api::sync::OpenShift;
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::from_ms;
use tessera_core::day_report::{
    assemble, CancelledFact, ClosedShiftFact, CounterFact, DayBounds, DayFacts, LeaseHeldFact,
    OpenShiftFact, OrderFact, SaleFact, ServerCash, SlotFact, SyncFact, VoidFact, WaitlistFact,
};
use tessera_core::ids::{DeviceId, SaleId, TicketId};
use tessera_core::pricing::PricedLine;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use crate::reports::{
    lines_of, quarantined_upload, slot_of, ConflictLine, DayReport, OverCapacity, QuarantineLine,
    RefundCount, RefundLine, ReportError,
};

// The report's queries, each bounded by the day asked for and served by
// the index it names (tests/pg_plans.rs checks their plans).

/// The day's orders (`$1`, `$2`: the day's instants), through `orders_by_created`.
pub const ORDERS_SQL: &str = "SELECT total, admissions, lines, channel FROM orders
 WHERE created_at >= $1 AND created_at < $2";

/// Order lines with tickets cancelled on the day: the orders through
/// `tickets_cancelled`, their tickets through `tickets_by_order`.
pub const CANCELLED_SQL: &str = "SELECT t.product_id,
 COUNT(*) FILTER (WHERE t.cancelled_at < $1),
 COUNT(*) FILTER (WHERE t.cancelled_at >= $1),
 COALESCE(SUM(t.admits) FILTER (WHERE t.cancelled_at >= $1), 0)::bigint,
 MAX(t.price), MAX(t.vat_bp), o.lines, o.channel
 FROM tickets t JOIN orders o ON o.order_id = t.order_id
 WHERE t.cancelled_at < $2
 AND t.order_id IN (SELECT order_id FROM tickets
 WHERE cancelled_at >= $1 AND cancelled_at < $2)
 GROUP BY o.order_id, t.product_id";

/// The day's cancellations, through `tickets_cancelled`.
pub const CANCELLATIONS_SQL: &str =
    "SELECT COUNT(*) FROM (SELECT DISTINCT order_id, cancelled_at FROM tickets
 WHERE cancelled_at >= $1 AND cancelled_at < $2) AS c";

/// Refunds the provider refused, on every day's report until a person has
/// given the money back: not bounded by the day, by design, but read
/// through the partial index `refunds_failed` (V6), not the whole table.
pub const FAILED_REFUNDS_SQL: &str =
    "SELECT refund_id::text, payment_id, amount, reason, last_error, created_at FROM refunds
 WHERE status = 'failed'";

/// The day's refunds counted by `column` (status or reason), through
/// `refunds_by_created`.
pub fn refunds_by_sql(column: &str) -> String {
    format!(
        "SELECT {column}, COUNT(*), COALESCE(SUM(amount), 0)::bigint FROM refunds
         WHERE created_at >= $1 AND created_at < $2 GROUP BY {column}"
    )
}

/// The counters (devices, not history).
pub const COUNTERS_SQL: &str = "SELECT device_id, name FROM devices WHERE role = 'counter'";

/// The counters' sales of the day (`$1` the counters), through
/// `sales_by_device_time`.
pub const SALES_SQL: &str = "SELECT device_id, total, admissions, lines, payment_method FROM sales
 WHERE device_id = ANY($1) AND created_at >= $2 AND created_at < $3";

/// The counters' voids of the day, through `counter_voids_by_device_time`.
pub const VOIDS_SQL: &str = "SELECT v.device_id, v.refund, v.refund_method, s.admissions, s.lines
 FROM counter_voids v JOIN sales s ON s.sale_id = v.sale_id
 WHERE v.device_id = ANY($1) AND v.at >= $2 AND v.at < $3";

/// One shift's cash as the server has it, through `sales_by_shift` and
/// `counter_voids_by_shift`.
pub const SERVER_CASH_SQL: &str = "SELECT (SELECT COALESCE(SUM(total), 0)::bigint FROM sales
 WHERE shift_id = $1 AND payment_method = 'cash'),
 (SELECT COALESCE(SUM(refund), 0)::bigint FROM counter_voids
 WHERE shift_id = $1 AND refund_method = 'cash')";

/// Shifts closed or opened on the day, through `shifts_by_closed` and
/// `shifts_by_opened`.
pub const SHIFTS_SQL: &str =
    "SELECT shift_id, device_id, cashier, opened_at, closed_at, float, expected_cash, counted_cash
 FROM shifts
 WHERE (closed_at >= $1 AND closed_at < $2) OR (opened_at >= $1 AND opened_at < $2)";

/// Shifts still open (one row per counter).
pub const OPEN_SHIFTS_SQL: &str =
    "SELECT device_id, open_shift::text FROM device_sync WHERE open_shift IS NOT NULL";

/// The counters' sync records (one row per counter).
pub const SYNCS_SQL: &str =
    "SELECT device_id, acked_seq, max_seq, reported_seq, last_sync_at, open_shift IS NOT NULL
 FROM device_sync WHERE device_id = ANY($1)";

/// Leases of the day's slots (`$1`, `$2`: the day's slot-id range),
/// through `leases_by_slot`.
pub const LEASES_HELD_SQL: &str = "SELECT d.name, l.lease_id, l.slot_id, l.granted_total - l.released_total, l.sold, s.last_sync_at,
 l.revoked_escrow IS NOT NULL
 FROM leases l JOIN devices d ON d.device_id = l.device_id
 LEFT JOIN device_sync s ON s.device_id = l.device_id
 WHERE l.slot_id >= $1 AND l.slot_id < $2";

/// Over-capacity sales of the day's slots, through `sales_by_slot`.
pub const OVER_CAPACITY_SQL: &str =
    "SELECT d.name, s.sale_id, s.terminal_seq, s.slot_id, s.over_capacity
 FROM sales s JOIN devices d ON d.device_id = s.device_id
 WHERE s.slot_id >= $1 AND s.slot_id < $2 AND s.over_capacity > 0";

/// The day's slots (their primary key) with their sums, each through its
/// table's by-slot index.
pub const SLOTS_SQL: &str = "SELECT s.slot_id, s.capacity, s.sold_online,
 (SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE slot_id = s.slot_id)
 - (SELECT COALESCE(SUM(x.admissions), 0)
 FROM counter_voids v JOIN sales x ON x.sale_id = v.sale_id
 WHERE x.slot_id = s.slot_id AND v.places_returned = 1),
 (SELECT COALESCE(SUM(admits), 0) FROM redemptions WHERE slot_id = s.slot_id),
 (SELECT COALESCE(SUM(over_capacity), 0) FROM sales WHERE slot_id = s.slot_id),
 (SELECT COALESCE(SUM(kept), 0) FROM leases WHERE slot_id = s.slot_id)
 FROM slots s WHERE s.slot_id >= $1 AND s.slot_id < $2";

/// Double entries at the gates in the day's slots, through
/// `gate_conflicts_by_slot`.
pub const CONFLICTS_SQL: &str =
    "SELECT ticket_id, slot_id, first_gate, first_at, second_gate, second_at
 FROM gate_conflicts WHERE slot_id >= $1 AND slot_id < $2";

/// Unresolved quarantined uploads of the day's slots or received on the
/// day (`$3`, `$4`), through `quarantine_by_slot` and `quarantine_by_received`.
pub const QUARANTINE_SQL: &str =
    "SELECT COALESCE(d.name, q.device_id::text), q.device_id, q.kind, q.item_id, q.terminal_seq,
 q.slot_id, q.reason, q.device_at, q.received_at, q.body
 FROM quarantine q LEFT JOIN devices d ON d.device_id = q.device_id
 WHERE q.resolved_at IS NULL
 AND ((q.slot_id >= $1 AND q.slot_id < $2) OR (q.received_at >= $3 AND q.received_at < $4))";

/// The day's waiting lists, through `waitlist_by_slot`.
pub const WAITLIST_SQL: &str = "SELECT state, COUNT(*), COALESCE(SUM(party), 0) FROM waitlist
 WHERE slot_id >= $1 AND slot_id < $2 GROUP BY state";

fn sql(e: tokio_postgres::Error) -> ReportError {
    if e.as_db_error().is_none() || super::schema::is_timeout(&e) {
        return ReportError::Unavailable(super::schema::loggable(&e));
    }
    ReportError::Storage(super::schema::loggable(&e))
}

/// A count or a sum that must fit the report's field.
fn fits<T: TryFrom<i64>>(what: &str, n: i64) -> Result<T, ReportError> {
    T::try_from(n).map_err(|_| ReportError::Data(format!("{what} {n} is out of range")))
}

/// An order's lines, stored as jsonb.
fn json_lines(v: serde_json::Value) -> Result<Vec<PricedLine>, ReportError> {
    serde_json::from_value(v)
        .map_err(|e| ReportError::Data(format!("stored order lines unreadable: {e}")))
}

/// The day's reconciliation, read from one snapshot.
pub async fn day_report(
    client: &mut Client,
    catalogue: &Catalogue,
    date: Date,
    now: Timestamp,
) -> Result<DayReport, ReportError> {
    let facts = load(client, catalogue, date, now).await?;
    Ok(assemble(facts)?)
}

/// The day's facts as this database has them.
pub async fn load(
    client: &mut Client,
    catalogue: &Catalogue,
    date: Date,
    now: Timestamp,
) -> Result<DayFacts, ReportError> {
    let tz = catalogue
        .time_zone()
        .map_err(|e| ReportError::Data(e.to_string()))?;
    let day = DayBounds::of(date, &tz).map_err(ReportError::Data)?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(sql)?;
    let (orders, cancelled, cancellations) = online(&tx, &day).await?;
    let counters = counters(&tx).await?;
    let ids: Vec<Uuid> = counters.iter().map(|c| c.device_id).collect();
    let (sales, voids) = counters_day(&tx, &ids, &day).await?;
    let (closed_shifts, open_shifts) = shifts(&tx, &day).await?;
    let (refunds_by_state, refunds_by_reason, refunds_failed) = refunds(&tx, &day).await?;
    let facts = DayFacts {
        museum: catalogue.museum.name.clone(),
        currency: catalogue.museum.currency.to_string(),
        generated_at: now,
        orders,
        cancelled,
        cancellations,
        syncs: syncs(&tx, &ids).await?,
        counters,
        sales,
        voids,
        closed_shifts,
        open_shifts,
        leases_held: leases_held(&tx, &day).await?,
        over_capacity: over_capacity(&tx, &day).await?,
        slots: slots(&tx, &day).await?,
        conflicts: conflicts(&tx, &day).await?,
        quarantine: quarantine(&tx, &day).await?,
        waitlist: waitlist(&tx, &day).await?,
        refunds_by_state,
        refunds_by_reason,
        refunds_failed,
        bounds: day,
    };
    // Read only: nothing to keep, and ending it frees the snapshot.
    tx.rollback().await.map_err(sql)?;
    Ok(facts)
}

async fn online(
    tx: &Transaction<'_>,
    day: &DayBounds,
) -> Result<(Vec<OrderFact>, Vec<CancelledFact>, u32), ReportError> {
    let mut orders = Vec::new();
    for r in tx
        .query(ORDERS_SQL, &[&day.start_ms, &day.end_ms])
        .await
        .map_err(sql)?
    {
        orders.push(OrderFact {
            total: r.get(0),
            admissions: i64::from(r.get::<_, i32>(1)),
            lines: json_lines(r.get(2))?,
            channel: r.get(3),
        });
    }
    // Per order line with tickets cancelled that day: how many of its
    // tickets were cancelled before the day and on it (see core's
    // `cancelled_split`). The orders are found through the partial index
    // on cancelled tickets.
    let mut cancelled = Vec::new();
    for r in tx
        .query(CANCELLED_SQL, &[&day.start_ms, &day.end_ms])
        .await
        .map_err(sql)?
    {
        cancelled.push(CancelledFact {
            product_id: r.get(0),
            before: fits("cancelled tickets", r.get(1))?,
            now: fits("cancelled tickets", r.get(2))?,
            admits: r.get(3),
            price: r.get(4),
            vat_bp: r
                .get::<_, Option<i32>>(5)
                .map(|v| fits("VAT rate", i64::from(v)))
                .transpose()?,
            lines: json_lines(r.get(6))?,
            channel: r.get(7),
        });
    }
    let cancellations = tx
        .query_one(CANCELLATIONS_SQL, &[&day.start_ms, &day.end_ms])
        .await
        .map_err(sql)?;
    Ok((
        orders,
        cancelled,
        fits("cancellations", cancellations.get(0))?,
    ))
}

type RefundFacts = (Vec<RefundCount>, Vec<RefundCount>, Vec<RefundLine>);

async fn refunds(tx: &Transaction<'_>, day: &DayBounds) -> Result<RefundFacts, ReportError> {
    let mut counts = Vec::new();
    for column in ["status", "reason"] {
        let mut out = Vec::new();
        for r in tx
            .query(&refunds_by_sql(column), &[&day.start_ms, &day.end_ms])
            .await
            .map_err(sql)?
        {
            out.push(RefundCount {
                key: r.get(0),
                count: fits("refunds", r.get(1))?,
                amount: r.get(2),
            });
        }
        counts.push(out);
    }
    // Refunds the provider refused stay on every day's report until a
    // person has given the money back: not bounded by the day, by design.
    let mut failed = Vec::new();
    for r in tx.query(FAILED_REFUNDS_SQL, &[]).await.map_err(sql)? {
        failed.push(RefundLine {
            refund_id: r.get(0),
            payment_id: r.get(1),
            amount: r.get(2),
            reason: r.get(3),
            last_error: r.get(4),
            created_at: from_ms(r.get(5)),
        });
    }
    let by_reason = counts.pop().unwrap_or_default();
    let by_state = counts.pop().unwrap_or_default();
    Ok((by_state, by_reason, failed))
}

async fn counters(tx: &Transaction<'_>) -> Result<Vec<CounterFact>, ReportError> {
    Ok(tx
        .query(COUNTERS_SQL, &[])
        .await
        .map_err(sql)?
        .iter()
        .map(|r| CounterFact {
            device_id: r.get(0),
            name: r.get(1),
        })
        .collect())
}

/// The counters' sales and voids of the day (by the device-and-time indexes).
async fn counters_day(
    tx: &Transaction<'_>,
    counters: &[Uuid],
    day: &DayBounds,
) -> Result<(Vec<SaleFact>, Vec<VoidFact>), ReportError> {
    let mut sales = Vec::new();
    for r in tx
        .query(SALES_SQL, &[&counters, &day.start_ms, &day.end_ms])
        .await
        .map_err(sql)?
    {
        sales.push(SaleFact {
            device_id: r.get(0),
            total: r.get(1),
            admissions: i64::from(r.get::<_, i32>(2)),
            lines: lines_of(r.get(3))?,
            method: r.get(4),
        });
    }
    let mut voids = Vec::new();
    for r in tx
        .query(VOIDS_SQL, &[&counters, &day.start_ms, &day.end_ms])
        .await
        .map_err(sql)?
    {
        voids.push(VoidFact {
            device_id: r.get(0),
            refund: r.get(1),
            method: r.get(2),
            admissions: i64::from(r.get::<_, i32>(3)),
            lines: lines_of(r.get(4))?,
        });
    }
    Ok((sales, voids))
}

async fn server_cash(tx: &Transaction<'_>, shift: Uuid) -> Result<ServerCash, ReportError> {
    let r = tx
        .query_one(SERVER_CASH_SQL, &[&shift])
        .await
        .map_err(sql)?;
    Ok(ServerCash {
        cash_sales: r.get(0),
        cash_refunds: r.get(1),
    })
}

async fn shifts(
    tx: &Transaction<'_>,
    day: &DayBounds,
) -> Result<(Vec<ClosedShiftFact>, Vec<OpenShiftFact>), ReportError> {
    let mut closed = Vec::new();
    for r in tx
        .query(SHIFTS_SQL, &[&day.start_ms, &day.end_ms])
        .await
        .map_err(sql)?
    {
        let shift_id: Uuid = r.get(0);
        closed.push(ClosedShiftFact {
            shift_id,
            device_id: r.get(1),
            cashier: r.get(2),
            opened_at_ms: r.get(3),
            closed_at_ms: r.get(4),
            float: r.get(5),
            expected_cash: r.get(6),
            counted_cash: r.get(7),
            server: server_cash(tx, shift_id).await?,
        });
    }
    // Shifts still open at their counter's last sync, kept as the counter
    // reported them (JSON). Read as text: a column that holds only the id
    // (V3, before counters' sync wrote it) gives no line here, and the
    // counter's "shift still open" note in `missing` still shows.
    let mut open = Vec::new();
    for r in tx.query(OPEN_SHIFTS_SQL, &[]).await.map_err(sql)? {
        let text: String = r.get(1);
        let Ok(shift) = serde_json::from_str::<OpenShift>(&text) else {
            continue;
        };
        let server = server_cash(tx, shift.shift_id).await?;
        open.push(OpenShiftFact {
            device_id: r.get(0),
            shift,
            server,
        });
    }
    Ok((closed, open))
}

async fn syncs(tx: &Transaction<'_>, counters: &[Uuid]) -> Result<Vec<SyncFact>, ReportError> {
    let mut out = Vec::new();
    for r in tx.query(SYNCS_SQL, &[&counters]).await.map_err(sql)? {
        out.push(SyncFact {
            device_id: r.get(0),
            acked_seq: fits("acked seq", r.get(1))?,
            max_seq: fits("highest seq", r.get(2))?,
            reported_seq: fits("reported seq", r.get(3))?,
            last_sync_at_ms: r.get(4),
            shift_open: r.get(5),
        });
    }
    Ok(out)
}

async fn leases_held(
    tx: &Transaction<'_>,
    day: &DayBounds,
) -> Result<Vec<LeaseHeldFact>, ReportError> {
    let mut out = Vec::new();
    for r in tx
        .query(LEASES_HELD_SQL, &[&day.slots_from, &day.slots_to])
        .await
        .map_err(sql)?
    {
        out.push(LeaseHeldFact {
            counter: r.get(0),
            lease_id: r.get(1),
            slot_id: slot_of(r.get(2))?,
            escrow: fits("escrow", i64::from(r.get::<_, i32>(3)))?,
            sold: fits("sold", i64::from(r.get::<_, i32>(4)))?,
            revoked: r.get(6),
            last_sync_at_ms: r.get(5),
        });
    }
    Ok(out)
}

async fn over_capacity(
    tx: &Transaction<'_>,
    day: &DayBounds,
) -> Result<Vec<OverCapacity>, ReportError> {
    let mut out = Vec::new();
    for r in tx
        .query(OVER_CAPACITY_SQL, &[&day.slots_from, &day.slots_to])
        .await
        .map_err(sql)?
    {
        out.push(OverCapacity {
            counter: r.get(0),
            sale_id: SaleId(r.get(1)),
            terminal_seq: fits("terminal seq", r.get(2))?,
            slot_id: slot_of(r.get(3))?,
            admissions_over: fits("admissions over", i64::from(r.get::<_, i32>(4)))?,
        });
    }
    Ok(out)
}

async fn slots(tx: &Transaction<'_>, day: &DayBounds) -> Result<Vec<SlotFact>, ReportError> {
    let mut out = Vec::new();
    for r in tx
        .query(SLOTS_SQL, &[&day.slots_from, &day.slots_to])
        .await
        .map_err(sql)?
    {
        out.push(SlotFact {
            slot_id: slot_of(r.get(0))?,
            capacity: fits("capacity", i64::from(r.get::<_, i32>(1)))?,
            sold_online: i64::from(r.get::<_, i32>(2)),
            sold_counter: r.get(3),
            admitted: r.get(4),
            over_capacity: r.get(5),
            kept_by_voids: r.get(6),
        });
    }
    Ok(out)
}

async fn conflicts(
    tx: &Transaction<'_>,
    day: &DayBounds,
) -> Result<Vec<ConflictLine>, ReportError> {
    tx.query(CONFLICTS_SQL, &[&day.slots_from, &day.slots_to])
        .await
        .map_err(sql)?
        .iter()
        .map(|r| {
            Ok(ConflictLine {
                ticket_id: TicketId(r.get(0)),
                slot_id: slot_of(r.get(1))?,
                first_gate: r.get(2),
                first_at: from_ms(r.get(3)),
                second_gate: r.get(4),
                second_at: from_ms(r.get(5)),
            })
        })
        .collect()
}

async fn quarantine(
    tx: &Transaction<'_>,
    day: &DayBounds,
) -> Result<Vec<QuarantineLine>, ReportError> {
    let mut out = Vec::new();
    for r in tx
        .query(
            QUARANTINE_SQL,
            &[&day.slots_from, &day.slots_to, &day.start_ms, &day.end_ms],
        )
        .await
        .map_err(sql)?
    {
        let kind: String = r.get(2);
        // Stored from a parsed body, so it parses; if it somehow does not,
        // the reason still shows.
        let body = quarantined_upload(&kind, r.get(9));
        out.push(QuarantineLine {
            counter: r.get(0),
            device_id: DeviceId(r.get(1)),
            kind,
            item_id: r.get(3),
            terminal_seq: r
                .get::<_, Option<i64>>(4)
                .map(|s| fits("terminal seq", s))
                .transpose()?,
            slot_id: r.get::<_, Option<&str>>(5).map(slot_of).transpose()?,
            reason: r.get(6),
            device_at: r.get::<_, Option<i64>>(7).map(from_ms),
            received_at: from_ms(r.get(8)),
            body,
        });
    }
    Ok(out)
}

async fn waitlist(tx: &Transaction<'_>, day: &DayBounds) -> Result<Vec<WaitlistFact>, ReportError> {
    let mut out = Vec::new();
    for r in tx
        .query(WAITLIST_SQL, &[&day.slots_from, &day.slots_to])
        .await
        .map_err(sql)?
    {
        out.push(WaitlistFact {
            state: r.get(0),
            entries: fits("waiting-list entries", r.get(1))?,
            admissions: fits("waiting-list admissions", r.get(2))?,
        });
    }
    Ok(out)
}
