//! What gates send each other, and the bounds every received byte is held to.

use serde::{Deserialize, Serialize};

use super::message::PeerHello;

/// One pushed admission is a few hundred bytes.
pub const ADMISSION_BODY_BYTES: usize = 4 * 1024;
/// A full exchange: a busy museum day's admissions, with room to spare.
pub const EXCHANGE_BODY_BYTES: usize = 16 * 1024 * 1024;
pub const EXCHANGE_ITEMS: usize = 50_000;

pub const ADMISSION_PATH: &str = "/v1/peers/admission";
pub const EXCHANGE_PATH: &str = "/v1/peers/exchange";

/// A catch-up: everything the sender knows of today. Items are read one by
/// one, so one bad item never costs the good ones.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    /// The asking peer, proving it holds a certified key.
    pub from: PeerHello,
    /// Sent alone (no admissions) first: when both sets match, nothing more
    /// is sent, so the routine exchange of a quiet LAN is a few bytes.
    #[serde(default)]
    pub digest: Option<Digest>,
    pub admissions: Vec<serde_json::Value>,
}

/// A summary of a set of admissions: equal digests, equal sets (barring
/// a collision, which costs only a missed catch-up round until the next
/// admission changes the digest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    pub count: u64,
    /// XOR of each admission's signature's first 8 bytes.
    pub xor: u64,
}

/// What the receiver merged, and what it knows that the sender did not
/// send (read item by item too: the answering peer is no more trusted).
#[derive(Debug, Serialize, Deserialize)]
pub struct ExchangeResponse {
    /// Answer to a digest alone: the sets are the same, nothing to send.
    #[serde(default)]
    pub in_sync: bool,
    pub accepted: u32,
    pub refused: u32,
    pub admissions: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PushResponse {
    /// False when it was known already.
    pub merged: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PeerError {
    pub error: String,
}
