//! The online path's jobs, each run by the writer inside a batch under its own
//! savepoint (see `writer`). Capacity is decided by PostgreSQL: a hold is a
//! conditional UPDATE of its slot row that only matches while the places are
//! free, so no process reads a count and writes it back. Every job may be run
//! again if its batch loses a conflict, so ids are drawn inside the job.

use std::fmt;

use serde_json::json;
use tessera_core::api::online::{ConfirmRequest, Hold, IssuedTicket, Order};
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::{from_ms, Clock};
use tessera_core::ids::new_id;
use tessera_core::money::Money;
use tessera_core::pricing::{PricedCart, PricedLine};
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::{CodeError, TicketClaims, TicketSigner};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::cache::{slot_from_row, CachedSlot, SLOT_COLUMNS};
use super::writer::Done;
use crate::error::ServiceError;
use crate::store::{Answer, Idem};

/// Held by the process sweeping expired holds, for the sweep's transaction:
/// the others skip their sweep instead of queueing behind it.
const SWEEP_LOCK: i64 = 0x7465_7373_7377_6570; // "tesssswep"

/// What every job may need besides its own input.
pub struct Env {
    pub clock: Clock,
    pub signer: TicketSigner,
    pub catalogue: std::sync::Arc<Catalogue>,
    pub hold_ttl_ms: i64,
    /// Names this process in what it writes for audits (`released_by`).
    pub process: String,
}

pub enum Job {
    CreateHold {
        idem: Idem,
        slot: SlotId,
        cart: PricedCart,
    },
    ConfirmHold {
        idem: Idem,
        hold: Uuid,
        request: ConfirmRequest,
        channel: String,
    },
    CancelHold {
        hold: Uuid,
    },
    /// Releases every hold whose time is up (one process at a time).
    Sweep,
    Ping,
}

/// Visitors' details (a confirm's email) stay out of logs.
impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Job::CreateHold { .. } => "create_hold",
            Job::ConfirmHold { .. } => "confirm_hold",
            Job::CancelHold { .. } => "cancel_hold",
            Job::Sweep => "sweep",
            Job::Ping => "ping",
        };
        f.write_str(kind)
    }
}

pub enum Reply {
    Answer(Answer),
    Done,
    Swept(u64),
}

/// What a job decided, and the slot rows it changed.
struct Outcome {
    result: Result<(u16, serde_json::Value), ServiceError>,
    slots: Vec<CachedSlot>,
}

impl Outcome {
    fn refused(e: ServiceError) -> Outcome {
        Outcome {
            result: Err(e),
            slots: Vec::new(),
        }
    }
}

/// Why a job could not run to a decision.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Pg(#[from] tokio_postgres::Error),
    /// Something stored is not what this code wrote (a hand-edited row?).
    #[error("{0}")]
    Bookkeeping(String),
}

type PgResult<T> = Result<T, JobError>;

pub async fn run(tx: &Transaction<'_>, env: &Env, job: &Job, now_ms: i64) -> PgResult<Done> {
    match job {
        Job::CreateHold { idem, slot, cart } => {
            if let Some(replayed) = claim_key(tx, idem, now_ms).await? {
                return Ok(replayed);
            }
            let outcome = create_hold(tx, env, *slot, cart, now_ms).await?;
            record(tx, idem, outcome).await
        }
        Job::ConfirmHold {
            idem,
            hold,
            request,
            channel,
        } => {
            if let Some(replayed) = claim_key(tx, idem, now_ms).await? {
                return Ok(replayed);
            }
            let outcome = confirm_hold(tx, env, *hold, request, channel, now_ms).await?;
            record(tx, idem, outcome).await
        }
        Job::CancelHold { hold } => cancel_hold(tx, env, *hold).await,
        Job::Sweep => sweep(tx, env, now_ms).await,
        Job::Ping => {
            tx.execute("SELECT 1", &[]).await?;
            Ok(Done::keep(Reply::Done, Vec::new()))
        }
    }
}

