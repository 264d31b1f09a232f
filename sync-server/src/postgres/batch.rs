//! A writer's batch of holds and confirmations decided together, in one
//! transaction of two round trips whatever the batch's size: each statement
//! covers every job (`unnest` of arrays), and the statements of a round are
//! pipelined (tokio-postgres sends queries polled together without waiting
//! for each answer; PostgreSQL runs them one after another, in order).
//!
//! Round 1 (`open`): BEGIN; claim every job's Idempotency-Key in one INSERT
//! … ON CONFLICT DO NOTHING (a key another transaction holds makes it wait
//! for that commit); lock the batch's slot rows, in slot order so that two
//! processes' batches queue instead of deadlocking (`SELECT … FOR UPDATE`;
//! the sweep and cancellations take slot rows first too, in transactions of
//! their own, see `writer`); turn the confirmed holds into orders' places
//! in one conditional UPDATE (only open, unexpired holds match, and only
//! for keys this transaction claimed: a confirmation whose key was already
//! used confirms nothing and answers from the key's first use).
//!
//! Only when something was refused, one more round reads the first answers
//! of keys already used, releases the expired holds the batch names and
//! reads why the other confirmations fail.
//!
//! Then every hold is decided in the batch's order with core's ledger rules
//! over the locked rows, so two processes never both take the last place:
//! the second waits for the first's commit at the lock and sees its counts.
//!
//! Round 2 (`close`): every write (slot counts, holds, orders, tickets,
//! corrected answers), the NOTIFY and the COMMIT. A statement that fails
//! aborts the transaction, and the COMMIT behind it then rolls back. The
//! row's CHECK stays the last line of defence.
//!
//! A statement that fails for any reason other than a conflict aborts the
//! transaction; the writer then runs the same jobs again one call each
//! (`online::run_call`), where a job that fails does so alone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use futures_util::future::{try_join, try_join3, try_join4, try_join_all};
use serde_json::Value;
use tessera_core::inventory::SlotLedger;
use tessera_core::slot::SlotId;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use uuid::Uuid;

use super::cache::{slot_from_row, slots_payload, CachedSlot, SLOT_COLUMNS};
use super::online::{
    worth_recording, ConfirmJob, Env, HoldJob, Job, JobError, Key, Reply, Statements,
};
use super::schema::CHANGES;
use super::writer::{Done, Phase, Phases};
use crate::error::ServiceError;
use crate::store::Answer;

type PgResult<T> = Result<T, JobError>;

/// Each key is inserted with the job's 201 answer, prepared in the request's
/// task: most jobs succeed, so their row is written once. A job refused
/// later in the batch has its row corrected (RECORD) or removed (FORGET)
/// before the COMMIT; no other transaction sees a row before it commits.
const CLAIM: &str = "INSERT INTO idempotency (key_hash, request_hash, status, body, created_at)
     SELECT k, r, 201, b, c FROM unnest($1::bytea[], $2::bytea[], $3::jsonb[], $4::bigint[]) AS t(k, r, b, c)
     ON CONFLICT (key_hash) DO NOTHING RETURNING key_hash";
static LOCK: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = ANY($1) ORDER BY slot_id FOR UPDATE")
});
/// A hold is confirmed only for a key this transaction claimed (its row's
/// `xmin` is this transaction: CLAIM ran just before, in the same round
/// trip); a key used before answers from its first use and confirms
/// nothing.
///
/// In the joins with `unnest`, `= ANY($1)` on the big table's key is
/// redundant for the result but not for the plan: a custom plan otherwise
/// estimates the join from the array's length and may hash it against a
/// sequential scan of the whole table (measured: one scan of `holds` or
/// `idempotency` per batch, growing with the table).
const CONFIRM: &str = "UPDATE holds h SET status = 'confirmed'
     FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::bytea[]) AS v(id, slot, n, k)
     WHERE h.hold_id = ANY($1) AND h.hold_id = v.id AND h.slot_id = v.slot AND h.admissions = v.n
       AND h.status = 'held' AND h.expires_at > $5
       AND EXISTS (SELECT 1 FROM idempotency i
                   WHERE i.key_hash = v.k AND i.xmin = pg_current_xact_id()::xid)
     RETURNING h.hold_id";
