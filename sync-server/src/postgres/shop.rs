//! What the web shop's writes on PostgreSQL share (`checkout`, `waitlist`,
//! `outbox`): a pooled connection each, one transaction per request, the
//! Idempotency-Key claimed in the `idempotency` table, and the slot rows
//! locked and changed the way the writer's batches do it.
//!
//! Why not the group-commit writer: payments, bookings, mail and the waiting
//! list are a handful of writes per visitor (a checkout, one callback, maybe
//! a cancellation), not the hot path of a sell-out. Each runs in a
//! transaction of its own on a connection borrowed from the process's pool
//! (`pool`: as many at once as it lends), and commits before it answers. Across processes they keep
//! the writer's rules, so no two processes deadlock or oversell:
//!
//! - the Idempotency-Key row is inserted first (as a batch claims its keys
//!   first); a key held by another process's open transaction makes the
//!   insert wait for that commit, then answer from it;
//! - slot rows are locked `FOR UPDATE`, in slot-id order, before any hold,
//!   payment, order or waiting-list row;
//! - counts are decided by core's ledger over the locked rows and written
//!   back with `version` bumped; the transaction NOTIFYs the slots it
//!   changed, so every process's cache re-reads them;
//! - a deadlock, a serialization failure or a lost race on a unique index
//!   runs the whole transaction again (every step is written to be re-run);
//! - a statement or lock timeout rolls it back and answers 503.

use std::collections::BTreeMap;
use std::time::Duration;

use tessera_core::inventory::{InventoryError, SlotLedger};
use tessera_core::slot::SlotId;
use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;

use super::cache::{slot_from_row, slots_payload, CachedSlot, SLOT_COLUMNS};
use super::online::{worth_recording, JobError};
use super::schema::{self, CHANGES};
use crate::store::{Answer, Idem, Refusal, StoreError};

pub(super) type PgResult<T> = Result<T, JobError>;

/// How often a shop transaction that lost a conflict runs again.
const ATTEMPTS: u32 = 8;

/// The slot rows a transaction changed, for its NOTIFY and this process's
/// cache.
#[derive(Default)]
pub(super) struct Changes {
    pub slots: Vec<CachedSlot>,
}

impl Changes {
    pub fn add(&mut self, rows: impl IntoIterator<Item = CachedSlot>) {
        self.slots.extend(rows);
    }

    pub async fn notify(&self, tx: &Transaction<'_>) -> PgResult<()> {
        if self.slots.is_empty() {
            return Ok(());
        }
        let ids: std::collections::BTreeSet<SlotId> =
            self.slots.iter().map(|s| s.slot.id).collect();
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANGES, &slots_payload(&ids)],
        )
        .await?;
        Ok(())
    }
}

/// How a shop transaction ended.
pub(super) enum Settle<T> {
    Done(Result<T, StoreError>),
    /// Lost a conflict: run it again.
    Retry,
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::UNIQUE_VIOLATION
    })
}

pub(super) fn settle<T>(
    result: PgResult<Result<T, StoreError>>,
    attempt: u32,
    what: &str,
) -> Settle<T> {
    match result {
        Ok(answer) => Settle::Done(answer),
        Err(JobError::Pg(e)) if retryable(&e) && attempt < ATTEMPTS => {
            tracing::debug!(error = %schema::loggable(&e), attempt, what, "shop transaction lost a conflict; again");
            Settle::Retry
        }
        Err(JobError::Pg(e)) if schema::is_timeout(&e) => {
            tracing::warn!(error = %schema::loggable(&e), what, "shop transaction ran out of time; rolled back");
            Settle::Done(Err(StoreError::Unavailable))
        }
        Err(JobError::Pg(e)) if e.is_closed() || e.code().is_none() => {
            tracing::warn!(error = %schema::loggable(&e), what, "shop transaction failed on the connection");
            Settle::Done(Err(StoreError::Unavailable))
        }
        Err(e) => {
            let request_id = crate::request_id::current_request_id()
                .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
            tracing::error!(error = %e, %request_id, what, "shop transaction failed; rolled back");
            Settle::Done(Err(StoreError::Internal { request_id }))
        }
    }
}

