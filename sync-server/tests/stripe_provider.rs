//! The Stripe provider against a loopback listener that plays Stripe: what it
//! sends (method, path, key, idempotency key, form fields) and how it reads
//! Stripe's answers; and its webhook check against signatures computed by
//! `openssl`, not by our code. Stripe itself cannot be reached from here.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::json;
use tessera_core::api::shop::Language;
use tessera_core::money::{Currency, Money};
use tessera_server::payments::stripe::StripeProvider;
use tessera_server::payments::{
    PaymentError, PaymentEventKind, PaymentProvider, PaymentRequest, RefundRequest,
};
use uuid::Uuid;

const KEY: &str = "sk_test_51TesseraFakeKey";
const WEBHOOK_SECRET: &str = "whsec_3f0c5a7d9e1b2c4a6f8e0d2b";

/// One request as the fake Stripe received it.
#[derive(Debug)]
struct Captured {
    method: Method,
    path: String,
    headers: HeaderMap,
    form: HashMap<String, String>,
}

/// What the fake answers next: status, extra headers, body.
type Answer = (StatusCode, Vec<(&'static str, &'static str)>, String);

#[derive(Clone)]
struct Fake {
    answer: Arc<Mutex<Answer>>,
    seen: Arc<Mutex<Vec<Captured>>>,
}

impl Fake {
    fn answer(&self, status: u16, headers: Vec<(&'static str, &'static str)>, body: String) {
        *self.answer.lock().unwrap() = (StatusCode::from_u16(status).unwrap(), headers, body);
    }

    fn only_request(&self) -> Captured {
        let mut seen = self.seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        seen.remove(0)
    }
}

