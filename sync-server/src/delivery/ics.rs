//! An iCalendar (RFC 5545) entry for a booking: one VEVENT for its entry
//! window, in UTC, with the "my booking" link.
//!
//! Written by hand rather than with a crate: the format needed here is a
//! dozen lines, and the two rules that matter — escaping and folding long
//! lines at 75 octets without splitting a UTF-8 character — are easier to
//! test when they are ours.

use jiff::Timestamp;
use tessera_core::api::shop::{Booking, TicketState};

use super::text::{self, fill, words};

/// Longest content line, in octets, before it must be folded.
const MAX_LINE_OCTETS: usize = 75;

/// TEXT value escaping (RFC 5545 §3.3.11): backslash, semicolon, comma and
/// line breaks.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\r' => {
                // CRLF is one line break.
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            // Other control characters are not allowed in TEXT.
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Folds one content line: at most 75 octets per physical line, each
/// continuation starting with a space (which counts in its 75), never
/// splitting a character; lines end with CRLF.
pub fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / 60 * 3 + 2);
    let mut used = 0;
    for c in line.chars() {
        let n = c.len_utf8();
        if used + n > MAX_LINE_OCTETS {
            out.push_str("\r\n ");
            used = 1;
        }
        out.push(c);
        used += n;
    }
    out.push_str("\r\n");
    out
}

