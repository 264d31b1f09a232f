//! `POST /v1/sync` on PostgreSQL: one counter's round, load → decide →
//! write, with every decision one of `tessera_core`'s rules (`upload::batch`
//! judges the body, `leases` counts sales and voids and sizes leases,
//! `reconcile` folds lease reports and over-capacity flags), exactly as the
//! SQLite backend (`sqlite/sync.rs`) calls them. Nothing here decides
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
//! Tallies: the `tallies` table holds the counters' actors only (each one's
//! totals derived from the sales log); online sales are the slot row's
//! `sold_online`, added as the online actor when a tally is answered.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use tessera_core::api::online::SlotAvailability;
use tessera_core::api::sync::{
    ActorTally, LeaseGrant, Quarantined, SaleRecord, ShiftRecord, SyncRequest, SyncResponse,
    VoidRecord,
};
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::{from_ms, Clock};
use tessera_core::ids::new_id;
use tessera_core::inventory::{InventoryError, LeasePolicy, LeaseTotals};
use tessera_core::leases::{self, LeaseState, Sizing, SlotChange, SlotToSize};
use tessera_core::limits;
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

/// Quarantined uploads listed back to their counter in one answer.
const QUARANTINE_LISTED: i64 = 1000;
/// Rounds run again after a deadlock or serialization failure.
const RETRIES: usize = 2;

/// Leases whose slot is over and that nothing can change any more are
/// settled; the others match the partial index `leases_unsettled`.
pub(super) const UNSETTLED_SQL: &str =
    "revoked_escrow IS NULL AND (granted_total - released_total > sold OR unused_reported > 0)";

pub(super) const LEASE_COLUMNS: &str = "lease_id, device_id, slot_id, granted_total, released_total, sold, unused_reported, revoked_escrow, kept";

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

/// What the answer acknowledges.
struct Acks {
    acked_seq: u64,
    sales_stored: u32,
    sales_duplicate: u32,
    voids: Vec<Uuid>,
    shifts: Vec<Uuid>,
}

/// An upload set aside for a supervisor, as it is written.
struct QItem {
    kind: &'static str,
    id: Uuid,
    seq: Option<u64>,
    slot: Option<SlotId>,
    reason: String,
    body: String,
    device_at: Option<i64>,
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

impl Round<'_, '_> {
    // ---- locks and loads ----

    /// Serialises this counter's rounds across processes.
    async fn lock_device(&self) -> R<()> {
        self.tx
            .execute(
                "INSERT INTO device_sync (device_id, last_sync_at) VALUES ($1, $2) ON CONFLICT (device_id) DO NOTHING",
                &[&self.device, &self.now_ms],
            )
            .await?;
        self.tx
            .query_one(
                "SELECT 1 FROM device_sync WHERE device_id = $1 FOR UPDATE",
                &[&self.device],
            )
            .await?;
        Ok(())
    }

    fn first_live_slot(&self) -> R<SlotId> {
        leases::first_live_slot(self.today).map_err(bookkeeping)
    }