const FIRST_USE: &str =
    "SELECT key_hash, request_hash, status, body FROM idempotency WHERE key_hash = ANY($1)";
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
    Refused(ServiceError),
    HoldTaken,
    Confirmed,
}

/// Runs the batch's holds and confirmations (`jobs`: their places in the
/// batch and the jobs) in one transaction of its own on `client`, from
/// BEGIN to COMMIT, answering each. On an error the transaction is over
/// (rolled back) when this returns, unless the connection is gone.
pub async fn run(
    client: &Client,
    st: &Statements,
    env: &Env,
    jobs: &[(usize, &Job)],
    now_ms: i64,
    phases: &mut Phases,
) -> PgResult<Vec<(usize, Done)>> {
    let mut closing = false;
    let result = run_open(client, st, env, jobs, now_ms, phases, &mut closing).await;
    // Once the closing round is sent, its COMMIT ended the transaction
    // (committed, or rolled back behind a failed statement).
    if result.is_err() && !closing && !client.is_closed() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// What round 1 names: the jobs to claim, the holds to confirm, the slots
/// to lock.
struct Opening<'a> {
    hashes: Vec<&'a [u8]>,
    requests: Vec<&'a [u8]>,
    bodies: Vec<&'a Value>,
    created: Vec<i64>,
    confirm_ids: Vec<Uuid>,
    confirm_slots: Vec<String>,
    confirm_counts: Vec<i32>,
    confirm_keys: Vec<&'a [u8]>,
    slots: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
async fn run_open(
    client: &Client,
    st: &Statements,
    env: &Env,
    jobs: &[(usize, &Job)],
    now_ms: i64,
    phases: &mut Phases,
    closing: &mut bool,
) -> PgResult<Vec<(usize, Done)>> {
    let mut decided: Vec<Option<Decision>> = jobs.iter().map(|_| None).collect();
    let opening = opening(jobs, &mut decided);
    // Prepared once per connection (a round trip the first time only).
    let lock = st.get(client, LOCK.as_str()).await?;
    let claim = st.get(client, CLAIM).await?;
    let confirm = st.get(client, CONFIRM).await?;
    // One round trip; PostgreSQL runs them in this order: keys, then slot
    // rows, then hold rows (the order every writer and the shop take them).
    let (_, claim_rows, slot_rows, confirm_rows) = try_join4(
        client.batch_execute("BEGIN"),
        client.query(
            &claim,
            &[
                &opening.hashes,
                &opening.requests,
                &opening.bodies,
                &opening.created,
            ],
        ),
        client.query(&lock, &[&opening.slots]),
        client.query(
            &confirm,
            &[
                &opening.confirm_ids,
                &opening.confirm_slots,
                &opening.confirm_counts,
                &opening.confirm_keys,
                &now_ms,
            ],
        ),
    )
    .await?;
    let mut slots: BTreeMap<SlotId, CachedSlot> = slot_rows
        .iter()
        .map(|r| {
            slot_from_row(r)
                .map(|s| (s.slot.id, s))
                .ok_or_else(|| JobError::Bookkeeping("a slot row does not parse".into()))
        })
        .collect::<PgResult<_>>()?;
    let claimed: HashSet<Vec<u8>> = claim_rows.iter().map(|r| r.get(0)).collect();
    let taken: HashSet<Uuid> = confirm_rows.iter().map(|r| r.get(0)).collect();
    phases.mark(Phase::Open);
    let before: BTreeMap<SlotId, SlotLedger> =
        slots.iter().map(|(id, s)| (*id, s.ledger)).collect();
    settle_claims_and_confirms(
        client,
        st,
        env,
        jobs,
        now_ms,
        &claimed,
        &taken,
        &mut slots,
        &mut decided,
    )
    .await?;
    phases.mark(Phase::Confirm);

    let holds: Vec<(usize, &HoldJob)> = pick(jobs, &decided, |j| match j {
        Job::CreateHold(h) => Some(h.as_ref()),
        _ => None,
    });
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
    close(client, st, jobs, &changed, &decided, closing).await?;
    phases.mark(Phase::Close);
    Ok(answer(jobs, decided, changed))
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

/// What round 1 claims, confirms and locks. A job that repeats a key, or
/// confirms a hold another job of the batch confirms, is answered without
/// claiming anything: its retry finds the first's answer.
fn opening<'a>(jobs: &[(usize, &'a Job)], decided: &mut [Option<Decision>]) -> Opening<'a> {
    // In key order, so that two processes claiming the same keys (one
    // request sent to both) queue instead of deadlocking.
    let mut claims: BTreeMap<&[u8], (&[u8], &Value, i64)> = BTreeMap::new();
    let mut seen_holds = HashSet::new();
    let mut slots: Vec<String> = Vec::new();
    let mut confirms = Vec::new();
    for (n, (_, job)) in jobs.iter().enumerate() {
        let Some(key) = key_of(job) else { continue };
        let retry = || {
            Some(Decision::Answered(Done::discard(Err(
                ServiceError::Unavailable,
            ))))
        };
        if claims.contains_key(key.hash.as_slice()) {
            decided[n] = retry();
            continue;
        }
        let (body, created) = match job {
            Job::CreateHold(h) => {
                slots.push(h.slot.to_string());
                (&h.body, h.now_ms)
            }
            Job::ConfirmHold(c) => {
                if !seen_holds.insert(c.hold_id) {
                    decided[n] = retry();
                    continue;
                }
                if !c.slot.is_empty() {
                    slots.push(c.slot.clone());
                    confirms.push(c.as_ref());
                }
                (&c.body, c.now_ms)
            }
            _ => continue,
        };
        claims.insert(&key.hash, (&key.request, body, created));
    }
    slots.sort();
    slots.dedup();
    Opening {
        hashes: claims.keys().copied().collect(),
        requests: claims.values().map(|(r, _, _)| *r).collect(),
        bodies: claims.values().map(|(_, b, _)| *b).collect(),
        created: claims.values().map(|(_, _, c)| *c).collect(),
        confirm_ids: confirms.iter().map(|c| c.hold_id).collect(),
        confirm_slots: confirms.iter().map(|c| c.slot.clone()).collect(),
        confirm_counts: confirms.iter().map(|c| c.admissions).collect(),
        confirm_keys: confirms.iter().map(|c| c.key.hash.as_slice()).collect(),
        slots,
    }
}

