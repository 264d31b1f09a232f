//! Paying for a hold on PostgreSQL: the payment record, the provider's
//! verified events applied exactly once across processes, the refund queue,
//! and "my booking" (look-up, cancellation, resend). The same behaviour as
//! the SQLite backend's `sqlite/checkout.rs`; each function runs inside one
//! shop transaction (`shop`).
//!
//! Exactly once, across processes. An event is recorded by
//! `(provider, event_id)` (primary key) before it acts: the same event
//! delivered to two processes at once makes the second insert wait for the
//! first's commit and then find the row, so it changes nothing. The payment
//! row is locked (after its hold's slot row) while an event is applied, and
//! only a pending or failed payment can be paid, so a payment confirms at
//! most one order; `orders.hold_id` is unique besides. A payment whose hold
//! expired or was cancelled meanwhile gets the same lines again if the slot
//! still has room; otherwise its money goes to the refund queue in the same
//! transaction. Never money without tickets, never tickets without money.

use serde_json::json;
use tessera_core::api::shop::{Booking, BookingTicket, CheckoutStatus, Language};
use tessera_core::booking::{
    cancellable_until, may_resend, plan_cancel, resend_window_start, ticket_state,
    unclaimed_tokens_before, TicketFacts,
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
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::online::{issue_tickets, Env, JobError};
use super::outbox::enqueue;
use super::shop::{lock_slots, must_change_slot, release_hold, Changes, Locked, PgResult};
use crate::secrets;
use crate::store::{
    BookingContext, DemoPayment, DueRefund, EventOutcome, PaymentEvent, PaymentRecord,
    RefundAttempt, Refusal, StoreError, Visitor,
};

type Outcome<T> = PgResult<Result<T, StoreError>>;

/// How long refunds handed to a process's refund task are kept from the
/// others: at least this, and a minute per refund claimed, since the task
/// calls the provider for them one after another (30 s each at the most).
const REFUND_LEASE_MS: i64 = 5 * 60 * 1000;
const REFUND_LEASE_PER_CALL_MS: i64 = 60 * 1000;

fn unknown_booking() -> StoreError {
    Refusal::unknown_booking().into()
}

fn bad(what: impl std::fmt::Display) -> JobError {
    JobError::Bookkeeping(what.to_string())
}

fn currency(code: &str) -> PgResult<Currency> {
    Currency::new(code).map_err(bad)
}

fn parse_slot(text: &str) -> PgResult<SlotId> {
    text.parse()
        .map_err(|e: tessera_core::slot::SlotError| bad(e))
}

fn to_u32(n: i32, what: &str) -> PgResult<u32> {
    u32::try_from(n).map_err(|_| bad(format!("{what} {n} is negative")))
}

/// The slot of a hold, read before its row is locked (a hold's slot never
/// changes).
async fn slot_of_hold(tx: &Transaction<'_>, hold_id: Uuid) -> PgResult<Option<String>> {
    Ok(tx
        .query_opt("SELECT slot_id FROM holds WHERE hold_id = $1", &[&hold_id])
        .await?
        .map(|r| r.get(0)))
}

/// Why a hold that is not open cannot be paid for.
async fn closed_hold_error(tx: &Transaction<'_>, hold_id: Uuid) -> PgResult<StoreError> {
    let row = tx
        .query_opt(
            "SELECT h.status, o.order_id FROM holds h LEFT JOIN orders o ON o.hold_id = h.hold_id
             WHERE h.hold_id = $1",
            &[&hold_id],
        )
        .await?;
    let id = hold_id.to_string();
    Ok(match row {
        None => StoreError::from(Refusal::UnknownHold(id)),
        Some(r) => match r.get::<_, String>(0).as_str() {
            "confirmed" => StoreError::from(Refusal::HoldAlreadyConfirmed {
                hold: id,
                order: r
                    .get::<_, Option<Uuid>>(1)
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
            }),
            "cancelled" => StoreError::from(Refusal::HoldCancelled(id)),
            _ => StoreError::from(Refusal::HoldExpired(id)),
        },
    })
}

/// A hold as a payment needs it, its row locked.
struct HoldRow {
    slot: String,
    status: HoldStatus,
    admissions: u32,
    lines: Vec<PricedLine>,
    total: i64,
    expires_ms: i64,
}

async fn lock_hold(tx: &Transaction<'_>, hold_id: Uuid) -> PgResult<Option<HoldRow>> {
    let Some(r) = tx
        .query_opt(
            "SELECT slot_id, status, admissions, lines, total, expires_at FROM holds
             WHERE hold_id = $1 FOR UPDATE",
            &[&hold_id],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(HoldRow {
        slot: r.get(0),
        status: r.get::<_, String>(1).parse().map_err(bad)?,
        admissions: to_u32(r.get(2), "a hold's admissions")?,
        lines: serde_json::from_value(r.get(3)).map_err(bad)?,
        total: r.get(4),
        expires_ms: r.get(5),
    }))
}

pub(super) async fn begin_checkout(
    tx: &Transaction<'_>,
    env: &Env,
    changes: &mut Changes,
    hold_id: Uuid,
    visitor: Visitor,
    provider: String,
) -> Outcome<(u16, serde_json::Value)> {
    let now_ms = env.clock.now_ms();
    let Some(slot) = slot_of_hold(tx, hold_id).await? else {
        return Ok(Err(Refusal::UnknownHold(hold_id.to_string()).into()));
    };
    let mut locked = lock_slots(tx, std::slice::from_ref(&slot)).await?;
    let Some(hold) = lock_hold(tx, hold_id).await? else {
        return Ok(Err(Refusal::UnknownHold(hold_id.to_string()).into()));
    };
    if hold.status != HoldStatus::Held {
        return Ok(Err(closed_hold_error(tx, hold_id).await?));
    }
    // Places a waiting-list offer keeps are paid for only after the offer's
    // link turned them into a hold with tickets chosen.
    if hold.lines.is_empty() {
        return Ok(Err(Refusal::UnknownHold(hold_id.to_string()).into()));
    }
    if !hold_is_open(hold.expires_ms, now_ms) {
        release_hold(tx, changes, &mut locked, hold_id, "expired", &env.process).await?;
        super::waitlist::offer_places(tx, env, changes, &[slot], now_ms).await?;
        return Ok(Err(Refusal::HoldExpired(hold_id.to_string()).into()));
    }
    let slot_id = parse_slot(&hold.slot)?;
    let museum_currency = env.catalogue.museum.currency;
    let payment_id = secrets::new_url_id(secrets::PAYMENT_PREFIX);
    let checkout_id = secrets::new_url_id(secrets::CHECKOUT_PREFIX);
    tx.execute(
        "INSERT INTO payments (payment_id, checkout_id, hold_id, provider, amount, currency, status,
                               visitor_name, email, language, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10)",
        &[
            &payment_id,
            &checkout_id,
            &hold_id,
            &provider,
            &hold.total,
            &museum_currency.as_str(),
            &visitor.name,
            &visitor.email,
            &visitor.language.code(),
            &now_ms,
        ],
    )
    .await?;
    metrics::counter!("tessera_checkouts_total").increment(1);
    let record = PaymentRecord {
        payment_id,
        checkout_id,
        hold_id: HoldId(hold_id),
        slot_id,
        amount: Money::new(hold.total, museum_currency),
        hold_expires_at: from_ms(hold.expires_ms),
        email: visitor.email,
        language: visitor.language,
        provider,
        redirect_url: None,
    };
    Ok(Ok((201, json!(record))))
}

