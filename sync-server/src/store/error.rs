//! What a store answers when it does not answer the value asked for.
//!
//! Two kinds, kept apart because a caller treats them differently:
//!
//! - a [`Refusal`]: the rules said no (sold out, hold expired, unknown
//!   offer…). It is an answer, committed with the rest of its batch; it
//!   changed nothing, and a retry with the same Idempotency-Key gets it
//!   again when [`StoreError::is_final_outcome`] says so;
//! - a failure of the storage itself ([`StoreError::Unavailable`],
//!   [`StoreError::Storage`], [`StoreError::Internal`]): the request was
//!   rolled back and may be retried.
//!
//! Each refusal has a stable `code` and a [`RefusalKind`]. The kind's HTTP
//! status is defined here, not at the edge, because a store records the
//! answer to an idempotent write (status and body, [`super::Answer`]) to
//! replay it to a retry, refusals included; the HTTP edge (`crate::error`)
//! answers with the same [`StoreError::status`] and [`StoreError::body`].
//! Neither kind carries a backend's own error type: each backend converts
//! its driver's errors into [`StoreError::Storage`] (`From` impls in the
//! backend).

use tessera_core::booking::{CancelError, ResendRefusal};
use tessera_core::inventory::InventoryError;
use tessera_core::pricing::PricingError;
use tessera_core::waitlist::{JoinRefusal, TakeRefusal};

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Shutting down, or the database is away: retry later.
    #[error("server is shutting down or its storage is unavailable")]
    Unavailable,
    /// A read or write failed, or a stored row could not be read back. The
    /// text is for the log; it names what failed, not the SQL.
    #[error("storage failure: {0}")]
    Storage(String),
    /// A bug met while serving the request: its work was rolled back and
    /// changed nothing; the log has the details under the same request id.
    #[error("internal error; the request changed nothing (request id {request_id})")]
    Internal { request_id: String },
}

/// The sort of refusal, which the HTTP edge maps to a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request cannot be read as asked (a bad date, too many places in
    /// one hold): 400.
    BadRequest,
    /// The request is well formed but the rules refuse it: 422.
    Invalid,
    /// The caller may not do this: 403.
    Forbidden,
    /// What it names does not exist: 404.
    NotFound,
    /// It contradicts what is stored (sold out, already confirmed): 409.
    Conflict,
    /// It existed and is over (an expired hold or offer): 410.
    Gone,
    /// Too many tries or entries for one caller: 429.
    TooMany,
}

/// A refusal decided by the rules, the same whichever backend decided it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooManyAttempts(String),
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("no such slot {0}")]
    UnknownSlot(String),
    #[error("the museum is closed on {0}")]
    MuseumClosed(String),
    #[error("slot {0} is over; it can no longer be booked")]
    SlotPast(String),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("sold out: {requested} places requested, {available} left")]
    SoldOut { requested: u32, available: u32 },
    #[error("no such hold {0}")]
    UnknownHold(String),
    #[error("hold {0} has expired and its places were released; start a new checkout")]
    HoldExpired(String),
    #[error("hold {0} was cancelled")]
    HoldCancelled(String),
    #[error("hold {hold} is already confirmed as order {order}")]
    HoldAlreadyConfirmed { hold: String, order: String },
    #[error("enrolment code is unknown, expired or already used")]
    EnrolmentCodeInvalid,
    #[error(transparent)]
    Waitlist(#[from] WaitlistError),
    /// A refusal with its own stable code (the shop's and payments'
    /// answers: `terms_not_accepted`, `unknown_booking`…).
    #[error("{message}")]
    Coded {
        kind: RefusalKind,
        code: &'static str,
        message: String,
    },
}

/// Refusals of the waiting list and its offers.
#[derive(Debug, thiserror::Error)]
pub enum WaitlistError {
    #[error(transparent)]
    Join(#[from] JoinRefusal),
    /// A token that names no offer: mistyped, tampered with, or made up.
    #[error("no such offer; check the link in your email")]
    UnknownOffer,
    #[error("this offer was already used for a checkout")]
    OfferTaken,
    #[error("this offer has expired and its places went to the next in line")]
    OfferExpired,
    #[error("the offer holds {party} places; {requested} were chosen")]
    TooManyForOffer { party: u32, requested: u32 },
    /// The address, or the client, already waits in as many lines as one may.
    #[error(
        "{who} already waits for {max} entry times (at most {max} at once): \
         wait for an offer, or join again when one of them is over"
    )]
    TooManyEntries { who: &'static str, max: u32 },
}

