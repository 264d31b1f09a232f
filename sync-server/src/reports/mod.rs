//! The day reconciliation, read out of the database (`build`) and written as
//! text or CSV (`format`). Its types are the wire types of
//! `tessera_core::api::report`, re-exported here.

mod build;
mod format;

pub use build::day_report;
pub use format::{to_csv, to_text};
pub use tessera_core::api::report::*;

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
