//! What supervisors and operators are answered about counters' leases and the
//! uploads the server set aside: `GET /v1/leases`,
//! `POST /v1/leases/{id}/revoke`, and the quarantine section of the day report.

use serde::{Deserialize, Serialize};

use super::sync::{SaleRecord, ShiftRecord, VoidRecord};
use crate::ids::LeaseId;
use crate::slot::SlotId;

/// A lease as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct LeaseInfo {
    pub lease_id: LeaseId,
    /// The counter's name.
    pub device: String,
    pub slot_id: SlotId,
    /// Places the lease holds now (what it was granted less what it gave back).
    pub escrow: u32,
    pub sold: u32,
    pub revoked: bool,
    /// When the counter last synced, in milliseconds since the epoch.
    pub last_sync_at: Option<i64>,
}

/// What revoking a lease did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Revoked {
    pub lease_id: LeaseId,
    /// The counter's name.
    pub device: String,
    pub slot_id: SlotId,
    /// Places the server knew were sold from it when revoked.
    pub sold: u32,
    /// Places back on sale.
    pub returned: u32,
    pub already_revoked: bool,
}

/// A counter's upload the server kept aside, exactly as the counter sent it.
/// On the wire it is the record itself (no tag): the line that carries it
/// says which kind it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub enum QuarantinedUpload {
    Sale(SaleRecord),
    Void(VoidRecord),
    Shift(ShiftRecord),
}

impl QuarantinedUpload {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sale(_) => "sale",
            Self::Void(_) => "void",
            Self::Shift(_) => "shift",
        }
    }
}
