//! The waiting list on PostgreSQL: joining a sold-out slot's line, offering
//! returned places to the first in line whose party fits (the rules are
//! `tessera_core::waitlist`), and turning an offer into a checkout hold. The
//! same behaviour as the SQLite backend's `sqlite/waitlist.rs`.
//!
//! An offer's places are a hold with no lines: they count against capacity
//! like any checkout and expire with the hold sweep. Offers are made in the
//! transaction that frees the places, with the slot row still locked, so
//! nobody sees them free first:
//! - the expired-hold sweep (one process at a time, under its advisory
//!   lock, every second) locks the slots of the holds due and of every
//!   waiting line, then closes lapsed offers and offers what is free on
//!   every line ([`offer_contained`] with no slot list). This round is also
//!   the backstop for places freed where no offer is made at once: a
//!   confirmation that finds its hold expired, a capacity raised by the
//!   operator's command, a counter's returned lease — within a second;
//! - a cancelled hold (`online::cancel_hold`), a cancelled booking, a failed
//!   payment and an offer taken for fewer places offer the slot they freed
//!   before they commit ([`offer_places`]).
//!
//! Whoever makes offers has locked the slot rows first: two processes never
//! offer the same places, and the line's entries are only changed with
//! their slot row locked.

use serde_json::json;
use tessera_core::api::online::Hold;
use tessera_core::api::shop::{Language, Offer, OfferState, WaitlistEntry, WaitlistRequest};
use tessera_core::clock::from_ms;
use tessera_core::ids::new_id;
use tessera_core::inventory::hold_expires_at;
use tessera_core::pricing::PricedCart;
use tessera_core::waitlist::{
    check_join, check_take, offer_state, offers, EntryState, OfferFacts, Waiting,
};
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::cache::CachedSlot;
use super::online::{Env, JobError};
use super::outbox::enqueue;
use super::shop::{change_slot, lock_slots, must_change_slot, release_hold, Changes, PgResult};
use crate::secrets;
use crate::store::{JoinBounds, Refusal, StoreError, WaitlistError};

type Outcome = PgResult<Result<(u16, serde_json::Value), StoreError>>;

/// Taken by every join for its transaction: the per-address and per-client
/// bounds are counted and kept across processes without a race. Joins are
/// rare and short.
const JOIN_LOCK: i64 = 0x7465_7373_7761_6974; // "tesswait"

/// The stored hash of a token as a visitor sends it; `None` when the text
/// cannot be a token we made (so it never reaches the database).
pub(super) fn token_hash(token: &str) -> Option<Vec<u8>> {
    secrets::is_link_token(token).then(|| secrets::hash(token))
}

fn bad(what: impl std::fmt::Display) -> JobError {
    JobError::Bookkeeping(what.to_string())
}

fn party(n: i32) -> PgResult<u32> {
    u32::try_from(n).map_err(|_| bad(format!("a party of {n}")))
}

/// 1 for the first in line: entries still waiting or offered, up to `seq`.
async fn position(tx: &Transaction<'_>, slot: &str, seq: i64) -> PgResult<u32> {
    let n: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM waitlist
             WHERE slot_id = $1 AND seq <= $2 AND state IN ('waiting', 'offered')",
            &[&slot, &seq],
        )
        .await?
        .get(0);
    u32::try_from(n).map_err(bad)
}

fn too_many(who: &'static str, max: u32) -> StoreError {
    metrics::counter!("tessera_waitlist_refused_total", "code" => "waitlist_limit").increment(1);
    WaitlistError::TooManyEntries { who, max }.into()
}

