//! A visitor's place in a waiting room and, once admitted, their pass to
//! book, as signed strings (HMAC-SHA-256 with a server key, truncated to
//! 128 bits). Both name the browser session that joined, by a hash of its
//! secret cookie: a token copied into another browser is refused there.
//! The server keeps no other record of a pass, so any process holding the
//! key accepts it, also after a restart.

use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Rank;

type HmacSha256 = Hmac<Sha256>;

const PLACE: u8 = 1;
const PASS: u8 = 2;
const TAG_BYTES: usize = 16;
/// The longest token text accepted (a place or a pass is 87 characters).
pub const MAX_TOKEN_CHARS: usize = 128;

/// The server's key for waiting-room tokens.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// Derived from an installation secret with a purpose of its own, so
    /// the same secret's other uses cannot produce a valid token.
    pub fn derive(installation_secret: &[u8]) -> TokenKey {
        let mut h = Sha256::new();
        h.update(b"tessera waiting room tokens v1\0");
        h.update(installation_secret);
        TokenKey(h.finalize().into())
    }

    fn mac(&self, body: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac =
            HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of every length");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    fn seal(&self, body: Vec<u8>) -> String {
        let mut bytes = body;
        let tag = self.mac(&bytes);
        bytes.extend_from_slice(&tag);
        BASE64URL_NOPAD.encode(&bytes)
    }

    fn open(&self, text: &str, kind: u8, len: usize) -> Result<Vec<u8>, TokenError> {
        if text.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed);
        }
        let bytes = BASE64URL_NOPAD
            .decode(text.as_bytes())
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() != len + TAG_BYTES || bytes[0] != kind {
            return Err(TokenError::Malformed);
        }
        let (body, tag) = bytes.split_at(len);
        let mut mac =
            HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of every length");
        mac.update(body);
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(tag)
            .map_err(|_| TokenError::BadSignature)?;
        Ok(body.to_vec())
    }

    /// A session's draw in a room: the same session always draws the same
    /// number, so leaving and joining again before the opening re-rolls
    /// nothing; other sessions' draws are unpredictable without the key.
    pub fn draw(&self, room: &[u8; 8], session: &[u8; 16]) -> u64 {
        let mut body = Vec::with_capacity(5 + 8 + 16);
        body.extend_from_slice(b"draw\0");
        body.extend_from_slice(room);
        body.extend_from_slice(session);
        u64::from_be_bytes(take(&self.mac(&body)[..8]))
    }

    pub fn place(&self, p: &Place) -> String {
        let mut b = Vec::with_capacity(PLACE_LEN);
        b.push(PLACE);
        b.extend_from_slice(&p.room);
        b.extend_from_slice(p.entry.as_bytes());
        b.extend_from_slice(&p.rank.0.to_be_bytes());
        b.extend_from_slice(&p.session);
        self.seal(b)
    }

    pub fn read_place(&self, text: &str) -> Result<Place, TokenError> {
        let b = self.open(text, PLACE, PLACE_LEN)?;
        Ok(Place {
            room: take(&b[1..9]),
            entry: Uuid::from_bytes(take(&b[9..25])),
            rank: Rank(u64::from_be_bytes(take(&b[25..33]))),
            session: take(&b[33..49]),
        })
    }

    pub fn pass(&self, p: &Pass) -> String {
        let mut b = Vec::with_capacity(PASS_LEN);
        b.push(PASS);
        b.extend_from_slice(&p.room);
        b.extend_from_slice(p.entry.as_bytes());
        b.extend_from_slice(&p.until_ms.to_be_bytes());
        b.extend_from_slice(&p.session);
        self.seal(b)
    }

    pub fn read_pass(&self, text: &str) -> Result<Pass, TokenError> {
        let b = self.open(text, PASS, PASS_LEN)?;
        Ok(Pass {
            room: take(&b[1..9]),
            entry: Uuid::from_bytes(take(&b[9..25])),
            until_ms: i64::from_be_bytes(take(&b[25..33])),
            session: take(&b[33..49]),
        })
    }
}

const PLACE_LEN: usize = 1 + 8 + 16 + 8 + 16;
const PASS_LEN: usize = 1 + 8 + 16 + 8 + 16;

fn take<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(b);
    out
}

/// A room's identity inside a token: its id and opening hashed, so a token
/// for one room, or for an earlier sale under the same id, is no token here.
pub fn room_tag(room_id: &str, opens_at_ms: i64) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(room_id.as_bytes());
    h.update(b"\0");
    h.update(opens_at_ms.to_be_bytes());
    take(&h.finalize()[..8])
}

/// A browser session inside a token: its secret cookie hashed.
pub fn session_tag(session_secret: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"tessera session\0");
    h.update(session_secret);
    take(&h.finalize()[..16])
}

/// A place in a waiting room's line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub room: [u8; 8],
    pub entry: Uuid,
    pub rank: Rank,
    pub session: [u8; 16],
}

/// Leave to book in a waiting room's sale until `until_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    pub room: [u8; 8],
    pub entry: Uuid,
    pub until_ms: i64,
    pub session: [u8; 16],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a waiting-room token")]
    Malformed,
    #[error("the token's signature does not match: it was changed or is not ours")]
    BadSignature,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place() -> Place {
        Place {
            room: room_tag("vermeer", 0),
            entry: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            rank: Rank::drawn(0xdead_beef_0000_0001),
            session: session_tag(b"cookie"),
        }
    }

    #[test]
    fn a_place_and_a_pass_read_back_as_written() {
        let key = TokenKey::derive(b"installation");
        let text = key.place(&place());
        assert!(text.len() <= MAX_TOKEN_CHARS);
        assert_eq!(key.read_place(&text), Ok(place()));
        let pass = Pass {
            room: place().room,
            entry: place().entry,
            until_ms: 1_800_000_000_000,
            session: place().session,
        };
        assert_eq!(key.read_pass(&key.pass(&pass)), Ok(pass));
        // A place is no pass and a pass no place.
        assert_eq!(key.read_pass(&text), Err(TokenError::Malformed));
    }

    #[test]
    fn every_changed_character_and_another_key_are_refused() {
        let key = TokenKey::derive(b"installation");
        let text = key.place(&place());
        for i in 0..text.len() {
            let mut chars: Vec<char> = text.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let changed: String = chars.into_iter().collect();
            assert!(key.read_place(&changed).is_err(), "position {i}");
        }
        let other = TokenKey::derive(b"another installation");
        assert_eq!(other.read_place(&text), Err(TokenError::BadSignature));
        assert_eq!(
            key.read_place("é".repeat(40).as_str()),
            Err(TokenError::Malformed)
        );
        assert_eq!(key.read_place(&"A".repeat(500)), Err(TokenError::Malformed));
    }
}
