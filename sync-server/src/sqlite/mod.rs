//! The embedded SQLite store: one writer thread with group commit (see
//! `writer`), readers served from views it publishes after each commit.

pub mod admin;
pub mod channels;
mod checkout;
pub mod checkpoint;
mod devices;
pub(crate) mod failpoint;
mod gate;
pub mod idempotency;
mod older;
mod online;
pub mod outbox;
mod presign;
pub mod schema;
mod sql;
mod staff;
mod state;
mod sync;
mod waitlist;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Date;
use rusqlite::OptionalExtension;
use tessera_core::admission::EntryPolicy;
use tessera_core::api::approvals::{Approval, ApprovalRequest};
use tessera_core::api::devices::{EnrolRequest, Enrolled, PublicKeys};
use tessera_core::api::gate::Redemption;
use tessera_core::api::gate_sync::{GateSyncRequest, GateSyncResponse};
use tessera_core::api::online::{Availability, ConfirmRequest, SlotAvailability};
use tessera_core::api::shop::{Offer, WaitlistRequest};
use tessera_core::api::sync::{SyncRequest, SyncResponse};
use tessera_core::catalogue::Catalogue;
use tessera_core::inventory::{availability_line, hold_ttl_ms, LeasePolicy};
use tessera_core::pricing::PricedCart;
use tessera_core::slot::{Slot, SlotId};
use tessera_core::staff::StaffMember;
use tessera_core::ticket_code::{KeyRing, TicketClaims};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use self::admin::{LeaseInfo, Revoked};
use self::idempotency::{idempotent, idempotent_typed};
pub use self::schema::OpenError;
pub use self::state::slot_footprint;
use self::state::{Shared, State};
// Settings of any backend; re-exported where they were first defined.
use self::writer::{Ctx, Fatal, Job, Writer};
use crate::reports::DayReport;
use crate::secrets;
use crate::store::{
    Answer, BookingContext, ChannelInfo, DemoPayment, DeviceInfo, DueRefund, EventOutcome, Idem,
    JoinBounds, PaymentEvent, PaymentRecord, RefundAttempt, Refusal, Store, StoreError, Visitor,
    WaitlistError,
};
pub use crate::store::{CommitMode, StoreConfig};
use tessera_core::api::shop::{Booking, CheckoutStatus};
use tessera_core::clock::Clock;
use tessera_core::ids::{DeviceId, HoldId, LeaseId, TicketId};

/// Whether the writer thread still runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriterStatus {
    Running,
    /// Every sender was dropped: the store is being closed.
    Stopped,
    /// The writer could not go on; the process must be restarted.
    Died(String),
}

pub struct SqliteStore {
    path: std::path::PathBuf,
    jobs: mpsc::Sender<Job>,
    writer: watch::Receiver<WriterStatus>,
    lease_policy: LeasePolicy,
    shared: Arc<Shared>,
    clock: Clock,
    offers: Arc<waitlist::OfferSettings>,
}

/// A driver error is a storage failure at the seam; its text goes to the log.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Storage(e.to_string())
    }
}

/// Tickets a confirm handler signs on its own task before it would rather
/// hand the work to the blocking pool.
const PRESIGN_ON_TASK: u64 = 4;

