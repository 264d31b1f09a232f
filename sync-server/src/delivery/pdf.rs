//! PDF tickets: one A4 page per ticket with what the entrance staff and the
//! visitor need — museum, date and entry window, product and admissions,
//! the visitor's name, the booking reference — and the code as a QR large
//! enough for any phone or gate scanner, with its text below.
//!
//! Fonts are the PDF's standard Helvetica and Courier with WinAnsi encoding:
//! every reader has them, they cover French (é, è, à, ç, œ, «, €), and the
//! file stays a few kilobytes. Characters outside WinAnsi (a name in
//! Cyrillic, say) print as "?"; the booking itself keeps them intact.
//!
//! Cancelled tickets are left out: a printout of one could only mislead (the
//! gates refuse it). Used tickets are printed, marked as used.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use tessera_core::api::shop::{Booking, BookingTicket, TicketState};

use super::qr::{QrError, QrMatrix, QUIET_ZONE};
use super::text::{self, fill, words};

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN: f32 = 56.0;
/// The QR's side, quiet zone included: about 9 cm, so each module is well
/// over a millimetre even for long codes.
const QR_SIDE: f32 = 260.0;
const CODE_FONT_SIZE: f32 = 9.0;
/// Courier's advance is 0.6 em: 64 characters fill about 350 pt.
const CODE_CHARS_PER_LINE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error(transparent)]
    Qr(#[from] QrError),
}

/// The tickets of a booking that belong on paper: every one not cancelled.
pub fn printable(booking: &Booking) -> Vec<&BookingTicket> {
    booking
        .tickets
        .iter()
        .filter(|t| t.state != TicketState::Cancelled)
        .collect()
}

/// The booking's tickets as a PDF, in the booking's language and its
/// museum's time zone.
pub fn tickets_pdf(booking: &Booking) -> Result<Vec<u8>, PdfError> {
    let tickets = printable(booking);
    let mut pdf = Pdf::new();
    let catalog_id = Ref::new(1);
    let tree_id = Ref::new(2);
    let info_id = Ref::new(3);
    let regular = Ref::new(4);
    let bold = Ref::new(5);
    let mono = Ref::new(6);
    let mut next = 7;
    let mut alloc = || {
        let r = Ref::new(next);
        next += 1;
        r
    };

    pdf.catalog(catalog_id).pages(tree_id);
    pdf.document_info(info_id)
        .title(TextStr(&format!(
            "{} — {}",
            booking.museum, booking.reference
        )))
        .producer(TextStr("Tessera"));
    for (id, base) in [
        (regular, &b"Helvetica"[..]),
        (bold, &b"Helvetica-Bold"[..]),
        (mono, &b"Courier"[..]),
    ] {
        pdf.type1_font(id)
            .base_font(Name(base))
            .encoding_predefined(Name(b"WinAnsiEncoding"));
    }

    let mut contents: Vec<Vec<u8>> = Vec::new();
    if tickets.is_empty() {
        contents.push(empty_page(booking));
    }
    for (i, ticket) in tickets.iter().enumerate() {
        contents.push(ticket_page(booking, ticket, i + 1, tickets.len())?);
    }

    let mut page_ids = Vec::with_capacity(contents.len());
    for content in contents {
        let page_id = alloc();
        let content_id = alloc();
        page_ids.push(page_id);
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H));
        page.parent(tree_id);
        page.contents(content_id);
        {
            let mut resources = page.resources();
            let mut fonts = resources.fonts();
            fonts.pair(Name(b"F1"), regular);
            fonts.pair(Name(b"F2"), bold);
            fonts.pair(Name(b"F3"), mono);
            fonts.finish();
        }
        page.finish();
        pdf.stream(content_id, &content);
    }
    let count = page_ids.len() as i32;
    pdf.pages(tree_id).kids(page_ids).count(count);
    Ok(pdf.finish())
}

