//! The public online booking API: availability, checkout holds, orders.

use jiff::civil::Date;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Money;
use crate::pricing::{CartLine, PricedLine};
use crate::slot::SlotId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Availability {
    pub date: Date,
    pub museum: String,
    pub time_zone: String,
    /// Empty on a closed day; `closed` says so explicitly.
    pub closed: bool,
    pub slots: Vec<SlotAvailability>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlotAvailability {
    pub slot_id: SlotId,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub capacity: u32,
    /// Places that can be booked right now.
    pub available: u32,
    /// Admissions sold so far, online and at counters (live tallies).
    pub sold: u32,
    /// Entry window is over or the slot is closed for sale.
    pub past: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HoldRequest {
    pub slot_id: SlotId,
    pub items: Vec<CartLine>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hold {
    pub hold_id: Uuid,
    pub slot_id: SlotId,
    pub expires_at: Timestamp,
    pub total: Money,
    pub admissions: u32,
    pub lines: Vec<PricedLine>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfirmRequest {
    /// The payment provider's reference for the captured payment.
    pub payment_reference: String,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Order {
    pub order_id: Uuid,
    pub hold_id: Uuid,
    pub slot_id: SlotId,
    pub total: Money,
    pub payment_reference: String,
    pub created_at: Timestamp,
    pub tickets: Vec<IssuedTicket>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedTicket {
    pub ticket_id: Uuid,
    pub product_id: String,
    pub slot_id: SlotId,
    pub admits: u8,
    /// The signed ticket code the QR holds.
    pub code: String,
}
