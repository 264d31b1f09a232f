//! What can go wrong in the service, with the stable code and HTTP status each
//! answer carries. The HTTP edge turns these into `{"error":{code,message}}`.

use std::future::Future;

use tessera_core::inventory::InventoryError;
use tessera_core::pricing::PricingError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    MalformedJson(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("this request needs an Idempotency-Key header (any unique string per attempt, reused on retry)")]
    MissingIdempotencyKey,
    #[error("Idempotency-Key must be 1-200 printable ASCII characters")]
    BadIdempotencyKey,
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
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("enrolment code is unknown, expired or already used")]
    EnrolmentCodeInvalid,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooManyAttempts(String),
    /// A refusal with its own stable code (the shop's and payments' answers:
    /// `terms_not_accepted`, `unknown_booking`, `bad_signature`…).
    #[error("{message}")]
    Refused {
        status: u16,
        code: &'static str,
        message: String,
    },
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("server is shutting down or its storage is unavailable")]
    Unavailable,
    /// A bug met while serving the request: it was rolled back and changed
    /// nothing; the log has the details under the same request id.
    #[error("internal error; the request changed nothing (request id {request_id})")]
    Internal { request_id: String },
    #[error(transparent)]
    Waitlist(#[from] WaitlistError),
}

/// Refusals of the waiting list and its offers.
#[derive(Debug, thiserror::Error)]
pub enum WaitlistError {
    #[error(transparent)]
    Join(#[from] tessera_core::waitlist::JoinRefusal),
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

impl From<tessera_core::waitlist::TakeRefusal> for ServiceError {
    fn from(refusal: tessera_core::waitlist::TakeRefusal) -> Self {
        use tessera_core::waitlist::TakeRefusal;
        match refusal {
            TakeRefusal::Taken => WaitlistError::OfferTaken.into(),
            TakeRefusal::Expired => WaitlistError::OfferExpired.into(),
            TakeRefusal::TooMany { party, requested } => {
                WaitlistError::TooManyForOffer { party, requested }.into()
            }
            TakeRefusal::SlotPast(slot) => ServiceError::SlotPast(slot.to_string()),
        }
    }
}

impl WaitlistError {
    fn code(&self) -> &'static str {
        use tessera_core::waitlist::JoinRefusal;
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

    fn status(&self) -> u16 {
        match self {
            WaitlistError::Join(_) | WaitlistError::TooManyForOffer { .. } => 422,
            WaitlistError::UnknownOffer => 404,
            WaitlistError::OfferTaken => 409,
            WaitlistError::OfferExpired => 410,
            // Like `too_many_held`: a bound on what one visitor may take.
            WaitlistError::TooManyEntries { .. } => 429,
        }
    }
}

impl ServiceError {
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::BadRequest(_) => "bad_request",
            ServiceError::MalformedJson(_) => "malformed_json",
            ServiceError::InvalidBody(_) => "invalid_body",
            ServiceError::BodyTooLarge(_) => "body_too_large",
            ServiceError::MissingIdempotencyKey => "missing_idempotency_key",
            ServiceError::BadIdempotencyKey => "bad_idempotency_key",
            ServiceError::IdempotencyKeyReused => "idempotency_key_reused",
            ServiceError::UnknownSlot(_) => "unknown_slot",
            ServiceError::MuseumClosed(_) => "museum_closed",
            ServiceError::SlotPast(_) => "slot_past",
            ServiceError::Pricing(p) => match p {
                PricingError::UnknownProduct(_) => "unknown_product",
                PricingError::ZeroQuantity(_) => "bad_quantity",
                PricingError::TooManyUnits { .. } | PricingError::TooManyAdmissions { .. } => {
                    "too_many"
                }
                PricingError::TooManyLines { .. } => "too_many",
                PricingError::Empty => "empty_cart",
                PricingError::MembershipRequired { .. }
                | PricingError::BadMembershipNumber(_)
                | PricingError::UnexpectedMembership(_) => "membership_number",
                PricingError::AddOnAlone(_) => "add_on_alone",
                PricingError::NotSoldOnline(_) => "not_sold_online",
            },
            ServiceError::SoldOut { .. } => "sold_out",
            ServiceError::UnknownHold(_) => "unknown_hold",
            ServiceError::HoldExpired(_) => "hold_expired",
            ServiceError::HoldCancelled(_) => "hold_cancelled",
            ServiceError::HoldAlreadyConfirmed { .. } => "already_confirmed",
            ServiceError::Unauthorized(_) => "unauthorized",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::EnrolmentCodeInvalid => "enrolment_code_invalid",
            ServiceError::NotFound(_) => "not_found",
            ServiceError::Conflict(_) => "conflict",
            ServiceError::TooManyAttempts(_) => "too_many_attempts",
            ServiceError::Refused { code, .. } => code,
            ServiceError::Storage(_) => "storage_error",
            ServiceError::Unavailable => "unavailable",
            ServiceError::Internal { .. } => "internal",
            ServiceError::Waitlist(w) => w.code(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ServiceError::BadRequest(_)
            | ServiceError::MalformedJson(_)
            | ServiceError::MissingIdempotencyKey
            | ServiceError::BadIdempotencyKey => 400,
            ServiceError::Unauthorized(_) => 401,
            ServiceError::Forbidden(_) | ServiceError::EnrolmentCodeInvalid => 403,
            ServiceError::UnknownHold(_) | ServiceError::NotFound(_) => 404,
            ServiceError::SoldOut { .. }
            | ServiceError::HoldCancelled(_)
            | ServiceError::HoldAlreadyConfirmed { .. }
            | ServiceError::Conflict(_) => 409,
            ServiceError::HoldExpired(_) => 410,
            ServiceError::BodyTooLarge(_) => 413,
            ServiceError::InvalidBody(_)
            | ServiceError::IdempotencyKeyReused
            | ServiceError::UnknownSlot(_)
            | ServiceError::MuseumClosed(_)
            | ServiceError::SlotPast(_)
            | ServiceError::Pricing(_) => 422,
            ServiceError::TooManyAttempts(_) => 429,
            ServiceError::Refused { status, .. } => *status,
            ServiceError::Storage(_) | ServiceError::Internal { .. } => 500,
            ServiceError::Unavailable => 503,
            ServiceError::Waitlist(w) => w.status(),
        }
    }

    /// Outcomes worth replaying to a retry with the same Idempotency-Key: the
    /// request was executed and this is its answer. Transient failures are not.
    pub fn is_final_outcome(&self) -> bool {
        matches!(
            self,
            ServiceError::SoldOut { .. }
                | ServiceError::HoldExpired(_)
                | ServiceError::HoldCancelled(_)
                | ServiceError::HoldAlreadyConfirmed { .. }
        )
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body =
            serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        if let ServiceError::Internal { request_id } = self {
            body["error"]["request_id"] = request_id.clone().into();
        }
        body
    }
}

impl ServiceError {
    pub fn refused(status: u16, code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::Refused {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<InventoryError> for ServiceError {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::SoldOut {
                requested,
                available,
            } => ServiceError::SoldOut {
                requested,
                available,
            },
            other => ServiceError::Storage(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for ServiceError {
    fn from(e: rusqlite::Error) -> Self {
        ServiceError::Storage(e.to_string())
    }
}

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the HTTP request being served (set by the request log layer),
/// so that work done for it elsewhere (in the writer) logs under it too.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Serves `f` as request `id`.
pub async fn with_request_id<F: Future>(id: String, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}