/// Claims an Idempotency-Key for this job, or answers from its first use.
/// The key's row is inserted first: a job in another process holding the
/// same key makes this insert wait for that commit, then replay its answer.
/// A refusal not worth replaying rolls the savepoint back, key row included.
async fn claim_key(tx: &Transaction<'_>, idem: &Idem, now_ms: i64) -> PgResult<Option<Done>> {
    let key = crate::secrets::hash(&idem.key);
    let claimed = tx
        .query_opt(
            "INSERT INTO idempotency (key_hash, request_hash, status, body, created_at)
             VALUES ($1, $2, 0, 'null', $3) ON CONFLICT (key_hash) DO NOTHING RETURNING 1",
            &[&key, &idem.request_hash, &now_ms],
        )
        .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let first = tx
        .query_opt(
            "SELECT request_hash, status, body FROM idempotency WHERE key_hash = $1",
            &[&key],
        )
        .await?;
    let Some(first) = first else {
        // Only a concurrent prune could get here: let the client retry.
        return Ok(Some(Done::discard(Err(ServiceError::Unavailable))));
    };
    if first.get::<_, Vec<u8>>(0) != idem.request_hash {
        return Ok(Some(Done::discard(Err(ServiceError::IdempotencyKeyReused))));
    }
    metrics::counter!("tessera_idempotent_replays_total").increment(1);
    let status = u16::try_from(first.get::<_, i16>(1)).unwrap_or(500);
    Ok(Some(Done::discard(Ok(Reply::Answer(Answer {
        status,
        body: first.get(2),
        replayed: true,
    })))))
}

/// Answers worth replaying: the request ran and nothing a retry does can
/// change its answer (the same rule as the SQLite backend's).
fn worth_recording(e: &ServiceError) -> bool {
    e.is_final_outcome() && !matches!(e, ServiceError::SoldOut { .. })
}

async fn record(tx: &Transaction<'_>, idem: &Idem, outcome: Outcome) -> PgResult<Done> {
    let (status, body) = match outcome.result {
        Ok(answer) => answer,
        Err(e) if worth_recording(&e) => (e.status(), e.body()),
        Err(e) => return Ok(Done::discard(Err(e))),
    };
    tx.execute(
        "UPDATE idempotency SET status = $2, body = $3 WHERE key_hash = $1",
        &[
            &crate::secrets::hash(&idem.key),
            &i16::try_from(status).unwrap_or(500),
            &body,
        ],
    )
    .await?;
    Ok(Done::keep(
        Reply::Answer(Answer {
            status,
            body,
            replayed: false,
        }),
        outcome.slots,
    ))
}

fn slot_row(row: &tokio_postgres::Row) -> PgResult<CachedSlot> {
    // Rows come from our own schema; a slot id that does not parse means a
    // hand-edited database, which this job must not paper over.
    slot_from_row(row).ok_or_else(|| JobError::Bookkeeping("a slot row does not parse".into()))
}

