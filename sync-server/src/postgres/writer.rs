//! Group commit on PostgreSQL, one writer task per process.
//!
//! The writer owns one connection. It takes every job waiting (up to
//! `max_batch`) and opens one transaction. The batch's holds and
//! confirmations are decided together (`batch`): a few multi-row statements
//! whatever the batch's size, over the slot rows it locks in slot order. If
//! that fails for any reason but a conflict, the transaction is dropped and
//! the same jobs run again one at a time, each a batch of one under its own
//! savepoint, so the job at fault fails alone and the others commit. One NOTIFY names the slots the
//! batch changed; then COMMIT, and only then is each job answered. Sweeps
//! and cancellations run afterwards, each in a transaction of its own that
//! takes its slot rows first. A deadlock or serialization failure aborts
//! the whole transaction: the batch is run again from the start (every job
//! is written to be re-run), a few times, before its jobs are answered 503.
//! A lost connection answers the batch 503 and reconnects: if the COMMIT
//! had reached the server, a client retrying with its Idempotency-Key gets
//! the committed answer. A statement or lock timeout (a slot row held by
//! another session past `lock_timeout`, see `connector`) rolls the whole
//! batch back and answers its jobs 503, keeping the connection: running it
//! again, together or one at a time, would only wait out the same lock
//! again while every job behind it queues; the clients retry with their
//! keys.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_core::slot::SlotId;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};

use super::batch;
use super::cache::{slots_payload, Cache, CachedSlot};
use super::connector::Connector;
use super::online::{self, Env, Job, JobError, Reply, Statements};
use super::schema::CHANGES;
use crate::store::StoreError;

/// How often a batch that lost a deadlock or a serialization conflict runs
/// again before its jobs are answered 503.
const BATCH_ATTEMPTS: u32 = 8;

/// The steps of a batch whose wall time the writer adds up, so that the
/// bench (`pg-spike`, from /metrics) and a debug log can say where a
/// batch's time goes.
#[derive(Clone, Copy, Debug)]
pub enum Phase {
    /// Idle, waiting for the first job of the next batch.
    Wait,
    /// BEGIN.
    Begin,
    /// Claiming the Idempotency-Keys (and reading first answers).
    Claim,
    /// Locking the slot rows.
    Lock,
    /// Confirming holds, expiring the ones due, reading why others fail.
    Confirm,
    /// Core's ledger over the locked rows (no database).
    Decide,
    /// The pipelined multi-row writes.
    Write,
    /// Jobs that are not decided together, and the one-call fallback.
    Other,
    Notify,
    Commit,
    /// Updating this process's view and sending the answers.
    Answer,
}

const PHASES: [Phase; 11] = [
    Phase::Wait,
    Phase::Begin,
    Phase::Claim,
    Phase::Lock,
    Phase::Confirm,
    Phase::Decide,
    Phase::Write,
    Phase::Other,
    Phase::Notify,
    Phase::Commit,
    Phase::Answer,
];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Wait => "wait",
            Phase::Begin => "begin",
            Phase::Claim => "claim",
            Phase::Lock => "lock",
            Phase::Confirm => "confirm",
            Phase::Decide => "decide",
            Phase::Write => "write",
            Phase::Other => "other",
            Phase::Notify => "notify",
            Phase::Commit => "commit",
            Phase::Answer => "answer",
        }
    }
}

/// Wall time per phase of one batch: each `mark` charges the time since
/// the previous mark to the phase that just ended.
pub struct Phases {
    last: Instant,
    spent: [Duration; PHASES.len()],
}

impl Phases {
    fn start() -> Phases {
        Phases {
            last: Instant::now(),
            spent: [Duration::ZERO; PHASES.len()],
        }
    }

    pub fn mark(&mut self, phase: Phase) {
        let now = Instant::now();
        self.spent[phase as usize] += now - self.last;
        self.last = now;
    }

    /// Counters in microseconds (`tessera_pg_batch_phase_us_total`), and a
    /// debug line per batch.
    fn record(&self, jobs: usize) {
        metrics::counter!("tessera_pg_batches_total").increment(1);
        metrics::counter!("tessera_pg_batch_jobs_total").increment(jobs as u64);
        for phase in PHASES {
            let us = self.spent[phase as usize].as_micros();
            metrics::counter!("tessera_pg_batch_phase_us_total", "phase" => phase.name())
                .increment(u64::try_from(us).unwrap_or(u64::MAX));
        }
        if tracing::enabled!(tracing::Level::DEBUG) {
            let ms = |p: Phase| self.spent[p as usize].as_secs_f64() * 1000.0;
            tracing::debug!(
                jobs,
                wait_ms = ms(Phase::Wait),
                begin_ms = ms(Phase::Begin),
                claim_ms = ms(Phase::Claim),
                lock_ms = ms(Phase::Lock),
                confirm_ms = ms(Phase::Confirm),
                decide_ms = ms(Phase::Decide),
                write_ms = ms(Phase::Write),
                other_ms = ms(Phase::Other),
                notify_ms = ms(Phase::Notify),
                commit_ms = ms(Phase::Commit),
                answer_ms = ms(Phase::Answer),
                "batch"
            );
        }
    }
}

