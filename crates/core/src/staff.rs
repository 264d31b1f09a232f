//! Museum staff who use the counters: cashiers, and supervisors who may also
//! approve voids and close the day. Counters check PINs offline against
//! salted hashes the server hands out; a PIN itself never leaves the server's
//! fixture file.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StaffRole {
    Cashier,
    Supervisor,
}

/// A staff member as fixtures declare them (with the PIN in clear).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffFixture {
    pub name: String,
    pub role: StaffRole,
    pub pin: String,
}

/// A staff member as counters know them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaffMember {
    pub name: String,
    pub role: StaffRole,
    /// Hex.
    pub pin_salt: String,
    /// Hex SHA-256 of salt and PIN.
    pub pin_hash: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StaffError {
    #[error("PIN must be 4 to 8 digits")]
    BadPin,
    #[error("staff name must be 1-40 characters")]
    BadName,
}

fn digest(salt: &str, pin: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tessera/pin/v1:");
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(pin.as_bytes());
    data_encoding::HEXLOWER.encode(&h.finalize())
}

impl StaffMember {
    /// `salt` comes from the caller's RNG (hex of 16 random bytes).
    pub fn new(
        name: &str,
        role: StaffRole,
        pin: &str,
        salt: String,
    ) -> Result<StaffMember, StaffError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 40 {
            return Err(StaffError::BadName);
        }
        if !(4..=8).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(StaffError::BadPin);
        }
        Ok(StaffMember {
            name: name.to_string(),
            role,
            pin_hash: digest(&salt, pin),
            pin_salt: salt,
        })
    }

    pub fn pin_matches(&self, pin: &str) -> bool {
        // Constant-time comparison is moot for a 4-digit PIN checked locally,
        // but costs nothing.
        let given = digest(&self.pin_salt, pin.trim());
        given.len() == self.pin_hash.len()
            && given
                .bytes()
                .zip(self.pin_hash.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    pub fn may_approve(&self) -> bool {
        self.role == StaffRole::Supervisor
    }
}

/// Finds who a PIN belongs to (names need not be typed at a busy counter).
pub fn who_has_pin<'a>(staff: &'a [StaffMember], pin: &str) -> Option<&'a StaffMember> {
    staff.iter().find(|s| s.pin_matches(pin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_check_against_salted_hashes() {
        let s = StaffMember::new("Inès", StaffRole::Supervisor, "9999", "00ff".into()).unwrap();
        assert!(s.pin_matches("9999"));
        assert!(!s.pin_matches("9998"));
        assert!(!s.pin_hash.contains("9999"));
        assert_eq!(
            StaffMember::new("x", StaffRole::Cashier, "12", "aa".into()),
            Err(StaffError::BadPin)
        );
        assert_eq!(
            who_has_pin(std::slice::from_ref(&s), "9999").map(|m| m.name.as_str()),
            Some("Inès")
        );
    }
}
