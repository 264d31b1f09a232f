//! `GET /v1/events/device`: the device channel (Server-Sent Events). A
//! counter, gate or supervisor device hears that something concerning it
//! changed (`tessera_core::api::events`), and syncs or re-fetches at once
//! instead of on its next tick. Events carry topics, not state: a missed one
//! costs a tick, never a wrong figure, so a device that reads slowly just
//! gets its pending topics merged.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tessera_core::api::events::DeviceEvent;

use super::extract::Device;
use super::AppState;
use crate::error::ServiceError;
use crate::push::{ConnectError, Connection};
use crate::store::Store;

const HEARTBEAT: Duration = Duration::from_secs(15);
/// The least time between two takes of a device's pending set: what changes
/// meanwhile is merged, so a burst of sales costs a counter one sync, not
/// one per sale, and a device whose socket still takes bytes is not flooded
/// either. The first change after a quiet spell goes at once; the counter
/// app paces its own syncs the same way.
const PACE: Duration = Duration::from_millis(100);

#[utoipa::path(get, path = "/v1/events/device", tag = "devices", summary = "What concerns this device, pushed as it changes (Server-Sent Events)", description = "First a `hello` event (sync once to catch up), then one event per topic that changed: `slots` (with the slot ids, at most 500; none means any), `leases` (this counter's own, changed without it asking), `catalogue`, `staff`, `voided`, `keys`, `policy`. Counters hear slots, leases, catalogue, staff, voided, keys and policy; gates voided, keys, policy and catalogue; supervisor devices slots. Topics that changed while the device was not reading are merged: one event each. A newer connection of the same device ends this one; a revoked device's stream ends at its next event or within 15 s. A comment line every 15 s keeps idle connections open.", security(("device_token" = [])), responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = DeviceStreamEvent), (status = 401, description = "No device token, or an unknown or revoked one (unauthorized)", body = tessera_core::api::ErrorBody), (status = 503, description = "Too many devices connected to this server (unavailable)", body = tessera_core::api::ErrorBody)))]
pub async fn device<S: Store>(
    State(app): State<AppState<S>>,
    Device(device): Device,
    headers: HeaderMap,
) -> Result<Response, ServiceError> {
    // The extractor checked it; kept to check again while the stream is
    // open, so that a revoked device stops hearing anything.
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let connection = app.devices.connect(&device).map_err(|e| match e {
        ConnectError::Full(_) => ServiceError::Unavailable,
    })?;
    let events = stream_of(connection, app.store.clone(), token);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response())
}

struct Open<S> {
    connection: Connection,
    store: Arc<S>,
    token: String,
    seq: u64,
    ready: VecDeque<DeviceEvent>,
    /// When the last pending set was taken.
    taken_at: Option<tokio::time::Instant>,
}

impl<S: Store> Open<S> {
    fn still_enrolled(&self) -> bool {
        self.store
            .authenticate(&self.token)
            .is_some_and(|d| d.device_id.0 == self.connection.device())
    }
}

/// The connection's events as they become pending; ends when the
/// connection is replaced or closed, or the device is revoked.
fn stream_of<S: Store>(
    connection: Connection,
    store: Arc<S>,
    token: String,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
    let open = Open {
        connection,
        store,
        token,
        seq: 0,
        ready: VecDeque::new(),
        taken_at: None,
    };
    stream::unfold(open, |mut open| async move {
        loop {
            if let Some(event) = open.ready.pop_front() {
                open.seq += 1;
                let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".into());
                let sse = SseEvent::default()
                    .id(open.seq.to_string())
                    .event(event.topic.as_str())
                    .data(data);
                return Some((Ok(sse), open));
            }
            if let Some(at) = open.taken_at {
                tokio::time::sleep_until(at + PACE).await;
            }
            let mailbox = open.connection.mailbox.clone();
            tokio::select! {
                events = mailbox.next() => {
                    let events = events?;
                    if !open.still_enrolled() {
                        return None;
                    }
                    open.taken_at = Some(tokio::time::Instant::now());
                    open.ready.extend(events);
                }
                _ = tokio::time::sleep(HEARTBEAT) => {
                    if !open.still_enrolled() {
                        return None;
                    }
                }
            }
        }
    })
}

/// One event of the device stream, for the OpenAPI document (see
/// `events::StreamEvent`): every event's data is a `DeviceEvent`.
pub struct DeviceStreamEvent;

impl utoipa::PartialSchema for DeviceStreamEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut any = utoipa::openapi::schema::OneOfBuilder::new();
        for topic in crate::store::Topics::ALL {
            any = any.item(super::events::event_schema(
                topic.as_str(),
                Some("^[0-9]+$"),
                serde_json::json!({"$ref": "#/components/schemas/DeviceEvent"}),
            ));
        }
        any.description(Some(
            "Event name = topic; data = a DeviceEvent naming the same topic",
        ))
        .into()
    }
}

impl utoipa::ToSchema for DeviceStreamEvent {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use tessera_core::api::events::DeviceTopic;
        use utoipa::PartialSchema;
        schemas.push(("DeviceEvent".into(), DeviceEvent::schema()));
        schemas.push(("DeviceTopic".into(), DeviceTopic::schema()));
        <DeviceEvent as utoipa::ToSchema>::schemas(schemas);
    }
}
