//! The visitors' web shop: what its pages ask the server and what they get
//! back — the calendar, checkout and payment, "my booking" and the waiting
//! list. The shop is a client of these types like any partner site.

use jiff::civil::Date;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::online::SlotAvailability;
use crate::money::Money;
use crate::pricing::CartLine;
use crate::slot::SlotId;

/// A language the shop, its emails and its PDFs speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Language {
    Fr,
    En,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::Fr, Language::En];

    pub fn code(self) -> &'static str {
        match self {
            Language::Fr => "fr",
            Language::En => "en",
        }
    }

    /// The language whose `code` this is exactly; `None` for any other text.
    pub fn from_code(code: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|l| l.code() == code)
    }

    /// A language as the backends store it (its `code`) with a booking, a
    /// payment or a waiting-list entry. Text that is none of ours (no
    /// language stored, or one since dropped) reads as French, the first
    /// the shop spoke: a mail in the wrong language beats no mail.
    pub fn from_stored(code: &str) -> Language {
        Language::from_code(code).unwrap_or(Language::Fr)
    }

    /// The best of our languages for an `Accept-Language` header, honouring
    /// its q-values; `None` when it names none of them.
    pub fn negotiate(accept_language: &str) -> Option<Language> {
        let mut best: Option<(u32, Language)> = None;
        for part in accept_language.split(',').take(32) {
            let mut fields = part.split(';');
            let tag = fields.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = fields
                .find_map(|f| f.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if !(0.0..=1.0).contains(&q) || q == 0.0 {
                continue;
            }
            let primary = tag.split('-').next().unwrap_or("");
            let Some(language) = Language::from_code(primary) else {
                continue;
            };
            // Thousandths: q-values have at most three decimals.
            let weight = (q * 1000.0).round() as u32;
            if best.is_none_or(|(w, _)| weight > w) {
                best = Some((weight, language));
            }
        }
        best.map(|(_, l)| l)
    }
}

/// What the shop needs to know before its first page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShopConfig {
    pub museum: String,
    /// IANA name, e.g. `Europe/Paris`: every date and time is shown in it.
    pub time_zone: String,
    pub currency: String,
    pub languages: Vec<Language>,
    /// The museum's own language.
    pub default_language: Language,
    /// Chosen from the request's `Accept-Language`, else the default.
    pub language: Language,
    /// How long a checkout holds its places.
    pub hold_seconds: u32,
    /// Tickets can be cancelled until this many hours before entry.
    pub cancel_deadline_hours: u32,
    /// `demo` (no money moves) or a real provider's name, e.g. `stripe`.
    pub payment_provider: String,
    /// Days ahead that can be booked.
    pub booking_horizon_days: u32,
    /// The server's clock when it answered: the shop measures countdowns and
    /// deadlines against it rather than trusting the device's clock.
    pub now: Timestamp,
    /// High-demand sales: their days are booked through a waiting room.
    #[serde(default)]
    pub waiting_rooms: Vec<crate::api::queue::RoomInfo>,
}

/// One day of the shop's calendar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CalendarDay {
    pub date: Date,
    /// The museum is closed (weekly closing day or holiday).
    pub closed: bool,
    /// Places still bookable over the day's entry times not yet over.
    pub available: u32,
    pub capacity: u32,
    /// Open, but every entry time still to come is sold out.
    pub sold_out: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Calendar {
    pub days: Vec<CalendarDay>,
}

/// Entry times nearest to one that cannot take a party, nearest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nearest {
    pub slot_id: SlotId,
    pub admissions: u32,
    pub slots: Vec<SlotAvailability>,
}

/// The visitor's details, given at checkout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckoutRequest {
    pub name: String,
    pub email: String,
    pub language: Language,
    /// The visitor ticked "I accept the terms of sale"; refused unless true.
    pub accept_terms: bool,
}

