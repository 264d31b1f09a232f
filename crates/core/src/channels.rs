//! Trusted sales channels (a partner's site, a tourist office): which names
//! an operator may give one. The rule is the same whichever store keeps the
//! channels, so it lives here and both backends only write what it allows.

use crate::limits::{self, LimitError};

/// The web shop's own channel. Its orders carry this name in the day report,
/// so no token may take it.
pub const WEB: &str = "web";

/// Names no channel may take: the shop's own, and what anonymous online
/// orders are reported under.
const RESERVED: &[&str] = &[WEB, "anonymous"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("{0:?} is reserved for the web shop's own orders; choose another name")]
    Reserved(String),
}

/// The name a new channel is stored under (trimmed), or why it cannot have
/// it. Reserved names are refused in any letter case: a report reading
/// "Web" next to "web" would be read as one channel.
pub fn new_name(name: &str) -> Result<&str, ChannelNameError> {
    let name = name.trim();
    limits::text("name", name, limits::CHANNEL_NAME_CHARS)?;
    if RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r)) {
        return Err(ChannelNameError::Reserved(name.to_string()));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partner_gets_its_name_trimmed() {
        assert_eq!(new_name("  Tourist office "), Ok("Tourist office"));
    }

    #[test]
    fn the_shops_own_names_are_refused_in_any_case() {
        for name in ["web", "WEB", " Web ", "Anonymous"] {
            assert!(
                matches!(new_name(name), Err(ChannelNameError::Reserved(_))),
                "{name:?} was accepted"
            );
        }
    }

    #[test]
    fn empty_and_overlong_names_are_refused() {
        assert!(matches!(new_name("   "), Err(ChannelNameError::Limit(_))));
        let long = "é".repeat(limits::CHANNEL_NAME_CHARS + 1);
        assert!(matches!(new_name(&long), Err(ChannelNameError::Limit(_))));
        let longest = "é".repeat(limits::CHANNEL_NAME_CHARS);
        assert!(new_name(&longest).is_ok());
    }
}
