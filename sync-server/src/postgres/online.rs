//! The online path's jobs. Holds and confirmations are prepared by the
//! request's task (ids, expiry, the answer's body, the tickets signed) and
//! reach the writer as ONE call each of a database function (migration V2)
//! that claims the Idempotency-Key, decides and writes; the writer pipelines
//! a batch's calls (see `writer`). Capacity is decided by PostgreSQL: a hold
//! is a conditional UPDATE of its slot row that only matches while the
//! places are free, so no process reads a count and writes it back. Every
//! job may be run again if its batch loses a conflict: nothing in a job
//! depends on what an earlier attempt did.

use std::collections::HashMap;
use std::fmt;

use serde_json::json;
use tessera_core::api::online::{ConfirmRequest, Hold, IssuedTicket, Order};
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::{from_ms, Clock};
use tessera_core::ids::new_id;
use tessera_core::inventory::hold_expires_at;
use tessera_core::money::Money;
use tessera_core::pricing::{PricedCart, PricedLine};
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::{CodeError, TicketClaims, TicketSigner};
use tokio_postgres::{Statement, Transaction};
use uuid::Uuid;

use super::cache::{slot_from_row, CachedSlot, SLOT_COLUMNS};
use super::writer::Done;
use crate::store::{Answer, Idem, Refusal, StoreError};

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
    /// How long a waiting-list offer keeps its places.
    pub offer_ms: i64,
    /// The shop's address for emailed links (offers), known once the
    /// server listens (`PgStore::set_public_url`).
    pub public_url: std::sync::RwLock<String>,
}

pub enum Job {
    CreateHold(Box<HoldJob>),
    ConfirmHold(Box<ConfirmJob>),
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
            Job::CreateHold(_) => "create_hold",
            Job::ConfirmHold(_) => "confirm_hold",
            Job::CancelHold { .. } => "cancel_hold",
            Job::Sweep => "sweep",
            Job::Ping => "ping",
        };
        f.write_str(kind)
    }
}

impl Job {
    /// A job the batch decides (`batch`); the rest run one after another,
    /// each under its own savepoint.
    pub fn is_one_call(&self) -> bool {
        matches!(self, Job::CreateHold(_) | Job::ConfirmHold(_))
    }

    /// The hashed Idempotency-Key the job claims, if any.
    pub fn key_hash(&self) -> Option<&[u8]> {
        match self {
            Job::CreateHold(h) => Some(&h.key.hash),
            Job::ConfirmHold(c) => Some(&c.key.hash),
            _ => None,
        }
    }
}

pub enum Reply {
    Answer(Answer),
    Done,
    Swept(u64),
}

/// Why a job could not run to a decision.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{}", super::schema::loggable(.0))]
    Pg(#[from] tokio_postgres::Error),
    /// Something stored is not what this code wrote (a hand-edited row?).
    #[error("{0}")]
    Bookkeeping(String),
}

type PgResult<T> = Result<T, JobError>;

/// The key a job claims, hashed as it is stored.
pub struct Key {
    pub hash: Vec<u8>,
    pub request: Vec<u8>,
}

impl Key {
    fn of(idem: &Idem) -> Key {
        Key {
            hash: crate::secrets::hash(&idem.key),
            request: idem.request_hash.clone(),
        }
    }
}

/// A checkout hold, ready for the writer's batch.
pub struct HoldJob {
    pub key: Key,
    pub now_ms: i64,
    pub slot: SlotId,
    pub admissions: i32,
    pub hold_id: Uuid,
    pub expires_ms: i64,
    pub lines: serde_json::Value,
    pub total: i64,
    pub currency: String,
    /// The 201 answer, stored with the key in the same call.
    pub body: serde_json::Value,
}

pub fn prepare_hold(
    env: &Env,
    idem: &Idem,
    slot_id: SlotId,
    cart: &PricedCart,
) -> Result<HoldJob, StoreError> {
    let admissions = i32::try_from(cart.admissions)
        .map_err(|_| Refusal::BadRequest("too many admissions in one hold".into()))?;
    let now_ms = env.clock.now_ms();
    let hold_id = new_id();
    let expires_ms = hold_expires_at(now_ms, env.hold_ttl_ms);
    let hold = Hold {
        hold_id,
        slot_id,
        expires_at: from_ms(expires_ms),
        total: cart.total,
        admissions: cart.admissions,
        lines: cart.lines.clone(),
    };
    let lines =
        serde_json::to_value(&cart.lines).map_err(|e| StoreError::Storage(e.to_string()))?;
    Ok(HoldJob {
        key: Key::of(idem),
        now_ms,
        slot: slot_id,
        admissions,
        hold_id,
        expires_ms,
        lines,
        total: cart.total.amount,
        currency: cart.total.currency.as_str().to_string(),
        body: json!(hold),
    })
}

