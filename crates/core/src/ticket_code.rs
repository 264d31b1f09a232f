//! Ticket codes: what a ticket's QR code holds.
//!
//! Layout (version 1), all integers big-endian:
//!
//! | bytes | field                                   |
//! |-------|-----------------------------------------|
//! | 1     | format version (1)                      |
//! | 4     | signer key id                           |
//! | 16    | ticket id (UUIDv7)                      |
//! | 2     | slot date, days since 2000-01-01        |
//! | 2     | slot start, minutes after local midnight|
//! | 2     | entry window length in minutes          |
//! | 1     | admissions                              |
//! | 1 + n | product id (n ≤ 24 ASCII bytes)         |
//! | 64    | Ed25519 signature of the bytes above    |
//!
//! The bytes are written in RFC 4648 base32 without padding: only `A–Z2–7`,
//! which QR codes store in their compact alphanumeric mode and which a
//! keyboard-wedge scanner types without shift-state surprises. A gate holding
//! the public keys verifies a code with no network; any changed character
//! either fails to decode or fails the signature.

use std::collections::HashMap;

use data_encoding::BASE32_NOPAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::slot::{date_from_day_number, day_number, SlotId};

pub const CODE_VERSION: u8 = 1;
/// Signatures are over this prefix plus the payload, so a ticket signature can
/// never be replayed as any other kind of Tessera signature.
const DOMAIN: &[u8] = b"tessera/ticket/v1:";
const FIXED_LEN: usize = 1 + 4 + 16 + 2 + 2 + 2 + 1 + 1;
const SIG_LEN: usize = 64;
const MAX_PRODUCT_LEN: usize = 24;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    pub key_id: u32,
    pub ticket_id: Uuid,
    pub slot: SlotId,
    pub window_minutes: u16,
    pub admits: u8,
    pub product_id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CodeError {
    #[error("not a ticket code (unreadable or cut short)")]
    Garbled,
    #[error("ticket code format version {0} is not supported")]
    UnsupportedVersion(u8),
    #[error("signed by key {0}, which this device does not know")]
    UnknownKey(u32),
    #[error("signed by key {0}, which has been revoked")]
    RevokedKey(u32),
    #[error("signature does not match: the code was altered or forged")]
    BadSignature,
    #[error("cannot encode: {0}")]
    Unencodable(String),
}

/// A signing key with the id the server assigned it.
#[derive(Clone)]
pub struct TicketSigner {
    pub key_id: u32,
    key: SigningKey,
}

impl TicketSigner {
    /// `seed` must come from a cryptographic RNG (the caller's IO edge).
    pub fn from_seed(key_id: u32, seed: [u8; 32]) -> Self {
        TicketSigner {
            key_id,
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Signs claims into a code; the claims' `key_id` is replaced by this key's.
    pub fn sign(&self, claims: &TicketClaims) -> Result<String, CodeError> {
        let mut bytes = encode_payload(self.key_id, claims)?;
        let mut msg = Vec::with_capacity(DOMAIN.len() + bytes.len());
        msg.extend_from_slice(DOMAIN);
        msg.extend_from_slice(&bytes);
        let sig = self.key.sign(&msg);
        bytes.extend_from_slice(&sig.to_bytes());
        Ok(BASE32_NOPAD.encode(&bytes))
    }
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "TicketSigner(key {})", self.key_id)
    }
}

fn encode_payload(key_id: u32, c: &TicketClaims) -> Result<Vec<u8>, CodeError> {
    let product = c.product_id.as_bytes();
    if product.is_empty() || product.len() > MAX_PRODUCT_LEN || !c.product_id.is_ascii() {
        return Err(CodeError::Unencodable(format!(
            "product id {:?}",
            c.product_id
        )));
    }
    let day = day_number(c.slot.date).map_err(|e| CodeError::Unencodable(e.to_string()))?;
    let mut out = Vec::with_capacity(FIXED_LEN + product.len() + SIG_LEN);
    out.push(CODE_VERSION);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(c.ticket_id.as_bytes());
    out.extend_from_slice(&day.to_be_bytes());
    out.extend_from_slice(&c.slot.start_minute.to_be_bytes());
    out.extend_from_slice(&c.window_minutes.to_be_bytes());
    out.push(c.admits);
    out.push(product.len() as u8);
    out.extend_from_slice(product);
    Ok(out)
}