async fn fake_stripe(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap();
    let form: HashMap<String, String> = pairs.iter().cloned().collect();
    assert_eq!(
        form.len(),
        pairs.len(),
        "a form field sent twice: {pairs:?}"
    );
    fake.seen.lock().unwrap().push(Captured {
        method,
        path: uri.path().to_string(),
        headers,
        form,
    });
    let (status, extra, body) = fake.answer.lock().unwrap().clone();
    let mut response = (status, [("content-type", "application/json")], body).into_response();
    for (name, value) in extra {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    response
}

/// A fake Stripe on 127.0.0.1 and a provider pointed at it.
async fn stripe() -> (Fake, StripeProvider) {
    let fake = Fake {
        answer: Arc::new(Mutex::new((StatusCode::OK, vec![], "{}".into()))),
        seen: Arc::default(),
    };
    let app = axum::Router::new()
        .fallback(fake_stripe)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let provider =
        StripeProvider::new(&base, KEY, WEBHOOK_SECRET, "https://tickets.example.org").unwrap();
    (fake, provider)
}

fn eur(cents: i64) -> Money {
    Money::new(cents, Currency::new("EUR").unwrap())
}

fn payment_request() -> PaymentRequest {
    PaymentRequest {
        payment_id: "pay_7QfZ2mK9".into(),
        hold_id: Uuid::parse_str("0190f7a0-1234-7000-8000-00000000abcd").unwrap(),
        amount: eur(4250),
        description: "Musée des Tessères, 5 déc. 10:00".into(),
        email: "camille@example.org".into(),
        language: Language::Fr,
        success_url: "https://tickets.example.org/return/c1?paid=1".into(),
        cancel_url: "https://tickets.example.org/checkout/h1".into(),
        expires_at: Timestamp::now() + jiff::SignedDuration::from_mins(10),
    }
}

#[tokio::test]
async fn a_checkout_session_is_created_as_stripe_documents_it() {
    let (fake, provider) = stripe().await;
    fake.answer(
        200,
        vec![],
        json!({
            "id": "cs_test_a1B2c3",
            "object": "checkout.session",
            "url": "https://checkout.stripe.com/c/pay/cs_test_a1B2c3",
            "status": "open",
        })
        .to_string(),
    );
    let request = payment_request();
    let started = provider.create_payment(&request).await.unwrap();
    assert_eq!(started.provider_ref, "cs_test_a1B2c3");
    assert_eq!(
        started.redirect_url,
        "https://checkout.stripe.com/c/pay/cs_test_a1B2c3"
    );

    let sent = fake.only_request();
    assert_eq!(sent.method, Method::POST);
    assert_eq!(sent.path, "/v1/checkout/sessions");
    assert_eq!(sent.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(
        sent.headers["idempotency-key"],
        "tessera-checkout-pay_7QfZ2mK9"
    );
    assert_eq!(
        sent.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let f = &sent.form;
    assert_eq!(f["mode"], "payment");
    assert_eq!(f["line_items[0][price_data][currency]"], "eur");
    assert_eq!(f["line_items[0][price_data][unit_amount]"], "4250");
    assert_eq!(
        f["line_items[0][price_data][product_data][name]"],
        "Musée des Tessères, 5 déc. 10:00"
    );
    assert_eq!(f["line_items[0][quantity]"], "1");
    assert_eq!(f["client_reference_id"], "pay_7QfZ2mK9");
    assert_eq!(f["metadata[payment_id]"], "pay_7QfZ2mK9");
    assert_eq!(
        f["metadata[hold_id]"],
        "0190f7a0-1234-7000-8000-00000000abcd"
    );
    assert_eq!(f["customer_email"], "camille@example.org");
    assert_eq!(f["locale"], "fr");
    assert_eq!(
        f["success_url"],
        "https://tickets.example.org/return/c1?paid=1"
    );
    assert_eq!(f["cancel_url"], "https://tickets.example.org/checkout/h1");
    // Stripe refuses less than 30 minutes ahead: 32 after our 10-minute hold.
    let expires: i64 = f["expires_at"].parse().unwrap();
    assert_eq!(expires, request.expires_at.as_second() + 32 * 60);
    assert!(expires >= Timestamp::now().as_second() + 30 * 60);
}

#[tokio::test]
async fn a_retried_creation_sends_the_same_request() {
    let (fake, provider) = stripe().await;
    fake.answer(
        200,
        vec![],
        json!({"id": "cs_1", "url": "https://checkout.stripe.com/c/pay/cs_1"}).to_string(),
    );
    let request = payment_request();
    provider.create_payment(&request).await.unwrap();
    provider.create_payment(&request).await.unwrap();
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    // Same key, same parameters: Stripe returns the first session again.
    assert_eq!(
        seen[0].headers["idempotency-key"],
        seen[1].headers["idempotency-key"]
    );
    assert_eq!(seen[0].form, seen[1].form);
}

#[tokio::test]
async fn stripe_refusals_and_outages_are_told_apart() {
    let (fake, provider) = stripe().await;
    let request = payment_request();

    fake.answer(
        400,
        vec![("request-id", "req_1")],
        json!({"error": {
            "type": "invalid_request_error",
            "code": "email_invalid",
            "message": "Invalid email address: camille@example.org",
            "param": "customer_email",
        }})
        .to_string(),
    );
    match provider.create_payment(&request).await {
        Err(PaymentError::Refused(m)) => {
            assert!(m.contains("Invalid email address"), "{m}");
            assert!(m.contains("400"), "{m}");
        }
        other => panic!("{other:?}"),
    }

    fake.answer(
        500,
        vec![],
        json!({"error": {"type": "api_error", "message": "Something went wrong"}}).to_string(),
    );
    assert!(matches!(
        provider.create_payment(&request).await,
        Err(PaymentError::Unavailable(_))
    ));

    fake.answer(
        429,
        vec![("stripe-should-retry", "true")],
        json!({"error": {"type": "rate_limit_error", "message": "Too many requests"}}).to_string(),
    );
    assert!(matches!(
        provider.create_payment(&request).await,
        Err(PaymentError::Unavailable(_))
    ));

    // A 200 that is not a session: we cannot send the visitor anywhere.
    fake.answer(200, vec![], "<html>proxy</html>".into());
    assert!(matches!(
        provider.create_payment(&request).await,
        Err(PaymentError::Unavailable(_))
    ));
    fake.answer(200, vec![], json!({"id": "cs_1", "url": null}).to_string());
    assert!(matches!(
        provider.create_payment(&request).await,
        Err(PaymentError::Unavailable(_))
    ));
}

#[tokio::test]
async fn stripe_out_of_reach_is_unavailable() {
    // A port nothing listens on: bind one, then free it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let provider = StripeProvider::new(&base, KEY, WEBHOOK_SECRET, "https://t.example").unwrap();
    assert!(matches!(
        provider.create_payment(&payment_request()).await,
        Err(PaymentError::Unavailable(_))
    ));
    let refund = RefundRequest {
        refund_ref: "pi_1".into(),
        amount: eur(100),
        idempotency_key: "refund-1".into(),
    };
    assert!(matches!(
        provider.refund(&refund).await,
        Err(PaymentError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_refund_names_the_payment_intent_the_amount_and_our_key() {
    let (fake, provider) = stripe().await;
    fake.answer(
        200,
        vec![],
        json!({"id": "re_3Abc", "object": "refund", "status": "succeeded", "amount": 1700})
            .to_string(),
    );
    let request = RefundRequest {
        refund_ref: "pi_3Abc".into(),
        amount: eur(1700),
        idempotency_key: "tessera-refund-42".into(),
    };
    let refunded = provider.refund(&request).await.unwrap();
    assert_eq!(refunded.refund_id, "re_3Abc");
    let sent = fake.only_request();
    assert_eq!(sent.method, Method::POST);
    assert_eq!(sent.path, "/v1/refunds");
    assert_eq!(sent.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(sent.headers["idempotency-key"], "tessera-refund-42");
    assert_eq!(sent.form["payment_intent"], "pi_3Abc");
    assert_eq!(sent.form["amount"], "1700");
    assert_eq!(sent.form.len(), 2, "{:?}", sent.form);

    // Some methods return money later: still a refund.
    fake.answer(
        200,
        vec![],
        json!({"id": "re_pending", "status": "pending"}).to_string(),
    );
    assert_eq!(
        provider.refund(&request).await.unwrap().refund_id,
        "re_pending"
    );

    fake.answer(
        400,
        vec![],
        json!({"error": {
            "type": "invalid_request_error",
            "code": "charge_already_refunded",
            "message": "Charge ch_1 has already been refunded.",
        }})
        .to_string(),
    );
    match provider.refund(&request).await {
        Err(PaymentError::Refused(m)) => assert!(m.contains("already been refunded"), "{m}"),
        other => panic!("{other:?}"),
    }

    fake.answer(
        200,
        vec![],
        json!({"id": "re_f", "status": "failed"}).to_string(),
    );
    assert!(matches!(
        provider.refund(&request).await,
        Err(PaymentError::Refused(_))
    ));

    fake.answer(503, vec![], String::new());
    assert!(matches!(
        provider.refund(&request).await,
        Err(PaymentError::Unavailable(_))
    ));
}

#[tokio::test]
async fn an_open_session_can_be_closed_when_its_hold_is_released() {
    let (fake, provider) = stripe().await;
    fake.answer(
        200,
        vec![],
        json!({"id": "cs_test_a1B2c3", "object": "checkout.session", "status": "expired"})
            .to_string(),
    );
    provider.expire_session("cs_test_a1B2c3").await.unwrap();
    let sent = fake.only_request();
    assert_eq!(sent.method, Method::POST);
    assert_eq!(sent.path, "/v1/checkout/sessions/cs_test_a1B2c3/expire");
    assert_eq!(sent.headers["authorization"], format!("Bearer {KEY}"));
    assert!(sent.form.is_empty());

    // Already paid: Stripe says so, and the payment's own event decides.
    fake.answer(
        400,
        vec![],
        json!({"error": {"type": "invalid_request_error",
            "message": "Only Checkout Sessions with a status in [\"open\"] can be expired."}})
        .to_string(),
    );
    assert!(matches!(
        provider.expire_session("cs_test_a1B2c3").await,
        Err(PaymentError::Refused(_))
    ));
    // Nothing that is not an id reaches the path.
    for bad in ["", "../refunds", "cs_1/expire?x=1", "cs 1"] {
        assert!(matches!(
            provider.expire_session(bad).await,
            Err(PaymentError::Refused(_))
        ));
    }
    assert_eq!(fake.seen.lock().unwrap().len(), 1);
}

/// HMAC-SHA256 in hex by `openssl`, independent of our code.
fn openssl_hmac(secret: &str, payload: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl (Debian package openssl) computes the test's signatures");
    child.stdin.take().unwrap().write_all(payload).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // "SHA2-256(stdin)= 9132…" (older openssl: "(stdin)= 9132…")
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.trim().rsplit("= ").next().unwrap().to_string();
    assert_eq!(hex.len(), 64, "{text}");
    hex
}

fn signed(secret: &str, t: i64, body: &[u8]) -> String {
    let mut payload = format!("{t}.").into_bytes();
    payload.extend_from_slice(body);
    format!("t={t},v1={}", openssl_hmac(secret, &payload))
}

fn headers(signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "stripe-signature",
        HeaderValue::from_str(signature).unwrap(),
    );
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h
}

fn completed_event() -> Vec<u8> {
    // Shaped as Stripe delivers it (fields we do not read included).
    serde_json::to_vec_pretty(&json!({
        "id": "evt_1PqRsT",
        "object": "event",
        "api_version": "2025-01-27.acacia",
        "created": 1_764_672_000,
        "livemode": false,
        "type": "checkout.session.completed",
        "data": {"object": {
            "id": "cs_test_a1B2c3",
            "object": "checkout.session",
            "amount_subtotal": 4250,
            "amount_total": 4250,
            "client_reference_id": "pay_7QfZ2mK9",
            "currency": "eur",
            "customer_email": "camille@example.org",
            "metadata": {"payment_id": "pay_7QfZ2mK9", "hold_id": "0190f7a0-1234-7000-8000-00000000abcd"},
            "mode": "payment",
            "payment_intent": "pi_3PqRsT",
            "payment_status": "paid",
            "status": "complete",
            "url": null,
        }},
    }))
    .unwrap()
}

#[tokio::test]
async fn webhooks_signed_with_the_endpoint_secret_are_believed_and_no_others() {
    let (_fake, provider) = stripe().await;
    let body = completed_event();
    let now = Timestamp::now();
    let t = now.as_second();

    let event = provider
        .verify_webhook(&headers(&signed(WEBHOOK_SECRET, t, &body)), &body, now)
        .unwrap()
        .unwrap();
    assert_eq!(event.event_id, "evt_1PqRsT");
    assert_eq!(event.payment_id, "pay_7QfZ2mK9");
    assert_eq!(event.kind, PaymentEventKind::Paid);
    assert_eq!(event.refund_ref.as_deref(), Some("pi_3PqRsT"));
    assert_eq!(event.amount, Some(eur(4250)));

    let rejected = |h: HeaderMap, body: &[u8], now: Timestamp| {
        matches!(
            provider.verify_webhook(&h, body, now),
            Err(PaymentError::BadSignature(_))
        )
    };
    // Another endpoint's secret.
    assert!(rejected(
        headers(&signed("whsec_someone_else", t, &body)),
        &body,
        now
    ));
    // One byte of the body changed after signing.
    let mut tampered = body.clone();
    let at = tampered.windows(4).position(|w| w == b"4250").unwrap();
    tampered[at] = b'1';
    assert!(rejected(
        headers(&signed(WEBHOOK_SECRET, t, &body)),
        &tampered,
        now
    ));
    // Signed six minutes ago (a captured delivery replayed), or ahead.
    assert!(rejected(
        headers(&signed(WEBHOOK_SECRET, t - 360, &body)),
        &body,
        now
    ));
    assert!(rejected(
        headers(&signed(WEBHOOK_SECRET, t + 360, &body)),
        &body,
        now
    ));
    // No header, an empty one, one without a signature.
    assert!(rejected(HeaderMap::new(), &body, now));
    assert!(rejected(headers(""), &body, now));
    assert!(rejected(headers(&format!("t={t}")), &body, now));
    // Two headers: which one counts is ambiguous.
    let mut two = headers(&signed(WEBHOOK_SECRET, t, &body));
    two.append(
        "stripe-signature",
        HeaderValue::from_str(&signed(WEBHOOK_SECRET, t, &body)).unwrap(),
    );
    assert!(rejected(two, &body, now));
}

#[tokio::test]
async fn a_rolled_secret_signs_twice_and_either_signature_will_do() {
    let (_fake, provider) = stripe().await;
    let body = completed_event();
    let now = Timestamp::now();
    let t = now.as_second();
    let mut payload = format!("{t}.").into_bytes();
    payload.extend_from_slice(&body);
    let old = openssl_hmac("whsec_the_previous_secret", &payload);
    let ours = openssl_hmac(WEBHOOK_SECRET, &payload);
    let header = format!("t={t},v1={old},v1={ours},v0={old}");
    let event = provider
        .verify_webhook(&headers(&header), &body, now)
        .unwrap();
    assert!(event.is_some());
    let header = format!("t={t},v1={old},v0={ours}");
    assert!(matches!(
        provider.verify_webhook(&headers(&header), &body, now),
        Err(PaymentError::BadSignature(_))
    ));
}

#[tokio::test]
async fn expired_and_unrelated_events_are_genuine_but_different() {
    let (_fake, provider) = stripe().await;
    let now = Timestamp::now();
    let t = now.as_second();
    let verify = |body: Vec<u8>| {
        provider.verify_webhook(&headers(&signed(WEBHOOK_SECRET, t, &body)), &body, now)
    };

    let expired = serde_json::to_vec(&json!({
        "id": "evt_exp", "object": "event", "type": "checkout.session.expired",
        "data": {"object": {
            "id": "cs_test_a1B2c3", "object": "checkout.session",
            "client_reference_id": "pay_7QfZ2mK9", "metadata": {"payment_id": "pay_7QfZ2mK9"},
            "payment_status": "unpaid", "status": "expired", "payment_intent": null,
            "amount_total": 4250, "currency": "eur",
        }},
    }))
    .unwrap();
    let event = verify(expired).unwrap().unwrap();
    assert_eq!(event.kind, PaymentEventKind::Failed);
    assert_eq!(event.payment_id, "pay_7QfZ2mK9");

    let other = serde_json::to_vec(&json!({
        "id": "evt_other", "object": "event", "type": "customer.created",
        "data": {"object": {"id": "cus_1", "object": "customer"}},
    }))
    .unwrap();
    assert_eq!(verify(other).unwrap(), None);

    // Signed, but not an event: refused as malformed, nothing acted on.
    assert!(matches!(
        verify(b"{\"hello\":1}".to_vec()),
        Err(PaymentError::Malformed(_))
    ));
}
