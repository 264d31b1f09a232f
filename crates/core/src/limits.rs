//! Every limit Tessera enforces, defined once: the counter, the server and the
//! app (through the API's error messages) all check against these numbers.
//!
//! Text is measured in Unicode scalar values (`char`s), never bytes, so a
//! French or Japanese name gets the same room as an English one, and nothing
//! here ever cuts a string inside a character. Integers that arrive from a
//! device or the network are range-checked before they are stored or used in
//! arithmetic, so no `i64`/`u64` edge (overflow, a seq above `i64::MAX`, a
//! negative float) can reach SQLite or a sum.

/// A device's display name ("Counter 1", "North gate").
pub const DEVICE_NAME_CHARS: usize = 100;
/// A void's reason, typed by a cashier.
pub const VOID_REASON_CHARS: usize = 200;
/// A staff member's name as it appears on receipts and reports.
pub const STAFF_NAME_CHARS: usize = 100;
/// A membership number, one per member ticket (ASCII letters, digits, '-').
pub const MEMBERSHIP_NUMBER_CHARS: usize = 20;
/// An email address (RFC 5321's path limit).
pub const EMAIL_CHARS: usize = 254;
/// A payment provider's reference.
pub const PAYMENT_REFERENCE_CHARS: usize = 200;
/// An `Idempotency-Key` header (printable ASCII only).
pub const IDEMPOTENCY_KEY_CHARS: usize = 200;
/// An enrolment code as typed (separators and spaces included).
pub const ENROLMENT_CODE_CHARS: usize = 64;
/// A visitor's name as given at checkout (printed on tickets and emails).
pub const VISITOR_NAME_CHARS: usize = 100;
/// A trusted sales channel's name (a partner site, a tourist office).
pub const CHANNEL_NAME_CHARS: usize = 100;
/// A payment provider's webhook body.
pub const WEBHOOK_BODY_BYTES: usize = 64 * 1024;
/// A supervisor's or cashier's PIN.
pub const PIN_MIN_DIGITS: usize = 4;
pub const PIN_MAX_DIGITS: usize = 12;

/// Tickets in one sale or one online order (a school group fits; a typo of
/// 1000 does not).
pub const TICKETS_PER_ORDER: u32 = 50;
/// Cart lines in one sale.
pub const LINES_PER_SALE: usize = 20;
/// Sales in one sync body; the counter sends at most this many per round.
pub const SALES_PER_SYNC: usize = 1000;
/// Voids, lease reports, wants and shifts in one sync body.
pub const VOIDS_PER_SYNC: usize = 1000;
pub const LEASES_PER_SYNC: usize = 2000;
pub const WANTS_PER_SYNC: usize = 200;
pub const SHIFTS_PER_SYNC: usize = 100;
/// Scans in one gate upload.
pub const SCANS_PER_SYNC: usize = 5000;

/// The largest amount of money any one field may carry: a sale total, a
/// tendered amount, a float, a counted drawer (in minor units: 1,000,000.00).
pub const MAX_AMOUNT_MINOR: i64 = 100_000_000;
/// The largest opening float a cashier may type (10,000.00): a drawer
/// plausibly starts with less, so more is a mistyped amount.
pub const MAX_FLOAT_MINOR: i64 = 1_000_000;
/// A terminal's sequence numbers stay far below `i64::MAX` (SQLite's integer).
pub const MAX_SEQ: u64 = (1 << 53) - 1;
/// A scanned ticket code as sent to the server (real codes are ~150 ASCII
/// characters; anything far longer is not a ticket).
pub const TICKET_CODE_CHARS: usize = 1024;

/// Why a value was refused. The message names the field and the limit, so a
/// caller can show it as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is too long: {chars} characters, at most {max}")]
    TooLong {
        field: &'static str,
        chars: usize,
        max: usize,
    },
    #[error("{field} contains a control character")]
    Control { field: &'static str },
    #[error("{field} is out of range: {value}, allowed {min} to {max}")]
    OutOfRange {
        field: &'static str,
        value: String,
        min: String,
        max: String,
    },
    #[error("{field} is not an email address")]
    NotEmail { field: &'static str },
    #[error("{field}: at most {max} entries, got {count}")]
    TooMany {
        field: &'static str,
        count: usize,
        max: usize,
    },
}

/// The length of `text` as people count it (Unicode scalar values).
pub fn chars(text: &str) -> usize {
    text.chars().count()
}

/// Checks a required single-line text: not blank, at most `max` characters,
/// no control characters (which would break receipts, CSV and logs).
pub fn text(field: &'static str, value: &str, max: usize) -> Result<(), LimitError> {
    if value.trim().is_empty() {
        return Err(LimitError::Empty { field });
    }
    optional_text(field, value, max)
}

/// Checks an email address the way a shop form would before anything is
/// sent to it: one `@`, something on each side, a dotted domain that neither
/// starts nor ends with a dot, no spaces. Whether the mailbox exists only a
/// mail to it can tell.
pub fn email(field: &'static str, value: &str) -> Result<(), LimitError> {
    text(field, value, EMAIL_CHARS)?;
    let well_formed = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        }
        None => false,
    };
    if !well_formed || value.chars().any(char::is_whitespace) {
        return Err(LimitError::NotEmail { field });
    }
    Ok(())
}

