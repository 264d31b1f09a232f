//! Stripe's webhook signature scheme, as Stripe documents it: the
//! `Stripe-Signature` header reads `t=<unix seconds>,v1=<hex>[,v1=<hex>…]`
//! (other schemes such as `v0` may sit beside them and are ignored); each
//! `v1` is HMAC-SHA256, keyed with the endpoint's signing secret (`whsec_…`,
//! the whole string), of `"{t}.{raw body}"`. Several `v1` appear while a
//! secret is being rolled: any one matching is enough.
//!
//! The timestamp is part of what is signed, so checking it against our clock
//! stops a captured delivery from being replayed later (replays inside the
//! window are caught by the event id, stored once).

use data_encoding::{HEXLOWER, HEXLOWER_PERMISSIVE};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far the signed timestamp may be from our clock, either way. Stripe's
/// own libraries default to five minutes; a timestamp in the future is as
/// suspicious as an old one, and five minutes also absorbs clock skew.
pub const TOLERANCE_SECS: i64 = 300;

/// A header longer than this is not one Stripe sends (a handful of 64-digit
/// signatures): refuse it before looking inside.
const MAX_HEADER_BYTES: usize = 4096;
/// Entries (`t`, `v1`, `v0`, …) looked at in one header.
const MAX_ITEMS: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header: {0}")]
    Malformed(&'static str),
    #[error("no v1 signature matches the body")]
    Mismatch,
    #[error("signature timestamp is {0} s away from our clock (tolerance {TOLERANCE_SECS} s)")]
    OutsideTolerance(i64),
}

/// What a well-formed header says; the signatures are not yet checked.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    /// Every `v1` that is 32 bytes of hex; others can never match and are dropped.
    pub v1: Vec<[u8; 32]>,
}

