//! Composing the visitor's emails from an outbox row: plain text and HTML
//! alternatives in the booking's language, each valid ticket's QR inline
//! (`cid:`), the PDF tickets and the calendar entry attached, and the
//! "my booking" (or waiting-list offer) link.

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::{Address, Message};
use serde::{Deserialize, Serialize};
use tessera_core::api::shop::{Booking, BookingTicket, Language, Offer, TicketState};
use tessera_core::money::Money;
use tessera_core::slot::SlotId;

use super::text::{self, fill, labelled, words, MailKind};
use super::{ics, pdf, qr};

/// What an outbox row's `payload` holds (see migration 0011): the booking or
/// the waiting-list offer the mail is about, and the secret link.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MailPayload {
    #[serde(default)]
    pub booking: Option<Booking>,
    #[serde(default)]
    pub offer: Option<Offer>,
    #[serde(default)]
    pub refund: Option<RefundNotice>,
    pub link: String,
}

/// A payment refunded without a booking: what the visitor is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundNotice {
    pub language: Language,
    pub slot_id: SlotId,
    pub amount: Money,
    /// `no_places` (paid after the places were gone), `duplicate`,
    /// `amount_mismatch`.
    pub reason: String,
}

/// What an offer's mail needs that the offer does not carry.
#[derive(Clone, Debug)]
pub struct Museum {
    pub name: String,
    pub time_zone: String,
}

/// Why a mail could not be composed. None of these mends with a retry.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("unreadable payload: {0}")]
    Payload(String),
    #[error("invalid address {0:?}")]
    Address(String),
    #[error("cannot render: {0}")]
    Render(String),
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A mail ready to send, with what the tests and logs look at.
pub struct Composed {
    pub message: Message,
    pub subject: String,
}

pub fn parse_payload(kind: MailKind, json: &str) -> Result<MailPayload, ComposeError> {
    let payload: MailPayload =
        serde_json::from_str(json).map_err(|e| ComposeError::Payload(e.to_string()))?;
    let (fits, needs) = match kind {
        MailKind::WaitlistOffer => (payload.offer.is_some(), "an offer"),
        MailKind::PaymentRefunded => (payload.refund.is_some(), "a refund"),
        _ => (payload.booking.is_some(), "a booking"),
    };
    if !fits {
        return Err(ComposeError::Payload(format!(
            "a {} mail needs {needs}",
            kind.as_str()
        )));
    }
    Ok(payload)
}

/// Builds the message for one outbox row.
pub fn compose(
    kind: MailKind,
    recipient: &str,
    payload: &MailPayload,
    museum: &Museum,
    from: &str,
) -> Result<Composed, ComposeError> {
    let from: Mailbox = from
        .parse()
        .map_err(|_| ComposeError::Address(from.to_string()))?;
    let address: Address = recipient
        .trim()
        .parse()
        .map_err(|_| ComposeError::Address(recipient.to_string()))?;
    match (kind, &payload.booking, &payload.offer) {
        (MailKind::WaitlistOffer, _, Some(offer)) => {
            offer_mail(offer, &payload.link, museum, from, address)
        }
        (MailKind::WaitlistOffer, _, None) => Err(ComposeError::Payload("no offer".into())),
        (MailKind::PaymentRefunded, _, _) => match &payload.refund {
            Some(refund) => refund_mail(refund, &payload.link, museum, from, address),
            None => Err(ComposeError::Payload("no refund".into())),
        },
        (_, Some(booking), _) => booking_mail(kind, booking, &payload.link, from, address),
        (_, None, _) => Err(ComposeError::Payload("no booking".into())),
    }
}

fn valid(booking: &Booking) -> Vec<&BookingTicket> {
    booking
        .tickets
        .iter()
        .filter(|t| t.state == TicketState::Valid)
        .collect()
}

fn cid(ticket: &BookingTicket) -> String {
    format!("qr-{}@tessera", ticket.ticket_id)
}

