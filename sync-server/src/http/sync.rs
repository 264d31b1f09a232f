//! `POST /v1/sync`: a counter's one round trip.

use axum::extract::State;
use axum::Json;
use tessera_core::api::devices::Role;
use tessera_core::api::sync::{SyncRequest, SyncResponse};

use super::extract::{ApiJson, Device};
use super::AppState;
use crate::error::ServiceError;
use crate::store::Store;

pub async fn sync<S: Store>(
    State(app): State<AppState<S>>,
    device: Device,
    body: ApiJson<SyncRequest>,
) -> Result<Json<SyncResponse>, ServiceError> {
    let counter = device.require(&[Role::Counter], "syncing sales")?;
    Ok(Json(app.store.sync(counter, body.value).await?))
}