/// After round 1: the jobs whose key was used before answer from its first
/// use; confirmed holds move to sold in the ledger; the expired holds the
/// other confirmations name are released and the rest are told why not.
/// One more round trip, only when something was not claimed or not
/// confirmed.
#[allow(clippy::too_many_arguments)]
async fn settle_claims_and_confirms(
    client: &Client,
    st: &Statements,
    env: &Env,
    jobs: &[(usize, &Job)],
    now_ms: i64,
    claimed: &HashSet<Vec<u8>>,
    taken: &HashSet<Uuid>,
    slots: &mut BTreeMap<SlotId, CachedSlot>,
    decided: &mut [Option<Decision>],
) -> PgResult<()> {
    let mut used: Vec<&[u8]> = Vec::new();
    let mut others: Vec<(usize, &ConfirmJob)> = Vec::new();
    for (n, (_, job)) in jobs.iter().enumerate() {
        let Some(key) = key_of(job) else { continue };
        if decided[n].is_some() {
            continue;
        }
        if !claimed.contains(&key.hash) {
            used.push(&key.hash);
            continue;
        }
        let Job::ConfirmHold(c) = job else { continue };
        if taken.contains(&c.hold_id) {
            let slot = slot_of(slots, &c.slot)?;
            slot.ledger
                .confirm_hold(u32::try_from(c.admissions).unwrap_or(u32::MAX))
                .map_err(|e| JobError::Bookkeeping(e.to_string()))?;
            decided[n] = Some(Decision::Confirmed);
        } else {
            others.push((n, c.as_ref()));
        }
    }
    if used.is_empty() && others.is_empty() {
        return Ok(());
    }
    // Holds that ran out and are still open are released here, once,
    // whichever process gets to them first (only those whose slot is locked).
    let due: Vec<Uuid> = others
        .iter()
        .filter(|(_, c)| !c.slot.is_empty())
        .map(|(_, c)| c.hold_id)
        .collect();
    let ids: Vec<Uuid> = others.iter().map(|(_, c)| c.hold_id).collect();
    let first_use = st.get(client, FIRST_USE).await?;
    let expire = st.get(client, EXPIRE).await?;
    let state = st.get(client, STATE).await?;
    // In this order (PostgreSQL runs a pipeline's statements one after
    // another): the state is read after the expiries.
    let (first, released, state) = try_join3(
        async {
            if used.is_empty() {
                return Ok(Vec::new());
            }
            client.query(&first_use, &[&used]).await
        },
        async {
            if due.is_empty() {
                return Ok(Vec::new());
            }
            client.query(&expire, &[&due, &now_ms, &env.process]).await
        },
        async {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            client.query(&state, &[&ids]).await
        },
    )
    .await?;
    let first: HashMap<Vec<u8>, (Vec<u8>, i16, Value)> = first
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    let released: HashMap<Uuid, (String, i32)> = released
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let state: HashMap<Uuid, (String, i64, Option<Uuid>)> = state
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
                Done::discard(Err(ServiceError::IdempotencyKeyReused))
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
            _ => Done::discard(Err(ServiceError::Unavailable)),
        };
        decided[n] = Some(Decision::Answered(done));
    }
    for (n, c) in others {
        let id = c.hold_id.to_string();
        let decision = if let Some((slot, admissions)) = released.get(&c.hold_id) {
            let s = slot_of(slots, slot)?;
            s.ledger
                .release_hold(u32::try_from(*admissions).unwrap_or(u32::MAX))
                .map_err(|e| JobError::Bookkeeping(e.to_string()))?;
            Decision::Refused(ServiceError::HoldExpired(id))
        } else {
            let error = match state.get(&c.hold_id) {
                None => ServiceError::UnknownHold(id),
                Some((status, _, order)) if status == "confirmed" => {
                    ServiceError::HoldAlreadyConfirmed {
                        hold: id,
                        order: order.map(|o| o.to_string()).unwrap_or_default(),
                    }
                }
                Some((status, _, _)) if status == "cancelled" => ServiceError::HoldCancelled(id),
                // Open and unexpired, yet not the hold its tickets were
                // signed for (read before it existed): the client retries.
                Some((status, expires, _)) if status == "held" && *expires > now_ms => {
                    ServiceError::Unavailable
                }
                Some(_) => ServiceError::HoldExpired(id),
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
            ServiceError::MuseumClosed(id.date.to_string())
        } else {
            ServiceError::UnknownSlot(id.to_string())
        };
        return Ok(Decision::Refused(error));
    };
    if now_ms >= slot.slot.ends_at.as_millisecond() {
        return Ok(Decision::Refused(ServiceError::SlotPast(id.to_string())));
    }
    let n = u32::try_from(hold.admissions).unwrap_or(u32::MAX);
    Ok(match slot.ledger.hold(n) {
        Ok(()) => Decision::HoldTaken,
        Err(_) => {
            metrics::counter!("tessera_sold_out_total").increment(1);
            Decision::Refused(ServiceError::SoldOut {
                requested: n,
                available: slot.ledger.available(),
            })
        }
    })
}

