//! Payment providers behind one trait. The server never takes a client's word
//! that it paid: an order is confirmed only by a provider's verified callback
//! (webhook) or by a trusted channel's token. `demo` is the embedded default
//! (a page on this server, no money moves) and completes through the same
//! signed-callback path as a real provider.

pub mod stripe;

use axum::http::HeaderMap;
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use tessera_core::api::shop::Language;
use tessera_core::money::Money;
use uuid::Uuid;

/// What the server asks a provider to collect for one checkout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRequest {
    /// Ours, unguessable; the provider echoes it in its callbacks.
    pub payment_id: String,
    pub hold_id: Uuid,
    pub amount: Money,
    /// Shown on the provider's page, e.g. "Musée des Tessères, 5 Dec 10:00".
    pub description: String,
    pub email: String,
    pub language: Language,
    /// Where the provider sends the visitor back after paying / giving up.
    pub success_url: String,
    pub cancel_url: String,
    /// The provider should stop taking the payment after this.
    pub expires_at: Timestamp,
}

/// The provider's side of a started payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartedPayment {
    /// The provider's id for the payment session (Stripe: `cs_…`).
    pub provider_ref: String,
    /// The page the visitor pays on.
    pub redirect_url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentEventKind {
    /// Money was captured.
    Paid,
    /// The session expired or the payment failed: nothing was taken.
    Failed,
}

/// A verified callback: it came from the provider and was not altered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentEvent {
    /// The provider's event id: the same event delivered twice has one id.
    pub event_id: String,
    /// Our `PaymentRequest::payment_id`, as the provider echoed it.
    pub payment_id: String,
    /// What a refund must name (Stripe: the payment intent `pi_…`).
    pub refund_ref: Option<String>,
    pub kind: PaymentEventKind,
    /// The amount captured, when the event says.
    pub amount: Option<Money>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// `PaymentEvent::refund_ref` of the captured payment.
    pub refund_ref: String,
    pub amount: Money,
    /// Sent to the provider so a retried refund is never paid twice.
    pub idempotency_key: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refunded {
    /// The provider's id for the refund (Stripe: `re_…`).
    pub refund_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The callback's signature is missing, malformed, wrong or too old.
    #[error("webhook signature rejected: {0}")]
    BadSignature(String),
    /// Signed, but not a body we understand.
    #[error("webhook body not understood: {0}")]
    Malformed(String),
    /// The provider could not be reached or answered 5xx: try again later.
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (4xx): retrying will not help.
    #[error("payment provider refused: {0}")]
    Refused(String),
}

pub trait PaymentProvider: Send + Sync + 'static {
    /// `demo`, `stripe`: stored with each payment and shown to visitors.
    fn name(&self) -> &'static str;

    fn create_payment<'a>(
        &'a self,
        request: &'a PaymentRequest,
    ) -> BoxFuture<'a, Result<StartedPayment, PaymentError>>;

    /// Checks a callback exactly as the provider documents it. `Ok(None)`:
    /// genuine, but an event we do not act on (acknowledge it with 200).
    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Option<PaymentEvent>, PaymentError>;

    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
    ) -> BoxFuture<'a, Result<Refunded, PaymentError>>;
}
