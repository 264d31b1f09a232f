//! Selling at the counter. A sale is one local transaction: check the lease,
//! write sale, tickets and payment, take the places from the lease. It is on
//! disk (fsynced) before anything is printed or uploaded.

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tessera_core::api::sync::PaymentMethod;
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::from_ms;
use tessera_core::counter_lease::CounterLease;
use tessera_core::ids::new_id;
use tessera_core::inventory::LeaseTotals;
use tessera_core::money::format_minor;
use tessera_core::pricing::{price_cart, CartLimits, Channel, PricedLine};
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::{TicketClaims, TicketSigner};
use tessera_core::vat::{format_rate, VatBreakdown};
use uuid::Uuid;

use crate::error::TerminalError;
use crate::views::{PaymentRequest, SaleRequest, SaleView, TicketView, VatLine, VoidDone};

pub(crate) struct SellContext<'a> {
    pub catalogue: &'a Catalogue,
    pub signer: &'a TicketSigner,
    pub now: Timestamp,
}

pub(crate) fn parse_uuid(text: &str) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn parse_slot(text: &str) -> rusqlite::Result<SlotId> {
    text.parse::<SlotId>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// The slot's lease as this counter holds it.
pub(crate) fn lease_for(
    conn: &Connection,
    slot: SlotId,
) -> Result<Option<CounterLease>, TerminalError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE slot_id = ?1"
        ))?
        .query_row(params![slot.to_string()], lease_row)
        .optional()?)
}

pub(crate) const LEASE_COLUMNS: &str =
    "lease_id, slot_id, granted_total, released_total, sold, revoked";

pub(crate) fn lease_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CounterLease> {
    Ok(CounterLease {
        lease_id: parse_uuid(&r.get::<_, String>(0)?)?,
        slot: parse_slot(&r.get::<_, String>(1)?)?,
        totals: LeaseTotals {
            granted_total: r.get(2)?,
            released_total: r.get(3)?,
        },
        sold: r.get(4)?,
        revoked: r.get(5)?,
    })
}

/// Writes back what a rule changed in a lease (its totals, sold, revoked).
pub(crate) fn store_lease(conn: &Connection, lease: &CounterLease) -> Result<(), TerminalError> {
    conn.prepare_cached(
        "UPDATE leases SET granted_total = ?2, released_total = ?3, sold = ?4, revoked = ?5
         WHERE lease_id = ?1",
    )?
    .execute(params![
        lease.lease_id.to_string(),
        lease.totals.granted_total,
        lease.totals.released_total,
        lease.sold,
        lease.revoked
    ])?;
    Ok(())
}

pub(crate) fn vat_lines(lines: &[PricedLine]) -> Vec<VatLine> {
    let mut vat = VatBreakdown::default();
    for l in lines {
        vat.add_line(l.vat_bp, l.amounts);
    }
    vat.0
        .into_iter()
        .map(|(rate_bp, amounts)| VatLine {
            rate_bp,
            label: format_rate(rate_bp),
            amounts,
        })
        .collect()
}

pub(crate) struct SlotRow {
    pub starts_at: i64,
    pub ends_at: i64,
    pub window_minutes: u16,
}

pub(crate) fn slot_row(conn: &Connection, slot: SlotId) -> Result<Option<SlotRow>, TerminalError> {
    Ok(conn
        .prepare_cached("SELECT starts_at, ends_at, window_minutes FROM slots WHERE slot_id = ?1")?
        .query_row(params![slot.to_string()], |r| {
            Ok(SlotRow {
                starts_at: r.get(0)?,
                ends_at: r.get(1)?,
                window_minutes: r.get(2)?,
            })
        })
        .optional()?)
}

/// Rings up a sale. On `NotEnoughPlaces` nothing was written.
pub(crate) fn commit_sale(
    conn: &mut Connection,
    ctx: &SellContext<'_>,
    request: &SaleRequest,
) -> Result<SaleView, TerminalError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (shift_id, cashier) = open_shift(&tx)?;
    let slot_id = request.slot_id;
    let slot = sellable_slot(&tx, slot_id, ctx.now)?;
    let priced = price_cart(
        ctx.catalogue,
        &request.items,
        Channel::Counter,
        CartLimits::COUNTER,
    )?;
    let mut lease = lease_with_room(&tx, slot_id, priced.admissions)?;
    let total = priced.total.amount;
    let paid = take_payment(&request.payment, total)?;
    let seq: u64 = tx.query_row(
        "SELECT COALESCE(MAX(terminal_seq), 0) + 1 FROM sales",
        [],
        |r| r.get(0),
    )?;
    let sale = SaleView {
        sale_id: new_id(),
        terminal_seq: seq,
        slot_id,
        slot_label: slot_id.hhmm(),
        created_at: ctx.now,
        cashier,
        vat: vat_lines(&priced.lines),
        tickets: sign_tickets(ctx.signer, slot_id, slot.window_minutes, &priced.lines)?,
        lines: priced.lines,
        total,
        currency: priced.total.currency.to_string(),
        admissions: priced.admissions,
        payment_method: paid.method,
        tendered: paid.tendered,
        change: paid.change,
        voided: false,
        uploaded: false,
    };
    lease
        .sell(sale.admissions)
        .map_err(|_| TerminalError::NotEnoughPlaces {
            slot: slot_id.hhmm(),
            left: lease.left(),
            requested: sale.admissions,
        })?;
    write_sale(&tx, &sale, &shift_id, &lease)?;
    tx.commit()?;
    Ok(sale)
}

