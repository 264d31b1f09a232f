//! The storage trait the HTTP layer talks to. One implementation today
//! (embedded SQLite with group commit, `crate::sqlite`); a PostgreSQL backend
//! for several server processes would implement the same trait.

use std::future::Future;
use std::sync::Arc;

use jiff::civil::Date;
use tessera_core::admission::EntryPolicy;
use tessera_core::api::approvals::{Approval, ApprovalRequest};
use tessera_core::api::devices::{EnrolRequest, Enrolled, PublicKeys, Role};
use tessera_core::api::gate::Redemption;
use tessera_core::api::gate_sync::{GateSyncRequest, GateSyncResponse};
use tessera_core::api::online::{Availability, ConfirmRequest};
use tessera_core::api::shop::{Offer, WaitlistRequest};
use tessera_core::api::sync::{SyncRequest, SyncResponse};
use tessera_core::catalogue::Catalogue;
use tessera_core::pricing::PricedCart;
use tessera_core::slot::{Slot, SlotId};
use tessera_core::staff::StaffMember;
use tessera_core::ticket_code::{KeyRing, TicketClaims};
use uuid::Uuid;

use crate::error::ServiceError;
use crate::reports::DayReport;
use crate::sqlite::admin::{LeaseInfo, Revoked};

/// An enrolled device, as its bearer token identifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub device_id: Uuid,
    pub role: Role,
    pub name: String,
}

/// The Idempotency-Key of a write and a hash of what was asked under it.
#[derive(Clone, Debug)]
pub struct Idem {
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// The answer to an idempotent write, as first given (status and JSON body).
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub replayed: bool,
}

pub trait Store: Send + Sync + 'static {
    fn catalogue(&self) -> Arc<Catalogue>;

    /// Live availability of a museum day, from committed state only.
    fn availability(&self, date: Date) -> Result<Availability, ServiceError>;

    /// The slot if it exists and can still be sold.
    fn sellable_slot(&self, slot: SlotId) -> Result<Slot, ServiceError>;

    fn create_hold(
        &self,
        idem: Idem,
        slot: SlotId,
        cart: PricedCart,
    ) -> impl Future<Output = Result<Answer, ServiceError>> + Send;

    fn confirm_hold(
        &self,
        idem: Idem,
        hold: Uuid,
        request: ConfirmRequest,
    ) -> impl Future<Output = Result<Answer, ServiceError>> + Send;

    fn cancel_hold(&self, hold: Uuid) -> impl Future<Output = Result<(), ServiceError>> + Send;

    fn enrol(
        &self,
        request: EnrolRequest,
    ) -> impl Future<Output = Result<Enrolled, ServiceError>> + Send;

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
    ) -> impl Future<Output = Result<Redemption, ServiceError>> + Send;

    /// One counter sync round (see `tessera_core::api::sync`).
    fn sync(
        &self,
        device: DeviceInfo,
        request: SyncRequest,
    ) -> impl Future<Output = Result<SyncResponse, ServiceError>> + Send;

    /// A gate's (or a counter in gate mode's) offline scans in, what it needs
    /// to decide offline out.
    fn gate_sync(
        &self,
        gate: DeviceInfo,
        request: GateSyncRequest,
        entry: EntryPolicy,
    ) -> impl Future<Output = Result<GateSyncResponse, ServiceError>> + Send;

    /// Supervisors' PIN verifiers (checked here, never sent to devices).
    fn supervisors(&self) -> Vec<StaffMember>;

    /// Counts a supervisor-PIN attempt from `device` (durably, before the
    /// PIN is checked); refused while the device is locked out.
    fn begin_pin_attempt(
        &self,
        device: Uuid,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;

    /// The device typed a right supervisor PIN: its count starts again.
    fn pin_succeeded(&self, device: Uuid) -> impl Future<Output = Result<(), ServiceError>> + Send;

    /// Records a verified supervisor's one-use approval for `device`.
    fn create_approval(
        &self,
        device: Uuid,
        request: ApprovalRequest,
        approved_by: String,
    ) -> impl Future<Output = Result<Approval, ServiceError>> + Send;

    /// The reconciliation of one museum day (read-only).
    fn day_report(
        &self,
        date: Date,
    ) -> impl Future<Output = Result<DayReport, ServiceError>> + Send;

    /// A day's counter leases.
    fn leases(
        &self,
        date: Date,
    ) -> impl Future<Output = Result<Vec<LeaseInfo>, ServiceError>> + Send;

    /// Revokes a dead counter's lease (logged with `actor`).
    fn revoke_lease(
        &self,
        lease: Uuid,
        actor: String,
    ) -> impl Future<Output = Result<Revoked, ServiceError>> + Send;

    /// Joins a sold-out slot's waiting list (201 `WaitlistEntry`; 200 with
    /// the same entry when the address already waits for that slot).
    fn join_waitlist(
        &self,
        idem: Idem,
        request: WaitlistRequest,
    ) -> impl Future<Output = Result<Answer, ServiceError>> + Send;

    /// The waiting-list offer an emailed token names.
    fn offer(&self, token: String) -> impl Future<Output = Result<Offer, ServiceError>> + Send;

    /// Turns an offer's held places into a checkout hold for `cart`.
    fn take_offer(
        &self,
        idem: Idem,
        token: String,
        cart: PricedCart,
    ) -> impl Future<Output = Result<Answer, ServiceError>> + Send;

    /// True while the writer runs and the database answers.
    fn healthy(&self) -> impl Future<Output = bool> + Send;
}
