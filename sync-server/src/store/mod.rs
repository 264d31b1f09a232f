//! The storage trait the HTTP layer talks to, implemented by the embedded
//! SQLite backend (`crate::sqlite`, group commit in one process) and by the
//! PostgreSQL one (`crate::postgres`, several processes on one database).
//!
//! Everything a caller of the seam sees is defined here or in
//! `tessera_core::api` (wire and report types) and `tessera_core::ids`: this
//! module imports no backend, so a backend can depend on it and not the
//! other way round.
//!
//! ## Errors
//!
//! Every call answers [`StoreError`] (`error.rs`): a [`Refusal`] decided by
//! the rules (sold out, hold expired, unknown offer…), which is an answer
//! committed with the rest of its batch, or a failure of the storage
//! (unavailable, a failed read or write, a bug rolled back). A backend's
//! own errors (a writer's `Fatal`, a job's savepoint rolled back, a driver
//! error) become one of these inside the backend and never cross the seam.
//! Input and access checks (malformed JSON, a body too large, a missing
//! Idempotency-Key, an unknown token, a wrong role) are HTTP's alone
//! (`crate::error::ServiceError`): decided before a store is called, they
//! never come out of one.

mod changes;
mod error;

pub use changes::{Changes, DeviceNotes, Pending, Topics, MAX_SLOT_IDS};
pub use error::{Refusal, RefusalKind, StoreError, WaitlistError};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::civil::Date;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tessera_core::admission::EntryPolicy;
use tessera_core::api::approvals::{Approval, ApprovalRequest};
use tessera_core::api::devices::{EnrolRequest, Enrolled, PublicKeys, Role};
use tessera_core::api::gate::Redemption;
use tessera_core::api::gate_sync::{GateSyncRequest, GateSyncResponse};
use tessera_core::api::online::{Availability, ConfirmRequest};
use tessera_core::api::report::DayReport;
use tessera_core::api::shop::{Booking, Language, Offer, WaitlistRequest};
use tessera_core::api::supervisor::{LeaseInfo, Revoked};
use tessera_core::api::sync::{SyncRequest, SyncResponse};
use tessera_core::catalogue::Catalogue;
use tessera_core::ids::{DeviceId, HoldId, LeaseId, TicketId};
use tessera_core::inventory::LeasePolicy;
use tessera_core::money::Money;
use tessera_core::pricing::PricedCart;
use tessera_core::slot::{Slot, SlotId};
use tessera_core::staff::StaffMember;
use tessera_core::ticket_code::{KeyRing, TicketClaims};
use uuid::Uuid;

/// How writes are committed: many requests per transaction and fsync (group
/// commit, the default), or one each (the reference the benchmarks compare).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    Group,
    PerRequest,
}

/// Idempotency-Key records a store keeps in memory by default.
pub const DEFAULT_IDEMPOTENCY_KEYS_IN_MEMORY: usize = 200_000;

/// What a deployment sets for any backend (`crate::config` builds it).
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub hold_ttl: Duration,
    pub commit: CommitMode,
    /// Most jobs one group commit takes.
    pub max_batch: usize,
    pub lease_policy: LeasePolicy,
    /// Idempotency-Key records kept in memory (see `idempotency`).
    pub idempotency_keys_in_memory: usize,
    /// How long a waiting-list offer holds its places.
    pub offer_ttl: Duration,
    /// SQLite: the WAL file's size past which the writer checkpoints and
    /// truncates it between batches (see `sqlite::checkpoint`).
    pub wal_limit_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            hold_ttl: Duration::from_secs(600),
            commit: CommitMode::Group,
            max_batch: 512,
            lease_policy: LeasePolicy::default(),
            idempotency_keys_in_memory: DEFAULT_IDEMPOTENCY_KEYS_IN_MEMORY,
            offer_ttl: Duration::from_secs(30 * 60),
            wal_limit_bytes: 64 * 1024 * 1024,
        }
    }
}

/// An enrolled device, as its bearer token identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub device_id: DeviceId,
    pub role: Role,
    pub name: String,
}

impl DeviceInfo {
    pub fn id(&self) -> DeviceId {
        self.device_id
    }
}

