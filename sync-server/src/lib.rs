//! tessera-server: the authoritative inventory of every slot, the online
//! booking API, counter leases and sync, gate validation and reports.
//!
//! `store` is the storage trait and `sqlite` its embedded implementation (one
//! writer thread, group commit); `postgres` is the backend for several
//! processes on one database (work in progress: the online path and the
//! web shop);
//! `http` is the axum edge; `config` and `clock`
//! are what a deployment sets. The binary in `main.rs` only parses arguments.

pub mod admin;
pub mod config;
pub mod delivery;
pub mod error;
mod failpoint;
mod gates;
pub mod http;
pub mod operator;
pub mod payments;
pub mod postgres;
pub mod push;
pub mod queue;
pub mod request_id;
pub mod secrets;
pub mod sqlite;
pub mod store;
mod uploads;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

use crate::config::{ConfigError, ServerConfig};
use crate::http::{metrics_handle, router, AppState};
use crate::sqlite::{OpenError, SqliteStore};
use tessera_core::clock::Clock;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Payments(#[from] payments::ProviderConfigError),
    #[error(transparent)]
    Admin(#[from] sqlite::admin::AdminError),
    #[error(transparent)]
    Postgres(#[from] postgres::PgError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A server running in this process (tests, the load harness).
pub struct RunningServer {
    pub addr: SocketAddr,
    pub museum: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    upkeep: tokio::task::JoinHandle<()>,
    mailer: tokio::task::JoinHandle<()>,
    refunds: tokio::task::JoinHandle<()>,
    failed: watch::Receiver<Option<String>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resolves with the reason once the server can no longer take writes
    /// (its writer thread died). It has then stopped listening; a process
    /// should exit non-zero so that its service manager starts it afresh.
    pub async fn failed(&self) -> String {
        let mut failed = self.failed.clone();
        let reason = failed
            .wait_for(Option::is_some)
            .await
            .map(|reason| reason.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops accepting, finishes in-flight requests, and returns.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.upkeep.abort();
        self.mailer.abort();
        self.refunds.abort();
        let _ = (&mut self.task).await;
    }
}

/// Opens the database and serves it on `config.listen` until stopped.
pub async fn start(
    db: &Path,
    config: &ServerConfig,
    clock: Clock,
) -> Result<RunningServer, StartError> {
    let store = Arc::new(SqliteStore::open(db, config.store_config()?, clock)?);
    let museum = store::Store::catalogue(store.as_ref()).museum.name.clone();
    // Bound first: the default public address names the port we got.
    let (listener, addr, public_url) = bind(config).await?;
    let demo_secret = sqlite::admin::demo_payment_secret(db)?;
    let context = payments::ProviderContext {
        public_url: public_url.to_string(),
        demo_secret,
    };
    // Emailed links need the address visitors reach us at, which may only
    // be known now (port 0); upkeep, which can make waiting-list offers,
    // starts once it is set.
    store.set_public_url(&public_url);
    let upkeep = store.spawn_upkeep();
    let mailer = delivery::mailer::spawn(store.clone(), config.mail.clone(), clock);
    let writer_died = store.writer_died();
    let state = app_state(store, config, clock, context, public_url)?;
    let refunds = tokio::spawn(http::payments::run_refunds(state.clone()));
    let push = state.push.clone();
    let devices = state.devices.clone();
    let app = router(state, config.max_body_bytes);
    Ok(run_server(
        listener,
        addr,
        museum,
        app,
        config,
        writer_died,
        Background {
            tasks: [upkeep, mailer, refunds],
            push,
            devices,
        },
    ))
}

/// What runs beside the HTTP server: upkeep, the mailer, refunds, and the
/// push hub whose streams end when the server stops.
struct Background {
    tasks: [tokio::task::JoinHandle<()>; 3],
    push: Arc<push::Hub>,
    devices: Arc<push::DeviceHub>,
}

/// Serves `app` on `listener` until stopped, or until `writer_died`
/// resolves: without a writer every write would answer 503, so the server
/// stops listening instead and lets its owner restart it.
fn run_server(
    listener: TcpListener,
    addr: SocketAddr,
    museum: String,
    app: axum::Router,
    config: &ServerConfig,
    writer_died: impl std::future::Future<Output = String> + Send + 'static,
    background: Background,
) -> RunningServer {
    let Background {
        tasks: [upkeep, mailer, refunds],
        push,
        devices,
    } = background;
    let (tx, rx) = oneshot::channel::<()>();
    let header_timeout = Duration::from_secs(config.clients.header_read_timeout_secs.max(1));
    let (failed_tx, failed) = watch::channel(None);
    let task = tokio::spawn(serve(listener, app, header_timeout, async move {
        tokio::select! {
            _ = rx => {}
            reason = writer_died => {
                tracing::error!(%reason, "stopping: the server can no longer take writes");
                let _ = failed_tx.send(Some(reason));
            }
        }
        // Event streams never end by themselves: ended here, so that the
        // graceful shutdown does not wait its 30 s for them (listeners
        // reconnect to whichever server answers next).
        push.close();
        devices.close();
    }));
    RunningServer {
        addr,
        museum,
        shutdown: Some(tx),
        task,
        upkeep,
        mailer,
        refunds,
        failed,
    }
}

/// Binds `config.listen`: the listener, its address and the address
/// visitors reach us at (the default names the port we got).
async fn bind(config: &ServerConfig) -> Result<(TcpListener, SocketAddr, Arc<str>), StartError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let public_url: Arc<str> = config
        .shop
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .into();
    Ok((listener, addr, public_url))
}

/// Events a push subscriber may have waiting before it is dropped as too
/// slow (told to resync), so that it never holds anyone else up.
const PUSH_BUFFER: usize = 64;
/// Push subscribers one process serves at once; more are answered 503.
const PUSH_SUBSCRIBERS: usize = 20_000;
/// Devices connected to the device channel at once; more are answered 503
/// (they still sync on their own clock).
const PUSH_DEVICES: usize = 2_000;

/// What every request handler shares, over either backend: the payment
/// provider the configuration names (and the demo provider's page when it
/// is the demo), limits, metrics and the public address.
fn app_state<S: store::Store>(
    store: Arc<S>,
    config: &ServerConfig,
    clock: Clock,
    context: payments::ProviderContext,
    public_url: Arc<str>,
) -> Result<AppState<S>, StartError> {
    let provider = payments::from_config(&config.payments, &context)?;
    // The installation's secret, also behind the waiting rooms' key.
    let installation_secret = context.demo_secret.clone();
    let demo = (provider.name() == payments::demo::NAME).then(|| {
        Arc::new(payments::demo::DemoProvider::new(
            context.demo_secret,
            &public_url,
        ))
    });
    let push = Arc::new(push::Hub::new(PUSH_BUFFER, PUSH_SUBSCRIBERS));
    let devices = Arc::new(push::DeviceHub::new(PUSH_DEVICES));
    tokio::spawn(push::run(
        push.clone(),
        devices.clone(),
        store.clone(),
        store.changes(),
    ));
    let tz = store
        .catalogue()
        .time_zone()
        .map_err(|e| ConfigError::Invalid(format!("the catalogue's time zone: {e}")))?;
    let queue = Arc::new(
        queue::Rooms::new(&config.waiting_rooms, &tz, &installation_secret)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?,
    );
    tokio::spawn(queue::run(queue.clone(), store.clone(), clock));
    Ok(AppState {
        queue,
        push,
        devices,
        store,
        clock,
        entry: config.entry,
        metrics: metrics_handle(),
        pins: Default::default(),
        edge: Arc::new(http::limits::Edge::new(config.clients.clone())),
        config: Arc::new(config.clone()),
        payments: provider,
        demo,
        public_url,
    })
}

/// Connects to PostgreSQL at `url` and serves it on `config.listen` until
/// stopped. WORK IN PROGRESS: the online inventory path and the web shop
/// (payments, bookings, mail, the waiting list) are served (see `postgres`);
/// the rest answers 501 `not_on_postgres`.
pub async fn start_postgres(
    url: &str,
    config: &ServerConfig,
    clock: Clock,
) -> Result<RunningServer, StartError> {
    // Installed first, so that what the store records while it loads
    // (`tessera_pg_cached_slots`) is kept.
    metrics_handle();
    let store = Arc::new(
        postgres::PgStore::connect(url, config.store_config()?, &config.postgres, clock).await?,
    );
    let museum = store::Store::catalogue(store.as_ref()).museum.name.clone();
    let (listener, addr, public_url) = bind(config).await?;
    let demo_secret = store.demo_secret();
    let context = payments::ProviderContext {
        public_url: public_url.to_string(),
        demo_secret,
    };
    // As on SQLite: offers made by upkeep's sweep need the public address.
    store.set_public_url(&public_url);
    let upkeep = store.spawn_upkeep();
    // Every process runs a mailer and a refund task; they claim their rows
    // (see `postgres::outbox` and `postgres::checkout::due_refunds`).
    let mailer = delivery::mailer::spawn(store.clone(), config.mail.clone(), clock);
    let writer_died = store.writer_died();
    let state = app_state(store, config, clock, context, public_url)?;
    let refunds = tokio::spawn(http::payments::run_refunds(state.clone()));
    let push = state.push.clone();
    let devices = state.devices.clone();
    let app = router(state, config.max_body_bytes);
    Ok(run_server(
        listener,
        addr,
        museum,
        app,
        config,
        writer_died,
        Background {
            tasks: [upkeep, mailer, refunds],
            push,
            devices,
        },
    ))
}

/// Accepts connections until `shutdown`, then lets in-flight requests finish.
///
/// hyper's own connection loop rather than `axum::serve`, which sets no
/// header-read timeout: a client that opens a connection and sends its
/// request head slowly (or never) is cut off after `header_timeout`, so a few
/// hundred such connections cannot hold the server's sockets.
async fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            // The client's address, for per-client limits.
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection closed with an error");
            }
        });
    }
    drop(listener);
    // A client that never reads its answer would hold the shutdown for ever.
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open 30 s after shutdown began; closing them");
    }
}

pub mod reports;
#[cfg(feature = "testkit")]
pub mod testkit;