/// Joins a slot's line. The same address joining the same slot again gets
/// its place back (200), not a second one. A new entry must leave its
/// address and its client within `bounds`.
pub(super) async fn join(
    tx: &Transaction<'_>,
    env: &Env,
    request: WaitlistRequest,
    bounds: &JoinBounds,
) -> Outcome {
    let now_ms = env.clock.now_ms();
    let slot_id = request.slot_id;
    let slot = slot_id.to_string();
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&JOIN_LOCK])
        .await?;
    let Some(row) = read_slot(tx, &slot).await? else {
        if env.catalogue.is_closed(slot_id.date) {
            return Ok(Err(Refusal::MuseumClosed(slot_id.date.to_string()).into()));
        }
        return Ok(Err(Refusal::UnknownSlot(slot).into()));
    };
    if row.slot.is_over(now_ms) {
        return Ok(Err(Refusal::SlotPast(slot).into()));
    }
    let existing = tx
        .query_opt(
            "SELECT seq, entry_id, party FROM waitlist
             WHERE slot_id = $1 AND lower(email) = lower($2) AND state IN ('waiting', 'offered')",
            &[&slot, &request.email],
        )
        .await?;
    if let Some(r) = existing {
        let entry = WaitlistEntry {
            entry_id: r.get(1),
            slot_id,
            party: party(r.get(2))?,
            position: position(tx, &slot, r.get(0)).await?,
        };
        return Ok(Ok((200, json!(entry))));
    }
    if let Err(refusal) = check_join(request.party, row.ledger.capacity, row.ledger.available()) {
        return Ok(Err(WaitlistError::from(refusal).into()));
    }
    let by_email: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM waitlist
             WHERE lower(email) = lower($1) AND state IN ('waiting', 'offered')",
            &[&request.email],
        )
        .await?
        .get(0);
    if by_email >= i64::from(bounds.per_email) {
        return Ok(Err(too_many("this address", bounds.per_email)));
    }
    let by_client: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM waitlist WHERE client_tag = $1 AND state IN ('waiting', 'offered')",
            &[&bounds.client_tag],
        )
        .await?
        .get(0);
    if by_client >= i64::from(bounds.per_client) {
        return Ok(Err(too_many("this network address", bounds.per_client)));
    }
    let entry_id = new_id();
    let party_i32 =
        i32::try_from(request.party).map_err(|_| bad(format!("a party of {}", request.party)))?;
    let seq: i64 = tx
        .query_one(
            "INSERT INTO waitlist (entry_id, slot_id, email, party, language, created_at, client_tag)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING seq",
            &[
                &entry_id,
                &slot,
                &request.email,
                &party_i32,
                &request.language.code(),
                &now_ms,
                &bounds.client_tag,
            ],
        )
        .await?
        .get(0);
    metrics::counter!("tessera_waitlist_joined_total").increment(1);
    let entry = WaitlistEntry {
        entry_id,
        slot_id,
        party: request.party,
        position: position(tx, &slot, seq).await?,
    };
    Ok(Ok((201, json!(entry))))
}

/// A slot row as committed, without locking it: a join only compares the
/// party with what is free (core's `check_join`).
async fn read_slot(tx: &Transaction<'_>, slot: &str) -> PgResult<Option<CachedSlot>> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {} FROM slots WHERE slot_id = $1",
                super::cache::SLOT_COLUMNS
            ),
            &[&slot],
        )
        .await?;
    row.as_ref()
        .map(|r| super::cache::slot_from_row(r).ok_or_else(|| bad("a slot row does not parse")))
        .transpose()
}

/// The offer behind a token, as its link shows it (a read, no lock).
pub(super) async fn read_offer(
    client: &impl GenericClient,
    hash: &[u8],
    now_ms: i64,
) -> PgResult<Option<Offer>> {
    let Some(r) = client
        .query_opt(
            "SELECT slot_id, party, email, language, state, offer_expires_at
             FROM waitlist WHERE offer_token_hash = $1",
            &[&hash],
        )
        .await?
    else {
        return Ok(None);
    };
    let expires_ms: Option<i64> = r.get(5);
    let state = offer_state(
        EntryState::from_stored(&r.get::<_, String>(4)),
        expires_ms,
        now_ms,
    );
    Ok(Some(Offer {
        slot_id: r
            .get::<_, String>(0)
            .parse()
            .map_err(|e: tessera_core::slot::SlotError| bad(e))?,
        party: party(r.get(1))?,
        expires_at: from_ms(expires_ms.unwrap_or(0)),
        state,
        language: Language::from_stored(&r.get::<_, String>(3)),
        email: r.get(2),
    }))
}

