//! `POST /v1/sync` on PostgreSQL: one counter's round, load → decide →
//! write, with every decision one of `tessera_core`'s rules (`upload::batch`
//! judges the body, `leases` counts sales and voids and sizes leases,
//! `reconcile` folds lease reports and over-capacity flags), exactly as the
//! SQLite backend (`sqlite/sync/`) calls them. Nothing here decides
//! inventory: it loads the facts a rule needs and writes what it decided.
//!
//! A round runs in a transaction of its own, on a connection of its own
//! (a small pool of them), not in the online writer's group commit: counters
//! sync every few seconds, a few rounds a second at most, and a round reads
//! much more than a hold does. How it shares the inventory with every other
//! process:
//! - the counter's `device_sync` row is locked first (`FOR UPDATE`, inserted
//!   if missing), so one counter's uploads are judged one round at a time
//!   even when its rounds reach two processes at once; the second round
//!   finds the first one's sales stored and acknowledges them as repeats;
//! - every slot whose `leased` or `over_capacity` a round may change (the
//!   slots of the sales, voids and lease reports it carries, and those where
//!   sizing is about to grant) is locked in one statement, in slot-id order,
//!   before any lease row is read or written, as the online writer's batch
//!   and the hold sweep lock them: no deadlock with either. A lease row is
//!   only written with its slot's row locked, so a revocation (which locks
//!   the slot too) never interleaves with a round's count;
//! - sizing is decided on the locked rows; a slot that only looked worth a
//!   grant after the locks were taken waits for the next round (seconds);
//! - changed slot rows bump `version` and the transaction NOTIFYs them, so
//!   every process's cache re-reads them (and the counters' tallies);
//! - a deadlock or serialization failure runs the round again (twice at
//!   most), then answers 503: the counter retries, and its upload is
//!   idempotent by sale id and seq.
//!
//! Settled leases drop out of the round as on SQLite: the counter's leases
//! are read from its live slots (`UNIQUE (device_id, slot_id)`) and the
//! `leases_unsettled` index, a slot's leases through `leases_by_slot`.
//!
//! The round's steps are one `impl Round` each: `load` (locks and reads),
//! `judge`, `apply`, `sizing` (grants, recalls, lease steps) and `answer`.
//!
//! Tallies: the `tallies` table holds the counters' actors only (each one's
//! totals derived from the sales log); online sales are the slot row's
//! `sold_online`, added as the online actor when a tally is answered.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use tessera_core::api::online::SlotAvailability;
use tessera_core::api::sync::{
    ActorTally, Quarantined, SaleRecord, SyncRequest, SyncResponse, VoidRecord,
};
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::{from_ms, Clock};
use tessera_core::ids::new_id;
use tessera_core::inventory::{InventoryError, LeasePolicy, LeaseTotals};
use tessera_core::leases::{self, LeaseState, Sizing, SlotChange, SlotToSize};
use tessera_core::reconcile;
use tessera_core::slot::SlotId;
use tessera_core::tally::{Tallies, ONLINE_ACTOR};
use tessera_core::ticket_code::KeyRing;
use tessera_core::upload::batch::{
    self, BatchRefusal, Judging, KnownSale, LeaseAtUpload, Plan, Quarantine, SaleFacts, VoidCheck,
    VoidPlan, VoidTarget, Write,
};
use tessera_core::upload::{self, LeaseEvent, LeaseStep, StoredApproval, VoidPlaces};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row, Transaction};
use uuid::Uuid;

use super::cache::{slot_from_row, slots_payload, Cache, CachedSlot, SLOT_COLUMNS};
use super::pool::Pool;
use super::schema::{self, CHANGES};
use crate::store::{DeviceInfo, Refusal, StoreError};
use crate::uploads::{Acks, QuarantineItem};

mod answer;
mod apply;
mod judge;
mod load;
mod sizing;

pub use answer::OPEN_QUARANTINE_SQL;
pub use apply::{MAX_SEQ_SQL, RECEIVED_SEQS_SQL, TALLY_SQL};

/// Quarantined uploads listed back to their counter in one answer.
const QUARANTINE_LISTED: i64 = 1000;
/// Rounds run again after a deadlock or serialization failure.
const RETRIES: usize = 2;

/// Leases whose slot is over and that nothing can change any more are
/// settled; the others match the partial index `leases_unsettled`. The SQL
/// twin of core's `LeaseState::is_settled` for a slot that is over
/// (tests/pg_plans.rs holds them together, lease state by lease state).
/// PostgreSQL matches a partial index's condition against the query's
/// clauses as written (no rewriting of `… > sold` as SQLite does), so this
/// is, word for word, the condition of `leases_unsettled` (V3).
pub const UNSETTLED_SQL: &str =
    "revoked_escrow IS NULL AND (granted_total - released_total > sold OR unused_reported > 0)";

pub(super) const LEASE_COLUMNS: &str = "lease_id, device_id, slot_id, granted_total, released_total, sold, unused_reported, revoked_escrow, kept";

