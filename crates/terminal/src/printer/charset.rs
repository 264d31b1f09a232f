//! Which bytes stand for which letters on the paper.
//!
//! Receipts go out in code page WPC1252 (Windows-1252, selected with `ESC t 16`):
//! one byte per character, it holds every letter of French, German, Spanish,
//! Italian, Portuguese, Dutch and the Nordic languages plus `€`, and Epson and
//! most clones have it. "Musée des Tessères" is therefore sent as its own
//! letters (`é` = 0xE9, `è` = 0xE8) and reads back exactly.
//!
//! A character outside the page is transliterated to ASCII (deunicode: "Łódź"
//! -> "Lódz", "Музей" -> "Muzei"), because a printer shown bytes of the wrong page
//! prints confident nonsense. Control characters become spaces: names come
//! from the catalogue and from staff, and a stray ESC in one must never turn
//! into a printer command.

use encoding_rs::WINDOWS_1252;
use escpos::utils::PageCode;

/// The page the renderer selects; `ESC t` takes [`PAGE_NUMBER`] for it.
pub(crate) const PAGE: PageCode = PageCode::WPC1252;
pub(crate) const PAGE_NUMBER: u8 = 16;

/// `text` with every character the printer can show in [`PAGE`]: one `char`
/// of the result is one byte on the wire and one column on the paper.
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || (c.is_whitespace() && c != '\u{a0}') {
            out.push(' ');
        } else if byte_for(c).is_some() {
            out.push(c);
        } else {
            let ascii = deunicode::deunicode_char(c).unwrap_or("?");
            // deunicode's table is ASCII but not free of controls.
            out.extend(ascii.chars().filter(|a| a.is_ascii_graphic() || *a == ' '));
        }
    }
    out
}

/// The byte for `c` in the page, if the page has it and it is not a control.
pub(crate) fn byte_for(c: char) -> Option<u8> {
    if c.is_ascii() {
        return (!c.is_ascii_control()).then_some(c as u8);
    }
    let mut buf = [0u8; 4];
    let (bytes, _, unmappable) = WINDOWS_1252.encode(c.encode_utf8(&mut buf));
    match *bytes {
        [b] if !unmappable && char_for(b) == Some(c) => Some(b),
        _ => None,
    }
}

/// The character byte `b` prints as, or `None` for a control or an unused slot.
pub(crate) fn char_for(b: u8) -> Option<char> {
    if b.is_ascii() {
        return (!b.is_ascii_control()).then_some(b as char);
    }
    let byte = [b];
    let (text, _) = WINDOWS_1252.decode_without_bom_handling(&byte);
    // encoding_rs maps the five unused slots (0x81, 0x8D…) to C1 controls.
    text.chars().next().filter(|c| !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accented_names_keep_their_letters() {
        assert_eq!(printable("Musée des Tessères"), "Musée des Tessères");
        assert_eq!(printable("Inès, 12 €"), "Inès, 12 €");
        assert_eq!(byte_for('é'), Some(0xE9));
        assert_eq!(byte_for('€'), Some(0x80));
        assert_eq!(char_for(0xE8), Some('è'));
    }

    #[test]
    fn other_scripts_are_transliterated_and_controls_blanked() {
        assert_eq!(printable("Łódź"), "Lódz");
        assert_eq!(printable("Музей"), "Muzei");
        assert_eq!(printable("a\u{1b}@b\tc\nd"), "a @b c d");
        assert!(printable("\u{e000}x").ends_with('x'));
    }

    #[test]
    fn every_printable_byte_round_trips() {
        for b in 0u8..=255 {
            if let Some(c) = char_for(b) {
                assert_eq!(byte_for(c), Some(b), "byte {b:#04x}");
                assert_eq!(printable(&c.to_string()), c.to_string());
            }
        }
        assert_eq!(char_for(0x81), None);
        assert_eq!(char_for(0x1b), None);
    }
}
