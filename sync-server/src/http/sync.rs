//! `POST /v1/sync`: a counter's one round trip.

use axum::extract::State;
use axum::Json;
use tessera_core::api::devices::Role;
use tessera_core::api::sync::{SyncRequest, SyncResponse};

use super::extract::{ApiJson, Device};
use super::AppState;
use crate::error::ServiceError;
use crate::store::Store;

#[utoipa::path(post, path = "/v1/sync", tag = "counter", summary = "A counter's round trip: sales, voids, leases and shifts up; leases, catalogue, staff, keys and availability down", security(("device_token" = [])), request_body = tessera_core::api::sync::SyncRequest, responses((status = 200, description = "What was stored, and what the counter needs", body = tessera_core::api::sync::SyncResponse)))]
pub async fn sync<S: Store>(
    State(app): State<AppState<S>>,
    device: Device,
    body: ApiJson<SyncRequest>,
) -> Result<Json<SyncResponse>, ServiceError> {
    let counter = device.require(&[Role::Counter], "syncing sales")?;
    Ok(Json(app.store.sync(counter, body.value).await?))
}