/// The Idempotency-Key of a write and a hash of what was asked under it.
#[derive(Clone, Debug)]
pub struct Idem {
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// How many waiting-list entries (waiting or offered) one join may bring its
/// address and its client to, across all entry times; `client_tag` names the
/// client without its address.
#[derive(Clone, Debug)]
pub struct JoinBounds {
    pub client_tag: Vec<u8>,
    pub per_email: u32,
    pub per_client: u32,
}

/// The answer to an idempotent write, as first given (status and JSON body).
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub replayed: bool,
}

/// A trusted seller, as its channel token identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    pub channel_id: Uuid,
    pub name: String,
}

/// What bookings need from the configuration: the cancellation deadline and
/// the address links in emails point at.
#[derive(Clone, Debug)]
pub struct BookingContext {
    pub cancel_deadline_hours: u32,
    /// `{public_url}/booking/{token}` is a booking's link.
    pub public_url: String,
}

/// The visitor's details given at checkout, checked at the edge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Visitor {
    pub name: String,
    pub email: String,
    pub language: Language,
}

/// A payment as the server keeps it (the first answer of a checkout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub payment_id: String,
    pub checkout_id: String,
    pub hold_id: HoldId,
    pub slot_id: SlotId,
    pub amount: Money,
    pub hold_expires_at: Timestamp,
    pub email: String,
    pub language: Language,
    pub provider: String,
    pub redirect_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentEventKind {
    /// Money was captured.
    Paid,
    /// The session expired or the payment failed: nothing was taken.
    Failed,
}

/// A verified callback: it came from the provider and was not altered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentEvent {
    /// The provider's event id: the same event delivered twice has one id.
    pub event_id: String,
    /// Our `PaymentRequest::payment_id`, as the provider echoed it.
    pub payment_id: String,
    /// What a refund must name (Stripe: the payment intent `pi_…`).
    pub refund_ref: Option<String>,
    pub kind: PaymentEventKind,
    /// The amount captured, when the event says.
    pub amount: Option<Money>,
}

impl PaymentEventKind {
    /// The word `webhook_events.kind` stores.
    pub fn word(self) -> &'static str {
        match self {
            PaymentEventKind::Paid => "paid",
            PaymentEventKind::Failed => "failed",
        }
    }
}

impl PaymentEvent {
    /// The event as core's payment rules judge it.
    pub fn provider_event(&self) -> tessera_core::payment::ProviderEvent {
        match self.kind {
            PaymentEventKind::Paid => tessera_core::payment::ProviderEvent::Paid {
                captured: self.amount,
            },
            PaymentEventKind::Failed => tessera_core::payment::ProviderEvent::Failed,
        }
    }
}

/// What the demo page shows about a payment.
#[derive(Clone, Debug)]
pub struct DemoPayment {
    pub payment_id: String,
    pub checkout_id: String,
    pub hold_id: HoldId,
    pub amount: Money,
    pub status: String,
    pub language: Language,
    pub museum: String,
    /// Local date and time of the entry, e.g. `2026-12-09 10:00`.
    pub entry: String,
}

/// What a verified payment event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// Seen before (same event id): nothing changed.
    Replayed,
    /// Names no payment of ours: acknowledged, nothing changed.
    UnknownPayment,
    /// The payment had already been settled by an earlier event.
    AlreadySettled,
    /// Paid: the order was issued.
    Confirmed { hold_id: HoldId },
    /// Paid, but no order could be issued: a refund is queued.
    Refunding { hold_id: HoldId },
    /// Failed: nothing was taken; the hold was released.
    Failed { hold_id: HoldId },
}

impl EventOutcome {
    /// The word `webhook_events.outcome` stores.
    pub fn word(&self) -> &'static str {
        match self {
            EventOutcome::Replayed => "replayed",
            EventOutcome::UnknownPayment => "unknown_payment",
            EventOutcome::AlreadySettled => "already_settled",
            EventOutcome::Confirmed { .. } => "confirmed",
            EventOutcome::Refunding { .. } => "refunding",
            EventOutcome::Failed { .. } => "failed",
        }
    }
}

/// A refund the background task should send to the provider now.
#[derive(Clone, Debug)]
pub struct DueRefund {
    pub refund_id: String,
    pub provider: String,
    pub refund_ref: String,
    pub amount: Money,
    pub idempotency_key: String,
    pub attempts: u32,
}

