//! A web payment's life, as the shop's return page and the provider's
//! events see it. Pure: a backend loads the payment (and its hold and slot),
//! asks here, and writes what the answer says.
//!
//! A payment moves `pending → paid | failed | refunding → refunded`. Only a
//! pending or failed payment can be paid, so one payment confirms at most one
//! order; a failure counts only while the payment is pending.
//!
//! A provider's verified event is judged by [`judge_event`]: never money
//! without tickets, never tickets without money. Money that arrives for
//! another amount than the order's is refunded, never confirmed. Money that
//! arrives after the hold lapsed buys the same places again if the slot
//! still has room; otherwise it is refunded. An event seen before changes
//! nothing.

use std::fmt;
use std::str::FromStr;

use crate::api::shop::{CheckoutState, CheckoutStatus};
use crate::inventory::{InventoryError, SlotLedger};
use crate::money::Money;

/// A payment's stored status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Created with the checkout; no verified event yet.
    Pending,
    /// Paid and ticketed.
    Paid,
    /// The provider said the visitor did not pay.
    Failed,
    /// Paid, but no order was issued (or tickets were cancelled): a refund
    /// is queued.
    Refunding,
    /// The provider confirmed the refund.
    Refunded,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// A word the schema does not allow: the database was changed by hand
    /// or by a newer version.
    #[error("payment status {0:?} is not one this server knows")]
    UnknownStatus(String),
    #[error("hold status {0:?} is not one this server knows")]
    UnknownHoldStatus(String),
    /// The slot's ledger does not hold the hold's places it should.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
}

impl PaymentStatus {
    /// The word stored in `payments.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::Paid => "paid",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Refunding => "refunding",
            PaymentStatus::Refunded => "refunded",
        }
    }

    /// What the shop's return page tells the visitor. A refund under way is
    /// already "refunded" to them: the money is on its way back and nothing
    /// they can do changes that.
    pub fn checkout_state(self) -> CheckoutState {
        match self {
            PaymentStatus::Pending => CheckoutState::AwaitingPayment,
            PaymentStatus::Paid => CheckoutState::Confirmed,
            PaymentStatus::Failed => CheckoutState::Failed,
            PaymentStatus::Refunding | PaymentStatus::Refunded => CheckoutState::Refunded,
        }
    }
}

impl FromStr for PaymentStatus {
    type Err = PaymentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => PaymentStatus::Pending,
            "paid" => PaymentStatus::Paid,
            "failed" => PaymentStatus::Failed,
            "refunding" => PaymentStatus::Refunding,
            "refunded" => PaymentStatus::Refunded,
            other => return Err(PaymentError::UnknownStatus(other.to_string())),
        })
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The return page's answer for a checkout whose payment is `status`.
/// `booking_token` is the "my booking" token the backend still keeps in
/// clear, if any: it is handed out once (the backend forgets it after this
/// answer), as the email carries the link too.
pub fn checkout_status(
    checkout_id: &str,
    status: PaymentStatus,
    booking_token: Option<String>,
) -> CheckoutStatus {
    CheckoutStatus {
        checkout_id: checkout_id.to_string(),
        state: status.checkout_state(),
        booking_token,
    }
}

/// A checkout hold's stored status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HoldStatus {
    /// Its places are held (until it expires, is cancelled or confirmed).
    Held,
    /// An order was issued for it.
    Confirmed,
    Cancelled,
    Expired,
}

impl HoldStatus {
    /// The word stored in `holds.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Confirmed => "confirmed",
            HoldStatus::Cancelled => "cancelled",
            HoldStatus::Expired => "expired",
        }
    }
}

impl FromStr for HoldStatus {
    type Err = PaymentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "held" => HoldStatus::Held,
            "confirmed" => HoldStatus::Confirmed,
            "cancelled" => HoldStatus::Cancelled,
            "expired" => HoldStatus::Expired,
            other => return Err(PaymentError::UnknownHoldStatus(other.to_string())),
        })
    }
}

