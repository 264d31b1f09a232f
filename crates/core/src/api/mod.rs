//! What travels over HTTP between the server, terminals, gates and web shops.
//! Plain serde types, shared by both ends so they cannot drift apart.

pub mod approvals;
pub mod devices;
pub mod events;
pub mod gate;
pub mod gate_sync;
pub mod online;
pub mod queue;
pub mod report;
pub mod shop;
pub mod supervisor;
pub mod sync;

use serde::{Deserialize, Serialize};

/// Every error answer: `{"error":{"code":"…","message":"…"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable: `sold_out`, `hold_expired`, `unknown_slot`…
    pub code: String,
    /// For a person: what went wrong and, where it helps, what to do.
    pub message: String,
}

/// Header every online write must carry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