async fn create_hold(
    tx: &Transaction<'_>,
    env: &Env,
    slot_id: SlotId,
    cart: &PricedCart,
    now_ms: i64,
) -> PgResult<Outcome> {
    let n = i32::try_from(cart.admissions).unwrap_or(i32::MAX);
    let id = slot_id.to_string();
    // The decision: the row only changes while the places are free.
    let taken = tx
        .query_opt(
            &format!(
                "UPDATE slots SET held_online = held_online + $2::integer, version = version + 1
                 WHERE slot_id = $1 AND ends_at > $3
                   AND sold_online::bigint + held_online + leased + over_capacity + $2::integer <= capacity
                 RETURNING {SLOT_COLUMNS}"
            ),
            &[&id, &n, &now_ms],
        )
        .await?;
    let Some(taken) = taken else {
        return Ok(Outcome::refused(
            why_not_held(tx, env, slot_id, cart.admissions, now_ms).await?,
        ));
    };
    let slot = slot_row(&taken)?;
    let hold_id = new_id();
    let expires_ms = now_ms + env.hold_ttl_ms;
    let lines = match serde_json::to_value(&cart.lines) {
        Ok(v) => v,
        Err(e) => return Ok(Outcome::refused(ServiceError::Storage(e.to_string()))),
    };
    tx.execute(
        "INSERT INTO holds (hold_id, slot_id, admissions, lines, total, currency, created_at, expires_at, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'held')",
        &[
            &hold_id,
            &id,
            &n,
            &lines,
            &cart.total.amount,
            &cart.total.currency.as_str(),
            &now_ms,
            &expires_ms,
        ],
    )
    .await?;
    metrics::counter!("tessera_holds_created_total").increment(1);
    let hold = Hold {
        hold_id,
        slot_id,
        expires_at: from_ms(expires_ms),
        total: cart.total,
        admissions: cart.admissions,
        lines: cart.lines.clone(),
    };
    Ok(Outcome {
        result: Ok((201, json!(hold))),
        slots: vec![slot],
    })
}

/// Why the conditional update matched no row.
async fn why_not_held(
    tx: &Transaction<'_>,
    env: &Env,
    slot_id: SlotId,
    requested: u32,
    now_ms: i64,
) -> PgResult<ServiceError> {
    let row = tx
        .query_opt(
            &format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = $1"),
            &[&slot_id.to_string()],
        )
        .await?;
    let Some(row) = row else {
        if env.catalogue.is_closed(slot_id.date) {
            return Ok(ServiceError::MuseumClosed(slot_id.date.to_string()));
        }
        return Ok(ServiceError::UnknownSlot(slot_id.to_string()));
    };
    let slot = slot_row(&row)?;
    if now_ms >= slot.slot.ends_at.as_millisecond() {
        return Ok(ServiceError::SlotPast(slot_id.to_string()));
    }
    metrics::counter!("tessera_sold_out_total").increment(1);
    Ok(ServiceError::SoldOut {
        requested,
        available: slot.ledger.available(),
    })
}

