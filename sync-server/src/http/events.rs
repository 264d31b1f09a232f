//! `GET /v1/events/availability`: a museum day's availability as it
//! changes, pushed (Server-Sent Events), for the web shop's pages and any
//! partner site. Resumable with `Last-Event-ID`; a heartbeat comment every
//! 15 s keeps proxies from closing a quiet stream.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tessera_core::slot::parse_date;

use super::extract::Query;
use super::limits::Client;
use super::online::DateQuery;
use super::AppState;
use crate::error::ServiceError;
use crate::push::{Event, Resume, SubscribeError, Subscription};
use crate::store::Store;

const HEARTBEAT: Duration = Duration::from_secs(15);

#[utoipa::path(get, path = "/v1/events/availability", tag = "online", summary = "A museum day's places, pushed as they change (Server-Sent Events)", description = "First a `snapshot` event (the day, as `GET /v1/availability` answers it), then a `changed` event with the lines that changed after each commit. Each event has an id; reconnecting with `Last-Event-ID` sends only what was missed, or a new `snapshot` if this server cannot (restarted, another process, too long ago). A listener too slow to keep up gets a `resync` event and the stream ends. A comment line every 15 s keeps idle connections open.", params(("date" = String, Query, format = Date, description = "Museum day, YYYY-MM-DD"), ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received")), responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = StreamEvent), (status = 400, description = "date missing or not a date (bad_request)", body = tessera_core::api::ErrorBody), (status = 429, description = "This client has too many streams open (too_many_streams)", body = tessera_core::api::ErrorBody), (status = 503, description = "Too many listeners on this server (unavailable)", body = tessera_core::api::ErrorBody)))]
pub async fn availability<S: Store>(
    State(app): State<AppState<S>>,
    Client(client): Client,
    headers: HeaderMap,
    Query(q): Query<DateQuery>,
) -> Result<Response, ServiceError> {
    let text = q.date.ok_or_else(|| {
        ServiceError::BadRequest("query parameter date=YYYY-MM-DD is required".into())
    })?;
    let date = parse_date(&text).map_err(|e| ServiceError::BadRequest(e.to_string()))?;
    // An unreadable or foreign id is no resume point: the day is sent whole.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Resume::parse);
    let permit = match app.edge.streams.acquire(client) {
        Ok(p) => p,
        Err(refused) => return Ok(refused.into_response()),
    };
    let fresh = app.store.availability(date).await?;
    let changes = app.store.changes();
    let sub = app
        .push
        .subscribe(date, fresh, resume, &changes)
        .map_err(|e| match e {
            SubscribeError::Full(_) => ServiceError::Unavailable,
        })?;
    let hub = app.push.clone();
    // The permit lives as long as the stream: the client's count goes down
    // when it hangs up.
    let events = stream_of(sub, move |seq| {
        let _held = &permit;
        hub.event_id(seq, date)
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response())
}

/// The first events, then the live ones; if the hub dropped this subscriber
/// for being slow, a last `resync` event says to reconnect without an id.
fn stream_of(
    sub: Subscription,
    id_of: impl Fn(u64) -> String + Send + 'static,
) -> impl Stream<Item = Result<SseEvent, Infallible>> + Send {
    let Subscription {
        first,
        live,
        lagged,
    } = sub;
    let first = stream::iter(first.into_iter().map(Some));
    let live = stream::unfold(Some(live), move |rx| {
        let lagged = lagged.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(e) => Some((Some(e), Some(rx))),
                // Dropped: tell why once, then end.
                None if lagged.load(Ordering::Relaxed) => Some((None, None)),
                None => None,
            }
        }
    });
    futures_util::StreamExt::map(futures_util::StreamExt::chain(first, live), move |e| {
        Ok(match e {
            Some(Event { seq, kind, data }) => SseEvent::default()
                .id(id_of(seq))
                .event(match kind {
                    crate::push::EventKind::Snapshot => "snapshot",
                    crate::push::EventKind::Changed => "changed",
                })
                .data(&*data),
            None => SseEvent::default().event("resync").data(
                r#"{"reason":"too slow: events were dropped; reconnect without Last-Event-ID"}"#,
            ),
        })
    })
}

/// One event of the stream, for the OpenAPI document: what each event's
/// `data` holds depends on its `event` name, so the document says so per
/// name (`contentSchema`), and a client generator or a fuzzer can check the
/// JSON inside.
pub struct StreamEvent;

impl utoipa::PartialSchema for StreamEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use serde_json::json;
        let changed = json!({
            "type": "object",
            "required": ["date", "slots"],
            "properties": {
                "date": {"type": "string", "format": "date"},
                "slots": {"type": "array", "items": {"$ref": "#/components/schemas/SlotAvailability"}}
            }
        });
        let resync = json!({
            "type": "object",
            "required": ["reason"],
            "properties": {"reason": {"type": "string"}}
        });
        let snapshot = json!({"$ref": "#/components/schemas/Availability"});
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(event_schema("snapshot", Some(RESUMABLE_ID), snapshot))
            .item(event_schema("changed", Some(RESUMABLE_ID), changed))
            .item(event_schema("resync", None, resync))
            .description(Some(
                "`snapshot`: the day whole; `changed`: the slots that changed; `resync`: this \
                 listener fell behind, reconnect without Last-Event-ID",
            ))
            .into()
    }
}

impl utoipa::ToSchema for StreamEvent {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use tessera_core::api::online::{Availability, SlotAvailability};
        use utoipa::PartialSchema;
        schemas.push(("Availability".into(), Availability::schema()));
        schemas.push(("SlotAvailability".into(), SlotAvailability::schema()));
        <Availability as utoipa::ToSchema>::schemas(schemas);
    }
}

/// The ids of the public stream: `EPOCH-SEQ-YYYYMMDD`.
const RESUMABLE_ID: &str = "^[0-9a-f]{1,16}-[0-9]+-[0-9]{8}$";

/// One event named `name` whose `data` is JSON matching `data`, with an
/// `id` matching `id_pattern` if it has one.
pub(super) fn event_schema(
    name: &str,
    id_pattern: Option<&str>,
    data: serde_json::Value,
) -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    let data_schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .content_media_type("application/json")
        .extensions(Some(utoipa::openapi::extensions::Extensions::from_iter([
            ("contentSchema", data),
        ])));
    let mut event = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "event",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([name])),
        )
        .required("event")
        .property("data", data_schema)
        .required("data");
    if let Some(pattern) = id_pattern {
        event = event
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(pattern)),
            )
            .required("id");
    }
    event.into()
}
