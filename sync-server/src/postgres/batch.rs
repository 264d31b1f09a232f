//! A writer's batch of holds and confirmations decided together: a fixed
//! number of statements whatever the batch's size, each one covering every
//! job (`unnest` of arrays).
//!
//! 1. Claim every job's Idempotency-Key in one INSERT … ON CONFLICT DO
//!    NOTHING (a key another transaction holds makes it wait for that
//!    commit); keys already used answer from their first use.
//! 2. Lock the batch's slot rows, in slot order so that two processes'
//!    batches queue instead of deadlocking (`SELECT … FOR UPDATE`); the
//!    sweep and cancellations take slot rows first too, in transactions of
//!    their own (`writer`).
//! 3. Turn the confirmed holds into orders' places in one conditional
//!    UPDATE (only open, unexpired holds match), release the expired ones
//!    the batch names, and learn why the others are refused.
//! 4. Decide every hold in the batch's order with core's ledger rules over
//!    the locked rows, so two processes never both take the last place: the
//!    second waits for the first's commit at step 2 and sees its counts.
//! 5. Write it all (slot counts, holds, orders, tickets, answers) in one
//!    pipelined round of multi-row statements. The row's CHECK stays the
//!    last line of defence.
//!
//! A statement that fails for any reason other than a conflict aborts the
//! transaction; the writer then runs the same jobs again through this same
//! code, one job per batch under a savepoint each, where a job that fails
//! does so alone. Every hold and confirmation is decided here, by core's
//! ledger, on either path.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use futures_util::future::try_join_all;
use serde_json::Value;
use tessera_core::inventory::{hold_is_open, InventoryError, SlotLedger};
use tessera_core::slot::SlotId;
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::cache::{slot_from_row, slots_payload, CachedSlot, SLOT_COLUMNS};
use super::online::{
    worth_recording, ConfirmJob, Env, HoldJob, Job, JobError, Key, Reply, Statements,
};
use super::schema::CHANGES;
use super::writer::{Done, Phase, Phases};
use crate::store::{Answer, Refusal, StoreError};

type PgResult<T> = Result<T, JobError>;

/// Each key is inserted with the job's 201 answer, prepared in the request's
/// task: most jobs succeed, so their row is written once. A job refused
/// later in the batch has its row corrected (RECORD) or removed (FORGET)
/// before the COMMIT; no other transaction sees a row before it commits.
const CLAIM: &str = "INSERT INTO idempotency (key_hash, request_hash, status, body, created_at)
     SELECT k, r, 201, b, c FROM unnest($1::bytea[], $2::bytea[], $3::jsonb[], $4::bigint[]) AS t(k, r, b, c)
     ON CONFLICT (key_hash) DO NOTHING RETURNING key_hash";
const FIRST_USE: &str =
    "SELECT key_hash, request_hash, status, body FROM idempotency WHERE key_hash = ANY($1)";
static LOCK: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = ANY($1) ORDER BY slot_id FOR UPDATE")
});
// In the joins with `unnest` below, `= ANY($1)` on the big table's key is
// redundant for the result but not for the plan: a custom plan otherwise
// estimates the join from the array's length and may hash it against a
// sequential scan of the whole table (measured: one scan of `holds` or
// `idempotency` per batch, growing with the table).
const CONFIRM: &str = "UPDATE holds h SET status = 'confirmed'
     FROM unnest($1::uuid[], $2::text[], $3::integer[]) AS v(id, slot, n)
     WHERE h.hold_id = ANY($1) AND h.hold_id = v.id AND h.slot_id = v.slot AND h.admissions = v.n
       AND h.status = 'held' AND h.expires_at > $4
     RETURNING h.hold_id";
const EXPIRE: &str = "UPDATE holds SET status = 'expired', released_by = $3
     WHERE hold_id = ANY($1) AND status = 'held' AND expires_at <= $2
     RETURNING hold_id, slot_id, admissions";
