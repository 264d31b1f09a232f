//! `POST /v1/gate/sync`: offline scans in, keys and revocations out.

use axum::extract::State;
use axum::Json;
use tessera_core::api::devices::Role;
use tessera_core::api::gate_sync::{GateSyncRequest, GateSyncResponse};

use super::extract::{ApiJson, Device};
use super::AppState;
use crate::error::ServiceError;
use crate::store::Store;

#[utoipa::path(post, path = "/v1/gate/sync", tag = "gate", summary = "A gate uploads offline scans and learns keys, voids and the entry policy", security(("device_token" = [])), request_body = tessera_core::api::gate_sync::GateSyncRequest, responses((status = 200, description = "Scans stored; what the gate needs offline", body = tessera_core::api::gate_sync::GateSyncResponse)))]
pub async fn gate_sync<S: Store>(
    State(app): State<AppState<S>>,
    device: Device,
    body: ApiJson<GateSyncRequest>,
) -> Result<Json<GateSyncResponse>, ServiceError> {
    let gate = device.require(&[Role::Gate, Role::Counter], "gate sync")?;
    Ok(Json(
        app.store.gate_sync(gate, body.value, app.entry).await?,
    ))
}