/// The open shift's id and cashier: no sale without one.
fn open_shift(tx: &Connection) -> Result<(String, String), TerminalError> {
    tx.query_row(
        "SELECT shift_id, cashier FROM shifts WHERE closed_at IS NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?
    .ok_or(TerminalError::NoShift)
}

/// The slot, if this terminal knows it and it has not ended.
fn sellable_slot(
    tx: &Connection,
    slot_id: SlotId,
    now: Timestamp,
) -> Result<SlotRow, TerminalError> {
    let slot =
        slot_row(tx, slot_id)?.ok_or_else(|| TerminalError::UnknownSlot(slot_id.to_string()))?;
    if now.as_millisecond() >= slot.ends_at {
        return Err(TerminalError::SlotClosed(slot_id.hhmm()));
    }
    Ok(slot)
}

/// The slot's lease, if it still has `admissions` places for this counter.
fn lease_with_room(
    tx: &Connection,
    slot_id: SlotId,
    admissions: u32,
) -> Result<CounterLease, TerminalError> {
    let lease = lease_for(tx, slot_id)?;
    let left = lease.as_ref().map(CounterLease::left).unwrap_or(0);
    match lease {
        Some(lease) if lease.covers(admissions) => Ok(lease),
        _ => Err(TerminalError::NotEnoughPlaces {
            slot: slot_id.hhmm(),
            left,
            requested: admissions,
        }),
    }
}

/// How the visitor paid: the method, and for cash what was handed over and
/// the change due.
struct Paid {
    method: PaymentMethod,
    tendered: Option<i64>,
    change: Option<i64>,
}

/// Checks the payment against the total: cash must cover it, and an amount
/// far above it is taken for a typing slip.
fn take_payment(payment: &PaymentRequest, total: i64) -> Result<Paid, TerminalError> {
    match payment {
        PaymentRequest::Cash { tendered } => {
            let tendered = *tendered;
            if tendered < total || tendered < 0 {
                return Err(TerminalError::NotEnoughCash {
                    tendered: format_minor(tendered),
                    total: format_minor(total),
                });
            }
            if tendered > total + 100_000 {
                return Err(TerminalError::Invalid(format!(
                    "{} handed over for {}: check the amount",
                    format_minor(tendered),
                    format_minor(total)
                )));
            }
            Ok(Paid {
                method: PaymentMethod::Cash,
                tendered: Some(tendered),
                change: Some(tendered - total),
            })
        }
        PaymentRequest::Card => Ok(Paid {
            method: PaymentMethod::Card,
            tendered: None,
            change: None,
        }),
    }
}

/// One signed ticket per admission product in the lines, with this
/// terminal's key.
fn sign_tickets(
    signer: &TicketSigner,
    slot_id: SlotId,
    window_minutes: u16,
    lines: &[PricedLine],
) -> Result<Vec<TicketView>, TerminalError> {
    let mut tickets = Vec::new();
    for line in lines {
        for _ in 0..line.quantity {
            let claims = TicketClaims {
                key_id: signer.key_id,
                ticket_id: new_id(),
                slot: slot_id,
                window_minutes,
                admits: line.admits_each,
                product_id: line.product_id.clone(),
            };
            let code = signer
                .sign(&claims)
                .map_err(|e| TerminalError::Invalid(e.to_string()))?;
            tickets.push(TicketView {
                ticket_id: claims.ticket_id,
                product_id: claims.product_id,
                product_name: line.name.clone(),
                admits: claims.admits,
                code,
            });
        }
    }
    Ok(tickets)
}

/// Writes the sale and its tickets, takes its places from the lease, and
/// forgets the slot's pending want (the lease covered it).
fn write_sale(
    tx: &Connection,
    sale: &SaleView,
    shift_id: &str,
    lease: &CounterLease,
) -> Result<(), TerminalError> {
    tx.execute(
        "INSERT INTO sales (sale_id, terminal_seq, lease_id, slot_id, shift_id, cashier, created_at, lines, total, currency,
                            admissions, payment_method, tendered, change, catalogue_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
                 COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'catalogue_version'), 0))",
        params![
            sale.sale_id.to_string(),
            sale.terminal_seq,
            lease.lease_id.to_string(),
            sale.slot_id.to_string(),
            shift_id,
            sale.cashier,
            sale.created_at.as_millisecond(),
            serde_json::to_string(&sale.lines)?,
            sale.total,
            sale.currency,
            sale.admissions,
            sale.payment_method.as_str(),
            sale.tendered,
            sale.change
        ],
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO tickets (ticket_id, sale_id, slot_id, product_id, admits, code) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for t in &sale.tickets {
        insert.execute(params![
            t.ticket_id.to_string(),
            sale.sale_id.to_string(),
            sale.slot_id.to_string(),
            t.product_id,
            t.admits,
            t.code
        ])?;
    }
    store_lease(tx, lease)?;
    tx.execute(
        "DELETE FROM wants WHERE slot_id = ?1",
        params![sale.slot_id.to_string()],
    )?;
    Ok(())
}