/// Turns an offer's held places into a normal checkout hold for `cart`, in
/// one transaction with the slot row locked: the offer's hold is released
/// and the cart held in its place, so nobody else can take the places in
/// between. Places the cart leaves go to the next in line.
pub(super) async fn take_offer(
    tx: &Transaction<'_>,
    env: &Env,
    changes: &mut Changes,
    hash: &[u8],
    cart: PricedCart,
) -> Outcome {
    let now_ms = env.clock.now_ms();
    let slot: Option<String> = tx
        .query_opt(
            "SELECT slot_id FROM waitlist WHERE offer_token_hash = $1",
            &[&hash],
        )
        .await?
        .map(|r| r.get(0));
    let Some(slot) = slot else {
        return Ok(Err(WaitlistError::UnknownOffer.into()));
    };
    let mut locked = lock_slots(tx, std::slice::from_ref(&slot)).await?;
    let Some(r) = tx
        .query_opt(
            "SELECT w.seq, w.party, w.state, w.offer_hold_id, w.offer_expires_at,
                    h.status = 'held'
             FROM waitlist w LEFT JOIN holds h ON h.hold_id = w.offer_hold_id
             WHERE w.offer_token_hash = $1 FOR UPDATE OF w",
            &[&hash],
        )
        .await?
    else {
        return Ok(Err(WaitlistError::UnknownOffer.into()));
    };
    let (seq, offered, state): (i64, u32, String) = (r.get(0), party(r.get(1))?, r.get(2));
    let (offer_hold, expires_ms, hold_open): (Option<Uuid>, Option<i64>, Option<bool>) =
        (r.get(3), r.get(4), r.get(5));
    let row = locked
        .get(&slot)
        .ok_or_else(|| bad(format!("slot {slot} was not locked")))?;
    let slot_id = row.slot.id;
    let facts = OfferFacts {
        slot: slot_id,
        state: EntryState::from_stored(&state),
        party: offered,
        expires_ms,
        hold_open: offer_hold.is_some() && hold_open == Some(true),
        slot_ends_ms: Some(row.slot.ends_at.as_millisecond()),
    };
    if let Err(refusal) = check_take(&facts, cart.admissions, now_ms) {
        return Ok(Err(refusal.into()));
    }
    let Some(offer_hold) = offer_hold else {
        return Err(bad("an open offer has no hold"));
    };
    // Past every refusal: from here on a failure rolls the transaction
    // back, never answers 4xx with the offer's places already released.
    release_hold(
        tx,
        changes,
        &mut locked,
        offer_hold,
        "cancelled",
        &env.process,
    )
    .await?;
    let row = locked
        .get_mut(&slot)
        .ok_or_else(|| bad(format!("slot {slot} was not locked")))?;
    let n = cart.admissions;
    if let Err(e) = change_slot(tx, changes, row, |l| l.hold(n)).await? {
        return Err(bad(format!(
            "offered places could not be held for the offer's own checkout: {e}"
        )));
    }
    let hold_id = new_id();
    let expires_ms = hold_expires_at(now_ms, env.hold_ttl_ms);
    tx.execute(
        "INSERT INTO holds (hold_id, slot_id, admissions, lines, total, currency, created_at,
                            expires_at, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'held')",
        &[
            &hold_id,
            &slot,
            &i32::try_from(n).map_err(bad)?,
            &serde_json::to_value(&cart.lines).map_err(bad)?,
            &cart.total.amount,
            &cart.total.currency.as_str(),
            &now_ms,
            &expires_ms,
        ],
    )
    .await?;
    tx.execute(
        "UPDATE waitlist SET state = 'taken', taken_hold_id = $2 WHERE seq = $1",
        &[&seq, &hold_id],
    )
    .await?;
    metrics::counter!("tessera_waitlist_offers_taken_total").increment(1);
    metrics::counter!("tessera_holds_created_total").increment(1);
    tracing::info!(slot = %slot_id, party = offered, "waiting-list offer taken");
    offer_places(tx, env, changes, &[slot], now_ms).await?;
    let hold = Hold {
        hold_id,
        slot_id,
        expires_at: from_ms(expires_ms),
        total: cart.total,
        admissions: cart.admissions,
        lines: cart.lines,
    };
    Ok(Ok((201, json!(hold))))
}

