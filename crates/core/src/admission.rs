//! Entry rules at the gate, shared by the server's online redeem and the
//! terminal's offline gate so both answer the same ticket the same way.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::SlotId;

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
}
