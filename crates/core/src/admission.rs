//! Entry rules at the gate, shared by the server's online redeem and the
//! terminal's offline gate so both answer the same ticket the same way; and
//! how the server reads an offline gate's clock when its scans arrive.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::catalogue::Catalogue;
use crate::ticket_code::{CodeError, TicketClaims};

/// Why a gate turned a visitor away, in the words the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DenyReason {
    Invalid,
    AlreadyUsed,
    WrongDay,
    TooEarly,
    TooLate,
    Voided,
    RevokedKey,
    /// Signed by a real key, but naming a product, an admission count or an
    /// entry window the museum's catalogue does not have.
    NotInCatalogue,
}

impl DenyReason {
    /// What the attendant reads on the gate screen.
    pub fn explain(self) -> &'static str {
        match self {
            DenyReason::Invalid => "Not a valid ticket: unreadable, altered or forged",
            DenyReason::AlreadyUsed => "Already used",
            DenyReason::WrongDay => "Ticket is for another day",
            DenyReason::TooEarly => "Too early for this ticket's entry time",
            DenyReason::TooLate => "Entry time for this ticket has passed",
            DenyReason::Voided => "Ticket was cancelled (sale voided or refunded)",
            DenyReason::RevokedKey => "Ticket was issued by a device that has been revoked",
            DenyReason::NotInCatalogue => {
                "Ticket does not match the museum's catalogue (product, admissions or entry window)"
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Invalid => "invalid",
            DenyReason::AlreadyUsed => "already_used",
            DenyReason::WrongDay => "wrong_day",
            DenyReason::TooEarly => "too_early",
            DenyReason::TooLate => "too_late",
            DenyReason::Voided => "voided",
            DenyReason::RevokedKey => "revoked_key",
            DenyReason::NotInCatalogue => "not_in_catalogue",
        }
    }

    pub fn from_code_error(e: &CodeError) -> DenyReason {
        match e {
            CodeError::RevokedKey(_) => DenyReason::RevokedKey,
            _ => DenyReason::Invalid,
        }
    }
}

/// How far from its window a ticket still gets in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EntryPolicy {
    /// Minutes before the window opens that a visitor may already enter.
    pub early_minutes: u16,
    /// Minutes after the window closes that a late visitor still enters.
    pub late_minutes: u16,
}

impl Default for EntryPolicy {
    fn default() -> Self {
        // A visitor 15 minutes early is waved in; one who missed the window by
        // up to an hour too (museums rarely turn away a paid late visitor).
        EntryPolicy {
            early_minutes: 15,
            late_minutes: 60,
        }
    }
}

/// How a signed code disagrees with the catalogue. A valid signature only
/// says which device vouched for the claims; a counter's key (or a stolen
/// counter) could sign anything, so the claims are held against what the
/// museum actually sells.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueMismatch {
    #[error("product {0:?} is not in the museum's catalogue")]
    UnknownProduct(String),
    #[error("ticket claims {claimed} admissions, but {product:?} admits {admits}")]
    Admits {
        product: String,
        claimed: u8,
        admits: u8,
    },
    #[error("there is no entry at {slot} on the museum's schedule")]
    NoSuchSlot { slot: String },
    #[error("ticket claims a {claimed}-minute entry window, but {slot} is a {window}-minute slot")]
    Window {
        slot: String,
        claimed: u16,
        window: u16,
    },
}

/// Checks a code's product, admissions and entry window against the catalogue.
pub fn check_claims(claims: &TicketClaims, catalogue: &Catalogue) -> Result<(), CatalogueMismatch> {
    let product = catalogue
        .product(&claims.product_id)
        .ok_or_else(|| CatalogueMismatch::UnknownProduct(claims.product_id.clone()))?;
    if product.admits != claims.admits {
        return Err(CatalogueMismatch::Admits {
            product: product.id.clone(),
            claimed: claims.admits,
            admits: product.admits,
        });
    }
    // A schedule that cannot be read has no slot to match.
    let slots = catalogue.slots_on(claims.slot.date).unwrap_or_default();
    let slot = slots.iter().find(|s| s.id == claims.slot).ok_or_else(|| {
        CatalogueMismatch::NoSuchSlot {
            slot: claims.slot.to_string(),
        }
    })?;
    if slot.window_minutes != claims.window_minutes {
        return Err(CatalogueMismatch::Window {
            slot: claims.slot.to_string(),
            claimed: claims.window_minutes,
            window: slot.window_minutes,
        });
    }
    Ok(())
}