/// How one attempt at a refund went.
#[derive(Clone, Debug)]
pub enum RefundAttempt {
    Done {
        provider_refund_id: String,
    },
    /// Try again at `retry_at_ms`.
    Retry {
        error: String,
        retry_at_ms: i64,
    },
    /// The provider refused for good: a person must look at it.
    Refused {
        error: String,
    },
}

pub trait Store: Send + Sync + 'static {
    fn catalogue(&self) -> Arc<Catalogue>;

    /// Which museum days changed, told after each commit (this process's or,
    /// on a shared database, any process's): what the push channel listens
    /// to.
    fn changes(&self) -> Arc<Changes>;

    /// Live availability of a museum day, from committed state only (a
    /// day no longer kept in memory is read from storage).
    fn availability(
        &self,
        date: Date,
    ) -> impl Future<Output = Result<Availability, StoreError>> + Send;

    /// The slot if it exists and can still be sold (`SlotPast` for one that
    /// exists but is over).
    fn sellable_slot(&self, slot: SlotId) -> impl Future<Output = Result<Slot, StoreError>> + Send;

    fn create_hold(
        &self,
        idem: Idem,
        slot: SlotId,
        cart: PricedCart,
    ) -> impl Future<Output = Result<Answer, StoreError>> + Send;

    /// A trusted channel confirms a hold; the order carries the channel.
    fn confirm_hold(
        &self,
        idem: Idem,
        hold: HoldId,
        request: ConfirmRequest,
        channel: ChannelInfo,
    ) -> impl Future<Output = Result<Answer, StoreError>> + Send;

    /// The channel behind a channel token (none when unknown or revoked).
    fn authenticate_channel(&self, token: &str) -> Option<ChannelInfo>;

    /// Starts paying for an open hold: a payment record (the answer's body
    /// is a [`PaymentRecord`]); the provider is called afterwards, outside.
    fn begin_checkout(
        &self,
        idem: Idem,
        hold: HoldId,
        visitor: Visitor,
        provider: String,
    ) -> impl Future<Output = Result<Answer, StoreError>> + Send;

    /// Records what the provider answered for a payment (first answer wins).
    fn payment_started(
        &self,
        payment_id: String,
        provider_ref: String,
        redirect_url: String,
    ) -> impl Future<Output = Result<PaymentRecord, StoreError>> + Send;

    /// A checkout's state for its return page; the booking token is handed
    /// out once, then forgotten.
    fn checkout_status(
        &self,
        checkout_id: String,
    ) -> impl Future<Output = Result<tessera_core::api::shop::CheckoutStatus, StoreError>> + Send;

    /// Applies a verified provider event, exactly once per event id.
    fn payment_event(
        &self,
        provider: String,
        event: PaymentEvent,
        context: BookingContext,
    ) -> impl Future<Output = Result<EventOutcome, StoreError>> + Send;

    /// Refunds whose next attempt is due.
    fn due_refunds(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DueRefund>, StoreError>> + Send;

    fn refund_attempted(
        &self,
        refund_id: String,
        attempt: RefundAttempt,
        context: BookingContext,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// "My booking" by its token.
    fn booking(
        &self,
        token: String,
        context: BookingContext,
    ) -> impl Future<Output = Result<Booking, StoreError>> + Send;

    /// Cancels some or all of a booking's tickets (answer: the updated booking).
    fn cancel_booking(
        &self,
        idem: Idem,
        token: String,
        tickets: Vec<TicketId>,
        context: BookingContext,
    ) -> impl Future<Output = Result<Answer, StoreError>> + Send;

    /// Queues the booking's email again.
    fn resend_booking(
        &self,
        token: String,
        context: BookingContext,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What the demo provider's page shows about one of its payments.
    fn demo_payment(
        &self,
        payment_id: String,
    ) -> impl Future<Output = Result<Option<DemoPayment>, StoreError>> + Send;

    fn cancel_hold(&self, hold: HoldId) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn enrol(
        &self,
        request: EnrolRequest,
    ) -> impl Future<Output = Result<Enrolled, StoreError>> + Send;

    fn authenticate(&self, token: &str) -> Option<DeviceInfo>;

    fn public_keys(&self) -> PublicKeys;

    fn keyring(&self) -> Arc<KeyRing>;

    /// Records a verified ticket's entry, once: a second scan is denied with
    /// where and when the first one was. The code's claims, whether it was
    /// voided and its entry window are judged here, in one order
    /// (`tessera_core::admission::decide`).
    fn redeem(
        &self,
        gate: DeviceInfo,
        claims: TicketClaims,
        scan_id: Option<Uuid>,
        entry: EntryPolicy,
    ) -> impl Future<Output = Result<Redemption, StoreError>> + Send;

    /// One counter sync round (see `tessera_core::api::sync`).
    fn sync(
        &self,
        device: DeviceInfo,
        request: SyncRequest,
    ) -> impl Future<Output = Result<SyncResponse, StoreError>> + Send;

    /// A gate's (or a counter in gate mode's) offline scans in, what it needs
    /// to decide offline out.
    fn gate_sync(
        &self,
        gate: DeviceInfo,
        request: GateSyncRequest,
        entry: EntryPolicy,
    ) -> impl Future<Output = Result<GateSyncResponse, StoreError>> + Send;

    /// Supervisors' PIN verifiers (checked here, never sent to devices).
    fn supervisors(&self) -> Vec<StaffMember>;

    /// Counts a supervisor-PIN attempt from `device` (durably, before the
    /// PIN is checked); refused while the device is locked out.
    fn begin_pin_attempt(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The device typed a right supervisor PIN: its count starts again.
    fn pin_succeeded(
        &self,
        device: DeviceId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records a verified supervisor's one-use approval for `device`.
    fn create_approval(
        &self,
        device: DeviceId,
        request: ApprovalRequest,
        approved_by: String,
    ) -> impl Future<Output = Result<Approval, StoreError>> + Send;

    /// The reconciliation of one museum day (read-only).
    fn day_report(&self, date: Date) -> impl Future<Output = Result<DayReport, StoreError>> + Send;

    /// A day's counter leases.
    fn leases(&self, date: Date)
        -> impl Future<Output = Result<Vec<LeaseInfo>, StoreError>> + Send;

    /// Revokes a dead counter's lease (logged with `actor`).
    fn revoke_lease(
        &self,
        lease: LeaseId,
        actor: String,
    ) -> impl Future<Output = Result<Revoked, StoreError>> + Send;

    /// Joins a sold-out slot's waiting list (201 `WaitlistEntry`; 200 with
    /// the same entry when the address already waits for that slot), within
    /// `bounds`.
    fn join_waitlist(
        &self,
        idem: Idem,
        request: WaitlistRequest,
        bounds: JoinBounds,
    ) -> impl Future<Output = Result<Answer, StoreError>> + Send;

    /// The waiting-list offer an emailed token names.
    fn offer(&self, token: String) -> impl Future<Output = Result<Offer, StoreError>> + Send;

    /// Turns an offer's held places into a checkout hold for `cart`.
    fn take_offer(
        &self,
        idem: Idem,
        token: String,
        cart: PricedCart,
    ) -> impl Future<Output = Result<Answer, StoreError>> + Send;

    /// True while the writer runs and the database answers.
    fn healthy(&self) -> impl Future<Output = bool> + Send;
}

/// One mail waiting to be sent.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub mail_id: String,
    pub kind: String,
    pub recipient: String,
    pub language: String,
    pub payload: String,
    pub attempts: u32,
    pub created_at: i64,
}

/// The mail outbox as the mailer works through it (rows are queued by the
/// store itself, in the transaction of what causes the mail). Apart from
/// [`Store`] so that a backend can serve requests before it sends mail.
pub trait MailOutbox: Store {
    /// Unsent mails due at `now_ms`, oldest due first.
    fn due_mail(
        &self,
        now_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<OutboxRow>, StoreError>> + Send;

    /// Mails not yet sent nor given up on.
    fn queued_mail(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The mail went out: its payload, which carries secret links, is blanked.
    fn mail_sent(
        &self,
        mail_id: String,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The mail could not go out: tried again at `retry_at`, or never
    /// (`None`: given up, payload blanked).
    fn mail_failed(
        &self,
        mail_id: String,
        error: String,
        retry_at: Option<i64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