pub struct Queued {
    pub job: Job,
    /// The request's id, for the log line of a job that fails.
    pub request_id: Option<String>,
    pub reply: oneshot::Sender<Result<Reply, StoreError>>,
}

/// What one job did inside the batch, before the commit.
pub struct Done {
    pub reply: Result<Reply, StoreError>,
    /// Keep the job's writes (RELEASE) or drop them (ROLLBACK TO).
    pub keep: bool,
    pub slots: Vec<CachedSlot>,
}

impl Done {
    pub fn keep(reply: Reply, slots: Vec<CachedSlot>) -> Done {
        Done {
            reply: Ok(reply),
            keep: true,
            slots,
        }
    }

    pub fn discard(reply: Result<Reply, StoreError>) -> Done {
        Done {
            reply,
            keep: false,
            slots: Vec::new(),
        }
    }
}

/// How a batch's holds and confirmations run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Decided together, a few multi-row statements for the whole batch
    /// (`batch`).
    Together,
    /// One job at a time, each under its own savepoint.
    OneByOne,
}

/// Why a batch did not commit.
enum BatchError {
    /// Deciding the batch together failed (not a conflict): run it again
    /// one job at a time.
    OneByOne(JobError),
    /// Deadlock or serialization failure: run it again.
    Conflict(tokio_postgres::Error),
    /// A session time limit ran out: rolled back, answered 503.
    Timeout(tokio_postgres::Error),
    /// The connection (or the database) is gone.
    Connection(tokio_postgres::Error),
}

fn classify(e: tokio_postgres::Error) -> BatchError {
    match e.code() {
        Some(code) if *code == SqlState::T_R_DEADLOCK_DETECTED => BatchError::Conflict(e),
        Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE => BatchError::Conflict(e),
        _ if super::schema::is_timeout(&e) => BatchError::Timeout(e),
        _ => BatchError::Connection(e),
    }
}