/// What a verified provider event says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderEvent {
    /// The visitor paid; `captured` is the amount the event names, when it
    /// names one.
    Paid { captured: Option<Money> },
    /// The visitor did not pay.
    Failed,
}

/// The hold a payment is for, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldFacts {
    pub status: HoldStatus,
    /// False for a waiting-list offer's hold, whose tickets are not chosen
    /// yet: nothing can be issued for it.
    pub has_lines: bool,
    pub admissions: u32,
    pub expires_ms: i64,
}

/// The hold's slot, as the backend counts it now (its ledger still holding
/// the hold's places while the hold is held).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotFacts {
    pub ledger: SlotLedger,
    pub ends_ms: i64,
}

/// A payment and what it is for, loaded by the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentFacts {
    pub status: PaymentStatus,
    /// What the order costs, in the currency it was priced in.
    pub amount: Money,
    pub hold: HoldFacts,
    /// `None` when the backend does not have the slot (no longer kept):
    /// nothing can be sold in it any more.
    pub slot: Option<SlotFacts>,
}

/// Why money that came in bought no order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundReason {
    /// The provider captured another amount (or currency) than the order's.
    AmountMismatch,
    /// The hold had lapsed and its slot had no room left (or was over).
    NoPlaces,
    /// Another payment of the same hold was confirmed first.
    Duplicate,
    /// The visitor cancelled tickets from "my booking".
    Cancelled,
}

impl RefundReason {
    /// The word stored with the refund and shown in the day report.
    pub fn code(self) -> &'static str {
        match self {
            RefundReason::AmountMismatch => "amount_mismatch",
            RefundReason::NoPlaces => "no_places",
            RefundReason::Duplicate => "duplicate",
            RefundReason::Cancelled => "cancelled",
        }
    }
}

/// How a hold that is still held ends before the decision is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldEnd {
    /// Nothing will be sold from it: its places go back on sale now rather
    /// than when it runs out.
    Cancelled,
    /// It ran out before the money came; its places go back (and may be
    /// held again at once, see [`Decision::Rehold`]).
    Expired,
}

impl HoldEnd {
    /// The hold status it is stored as.
    pub fn status(self) -> HoldStatus {
        match self {
            HoldEnd::Cancelled => HoldStatus::Cancelled,
            HoldEnd::Expired => HoldStatus::Expired,
        }
    }
}

/// What a provider event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The same event id was applied before: nothing changes.
    Replayed,
    /// The event names no payment of ours: acknowledged, nothing changes.
    UnknownPayment,
    /// The payment was settled by an earlier event: nothing changes.
    AlreadySettled,
    /// The payment is marked failed (its hold is released, see
    /// [`EventPlan::release`]).
    Failed,
    /// The hold is open: its held places become sold and the order is
    /// issued.
    Confirm,
    /// The hold lapsed but the slot still has room: the same lines are held
    /// and sold again, and the order is issued.
    Rehold,
    /// No order: `amount` (what was captured) goes back to the visitor.
    Refund { reason: RefundReason, amount: Money },
}

/// [`judge_event`]'s answer: first end the hold if `release` says so, then
/// carry out `decision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventPlan {
    pub release: Option<HoldEnd>,
    pub decision: Decision,
}

impl EventPlan {
    fn only(decision: Decision) -> Self {
        EventPlan {
            release: None,
            decision,
        }
    }

    /// Whether the payment is paid for in this plan (its `paid_at` and
    /// refund reference are recorded), whatever the order's fate.
    pub fn money_arrived(&self) -> bool {
        matches!(
            self.decision,
            Decision::Confirm | Decision::Rehold | Decision::Refund { .. }
        )
    }
}

