//! Shifts and the cash drawer: open with a float, X report any time, Z report
//! at close with the counted cash, over/short named.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tessera_core::api::sync::{PaymentMethod, ShiftRecord};
use tessera_core::clock::from_ms;
use tessera_core::ids::new_id;
use tessera_core::pricing::PricedLine;
use tessera_core::staff::StaffMember;
use tessera_core::vat::{format_rate, VatBreakdown};
use uuid::Uuid;

use crate::error::TerminalError;
use crate::sales::parse_uuid;
use crate::views::{MethodTotal, ProductTotal, ReportKind, ShiftReport, ShiftView, VatLine};

use tessera_core::limits::MAX_FLOAT_MINOR as MAX_FLOAT;

pub(crate) fn current(conn: &Connection) -> Result<Option<ShiftView>, TerminalError> {
    Ok(conn
        .query_row(
            "SELECT shift_id, cashier, opened_at, float FROM shifts WHERE closed_at IS NULL",
            [],
            |r| {
                Ok(ShiftView {
                    shift_id: parse_uuid(&r.get::<_, String>(0)?)?,
                    cashier: r.get(1)?,
                    opened_at: from_ms(r.get(2)?),
                    float: r.get(3)?,
                })
            },
        )
        .optional()?)
}

pub(crate) fn open(
    conn: &mut Connection,
    cashier: &StaffMember,
    float: i64,
    now: Timestamp,
) -> Result<ShiftView, TerminalError> {
    if !(0..=MAX_FLOAT).contains(&float) {
        return Err(TerminalError::Invalid(
            "the float must be between 0.00 and 10000.00".into(),
        ));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(open) = current(&tx)? {
        return Err(TerminalError::ShiftOpen(format!(
            "{}'s shift",
            open.cashier
        )));
    }
    let shift = ShiftView {
        shift_id: new_id(),
        cashier: cashier.name.clone(),
        opened_at: now,
        float,
    };
    tx.execute(
        "INSERT INTO shifts (shift_id, cashier, opened_at, float) VALUES (?1, ?2, ?3, ?4)",
        params![
            shift.shift_id.to_string(),
            shift.cashier,
            now.as_millisecond(),
            float
        ],
    )?;
    tx.commit()?;
    Ok(shift)
}

/// Builds the report of a shift from the sales log.
pub(crate) fn report(
    conn: &Connection,
    shift: &ShiftView,
    counter: &str,
    currency: &str,
    kind: ReportKind,
    counted: Option<i64>,
    now: Timestamp,
) -> Result<ShiftReport, TerminalError> {
    let id = shift.shift_id.to_string();
    let mut stmt = conn.prepare_cached(
        "SELECT terminal_seq, total, payment_method, lines, voided, admissions FROM sales WHERE shift_id = ?1 ORDER BY terminal_seq",
    )?;
    let rows = stmt.query_map(params![id], |r| {
        Ok((
            r.get::<_, u64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, bool>(4)?,
            r.get::<_, u32>(5)?,
        ))
    })?;
    let (mut cash_sales, mut card_sales, mut gross) = (0i64, 0i64, 0i64);
    let (mut first_seq, mut last_seq, mut count, mut admissions) = (None, None, 0u32, 0u32);
    let mut products: BTreeMap<String, ProductTotal> = BTreeMap::new();
    let mut vat = VatBreakdown::default();
    for row in rows {
        let (seq, total, method, lines, voided, adm) = row?;
        first_seq.get_or_insert(seq);
        last_seq = Some(seq);
        count += 1;
        gross += total;
        if method == "card" {
            card_sales += total;
        } else {
            cash_sales += total;
        }
        if voided {
            continue;
        }
        admissions += adm;
        let lines: Vec<PricedLine> = serde_json::from_str(&lines)?;
        for l in lines {
            vat.add_line(l.vat_bp, l.amounts);
            let p = products
                .entry(l.product_id.clone())
                .or_insert(ProductTotal {
                    product_id: l.product_id.clone(),
                    name: l.name.clone(),
                    quantity: 0,
                    gross: 0,
                });
            p.quantity += i64::from(l.quantity);
            p.gross += l.amounts.gross;
        }
    }
    let (mut cash_refunds, mut card_refunds, mut voids) = (0i64, 0i64, 0u32);
    let mut stmt =
        conn.prepare_cached("SELECT refund, refund_method FROM voids WHERE shift_id = ?1")?;
    for row in stmt.query_map(params![id], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })? {
        let (refund, method) = row?;
        voids += 1;
        if method == "card" {
            card_refunds += refund;
        } else {
            cash_refunds += refund;
        }
    }
    let expected_cash = shift.float + cash_sales - cash_refunds;
    Ok(ShiftReport {
        kind,
        shift_id: shift.shift_id,
        counter: counter.to_string(),
        cashier: shift.cashier.clone(),
        opened_at: shift.opened_at,
        closed_at: (kind == ReportKind::Z).then_some(now),
        printed_at: now,
        currency: currency.to_string(),
        float: shift.float,
        sales_count: count,
        voids_count: voids,
        admissions,
        first_seq,
        last_seq,
        gross,
        by_method: vec![
            MethodTotal {
                method: PaymentMethod::Cash,
                sales: cash_sales,
                refunds: cash_refunds,
                net: cash_sales - cash_refunds,
            },
            MethodTotal {
                method: PaymentMethod::Card,
                sales: card_sales,
                refunds: card_refunds,
                net: card_sales - card_refunds,
            },
        ],
        by_product: products.into_values().collect(),
        vat: vat
            .0
            .into_iter()
            .map(|(rate_bp, amounts)| VatLine {
                rate_bp,
                label: format_rate(rate_bp),
                amounts,
            })
            .collect(),
        expected_cash,
        counted_cash: counted,
        over_short: counted.map(|c| c - expected_cash),
    })
}

