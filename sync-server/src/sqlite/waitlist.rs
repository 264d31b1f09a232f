//! The waiting list inside the writer: joining a sold-out slot's line,
//! offering returned places to the first in line whose party fits (the rules
//! are `tessera_core::waitlist`), and turning an offer into a checkout hold.
//!
//! An offer's places are a hold with no lines: they count against capacity
//! like any checkout (the ledger decides, so they are never sold online or
//! leased to a counter at the same time), survive a restart, and expire with
//! the hold sweep. Offers are made in one place for every way places come
//! back — a cancelled or expired hold, a counter's returned or revoked lease,
//! a cancelled ticket, capacity raised (by the admin command, seen when the
//! writer reloads) —: [`offer_returned_places`] runs at the start of every
//! batch, right after expired holds are swept, and again after its jobs, so
//! whatever a batch (or the one-second upkeep tick) frees is offered before
//! the batch commits and before any reader sees it as free.

use std::sync::RwLock;

use rusqlite::{params, OptionalExtension};
use serde_json::json;
use tessera_core::api::shop::{Language, Offer, OfferState, WaitlistEntry, WaitlistRequest};
use tessera_core::clock::from_ms;
use tessera_core::ids::new_id;
use tessera_core::pricing::PricedCart;
use tessera_core::slot::SlotId;
use tessera_core::waitlist::{
    check_join, check_take, offer_state, offers, EntryState, OfferFacts, Waiting,
};
use uuid::Uuid;

use super::online::{create_hold, release};
use super::sql::{parse_uuid, Text};
use super::state::OpenHold;
use super::writer::{Ctx, Fatal};
use crate::secrets;
use crate::store::{JoinBounds, Refusal, StoreError, WaitlistError};

type Outcome = Result<Result<(u16, serde_json::Value), StoreError>, Fatal>;

/// What the writer needs to make offers.
pub(crate) struct OfferSettings {
    /// How long an offer's places stay held.
    pub offer_ms: i64,
    /// The shop's address for the emailed link; known once the server
    /// listens (see `SqliteStore::set_public_url`).
    pub public_url: RwLock<String>,
}

/// An offer's token: 32 random bytes in lower-case base32, the shape of a
/// "my booking" token.
pub(crate) fn new_offer_token() -> String {
    secrets::new_booking_token()
}

/// The stored hash of a token as a visitor sends it; `None` when the text
/// cannot be a token we made (so it never reaches the database).
pub(crate) fn token_hash(token: &str) -> Option<Vec<u8>> {
    secrets::is_link_token(token).then(|| secrets::hash(token))
}

/// 1 for the first in line: entries still waiting or offered, up to `seq`.
fn position(ctx: &Ctx<'_>, slot: SlotId, seq: i64) -> Result<u32, Fatal> {
    Ok(ctx
        .tx
        .prepare_cached(
            "SELECT COUNT(*) FROM waitlist WHERE slot_id = ?1 AND seq <= ?2 AND state IN ('waiting', 'offered')",
        )?
        .query_row(params![Text(&slot), seq], |r| r.get(0))?)
}