pub fn parse_header(value: &str) -> Result<SignatureHeader, SignatureError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(SignatureError::Malformed("too long"));
    }
    let mut timestamp = None;
    let mut v1 = Vec::new();
    let mut v1_seen = false;
    for (n, item) in value.split(',').enumerate() {
        if n >= MAX_ITEMS {
            return Err(SignatureError::Malformed("too many entries"));
        }
        let Some((key, val)) = item.trim().split_once('=') else {
            return Err(SignatureError::Malformed("an entry without '='"));
        };
        match key {
            "t" => {
                if timestamp.is_some() {
                    // Two timestamps: which one was signed is anyone's guess.
                    return Err(SignatureError::Malformed("more than one timestamp"));
                }
                timestamp = Some(parse_timestamp(val)?);
            }
            "v1" => {
                v1_seen = true;
                if let Some(sig) = decode_hex32(val) {
                    v1.push(sig);
                }
            }
            // v0 (Stripe's test-only scheme) and whatever Stripe adds later.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no timestamp"))?;
    if !v1_seen {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// Checks `header` against `body` and the secret, then the timestamp against
/// `now`. Returns the signed timestamp.
pub fn verify(
    header: &str,
    secret: &[u8],
    body: &[u8],
    now_unix: i64,
) -> Result<i64, SignatureError> {
    let parsed = parse_header(header)?;
    let mac = keyed(secret, parsed.timestamp, body);
    // `verify_slice` compares in constant time; every candidate is tried so
    // the time taken does not depend on which one matched.
    let mut matched = false;
    for candidate in &parsed.v1 {
        matched |= mac.clone().verify_slice(candidate).is_ok();
    }
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let skew = now_unix.saturating_sub(parsed.timestamp);
    if skew.abs() > TOLERANCE_SECS {
        return Err(SignatureError::OutsideTolerance(skew));
    }
    Ok(parsed.timestamp)
}

/// The hex `v1` signature of `body` at `timestamp`, as Stripe would send it.
/// For tests and tools that play Stripe's part.
pub fn sign_hex(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    HEXLOWER.encode(&keyed(secret, timestamp, body).finalize().into_bytes())
}

fn keyed(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of every length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn parse_timestamp(val: &str) -> Result<i64, SignatureError> {
    // Unix seconds: plain digits, no sign, no more than a few centuries.
    if val.is_empty() || val.len() > 12 || !val.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed("timestamp is not unix seconds"));
    }
    val.parse()
        .map_err(|_| SignatureError::Malformed("timestamp is not unix seconds"))
}

fn decode_hex32(val: &str) -> Option<[u8; 32]> {
    // Stripe sends lower case; upper case is the same signature.
    if val.len() != 64 {
        return None;
    }
    HEXLOWER_PERMISSIVE
        .decode(val.as_bytes())
        .ok()?
        .try_into()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // A vector computed outside this code, with Python's hmac module:
    //   python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test_5e3b1c9d0a7f4e26",
    //     b"1764672000." + BODY, hashlib.sha256).hexdigest())'
    // and checked again with
    //   printf %s "1764672000.$BODY" | openssl dgst -sha256 -hmac whsec_test_5e3b1c9d0a7f4e26
    const SECRET: &[u8] = b"whsec_test_5e3b1c9d0a7f4e26";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;
    const T: i64 = 1_764_672_000;
    const SIG: &str = "913248b31f66264a0b8f460321f872c1c3411acf5f1ed8bd1583a743a4931543";
    // The same payload under the secret "whsec_other" (Python, as above).
    const SIG_OTHER_SECRET: &str =
        "847a4e62dc53919d7dd3db080227a2cd2e2c7b19ae54fb5112fa3f485d4f5137";

    #[test]
    fn signs_like_the_independent_computation() {
        assert_eq!(sign_hex(SECRET, T, BODY), SIG);
        assert_eq!(sign_hex(b"whsec_other", T, BODY), SIG_OTHER_SECRET);
    }

    #[test]
    fn accepts_the_independent_vector() {
        let header = format!("t={T},v1={SIG}");
        assert_eq!(verify(&header, SECRET, BODY, T + 10), Ok(T));
        // Upper-case hex is the same signature; spaces after commas are tolerated.
        let header = format!("t={T}, v1={}", SIG.to_uppercase());
        assert_eq!(verify(&header, SECRET, BODY, T), Ok(T));
    }

    #[test]
    fn any_of_several_v1_may_match_and_v0_is_ignored() {
        let header = format!(
            "t={T},v1={SIG_OTHER_SECRET},v1=nothex,v1={SIG},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
        );
        assert_eq!(verify(&header, SECRET, BODY, T), Ok(T));
    }

    #[test]
    fn wrong_secret_is_refused() {
        let header = format!("t={T},v1={SIG_OTHER_SECRET}");
        assert_eq!(
            verify(&header, SECRET, BODY, T),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tampered_body_or_timestamp_is_refused() {
        let header = format!("t={T},v1={SIG}");
        let tampered = br#"{"id":"evt_2","type":"checkout.session.completed"}"#;
        assert_eq!(
            verify(&header, SECRET, tampered, T),
            Err(SignatureError::Mismatch)
        );
        // Moving the timestamp to pass the age check breaks the signature.
        let header = format!("t={},v1={SIG}", T + 1000);
        assert_eq!(
            verify(&header, SECRET, BODY, T + 1000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_outside_five_minutes_either_way_are_refused() {
        let header = format!("t={T},v1={SIG}");
        assert_eq!(verify(&header, SECRET, BODY, T + 300), Ok(T));
        assert_eq!(verify(&header, SECRET, BODY, T - 300), Ok(T));
        assert_eq!(
            verify(&header, SECRET, BODY, T + 301),
            Err(SignatureError::OutsideTolerance(301))
        );
        assert_eq!(
            verify(&header, SECRET, BODY, T - 301),
            Err(SignatureError::OutsideTolerance(-301))
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for header in [
            String::new(),
            "garbage".to_string(),
            format!("v1={SIG}"),
            format!("t=,v1={SIG}"),
            format!("t=-5,v1={SIG}"),
            format!("t=12abc,v1={SIG}"),
            format!("t=99999999999999999999,v1={SIG}"),
            format!("t={T}"),
            format!("t={T},v0={SIG}"),
            format!("t={T},t={T},v1={SIG}"),
            format!("t={T},v1={SIG},{}", "x=1,".repeat(40)),
            format!("t={T},v1={}", "a".repeat(5000)),
        ] {
            assert!(
                matches!(
                    verify(&header, SECRET, BODY, T),
                    Err(SignatureError::Malformed(_))
                ),
                "{header:?}"
            );
        }
        // Well-formed, but no v1 that can be a signature.
        assert_eq!(
            verify(&format!("t={T},v1=abc"), SECRET, BODY, T),
            Err(SignatureError::Mismatch)
        );
    }
}