/// Remembers that a sale is waiting for `need` places in `slot`, so the next
/// sync asks for them.
pub(crate) fn want(
    conn: &Connection,
    slot: SlotId,
    need: u32,
    now: Timestamp,
) -> Result<(), TerminalError> {
    conn.execute(
        "INSERT INTO wants (slot_id, need, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (slot_id) DO UPDATE SET need = excluded.need, created_at = excluded.created_at",
        params![slot.to_string(), need, now.as_millisecond()],
    )?;
    Ok(())
}

const SALE_COLUMNS: &str =
    "s.sale_id, s.terminal_seq, s.slot_id, s.created_at, s.cashier, s.lines, s.total, s.currency,
     s.admissions, s.payment_method, s.tendered, s.change, s.voided";

fn sale_from_row(r: &rusqlite::Row<'_>, acked: u64) -> rusqlite::Result<SaleView> {
    let slot_id = parse_slot(&r.get::<_, String>(2)?)?;
    let lines: Vec<PricedLine> = serde_json::from_str(&r.get::<_, String>(5)?).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let method: String = r.get(9)?;
    let seq: u64 = r.get(1)?;
    Ok(SaleView {
        sale_id: parse_uuid(&r.get::<_, String>(0)?)?,
        terminal_seq: seq,
        slot_id,
        slot_label: slot_id.hhmm(),
        created_at: from_ms(r.get(3)?),
        cashier: r.get(4)?,
        vat: vat_lines(&lines),
        lines,
        total: r.get(6)?,
        currency: r.get(7)?,
        admissions: r.get(8)?,
        payment_method: if method == "card" {
            PaymentMethod::Card
        } else {
            PaymentMethod::Cash
        },
        tendered: r.get(10)?,
        change: r.get(11)?,
        tickets: Vec::new(),
        voided: r.get(12)?,
        uploaded: seq <= acked,
    })
}

fn attach_tickets(
    conn: &Connection,
    catalogue: &Catalogue,
    sale: &mut SaleView,
) -> Result<(), TerminalError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ticket_id, product_id, admits, code FROM tickets WHERE sale_id = ?1 ORDER BY rowid",
    )?;
    let rows = stmt.query_map(params![sale.sale_id.to_string()], |r| {
        let product_id: String = r.get(1)?;
        Ok(TicketView {
            ticket_id: parse_uuid(&r.get::<_, String>(0)?)?,
            product_name: catalogue
                .product(&product_id)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| product_id.clone()),
            product_id,
            admits: r.get(2)?,
            code: r.get(3)?,
        })
    })?;
    sale.tickets = rows.collect::<rusqlite::Result<_>>()?;
    Ok(())
}

pub(crate) fn load_sale(
    conn: &Connection,
    catalogue: &Catalogue,
    sale_id: Uuid,
    acked: u64,
) -> Result<SaleView, TerminalError> {
    let mut sale = conn
        .prepare_cached(&format!(
            "SELECT {SALE_COLUMNS} FROM sales s WHERE s.sale_id = ?1"
        ))?
        .query_row(params![sale_id.to_string()], |r| sale_from_row(r, acked))
        .optional()?
        .ok_or_else(|| TerminalError::UnknownSale(sale_id.to_string()))?;
    attach_tickets(conn, catalogue, &mut sale)?;
    Ok(sale)
}