/// A hold as stored, read before its confirmation reaches the writer so the
/// tickets are signed in the request's task, not in the writer.
pub struct StoredHold {
    pub slot_id: String,
    pub admissions: i32,
    pub lines: serde_json::Value,
    pub total: i64,
    pub window_minutes: i32,
}

pub const STORED_HOLD: &str = "SELECT h.slot_id, h.admissions, h.lines, h.total, s.window_minutes
     FROM holds h JOIN slots s ON s.slot_id = h.slot_id WHERE h.hold_id = $1";

impl StoredHold {
    pub fn from_row(row: &tokio_postgres::Row) -> StoredHold {
        StoredHold {
            slot_id: row.get(0),
            admissions: row.get(1),
            lines: row.get(2),
            total: row.get(3),
            window_minutes: row.get(4),
        }
    }
}

/// A confirmation, ready for the writer's batch: the order's id and
/// answer, and its tickets signed, one column per field.
pub struct ConfirmJob {
    pub key: Key,
    pub now_ms: i64,
    pub hold_id: Uuid,
    /// What the tickets were signed for; empty when the hold was not found.
    pub slot: String,
    pub admissions: i32,
    pub order_id: Uuid,
    pub payment_reference: String,
    pub email: Option<String>,
    pub channel: String,
    pub reference: String,
    pub body: serde_json::Value,
    pub tickets: TicketColumns,
    pub key_id: i32,
}

#[derive(Default)]
pub struct TicketColumns {
    pub ids: Vec<Uuid>,
    pub products: Vec<String>,
    pub admits: Vec<i32>,
    pub codes: Vec<String>,
    pub prices: Vec<i64>,
    pub vat_bp: Vec<i32>,
}

pub struct ConfirmInput<'a> {
    pub idem: &'a Idem,
    pub hold_id: Uuid,
    pub request: &'a ConfirmRequest,
    pub channel: String,
    /// The hold as read just before; `None` if it was not found (the call
    /// still runs, to answer by the key's first use or say why not).
    pub stored: Option<StoredHold>,
}

pub fn prepare_confirm(env: &Env, input: ConfirmInput<'_>) -> Result<ConfirmJob, StoreError> {
    let now_ms = env.clock.now_ms();
    let order_id = new_id();
    let currency = env.catalogue.museum.currency;
    let mut job = ConfirmJob {
        key: Key::of(input.idem),
        now_ms,
        hold_id: input.hold_id,
        slot: String::new(),
        admissions: 0,
        order_id,
        payment_reference: input.request.payment_reference.clone(),
        email: input.request.email.clone(),
        channel: input.channel,
        reference: crate::secrets::new_reference(),
        body: serde_json::Value::Null,
        tickets: TicketColumns::default(),
        key_id: i32::try_from(env.signer.key_id).unwrap_or(i32::MAX),
    };
    let Some(stored) = input.stored else {
        return Ok(job);
    };
    let bad = |what: String| StoreError::Storage(format!("hold {}: {what}", input.hold_id));
    let slot_id: SlotId = stored
        .slot_id
        .parse()
        .map_err(|_| bad("its slot id does not parse".into()))?;
    let window_minutes = u16::try_from(stored.window_minutes)
        .map_err(|_| bad("its slot's window is out of range".into()))?;
    let lines: Vec<PricedLine> =
        serde_json::from_value(stored.lines).map_err(|e| bad(format!("unreadable lines: {e}")))?;
    // A hold with no lines keeps places for a waiting-list offer: only the
    // offer's link turns it into a checkout (`waitlist::take_offer`).
    if lines.is_empty() {
        return Err(Refusal::UnknownHold(input.hold_id.to_string()).into());
    }
    let tickets = issue_tickets(&env.signer, slot_id, window_minutes, &lines)
        .map_err(|e| StoreError::Storage(e.to_string()))?;
    for (t, price, vat_bp) in &tickets {
        job.tickets.ids.push(t.ticket_id);
        job.tickets.products.push(t.product_id.clone());
        job.tickets.admits.push(i32::from(t.admits));
        job.tickets.codes.push(t.code.clone());
        job.tickets.prices.push(*price);
        job.tickets
            .vat_bp
            .push(i32::try_from(*vat_bp).unwrap_or(i32::MAX));
    }
    let order = Order {
        order_id,
        hold_id: input.hold_id,
        slot_id,
        total: Money::new(stored.total, currency),
        payment_reference: input.request.payment_reference.clone(),
        created_at: from_ms(now_ms),
        tickets: tickets.into_iter().map(|(t, _, _)| t).collect(),
    };
    job.slot = stored.slot_id;
    job.admissions = stored.admissions;
    job.body = json!(order);
    Ok(job)
}

