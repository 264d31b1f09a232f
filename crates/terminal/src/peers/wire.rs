//! What gates send each other, and the bounds every received byte is held to.

use serde::{Deserialize, Serialize};

use super::message::PeerHello;

/// One pushed admission is a few hundred bytes.
pub const ADMISSION_BODY_BYTES: usize = 4 * 1024;
/// A full exchange: a busy museum day's admissions (about 400 bytes each:
/// some 20,000), with room to spare. Read whole before anything is known of
/// the sender, so kept well below what a flood of them could cost.
pub const EXCHANGE_BODY_BYTES: usize = 8 * 1024 * 1024;
pub const EXCHANGE_ITEMS: usize = 20_000;

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

/// What the listener reads of an exchange first: who asks, skipping over
/// the items without building them, so a sender that is not a certified
/// peer costs a scan of its bytes and nothing more.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeHead {
    pub from: PeerHello,
    #[serde(default)]
    pub digest: Option<Digest>,
    #[serde(default)]
    #[allow(dead_code)]
    pub admissions: serde::de::IgnoredAny,
}

/// Then, from a certified peer, the items: at most [`EXCHANGE_ITEMS`],
/// refused as soon as there are more (not after building them all).
#[derive(Debug, Deserialize)]
pub struct ExchangeItems {
    #[serde(deserialize_with = "bounded_items")]
    pub admissions: Vec<serde_json::Value>,
}

fn bounded_items<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<serde_json::Value>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<serde_json::Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {EXCHANGE_ITEMS} admissions")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(item) = seq.next_element()? {
                if items.len() == EXCHANGE_ITEMS {
                    return Err(serde::de::Error::custom(format!(
                        "{TOO_MANY_ITEMS}: at most {EXCHANGE_ITEMS} admissions per exchange"
                    )));
                }
                items.push(item);
            }
            Ok(items)
        }
    }
    deserializer.deserialize_seq(Bounded)
}

/// Marks the error of a list over [`EXCHANGE_ITEMS`], to answer it 413.
pub const TOO_MANY_ITEMS: &str = "too many items";

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