impl RefusalKind {
    pub fn status(self) -> u16 {
        match self {
            RefusalKind::BadRequest => 400,
            RefusalKind::Forbidden => 403,
            RefusalKind::NotFound => 404,
            RefusalKind::Conflict => 409,
            RefusalKind::Gone => 410,
            RefusalKind::Invalid => 422,
            RefusalKind::TooMany => 429,
        }
    }
}

impl Refusal {
    pub fn coded(kind: RefusalKind, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::Coded {
            kind,
            code,
            message: message.into(),
        }
    }

    /// A booking link that names no booking: mistyped, or made up.
    pub fn unknown_booking() -> Refusal {
        Refusal::coded(
            RefusalKind::NotFound,
            "unknown_booking",
            "no booking has this link; check the address in your email",
        )
    }

    /// A checkout id that names no checkout.
    pub fn unknown_checkout() -> Refusal {
        Refusal::coded(
            RefusalKind::NotFound,
            "unknown_checkout",
            "no checkout has this id",
        )
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Invalid(_) => "invalid_body",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::NotFound(_) => "not_found",
            Refusal::Conflict(_) => "conflict",
            Refusal::TooManyAttempts(_) => "too_many_attempts",
            Refusal::IdempotencyKeyReused => "idempotency_key_reused",
            Refusal::UnknownSlot(_) => "unknown_slot",
            Refusal::MuseumClosed(_) => "museum_closed",
            Refusal::SlotPast(_) => "slot_past",
            Refusal::Pricing(p) => pricing_code(p),
            Refusal::SoldOut { .. } => "sold_out",
            Refusal::UnknownHold(_) => "unknown_hold",
            Refusal::HoldExpired(_) => "hold_expired",
            Refusal::HoldCancelled(_) => "hold_cancelled",
            Refusal::HoldAlreadyConfirmed { .. } => "already_confirmed",
            Refusal::EnrolmentCodeInvalid => "enrolment_code_invalid",
            Refusal::Waitlist(w) => w.code(),
            Refusal::Coded { code, .. } => code,
        }
    }

    pub fn kind(&self) -> RefusalKind {
        use RefusalKind::*;
        match self {
            Refusal::BadRequest(_) => BadRequest,
            Refusal::Forbidden(_) | Refusal::EnrolmentCodeInvalid => Forbidden,
            Refusal::UnknownHold(_) | Refusal::NotFound(_) => NotFound,
            Refusal::SoldOut { .. }
            | Refusal::HoldCancelled(_)
            | Refusal::HoldAlreadyConfirmed { .. }
            | Refusal::Conflict(_) => Conflict,
            Refusal::HoldExpired(_) => Gone,
            Refusal::Invalid(_)
            | Refusal::IdempotencyKeyReused
            | Refusal::UnknownSlot(_)
            | Refusal::MuseumClosed(_)
            | Refusal::SlotPast(_)
            | Refusal::Pricing(_) => Invalid,
            Refusal::TooManyAttempts(_) => TooMany,
            Refusal::Waitlist(w) => w.kind(),
            Refusal::Coded { kind, .. } => *kind,
        }
    }
}

fn pricing_code(p: &PricingError) -> &'static str {
    match p {
        PricingError::UnknownProduct(_) => "unknown_product",
        PricingError::ZeroQuantity(_) => "bad_quantity",
        PricingError::TooManyUnits { .. }
        | PricingError::TooManyAdmissions { .. }
        | PricingError::TooManyLines { .. } => "too_many",
        PricingError::Empty => "empty_cart",
        PricingError::MembershipRequired { .. }
        | PricingError::BadMembershipNumber(_)
        | PricingError::UnexpectedMembership(_) => "membership_number",
        PricingError::AddOnAlone(_) => "add_on_alone",
        PricingError::NotSoldOnline(_) => "not_sold_online",
    }
}

