//! The single writer: it owns the connection and applies jobs in batches.
//!
//! Group commit: the writer takes every job that is waiting (up to a limit),
//! runs them all in one transaction, commits once (one fsync), and only then
//! answers each of them. Requests that arrive during an fsync form the next
//! batch, so under load many bookings share one fsync; with no load a batch is
//! one job and nothing waits. `CommitMode::PerRequest` caps batches at one job,
//! for comparison; both modes are equally durable.
//!
//! Containment: each job runs under its own savepoint and inside
//! `catch_unwind`. A job that fails (a `Fatal` error, a 5xx answer, or a
//! panic) is rolled back alone, in the database and in memory, and its caller
//! alone gets a 500 `internal` with a request id that is also logged; the rest
//! of the batch commits. A job's 4xx refusal is an answer, not a failure: what
//! it wrote (a failed PIN attempt, say) commits with the batch, so a job that
//! refuses must refuse before it writes.
//!
//! If the writer itself cannot go on (it panics outside a job, or batch after
//! batch fails to commit), its thread ends and the store reports it: `/healthz`
//! turns unhealthy and the process exits non-zero so that its service manager
//! restarts it, instead of staying up and answering 503 to every write.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use tessera_core::inventory::hold_is_open;
use tessera_core::slot::SlotId;
use tessera_core::tally::SlotTally;
use tokio::sync::{mpsc, oneshot};

use super::failpoint;
use super::sql::Text;
use super::state::{Shared, State};
use crate::store::StoreError;
use tessera_core::clock::Clock;

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;

/// An error that fails the job that met it: its savepoint is rolled back, the
/// in-memory state rebuilt, and its caller answered 500 `internal`. Met
/// outside any job (beginning or committing the batch), it fails the batch.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fatal {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Bookkeeping(String),
}

impl From<tessera_core::inventory::InventoryError> for Fatal {
    fn from(e: tessera_core::inventory::InventoryError) -> Self {
        Fatal::Bookkeeping(e.to_string())
    }
}

pub(crate) struct Ctx<'a> {
    pub tx: &'a Transaction<'a>,
    pub state: &'a mut State,
    pub now_ms: i64,
    pub hold_ttl_ms: i64,
    pub horizon_days: i64,
}

/// What running a job came to, as far as the writer must know.
pub(crate) enum Ran {
    /// The job has its answer (a success or a 4xx refusal); it commits.
    Answered,
    /// The job answered with a server error: treated like a failure.
    ServerFault(String),
}

/// A job's fate, told to it once its batch is over.
pub(crate) enum Fate {
    /// The batch committed with this job's changes in it.
    Committed,
    /// Not committed; answer the caller with this.
    Failed(StoreError),
}

/// One unit of work for the writer. `run` may be cut short by a panic; the
/// job must still be able to `answer` afterwards.
pub(crate) trait Task: Send {
    fn run(&mut self, ctx: &mut Ctx<'_>) -> Result<Ran, Fatal>;
    fn answer(self: Box<Self>, fate: Fate);
    /// The HTTP request this job serves, for logs and the caller's 500.
    fn request_id(&self) -> Option<&str>;
}

pub(crate) type Job = Box<dyn Task>;

/// Wraps a closure as a job whose answer is sent on the returned channel.
pub(crate) fn job<T, F>(
    work: F,
    request_id: Option<String>,
) -> (Job, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    F: FnOnce(&mut Ctx<'_>) -> Result<Result<T, StoreError>, Fatal> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job = Submitted {
        work: Some(work),
        out: None,
        reply,
        request_id,
    };
    (Box::new(job), rx)
}

struct Submitted<F, T> {
    work: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    request_id: Option<String>,
}

impl<T, F> Task for Submitted<F, T>
where
    T: Send + 'static,
    F: FnOnce(&mut Ctx<'_>) -> Result<Result<T, StoreError>, Fatal> + Send + 'static,
{
    fn run(&mut self, ctx: &mut Ctx<'_>) -> Result<Ran, Fatal> {
        let work = self
            .work
            .take()
            .ok_or_else(|| Fatal::Bookkeeping("a job was run twice".into()))?;
        let out = work(ctx)?;
        let ran = match &out {
            Err(e) if e.status() >= 500 => Ran::ServerFault(e.to_string()),
            _ => Ran::Answered,
        };
        self.out = Some(out);
        Ok(ran)
    }

    fn answer(self: Box<Self>, fate: Fate) {
        let answer = match fate {
            Fate::Committed => self.out.unwrap_or(Err(StoreError::Unavailable)),
            Fate::Failed(e) => Err(e),
        };
        // The caller may have gone (client disconnected); nothing to tell.
        let _ = self.reply.send(answer);
    }

    fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
}

/// Batches in a row that may fail to commit before the writer gives up: a
/// storage that refuses every commit is better restarted (and noticed) than
/// left answering 503.
const GIVE_UP_AFTER_FAILED_BATCHES: u32 = 5;

/// Slots whose counts may wait in memory for the batch's end. Before each job
/// the writer copies those counts (to undo the job if it fails); past this
/// many, it writes them first, which keeps that copy small.
const UNSAVED_SLOTS_BEFORE_FLUSH: usize = 32;

pub(crate) struct Writer {
    pub conn: Connection,
    pub state: State,
    pub shared: Arc<Shared>,
    pub clock: Clock,
    pub hold_ttl_ms: i64,
    pub max_batch: usize,
    pub data_version: i64,
    pub horizon_days: i64,
    pub offers: Arc<super::waitlist::OfferSettings>,
    /// The WAL's bound, kept between batches.
    pub wal: super::checkpoint::WalBound,
}

impl Writer {
    /// Applies jobs until every sender is gone (`Ok`) or the writer cannot go
    /// on (`Err` with the reason).
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>) -> Result<(), String> {
        let mut batch: Vec<Job> = Vec::with_capacity(self.max_batch);
        let mut failed_in_a_row = 0;
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if self.run_batch(&mut batch) {
                failed_in_a_row = 0;
            } else {
                failed_in_a_row += 1;
                if failed_in_a_row >= GIVE_UP_AFTER_FAILED_BATCHES {
                    return Err(format!(
                        "{failed_in_a_row} batches in a row could not be committed"
                    ));
                }
            }
            failpoint::panic_if("writer_after_batch");
        }
        tracing::info!("writer stopped");
        Ok(())
    }

