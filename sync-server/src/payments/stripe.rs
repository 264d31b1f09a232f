//! Stripe Checkout over Stripe's REST API: a hosted payment page per
//! checkout (Checkout Session), signed webhooks saying how it ended, and
//! refunds of the captured payment.
//!
//! Nothing here can reach Stripe from the machines that test Tessera: the
//! request building, the answers' handling and the signature check are
//! tested against a loopback listener that plays Stripe's part
//! (`sync-server/tests/stripe_provider.rs`) and vectors computed outside
//! this code.
//!
//! **Expiry.** Stripe keeps a Checkout Session open for at least 30 minutes
//! (`expires_at` must lie 30 min to 24 h ahead), longer than our hold. The
//! session is asked to expire a little over 30 minutes after the hold does;
//! a visitor who pays in between pays for a hold that has lapsed. That is
//! the server's case "paid after the hold expired": it holds the same places
//! again if the slot still has them, and refunds otherwise. Nothing here
//! pretends the two clocks are one.

mod signature;

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use axum::http::HeaderMap;
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use serde::Deserialize;
use tessera_core::limits;
use tessera_core::money::{Currency, Money};

use super::{
    PaymentError, PaymentEvent, PaymentEventKind, PaymentProvider, PaymentRequest, RefundRequest,
    Refunded, StartedPayment,
};
use crate::config::PaymentSettings;

pub use signature::{parse_header, sign_hex, SignatureError, SignatureHeader, TOLERANCE_SECS};

/// The header Stripe signs its webhook deliveries in.
pub const SIGNATURE_HEADER: &str = "stripe-signature";
/// Where Stripe must send events, under the shop's public address.
pub const WEBHOOK_PATH: &str = "/v1/payments/stripe/webhook";
/// The event types acted on; the README lists them for the Stripe dashboard.
pub const EVENTS: [&str; 4] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
];

/// A Checkout Session event is a few kilobytes; anything this large is not one.
const MAX_WEBHOOK_BODY: usize = 256 * 1024;
/// Stripe's answers to our calls are small; a larger one is not Stripe's.
const MAX_RESPONSE_BODY: usize = 1024 * 1024;
/// Stripe's own limit on an `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Stripe ids (`evt_…`, `cs_…`, `pi_…`, `re_…`) are far shorter; longer is not Stripe.
const MAX_ID_CHARS: usize = 255;
/// Product names shown on Stripe's page: ours are one line.
const MAX_NAME_CHARS: usize = 250;
/// How long the session stays open after our hold ends (see the module
/// docs): Stripe's 30 minutes, plus two for the clocks and the trip there.
const SESSION_AFTER_HOLD_SECS: i64 = 32 * 60;
/// Stripe's bounds on `expires_at`, measured from its clock at creation,
/// with a minute's margin each side for ours.
const SESSION_MIN_SECS: i64 = 31 * 60;
const SESSION_MAX_SECS: i64 = 23 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum StripeConfigError {
    #[error("payments.provider is \"stripe\" but no secret key is set: set TESSERA_STRIPE_SECRET_KEY (or payments.stripe_secret_key)")]
    NoSecretKey,
    #[error("the Stripe secret key must start with sk_ (or rk_ for a restricted key); a publishable pk_ key cannot create payments")]
    BadSecretKey,
    #[error("payments.provider is \"stripe\" but no webhook signing secret is set: set TESSERA_STRIPE_WEBHOOK_SECRET (or payments.stripe_webhook_secret)")]
    NoWebhookSecret,
    #[error("the Stripe webhook signing secret must start with whsec_ (it is shown on the webhook endpoint's page in Stripe's dashboard)")]
    BadWebhookSecret,
    #[error("payments.stripe_api_base must be an http(s) address, got {0:?}")]
    BadApiBase(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Stripe Checkout. Holds the secret key: its `Debug` never shows it.
pub struct StripeProvider {
    http: reqwest::Client,
    api_base: String,
    secret_key: String,
    webhook_secret: String,
    webhook_url: String,
}

impl fmt::Debug for StripeProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeProvider")
            .field("api_base", &self.api_base)
            .field("live", &self.is_live())
            .field("webhook_url", &self.webhook_url)
            .finish_non_exhaustive()
    }
}

