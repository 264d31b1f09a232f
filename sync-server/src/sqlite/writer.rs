//! The single writer: it owns the connection and applies jobs in batches.
//!
//! Group commit: the writer takes every job that is waiting (up to a limit),
//! runs them all in one transaction, commits once (one fsync), and only then
//! answers each of them. Requests that arrive during an fsync form the next
//! batch, so under load many bookings share one fsync; with no load a batch is
//! one job and nothing waits. `CommitMode::PerRequest` caps batches at one job,
//! for comparison; both modes are equally durable.

use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use tokio::sync::mpsc;

use super::state::{Shared, State};
use tessera_core::clock::Clock;

/// An error that aborts the whole batch: the transaction is rolled back, the
/// in-memory state reloaded, and every job in the batch answered "unavailable".
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

/// Sent after the batch's fate is known: `true` once committed.
pub(crate) type Reply = Box<dyn FnOnce(bool) + Send>;
pub(crate) type Job = Box<dyn FnOnce(&mut Ctx<'_>) -> Result<Reply, Fatal> + Send>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    Group,
    PerRequest,
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub state: State,
    pub shared: Arc<Shared>,
    pub clock: Clock,
    pub hold_ttl_ms: i64,
    pub max_batch: usize,
    pub data_version: i64,
    pub horizon_days: i64,
}

impl Writer {
    pub fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(self.max_batch);
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.run_batch(&mut batch);
        }
        tracing::info!("writer stopped");
    }

    fn run_batch(&mut self, batch: &mut Vec<Job>) {
        let size = batch.len();
        let started = Instant::now();
        let mut replies: Vec<Reply> = Vec::with_capacity(size);
        let outcome = self.apply(batch, &mut replies);
        let committed = match outcome {
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
        batch.clear();
        for reply in replies {
            reply(committed);
        }
        metrics::histogram!("tessera_commit_batch_jobs").record(size as f64);
        metrics::histogram!("tessera_commit_seconds").record(started.elapsed().as_secs_f64());
    }

    fn apply(&mut self, batch: &mut Vec<Job>, replies: &mut Vec<Reply>) -> Result<(), Fatal> {
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
            self.state = fresh;
            self.data_version = version;
            tracing::info!("database changed by another process; state reloaded");
        }
        sweep_expired_holds(&tx, &mut self.state, now_ms)?;
        let mut ctx = Ctx {
            tx: &tx,
            state: &mut self.state,
            now_ms,
            hold_ttl_ms: self.hold_ttl_ms,
            horizon_days: self.horizon_days,
        };
        for job in batch.drain(..) {
            match job(&mut ctx) {
                Ok(reply) => replies.push(reply),
                // The jobs not yet run are dropped with the drain; their
                // callers see the reply channel close and answer "unavailable".
                Err(e) => return Err(e),
            }
        }
        flush(&tx, &mut self.state)?;
        tx.commit()?;
        Ok(())
    }

    fn reload(&mut self) {
        let now_ms = self.clock.now_ms();
        match State::load(&self.conn, now_ms) {
            Ok(mut state) => {
                state.last_sync = std::mem::take(&mut self.state.last_sync);
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
        *ctx.state = fresh;
        Ok(())
    }

    /// Runs periodically: keeps slots generated `horizon_days` ahead and drops
    /// idempotency records older than a day.
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
        super::idempotency::prune(ctx)
    }
}

/// Writes what jobs changed only in memory: per slot, the online sold count
/// and the CRDT tally state.
fn flush(tx: &Transaction<'_>, state: &mut State) -> Result<(), Fatal> {
    for slot in state.unsaved_slots.drain() {
        let Some(row) = state.slots.get(&slot) else {
            continue;
        };
        tx.prepare_cached("UPDATE slots SET sold_online = ?2 WHERE slot_id = ?1")?
            .execute(params![slot.to_string(), row.ledger.sold_online])?;
        if let Some(tally) = state.tallies.0.get(&slot) {
            let json =
                serde_json::to_string(tally).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
            tx.prepare_cached(
                "INSERT INTO tallies (slot_id, state) VALUES (?1, ?2)
                 ON CONFLICT (slot_id) DO UPDATE SET state = excluded.state",
            )?
            .execute(params![slot.to_string(), json])?;
        }
    }
    Ok(())
}

fn sweep_expired_holds(tx: &Transaction<'_>, state: &mut State, now_ms: i64) -> Result<(), Fatal> {
    while let Some(&(expires, hold_id)) = state.expiry.first() {
        if expires > now_ms {
            break;
        }
        state.expiry.pop_first();
        if let Some(hold) = state.holds.remove(&hold_id) {
            tx.prepare_cached(
                "UPDATE holds SET status = 'expired' WHERE hold_id = ?1 AND status = 'held'",
            )?
            .execute(params![hold_id.to_string()])?;
            if let Some(row) = state.slots.get_mut(&hold.slot) {
                row.ledger.release_hold(hold.admissions)?;
            }
            state.dirty_slots.insert(hold.slot);
            metrics::counter!("tessera_holds_expired_total").increment(1);
        }
    }
    Ok(())
}