fn booking_mail(
    kind: MailKind,
    booking: &Booking,
    link: &str,
    from: Mailbox,
    address: Address,
) -> Result<Composed, ComposeError> {
    let lang = booking.language;
    let w = words(lang);
    let tz = text::zone(&booking.time_zone);
    let date = text::date_of(lang, booking.starts_at, &tz);
    let start = text::time_of(booking.starts_at, &tz);
    let end = text::time_of(booking.ends_at, &tz);
    let museum = booking.museum.as_str();
    let subject = match kind {
        MailKind::BookingConfirmed | MailKind::Resend => fill(
            w.subject_confirmed,
            &[("museum", museum), ("date", &date), ("time", &start)],
        ),
        MailKind::TicketsCancelled => {
            fill(w.subject_cancelled, &[("museum", museum), ("date", &date)])
        }
        MailKind::RefundIssued | MailKind::WaitlistOffer | MailKind::PaymentRefunded => fill(
            w.subject_refund,
            &[
                ("museum", museum),
                ("amount", &text::money(lang, booking.refunded)),
            ],
        ),
    };

    // Paragraphs shared by both parts, as plain text; the HTML part
    // escapes each of them.
    let hello = fill(w.hello, &[("name", &booking.name)]);
    let intro = match kind {
        MailKind::BookingConfirmed | MailKind::Resend => w.confirmed_intro.to_string(),
        MailKind::TicketsCancelled => w.cancelled_intro.to_string(),
        _ => fill(
            w.refund_intro,
            &[("amount", &text::money(lang, booking.refunded))],
        ),
    };
    let when = format!(
        "{date}, {} {start} {} {end}",
        w.entry_between.to_lowercase(),
        w.and
    );
    let when = capitalise(&when);
    let reference = labelled(lang, w.reference, &booking.reference);
    let deadline = fill(
        w.cancellable_until,
        &[
            ("date", &text::date_of(lang, booking.cancellable_until, &tz)),
            ("time", &text::time_of(booking.cancellable_until, &tz)),
        ],
    );
    let listed: Vec<&BookingTicket> = match kind {
        MailKind::TicketsCancelled => booking
            .tickets
            .iter()
            .filter(|t| t.state == TicketState::Cancelled)
            .collect(),
        MailKind::RefundIssued => Vec::new(),
        _ => booking
            .tickets
            .iter()
            .filter(|t| t.state != TicketState::Cancelled)
            .collect(),
    };
    let with_tickets = matches!(kind, MailKind::BookingConfirmed | MailKind::Resend)
        || (kind == MailKind::TicketsCancelled && !valid(booking).is_empty());
    let show_qr = matches!(kind, MailKind::BookingConfirmed | MailKind::Resend);

    let line_of = |t: &BookingTicket| {
        let mut s = format!(
            "{} ({}) — {}",
            t.product_name,
            text::admits(lang, u32::from(t.admits)),
            text::money(lang, t.price)
        );
        match t.state {
            TicketState::Used => s.push_str(&format!(" — {}", w.used)),
            TicketState::Cancelled => s.push_str(&format!(" — {}", w.cancelled)),
            TicketState::Valid => {}
        }
        s
    };

    // Plain text.
    let mut plain = format!("{hello}\n\n{intro}\n\n{museum}\n{when}\n{reference}\n");
    if !listed.is_empty() {
        plain.push('\n');
        for t in &listed {
            plain.push_str(&format!("- {}\n", line_of(t)));
            if show_qr && t.state == TicketState::Valid {
                plain.push_str(&format!("  {}\n", t.code));
            }
        }
    }
    if kind != MailKind::RefundIssued {
        plain.push_str(&format!(
            "\n{}\n",
            labelled(lang, w.total, &text::money(lang, booking.total))
        ));
    }
    if booking.refunded.amount > 0 {
        plain.push_str(&format!(
            "{}\n",
            labelled(lang, w.refunded, &text::money(lang, booking.refunded))
        ));
    }
    plain.push_str(&format!(
        "\n{}\n{}\n{link}\n",
        w.my_booking, w.my_booking_hint
    ));
    if !valid(booking).is_empty() {
        plain.push_str(&format!("\n{deadline}\n"));
    }
    if with_tickets {
        plain.push_str(&format!("\n{}\n", w.attachments));
    }
    plain.push_str(&format!("\n{museum}\n"));

    // HTML.
    let e = html_escape;
    let mut html = String::new();
    html.push_str(&format!(
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:Arial,Helvetica,sans-serif;color:#1a1a1a;max-width:640px;margin:0 auto;padding:16px\">",
        lang.code(),
        e(&subject)
    ));
    html.push_str(&format!("<p>{}</p><p>{}</p>", e(&hello), e(&intro)));
    html.push_str(&format!(
        "<h1 style=\"font-size:20px;margin:16px 0 4px\">{}</h1><p style=\"margin:0\"><strong>{}</strong><br>{}</p>",
        e(museum),
        e(&when),
        e(&reference)
    ));
    for t in &listed {
        html.push_str(&format!(
            "<div style=\"border:1px solid #ccc;border-radius:8px;padding:12px;margin:12px 0\"><p style=\"margin:0 0 8px\"><strong>{}</strong></p>",
            e(&line_of(t))
        ));
        if show_qr && t.state == TicketState::Valid {
            html.push_str(&format!(
                "<img src=\"cid:{}\" width=\"220\" height=\"220\" alt=\"QR\" style=\"display:block\">\
                 <p style=\"font-family:monospace;font-size:11px;word-break:break-all\">{}</p>",
                e(&cid(t)),
                e(&t.code)
            ));
        }
        html.push_str("</div>");
    }
    if kind != MailKind::RefundIssued {
        html.push_str(&format!(
            "<p>{}</p>",
            e(&labelled(lang, w.total, &text::money(lang, booking.total)))
        ));
    }
    if booking.refunded.amount > 0 {
        html.push_str(&format!(
            "<p>{}</p>",
            e(&labelled(
                lang,
                w.refunded,
                &text::money(lang, booking.refunded)
            ))
        ));
    }
    html.push_str(&format!(
        "<p>{}</p><p><a href=\"{}\" style=\"display:inline-block;background:#1d4ed8;color:#fff;padding:10px 16px;border-radius:6px;text-decoration:none\">{}</a></p>",
        e(w.my_booking_hint),
        e(link),
        e(w.my_booking)
    ));
    if !valid(booking).is_empty() {
        html.push_str(&format!("<p>{}</p>", e(&deadline)));
    }
    if with_tickets {
        html.push_str(&format!("<p>{}</p>", e(w.attachments)));
    }
    html.push_str("</body></html>");

    let alternative = MultiPart::alternative_plain_html(plain, html);
    let body = if with_tickets {
        let mut related = MultiPart::related().multipart(alternative);
        if show_qr {
            for t in valid(booking) {
                let png = qr::QrMatrix::new(&t.code)
                    .and_then(|q| q.to_png(5))
                    .map_err(|e| ComposeError::Render(e.to_string()))?;
                related = related.singlepart(
                    Attachment::new_inline(cid(t))
                        .body(png, ContentType::parse("image/png").map_err(render)?),
                );
            }
        }
        let pdf = pdf::tickets_pdf(booking).map_err(|e| ComposeError::Render(e.to_string()))?;
        let ics = ics::booking_ics(booking, link);
        let name = attachment_name(booking);
        MultiPart::mixed()
            .multipart(related)
            .singlepart(
                Attachment::new(format!("{name}.pdf"))
                    .body(pdf, ContentType::parse("application/pdf").map_err(render)?),
            )
            .singlepart(
                Attachment::new(format!("{name}.ics")).body(
                    ics,
                    ContentType::parse("text/calendar; charset=utf-8; method=PUBLISH")
                        .map_err(render)?,
                ),
            )
    } else {
        MultiPart::mixed().multipart(alternative)
    };
    let to = Mailbox::new(Some(booking.name.clone()), address);
    finish(from, to, subject, lang, body)
}