    /// Loads the counter's live leases and the slots the round concerns,
    /// then locks (in slot order) the slots it may change and re-reads them
    /// and their leases.
    async fn load_and_lock(&mut self, request: &SyncRequest) -> R<()> {
        let first = self.first_live_slot()?.to_string();
        let own = self
            .tx
            .query(
                &format!(
                    "SELECT {LEASE_COLUMNS} FROM leases WHERE device_id = $1 AND (slot_id >= $2 OR ({UNSETTLED_SQL}))"
                ),
                &[&self.device, &first],
            )
            .await?;
        for row in &own {
            let lease = lease_from_row(row)?;
            self.leases.insert(lease.lease_id, lease);
        }
        // Slots the upload changes: its sales', its reports', its voids'
        // (as stored, whatever the body claims).
        let mut upload: BTreeSet<SlotId> = BTreeSet::new();
        upload.extend(request.sales.iter().map(|s| s.slot_id));
        upload.extend(request.leases.iter().map(|l| l.slot_id));
        let named: Vec<Uuid> = request
            .sales
            .iter()
            .map(|s| s.lease_id)
            .chain(request.leases.iter().map(|l| l.lease_id))
            .filter(|id| !self.leases.contains_key(id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !named.is_empty() {
            for row in self
                .tx
                .query(
                    "SELECT slot_id FROM leases WHERE lease_id = ANY($1)",
                    &[&named],
                )
                .await?
            {
                upload.insert(slot_at(&row, 0)?);
            }
        }
        let voided: Vec<Uuid> = request.voids.iter().map(|v| v.sale_id).collect();
        if !voided.is_empty() {
            for row in self
                .tx
                .query(
                    "SELECT DISTINCT slot_id FROM sales WHERE sale_id = ANY($1)",
                    &[&voided],
                )
                .await?
            {
                upload.insert(slot_at(&row, 0)?);
            }
        }
        // Slots sizing looks at, and those of the counter's leases (the
        // answer says which are over); read without a lock.
        let mut seen: BTreeSet<SlotId> = request.wants.iter().map(|w| w.slot_id).collect();
        seen.extend(self.leases.values().map(|l| l.slot));
        self.read_slots(&seen, false).await?;
        let predicted = self.predicted_grants(request).await?;
        let lock: BTreeSet<SlotId> = upload.union(&predicted).copied().collect();
        self.read_slots(&lock, true).await?;
        Ok(())
    }

    /// Reads slot rows and all their leases; `lock`: `FOR UPDATE`, in slot
    /// order, before any lease row.
    async fn read_slots(&mut self, ids: &BTreeSet<SlotId>, lock: bool) -> R<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let sql = if lock {
            format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = ANY($1) ORDER BY slot_id FOR UPDATE")
        } else {
            format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = ANY($1)")
        };
        for row in self.tx.query(&sql, &[&ids]).await? {
            let slot = cached_slot(&row)?;
            if lock {
                self.locked.insert(slot.slot.id);
            }
            self.slots.insert(slot.slot.id, slot);
        }
        for row in self
            .tx
            .query(
                &format!("SELECT {LEASE_COLUMNS} FROM leases WHERE slot_id = ANY($1)"),
                &[&ids],
            )
            .await?
        {
            let lease = lease_from_row(&row)?;
            self.leases.insert(lease.lease_id, lease);
        }
        Ok(())
    }

    /// Counters heard from recently, this one included.
    async fn online_devices(&self) -> R<HashSet<Uuid>> {
        let rows = self
            .tx
            .query(
                "SELECT device_id, last_sync_at FROM device_sync WHERE last_sync_at >= $1",
                &[&(self.now_ms - leases::ONLINE_WINDOW_MS)],
            )
            .await?;
        let mut last: HashMap<Uuid, i64> = HashMap::with_capacity(rows.len() + 1);
        for row in &rows {
            last.insert(row.try_get(0)?, row.try_get(1)?);
        }
        last.insert(self.device, self.now_ms);
        Ok(leases::online_devices(&last, self.now_ms))
    }

    /// The slots to size for this counter (`leases::slots_to_size`) and what
    /// a sale there waits for.
    fn slots_to_size(&self, request: &SyncRequest) -> BTreeMap<SlotId, u32> {
        leases::slots_to_size(
            &request.wants,
            &self.c.catalogue,
            |s| self.slots.get(s).map(|row| row.ledger.available()),
            self.leases.values().filter(|l| l.device_id == self.device),
        )
    }

    fn decide_size(&self, slot: SlotId, need: u32, online: &HashSet<Uuid>) -> Option<Sizing> {
        let row = self.slots.get(&slot)?;
        let of_slot: Vec<&LeaseState> = self.leases.values().filter(|l| l.slot == slot).collect();
        leases::size_slot(
            &self.c.policy,
            &SlotToSize {
                device: self.device,
                need,
                ends_at_ms: row.slot.ends_at.as_millisecond(),
                available: row.ledger.available(),
                leases: &of_slot,
                online,
                now_ms: self.now_ms,
            },
        )
    }

    /// Slots where sizing, on rows read without a lock, would grant: they
    /// are locked with the upload's slots and sized again on fresh rows.
    async fn predicted_grants(&self, request: &SyncRequest) -> R<BTreeSet<SlotId>> {
        let online = self.online_devices().await?;
        Ok(self
            .slots_to_size(request)
            .into_iter()
            .filter(|(slot, need)| {
                self.decide_size(*slot, *need, &online)
                    .is_some_and(|s| s.decision.grant > 0)
            })
            .map(|(slot, _)| slot)
            .collect())
    }

    // ---- judge: load the facts of each item, let `Judging` decide ----

    async fn judge(&self, request: &SyncRequest) -> R<Result<Plan, StoreError>> {
        let mut judging = Judging::new(request, self.device);
        if let Err(r) = self.judge_sales(request, &mut judging).await? {
            return Ok(Err(refusal(r)));
        }
        self.judge_voids(request, &mut judging).await?;
        // Each lease's new sales and voids replayed against the lease as it
        // stood at each sale's seq.
        let events =
            judging.lease_events(|id| self.leases.get(id).is_some_and(LeaseState::is_revoked));
        let at_upload = self.leases_at_upload(&events).await?;
        judging.settle(batch::replay_leases(&events, &at_upload));
        Ok(judging.finish(|id| self.leases.get(id)).map_err(refusal))
    }

    async fn judge_sales(
        &self,
        request: &SyncRequest,
        judging: &mut Judging<'_>,
    ) -> R<Result<(), BatchRefusal>> {
        let keyring = self.device_keyring().await?;
        let mut older: HashMap<u64, Option<Catalogue>> = HashMap::new();
        for (i, sale) in request.sales.iter().enumerate() {
            match judging.is_new(i, self.known_sale(sale.sale_id).await?) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(r) => return Ok(Err(r)),
            }
            if let Err(r) = judging.seq_is_free(i, self.seq_taken_by(sale.terminal_seq).await?) {
                return Ok(Err(r));
            }
            let tickets_stored = self.stored_tickets(sale).await?;
            let version = sale.catalogue_version;
            if version != 0 && version != self.c.catalogue_version && !older.contains_key(&version)
            {
                let loaded = self.catalogue_version(version).await?;
                older.insert(version, loaded);
            }
            let catalogue = if version == 0 || version == self.c.catalogue_version {
                Some(self.c.catalogue.as_ref())
            } else {
                older.get(&version).and_then(Option::as_ref)
            };
            let facts = SaleFacts {
                catalogue,
                slot_window_minutes: self.slots.get(&sale.slot_id).map(|s| s.slot.window_minutes),
                lease: self.leases.get(&sale.lease_id),
                tickets_stored: &tickets_stored,
            };
            judging.judge_sale(i, &facts, &keyring);
        }
        Ok(Ok(()))
    }

    /// Voids: of this counter's sales, once each, decided by the server.
    async fn judge_voids(&self, request: &SyncRequest, judging: &mut Judging<'_>) -> R<()> {
        for (i, v) in request.voids.iter().enumerate() {
            if self.void_known(v.void_id).await? {
                continue;
            }
            let target = match judging.void_target_here(v.sale_id) {
                Some(target) => target,
                None => self.stored_void_target(v.sale_id).await?,
            };
            let Some(check) = judging.judge_void(i, target) else {
                continue;
            };
            // Only a void the server approved (the supervisor's PIN checked
            // by the server, never by the counter) is applied.
            if let Err(reason) =
                upload::check_void_approval(self.device, v, self.stored_approval(v).await?.as_ref())
            {
                judging.refuse_void(i, reason);
                continue;
            }
            let places = self.void_places(v, &check).await?;
            judging.plan_void(i, &check, places);
        }
        Ok(())
    }

    /// What decides a void's places: its lease revoked or not, its slot's
    /// start, and whether a gate admitted any of its tickets.
    async fn void_places(&self, v: &VoidRecord, check: &VoidCheck) -> R<VoidPlaces> {
        let revoked = self
            .leases
            .get(&check.lease)
            .is_some_and(LeaseState::is_revoked);
        let starts = self
            .slots
            .get(&check.slot)
            .map(|s| s.slot.starts_at.as_millisecond())
            .unwrap_or(i64::MIN);
        Ok(batch::decide_void_places(
            v.returned_to_lease,
            revoked,
            starts,
            self.now_ms,
            self.admitted(&check.tickets).await?,
        ))
    }