impl SqliteStore {
    /// Opens the database, loads the inventory and starts the writer thread.
    pub fn open(path: &Path, config: StoreConfig, clock: Clock) -> Result<SqliteStore, OpenError> {
        let conn = schema::open(path)?;
        checkpoint::writer_connection(&conn)?;
        idempotency::set_keys_in_memory(config.idempotency_keys_in_memory);
        let mut state = State::load(&conn, clock.now_ms())?;
        let data_version: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        let horizon_days: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'horizon_days'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(60);
        let shared = Arc::new(Shared::empty(state.catalogue.clone()));
        state.publish(&conn, &shared)?;
        let offers = Arc::new(waitlist::OfferSettings {
            offer_ms: config.offer_ttl.as_millis().min(i64::MAX as u128) as i64,
            public_url: std::sync::RwLock::new(String::new()),
        });
        let writer = Writer {
            conn,
            state,
            shared: shared.clone(),
            clock,
            hold_ttl_ms: hold_ttl_ms(config.hold_ttl),
            max_batch: match config.commit {
                CommitMode::Group => config.max_batch.max(1),
                CommitMode::PerRequest => 1,
            },
            data_version,
            horizon_days,
            offers: offers.clone(),
            wal: checkpoint::WalBound::new(path, config.wal_limit_bytes),
        };
        checkpoint::spawn(path, &shared)
            .map_err(|e| OpenError::Sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let (jobs, rx) = mpsc::channel(8192);
        let (status, writer_status) = watch::channel(WriterStatus::Running);
        std::thread::Builder::new()
            .name("tessera-writer".into())
            .spawn(move || {
                // Jobs are contained one by one (see `writer`); what is caught
                // here is the writer itself failing, which no retry can mend.
                let ended = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                    move || writer.run(rx),
                )) {
                    Ok(Ok(())) => WriterStatus::Stopped,
                    Ok(Err(reason)) => WriterStatus::Died(reason),
                    Err(panic) => WriterStatus::Died(format!(
                        "the writer panicked: {}",
                        writer::panic_message(panic.as_ref())
                    )),
                };
                if let WriterStatus::Died(reason) = &ended {
                    tracing::error!(%reason, "the writer thread ended; no write can be served until the process restarts");
                }
                let _ = status.send(ended);
            })
            .map_err(|e| OpenError::Sql(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let store = SqliteStore {
            path: path.to_path_buf(),
            jobs,
            writer: writer_status,
            lease_policy: config.lease_policy,
            shared,
            clock,
            offers,
        };
        Ok(store)
    }

    /// Runs `f` in the writer's next batch and waits for its commit.
    async fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ctx<'_>) -> Result<Result<T, StoreError>, Fatal> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (job, rx) = writer::job(f, crate::request_id::current_request_id());
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable)?;
        rx.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Signs an open hold's tickets here, off the writer, from the sketch
    /// published at its commit; `None` (the writer signs) when the hold is
    /// not open as of the last commit (a retry, an expired hold).
    async fn presign(&self, hold_id: uuid::Uuid) -> Option<presign::Presigned> {
        let sketch = self
            .shared
            .hold_sketches
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hold_id)
            .cloned()?;
        let signer = self
            .shared
            .signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        // A few signatures take tens of microseconds: fine on this task; a
        // big family cart goes to the blocking pool so no worker stalls.
        if sketch.tickets() <= PRESIGN_ON_TASK {
            return presign::presign(&signer, hold_id, &sketch).ok();
        }
        tokio::task::spawn_blocking(move || presign::presign(&signer, hold_id, &sketch).ok())
            .await
            .ok()
            .flatten()
    }

    /// Resolves with the reason if the writer thread dies; never if it
    /// stops because the store is closed.
    pub fn writer_died(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut status = self.writer.clone();
        async move {
            let died = status
                .wait_for(|s| matches!(s, WriterStatus::Died(_)))
                .await
                .map(|s| s.clone());
            match died {
                Ok(WriterStatus::Died(reason)) => reason,
                // The writer ended without dying: the store was closed.
                _ => std::future::pending().await,
            }
        }
    }

    pub fn writer_status(&self) -> WriterStatus {
        self.writer.borrow().clone()
    }

    /// Background upkeep: a tick every second lets the writer expire holds and
    /// notice admin changes even when no request arrives; hourly housekeeping
    /// keeps slots generated ahead and prunes old idempotency records.
    pub fn spawn_upkeep(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let hourly = n.is_multiple_of(3600);
                n += 1;
                let result = store
                    .submit(move |ctx| {
                        if hourly {
                            Writer::housekeeping(ctx)?;
                        }
                        Ok(Ok(()))
                    })
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e, "upkeep tick failed");
                }
            }
        })
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Whether the writer keeps `slot` in memory (core's `first_live_slot`
    /// of the museum's today on), or an older slot must be read from the
    /// database. The writer may hold some older ones too (unsettled
    /// leases), but a view it published of one it has since dropped is
    /// never updated again, so older views are not read at all.
    fn keeps(&self, slot: SlotId) -> bool {
        let Ok(tz) = self.catalogue().time_zone() else {
            return true;
        };
        match state::first_live_slot(&tz, self.now_ms()) {
            Ok(first) => slot >= first,
            Err(_) => true,
        }
    }

    /// Runs `f` on a read-only connection of its own, off the async
    /// threads: WAL lets it read committed data beside the writer.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            conn.busy_timeout(Duration::from_secs(5))?;
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Unavailable)?
    }

    /// Where visitors reach the shop, for links in emails (offers): set once
    /// the server listens, as the address may be chosen only then.
    pub fn set_public_url(&self, url: &str) {
        *self
            .offers
            .public_url
            .write()
            .unwrap_or_else(|p| p.into_inner()) = url.trim_end_matches('/').to_string();
    }
}