/// Sales made between two instants, newest first.
pub(crate) fn sales_between(
    conn: &Connection,
    catalogue: &Catalogue,
    from_ms: i64,
    to_ms: i64,
    acked: u64,
) -> Result<Vec<SaleView>, TerminalError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SALE_COLUMNS} FROM sales s WHERE s.created_at >= ?1 AND s.created_at < ?2 ORDER BY s.terminal_seq DESC"
    ))?;
    let mut sales = stmt
        .query_map(params![from_ms, to_ms], |r| sale_from_row(r, acked))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for sale in &mut sales {
        attach_tickets(conn, catalogue, sale)?;
    }
    Ok(sales)
}

/// Voids a sale with a supervisor's approval: the money goes back the way it
/// came, the tickets are revoked at the next sync, and the places return to
/// the lease if the slot has not started.
pub(crate) fn void_sale(
    conn: &mut Connection,
    sale_id: Uuid,
    approved_by: &str,
    approval_id: Uuid,
    reason: &str,
    now: Timestamp,
) -> Result<VoidDone, TerminalError> {
    let reason = reason.trim();
    check_void_reason(reason)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row: Option<(String, String, u32, i64, String, bool)> = tx
        .query_row(
            "SELECT lease_id, slot_id, admissions, total, payment_method, voided FROM sales WHERE sale_id = ?1",
            params![sale_id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .optional()?;
    let Some((lease_id, slot_id, admissions, total, method, voided)) = row else {
        return Err(TerminalError::UnknownSale(sale_id.to_string()));
    };
    if voided {
        return Err(TerminalError::AlreadyVoided(sale_id.to_string()));
    }
    let slot = parse_slot(&slot_id)?;
    let starts_at = slot_row(&tx, slot)?
        .map(|s| s.starts_at)
        .unwrap_or(i64::MIN);
    let returned = now.as_millisecond() < starts_at;
    let after_seq: u64 = tx.query_row(
        "SELECT COALESCE(MAX(terminal_seq), 0) FROM sales",
        [],
        |r| r.get(0),
    )?;
    let shift: Option<String> = tx
        .query_row(
            "SELECT shift_id FROM shifts WHERE closed_at IS NULL",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let refund_method = if method == "card" {
        PaymentMethod::Card
    } else {
        PaymentMethod::Cash
    };
    tx.execute(
        "INSERT INTO voids (void_id, sale_id, after_seq, at, shift_id, approved_by, reason, returned_to_lease, refund, refund_method,
                            approval_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            new_id().to_string(),
            sale_id.to_string(),
            after_seq,
            now.as_millisecond(),
            shift,
            approved_by,
            if reason.is_empty() { "no reason given" } else { reason },
            returned,
            total,
            refund_method.as_str(),
            approval_id.to_string()
        ],
    )?;
    tx.execute(
        "UPDATE sales SET voided = 1 WHERE sale_id = ?1",
        params![sale_id.to_string()],
    )?;
    if returned {
        let lease = tx
            .prepare_cached(&format!(
                "SELECT {LEASE_COLUMNS} FROM leases WHERE lease_id = ?1"
            ))?
            .query_row(params![lease_id], lease_row)
            .optional()?;
        if let Some(mut lease) = lease {
            lease.void_back(admissions);
            store_lease(&tx, &lease)?;
        }
    }
    tx.commit()?;
    Ok(VoidDone {
        sale_id,
        refund: total,
        refund_method,
        returned_to_lease: returned,
        approved_by: approved_by.to_string(),
    })
}

pub(crate) fn check_void_reason(reason: &str) -> Result<(), TerminalError> {
    // The server's own check (core's), so a void the counter takes is never
    // one the server quarantines for its reason.
    tessera_core::limits::text("reason", reason, tessera_core::limits::VOID_REASON_CHARS)
        .map_err(|e| TerminalError::Invalid(format!("void reason: {e}")))
}

/// Refuses an unknown or already voided sale.
pub(crate) fn check_voidable(conn: &mut Connection, sale_id: Uuid) -> Result<(), TerminalError> {
    let voided: Option<bool> = conn
        .query_row(
            "SELECT voided FROM sales WHERE sale_id = ?1",
            params![sale_id.to_string()],
            |r| r.get(0),
        )
        .optional()?;
    match voided {
        None => Err(TerminalError::UnknownSale(sale_id.to_string())),
        Some(true) => Err(TerminalError::AlreadyVoided(sale_id.to_string())),
        Some(false) => Ok(()),
    }
}

/// "Wed 2 Dec 2026, entry 14:00-14:30" in the museum's zone.
pub(crate) fn slot_text(slot: SlotId, window_minutes: u16) -> String {
    let date = slot.date.strftime("%a %-d %b %Y");
    let end = slot.start_minute + window_minutes;
    format!(
        "{date}, entry {}-{:02}:{:02}",
        slot.hhmm(),
        (end / 60) % 24,
        end % 60
    )
}
