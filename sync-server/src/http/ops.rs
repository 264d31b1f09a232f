//! Operations endpoints: health and Prometheus metrics.

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::time::Instant;

use futures_util::FutureExt;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::AppState;
use crate::store::Store;

/// 200 while the server can take writes; 503 once it cannot (its writer is
/// gone, or does not answer within two seconds).
#[utoipa::path(get, path = "/healthz", tag = "ops", summary = "Liveness: the writer runs and the database answers", responses((status = 200, description = "Healthy", body = super::openapi::Health), (status = 503, description = "The writer or the database is down; the process is about to exit", body = super::openapi::Health)))]
pub async fn healthz<S: Store>(State(app): State<AppState<S>>) -> Response {
    if app.store.healthy().await {
        Json(serde_json::json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable"})),
        )
            .into_response()
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be sparse");
            }
            handle
        })
        .clone()
}

#[utoipa::path(get, path = "/metrics", tag = "ops", summary = "Prometheus metrics", responses((status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain")))]
pub async fn metrics<S: Store>(State(app): State<AppState<S>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Logs each request's method, route and outcome; never headers or bodies,
/// which carry tokens and personal data, nor the path itself: paths carry
/// booking and offer tokens, checkout and payment ids. The route's template
/// (`/v1/bookings/{token}`) is logged instead. Each request gets an id,
/// returned in `X-Request-Id` and in the body of a 5xx, and logged with
/// whatever goes wrong while serving it, so an operator can find a caller's
/// failure.
pub async fn log_requests(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = match req.extensions().get::<MatchedPath>() {
        Some(route) => route.as_str().to_string(),
        None => redacted_path(req.uri().path()),
    };
    let request_id = tessera_core::ids::new_id().simple().to_string();
    // A bug in a handler must answer its own client with a 500 naming the
    // request, not drop the connection without a word.
    let handled = AssertUnwindSafe(crate::request_id::with_request_id(
        request_id.clone(),
        next.run(req),
    ))
    .catch_unwind()
    .await;
    let mut response = match handled {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(%method, %path, %request_id, "handler panicked");
            metrics::counter!("tessera_handler_panics_total").increment(1);
            crate::error::ServiceError::Internal {
                request_id: request_id.clone(),
            }
            .into_response()
        }
    };
    if let Ok(value) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    metrics::counter!("tessera_http_requests_total", "status" => status.to_string()).increment(1);
    metrics::histogram!("tessera_http_request_seconds").record(elapsed_ms / 1000.0);
    if status >= 500 {
        tracing::warn!(%method, %path, status, elapsed_ms, %request_id, "request");
    } else {
        tracing::debug!(%method, %path, status, elapsed_ms, %request_id, "request");
    }
    response
}

/// A path no route matched (the shop's files and its client routes, such as
/// `/booking/{token}`, or anything a scanner tries), as the log shows it: the
/// first segment when it is a short plain word, every other segment `*`. What
/// the visitor's page was is kept; a token in it is not.
fn redacted_path(path: &str) -> String {
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next().unwrap_or_default();
    let plain = first.len() <= 24
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    let mut shown = String::from("/");
    shown.push_str(if plain { first } else { "*" });
    for _ in segments {
        shown.push_str("/*");
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::redacted_path;

    #[test]
    fn unmatched_paths_lose_everything_but_a_plain_first_segment() {
        let token = "a".repeat(52);
        assert_eq!(redacted_path(&format!("/booking/{token}")), "/booking/*");
        assert_eq!(redacted_path(&format!("/offer/{token}/")), "/offer/*/*");
        assert_eq!(redacted_path(&format!("/{token}")), "/*");
        assert_eq!(redacted_path("/co_abc%2Fdef"), "/*");
        assert_eq!(redacted_path("/"), "/");
        assert_eq!(redacted_path("/index.html"), "/index.html");
        assert_eq!(redacted_path("/assets/index-3f2a.js"), "/assets/*");
    }
}
