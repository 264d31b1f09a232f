//! Payment providers behind one trait. The server never takes a client's word
//! that it paid: an order is confirmed only by a provider's verified callback
//! (webhook) or by a trusted channel's token. `demo` is the embedded default
//! (a page on this server, no money moves) and completes through the same
//! signed-callback path as a real provider.
pub mod demo;
pub mod stripe;

use std::sync::Arc;

use axum::http::HeaderMap;
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use tessera_core::api::shop::Language;
use tessera_core::ids::HoldId;
use tessera_core::money::Money;
use tessera_core::payment::RefundReason;
use uuid::Uuid;

use crate::config::PaymentSettings;

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

// The store applies these events, so they are the store seam's types.
pub use crate::store::{PaymentEvent, PaymentEventKind};

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

/// What a provider needs from the server it runs in.
#[derive(Clone, Debug)]
pub struct ProviderContext {
    /// Where visitors reach this server (`[shop] public_url`, else
    /// `http://{listen}`), without a trailing slash.
    pub public_url: String,
    /// The demo provider's signing secret (per server, from the database).
    pub demo_secret: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderConfigError {
    #[error("unknown payment provider {0:?}: use \"demo\" or \"stripe\"")]
    Unknown(String),
    #[error("payment provider {provider}: {message}")]
    Invalid {
        provider: &'static str,
        message: String,
    },
}

/// The provider `[payments] provider` names.
pub fn from_config(
    settings: &PaymentSettings,
    context: &ProviderContext,
) -> Result<Arc<dyn PaymentProvider>, ProviderConfigError> {
    match settings.provider.trim() {
        "demo" => Ok(Arc::new(demo::DemoProvider::new(
            context.demo_secret.clone(),
            &context.public_url,
        ))),
        "stripe" => stripe::from_settings(settings, &context.public_url)
            .map(|p| Arc::new(p) as Arc<dyn PaymentProvider>)
            .map_err(|e| ProviderConfigError::Invalid {
                provider: "stripe",
                message: e.to_string(),
            }),
        other => Err(ProviderConfigError::Unknown(other.to_string())),
    }
}

/// Where a provider sends the visitor back: the shop's return page for this
/// checkout (it polls `GET /v1/checkouts/{id}`), or its checkout page when
/// the visitor gave up.
pub fn return_urls(public_url: &str, checkout_id: &str, hold_id: Uuid) -> (String, String) {
    (
        format!("{public_url}/return/{checkout_id}"),
        format!("{public_url}/checkout/{hold_id}"),
    )
}

/// Says in the log why paid money is going back instead of buying tickets,
/// the same for every backend: a wrong amount is the provider's or an
/// attacker's doing (an error to look at), no places left is the shop's
/// ordinary race (counted, for the operator's dashboard).
pub fn log_refund_decision(
    payment_id: &str,
    hold_id: HoldId,
    reason: RefundReason,
    captured: Money,
    expected: Money,
) {
    if reason == RefundReason::AmountMismatch {
        tracing::error!(payment = %payment_id, captured = captured.amount, expected = expected.amount,
            "provider captured another amount than the order's; refunding it, no tickets issued");
    } else {
        tracing::warn!(payment = %payment_id, %hold_id, reason = reason.code(),
            "paid, but no order can be issued; the payment is queued for a refund");
        metrics::counter!("tessera_paid_without_places_total").increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ProviderContext {
        ProviderContext {
            public_url: "https://tickets.example.org".into(),
            demo_secret: vec![7; 32],
        }
    }

    #[test]
    fn the_configured_provider_is_the_one_that_takes_payments() {
        let demo = from_config(&PaymentSettings::default(), &context()).map(|p| p.name());
        assert_eq!(demo.ok(), Some("demo"));

        let mut stripe = PaymentSettings {
            provider: "stripe".into(),
            ..PaymentSettings::default()
        };
        // Without keys the server must refuse to start, saying which is missing.
        match from_config(&stripe, &context()) {
            Err(ProviderConfigError::Invalid { provider, message }) => {
                assert_eq!(provider, "stripe");
                assert!(message.contains("key"), "{message}");
            }
            other => panic!("stripe without keys: {:?}", other.map(|p| p.name())),
        }
        stripe.stripe_secret_key = Some("sk_test_abc".into());
        stripe.stripe_webhook_secret = Some("whsec_abc".into());
        let taken = from_config(&stripe, &context()).map(|p| p.name());
        assert_eq!(taken.ok(), Some("stripe"));

        let unknown = PaymentSettings {
            provider: "paypal".into(),
            ..PaymentSettings::default()
        };
        assert!(matches!(
            from_config(&unknown, &context()),
            Err(ProviderConfigError::Unknown(_))
        ));
    }
}