/// The provider from `[payments]`: the keys must be there (the config
/// loader has already taken them from the environment when the file leaves
/// them out). `public_url` is where visitors reach this server; Stripe's
/// webhook endpoint must be set to [`StripeProvider::webhook_url`].
pub fn from_settings(
    settings: &PaymentSettings,
    public_url: &str,
) -> Result<StripeProvider, StripeConfigError> {
    let secret_key = settings
        .stripe_secret_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(StripeConfigError::NoSecretKey)?;
    if !(secret_key.starts_with("sk_") || secret_key.starts_with("rk_")) {
        return Err(StripeConfigError::BadSecretKey);
    }
    let webhook_secret = settings
        .stripe_webhook_secret
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(StripeConfigError::NoWebhookSecret)?;
    if !webhook_secret.starts_with("whsec_") {
        return Err(StripeConfigError::BadWebhookSecret);
    }
    let provider = StripeProvider::new(
        &settings.stripe_api_base,
        secret_key,
        webhook_secret,
        public_url,
    )?;
    if provider.is_live() && !public_url.starts_with("https://") {
        tracing::warn!(
            public_url,
            "live Stripe key with a public address that is not https: Stripe delivers live events only to https endpoints"
        );
    }
    tracing::info!(
        mode = if provider.is_live() { "live" } else { "test" },
        webhook_url = %provider.webhook_url,
        "Stripe payments: point the Stripe webhook endpoint at this address"
    );
    Ok(provider)
}

impl StripeProvider {
    pub fn new(
        api_base: &str,
        secret_key: &str,
        webhook_secret: &str,
        public_url: &str,
    ) -> Result<StripeProvider, StripeConfigError> {
        let api_base = api_base.trim().trim_end_matches('/');
        if !(api_base.starts_with("https://") || api_base.starts_with("http://"))
            || reqwest::Url::parse(api_base).is_err()
        {
            return Err(StripeConfigError::BadApiBase(api_base.to_string()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Stripe answers in well under a second; a call that hangs is
            // treated as unavailable and retried with the same key.
            .timeout(Duration::from_secs(30))
            // An API that redirects is not Stripe: never carry the key elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tessera-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StripeConfigError::Client(e.to_string()))?;
        Ok(StripeProvider {
            http,
            api_base: api_base.to_string(),
            secret_key: secret_key.to_string(),
            webhook_secret: webhook_secret.to_string(),
            webhook_url: format!("{}{WEBHOOK_PATH}", public_url.trim_end_matches('/')),
        })
    }

    /// Where Stripe must deliver events for this server.
    pub fn webhook_url(&self) -> &str {
        &self.webhook_url
    }

    /// A live key moves real money; a test key (`sk_test_…`) only test money.
    pub fn is_live(&self) -> bool {
        self.secret_key.contains("_live_")
    }

    /// Closes an open session at once (Stripe's `…/expire`), so that a
    /// visitor who left, or whose hold was released, can no longer pay on
    /// it. Not part of [`PaymentProvider`]: the server may call it when it
    /// releases a hold paid through Stripe; Stripe then sends
    /// `checkout.session.expired`. A session already paid cannot be closed:
    /// Stripe refuses (`Refused`), and its `completed` event decides.
    pub async fn expire_session(&self, session_id: &str) -> Result<(), PaymentError> {
        // The id goes into the path: Stripe's ids are letters, digits and `_`.
        if session_id.is_empty()
            || session_id.len() > MAX_ID_CHARS
            || !session_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(PaymentError::Refused("not a Checkout Session id".into()));
        }
        let path = format!("/v1/checkout/sessions/{session_id}/expire");
        let key = format!("tessera-expire-{session_id}");
        self.post(&path, &key, &[]).await.map(|_| ())
    }

    async fn post(
        &self,
        path: &str,
        idempotency_key: &str,
        form: &[(String, String)],
    ) -> Result<Vec<u8>, PaymentError> {
        let response = self
            .http
            .post(format!("{}{path}", self.api_base))
            .bearer_auth(&self.secret_key)
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await
            .map_err(|e| PaymentError::Unavailable(format!("Stripe not reached: {e}")))?;
        let status = response.status();
        let should_retry = response
            .headers()
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.eq_ignore_ascii_case("true"));
        let body = read_capped(response).await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(answer_error(status.as_u16(), should_retry, &body))
    }
}

impl PaymentProvider for StripeProvider {
    fn name(&self) -> &'static str {
        "stripe"
    }