/// One signed ticket per unit of every line, with its price and VAT rate,
/// signed by the server's key with core's ticket code.
pub(super) fn issue_tickets(
    signer: &TicketSigner,
    slot: SlotId,
    window_minutes: u16,
    lines: &[PricedLine],
) -> Result<Vec<(IssuedTicket, i64, u32)>, CodeError> {
    let mut tickets = Vec::new();
    for line in lines {
        for _ in 0..line.quantity {
            let claims = TicketClaims {
                key_id: signer.key_id,
                ticket_id: new_id(),
                slot,
                window_minutes,
                admits: line.admits_each,
                product_id: line.product_id.clone(),
            };
            let code = signer.sign(&claims)?;
            tickets.push((
                IssuedTicket {
                    ticket_id: claims.ticket_id,
                    product_id: claims.product_id,
                    slot_id: slot,
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

/// The writer's statements, prepared once per connection (a new
/// connection starts with none).
#[derive(Default)]
pub struct Statements {
    /// The batch's statements (`batch`), prepared on first use: parsing and
    /// planning each once per connection, not once per batch.
    cached: std::sync::Mutex<std::collections::HashMap<&'static str, Statement>>,
}

impl Statements {
    /// `sql` prepared on this connection (once).
    pub async fn get(
        &self,
        tx: &Transaction<'_>,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        let have = self
            .cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned();
        if let Some(statement) = have {
            return Ok(statement);
        }
        let statement = tx.prepare(sql).await?;
        self.cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sql, statement.clone());
        Ok(statement)
    }
}

/// The jobs the batch does not decide, one after another.
pub async fn run(tx: &Transaction<'_>, env: &Env, job: &Job, now_ms: i64) -> PgResult<Done> {
    match job {
        Job::CancelHold { hold } => cancel_hold(tx, env, *hold, now_ms).await,
        Job::Sweep => sweep(tx, env, now_ms).await,
        Job::Ping => {
            tx.execute("SELECT 1", &[]).await?;
            Ok(Done::keep(Reply::Done, Vec::new()))
        }
        Job::CreateHold(_) | Job::ConfirmHold(_) => Err(JobError::Bookkeeping(
            "holds and confirmations are decided by the batch".into(),
        )),
    }
}

/// Answers worth replaying: the request ran and nothing a retry does can
/// change its answer (the same rule as the SQLite backend's).
pub(super) fn worth_recording(e: &StoreError) -> bool {
    e.is_final_outcome() && !matches!(e, StoreError::Refused(Refusal::SoldOut { .. }))
}

fn slot_row(row: &tokio_postgres::Row) -> PgResult<CachedSlot> {
    // Rows come from our own schema; a slot id that does not parse means a
    // hand-edited database, which this job must not paper over.
    slot_from_row(row).ok_or_else(|| JobError::Bookkeeping("a slot row does not parse".into()))
}

/// Which open holds to close, and as what.
enum Closing {
    /// One hold, at its visitor's request.
    Cancelled(Uuid),
    /// Every hold whose time is up.
    Expired { now_ms: i64 },
}

/// Closes open holds and gives their places back: the holds are marked,
/// then each slot's count is released by core's ledger on the locked row
/// (the caller holds the slot rows, in slot order) and written back.
/// Returns the slots changed and how many holds closed.
///
/// A held count that does not cover a closing hold is a broken invariant of
/// the stored books: the hold is closed all the same and its places stay
/// counted as held (selling less, never more) with an error in the log, so
/// that one bad row cannot fail every sweep after it.
async fn close_holds(
    tx: &Transaction<'_>,
    env: &Env,
    closing: Closing,
) -> PgResult<(Vec<CachedSlot>, u64)> {
    let closed = match closing {
        Closing::Cancelled(hold_id) => {
            tx.query(
                "UPDATE holds SET status = 'cancelled', released_by = $2
                 WHERE hold_id = $1 AND status = 'held' RETURNING hold_id, slot_id, admissions",
                &[&hold_id, &env.process],
            )
            .await?
        }
        Closing::Expired { now_ms } => {
            tx.query(
                "UPDATE holds SET status = 'expired', released_by = $2
                 WHERE status = 'held' AND expires_at <= $1 RETURNING hold_id, slot_id, admissions",
                &[&now_ms, &env.process],
            )
            .await?
        }
    };
    if closed.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let ids: Vec<String> = closed.iter().map(|r| r.get::<_, String>(1)).collect();
    let mut slots: HashMap<String, CachedSlot> = HashMap::new();
    for row in tx
        .query(
            &format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = ANY($1)"),
            &[&ids],
        )
        .await?
    {
        let slot = slot_row(&row)?;
        slots.insert(slot.slot.id.to_string(), slot);
    }
    for row in &closed {
        let (hold_id, slot_id): (Uuid, String) = (row.get(0), row.get(1));
        let admissions = u32::try_from(row.get::<_, i32>(2)).unwrap_or(u32::MAX);
        let released = slots
            .get_mut(&slot_id)
            .map(|s| s.ledger.release_hold(admissions));
        match released {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::error!(%hold_id, slot = %slot_id, error = %e, "a closing hold did not match its slot's held count; left counted");
                metrics::counter!("tessera_bookkeeping_errors_total").increment(1);
            }
            None => {
                tracing::error!(%hold_id, slot = %slot_id, "a closing hold names no slot row");
                metrics::counter!("tessera_bookkeeping_errors_total").increment(1);
            }
        }
    }
    let (mut ids, mut held) = (Vec::new(), Vec::new());
    for (id, slot) in &slots {
        ids.push(id.clone());
        held.push(i32::try_from(slot.ledger.held_online).unwrap_or(i32::MAX));
    }
    let written = tx
        .query(
            &format!(
                "UPDATE slots s SET held_online = v.held, version = s.version + 1
                 FROM unnest($1::text[], $2::integer[]) AS v(id, held)
                 WHERE s.slot_id = v.id RETURNING {}",
                SLOT_COLUMNS
                    .split(", ")
                    .map(|c| format!("s.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &[&ids, &held],
        )
        .await?;
    let written = written.iter().map(slot_row).collect::<PgResult<Vec<_>>>()?;
    Ok((written, closed.len() as u64))
}

async fn cancel_hold(
    tx: &Transaction<'_>,
    env: &Env,
    hold_id: Uuid,
    now_ms: i64,
) -> PgResult<Done> {
    // Its slot's row first, as every batch takes it, then the hold's.
    tx.execute(
        "SELECT 1 FROM slots WHERE slot_id = (SELECT slot_id FROM holds WHERE hold_id = $1) FOR UPDATE",
        &[&hold_id],
    )
    .await?;
    // A waiting-list offer's places are not the caller's to give back.
    let offer: Option<bool> = tx
        .query_opt(
            "SELECT lines = '[]'::jsonb FROM holds WHERE hold_id = $1 AND status = 'held'",
            &[&hold_id],
        )
        .await?
        .map(|r| r.get(0));
    if offer == Some(true) {
        return Ok(Done::discard(Err(Refusal::UnknownHold(
            hold_id.to_string(),
        )
        .into())));
    }
    let (mut slots, closed) = close_holds(tx, env, Closing::Cancelled(hold_id)).await?;
    if closed > 0 {
        metrics::counter!("tessera_holds_cancelled_total").increment(1);
        // The places go to the slot's waiting line before anyone sees them free.
        let ids: Vec<String> = slots.iter().map(|s| s.slot.id.to_string()).collect();
        slots.extend(super::waitlist::offer_contained(tx, env, now_ms, Some(&ids)).await?);
        return Ok(Done::keep(Reply::Done, slots));
    }
    let row = tx
        .query_opt(
            "SELECT h.status, o.order_id
             FROM holds h LEFT JOIN orders o ON o.hold_id = h.hold_id WHERE h.hold_id = $1",
            &[&hold_id],
        )
        .await?;
    let id = hold_id.to_string();
    // Cancelling twice, or cancelling what already expired, is done.
    Ok(
        match row.as_ref().map(|r| r.get::<_, String>(0)).as_deref() {
            None => Done::discard(Err(Refusal::UnknownHold(id).into())),
            Some("confirmed") => Done::discard(Err(Refusal::HoldAlreadyConfirmed {
                hold: id,
                order: row
                    .and_then(|r| r.get::<_, Option<Uuid>>(1))
                    .map(|o| o.to_string())
                    .unwrap_or_default(),
            }
            .into())),
            Some(_) => Done::discard(Ok(Reply::Done)),
        },
    )
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
    // The slot rows first, in slot order, as every batch takes them: those
    // of the holds due and those with a waiting line (their offers are made
    // and closed below, in this transaction, so places the sweep frees are
    // offered before anyone sees them free).
    tx.execute(
        "SELECT 1 FROM slots WHERE slot_id IN (
             SELECT slot_id FROM holds WHERE status = 'held' AND expires_at <= $1
             UNION SELECT slot_id FROM waitlist WHERE state IN ('waiting', 'offered'))
         ORDER BY slot_id FOR UPDATE",
        &[&now_ms],
    )
    .await?;
    let (mut slots, released) = close_holds(tx, env, Closing::Expired { now_ms }).await?;
    if released > 0 {
        metrics::counter!("tessera_holds_expired_total").increment(released);
    }
    slots.extend(super::waitlist::offer_contained(tx, env, now_ms, None).await?);
    Ok(Done::keep(Reply::Swept(released), slots))
}
