//! Enrolment and the public keys a gate needs to verify codes offline.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tessera_core::api::devices::{EnrolRequest, Enrolled, PublicKeys};
use tessera_core::limits;

use super::extract::ApiJson;
use super::AppState;
use crate::error::ServiceError;
use crate::store::Store;

pub async fn enrol<S: Store>(
    State(app): State<AppState<S>>,
    body: ApiJson<EnrolRequest>,
) -> Result<(StatusCode, Json<Enrolled>), ServiceError> {
    let request = body.value;
    limits::text("name", request.name.trim(), limits::DEVICE_NAME_CHARS)
        .map_err(|e| ServiceError::InvalidBody(e.to_string()))?;
    if limits::chars(&request.code) > limits::ENROLMENT_CODE_CHARS {
        return Err(ServiceError::EnrolmentCodeInvalid);
    }
    let enrolled = app.store.enrol(request).await?;
    Ok((StatusCode::CREATED, Json(enrolled)))
}

pub async fn keys<S: Store>(State(app): State<AppState<S>>) -> Json<PublicKeys> {
    Json(app.store.public_keys())
}