/// A counter's leases a round loads (`$1` the device, `$2` the first live
/// slot): those of its live slots, through the `(device_id, slot_id)` key,
/// and its unsettled older ones, through `leases_unsettled` (a BitmapOr of
/// the two), never every lease the counter ever held.
pub fn own_leases_sql() -> String {
    format!(
        "SELECT {LEASE_COLUMNS} FROM leases WHERE device_id = $1 AND (slot_id >= $2 OR ({UNSETTLED_SQL}))"
    )
}

/// Every lease of the slots named (`$1`), through `leases_by_slot`.
pub fn slot_leases_sql() -> String {
    format!("SELECT {LEASE_COLUMNS} FROM leases WHERE slot_id = ANY($1)")
}

/// Why a round failed (not a refusal: those are answers).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("PostgreSQL: {}", super::schema::loggable(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("bookkeeping: {0}")]
    Bookkeeping(String),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
}

impl SyncError {
    /// A conflict with another transaction: running the round again is
    /// the cure.
    fn is_conflict(&self) -> bool {
        match self {
            SyncError::Db(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
            ),
            _ => false,
        }
    }

    fn into_service(self) -> StoreError {
        match self {
            SyncError::Db(e) if e.as_db_error().is_none() => {
                tracing::warn!(error = %e, "counter sync: PostgreSQL out of reach");
                StoreError::Unavailable
            }
            SyncError::Db(e) if schema::is_timeout(&e) => {
                // A slot or lease row held elsewhere past `lock_timeout`
                // (or a statement past `statement_timeout`): the round is
                // rolled back whole and the counter sends it again, its
                // upload being idempotent.
                tracing::warn!(error = %schema::loggable(&e), "counter sync ran out of time; the counter retries");
                metrics::counter!("tessera_pg_sync_timeouts_total").increment(1);
                StoreError::Unavailable
            }
            e if e.is_conflict() => {
                tracing::warn!(error = %e, "counter sync kept conflicting; the counter retries");
                StoreError::Unavailable
            }
            e => {
                tracing::error!(error = %e, "counter sync failed");
                StoreError::Storage("counter sync failed".into())
            }
        }
    }
}

type R<T> = Result<T, SyncError>;

fn bookkeeping(what: impl std::fmt::Display) -> SyncError {
    SyncError::Bookkeeping(what.to_string())
}

fn i32_of(n: u32) -> R<i32> {
    i32::try_from(n).map_err(|_| bookkeeping(format!("{n} does not fit a column")))
}

fn i64_of(n: u64) -> R<i64> {
    i64::try_from(n).map_err(|_| bookkeeping(format!("{n} does not fit a column")))
}

fn u32_at(row: &Row, i: usize) -> R<u32> {
    let v: i32 = row.try_get(i)?;
    u32::try_from(v).map_err(|_| bookkeeping(format!("negative count {v} in the database")))
}

fn u64_at(row: &Row, i: usize) -> R<u64> {
    let v: i64 = row.try_get(i)?;
    u64::try_from(v).map_err(|_| bookkeeping(format!("negative number {v} in the database")))
}

fn slot_at(row: &Row, i: usize) -> R<SlotId> {
    let text: String = row.try_get(i)?;
    text.parse()
        .map_err(|_| bookkeeping(format!("stored slot id {text:?} does not parse")))
}

fn json<T: serde::Serialize>(value: &T) -> R<String> {
    serde_json::to_string(value).map_err(bookkeeping)
}

pub(super) fn lease_from_row(r: &Row) -> R<LeaseState> {
    let revoked: Option<i32> = r.try_get(7)?;
    let kept: i32 = r.try_get(8)?;
    Ok(LeaseState {
        lease_id: r.try_get(0)?,
        device_id: r.try_get(1)?,
        slot: slot_at(r, 2)?,
        totals: LeaseTotals {
            granted_total: u32_at(r, 3)?,
            released_total: u32_at(r, 4)?,
        },
        sold: u32_at(r, 5)?,
        unused_reported: u32_at(r, 6)?,
        revoked_escrow: revoked
            .map(u32::try_from)
            .transpose()
            .map_err(|_| bookkeeping("negative revoked escrow"))?,
        kept: u32::try_from(kept).map_err(|_| bookkeeping("negative kept places"))?,
    })
}

fn cached_slot(row: &Row) -> R<CachedSlot> {
    slot_from_row(row).ok_or_else(|| bookkeeping("a slot row does not parse"))
}

/// What the counters' rounds share in one process.
pub struct Counters {
    /// The process's pool: a round borrows one connection for its whole
    /// transaction.
    pool: Arc<Pool>,
    catalogue: Arc<Catalogue>,
    catalogue_version: u64,
    tz: TimeZone,
    policy: LeasePolicy,
    cache: Arc<Cache>,
}