async fn load_record(tx: &Transaction<'_>, payment_id: &str) -> PgResult<Option<PaymentRecord>> {
    let Some(r) = tx
        .query_opt(
            "SELECT p.payment_id, p.checkout_id, p.hold_id, h.slot_id, p.amount, p.currency,
                    h.expires_at, p.email, p.language, p.provider, p.redirect_url
             FROM payments p JOIN holds h ON h.hold_id = p.hold_id WHERE p.payment_id = $1",
            &[&payment_id],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(PaymentRecord {
        payment_id: r.get(0),
        checkout_id: r.get(1),
        hold_id: HoldId(r.get(2)),
        slot_id: parse_slot(&r.get::<_, String>(3))?,
        amount: Money::new(r.get(4), currency(&r.get::<_, String>(5))?),
        hold_expires_at: from_ms(r.get(6)),
        email: r.get(7),
        language: Language::from_stored(&r.get::<_, String>(8)),
        provider: r.get(9),
        redirect_url: r.get(10),
    }))
}

pub(super) async fn payment_started(
    tx: &Transaction<'_>,
    payment_id: &str,
    provider_ref: &str,
    redirect_url: &str,
) -> Outcome<PaymentRecord> {
    // A retry that called the provider again keeps the first session.
    tx.execute(
        "UPDATE payments SET provider_ref = $2, redirect_url = $3
         WHERE payment_id = $1 AND redirect_url IS NULL",
        &[&payment_id, &provider_ref, &redirect_url],
    )
    .await?;
    match load_record(tx, payment_id).await? {
        Some(r) => Ok(Ok(r)),
        None => Err(bad(format!(
            "payment {payment_id} vanished between its two steps"
        ))),
    }
}

pub(super) async fn checkout_status(
    tx: &Transaction<'_>,
    checkout_id: &str,
) -> Outcome<CheckoutStatus> {
    // Locked: two return pages polling at once (on two processes) are
    // handed the token once between them.
    let Some(r) = tx
        .query_opt(
            "SELECT payment_id, status, booking_token FROM payments WHERE checkout_id = $1
             FOR UPDATE",
            &[&checkout_id],
        )
        .await?
    else {
        return Ok(Err(Refusal::unknown_checkout().into()));
    };
    let (payment_id, status, token): (String, String, Option<String>) =
        (r.get(0), r.get(1), r.get(2));
    let status: PaymentStatus = status.parse().map_err(bad)?;
    if token.is_some() {
        // Handed to the return page once; the email carries the link too.
        tx.execute(
            "UPDATE payments SET booking_token = NULL WHERE payment_id = $1",
            &[&payment_id],
        )
        .await?;
    }
    Ok(Ok(payment::checkout_status(checkout_id, status, token)))
}

