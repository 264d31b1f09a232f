//! Credentials: device tokens, one-time enrolment codes and staff PIN
//! verifiers. Tokens and codes are stored only as SHA-256 hashes, PINs only
//! as Argon2id verifiers, so a copy of the database does not let anyone in;
//! none is ever written to logs.

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};
use tessera_core::staff::{KdfCost, StaffFixture, StaffMember, SALT_BYTES};

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS RNG failing is not something a ticket server can work around.
    getrandom::fill(&mut buf).expect("operating system random number generator");
    buf
}

pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().to_vec()
}

/// A bearer token: `tsr_` and 32 random bytes in base32.
pub fn new_token() -> String {
    format!(
        "tsr_{}",
        BASE32_NOPAD.encode(&random_bytes::<32>()).to_lowercase()
    )
}

/// A channel's bearer token: `tch_` and 32 random bytes in base32.
pub fn new_channel_token() -> String {
    format!(
        "tch_{}",
        BASE32_NOPAD.encode(&random_bytes::<32>()).to_lowercase()
    )
}

/// Characters of 20 random bytes in unpadded base32 (the tail of a URL id).
const URL_ID_CHARS: usize = 32;

/// Characters of 32 random bytes in unpadded base32: a "my booking" token or
/// a waiting-list offer's token.
pub const LINK_TOKEN_CHARS: usize = 52;

/// Prefixes of the URL ids of checkouts (the return page polls it) and of
/// payments (the demo provider's page).
pub const CHECKOUT_PREFIX: &str = "co_";
pub const PAYMENT_PREFIX: &str = "pay_";

/// An unguessable id that travels in URLs (payments, checkouts): `prefix`
/// and 20 random bytes in lower-case base32.
pub fn new_url_id(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        BASE32_NOPAD.encode(&random_bytes::<20>()).to_lowercase()
    )
}

/// A "my booking" token: 32 random bytes in lower-case base32 (52
/// characters). Only its SHA-256 is stored with the order.
pub fn new_booking_token() -> String {
    BASE32_NOPAD.encode(&random_bytes::<32>()).to_lowercase()
}

/// A short booking reference a visitor can read out: `TS-` and 8 characters
/// from an alphabet without look-alikes (no 0/O, 1/I/L).
pub fn new_reference() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    let bytes = random_bytes::<8>();
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("TS-{}-{}", &chars[..4], &chars[4..])
}

/// Whether `text` is `chars` characters of lower-case unpadded base32, as
/// every token and id above is written.
fn is_base32(text: &str, chars: usize) -> bool {
    text.len() == chars
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

/// Whether `text` can be a token [`new_booking_token`] made (offer tokens
/// have the same shape). Anything else is refused before it reaches the
/// writer: a made-up link costs no database work.
pub fn is_link_token(text: &str) -> bool {
    is_base32(text, LINK_TOKEN_CHARS)
}

/// Whether `text` can be an id [`new_url_id`] made with `prefix`.
pub fn is_url_id(prefix: &str, text: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|rest| is_base32(rest, URL_ID_CHARS))
}

