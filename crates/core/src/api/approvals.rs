//! `POST /v1/approvals`: a supervisor's PIN, typed at a counter, checked by
//! the server (never by the counter, which holds no supervisor verifier).
//! The answer is a one-use approval bound to one action on one thing (a void
//! of one sale); the counter's upload of that action carries its id, and the
//! server refuses the action without it.
//!
//! The PIN travels in the `X-Supervisor-Pin` header, as for the other
//! supervisor calls, so it never sits in a logged or stored body.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Header carrying a supervisor's PIN typed at a counter.
pub const SUPERVISOR_PIN: &str = "x-supervisor-pin";

/// What the supervisor approves.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApprovalRequest {
    /// Voiding one sale (refund and, before its slot, places back).
    Void { sale_id: Uuid },
}

impl ApprovalRequest {
    pub fn action(&self) -> &'static str {
        match self {
            ApprovalRequest::Void { .. } => "void",
        }
    }

    /// The id the approval is bound to.
    pub fn subject(&self) -> Uuid {
        match self {
            ApprovalRequest::Void { sale_id } => *sale_id,
        }
    }
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approval_id: Uuid,
    #[serde(flatten)]
    pub request: ApprovalRequest,
    /// The supervisor whose PIN the server matched.
    pub approved_by: String,
    pub approved_at: Timestamp,
}
