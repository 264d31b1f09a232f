//! The admission one gate tells the others about: what was admitted, where
//! and when, signed by the admitting device's certified key over a canonical
//! byte encoding. The encoding starts with its own domain tag, so a signature
//! over an admission can never be replayed as a ticket's (ticket codes start
//! with their one-byte format version) nor the other way round.

use std::collections::HashMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use tessera_core::api::devices::{KeyRole, PublicKeys};
use tessera_core::limits::DEVICE_NAME_CHARS;
use tessera_core::slot::SlotId;
use uuid::Uuid;

/// What the signature covers first: never the start of a ticket code.
const DOMAIN: &[u8] = b"tessera/gate-peers/admission/v1\0";
const SIGNATURE_HEX_LEN: usize = 128;

/// One admission as gates exchange it. The set of these, merged by every
/// gate, is what a gate consults when the server does not answer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAdmission {
    pub ticket_id: Uuid,
    pub slot_id: SlotId,
    /// The device that admitted the ticket; its key signs the message.
    pub device_id: Uuid,
    /// Its name, for "Already admitted at North gate".
    pub device_name: String,
    /// When it admitted the ticket, Unix milliseconds on its clock.
    pub admitted_at_ms: i64,
    pub key_id: u32,
    /// Ed25519 over [`PeerAdmission::signed_bytes`], lowercase hex.
    pub signature: String,
}

/// Why a peer's admission was not merged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerRefusal {
    #[error("malformed admission: {0}")]
    Malformed(String),
    #[error("key {0} is not a certified key of this museum")]
    UnknownKey(u32),
    #[error("key {0} was revoked")]
    RevokedKey(u32),
    #[error("key {0} belongs to the server, which shares no admissions")]
    WrongRole(u32),
    #[error("key {0} is not the admitting device's key")]
    NotTheDevicesKey(u32),
    #[error("the signature does not match the admission")]
    BadSignature,
    #[error("admitted on {0}, not today")]
    NotToday(String),
    #[error("the request was signed more than {HELLO_SKEW_MS} ms from this gate's clock")]
    Stale,
}

/// What an exchange request's signature covers first.
const HELLO_DOMAIN: &[u8] = b"tessera/gate-peers/exchange/v1\0";
/// How far a peer's clock (or a replayed request) may be off.
pub const HELLO_SKEW_MS: i64 = 5 * 60 * 1000;

/// Who asks for an exchange: a certified gate or counter showing it holds
/// its key. Only such a peer is told this gate's admissions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerHello {
    pub device_id: Uuid,
    pub key_id: u32,
    pub sent_at_ms: i64,
    pub signature: String,
}

impl PeerHello {
    pub fn sign(key: &SigningKey, key_id: u32, device_id: Uuid, sent_at_ms: i64) -> PeerHello {
        let mut h = PeerHello {
            device_id,
            key_id,
            sent_at_ms,
            signature: String::new(),
        };
        h.signature = data_encoding::HEXLOWER.encode(&key.sign(&h.signed_bytes()).to_bytes());
        h
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_DOMAIN.len() + 28);
        out.extend_from_slice(HELLO_DOMAIN);
        out.extend_from_slice(self.device_id.as_bytes());
        out.extend_from_slice(&self.sent_at_ms.to_be_bytes());
        out.extend_from_slice(&self.key_id.to_be_bytes());
        out
    }

    pub fn verify(&self, keys: &PeerKeys, now_ms: i64) -> Result<(), PeerRefusal> {
        if self.sent_at_ms.abs_diff(now_ms) > HELLO_SKEW_MS as u64 {
            return Err(PeerRefusal::Stale);
        }
        let key = keys.admitting_key(self.key_id, self.device_id)?;
        check_signature(key, &self.signed_bytes(), &self.signature)
    }
}

