//! Every parser in core takes text a person, a device or the network typed:
//! fed anything at all, it answers `Ok` or `Err` — it never panics, never
//! cuts a character in half, and what it accepts prints back the same.

use std::str::FromStr;

use proptest::prelude::*;
use tessera_core::api::devices::Role;
use tessera_core::money::{format_minor, parse_major, Currency};
use tessera_core::slot::{parse_date, SlotId};
use tessera_core::staff::{check_pin, PinVerifier};
use tessera_core::ticket_code::decode_unverified;

/// Arbitrary text, weighted towards what breaks parsers: the right shape
/// with a wrong character, multi-byte characters, huge digit runs.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9T:\\-é漢🎟 .,]{0,24}",
        "[0-9]{1,30}(\\.[0-9]{0,4})?",
        "-?[0-9]{1,25}[.,][0-9]{1,3}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2})?",
        "[A-Z0-9$:%*+./-]{0,200}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn dates_parse_or_refuse_and_print_back(text in hostile_text()) {
        if let Ok(date) = parse_date(&text) {
            prop_assert_eq!(date.to_string(), text);
        }
    }

    #[test]
    fn slot_ids_parse_or_refuse_and_print_back(text in hostile_text()) {
        if let Ok(slot) = SlotId::from_str(&text) {
            prop_assert_eq!(slot.to_string(), text);
        }
    }

    #[test]
    fn amounts_parse_or_refuse_without_overflow(text in hostile_text()) {
        if let Some(minor) = parse_major(&text) {
            // What was accepted means what it says.
            let back = parse_major(&format_minor(minor));
            prop_assert_eq!(back, Some(minor));
        }
    }

    #[test]
    fn any_amount_prints_and_parses_back(minor in (i64::MIN + 1)..=i64::MAX) {
        prop_assert_eq!(parse_major(&format_minor(minor)), Some(minor));
    }

    #[test]
    fn currencies_pins_roles_and_verifiers_never_panic(text in hostile_text()) {
        let _ = Currency::new(&text);
        let _ = check_pin(&text);
        let _ = Role::parse(&text);
        let _ = PinVerifier::parse(&text);
    }

    #[test]
    fn ticket_codes_decode_or_refuse(text in hostile_text()) {
        let _ = decode_unverified(&text);
    }
}