const STATE: &str = "SELECT h.hold_id, h.status, h.expires_at, o.order_id
     FROM holds h LEFT JOIN orders o ON o.hold_id = h.hold_id WHERE h.hold_id = ANY($1)";
const SLOTS: &str =
    "UPDATE slots s SET held_online = v.held, sold_online = v.sold, version = s.version + 1
     FROM unnest($1::text[], $2::integer[], $3::integer[]) AS v(id, held, sold)
     WHERE s.slot_id = v.id";
const HOLDS: &str = "INSERT INTO holds (hold_id, slot_id, admissions, lines, total, currency, created_at, expires_at, status)
     SELECT id, slot, n, lines, total, currency, created, expires, 'held'
     FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::jsonb[], $5::bigint[], $6::text[],
                 $7::bigint[], $8::bigint[])
          AS t(id, slot, n, lines, total, currency, created, expires)";
const ORDERS: &str =
    "INSERT INTO orders (order_id, hold_id, slot_id, admissions, total, currency, lines,
                         payment_reference, email, channel, reference, created_at)
     SELECT v.id, h.hold_id, h.slot_id, h.admissions, h.total, h.currency, h.lines,
            v.payment, v.email, v.channel, v.reference, v.created
     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $7::bigint[])
          AS v(id, hold, payment, email, channel, reference, created)
     JOIN holds h ON h.hold_id = v.hold
     WHERE h.hold_id = ANY($2)";
const TICKETS: &str = "INSERT INTO tickets (ticket_id, order_id, slot_id, product_id, admits, code, channel, key_id, price, vat_bp)
     SELECT id, o, slot, product, admits, code, 'online', key_id, price, vat
     FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::integer[], $6::text[],
                 $7::integer[], $8::bigint[], $9::integer[])
          AS t(id, o, slot, product, admits, code, key_id, price, vat)";
const RECORD: &str = "UPDATE idempotency i SET status = v.status, body = v.body
     FROM unnest($1::bytea[], $2::smallint[], $3::jsonb[]) AS v(k, status, body)
     WHERE i.key_hash = ANY($1) AND i.key_hash = v.k";
const FORGET: &str = "DELETE FROM idempotency WHERE key_hash = ANY($1)";
/// Sent in the same pipeline as the writes, not in a round trip of its own
/// before the COMMIT.
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// What the batch decided for one job, before the writes.
enum Decision {
    /// Answered without claiming anything (a replay, a reused key, the same
    /// key twice in the batch).
    Answered(Done),
    /// Refused after claiming its key: the answer is recorded under the
    /// key if worth replaying, else the key is forgotten.
    Refused(StoreError),
    HoldTaken,
    Confirmed,
}

/// Runs the batch's holds and confirmations (`jobs`: their places in the
/// batch and the jobs), answering each.
pub async fn run(
    tx: &Transaction<'_>,
    st: &Statements,
    env: &Env,
    jobs: &[(usize, &Job)],
    now_ms: i64,
    phases: &mut Phases,
) -> PgResult<(Vec<(usize, Done)>, BTreeSet<SlotId>)> {
    let mut decided: Vec<Option<Decision>> = jobs.iter().map(|_| None).collect();
    claim_keys(tx, st, jobs, &mut decided).await?;
    phases.mark(Phase::Claim);

    let holds: Vec<(usize, &HoldJob)> = pick(jobs, &decided, |j| match j {
        Job::CreateHold(h) => Some(h.as_ref()),
        _ => None,
    });
    let confirms: Vec<(usize, &ConfirmJob)> = pick(jobs, &decided, |j| match j {
        Job::ConfirmHold(c) => Some(c.as_ref()),
        _ => None,
    });

    let mut slots = lock_slots(tx, st, &holds, &confirms).await?;
    phases.mark(Phase::Lock);
    let before: BTreeMap<SlotId, SlotLedger> =
        slots.iter().map(|(id, s)| (*id, s.ledger)).collect();
    confirm_holds(tx, st, env, &confirms, now_ms, &mut slots, &mut decided).await?;
    phases.mark(Phase::Confirm);
    for (n, hold) in &holds {
        decided[*n] = Some(decide_hold(env, hold, now_ms, &mut slots)?);
    }
    // The rows this batch changes, as they will be after its one update.
    let changed: Vec<CachedSlot> = slots
        .into_values()
        .filter(|s| before.get(&s.slot.id) != Some(&s.ledger))
        .map(|mut s| {
            s.version += 1;
            s
        })
        .collect();
    phases.mark(Phase::Decide);
    write(tx, st, jobs, &holds, &confirms, &changed, &decided).await?;
    phases.mark(Phase::Write);
    let notified = changed.iter().map(|s| s.slot.id).collect();
    Ok((answer(jobs, decided, changed), notified))
}

