//! Online checkout inside the writer: holds, confirmation into an order with
//! signed tickets, cancellation.

use rusqlite::{params, OptionalExtension};
use tessera_core::api::online::{ConfirmRequest, Hold, IssuedTicket, Order};
use tessera_core::ids::new_id;
use tessera_core::inventory::{hold_expires_at, hold_is_open};
use tessera_core::money::Money;
use tessera_core::pricing::PricedCart;
use tessera_core::slot::SlotId;
use tessera_core::tally::ONLINE_ACTOR;
use uuid::Uuid;

use super::idempotency::Body;
use super::presign::{presign, HoldNow, HoldSketch, Presigned};
use super::sql::Text;
use super::state::OpenHold;
use super::writer::{Ctx, Fatal};
use crate::store::{Refusal, StoreError};
use tessera_core::clock::from_ms;

type Outcome = Result<Result<(u16, Body), StoreError>, Fatal>;

/// Cart lines in the text the `holds` and `orders` rows store them in,
/// serialized by the request's task before its job reaches the writer.
pub(crate) struct CartLines(String);

impl CartLines {
    pub fn of(cart: &PricedCart) -> Result<CartLines, StoreError> {
        serde_json::to_string(&cart.lines)
            .map(CartLines)
            .map_err(|e| StoreError::Storage(e.to_string()))
    }
}

pub(crate) fn create_hold(
    ctx: &mut Ctx<'_>,
    slot_id: SlotId,
    cart: PricedCart,
    lines_json: CartLines,
) -> Outcome {
    if let Err(e) = super::older::keep_if_sellable(ctx.state, ctx.tx, slot_id, ctx.now_ms)? {
        return Ok(Err(e));
    }
    let Some(row) = ctx.state.slots.get_mut(&slot_id) else {
        return Ok(Err(Refusal::UnknownSlot(slot_id.to_string()).into()));
    };
    if row.slot.is_over(ctx.now_ms) {
        return Ok(Err(Refusal::SlotPast(slot_id.to_string()).into()));
    }
    if let Err(e) = row.ledger.hold(cart.admissions) {
        metrics::counter!("tessera_sold_out_total").increment(1);
        return Ok(Err(e.into()));
    }
    let window_minutes = row.slot.window_minutes;
    let hold_id = new_id();
    let expires_ms = hold_expires_at(ctx.now_ms, ctx.hold_ttl_ms);
    let lines_json = lines_json.0;
    ctx.tx
        .prepare_cached(
            "INSERT INTO holds (hold_id, slot_id, admissions, lines, total, currency, created_at, expires_at, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'held')",
        )?
        .execute(params![
            Text(&hold_id),
            Text(&slot_id),
            cart.admissions,
            &lines_json,
            cart.total.amount,
            cart.total.currency.as_str(),
            ctx.now_ms,
            expires_ms
        ])?;
    let hold = Hold {
        hold_id,
        slot_id,
        expires_at: from_ms(expires_ms),
        total: cart.total,
        admissions: cart.admissions,
        lines: cart.lines.clone(),
    };
    ctx.state.expiry.insert((expires_ms, hold_id));
    ctx.state.hold_sketches.push((
        hold_id,
        Some(HoldSketch::of(slot_id, window_minutes, &cart.lines)),
    ));
    ctx.state.holds.insert(
        hold_id,
        OpenHold {
            slot: slot_id,
            admissions: cart.admissions,
            expires_ms,
            lines: cart.lines,
            lines_json: Some(lines_json),
            total: cart.total.amount,
        },
    );
    ctx.state.dirty_slots.insert(slot_id);
    metrics::counter!("tessera_holds_created_total").increment(1);
    Ok(Ok((201, Body::Hold(Box::new(hold)))))
}