/// Reads a code's claims without checking the signature: only for display and
/// for finding the signer. Never admit on this alone.
pub fn decode_unverified(code: &str) -> Result<(TicketClaims, Vec<u8>, [u8; SIG_LEN]), CodeError> {
    let bytes = BASE32_NOPAD
        .decode(code.as_bytes())
        .map_err(|_| CodeError::Garbled)?;
    if bytes.len() < FIXED_LEN + 1 + SIG_LEN {
        return Err(CodeError::Garbled);
    }
    if bytes[0] != CODE_VERSION {
        return Err(CodeError::UnsupportedVersion(bytes[0]));
    }
    let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    let key_id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[5..21]);
    let date = date_from_day_number(u16_at(21)).ok_or(CodeError::Garbled)?;
    let start_minute = u16_at(23);
    let window_minutes = u16_at(25);
    let admits = bytes[27];
    let product_len = bytes[28] as usize;
    if product_len == 0
        || product_len > MAX_PRODUCT_LEN
        || bytes.len() != FIXED_LEN + product_len + SIG_LEN
    {
        return Err(CodeError::Garbled);
    }
    let product_id = std::str::from_utf8(&bytes[FIXED_LEN..FIXED_LEN + product_len])
        .map_err(|_| CodeError::Garbled)?
        .to_string();
    let slot = SlotId::new(date, start_minute).map_err(|_| CodeError::Garbled)?;
    let payload_len = FIXED_LEN + product_len;
    let mut sig = [0u8; SIG_LEN];
    sig.copy_from_slice(&bytes[payload_len..]);
    let claims = TicketClaims {
        key_id,
        ticket_id: Uuid::from_bytes(id),
        slot,
        window_minutes,
        admits,
        product_id,
    };
    let mut payload = bytes;
    payload.truncate(payload_len);
    Ok((claims, payload, sig))
}

/// Public keys a verifier trusts, by key id.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    keys: HashMap<u32, RingEntry>,
}

#[derive(Clone, Debug)]
struct RingEntry {
    key: VerifyingKey,
    revoked: bool,
}