/// A payment as applying an event needs it, its row locked.
struct PaymentRow {
    payment_id: String,
    hold_id: Uuid,
    status: PaymentStatus,
    amount: Money,
    name: String,
    email: String,
    language: String,
}

async fn lock_payment(
    tx: &Transaction<'_>,
    provider: &str,
    payment_id: &str,
) -> PgResult<Option<PaymentRow>> {
    let Some(r) = tx
        .query_opt(
            "SELECT payment_id, hold_id, status, amount, currency, visitor_name, email, language
             FROM payments WHERE payment_id = $1 AND provider = $2 FOR UPDATE",
            &[&payment_id, &provider],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(PaymentRow {
        payment_id: r.get(0),
        hold_id: r.get(1),
        status: r.get::<_, String>(2).parse().map_err(bad)?,
        amount: Money::new(r.get(3), currency(&r.get::<_, String>(4))?),
        name: r.get(5),
        email: r.get(6),
        language: r.get(7),
    }))
}

/// What core's payment rules are told about a payment; the hold's slot row
/// is locked, so its ledger is the one the writes below change.
fn payment_facts(locked: &Locked, payment: &PaymentRow, hold: &HoldRow) -> PaymentFacts {
    PaymentFacts {
        status: payment.status,
        amount: payment.amount,
        hold: HoldFacts {
            status: hold.status,
            has_lines: !hold.lines.is_empty(),
            admissions: hold.admissions,
            expires_ms: hold.expires_ms,
        },
        slot: locked.get(&hold.slot).map(|row| SlotFacts {
            ledger: row.ledger,
            ends_ms: row.slot.ends_at.as_millisecond(),
        }),
    }
}

pub(super) async fn apply_event(
    tx: &Transaction<'_>,
    env: &Env,
    changes: &mut Changes,
    provider: &str,
    event: &PaymentEvent,
    booking: &BookingContext,
) -> Outcome<EventOutcome> {
    let now_ms = env.clock.now_ms();
    // The hold's slot row first, as every writer takes slot rows first.
    let slot: Option<String> = tx
        .query_opt(
            "SELECT h.slot_id FROM payments p JOIN holds h ON h.hold_id = p.hold_id
             WHERE p.payment_id = $1 AND p.provider = $2",
            &[&event.payment_id, &provider],
        )
        .await?
        .map(|r| r.get(0));
    let mut locked = match &slot {
        Some(s) => lock_slots(tx, std::slice::from_ref(s)).await?,
        None => Locked::new(),
    };
    let fresh = tx
        .execute(
            "INSERT INTO webhook_events (provider, event_id, payment_id, kind, outcome, received_at)
             VALUES ($1, $2, $3, $4, 'applying', $5) ON CONFLICT (provider, event_id) DO NOTHING",
            &[
                &provider,
                &event.event_id,
                &event.payment_id,
                &event.kind.word(),
                &now_ms,
            ],
        )
        .await?;
    let mut loaded = None;
    if fresh > 0 {
        if let Some(payment) = lock_payment(tx, provider, &event.payment_id).await? {
            let Some(hold) = lock_hold(tx, payment.hold_id).await? else {
                return Err(bad(format!(
                    "payment names hold {}, which does not exist",
                    payment.hold_id
                )));
            };
            loaded = Some((payment, hold));
        }
    }
    let facts = loaded.as_ref().map(|(p, h)| payment_facts(&locked, p, h));
    let plan =
        judge_event(event.provider_event(), fresh > 0, facts.as_ref(), now_ms).map_err(bad)?;
    let outcome = match (plan.decision, loaded) {
        (Decision::Replayed, _) => {
            metrics::counter!("tessera_webhook_replays_total").increment(1);
            return Ok(Ok(EventOutcome::Replayed));
        }
        (_, None) => {
            tracing::warn!(%provider, event = %event.event_id, "verified event names no payment of ours; acknowledged");
            EventOutcome::UnknownPayment
        }
        (_, Some((payment, hold))) => {
            let mut step = Step {
                tx,
                env,
                changes,
                locked: &mut locked,
                now_ms,
            };
            let outcome = step.carry_out(plan, payment, hold, event, booking).await?;
            // Places given back go to the waiting line before anyone sees
            // them free.
            let ids: Vec<String> = slot.into_iter().collect();
            super::waitlist::offer_places(tx, env, changes, &ids, now_ms).await?;
            outcome
        }
    };
    tx.execute(
        "UPDATE webhook_events SET outcome = $3 WHERE provider = $1 AND event_id = $2",
        &[&provider, &event.event_id, &outcome.word()],
    )
    .await?;
    Ok(Ok(outcome))
}

