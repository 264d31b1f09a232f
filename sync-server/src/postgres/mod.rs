//! The PostgreSQL store, for several server processes on one database.
//!
//! This is issue 11's PostgreSQL backend. It serves everything the SQLite
//! backend does: the online inventory path — catalogue, availability, holds,
//! confirmation by a trusted channel into an order with signed tickets,
//! cancellation, the expiry of holds, channel tokens, the ticket keys and
//! health; the visitor web shop: payments and their provider callbacks,
//! refunds, "my booking", the mail outbox and the waiting list (`checkout`,
//! `outbox`, `waitlist`, each write in a transaction of its own: see
//! `shop`); devices and staff: enrolment, device tokens, the supervisor-PIN
//! lockout and approvals (`devices`); counters' sync, leases and their
//! revocation (`sync`, `leases`: rounds in transactions of their own, see
//! there); gates (`gate`: a ticket admitted once across processes) and the
//! day report (`report`).
//!
//! How the processes share one inventory:
//! - each process has one writer task doing group commit (`writer`): many
//!   jobs, one transaction, answers after COMMIT;
//! - a batch's holds and confirmations are decided together over the slot
//!   rows it locks (`FOR UPDATE`, in slot order) by core's ledger rules
//!   (`batch`), with a CHECK on the row as the last line of defence; a batch
//!   that fails runs again one conditional call per job (`online`);
//! - an Idempotency-Key is a primary-key row inserted by the job's
//!   transaction, so a key is used once across all processes;
//! - expired holds are swept every second by whichever process holds an
//!   advisory lock;
//! - each commit NOTIFYs the slots it changed; every process LISTENs and
//!   re-reads them into its in-memory view (`cache`), from which
//!   availability and the sellable check are answered without a query.
//!
//! Operational limits (`connector`, `pool`): every connection has a connect
//! timeout, TCP keepalives, `statement_timeout`, `lock_timeout` and
//! `idle_in_transaction_session_timeout`, and an `application_name` naming
//! its part; a process opens at most `PgLimits::total()` connections (the
//! writer, the reader, the listener and one bounded pool for the rest); a
//! statement or lock timeout and a pool that stays busy are answered 503;
//! `/healthz` fails while the listener is down (`liveness`).
//!
//! Not yet: TLS to PostgreSQL (NoTls: loopback or a private network only).

mod batch;
pub mod cache;
mod checkout;
pub mod connector;
pub mod devices;
mod gate;
pub mod leases;
mod liveness;
mod online;
pub mod outbox;
mod pool;
pub mod report;
pub mod schema;
mod shop;
mod sync;
mod waitlist;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Date;
use tessera_core::admission::EntryPolicy;
use tessera_core::api::approvals::{Approval, ApprovalRequest};
use tessera_core::api::devices::{EnrolRequest, Enrolled, PublicKeys};
use tessera_core::api::gate::Redemption;
use tessera_core::api::gate_sync::{GateSyncRequest, GateSyncResponse};
use tessera_core::api::online::{Availability, ConfirmRequest, SlotAvailability};
use tessera_core::api::shop::{Booking, CheckoutStatus, Offer, WaitlistRequest};
use tessera_core::api::sync::{SyncRequest, SyncResponse};
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::Clock;
use tessera_core::inventory::{availability_line, hold_ttl_ms};
use tessera_core::pricing::PricedCart;
use tessera_core::slot::{Slot, SlotId};
use tessera_core::staff::StaffMember;
use tessera_core::ticket_code::{KeyRing, TicketClaims, TicketSigner};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use self::cache::{Cache, CachedSlot};
use self::online::{Env, Job, Reply};
pub use self::schema::PgError;

/// The per-request (and housekeeping) queries of private modules whose work
/// must not grow with the days behind the museum (issue 11), for the test
/// that checks their plans (tests/pg_plans.rs). The day report's are in `report`, the
/// start-up cache's in `cache`, the leases list's in `leases`.
pub mod bounded {
    pub use super::checkout::FORGET_TOKENS_SQL;
    pub use super::gate::VOIDED_TICKETS_SQL;
    pub use super::sync::{
        own_leases_sql, slot_leases_sql, MAX_SEQ_SQL, OPEN_QUARANTINE_SQL, RECEIVED_SEQS_SQL,
        TALLY_SQL, UNSETTLED_SQL,
    };
    pub use super::waitlist::DROP_ENDED_TAGS_SQL;
}
use self::shop::{claim_key, in_transaction, settle_key};
use self::writer::{Queued, Writer};
use crate::payments::PaymentEvent;
use crate::reports::DayReport;
use crate::secrets;
use crate::store::{
    Answer, BookingContext, ChannelInfo, CommitMode, DemoPayment, DeviceInfo, DueRefund,
    EventOutcome, Idem, JoinBounds, PaymentRecord, RefundAttempt, Refusal, Store, StoreConfig,
    StoreError, Visitor, WaitlistError,
};
use tessera_core::api::supervisor::{LeaseInfo, Revoked};
use tessera_core::ids::{DeviceId, HoldId, LeaseId, TicketId};

