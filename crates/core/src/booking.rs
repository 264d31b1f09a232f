//! What a visitor may cancel from "my booking", until when, and what it
//! refunds. Pure: the server loads the order's tickets, asks here, and writes.
//!
//! Rules:
//! - Tickets can be cancelled until `deadline_hours` before the slot starts
//!   (the museum's `[shop] cancel_deadline_hours`), never after.
//! - Only valid tickets: one admitted at a gate (`used`) or already cancelled
//!   is refused by name, and so is an id that is not in the booking.
//! - Each cancelled ticket refunds its own price (VAT included): add-ons such
//!   as the audio-guide are tickets of their own and refund theirs.
//! - An add-on is never left alone: when a cancellation leaves no admission
//!   ticket standing (valid or used), the booking's remaining valid add-ons
//!   are cancelled and refunded with it, as they could not be sold alone.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use uuid::Uuid;

use crate::api::shop::TicketState;

/// One ticket of a booking, as the rule needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketFacts {
    pub ticket_id: Uuid,
    /// 0 for an add-on.
    pub admits: u8,
    /// VAT included, minor units.
    pub price: i64,
    pub state: TicketState,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    #[error("no tickets named: list the ticket ids to cancel")]
    Empty,
    #[error("tickets can be cancelled until {until}; that time has passed")]
    DeadlinePassed { until: Timestamp },
    #[error("ticket {0} is not part of this booking")]
    UnknownTicket(Uuid),
    #[error("ticket {0} is already cancelled")]
    AlreadyCancelled(Uuid),
    #[error("ticket {0} was already used at the entrance and cannot be cancelled")]
    TicketUsed(Uuid),
}

impl CancelError {
    /// The stable code an API answer carries.
    pub fn code(&self) -> &'static str {
        match self {
            CancelError::Empty => "empty",
            CancelError::DeadlinePassed { .. } => "cancel_deadline_passed",
            CancelError::UnknownTicket(_) => "unknown_ticket",
            CancelError::AlreadyCancelled(_) => "already_cancelled",
            CancelError::TicketUsed(_) => "ticket_used",
        }
    }
}

/// What a cancellation does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelPlan {
    /// Every ticket to cancel: those asked for, then add-ons that would be
    /// left alone, in the booking's order.
    pub tickets: Vec<Uuid>,
    /// Admissions (places) that go back on sale.
    pub admissions: u32,
    /// Money to give back, minor units.
    pub refund: i64,
}

/// The last moment tickets for a slot starting at `starts_at` can be cancelled.
pub fn cancellable_until(starts_at: Timestamp, deadline_hours: u32) -> Timestamp {
    let before = SignedDuration::from_hours(i64::from(deadline_hours));
    starts_at.checked_sub(before).unwrap_or(Timestamp::MIN)
}

/// Judges a request to cancel `requested` of `tickets` at `now`.
pub fn plan_cancel(
    tickets: &[TicketFacts],
    requested: &[Uuid],
    starts_at: Timestamp,
    deadline_hours: u32,
    now: Timestamp,
) -> Result<CancelPlan, CancelError> {
    if requested.is_empty() {
        return Err(CancelError::Empty);
    }
    // Asking twice for one ticket in one request is asking once.
    let wanted: BTreeSet<Uuid> = requested.iter().copied().collect();
    for id in requested {
        let Some(t) = tickets.iter().find(|t| t.ticket_id == *id) else {
            return Err(CancelError::UnknownTicket(*id));
        };
        match t.state {
            TicketState::Valid => {}
            TicketState::Cancelled => return Err(CancelError::AlreadyCancelled(*id)),
            TicketState::Used => return Err(CancelError::TicketUsed(*id)),
        }
    }
    // What was asked is judged first, so a visitor learns that a ticket is
    // not theirs, used or cancelled before being told it is too late.
    let until = cancellable_until(starts_at, deadline_hours);
    if now > until {
        return Err(CancelError::DeadlinePassed { until });
    }
    let admission_left = tickets.iter().any(|t| {
        t.admits > 0 && t.state != TicketState::Cancelled && !wanted.contains(&t.ticket_id)
    });
    let cancelled: Vec<&TicketFacts> = tickets
        .iter()
        .filter(|t| {
            wanted.contains(&t.ticket_id)
                || (!admission_left && t.admits == 0 && t.state == TicketState::Valid)
        })
        .collect();
    Ok(CancelPlan {
        tickets: cancelled.iter().map(|t| t.ticket_id).collect(),
        admissions: cancelled.iter().map(|t| u32::from(t.admits)).sum(),
        refund: cancelled.iter().map(|t| t.price).sum(),
    })
}

