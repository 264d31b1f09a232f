//! Redeeming a ticket at an entry gate.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admission::DenyReason;
use crate::slot::SlotId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedeemRequest {
    pub code: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RedeemResult {
    Admitted,
    Denied,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Redemption {
    pub result: RedeemResult,
    pub reason: Option<DenyReason>,
    /// The reason in plain words for the attendant.
    pub message: String,
    pub ticket_id: Option<Uuid>,
    pub product_id: Option<String>,
    pub slot_id: Option<SlotId>,
    pub admits: Option<u8>,
    /// When and by which gate the ticket was first used (on `already_used`,
    /// and on admission, the scan just made).
    pub first_redeemed_at: Option<Timestamp>,
    pub first_redeemed_by: Option<String>,
}

impl Redemption {
    pub fn denied(reason: DenyReason) -> Self {
        Redemption {
            result: RedeemResult::Denied,
            reason: Some(reason),
            message: reason.explain().to_string(),
            ticket_id: None,
            product_id: None,
            slot_id: None,
            admits: None,
            first_redeemed_at: None,
            first_redeemed_by: None,
        }
    }
}
