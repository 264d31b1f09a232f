//! Whether a one-time enrolment code may enrol the device that presents it,
//! and with which signing key: one rule for every backend, which only
//! loads the code's row and writes the device.

use crate::api::devices::Role;
use crate::ticket_code::is_strong_public_key;

/// The code as the server stored it.
#[derive(Clone, Copy, Debug)]
pub struct StoredCode {
    pub role: Role,
    pub expires_at_ms: i64,
    pub used: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnrolRefusal {
    /// Unknown, used or expired: the device is told no more than that.
    #[error("enrolment code invalid, used or expired")]
    CodeInvalid,
    #[error("a counter must send its Ed25519 public key (public_key, 64 hex digits)")]
    KeyMissing,
    #[error("public_key must be a valid, full-order Ed25519 public key in 64 hex digits")]
    KeyWeak,
}

/// What a code enrols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enrolment {
    pub role: Role,
    /// The key to certify: a counter's (tickets, shared admissions) or a
    /// gate's (shared admissions only; its role travels with the key so no
    /// gate takes it for a ticket signer). Supervisors sign nothing.
    pub public_key: Option<[u8; 32]>,
}

/// What the code enrols, or why it enrols nobody. A key that is not a point
/// on the curve, or of small order (which would let anyone forge "signed"
/// tickets), is refused now, not at the gate.
pub fn check(
    code: Option<StoredCode>,
    now_ms: i64,
    public_key_hex: Option<&str>,
) -> Result<Enrolment, EnrolRefusal> {
    let code = code.ok_or(EnrolRefusal::CodeInvalid)?;
    if code.used || code.expires_at_ms <= now_ms {
        return Err(EnrolRefusal::CodeInvalid);
    }
    let public_key = match (code.role, public_key_hex) {
        (Role::Counter, None) => return Err(EnrolRefusal::KeyMissing),
        (Role::Counter | Role::Gate, Some(hex)) => {
            Some(parse_public_key(hex).ok_or(EnrolRefusal::KeyWeak)?)
        }
        // A gate without a key still enrols: it decides alone offline and
        // just cannot share its admissions with other gates.
        (Role::Gate, None) | (Role::Supervisor, _) => None,
    };
    Ok(Enrolment {
        role: code.role,
        public_key,
    })
}

fn parse_public_key(hex: &str) -> Option<[u8; 32]> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.trim().as_bytes())
        .ok()?;
    let key: [u8; 32] = bytes.try_into().ok()?;
    is_strong_public_key(&key).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket_code::TicketSigner;

    fn code(role: Role) -> Option<StoredCode> {
        Some(StoredCode {
            role,
            expires_at_ms: 1_000,
            used: false,
        })
    }

    #[test]
    fn a_code_enrols_once_before_it_expires() {
        let key = data_encoding::HEXLOWER.encode(&TicketSigner::from_seed(1, [3; 32]).public_key());
        let enrolled = check(code(Role::Counter), 999, Some(&key));
        assert!(enrolled.is_ok_and(|e| e.role == Role::Counter && e.public_key.is_some()));
        assert_eq!(
            check(code(Role::Counter), 1_000, Some(&key)),
            Err(EnrolRefusal::CodeInvalid),
            "expired at its expiry"
        );
        let used = code(Role::Gate).map(|c| StoredCode { used: true, ..c });
        assert_eq!(check(used, 0, None), Err(EnrolRefusal::CodeInvalid));
        assert_eq!(check(None, 0, None), Err(EnrolRefusal::CodeInvalid));
    }

    #[test]
    fn a_counter_needs_a_key_a_gate_may_send_one_and_keys_must_be_strong() {
        let key = data_encoding::HEXLOWER.encode(&TicketSigner::from_seed(1, [3; 32]).public_key());
        assert_eq!(
            check(code(Role::Counter), 0, None),
            Err(EnrolRefusal::KeyMissing)
        );
        // The identity point: small order, a forger's key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let weak = data_encoding::HEXLOWER.encode(&weak);
        assert_eq!(
            check(code(Role::Counter), 0, Some(&weak)),
            Err(EnrolRefusal::KeyWeak)
        );
        assert_eq!(
            check(code(Role::Counter), 0, Some("zz")),
            Err(EnrolRefusal::KeyWeak)
        );
        assert_eq!(
            check(code(Role::Gate), 0, Some(&weak)),
            Err(EnrolRefusal::KeyWeak),
            "a gate's key is certified too, so it must be strong"
        );
        let gate = check(code(Role::Gate), 0, Some(&key));
        assert!(gate.is_ok_and(|e| e.public_key.is_some()));
        assert_eq!(
            check(code(Role::Gate), 0, None).map(|e| e.public_key),
            Ok(None)
        );
        let ignored = check(code(Role::Supervisor), 0, Some(&key));
        assert_eq!(ignored.map(|e| e.public_key), Ok(None));
        let supervisor = check(code(Role::Supervisor), 0, None);
        assert_eq!(
            supervisor.map(|e| (e.role, e.public_key)),
            Ok((Role::Supervisor, None))
        );
    }
}