fn offer_mail(
    offer: &Offer,
    link: &str,
    museum: &Museum,
    from: Mailbox,
    address: Address,
) -> Result<Composed, ComposeError> {
    let lang = offer.language;
    let w = words(lang);
    let tz = text::zone(&museum.time_zone);
    let date = text::date(lang, offer.slot_id.date);
    let start = format!(
        "{:02}:{:02}",
        offer.slot_id.start_minute / 60,
        offer.slot_id.start_minute % 60
    );
    let subject = fill(
        w.subject_offer,
        &[("museum", &museum.name), ("date", &date), ("time", &start)],
    );
    let until = fill(
        w.offer_until,
        &[
            ("time", &text::time_of(offer.expires_at, &tz)),
            ("date", &text::date_of(lang, offer.expires_at, &tz)),
        ],
    );
    let party = fill(w.offer_party, &[("n", &offer.party.to_string())]);
    let slot = format!("{date}, {start}");
    let plain = format!(
        "{}\n\n{}\n{}\n{}\n\n{}\n\n{}:\n{link}\n\n{}\n",
        w.offer_intro, museum.name, slot, party, until, w.offer_action, museum.name
    );
    let e = html_escape;
    let html = format!(
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:Arial,Helvetica,sans-serif;color:#1a1a1a;max-width:640px;margin:0 auto;padding:16px\">\
         <p>{}</p><h1 style=\"font-size:20px\">{}</h1><p><strong>{}</strong><br>{}</p><p>{}</p>\
         <p><a href=\"{}\" style=\"display:inline-block;background:#1d4ed8;color:#fff;padding:10px 16px;border-radius:6px;text-decoration:none\">{}</a></p>\
         </body></html>",
        lang.code(),
        e(&subject),
        e(w.offer_intro),
        e(&museum.name),
        e(&slot),
        e(&party),
        e(&until),
        e(link),
        e(w.offer_action)
    );
    let body = MultiPart::mixed().multipart(MultiPart::alternative_plain_html(plain, html));
    finish(from, Mailbox::new(None, address), subject, lang, body)
}