/// Resends of one booking's email per day: enough for a visitor, too few to
/// make the museum's mail server a spam cannon.
pub const RESENDS_PER_DAY: u32 = 5;

/// The window resends are counted over: the last 24 hours, not the calendar
/// day, so a visitor cannot send ten around midnight.
pub const RESEND_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// How long a paid checkout keeps its "my booking" token in clear for a
/// return page that has not polled yet. A visitor who never comes back has
/// the link in their email; the token need not sit in the database for ever.
pub const UNCLAIMED_TOKEN_MS: i64 = 3_600_000;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResendRefusal {
    #[error("this booking's email was sent again {sent} times today; try tomorrow")]
    TooMany { sent: u32 },
}

impl ResendRefusal {
    /// The stable code an API answer carries.
    pub fn code(&self) -> &'static str {
        match self {
            ResendRefusal::TooMany { .. } => "too_many_resends",
        }
    }
}

/// Since when resends count at `now_ms` (see [`RESEND_WINDOW_MS`]).
pub fn resend_window_start(now_ms: i64) -> i64 {
    now_ms.saturating_sub(RESEND_WINDOW_MS)
}

/// May a booking's email be sent again, `recent_sends` resends having been
/// queued since [`resend_window_start`]?
pub fn may_resend(recent_sends: u32) -> Result<(), ResendRefusal> {
    if recent_sends >= RESENDS_PER_DAY {
        return Err(ResendRefusal::TooMany { sent: recent_sends });
    }
    Ok(())
}

/// Tokens of checkouts paid (or, unpaid, created) at or before this instant
/// are forgotten at `now_ms` (see [`UNCLAIMED_TOKEN_MS`]).
pub fn unclaimed_tokens_before(now_ms: i64) -> i64 {
    now_ms.saturating_sub(UNCLAIMED_TOKEN_MS)
}