/// Text as WinAnsiEncoding bytes (what the standard fonts read): Latin-1
/// where it agrees, the Windows-1252 extras (€, œ, curly quotes, dashes),
/// and "?" for what the encoding cannot show.
pub fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|c| match c {
            ' '..='~' => c as u8,
            '\u{a0}'..='\u{ff}' => c as u32 as u8,
            // Narrow and thin spaces (what `Intl` puts in French numbers).
            '\u{202f}' | '\u{2009}' => 0xa0,
            '€' => 0x80,
            '‚' => 0x82,
            'ƒ' => 0x83,
            '„' => 0x84,
            '…' => 0x85,
            '†' => 0x86,
            '‡' => 0x87,
            'ˆ' => 0x88,
            '‰' => 0x89,
            'Š' => 0x8a,
            '‹' => 0x8b,
            'Œ' => 0x8c,
            'Ž' => 0x8e,
            '‘' => 0x91,
            '’' => 0x92,
            '“' => 0x93,
            '”' => 0x94,
            '•' => 0x95,
            '–' => 0x96,
            '—' => 0x97,
            '˜' => 0x98,
            '™' => 0x99,
            'š' => 0x9a,
            '›' => 0x9b,
            'œ' => 0x9c,
            'ž' => 0x9e,
            'Ÿ' => 0x9f,
            _ => b'?',
        })
        .collect()
}

/// Word-wraps to lines of at most `max` characters (not bytes), cutting a
/// word only when it alone is longer than a line.
pub fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut line_chars = 0;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        if line_chars > 0 && line_chars + 1 + word.len() <= max {
            line.push(' ');
            line.extend(word.iter());
            line_chars += 1 + word.len();
            continue;
        }
        if line_chars > 0 {
            lines.push(std::mem::take(&mut line));
        }
        while word.len() > max {
            let rest = word.split_off(max);
            lines.push(word.into_iter().collect());
            word = rest;
        }
        line_chars = word.len();
        line = word.into_iter().collect();
    }
    if line_chars > 0 || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Fixed-width pieces of a code (characters, never bytes).
