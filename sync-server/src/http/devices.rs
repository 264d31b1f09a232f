//! Enrolment and the public keys a gate needs to verify codes offline.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tessera_core::api::devices::{EnrolRequest, Enrolled, PublicKeys};

use super::extract::ApiJson;
use super::AppState;
use crate::error::ServiceError;
use crate::store::Store;

pub async fn enrol<S: Store>(
    State(app): State<AppState<S>>,
    body: ApiJson<EnrolRequest>,
) -> Result<(StatusCode, Json<Enrolled>), ServiceError> {
    let request = body.value;
    let name = request.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ServiceError::InvalidBody(
            "name must be 1-100 characters".into(),
        ));
    }
    if request.code.len() > 64 {
        return Err(ServiceError::EnrolmentCodeInvalid);
    }
    let enrolled = app.store.enrol(request).await?;
    Ok((StatusCode::CREATED, Json(enrolled)))
}

pub async fn keys<S: Store>(State(app): State<AppState<S>>) -> Json<PublicKeys> {
    Json(app.store.public_keys())
}