/// Judges a verified provider event at `now_ms`. `first_delivery` is false
/// when the event's id was recorded before (the backend records it before
/// asking); `payment` is `None` when the event names no payment of ours.
pub fn judge_event(
    event: ProviderEvent,
    first_delivery: bool,
    payment: Option<&PaymentFacts>,
    now_ms: i64,
) -> Result<EventPlan, PaymentError> {
    if !first_delivery {
        return Ok(EventPlan::only(Decision::Replayed));
    }
    let Some(payment) = payment else {
        return Ok(EventPlan::only(Decision::UnknownPayment));
    };
    let hold = &payment.hold;
    let held = hold.status == HoldStatus::Held;
    let captured = match event {
        ProviderEvent::Failed => {
            // A failure after the money came (or after an earlier failure)
            // changes nothing: only a pending payment can fail.
            if payment.status != PaymentStatus::Pending {
                return Ok(EventPlan::only(Decision::AlreadySettled));
            }
            return Ok(EventPlan {
                release: held.then_some(HoldEnd::Cancelled),
                decision: Decision::Failed,
            });
        }
        ProviderEvent::Paid { captured } => captured.unwrap_or(payment.amount),
    };
    if !matches!(
        payment.status,
        PaymentStatus::Pending | PaymentStatus::Failed
    ) {
        return Ok(EventPlan::only(Decision::AlreadySettled));
    }
    let refund = |reason| Decision::Refund {
        reason,
        amount: captured,
    };
    // Checked before anything else: tickets are never issued for money
    // that is not the order's price, whatever the hold's state.
    if captured != payment.amount {
        return Ok(EventPlan {
            release: held.then_some(HoldEnd::Cancelled),
            decision: refund(RefundReason::AmountMismatch),
        });
    }
    if !hold.has_lines {
        // A waiting-list offer's places are paid for only through the
        // checkout its link opens; they stay kept for the waiting party.
        return Ok(EventPlan::only(refund(RefundReason::NoPlaces)));
    }
    if held && hold.expires_ms > now_ms {
        return Ok(EventPlan::only(Decision::Confirm));
    }
    let release = held.then_some(HoldEnd::Expired);
    let plan = |decision| EventPlan { release, decision };
    if hold.status == HoldStatus::Confirmed {
        return Ok(plan(refund(RefundReason::Duplicate)));
    }
    let Some(slot) = payment.slot else {
        return Ok(plan(refund(RefundReason::NoPlaces)));
    };
    // Room is judged as it will be once the lapsed hold has given its
    // places back: the visitor may well get their own places again.
    let mut ledger = slot.ledger;
    if release.is_some() {
        ledger.release_hold(hold.admissions)?;
    }
    if now_ms >= slot.ends_ms || ledger.hold(hold.admissions).is_err() {
        return Ok(plan(refund(RefundReason::NoPlaces)));
    }
    Ok(plan(Decision::Rehold))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [PaymentStatus; 5] = [
        PaymentStatus::Pending,
        PaymentStatus::Paid,
        PaymentStatus::Failed,
        PaymentStatus::Refunding,
        PaymentStatus::Refunded,
    ];

    #[test]
    fn stored_words_read_back_and_unknown_ones_are_refused() {
        for s in ALL {
            assert_eq!(s.as_str().parse::<PaymentStatus>(), Ok(s));
        }
        assert_eq!(
            "PAID".parse::<PaymentStatus>(),
            Err(PaymentError::UnknownStatus("PAID".into()))
        );
    }

    #[test]
    fn the_return_page_says_refunded_as_soon_as_a_refund_is_queued() {
        let state = |s: PaymentStatus| checkout_status("co_1", s, None).state;
        assert_eq!(
            state(PaymentStatus::Pending),
            CheckoutState::AwaitingPayment
        );
        assert_eq!(state(PaymentStatus::Paid), CheckoutState::Confirmed);
        assert_eq!(state(PaymentStatus::Failed), CheckoutState::Failed);
        assert_eq!(state(PaymentStatus::Refunding), CheckoutState::Refunded);
        assert_eq!(state(PaymentStatus::Refunded), CheckoutState::Refunded);
        let paid = checkout_status("co_1", PaymentStatus::Paid, Some("tok".into()));
        assert_eq!(paid.checkout_id, "co_1");
        assert_eq!(paid.booking_token.as_deref(), Some("tok"));
    }

    fn eur(cents: i64) -> Money {
        Money::new(cents, crate::money::Currency::new("EUR").expect("EUR"))
    }

    const NOW: i64 = 1_000_000;

    /// A pending payment of 30.00 for a hold of 2 places, open until after
    /// NOW, in a slot of 10 with 8 sold and those 2 held (sold out).
    fn pending() -> PaymentFacts {
        PaymentFacts {
            status: PaymentStatus::Pending,
            amount: eur(3000),
            hold: HoldFacts {
                status: HoldStatus::Held,
                has_lines: true,
                admissions: 2,
                expires_ms: NOW + 60_000,
            },
            slot: Some(SlotFacts {
                ledger: SlotLedger {
                    capacity: 10,
                    sold_online: 8,
                    held_online: 2,
                    ..SlotLedger::default()
                },
                ends_ms: NOW + 3_600_000,
            }),
        }
    }

    fn paid(p: &PaymentFacts, captured: Option<Money>) -> EventPlan {
        judge_event(ProviderEvent::Paid { captured }, true, Some(p), NOW).expect("judged")
    }

    fn refund(reason: RefundReason, cents: i64) -> Decision {
        Decision::Refund {
            reason,
            amount: eur(cents),
        }
    }

    #[test]
    fn money_for_an_open_hold_confirms_it() {
        let plan = paid(&pending(), Some(eur(3000)));
        assert_eq!(plan, EventPlan::only(Decision::Confirm));
        assert!(plan.money_arrived());
        // An event that names no amount is taken at the order's.
        assert_eq!(paid(&pending(), None).decision, Decision::Confirm);
        // A payment that failed first and then went through still confirms.
        let mut p = pending();
        p.status = PaymentStatus::Failed;
        assert_eq!(paid(&p, None).decision, Decision::Confirm);
    }

    #[test]
    fn money_after_expiry_rebuys_the_places_while_the_slot_has_room() {
        // Still held but run out: released, and its own places taken again.
        let mut p = pending();
        p.hold.expires_ms = NOW;
        let plan = paid(&p, None);
        assert_eq!(plan.release, Some(HoldEnd::Expired));
        assert_eq!(plan.decision, Decision::Rehold);
        // Already swept as expired, the places still free: held again.
        let mut p = pending();
        p.hold.status = HoldStatus::Expired;
        if let Some(s) = p.slot.as_mut() {
            s.ledger.held_online = 0;
        }
        assert_eq!(paid(&p, None), EventPlan::only(Decision::Rehold));
    }

    #[test]
    fn money_after_expiry_is_refunded_once_the_places_are_gone() {
        // Swept, and someone else bought the two places meanwhile.
        let mut p = pending();
        p.hold.status = HoldStatus::Expired;
        if let Some(s) = p.slot.as_mut() {
            s.ledger.held_online = 0;
            s.ledger.sold_online = 9;
        }
        let plan = paid(&p, Some(eur(3000)));
        assert_eq!(plan, EventPlan::only(refund(RefundReason::NoPlaces, 3000)));
        assert!(plan.money_arrived());
        // The entry time is over: nothing can be sold for it.
        let mut p = pending();
        p.hold.status = HoldStatus::Cancelled;
        if let Some(s) = p.slot.as_mut() {
            s.ledger.held_online = 0;
            s.ends_ms = NOW;
        }
        assert_eq!(
            paid(&p, None).decision,
            refund(RefundReason::NoPlaces, 3000)
        );
        // A slot the server no longer keeps.
        let mut p = pending();
        p.hold.status = HoldStatus::Expired;
        p.slot = None;
        assert_eq!(
            paid(&p, None).decision,
            refund(RefundReason::NoPlaces, 3000)
        );
    }

    #[test]
    fn a_mismatched_amount_is_refunded_never_confirmed() {
        let plan = paid(&pending(), Some(eur(2999)));
        assert_eq!(plan.decision, refund(RefundReason::AmountMismatch, 2999));
        // Its places go back on sale at once.
        assert_eq!(plan.release, Some(HoldEnd::Cancelled));
        let usd = Money::new(3000, crate::money::Currency::new("USD").expect("USD"));
        assert_eq!(
            paid(&pending(), Some(usd)).decision,
            Decision::Refund {
                reason: RefundReason::AmountMismatch,
                amount: usd
            }
        );
        // Even when the hold is gone and the slot has room.
        let mut p = pending();
        p.hold.status = HoldStatus::Expired;
        let plan = paid(&p, Some(eur(1)));
        assert_eq!(
            plan,
            EventPlan::only(refund(RefundReason::AmountMismatch, 1))
        );
    }

    #[test]
    fn a_second_payment_for_a_confirmed_hold_is_refunded() {
        let mut p = pending();
        p.hold.status = HoldStatus::Confirmed;
        assert_eq!(
            paid(&p, None),
            EventPlan::only(refund(RefundReason::Duplicate, 3000))
        );
    }

    #[test]
    fn replays_and_settled_payments_change_nothing() {
        let p = pending();
        for event in [
            ProviderEvent::Paid { captured: None },
            ProviderEvent::Failed,
        ] {
            let replay = judge_event(event, false, Some(&p), NOW).expect("judged");
            assert_eq!(replay, EventPlan::only(Decision::Replayed));
            assert!(!replay.money_arrived());
            assert_eq!(
                judge_event(event, true, None, NOW),
                Ok(EventPlan::only(Decision::UnknownPayment))
            );
        }
        for status in [
            PaymentStatus::Paid,
            PaymentStatus::Refunding,
            PaymentStatus::Refunded,
        ] {
            let mut p = pending();
            p.status = status;
            assert_eq!(
                paid(&p, Some(eur(1))),
                EventPlan::only(Decision::AlreadySettled)
            );
        }
    }

    #[test]
    fn a_failure_releases_the_hold_only_while_the_payment_is_pending() {
        let fail = |p: &PaymentFacts| {
            judge_event(ProviderEvent::Failed, true, Some(p), NOW).expect("judged")
        };
        assert_eq!(
            fail(&pending()),
            EventPlan {
                release: Some(HoldEnd::Cancelled),
                decision: Decision::Failed
            }
        );
        let mut swept = pending();
        swept.hold.status = HoldStatus::Expired;
        assert_eq!(fail(&swept), EventPlan::only(Decision::Failed));
        for status in [
            PaymentStatus::Paid,
            PaymentStatus::Failed,
            PaymentStatus::Refunding,
            PaymentStatus::Refunded,
        ] {
            let mut p = pending();
            p.status = status;
            assert_eq!(fail(&p), EventPlan::only(Decision::AlreadySettled));
        }
    }

    #[test]
    fn an_offers_hold_is_never_paid_for_directly() {
        let mut p = pending();
        p.hold.has_lines = false;
        assert_eq!(
            paid(&p, None),
            EventPlan::only(refund(RefundReason::NoPlaces, 3000))
        );
    }

    #[test]
    fn a_ledger_that_lost_the_holds_places_is_a_bookkeeping_error() {
        let mut p = pending();
        p.hold.expires_ms = NOW;
        if let Some(s) = p.slot.as_mut() {
            s.ledger.held_online = 0;
        }
        assert!(matches!(
            judge_event(ProviderEvent::Paid { captured: None }, true, Some(&p), NOW),
            Err(PaymentError::Inventory(_))
        ));
    }

    #[test]
    fn hold_words_read_back() {
        for s in [
            HoldStatus::Held,
            HoldStatus::Confirmed,
            HoldStatus::Cancelled,
            HoldStatus::Expired,
        ] {
            assert_eq!(s.as_str().parse::<HoldStatus>(), Ok(s));
        }
        assert!("open".parse::<HoldStatus>().is_err());
        assert_eq!(HoldEnd::Expired.status(), HoldStatus::Expired);
        assert_eq!(RefundReason::NoPlaces.code(), "no_places");
    }
}