async fn confirm_hold(
    tx: &Transaction<'_>,
    env: &Env,
    hold_id: Uuid,
    request: &ConfirmRequest,
    channel: &str,
    now_ms: i64,
) -> PgResult<Outcome> {
    // Only an open, unexpired hold turns into an order; a second process
    // confirming the same hold waits for this row and then finds it taken.
    let hold = tx
        .query_opt(
            "UPDATE holds SET status = 'confirmed'
             WHERE hold_id = $1 AND status = 'held' AND expires_at > $2
             RETURNING slot_id, admissions, lines, total",
            &[&hold_id, &now_ms],
        )
        .await?;
    let Some(hold) = hold else {
        return closed_hold(tx, env, hold_id, true).await;
    };
    let slot_id: String = hold.get(0);
    let admissions: i32 = hold.get(1);
    let total: i64 = hold.get(3);
    let lines: Vec<PricedLine> = match serde_json::from_value(hold.get(2)) {
        Ok(lines) => lines,
        Err(e) => {
            return Ok(Outcome::refused(ServiceError::Storage(format!(
                "hold {hold_id} has unreadable lines: {e}"
            ))))
        }
    };
    let moved = tx
        .query_one(
            &format!(
                "UPDATE slots SET held_online = held_online - $2, sold_online = sold_online + $2,
                                  version = version + 1
                 WHERE slot_id = $1 RETURNING {SLOT_COLUMNS}"
            ),
            &[&slot_id, &admissions],
        )
        .await?;
    let slot = slot_row(&moved)?;
    let tickets = match issue_tickets(&env.signer, &slot, &lines) {
        Ok(t) => t,
        Err(e) => return Ok(Outcome::refused(ServiceError::Storage(e.to_string()))),
    };
    let order_id = new_id();
    let currency = env.catalogue.museum.currency;
    let reference = crate::secrets::new_reference();
    tx.execute(
        "INSERT INTO orders (order_id, hold_id, slot_id, admissions, total, currency, lines,
                             payment_reference, email, channel, reference, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &order_id,
            &hold_id,
            &slot_id,
            &admissions,
            &total,
            &currency.as_str(),
            &hold.get::<_, serde_json::Value>(2),
            &request.payment_reference,
            &request.email,
            &channel,
            &reference,
            &now_ms,
        ],
    )
    .await?;
    let insert = tx
        .prepare(
            "INSERT INTO tickets (ticket_id, order_id, slot_id, product_id, admits, code, channel, key_id, price, vat_bp)
             VALUES ($1, $2, $3, $4, $5, $6, 'online', $7, $8, $9)",
        )
        .await?;
    let key_id = i32::try_from(env.signer.key_id).unwrap_or(i32::MAX);
    for (t, price, vat_bp) in &tickets {
        tx.execute(
            &insert,
            &[
                &t.ticket_id,
                &order_id,
                &slot_id,
                &t.product_id,
                &i32::from(t.admits),
                &t.code,
                &key_id,
                price,
                &i32::try_from(*vat_bp).unwrap_or(i32::MAX),
            ],
        )
        .await?;
    }
    metrics::counter!("tessera_orders_total").increment(1);
    metrics::counter!("tessera_admissions_sold_total", "channel" => "online")
        .increment(u64::try_from(admissions).unwrap_or(0));
    let order = Order {
        order_id,
        hold_id,
        slot_id: slot.slot.id,
        total: Money::new(total, currency),
        payment_reference: request.payment_reference.clone(),
        created_at: from_ms(now_ms),
        tickets: tickets.into_iter().map(|(t, _, _)| t).collect(),
    };
    Ok(Outcome {
        result: Ok((201, json!(order))),
        slots: vec![slot],
    })
}

/// One signed ticket per unit of every line, with its price and VAT rate,
/// signed by the server's key with core's ticket code.
fn issue_tickets(
    signer: &TicketSigner,
    slot: &CachedSlot,
    lines: &[PricedLine],
) -> Result<Vec<(IssuedTicket, i64, u32)>, CodeError> {
    let mut tickets = Vec::new();
    for line in lines {
        for _ in 0..line.quantity {
            let claims = TicketClaims {
                key_id: signer.key_id,
                ticket_id: new_id(),
                slot: slot.slot.id,
                window_minutes: slot.slot.window_minutes,
                admits: line.admits_each,
                product_id: line.product_id.clone(),
            };
            let code = signer.sign(&claims)?;
            tickets.push((
                IssuedTicket {
                    ticket_id: claims.ticket_id,
                    product_id: claims.product_id,
                    slot_id: slot.slot.id,
                    admits: claims.admits,
                    code,
                },
                line.unit_price,
                line.vat_bp,
            ));
        }
    }
    Ok(tickets)
}

/// Why a hold is not open; an open hold whose time is up is released here
/// (`release_expired`), once, whichever process gets to it first.
async fn closed_hold(
    tx: &Transaction<'_>,
    env: &Env,
    hold_id: Uuid,
    release_expired: bool,
) -> PgResult<Outcome> {
    let row = tx
        .query_opt(
            "SELECT h.status, h.slot_id, h.admissions, o.order_id
             FROM holds h LEFT JOIN orders o ON o.hold_id = h.hold_id WHERE h.hold_id = $1",
            &[&hold_id],
        )
        .await?;
    let id = hold_id.to_string();
    let Some(row) = row else {
        return Ok(Outcome::refused(ServiceError::UnknownHold(id)));
    };
    let status: String = row.get(0);
    Ok(match status.as_str() {
        "confirmed" => Outcome::refused(ServiceError::HoldAlreadyConfirmed {
            hold: id,
            order: row
                .get::<_, Option<Uuid>>(3)
                .map(|o| o.to_string())
                .unwrap_or_default(),
        }),
        "cancelled" => Outcome::refused(ServiceError::HoldCancelled(id)),
        "held" if release_expired => {
            let slots = release(tx, env, hold_id, "expired").await?;
            Outcome {
                result: Err(ServiceError::HoldExpired(id)),
                slots,
            }
        }
        _ => Outcome::refused(ServiceError::HoldExpired(id)),
    })
}