fn utc(ts: Timestamp) -> String {
    ts.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// The calendar file of a booking; `link` opens "my booking".
pub fn booking_ics(booking: &Booking, link: &str) -> String {
    let w = words(booking.language);
    let summary = fill(w.calendar_summary, &[("museum", &booking.museum)]);
    let valid = booking
        .tickets
        .iter()
        .filter(|t| t.state != TicketState::Cancelled)
        .count();
    let lang = booking.language;
    let mut description = text::labelled(lang, w.reference, &booking.reference);
    for t in booking
        .tickets
        .iter()
        .filter(|t| t.state != TicketState::Cancelled)
    {
        description.push('\n');
        description.push_str(&format!(
            "{} ({})",
            t.product_name,
            text::admits(lang, u32::from(t.admits))
        ));
    }
    description.push('\n');
    description.push_str(&text::labelled(lang, w.calendar_link, link));
    let status = if valid == 0 { "CANCELLED" } else { "CONFIRMED" };
    let lines = [
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".to_string(),
        "PRODID:-//Tessera//Museum tickets//EN".to_string(),
        "CALSCALE:GREGORIAN".to_string(),
        "METHOD:PUBLISH".to_string(),
        "BEGIN:VEVENT".to_string(),
        // Stable per order: a calendar that imports the file again (after
        // a cancellation, say) updates the event instead of adding one.
        format!("UID:{}@tessera", booking.order_id),
        format!("DTSTAMP:{}", utc(booking.created_at)),
        format!("DTSTART:{}", utc(booking.starts_at)),
        format!("DTEND:{}", utc(booking.ends_at)),
        format!("SUMMARY:{}", escape(&summary)),
        format!("LOCATION:{}", escape(&booking.museum)),
        format!("DESCRIPTION:{}", escape(&description)),
        format!("URL:{}", escape_uri(link)),
        format!("STATUS:{status}"),
        "END:VEVENT".to_string(),
        "END:VCALENDAR".to_string(),
    ];
    lines.iter().map(|l| fold(l)).collect()
}

/// A URI value is not TEXT (no escaping) but must not carry line breaks.
fn escape_uri(link: &str) -> String {
    link.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::api::shop::{BookingTicket, Language};
    use tessera_core::money::{Currency, Money};
    use uuid::Uuid;

    fn booking(state: TicketState) -> Booking {
        let eur = |a| Money::new(a, Currency::new("EUR").unwrap());
        let starts_at: Timestamp = "2026-07-11T08:00:00Z".parse().unwrap();
        Booking {
            order_id: Uuid::nil(),
            reference: "TSR-1".into(),
            museum: "Musée des Arts, Métiers; et \\ Techniques".into(),
            time_zone: "Europe/Paris".into(),
            language: Language::Fr,
            name: "Zoé".into(),
            email: "zoe@example.org".into(),
            channel: "web".into(),
            slot_id: "2026-07-11T10:00".parse().unwrap(),
            starts_at,
            ends_at: starts_at + jiff::SignedDuration::from_mins(30),
            total: eur(1500),
            refunded: eur(0),
            created_at: starts_at,
            cancellable_until: starts_at,
            tickets: vec![BookingTicket {
                ticket_id: Uuid::nil(),
                product_id: "adult".into(),
                product_name: "Plein tarif — entrée générale, exposition « Mosaïques » incluse"
                    .into(),
                admits: 1,
                price: eur(1500),
                code: "CODE".into(),
                state,
            }],
        }
    }

    #[test]
    fn a_booking_is_one_escaped_folded_event_in_utc() {
        let ics = booking_ics(
            &booking(TicketState::Valid),
            "https://t.example/booking/ABC",
        );
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\n"));
        assert!(ics.ends_with("END:VCALENDAR\r\n"));
        // Every line ends with CRLF and none is longer than 75 octets.
        assert!(!ics.replace("\r\n", "").contains('\n'));
        assert!(ics.split("\r\n").all(|l| l.len() <= 75));
        let text = unfold(&ics);
        assert_eq!(text.matches("BEGIN:VEVENT").count(), 1);
        assert!(text.contains("UID:00000000-0000-0000-0000-000000000000@tessera\r\n"));
        // 10:00 in Paris in July is 08:00 UTC.
        assert!(text.contains("DTSTART:20260711T080000Z\r\n"));
        assert!(text.contains("DTEND:20260711T083000Z\r\n"));
        assert!(text.contains("LOCATION:Musée des Arts\\, Métiers\\; et \\\\ Techniques\r\n"));
        assert!(text.contains("SUMMARY:Visite : Musée des Arts\\,"));
        assert!(text.contains(
            "« Mosaïques » incluse (1 personne)\\nVos billets\u{a0}: https://t.example/booking/ABC"
        ));
        assert!(text.contains("STATUS:CONFIRMED\r\n"));
        let cancelled = booking_ics(&booking(TicketState::Cancelled), "x");
        assert!(cancelled.contains("STATUS:CANCELLED\r\n"));
    }

    fn unfold(text: &str) -> String {
        text.replace("\r\n ", "")
    }

    #[test]
    fn escapes_the_characters_text_values_reserve() {
        assert_eq!(
            escape("a,b;c\\d\ne\r\nf"),
            "a\\,b\\;c\\\\d\\ne\\nf".to_string()
        );
        assert_eq!(escape("tab\there"), "tabhere");
    }

    #[test]
    fn folds_at_75_octets_on_character_boundaries() {
        // Two-, three- and four-octet characters, so that every possible
        // split point falls inside some character at least once.
        let text = format!("DESCRIPTION:{}", "é€😀a".repeat(40));
        let folded = fold(&text);
        assert!(folded.ends_with("\r\n"));
        for physical in folded.trim_end_matches("\r\n").split("\r\n") {
            assert!(
                physical.len() <= 75,
                "{} octets: {physical:?}",
                physical.len()
            );
            // Each piece is valid UTF-8 on its own: no character was cut.
            assert!(std::str::from_utf8(physical.as_bytes()).is_ok());
        }
        assert!(folded.lines().count() > 1);
        assert_eq!(unfold(&folded), format!("{text}\r\n"));
        // A line of exactly 75 octets stays whole.
        let exact = "X".repeat(75);
        assert_eq!(fold(&exact), format!("{exact}\r\n"));
        let longer = "X".repeat(76);
        assert_eq!(fold(&longer), format!("{}\r\n X\r\n", "X".repeat(75)));
    }
}
