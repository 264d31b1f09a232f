//! `POST /v1/sync`: one round trip in which a counter uploads what it sold and
//! voided, settles and asks for leases, and learns the catalogue, staff, keys
//! and live availability. Every part of the body is safe to send twice, in any
//! order: sales by id and seq, lease totals by maximum, voids and shifts by id.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::devices::PublicKeys;
use crate::api::online::SlotAvailability;
use crate::catalogue::Catalogue;
use crate::money::Money;
use crate::pricing::PricedLine;
use crate::slot::SlotId;
use crate::staff::StaffMember;
use crate::tally::Tallies;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncRequest {
    pub device_id: Uuid,
    pub catalogue_version: u64,
    /// Sales not yet acknowledged, in `terminal_seq` order from the oldest.
    #[serde(default)]
    pub sales: Vec<SaleRecord>,
    #[serde(default)]
    pub voids: Vec<VoidRecord>,
    /// The terminal's leases that are open or that the server has not yet
    /// confirmed settled (`SyncResponse::settled_leases`), with what it has
    /// given back.
    #[serde(default)]
    pub leases: Vec<LeaseReport>,
    /// Slots the terminal wants (more) places in.
    #[serde(default)]
    pub wants: Vec<LeaseWant>,
    /// The terminal's own running totals per slot, covering exactly the
    /// sales and voids it has sent (now or before), for today's and later
    /// slots only. The server derives each tally from the uploads it stored
    /// and compares these with them; a slot left out changes no total.
    #[serde(default)]
    pub own_tallies: BTreeMap<SlotId, ActorTally>,
    /// Closed shifts (Z reports) not yet acknowledged.
    #[serde(default)]
    pub shifts: Vec<ShiftRecord>,
    /// The counter's highest seq, sent or not: the server can tell sales it
    /// has not received yet from the end.
    #[serde(default)]
    pub last_seq: u64,
    /// The shift open at the counter now, if any.
    #[serde(default)]
    pub open_shift: Option<OpenShift>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenShift {
    pub shift_id: Uuid,
    pub cashier: String,
    pub opened_at: Timestamp,
    pub float: i64,
}

/// One actor's running totals for one slot (admissions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActorTally {
    pub sold: u64,
    /// Voided admissions whose places went back on sale.
    pub voided: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum PaymentMethod {
    Cash,
    Card,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Cash => "cash",
            PaymentMethod::Card => "card",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Payment {
    pub method: PaymentMethod,
    /// What the sale cost (equals the sale total).
    pub amount: i64,
    /// Cash handed over, for cash payments.
    #[serde(default)]
    pub tendered: Option<i64>,
    #[serde(default)]
    pub change: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SoldTicket {
    pub ticket_id: Uuid,
    pub product_id: String,
    pub admits: u8,
    pub code: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SaleRecord {
    pub sale_id: Uuid,
    pub terminal_seq: u64,
    pub lease_id: Uuid,
    pub slot_id: SlotId,
    pub shift_id: Uuid,
    pub cashier: String,
    pub created_at: Timestamp,
    pub lines: Vec<PricedLine>,
    pub total: Money,
    pub admissions: u32,
    pub payment: Payment,
    pub tickets: Vec<SoldTicket>,
    /// The catalogue version the counter priced this sale with; the server
    /// re-derives its prices from that version (0: the current one).
    #[serde(default)]
    pub catalogue_version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct VoidRecord {
    pub void_id: Uuid,
    pub sale_id: Uuid,
    /// The highest sale seq when the void happened: the server applies the
    /// void after that sale and before any later one.
    pub after_seq: u64,
    pub at: Timestamp,
    pub shift_id: Option<Uuid>,
    pub approved_by: String,
    /// The server's approval of this void (`POST /v1/approvals`); the server
    /// refuses a void without one, and records the approver it names.
    #[serde(default)]
    pub approval_id: Option<Uuid>,
    pub reason: String,
    /// The slot had not started, so the places went back to the lease.
    pub returned_to_lease: bool,
    /// Money handed back, and how.
    pub refund: i64,
    pub refund_method: PaymentMethod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseReport {
    pub lease_id: Uuid,
    pub slot_id: SlotId,
    /// The grants the terminal had heard of when it wrote this report, so a
    /// late or replayed report can be read against newer grants.
    pub granted_total: u32,
    pub released_total: u32,
    /// Places the terminal could still sell from this lease.
    pub unused: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseWant {
    pub slot_id: SlotId,
    /// Places a sale at the counter is waiting for (0: just keep me supplied).
    pub need: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ShiftRecord {
    pub shift_id: Uuid,
    pub cashier: String,
    pub opened_at: Timestamp,
    pub closed_at: Timestamp,
    pub float: i64,
    pub cash_sales: i64,
    pub card_sales: i64,
    pub cash_refunds: i64,
    pub card_refunds: i64,
    pub expected_cash: i64,
    pub counted_cash: i64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub sales_count: u32,
    pub voids_count: u32,
}

impl ShiftRecord {
    /// Positive: more cash in the drawer than expected.
    pub fn over_short(&self) -> i64 {
        self.counted_cash - self.expected_cash
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncResponse {
    pub server_time: Timestamp,
    /// Highest seq such that every sale 1..=acked_seq is stored.
    pub acked_seq: u64,
    pub sales_stored: u32,
    pub sales_duplicate: u32,
    pub voids_acked: Vec<Uuid>,
    pub shifts_acked: Vec<Uuid>,
    pub leases: Vec<LeaseGrant>,
    pub catalogue_version: u64,
    /// Sent when the terminal's version differs.
    pub catalogue: Option<Catalogue>,
    /// Cashiers' PIN verifiers (argon2id), for unlocking the till offline.
    /// Never a supervisor's: their PINs are checked by the server.
    pub staff: Vec<StaffMember>,
    pub keys: PublicKeys,
    /// Today's and tomorrow's slots, live.
    pub slots: Vec<SlotAvailability>,
    pub tallies: Tallies,
    /// This counter's uploads the server could not accept as they are: kept
    /// aside with their reason for a supervisor, and acknowledged so the
    /// uploads behind them go on.
    #[serde(default)]
    pub quarantined: Vec<Quarantined>,
    /// This counter's leases the server holds as settled: their slot is
    /// over, every place not sold was given back, every sale has arrived
    /// (or a supervisor revoked the lease). A counter that agrees marks
    /// them settled and stops reporting them, so a sync carries only live
    /// leases however long the counter has been selling. Older servers do
    /// not send it; a counter then keeps reporting, as before.
    #[serde(default)]
    pub settled_leases: Vec<Uuid>,
}

/// One upload kept aside for a supervisor.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// `sale`, `void` or `shift`.
    pub kind: String,
    /// The sale's, void's or shift's id.
    pub id: Uuid,
    /// The sale's seq (for a void, its sale's).
    pub terminal_seq: Option<u64>,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseGrant {
    pub lease_id: Uuid,
    pub slot_id: SlotId,
    pub granted_total: u32,
    pub released_total: u32,
    /// Places the server asks the terminal to give back, if unsold.
    pub recall: u32,
    /// A supervisor revoked this lease: stop selling from it.
    pub revoked: bool,
}