fn slot_in<'a>(locked: &'a mut Locked, id: &str) -> PgResult<&'a mut super::cache::CachedSlot> {
    locked
        .get_mut(id)
        .ok_or_else(|| bad(format!("slot {id} was not locked")))
}

/// What applying one event works with.
struct Step<'a, 't> {
    tx: &'a Transaction<'t>,
    env: &'a Env,
    changes: &'a mut Changes,
    locked: &'a mut Locked,
    now_ms: i64,
}

impl Step<'_, '_> {
    async fn set_status(&self, payment_id: &str, status: PaymentStatus) -> PgResult<()> {
        self.tx
            .execute(
                "UPDATE payments SET status = $2 WHERE payment_id = $1",
                &[&payment_id, &status.as_str()],
            )
            .await?;
        Ok(())
    }

    /// Writes what core decided for a payment's event.
    async fn carry_out(
        &mut self,
        plan: EventPlan,
        payment: PaymentRow,
        hold: HoldRow,
        event: &PaymentEvent,
        booking: &BookingContext,
    ) -> PgResult<EventOutcome> {
        let hold_id = payment.hold_id;
        if plan.money_arrived() {
            self.tx
                .execute(
                    "UPDATE payments SET refund_ref = COALESCE($2, refund_ref), paid_at = $3
                     WHERE payment_id = $1",
                    &[&payment.payment_id, &event.refund_ref, &self.now_ms],
                )
                .await?;
        }
        if let Some(end) = plan.release {
            release_hold(
                self.tx,
                self.changes,
                self.locked,
                hold_id,
                end.status().as_str(),
                &self.env.process,
            )
            .await?;
        }
        let n = hold.admissions;
        match plan.decision {
            Decision::Replayed | Decision::UnknownPayment | Decision::AlreadySettled => {
                return Ok(EventOutcome::AlreadySettled)
            }
            Decision::Failed => {
                self.set_status(&payment.payment_id, PaymentStatus::Failed)
                    .await?;
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
                queue_refund(
                    self.tx,
                    &payment.payment_id,
                    None,
                    amount,
                    reason.code(),
                    None,
                    self.now_ms,
                )
                .await?;
                self.refund_notice(&payment, amount, reason.code(), booking)
                    .await?;
                self.set_status(&payment.payment_id, PaymentStatus::Refunding)
                    .await?;
                return Ok(EventOutcome::Refunding {
                    hold_id: HoldId(hold_id),
                });
            }
            Decision::Confirm => {
                let slot = slot_in(self.locked, &hold.slot)?;
                must_change_slot(self.tx, self.changes, slot, |l| l.confirm_hold(n)).await?;
            }
            Decision::Rehold => {
                // Core judged the room on this very ledger (locked).
                let slot = slot_in(self.locked, &hold.slot)?;
                must_change_slot(self.tx, self.changes, slot, |l| {
                    l.hold(n)?;
                    l.confirm_hold(n)
                })
                .await?;
                metrics::counter!("tessera_paid_after_expiry_reheld_total").increment(1);
            }
        }
        let token = secrets::new_booking_token();
        let order_id = self.issue_order(hold_id, &hold, &payment, &token).await?;
        self.tx
            .execute(
                "UPDATE payments SET status = 'paid', order_id = $2, booking_token = $3
                 WHERE payment_id = $1",
                &[&payment.payment_id, &order_id, &token],
            )
            .await?;
        let Some(b) = load_booking(self.tx, self.env, order_id, booking).await? else {
            return Err(bad("an order just written is missing"));
        };
        queue_mail(
            self.tx,
            "booking_confirmed",
            &b,
            &link(booking, &token),
            self.now_ms,
        )
        .await?;
        Ok(EventOutcome::Confirmed {
            hold_id: HoldId(hold_id),
        })
    }