/// A one-time enrolment code a person can type: 12 characters in groups of 4.
pub fn new_enrolment_code() -> String {
    let raw = BASE32_NOPAD.encode(&random_bytes::<10>());
    // Base32 output is ASCII, so these byte ranges are character ranges.
    let raw = &raw[..ENROLMENT_CODE_LEN];
    format!("{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..12])
}

/// Accepts what a person types: any case, with or without dashes and spaces.
/// `None` when the text cannot be a code we issued (wrong length, or a
/// character outside the code's alphabet), so it never reaches the database.
///
/// Codes are ASCII, but what arrives is anyone's text: it is read character by
/// character and only grouped once it is known to be twelve ASCII characters,
/// so no input can cut a string inside a character.
pub fn normalize_enrolment_code(code: &str) -> Option<String> {
    use tessera_core::limits::{chars, ENROLMENT_CODE_CHARS};
    if chars(code) > ENROLMENT_CODE_CHARS {
        return None;
    }
    let compact: Vec<char> = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if compact.len() != ENROLMENT_CODE_LEN || !compact.iter().all(char::is_ascii_alphanumeric) {
        return None;
    }
    let group = |range: std::ops::Range<usize>| compact[range].iter().collect::<String>();
    Some(format!("{}-{}-{}", group(0..4), group(4..8), group(8..12)))
}

/// Characters in an enrolment code, separators left out.
const ENROLMENT_CODE_LEN: usize = 12;

/// Set to `1` only in test suites: PIN verifiers are then made with
/// [`KdfCost::INSECURE_TEST_ONLY`], which an offline search breaks at once.
pub const INSECURE_TEST_KDF_ENV: &str = "TESSERA_INSECURE_TEST_PIN_KDF";

/// The cost new PIN verifiers are made with.
pub fn pin_cost() -> KdfCost {
    if std::env::var(INSECURE_TEST_KDF_ENV).is_ok_and(|v| v == "1") {
        tracing::warn!("{INSECURE_TEST_KDF_ENV}=1: PIN verifiers made with test-only cost");
        KdfCost::INSECURE_TEST_ONLY
    } else {
        KdfCost::DEFAULT
    }
}

/// Makes the verifier of a fixture's staff member (fresh random salt).
pub fn member_from_fixture(
    fixture: &StaffFixture,
    cost: KdfCost,
) -> Result<StaffMember, tessera_core::staff::StaffError> {
    let salt = random_bytes::<SALT_BYTES>();
    StaffMember::new(&fixture.name, fixture.role, fixture.pin.trim(), &salt, cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolment_codes_are_typeable() {
        let code = new_enrolment_code();
        assert_eq!(code.len(), 14);
        assert_eq!(
            normalize_enrolment_code(&code.to_lowercase().replace('-', " ")),
            Some(code)
        );
        assert_ne!(new_token(), new_token());
    }

    #[test]
    fn only_tokens_and_ids_we_could_have_made_pass_the_shape_check() {
        let token = new_booking_token();
        assert!(is_link_token(&token));
        assert!(!is_link_token(&token.to_uppercase()));
        assert!(!is_link_token(&token[1..]));
        assert!(!is_link_token(&format!("{token}a")));
        // Alphanumeric, the right length, but not base32 (0, 1, 8, 9, _).
        for bad in ['0', '1', '8', '9', '_'] {
            assert!(!is_link_token(&format!("{bad}{}", &token[1..])), "{bad}");
        }
        assert!(!is_link_token(&format!("{}é", &token[..50])));
        assert!(!is_link_token(""));

        let checkout = new_url_id(CHECKOUT_PREFIX);
        assert!(is_url_id(CHECKOUT_PREFIX, &checkout));
        assert!(!is_url_id(PAYMENT_PREFIX, &checkout));
        assert!(!is_url_id(CHECKOUT_PREFIX, &checkout[..checkout.len() - 1]));
        assert!(!is_url_id(CHECKOUT_PREFIX, &format!("{checkout}a")));
        assert!(!is_url_id(CHECKOUT_PREFIX, &checkout.replace("co_", "CO_")));
        assert!(!is_url_id(CHECKOUT_PREFIX, "co_"));
        assert!(is_url_id(PAYMENT_PREFIX, &new_url_id(PAYMENT_PREFIX)));
    }

    #[test]
    fn any_text_normalises_without_panicking() {
        // The code that stopped the writer (issue 9, item 1): a two-byte
        // character where the old code cut at byte 4.
        assert_eq!(normalize_enrolment_code("AAAéAAAAAAA"), None);
        assert_eq!(normalize_enrolment_code("AAAéAAAAAAAA"), None);
        assert_eq!(normalize_enrolment_code("ééééééééééé"), None);
        assert_eq!(normalize_enrolment_code(""), None);
        assert_eq!(normalize_enrolment_code(&"A".repeat(65)), None);
        assert_eq!(
            normalize_enrolment_code(" abcd efgh-2345 "),
            Some("ABCD-EFGH-2345".into())
        );
    }

    proptest::proptest! {
        #[test]
        fn normalising_arbitrary_text_never_panics(text in ".{0,80}") {
            if let Some(code) = normalize_enrolment_code(&text) {
                proptest::prop_assert_eq!(code.chars().count(), 14);
                proptest::prop_assert!(code.is_ascii());
            }
        }
    }
}
