//! The HTTP side a gate's peers talk to: a pushed admission, and a full
//! exchange for catch-up. Every body is bounded and checked item by item;
//! anything refused is answered with a 4xx and a reason, logged, and never
//! merged. Requests are bounded in number and time as well as size.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
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
    let head: ExchangeHead = match serde_json::from_slice(&raw) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "peer exchange refused: malformed");
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"from\": …, \"admissions\": [...]}}: {e}"),
            );
        }
    };
    match terminal.check_peer_hello(&head.from) {
        Ok(Ok(())) => {}
        Ok(Err(r)) => {
            tracing::warn!(reason = %r, device = %head.from.device_id, "peer exchange refused: not a certified peer");
            return refuse(StatusCode::FORBIDDEN, format!("not a certified peer: {r}"));
        }
        Err(e) => return unavailable(e),
    }
    // Only now, from a certified peer, are the items built.
    let request = match serde_json::from_slice::<ExchangeItems>(&raw) {
        Ok(items) => ExchangeRequest {
            from: head.from,
            digest: head.digest,
            admissions: items.admissions,
        },
        Err(e) if e.to_string().contains(TOO_MANY_ITEMS) => {
            tracing::warn!("peer exchange refused: too many items");
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("at most {EXCHANGE_ITEMS} admissions per exchange"),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "peer exchange refused: malformed");
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("unreadable admissions: {e}"),
            );
        }
    };
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
/// Of those, one address may have this many: a machine on the LAN that
/// opens slow requests cannot take every place (a gate sends one push and
/// one exchange at a time to each peer).
const PER_ADDRESS: u32 = 4;
/// A pushed admission is a few hundred bytes: one that takes longer to
/// arrive is a stalled or hostile sender.
const PUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// An exchange (body included) that takes longer is dropped.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

struct Gatekeeper {
    permits: Semaphore,
    in_flight: Mutex<HashMap<IpAddr, u32>>,
}

/// One address's request in flight, counted until dropped.
struct InFlight<'a> {
    keeper: &'a Gatekeeper,
    ip: IpAddr,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self
            .keeper
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Gatekeeper {
    fn admit(&self, ip: IpAddr) -> Option<InFlight<'_>> {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(InFlight { keeper: self, ip })
    }
}

async fn bounded(State(keeper): State<Arc<Gatekeeper>>, request: Request, next: Next) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let Some(_mine) = keeper.admit(ip) else {
        tracing::warn!(%ip, "gate peer refused: too many requests at once from one address");
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests at once from this address",
        );
    };
    let Ok(_permit) = keeper.permits.try_acquire() else {
        tracing::warn!("gate peer listener busy; request refused");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "busy; try again");
    };
    let limit = if request.uri().path() == ADMISSION_PATH {
        PUSH_TIMEOUT
    } else {
        EXCHANGE_TIMEOUT
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%ip, "gate peer request timed out");
            refuse(StatusCode::REQUEST_TIMEOUT, "request took too long")
        }
    }
}

pub(crate) fn router(terminal: Terminal) -> Router {
    let keeper = Arc::new(Gatekeeper {
        permits: Semaphore::new(CONCURRENT_REQUESTS),
        in_flight: Mutex::new(HashMap::new()),
    });
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
        .layer(middleware::from_fn_with_state(keeper, bounded))
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
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
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