/// A pause out of step with the other process before running again.
pub(super) async fn back_off(attempt: u32) {
    let jitter = u64::from(crate::secrets::random_bytes::<1>()[0]) % 20;
    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5 + jitter)).await;
}

/// Runs `$body` (using `$tx`, the transaction, and `$changes`, the slots it
/// changed; it evaluates to `PgResult<Result<T, StoreError>>`) in a
/// transaction of its own on a connection from `$store.pool`, committed with its NOTIFY, run
/// again when it loses a conflict. Evaluates to `Result<T, StoreError>`.
/// A macro rather than a function taking an async closure, whose future
/// could not be proven `Send` for the `Store` trait.
macro_rules! in_transaction {
    ($store:expr, $what:expr, |$tx:ident, $changes:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut client = match $store.pool.get().await {
                Ok(client) => client,
                Err(e) => break Err($crate::store::StoreError::from(e)),
            };
            let mut $changes = $crate::postgres::shop::Changes::default();
            let result: $crate::postgres::shop::PgResult<_> = async {
                let $tx = client.transaction().await?;
                let answer = $body?;
                $changes.notify(&$tx).await?;
                $tx.commit().await?;
                Ok(answer)
            }
            .await;
            drop(client);
            // Only committed rows reach the cache: a rolled-back row's version
            // would shadow the next commit of that version by any process.
            let committed = result.is_ok();
            match $crate::postgres::shop::settle(result, attempt, $what) {
                $crate::postgres::shop::Settle::Done(answer) => {
                    if committed {
                        $store.cache.apply($changes.slots);
                    }
                    break answer;
                }
                $crate::postgres::shop::Settle::Retry => {
                    $crate::postgres::shop::back_off(attempt).await;
                }
            }
        }
    }};
}
pub(super) use in_transaction;

/// Claims an Idempotency-Key for this transaction: `None` when it is new
/// (the caller goes on), else the answer to give (the first one, or why
/// not).
pub(super) async fn claim_key(
    tx: &Transaction<'_>,
    idem: &Idem,
    now_ms: i64,
) -> PgResult<Option<Result<Answer, StoreError>>> {
    let key = crate::secrets::hash(&idem.key);
    let fresh = tx
        .execute(
            "INSERT INTO idempotency (key_hash, request_hash, status, body, created_at)
             VALUES ($1, $2, 0, 'null', $3) ON CONFLICT (key_hash) DO NOTHING",
            &[&key, &idem.request_hash, &now_ms],
        )
        .await?;
    if fresh == 1 {
        return Ok(None);
    }
    let row = tx
        .query_opt(
            "SELECT request_hash, status, body FROM idempotency WHERE key_hash = $1",
            &[&key],
        )
        .await?;
    Ok(Some(match row {
        // Pruned in between: the client's retry finds the key new.
        None => Err(StoreError::Unavailable),
        Some(r) if r.get::<_, Vec<u8>>(0) != idem.request_hash => {
            Err(Refusal::IdempotencyKeyReused.into())
        }
        // Only a transaction that has not committed holds a claimed key.
        Some(r) if r.get::<_, i16>(1) == 0 => Err(StoreError::Unavailable),
        Some(r) => {
            metrics::counter!("tessera_idempotent_replays_total").increment(1);
            Ok(Answer {
                status: u16::try_from(r.get::<_, i16>(1)).unwrap_or(500),
                body: r.get(2),
                replayed: true,
            })
        }
    }))
}

/// Records the answer under the key when it is worth replaying (the same
/// rule as the writer's), else forgets the key.
pub(super) async fn settle_key(
    tx: &Transaction<'_>,
    idem: &Idem,
    outcome: Result<(u16, serde_json::Value), StoreError>,
) -> PgResult<Result<Answer, StoreError>> {
    let key = crate::secrets::hash(&idem.key);
    let (status, body) = match outcome {
        Ok(ok) => ok,
        Err(e) if worth_recording(&e) => (e.status(), e.body()),
        Err(e) => {
            tx.execute("DELETE FROM idempotency WHERE key_hash = $1", &[&key])
                .await?;
            return Ok(Err(e));
        }
    };
    tx.execute(
        "UPDATE idempotency SET status = $2, body = $3 WHERE key_hash = $1",
        &[&key, &i16::try_from(status).unwrap_or(500), &body],
    )
    .await?;
    Ok(Ok(Answer {
        status,
        body,
        replayed: false,
    }))
}

