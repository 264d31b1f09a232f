//! The public booking API a web shop calls: no credentials, every input checked.

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tessera_core::api::online::{Availability, ConfirmRequest, HoldRequest};
use tessera_core::ids::HoldId;
use tessera_core::pricing::{price_cart, CartLimits, Channel};
use tessera_core::slot::parse_date;
use uuid::Uuid;

use super::extract::{ApiJson, Channel as SalesChannel, IdempotencyKey, Path, Query};
use super::limits::Client;
use super::AppState;
use crate::error::ServiceError;
use crate::secrets::sha256;
use crate::store::{Answer, Idem, Refusal, Store, StoreError};
use tessera_core::limits;

#[derive(Deserialize)]
pub struct DateQuery {
    pub(super) date: Option<String>,
}

#[utoipa::path(get, path = "/v1/availability", tag = "online", summary = "Places per slot on one museum day", params(("date" = String, Query, format = Date, description = "Museum day, YYYY-MM-DD")), responses((status = 200, description = "The day's slots, live", body = tessera_core::api::online::Availability), (status = 400, description = "date missing or not a date (bad_request)", body = tessera_core::api::ErrorBody), (status = 422, description = "date out of range (invalid_body)", body = tessera_core::api::ErrorBody)))]
pub async fn availability<S: Store>(
    State(app): State<AppState<S>>,
    Query(q): Query<DateQuery>,
) -> Result<Json<Availability>, ServiceError> {
    crate::failpoint::panic_if("availability_handler");
    let text = q.date.ok_or_else(|| {
        ServiceError::BadRequest("query parameter date=YYYY-MM-DD is required".into())
    })?;
    let date = parse_date(&text).map_err(|e| ServiceError::BadRequest(e.to_string()))?;
    Ok(Json(app.store.availability(date).await?))
}

#[utoipa::path(get, path = "/v1/catalogue", tag = "online", summary = "The museum's catalogue: products, prices, VAT, schedule", responses((status = 200, description = "The current catalogue", body = tessera_core::catalogue::Catalogue)))]
pub async fn catalogue<S: Store>(State(app): State<AppState<S>>) -> Response {
    Json(app.store.catalogue().as_ref().clone()).into_response()
}

pub(super) fn idem(key: IdempotencyKey, method: &Method, uri: &Uri, raw: &[u8]) -> Idem {
    Idem {
        request_hash: sha256(&[method.as_str().as_bytes(), uri.path().as_bytes(), raw]),
        key: key.0,
    }
}

pub(crate) fn answer(a: Answer) -> Response {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Json(a.body)).into_response();
    if a.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

#[utoipa::path(post, path = "/v1/holds", tag = "online", summary = "Hold places in a slot for a checkout (they expire after a few minutes)", params(super::openapi::IdempotencyKeyHeader, ("Tessera-Queue-Pass" = Option<String>, Header, description = "For a day sold through a waiting room: the pass the room gave this browser session")), request_body = tessera_core::api::online::HoldRequest, responses((status = 201, description = "Held; a retry with the same Idempotency-Key returns this answer again", body = tessera_core::api::online::Hold, links(("confirm" = (operation_id = "confirm_hold", parameters(("hold_id" = "$response.body#/hold_id")))), ("cancel" = (operation_id = "cancel_hold", parameters(("hold_id" = "$response.body#/hold_id"))))), headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same key"))), (status = 403, description = "queue_required (a day sold through a waiting room: take a place, book with its pass), bad_pass, pass_not_yours, pass_expired, pass_over, pass_used", body = tessera_core::api::ErrorBody), (status = 409, description = "sold_out (also replayed to a retry)", body = tessera_core::api::ErrorBody), (status = 422, description = "unknown_slot, museum_closed, slot_past, unknown_product, bad_quantity, too_many, empty_cart, membership_number, add_on_alone, not_sold_online, invalid_body, idempotency_key_reused", body = tessera_core::api::ErrorBody)))]
pub async fn create_hold<S: Store>(
    State(app): State<AppState<S>>,
    client: Client,
    method: Method,
    uri: Uri,
    key: IdempotencyKey,
    headers: HeaderMap,
    body: ApiJson<HoldRequest>,
) -> Result<Response, ServiceError> {
    let request = body.value;
    // A slot whose window is over still goes to the store: a retry of a hold
    // made in time must get its first answer, and the store looks the key up
    // before it refuses the slot as past.
    let slot = match app.store.sellable_slot(request.slot_id).await {
        Ok(slot) => slot.id,
        Err(StoreError::Refused(Refusal::SlotPast(_))) => request.slot_id,
        Err(e) => return Err(e.into()),
    };
    let cart = price_cart(
        &app.store.catalogue(),
        &request.items,
        Channel::Online,
        CartLimits::ONLINE,
    )?;
    // Counted before the writer sees it, so 140 concurrent requests from one
    // client cannot all pass a check made before any of them held anything.
    let room = match app
        .edge
        .holds
        .reserve(client.0, &key.0, cart.admissions, app.clock.now_ms())
    {
        Ok(room) => room,
        Err(refusal) => return Ok(refusal.into_response()),
    };
    // A day sold through a waiting room takes a pass from it; the museum's
    // counters sell from their leases and never pass here. Checked last of
    // the edge's checks: from here the hold reaches the store, which tells
    // the line how it went.
    let admitted = super::queue::check_pass(&app, request.slot_id.date, &headers, &key.0)?;
    let idem = idem(key, &method, &uri, &body.raw);
    let admissions = cart.admissions;
    let first = match app.store.create_hold(idem, slot, cart).await {
        Ok(first) => first,
        Err(e) => {
            if let Some(pass) = admitted {
                pass.finish(None);
            }
            return Err(e.into());
        }
    };
    if let Some(pass) = admitted {
        pass.finish((first.status == 201).then_some(admissions));
    }
    if first.status == 201 && !first.replayed {
        if let Some((hold, expires_ms)) = made_hold(&first.body) {
            room.keep(hold, expires_ms);
        }
    }
    Ok(answer(first))
}