/// Round 2: every write of the batch, one multi-row statement each, the
/// NOTIFY and the COMMIT, sent together. `closing` is set once they are
/// sent: the COMMIT then ends the transaction whatever happens before it.
async fn close(
    client: &Client,
    st: &Statements,
    jobs: &[(usize, &Job)],
    changed: &[CachedSlot],
    decided: &[Option<Decision>],
    closing: &mut bool,
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

    let taken: Vec<&HoldJob> = jobs
        .iter()
        .enumerate()
        .filter(|(n, _)| is(*n, |d| matches!(d, Decision::HoldTaken)))
        .filter_map(|(_, (_, j))| match j {
            Job::CreateHold(h) => Some(h.as_ref()),
            _ => None,
        })
        .collect();
    let hold_cols = HoldColumns::of(&taken);

    let confirmed: Vec<&ConfirmJob> = jobs
        .iter()
        .enumerate()
        .filter(|(n, _)| is(*n, |d| matches!(d, Decision::Confirmed)))
        .filter_map(|(_, (_, j))| match j {
            Job::ConfirmHold(c) => Some(c.as_ref()),
            _ => None,
        })
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
        prepared.push(st.get(client, sql).await?);
    }
    *closing = true;
    let writes = try_join_all(
        writes
            .iter()
            .zip(&prepared)
            .map(|((_, params), statement)| client.execute(statement, params.as_slice())),
    );
    try_join(writes, client.batch_execute("COMMIT")).await?;
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
            None => Done::discard(Err(ServiceError::Unavailable)),
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
