//! A web payment's life, as the shop's return page and the provider's
//! events see it. Pure: a backend loads the payment (and its hold and slot),
//! asks here, and writes what the answer says.
//!
//! A payment moves `pending → paid | failed | refunding → refunded`. Only a
//! pending or failed payment can be paid, so one payment confirms at most one
//! order; a failure counts only while the payment is pending.

use std::fmt;
use std::str::FromStr;

use crate::api::shop::{CheckoutState, CheckoutStatus};

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
}