    /// Runs and answers one batch; `false` if it could not be committed.
    fn run_batch(&mut self, batch: &mut Vec<Job>) -> bool {
        let size = batch.len();
        let started = Instant::now();
        let mut failures: Vec<Option<StoreError>> = Vec::with_capacity(size);
        let committed = match self.apply(batch, &mut failures) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, jobs = size, "batch failed; rolled back, reloading state");
                metrics::counter!("tessera_batches_failed_total").increment(1);
                self.reload();
                false
            }
        };
        if committed {
            if let Err(e) = self.state.publish(&self.conn, &self.shared) {
                tracing::error!(error = %e, "could not publish committed state");
            }
        }
        let mut failures = failures.into_iter();
        for job in batch.drain(..) {
            let fate = match failures.next().flatten() {
                _ if !committed => Fate::Failed(StoreError::Unavailable),
                Some(failure) => Fate::Failed(failure),
                None => Fate::Committed,
            };
            job.answer(fate);
        }
        metrics::histogram!("tessera_commit_batch_jobs").record(size as f64);
        metrics::histogram!("tessera_commit_seconds").record(started.elapsed().as_secs_f64());
        // Outside the batch's transaction, after its callers are answered.
        self.wal.keep(&self.conn);
        committed
    }

    /// Runs every job of the batch in one transaction and commits it. Pushes,
    /// per job, `Some(answer)` for a job that failed and was rolled back.
    fn apply(
        &mut self,
        batch: &mut [Job],
        failures: &mut Vec<Option<StoreError>>,
    ) -> Result<(), Fatal> {
        let now_ms = self.clock.now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process (an admin command) committed since our last batch:
        // our copy is stale, so rebuild it inside this write lock.
        let version: i64 = tx.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if version != self.data_version {
            let mut fresh =
                State::load(&tx, now_ms).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
            fresh.last_sync = std::mem::take(&mut self.state.last_sync);
            fresh.notes_since(&mut self.state);
            self.state = fresh;
            self.data_version = version;
            tracing::info!("database changed by another process; state reloaded");
        }
        sweep_expired_holds(&tx, &mut self.state, now_ms)?;
        let limits = JobLimits {
            now_ms,
            hold_ttl_ms: self.hold_ttl_ms,
            horizon_days: self.horizon_days,
            batch_jobs: batch.len(),
        };
        // Places the sweep freed go to the waiting lines before any job can
        // sell them; places the jobs freed, before the batch commits.
        offer_returned_places(&tx, &mut self.state, &limits, &self.offers)?;
        for job in batch.iter_mut() {
            failures.push(run_contained(&tx, &mut self.state, &limits, job.as_mut())?);
        }
        offer_returned_places(&tx, &mut self.state, &limits, &self.offers)?;
        flush(&tx, &mut self.state)?;
        failpoint::hit("before_commit")?;
        tx.commit()?;
        Ok(())
    }

    fn reload(&mut self) {
        let now_ms = self.clock.now_ms();
        match State::load(&self.conn, now_ms) {
            Ok(mut state) => {
                state.last_sync = std::mem::take(&mut self.state.last_sync);
                state.notes_since(&mut self.state);
                self.state = state;
            }
            Err(e) => tracing::error!(error = %e, "state reload failed; keeping the previous copy"),
        }
    }

    /// Rebuilds the in-memory state from the transaction after a change made
    /// by admin code paths (revocations), keeping what only memory knows.
    pub fn reload_in(ctx: &mut Ctx<'_>) -> Result<(), Fatal> {
        // What earlier jobs of this batch changed in memory only must reach
        // the transaction first, or the reload would forget it.
        flush(ctx.tx, ctx.state)?;
        let mut fresh =
            State::load(ctx.tx, ctx.now_ms).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
        fresh.last_sync = std::mem::take(&mut ctx.state.last_sync);
        fresh.notes_since(ctx.state);
        *ctx.state = fresh;
        Ok(())
    }

    /// Runs periodically: keeps slots generated `horizon_days` ahead, forgets
    /// "my booking" tokens nobody came back for, and drops idempotency
    /// records older than a day.
    pub fn housekeeping(ctx: &mut Ctx<'_>) -> Result<(), Fatal> {
        let horizon_days = ctx.horizon_days;
        let today = ctx
            .state
            .tz
            .to_datetime(tessera_core::clock::from_ms(ctx.now_ms))
            .date();
        let added = super::admin::ensure_slots(ctx.tx, &ctx.state.catalogue, today, horizon_days)?;
        if added > 0 {
            Writer::reload_in(ctx)?;
            tracing::info!(added, "generated slots ahead");
        }
        super::waitlist::close_past_lines(ctx)?;
        forget_unclaimed_booking_tokens(ctx)?;
        super::idempotency::prune(ctx)
    }
}