/// Joins a slot's line. The same address joining the same slot again gets
/// its place back (200), not a second one. A new entry must leave its
/// address and its client within `bounds`, so one client cannot fill the
/// lines with made-up addresses (each offer holds real places and mails a
/// stranger).
pub(crate) fn join(ctx: &mut Ctx<'_>, request: WaitlistRequest, bounds: &JoinBounds) -> Outcome {
    let slot_id = request.slot_id;
    if let Err(e) = super::older::keep_if_sellable(ctx.state, ctx.tx, slot_id, ctx.now_ms)? {
        return Ok(Err(e));
    }
    let Some(row) = ctx.state.slots.get(&slot_id) else {
        if ctx.state.catalogue.is_closed(slot_id.date) {
            return Ok(Err(Refusal::MuseumClosed(slot_id.date.to_string()).into()));
        }
        return Ok(Err(Refusal::UnknownSlot(slot_id.to_string()).into()));
    };
    if row.slot.is_over(ctx.now_ms) {
        return Ok(Err(Refusal::SlotPast(slot_id.to_string()).into()));
    }
    let existing: Option<(i64, String, u32)> = ctx
        .tx
        .prepare_cached(
            "SELECT seq, entry_id, party FROM waitlist
             WHERE slot_id = ?1 AND lower(email) = lower(?2) AND state IN ('waiting', 'offered')",
        )?
        .query_row(params![Text(&slot_id), request.email], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    if let Some((seq, entry_id, party)) = existing {
        let entry = WaitlistEntry {
            entry_id: parse_uuid(&entry_id)?,
            slot_id,
            party,
            position: position(ctx, slot_id, seq)?,
        };
        return Ok(Ok((200, json!(entry))));
    }
    if let Err(refusal) = check_join(request.party, row.ledger.capacity, row.ledger.available()) {
        return Ok(Err(WaitlistError::from(refusal).into()));
    }
    let by_email: u32 = ctx
        .tx
        .prepare_cached(
            "SELECT COUNT(*) FROM waitlist
             WHERE lower(email) = lower(?1) AND state IN ('waiting', 'offered')",
        )?
        .query_row(params![request.email], |r| r.get(0))?;
    if by_email >= bounds.per_email {
        return Ok(Err(too_many("this address", bounds.per_email)));
    }
    let by_client: u32 = ctx
        .tx
        .prepare_cached(
            "SELECT COUNT(*) FROM waitlist
             WHERE client_tag = ?1 AND state IN ('waiting', 'offered')",
        )?
        .query_row(params![bounds.client_tag], |r| r.get(0))?;
    if by_client >= bounds.per_client {
        return Ok(Err(too_many("this network address", bounds.per_client)));
    }
    let entry_id = new_id();
    ctx.tx
        .prepare_cached(
            "INSERT INTO waitlist (entry_id, slot_id, email, party, language, created_at, client_tag)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            Text(&entry_id),
            Text(&slot_id),
            request.email,
            request.party,
            request.language.code(),
            ctx.now_ms,
            bounds.client_tag
        ])?;
    let seq = ctx.tx.last_insert_rowid();
    metrics::counter!("tessera_waitlist_joined_total").increment(1);
    let entry = WaitlistEntry {
        entry_id,
        slot_id,
        party: request.party,
        position: position(ctx, slot_id, seq)?,
    };
    Ok(Ok((201, json!(entry))))
}

fn too_many(who: &'static str, max: u32) -> StoreError {
    metrics::counter!("tessera_waitlist_refused_total", "code" => "waitlist_limit").increment(1);
    WaitlistError::TooManyEntries { who, max }.into()
}

struct OfferRow {
    seq: i64,
    slot: SlotId,
    party: u32,
    state: String,
    hold: Option<Uuid>,
    expires_ms: Option<i64>,
}

fn offer_row(ctx: &Ctx<'_>, hash: &[u8]) -> Result<Option<OfferRow>, Fatal> {
    Ok(ctx
        .tx
        .prepare_cached(
            "SELECT seq, slot_id, party, state, offer_hold_id, offer_expires_at
             FROM waitlist WHERE offer_token_hash = ?1",
        )?
        .query_row(params![hash], |r| {
            let hold: Option<String> = r.get(4)?;
            Ok(OfferRow {
                seq: r.get(0)?,
                slot: r.get::<_, SlotId>(1)?,
                party: r.get(2)?,
                state: r.get(3)?,
                hold: hold.as_deref().map(parse_uuid).transpose()?,
                expires_ms: r.get(5)?,
            })
        })
        .optional()?)
}

/// The offer behind a token, as its link shows it. Read on a connection of
/// its own: looking at an offer never waits for the writer.
pub(crate) fn read_offer(
    conn: &rusqlite::Connection,
    hash: &[u8],
    now_ms: i64,
) -> rusqlite::Result<Option<Offer>> {
    conn.query_row(
        "SELECT slot_id, party, email, language, state, offer_expires_at
         FROM waitlist WHERE offer_token_hash = ?1",
        params![hash],
        |r| {
            let expires_ms: Option<i64> = r.get(5)?;
            let state = EntryState::from_stored(&r.get::<_, String>(4)?);
            Ok(Offer {
                slot_id: r.get::<_, SlotId>(0)?,
                party: r.get(1)?,
                expires_at: from_ms(expires_ms.unwrap_or(0)),
                state: offer_state(state, expires_ms, now_ms),
                language: Language::from_stored(&r.get::<_, String>(3)?),
                email: r.get(2)?,
            })
        },
    )
    .optional()
}

