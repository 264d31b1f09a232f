//! Supervisor PINs are four digits: a counter token in the wrong hands must
//! not be able to try them all. Each device gets a few wrong guesses per
//! window, then is refused (even with the right PIN) until the window passes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error::ServiceError;

const MAX_FAILURES: u32 = 5;
const WINDOW: Duration = Duration::from_secs(300);

#[derive(Default)]
pub struct PinGuard {
    failures: Mutex<HashMap<Uuid, (u32, Instant)>>,
}

impl PinGuard {
    pub fn check(&self, device: Uuid) -> Result<(), ServiceError> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&device) {
            Some((count, since)) if *count >= MAX_FAILURES && since.elapsed() < WINDOW => {
                let wait = WINDOW.saturating_sub(since.elapsed()).as_secs() / 60 + 1;
                Err(ServiceError::TooManyAttempts(format!(
                    "too many wrong supervisor PINs from this device; try again in {wait} min"
                )))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, device: Uuid) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures.entry(device).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        if entry.0 == MAX_FAILURES {
            tracing::warn!(%device, "supervisor PIN locked after repeated wrong guesses");
        }
    }

    pub fn succeeded(&self, device: Uuid) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&device);
    }
}
