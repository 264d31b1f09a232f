//! What the HTTP edge answers when a request fails, with the stable code and
//! status each answer carries (`{"error":{code,message}}`).
//!
//! Two sources: the edge's own checks of input and access, decided before a
//! store is called (malformed JSON, a body too large, a missing
//! Idempotency-Key, an unknown token), and whatever the store answered
//! ([`StoreError`]: a refusal by the rules or a storage failure), which this
//! module only maps to a status.

use crate::store::{Refusal, StoreError, WaitlistError};
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
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A refusal of the edge's own with its stable code (a webhook's
    /// `bad_signature`, a payment provider's answer…).
    #[error("{message}")]
    Refused {
        status: u16,
        code: &'static str,
        message: String,
    },
    /// Shutting down: a worker pool the request needed is closed.
    #[error("server is shutting down")]
    Unavailable,
    /// Work of the edge's own failed (drawing a PDF…); nothing was changed.
    #[error("{0}")]
    Failed(String),
    /// A bug met while serving the request outside any store: it changed
    /// nothing; the log has the details under the same request id.
    #[error("internal error; the request changed nothing (request id {request_id})")]
    Internal { request_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
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
            ServiceError::Unauthorized(_) => "unauthorized",
            ServiceError::Forbidden(_) => "forbidden",
            ServiceError::NotFound(_) => "not_found",
            ServiceError::Refused { code, .. } => code,
            ServiceError::Unavailable => "unavailable",
            ServiceError::Failed(_) | ServiceError::Internal { .. } => "internal",
            ServiceError::Store(e) => e.code(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ServiceError::BadRequest(_)
            | ServiceError::MalformedJson(_)
            | ServiceError::MissingIdempotencyKey
            | ServiceError::BadIdempotencyKey => 400,
            ServiceError::Unauthorized(_) => 401,
            ServiceError::Forbidden(_) => 403,
            ServiceError::NotFound(_) => 404,
            ServiceError::BodyTooLarge(_) => 413,
            ServiceError::InvalidBody(_) => 422,
            ServiceError::Refused { status, .. } => *status,
            ServiceError::Failed(_) | ServiceError::Internal { .. } => 500,
            ServiceError::Unavailable => 503,
            ServiceError::Store(e) => e.status(),
        }
    }

    /// The store's refusal, when that is what this is.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            ServiceError::Store(e) => e.refusal(),
            _ => None,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        if let ServiceError::Store(e) = self {
            return e.body();
        }
        let mut body =
            serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        if let ServiceError::Internal { request_id } = self {
            body["error"]["request_id"] = request_id.clone().into();
        }
        body
    }

    pub fn refused(status: u16, code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError::Refused {
            status,
            code,
            message: message.into(),
        }
    }
}

/// `?` from a refusal, or anything one is made of, straight into an answer.
macro_rules! refusal_into_service_error {
    ($($from:ty),*) => {$(
        impl From<$from> for ServiceError {
            fn from(e: $from) -> Self {
                ServiceError::Store(StoreError::Refused(Refusal::from(e)))
            }
        }
    )*};
}
refusal_into_service_error!(Refusal, PricingError, WaitlistError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_its_code_and_gets_its_status_here() {
        let e = ServiceError::from(Refusal::SoldOut {
            requested: 3,
            available: 1,
        });
        assert_eq!((e.code(), e.status()), ("sold_out", 409));
        let e = ServiceError::from(WaitlistError::OfferExpired);
        assert_eq!((e.code(), e.status()), ("offer_expired", 410));
        let e = ServiceError::from(StoreError::Unavailable);
        assert_eq!((e.code(), e.status()), ("unavailable", 503));
    }

    #[test]
    fn an_internal_error_tells_its_request_id() {
        let e = ServiceError::from(StoreError::Internal {
            request_id: "r-1".into(),
        });
        assert_eq!(e.body()["error"]["request_id"], "r-1");
    }
}