fn check_signature(key: &PeerKey, bytes: &[u8], signature: &str) -> Result<(), PeerRefusal> {
    if signature.len() != SIGNATURE_HEX_LEN {
        return Err(PeerRefusal::BadSignature);
    }
    // One spelling only (lowercase), and strict verification: a signature
    // has a single form, so a copied admission cannot come back as a "new"
    // one in another case or encoding.
    let sig: [u8; 64] = data_encoding::HEXLOWER
        .decode(signature.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(PeerRefusal::BadSignature)?;
    key.key
        .verify_strict(bytes, &Signature::from_bytes(&sig))
        .map_err(|_| PeerRefusal::BadSignature)
}

impl PeerAdmission {
    /// Signs an admission made by this device.
    pub fn sign(
        key: &SigningKey,
        key_id: u32,
        ticket_id: Uuid,
        slot_id: SlotId,
        device_id: Uuid,
        device_name: &str,
        admitted_at_ms: i64,
    ) -> PeerAdmission {
        let mut a = PeerAdmission {
            ticket_id,
            slot_id,
            device_id,
            device_name: device_name.to_string(),
            admitted_at_ms,
            key_id,
            signature: String::new(),
        };
        a.signature = data_encoding::HEXLOWER.encode(&key.sign(&a.signed_bytes()).to_bytes());
        a
    }

    /// The canonical bytes the signature covers: fixed-width integers, and
    /// the two texts with their length in front so no two admissions share
    /// an encoding.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let slot = self.slot_id.to_string();
        let name = self.device_name.as_bytes();
        let mut out = Vec::with_capacity(DOMAIN.len() + 64 + slot.len() + name.len());
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(self.ticket_id.as_bytes());
        out.extend_from_slice(&(slot.len() as u16).to_be_bytes());
        out.extend_from_slice(slot.as_bytes());
        out.extend_from_slice(self.device_id.as_bytes());
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&self.admitted_at_ms.to_be_bytes());
        out.extend_from_slice(&self.key_id.to_be_bytes());
        out
    }

    /// Checks everything about a peer's admission before it may count:
    /// shape, today's day in the museum, a certified and unrevoked key of a
    /// device that scans, owned by the device named, and the signature.
    pub fn verify(&self, keys: &PeerKeys, tz: &TimeZone, today: Date) -> Result<(), PeerRefusal> {
        let chars = self.device_name.chars().count();
        if chars == 0 || chars > DEVICE_NAME_CHARS {
            return Err(PeerRefusal::Malformed(format!(
                "device_name must have 1 to {DEVICE_NAME_CHARS} characters"
            )));
        }
        let at = jiff::Timestamp::from_millisecond(self.admitted_at_ms)
            .map_err(|_| PeerRefusal::Malformed("admitted_at_ms is out of range".into()))?;
        let day = at.to_zoned(tz.clone()).date();
        if day != today {
            return Err(PeerRefusal::NotToday(day.to_string()));
        }
        if self.slot_id.date != today {
            return Err(PeerRefusal::NotToday(self.slot_id.date.to_string()));
        }
        let key = keys.admitting_key(self.key_id, self.device_id)?;
        check_signature(key, &self.signed_bytes(), &self.signature)
    }
}

/// A certified key as a gate holds it for checking peers.
#[derive(Clone, Debug)]
pub struct PeerKey {
    pub key: VerifyingKey,
    pub device_id: Option<Uuid>,
    pub role: KeyRole,
    pub revoked: bool,
}

/// Every certified key the server last sent, whatever it may sign.
#[derive(Clone, Debug, Default)]
pub struct PeerKeys {
    pub keys: HashMap<u32, PeerKey>,
}

