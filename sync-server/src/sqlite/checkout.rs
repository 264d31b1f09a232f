//! Paying for a hold, inside the writer: the payment record, the provider's
//! verified events applied exactly once, the refund queue, and "my booking"
//! (look-up, cancellation, resend).
//!
//! Exactly once. A webhook event is recorded by `(provider, event_id)` before
//! it acts, so a replay finds its row and changes nothing. A payment moves
//! `pending → paid | failed | refunding → refunded` and only a pending (or
//! failed) payment can be paid, so it confirms at most one order. A payment
//! whose hold expired or was cancelled meanwhile gets the same lines again if
//! the slot still has room; otherwise its money goes to the refund queue in
//! the same transaction. Never money without tickets, never tickets without
//! money.
//!
//! The provider's own HTTP calls never run here: the writer creates the
//! payment, the edge calls the provider, and a second job stores its answer.

use rusqlite::{params, OptionalExtension};
use serde_json::json;
use tessera_core::api::shop::{Booking, BookingTicket, CheckoutStatus, Language};
use tessera_core::booking::{
    cancellable_until, may_resend, plan_cancel, resend_window_start, ticket_state, TicketFacts,
};
use tessera_core::clock::from_ms;
use tessera_core::ids::{new_id, HoldId};
use tessera_core::inventory::hold_is_open;
use tessera_core::money::{Currency, Money};
use tessera_core::payment::{
    self, judge_event, Decision, EventPlan, HoldFacts, HoldStatus, PaymentFacts, PaymentStatus,
    RefundReason, SlotFacts,
};
use tessera_core::pricing::PricedLine;
use tessera_core::slot::SlotId;
use tessera_core::tally::ONLINE_ACTOR;
use uuid::Uuid;

use super::online::{closed_hold_error, issue_order, release, take_open_hold, OrderMeta};
use super::sql::{parse_slot, parse_uuid, Column, Text};
use super::state::OpenHold;
use super::writer::{Ctx, Fatal};
use crate::secrets;
use crate::store::{
    BookingContext, DueRefund, EventOutcome, PaymentEvent, PaymentRecord, RefundAttempt, Refusal,
    StoreError, Visitor,
};

type Outcome<T> = Result<Result<T, StoreError>, Fatal>;

fn unknown_booking() -> StoreError {
    Refusal::unknown_booking().into()
}

pub(crate) fn begin_checkout(
    ctx: &mut Ctx<'_>,
    hold_id: Uuid,
    visitor: Visitor,
    provider: String,
) -> Outcome<(u16, serde_json::Value)> {
    let Some(hold) = ctx.state.holds.get(&hold_id) else {
        return Ok(Err(closed_hold_error(ctx, hold_id)?));
    };
    // Places a waiting-list offer keeps are paid for only after the offer's
    // link turned them into a hold with tickets chosen.
    if hold.lines.is_empty() {
        return Ok(Err(Refusal::UnknownHold(hold_id.to_string()).into()));
    }
    if !hold_is_open(hold.expires_ms, ctx.now_ms) {
        release(ctx, hold_id, "expired")?;
        return Ok(Err(Refusal::HoldExpired(hold_id.to_string()).into()));
    }
    let (slot_id, total, expires_ms) = (hold.slot, hold.total, hold.expires_ms);
    let currency = ctx.state.catalogue.museum.currency;
    let payment_id = secrets::new_url_id(secrets::PAYMENT_PREFIX);
    let checkout_id = secrets::new_url_id(secrets::CHECKOUT_PREFIX);
    ctx.tx
        .prepare_cached(
            "INSERT INTO payments (payment_id, checkout_id, hold_id, provider, amount, currency, status,
                                   visitor_name, email, language, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            payment_id,
            checkout_id,
            Text(&hold_id),
            provider,
            total,
            currency.as_str(),
            visitor.name,
            visitor.email,
            visitor.language.code(),
            ctx.now_ms
        ])?;
    metrics::counter!("tessera_checkouts_total").increment(1);
    let record = PaymentRecord {
        payment_id,
        checkout_id,
        hold_id: HoldId(hold_id),
        slot_id,
        amount: Money::new(total, currency),
        hold_expires_at: from_ms(expires_ms),
        email: visitor.email,
        language: visitor.language,
        provider,
        redirect_url: None,
    };
    Ok(Ok((201, json!(record))))
}