/// The hold id and expiry in a created hold's answer.
pub(super) fn made_hold(body: &serde_json::Value) -> Option<(Uuid, i64)> {
    let hold = Uuid::parse_str(body["hold_id"].as_str()?).ok()?;
    let expires: jiff::Timestamp = body["expires_at"].as_str()?.parse().ok()?;
    Some((hold, expires.as_millisecond()))
}

pub(super) fn parse_hold_id(text: &str) -> Result<HoldId, ServiceError> {
    text.parse()
        .map_err(|_| Refusal::UnknownHold(text.chars().take(64).collect()).into())
}

#[utoipa::path(post, path = "/v1/holds/{hold_id}/confirm", tag = "channel", summary = "A trusted channel (partner site, tourist office) turns a hold into an order with signed tickets", security(("channel_token" = [])), params(("hold_id" = String, Path, format = Uuid, description = "The hold's id"), super::openapi::IdempotencyKeyHeader), request_body = tessera_core::api::online::ConfirmRequest, responses((status = 201, description = "The order and its tickets, sold by the channel; a retry with the same Idempotency-Key returns this answer again", body = tessera_core::api::online::Order, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same key"))), (status = 401, description = "channel_token_required (no Authorization: Bearer), unknown_channel (unknown or revoked token)", body = tessera_core::api::ErrorBody), (status = 404, description = "unknown_hold", body = tessera_core::api::ErrorBody), (status = 409, description = "hold_cancelled, already_confirmed (also replayed to a retry)", body = tessera_core::api::ErrorBody), (status = 410, description = "hold_expired: its places were released (also replayed to a retry)", body = tessera_core::api::ErrorBody), (status = 422, description = "invalid_body (payment_reference, email), idempotency_key_reused", body = tessera_core::api::ErrorBody)))]
pub async fn confirm_hold<S: Store>(
    State(app): State<AppState<S>>,
    SalesChannel(channel): SalesChannel,
    Path(hold_id): Path<String>,
    method: Method,
    uri: Uri,
    key: IdempotencyKey,
    body: ApiJson<ConfirmRequest>,
) -> Result<Response, ServiceError> {
    let hold = parse_hold_id(&hold_id)?;
    let request = body.value;
    let reference = request.payment_reference.trim();
    limits::text(
        "payment_reference",
        reference,
        limits::PAYMENT_REFERENCE_CHARS,
    )
    .map_err(|e| ServiceError::InvalidBody(e.to_string()))?;
    if let Some(email) = &request.email {
        limits::text("email", email, limits::EMAIL_CHARS)
            .map_err(|e| ServiceError::InvalidBody(e.to_string()))?;
        if !email.contains('@') {
            return Err(ServiceError::InvalidBody(
                "email is not an email address".into(),
            ));
        }
    }
    let idem = idem(key, &method, &uri, &body.raw);
    let first = app.store.confirm_hold(idem, hold, request, channel).await?;
    // Confirmed, or closed for good: it no longer holds anyone's places.
    if matches!(first.status, 201 | 409 | 410) {
        app.edge.holds.release(hold.0);
    }
    Ok(answer(first))
}

#[utoipa::path(delete, path = "/v1/holds/{hold_id}", tag = "online", summary = "Give a hold's places back (idempotent)", params(("hold_id" = String, Path, format = Uuid, description = "The hold's id")), responses((status = 204, description = "Cancelled, or already cancelled or expired"), (status = 404, description = "unknown_hold", body = tessera_core::api::ErrorBody), (status = 409, description = "already_confirmed", body = tessera_core::api::ErrorBody)))]
pub async fn cancel_hold<S: Store>(
    State(app): State<AppState<S>>,
    Path(hold_id): Path<String>,
) -> Result<StatusCode, ServiceError> {
    let hold = parse_hold_id(&hold_id)?;
    app.store.cancel_hold(hold).await?;
    app.edge.holds.release(hold.0);
    Ok(StatusCode::NO_CONTENT)
}