/// Closes the open shift with the counted cash; the Z report is stored and
/// queued for upload in the same transaction.
pub(crate) fn close(
    conn: &mut Connection,
    counter: &str,
    currency: &str,
    counted: i64,
    now: Timestamp,
) -> Result<ShiftReport, TerminalError> {
    if !(0..=100_000_000).contains(&counted) {
        return Err(TerminalError::Invalid(
            "counted cash must be between 0.00 and 1000000.00".into(),
        ));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let shift = current(&tx)?.ok_or(TerminalError::NoShift)?;
    let z = report(
        &tx,
        &shift,
        counter,
        currency,
        ReportKind::Z,
        Some(counted),
        now,
    )?;
    tx.execute(
        "UPDATE shifts SET closed_at = ?2, counted = ?3, report = ?4 WHERE shift_id = ?1",
        params![
            shift.shift_id.to_string(),
            now.as_millisecond(),
            counted,
            serde_json::to_string(&z)?
        ],
    )?;
    tx.commit()?;
    Ok(z)
}

pub(crate) fn last_closed(conn: &Connection) -> Result<Option<ShiftReport>, TerminalError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT report FROM shifts WHERE closed_at IS NOT NULL ORDER BY closed_at DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
}

/// Closed shifts the server has not acknowledged, as sync records.
pub(crate) fn unsent(conn: &Connection) -> Result<Vec<ShiftRecord>, TerminalError> {
    let mut stmt = conn
        .prepare_cached("SELECT report FROM shifts WHERE closed_at IS NOT NULL AND uploaded = 0")?;
    let reports = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for text in reports {
        let z: ShiftReport = serde_json::from_str(&text)?;
        out.push(record_of(&z));
    }
    Ok(out)
}

fn record_of(z: &ShiftReport) -> ShiftRecord {
    let method = |m: PaymentMethod| z.by_method.iter().find(|t| t.method == m);
    ShiftRecord {
        shift_id: z.shift_id,
        cashier: z.cashier.clone(),
        opened_at: z.opened_at,
        closed_at: z.closed_at.unwrap_or(z.printed_at),
        float: z.float,
        cash_sales: method(PaymentMethod::Cash).map(|t| t.sales).unwrap_or(0),
        card_sales: method(PaymentMethod::Card).map(|t| t.sales).unwrap_or(0),
        cash_refunds: method(PaymentMethod::Cash).map(|t| t.refunds).unwrap_or(0),
        card_refunds: method(PaymentMethod::Card).map(|t| t.refunds).unwrap_or(0),
        expected_cash: z.expected_cash,
        counted_cash: z.counted_cash.unwrap_or(0),
        first_seq: z.first_seq,
        last_seq: z.last_seq,
        sales_count: z.sales_count,
        voids_count: z.voids_count,
    }
}

pub(crate) fn mark_uploaded(conn: &Connection, ids: &[Uuid]) -> Result<(), TerminalError> {
    let mut stmt = conn.prepare_cached("UPDATE shifts SET uploaded = 1 WHERE shift_id = ?1")?;
    for id in ids {
        stmt.execute(params![id.to_string()])?;
    }
    Ok(())
}