/// Slot rows locked by this transaction, by id.
pub(super) type Locked = BTreeMap<String, CachedSlot>;

/// Locks the slot rows `ids` (in slot-id order, as every batch takes them)
/// and reads them.
pub(super) async fn lock_slots(tx: &Transaction<'_>, ids: &[String]) -> PgResult<Locked> {
    let rows = tx
        .query(
            &format!(
                "SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = ANY($1) ORDER BY slot_id FOR UPDATE"
            ),
            &[&ids],
        )
        .await?;
    let mut locked = Locked::new();
    for row in &rows {
        let slot = slot_from_row(row)
            .ok_or_else(|| JobError::Bookkeeping("a slot row does not parse".into()))?;
        locked.insert(slot.slot.id.to_string(), slot);
    }
    Ok(locked)
}

fn count(n: u32) -> PgResult<i32> {
    i32::try_from(n).map_err(|_| JobError::Bookkeeping(format!("a slot count {n} is out of range")))
}

/// Applies core's ledger rule `rule` to a locked slot and, if it allows it,
/// writes the new counts (version bumped). `Ok(Err)`: the rule refused and
/// nothing was written.
pub(super) async fn change_slot(
    tx: &Transaction<'_>,
    changes: &mut Changes,
    slot: &mut CachedSlot,
    rule: impl FnOnce(&mut SlotLedger) -> Result<(), InventoryError>,
) -> PgResult<Result<(), InventoryError>> {
    let mut ledger = slot.ledger;
    if let Err(e) = rule(&mut ledger) {
        return Ok(Err(e));
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE slots SET held_online = $2, sold_online = $3, version = version + 1
                 WHERE slot_id = $1 RETURNING {SLOT_COLUMNS}"
            ),
            &[
                &slot.slot.id.to_string(),
                &count(ledger.held_online)?,
                &count(ledger.sold_online)?,
            ],
        )
        .await?;
    let fresh = slot_from_row(&row)
        .ok_or_else(|| JobError::Bookkeeping("a slot row does not parse".into()))?;
    *slot = fresh.clone();
    changes.add([fresh]);
    Ok(Ok(()))
}

/// Like [`change_slot`] for a rule that cannot refuse here (the caller
/// checked): a refusal is a bookkeeping error, rolled back.
pub(super) async fn must_change_slot(
    tx: &Transaction<'_>,
    changes: &mut Changes,
    slot: &mut CachedSlot,
    rule: impl FnOnce(&mut SlotLedger) -> Result<(), InventoryError>,
) -> PgResult<()> {
    change_slot(tx, changes, slot, rule)
        .await?
        .map_err(|e| JobError::Bookkeeping(e.to_string()))
}

/// A hold's places given back (`status`: expired or cancelled), if it is
/// still open; its slot must be in `locked`.
pub(super) async fn release_hold(
    tx: &Transaction<'_>,
    changes: &mut Changes,
    locked: &mut Locked,
    hold_id: uuid::Uuid,
    status: &str,
    process: &str,
) -> PgResult<bool> {
    let row = tx
        .query_opt(
            "UPDATE holds SET status = $2, released_by = $3
             WHERE hold_id = $1 AND status = 'held' RETURNING slot_id, admissions",
            &[&hold_id, &status, &process],
        )
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let slot_id: String = row.get(0);
    let admissions = u32::try_from(row.get::<_, i32>(1))
        .map_err(|_| JobError::Bookkeeping("a hold's admissions are negative".into()))?;
    let slot = locked.get_mut(&slot_id).ok_or_else(|| {
        JobError::Bookkeeping(format!("hold {hold_id}'s slot {slot_id} was not locked"))
    })?;
    must_change_slot(tx, changes, slot, |l| l.release_hold(admissions)).await?;
    Ok(true)
}