/// Turns an offer's held places into a normal checkout hold for `cart`, in
/// one job: the offer's hold is released and the cart held in its place, so
/// nobody else can take the places in between. The cart may admit at most
/// the offered party; places it leaves go to the next in line.
pub(crate) fn take_offer(ctx: &mut Ctx<'_>, hash: Vec<u8>, cart: PricedCart) -> Outcome {
    let Some(offer) = offer_row(ctx, &hash)? else {
        return Ok(Err(WaitlistError::UnknownOffer.into()));
    };
    let facts = OfferFacts {
        slot: offer.slot,
        state: EntryState::from_stored(&offer.state),
        party: offer.party,
        expires_ms: offer.expires_ms,
        hold_open: offer.hold.is_some_and(|h| ctx.state.holds.contains_key(&h)),
        // Only live slots are kept; an offer whose hold is open has its slot.
        slot_ends_ms: ctx
            .state
            .slots
            .get(&offer.slot)
            .map(|row| row.slot.ends_at.as_millisecond()),
    };
    if let Err(refusal) = check_take(&facts, cart.admissions, ctx.now_ms) {
        return Ok(Err(refusal.into()));
    }
    let Some(offer_hold) = offer.hold else {
        return Err(Fatal::Bookkeeping("an open offer has no hold".into()));
    };
    // Past every refusal: from here on a failure must roll the job back
    // (Fatal), never answer 4xx with the offer's places already released.
    release(ctx, offer_hold, "cancelled")?;
    let lines = match super::online::CartLines::of(&cart) {
        Ok(lines) => lines,
        Err(e) => return Err(Fatal::Bookkeeping(e.to_string())),
    };
    let answer = match create_hold(ctx, offer.slot, cart, lines)? {
        Ok(answer) => answer,
        Err(e) => {
            return Err(Fatal::Bookkeeping(format!(
                "offered places could not be held for the offer's own checkout: {e}"
            )))
        }
    };
    let answer = (answer.0, answer.1.into_json());
    let hold_id = answer.1["hold_id"].as_str().unwrap_or_default().to_string();
    ctx.tx
        .prepare_cached("UPDATE waitlist SET state = 'taken', taken_hold_id = ?2 WHERE seq = ?1")?
        .execute(params![offer.seq, hold_id])?;
    metrics::counter!("tessera_waitlist_offers_taken_total").increment(1);
    tracing::info!(slot = %offer.slot, party = offer.party, "waiting-list offer taken");
    Ok(Ok(answer))
}

