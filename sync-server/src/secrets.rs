//! Credentials: device tokens and one-time enrolment codes. Only their SHA-256
//! hashes are stored, so a copy of the database does not let anyone in, and
//! they are never written to logs.

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

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

/// A one-time enrolment code a person can type: 12 characters in groups of 4.
pub fn new_enrolment_code() -> String {
    let raw = BASE32_NOPAD.encode(&random_bytes::<10>());
    let raw = &raw[..12];
    format!("{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..12])
}

/// Accepts what a person types: any case, with or without dashes and spaces.
pub fn normalize_enrolment_code(code: &str) -> String {
    let compact: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if compact.len() == 12 {
        format!("{}-{}-{}", &compact[0..4], &compact[4..8], &compact[8..12])
    } else {
        compact
    }
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
            code
        );
        assert_ne!(new_token(), new_token());
    }
}
