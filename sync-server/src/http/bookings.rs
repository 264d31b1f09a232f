//! "My booking", by its unguessable link: see it, cancel some or all of its
//! tickets until the deadline, have its email sent again. A token that is
//! not one of ours is `404 unknown_booking`, whatever its shape.

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tessera_core::api::shop::{Booking, CancelRequest};
use tessera_core::limits;

use tessera_core::ids::TicketId;

use super::extract::{ApiJson, IdempotencyKey, Path};
use super::AppState;
use crate::error::ServiceError;
use crate::secrets::{is_link_token, sha256};
use crate::store::{Idem, Store};

pub(super) fn unknown_booking() -> ServiceError {
    ServiceError::refused(
        404,
        "unknown_booking",
        "no booking has this link; check the address in your email",
    )
}

pub(super) fn token(text: String) -> Result<String, ServiceError> {
    if is_link_token(&text) {
        Ok(text)
    } else {
        Err(unknown_booking())
    }
}

#[utoipa::path(get, path = "/v1/bookings/{token}", tag = "shop", summary = "A booking by its \"my booking\" token", params(("token" = String, Path, description = "The token from the booking's link")), responses((status = 200, description = "The booking, its tickets and what can still be cancelled", body = tessera_core::api::shop::Booking), (status = 404, description = "unknown_booking", body = tessera_core::api::ErrorBody), (status = 429, description = "rate_limited: too many reads by token from this client", body = tessera_core::api::ErrorBody)))]
pub async fn booking<S: Store>(
    State(app): State<AppState<S>>,
    Path(text): Path<String>,
) -> Result<Json<Booking>, ServiceError> {
    let token = token(text)?;
    Ok(Json(app.store.booking(token, app.booking_context()).await?))
}

#[utoipa::path(post, path = "/v1/bookings/{token}/cancel", tag = "shop", summary = "Cancel some or all of a booking's tickets (refund, places back on sale, gates refuse them)", params(("token" = String, Path, description = "The token from the booking's link"), super::openapi::IdempotencyKeyHeader), request_body = tessera_core::api::shop::CancelRequest, responses((status = 200, description = "The booking as it now stands; a retry with the same Idempotency-Key returns this answer again", body = tessera_core::api::shop::Booking), (status = 404, description = "unknown_booking", body = tessera_core::api::ErrorBody), (status = 422, description = "cancel_deadline_passed, unknown_ticket, already_cancelled, ticket_used, empty, invalid_body, idempotency_key_reused; nothing changed", body = tessera_core::api::ErrorBody)))]
pub async fn cancel<S: Store>(
    State(app): State<AppState<S>>,
    Path(text): Path<String>,
    method: Method,
    uri: Uri,
    key: IdempotencyKey,
    body: ApiJson<CancelRequest>,
) -> Result<Response, ServiceError> {
    let token = token(text)?;
    let tickets: Vec<TicketId> = body
        .value
        .ticket_ids
        .iter()
        .copied()
        .map(TicketId)
        .collect();
    limits::count(
        "ticket_ids",
        tickets.len(),
        limits::TICKETS_PER_ORDER as usize,
    )
    .map_err(|e| ServiceError::InvalidBody(e.to_string()))?;
    let idem = Idem {
        request_hash: sha256(&[method.as_str().as_bytes(), uri.path().as_bytes(), &body.raw]),
        key: key.0,
    };
    let first = app
        .store
        .cancel_booking(idem, token, tickets, app.booking_context())
        .await?;
    Ok(super::online::answer(first))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Queued {
    pub queued: bool,
}

#[utoipa::path(post, path = "/v1/bookings/{token}/resend", tag = "shop", summary = "Send the booking's email again", params(("token" = String, Path, description = "The token from the booking's link")), responses((status = 202, description = "The email is queued", body = Queued), (status = 404, description = "unknown_booking", body = tessera_core::api::ErrorBody), (status = 429, description = "too_many_resends", body = tessera_core::api::ErrorBody)))]
pub async fn resend<S: Store>(
    State(app): State<AppState<S>>,
    Path(text): Path<String>,
) -> Result<Response, ServiceError> {
    let token = token(text)?;
    app.store
        .resend_booking(token, app.booking_context())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Queued { queued: true })).into_response())
}
