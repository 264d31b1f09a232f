//! Checkout and payment: a hold becomes a payment at the provider, the
//! provider's signed callback confirms it (exactly once), and the refund
//! queue gives money back where no tickets could be issued.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tessera_core::api::shop::{Checkout, CheckoutRequest, CheckoutStatus};
use tessera_core::limits;

use super::extract::{ApiJson, IdempotencyKey, Path};
use super::AppState;
use crate::error::ServiceError;
use crate::payments::{PaymentError, PaymentRequest};
use crate::secrets::sha256;
use crate::store::{EventOutcome, Idem, PaymentRecord, RefundAttempt, Store, Visitor};

/// How long the edge waits for a provider before telling the visitor to retry.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(20);

fn idem(key: IdempotencyKey, method: &Method, uri: &Uri, raw: &[u8]) -> Idem {
    Idem {
        request_hash: sha256(&[method.as_str().as_bytes(), uri.path().as_bytes(), raw]),
        key: key.0,
    }
}

/// Checks an email address as far as a form can: one `@`, something on
/// either side, no spaces, within the length limit.
pub(crate) fn check_email(email: &str) -> Result<(), ServiceError> {
    limits::email("email", email).map_err(|e| ServiceError::InvalidBody(e.to_string()))
}

fn checkout_of(record: &PaymentRecord) -> Option<Checkout> {
    Some(Checkout {
        checkout_id: record.checkout_id.clone(),
        hold_id: record.hold_id.0,
        provider: record.provider.clone(),
        redirect_url: record.redirect_url.clone()?,
        total: record.amount,
        hold_expires_at: record.hold_expires_at,
    })
}

fn created(checkout: Checkout, replayed: bool) -> Response {
    let mut r = (StatusCode::CREATED, Json(checkout)).into_response();
    if replayed {
        r.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    r
}

#[utoipa::path(post, path = "/v1/holds/{hold_id}/checkout", tag = "shop", summary = "Start paying for a hold: the visitor's details, then the provider's payment page", params(("hold_id" = String, Path, format = Uuid, description = "The hold's id"), super::openapi::IdempotencyKeyHeader), request_body = tessera_core::api::shop::CheckoutRequest, responses((status = 201, description = "Send the visitor to redirect_url; a retry with the same Idempotency-Key returns this answer again", body = tessera_core::api::shop::Checkout), (status = 404, description = "unknown_hold", body = tessera_core::api::ErrorBody), (status = 409, description = "already_confirmed, hold_cancelled", body = tessera_core::api::ErrorBody), (status = 410, description = "hold_expired", body = tessera_core::api::ErrorBody), (status = 422, description = "terms_not_accepted, invalid_body (name, email), idempotency_key_reused", body = tessera_core::api::ErrorBody), (status = 502, description = "payment_unavailable: the payment provider did not answer; retry with the same key", body = tessera_core::api::ErrorBody)))]
pub async fn checkout<S: Store>(
    State(app): State<AppState<S>>,
    Path(hold_id): Path<String>,
    method: Method,
    uri: Uri,
    key: IdempotencyKey,
    body: ApiJson<CheckoutRequest>,
) -> Result<Response, ServiceError> {
    let hold = super::online::parse_hold_id(&hold_id)?;
    let request = body.value.clone();
    if !request.accept_terms {
        return Err(ServiceError::refused(
            422,
            "terms_not_accepted",
            "the terms of sale must be accepted to pay (accept_terms: true)",
        ));
    }
    let name = request.name.trim().to_string();
    limits::text("name", &name, limits::VISITOR_NAME_CHARS)
        .map_err(|e| ServiceError::InvalidBody(e.to_string()))?;
    let email = request.email.trim().to_string();
    check_email(&email)?;
    let provider = app.payments.clone();
    let idem = idem(key, &method, &uri, &body.raw);
    let visitor = Visitor {
        name,
        email,
        language: request.language,
    };
    let first = app
        .store
        .begin_checkout(idem, hold, visitor, provider.name().to_string())
        .await?;
    if first.status != 201 {
        return Ok(super::online::answer(first));
    }
    let record: PaymentRecord = serde_json::from_value(first.body).map_err(|e| {
        tracing::error!(error = %e, "stored checkout answer unreadable");
        ServiceError::Internal {
            request_id: crate::request_id::current_request_id().unwrap_or_default(),
        }
    })?;
    if let Some(c) = checkout_of(&record) {
        return Ok(created(c, first.replayed));
    }
    // Not yet sent to the provider (first attempt, or a retry after the
    // provider failed): ask it now, outside the writer.
    let (success_url, cancel_url) =
        crate::payments::return_urls(&app.public_url, &record.checkout_id, record.hold_id.0);
    let catalogue = app.store.catalogue();
    let request = PaymentRequest {
        payment_id: record.payment_id.clone(),
        hold_id: record.hold_id.0,
        amount: record.amount,
        description: format!(
            "{}, {} {}",
            catalogue.museum.name,
            record.slot_id.date,
            record.slot_id.hhmm()
        ),
        email: record.email.clone(),
        language: record.language,
        success_url,
        cancel_url,
        expires_at: record.hold_expires_at,
    };
    let started = tokio::time::timeout(PROVIDER_TIMEOUT, provider.create_payment(&request)).await;
    let started = match started {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, payment = %record.payment_id, "payment provider refused to start a payment");
            return Err(ServiceError::refused(
                502,
                "payment_unavailable",
                "the payment provider could not start the payment; try again in a moment",
            ));
        }
        Err(_) => {
            tracing::warn!(payment = %record.payment_id, "payment provider did not answer in time");
            return Err(ServiceError::refused(
                502,
                "payment_unavailable",
                "the payment provider did not answer; try again in a moment",
            ));
        }
    };
    let record = app
        .store
        .payment_started(
            record.payment_id.clone(),
            started.provider_ref,
            started.redirect_url,
        )
        .await?;
    match checkout_of(&record) {
        Some(c) => Ok(created(c, first.replayed)),
        None => Err(ServiceError::Internal {
            request_id: crate::request_id::current_request_id().unwrap_or_default(),
        }),
    }
}