    fn create_payment<'a>(
        &'a self,
        request: &'a PaymentRequest,
    ) -> BoxFuture<'a, Result<StartedPayment, PaymentError>> {
        Box::pin(async move {
            let form = session_form(request, Timestamp::now())?;
            // One session per payment of ours: a call retried after a lost
            // answer gets the same session back, not a second one (the form
            // is the same too, see `session_expiry`).
            let key = format!("tessera-checkout-{}", request.payment_id);
            let body = self.post("/v1/checkout/sessions", &key, &form).await?;
            let session: CreatedSession = serde_json::from_slice(&body).map_err(|e| {
                PaymentError::Unavailable(format!("Stripe's answer not understood: {e}"))
            })?;
            let url = session.url.filter(|u| !u.is_empty()).ok_or_else(|| {
                PaymentError::Unavailable("Stripe's session has no payment page url".into())
            })?;
            if session.id.is_empty() || limits::chars(&session.id) > MAX_ID_CHARS {
                return Err(PaymentError::Unavailable(
                    "Stripe's session id not understood".into(),
                ));
            }
            Ok(StartedPayment {
                provider_ref: session.id,
                redirect_url: url,
            })
        })
    }

    fn verify_webhook(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<Option<PaymentEvent>, PaymentError> {
        let mut values = headers.get_all(SIGNATURE_HEADER).iter();
        let header = match (values.next(), values.next()) {
            (None, _) => return Err(bad(SignatureError::Missing)),
            (Some(_), Some(_)) => {
                return Err(bad(SignatureError::Malformed(
                    "more than one Stripe-Signature header",
                )))
            }
            (Some(v), None) => v
                .to_str()
                .map_err(|_| bad(SignatureError::Malformed("not ASCII")))?,
        };
        if body.len() > MAX_WEBHOOK_BODY {
            return Err(PaymentError::Malformed(format!(
                "body of {} bytes is larger than any Stripe event we handle",
                body.len()
            )));
        }
        signature::verify(
            header,
            self.webhook_secret.as_bytes(),
            body,
            now.as_second(),
        )
        .map_err(bad)?;
        parse_event(body)
    }

    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
    ) -> BoxFuture<'a, Result<Refunded, PaymentError>> {
        Box::pin(async move {
            let form = refund_form(request)?;
            let body = self
                .post("/v1/refunds", &request.idempotency_key, &form)
                .await?;
            let refund: CreatedRefund = serde_json::from_slice(&body).map_err(|e| {
                PaymentError::Unavailable(format!("Stripe's answer not understood: {e}"))
            })?;
            match refund.status.as_deref() {
                // `pending`: some payment methods take days to return money;
                // Stripe finishes it on its own.
                Some("failed") | Some("canceled") => Err(PaymentError::Refused(format!(
                    "Stripe refund {} is {}",
                    refund.id,
                    refund.status.as_deref().unwrap_or_default()
                ))),
                _ if refund.id.is_empty() || limits::chars(&refund.id) > MAX_ID_CHARS => Err(
                    PaymentError::Unavailable("Stripe's refund id not understood".into()),
                ),
                _ => Ok(Refunded {
                    refund_id: refund.id,
                }),
            }
        })
    }
}

fn bad(e: SignatureError) -> PaymentError {
    PaymentError::BadSignature(e.to_string())
}