fn forget_unclaimed_booking_tokens(ctx: &mut Ctx<'_>) -> Result<(), Fatal> {
    ctx.tx
        .prepare_cached(
            "UPDATE payments SET booking_token = NULL
             WHERE booking_token IS NOT NULL AND COALESCE(paid_at, created_at) <= ?1",
        )?
        .execute(params![tessera_core::booking::unclaimed_tokens_before(
            ctx.now_ms
        )])?;
    Ok(())
}

/// What every job of one batch shares.
struct JobLimits {
    now_ms: i64,
    hold_ttl_ms: i64,
    horizon_days: i64,
    batch_jobs: usize,
}

/// Runs one job under its own savepoint, catching its panics. `Ok(None)`: the
/// job stands. `Ok(Some(answer))`: it failed and was undone, database and
/// memory, and `answer` is what its caller gets. `Err`: the undo itself
/// failed, and the batch cannot be trusted.
fn run_contained(
    tx: &Transaction<'_>,
    state: &mut State,
    limits: &JobLimits,
    job: &mut dyn Task,
) -> Result<Option<StoreError>, Fatal> {
    if state.unsaved_slots.len() > UNSAVED_SLOTS_BEFORE_FLUSH {
        flush(tx, state)?;
    }
    let undo = UnsavedCounts::copy(state);
    tx.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = {
        let mut ctx = Ctx {
            tx,
            state: &mut *state,
            now_ms: limits.now_ms,
            hold_ttl_ms: limits.hold_ttl_ms,
            horizon_days: limits.horizon_days,
        };
        catch_unwind(AssertUnwindSafe(|| job.run(&mut ctx)))
    };
    let fault = match result {
        Ok(Ok(Ran::Answered)) => None,
        Ok(Ok(Ran::ServerFault(message))) => Some(message),
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(format!("panicked: {}", panic_message(panic.as_ref()))),
    };
    let Some(fault) = fault else {
        tx.prepare_cached("RELEASE job")?.execute([])?;
        return Ok(None);
    };
    // If SQLite already rolled the whole transaction back (I/O error, disk
    // full), the savepoint is gone and this fails the batch, as it must.
    tx.execute_batch("ROLLBACK TO job; RELEASE job")?;
    rebuild(tx, state, undo, limits.now_ms)?;
    let request_id = job
        .request_id()
        .map(str::to_owned)
        .unwrap_or_else(|| tessera_core::ids::new_id().simple().to_string());
    tracing::error!(
        request_id = %request_id,
        error = %fault,
        batch_jobs = limits.batch_jobs,
        "job failed; rolled back alone, the rest of its batch goes on"
    );
    metrics::counter!("tessera_jobs_failed_total").increment(1);
    Ok(Some(StoreError::Internal { request_id }))
}

/// Offers free places to waiting lines (`waitlist`), contained like a job:
/// if it fails it is rolled back alone and logged, and the batch goes on.
fn offer_returned_places(
    tx: &Transaction<'_>,
    state: &mut State,
    limits: &JobLimits,
    settings: &Arc<super::waitlist::OfferSettings>,
) -> Result<(), Fatal> {
    let settings = Arc::clone(settings);
    let (mut offering, _unread) = job(
        move |ctx| super::waitlist::offer_returned_places(ctx, &settings),
        None,
    );
    run_contained(tx, state, limits, offering.as_mut())?;
    Ok(())
}