/// Like [`text`], but an empty value is allowed.
pub fn optional_text(field: &'static str, value: &str, max: usize) -> Result<(), LimitError> {
    let n = chars(value);
    if n > max {
        return Err(LimitError::TooLong {
            field,
            chars: n,
            max,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(LimitError::Control { field });
    }
    Ok(())
}

/// The first `max` characters of `text`, cut on a character boundary (for
/// display and logs only: stored text is refused, never cut).
pub fn prefix(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// Checks that `count` entries fit under `max`.
pub fn count(field: &'static str, count: usize, max: usize) -> Result<(), LimitError> {
    if count > max {
        return Err(LimitError::TooMany { field, count, max });
    }
    Ok(())
}

/// An amount of money that must lie in `0..=MAX_AMOUNT_MINOR`.
pub fn amount(field: &'static str, minor: i64) -> Result<(), LimitError> {
    int_range(field, minor, 0, MAX_AMOUNT_MINOR)
}

/// An integer that must lie in `min..=max`.
pub fn int_range<T>(field: &'static str, value: T, min: T, max: T) -> Result<(), LimitError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if value < min || value > max {
        return Err(LimitError::OutOfRange {
            field,
            value: value.to_string(),
            min: min.to_string(),
            max: max.to_string(),
        });
    }
    Ok(())
}

/// A terminal sequence number: `1..=MAX_SEQ`, so it fits SQLite's `i64`.
pub fn seq(field: &'static str, value: u64) -> Result<i64, LimitError> {
    int_range(field, value, 1, MAX_SEQ)?;
    // In range, so the conversion cannot fail.
    i64::try_from(value).map_err(|_| LimitError::OutOfRange {
        field,
        value: value.to_string(),
        min: "1".into(),
        max: MAX_SEQ.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn length_is_counted_in_characters_not_bytes() {
        let cjk = "展".repeat(VOID_REASON_CHARS);
        assert!(cjk.len() > VOID_REASON_CHARS * 2);
        assert_eq!(text("reason", &cjk, VOID_REASON_CHARS), Ok(()));
        let over = "展".repeat(VOID_REASON_CHARS + 1);
        assert!(matches!(
            text("reason", &over, VOID_REASON_CHARS),
            Err(LimitError::TooLong { chars: 201, .. })
        ));
    }

    #[test]
    fn blank_and_control_characters_are_refused() {
        assert!(matches!(
            text("name", "   ", 10),
            Err(LimitError::Empty { .. })
        ));
        assert!(matches!(
            text("name", "a\nb", 10),
            Err(LimitError::Control { .. })
        ));
        assert_eq!(optional_text("name", "", 10), Ok(()));
    }

    #[test]
    fn emails_are_checked_as_a_shop_form_would() {
        for ok in ["a@b.fr", "visitor+tag@example.org", "zoé@musée.fr"] {
            assert_eq!(email("email", ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "a", "a@", "@b.fr", "a b@c.fr", "a@b", "a@@b.fr", "a@.fr", "a@b.fr.",
        ] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.org", "a".repeat(EMAIL_CHARS));
        assert!(matches!(
            email("email", &long),
            Err(LimitError::TooLong { .. })
        ));
    }

    #[test]
    fn seq_fits_sqlite() {
        assert_eq!(seq("seq", 1), Ok(1));
        assert!(seq("seq", 0).is_err());
        assert!(seq("seq", u64::MAX).is_err());
        assert!(seq("seq", i64::MAX as u64 + 1).is_err());
    }

    proptest! {
        #[test]
        fn prefix_never_splits_a_character(s in any::<String>(), max in 0usize..40) {
            let p = prefix(&s, max);
            prop_assert!(s.starts_with(p));
            prop_assert_eq!(chars(p), chars(&s).min(max));
        }

        #[test]
        fn text_checks_never_panic(s in any::<String>(), max in 0usize..300) {
            let _ = text("field", &s, max);
            let _ = optional_text("field", &s, max);
        }

        #[test]
        fn ranges_accept_exactly_the_range(v in any::<i64>()) {
            let ok = amount("amount", v).is_ok();
            prop_assert_eq!(ok, (0..=MAX_AMOUNT_MINOR).contains(&v));
        }

        #[test]
        fn seq_accepts_exactly_the_range(v in any::<u64>()) {
            prop_assert_eq!(seq("seq", v).is_ok(), (1..=MAX_SEQ).contains(&v));
        }
    }
}