/// The form of `POST /v1/checkout/sessions` for one payment of ours.
pub fn session_form(
    request: &PaymentRequest,
    now: Timestamp,
) -> Result<Vec<(String, String)>, PaymentError> {
    if request.amount.amount <= 0 {
        return Err(PaymentError::Refused("nothing to pay".into()));
    }
    if request.payment_id.is_empty()
        || limits::chars(&request.payment_id) > limits::PAYMENT_REFERENCE_CHARS
    {
        return Err(PaymentError::Refused("payment id out of bounds".into()));
    }
    let name = limits::prefix(request.description.trim(), MAX_NAME_CHARS);
    let name = if name.is_empty() { "Tickets" } else { name };
    let pairs: [(&str, String); 16] = [
        ("mode", "payment".into()),
        // Stripe takes the same minor units as `Money` (cents for EUR).
        (
            "line_items[0][price_data][currency]",
            request.amount.currency.as_str().to_ascii_lowercase(),
        ),
        (
            "line_items[0][price_data][unit_amount]",
            request.amount.amount.to_string(),
        ),
        ("line_items[0][price_data][product_data][name]", name.into()),
        ("line_items[0][quantity]", "1".into()),
        // Echoed in every event about this session: how a webhook finds
        // its payment. Also kept in metadata, and on the payment intent so
        // Stripe's dashboard shows whose payment it is.
        ("client_reference_id", request.payment_id.clone()),
        ("metadata[payment_id]", request.payment_id.clone()),
        ("metadata[hold_id]", request.hold_id.to_string()),
        (
            "payment_intent_data[metadata][payment_id]",
            request.payment_id.clone(),
        ),
        (
            "payment_intent_data[metadata][hold_id]",
            request.hold_id.to_string(),
        ),
        ("customer_email", request.email.clone()),
        ("locale", request.language.code().into()),
        ("success_url", request.success_url.clone()),
        ("cancel_url", request.cancel_url.clone()),
        (
            "expires_at",
            session_expiry(request.expires_at, now).to_string(),
        ),
        // Stripe's button then reads "Book" rather than "Pay".
        ("submit_type", "book".into()),
    ];
    Ok(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// When Stripe should close the session, in unix seconds: a fixed time after
/// our hold ends, so that the same request gives the same form (Stripe
/// refuses an idempotency key reused with different parameters); kept
/// inside Stripe's bounds when the hold is already past or absurdly far.
pub fn session_expiry(hold_expires: Timestamp, now: Timestamp) -> i64 {
    let now = now.as_second();
    hold_expires
        .as_second()
        .saturating_add(SESSION_AFTER_HOLD_SECS)
        .clamp(now + SESSION_MIN_SECS, now + SESSION_MAX_SECS)
}

/// The form of `POST /v1/refunds`.
pub fn refund_form(request: &RefundRequest) -> Result<Vec<(String, String)>, PaymentError> {
    if request.amount.amount <= 0 {
        return Err(PaymentError::Refused("nothing to refund".into()));
    }
    if request.refund_ref.is_empty() || limits::chars(&request.refund_ref) > MAX_ID_CHARS {
        return Err(PaymentError::Refused(
            "refund reference out of bounds".into(),
        ));
    }
    if request.idempotency_key.is_empty() || request.idempotency_key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(PaymentError::Refused(
            "idempotency key out of bounds".into(),
        ));
    }
    Ok(vec![
        ("payment_intent".into(), request.refund_ref.clone()),
        ("amount".into(), request.amount.amount.to_string()),
    ])
}

/// How an answer that is not 2xx is reported. Stripe's `Stripe-Should-Retry`
/// decides when present; otherwise 5xx, 429 (rate limited) and 409 (another
/// request with the same idempotency key still running) pass with time, and
/// other 4xx are final: Stripe's message says why.
pub fn answer_error(status: u16, should_retry: Option<bool>, body: &[u8]) -> PaymentError {
    let message = serde_json::from_slice::<ErrorAnswer>(body)
        .ok()
        .and_then(|a| a.error.message)
        .map(|m| limits::prefix(m.trim(), 500).to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "no message".into());
    let text = format!("Stripe answered {status}: {message}");
    let retry = match should_retry {
        Some(retry) => retry || status >= 500,
        None => status >= 500 || status == 429 || status == 409,
    };
    if retry || !(400..500).contains(&status) {
        PaymentError::Unavailable(text)
    } else {
        PaymentError::Refused(text)
    }
}

/// Reads a verified body: the checkout events we act on, `Ok(None)` for
/// every other event (acknowledged so Stripe stops sending it).
pub fn parse_event(body: &[u8]) -> Result<Option<PaymentEvent>, PaymentError> {
    let event: Event = serde_json::from_slice(body)
        .map_err(|e| PaymentError::Malformed(format!("not a Stripe event: {e}")))?;
    if event.id.is_empty() || limits::chars(&event.id) > MAX_ID_CHARS {
        return Err(PaymentError::Malformed("event id out of bounds".into()));
    }
    let kind = match event.event_type.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            PaymentEventKind::Paid
        }
        "checkout.session.expired" | "checkout.session.async_payment_failed" => {
            PaymentEventKind::Failed
        }
        _ => return Ok(None),
    };
    let session: Session = serde_json::from_value(event.data.object)
        .map_err(|e| PaymentError::Malformed(format!("not a Checkout Session: {e}")))?;
    if session
        .object
        .as_deref()
        .is_some_and(|o| o != "checkout.session")
    {
        return Err(PaymentError::Malformed(
            "a checkout event about something else than a session".into(),
        ));
    }
    if event.event_type == "checkout.session.completed"
        && session.payment_status.as_deref() != Some("paid")
    {
        // `unpaid`: a payment method that settles later (a bank debit);
        // `checkout.session.async_payment_succeeded` or `_failed` follows.
        return Ok(None);
    }
    let from_reference = session.client_reference_id.filter(|r| !r.is_empty());
    let from_metadata = session.metadata.get("payment_id").cloned();
    let payment_id = match (from_reference, from_metadata) {
        (Some(a), Some(b)) if a != b => {
            return Err(PaymentError::Malformed(
                "client_reference_id and metadata name different payments".into(),
            ))
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            // A session made by something else on the same Stripe account
            // (a payment link, another site): genuine, but not ours.
            tracing::info!(event_id = %event.id, session = %session.id, "Stripe event for a session that is not Tessera's; ignored");
            return Ok(None);
        }
    };
    if limits::chars(&payment_id) > limits::PAYMENT_REFERENCE_CHARS {
        return Err(PaymentError::Malformed("payment id out of bounds".into()));
    }
    let refund_ref = match session.payment_intent {
        Some(serde_json::Value::String(id)) => Some(id),
        // Expanded into the whole object by some API versions or settings.
        Some(serde_json::Value::Object(pi)) => {
            pi.get("id").and_then(|id| id.as_str()).map(str::to_string)
        }
        _ => None,
    }
    .filter(|id| !id.is_empty() && limits::chars(id) <= MAX_ID_CHARS);
    let amount = match (session.amount_total, session.currency) {
        (Some(amount), Some(currency)) => {
            let currency = Currency::new(&currency.to_ascii_uppercase())
                .map_err(|e| PaymentError::Malformed(e.to_string()))?;
            if !(0..=limits::MAX_AMOUNT_MINOR).contains(&amount) {
                return Err(PaymentError::Malformed("amount out of bounds".into()));
            }
            Some(Money::new(amount, currency))
        }
        _ => None,
    };
    Ok(Some(PaymentEvent {
        event_id: event.id,
        payment_id,
        refund_ref: if kind == PaymentEventKind::Paid {
            refund_ref
        } else {
            None
        },
        kind,
        amount,
    }))
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, PaymentError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BODY {
                    return Err(PaymentError::Unavailable(
                        "Stripe's answer is larger than any it sends".into(),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(PaymentError::Unavailable(format!(
                    "Stripe's answer cut off: {e}"
                )))
            }
        }
    }
}

