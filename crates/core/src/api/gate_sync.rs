//! `POST /v1/gate/sync`: a gate (or a counter in gate mode) uploads the scans
//! it made offline and learns what it needs to decide alone: the keys it
//! trusts, the tickets that were voided, the entry policy and the catalogue.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admission::EntryPolicy;
use crate::api::devices::PublicKeys;
use crate::catalogue::Catalogue;
use crate::slot::SlotId;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateSyncRequest {
    pub device_id: Uuid,
    pub catalogue_version: u64,
    /// Admissions made offline, with their original time and the gate's nonce.
    /// At most `limits::SCANS_PER_SYNC`; a `scan_id` names one admission of
    /// one ticket (sent again, it is the same admission).
    #[serde(default)]
    pub scans: Vec<ScanRecord>,
    /// The gate's own clock when it sent this body. The server compares it
    /// with its clock to learn how far the gate's clock is off, and reads the
    /// scans' times in its own time (a gate 90 s fast is not believed to have
    /// admitted anyone 90 s in the future).
    #[serde(default)]
    pub sent_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScanRecord {
    /// The gate's nonce for this admission.
    pub scan_id: Uuid,
    /// The full signed code, so the server can check it was a real ticket.
    pub code: String,
    pub ticket_id: Uuid,
    pub slot_id: SlotId,
    /// When the gate admitted the visitor, by the gate's clock.
    pub scanned_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GateSyncResponse {
    pub server_time: Timestamp,
    pub scans_acked: Vec<Uuid>,
    /// Admissions of the uploaded tickets that another gate also made.
    pub conflicts: u32,
    pub catalogue_version: u64,
    pub catalogue: Option<Catalogue>,
    pub keys: PublicKeys,
    /// Tickets of today's and later slots that were voided: refuse them.
    pub voided_tickets: Vec<Uuid>,
    pub entry: EntryPolicy,
}