/// Why a hold that is not open cannot be confirmed or cancelled.
pub(crate) fn closed_hold_error(ctx: &Ctx<'_>, hold_id: Uuid) -> Result<StoreError, Fatal> {
    let row: Option<(String, Option<String>)> = ctx
        .tx
        .prepare_cached(
            "SELECT h.status, o.order_id FROM holds h LEFT JOIN orders o ON o.hold_id = h.hold_id WHERE h.hold_id = ?1",
        )?
        .query_row(params![Text(&hold_id)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let id = hold_id.to_string();
    Ok(match row {
        None => StoreError::from(Refusal::UnknownHold(id)),
        Some((status, order)) => match status.as_str() {
            "confirmed" => StoreError::from(Refusal::HoldAlreadyConfirmed {
                hold: id,
                order: order.unwrap_or_default(),
            }),
            "cancelled" => StoreError::from(Refusal::HoldCancelled(id)),
            _ => StoreError::from(Refusal::HoldExpired(id)),
        },
    })
}

pub(crate) fn release(ctx: &mut Ctx<'_>, hold_id: Uuid, status: &str) -> Result<(), Fatal> {
    if let Some(hold) = ctx.state.holds.remove(&hold_id) {
        ctx.state.hold_closed(hold_id);
        ctx.state.expiry.remove(&(hold.expires_ms, hold_id));
        ctx.tx
            .prepare_cached("UPDATE holds SET status = ?2 WHERE hold_id = ?1")?
            .execute(params![Text(&hold_id), status])?;
        if let Some(row) = ctx.state.slots.get_mut(&hold.slot) {
            row.ledger.release_hold(hold.admissions)?;
        }
        ctx.state.dirty_slots.insert(hold.slot);
    }
    Ok(())
}

/// Who sells an order and what it carries besides its hold.
pub(crate) struct OrderMeta {
    /// `web` for the shop (a verified payment), else the trusted channel's name.
    pub channel: String,
    pub payment_reference: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub language: Option<String>,
    pub payment_id: Option<String>,
    /// SHA-256 of the "my booking" token, for orders that get one.
    pub booking_token_hash: Option<Vec<u8>>,
    pub reference: Option<String>,
}

/// A trusted channel confirms an open hold (its token was checked at the edge).
pub(crate) fn confirm_hold(
    ctx: &mut Ctx<'_>,
    hold_id: Uuid,
    request: ConfirmRequest,
    channel: &str,
    presigned: Option<Presigned>,
) -> Outcome {
    let Some(hold) = take_open_hold(ctx, hold_id)? else {
        return Ok(Err(closed_hold_error(ctx, hold_id)?));
    };
    let hold = match hold {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let meta = OrderMeta {
        channel: channel.to_string(),
        payment_reference: request.payment_reference,
        email: request.email,
        name: None,
        language: None,
        payment_id: None,
        booking_token_hash: None,
        // Readable at the museum's desk, like a web order's.
        reference: Some(crate::secrets::new_reference()),
    };
    let order = issue_order(ctx, hold_id, &hold, meta, presigned)?;
    Ok(Ok((201, Body::Order(Box::new(order)))))
}

/// Takes an open, unexpired hold out of the open set and turns its held
/// places into sold ones. `None`: the hold is not open (ask
/// `closed_hold_error` why); `Some(Err)`: it had just expired (released).
pub(crate) fn take_open_hold(
    ctx: &mut Ctx<'_>,
    hold_id: Uuid,
) -> Result<Option<Result<OpenHold, StoreError>>, Fatal> {
    let Some(hold) = ctx.state.holds.get(&hold_id) else {
        return Ok(None);
    };
    // A hold with no lines keeps places for a waiting-list offer: only the
    // offer's link turns it into a checkout (`waitlist::take_offer`).
    if hold.lines.is_empty() {
        return Ok(Some(Err(Refusal::UnknownHold(hold_id.to_string()).into())));
    }
    if !hold_is_open(hold.expires_ms, ctx.now_ms) {
        release(ctx, hold_id, "expired")?;
        return Ok(Some(Err(Refusal::HoldExpired(hold_id.to_string()).into())));
    }
    let Some(hold) = ctx.state.holds.remove(&hold_id) else {
        return Ok(None);
    };
    ctx.state.hold_closed(hold_id);
    ctx.state.expiry.remove(&(hold.expires_ms, hold_id));
    let Some(row) = ctx.state.slots.get_mut(&hold.slot) else {
        return Err(Fatal::Bookkeeping(format!(
            "hold {hold_id} names a missing slot"
        )));
    };
    row.ledger.confirm_hold(hold.admissions)?;
    Ok(Some(Ok(hold)))
}

/// Writes an order for places already counted as sold in the slot's ledger:
/// its signed tickets (each with its price), the hold marked confirmed, the
/// online tally. The caller has moved the places (`take_open_hold`, or a
/// re-hold of an expired hold's lines). Tickets signed ahead for this very
/// hold are taken as they are; otherwise the writer signs them here.
pub(crate) fn issue_order(
    ctx: &mut Ctx<'_>,
    hold_id: Uuid,
    hold: &OpenHold,
    meta: OrderMeta,
    presigned: Option<Presigned>,
) -> Result<Order, Fatal> {
    let Some(row) = ctx.state.slots.get(&hold.slot) else {
        return Err(Fatal::Bookkeeping(format!(
            "hold {hold_id} names a missing slot"
        )));
    };
    let window_minutes = row.slot.window_minutes;
    let slot_id = hold.slot;
    let order_id = new_id();
    let currency = ctx.state.catalogue.museum.currency;

    let now = HoldNow {
        hold_id,
        slot: slot_id,
        window_minutes,
        key_id: ctx.state.signer.key_id,
        lines: &hold.lines,
    };
    let tickets = match presigned.and_then(|p| p.matching(&now)) {
        Some(tickets) => tickets,
        None => sign_in_writer(ctx, &now)?,
    };
    // One price per ticket, in the tickets' order (line by line, unit by unit).
    let prices: Vec<(i64, u32)> = hold
        .lines
        .iter()
        .flat_map(|l| (0..l.quantity).map(move |_| (l.unit_price, l.vat_bp)))
        .collect();

    let serialized;
    let lines_json = match &hold.lines_json {
        Some(text) => text.as_str(),
        None => {
            serialized = serde_json::to_string(&hold.lines)
                .map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
            serialized.as_str()
        }
    };
    let tx = ctx.tx;
    tx.prepare_cached(
        "INSERT INTO orders (order_id, hold_id, slot_id, admissions, total, currency, lines, payment_reference, email, created_at,
                             name, language, channel, payment_id, booking_token_hash, reference)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        Text(&order_id),
        Text(&hold_id),
        Text(&slot_id),
        hold.admissions,
        hold.total,
        currency.as_str(),
        lines_json,
        meta.payment_reference,
        meta.email,
        ctx.now_ms,
        meta.name,
        meta.language,
        meta.channel,
        meta.payment_id,
        meta.booking_token_hash,
        meta.reference
    ])?;
    tx.prepare_cached("UPDATE holds SET status = 'confirmed' WHERE hold_id = ?1")?
        .execute(params![Text(&hold_id)])?;
    // The slot's sold_online column and its tally are written once per batch
    // (`Writer::flush`), not once per order: on a hot slot that is hundreds
    // of row updates saved per commit.
    ctx.state.unsaved_slots.insert(slot_id);
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO tickets (ticket_id, slot_id, product_id, admits, code, channel, order_id, key_id, price, vat_bp)
             VALUES (?1, ?2, ?3, ?4, ?5, 'online', ?6, ?7, ?8, ?9)",
        )?;
        for (t, (price, vat_bp)) in tickets.iter().zip(&prices) {
            insert.execute(params![
                Text(&t.ticket_id),
                Text(&slot_id),
                t.product_id,
                t.admits,
                t.code,
                Text(&order_id),
                ctx.state.signer.key_id,
                price,
                vat_bp
            ])?;
        }
    }
    ctx.state
        .tallies
        .add_sale(ONLINE_ACTOR, slot_id, u64::from(hold.admissions));
    ctx.state.dirty_slots.insert(slot_id);
    metrics::counter!("tessera_orders_total").increment(1);
    metrics::counter!("tessera_admissions_sold_total", "channel" => "online")
        .increment(u64::from(hold.admissions));

    Ok(Order {
        order_id,
        hold_id,
        slot_id,
        total: Money::new(hold.total, currency),
        payment_reference: meta.payment_reference,
        created_at: from_ms(ctx.now_ms),
        tickets,
    })
}

