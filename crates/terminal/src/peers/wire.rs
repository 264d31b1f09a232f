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
    pub admissions: Vec<serde_json::Value>,
}

/// What the receiver merged, and what it knows that the sender did not
/// send (read item by item too: the answering peer is no more trusted).
#[derive(Debug, Serialize, Deserialize)]
pub struct ExchangeResponse {
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
