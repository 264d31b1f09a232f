//! What tickets, calendar entries and emails say, in French and English:
//! dates, times and prices formatted for the language, and every sentence.
//!
//! Dates are formatted from two small tables of day and month names rather
//! than a locale crate: two languages need fourteen names each, and the
//! locale crates (ICU4X and friends) bring megabytes of data and build time
//! for what jiff plus these tables already do exactly.

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use tessera_core::api::shop::Language;
use tessera_core::money::Money;

const DAYS_FR: [&str; 7] = [
    "lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche",
];
const DAYS_EN: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS_FR: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];
const MONTHS_EN: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A no-break space: keeps "15,00 €" and "1 250" on one line. (Browsers'
/// `Intl` uses a narrow one, U+202F, which the PDF's built-in fonts lack.)
pub const NBSP: char = '\u{a0}';

fn weekday_index(day: Weekday) -> usize {
    day.to_monday_zero_offset() as usize
}

/// "samedi 12 décembre 2026" / "Saturday 12 December 2026".
pub fn date(language: Language, date: Date) -> String {
    let day = weekday_index(date.weekday());
    let month = (date.month() - 1) as usize;
    match language {
        Language::Fr => {
            // French writes the first of the month as an ordinal: "1er".
            let n = if date.day() == 1 {
                "1er".to_string()
            } else {
                date.day().to_string()
            };
            format!("{} {n} {} {}", DAYS_FR[day], MONTHS_FR[month], date.year())
        }
        Language::En => format!(
            "{} {} {} {}",
            DAYS_EN[day],
            date.day(),
            MONTHS_EN[month],
            date.year()
        ),
    }
}

/// 24-hour "14:30" in both languages (what `Intl` gives for fr-FR and en-GB).
pub fn time_of(ts: Timestamp, tz: &TimeZone) -> String {
    let t = ts.to_zoned(tz.clone()).time();
    format!("{:02}:{:02}", t.hour(), t.minute())
}

pub fn date_of(language: Language, ts: Timestamp, tz: &TimeZone) -> String {
    date(language, ts.to_zoned(tz.clone()).date())
}

/// The museum's zone, or UTC if the name is unknown (a booking always
/// carries a name its catalogue validated; UTC keeps a bad one readable).
pub fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or(TimeZone::UTC)
}

fn currency_symbol(code: &str) -> Option<&'static str> {
    match code {
        "EUR" => Some("€"),
        "GBP" => Some("£"),
        "USD" => Some("$"),
        _ => None,
    }
}

fn group_thousands(mut whole: u64, separator: char) -> String {
    let mut groups = Vec::new();
    loop {
        groups.push(whole % 1000);
        whole /= 1000;
        if whole == 0 {
            break;
        }
    }
    let mut out = String::new();
    for (i, g) in groups.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&g.to_string());
        } else {
            out.push(separator);
            out.push_str(&format!("{g:03}"));
        }
    }
    out
}

/// "1 250,00 €" / "€1,250.00"; a currency without a symbol is written by its
/// code ("15,00 CHF", "CHF 15.00").
pub fn money(language: Language, m: Money) -> String {
    let sign = if m.amount < 0 { "-" } else { "" };
    let abs = m.amount.unsigned_abs();
    let code = m.currency.as_str();
    match language {
        Language::Fr => {
            let number = format!("{},{:02}", group_thousands(abs / 100, NBSP), abs % 100);
            let unit = currency_symbol(code).unwrap_or(code);
            format!("{sign}{number}{NBSP}{unit}")
        }
        Language::En => {
            let number = format!("{}.{:02}", group_thousands(abs / 100, ','), abs % 100);
            match currency_symbol(code) {
                Some(symbol) => format!("{sign}{symbol}{number}"),
                None => format!("{sign}{code}{NBSP}{number}"),
            }
        }
    }
}

/// The kinds of mail the outbox carries (`mail_outbox.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailKind {
    BookingConfirmed,
    /// The visitor asked for their tickets again: the confirmation, resent.
    Resend,
    TicketsCancelled,
    RefundIssued,
    WaitlistOffer,
    /// A payment that bought nothing (it came after the places were gone,
    /// or twice): no booking exists, the money is on its way back.
    PaymentRefunded,
}