/// Closes offers whose time is up, then offers what is free to the first in
/// line whose party fits. Only slots whose counts changed since the last
/// commit are looked at (`dirty_slots`: every release, lease change and
/// reload marks its slots, and a reload after an admin command marks them
/// all), and only when they have free places, so a batch that returns no
/// places costs one lookup in a small index.
pub(crate) fn offer_returned_places(
    ctx: &mut Ctx<'_>,
    settings: &OfferSettings,
) -> Result<Result<(), StoreError>, Fatal> {
    close_lapsed_offers(ctx)?;
    let candidates: Vec<(SlotId, u32, i64)> = ctx
        .state
        .dirty_slots
        .iter()
        .filter_map(|id| {
            let row = ctx.state.slots.get(id)?;
            let free = row.ledger.available();
            let ends_ms = row.slot.ends_at.as_millisecond();
            (free > 0 && ends_ms > ctx.now_ms).then_some((*id, free, ends_ms))
        })
        .collect();
    for (slot, free, ends_ms) in candidates {
        let line: Vec<Waiting<i64>> = ctx
            .tx
            .prepare_cached(
                "SELECT seq, party FROM waitlist WHERE state = 'waiting' AND slot_id = ?1 ORDER BY seq",
            )?
            .query_map(params![Text(&slot)], |r| {
                Ok(Waiting {
                    id: r.get(0)?,
                    party: r.get(1)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        for chosen in offers(&line, free) {
            make_offer(ctx, settings, slot, chosen, ends_ms)?;
        }
    }
    Ok(Ok(()))
}

/// Lines of entry times that are over can never be served: their waiting
/// entries end as removed (run by the writer's hourly housekeeping). Ended
/// entries no longer count against their client, so its tag is dropped.
///
/// Driven from the waiting entries (`waitlist_line`) with a lookup of each
/// one's slot: as `slot_id IN (SELECT … FROM slots WHERE ends_at <= ?)`,
/// SQLite listed every slot that ever ended at each run, the first one
/// right after start-up included.
pub(crate) fn close_past_lines(ctx: &mut Ctx<'_>) -> Result<(), Fatal> {
    ctx.tx
        .prepare_cached(
            "UPDATE waitlist SET state = 'removed'
             WHERE state = 'waiting'
               AND EXISTS (SELECT 1 FROM slots s WHERE s.slot_id = waitlist.slot_id AND s.ends_at <= ?1)",
        )?
        .execute(params![ctx.now_ms])?;
    ctx.tx
        .prepare_cached(
            "UPDATE waitlist SET client_tag = NULL
             WHERE client_tag IS NOT NULL AND state NOT IN ('waiting', 'offered')",
        )?
        .execute([])?;
    Ok(())
}

/// Offers past their time end as expired, their hold released if the sweep
/// has not already done it; the places are back for the next in line.
fn close_lapsed_offers(ctx: &mut Ctx<'_>) -> Result<(), Fatal> {
    let due: Vec<(i64, Option<String>)> = ctx
        .tx
        .prepare_cached(
            "SELECT seq, offer_hold_id FROM waitlist WHERE state = 'offered' AND offer_expires_at <= ?1",
        )?
        .query_map(params![ctx.now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (seq, hold) in due {
        if let Some(h) = hold.as_deref().and_then(|h| Uuid::parse_str(h).ok()) {
            if ctx.state.holds.contains_key(&h) {
                release(ctx, h, "expired")?;
            }
        }
        ctx.tx
            .prepare_cached("UPDATE waitlist SET state = 'expired' WHERE seq = ?1")?
            .execute(params![seq])?;
        metrics::counter!("tessera_waitlist_offers_expired_total").increment(1);
    }
    Ok(())
}

/// Holds `entry`'s places for it and queues the email with its link, in the
/// same transaction: a committed offer always has its mail.
fn make_offer(
    ctx: &mut Ctx<'_>,
    settings: &OfferSettings,
    slot: SlotId,
    entry: Waiting<i64>,
    slot_ends_ms: i64,
) -> Result<(), Fatal> {
    let (email, lang): (String, String) = ctx
        .tx
        .prepare_cached("SELECT email, language FROM waitlist WHERE seq = ?1")?
        .query_row(params![entry.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let Some(row) = ctx.state.slots.get_mut(&slot) else {
        return Ok(());
    };
    row.ledger.hold(entry.party)?;
    let expires_ms =
        tessera_core::waitlist::offer_expires_at(ctx.now_ms, settings.offer_ms, slot_ends_ms);
    let hold_id = new_id();
    let currency = ctx.state.catalogue.museum.currency;
    ctx.tx
        .prepare_cached(
            "INSERT INTO holds (hold_id, slot_id, admissions, lines, total, currency, created_at, expires_at, status)
             VALUES (?1, ?2, ?3, '[]', 0, ?4, ?5, ?6, 'held')",
        )?
        .execute(params![
            Text(&hold_id),
            Text(&slot),
            entry.party,
            currency.as_str(),
            ctx.now_ms,
            expires_ms
        ])?;
    ctx.state.expiry.insert((expires_ms, hold_id));
    ctx.state.holds.insert(
        hold_id,
        OpenHold {
            slot,
            admissions: entry.party,
            expires_ms,
            lines: Vec::new(),
            lines_json: None,
            total: 0,
        },
    );
    ctx.state.dirty_slots.insert(slot);

    let token = new_offer_token();
    ctx.tx
        .prepare_cached(
            "UPDATE waitlist SET state = 'offered', offer_token_hash = ?2, offer_hold_id = ?3,
                 offered_at = ?4, offer_expires_at = ?5
             WHERE seq = ?1 AND state = 'waiting'",
        )?
        .execute(params![
            entry.id,
            secrets::hash(&token),
            Text(&hold_id),
            ctx.now_ms,
            expires_ms
        ])?;
    let offer = Offer {
        slot_id: slot,
        party: entry.party,
        expires_at: from_ms(expires_ms),
        state: OfferState::Open,
        language: Language::from_stored(&lang),
        email: email.clone(),
    };
    let base = settings
        .public_url
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .trim_end_matches('/')
        .to_string();
    let payload = json!({"offer": offer, "link": format!("{base}/offer/{token}")});
    ctx.tx
        .prepare_cached(
            "INSERT INTO mail_outbox (mail_id, kind, recipient, language, payload, created_at, next_attempt_at)
             VALUES (?1, 'waitlist_offer', ?2, ?3, ?4, ?5, ?5)",
        )?
        .execute(params![
            new_id().to_string(),
            email,
            lang,
            payload.to_string(),
            ctx.now_ms
        ])?;
    metrics::counter!("tessera_waitlist_offers_total").increment(1);
    tracing::info!(%slot, party = entry.party, "waiting-list offer made");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tokens_we_could_have_made_are_looked_up() {
        let token = new_offer_token();
        assert_eq!(token.len(), secrets::LINK_TOKEN_CHARS);
        assert!(token_hash(&token).is_some());
        assert!(token_hash(&token.to_uppercase()).is_none());
        assert!(token_hash(&token[1..]).is_none());
        assert!(token_hash(&format!("{}é", &token[..50])).is_none());
        assert!(token_hash("").is_none());
        assert_ne!(new_offer_token(), token);
    }
}