#[derive(Deserialize)]
struct CreatedSession {
    id: String,
    url: Option<String>,
}

#[derive(Deserialize)]
struct CreatedRefund {
    id: String,
    status: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
}

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct Session {
    id: String,
    object: Option<String>,
    client_reference_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    metadata: HashMap<String, String>,
    payment_status: Option<String>,
    payment_intent: Option<serde_json::Value>,
    amount_total: Option<i64>,
    currency: Option<String>,
}

fn null_as_empty<'de, D>(d: D) -> Result<HashMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<HashMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, session: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": "evt_1QxYz",
            "object": "event",
            "type": event_type,
            "livemode": false,
            "data": { "object": session },
        }))
        .unwrap()
    }

    fn paid_session() -> serde_json::Value {
        json!({
            "id": "cs_test_a1",
            "object": "checkout.session",
            "client_reference_id": "pay_123",
            "metadata": { "payment_id": "pay_123", "hold_id": "0190f7a0-0000-7000-8000-000000000001" },
            "payment_status": "paid",
            "status": "complete",
            "payment_intent": "pi_3Abc",
            "amount_total": 4250,
            "currency": "eur",
        })
    }

    #[test]
    fn a_paid_session_is_a_paid_event() {
        let got = parse_event(&event("checkout.session.completed", paid_session())).unwrap();
        assert_eq!(
            got,
            Some(PaymentEvent {
                event_id: "evt_1QxYz".into(),
                payment_id: "pay_123".into(),
                refund_ref: Some("pi_3Abc".into()),
                kind: PaymentEventKind::Paid,
                amount: Some(Money::new(4250, Currency::new("EUR").unwrap())),
            })
        );
        let later = parse_event(&event(
            "checkout.session.async_payment_succeeded",
            paid_session(),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(later.kind, PaymentEventKind::Paid);
    }

    #[test]
    fn a_completed_but_unpaid_session_waits_for_the_async_outcome() {
        let mut s = paid_session();
        s["payment_status"] = json!("unpaid");
        assert_eq!(
            parse_event(&event("checkout.session.completed", s.clone())).unwrap(),
            None
        );
        let failed = parse_event(&event("checkout.session.async_payment_failed", s))
            .unwrap()
            .unwrap();
        assert_eq!(failed.kind, PaymentEventKind::Failed);
        assert_eq!(failed.refund_ref, None);
    }

    #[test]
    fn an_expired_session_is_a_failed_event() {
        let mut s = paid_session();
        s["payment_status"] = json!("unpaid");
        s["payment_intent"] = json!(null);
        s["status"] = json!("expired");
        let got = parse_event(&event("checkout.session.expired", s))
            .unwrap()
            .unwrap();
        assert_eq!(got.kind, PaymentEventKind::Failed);
        assert_eq!(got.payment_id, "pay_123");
    }

    #[test]
    fn other_events_are_acknowledged_and_ignored() {
        let charge = json!({ "id": "ch_1", "object": "charge", "amount": 5 });
        for t in [
            "charge.succeeded",
            "payment_intent.succeeded",
            "refund.updated",
        ] {
            assert_eq!(parse_event(&event(t, charge.clone())).unwrap(), None, "{t}");
        }
    }

    #[test]
    fn the_payment_id_is_found_in_metadata_and_mismatches_are_refused() {
        let mut s = paid_session();
        s["client_reference_id"] = json!(null);
        let got = parse_event(&event("checkout.session.completed", s))
            .unwrap()
            .unwrap();
        assert_eq!(got.payment_id, "pay_123");

        let mut s = paid_session();
        s["metadata"]["payment_id"] = json!("pay_999");
        assert!(matches!(
            parse_event(&event("checkout.session.completed", s)),
            Err(PaymentError::Malformed(_))
        ));

        // Someone else's session on the same account: not ours, no error.
        let mut s = paid_session();
        s["client_reference_id"] = json!(null);
        s["metadata"] = json!(null);
        assert_eq!(
            parse_event(&event("checkout.session.completed", s)).unwrap(),
            None
        );
    }

    #[test]
    fn an_expanded_payment_intent_still_names_the_refund() {
        let mut s = paid_session();
        s["payment_intent"] = json!({ "id": "pi_expanded", "object": "payment_intent" });
        let got = parse_event(&event("checkout.session.completed", s))
            .unwrap()
            .unwrap();
        assert_eq!(got.refund_ref.as_deref(), Some("pi_expanded"));
    }

    #[test]
    fn bodies_we_cannot_trust_are_malformed_not_panics() {
        let mut bad_currency = paid_session();
        bad_currency["currency"] = json!("euro");
        let mut negative = paid_session();
        negative["amount_total"] = json!(-1);
        let mut huge = paid_session();
        huge["amount_total"] = json!(u64::MAX);
        let mut not_a_session = paid_session();
        not_a_session["object"] = json!("charge");
        let mut long_id = paid_session();
        long_id["client_reference_id"] = json!("p".repeat(201));
        long_id["metadata"] = json!({});
        for body in [
            b"".to_vec(),
            b"not json".to_vec(),
            b"[]".to_vec(),
            br#"{"id":"evt_1","type":"checkout.session.completed"}"#.to_vec(),
            br#"{"id":"evt_1","type":"checkout.session.completed","data":{"object":"x"}}"#.to_vec(),
            br#"{"id":"","type":"checkout.session.completed","data":{"object":{}}}"#.to_vec(),
            event("checkout.session.completed", bad_currency),
            event("checkout.session.completed", negative),
            event("checkout.session.completed", huge),
            event("checkout.session.completed", not_a_session),
            event("checkout.session.completed", long_id),
        ] {
            assert!(
                matches!(parse_event(&body), Err(PaymentError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn the_session_closes_a_fixed_time_after_the_hold_within_stripes_bounds() {
        let now = Timestamp::from_second(1_764_672_000).unwrap();
        let hold = now + jiff::SignedDuration::from_mins(10);
        // The usual case: 32 min after the hold, whatever the time of the call.
        assert_eq!(session_expiry(hold, now), hold.as_second() + 32 * 60);
        let later = now + jiff::SignedDuration::from_mins(3);
        assert_eq!(session_expiry(hold, later), session_expiry(hold, now));
        // A hold already long past: Stripe's minimum, from now.
        let past = now - jiff::SignedDuration::from_mins(20);
        assert_eq!(session_expiry(past, now), now.as_second() + 31 * 60);
        // Absurdly far: Stripe's maximum.
        let far = now + jiff::SignedDuration::from_hours(48);
        assert_eq!(session_expiry(far, now), now.as_second() + 23 * 3600);
    }

    #[test]
    fn answers_map_to_retry_or_refusal() {
        let msg = br#"{"error":{"type":"invalid_request_error","message":"No such payment_intent: 'pi_x'"}}"#;
        match answer_error(400, None, msg) {
            PaymentError::Refused(m) => assert!(m.contains("No such payment_intent"), "{m}"),
            other => panic!("{other:?}"),
        }
        for status in [500, 502, 503, 429, 409] {
            assert!(
                matches!(
                    answer_error(status, None, b""),
                    PaymentError::Unavailable(_)
                ),
                "{status}"
            );
        }
        assert!(matches!(
            answer_error(400, Some(true), msg),
            PaymentError::Unavailable(_)
        ));
        assert!(matches!(
            answer_error(409, Some(false), msg),
            PaymentError::Refused(_)
        ));
        assert!(matches!(
            answer_error(302, None, b""),
            PaymentError::Unavailable(_)
        ));
    }

    #[test]
    fn settings_without_usable_keys_are_refused() {
        let ok = PaymentSettings {
            provider: "stripe".into(),
            stripe_secret_key: Some("sk_test_abc".into()),
            stripe_webhook_secret: Some("whsec_abc".into()),
            stripe_api_base: "https://api.stripe.com".into(),
        };
        let p = from_settings(&ok, "https://tickets.example.org/").unwrap();
        assert_eq!(
            p.webhook_url(),
            "https://tickets.example.org/v1/payments/stripe/webhook"
        );
        assert!(!p.is_live());
        assert!(!format!("{p:?}").contains("sk_test_abc"));

        let with = |f: &dyn Fn(&mut PaymentSettings)| {
            let mut s = ok.clone();
            f(&mut s);
            from_settings(&s, "https://tickets.example.org").unwrap_err()
        };
        assert!(matches!(
            with(&|s| s.stripe_secret_key = None),
            StripeConfigError::NoSecretKey
        ));
        assert!(matches!(
            with(&|s| s.stripe_secret_key = Some("pk_test_abc".into())),
            StripeConfigError::BadSecretKey
        ));
        assert!(matches!(
            with(&|s| s.stripe_webhook_secret = Some(" ".into())),
            StripeConfigError::NoWebhookSecret
        ));
        assert!(matches!(
            with(&|s| s.stripe_webhook_secret = Some("sk_test_abc".into())),
            StripeConfigError::BadWebhookSecret
        ));
        assert!(matches!(
            with(&|s| s.stripe_api_base = "ftp://x".into()),
            StripeConfigError::BadApiBase(_)
        ));
    }
}