impl Counters {
    pub(super) fn new(
        pool: Arc<Pool>,
        catalogue: Arc<Catalogue>,
        catalogue_version: u64,
        policy: LeasePolicy,
        cache: Arc<Cache>,
    ) -> Result<Counters, schema::PgError> {
        let tz = catalogue
            .time_zone()
            .map_err(|e| schema::PgError::BadCatalogue(e.to_string()))?;
        Ok(Counters {
            pool,
            catalogue,
            catalogue_version,
            tz,
            policy,
            cache,
        })
    }

    /// One counter's round, run again on a conflict with another process.
    pub async fn sync(
        &self,
        clock: &Clock,
        device: &DeviceInfo,
        mut request: SyncRequest,
    ) -> Result<SyncResponse, StoreError> {
        if request.device_id != device.device_id.0 {
            return Err(Refusal::Forbidden(format!(
                "this token belongs to device {}, but the body is for {}",
                device.device_id, request.device_id
            ))
            .into());
        }
        // Repeats dropped by the normaliser are acknowledged all the same, so
        // the counter stops sending them.
        let void_ids: Vec<Uuid> = request.voids.iter().map(|v| v.void_id).collect();
        let shift_ids: Vec<Uuid> = request.shifts.iter().map(|s| s.shift_id).collect();
        upload::normalise_body(&mut request).map_err(|e| Refusal::Invalid(e.to_string()))?;
        let mut attempt = 0;
        loop {
            let mut client = self.pool.get().await?;
            let outcome = self
                .round(
                    &mut client,
                    device.device_id.0,
                    &request,
                    &void_ids,
                    &shift_ids,
                    clock.now_ms(),
                )
                .await;
            if let Ok((_, _, notified)) = &outcome {
                // This process sees its own changes at once (the counters'
                // tallies too, so its availability never shows a sale
                // before its tally); the others when the NOTIFY reaches them.
                if !notified.is_empty() {
                    if let Err(e) = self
                        .cache
                        .reload_counter_sold(&*client, Some(notified))
                        .await
                    {
                        tracing::warn!(error = %e, "re-reading tallies failed; the listener will");
                    }
                }
            }
            drop(client);
            match outcome {
                Ok((answer, changed, _)) => {
                    self.cache.apply(changed);
                    return answer;
                }
                Err(e) if e.is_conflict() && attempt < RETRIES => {
                    attempt += 1;
                    tracing::info!(error = %e, attempt, "counter sync conflicted; running it again");
                    metrics::counter!("tessera_pg_sync_retries_total").increment(1);
                }
                Err(e) => return Err(e.into_service()),
            }
        }
    }

    async fn round(
        &self,
        client: &mut Client,
        device: Uuid,
        request: &SyncRequest,
        void_ids: &[Uuid],
        shift_ids: &[Uuid],
        now_ms: i64,
    ) -> R<(
        Result<SyncResponse, StoreError>,
        Vec<CachedSlot>,
        Vec<String>,
    )> {
        let tx = client.transaction().await?;
        let today = self.tz.to_datetime(from_ms(now_ms)).date();
        let mut round = Round {
            c: self,
            tx: &tx,
            device,
            now_ms,
            today,
            slots: BTreeMap::new(),
            locked: BTreeSet::new(),
            leases: HashMap::new(),
            moved: BTreeSet::new(),
            notify: BTreeSet::new(),
        };
        round.lock_device().await?;
        round.load_and_lock(request).await?;
        let plan = match round.judge(request).await? {
            Ok(plan) => plan,
            Err(refusal) => {
                tx.rollback().await?;
                return Ok((Err(refusal), Vec::new(), Vec::new()));
            }
        };
        let acks = round
            .apply(request, plan, void_ids.to_vec(), shift_ids.to_vec())
            .await?;
        let recalls = round.size_leases(request).await?;
        round.record_lease_steps(request).await?;
        let changed = round.write_slots().await?;
        let response = round.respond(request, acks, recalls).await?;
        let notified = round.notify.iter().map(ToString::to_string).collect();
        tx.commit().await?;
        Ok((Ok(response), changed, notified))
    }
}

fn refusal(r: BatchRefusal) -> StoreError {
    if r.is_forbidden() {
        StoreError::from(Refusal::Forbidden(r.to_string()))
    } else {
        StoreError::from(Refusal::Invalid(r.to_string()))
    }
}

/// One round's transaction and what it loaded.
struct Round<'r, 't> {
    c: &'r Counters,
    tx: &'r Transaction<'t>,
    device: Uuid,
    now_ms: i64,
    today: Date,
    /// Slot rows: fresh and locked for those in `locked`, read without a
    /// lock (for sizing's recalls and the answer) for the others.
    slots: BTreeMap<SlotId, CachedSlot>,
    locked: BTreeSet<SlotId>,
    /// Every lease of every slot in `slots` (fresh for locked slots).
    leases: HashMap<Uuid, LeaseState>,
    /// Locked slots whose ledger this round changed.
    moved: BTreeSet<SlotId>,
    /// Slots every process must re-read (ledger or tally changed).
    notify: BTreeSet<SlotId>,
}