impl KeyRing {
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// Adds or replaces a key; a malformed key is refused.
    pub fn insert(
        &mut self,
        key_id: u32,
        public_key: [u8; 32],
        revoked: bool,
    ) -> Result<(), CodeError> {
        let key = VerifyingKey::from_bytes(&public_key).map_err(|_| {
            CodeError::Unencodable(format!("public key {key_id} is not a valid Ed25519 point"))
        })?;
        self.keys.insert(key_id, RingEntry { key, revoked });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a code end to end: format, signer known and not revoked, signature.
    pub fn verify(&self, code: &str) -> Result<TicketClaims, CodeError> {
        let (claims, payload, sig) = decode_unverified(code)?;
        let entry = self
            .keys
            .get(&claims.key_id)
            .ok_or(CodeError::UnknownKey(claims.key_id))?;
        let mut msg = Vec::with_capacity(DOMAIN.len() + payload.len());
        msg.extend_from_slice(DOMAIN);
        msg.extend_from_slice(&payload);
        entry
            .key
            .verify_strict(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| CodeError::BadSignature)?;
        if entry.revoked {
            return Err(CodeError::RevokedKey(claims.key_id));
        }
        Ok(claims)
    }
}

/// Cleans up what a scanner typed: surrounding whitespace, lower case from a
/// scanner with caps lock, and stray `=` padding. The result still has to verify.
pub fn normalize_scanned(text: &str) -> String {
    text.trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Whether 32 bytes may be certified as a device's ticket-signing key: a
/// point on the curve and not of small order (for a small-order key,
/// signatures can be made to verify without knowing any secret).
pub fn is_strong_public_key(bytes: &[u8; 32]) -> bool {
    VerifyingKey::from_bytes(bytes).is_ok_and(|k| !k.is_weak())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signer() -> TicketSigner {
        TicketSigner::from_seed(7, [42u8; 32])
    }

    fn ring(s: &TicketSigner) -> KeyRing {
        let mut r = KeyRing::new();
        r.insert(s.key_id, s.public_key(), false).unwrap();
        r
    }

    fn claims(id: u128, day: u16, minute: u16, product: String, admits: u8) -> TicketClaims {
        TicketClaims {
            key_id: 7,
            ticket_id: Uuid::from_u128(id),
            slot: SlotId::new(date_from_day_number(day).unwrap(), minute).unwrap(),
            window_minutes: 30,
            admits,
            product_id: product,
        }
    }

    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

    proptest! {
        #[test]
        fn codes_round_trip(id in any::<u128>(), day in 0u16..60000, minute in 0u16..1440,
                            product in "[a-z][a-z0-9-]{0,23}", admits in any::<u8>()) {
            let s = signer();
            let c = claims(id, day, minute, product, admits);
            let code = s.sign(&c).unwrap();
            prop_assert!(code.bytes().all(|b| ALPHABET.contains(&b)));
            prop_assert_eq!(ring(&s).verify(&code).unwrap(), c);
        }

        #[test]
        fn any_changed_character_fails(id in any::<u128>(), pos in any::<prop::sample::Index>(),
                                       replacement in any::<char>()) {
            let s = signer();
            let code = s.sign(&claims(id, 9800, 600, "adult".into(), 1)).unwrap();
            let i = pos.index(code.len());
            let original = code.as_bytes()[i] as char;
            prop_assume!(replacement != original);
            let mut tampered: Vec<char> = code.chars().collect();
            tampered[i] = replacement;
            let tampered: String = tampered.into_iter().collect();
            prop_assert!(ring(&s).verify(&tampered).is_err());
        }

        #[test]
        fn any_changed_alphabet_character_fails(id in any::<u128>(), pos in any::<prop::sample::Index>(),
                                                pick in any::<prop::sample::Index>()) {
            // Same as above, restricted to characters a decoder accepts, so the
            // signature check itself is exercised.
            let s = signer();
            let code = s.sign(&claims(id, 9800, 600, "family".into(), 4)).unwrap();
            let i = pos.index(code.len());
            let replacement = ALPHABET[pick.index(ALPHABET.len())];
            prop_assume!(replacement != code.as_bytes()[i]);
            let mut bytes = code.into_bytes();
            bytes[i] = replacement;
            let tampered = String::from_utf8(bytes).unwrap();
            prop_assert!(ring(&s).verify(&tampered).is_err());
        }
    }

    #[test]
    fn unknown_and_revoked_signers_are_named() {
        let s = signer();
        let code = s.sign(&claims(1, 9800, 600, "adult".into(), 1)).unwrap();
        assert_eq!(KeyRing::new().verify(&code), Err(CodeError::UnknownKey(7)));
        let mut r = KeyRing::new();
        r.insert(7, s.public_key(), true).unwrap();
        assert_eq!(r.verify(&code), Err(CodeError::RevokedKey(7)));
        // A different key under the same id: forged.
        let mut r = KeyRing::new();
        r.insert(7, TicketSigner::from_seed(7, [1u8; 32]).public_key(), false)
            .unwrap();
        assert_eq!(r.verify(&code), Err(CodeError::BadSignature));
    }

    #[test]
    fn truncated_codes_are_garbled() {
        let s = signer();
        let code = s.sign(&claims(1, 9800, 600, "adult".into(), 1)).unwrap();
        assert_eq!(
            ring(&s).verify(&code[..code.len() - 8]),
            Err(CodeError::Garbled)
        );
        assert_eq!(ring(&s).verify(""), Err(CodeError::Garbled));
        assert_eq!(
            normalize_scanned(&format!("  {}\n", code.to_lowercase())),
            code
        );
    }

    #[test]
    fn small_order_keys_are_not_strong() {
        // Both decode as curve points: the identity (y = 1) and a point of
        // order 4 (y = 0). Only their order makes them unusable.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for weak in [identity, [0u8; 32]] {
            assert!(VerifyingKey::from_bytes(&weak).is_ok());
            assert!(!is_strong_public_key(&weak));
        }
        let good = TicketSigner::from_seed(1, [9; 32]).public_key();
        assert!(is_strong_public_key(&good));
    }
}