/// The text of a panic's payload (what `panic!` was given), for the log.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// The counts that jobs change in memory and `flush` writes only at the end
/// of the batch, as they stood before a job: the one part of the state that
/// rolling back the job's savepoint cannot restore.
struct UnsavedCounts {
    slots: Vec<(SlotId, Option<u32>, Option<SlotTally>)>,
}

impl UnsavedCounts {
    fn copy(state: &State) -> UnsavedCounts {
        let slots = state
            .unsaved_slots
            .iter()
            .map(|id| {
                (
                    *id,
                    state.slots.get(id).map(|row| row.ledger.sold_online),
                    state.tallies.0.get(id).cloned(),
                )
            })
            .collect();
        UnsavedCounts { slots }
    }

    fn restore(self, state: &mut State) {
        for (id, sold_online, tally) in self.slots {
            if let (Some(row), Some(sold)) = (state.slots.get_mut(&id), sold_online) {
                row.ledger.sold_online = sold;
            }
            match tally {
                Some(t) => state.tallies.0.insert(id, t),
                None => state.tallies.0.remove(&id),
            };
            state.unsaved_slots.insert(id);
        }
    }
}

/// The state as it was before the failed job: everything but the unsaved
/// counts comes back from the rows (the job's own writes are rolled back);
/// slots the batch had not touched in memory match their rows already; the
/// unsaved counts come from the copy taken before the job. What only memory
/// keeps and no job's failure can corrupt (when counters last synced) is kept.
fn rebuild(
    tx: &Transaction<'_>,
    state: &mut State,
    undo: UnsavedCounts,
    now_ms: i64,
) -> Result<(), Fatal> {
    let mut fresh = State::load(tx, now_ms).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
    // Older slots an earlier job loaded on demand must stay, or their
    // unsaved counts would never be written.
    for (id, _, _) in &undo.slots {
        fresh.ensure_slot(tx, *id)?;
    }
    fresh.last_sync = std::mem::take(&mut state.last_sync);
    // What the batch's good jobs told devices (a void, a key) still goes
    // out after the commit; a failed job's note costs at most one sync.
    fresh.device_notes = std::mem::take(&mut state.device_notes);
    fresh.unsaved_slots.clear();
    undo.restore(&mut fresh);
    *state = fresh;
    Ok(())
}

/// Writes what jobs changed only in memory: per slot, the online sold count
/// and the CRDT tally state.
fn flush(tx: &Transaction<'_>, state: &mut State) -> Result<(), Fatal> {
    for slot in state.unsaved_slots.drain() {
        let Some(row) = state.slots.get(&slot) else {
            continue;
        };
        tx.prepare_cached("UPDATE slots SET sold_online = ?2 WHERE slot_id = ?1")?
            .execute(params![Text(&slot), row.ledger.sold_online])?;
        if let Some(tally) = state.tallies.0.get(&slot) {
            let json =
                serde_json::to_string(tally).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
            tx.prepare_cached(
                "INSERT INTO tallies (slot_id, state) VALUES (?1, ?2)
                 ON CONFLICT (slot_id) DO UPDATE SET state = excluded.state",
            )?
            .execute(params![Text(&slot), json])?;
        }
    }
    Ok(())
}

fn sweep_expired_holds(tx: &Transaction<'_>, state: &mut State, now_ms: i64) -> Result<(), Fatal> {
    while let Some(&(expires, hold_id)) = state.expiry.first() {
        if hold_is_open(expires, now_ms) {
            break;
        }
        state.expiry.pop_first();
        if let Some(hold) = state.holds.remove(&hold_id) {
            state.hold_closed(hold_id);
            tx.prepare_cached(
                "UPDATE holds SET status = 'expired' WHERE hold_id = ?1 AND status = 'held'",
            )?
            .execute(params![Text(&hold_id)])?;
            if let Some(row) = state.slots.get_mut(&hold.slot) {
                // Runs before every batch, outside any job: an inconsistent
                // count here must not fail every batch (and, after a restart
                // that finds the same hold, every batch again). Keeping the
                // places counted as held errs towards selling less, never
                // more; the next reload recounts them from the holds table.
                if let Err(e) = row.ledger.release_hold(hold.admissions) {
                    tracing::error!(%hold_id, slot = %hold.slot, error = %e, "expired hold did not match the slot's held count; left counted");
                    metrics::counter!("tessera_bookkeeping_errors_total").increment(1);
                }
            }
            state.dirty_slots.insert(hold.slot);
            metrics::counter!("tessera_holds_expired_total").increment(1);
        }
    }
    Ok(())
}