impl MailKind {
    pub fn parse(kind: &str) -> Option<MailKind> {
        Some(match kind {
            "booking_confirmed" => MailKind::BookingConfirmed,
            "resend" => MailKind::Resend,
            "tickets_cancelled" => MailKind::TicketsCancelled,
            "refund_issued" => MailKind::RefundIssued,
            "waitlist_offer" => MailKind::WaitlistOffer,
            "payment_refunded" => MailKind::PaymentRefunded,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::BookingConfirmed => "booking_confirmed",
            MailKind::Resend => "resend",
            MailKind::TicketsCancelled => "tickets_cancelled",
            MailKind::RefundIssued => "refund_issued",
            MailKind::WaitlistOffer => "waitlist_offer",
            MailKind::PaymentRefunded => "payment_refunded",
        }
    }
}

/// Every sentence, per language. Placeholders are filled by the callers.
pub struct Words {
    pub ticket: &'static str,
    pub entry_between: &'static str,
    pub and: &'static str,
    pub admits_one: &'static str,
    pub admits_many: &'static str,
    pub name: &'static str,
    pub reference: &'static str,
    pub price: &'static str,
    pub total: &'static str,
    pub refunded: &'static str,
    pub used: &'static str,
    pub cancelled: &'static str,
    pub show_at_entry: &'static str,
    pub no_valid_ticket: &'static str,
    pub page_of: &'static str,
    pub hello: &'static str,
    pub confirmed_intro: &'static str,
    pub cancelled_intro: &'static str,
    pub refund_intro: &'static str,
    pub offer_intro: &'static str,
    pub offer_until: &'static str,
    pub offer_party: &'static str,
    pub offer_action: &'static str,
    pub my_booking: &'static str,
    pub my_booking_hint: &'static str,
    pub cancellable_until: &'static str,
    pub attachments: &'static str,
    pub subject_confirmed: &'static str,
    pub subject_cancelled: &'static str,
    pub subject_refund: &'static str,
    pub subject_offer: &'static str,
    pub subject_payment_refunded: &'static str,
    pub payment_refunded_no_places: &'static str,
    pub payment_refunded_other: &'static str,
    pub payment_refunded_after: &'static str,
    pub shop_again: &'static str,
    pub calendar_summary: &'static str,
    pub calendar_link: &'static str,
    pub tickets_file: &'static str,
}

const FR: Words = Words {
    ticket: "Billet",
    entry_between: "Entrée entre",
    and: "et",
    admits_one: "1 personne",
    admits_many: "{n} personnes",
    name: "Au nom de",
    reference: "Réservation",
    price: "Prix",
    total: "Total",
    refunded: "Remboursé",
    used: "UTILISÉ",
    cancelled: "ANNULÉ",
    show_at_entry: "Présentez ce code à l'entrée, sur papier ou sur votre téléphone. Il n'est valable qu'une fois.",
    no_valid_ticket: "Cette réservation n'a plus de billet valable.",
    page_of: "{i} sur {n}",
    hello: "Bonjour {name},",
    confirmed_intro: "Votre réservation est confirmée. Vos billets sont ci-dessous et dans le PDF joint.",
    cancelled_intro: "Les billets suivants ont été annulés ; les portes d'entrée les refuseront.",
    refund_intro: "Nous vous avons remboursé {amount}. Le délai d'apparition sur votre compte dépend de votre banque.",
    offer_intro: "Des places se sont libérées pour le créneau que vous attendiez.",
    offer_until: "Elles vous sont réservées jusqu'à {time} ({date}).",
    offer_party: "Places réservées : {n}",
    offer_action: "Choisir mes billets",
    my_booking: "Ma réservation",
    my_booking_hint: "Retrouvez vos billets, renvoyez ce message ou annulez depuis ce lien personnel (ne le partagez pas) :",
    cancellable_until: "Annulable jusqu'au {date} à {time}.",
    attachments: "Pièces jointes : vos billets (PDF) et l'entrée pour votre agenda (.ics).",
    subject_confirmed: "Vos billets pour {museum} — {date} à {time}",
    subject_cancelled: "Billets annulés — {museum}, {date}",
    subject_refund: "Remboursement de {amount} — {museum}",
    subject_offer: "Des places pour vous — {museum}, {date} à {time}",
    subject_payment_refunded: "Votre paiement de {amount} vous est remboursé — {museum}",
    payment_refunded_no_places: "Votre paiement de {amount} pour le {date} à {time} est arrivé après le départ des dernières places. Aucun billet n'a été émis.",
    payment_refunded_other: "Votre paiement de {amount} pour le {date} à {time} n'a pas pu servir à une réservation. Aucun billet n'a été émis pour lui.",
    payment_refunded_after: "La somme entière vous est remboursée ; le délai d'apparition sur votre compte dépend de votre banque.",
    shop_again: "Choisir un autre horaire",
    calendar_summary: "Visite : {museum}",
    calendar_link: "Vos billets",
    tickets_file: "billets",
};

const EN: Words = Words {
    ticket: "Ticket",
    entry_between: "Entry between",
    and: "and",
    admits_one: "1 person",
    admits_many: "{n} people",
    name: "Name",
    reference: "Booking",
    price: "Price",
    total: "Total",
    refunded: "Refunded",
    used: "USED",
    cancelled: "CANCELLED",
    show_at_entry: "Show this code at the entrance, printed or on your phone. It is valid once.",
    no_valid_ticket: "This booking has no valid ticket left.",
    page_of: "{i} of {n}",
    hello: "Hello {name},",
    confirmed_intro: "Your booking is confirmed. Your tickets are below and in the attached PDF.",
    cancelled_intro:
        "The following tickets have been cancelled; the entrance gates will refuse them.",
    refund_intro: "We have refunded {amount}. When it shows on your account depends on your bank.",
    offer_intro: "Places have come free for the entry time you were waiting for.",
    offer_until: "They are held for you until {time} ({date}).",
    offer_party: "Places held: {n}",
    offer_action: "Choose my tickets",
    my_booking: "My booking",
    my_booking_hint:
        "See your tickets, resend this email or cancel from your personal link (do not share it):",
    cancellable_until: "Cancellable until {date}, {time}.",
    attachments: "Attached: your tickets (PDF) and a calendar entry (.ics).",
    subject_confirmed: "Your tickets for {museum} — {date} at {time}",
    subject_cancelled: "Tickets cancelled — {museum}, {date}",
    subject_refund: "Refund of {amount} — {museum}",
    subject_offer: "Places for you — {museum}, {date} at {time}",
    subject_payment_refunded: "Your payment of {amount} is being refunded — {museum}",
    payment_refunded_no_places: "Your payment of {amount} for {date} at {time} arrived after the last places had gone. No tickets were issued.",
    payment_refunded_other: "Your payment of {amount} for {date} at {time} could not be used for a booking. No tickets were issued for it.",
    payment_refunded_after: "The full amount is being refunded to you; when it shows on your account depends on your bank.",
    shop_again: "Choose another time",
    calendar_summary: "Visit: {museum}",
    calendar_link: "Your tickets",
    tickets_file: "tickets",
};

pub fn words(language: Language) -> &'static Words {
    match language {
        Language::Fr => &FR,
        Language::En => &EN,
    }
}