fn load_record(ctx: &Ctx<'_>, payment_id: &str) -> Result<Option<PaymentRecord>, Fatal> {
    let museum_currency = ctx.state.catalogue.museum.currency;
    let row = ctx
        .tx
        .prepare_cached(
            "SELECT p.payment_id, p.checkout_id, p.hold_id, h.slot_id, p.amount, p.currency, h.expires_at,
                    p.email, p.language, p.provider, p.redirect_url
             FROM payments p JOIN holds h ON h.hold_id = p.hold_id WHERE p.payment_id = ?1",
        )?
        .query_row(params![payment_id], |r| {
            let currency: String = r.get(5)?;
            Ok((
                PaymentRecord {
                    payment_id: r.get(0)?,
                    checkout_id: r.get(1)?,
                    hold_id: HoldId(r.uuid(2)?),
                    slot_id: r.get::<_, SlotId>(3)?,
                    amount: Money::new(r.get(4)?, museum_currency),
                    hold_expires_at: from_ms(r.get(6)?),
                    email: r.get(7)?,
                    language: Language::from_stored(&r.get::<_, String>(8)?),
                    provider: r.get(9)?,
                    redirect_url: r.get(10)?,
                },
                currency,
            ))
        })
        .optional()?;
    let Some((mut record, currency)) = row else {
        return Ok(None);
    };
    record.amount.currency =
        Currency::new(&currency).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
    Ok(Some(record))
}

pub(crate) fn payment_started(
    ctx: &mut Ctx<'_>,
    payment_id: &str,
    provider_ref: &str,
    redirect_url: &str,
) -> Outcome<PaymentRecord> {
    // A retry that called the provider again keeps the first session.
    ctx.tx
        .prepare_cached(
            "UPDATE payments SET provider_ref = ?2, redirect_url = ?3
             WHERE payment_id = ?1 AND redirect_url IS NULL",
        )?
        .execute(params![payment_id, provider_ref, redirect_url])?;
    match load_record(ctx, payment_id)? {
        Some(r) => Ok(Ok(r)),
        None => Err(Fatal::Bookkeeping(format!(
            "payment {payment_id} vanished between its two jobs"
        ))),
    }
}

