//! The HTTP side a gate's peers talk to: a pushed admission, and a full
//! exchange for catch-up. Every body is bounded and checked item by item;
//! anything refused is answered with a 4xx and a reason, logged, and never
//! merged. Requests are bounded in number and time as well as size.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::message::{PeerAdmission, PeerRefusal};
use super::wire::*;
use crate::error::TerminalError;
use crate::Terminal;

fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    (
        status,
        Json(PeerError {
            error: error.into(),
        }),
    )
        .into_response()
}

fn status_of(r: &PeerRefusal) -> StatusCode {
    match r {
        PeerRefusal::Malformed(_) => StatusCode::BAD_REQUEST,
        PeerRefusal::NotToday(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::FORBIDDEN,
    }
}

fn unavailable(e: TerminalError) -> Response {
    tracing::warn!(error = %e, "peer message not handled");
    refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// The body, or why it cannot be read (too large, cut short).
fn body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, (StatusCode, String)> {
    body.map_err(|e| {
        let status = e.status();
        let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("body larger than {limit} bytes")
        } else {
            format!("unreadable body: {e}")
        };
        tracing::warn!(%error, "peer message refused");
        (status, error)
    })
}

async fn push(State(terminal): State<Terminal>, raw: Result<Bytes, BytesRejection>) -> Response {
    let raw = match body(raw, ADMISSION_BODY_BYTES) {
        Ok(b) => b,
        Err((status, error)) => return refuse(status, error),
    };
    let item: serde_json::Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "peer admission refused: not JSON");
            return refuse(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}"));
        }
    };
    match terminal.merge_peer_admissions(vec![item]).await {
        Ok(merged) => match merged.refused.first() {
            Some(r) => refuse(status_of(r), r.to_string()),
            None => Json(PushResponse {
                merged: merged.new > 0,
            })
            .into_response(),
        },
        Err(e) => unavailable(e),
    }
}

async fn exchange(
    State(terminal): State<Terminal>,
    raw: Result<Bytes, BytesRejection>,
) -> Response {
    let raw = match body(raw, EXCHANGE_BODY_BYTES) {
        Ok(b) => b,
        Err((status, error)) => return refuse(status, error),
    };
    let request: ExchangeRequest = match serde_json::from_slice(&raw) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "peer exchange refused: malformed");
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"admissions\": [...]}}: {e}"),
            );
        }
    };
    match terminal.check_peer_hello(&request.from) {
        Ok(Ok(())) => {}
        Ok(Err(r)) => {
            tracing::warn!(reason = %r, device = %request.from.device_id, "peer exchange refused: not a certified peer");
            return refuse(StatusCode::FORBIDDEN, format!("not a certified peer: {r}"));
        }
        Err(e) => return unavailable(e),
    }
    if let (Some(theirs), true) = (request.digest, request.admissions.is_empty()) {
        return match terminal.peer_digest() {
            Ok(mine) => Json(ExchangeResponse {
                in_sync: mine == theirs,
                accepted: 0,
                refused: 0,
                admissions: vec![],
            })
            .into_response(),
            Err(e) => unavailable(e),
        };
    }
    if request.admissions.len() > EXCHANGE_ITEMS {
        tracing::warn!(
            items = request.admissions.len(),
            "peer exchange refused: too many items"
        );
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {EXCHANGE_ITEMS} admissions per exchange"),
        );
    }
    // What the sender has, so the answer carries only what it lacks.
    let theirs: HashSet<(Uuid, Uuid)> = request
        .admissions
        .iter()
        .filter_map(|v| serde_json::from_value::<PeerAdmission>(v.clone()).ok())
        .map(|a| (a.ticket_id, a.device_id))
        .collect();
    let merged = match terminal.merge_peer_admissions(request.admissions).await {
        Ok(m) => m,
        Err(e) => return unavailable(e),
    };
    let admissions = match terminal.peer_admissions() {
        Ok(all) => all
            .into_iter()
            .filter(|a| !theirs.contains(&(a.ticket_id, a.device_id)))
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect(),
        Err(e) => return unavailable(e),
    };
    Json(ExchangeResponse {
        in_sync: false,
        accepted: merged.accepted,
        refused: merged.refused.len() as u32,
        admissions,
    })
    .into_response()
}

/// Requests handled at once; more are told to come back (the sender's next
/// exchange does), so a flood cannot queue unbounded work behind the scans.
const CONCURRENT_REQUESTS: usize = 16;
/// A request (body included) that takes longer is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = permits.try_acquire() else {
        tracing::warn!("gate peer listener busy; request refused");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "busy; try again");
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!("gate peer request timed out");
            refuse(StatusCode::REQUEST_TIMEOUT, "request took too long")
        }
    }
}

pub(crate) fn router(terminal: Terminal) -> Router {
    let permits = Arc::new(Semaphore::new(CONCURRENT_REQUESTS));
    Router::new()
        .route(
            ADMISSION_PATH,
            post(push).layer(DefaultBodyLimit::max(ADMISSION_BODY_BYTES)),
        )
        .route(
            EXCHANGE_PATH,
            post(exchange).layer(DefaultBodyLimit::max(EXCHANGE_BODY_BYTES)),
        )
        .with_state(terminal)
        .layer(middleware::from_fn_with_state(permits, bounded))
}

/// A running listener: stopping it closes the port and its open
/// connections, as if the gate had left the LAN.
pub(crate) struct Listening {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Listening {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Binds the listener and serves until stopped.
pub(crate) async fn serve(
    terminal: Terminal,
    addr: SocketAddr,
) -> Result<Listening, TerminalError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        TerminalError::Invalid(format!("cannot listen for gate peers on {addr}: {e}"))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| TerminalError::Storage(format!("listener address: {e}")))?;
    let app = router(terminal);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "gate peer listener stopped");
        }
    });
    Ok(Listening {
        addr: bound,
        stop,
        task,
    })
}