    /// The leases the replay needs, as they stood at each seq.
    async fn leases_at_upload(
        &self,
        events: &BTreeMap<Uuid, Vec<LeaseEvent>>,
    ) -> R<HashMap<Uuid, LeaseAtUpload>> {
        let mut out = HashMap::new();
        for id in events.keys() {
            let Some(lease) = self.leases.get(id) else {
                continue;
            };
            let steps = self.lease_steps(*id).await?;
            out.insert(
                *id,
                LeaseAtUpload {
                    sold: lease.sold,
                    revoked: lease.is_revoked(),
                    history: batch::history_or_now(steps, lease.totals),
                },
            );
        }
        Ok(out)
    }

    async fn device_keyring(&self) -> R<KeyRing> {
        let row = self
            .tx
            .query_opt(
                "SELECT k.key_id, k.public_key FROM devices d JOIN signing_keys k ON k.key_id = d.key_id WHERE d.device_id = $1",
                &[&self.device],
            )
            .await?;
        let mut ring = KeyRing::new();
        if let Some(row) = row {
            let id: i32 = row.try_get(0)?;
            let bytes: Vec<u8> = row.try_get(1)?;
            if let (Ok(id), Ok(bytes)) = (u32::try_from(id), <[u8; 32]>::try_from(bytes)) {
                // A revoked key still verifies what the device signed before:
                // uploads are history, not admissions.
                let _ = ring.insert(id, bytes, false);
            }
        }
        Ok(ring)
    }

    async fn catalogue_version(&self, version: u64) -> R<Option<Catalogue>> {
        let Ok(v) = i64::try_from(version) else {
            return Ok(None);
        };
        let row = self
            .tx
            .query_opt(
                "SELECT catalogue FROM catalogue_versions WHERE version = $1",
                &[&v],
            )
            .await?;
        Ok(row
            .and_then(|r| r.try_get::<_, String>(0).ok())
            .and_then(|t| serde_json::from_str::<Catalogue>(&t).ok()))
    }