/// A started payment: send the visitor to `redirect_url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkout {
    /// Unguessable; names the checkout on the return page.
    pub checkout_id: String,
    pub hold_id: Uuid,
    pub provider: String,
    pub redirect_url: String,
    pub total: Money,
    pub hold_expires_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CheckoutState {
    /// No verified payment yet.
    AwaitingPayment,
    /// Paid and ticketed: `booking_token` opens "my booking".
    Confirmed,
    /// Paid after the places were gone: the payment is being, or was, refunded.
    Refunded,
    /// The visitor abandoned or the provider refused the payment.
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckoutStatus {
    pub checkout_id: String,
    pub state: CheckoutState,
    pub booking_token: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TicketState {
    Valid,
    /// Admitted at a gate.
    Used,
    /// Cancelled by the visitor (refunded) or by the museum.
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BookingTicket {
    pub ticket_id: Uuid,
    pub product_id: String,
    /// The product's name as the catalogue gives it.
    pub product_name: String,
    pub admits: u8,
    /// Price of this one ticket, VAT included.
    pub price: Money,
    /// The signed code its QR holds.
    pub code: String,
    pub state: TicketState,
}

/// One order as "my booking" shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Booking {
    pub order_id: Uuid,
    /// Short reference a visitor can read out at the desk.
    pub reference: String,
    pub museum: String,
    pub time_zone: String,
    pub language: Language,
    pub name: String,
    pub email: String,
    /// `web` for the shop, else the trusted channel's name.
    pub channel: String,
    pub slot_id: SlotId,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub total: Money,
    pub refunded: Money,
    pub created_at: Timestamp,
    /// Tickets can be cancelled until then.
    pub cancellable_until: Timestamp,
    pub tickets: Vec<BookingTicket>,
}

/// Cancels some or all of a booking's tickets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelRequest {
    pub ticket_ids: Vec<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitlistRequest {
    pub slot_id: SlotId,
    pub email: String,
    /// Admissions the party needs.
    pub party: u32,
    pub language: Language,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitlistEntry {
    pub entry_id: Uuid,
    pub slot_id: SlotId,
    pub party: u32,
    /// 1 = first in line.
    pub position: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OfferState {
    /// Places are held for the visitor until `expires_at`.
    Open,
    /// Turned into a checkout.
    Taken,
    /// Not used in time; the places went to the next in line.
    Expired,
}

/// Places held for a visitor from the waiting list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Offer {
    pub slot_id: SlotId,
    pub party: u32,
    pub expires_at: Timestamp,
    pub state: OfferState,
    pub language: Language,
    pub email: String,
}

/// The tickets chosen for an offer's held places (at most `party` admissions).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OfferHoldRequest {
    pub items: Vec<CartLine>,
}

#[cfg(test)]
mod tests {
    use super::Language;

    #[test]
    fn a_stored_language_reads_back_and_anything_else_is_french() {
        for l in Language::ALL {
            assert_eq!(Language::from_code(l.code()), Some(l));
            assert_eq!(Language::from_stored(l.code()), l);
        }
        for other in ["", "EN", "de", "en-GB", " en"] {
            assert_eq!(Language::from_code(other), None, "{other:?}");
            assert_eq!(Language::from_stored(other), Language::Fr, "{other:?}");
        }
    }

    #[test]
    fn negotiates_the_language_a_browser_prefers() {
        assert_eq!(
            Language::negotiate("fr-FR,fr;q=0.9,en;q=0.8"),
            Some(Language::Fr)
        );
        assert_eq!(Language::negotiate("en-GB,en;q=0.9"), Some(Language::En));
        assert_eq!(
            Language::negotiate("de-DE,en;q=0.5,fr;q=0.7"),
            Some(Language::Fr)
        );
        assert_eq!(Language::negotiate("de, it"), None);
        assert_eq!(Language::negotiate("fr;q=0, en;q=0.1"), Some(Language::En));
        assert_eq!(Language::negotiate("é;q=x,,;;"), None);
        assert_eq!(Language::negotiate(""), None);
    }
}
