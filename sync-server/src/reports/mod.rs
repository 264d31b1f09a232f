//! The day reconciliation: its facts loaded from a backend (`sqlite` here,
//! `postgres::report` for PostgreSQL), assembled by core
//! (`tessera_core::day_report`, the same arithmetic for both), and written
//! as text or CSV (`format`). Its types are the wire types of
//! `tessera_core::api::report`, re-exported here.

mod format;
mod sqlite;

pub use format::{to_csv, to_text};
pub use sqlite::day_report;
pub use tessera_core::api::report::*;
use tessera_core::day_report::FactError;
use tessera_core::pricing::PricedLine;
use tessera_core::slot::SlotId;

/// Why a day report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The database could not be read.
    #[error("reading the day's facts: {0}")]
    Storage(String),
    /// The database is out of reach or gave up on a time limit: the same
    /// report may well load a moment later (answered 503).
    #[error("reading the day's facts: {0}")]
    Unavailable(String),
    /// A stored value does not read back as what it should be.
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Facts(#[from] FactError),
}

/// A slot id as stored (text).
pub(crate) fn slot_of(text: &str) -> Result<SlotId, ReportError> {
    text.parse()
        .map_err(|e| ReportError::Data(format!("stored slot id unreadable: {e}")))
}

/// A sale's or an order's lines, as stored (JSON).
pub(crate) fn lines_of(json: &str) -> Result<Vec<PricedLine>, ReportError> {
    serde_json::from_str(json)
        .map_err(|e| ReportError::Data(format!("stored sale lines unreadable: {e}")))
}

/// The upload a quarantine row kept (its `kind` and stored JSON), or `None`
/// if it cannot be read back: the line's reason still shows then.
pub(crate) fn quarantined_upload(kind: &str, json: &str) -> Option<QuarantinedUpload> {
    let parsed = match kind {
        "sale" => serde_json::from_str(json).map(QuarantinedUpload::Sale),
        "void" => serde_json::from_str(json).map(QuarantinedUpload::Void),
        "shift" => serde_json::from_str(json).map(QuarantinedUpload::Shift),
        other => {
            tracing::warn!(kind = other, "quarantine row of an unknown kind");
            return None;
        }
    };
    parsed
        .inspect_err(|e| tracing::warn!(kind, error = %e, "quarantined upload unreadable"))
        .ok()
}