impl Store for SqliteStore {
    fn catalogue(&self) -> Arc<Catalogue> {
        self.shared
            .catalogue
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn changes(&self) -> Arc<crate::store::Changes> {
        self.shared.changes.clone()
    }

    /// From the writer's published views; a day before the live ones
    /// (the writer keeps only those) is read from the database.
    async fn availability(&self, date: Date) -> Result<Availability, StoreError> {
        let catalogue = self.catalogue();
        let now = self.now_ms();
        let from = SlotId::new(date, 0).map_err(|e| Refusal::BadRequest(e.to_string()))?;
        let list: Vec<SlotAvailability> = if self.keeps(from) {
            let slots = self.shared.slots.read().unwrap_or_else(|p| p.into_inner());
            slots
                .range(from..)
                .take_while(|(id, _)| id.date == date)
                .map(|(_, v)| availability_line(&v.slot, &v.ledger_at(now), v.sold.into(), now))
                .collect()
        } else {
            self.read(move |conn| older::day(conn, date, now)).await?
        };
        Ok(Availability {
            date,
            museum: catalogue.museum.name.clone(),
            time_zone: catalogue.museum.time_zone.clone(),
            closed: catalogue.is_closed(date),
            slots: list,
        })
    }

    async fn sellable_slot(&self, slot: SlotId) -> Result<Slot, StoreError> {
        let found = if self.keeps(slot) {
            self.shared
                .slots
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&slot)
                .map(|view| view.slot.clone())
        } else {
            self.read(move |conn| Ok(older::slot(conn, slot)?)).await?
        };
        let Some(found) = found else {
            if self.catalogue().is_closed(slot.date) {
                return Err(Refusal::MuseumClosed(slot.date.to_string()).into());
            }
            return Err(Refusal::UnknownSlot(slot.to_string()).into());
        };
        if found.is_over(self.now_ms()) {
            return Err(Refusal::SlotPast(slot.to_string()).into());
        }
        Ok(found)
    }

    async fn create_hold(
        &self,
        idem: Idem,
        slot: SlotId,
        cart: PricedCart,
    ) -> Result<Answer, StoreError> {
        let lines = online::CartLines::of(&cart)?;
        let reply = self
            .submit(move |ctx| {
                idempotent_typed(ctx, &idem, |ctx| {
                    online::create_hold(ctx, slot, cart, lines)
                })
            })
            .await?;
        // The answer's JSON is built here, on the request's task.
        Ok(reply.into_answer())
    }

    async fn confirm_hold(
        &self,
        idem: Idem,
        hold: HoldId,
        request: ConfirmRequest,
        channel: ChannelInfo,
    ) -> Result<Answer, StoreError> {
        let presigned = self.presign(hold.0).await;
        let reply = self
            .submit(move |ctx| {
                idempotent_typed(ctx, &idem, |ctx| {
                    online::confirm_hold(ctx, hold.0, request, &channel.name, presigned)
                })
            })
            .await?;
        Ok(reply.into_answer())
    }

    fn authenticate_channel(&self, token: &str) -> Option<ChannelInfo> {
        let hash = secrets::hash(token);
        self.shared
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
        self.submit(move |ctx| {
            idempotent(ctx, &idem, |ctx| {
                checkout::begin_checkout(ctx, hold.0, visitor, provider)
            })
        })
        .await
    }