    fn slot(&mut self, id: &str) -> PgResult<&mut super::cache::CachedSlot> {
        slot_in(self.locked, id)
    }
    /// Writes the order and its signed tickets for places already counted
    /// as sold; the hold is marked confirmed.
    async fn issue_order(
        &mut self,
        hold_id: Uuid,
        hold: &HoldRow,
        payment: &PaymentRow,
        token: &str,
    ) -> PgResult<Uuid> {
        let slot = self.slot(&hold.slot)?;
        let (slot_id, window) = (slot.slot.id, slot.slot.window_minutes);
        let tickets = issue_tickets(&self.env.signer, slot_id, window, &hold.lines).map_err(bad)?;
        let order_id = new_id();
        let currency = self.env.catalogue.museum.currency;
        self.tx
            .execute(
                "INSERT INTO orders (order_id, hold_id, slot_id, admissions, total, currency, lines,
                                     payment_reference, email, channel, reference, created_at,
                                     name, language, payment_id, booking_token_hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'web', $10, $11, $12, $13, $14, $15)",
                &[
                    &order_id,
                    &hold_id,
                    &hold.slot,
                    &i32::try_from(hold.admissions).map_err(bad)?,
                    &hold.total,
                    &currency.as_str(),
                    &serde_json::to_value(&hold.lines).map_err(bad)?,
                    &payment.payment_id,
                    &payment.email,
                    &secrets::new_reference(),
                    &self.now_ms,
                    &payment.name,
                    &payment.language,
                    &payment.payment_id,
                    &secrets::hash(token),
                ],
            )
            .await?;
        let key_id = i32::try_from(self.env.signer.key_id).map_err(bad)?;
        let mut cols = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for (t, price, vat_bp) in &tickets {
            cols.0.push(t.ticket_id);
            cols.1.push(t.product_id.clone());
            cols.2.push(i32::from(t.admits));
            cols.3.push(t.code.clone());
            cols.4.push(*price);
            cols.5.push(i32::try_from(*vat_bp).map_err(bad)?);
        }
        self.tx
            .execute(
                "INSERT INTO tickets (ticket_id, order_id, slot_id, product_id, admits, code,
                                      channel, key_id, price, vat_bp)
                 SELECT t.id, $2, $3, t.product, t.admits, t.code, 'online', $4, t.price, t.vat
                 FROM unnest($1::uuid[], $5::text[], $6::integer[], $7::text[], $8::bigint[],
                             $9::integer[]) AS t(id, product, admits, code, price, vat)",
                &[
                    &cols.0, &order_id, &hold.slot, &key_id, &cols.1, &cols.2, &cols.3, &cols.4,
                    &cols.5,
                ],
            )
            .await?;
        self.tx
            .execute(
                "UPDATE holds SET status = 'confirmed' WHERE hold_id = $1",
                &[&hold_id],
            )
            .await?;
        metrics::counter!("tessera_orders_total").increment(1);
        metrics::counter!("tessera_admissions_sold_total", "channel" => "online")
            .increment(u64::from(hold.admissions));
        Ok(order_id)
    }

    /// Tells a visitor whose payment bought nothing that it is coming back:
    /// there is no booking to write to them about.
    async fn refund_notice(
        &self,
        payment: &PaymentRow,
        amount: Money,
        reason: &str,
        booking: &BookingContext,
    ) -> PgResult<()> {
        if amount.amount <= 0 {
            return Ok(());
        }
        let Some(slot) = slot_of_hold(self.tx, payment.hold_id).await? else {
            return Ok(());
        };
        let notice = crate::delivery::email::RefundNotice {
            language: Language::from_stored(&payment.language),
            slot_id: parse_slot(&slot)?,
            amount,
            reason: reason.to_string(),
        };
        let payload = json!({"refund": notice, "link": format!("{}/", booking.public_url)});
        enqueue(
            self.tx,
            "payment_refunded",
            &payment.email,
            &payment.language,
            &payload,
            None,
            self.now_ms,
        )
        .await
    }
}

async fn queue_refund(
    tx: &Transaction<'_>,
    payment_id: &str,
    order_id: Option<Uuid>,
    amount: Money,
    reason: &str,
    link: Option<&str>,
    now_ms: i64,
) -> PgResult<()> {
    if amount.amount <= 0 {
        return Ok(());
    }
    let refund_id = new_id();
    tx.execute(
        "INSERT INTO refunds (refund_id, payment_id, order_id, amount, currency, reason,
                              idempotency_key, status, attempts, next_attempt_at, link, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', 0, $8, $9, $8)",
        &[
            &refund_id,
            &payment_id,
            &order_id,
            &amount.amount,
            &amount.currency.as_str(),
            &reason,
            &format!("tessera-refund-{refund_id}"),
            &now_ms,
            &link,
        ],
    )
    .await?;
    metrics::counter!("tessera_refunds_queued_total", "reason" => reason.to_string()).increment(1);
    Ok(())
}

/// Refunds due, claimed for this process's refund task: taken `FOR UPDATE
/// SKIP LOCKED` and moved a lease ahead in one statement, so two processes'
/// tasks never send the same refund at once. A process that dies before
/// recording the attempt leaves the refund due again when the lease ends;
/// the provider's idempotency key (`tessera-refund-{id}`) makes that second
/// attempt pay nothing twice.
pub(super) async fn due_refunds(
    tx: &Transaction<'_>,
    now_ms: i64,
    limit: usize,
) -> Outcome<Vec<DueRefund>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let lease_ms = REFUND_LEASE_MS.max(limit.saturating_mul(REFUND_LEASE_PER_CALL_MS));
    let rows = tx
        .query(
            "WITH due AS (
                 SELECT refund_id, next_attempt_at AS due_at FROM refunds
                 WHERE status = 'queued' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED
             )
             UPDATE refunds r SET next_attempt_at = $3 FROM due, payments p
             WHERE r.refund_id = due.refund_id AND p.payment_id = r.payment_id
             RETURNING r.refund_id, p.provider, COALESCE(p.refund_ref, p.provider_ref, ''),
                       r.amount, r.currency, r.idempotency_key, r.attempts, due.due_at",
            &[&now_ms, &limit, &now_ms.saturating_add(lease_ms)],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let due_at: i64 = r.get(7);
        out.push((
            due_at,
            DueRefund {
                refund_id: r.get::<_, Uuid>(0).to_string(),
                provider: r.get(1),
                refund_ref: r.get(2),
                amount: Money::new(r.get(3), currency(&r.get::<_, String>(4))?),
                idempotency_key: r.get(5),
                attempts: to_u32(r.get(6), "a refund's attempts")?,
            },
        ));
    }
    out.sort_by_key(|(due, _)| *due);
    Ok(Ok(out.into_iter().map(|(_, r)| r).collect()))
}