fn key_of(job: &Job) -> Option<&Key> {
    match job {
        Job::CreateHold(h) => Some(&h.key),
        Job::ConfirmHold(c) => Some(&c.key),
        _ => None,
    }
}

/// The batch's jobs of one kind still to decide, with their index in `jobs`.
fn pick<'a, T>(
    jobs: &[(usize, &'a Job)],
    decided: &[Option<Decision>],
    f: impl Fn(&'a Job) -> Option<&'a T>,
) -> Vec<(usize, &'a T)> {
    jobs.iter()
        .enumerate()
        .filter(|(n, _)| decided[*n].is_none())
        .filter_map(|(n, (_, job))| f(job).map(|j| (n, j)))
        .collect()
}

async fn claim_keys(
    tx: &Transaction<'_>,
    st: &Statements,
    jobs: &[(usize, &Job)],
    decided: &mut [Option<Decision>],
) -> PgResult<()> {
    // In key order, so that two processes claiming the same keys (one
    // request sent to both) queue instead of deadlocking.
    let mut claims: BTreeMap<&[u8], (&[u8], &Value, i64)> = BTreeMap::new();
    for (n, (_, job)) in jobs.iter().enumerate() {
        let Some(key) = key_of(job) else { continue };
        if claims.contains_key(key.hash.as_slice()) {
            // The same key twice in one batch: the retry finds the first's
            // answer.
            decided[n] = Some(Decision::Answered(Done::discard(Err(
                StoreError::Unavailable,
            ))));
            continue;
        }
        let (body, created) = match job {
            Job::CreateHold(h) => (&h.body, h.now_ms),
            Job::ConfirmHold(c) => (&c.body, c.now_ms),
            _ => continue,
        };
        claims.insert(&key.hash, (&key.request, body, created));
    }
    let hashes: Vec<&[u8]> = claims.keys().copied().collect();
    let requests: Vec<&[u8]> = claims.values().map(|(r, _, _)| *r).collect();
    let bodies: Vec<&Value> = claims.values().map(|(_, b, _)| *b).collect();
    let created: Vec<i64> = claims.values().map(|(_, _, c)| *c).collect();
    let claimed: HashSet<Vec<u8>> = tx
        .query(
            &st.get(tx, CLAIM).await?,
            &[&hashes, &requests, &bodies, &created],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let used: Vec<&[u8]> = hashes
        .into_iter()
        .filter(|h| !claimed.contains(*h))
        .collect();
    if used.is_empty() {
        return Ok(());
    }
    let first: HashMap<Vec<u8>, (Vec<u8>, i16, Value)> = tx
        .query(&st.get(tx, FIRST_USE).await?, &[&used])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    for (n, (_, job)) in jobs.iter().enumerate() {
        let Some(key) = key_of(job) else { continue };
        if decided[n].is_some() || claimed.contains(&key.hash) {
            continue;
        }
        let done = match first.get(&key.hash) {
            Some((request, _, _)) if *request != key.request => {
                Done::discard(Err(Refusal::IdempotencyKeyReused.into()))
            }
            Some((_, status, body)) if *status > 0 => {
                metrics::counter!("tessera_idempotent_replays_total").increment(1);
                Done::discard(Ok(Reply::Answer(Answer {
                    status: u16::try_from(*status).unwrap_or(500),
                    body: body.clone(),
                    replayed: true,
                })))
            }
            // Pruned meanwhile: the client retries.
            _ => Done::discard(Err(StoreError::Unavailable)),
        };
        decided[n] = Some(Decision::Answered(done));
    }
    Ok(())
}

/// Locks the rows of every slot the batch touches, in slot order.
async fn lock_slots(
    tx: &Transaction<'_>,
    st: &Statements,
    holds: &[(usize, &HoldJob)],
    confirms: &[(usize, &ConfirmJob)],
) -> PgResult<BTreeMap<SlotId, CachedSlot>> {
    let mut ids: Vec<String> = holds.iter().map(|(_, h)| h.slot.to_string()).collect();
    ids.extend(
        confirms
            .iter()
            .filter(|(_, c)| !c.slot.is_empty())
            .map(|(_, c)| c.slot.clone()),
    );
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows = tx.query(&st.get(tx, LOCK.as_str()).await?, &[&ids]).await?;
    rows.iter()
        .map(|r| {
            slot_from_row(r)
                .map(|s| (s.slot.id, s))
                .ok_or_else(|| JobError::Bookkeeping("a slot row does not parse".into()))
        })
        .collect()
}

/// Turns open holds into orders' places, releases the expired ones named,
/// and says why the others are refused.
async fn confirm_holds(
    tx: &Transaction<'_>,
    st: &Statements,
    env: &Env,
    confirms: &[(usize, &ConfirmJob)],
    now_ms: i64,
    slots: &mut BTreeMap<SlotId, CachedSlot>,
    decided: &mut [Option<Decision>],
) -> PgResult<()> {
    let mut seen = HashSet::new();
    let (mut ids, mut slot_ids, mut counts) = (Vec::new(), Vec::new(), Vec::new());
    for (n, c) in confirms {
        if !seen.insert(c.hold_id) {
            // One hold confirmed twice in one batch: the second's retry is
            // told which order it became.
            decided[*n] = Some(Decision::Refused(StoreError::Unavailable));
            continue;
        }
        if !c.slot.is_empty() {
            ids.push(c.hold_id);
            slot_ids.push(c.slot.clone());
            counts.push(c.admissions);
        }
    }
    let taken: HashSet<Uuid> = if ids.is_empty() {
        HashSet::new()
    } else {
        tx.query(
            &st.get(tx, CONFIRM).await?,
            &[&ids, &slot_ids, &counts, &now_ms],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut others = Vec::new();
    for (n, c) in confirms {
        if decided[*n].is_some() {
            continue;
        }
        if taken.contains(&c.hold_id) {
            let slot = slot_of(slots, &c.slot)?;
            slot.ledger
                .confirm_hold(u32::try_from(c.admissions).unwrap_or(u32::MAX))
                .map_err(|e| JobError::Bookkeeping(e.to_string()))?;
            decided[*n] = Some(Decision::Confirmed);
        } else {
            others.push((*n, *c));
        }
    }
    if others.is_empty() {
        return Ok(());
    }
    // Holds that ran out and are still open are released here, once,
    // whichever process gets to them first (only those whose slot is locked).
    let due: Vec<Uuid> = others
        .iter()
        .filter(|(_, c)| !c.slot.is_empty())
        .map(|(_, c)| c.hold_id)
        .collect();
    let released: HashMap<Uuid, (String, i32)> = tx
        .query(&st.get(tx, EXPIRE).await?, &[&due, &now_ms, &env.process])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let ids: Vec<Uuid> = others.iter().map(|(_, c)| c.hold_id).collect();
    let state: HashMap<Uuid, (String, i64, Option<Uuid>)> = tx
        .query(&st.get(tx, STATE).await?, &[&ids])
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    for (n, c) in others {
        let id = c.hold_id.to_string();
        let decision = if let Some((slot, admissions)) = released.get(&c.hold_id) {
            let s = slot_of(slots, slot)?;
            s.ledger
                .release_hold(u32::try_from(*admissions).unwrap_or(u32::MAX))
                .map_err(|e| JobError::Bookkeeping(e.to_string()))?;
            Decision::Refused(StoreError::from(Refusal::HoldExpired(id)))
        } else {
            let error = match state.get(&c.hold_id) {
                None => StoreError::from(Refusal::UnknownHold(id)),
                Some((status, _, order)) if status == "confirmed" => {
                    StoreError::from(Refusal::HoldAlreadyConfirmed {
                        hold: id,
                        order: order.map(|o| o.to_string()).unwrap_or_default(),
                    })
                }
                Some((status, _, _)) if status == "cancelled" => {
                    StoreError::from(Refusal::HoldCancelled(id))
                }
                // Open and unexpired, yet not the hold its tickets were
                // signed for (read before it existed): the client retries.
                Some((status, expires, _))
                    if status == "held" && hold_is_open(*expires, now_ms) =>
                {
                    StoreError::Unavailable
                }
                Some(_) => StoreError::from(Refusal::HoldExpired(id)),
            };
            Decision::Refused(error)
        };
        decided[n] = Some(decision);
    }
    Ok(())
}

fn slot_of<'a>(
    slots: &'a mut BTreeMap<SlotId, CachedSlot>,
    id: &str,
) -> PgResult<&'a mut CachedSlot> {
    let id: SlotId = id
        .parse()
        .map_err(|_| JobError::Bookkeeping(format!("slot id {id:?} does not parse")))?;
    slots
        .get_mut(&id)
        .ok_or_else(|| JobError::Bookkeeping(format!("slot {id} was not locked")))
}

/// One hold, by core's ledger rule, against the slot as this batch has
/// left it so far.
fn decide_hold(
    env: &Env,
    hold: &HoldJob,
    now_ms: i64,
    slots: &mut BTreeMap<SlotId, CachedSlot>,
) -> PgResult<Decision> {
    let id = hold.slot;
    let Some(slot) = slots.get_mut(&id) else {
        let error = if env.catalogue.is_closed(id.date) {
            StoreError::from(Refusal::MuseumClosed(id.date.to_string()))
        } else {
            StoreError::from(Refusal::UnknownSlot(id.to_string()))
        };
        return Ok(Decision::Refused(error));
    };
    if slot.slot.is_over(now_ms) {
        return Ok(Decision::Refused(StoreError::from(Refusal::SlotPast(
            id.to_string(),
        ))));
    }
    let n = u32::try_from(hold.admissions).unwrap_or(u32::MAX);
    Ok(match slot.ledger.hold(n) {
        Ok(()) => Decision::HoldTaken,
        // Core's answer as it gave it: sold out with what is left, or a
        // broken count, which is a storage failure (500), not a sold-out.
        Err(e) => {
            if matches!(e, InventoryError::SoldOut { .. }) {
                metrics::counter!("tessera_sold_out_total").increment(1);
            }
            Decision::Refused(e.into())
        }
    })
}

/// Every write of the batch, one multi-row statement each, sent together.
async fn write(
    tx: &Transaction<'_>,
    st: &Statements,
    jobs: &[(usize, &Job)],
    holds: &[(usize, &HoldJob)],
    confirms: &[(usize, &ConfirmJob)],
    changed: &[CachedSlot],
    decided: &[Option<Decision>],
) -> PgResult<()> {
    let is = |n: usize, f: fn(&Decision) -> bool| decided[n].as_ref().is_some_and(f);

    let slot_ids: Vec<String> = changed.iter().map(|s| s.slot.id.to_string()).collect();
    let held: Vec<i32> = changed
        .iter()
        .map(|s| count(s.ledger.held_online))
        .collect();
    let sold: Vec<i32> = changed
        .iter()
        .map(|s| count(s.ledger.sold_online))
        .collect();

    let taken: Vec<&HoldJob> = holds
        .iter()
        .filter(|(n, _)| is(*n, |d| matches!(d, Decision::HoldTaken)))
        .map(|(_, h)| *h)
        .collect();
    let hold_cols = HoldColumns::of(&taken);

    let confirmed: Vec<&ConfirmJob> = confirms
        .iter()
        .filter(|(n, _)| is(*n, |d| matches!(d, Decision::Confirmed)))
        .map(|(_, c)| *c)
        .collect();
    let order_cols = OrderColumns::of(&confirmed);
    let ticket_cols = TicketRows::of(&confirmed);

    let (mut keys, mut statuses, mut bodies, mut forget) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (n, (_, job)) in jobs.iter().enumerate() {
        let Some(key) = key_of(job) else { continue };
        match &decided[n] {
            // Claimed with this answer already.
            Some(Decision::HoldTaken | Decision::Confirmed) => {}
            Some(Decision::Refused(e)) if worth_recording(e) => {
                keys.push(key.hash.clone());
                statuses.push(i16::try_from(e.status()).unwrap_or(500));
                bodies.push(e.body());
            }
            Some(Decision::Refused(_)) => forget.push(key.hash.clone()),
            _ => {}
        }
    }

    let mut writes: Vec<(&'static str, Vec<&(dyn ToSql + Sync)>)> = Vec::new();
    if !slot_ids.is_empty() {
        writes.push((SLOTS, vec![&slot_ids, &held, &sold]));
    }
    if !taken.is_empty() {
        writes.push((HOLDS, hold_cols.params()));
    }
    if !confirmed.is_empty() {
        writes.push((ORDERS, order_cols.params()));
        writes.push((TICKETS, ticket_cols.params()));
    }
    if !keys.is_empty() {
        writes.push((RECORD, vec![&keys, &statuses, &bodies]));
    }
    if !forget.is_empty() {
        writes.push((FORGET, vec![&forget]));
    }
    let payload = slots_payload(changed.iter().map(|s| &s.slot.id));
    if !changed.is_empty() {
        writes.push((NOTIFY, vec![&CHANGES, &payload]));
    }
    let mut prepared = Vec::with_capacity(writes.len());
    for (sql, _) in &writes {
        prepared.push(st.get(tx, sql).await?);
    }
    try_join_all(
        writes
            .iter()
            .zip(&prepared)
            .map(|((_, params), statement)| tx.execute(statement, params.as_slice())),
    )
    .await?;
    Ok(())
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

struct HoldColumns {
    ids: Vec<Uuid>,
    slots: Vec<String>,
    counts: Vec<i32>,
    lines: Vec<Value>,
    totals: Vec<i64>,
    currencies: Vec<String>,
    created: Vec<i64>,
    expires: Vec<i64>,
}

impl HoldColumns {
    fn of(holds: &[&HoldJob]) -> HoldColumns {
        HoldColumns {
            ids: holds.iter().map(|h| h.hold_id).collect(),
            slots: holds.iter().map(|h| h.slot.to_string()).collect(),
            counts: holds.iter().map(|h| h.admissions).collect(),
            lines: holds.iter().map(|h| h.lines.clone()).collect(),
            totals: holds.iter().map(|h| h.total).collect(),
            currencies: holds.iter().map(|h| h.currency.clone()).collect(),
            created: holds.iter().map(|h| h.now_ms).collect(),
            expires: holds.iter().map(|h| h.expires_ms).collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.ids,
            &self.slots,
            &self.counts,
            &self.lines,
            &self.totals,
            &self.currencies,
            &self.created,
            &self.expires,
        ]
    }
}

struct OrderColumns {
    ids: Vec<Uuid>,
    holds: Vec<Uuid>,
    payments: Vec<String>,
    emails: Vec<Option<String>>,
    channels: Vec<String>,
    references: Vec<String>,
    created: Vec<i64>,
}

impl OrderColumns {
    fn of(confirmed: &[&ConfirmJob]) -> OrderColumns {
        OrderColumns {
            ids: confirmed.iter().map(|c| c.order_id).collect(),
            holds: confirmed.iter().map(|c| c.hold_id).collect(),
            payments: confirmed
                .iter()
                .map(|c| c.payment_reference.clone())
                .collect(),
            emails: confirmed.iter().map(|c| c.email.clone()).collect(),
            channels: confirmed.iter().map(|c| c.channel.clone()).collect(),
            references: confirmed.iter().map(|c| c.reference.clone()).collect(),
            created: confirmed.iter().map(|c| c.now_ms).collect(),
        }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.ids,
            &self.holds,
            &self.payments,
            &self.emails,
            &self.channels,
            &self.references,
            &self.created,
        ]
    }
}

/// Every confirmed order's tickets, one row each.
struct TicketRows {
    ids: Vec<Uuid>,
    orders: Vec<Uuid>,
    slots: Vec<String>,
    products: Vec<String>,
    admits: Vec<i32>,
    codes: Vec<String>,
    key_ids: Vec<i32>,
    prices: Vec<i64>,
    vat_bp: Vec<i32>,
}

impl TicketRows {
    fn of(confirmed: &[&ConfirmJob]) -> TicketRows {
        let mut rows = TicketRows {
            ids: Vec::new(),
            orders: Vec::new(),
            slots: Vec::new(),
            products: Vec::new(),
            admits: Vec::new(),
            codes: Vec::new(),
            key_ids: Vec::new(),
            prices: Vec::new(),
            vat_bp: Vec::new(),
        };
        for c in confirmed {
            let t = &c.tickets;
            for i in 0..t.ids.len() {
                rows.ids.push(t.ids[i]);
                rows.orders.push(c.order_id);
                rows.slots.push(c.slot.clone());
                rows.products.push(t.products[i].clone());
                rows.admits.push(t.admits[i]);
                rows.codes.push(t.codes[i].clone());
                rows.key_ids.push(c.key_id);
                rows.prices.push(t.prices[i]);
                rows.vat_bp.push(t.vat_bp[i]);
            }
        }
        rows
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.ids,
            &self.orders,
            &self.slots,
            &self.products,
            &self.admits,
            &self.codes,
            &self.key_ids,
            &self.prices,
            &self.vat_bp,
        ]
    }
}

/// Each job's answer; the first carries the slot rows the batch changed,
/// for the NOTIFY and this process's view.
fn answer(
    jobs: &[(usize, &Job)],
    decided: Vec<Option<Decision>>,
    mut changed: Vec<CachedSlot>,
) -> Vec<(usize, Done)> {
    let mut out = Vec::with_capacity(jobs.len());
    for ((i, job), decision) in jobs.iter().zip(decided) {
        let mut done = match decision {
            Some(Decision::Answered(done)) => done,
            Some(Decision::HoldTaken) | Some(Decision::Confirmed) => {
                count_metrics(job);
                let body = match job {
                    Job::CreateHold(h) => h.body.clone(),
                    Job::ConfirmHold(c) => c.body.clone(),
                    _ => Value::Null,
                };
                Done::keep(
                    Reply::Answer(Answer {
                        status: 201,
                        body,
                        replayed: false,
                    }),
                    Vec::new(),
                )
            }
            Some(Decision::Refused(e)) if worth_recording(&e) => Done::keep(
                Reply::Answer(Answer {
                    status: e.status(),
                    body: e.body(),
                    replayed: false,
                }),
                Vec::new(),
            ),
            Some(Decision::Refused(e)) => Done::discard(Err(e)),
            None => Done::discard(Err(StoreError::Unavailable)),
        };
        if !changed.is_empty() {
            done.slots = std::mem::take(&mut changed);
        }
        out.push((*i, done));
    }
    out
}

fn count_metrics(job: &Job) {
    match job {
        Job::CreateHold(_) => {
            metrics::counter!("tessera_holds_created_total").increment(1);
        }
        Job::ConfirmHold(c) => {
            metrics::counter!("tessera_orders_total").increment(1);
            metrics::counter!("tessera_admissions_sold_total", "channel" => "online")
                .increment(u64::try_from(c.admissions).unwrap_or(0));
        }
        _ => {}
    }
}
