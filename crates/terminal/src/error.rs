//! Everything the engine can refuse or fail at, worded for the person at the
//! counter. Fronts show `message`; scripts match `code`.

use serde::ser::SerializeStruct;

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("this terminal is not enrolled yet: run enrol with a code from the server")]
    NotEnrolled,
    #[error("this terminal is already enrolled as \"{0}\"")]
    AlreadyEnrolled(String),
    #[error("enrolment failed: {0}")]
    Enrolment(String),
    #[error("no shift is open: open a shift with your PIN and the float first")]
    NoShift,
    #[error("a shift is already open ({0}); close it first")]
    ShiftOpen(String),
    #[error("PIN not recognised")]
    BadPin,
    #[error("a supervisor's PIN is needed for this")]
    NotSupervisor,
    #[error("a supervisor approval needs the server; try again when online")]
    ApprovalNeedsServer,
    #[error("unknown time slot {0}")]
    UnknownSlot(String),
    #[error("the {0} entry window is over: no more sales for it")]
    SlotClosed(String),
    #[error("only {left} places left on this counter for {slot}; {requested} requested")]
    NotEnoughPlaces {
        slot: String,
        left: u32,
        requested: u32,
    },
    #[error("cash handed over ({tendered}) is less than the total ({total})")]
    NotEnoughCash { tendered: String, total: String },
    #[error("{0}")]
    Cart(#[from] tessera_core::pricing::PricingError),
    #[error("no sale {0} on this terminal")]
    UnknownSale(String),
    #[error("sale {0} is already voided")]
    AlreadyVoided(String),
    #[error("{0}")]
    Invalid(String),
    #[error("this terminal is a {actual}; that needs a {needed}")]
    WrongRole { actual: String, needed: String },
    #[error("server unreachable: {0}")]
    Offline(String),
    #[error("server refused: {0}")]
    Refused(String),
    #[error("printer: {0}")]
    Printer(String),
    #[error("local database: {0}")]
    Storage(String),
}

impl TerminalError {
    pub fn code(&self) -> &'static str {
        match self {
            TerminalError::NotEnrolled => "not_enrolled",
            TerminalError::AlreadyEnrolled(_) => "already_enrolled",
            TerminalError::Enrolment(_) => "enrolment_failed",
            TerminalError::NoShift => "no_shift",
            TerminalError::ShiftOpen(_) => "shift_open",
            TerminalError::BadPin => "bad_pin",
            TerminalError::NotSupervisor => "not_supervisor",
            TerminalError::ApprovalNeedsServer => "approval_needs_server",
            TerminalError::UnknownSlot(_) => "unknown_slot",
            TerminalError::SlotClosed(_) => "slot_closed",
            TerminalError::NotEnoughPlaces { .. } => "not_enough_places",
            TerminalError::NotEnoughCash { .. } => "not_enough_cash",
            TerminalError::Cart(_) => "bad_cart",
            TerminalError::UnknownSale(_) => "unknown_sale",
            TerminalError::AlreadyVoided(_) => "already_voided",
            TerminalError::Invalid(_) => "invalid",
            TerminalError::WrongRole { .. } => "wrong_role",
            TerminalError::Offline(_) => "offline",
            TerminalError::Refused(_) => "refused",
            TerminalError::Printer(_) => "printer",
            TerminalError::Storage(_) => "storage",
        }
    }
}

impl serde::Serialize for TerminalError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("TerminalError", 2)?;
        s.serialize_field("code", self.code())?;
        s.serialize_field("message", &self.to_string())?;
        s.end()
    }
}

impl From<rusqlite::Error> for TerminalError {
    fn from(e: rusqlite::Error) -> Self {
        TerminalError::Storage(e.to_string())
    }
}

impl From<serde_json::Error> for TerminalError {
    fn from(e: serde_json::Error) -> Self {
        TerminalError::Storage(format!("stored data unreadable: {e}"))
    }
}
