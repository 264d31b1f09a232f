//! What the operator's commands answer, whichever backend ran them: both
//! backends build these and `operator` prints them. Backend-neutral, so a
//! backend names this module and never the other backend.

use jiff::civil::Date;
use jiff::Timestamp;
use uuid::Uuid;

/// What `init` created.
#[derive(Debug)]
pub struct InitSummary {
    pub museum: String,
    pub slots: usize,
    pub first_day: Date,
    pub days: i64,
}

/// What `set-pin` did.
#[derive(Debug, PartialEq, Eq)]
pub enum PinSet {
    Changed,
    Added,
}

/// A channel as `channel list` shows it (by name, revoked ones included).
#[derive(Clone, Debug)]
pub struct ChannelLine {
    pub channel_id: Uuid,
    pub name: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}
