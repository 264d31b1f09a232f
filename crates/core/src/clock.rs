//! The one clock every Tessera process reads: real time, optionally shifted by
//! a fixed offset so a demo or a test can stand on an opening day at 11:00
//! whatever the wall clock says. The offset never changes while a process
//! runs, so time still flows. (The only place in core that reads the OS: every
//! part must shift time the same way, so it lives here.)

use jiff::{SignedDuration, Timestamp};

/// Seconds to add to the wall clock. For demos and tests only; binaries log a
/// warning when it is set.
pub const OFFSET_ENV: &str = "TESSERA_CLOCK_OFFSET_SECS";

#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    offset: SignedDuration,
}

impl Clock {
    pub fn system() -> Self {
        Clock::default()
    }

    pub fn with_offset_secs(secs: i64) -> Self {
        Clock {
            offset: SignedDuration::from_secs(secs),
        }
    }

    /// Reads `TESSERA_CLOCK_OFFSET_SECS`; a value that is not an integer is an error.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(OFFSET_ENV) {
            Ok(v) => v
                .trim()
                .parse::<i64>()
                .map(Clock::with_offset_secs)
                .map_err(|_| format!("{OFFSET_ENV} must be a whole number of seconds, got {v:?}")),
            Err(_) => Ok(Clock::system()),
        }
    }

    pub fn offset_secs(&self) -> i64 {
        self.offset.as_secs()
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.offset)
            .unwrap_or_else(|_| Timestamp::now())
    }

    pub fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
    }
}

pub fn from_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}