pub(super) async fn refund_attempted(
    tx: &Transaction<'_>,
    env: &Env,
    refund_id: Uuid,
    attempt: RefundAttempt,
    booking: &BookingContext,
) -> Outcome<()> {
    let now_ms = env.clock.now_ms();
    match attempt {
        RefundAttempt::Done { provider_refund_id } => {
            let row = tx
                .query_opt(
                    "UPDATE refunds SET status = 'done', provider_refund_id = $2, done_at = $3,
                                        attempts = attempts + 1, last_error = NULL
                     WHERE refund_id = $1 AND status = 'queued'
                     RETURNING payment_id, order_id, link",
                    &[&refund_id, &provider_refund_id, &now_ms],
                )
                .await?;
            let Some(row) = row else {
                return Ok(Ok(()));
            };
            let (payment_id, order_id, link): (String, Option<Uuid>, Option<String>) =
                (row.get(0), row.get(1), row.get(2));
            tx.execute(
                "UPDATE payments SET status = 'refunded' WHERE payment_id = $1 AND status = 'refunding'",
                &[&payment_id],
            )
            .await?;
            metrics::counter!("tessera_refunds_done_total").increment(1);
            if let (Some(order), Some(link)) = (order_id, link) {
                if let Some(b) = load_booking(tx, env, order, booking).await? {
                    queue_mail(tx, "refund_issued", &b, &link, now_ms).await?;
                }
                // The link carries the booking's token: the mail has it now.
                tx.execute(
                    "UPDATE refunds SET link = NULL WHERE refund_id = $1",
                    &[&refund_id],
                )
                .await?;
            }
        }
        RefundAttempt::Retry { error, retry_at_ms } => {
            tx.execute(
                "UPDATE refunds SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
                 WHERE refund_id = $1 AND status = 'queued'",
                &[
                    &refund_id,
                    &tessera_core::limits::prefix(&error, 500),
                    &retry_at_ms,
                ],
            )
            .await?;
        }
        RefundAttempt::Refused { error } => {
            tracing::error!(refund = %refund_id, %error, "the provider refused a refund; it needs a person (see the day report)");
            tx.execute(
                "UPDATE refunds SET status = 'failed', attempts = attempts + 1, last_error = $2
                 WHERE refund_id = $1 AND status = 'queued'",
                &[&refund_id, &tessera_core::limits::prefix(&error, 500)],
            )
            .await?;
        }
    }
    Ok(Ok(()))
}

fn link(booking: &BookingContext, token: &str) -> String {
    format!("{}/booking/{token}", booking.public_url)
}

/// Writes a booking's email to the outbox, in the transaction of what
/// causes it.
async fn queue_mail(
    tx: &Transaction<'_>,
    kind: &str,
    booking: &Booking,
    link: &str,
    now_ms: i64,
) -> PgResult<()> {
    let payload = json!({"booking": booking, "link": link});
    enqueue(
        tx,
        kind,
        &booking.email,
        booking.language.code(),
        &payload,
        Some(booking.order_id),
        now_ms,
    )
    .await
}

async fn order_by_token(tx: &Transaction<'_>, token: &str) -> PgResult<Option<Uuid>> {
    if !secrets::is_link_token(token) {
        return Ok(None);
    }
    Ok(tx
        .query_opt(
            "SELECT order_id FROM orders WHERE booking_token_hash = $1",
            &[&secrets::hash(token)],
        )
        .await?
        .map(|r| r.get(0)))
}

struct TicketRow {
    facts: TicketFacts,
    product_id: String,
    code: String,
}