impl WaitlistError {
    fn code(&self) -> &'static str {
        match self {
            WaitlistError::Join(JoinRefusal::EmptyParty) => "invalid_body",
            WaitlistError::Join(JoinRefusal::PartyTooLarge { .. }) => "party_too_large",
            WaitlistError::Join(JoinRefusal::NotSoldOut { .. }) => "not_sold_out",
            WaitlistError::UnknownOffer => "unknown_offer",
            WaitlistError::OfferTaken => "offer_taken",
            WaitlistError::OfferExpired => "offer_expired",
            WaitlistError::TooManyForOffer { .. } => "too_many_for_offer",
            WaitlistError::TooManyEntries { .. } => "waitlist_limit",
        }
    }

    fn kind(&self) -> RefusalKind {
        match self {
            WaitlistError::Join(_) | WaitlistError::TooManyForOffer { .. } => RefusalKind::Invalid,
            WaitlistError::UnknownOffer => RefusalKind::NotFound,
            WaitlistError::OfferTaken => RefusalKind::Conflict,
            WaitlistError::OfferExpired => RefusalKind::Gone,
            // Like `too_many_held`: a bound on what one visitor may take.
            WaitlistError::TooManyEntries { .. } => RefusalKind::TooMany,
        }
    }
}

impl StoreError {
    /// Outcomes worth replaying to a retry with the same Idempotency-Key: the
    /// request was executed and this is its answer. Failures are not.
    pub fn is_final_outcome(&self) -> bool {
        matches!(
            self,
            StoreError::Refused(
                Refusal::SoldOut { .. }
                    | Refusal::HoldExpired(_)
                    | Refusal::HoldCancelled(_)
                    | Refusal::HoldAlreadyConfirmed { .. }
            )
        )
    }

    /// The stable code of the answer.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Refused(r) => r.code(),
            StoreError::Storage(_) => "storage_error",
            StoreError::Unavailable => "unavailable",
            StoreError::Internal { .. } => "internal",
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            StoreError::Refused(r) => r.kind().status(),
            StoreError::Storage(_) | StoreError::Internal { .. } => 500,
            StoreError::Unavailable => 503,
        }
    }

    /// The answer's body, `{"error":{code,message}}` (and the request id of
    /// an internal error, to find it in the log).
    pub fn body(&self) -> serde_json::Value {
        let mut body =
            serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        if let StoreError::Internal { request_id } = self {
            body["error"]["request_id"] = request_id.clone().into();
        }
        body
    }

    /// The refusal, when the rules refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            StoreError::Refused(r) => Some(r),
            _ => None,
        }
    }
}

impl From<TakeRefusal> for Refusal {
    fn from(refusal: TakeRefusal) -> Self {
        match refusal {
            TakeRefusal::Taken => WaitlistError::OfferTaken.into(),
            TakeRefusal::Expired => WaitlistError::OfferExpired.into(),
            TakeRefusal::TooMany { party, requested } => {
                WaitlistError::TooManyForOffer { party, requested }.into()
            }
            TakeRefusal::SlotPast(slot) => Refusal::SlotPast(slot.to_string()),
        }
    }
}

impl From<CancelError> for Refusal {
    fn from(e: CancelError) -> Self {
        Refusal::coded(RefusalKind::Invalid, e.code(), e.to_string())
    }
}

impl From<ResendRefusal> for Refusal {
    fn from(e: ResendRefusal) -> Self {
        Refusal::coded(RefusalKind::TooMany, e.code(), e.to_string())
    }
}

/// `?` from anything a refusal is made of straight into a `StoreError`.
macro_rules! refusal_into_store_error {
    ($($from:ty),*) => {$(
        impl From<$from> for StoreError {
            fn from(e: $from) -> Self {
                StoreError::Refused(Refusal::from(e))
            }
        }
    )*};
}
refusal_into_store_error!(PricingError, WaitlistError, TakeRefusal);

impl From<InventoryError> for StoreError {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::SoldOut {
                requested,
                available,
            } => Refusal::SoldOut {
                requested,
                available,
            }
            .into(),
            // Anything else the inventory refuses is a broken invariant of
            // the stored books, not the visitor's doing.
            other => StoreError::Storage(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_decided_outcomes_are_replayed_to_a_retry() {
        let sold_out = StoreError::from(Refusal::SoldOut {
            requested: 2,
            available: 1,
        });
        assert!(sold_out.is_final_outcome());
        assert!(!StoreError::Unavailable.is_final_outcome());
        assert!(!StoreError::from(Refusal::UnknownSlot("x".into())).is_final_outcome());
    }

    #[test]
    fn a_taken_offer_is_a_conflict_and_an_expired_one_is_gone() {
        let taken = Refusal::from(TakeRefusal::Taken);
        assert_eq!(
            (taken.code(), taken.kind()),
            ("offer_taken", RefusalKind::Conflict)
        );
        let expired = Refusal::from(TakeRefusal::Expired);
        assert_eq!(
            (expired.code(), expired.kind()),
            ("offer_expired", RefusalKind::Gone)
        );
    }
}
