//! Checking a supervisor's PIN typed at a counter. Supervisor PINs are short,
//! so a counter token in the wrong hands must not be able to try them all:
//! every attempt is counted in the database before the PIN is checked (so
//! concurrent guesses and restarts do not escape the count), and the fifth
//! wrong one in a row locks the device out for five minutes, even with the
//! right PIN. The check itself is a slow KDF (argon2id) run off the async
//! threads, a few at a time so guesses cannot eat the server's memory.

use std::sync::Arc;

use tessera_core::staff::{check_pin, who_has_pin, StaffMember};
use tokio::sync::Semaphore;

use crate::error::ServiceError;
use crate::store::{DeviceInfo, Store};

/// KDF runs at once (each takes ~19 MiB and a core for tens of ms).
const CONCURRENT_CHECKS: usize = 2;

pub struct PinGuard {
    checks: Arc<Semaphore>,
}

impl Default for PinGuard {
    fn default() -> Self {
        PinGuard {
            checks: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
        }
    }
}

impl PinGuard {
    /// The supervisor whose PIN `pin` is, typed at `device`; counted against
    /// the device's lockout either way.
    pub async fn supervisor<S: Store>(
        &self,
        store: &S,
        device: &DeviceInfo,
        pin: &str,
    ) -> Result<StaffMember, ServiceError> {
        store.begin_pin_attempt(device.id()).await?;
        let pin = pin.trim().to_string();
        let found = if check_pin(&pin).is_err() {
            None
        } else {
            let supervisors = store.supervisors();
            let _permit = self
                .checks
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ServiceError::Unavailable)?;
            tokio::task::spawn_blocking(move || who_has_pin(&supervisors, &pin).cloned())
                .await
                .map_err(|_| ServiceError::Unavailable)?
        };
        match found {
            Some(staff) if staff.may_approve() => {
                store.pin_succeeded(device.id()).await?;
                Ok(staff)
            }
            _ => {
                // The device, never the PIN: an operator sees guessing early.
                tracing::warn!(device = %device.name, id = %device.device_id, "wrong supervisor PIN");
                Err(ServiceError::Forbidden(
                    "that PIN is not a supervisor's".into(),
                ))
            }
        }
    }
}