/// A gate's refusal: the reason code and the words for the attendant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: DenyReason,
    pub message: String,
}

impl Refusal {
    fn plain(reason: DenyReason) -> Refusal {
        Refusal {
            reason,
            message: reason.explain().to_string(),
        }
    }
}

/// Everything a gate decides about a verified code before looking at who
/// already used it, in one order for the server and the offline gate: is it
/// a ticket the museum sells, was it voided, and is this its day and window.
///
/// `voided` comes before the day and window: a cancelled ticket is refused as
/// cancelled whatever time it is scanned, or the visitor would be told to come
/// back later with a ticket that will never get in.
pub fn decide(
    claims: &TicketClaims,
    catalogue: &Catalogue,
    voided: bool,
    tz: &TimeZone,
    now: Timestamp,
    policy: EntryPolicy,
) -> Result<(), Refusal> {
    check_claims(claims, catalogue).map_err(|e| Refusal {
        reason: DenyReason::NotInCatalogue,
        message: format!("{}: {e}", DenyReason::NotInCatalogue.explain()),
    })?;
    if voided {
        return Err(Refusal::plain(DenyReason::Voided));
    }
    check_entry(claims, tz, now, policy).map_err(|reason| Refusal {
        reason,
        message: format!(
            "{} (entry {} on {})",
            reason.explain(),
            claims.slot.hhmm(),
            claims.slot.date
        ),
    })
}

/// Is `now` a time this ticket may enter? Checks the day, then the window.
pub fn check_entry(
    claims: &TicketClaims,
    tz: &TimeZone,
    now: Timestamp,
    policy: EntryPolicy,
) -> Result<(), DenyReason> {
    let today = now.to_zoned(tz.clone()).date();
    if today != claims.slot.date {
        return Err(DenyReason::WrongDay);
    }
    // A window running past the end of the day (a 24-hour claim) cannot be
    // computed, let alone honoured.
    if claims
        .slot
        .start_minute
        .checked_add(claims.window_minutes)
        .is_none()
    {
        return Err(DenyReason::Invalid);
    }
    let starts = claims.slot.starts_at(tz).map_err(|_| DenyReason::Invalid)?;
    let ends = claims
        .slot
        .ends_at(claims.window_minutes, tz)
        .map_err(|_| DenyReason::Invalid)?;
    let early = SignedDuration::from_mins(i64::from(policy.early_minutes));
    let late = SignedDuration::from_mins(i64::from(policy.late_minutes));
    if now < starts - early {
        return Err(DenyReason::TooEarly);
    }
    if now > ends + late {
        return Err(DenyReason::TooLate);
    }
    Ok(())
}

/// A measured clock difference smaller than this is the request's own
/// travel time, not the gate's clock error, and is not corrected for.
pub const SKEW_NOISE_MS: i64 = 2_000;

/// How far an offline gate's clock is ahead of the server's (behind if
/// negative), measured from the time the gate says it sent its upload
/// (`sent_at_ms`, its own clock) and the time the server received it
/// (`received_at_ms`). No `sent_at`, or a difference within
/// [`SKEW_NOISE_MS`] (the request's travel time), is no error: 0.
///
/// Both times come from outside; the arithmetic saturates, never overflows.
pub fn clock_skew_ms(sent_at_ms: Option<i64>, received_at_ms: i64) -> i64 {
    sent_at_ms
        .map(|t| t.saturating_sub(received_at_ms))
        .filter(|s| s.unsigned_abs() > SKEW_NOISE_MS.unsigned_abs())
        .unwrap_or(0)
}