fn is_conflict(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

pub struct Writer {
    pub connector: Connector,
    pub env: Arc<Env>,
    pub cache: Arc<Cache>,
    pub max_batch: usize,
}

impl Writer {
    pub async fn run(self, mut jobs: mpsc::Receiver<Queued>) {
        let mut client: Option<(Client, Statements)> = None;
        let mut backoff = Duration::from_millis(50);
        // Jobs held over to the next batch: a retry that arrived while the
        // first request with its Idempotency-Key was in the same batch. Run
        // after that batch commits, it replays the first answer (the way the
        // SQLite writer answers it) instead of being refused.
        let mut held_over: VecDeque<Queued> = VecDeque::new();
        let mut phases = Phases::start();
        loop {
            let first = match held_over.pop_front() {
                Some(job) => job,
                None => match jobs.recv().await {
                    Some(job) => job,
                    None => break,
                },
            };
            phases.mark(Phase::Wait);
            let batch = fill_batch(
                first,
                &mut held_over,
                || jobs.try_recv().ok(),
                queued_key,
                self.max_batch,
            );
            let conn = match client.as_mut().filter(|(c, _)| !c.is_closed()) {
                Some(c) => c,
                None => match connect_prepared(&self.connector).await {
                    Ok(c) => {
                        backoff = Duration::from_millis(50);
                        client.insert(c)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the writer cannot reach PostgreSQL");
                        answer_all(batch, || StoreError::Unavailable);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                },
            };
            // The same names as the SQLite writer's: one dashboard for both.
            metrics::histogram!("tessera_commit_batch_jobs").record(batch.len() as f64);
            let jobs_in_batch = batch.len();
            // Sweeps and cancellations lock hold rows before slot rows; in
            // the batch's transaction, after its slots were locked in order,
            // they would make two processes' writers wait for each other.
            // They run after it, each in a transaction of its own.
            let (together, apart): (Vec<Queued>, Vec<Queued>) = batch
                .into_iter()
                .partition(|q| !matches!(q.job, Job::Sweep | Job::CancelHold { .. }));
            if !together.is_empty() {
                let started = std::time::Instant::now();
                self.commit_batch(&mut conn.0, &conn.1, together, &mut phases)
                    .await;
                metrics::histogram!("tessera_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
            }
            for queued in apart {
                self.commit_batch(&mut conn.0, &conn.1, vec![queued], &mut phases)
                    .await;
            }
            if client.as_ref().is_some_and(|(c, _)| c.is_closed()) {
                client = None;
            }
            phases.record(jobs_in_batch);
            phases = Phases::start();
        }
    }

    async fn commit_batch(
        &self,
        client: &mut Client,
        st: &Statements,
        batch: Vec<Queued>,
        phases: &mut Phases,
    ) {
        let mut attempt = 0;
        let mut mode = Mode::Together;
        loop {
            attempt += 1;
            match self.run_batch(client, st, &batch, mode, phases).await {
                Ok(done) => {
                    let mut changed = Vec::new();
                    let mut answers = Vec::with_capacity(done.len());
                    for d in done {
                        changed.extend(d.slots);
                        answers.push(d.reply);
                    }
                    // Our own answers first: a visitor who was just
                    // answered 201 sees it in this process's availability.
                    self.cache.apply(changed);
                    for (queued, answer) in batch.into_iter().zip(answers) {
                        let _ = queued.reply.send(answer);
                    }
                    phases.mark(Phase::Answer);
                    return;
                }
                Err(BatchError::OneByOne(e)) => {
                    // Rolled back (the transaction is dropped); the same jobs
                    // again, one at a time, so that the one at fault fails
                    // alone.
                    metrics::counter!("tessera_pg_batch_one_by_one_total").increment(1);
                    tracing::warn!(error = %e, jobs = batch.len(), "deciding a batch together failed; running its jobs one at a time");
                    mode = Mode::OneByOne;
                    attempt -= 1;
                }
                Err(BatchError::Conflict(e)) if attempt < BATCH_ATTEMPTS => {
                    metrics::counter!("tessera_pg_batch_retries_total").increment(1);
                    tracing::debug!(error = %e, attempt, jobs = batch.len(), "batch lost a conflict; running it again");
                    // Out of step with the other process before trying again.
                    let jitter = u64::from(crate::secrets::random_bytes::<1>()[0]) % 20;
                    tokio::time::sleep(Duration::from_millis(attempt as u64 * 5 + jitter)).await;
                }
                Err(BatchError::Conflict(e)) => {
                    tracing::warn!(error = %e, jobs = batch.len(), "batch kept losing conflicts; answered 503");
                    answer_all(batch, || StoreError::Unavailable);
                    return;
                }
                Err(BatchError::Timeout(e)) => {
                    metrics::counter!("tessera_pg_batch_timeouts_total").increment(1);
                    tracing::warn!(error = %super::schema::loggable(&e), jobs = batch.len(), "batch ran out of time; rolled back, answered 503");
                    answer_all(batch, || StoreError::Unavailable);
                    return;
                }
                Err(BatchError::Connection(e)) => {
                    tracing::warn!(error = %e, jobs = batch.len(), "batch failed on the connection; answered 503");
                    answer_all(batch, || StoreError::Unavailable);
                    return;
                }
            }
        }
    }

    async fn run_batch(
        &self,
        client: &mut Client,
        st: &Statements,
        jobs: &[Queued],
        mode: Mode,
        phases: &mut Phases,
    ) -> Result<Vec<Done>, BatchError> {
        let mut tx = client.transaction().await.map_err(classify)?;
        phases.mark(Phase::Begin);
        let now_ms = self.env.clock.now_ms();
        let mut done: Vec<Option<Done>> = jobs.iter().map(|_| None).collect();
        // Slots whose NOTIFY the batch already sent with its writes.
        let mut notified = BTreeSet::new();
        let calls: Vec<(usize, &Job)> = jobs
            .iter()
            .enumerate()
            .filter(|(_, q)| q.job.is_one_call())
            .map(|(i, q)| (i, &q.job))
            .collect();
        if !calls.is_empty() {
            let answers = match mode {
                Mode::Together => {
                    match batch::run(&tx, st, &self.env, &calls, now_ms, phases).await {
                        Ok((answers, sent)) => {
                            notified = sent;
                            answers
                        }
                        Err(JobError::Pg(e))
                            if is_conflict(&e)
                                || e.is_closed()
                                || super::schema::is_timeout(&e) =>
                        {
                            return Err(classify(e))
                        }
                        Err(e) => return Err(BatchError::OneByOne(e)),
                    }
                }
                Mode::OneByOne => {
                    self.one_batch_each(&mut tx, st, jobs, &calls, now_ms, phases, &mut notified)
                        .await?
                }
            };
            for (i, d) in answers {
                done[i] = Some(d);
            }
        }
        for (i, queued) in jobs.iter().enumerate() {
            if done[i].is_none() {
                done[i] = Some(self.run_job(&mut tx, queued, now_ms).await?);
            }
        }
        let done: Vec<Done> = done.into_iter().flatten().collect();
        phases.mark(Phase::Other);
        let dirty: BTreeSet<SlotId> = done
            .iter()
            .flat_map(|d| d.slots.iter().map(|s| s.slot.id))
            .collect();
        if !dirty.is_subset(&notified) {
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANGES, &slots_payload(&dirty)],
            )
            .await
            .map_err(classify)?;
        }
        phases.mark(Phase::Notify);
        tx.commit().await.map_err(classify)?;
        phases.mark(Phase::Commit);
        Ok(done)
    }

    /// Each hold and confirmation decided alone, as a batch of one under a
    /// savepoint of its own: the way a batch runs when deciding it together
    /// failed, so that the job at fault fails alone and the others commit.
    /// The same rules decide (`batch`, core's ledger), one job at a time.
    #[allow(clippy::too_many_arguments)]
    async fn one_batch_each(
        &self,
        tx: &mut Transaction<'_>,
        st: &Statements,
        jobs: &[Queued],
        calls: &[(usize, &Job)],
        now_ms: i64,
        phases: &mut Phases,
        notified: &mut BTreeSet<SlotId>,
    ) -> Result<Vec<(usize, Done)>, BatchError> {
        let mut out = Vec::with_capacity(calls.len());
        for &(i, job) in calls {
            let sp = tx.savepoint("one").await.map_err(classify)?;
            match batch::run(&sp, st, &self.env, &[(i, job)], now_ms, phases).await {
                Ok((answers, sent)) => {
                    sp.commit().await.map_err(classify)?;
                    notified.extend(sent);
                    out.extend(answers);
                }
                Err(e) => {
                    let e = aborting(e)?;
                    // Its NOTIFY, if it sent one, goes with the savepoint.
                    sp.rollback().await.map_err(classify)?;
                    out.push((i, self.job_failed(&jobs[i], &e)));
                }
            }
        }
        Ok(out)
    }

    /// One job under its own savepoint.
    async fn run_job(
        &self,
        tx: &mut Transaction<'_>,
        queued: &Queued,
        now_ms: i64,
    ) -> Result<Done, BatchError> {
        let job = &queued.job;
        let sp = tx.savepoint("job").await.map_err(classify)?;
        match online::run(&sp, &self.env, job, now_ms).await {
            Ok(done) if done.keep => {
                sp.commit().await.map_err(classify)?;
                Ok(done)
            }
            Ok(done) => {
                sp.rollback().await.map_err(classify)?;
                Ok(done)
            }
            Err(e) => {
                let e = aborting(e)?;
                sp.rollback().await.map_err(classify)?;
                Ok(self.job_failed(queued, &e))
            }
        }
    }

    fn job_failed(&self, queued: &Queued, e: &JobError) -> Done {
        let request_id = queued
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
        tracing::error!(error = %e, %request_id, job = ?queued.job, "a job failed in PostgreSQL; rolled back alone");
        Done::discard(Err(StoreError::Internal { request_id }))
    }
}

/// What a job's error means for its batch: a conflict, a time limit or a
/// lost connection aborts the whole transaction (run again, or answer 503);
/// anything else (a bug, a broken constraint such as the oversell CHECK) is
/// the job's alone: it is rolled back to its savepoint, changes nothing, and
/// the batch goes on.
fn aborting(e: JobError) -> Result<JobError, BatchError> {
    match e {
        JobError::Pg(e) if is_conflict(&e) => Err(BatchError::Conflict(e)),
        JobError::Pg(e) if super::schema::is_timeout(&e) => Err(BatchError::Timeout(e)),
        JobError::Pg(e) if e.is_closed() => Err(BatchError::Connection(e)),
        other => Ok(other),
    }
}

fn queued_key(q: &Queued) -> Option<&[u8]> {
    q.job.key_hash()
}

/// A batch: `first`, then up to `max_batch - 1` more jobs, those held over
/// before the new ones (`incoming`). A job whose Idempotency-Key is already
/// in the batch is held over to a later batch. At most `max_batch` jobs are
/// held over again from the old ones and at most `max_batch` from the new
/// ones per batch, so that a flood of retries under one key costs each batch
/// a bounded scan (not the whole queue) and new jobs still get in.
fn fill_batch<T>(
    first: T,
    held_over: &mut VecDeque<T>,
    mut incoming: impl FnMut() -> Option<T>,
    key: impl Fn(&T) -> Option<&[u8]>,
    max_batch: usize,
) -> Vec<T> {
    let mut keys: HashSet<Vec<u8>> = HashSet::new();
    if let Some(k) = key(&first) {
        keys.insert(k.to_vec());
    }
    let mut batch = vec![first];
    let mut next_round: VecDeque<T> = VecDeque::new();
    let mut take = |job: T, batch: &mut Vec<T>, next_round: &mut VecDeque<T>| match key(&job) {
        Some(k) if !keys.insert(k.to_vec()) => next_round.push_back(job),
        _ => batch.push(job),
    };
    while batch.len() < max_batch && next_round.len() < max_batch {
        let Some(job) = held_over.pop_front() else {
            break;
        };
        take(job, &mut batch, &mut next_round);
    }
    let held_before = next_round.len();
    while batch.len() < max_batch && next_round.len() - held_before < max_batch {
        let Some(job) = incoming() else { break };
        take(job, &mut batch, &mut next_round);
    }
    // What was held over and not looked at keeps its place ahead of what
    // was held over now.
    held_over.extend(next_round);
    batch
}

async fn connect_prepared(
    connector: &Connector,
) -> Result<(Client, Statements), crate::postgres::PgError> {
    let client = connector.connect("writer").await?;
    Ok((client, Statements::default()))
}

fn answer_all(batch: Vec<Queued>, error: impl Fn() -> StoreError) {
    for q in batch {
        let _ = q.reply.send(Err(error()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type J = (u32, Option<Vec<u8>>);

    fn key(j: &J) -> Option<&[u8]> {
        j.1.as_deref()
    }

    #[test]
    fn a_flood_under_one_key_is_scanned_a_batch_at_a_time() {
        let max = 4;
        let mut held_over: VecDeque<J> = (0..1000).map(|i| (i, Some(b"k".to_vec()))).collect();
        let mut new: VecDeque<J> = (1000..1010).map(|i| (i, None)).collect();
        let mut pulled = 0;
        let first = held_over.pop_front().unwrap();
        let batch = fill_batch(
            first,
            &mut held_over,
            || {
                pulled += 1;
                new.pop_front()
            },
            key,
            max,
        );
        // One job of the flood, the new ones behind it up to the batch's size.
        let ids: Vec<u32> = batch.iter().map(|j| j.0).collect();
        assert_eq!(ids, vec![0, 1000, 1001, 1002]);
        assert_eq!(pulled, 3);
        // Looked at: `max` of the flood, held over again behind the rest.
        assert_eq!(held_over.len(), 999);
        assert_eq!(held_over.front().unwrap().0, 1 + max as u32);
        assert_eq!(held_over.back().unwrap().0, max as u32);
    }

    #[test]
    fn new_jobs_under_a_key_in_the_batch_are_held_over_boundedly() {
        let max = 3;
        let mut held_over: VecDeque<J> = VecDeque::new();
        let mut new: VecDeque<J> = (1..100).map(|i| (i, Some(b"k".to_vec()))).collect();
        let batch = fill_batch(
            (0, Some(b"k".to_vec())),
            &mut held_over,
            || new.pop_front(),
            key,
            max,
        );
        assert_eq!(batch.len(), 1);
        assert_eq!(held_over.len(), max);
        assert_eq!(new.len(), 99 - max);
    }

    #[test]
    fn distinct_keys_fill_the_batch_in_order() {
        let mut held_over: VecDeque<J> =
            vec![(1, Some(b"a".to_vec())), (2, Some(b"b".to_vec()))].into();
        let mut new: VecDeque<J> = vec![
            (3, Some(b"a".to_vec())),
            (4, None),
            (5, Some(b"c".to_vec())),
        ]
        .into();
        let batch = fill_batch((0, None), &mut held_over, || new.pop_front(), key, 8);
        let ids: Vec<u32> = batch.iter().map(|j| j.0).collect();
        assert_eq!(ids, vec![0, 1, 2, 4, 5]);
        let held: Vec<u32> = held_over.iter().map(|j| j.0).collect();
        assert_eq!(held, vec![3]);
    }
}