/// How long a retry with the same Idempotency-Key gets its first answer.
const IDEMPOTENCY_KEEP_MS: i64 = 24 * 3600 * 1000;

/// How a failed statement is answered: 503 when PostgreSQL is out of reach
/// or gave up on one of our time limits (the client retries), 500 when it
/// refused the statement.
fn db_failure(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError + Copy {
    move |e| {
        if schema::is_timeout(&e) {
            tracing::warn!(error = %schema::loggable(&e), "{what}: a PostgreSQL time limit ran out");
            StoreError::Unavailable
        } else if e.as_db_error().is_some() {
            tracing::error!(error = %schema::loggable(&e), "{what} failed in PostgreSQL");
            StoreError::Storage(format!("{what} failed"))
        } else {
            tracing::warn!(error = %e, "{what}: PostgreSQL out of reach");
            StoreError::Unavailable
        }
    }
}

/// The reading connection and its one prepared statement.
#[derive(Clone)]
struct Reader {
    client: Arc<tokio_postgres::Client>,
    stored_hold: tokio_postgres::Statement,
}

pub struct PgStore {
    jobs: mpsc::Sender<Queued>,
    env: Arc<Env>,
    /// A connection for the reads a request makes before its job (the hold
    /// a confirmation signs tickets for); queries from many requests are
    /// pipelined on it. Reconnected when it drops.
    reader: std::sync::RwLock<Option<Reader>>,
    /// One reconnect at a time: after a restart of PostgreSQL, the requests
    /// waiting for a read share one new connection.
    reconnecting: tokio::sync::Mutex<()>,
    cache: Arc<Cache>,
    catalogue: Arc<Catalogue>,
    clock: Clock,
    demo_secret: Vec<u8>,
    connector: connector::Connector,
    horizon_days: i64,
    /// Counters' sync rounds: transactions of their own (see `sync`).
    counters: sync::Counters,
    /// The bounded set of connections for everything outside the writer,
    /// the reader and the listener: the web shop (see `shop`), counters'
    /// rounds, gates, reports and side writes (`pool`).
    pool: Arc<pool::Pool>,
}

impl PgStore {
    /// Connects, migrates, loads the catalogue, keys and slots, and starts
    /// this process's writer and listener tasks (on the current runtime).
    /// `limits` bound its connections and their time limits (`connector`).
    pub async fn connect(
        url: &str,
        config: StoreConfig,
        limits: &connector::PgLimits,
        clock: Clock,
    ) -> Result<PgStore, PgError> {
        let connector = connector::Connector::new(url, limits)?;
        let pool = Arc::new(pool::Pool::new(
            connector.clone(),
            limits.pool_size(),
            limits.pool_wait(),
        ));
        tracing::info!(
            connections = limits.total(),
            pool = limits.pool_size(),
            name = %connector.name_of("*"),
            "PostgreSQL connections of this process at most"
        );
        let mut client = pool.get().await.map_err(pg_of_pool)?;
        schema::migrate(&mut client).await?;
        let catalogue = Arc::new(schema::load_catalogue(&*client).await?);
        let signer = load_signer(&*client).await?;
        let demo_secret = schema::meta(&*client, "demo_payment_secret")
            .await?
            .and_then(|hex| {
                data_encoding::HEXLOWER_PERMISSIVE
                    .decode(hex.as_bytes())
                    .ok()
            })
            .unwrap_or_default();
        let horizon_days = schema::meta(&*client, "horizon_days")
            .await?
            .and_then(|d| d.parse().ok())
            .unwrap_or(60);
        let catalogue_version = schema::meta(&*client, "catalogue_version")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let tz = catalogue
            .time_zone()
            .map_err(|e| PgError::BadCatalogue(e.to_string()))?;
        let cache = Arc::new(Cache::live_on(clock, tz));
        cache.reload_all(&*client).await?;
        drop(client);
        let counters = sync::Counters::new(
            pool.clone(),
            catalogue.clone(),
            catalogue_version,
            config.lease_policy,
            cache.clone(),
        )?;

        let env = Arc::new(Env {
            clock,
            signer,
            catalogue: catalogue.clone(),
            hold_ttl_ms: hold_ttl_ms(config.hold_ttl),
            process: format!("pid {} {}", std::process::id(), Uuid::now_v7()),
            offer_ms: i64::try_from(config.offer_ttl.as_millis()).unwrap_or(i64::MAX),
            public_url: std::sync::RwLock::new(String::new()),
        });
        let (jobs, rx) = mpsc::channel(8192);
        let writer = Writer {
            connector: connector.clone(),
            env: env.clone(),
            cache: cache.clone(),
            // `--commit per-request`: one job per transaction, for comparison.
            max_batch: match config.commit {
                CommitMode::Group => config.max_batch.max(1),
                CommitMode::PerRequest => 1,
            },
        };
        tokio::spawn(writer.run(rx));
        tokio::spawn(cache::listen(connector.clone(), cache.clone()));
        Ok(PgStore {
            jobs,
            env,
            reader: std::sync::RwLock::new(None),
            reconnecting: tokio::sync::Mutex::new(()),
            cache,
            catalogue,
            clock,
            demo_secret,
            connector,
            horizon_days,
            counters,
            pool,
        })
    }

    /// Where visitors reach the shop, for links in emails (waiting-list
    /// offers): set once the server listens, before upkeep starts.
    pub fn set_public_url(&self, url: &str) {
        *self
            .env
            .public_url
            .write()
            .unwrap_or_else(|p| p.into_inner()) = url.trim_end_matches('/').to_string();
    }

    /// The demo payment provider's secret, made at init.
    pub fn demo_secret(&self) -> Vec<u8> {
        self.demo_secret.clone()
    }

    async fn submit(&self, job: Job) -> Result<Reply, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Queued {
                job,
                request_id: crate::request_id::current_request_id(),
                reply,
            })
            .await
            .map_err(|_| StoreError::Unavailable)?;
        rx.await.map_err(|_| StoreError::Unavailable)?
    }

    /// A pooled connection for a low-volume write in a transaction of its
    /// own (enrolment, PIN attempts, approvals, leases).
    async fn side(&self) -> Result<pool::Pooled<'_>, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// The slots of a day the cache does not keep, and the counters' net
    /// admissions of each, as committed.
    async fn day_from_database(
        &self,
        date: Date,
    ) -> Result<(Vec<CachedSlot>, HashMap<SlotId, u32>), StoreError> {
        let bad = |e: jiff::Error| StoreError::from(Refusal::BadRequest(e.to_string()));
        let from = SlotId::new(date, 0)
            .map_err(|e| Refusal::BadRequest(e.to_string()))?
            .to_string();
        // Slot ids sort as the slots do: the day is `[from, next day)`.
        let until = SlotId::new(date.tomorrow().map_err(bad)?, 0)
            .map_err(|e| Refusal::BadRequest(e.to_string()))?
            .to_string();
        let client = self.side().await?;
        let failed = db_failure("reading a past day's slots");
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM slots WHERE slot_id >= $1 AND slot_id < $2 ORDER BY slot_id",
                    cache::SLOT_COLUMNS
                ),
                &[&from, &until],
            )
            .await
            .map_err(&failed)?;
        let tallies = client
            .query(
                "SELECT slot_id, state FROM tallies WHERE slot_id >= $1 AND slot_id < $2",
                &[&from, &until],
            )
            .await
            .map_err(&failed)?;
        let mut slots: Vec<CachedSlot> = rows.iter().filter_map(cache::slot_from_row).collect();
        slots.sort_by_key(|v| v.slot.id);
        Ok((slots, cache::counter_sold_of(&tallies)))
    }

    /// One slot the cache does not keep, as committed.
    async fn slot_from_database(&self, slot: SlotId) -> Result<Option<CachedSlot>, StoreError> {
        let client = self.side().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {} FROM slots WHERE slot_id = $1",
                    cache::SLOT_COLUMNS
                ),
                &[&slot.to_string()],
            )
            .await
            .map_err(db_failure("reading a past slot"))?;
        Ok(row.as_ref().and_then(cache::slot_from_row))
    }

    /// Re-reads the devices and keys into this process's view now (the
    /// listener does it too, when the NOTIFY arrives).
    async fn reload_devices(&self) {
        let reloaded = match self.reader().await {
            Ok(reader) => self.cache.reload_devices(reader.client.as_ref()).await,
            Err(_) => return,
        };
        if let Err(e) = reloaded {
            tracing::warn!(error = %e, "re-reading devices failed; the listener will");
        }
    }

    fn open_reader(&self) -> Option<Reader> {
        self.reader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|r| !r.client.is_closed())
    }

    async fn reader(&self) -> Result<Reader, StoreError> {
        if let Some(reader) = self.open_reader() {
            return Ok(reader);
        }
        let _one_at_a_time = self.reconnecting.lock().await;
        if let Some(reader) = self.open_reader() {
            return Ok(reader);
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "cannot reach PostgreSQL for a read");
            StoreError::Unavailable
        };
        let client = self
            .connector
            .connect("reader")
            .await
            .map_err(|e| unavailable(&e))?;
        let stored_hold = client
            .prepare(online::STORED_HOLD)
            .await
            .map_err(|e| unavailable(&e))?;
        let reader = Reader {
            client: Arc::new(client),
            stored_hold,
        };
        *self.reader.write().unwrap_or_else(|p| p.into_inner()) = Some(reader.clone());
        Ok(reader)
    }

    async fn stored_hold(&self, hold: Uuid) -> Result<Option<online::StoredHold>, StoreError> {
        let reader = self.reader().await?;
        let row = reader
            .client
            .query_opt(&reader.stored_hold, &[&hold])
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "reading a hold failed");
                StoreError::Unavailable
            })?;
        Ok(row.as_ref().map(online::StoredHold::from_row))
    }

    async fn submit_answer(&self, job: Job) -> Result<Answer, StoreError> {
        match self.submit(job).await? {
            Reply::Answer(answer) => Ok(answer),
            _ => Err(StoreError::Storage(
                "the writer answered out of turn".into(),
            )),
        }
    }

    /// Background upkeep: every second a sweep of expired holds (skipped by
    /// all but one process), hourly slots generated ahead and Idempotency-Key
    /// records older than a day dropped (as the SQLite backend keeps them).
    pub fn spawn_upkeep(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                if n.is_multiple_of(3600) {
                    if let Err(e) = store.extend_slots().await {
                        tracing::warn!(error = %e, "generating slots ahead failed");
                    }
                    if let Err(e) = store.prune_idempotency().await {
                        tracing::warn!(error = %e, "pruning old idempotency keys failed");
                    }
                    let now_ms = store.clock.now_ms();
                    let forgot: Result<(), StoreError> =
                        in_transaction!(store, "forget_tokens", |tx, _changes| {
                            checkout::forget_unclaimed_tokens(&tx, now_ms).await
                        });
                    if let Err(e) = forgot {
                        tracing::warn!(error = %e, "forgetting unclaimed booking tokens failed");
                    }
                }
                n += 1;
                match store.submit(Job::Sweep).await {
                    Ok(Reply::Swept(n)) if n > 0 => {
                        tracing::debug!(holds = n, "released expired holds")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweeping expired holds failed"),
                }
            }
        })
    }

    /// Keeps `horizon_days` of slots ahead (any process; a slot inserted by
    /// another first is skipped), and tells every process to re-read.
    async fn extend_slots(&self) -> Result<(), PgError> {
        let today = self
            .clock
            .now()
            .to_zoned(
                self.catalogue
                    .time_zone()
                    .map_err(|e| PgError::BadCatalogue(e.to_string()))?,
            )
            .date();
        let mut client = self.pool.get().await.map_err(pg_of_pool)?;
        let tx = client.transaction().await?;
        let added = schema::ensure_slots(&tx, &self.catalogue, today, self.horizon_days).await?;
        if added > 0 {
            tx.execute("SELECT pg_notify($1, 'slots:*')", &[&schema::CHANGES])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drops Idempotency-Key records older than a day (outside the writer:
    /// a long delete must not hold up a batch; any process may run it).
    async fn prune_idempotency(&self) -> Result<(), PgError> {
        let client = self.pool.get().await.map_err(pg_of_pool)?;
        let cutoff = self.clock.now_ms() - IDEMPOTENCY_KEEP_MS;
        client
            .execute("DELETE FROM idempotency WHERE created_at < $1", &[&cutoff])
            .await?;
        Ok(())
    }

    fn time_zone(&self) -> Result<jiff::tz::TimeZone, StoreError> {
        self.catalogue
            .time_zone()
            .map_err(|e| StoreError::Storage(format!("the catalogue's time zone: {e}")))
    }

    /// Resolves with a reason if the writer's task ends (a panic); never
    /// while it runs, also while PostgreSQL is away (it reconnects).
    pub fn writer_died(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let jobs = self.jobs.clone();
        async move {
            jobs.closed().await;
            "the PostgreSQL writer task ended".to_string()
        }
    }
}

/// Upkeep's errors are `PgError`s, logged and tried again later.
fn pg_of_pool(e: pool::PoolError) -> PgError {
    match e {
        pool::PoolError::Connect(e) => e,
        busy => PgError::Busy(busy.to_string()),
    }
}

/// One slot's line of a day's availability: online sales and the counters'
/// net sales (their tallies), as SQLite's tallies count both.
fn slot_availability(v: &CachedSlot, counter_sold: Option<u32>, now: i64) -> SlotAvailability {
    let sold = u64::from(v.ledger.sold_online) + u64::from(counter_sold.unwrap_or(0));
    availability_line(&v.slot, &v.ledger, sold, now)
}

async fn load_signer(client: &impl GenericClient) -> Result<TicketSigner, PgError> {
    let row = client
        .query_opt(
            "SELECT key_id, secret_seed FROM signing_keys
             WHERE owner = 'server' AND secret_seed IS NOT NULL AND revoked_at IS NULL
             ORDER BY key_id DESC LIMIT 1",
            &[],
        )
        .await?
        .ok_or(PgError::NoSigningKey)?;
    let key_id = u32::try_from(row.get::<_, i32>(0)).map_err(|_| PgError::NoSigningKey)?;
    let seed: [u8; 32] = row
        .get::<_, Vec<u8>>(1)
        .try_into()
        .map_err(|_| PgError::NoSigningKey)?;
    Ok(TicketSigner::from_seed(key_id, seed))
}

impl Store for PgStore {
    fn catalogue(&self) -> Arc<Catalogue> {
        self.catalogue.clone()
    }

    fn changes(&self) -> Arc<crate::store::Changes> {
        self.cache.changes.clone()
    }

    /// From this process's view of the slots, which every commit of every
    /// process refreshes through NOTIFY (see `cache`). Holds whose time is
    /// up count as held until the next sweep (within a second). A day
    /// before the live ones (the cache keeps only those) is read from the
    /// database.
    async fn availability(&self, date: Date) -> Result<Availability, StoreError> {
        let now = self.clock.now_ms();
        let from = SlotId::new(date, 0).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let list = if self.cache.keeps(from) {
            let slots = self.cache.slots.read().unwrap_or_else(|p| p.into_inner());
            let counter_sold = self
                .cache
                .counter_sold
                .read()
                .unwrap_or_else(|p| p.into_inner());
            slots
                .range(from..)
                .take_while(|(id, _)| id.date == date)
                .map(|(id, v)| slot_availability(v, counter_sold.get(id).copied(), now))
                .collect()
        } else {
            let (slots, counter_sold) = self.day_from_database(date).await?;
            slots
                .iter()
                .map(|v| slot_availability(v, counter_sold.get(&v.slot.id).copied(), now))
                .collect()
        };
        Ok(Availability {
            date,
            museum: self.catalogue.museum.name.clone(),
            time_zone: self.catalogue.museum.time_zone.clone(),
            closed: self.catalogue.is_closed(date),
            slots: list,
        })
    }

    async fn sellable_slot(&self, slot: SlotId) -> Result<Slot, StoreError> {
        let view = if self.cache.keeps(slot) {
            self.cache
                .slots
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&slot)
                .cloned()
        } else {
            self.slot_from_database(slot).await?
        };
        let Some(view) = view else {
            if self.catalogue.is_closed(slot.date) {
                return Err(Refusal::MuseumClosed(slot.date.to_string()).into());
            }
            return Err(Refusal::UnknownSlot(slot.to_string()).into());
        };
        if view.slot.is_over(self.clock.now_ms()) {
            return Err(Refusal::SlotPast(slot.to_string()).into());
        }
        Ok(view.slot)
    }

    async fn create_hold(
        &self,
        idem: Idem,
        slot: SlotId,
        cart: PricedCart,
    ) -> Result<Answer, StoreError> {
        let job = online::prepare_hold(&self.env, &idem, slot, &cart)?;
        self.submit_answer(Job::CreateHold(Box::new(job))).await
    }

    async fn confirm_hold(
        &self,
        idem: Idem,
        hold: HoldId,
        request: ConfirmRequest,
        channel: ChannelInfo,
    ) -> Result<Answer, StoreError> {
        let stored = self.stored_hold(hold.as_uuid()).await?;
        let job = online::prepare_confirm(
            &self.env,
            online::ConfirmInput {
                idem: &idem,
                hold_id: hold.as_uuid(),
                request: &request,
                channel: channel.name,
                stored,
            },
        )?;
        self.submit_answer(Job::ConfirmHold(Box::new(job))).await
    }

    fn authenticate_channel(&self, token: &str) -> Option<ChannelInfo> {
        let hash = secrets::hash(token);
        self.cache
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            .cloned()
    }

    async fn begin_checkout(
        &self,
        idem: Idem,
        hold: HoldId,
        visitor: Visitor,
        provider: String,
    ) -> Result<Answer, StoreError> {
        let now_ms = self.clock.now_ms();
        let env = &self.env;
        in_transaction!(self, "begin_checkout", |tx, changes| {
            match claim_key(&tx, &idem, now_ms).await? {
                Some(answer) => Ok(answer),
                None => {
                    let outcome = checkout::begin_checkout(
                        &tx,
                        env,
                        &mut changes,
                        hold.as_uuid(),
                        visitor.clone(),
                        provider.clone(),
                    )
                    .await?;
                    settle_key(&tx, &idem, outcome).await
                }
            }
        })
    }

    async fn payment_started(
        &self,
        payment_id: String,
        provider_ref: String,
        redirect_url: String,
    ) -> Result<PaymentRecord, StoreError> {
        in_transaction!(self, "payment_started", |tx, _changes| {
            checkout::payment_started(&tx, &payment_id, &provider_ref, &redirect_url).await
        })
    }

    async fn checkout_status(&self, checkout_id: String) -> Result<CheckoutStatus, StoreError> {
        in_transaction!(self, "checkout_status", |tx, _changes| {
            checkout::checkout_status(&tx, &checkout_id).await
        })
    }

    async fn payment_event(
        &self,
        provider: String,
        event: PaymentEvent,
        context: BookingContext,
    ) -> Result<EventOutcome, StoreError> {
        let env = &self.env;
        in_transaction!(self, "payment_event", |tx, changes| {
            checkout::apply_event(&tx, env, &mut changes, &provider, &event, &context).await
        })
    }

    async fn due_refunds(&self, limit: usize) -> Result<Vec<DueRefund>, StoreError> {
        let now_ms = self.clock.now_ms();
        in_transaction!(self, "due_refunds", |tx, _changes| {
            checkout::due_refunds(&tx, now_ms, limit).await
        })
    }

    async fn refund_attempted(
        &self,
        refund_id: String,
        attempt: RefundAttempt,
        context: BookingContext,
    ) -> Result<(), StoreError> {
        let Ok(refund_id) = Uuid::parse_str(&refund_id) else {
            return Ok(());
        };
        let env = &self.env;
        in_transaction!(self, "refund_attempted", |tx, _changes| {
            checkout::refund_attempted(&tx, env, refund_id, attempt.clone(), &context).await
        })
    }

    async fn booking(&self, token: String, context: BookingContext) -> Result<Booking, StoreError> {
        let env = &self.env;
        in_transaction!(self, "booking", |tx, _changes| {
            checkout::booking(&tx, env, &token, &context).await
        })
    }

    async fn cancel_booking(
        &self,
        idem: Idem,
        token: String,
        tickets: Vec<TicketId>,
        context: BookingContext,
    ) -> Result<Answer, StoreError> {
        let tickets: Vec<Uuid> = tickets.into_iter().map(Uuid::from).collect();
        let now_ms = self.clock.now_ms();
        let env = &self.env;
        in_transaction!(self, "cancel_booking", |tx, changes| {
            match claim_key(&tx, &idem, now_ms).await? {
                Some(answer) => Ok(answer),
                None => {
                    let outcome =
                        checkout::cancel(&tx, env, &mut changes, &token, &tickets, &context)
                            .await?;
                    settle_key(&tx, &idem, outcome).await
                }
            }
        })
    }

    async fn resend_booking(
        &self,
        token: String,
        context: BookingContext,
    ) -> Result<(), StoreError> {
        let env = &self.env;
        in_transaction!(self, "resend_booking", |tx, _changes| {
            checkout::resend(&tx, env, &token, &context).await
        })
    }

    async fn demo_payment(&self, payment_id: String) -> Result<Option<DemoPayment>, StoreError> {
        let env = &self.env;
        in_transaction!(self, "demo_payment", |tx, _changes| {
            checkout::demo_payment(&tx, env, &payment_id).await
        })
    }

    async fn cancel_hold(&self, hold: HoldId) -> Result<(), StoreError> {
        self.submit(Job::CancelHold {
            hold: hold.as_uuid(),
        })
        .await
        .map(|_| ())
    }

    async fn enrol(&self, request: EnrolRequest) -> Result<Enrolled, StoreError> {
        let now_ms = self.clock.now_ms();
        let failed = db_failure("enrolling a device");
        let mut client = self.side().await?;
        let tx = client.transaction().await.map_err(failed)?;
        let enrolled = devices::enrol(&tx, &request, now_ms)
            .await
            .map_err(failed)??;
        tx.commit().await.map_err(failed)?;
        // This process knows the device at once; the others when the
        // commit's NOTIFY reaches them (milliseconds).
        self.reload_devices().await;
        Ok(enrolled)
    }

    /// From this process's view of the devices, which enrolments and
    /// revocations in any process refresh through NOTIFY.
    fn authenticate(&self, token: &str) -> Option<DeviceInfo> {
        let hash = secrets::hash(token);
        self.cache
            .devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            .cloned()
    }

    fn public_keys(&self) -> PublicKeys {
        self.cache.keys().public.as_ref().clone()
    }

    fn keyring(&self) -> Arc<KeyRing> {
        self.cache.keys().ring
    }

    async fn redeem(
        &self,
        gate: DeviceInfo,
        claims: TicketClaims,
        scan_id: Option<Uuid>,
        entry: EntryPolicy,
    ) -> Result<Redemption, StoreError> {
        let tz = self.time_zone()?;
        let env = gate::GateEnv {
            catalogue: &self.catalogue,
            tz: &tz,
            clock: &self.clock,
        };
        gate::redeem(&self.pool, &env, &gate, &claims, scan_id, entry).await
    }

    /// A round in a transaction of its own, outside the online writer's
    /// group commit (see `sync`).
    async fn sync(
        &self,
        device: DeviceInfo,
        request: SyncRequest,
    ) -> Result<SyncResponse, StoreError> {
        self.counters.sync(&self.clock, &device, request).await
    }

    async fn gate_sync(
        &self,
        gate: DeviceInfo,
        request: GateSyncRequest,
        entry: EntryPolicy,
    ) -> Result<GateSyncResponse, StoreError> {
        let tz = self.time_zone()?;
        // Signatures are checked off the async workers, before any
        // connection is taken (as on SQLite).
        let received_at = self.clock.now_ms();
        let ring = self.keyring();
        let device = gate.clone();
        let checked = tokio::task::spawn_blocking(move || {
            crate::gates::check_sync(&ring, &device, request, received_at)
        })
        .await
        .map_err(|_| StoreError::Unavailable)??;
        let env = gate::GateEnv {
            catalogue: &self.catalogue,
            tz: &tz,
            clock: &self.clock,
        };
        gate::gate_sync(&self.pool, &env, &gate, &checked, entry, self.public_keys()).await
    }

    fn supervisors(&self) -> Vec<StaffMember> {
        self.cache
            .staff
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .supervisors
            .clone()
    }

    async fn begin_pin_attempt(&self, device: DeviceId) -> Result<(), StoreError> {
        let now_ms = self.clock.now_ms();
        let failed = db_failure("counting a PIN attempt");
        let mut client = self.side().await?;
        let tx = client.transaction().await.map_err(failed)?;
        devices::begin_attempt(&tx, device.0, now_ms)
            .await
            .map_err(failed)??;
        tx.commit().await.map_err(failed)
    }

    async fn pin_succeeded(&self, device: DeviceId) -> Result<(), StoreError> {
        let client = self.side().await?;
        devices::attempt_succeeded(&*client, device.0)
            .await
            .map_err(db_failure("resetting PIN attempts"))
    }

    async fn create_approval(
        &self,
        device: DeviceId,
        request: ApprovalRequest,
        approved_by: String,
    ) -> Result<Approval, StoreError> {
        let failed = db_failure("recording an approval");
        let now_ms = self.clock.now_ms();
        let mut client = self.side().await?;
        let tx = client.transaction().await.map_err(failed)?;
        let approval = devices::create_approval(&tx, device.0, request, approved_by, now_ms)
            .await
            .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        Ok(approval)
    }

    /// Read from one snapshot on a pooled connection, outside the writer.
    async fn day_report(&self, date: Date) -> Result<DayReport, StoreError> {
        let mut client = self.pool.get().await?;
        report::day_report(&mut client, &self.catalogue, date, self.clock.now())
            .await
            .map_err(|e| match e {
                crate::reports::ReportError::Unavailable(_) => {
                    tracing::warn!(error = %e, %date, "the day report: PostgreSQL unavailable");
                    StoreError::Unavailable
                }
                e => {
                    tracing::error!(error = %e, %date, "the day report failed");
                    StoreError::Storage(e.to_string())
                }
            })
    }

    async fn leases(&self, date: Date) -> Result<Vec<LeaseInfo>, StoreError> {
        let client = self.side().await?;
        leases::leases_on(&*client, date)
            .await
            .map_err(|e| e.into_service("listing leases"))
    }

    async fn revoke_lease(&self, lease: LeaseId, actor: String) -> Result<Revoked, StoreError> {
        let failed = |e: leases::LeaseError| e.into_service("revoking a lease");
        let mut client = self.side().await?;
        let tx = client
            .transaction()
            .await
            .map_err(db_failure("revoking a lease"))?;
        let done = leases::revoke_in(&tx, lease, &actor, self.clock.now())
            .await
            .map_err(failed)?;
        let Some((revoked, slot)) = done else {
            return Err(Refusal::NotFound(format!("no lease {lease}")).into());
        };
        tx.commit().await.map_err(db_failure("revoking a lease"))?;
        self.cache.apply(slot);
        Ok(revoked)
    }

    async fn join_waitlist(
        &self,
        idem: Idem,
        request: WaitlistRequest,
        bounds: JoinBounds,
    ) -> Result<Answer, StoreError> {
        let now_ms = self.clock.now_ms();
        let env = &self.env;
        in_transaction!(self, "join_waitlist", |tx, _changes| {
            match claim_key(&tx, &idem, now_ms).await? {
                Some(answer) => Ok(answer),
                None => {
                    let outcome = waitlist::join(&tx, env, request.clone(), &bounds).await?;
                    settle_key(&tx, &idem, outcome).await
                }
            }
        })
    }

    async fn offer(&self, token: String) -> Result<Offer, StoreError> {
        let hash = waitlist::token_hash(&token).ok_or(WaitlistError::UnknownOffer)?;
        let now_ms = self.clock.now_ms();
        let reader = self.reader().await?;
        match waitlist::read_offer(reader.client.as_ref(), &hash, now_ms).await {
            Ok(Some(offer)) => Ok(offer),
            Ok(None) => Err(WaitlistError::UnknownOffer.into()),
            Err(e) => {
                tracing::warn!(error = %e, "reading an offer failed");
                Err(StoreError::Unavailable)
            }
        }
    }

    async fn take_offer(
        &self,
        idem: Idem,
        token: String,
        cart: PricedCart,
    ) -> Result<Answer, StoreError> {
        let hash = waitlist::token_hash(&token).ok_or(WaitlistError::UnknownOffer)?;
        let now_ms = self.clock.now_ms();
        let env = &self.env;
        in_transaction!(self, "take_offer", |tx, changes| {
            match claim_key(&tx, &idem, now_ms).await? {
                Some(answer) => Ok(answer),
                None => {
                    let outcome =
                        waitlist::take_offer(&tx, env, &mut changes, &hash, cart.clone()).await?;
                    settle_key(&tx, &idem, outcome).await
                }
            }
        })
    }

    /// True while the writer reaches PostgreSQL and commits, and the
    /// listener is connected: a process whose listener is down answers from
    /// a stale view (availability, device revocations), so a load balancer
    /// must take it out until the listener is back and has re-read all.
    async fn healthy(&self) -> bool {
        if let Some(stale) = self.cache.listener.stale_for() {
            tracing::warn!(
                stale_ms = u64::try_from(stale.as_millis()).unwrap_or(u64::MAX),
                "unhealthy: the PostgreSQL listener is not connected"
            );
            return false;
        }
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.submit(Job::Ping)).await,
            Ok(Ok(_))
        )
    }
}