/// What "my booking" says of a ticket. Cancelled wins over used: a ticket
/// voided after it admitted someone must not read as still standing.
pub fn ticket_state(voided: bool, used: bool) -> TicketState {
    if voided {
        TicketState::Cancelled
    } else if used {
        TicketState::Used
    } else {
        TicketState::Valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn t(n: u8, admits: u8, price: i64, state: TicketState) -> TicketFacts {
        TicketFacts {
            ticket_id: id(n),
            admits,
            price,
            state,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Two adults at 15.00, a child free, two audio-guides at 5.00.
    fn booking() -> Vec<TicketFacts> {
        vec![
            t(1, 1, 1500, TicketState::Valid),
            t(2, 1, 1500, TicketState::Valid),
            t(3, 1, 0, TicketState::Valid),
            t(4, 0, 500, TicketState::Valid),
            t(5, 0, 500, TicketState::Valid),
        ]
    }

    const START: &str = "2026-12-09T09:00:00Z";

    #[test]
    fn the_deadline_is_counted_back_from_the_entry_time() {
        assert_eq!(cancellable_until(at(START), 24), at("2026-12-08T09:00:00Z"));
        let ok = plan_cancel(
            &booking(),
            &[id(1)],
            at(START),
            24,
            at("2026-12-08T09:00:00Z"),
        );
        assert!(ok.is_ok());
        let late = plan_cancel(
            &booking(),
            &[id(1)],
            at(START),
            24,
            at("2026-12-08T09:00:01Z"),
        );
        assert_eq!(
            late,
            Err(CancelError::DeadlinePassed {
                until: at("2026-12-08T09:00:00Z")
            })
        );
        assert_eq!(late.unwrap_err().code(), "cancel_deadline_passed");
    }

    #[test]
    fn one_ticket_refunds_its_own_price() {
        let plan = plan_cancel(
            &booking(),
            &[id(2), id(2)],
            at(START),
            24,
            at("2026-12-01T10:00:00Z"),
        )
        .unwrap();
        assert_eq!(plan.tickets, vec![id(2)]);
        assert_eq!(plan.admissions, 1);
        assert_eq!(plan.refund, 1500);
        // An add-on alone, while admissions stay: refunded, no place back.
        let plan = plan_cancel(
            &booking(),
            &[id(4)],
            at(START),
            24,
            at("2026-12-01T10:00:00Z"),
        )
        .unwrap();
        assert_eq!((plan.admissions, plan.refund), (0, 500));
    }

    #[test]
    fn cancelling_every_admission_takes_the_add_ons_with_it() {
        let plan = plan_cancel(
            &booking(),
            &[id(1), id(2), id(3)],
            at(START),
            24,
            at("2026-12-01T10:00:00Z"),
        )
        .unwrap();
        assert_eq!(plan.tickets, vec![id(1), id(2), id(3), id(4), id(5)]);
        assert_eq!(plan.admissions, 3);
        assert_eq!(plan.refund, 4000);
    }

    #[test]
    fn used_cancelled_and_foreign_tickets_are_refused_by_name() {
        let mut b = booking();
        b[0].state = TicketState::Used;
        b[1].state = TicketState::Cancelled;
        let now = at("2026-12-01T10:00:00Z");
        assert_eq!(
            plan_cancel(&b, &[id(1)], at(START), 24, now),
            Err(CancelError::TicketUsed(id(1)))
        );
        assert_eq!(
            plan_cancel(&b, &[id(2)], at(START), 24, now),
            Err(CancelError::AlreadyCancelled(id(2)))
        );
        assert_eq!(
            plan_cancel(&b, &[id(9)], at(START), 24, now),
            Err(CancelError::UnknownTicket(id(9)))
        );
        assert_eq!(
            plan_cancel(&b, &[], at(START), 24, now),
            Err(CancelError::Empty)
        );
        // The used adult still stands: the add-ons stay with it.
        let plan = plan_cancel(&b, &[id(3)], at(START), 24, now).unwrap();
        assert_eq!(plan.tickets, vec![id(3)]);
    }

    proptest! {
        /// Whatever is asked, a plan never refunds more than the valid tickets
        /// are worth, never cancels a used or cancelled ticket, and never
        /// leaves a valid add-on without an admission standing.
        #[test]
        fn plans_stay_inside_the_booking(
            states in proptest::collection::vec((0u8..3, 0u8..3, 0i64..5000), 1..8),
            pick in proptest::collection::vec(0usize..8, 0..8),
        ) {
            let tickets: Vec<TicketFacts> = states.iter().enumerate().map(|(i, (s, admits, price))| {
                let state = match s { 0 => TicketState::Valid, 1 => TicketState::Used, _ => TicketState::Cancelled };
                t(i as u8 + 1, *admits, *price, state)
            }).collect();
            let requested: Vec<Uuid> = pick.iter().map(|i| id(*i as u8 + 1)).collect();
            let now = at("2026-12-01T10:00:00Z");
            if let Ok(plan) = plan_cancel(&tickets, &requested, at(START), 24, now) {
                let valid_worth: i64 = tickets.iter().filter(|t| t.state == TicketState::Valid).map(|t| t.price).sum();
                prop_assert!(plan.refund <= valid_worth);
                for c in &plan.tickets {
                    let t = tickets.iter().find(|t| t.ticket_id == *c).unwrap();
                    prop_assert_eq!(t.state, TicketState::Valid);
                }
                let standing = tickets.iter().any(|t| t.admits > 0 && t.state != TicketState::Cancelled && !plan.tickets.contains(&t.ticket_id));
                let lone_add_on = tickets.iter().any(|t| t.admits == 0 && t.state == TicketState::Valid && !plan.tickets.contains(&t.ticket_id));
                prop_assert!(standing || !lone_add_on);
            }
        }
    }

    #[test]
    fn a_booking_email_is_resent_five_times_a_day_not_six() {
        for sent in 0..RESENDS_PER_DAY {
            assert_eq!(may_resend(sent), Ok(()));
        }
        let refused = may_resend(5).unwrap_err();
        assert_eq!(refused, ResendRefusal::TooMany { sent: 5 });
        assert_eq!(refused.code(), "too_many_resends");
        assert!(refused.to_string().contains("5 times today"));
        let now = at("2026-12-02T10:00:00Z").as_millisecond();
        assert_eq!(
            resend_window_start(now),
            at("2026-12-01T10:00:00Z").as_millisecond()
        );
    }

    #[test]
    fn an_unclaimed_booking_token_is_kept_an_hour_then_forgotten() {
        let now = at("2026-12-02T10:00:00Z").as_millisecond();
        let cutoff = unclaimed_tokens_before(now);
        // Paid 59 minutes ago: the return page may still poll for it.
        assert!(at("2026-12-02T09:01:00Z").as_millisecond() > cutoff);
        // Paid an hour ago: forgotten (the email has the link).
        assert!(at("2026-12-02T09:00:00Z").as_millisecond() <= cutoff);
        assert_eq!(unclaimed_tokens_before(i64::MIN), i64::MIN);
    }

    #[test]
    fn a_voided_ticket_reads_cancelled_even_once_used() {
        assert_eq!(ticket_state(false, false), TicketState::Valid);
        assert_eq!(ticket_state(false, true), TicketState::Used);
        assert_eq!(ticket_state(true, false), TicketState::Cancelled);
        assert_eq!(ticket_state(true, true), TicketState::Cancelled);
    }
}