async fn ticket_rows(
    tx: &Transaction<'_>,
    order_id: Uuid,
    lines: &[PricedLine],
) -> PgResult<Vec<TicketRow>> {
    // Ticket ids are time-ordered (UUIDv7), so this is the order they were
    // issued in.
    let rows = tx
        .query(
            "SELECT t.ticket_id, t.product_id, t.admits, t.code, t.price, t.voided_at IS NOT NULL,
                    EXISTS (SELECT 1 FROM redemptions r WHERE r.ticket_id = t.ticket_id)
             FROM tickets t WHERE t.order_id = $1 ORDER BY t.ticket_id",
            &[&order_id],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let product_id: String = r.get(1);
        let admits = u8::try_from(r.get::<_, i32>(2)).map_err(bad)?;
        // Tickets issued before prices were stored: the order's line says.
        let price = r.get::<_, Option<i64>>(4).unwrap_or_else(|| {
            lines
                .iter()
                .find(|l| l.product_id == product_id)
                .map(|l| l.unit_price)
                .unwrap_or(0)
        });
        let state = ticket_state(r.get(5), r.get(6));
        out.push(TicketRow {
            facts: TicketFacts {
                ticket_id: r.get(0),
                admits,
                price,
                state,
            },
            product_id,
            code: r.get(3),
        });
    }
    Ok(out)
}

/// An order as "my booking" shows it.
async fn load_booking(
    tx: &Transaction<'_>,
    env: &Env,
    order_id: Uuid,
    booking: &BookingContext,
) -> PgResult<Option<Booking>> {
    let Some(r) = tx
        .query_opt(
            "SELECT o.reference, o.language, o.name, o.email, o.channel, o.slot_id, o.total,
                    o.currency, o.refunded, o.created_at, o.lines, s.starts_at, s.ends_at
             FROM orders o JOIN slots s ON s.slot_id = o.slot_id WHERE o.order_id = $1",
            &[&order_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let currency = currency(&r.get::<_, String>(7))?;
    let lines: Vec<PricedLine> = serde_json::from_value(r.get(10)).unwrap_or_default();
    let catalogue = env.catalogue.clone();
    let language = Language::from_stored(r.get::<_, Option<&str>>(1).unwrap_or_default());
    let tickets = ticket_rows(tx, order_id, &lines)
        .await?
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
    let starts_at = from_ms(r.get(11));
    Ok(Some(Booking {
        order_id,
        reference: r
            .get::<_, Option<String>>(0)
            .unwrap_or_else(|| order_id.simple().to_string()),
        museum: catalogue.museum.name.clone(),
        time_zone: catalogue.museum.time_zone.clone(),
        language,
        name: r.get::<_, Option<String>>(2).unwrap_or_default(),
        email: r.get::<_, Option<String>>(3).unwrap_or_default(),
        channel: r.get(4),
        slot_id: parse_slot(&r.get::<_, String>(5))?,
        starts_at,
        ends_at: from_ms(r.get(12)),
        total: Money::new(r.get(6), currency),
        refunded: Money::new(r.get(8), currency),
        created_at: from_ms(r.get(9)),
        cancellable_until: cancellable_until(starts_at, booking.cancel_deadline_hours),
        tickets,
    }))
}

pub(super) async fn booking(
    tx: &Transaction<'_>,
    env: &Env,
    token: &str,
    context: &BookingContext,
) -> Outcome<Booking> {
    let Some(order) = order_by_token(tx, token).await? else {
        return Ok(Err(unknown_booking()));
    };
    Ok(load_booking(tx, env, order, context)
        .await?
        .ok_or_else(unknown_booking))
}

pub(super) async fn cancel(
    tx: &Transaction<'_>,
    env: &Env,
    changes: &mut Changes,
    token: &str,
    requested: &[Uuid],
    context: &BookingContext,
) -> Outcome<(u16, serde_json::Value)> {
    let now_ms = env.clock.now_ms();
    let Some(order_id) = order_by_token(tx, token).await? else {
        return Ok(Err(unknown_booking()));
    };
    let slot: Option<String> = tx
        .query_opt(
            "SELECT slot_id FROM orders WHERE order_id = $1",
            &[&order_id],
        )
        .await?
        .map(|r| r.get(0));
    let Some(slot) = slot else {
        return Ok(Err(unknown_booking()));
    };
    // The slot row, then the order's: two cancellations of one booking on
    // two processes judge its tickets one after the other.
    let mut locked = lock_slots(tx, std::slice::from_ref(&slot)).await?;
    let Some(r) = tx
        .query_opt(
            "SELECT o.lines, o.payment_id, o.currency, s.starts_at
             FROM orders o JOIN slots s ON s.slot_id = o.slot_id WHERE o.order_id = $1
             FOR UPDATE OF o",
            &[&order_id],
        )
        .await?
    else {
        return Ok(Err(unknown_booking()));
    };
    let lines: Vec<PricedLine> = serde_json::from_value(r.get(0)).unwrap_or_default();
    let (payment_id, order_currency, starts_at): (Option<String>, String, i64) =
        (r.get(1), r.get(2), r.get(3));
    let tickets: Vec<TicketFacts> = ticket_rows(tx, order_id, &lines)
        .await?
        .into_iter()
        .map(|t| t.facts)
        .collect();
    let plan = match plan_cancel(
        &tickets,
        requested,
        from_ms(starts_at),
        context.cancel_deadline_hours,
        from_ms(now_ms),
    ) {
        Ok(plan) => plan,
        Err(e) => return Ok(Err(Refusal::from(e).into())),
    };
    // voided_at is what every gate refuses; cancelled_at says who voided it.
    tx.execute(
        "UPDATE tickets SET voided_at = $2, cancelled_at = $2
         WHERE ticket_id = ANY($1) AND voided_at IS NULL",
        &[&plan.tickets, &now_ms],
    )
    .await?;
    // Gates of every process re-fetch their voided lists.
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[
            &super::schema::CHANGES,
            &super::cache::topic_payload(tessera_core::api::events::DeviceTopic::Voided),
        ],
    )
    .await?;
    if plan.admissions > 0 {
        // Back on sale at once, first to the slot's waiting line (below).
        let n = plan.admissions;
        let row = locked
            .get_mut(&slot)
            .ok_or_else(|| bad(format!("slot {slot} was not locked")))?;
        must_change_slot(tx, changes, row, |l| l.unsell_online(n)).await?;
    }
    tx.execute(
        "UPDATE orders SET refunded = refunded + $2 WHERE order_id = $1",
        &[&order_id, &plan.refund],
    )
    .await?;
    let booking_link = link(context, token);
    if let Some(payment_id) = payment_id {
        queue_refund(
            tx,
            &payment_id,
            Some(order_id),
            Money::new(plan.refund, currency(&order_currency)?),
            RefundReason::Cancelled.code(),
            Some(&booking_link),
            now_ms,
        )
        .await?;
    }
    metrics::counter!("tessera_tickets_cancelled_total").increment(plan.tickets.len() as u64);
    super::waitlist::offer_places(tx, env, changes, &[slot], now_ms).await?;
    let Some(b) = load_booking(tx, env, order_id, context).await? else {
        return Ok(Err(unknown_booking()));
    };
    queue_mail(tx, "tickets_cancelled", &b, &booking_link, now_ms).await?;
    Ok(Ok((200, json!(b))))
}

pub(super) async fn resend(
    tx: &Transaction<'_>,
    env: &Env,
    token: &str,
    context: &BookingContext,
) -> Outcome<()> {
    let now_ms = env.clock.now_ms();
    let Some(order_id) = order_by_token(tx, token).await? else {
        return Ok(Err(unknown_booking()));
    };
    // Locked so that resends on two processes count each other.
    tx.execute(
        "SELECT 1 FROM orders WHERE order_id = $1 FOR UPDATE",
        &[&order_id],
    )
    .await?;
    let recent: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM mail_outbox
             WHERE order_id = $1 AND kind = 'resend' AND created_at > $2",
            &[&order_id, &resend_window_start(now_ms)],
        )
        .await?
        .get(0);
    if let Err(refusal) = may_resend(u32::try_from(recent).unwrap_or(u32::MAX)) {
        return Ok(Err(Refusal::from(refusal).into()));
    }
    let Some(b) = load_booking(tx, env, order_id, context).await? else {
        return Ok(Err(unknown_booking()));
    };
    queue_mail(tx, "resend", &b, &link(context, token), now_ms).await?;
    Ok(Ok(()))
}