/// Gives an open hold's places back; nothing if it is no longer open.
async fn release(
    tx: &Transaction<'_>,
    env: &Env,
    hold_id: Uuid,
    status: &str,
) -> PgResult<Vec<CachedSlot>> {
    let hold = tx
        .query_opt(
            "UPDATE holds SET status = $2, released_by = $3
             WHERE hold_id = $1 AND status = 'held' RETURNING slot_id, admissions",
            &[&hold_id, &status, &env.process],
        )
        .await?;
    let Some(hold) = hold else {
        return Ok(Vec::new());
    };
    let row = tx
        .query_one(
            &format!(
                "UPDATE slots SET held_online = held_online - $2, version = version + 1
                 WHERE slot_id = $1 RETURNING {SLOT_COLUMNS}"
            ),
            &[&hold.get::<_, String>(0), &hold.get::<_, i32>(1)],
        )
        .await?;
    Ok(vec![slot_row(&row)?])
}

async fn cancel_hold(tx: &Transaction<'_>, env: &Env, hold_id: Uuid) -> PgResult<Done> {
    let slots = release(tx, env, hold_id, "cancelled").await?;
    if !slots.is_empty() {
        metrics::counter!("tessera_holds_cancelled_total").increment(1);
        return Ok(Done::keep(Reply::Done, slots));
    }
    let outcome = closed_hold(tx, env, hold_id, false).await?;
    Ok(match outcome.result {
        // Cancelling twice, or cancelling what already expired, is done.
        Err(ServiceError::HoldCancelled(_) | ServiceError::HoldExpired(_)) => {
            Done::discard(Ok(Reply::Done))
        }
        Err(other) => Done::discard(Err(other)),
        Ok(_) => Done::discard(Ok(Reply::Done)),
    })
}

/// Releases every open hold whose time is up. One process at a time: the
/// others find the advisory lock taken and skip this round. Correctness does
/// not hang on the lock (a hold is only released while its status is still
/// `held`), it saves the processes from queueing behind each other's sweeps.
async fn sweep(tx: &Transaction<'_>, env: &Env, now_ms: i64) -> PgResult<Done> {
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(Done::discard(Ok(Reply::Swept(0))));
    }
    let rows = tx
        .query(
            &format!(
                "WITH expired AS (
                     UPDATE holds SET status = 'expired', released_by = $2
                     WHERE status = 'held' AND expires_at <= $1
                     RETURNING slot_id, admissions
                 ), per_slot AS (
                     SELECT slot_id, SUM(admissions)::integer AS n, COUNT(*) AS holds
                     FROM expired GROUP BY slot_id
                 )
                 UPDATE slots s SET held_online = s.held_online - p.n, version = s.version + 1
                 FROM per_slot p WHERE s.slot_id = p.slot_id
                 RETURNING {}, p.holds",
                SLOT_COLUMNS
                    .split(", ")
                    .map(|c| format!("s.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[&now_ms, &env.process],
        )
        .await?;
    let mut released = 0u64;
    let mut slots = Vec::with_capacity(rows.len());
    for row in &rows {
        released += u64::try_from(row.get::<_, i64>(10)).unwrap_or(0);
        slots.push(slot_row(row)?);
    }
    if released > 0 {
        metrics::counter!("tessera_holds_expired_total").increment(released);
    }
    Ok(Done::keep(Reply::Swept(released), slots))
}