pub(crate) fn checkout_status(ctx: &mut Ctx<'_>, checkout_id: &str) -> Outcome<CheckoutStatus> {
    let row: Option<(String, String, Option<String>)> = ctx
        .tx
        .prepare_cached(
            "SELECT payment_id, status, booking_token FROM payments WHERE checkout_id = ?1",
        )?
        .query_row(params![checkout_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((payment_id, status, token)) = row else {
        return Ok(Err(Refusal::unknown_checkout().into()));
    };
    let status: PaymentStatus = status
        .parse()
        .map_err(|e: payment::PaymentError| Fatal::Bookkeeping(e.to_string()))?;
    if token.is_some() {
        // Handed to the return page once; the email carries the link too.
        ctx.tx
            .prepare_cached("UPDATE payments SET booking_token = NULL WHERE payment_id = ?1")?
            .execute(params![payment_id])?;
    }
    Ok(Ok(payment::checkout_status(checkout_id, status, token)))
}

/// A payment as applying an event needs it.
struct PaymentRow {
    payment_id: String,
    hold_id: Uuid,
    status: PaymentStatus,
    amount: Money,
    name: String,
    email: String,
    language: String,
}

/// The hold a payment is for, as stored.
struct HoldRow {
    slot: SlotId,
    status: HoldStatus,
    admissions: u32,
    lines: Vec<PricedLine>,
    total: i64,
    expires_ms: i64,
}

fn bookkeeping(e: impl std::fmt::Display) -> Fatal {
    Fatal::Bookkeeping(e.to_string())
}

fn load_payment(
    ctx: &Ctx<'_>,
    provider: &str,
    payment_id: &str,
) -> Result<Option<(PaymentRow, HoldRow)>, Fatal> {
    type Row = (String, String, String, i64, String, String, String, String);
    let row: Option<Row> = ctx
        .tx
        .prepare_cached(
            "SELECT payment_id, hold_id, status, amount, currency, visitor_name, email, language
             FROM payments WHERE payment_id = ?1 AND provider = ?2",
        )?
        .query_row(params![payment_id, provider], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .optional()?;
    let Some((payment_id, hold_id, status, amount, currency, name, email, language)) = row else {
        return Ok(None);
    };
    let payment = PaymentRow {
        payment_id,
        hold_id: parse_uuid(&hold_id)?,
        status: status.parse().map_err(bookkeeping)?,
        amount: Money::new(amount, Currency::new(&currency).map_err(bookkeeping)?),
        name,
        email,
        language,
    };
    let hold: Option<(SlotId, String, u32, String, i64, i64)> = ctx
        .tx
        .prepare_cached(
            "SELECT slot_id, status, admissions, lines, total, expires_at FROM holds WHERE hold_id = ?1",
        )?
        .query_row(params![Text(&payment.hold_id)], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?;
    let Some((slot, status, admissions, lines, total, expires_ms)) = hold else {
        return Err(Fatal::Bookkeeping(format!(
            "payment names hold {}, which does not exist",
            payment.hold_id
        )));
    };
    let hold = HoldRow {
        slot,
        status: status.parse().map_err(bookkeeping)?,
        admissions,
        lines: serde_json::from_str(&lines).map_err(bookkeeping)?,
        total,
        expires_ms,
    };
    Ok(Some((payment, hold)))
}

/// What core's payment rules are told about a payment.
fn payment_facts(ctx: &Ctx<'_>, payment: &PaymentRow, hold: &HoldRow) -> PaymentFacts {
    PaymentFacts {
        status: payment.status,
        amount: payment.amount,
        hold: HoldFacts {
            status: hold.status,
            has_lines: !hold.lines.is_empty(),
            admissions: hold.admissions,
            expires_ms: hold.expires_ms,
        },
        // Only live slots are kept; an older one can sell nothing more.
        slot: ctx.state.slots.get(&hold.slot).map(|row| SlotFacts {
            ledger: row.ledger,
            ends_ms: row.slot.ends_at.as_millisecond(),
        }),
    }
}

pub(crate) fn apply_event(
    ctx: &mut Ctx<'_>,
    provider: &str,
    event: &PaymentEvent,
    booking: &BookingContext,
) -> Outcome<EventOutcome> {
    let fresh = ctx
        .tx
        .prepare_cached(
            "INSERT OR IGNORE INTO webhook_events (provider, event_id, payment_id, kind, outcome, received_at)
             VALUES (?1, ?2, ?3, ?4, 'applying', ?5)",
        )?
        .execute(params![
            provider,
            event.event_id,
            event.payment_id,
            event.kind.word(),
            ctx.now_ms
        ])?;
    let loaded = if fresh == 0 {
        None
    } else {
        load_payment(ctx, provider, &event.payment_id)?
    };
    let facts = loaded.as_ref().map(|(p, h)| payment_facts(ctx, p, h));
    let plan = judge_event(
        event.provider_event(),
        fresh > 0,
        facts.as_ref(),
        ctx.now_ms,
    )
    .map_err(bookkeeping)?;
    let outcome = match (plan.decision, loaded) {
        (Decision::Replayed, _) => {
            metrics::counter!("tessera_webhook_replays_total").increment(1);
            return Ok(Ok(EventOutcome::Replayed));
        }
        (_, None) => {
            tracing::warn!(%provider, event = %event.event_id, "verified event names no payment of ours; acknowledged");
            EventOutcome::UnknownPayment
        }
        (_, Some((payment, hold))) => carry_out(ctx, plan, payment, hold, event, booking)?,
    };
    ctx.tx
        .prepare_cached(
            "UPDATE webhook_events SET outcome = ?3 WHERE provider = ?1 AND event_id = ?2",
        )?
        .execute(params![provider, event.event_id, outcome.word()])?;
    Ok(Ok(outcome))
}

/// Writes what core decided for a payment's event.
fn carry_out(
    ctx: &mut Ctx<'_>,
    plan: EventPlan,
    payment: PaymentRow,
    hold: HoldRow,
    event: &PaymentEvent,
    booking: &BookingContext,
) -> Result<EventOutcome, Fatal> {
    let hold_id = payment.hold_id;
    if plan.money_arrived() {
        ctx.tx
            .prepare_cached(
                "UPDATE payments SET refund_ref = COALESCE(?2, refund_ref), paid_at = ?3 WHERE payment_id = ?1",
            )?
            .execute(params![payment.payment_id, event.refund_ref, ctx.now_ms])?;
    }
    if let Some(end) = plan.release {
        release(ctx, hold_id, end.status().as_str())?;
    }
    let open = match plan.decision {
        Decision::Replayed | Decision::UnknownPayment | Decision::AlreadySettled => {
            return Ok(EventOutcome::AlreadySettled)
        }
        Decision::Failed => {
            set_status(ctx, &payment.payment_id, PaymentStatus::Failed)?;
            return Ok(EventOutcome::Failed {
                hold_id: HoldId(hold_id),
            });
        }
        Decision::Refund { reason, amount } => {
            crate::payments::log_refund_decision(
                &payment.payment_id,
                HoldId(hold_id),
                reason,
                amount,
                payment.amount,
            );
            queue_refund(ctx, &payment.payment_id, None, amount, reason.code(), None)?;
            queue_refund_notice(ctx, &payment, amount, reason.code(), booking)?;
            set_status(ctx, &payment.payment_id, PaymentStatus::Refunding)?;
            return Ok(EventOutcome::Refunding {
                hold_id: HoldId(hold_id),
            });
        }
        Decision::Confirm => match take_open_hold(ctx, hold_id)? {
            Some(Ok(open)) => open,
            _ => {
                return Err(Fatal::Bookkeeping(format!(
                    "hold {hold_id} is held in the database but not open in memory"
                )))
            }
        },
        Decision::Rehold => {
            let Some(row) = ctx.state.slots.get_mut(&hold.slot) else {
                return Err(Fatal::Bookkeeping(format!(
                    "slot {} of a re-held hold is not loaded",
                    hold.slot
                )));
            };
            row.ledger.hold(hold.admissions)?;
            row.ledger.confirm_hold(hold.admissions)?;
            ctx.state.dirty_slots.insert(hold.slot);
            metrics::counter!("tessera_paid_after_expiry_reheld_total").increment(1);
            OpenHold {
                slot: hold.slot,
                admissions: hold.admissions,
                expires_ms: ctx.now_ms,
                lines: hold.lines,
                lines_json: None,
                total: hold.total,
            }
        }
    };
    let token = secrets::new_booking_token();
    let meta = OrderMeta {
        channel: "web".into(),
        payment_reference: payment.payment_id.clone(),
        email: Some(payment.email.clone()),
        name: Some(payment.name.clone()),
        language: Some(payment.language.clone()),
        payment_id: Some(payment.payment_id.clone()),
        booking_token_hash: Some(secrets::hash(&token)),
        reference: Some(secrets::new_reference()),
    };
    let order = issue_order(ctx, hold_id, &open, meta, None)?;
    ctx.tx
        .prepare_cached(
            "UPDATE payments SET status = 'paid', order_id = ?2, booking_token = ?3 WHERE payment_id = ?1",
        )?
        .execute(params![payment.payment_id, Text(&order.order_id), token])?;
    let Some(b) = load_booking(ctx, order.order_id, booking)? else {
        return Err(Fatal::Bookkeeping(
            "an order just written is missing".into(),
        ));
    };
    queue_mail(ctx, "booking_confirmed", &b, &link(booking, &token))?;
    Ok(EventOutcome::Confirmed {
        hold_id: HoldId(hold_id),
    })
}

fn set_status(ctx: &Ctx<'_>, payment_id: &str, status: PaymentStatus) -> Result<(), Fatal> {
    ctx.tx
        .prepare_cached("UPDATE payments SET status = ?2 WHERE payment_id = ?1")?
        .execute(params![payment_id, status.as_str()])?;
    Ok(())
}

fn queue_refund(
    ctx: &Ctx<'_>,
    payment_id: &str,
    order_id: Option<Uuid>,
    amount: Money,
    reason: &str,
    link: Option<&str>,
) -> Result<(), Fatal> {
    if amount.amount <= 0 {
        return Ok(());
    }
    let refund_id = new_id().to_string();
    ctx.tx
        .prepare_cached(
            "INSERT INTO refunds (refund_id, payment_id, order_id, amount, currency, reason, idempotency_key,
                                  status, attempts, next_attempt_at, link, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', 0, ?8, ?9, ?8)",
        )?
        .execute(params![
            refund_id,
            payment_id,
            order_id.map(Text),
            amount.amount,
            amount.currency.as_str(),
            reason,
            format!("tessera-refund-{refund_id}"),
            ctx.now_ms,
            link
        ])?;
    metrics::counter!("tessera_refunds_queued_total", "reason" => reason.to_string()).increment(1);
    Ok(())
}

pub(crate) fn due_refunds(ctx: &mut Ctx<'_>, limit: usize) -> Outcome<Vec<DueRefund>> {
    let mut stmt = ctx.tx.prepare_cached(
        "SELECT r.refund_id, p.provider, COALESCE(p.refund_ref, p.provider_ref, ''), r.amount, r.currency,
                r.idempotency_key, r.attempts
         FROM refunds r JOIN payments p ON p.payment_id = r.payment_id
         WHERE r.status = 'queued' AND r.next_attempt_at <= ?1
         ORDER BY r.next_attempt_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![ctx.now_ms, limit as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, u32>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (refund_id, provider, refund_ref, amount, currency, idempotency_key, attempts) = row?;
        let currency = Currency::new(&currency).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
        out.push(DueRefund {
            refund_id,
            provider,
            refund_ref,
            amount: Money::new(amount, currency),
            idempotency_key,
            attempts,
        });
    }
    Ok(Ok(out))
}

pub(crate) fn refund_attempted(
    ctx: &mut Ctx<'_>,
    refund_id: &str,
    attempt: RefundAttempt,
    booking: &BookingContext,
) -> Outcome<()> {
    match attempt {
        RefundAttempt::Done { provider_refund_id } => {
            let changed = ctx
                .tx
                .prepare_cached(
                    "UPDATE refunds SET status = 'done', provider_refund_id = ?2, done_at = ?3, attempts = attempts + 1,
                                        last_error = NULL
                     WHERE refund_id = ?1 AND status = 'queued'",
                )?
                .execute(params![refund_id, provider_refund_id, ctx.now_ms])?;
            if changed == 0 {
                return Ok(Ok(()));
            }
            let (payment_id, order_id, link): (String, Option<String>, Option<String>) = ctx
                .tx
                .prepare_cached(
                    "SELECT payment_id, order_id, link FROM refunds WHERE refund_id = ?1",
                )?
                .query_row(params![refund_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            ctx.tx
                .prepare_cached(
                    "UPDATE payments SET status = 'refunded' WHERE payment_id = ?1 AND status = 'refunding'",
                )?
                .execute(params![payment_id])?;
            metrics::counter!("tessera_refunds_done_total").increment(1);
            if let (Some(order), Some(link)) = (order_id, link) {
                let order = parse_uuid(&order)?;
                if let Some(b) = load_booking(ctx, order, booking)? {
                    queue_mail(ctx, "refund_issued", &b, &link)?;
                }
                // The link carries the booking's token: the mail has it now.
                ctx.tx
                    .prepare_cached("UPDATE refunds SET link = NULL WHERE refund_id = ?1")?
                    .execute(params![refund_id])?;
            }
        }
        RefundAttempt::Retry { error, retry_at_ms } => {
            ctx.tx
                .prepare_cached(
                    "UPDATE refunds SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3
                     WHERE refund_id = ?1 AND status = 'queued'",
                )?
                .execute(params![
                    refund_id,
                    tessera_core::limits::prefix(&error, 500),
                    retry_at_ms
                ])?;
        }
        RefundAttempt::Refused { error } => {
            tracing::error!(refund = %refund_id, %error, "the provider refused a refund; it needs a person (see the day report)");
            ctx.tx
                .prepare_cached(
                    "UPDATE refunds SET status = 'failed', attempts = attempts + 1, last_error = ?2
                     WHERE refund_id = ?1 AND status = 'queued'",
                )?
                .execute(params![
                    refund_id,
                    tessera_core::limits::prefix(&error, 500)
                ])?;
        }
    }
    Ok(Ok(()))
}

fn link(booking: &BookingContext, token: &str) -> String {
    format!("{}/booking/{token}", booking.public_url)
}

/// Tells a visitor whose payment bought nothing that it is coming back:
/// there is no booking to write to them about, and closing the tab before
/// the return page said "refunded" must not leave them wondering.
fn queue_refund_notice(
    ctx: &Ctx<'_>,
    payment: &PaymentRow,
    amount: Money,
    reason: &str,
    booking: &BookingContext,
) -> Result<(), Fatal> {
    if amount.amount <= 0 {
        return Ok(());
    }
    let slot: Option<String> = ctx
        .tx
        .prepare_cached("SELECT slot_id FROM holds WHERE hold_id = ?1")?
        .query_row(params![Text(&payment.hold_id)], |r| r.get(0))
        .optional()?;
    let Some(slot) = slot else {
        return Ok(());
    };
    let notice = crate::delivery::email::RefundNotice {
        language: Language::from_stored(&payment.language),
        slot_id: parse_slot(&slot)?,
        amount,
        reason: reason.to_string(),
    };
    let payload = json!({"refund": notice, "link": format!("{}/", booking.public_url)});
    ctx.tx
        .prepare_cached(
            "INSERT INTO mail_outbox (mail_id, kind, recipient, language, payload, created_at, next_attempt_at)
             VALUES (?1, 'payment_refunded', ?2, ?3, ?4, ?5, ?5)",
        )?
        .execute(params![
            new_id().to_string(),
            payment.email,
            payment.language,
            payload.to_string(),
            ctx.now_ms
        ])?;
    Ok(())
}

/// Writes an email to the outbox, in the transaction of what causes it.
fn queue_mail(ctx: &Ctx<'_>, kind: &str, booking: &Booking, link: &str) -> Result<(), Fatal> {
    let payload = json!({"booking": booking, "link": link});
    ctx.tx
        .prepare_cached(
            "INSERT INTO mail_outbox (mail_id, kind, recipient, language, payload, order_id, created_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        )?
        .execute(params![
            new_id().to_string(),
            kind,
            booking.email,
            booking.language.code(),
            payload.to_string(),
            Text(&booking.order_id),
            ctx.now_ms
        ])?;
    Ok(())
}

fn order_by_token(ctx: &Ctx<'_>, token: &str) -> Result<Option<Uuid>, Fatal> {
    if !secrets::is_link_token(token) {
        return Ok(None);
    }
    let id: Option<String> = ctx
        .tx
        .prepare_cached("SELECT order_id FROM orders WHERE booking_token_hash = ?1")?
        .query_row(params![secrets::hash(token)], |r| r.get(0))
        .optional()?;
    id.map(|i| parse_uuid(&i)).transpose().map_err(Fatal::Sql)
}

struct TicketRow {
    facts: TicketFacts,
    product_id: String,
    code: String,
}

fn ticket_rows(
    ctx: &Ctx<'_>,
    order_id: Uuid,
    lines: &[PricedLine],
) -> Result<Vec<TicketRow>, Fatal> {
    let mut stmt = ctx.tx.prepare_cached(
        "SELECT t.ticket_id, t.product_id, t.admits, t.code, t.price, t.voided_at IS NOT NULL,
                EXISTS (SELECT 1 FROM redemptions r WHERE r.ticket_id = t.ticket_id)
         FROM tickets t WHERE t.order_id = ?1 ORDER BY t.rowid",
    )?;
    let rows = stmt.query_map(params![Text(&order_id)], |r| {
        Ok((
            r.uuid(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, u8>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, bool>(5)?,
            r.get::<_, bool>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (ticket_id, product_id, admits, code, price, voided, used) = row?;
        // Tickets issued before prices were stored: the order's line says.
        let price = price.unwrap_or_else(|| {
            lines
                .iter()
                .find(|l| l.product_id == product_id)
                .map(|l| l.unit_price)
                .unwrap_or(0)
        });
        let state = ticket_state(voided, used);
        out.push(TicketRow {
            facts: TicketFacts {
                ticket_id,
                admits,
                price,
                state,
            },
            product_id,
            code,
        });
    }
    Ok(out)
}

/// An order as "my booking" shows it.
pub(crate) fn load_booking(
    ctx: &Ctx<'_>,
    order_id: Uuid,
    booking: &BookingContext,
) -> Result<Option<Booking>, Fatal> {
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        String,
        i64,
        String,
        i64,
        i64,
        String,
        i64,
        i64,
    );
    let row: Option<Row> = ctx
        .tx
        .prepare_cached(
            "SELECT o.reference, o.language, o.name, o.email, o.channel, o.slot_id, o.total, o.currency,
                    o.refunded, o.created_at, o.lines, s.starts_at, s.ends_at
             FROM orders o JOIN slots s ON s.slot_id = o.slot_id WHERE o.order_id = ?1",
        )?
        .query_row(params![Text(&order_id)], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                r.get(11)?,
                r.get(12)?,
            ))
        })
        .optional()?;
    let Some((
        reference,
        language,
        name,
        email,
        channel,
        slot,
        total,
        currency,
        refunded,
        created_at,
        lines,
        starts_at,
        ends_at,
    )) = row
    else {
        return Ok(None);
    };
    let currency = Currency::new(&currency).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
    let lines: Vec<PricedLine> = serde_json::from_str(&lines).unwrap_or_default();
    let catalogue = ctx.state.catalogue.clone();
    let language = Language::from_stored(language.as_deref().unwrap_or_default());
    let tickets = ticket_rows(ctx, order_id, &lines)?
        .into_iter()
        .map(|t| BookingTicket {
            ticket_id: t.facts.ticket_id,
            product_name: catalogue
                .product(&t.product_id)
                .map(|p| p.name_in(language.code()).to_string())
                .unwrap_or_else(|| t.product_id.clone()),
            product_id: t.product_id,
            admits: t.facts.admits,
            price: Money::new(t.facts.price, currency),
            code: t.code,
            state: t.facts.state,
        })
        .collect();
    let starts_at = from_ms(starts_at);
    Ok(Some(Booking {
        order_id,
        reference: reference.unwrap_or_else(|| order_id.simple().to_string()),
        museum: catalogue.museum.name.clone(),
        time_zone: catalogue.museum.time_zone.clone(),
        language,
        name: name.unwrap_or_default(),
        email: email.unwrap_or_default(),
        channel,
        slot_id: parse_slot(&slot)?,
        starts_at,
        ends_at: from_ms(ends_at),
        total: Money::new(total, currency),
        refunded: Money::new(refunded, currency),
        created_at: from_ms(created_at),
        cancellable_until: cancellable_until(starts_at, booking.cancel_deadline_hours),
        tickets,
    }))
}

pub(crate) fn booking(
    ctx: &mut Ctx<'_>,
    token: &str,
    context: &BookingContext,
) -> Outcome<Booking> {
    let Some(order) = order_by_token(ctx, token)? else {
        return Ok(Err(unknown_booking()));
    };
    match load_booking(ctx, order, context)? {
        Some(b) => Ok(Ok(b)),
        None => Ok(Err(unknown_booking())),
    }
}

pub(crate) fn cancel(
    ctx: &mut Ctx<'_>,
    token: &str,
    requested: &[Uuid],
    context: &BookingContext,
) -> Outcome<(u16, serde_json::Value)> {
    let Some(order_id) = order_by_token(ctx, token)? else {
        return Ok(Err(unknown_booking()));
    };
    let row: Option<(String, String, Option<String>, String, i64)> = ctx
        .tx
        .prepare_cached(
            "SELECT o.slot_id, o.lines, o.payment_id, o.currency, s.starts_at
             FROM orders o JOIN slots s ON s.slot_id = o.slot_id WHERE o.order_id = ?1",
        )?
        .query_row(params![Text(&order_id)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((slot, lines, payment_id, currency, starts_at)) = row else {
        return Ok(Err(unknown_booking()));
    };
    let slot = parse_slot(&slot)?;
    let lines: Vec<PricedLine> = serde_json::from_str(&lines).unwrap_or_default();
    let tickets: Vec<TicketFacts> = ticket_rows(ctx, order_id, &lines)?
        .into_iter()
        .map(|t| t.facts)
        .collect();
    let plan = match plan_cancel(
        &tickets,
        requested,
        from_ms(starts_at),
        context.cancel_deadline_hours,
        from_ms(ctx.now_ms),
    ) {
        Ok(plan) => plan,
        Err(e) => return Ok(Err(Refusal::from(e).into())),
    };
    {
        // voided_at is what every gate refuses (online redeem and the
        // voided lists of gate sync); cancelled_at says who voided it.
        let mut void = ctx.tx.prepare_cached(
            "UPDATE tickets SET voided_at = ?2, cancelled_at = ?2 WHERE ticket_id = ?1 AND voided_at IS NULL",
        )?;
        for t in &plan.tickets {
            void.execute(params![Text(&t), ctx.now_ms])?;
        }
    }
    if plan.admissions > 0 {
        // Back on sale at once online; counters see it in the availability
        // and tallies of their next sync. The online tally counts the
        // cancellation as a void, so tallies keep equalling the orders.
        if let Some(row) = ctx.state.slots.get_mut(&slot) {
            row.ledger.unsell_online(plan.admissions)?;
        }
        ctx.state
            .tallies
            .add_void(ONLINE_ACTOR, slot, u64::from(plan.admissions));
        ctx.state.unsaved_slots.insert(slot);
        ctx.state.dirty_slots.insert(slot);
    }
    ctx.tx
        .prepare_cached("UPDATE orders SET refunded = refunded + ?2 WHERE order_id = ?1")?
        .execute(params![Text(&order_id), plan.refund])?;
    let booking_link = link(context, token);
    if let Some(payment_id) = payment_id {
        let currency = Currency::new(&currency).map_err(bookkeeping)?;
        queue_refund(
            ctx,
            &payment_id,
            Some(order_id),
            Money::new(plan.refund, currency),
            RefundReason::Cancelled.code(),
            Some(&booking_link),
        )?;
    }
    metrics::counter!("tessera_tickets_cancelled_total").increment(plan.tickets.len() as u64);
    ctx.state
        .device_notes
        .topic(tessera_core::api::events::DeviceTopic::Voided);
    let Some(b) = load_booking(ctx, order_id, context)? else {
        return Ok(Err(unknown_booking()));
    };
    queue_mail(ctx, "tickets_cancelled", &b, &booking_link)?;
    Ok(Ok((200, json!(b))))
}

pub(crate) fn resend(ctx: &mut Ctx<'_>, token: &str, context: &BookingContext) -> Outcome<()> {
    let Some(order_id) = order_by_token(ctx, token)? else {
        return Ok(Err(unknown_booking()));
    };
    let recent: i64 = ctx
        .tx
        .prepare_cached(
            "SELECT COUNT(*) FROM mail_outbox WHERE order_id = ?1 AND kind = 'resend' AND created_at > ?2",
        )?
        .query_row(
            params![Text(&order_id), resend_window_start(ctx.now_ms)],
            |r| r.get(0),
        )?;
    if let Err(refusal) = may_resend(u32::try_from(recent).unwrap_or(u32::MAX)) {
        return Ok(Err(Refusal::from(refusal).into()));
    }
    let Some(b) = load_booking(ctx, order_id, context)? else {
        return Ok(Err(unknown_booking()));
    };
    queue_mail(ctx, "resend", &b, &link(context, token))?;
    Ok(Ok(()))
}

pub(crate) fn demo_payment(
    ctx: &mut Ctx<'_>,
    payment_id: &str,
) -> Outcome<Option<crate::store::DemoPayment>> {
    let row: Option<(String, String, i64, String, String, String, String)> = ctx
        .tx
        .prepare_cached(
            "SELECT p.checkout_id, p.hold_id, p.amount, p.currency, p.status, p.language, h.slot_id
             FROM payments p JOIN holds h ON h.hold_id = p.hold_id
             WHERE p.payment_id = ?1 AND p.provider = 'demo'",
        )?
        .query_row(params![payment_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .optional()?;
    let Some((checkout_id, hold_id, amount, currency, status, language, slot)) = row else {
        return Ok(Ok(None));
    };
    let currency = Currency::new(&currency).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
    let slot = parse_slot(&slot)?;
    Ok(Ok(Some(crate::store::DemoPayment {
        payment_id: payment_id.to_string(),
        checkout_id,
        hold_id: HoldId(parse_uuid(&hold_id)?),
        amount: Money::new(amount, currency),
        status,
        language: Language::from_stored(&language),
        museum: ctx.state.catalogue.museum.name.clone(),
        entry: format!("{} {}", slot.date, slot.hhmm()),
    })))
}