    /// A sale already stored or quarantined under this id.
    async fn known_sale(&self, sale_id: Uuid) -> R<Option<KnownSale>> {
        let row = self
            .tx
            .query_opt(
                "SELECT terminal_seq, device_id FROM sales WHERE sale_id = $1
                 UNION ALL SELECT terminal_seq, device_id FROM quarantine WHERE item_id = $1 AND kind = 'sale'
                 LIMIT 1",
                &[&sale_id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let seq: Option<i64> = row.try_get(0)?;
        Ok(Some(KnownSale {
            seq: seq.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
            device: row.try_get(1)?,
        }))
    }

    async fn seq_taken_by(&self, seq: u64) -> R<Option<String>> {
        let seq = i64_of(seq)?;
        let row = self
            .tx
            .query_opt(
                "SELECT sale_id FROM sales WHERE device_id = $1 AND terminal_seq = $2
                 UNION ALL SELECT item_id FROM quarantine WHERE device_id = $1 AND kind = 'sale' AND terminal_seq = $2
                 LIMIT 1",
                &[&self.device, &seq],
            )
            .await?;
        Ok(row
            .map(|r| r.try_get::<_, Uuid>(0))
            .transpose()?
            .map(|id| id.to_string()))
    }

    async fn stored_tickets(&self, sale: &SaleRecord) -> R<HashSet<Uuid>> {
        if sale.tickets.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<Uuid> = sale.tickets.iter().map(|t| t.ticket_id).collect();
        let rows = self
            .tx
            .query(
                "SELECT ticket_id FROM tickets WHERE ticket_id = ANY($1)",
                &[&ids],
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(SyncError::from))
            .collect()
    }

    async fn void_known(&self, void_id: Uuid) -> R<bool> {
        Ok(self
            .tx
            .query_opt(
                "SELECT 1 FROM counter_voids WHERE void_id = $1 UNION ALL SELECT 1 FROM quarantine WHERE item_id = $1 LIMIT 1",
                &[&void_id],
            )
            .await?
            .is_some())
    }

    /// Whether a gate admitted any of these tickets, online or offline.
    async fn admitted(&self, tickets: &[Uuid]) -> R<bool> {
        if tickets.is_empty() {
            return Ok(false);
        }
        let row = self
            .tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM scans WHERE ticket_id = ANY($1))
                     OR EXISTS (SELECT 1 FROM redemptions WHERE ticket_id = ANY($1))",
                &[&tickets],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    /// The sale a void names, as the server stores it.
    async fn stored_void_target(&self, sale_id: Uuid) -> R<VoidTarget> {
        let row = self
            .tx
            .query_opt(
                "SELECT lease_id, slot_id, admissions, total, voided_at FROM sales WHERE sale_id = $1 AND device_id = $2",
                &[&sale_id, &self.device],
            )
            .await?;
        if let Some(row) = row {
            let tickets = self
                .tx
                .query(
                    "SELECT ticket_id FROM tickets WHERE sale_id = $1",
                    &[&sale_id],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<Vec<Uuid>, _>>()?;
            return Ok(VoidTarget::Sale {
                lease: row.try_get(0)?,
                slot: slot_at(&row, 1)?,
                admissions: u32_at(&row, 2)?,
                total: row.try_get(3)?,
                tickets,
                voided: row.try_get::<_, Option<i64>>(4)?.is_some(),
            });
        }
        let quarantined = self
            .tx
            .query_opt(
                "SELECT terminal_seq FROM quarantine WHERE item_id = $1 AND device_id = $2 AND kind = 'sale'",
                &[&sale_id, &self.device],
            )
            .await?;
        Ok(match quarantined {
            Some(row) => VoidTarget::Quarantined(
                row.try_get::<_, Option<i64>>(0)?
                    .and_then(|s| u64::try_from(s).ok()),
            ),
            None => VoidTarget::Unknown,
        })
    }

    /// The approval a void carries, as the server stored it. A row whose
    /// ids do not read approves nothing: this void is refused, the rest of
    /// the upload goes on.
    async fn stored_approval(&self, v: &VoidRecord) -> R<Option<StoredApproval>> {
        let Some(approval) = v.approval_id else {
            return Ok(None);
        };
        let row = self
            .tx
            .query_opt(
                "SELECT device_id, action, subject, approved_by, used_by FROM approvals WHERE approval_id = $1",
                &[&approval],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let subject: String = row.try_get(2)?;
        let used_by: Option<String> = row.try_get(4)?;
        let Ok(subject) = Uuid::parse_str(&subject) else {
            return Ok(None);
        };
        let used_by = match used_by {
            None => None,
            Some(u) => match Uuid::parse_str(&u) {
                Ok(u) => Some(u),
                Err(_) => return Ok(None),
            },
        };
        Ok(Some(StoredApproval {
            device_id: row.try_get(0)?,
            action: row.try_get(1)?,
            subject,
            approved_by: row.try_get(3)?,
            used_by,
        }))
    }

    /// A lease's recorded steps (none for a lease older than the history).
    async fn lease_steps(&self, lease: Uuid) -> R<Vec<LeaseStep>> {
        let rows = self
            .tx
            .query(
                // Two steps may share an after_seq (two rounds with no sale between):
                // core keeps their order and the later one counts.
                "SELECT after_seq, granted_total, released_total FROM lease_history
                 WHERE lease_id = $1 ORDER BY after_seq, step",
                &[&lease],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseStep {
                    after_seq: u64_at(r, 0)?,
                    totals: LeaseTotals {
                        granted_total: u32_at(r, 1)?,
                        released_total: u32_at(r, 2)?,
                    },
                })
            })
            .collect()
    }

    // ---- apply: write what judging decided ----

    async fn apply(
        &mut self,
        request: &SyncRequest,
        plan: Plan,
        void_ids: Vec<Uuid>,
        shift_ids: Vec<Uuid>,
    ) -> R<Acks> {
        let touched = self.write_sales_and_voids(request, &plan).await?;
        self.write_quarantine(request, &plan.quarantine).await?;
        self.fold_reports(request).await?;
        self.derive_tallies(request, touched).await?;
        self.write_shifts(request, &plan.shifts).await?;
        let acked_seq = self.record_device_sync(request).await?;
        Ok(Acks {
            acked_seq,
            sales_stored: u32::try_from(plan.accepted.len()).unwrap_or(u32::MAX),
            sales_duplicate: plan.duplicates,
            voids: void_ids,
            shifts: shift_ids,
        })
    }

    /// Moves a locked slot's ledger with one change to one of its leases.
    fn follow_lease(&mut self, slot: SlotId, change: SlotChange) -> R<()> {
        if change.is_empty() {
            return Ok(());
        }
        if !self.locked.contains(&slot) {
            return Err(bookkeeping(format!(
                "slot {slot} would change without its row locked"
            )));
        }
        if let Some(row) = self.slots.get_mut(&slot) {
            change.apply(&mut row.ledger)?;
            self.moved.insert(slot);
        }
        Ok(())
    }

    /// Accepted sales and voids in the order the counter made them; returns
    /// the slots whose tallies they change.
    async fn write_sales_and_voids(
        &mut self,
        request: &SyncRequest,
        plan: &Plan,
    ) -> R<BTreeSet<SlotId>> {
        let key_id: Option<i32> = self
            .tx
            .query_opt(
                "SELECT key_id FROM devices WHERE device_id = $1",
                &[&self.device],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .flatten();
        let mut touched = BTreeSet::new();
        for write in batch::write_order(request, plan) {
            match write {
                Write::Sale(i) => {
                    let sale = &request.sales[i];
                    let key_id = key_id.ok_or_else(|| {
                        bookkeeping("a counter without a ticket key uploaded a sale")
                    })?;
                    touched.insert(sale.slot_id);
                    self.store_sale(key_id, sale).await?;
                }
                Write::Void(k) => {
                    let vp = &plan.voids[k];
                    if let Some(slot) = self.store_void(&request.voids[vp.index], vp).await? {
                        touched.insert(slot);
                    }
                }
            }
        }
        Ok(touched)
    }

    async fn store_sale(&mut self, key_id: i32, sale: &SaleRecord) -> R<()> {
        let Some(lease) = self.leases.get_mut(&sale.lease_id) else {
            return Err(bookkeeping(format!("lease {} vanished", sale.lease_id)));
        };
        let counted = lease.count_sale(sale.admissions);
        let slot = lease.slot;
        self.follow_lease(slot, counted.slot)?;
        let admissions = i32_of(sale.admissions)?;
        self.tx
            .execute(
                "INSERT INTO sales (sale_id, device_id, terminal_seq, lease_id, slot_id, shift_id, cashier, created_at, received_at,
                                    lines, total, currency, admissions, payment_method, tendered, change, over_capacity)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
                &[
                    &sale.sale_id,
                    &self.device,
                    &i64_of(sale.terminal_seq)?,
                    &sale.lease_id,
                    &sale.slot_id.to_string(),
                    &sale.shift_id,
                    &sale.cashier,
                    &sale.created_at.as_millisecond(),
                    &self.now_ms,
                    &json(&sale.lines)?,
                    &sale.total.amount,
                    &sale.total.currency.as_str(),
                    &admissions,
                    &sale.payment.method.as_str(),
                    &sale.payment.tendered,
                    &sale.payment.change,
                    &i32_of(counted.over)?,
                ],
            )
            .await?;
        self.tx
            .execute(
                "UPDATE leases SET sold = sold + $2 WHERE lease_id = $1",
                &[&sale.lease_id, &admissions],
            )
            .await?;
        let slot_text = sale.slot_id.to_string();
        for t in &sale.tickets {
            self.tx
                .execute(
                    "INSERT INTO tickets (ticket_id, slot_id, product_id, admits, code, channel, sale_id, key_id)
                     VALUES ($1, $2, $3, $4, $5, 'counter', $6, $7)",
                    &[
                        &t.ticket_id,
                        &slot_text,
                        &t.product_id,
                        &i32::from(t.admits),
                        &t.code,
                        &sale.sale_id,
                        &key_id,
                    ],
                )
                .await?;
        }
        if counted.over > 0 {
            tracing::warn!(sale = %sale.sale_id, over = counted.over, slot = %sale.slot_id, "sale from a revoked lease: accepted, flagged over capacity");
            metrics::counter!("tessera_sales_over_capacity_total").increment(1);
        }
        metrics::counter!("tessera_admissions_sold_total", "channel" => "counter")
            .increment(u64::from(sale.admissions));
        Ok(())
    }

    /// Stores a void as the server decided it; returns the slot whose tally
    /// it changes.
    async fn store_void(&mut self, v: &VoidRecord, vp: &VoidPlan) -> R<Option<SlotId>> {
        let returned = vp.places == VoidPlaces::Returned;
        self.write_void(v, returned).await?;
        metrics::counter!("tessera_counter_voids_total").increment(1);
        let Some(lease) = self.leases.get_mut(&vp.lease) else {
            return Ok(None);
        };
        let counted = lease.count_void(vp.places, vp.admissions);
        let (slot, sold, kept, revoked_escrow) =
            (lease.slot, lease.sold, lease.kept, lease.revoked_escrow);
        if counted.kept_aside {
            tracing::warn!(void = %v.void_id, sale = %v.sale_id, "void of an admitted or started ticket: its places stay out of sale");
        }
        self.follow_lease(slot, counted.slot)?;
        self.tx
            .execute(
                "UPDATE leases SET sold = $2, kept = $3, revoked_escrow = $4 WHERE lease_id = $1",
                &[
                    &vp.lease,
                    &i32_of(sold)?,
                    &i32_of(kept)?,
                    &revoked_escrow.map(i32_of).transpose()?,
                ],
            )
            .await?;
        if let Some(overflow) = counted.reflag_to {
            self.reflag(vp.lease, v.sale_id, overflow).await?;
        }
        Ok(returned.then_some(slot))
    }

    async fn write_void(&self, v: &VoidRecord, returned: bool) -> R<()> {
        // The approver the server verified, not the name the counter sent.
        let mut approved_by = v.approved_by.clone();
        if let Some(approval) = v.approval_id {
            self.tx
                .execute(
                    "UPDATE approvals SET used_by = $2 WHERE approval_id = $1 AND used_by IS NULL",
                    &[&approval, &v.void_id.to_string()],
                )
                .await?;
            if let Some(row) = self
                .tx
                .query_opt(
                    "SELECT approved_by FROM approvals WHERE approval_id = $1",
                    &[&approval],
                )
                .await?
            {
                approved_by = row.try_get(0)?;
            }
        }
        self.tx
            .execute(
                "INSERT INTO counter_voids (void_id, sale_id, device_id, after_seq, at, shift_id, approved_by, reason,
                                            returned_to_lease, refund, refund_method, received_at, places_returned)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    &v.void_id,
                    &v.sale_id,
                    &self.device,
                    &i64_of(v.after_seq)?,
                    &v.at.as_millisecond(),
                    &v.shift_id,
                    &approved_by,
                    &v.reason,
                    &i32::from(v.returned_to_lease),
                    &v.refund,
                    &v.refund_method.as_str(),
                    &self.now_ms,
                    &i32::from(returned),
                ],
            )
            .await?;
        // Voided as of the server's receipt: the counter's clock stays in
        // counter_voids.at.
        self.tx
            .execute(
                "UPDATE sales SET voided_at = $2 WHERE sale_id = $1",
                &[&v.sale_id, &self.now_ms],
            )
            .await?;
        self.tx
            .execute(
                "UPDATE tickets SET voided_at = $2 WHERE sale_id = $1",
                &[&v.sale_id, &self.now_ms],
            )
            .await?;
        Ok(())
    }