/// Fills `{key}` placeholders. Values are inserted as given (escaping, if
/// any, is the caller's, done once on the finished text).
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in values {
        out = out.replace(&format!("{{{key}}}"), value);
    }
    out
}

/// "Réservation : ABC" / "Booking: ABC" (French puts a no-break space
/// before the colon).
pub fn labelled(language: Language, label: &str, value: &str) -> String {
    match language {
        Language::Fr => format!("{label}{NBSP}: {value}"),
        Language::En => format!("{label}: {value}"),
    }
}

pub fn admits(language: Language, n: u32) -> String {
    let w = words(language);
    if n == 1 {
        w.admits_one.to_string()
    } else {
        fill(w.admits_many, &[("n", &n.to_string())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::money::Currency;

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::new("EUR").unwrap())
    }

    #[test]
    fn prices_read_as_each_language_writes_them() {
        assert_eq!(money(Language::Fr, eur(1500)), "15,00\u{a0}€");
        assert_eq!(money(Language::En, eur(1500)), "€15.00");
        assert_eq!(money(Language::Fr, eur(125_005)), "1\u{a0}250,05\u{a0}€");
        assert_eq!(money(Language::En, eur(125_005)), "€1,250.05");
        assert_eq!(money(Language::En, eur(-250)), "-€2.50");
        assert_eq!(money(Language::En, eur(0)), "€0.00");
        let chf = Money::new(990, Currency::new("CHF").unwrap());
        assert_eq!(money(Language::Fr, chf), "9,90\u{a0}CHF");
        assert_eq!(money(Language::En, chf), "CHF\u{a0}9.90");
    }

    #[test]
    fn dates_name_the_day_and_month_in_the_language() {
        let d: Date = "2026-12-12".parse().unwrap();
        assert_eq!(date(Language::Fr, d), "samedi 12 décembre 2026");
        assert_eq!(date(Language::En, d), "Saturday 12 December 2026");
        let first: Date = "2026-08-01".parse().unwrap();
        assert_eq!(date(Language::Fr, first), "samedi 1er août 2026");
    }

    #[test]
    fn times_are_in_the_museums_zone_across_dst() {
        let paris = zone("Europe/Paris");
        let winter: Timestamp = "2026-12-12T09:30:00Z".parse().unwrap();
        let summer: Timestamp = "2026-07-11T09:30:00Z".parse().unwrap();
        assert_eq!(time_of(winter, &paris), "10:30");
        assert_eq!(time_of(summer, &paris), "11:30");
        assert_eq!(zone("Not/AZone"), TimeZone::UTC);
    }

    #[test]
    fn mail_kinds_round_trip() {
        for kind in [
            MailKind::BookingConfirmed,
            MailKind::Resend,
            MailKind::TicketsCancelled,
            MailKind::RefundIssued,
            MailKind::WaitlistOffer,
        ] {
            assert_eq!(MailKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(MailKind::parse("spam"), None);
    }
}