/// Offers what is free in `slots` (whose rows the caller has locked) to
/// their lines, in the caller's transaction, contained (see
/// [`offer_contained`]): a broken offer must not roll back the payment,
/// cancellation or hold release that freed the places.
pub(super) async fn offer_places(
    tx: &Transaction<'_>,
    env: &Env,
    changes: &mut Changes,
    slots: &[String],
    now_ms: i64,
) -> PgResult<()> {
    let rows = offer_contained(tx, env, now_ms, Some(slots)).await?;
    changes.add(rows);
    Ok(())
}

/// An offer round inside one of the writer's jobs (the sweep with `None`:
/// every line, and lapsed offers closed; a cancelled hold with its slot),
/// contained like a job of its own: if it fails for anything but a
/// conflict it is rolled back alone and logged, and the job goes on (a
/// broken offer must not keep expired holds from being released). Returns
/// the slot rows it changed.
pub(super) async fn offer_contained(
    tx: &Transaction<'_>,
    env: &Env,
    now_ms: i64,
    slots: Option<&[String]>,
) -> PgResult<Vec<CachedSlot>> {
    tx.batch_execute("SAVEPOINT offers").await?;
    let mut changes = Changes::default();
    match offer_round(tx, env, &mut changes, now_ms, slots).await {
        Ok(()) => {
            tx.batch_execute("RELEASE SAVEPOINT offers").await?;
            Ok(changes.slots)
        }
        Err(JobError::Pg(e)) if e.is_closed() || is_conflict(&e) => Err(JobError::Pg(e)),
        Err(e) => {
            tracing::error!(error = %e, "making waiting-list offers failed; rolled back alone");
            tx.batch_execute("ROLLBACK TO SAVEPOINT offers").await?;
            Ok(Vec::new())
        }
    }
}

fn is_conflict(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// Closes lapsed offers (all lines only) and offers what is free to the
/// first in line whose party fits. `None`: every slot with a waiting line
/// or a lapsed offer; the caller (the sweep) has locked them all.
async fn offer_round(
    tx: &Transaction<'_>,
    env: &Env,
    changes: &mut Changes,
    now_ms: i64,
    slots: Option<&[String]>,
) -> PgResult<()> {
    let ids: Vec<String> = match slots {
        Some(ids) => ids.to_vec(),
        None => tx
            .query(
                "SELECT slot_id FROM waitlist WHERE state = 'waiting'
                 UNION SELECT slot_id FROM waitlist
                       WHERE state = 'offered' AND offer_expires_at <= $1
                 ORDER BY 1",
                &[&now_ms],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };
    if ids.is_empty() {
        return Ok(());
    }
    // Already locked by the caller: this only reads them, in the same order.
    let mut locked = lock_slots(tx, &ids).await?;
    if slots.is_none() {
        close_lapsed_offers(tx, env, changes, &mut locked, now_ms).await?;
        close_past_lines(tx, now_ms).await?;
    }
    for (id, row) in locked.iter_mut() {
        let free = row.ledger.available();
        let ends_ms = row.slot.ends_at.as_millisecond();
        if free == 0 || ends_ms <= now_ms {
            continue;
        }
        let line: Vec<Waiting<i64>> = tx
            .query(
                "SELECT seq, party FROM waitlist WHERE state = 'waiting' AND slot_id = $1 ORDER BY seq",
                &[id],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Waiting {
                    id: r.get(0),
                    party: party(r.get(1))?,
                })
            })
            .collect::<PgResult<_>>()?;
        for chosen in offers(&line, free) {
            make_offer(tx, env, changes, row, chosen, now_ms).await?;
        }
    }
    Ok(())
}

/// Drops the client tag of ended entries, through the partial index
/// `waitlist_tagged` (V6): the tagged entries only, not the whole list.
pub const DROP_ENDED_TAGS_SQL: &str = "UPDATE waitlist SET client_tag = NULL
 WHERE client_tag IS NOT NULL AND state NOT IN ('waiting', 'offered')";