pub fn chunk(text: &str, per_line: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(per_line.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// Writes lines of text downward from `y`; returns the `y` below them.
struct Writer {
    content: Content,
    y: f32,
}

impl Writer {
    fn line(&mut self, font: &[u8], size: f32, x: f32, text: &str) {
        self.y -= size * 1.25;
        self.content
            .begin_text()
            .set_font(Name(font), size)
            .next_line(x, self.y)
            .show(Str(&win_ansi(text)))
            .end_text();
    }

    fn wrapped(&mut self, font: &[u8], size: f32, text: &str, max_chars: usize, max_lines: usize) {
        let lines = wrap(text, max_chars);
        let shown = lines.len().min(max_lines.max(1));
        for (i, l) in lines.iter().take(shown).enumerate() {
            if i + 1 == shown && lines.len() > shown {
                self.line(font, size, MARGIN, &format!("{l}…"));
            } else {
                self.line(font, size, MARGIN, l);
            }
        }
    }

    fn gap(&mut self, points: f32) {
        self.y -= points;
    }
}

fn header(w: &mut Writer, booking: &Booking) {
    // ~40 characters of 20 pt Helvetica fit the text width.
    w.wrapped(b"F2", 20.0, &booking.museum, 40, 2);
}

fn ticket_page(
    booking: &Booking,
    ticket: &BookingTicket,
    index: usize,
    count: usize,
) -> Result<Vec<u8>, PdfError> {
    let lang = booking.language;
    let t = words(lang);
    let tz = text::zone(&booking.time_zone);
    let mut w = Writer {
        content: Content::new(),
        y: PAGE_H - MARGIN,
    };
    header(&mut w, booking);
    w.line(
        b"F1",
        11.0,
        MARGIN,
        &format!(
            "{} {}",
            t.ticket,
            fill(
                t.page_of,
                &[("i", &index.to_string()), ("n", &count.to_string())]
            )
        ),
    );
    w.gap(10.0);
    w.line(
        b"F2",
        16.0,
        MARGIN,
        &text::date_of(lang, booking.starts_at, &tz),
    );
    w.line(
        b"F1",
        14.0,
        MARGIN,
        &format!(
            "{} {} {} {}",
            t.entry_between,
            text::time_of(booking.starts_at, &tz),
            t.and,
            text::time_of(booking.ends_at, &tz)
        ),
    );
    w.gap(10.0);
    w.wrapped(b"F2", 15.0, &ticket.product_name, 50, 2);
    w.line(
        b"F1",
        12.0,
        MARGIN,
        &format!(
            "{} — {}",
            text::admits(lang, u32::from(ticket.admits)),
            text::labelled(lang, t.price, &text::money(lang, ticket.price))
        ),
    );
    w.wrapped(
        b"F1",
        12.0,
        &text::labelled(lang, t.name, &booking.name),
        70,
        2,
    );
    w.line(
        b"F1",
        12.0,
        MARGIN,
        &text::labelled(lang, t.reference, &booking.reference),
    );
    if ticket.state == TicketState::Used {
        w.gap(4.0);
        w.content.set_fill_rgb(0.7, 0.0, 0.0);
        w.line(b"F2", 18.0, MARGIN, t.used);
        w.content.set_fill_gray(0.0);
    }

    // The QR, centred, dark squares on the white page (the page is the
    // quiet zone, kept clear by leaving it out of the text's way).
    let qr = QrMatrix::new(&ticket.code)?;
    let modules = (qr.width + 2 * QUIET_ZONE) as f32;
    let module = QR_SIDE / modules;
    let left = (PAGE_W - QR_SIDE) / 2.0 + QUIET_ZONE as f32 * module;
    w.gap(8.0);
    let top = w.y - QUIET_ZONE as f32 * module;
    w.content.set_fill_gray(0.0);
    for y in 0..qr.width {
        for x in 0..qr.width {
            if qr.is_dark(x, y) {
                w.content.rect(
                    left + x as f32 * module,
                    top - (y + 1) as f32 * module,
                    // A hair wider than a module so neighbours join without
                    // anti-aliasing seams.
                    module + 0.05,
                    module + 0.05,
                );
            }
        }
    }
    w.content.fill_nonzero();
    w.y -= QR_SIDE;

    let code_width = CODE_CHARS_PER_LINE as f32 * CODE_FONT_SIZE * 0.6;
    let x = (PAGE_W - code_width) / 2.0;
    for piece in chunk(&ticket.code, CODE_CHARS_PER_LINE) {
        w.line(b"F3", CODE_FONT_SIZE, x, &piece);
    }
    w.gap(14.0);
    w.wrapped(b"F1", 10.0, t.show_at_entry, 95, 3);
    Ok(w.content.finish().into_vec())
}

fn empty_page(booking: &Booking) -> Vec<u8> {
    let lang = booking.language;
    let t = words(lang);
    let mut w = Writer {
        content: Content::new(),
        y: PAGE_H - MARGIN,
    };
    header(&mut w, booking);
    w.line(
        b"F1",
        12.0,
        MARGIN,
        &text::labelled(lang, t.reference, &booking.reference),
    );
    w.gap(10.0);
    w.wrapped(b"F2", 14.0, t.no_valid_ticket, 60, 3);
    w.content.finish().into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_text_maps_to_win_ansi() {
        assert_eq!(
            win_ansi("é è à ç"),
            vec![0xe9, b' ', 0xe8, b' ', 0xe0, b' ', 0xe7]
        );
        assert_eq!(win_ansi("15,00\u{a0}€"), b"15,00\xa0\x80".to_vec());
        assert_eq!(
            win_ansi("Œuvre — « là »"),
            b"\x8cuvre \x97 \xab l\xe0 \xbb".to_vec()
        );
        assert_eq!(win_ansi("Жанна"), b"?????".to_vec());
    }

    #[test]
    fn wraps_by_characters_never_bytes() {
        let lines = wrap("Élodie Françoise Dupont-Écuyer de la Tour", 12);
        assert!(lines.iter().all(|l| l.chars().count() <= 12), "{lines:?}");
        // Only the one word longer than a line is cut, between characters.
        assert_eq!(
            lines,
            ["Élodie", "Françoise", "Dupont-Écuye", "r de la Tour"]
        );
        let long = "ééééééééééééééééééééé";
        let pieces = wrap(long, 8);
        assert_eq!(pieces.concat(), long);
        assert!(pieces.iter().all(|l| l.chars().count() <= 8));
        assert_eq!(chunk("ABCDEFG", 3), vec!["ABC", "DEF", "G"]);
        assert_eq!(wrap("", 10), vec![String::new()]);
    }
}