impl PeerKeys {
    /// The key `key_id` if it may sign for `device` at a gate: certified,
    /// not revoked, a gate's or counter's, and that device's own.
    fn admitting_key(&self, key_id: u32, device: Uuid) -> Result<&PeerKey, PeerRefusal> {
        let key = self
            .keys
            .get(&key_id)
            .ok_or(PeerRefusal::UnknownKey(key_id))?;
        if key.revoked {
            return Err(PeerRefusal::RevokedKey(key_id));
        }
        if !key.role.signs_admissions() {
            return Err(PeerRefusal::WrongRole(key_id));
        }
        if key.device_id != Some(device) {
            return Err(PeerRefusal::NotTheDevicesKey(key_id));
        }
        Ok(key)
    }

    pub fn from_public(public: &PublicKeys) -> PeerKeys {
        let mut keys = HashMap::new();
        for k in &public.keys {
            let key = data_encoding::HEXLOWER_PERMISSIVE
                .decode(k.public_key.as_bytes())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .filter(tessera_core::ticket_code::is_strong_public_key)
                .and_then(|b| VerifyingKey::from_bytes(&b).ok());
            if let Some(key) = key {
                keys.insert(
                    k.key_id,
                    PeerKey {
                        key,
                        device_id: k.device_id,
                        role: k.role,
                        revoked: k.revoked,
                    },
                );
            }
        }
        PeerKeys { keys }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::api::devices::PublicKeyInfo;

    const DAY: Date = jiff::civil::date(2026, 12, 3);

    fn setup() -> (SigningKey, PeerKeys, PeerAdmission, Uuid) {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let device = Uuid::now_v7();
        let public = PublicKeys {
            keys: vec![
                info(4, &key, Some(device), KeyRole::Gate, false),
                info(
                    5,
                    &SigningKey::from_bytes(&[8u8; 32]),
                    None,
                    KeyRole::Server,
                    false,
                ),
            ],
        };
        let slot = SlotId::new(DAY, 10 * 60).unwrap();
        let at = DAY
            .at(10, 2, 0, 0)
            .to_zoned(TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_millisecond();
        let a = PeerAdmission::sign(&key, 4, Uuid::now_v7(), slot, device, "North gate", at);
        (key, PeerKeys::from_public(&public), a, device)
    }

    fn info(
        key_id: u32,
        key: &SigningKey,
        device_id: Option<Uuid>,
        role: KeyRole,
        revoked: bool,
    ) -> PublicKeyInfo {
        PublicKeyInfo {
            key_id,
            public_key: data_encoding::HEXLOWER.encode(key.verifying_key().as_bytes()),
            owner: "x".into(),
            device_id,
            revoked,
            role,
        }
    }

    #[test]
    fn a_signed_admission_verifies_and_any_changed_field_does_not() {
        let (_, keys, a, _) = setup();
        let tz = TimeZone::UTC;
        assert_eq!(a.verify(&keys, &tz, DAY), Ok(()));
        let json = serde_json::to_string(&a).unwrap();
        let back: PeerAdmission = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);

        let mut renamed = a.clone();
        renamed.device_name = "South gate".into();
        assert_eq!(
            renamed.verify(&keys, &tz, DAY),
            Err(PeerRefusal::BadSignature)
        );
        let mut other_ticket = a.clone();
        other_ticket.ticket_id = Uuid::now_v7();
        assert_eq!(
            other_ticket.verify(&keys, &tz, DAY),
            Err(PeerRefusal::BadSignature)
        );
        let mut earlier = a.clone();
        earlier.admitted_at_ms -= 1;
        assert_eq!(
            earlier.verify(&keys, &tz, DAY),
            Err(PeerRefusal::BadSignature)
        );
        // One spelling of a signature: the same bytes in capitals are
        // refused, so a copy cannot pass for another message.
        let mut shouted = a.clone();
        shouted.signature = shouted.signature.to_uppercase();
        assert_eq!(
            shouted.verify(&keys, &tz, DAY),
            Err(PeerRefusal::BadSignature)
        );
        let mut short = a.clone();
        short.signature.pop();
        assert_eq!(
            short.verify(&keys, &tz, DAY),
            Err(PeerRefusal::BadSignature)
        );
    }

    #[test]
    fn keys_are_checked_for_certification_role_owner_and_revocation() {
        let (key, keys, a, device) = setup();
        let tz = TimeZone::UTC;
        let forger = SigningKey::from_bytes(&[9u8; 32]);
        let forged = PeerAdmission::sign(
            &forger,
            4,
            a.ticket_id,
            a.slot_id,
            device,
            "North gate",
            a.admitted_at_ms,
        );
        assert_eq!(
            forged.verify(&keys, &tz, DAY),
            Err(PeerRefusal::BadSignature)
        );
        let unknown = PeerAdmission::sign(
            &forger,
            99,
            a.ticket_id,
            a.slot_id,
            device,
            "North gate",
            a.admitted_at_ms,
        );
        assert_eq!(
            unknown.verify(&keys, &tz, DAY),
            Err(PeerRefusal::UnknownKey(99))
        );
        let server = SigningKey::from_bytes(&[8u8; 32]);
        let by_server = PeerAdmission::sign(
            &server,
            5,
            a.ticket_id,
            a.slot_id,
            device,
            "North gate",
            a.admitted_at_ms,
        );
        assert_eq!(
            by_server.verify(&keys, &tz, DAY),
            Err(PeerRefusal::WrongRole(5))
        );
        let impostor = PeerAdmission::sign(
            &key,
            4,
            a.ticket_id,
            a.slot_id,
            Uuid::now_v7(),
            "North gate",
            a.admitted_at_ms,
        );
        assert_eq!(
            impostor.verify(&keys, &tz, DAY),
            Err(PeerRefusal::NotTheDevicesKey(4))
        );
        let revoked = PeerKeys::from_public(&PublicKeys {
            keys: vec![info(4, &key, Some(device), KeyRole::Gate, true)],
        });
        assert_eq!(
            a.verify(&revoked, &tz, DAY),
            Err(PeerRefusal::RevokedKey(4))
        );
    }

    #[test]
    fn an_exchange_is_asked_for_by_a_certified_peer_only() {
        let (key, keys, _, device) = setup();
        let now = 1_000_000_000;
        let hello = PeerHello::sign(&key, 4, device, now);
        assert_eq!(hello.verify(&keys, now + 1_000), Ok(()));
        assert_eq!(
            hello.verify(&keys, now + HELLO_SKEW_MS + 1),
            Err(PeerRefusal::Stale)
        );
        let stranger = PeerHello::sign(&SigningKey::from_bytes(&[9u8; 32]), 4, device, now);
        assert_eq!(stranger.verify(&keys, now), Err(PeerRefusal::BadSignature));
        let mut later = hello.clone();
        later.sent_at_ms += 1;
        assert_eq!(later.verify(&keys, now), Err(PeerRefusal::BadSignature));
    }

    #[test]
    fn only_todays_admissions_count() {
        let (_, keys, a, _) = setup();
        let tomorrow = DAY.tomorrow().unwrap();
        assert!(matches!(
            a.verify(&keys, &TimeZone::UTC, tomorrow),
            Err(PeerRefusal::NotToday(_))
        ));
        let mut far = a.clone();
        far.admitted_at_ms = i64::MAX;
        assert!(matches!(
            far.verify(&keys, &TimeZone::UTC, DAY),
            Err(PeerRefusal::Malformed(_))
        ));
    }

    #[test]
    fn the_encoding_is_domain_separated_and_length_prefixed() {
        let (_, _, a, _) = setup();
        let bytes = a.signed_bytes();
        assert!(bytes.starts_with(DOMAIN));
        assert_ne!(bytes[0], tessera_core::ticket_code::CODE_VERSION);
        // Moving a character between the name and what follows it changes
        // the encoding: lengths are part of it.
        let mut b = a.clone();
        b.device_name.push('x');
        assert_ne!(b.signed_bytes(), bytes);
    }
}