    async fn payment_started(
        &self,
        payment_id: String,
        provider_ref: String,
        redirect_url: String,
    ) -> Result<PaymentRecord, StoreError> {
        self.submit(move |ctx| {
            checkout::payment_started(ctx, &payment_id, &provider_ref, &redirect_url)
        })
        .await
    }

    async fn checkout_status(&self, checkout_id: String) -> Result<CheckoutStatus, StoreError> {
        self.submit(move |ctx| checkout::checkout_status(ctx, &checkout_id))
            .await
    }

    async fn payment_event(
        &self,
        provider: String,
        event: PaymentEvent,
        context: BookingContext,
    ) -> Result<EventOutcome, StoreError> {
        self.submit(move |ctx| checkout::apply_event(ctx, &provider, &event, &context))
            .await
    }

    async fn due_refunds(&self, limit: usize) -> Result<Vec<DueRefund>, StoreError> {
        self.submit(move |ctx| checkout::due_refunds(ctx, limit))
            .await
    }

    async fn refund_attempted(
        &self,
        refund_id: String,
        attempt: RefundAttempt,
        context: BookingContext,
    ) -> Result<(), StoreError> {
        self.submit(move |ctx| checkout::refund_attempted(ctx, &refund_id, attempt, &context))
            .await
    }

    async fn booking(&self, token: String, context: BookingContext) -> Result<Booking, StoreError> {
        self.submit(move |ctx| checkout::booking(ctx, &token, &context))
            .await
    }

    async fn cancel_booking(
        &self,
        idem: Idem,
        token: String,
        tickets: Vec<TicketId>,
        context: BookingContext,
    ) -> Result<Answer, StoreError> {
        let tickets: Vec<Uuid> = tickets.into_iter().map(Uuid::from).collect();
        self.submit(move |ctx| {
            idempotent(ctx, &idem, |ctx| {
                checkout::cancel(ctx, &token, &tickets, &context)
            })
        })
        .await
    }

    async fn resend_booking(
        &self,
        token: String,
        context: BookingContext,
    ) -> Result<(), StoreError> {
        self.submit(move |ctx| checkout::resend(ctx, &token, &context))
            .await
    }

    async fn demo_payment(&self, payment_id: String) -> Result<Option<DemoPayment>, StoreError> {
        self.submit(move |ctx| checkout::demo_payment(ctx, &payment_id))
            .await
    }

    async fn cancel_hold(&self, hold: HoldId) -> Result<(), StoreError> {
        self.submit(move |ctx| online::cancel_hold(ctx, hold.0))
            .await
    }

    async fn enrol(&self, request: EnrolRequest) -> Result<Enrolled, StoreError> {
        self.submit(move |ctx| devices::enrol(ctx, request)).await
    }

    fn authenticate(&self, token: &str) -> Option<DeviceInfo> {
        let hash = secrets::hash(token);
        self.shared
            .devices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            .cloned()
    }

    fn public_keys(&self) -> PublicKeys {
        let keys = self.shared.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.1.as_ref().clone()
    }