    /// After a void on a revoked lease, its sales' over-capacity flags follow
    /// what the lease is still over (`reconcile::lower_flags`).
    async fn reflag(&self, lease: Uuid, voided_sale: Uuid, overflow: u32) -> R<()> {
        let rows = self
            .tx
            .query(
                "SELECT sale_id, over_capacity FROM sales WHERE lease_id = $1 AND over_capacity > 0 ORDER BY terminal_seq DESC",
                &[&lease],
            )
            .await?;
        let flagged = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, u32_at(r, 1)?)))
            .collect::<R<Vec<(Uuid, u32)>>>()?;
        for (sale, over) in reconcile::lower_flags(&flagged, voided_sale, overflow) {
            self.tx
                .execute(
                    "UPDATE sales SET over_capacity = $2 WHERE sale_id = $1",
                    &[&sale, &i32_of(over)?],
                )
                .await?;
        }
        Ok(())
    }

    async fn write_quarantine(&self, request: &SyncRequest, quarantine: &[Quarantine]) -> R<()> {
        for q in quarantine {
            let q = match q {
                Quarantine::Sale { index, reason } => sale_item(&request.sales[*index], reason)?,
                Quarantine::Void { index, seq, reason } => {
                    void_item(&request.voids[*index], *seq, reason)?
                }
                Quarantine::Shift { index, reason } => shift_item(&request.shifts[*index], reason)?,
            };
            self.tx
                .execute(
                    "INSERT INTO quarantine (item_id, kind, device_id, terminal_seq, slot_id, reason, body, device_at, received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (item_id) DO NOTHING",
                    &[
                        &q.id,
                        &q.kind,
                        &self.device,
                        &q.seq.map(i64_of).transpose()?,
                        &q.slot.map(|s| s.to_string()),
                        &q.reason,
                        &q.body,
                        &q.device_at,
                        &self.now_ms,
                    ],
                )
                .await?;
        }
        Ok(())
    }

    /// Folds each lease report into its lease (`reconcile::fold_report`).
    async fn fold_reports(&mut self, request: &SyncRequest) -> R<()> {
        for report in &request.leases {
            let Some(lease) = self.leases.get_mut(&report.lease_id) else {
                continue;
            };
            let before = (lease.totals.released_total, lease.unused_reported);
            let change = reconcile::fold_report(lease, report);
            let (slot, released, unused) = (
                lease.slot,
                lease.totals.released_total,
                lease.unused_reported,
            );
            self.follow_lease(slot, change)?;
            // A report that changes nothing writes nothing: a round costs
            // what is live, not the counter's past.
            if before == (released, unused) {
                continue;
            }
            self.tx
                .execute(
                    "UPDATE leases SET released_total = $2, unused_reported = $3 WHERE lease_id = $1",
                    &[&report.lease_id, &i32_of(released)?, &i32_of(unused)?],
                )
                .await?;
        }
        Ok(())
    }

    /// The counter's live tallies, derived from what the server stored
    /// (never taken from the counter's word); what it reported is compared
    /// and a difference logged. Written for the slots this round changed
    /// (their rows are locked, so two rounds never write one tally at once);
    /// another slot's tally already says what its sales log says.
    async fn derive_tallies(&mut self, request: &SyncRequest, touched: BTreeSet<SlotId>) -> R<()> {
        let mut slots = touched.clone();
        slots.extend(
            request
                .own_tallies
                .keys()
                .filter(|s| self.slots.contains_key(s)),
        );
        if slots.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = slots.iter().map(ToString::to_string).collect();
        let rows = self
            .tx
            .query(
                "SELECT s.slot_id, COALESCE(SUM(s.admissions), 0)::bigint,
                        COALESCE(SUM(s.admissions) FILTER (WHERE v.places_returned = 1), 0)::bigint
                 FROM sales s LEFT JOIN counter_voids v ON v.sale_id = s.sale_id
                 WHERE s.device_id = $1 AND s.slot_id = ANY($2) GROUP BY s.slot_id",
                &[&self.device, &ids],
            )
            .await?;
        let mut derived: BTreeMap<SlotId, ActorTally> =
            slots.iter().map(|s| (*s, ActorTally::default())).collect();
        for row in &rows {
            derived.insert(
                slot_at(row, 0)?,
                ActorTally {
                    sold: u64_at(row, 1)?,
                    voided: u64_at(row, 2)?,
                },
            );
        }
        let dev = self.device.to_string();
        for (slot, d) in &derived {
            let reported = request.own_tallies.get(slot);
            if reconcile::tally_differs(reported, *d) {
                tracing::warn!(device = %dev, %slot, ?reported, derived = ?d,
                    "counter's tallies differ from its uploads; the server's count is used");
                metrics::counter!("tessera_tally_mismatch_total").increment(1);
            }
        }
        let write: Vec<String> = touched
            .iter()
            .filter(|s| self.locked.contains(s))
            .map(ToString::to_string)
            .collect();
        if write.is_empty() {
            return Ok(());
        }
        let mut tallies = Tallies::default();
        for row in self
            .tx
            .query(
                "SELECT slot_id, state FROM tallies WHERE slot_id = ANY($1)",
                &[&write],
            )
            .await?
        {
            let slot = slot_at(&row, 0)?;
            let state: String = row.try_get(1)?;
            match serde_json::from_str(&state) {
                Ok(t) => {
                    tallies.0.insert(slot, t);
                }
                Err(e) => {
                    tracing::warn!(%slot, error = %e, "unreadable tally; it rebuilds as counters sync")
                }
            }
        }
        for slot in touched.iter().filter(|s| self.locked.contains(s)) {
            let d = derived.get(slot).copied().unwrap_or_default();
            tallies.set_actor(&dev, *slot, d.sold, d.voided);
            let Some(state) = tallies.0.get(slot) else {
                continue;
            };
            self.tx
                .execute(
                    "INSERT INTO tallies (slot_id, state) VALUES ($1, $2)
                     ON CONFLICT (slot_id) DO UPDATE SET state = excluded.state",
                    &[&slot.to_string(), &json(state)?],
                )
                .await?;
            self.notify.insert(*slot);
        }
        Ok(())
    }

    async fn write_shifts(&self, request: &SyncRequest, shifts: &[usize]) -> R<()> {
        for &i in shifts {
            let s = &request.shifts[i];
            let sales_count = i32::try_from(s.sales_count)
                .map_err(|_| bookkeeping("shift sales count out of range"))?;
            let voids_count = i32::try_from(s.voids_count)
                .map_err(|_| bookkeeping("shift voids count out of range"))?;
            self.tx
                .execute(
                    "INSERT INTO shifts (shift_id, device_id, cashier, opened_at, closed_at, float, cash_sales, card_sales,
                        cash_refunds, card_refunds, expected_cash, counted_cash, first_seq, last_seq, sales_count, voids_count, received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                     ON CONFLICT (shift_id) DO NOTHING",
                    &[
                        &s.shift_id,
                        &self.device,
                        &s.cashier,
                        &s.opened_at.as_millisecond(),
                        &s.closed_at.as_millisecond(),
                        &s.float,
                        &s.cash_sales,
                        &s.card_sales,
                        &s.cash_refunds,
                        &s.card_refunds,
                        &s.expected_cash,
                        &s.counted_cash,
                        &s.first_seq.map(i64_of).transpose()?,
                        &s.last_seq.map(i64_of).transpose()?,
                        &sales_count,
                        &voids_count,
                        &self.now_ms,
                    ],
                )
                .await?;
        }
        Ok(())
    }

    /// The counter's sync record (its row is locked by this round); returns
    /// the acknowledged seq: the highest below which nothing is missing,
    /// stored and quarantined sales both counting as received.
    async fn record_device_sync(&self, request: &SyncRequest) -> R<u64> {
        let open_shift = match &request.open_shift {
            Some(s) if batch::open_shift_storable(s) => Some(json(s)?),
            Some(_) => {
                tracing::warn!(device = %self.device, "open shift out of range; not stored");
                None
            }
            None => None,
        };
        let row = self
            .tx
            .query_one(
                "SELECT acked_seq FROM device_sync WHERE device_id = $1",
                &[&self.device],
            )
            .await?;
        let before: i64 = row.try_get(0)?;
        let seqs = self
            .tx
            .query(
                "SELECT terminal_seq FROM sales WHERE device_id = $1 AND terminal_seq > $2
                 UNION SELECT terminal_seq FROM quarantine WHERE device_id = $1 AND kind = 'sale' AND terminal_seq > $2
                 ORDER BY 1",
                &[&self.device, &before],
            )
            .await?;
        let acked = batch::contiguous_ack(
            u64::try_from(before).unwrap_or(0),
            seqs.iter().map(|r| u64_at(r, 0)),
        )?;
        let row = self
            .tx
            .query_one(
                "SELECT GREATEST(COALESCE((SELECT MAX(terminal_seq) FROM sales WHERE device_id = $1), 0),
                                 COALESCE((SELECT MAX(terminal_seq) FROM quarantine WHERE device_id = $1 AND kind = 'sale'), 0))",
                &[&self.device],
            )
            .await?;
        let max_seq: i64 = row.try_get(0)?;
        let reported = i64_of(request.last_seq)?.max(max_seq);
        self.tx
            .execute(
                "UPDATE device_sync SET acked_seq = $2, max_seq = $3, last_sync_at = $4,
                     reported_seq = GREATEST(reported_seq, $5), open_shift = $6
                 WHERE device_id = $1",
                &[
                    &self.device,
                    &i64_of(acked)?,
                    &max_seq,
                    &self.now_ms,
                    &reported,
                    &open_shift,
                ],
            )
            .await?;
        Ok(acked)
    }

    // ---- leases: sizing, history steps ----

    /// Grants on locked slots and recalls for this counter's slots
    /// (`leases::size_slot`); returns the recalls by lease.
    async fn size_leases(&mut self, request: &SyncRequest) -> R<HashMap<Uuid, u32>> {
        let online = self.online_devices().await?;
        let mut recalls = HashMap::new();
        for (slot, need) in self.slots_to_size(request) {
            let Some(sizing) = self.decide_size(slot, need, &online) else {
                continue;
            };
            // A grant changes the slot: only on its locked row. A recall is
            // an ask to the counter and changes nothing here.
            if sizing.decision.grant > 0 && self.locked.contains(&slot) {
                self.grant(slot, sizing).await?;
            }
            if let (Some(lease), recall @ 1..) = (sizing.lease, sizing.decision.recall) {
                recalls.insert(lease, recall);
                metrics::counter!("tessera_lease_recalls_total").increment(1);
            }
        }
        Ok(recalls)
    }

    /// Writes a grant, opening the counter's lease for the slot if it has
    /// none.
    async fn grant(&mut self, slot: SlotId, sizing: Sizing) -> R<()> {
        let n = sizing.decision.grant;
        let lease_id = match sizing.lease {
            Some(id) => id,
            None => {
                let id = new_id();
                self.tx
                    .execute(
                        "INSERT INTO leases (lease_id, device_id, slot_id, granted_total, released_total, created_at)
                         VALUES ($1, $2, $3, 0, 0, $4)",
                        &[&id, &self.device, &slot.to_string(), &self.now_ms],
                    )
                    .await?;
                self.leases
                    .insert(id, LeaseState::new(id, self.device, slot));
                id
            }
        };
        let row = self
            .slots
            .get_mut(&slot)
            .ok_or_else(|| bookkeeping(format!("slot {slot} vanished")))?;
        row.ledger.grant_lease(n)?;
        self.moved.insert(slot);
        if let Some(lease) = self.leases.get_mut(&lease_id) {
            lease.grant(n);
        }
        self.tx
            .execute(
                "UPDATE leases SET granted_total = granted_total + $2, unused_reported = unused_reported + $2 WHERE lease_id = $1",
                &[&lease_id, &i32_of(n)?],
            )
            .await?;
        metrics::counter!("tessera_lease_grants_total").increment(1);
        Ok(())
    }

    /// Records each of this counter's leases that changed in this round,
    /// tagged with the counter's highest seq: later sales are judged
    /// against it.
    async fn record_lease_steps(&self, request: &SyncRequest) -> R<()> {
        let reported: HashSet<Uuid> = request.leases.iter().map(|l| l.lease_id).collect();
        let mine: Vec<(Uuid, LeaseTotals)> = self
            .leases
            .values()
            .filter(|l| leases::steps_in_sync(l, self.device, self.today, &reported))
            .map(|l| (l.lease_id, l.totals))
            .collect();
        if mine.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = mine.iter().map(|(id, _)| *id).collect();
        let mut last: HashMap<Uuid, LeaseTotals> = HashMap::new();
        for row in self
            .tx
            .query(
                "SELECT DISTINCT ON (lease_id) lease_id, granted_total, released_total FROM lease_history
                 WHERE lease_id = ANY($1) ORDER BY lease_id, after_seq DESC, step DESC",
                &[&ids],
            )
            .await?
        {
            last.insert(
                row.try_get(0)?,
                LeaseTotals {
                    granted_total: u32_at(&row, 1)?,
                    released_total: u32_at(&row, 2)?,
                },
            );
        }
        let after_seq = i64_of(batch::step_seq(request))?;
        for (lease, totals) in mine {
            if batch::needs_step(last.get(&lease).copied(), totals) {
                self.tx
                    .execute(
                        "INSERT INTO lease_history (lease_id, after_seq, granted_total, released_total) VALUES ($1, $2, $3, $4)",
                        &[
                            &lease,
                            &after_seq,
                            &i32_of(totals.granted_total)?,
                            &i32_of(totals.released_total)?,
                        ],
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes the ledgers this round moved (their rows are locked), bumps
    /// their versions and tells every process; returns the rows as written.
    async fn write_slots(&mut self) -> R<Vec<CachedSlot>> {
        let mut changed = Vec::with_capacity(self.moved.len());
        for slot in &self.moved {
            let Some(row) = self.slots.get(slot) else {
                continue;
            };
            let written = self
                .tx
                .query_one(
                    &format!(
                        "UPDATE slots SET leased = $2, over_capacity = $3, version = version + 1
                         WHERE slot_id = $1 RETURNING {SLOT_COLUMNS}"
                    ),
                    &[
                        &slot.to_string(),
                        &i32_of(row.ledger.leased)?,
                        &i32_of(row.ledger.over_capacity)?,
                    ],
                )
                .await?;
            let written = cached_slot(&written)?;
            self.notify.insert(*slot);
            changed.push(written);
        }
        for row in &changed {
            self.slots.insert(row.slot.id, row.clone());
        }
        if !self.notify.is_empty() {
            self.tx
                .execute(
                    "SELECT pg_notify($1, $2)",
                    &[&CHANGES, &slots_payload(&self.notify)],
                )
                .await?;
        }
        Ok(changed)
    }

    // ---- the answer ----

    async fn respond(
        &self,
        request: &SyncRequest,
        acks: Acks,
        recalls: HashMap<Uuid, u32>,
    ) -> R<SyncResponse> {
        let reported: HashSet<Uuid> = request.leases.iter().map(|l| l.lease_id).collect();
        let mut leases: Vec<LeaseGrant> = self
            .leases
            .values()
            .filter(|l| {
                l.device_id == self.device
                    && (l.slot.date >= self.today || reported.contains(&l.lease_id))
            })
            .map(|l| LeaseGrant {
                lease_id: l.lease_id,
                slot_id: l.slot,
                granted_total: l.totals.granted_total,
                released_total: l.totals.released_total,
                recall: recalls.get(&l.lease_id).copied().unwrap_or(0),
                revoked: l.is_revoked(),
            })
            .collect();
        leases.sort_by_key(|l| l.slot_id);
        let (slots, tallies) = self.live_slots().await?;
        let (staff, keys) = {
            let staff = self
                .c
                .cache
                .staff
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .for_counters
                .clone();
            (staff, self.c.cache.keys().public.as_ref().clone())
        };
        let version = self.c.catalogue_version;
        Ok(SyncResponse {
            server_time: from_ms(self.now_ms),
            acked_seq: acks.acked_seq,
            sales_stored: acks.sales_stored,
            sales_duplicate: acks.sales_duplicate,
            voids_acked: acks.voids,
            shifts_acked: acks.shifts,
            leases,
            catalogue_version: version,
            catalogue: (version != request.catalogue_version)
                .then(|| self.c.catalogue.as_ref().clone()),
            staff,
            keys,
            slots,
            tallies,
            quarantined: self.quarantined().await?,
            settled_leases: self.settled_leases(),
        })
    }

    /// Today's and tomorrow's slots as they stand after this round, and
    /// their tallies: the counters' from `tallies`, online sales as the
    /// online actor.
    async fn live_slots(&self) -> R<(Vec<SlotAvailability>, Tallies)> {
        let from = SlotId::new(self.today, 0).map_err(bookkeeping)?.to_string();
        let after = self
            .today
            .tomorrow()
            .and_then(|d| d.tomorrow())
            .map_err(bookkeeping)?;
        let until = SlotId::new(after, 0).map_err(bookkeeping)?.to_string();
        let rows = self
            .tx
            .query(
                &format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id >= $1 AND slot_id < $2 ORDER BY slot_id"),
                &[&from, &until],
            )
            .await?;
        let mut tallies = Tallies::default();
        for row in self
            .tx
            .query(
                "SELECT slot_id, state FROM tallies WHERE slot_id >= $1 AND slot_id < $2",
                &[&from, &until],
            )
            .await?
        {
            let slot = slot_at(&row, 0)?;
            let state: String = row.try_get(1)?;
            if let Ok(t) = serde_json::from_str(&state) {
                tallies.0.insert(slot, t);
            }
        }
        let mut slots = Vec::with_capacity(rows.len());
        for row in &rows {
            let v = cached_slot(row)?;
            let id = v.slot.id;
            if v.ledger.sold_online > 0 {
                tallies.set_actor(ONLINE_ACTOR, id, u64::from(v.ledger.sold_online), 0);
            }
            let past = self.now_ms >= v.slot.ends_at.as_millisecond();
            slots.push(SlotAvailability {
                slot_id: id,
                starts_at: v.slot.starts_at,
                ends_at: v.slot.ends_at,
                capacity: v.ledger.capacity,
                available: if past { 0 } else { v.ledger.available() },
                sold: u32::try_from(tallies.net(&id)).unwrap_or(u32::MAX),
                past,
            });
        }
        Ok((slots, tallies))
    }

    /// This counter's uploads still in quarantine, for its status screen.
    async fn quarantined(&self) -> R<Vec<Quarantined>> {
        let rows = self
            .tx
            .query(
                "SELECT kind, item_id, terminal_seq, reason FROM quarantine
                 WHERE device_id = $1 AND resolved_at IS NULL ORDER BY received_at, terminal_seq LIMIT $2",
                &[&self.device, &QUARANTINE_LISTED],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Quarantined {
                    kind: r.try_get(0)?,
                    id: r.try_get(1)?,
                    terminal_seq: r
                        .try_get::<_, Option<i64>>(2)?
                        .and_then(|s| u64::try_from(s).ok()),
                    reason: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// The counter's leases whose slot is over and that nothing can change
    /// any more.
    fn settled_leases(&self) -> Vec<Uuid> {
        self.leases
            .values()
            .filter(|l| l.device_id == self.device)
            .filter(|l| {
                let over = self
                    .slots
                    .get(&l.slot)
                    .is_some_and(|s| self.now_ms >= s.slot.ends_at.as_millisecond());
                l.is_settled(over)
            })
            .map(|l| l.lease_id)
            .collect()
    }
}

fn sale_item(sale: &SaleRecord, reason: &str) -> R<QItem> {
    tracing::warn!(sale = %sale.sale_id, seq = sale.terminal_seq, %reason, "counter sale quarantined");
    metrics::counter!("tessera_quarantined_total", "kind" => "sale").increment(1);
    Ok(QItem {
        kind: "sale",
        id: sale.sale_id,
        seq: Some(sale.terminal_seq),
        slot: Some(sale.slot_id),
        reason: format!("sale #{}: {reason}", sale.terminal_seq),
        body: json(sale)?,
        device_at: Some(sale.created_at.as_millisecond()),
    })
}

fn void_item(v: &VoidRecord, seq: Option<u64>, reason: &str) -> R<QItem> {
    tracing::warn!(void = %v.void_id, sale = %v.sale_id, %reason, "counter void quarantined");
    metrics::counter!("tessera_quarantined_total", "kind" => "void").increment(1);
    Ok(QItem {
        kind: "void",
        id: v.void_id,
        seq,
        slot: None,
        reason: format!("void of sale {}: {reason}", v.sale_id),
        body: json(v)?,
        device_at: Some(v.at.as_millisecond()),
    })
}

fn shift_item(s: &ShiftRecord, reason: &str) -> R<QItem> {
    tracing::warn!(shift = %s.shift_id, %reason, "closed shift quarantined");
    metrics::counter!("tessera_quarantined_total", "kind" => "shift").increment(1);
    Ok(QItem {
        kind: "shift",
        id: s.shift_id,
        seq: None,
        slot: None,
        reason: format!(
            "shift of {}: {reason}",
            limits::prefix(&s.cashier, limits::STAFF_NAME_CHARS)
        ),
        body: json(s)?,
        device_at: Some(s.closed_at.as_millisecond()),
    })
}