/// When an offline scan happened by the server's clock: the gate's reading
/// (`device_at_ms`) corrected by its clock error ([`clock_skew_ms`]), and
/// never after the server received it (a gate behind the server would
/// otherwise put a scan in the future).
pub fn scan_time_ms(device_at_ms: i64, skew_ms: i64, received_at_ms: i64) -> i64 {
    device_at_ms.saturating_sub(skew_ms).min(received_at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::SlotId;
    use proptest::prelude::*;

    fn demo() -> Catalogue {
        let text = include_str!("../../../fixtures/demo-museum.toml");
        crate::fixture::parse_fixture(text).expect("fixture").0
    }

    fn claims(slot: &str) -> TicketClaims {
        TicketClaims {
            key_id: 1,
            ticket_id: uuid::Uuid::nil(),
            slot: slot.parse::<SlotId>().unwrap(),
            window_minutes: 30,
            admits: 1,
            product_id: "adult".into(),
        }
    }

    #[test]
    fn no_sent_at_is_no_skew() {
        assert_eq!(clock_skew_ms(None, 1_000_000), 0);
    }

    #[test]
    fn skew_within_the_noise_is_travel_time() {
        let received = 1_000_000;
        for d in [0, 1, -1, SKEW_NOISE_MS, -SKEW_NOISE_MS] {
            assert_eq!(clock_skew_ms(Some(received + d), received), 0, "{d}");
        }
        assert_eq!(
            clock_skew_ms(Some(received + SKEW_NOISE_MS + 1), received),
            SKEW_NOISE_MS + 1
        );
    }

    #[test]
    fn a_gate_ahead_has_its_scans_moved_back() {
        let received = 10_000_000;
        // The gate's clock is a minute ahead.
        let skew = clock_skew_ms(Some(received + 60_000), received);
        assert_eq!(skew, 60_000);
        // It scanned five minutes before it sent, by its own clock.
        let device_at = received + 60_000 - 300_000;
        assert_eq!(scan_time_ms(device_at, skew, received), received - 300_000);
    }

    #[test]
    fn a_gate_behind_has_its_scans_moved_forward_but_never_after_receipt() {
        let received = 10_000_000;
        // The gate's clock is a minute behind.
        let skew = clock_skew_ms(Some(received - 60_000), received);
        assert_eq!(skew, -60_000);
        let device_at = received - 60_000 - 300_000;
        assert_eq!(scan_time_ms(device_at, skew, received), received - 300_000);
        // A scan it dates after its own `sent_at` still happened before we
        // received it.
        assert_eq!(scan_time_ms(received, skew, received), received);
        // With no skew measured, a scan dated in the future is capped too.
        assert_eq!(scan_time_ms(received + 5_000, 0, received), received);
    }

    #[test]
    fn skew_and_scan_time_saturate_on_hostile_input() {
        assert_eq!(clock_skew_ms(Some(i64::MAX), i64::MIN), i64::MAX);
        assert_eq!(clock_skew_ms(Some(i64::MIN), i64::MAX), i64::MIN);
        assert_eq!(clock_skew_ms(Some(i64::MIN), 1), i64::MIN);
        assert_eq!(scan_time_ms(i64::MIN, i64::MAX, 0), i64::MIN);
        assert_eq!(scan_time_ms(i64::MAX, i64::MIN, 0), 0);
        assert_eq!(scan_time_ms(0, i64::MIN, i64::MAX), i64::MAX);
        assert_eq!(scan_time_ms(i64::MIN, i64::MIN, i64::MIN), i64::MIN);
    }

    proptest! {
        #[test]
        fn a_scan_is_never_after_its_receipt(
            sent in proptest::option::of(any::<i64>()),
            device_at in any::<i64>(),
            received in any::<i64>(),
        ) {
            let skew = clock_skew_ms(sent, received);
            prop_assert!(skew == 0 || skew.unsigned_abs() > SKEW_NOISE_MS.unsigned_abs());
            prop_assert!(scan_time_ms(device_at, skew, received) <= received);
        }
    }

    #[test]
    fn entry_window_with_tolerance() {
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let c = claims("2026-12-02T14:00");
        let at = |s: &str| -> Timestamp { s.parse().unwrap() };
        let p = EntryPolicy::default();
        // 14:00 Paris is 13:00Z in winter.
        assert_eq!(check_entry(&c, &tz, at("2026-12-02T13:10:00Z"), p), Ok(()));
        assert_eq!(check_entry(&c, &tz, at("2026-12-02T12:50:00Z"), p), Ok(()));
        assert_eq!(
            check_entry(&c, &tz, at("2026-12-02T12:40:00Z"), p),
            Err(DenyReason::TooEarly)
        );
        assert_eq!(check_entry(&c, &tz, at("2026-12-02T14:20:00Z"), p), Ok(()));
        assert_eq!(
            check_entry(&c, &tz, at("2026-12-02T14:31:00Z"), p),
            Err(DenyReason::TooLate)
        );
        assert_eq!(
            check_entry(&c, &tz, at("2026-12-03T13:10:00Z"), p),
            Err(DenyReason::WrongDay)
        );
        // 23:30Z on the 1st is already the 2nd in Paris, but 14:00 is far away.
        assert_eq!(
            check_entry(&c, &tz, at("2026-12-01T23:30:00Z"), p),
            Err(DenyReason::TooEarly)
        );
    }

    // 2026-12-02 is a Wednesday: the demo museum opens 10:00-18:00.
    #[test]
    fn a_voided_ticket_is_refused_as_voided_at_any_hour() {
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let c = claims("2026-12-02T16:00");
        let p = EntryPolicy::default();
        let morning: Timestamp = "2026-12-02T09:10:00Z".parse().unwrap();
        assert_eq!(
            decide(&c, &demo(), false, &tz, morning, p).map_err(|r| r.reason),
            Err(DenyReason::TooEarly)
        );
        assert_eq!(
            decide(&c, &demo(), true, &tz, morning, p).map_err(|r| r.reason),
            Err(DenyReason::Voided)
        );
        let tomorrow: Timestamp = "2026-12-03T15:10:00Z".parse().unwrap();
        assert_eq!(
            decide(&c, &demo(), true, &tz, tomorrow, p).map_err(|r| r.reason),
            Err(DenyReason::Voided)
        );
        let on_time: Timestamp = "2026-12-02T15:05:00Z".parse().unwrap();
        assert_eq!(decide(&c, &demo(), false, &tz, on_time, p), Ok(()));
    }

    #[test]
    fn claims_the_catalogue_does_not_have_are_refused_with_the_reason() {
        let catalogue = demo();
        let good = claims("2026-12-02T11:00");
        assert_eq!(check_claims(&good, &catalogue), Ok(()));

        let mut many = good.clone();
        many.admits = 255;
        let e = check_claims(&many, &catalogue).unwrap_err();
        assert!(matches!(
            e,
            CatalogueMismatch::Admits {
                claimed: 255,
                admits: 1,
                ..
            }
        ));
        assert!(e.to_string().contains("255"), "{e}");

        let mut all_day = good.clone();
        all_day.window_minutes = 24 * 60;
        assert!(matches!(
            check_claims(&all_day, &catalogue),
            Err(CatalogueMismatch::Window {
                claimed: 1440,
                window: 30,
                ..
            })
        ));

        let mut ghost = good.clone();
        ghost.product_id = "vip-lounge".into();
        assert_eq!(
            check_claims(&ghost, &catalogue),
            Err(CatalogueMismatch::UnknownProduct("vip-lounge".into()))
        );

        // 03:00 is not an entry time of the demo museum.
        let night = claims("2026-12-02T03:00");
        assert!(matches!(
            check_claims(&night, &catalogue),
            Err(CatalogueMismatch::NoSuchSlot { .. })
        ));

        let tz = TimeZone::get("Europe/Paris").unwrap();
        let at: Timestamp = "2026-12-02T10:05:00Z".parse().unwrap();
        let refusal =
            decide(&many, &catalogue, false, &tz, at, EntryPolicy::default()).unwrap_err();
        assert_eq!(refusal.reason, DenyReason::NotInCatalogue);
        assert!(refusal.message.contains("255"), "{}", refusal.message);
    }

    proptest! {
        // Whatever a signer claims, deciding never panics (a 24-hour window
        // once overflowed the window arithmetic).
        #[test]
        fn deciding_never_panics(
            start in 0u16..1440,
            window in any::<u16>(),
            admits in any::<u8>(),
            voided in any::<bool>(),
            secs in 1_700_000_000i64..1_900_000_000,
        ) {
            let tz = TimeZone::get("Europe/Paris").unwrap();
            let mut c = claims("2026-12-02T10:00");
            c.slot = SlotId::new(c.slot.date, start).unwrap();
            c.window_minutes = window;
            c.admits = admits;
            let now = Timestamp::from_second(secs).unwrap();
            let _ = check_entry(&c, &tz, now, EntryPolicy::default());
            let _ = decide(&c, &demo(), voided, &tz, now, EntryPolicy::default());
        }
    }
}