#[utoipa::path(get, path = "/v1/checkouts/{checkout_id}", tag = "shop", summary = "A checkout's state, for the shop's return page (polled)", params(("checkout_id" = String, Path, description = "The checkout's id")), responses((status = 200, description = "awaiting_payment, confirmed (with the booking token, handed out once), refunded or failed", body = tessera_core::api::shop::CheckoutStatus), (status = 404, description = "unknown_checkout", body = tessera_core::api::ErrorBody), (status = 429, description = "rate_limited: too many reads by token from this client", body = tessera_core::api::ErrorBody)))]
pub async fn checkout_status<S: Store>(
    State(app): State<AppState<S>>,
    Path(checkout_id): Path<String>,
) -> Result<Json<CheckoutStatus>, ServiceError> {
    if !crate::secrets::is_url_id(crate::secrets::CHECKOUT_PREFIX, &checkout_id) {
        return Err(ServiceError::refused(
            404,
            "unknown_checkout",
            "no checkout has this id",
        ));
    }
    Ok(Json(app.store.checkout_status(checkout_id).await?))
}

/// The acknowledgement a provider gets for every genuine event.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Received {
    pub received: bool,
}

#[utoipa::path(post, path = "/v1/payments/{provider}/webhook", tag = "payments", summary = "A payment provider's signed callback (raw body)", params(("provider" = String, Path, description = "demo or stripe: the provider this server is configured with")), request_body(content = String, content_type = "application/json", description = "The provider's event, signed in its header (demo: Tessera-Signature; stripe: Stripe-Signature)"), responses((status = 200, description = "Received (also for a replayed event, which changes nothing)", body = Received), (status = 400, description = "bad_signature (missing, wrong or stale signature), malformed_event; nothing changed", body = tessera_core::api::ErrorBody), (status = 404, description = "unknown_provider", body = tessera_core::api::ErrorBody)))]
pub async fn webhook<S: Store>(
    State(app): State<AppState<S>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<Received>, ServiceError> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServiceError::BodyTooLarge(limits::WEBHOOK_BODY_BYTES)
        } else {
            ServiceError::BadRequest(format!("could not read the request body: {r}"))
        }
    })?;
    process_webhook(&app, &provider, &headers, &body).await?;
    Ok(Json(Received { received: true }))
}