    fn keyring(&self) -> Arc<KeyRing> {
        self.shared
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    async fn redeem(
        &self,
        gate: DeviceInfo,
        claims: TicketClaims,
        scan_id: Option<Uuid>,
        entry: EntryPolicy,
    ) -> Result<Redemption, StoreError> {
        self.submit(move |ctx| gate::redeem(ctx, &gate, &claims, scan_id, entry))
            .await
    }

    async fn sync(
        &self,
        device: DeviceInfo,
        request: SyncRequest,
    ) -> Result<SyncResponse, StoreError> {
        let policy = self.lease_policy;
        self.submit(move |ctx| sync::sync(ctx, &device, request, policy))
            .await
    }

    async fn gate_sync(
        &self,
        gate: DeviceInfo,
        request: GateSyncRequest,
        entry: EntryPolicy,
    ) -> Result<GateSyncResponse, StoreError> {
        // Signatures are checked here, off the writer thread, so a large
        // upload never holds up everyone else's writes.
        let received_at = self.clock.now_ms();
        let ring = self.keyring();
        let device = gate.clone();
        let checked = tokio::task::spawn_blocking(move || {
            gate::check_sync(&ring, &device, request, received_at)
        })
        .await
        .map_err(|_| StoreError::Unavailable)??;
        self.submit(move |ctx| gate::gate_sync(ctx, &gate, checked, entry))
            .await
    }

    fn supervisors(&self) -> Vec<StaffMember> {
        self.shared
            .supervisors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn begin_pin_attempt(&self, device: DeviceId) -> Result<(), StoreError> {
        self.submit(move |ctx| staff::begin_attempt(ctx, device.0))
            .await
    }

    async fn pin_succeeded(&self, device: DeviceId) -> Result<(), StoreError> {
        self.submit(move |ctx| Ok(Ok(staff::attempt_succeeded(ctx, device.0)?)))
            .await
    }

    async fn create_approval(
        &self,
        device: DeviceId,
        request: ApprovalRequest,
        approved_by: String,
    ) -> Result<Approval, StoreError> {
        self.submit(move |ctx| {
            Ok(Ok(staff::create_approval(
                ctx,
                device.0,
                request,
                approved_by,
            )?))
        })
        .await
    }

    async fn day_report(&self, date: Date) -> Result<DayReport, StoreError> {
        let catalogue = self.catalogue();
        let now = self.clock.now();
        self.read(move |conn| {
            crate::reports::day_report(conn, &catalogue, date, now)
                .map_err(|e| StoreError::Storage(e.to_string()))
        })
        .await
    }

    async fn leases(&self, date: Date) -> Result<Vec<LeaseInfo>, StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            admin::leases(&path, date).map_err(|e| StoreError::Storage(e.to_string()))
        })
        .await
        .map_err(|_| StoreError::Unavailable)?
    }

    async fn revoke_lease(&self, lease: LeaseId, actor: String) -> Result<Revoked, StoreError> {
        self.submit(move |ctx| {
            let now = tessera_core::clock::from_ms(ctx.now_ms);
            match admin::revoke_lease_in(ctx.tx, lease, &actor, now) {
                Ok(done) => {
                    Writer::reload_in(ctx)?;
                    Ok(Ok(done))
                }
                Err(admin::AdminError::UnknownLease(id)) => {
                    Ok(Err(Refusal::NotFound(format!("no lease {id}")).into()))
                }
                Err(admin::AdminError::Sql(e)) => Err(Fatal::Sql(e)),
                Err(e) => Err(Fatal::Bookkeeping(e.to_string())),
            }
        })
        .await
    }

    async fn join_waitlist(
        &self,
        idem: Idem,
        request: WaitlistRequest,
        bounds: JoinBounds,
    ) -> Result<Answer, StoreError> {
        self.submit(move |ctx| idempotent(ctx, &idem, |ctx| waitlist::join(ctx, request, &bounds)))
            .await
    }

    async fn offer(&self, token: String) -> Result<Offer, StoreError> {
        let hash = waitlist::token_hash(&token).ok_or(WaitlistError::UnknownOffer)?;
        let now = self.now_ms();
        self.read(move |conn| {
            waitlist::read_offer(conn, &hash, now)?
                .ok_or_else(|| WaitlistError::UnknownOffer.into())
        })
        .await
    }

    async fn take_offer(
        &self,
        idem: Idem,
        token: String,
        cart: PricedCart,
    ) -> Result<Answer, StoreError> {
        let hash = waitlist::token_hash(&token).ok_or(WaitlistError::UnknownOffer)?;
        self.submit(move |ctx| idempotent(ctx, &idem, |ctx| waitlist::take_offer(ctx, hash, cart)))
            .await
    }

    async fn healthy(&self) -> bool {
        if self.writer_status() != WriterStatus::Running {
            return false;
        }
        let ping = self.submit(|ctx| {
            ctx.tx.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(Ok(()))
        });
        matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Ok(()))
        )
    }
}