/// The subject and the sentence that says why a payment is coming back.
fn refund_words(refund: &RefundNotice, museum: &str) -> (String, String) {
    let lang = refund.language;
    let w = words(lang);
    let amount = text::money(lang, refund.amount);
    let date = text::date(lang, refund.slot_id.date);
    let start = format!(
        "{:02}:{:02}",
        refund.slot_id.start_minute / 60,
        refund.slot_id.start_minute % 60
    );
    let subject = fill(
        w.subject_payment_refunded,
        &[("amount", &amount), ("museum", museum)],
    );
    let why = if refund.reason == "no_places" {
        w.payment_refunded_no_places
    } else {
        w.payment_refunded_other
    };
    let why = fill(
        why,
        &[("amount", &amount), ("date", &date), ("time", &start)],
    );
    (subject, why)
}

fn refund_mail(
    refund: &RefundNotice,
    link: &str,
    museum: &Museum,
    from: Mailbox,
    address: Address,
) -> Result<Composed, ComposeError> {
    let lang = refund.language;
    let w = words(lang);
    let (subject, why) = refund_words(refund, &museum.name);
    let plain = format!(
        "{why}\n\n{}\n\n{}:\n{link}\n\n{}\n",
        w.payment_refunded_after, w.shop_again, museum.name
    );
    let e = html_escape;
    let html = format!(
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:Arial,Helvetica,sans-serif;color:#1a1a1a;max-width:640px;margin:0 auto;padding:16px\">\
         <h1 style=\"font-size:20px\">{}</h1><p>{}</p><p>{}</p><p><a href=\"{}\">{}</a></p></body></html>",
        lang.code(),
        e(&subject),
        e(&museum.name),
        e(&why),
        e(w.payment_refunded_after),
        e(link),
        e(w.shop_again)
    );
    let body = MultiPart::mixed().multipart(MultiPart::alternative_plain_html(plain, html));
    finish(from, Mailbox::new(None, address), subject, lang, body)
}

fn finish(
    from: Mailbox,
    to: Mailbox,
    subject: String,
    _lang: Language,
    body: MultiPart,
) -> Result<Composed, ComposeError> {
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject.clone())
        .multipart(body)
        .map_err(|e| ComposeError::Render(e.to_string()))?;
    Ok(Composed { message, subject })
}