/// Verifies and applies a provider's callback: the one path every payment
/// event takes, the demo page's included.
pub(crate) async fn process_webhook<S: Store>(
    app: &AppState<S>,
    provider: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<EventOutcome, ServiceError> {
    let payments = app.payments.clone();
    if provider != payments.name() {
        return Err(ServiceError::refused(
            404,
            "unknown_provider",
            format!(
                "this server takes payments through {:?}, not {:?}",
                payments.name(),
                limits::prefix(provider, 40)
            ),
        ));
    }
    if body.len() > limits::WEBHOOK_BODY_BYTES {
        return Err(ServiceError::BodyTooLarge(limits::WEBHOOK_BODY_BYTES));
    }
    let event = match payments.verify_webhook(headers, body, app.clock.now()) {
        Ok(Some(event)) => event,
        Ok(None) => return Ok(EventOutcome::UnknownPayment),
        Err(PaymentError::BadSignature(why)) => {
            metrics::counter!("tessera_webhook_bad_signature_total").increment(1);
            tracing::warn!(%provider, %why, "webhook refused: bad signature");
            return Err(ServiceError::refused(
                400,
                "bad_signature",
                format!("the callback's signature was refused: {why}"),
            ));
        }
        Err(e) => return Err(ServiceError::refused(400, "malformed_event", e.to_string())),
    };
    let outcome = app
        .store
        .payment_event(provider.to_string(), event, app.booking_context())
        .await?;
    match &outcome {
        EventOutcome::Confirmed { hold_id }
        | EventOutcome::Refunding { hold_id }
        | EventOutcome::Failed { hold_id } => app.edge.holds.release(hold_id.0),
        _ => {}
    }
    Ok(outcome)
}

/// Works the refund queue: every refund due is sent to the provider with its
/// idempotency key (so a retry after a lost answer is paid once), retried
/// with growing pauses while the provider is unavailable, and left for a
/// person (day report) when the provider refuses it.
pub async fn run_refunds<S: Store>(app: AppState<S>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due = match app.store.due_refunds(20).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the refund queue");
                continue;
            }
        };
        for refund in due {
            let provider = app.payments.clone();
            let attempt = if refund.provider != provider.name() {
                // Taken through another provider than the one configured
                // now: it cannot be refunded from here. Look again later.
                tracing::warn!(refund = %refund.refund_id, provider = %refund.provider,
                    "refund through a provider this server is no longer configured with");
                RefundAttempt::Retry {
                    error: format!("provider {} is not configured", refund.provider),
                    retry_at_ms: app.clock.now_ms() + 3_600_000,
                }
            } else {
                let request = crate::payments::RefundRequest {
                    refund_ref: refund.refund_ref.clone(),
                    amount: refund.amount,
                    idempotency_key: refund.idempotency_key.clone(),
                };
                match tokio::time::timeout(PROVIDER_TIMEOUT, provider.refund(&request)).await {
                    Ok(Ok(done)) => RefundAttempt::Done {
                        provider_refund_id: done.refund_id,
                    },
                    Ok(Err(PaymentError::Refused(e))) => RefundAttempt::Refused { error: e },
                    Ok(Err(e)) => RefundAttempt::Retry {
                        error: e.to_string(),
                        retry_at_ms: app.clock.now_ms() + backoff_ms(refund.attempts),
                    },
                    Err(_) => RefundAttempt::Retry {
                        error: "the provider did not answer in time".into(),
                        retry_at_ms: app.clock.now_ms() + backoff_ms(refund.attempts),
                    },
                }
            };
            if let Err(e) = app
                .store
                .refund_attempted(refund.refund_id.clone(), attempt, app.booking_context())
                .await
            {
                tracing::warn!(error = %e, refund = %refund.refund_id, "could not record a refund attempt; it will be tried again");
            }
        }
    }
}

/// 5 s, 10 s, 20 s… up to an hour between attempts.
fn backoff_ms(attempts: u32) -> i64 {
    let step = 5_000i64.saturating_mul(1i64 << attempts.min(20));
    step.min(3_600_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_grows_and_stops_at_an_hour() {
        assert_eq!(super::backoff_ms(0), 5_000);
        assert_eq!(super::backoff_ms(1), 10_000);
        assert_eq!(super::backoff_ms(30), 3_600_000);
    }

    #[test]
    fn emails_are_checked_as_a_form_would() {
        for ok in ["a@b.fr", "visitor+tag@example.org"] {
            assert!(super::check_email(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "a@", "@b.fr", "a b@c.fr", "a@b", "a@@b.fr"] {
            assert!(super::check_email(bad).is_err(), "{bad}");
        }
    }
}
