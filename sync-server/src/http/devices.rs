//! Enrolment and the public keys a gate needs to verify codes offline.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tessera_core::api::devices::{EnrolRequest, Enrolled, PublicKeys};
use tessera_core::limits;

use super::extract::ApiJson;
use super::AppState;
use crate::error::ServiceError;
use crate::store::{Refusal, Store};

#[utoipa::path(post, path = "/v1/devices/enrol", tag = "devices", summary = "Enrol a counter, gate or supervisor device with a one-time code", request_body = tessera_core::api::devices::EnrolRequest, responses((status = 201, description = "Enrolled: the token is shown once", body = tessera_core::api::devices::Enrolled), (status = 403, description = "enrolment_code_invalid: unknown, expired or used", body = tessera_core::api::ErrorBody), (status = 422, description = "invalid_body (name, public key)", body = tessera_core::api::ErrorBody)))]
pub async fn enrol<S: Store>(
    State(app): State<AppState<S>>,
    body: ApiJson<EnrolRequest>,
) -> Result<(StatusCode, Json<Enrolled>), ServiceError> {
    let request = body.value;
    limits::text("name", request.name.trim(), limits::DEVICE_NAME_CHARS)
        .map_err(|e| ServiceError::InvalidBody(e.to_string()))?;
    if limits::chars(&request.code) > limits::ENROLMENT_CODE_CHARS {
        return Err(Refusal::EnrolmentCodeInvalid.into());
    }
    let enrolled = app.store.enrol(request).await?;
    Ok((StatusCode::CREATED, Json(enrolled)))
}

#[utoipa::path(get, path = "/v1/keys", tag = "devices", summary = "Public keys that sign tickets (server and enrolled counters)", responses((status = 200, description = "Every signing key, revoked ones flagged", body = tessera_core::api::devices::PublicKeys)))]
pub async fn keys<S: Store>(State(app): State<AppState<S>>) -> Json<PublicKeys> {
    Json(app.store.public_keys())
}