fn render(e: impl std::fmt::Display) -> ComposeError {
    ComposeError::Render(e.to_string())
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The attachments' and downloads' file name, without extension:
/// "billets-TSR-7K4Q" / "tickets-TSR-7K4Q".
pub fn attachment_name(booking: &Booking) -> String {
    format!(
        "{}-{}",
        words(booking.language).tickets_file,
        file_safe(&booking.reference)
    )
}

/// A reference as part of a file name: letters, digits and dashes only.
fn file_safe(reference: &str) -> String {
    let s: String = reference
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    if s.is_empty() {
        "booking".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use tessera_core::money::{Currency, Money};
    use uuid::Uuid;

    fn booking(language: Language) -> Booking {
        let eur = |a| Money::new(a, Currency::new("EUR").unwrap());
        let starts_at: Timestamp = "2026-12-12T09:00:00Z".parse().unwrap();
        let ticket = |state, price| BookingTicket {
            ticket_id: Uuid::now_v7(),
            product_id: "adult".into(),
            product_name: "Adulte".into(),
            admits: 1,
            price: eur(price),
            code: "ABCDEF234567".into(),
            state,
        };
        Booking {
            order_id: Uuid::now_v7(),
            reference: "TSR-1".into(),
            museum: "Musée des Tessères".into(),
            time_zone: "Europe/Paris".into(),
            language,
            name: "Zoé".into(),
            email: "zoe@example.org".into(),
            channel: "web".into(),
            slot_id: "2026-12-12T10:00".parse().unwrap(),
            starts_at,
            ends_at: starts_at + jiff::SignedDuration::from_mins(30),
            total: eur(3000),
            refunded: eur(1500),
            created_at: starts_at,
            cancellable_until: starts_at,
            tickets: vec![
                ticket(TicketState::Valid, 1500),
                ticket(TicketState::Cancelled, 1500),
            ],
        }
    }

    fn subject(kind: MailKind, language: Language) -> String {
        let payload = MailPayload {
            booking: Some(booking(language)),
            offer: None,
            refund: None,
            link: "https://t.example/booking/T".into(),
        };
        let museum = Museum {
            name: "Musée des Tessères".into(),
            time_zone: "Europe/Paris".into(),
        };
        compose(kind, "zoe@example.org", &payload, &museum, "a@example.org")
            .unwrap()
            .subject
    }

    #[test]
    fn each_kind_has_its_subject_in_each_language() {
        use Language::{En, Fr};
        use MailKind::*;
        let cases = [
            (
                BookingConfirmed,
                Fr,
                "Vos billets pour Musée des Tessères — samedi 12 décembre 2026 à 10:00",
            ),
            (
                Resend,
                En,
                "Your tickets for Musée des Tessères — Saturday 12 December 2026 at 10:00",
            ),
            (
                TicketsCancelled,
                Fr,
                "Billets annulés — Musée des Tessères, samedi 12 décembre 2026",
            ),
            (
                TicketsCancelled,
                En,
                "Tickets cancelled — Musée des Tessères, Saturday 12 December 2026",
            ),
            (
                RefundIssued,
                Fr,
                "Remboursement de 15,00\u{a0}€ — Musée des Tessères",
            ),
            (RefundIssued, En, "Refund of €15.00 — Musée des Tessères"),
        ];
        for (kind, language, expected) in cases {
            assert_eq!(subject(kind, language), expected, "{kind:?} {language:?}");
        }
        // A payment that bought nothing: told why, in the visitor's language.
        for (language, subject, why) in [
            (
                Fr,
                "Votre paiement de 30,00\u{a0}€ vous est remboursé — Musée des Tessères",
                "est arrivé après le départ des dernières places",
            ),
            (
                En,
                "Your payment of €30.00 is being refunded — Musée des Tessères",
                "arrived after the last places had gone",
            ),
        ] {
            let payload = MailPayload {
                refund: Some(RefundNotice {
                    language,
                    slot_id: "2026-12-12T10:00".parse().unwrap(),
                    amount: Money::new(3000, Currency::new("EUR").unwrap()),
                    reason: "no_places".into(),
                }),
                link: "https://t.example/".into(),
                ..MailPayload::default()
            };
            let museum = Museum {
                name: "Musée des Tessères".into(),
                time_zone: "Europe/Paris".into(),
            };
            let mail = compose(
                PaymentRefunded,
                "zoe@example.org",
                &payload,
                &museum,
                "a@example.org",
            )
            .unwrap();
            assert_eq!(mail.subject, subject);
            let (_, said) = refund_words(payload.refund.as_ref().unwrap(), &museum.name);
            assert!(said.contains(why), "{said}");
            assert!(said.contains("12"), "the entry time's date: {said}");
            assert!(parse_payload(PaymentRefunded, r#"{"link":"x"}"#).is_err());
        }
        // A booking is not an offer: refused, not sent half-made.
        let payload = MailPayload {
            booking: Some(booking(Fr)),
            offer: None,
            refund: None,
            link: "x".into(),
        };
        let museum = Museum {
            name: "M".into(),
            time_zone: "UTC".into(),
        };
        assert!(compose(
            WaitlistOffer,
            "zoe@example.org",
            &payload,
            &museum,
            "a@example.org"
        )
        .is_err());
        assert!(matches!(
            compose(BookingConfirmed, "zoe@", &payload, &museum, "a@example.org"),
            Err(ComposeError::Address(_))
        ));
    }

    #[test]
    fn html_escapes_what_markup_reserves() {
        assert_eq!(
            html_escape("<b>\"Tom\" & 'Jerry'</b>"),
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn payloads_of_the_wrong_shape_are_refused() {
        assert!(parse_payload(MailKind::BookingConfirmed, "{not json").is_err());
        assert!(parse_payload(MailKind::BookingConfirmed, r#"{"link":"x"}"#).is_err());
        assert!(parse_payload(MailKind::WaitlistOffer, r#"{"link":"x"}"#).is_err());
    }
}