/// The fallback: no tickets were signed ahead for this hold as it stands.
fn sign_in_writer(ctx: &Ctx<'_>, now: &HoldNow<'_>) -> Result<Vec<IssuedTicket>, Fatal> {
    let sketch = HoldSketch::of(now.slot, now.window_minutes, now.lines);
    let signed = presign(&ctx.state.signer, now.hold_id, &sketch)
        .map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
    metrics::counter!("tessera_tickets_signed_in_writer_total").increment(sketch.tickets());
    signed
        .matching(now)
        .ok_or_else(|| Fatal::Bookkeeping("tickets signed for a hold do not match it".into()))
}

pub(crate) fn cancel_hold(
    ctx: &mut Ctx<'_>,
    hold_id: Uuid,
) -> Result<Result<(), StoreError>, Fatal> {
    if let Some(hold) = ctx.state.holds.get(&hold_id) {
        // A waiting-list offer's places are not the caller's to give back.
        if hold.lines.is_empty() {
            return Ok(Err(Refusal::UnknownHold(hold_id.to_string()).into()));
        }
        release(ctx, hold_id, "cancelled")?;
        metrics::counter!("tessera_holds_cancelled_total").increment(1);
        return Ok(Ok(()));
    }
    match closed_hold_error(ctx, hold_id)? {
        // Cancelling twice, or cancelling what already expired, is done.
        StoreError::Refused(Refusal::HoldCancelled(_))
        | StoreError::Refused(Refusal::HoldExpired(_)) => Ok(Ok(())),
        other => Ok(Err(other)),
    }
}