/// Lines of entry times that are over can never be served: their waiting
/// entries end as removed, and ended entries no longer count against their
/// client, so its tag is dropped.
async fn close_past_lines(tx: &Transaction<'_>, now_ms: i64) -> PgResult<()> {
    tx.execute(
        "UPDATE waitlist SET state = 'removed'
         WHERE state = 'waiting'
           AND slot_id IN (SELECT slot_id FROM slots WHERE ends_at <= $1)",
        &[&now_ms],
    )
    .await?;
    tx.execute(DROP_ENDED_TAGS_SQL, &[]).await?;
    Ok(())
}

/// Offers past their time end as expired, their hold released if the sweep
/// has not already done it; the places are back for the next in line.
async fn close_lapsed_offers(
    tx: &Transaction<'_>,
    env: &Env,
    changes: &mut Changes,
    locked: &mut super::shop::Locked,
    now_ms: i64,
) -> PgResult<()> {
    let due = tx
        .query(
            "UPDATE waitlist SET state = 'expired'
             WHERE state = 'offered' AND offer_expires_at <= $1
             RETURNING offer_hold_id",
            &[&now_ms],
        )
        .await?;
    for r in &due {
        if let Some(hold) = r.get::<_, Option<Uuid>>(0) {
            release_hold(tx, changes, locked, hold, "expired", &env.process).await?;
        }
        metrics::counter!("tessera_waitlist_offers_expired_total").increment(1);
    }
    Ok(())
}

/// Holds `entry`'s places for it and queues the email with its link, in the
/// same transaction: a committed offer always has its mail.
async fn make_offer(
    tx: &Transaction<'_>,
    env: &Env,
    changes: &mut Changes,
    slot: &mut CachedSlot,
    entry: Waiting<i64>,
    now_ms: i64,
) -> PgResult<()> {
    let r = tx
        .query_one(
            "SELECT email, language FROM waitlist WHERE seq = $1",
            &[&entry.id],
        )
        .await?;
    let (email, lang): (String, String) = (r.get(0), r.get(1));
    let n = entry.party;
    must_change_slot(tx, changes, slot, |l| l.hold(n)).await?;
    let expires_ms = tessera_core::waitlist::offer_expires_at(
        now_ms,
        env.offer_ms,
        slot.slot.ends_at.as_millisecond(),
    );
    let hold_id = new_id();
    let slot_text = slot.slot.id.to_string();
    tx.execute(
        "INSERT INTO holds (hold_id, slot_id, admissions, lines, total, currency, created_at,
                            expires_at, status)
         VALUES ($1, $2, $3, '[]'::jsonb, 0, $4, $5, $6, 'held')",
        &[
            &hold_id,
            &slot_text,
            &i32::try_from(n).map_err(bad)?,
            &env.catalogue.museum.currency.as_str(),
            &now_ms,
            &expires_ms,
        ],
    )
    .await?;
    let token = secrets::new_booking_token();
    tx.execute(
        "UPDATE waitlist SET state = 'offered', offer_token_hash = $2, offer_hold_id = $3,
                             offered_at = $4, offer_expires_at = $5
         WHERE seq = $1 AND state = 'waiting'",
        &[
            &entry.id,
            &secrets::hash(&token),
            &hold_id,
            &now_ms,
            &expires_ms,
        ],
    )
    .await?;
    let offer = Offer {
        slot_id: slot.slot.id,
        party: n,
        expires_at: from_ms(expires_ms),
        state: OfferState::Open,
        language: Language::from_stored(&lang),
        email: email.clone(),
    };
    let base = env
        .public_url
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .trim_end_matches('/')
        .to_string();
    let payload = json!({"offer": offer, "link": format!("{base}/offer/{token}")});
    enqueue(tx, "waitlist_offer", &email, &lang, &payload, None, now_ms).await?;
    metrics::counter!("tessera_waitlist_offers_total").increment(1);
    tracing::info!(slot = %slot.slot.id, party = n, "waiting-list offer made");
    Ok(())
}