pub(super) async fn demo_payment(
    tx: &Transaction<'_>,
    env: &Env,
    payment_id: &str,
) -> Outcome<Option<DemoPayment>> {
    let Some(r) = tx
        .query_opt(
            "SELECT p.checkout_id, p.hold_id, p.amount, p.currency, p.status, p.language, h.slot_id
             FROM payments p JOIN holds h ON h.hold_id = p.hold_id
             WHERE p.payment_id = $1 AND p.provider = 'demo'",
            &[&payment_id],
        )
        .await?
    else {
        return Ok(Ok(None));
    };
    let slot = parse_slot(&r.get::<_, String>(6))?;
    Ok(Ok(Some(DemoPayment {
        payment_id: payment_id.to_string(),
        checkout_id: r.get(0),
        hold_id: HoldId(r.get(1)),
        amount: Money::new(r.get(2), currency(&r.get::<_, String>(3))?),
        status: r.get(4),
        language: Language::from_stored(&r.get::<_, String>(5)),
        museum: env.catalogue.museum.name.clone(),
        entry: format!("{} {}", slot.date, slot.hhmm()),
    })))
}

/// Forgets the tokens kept before `$1`, through the partial index
/// `payments_token_kept` (V6): the payments whose token is still kept, not
/// every payment ever made.
pub const FORGET_TOKENS_SQL: &str = "UPDATE payments SET booking_token = NULL
 WHERE booking_token IS NOT NULL AND COALESCE(paid_at, created_at) <= $1";

/// Forgets "my booking" tokens kept in clear for a return page that never
/// polled (the visitor has the link in their email; core's
/// `UNCLAIMED_TOKEN_MS` says how long they are kept).
pub(super) async fn forget_unclaimed_tokens(tx: &Transaction<'_>, now_ms: i64) -> Outcome<()> {
    tx.execute(FORGET_TOKENS_SQL, &[&unclaimed_tokens_before(now_ms)])
        .await?;
    Ok(Ok(()))
}
