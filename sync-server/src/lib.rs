//! tessera-server: the authoritative inventory of every slot, the online
//! booking API, counter leases and sync, gate validation and reports.
//!
//! `store` is the storage trait and `sqlite` its embedded implementation (one
//! writer thread, group commit); `http` is the axum edge; `config` and `clock`
//! are what a deployment sets. The binary in `main.rs` only parses arguments.

pub mod config;
pub mod error;
pub mod http;
pub mod secrets;
pub mod sqlite;
pub mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

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
    let upkeep = store.spawn_upkeep();
    let writer_died = store.writer_died();
    let state = AppState {
        store,
        clock,
        entry: config.entry,
        metrics: metrics_handle(),
        pins: Default::default(),
    };
    let app = router(state, config.max_body_bytes);
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
    let (tx, rx) = oneshot::channel::<()>();
    let (failed_tx, failed) = watch::channel(None);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = rx => {}
                    // Without a writer every write would answer 503: stop
                    // listening instead and let the owner restart us.
                    reason = writer_died => {
                        tracing::error!(%reason, "stopping: the server can no longer take writes");
                        let _ = failed_tx.send(Some(reason));
                    }
                }
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "server stopped with an error");
        }
    });
    Ok(RunningServer {
        addr,
        museum,
        shutdown: Some(tx),
        task,
        upkeep,
        failed,
    })
}

pub mod reports;
#[cfg(feature = "testkit")]
pub mod testkit;
