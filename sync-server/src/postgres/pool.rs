//! The one bounded set of connections a process borrows from for all work
//! outside the online writer's group commit: the web shop's transactions,
//! counters' rounds, gates, reports and low-volume side writes (enrolment,
//! PIN attempts, approvals, leases, upkeep). A gate's scan must not wait
//! behind a batch of holds, so these do not go through the writer; and
//! connecting per request would cost a round of authentication each time
//! and, under a burst of counter rounds, open connections without bound.
//!
//! At most `size` connections are open; a request that cannot get one
//! within `wait` is answered 503 (the client retries) instead of queueing
//! without end. With the writer, the reader and the listener, a process
//! opens `PgLimits::total()` connections at most (see `connector`).

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::Client;

use super::connector::Connector;
use super::schema::PgError;
use crate::store::StoreError;

/// Why no connection was lent.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("all {size} pooled PostgreSQL connections stayed busy for {waited:?}")]
    Busy { size: usize, waited: Duration },
    #[error(transparent)]
    Connect(#[from] PgError),
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> StoreError {
        match &e {
            PoolError::Busy { .. } => {
                metrics::counter!("tessera_pg_pool_busy_total").increment(1);
                tracing::warn!(error = %e, "no PostgreSQL connection free; answered 503");
            }
            PoolError::Connect(_) => tracing::warn!(error = %e, "cannot reach PostgreSQL"),
        }
        StoreError::Unavailable
    }
}

pub struct Pool {
    connector: Connector,
    size: usize,
    wait: Duration,
    idle: std::sync::Mutex<Vec<Client>>,
    permits: Semaphore,
}

/// A connection lent by the pool; it goes back when dropped, unless it has
/// closed. A transaction dropped before its commit is rolled back by
/// tokio-postgres before the connection's next statement, so a connection
/// never comes back inside someone else's transaction.
pub struct Pooled<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl Pool {
    pub fn new(connector: Connector, size: usize, wait: Duration) -> Pool {
        let size = size.max(1);
        Pool {
            connector,
            size,
            wait,
            idle: std::sync::Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
        }
    }

    pub async fn get(&self) -> Result<Pooled<'_>, PoolError> {
        let permit = match tokio::time::timeout(self.wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            // The semaphore is never closed; were it, no connection is lent.
            Ok(Err(_)) | Err(_) => {
                return Err(PoolError::Busy {
                    size: self.size,
                    waited: self.wait,
                })
            }
        };
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match reused {
            Some(client) => client,
            None => self.connector.connect("pool").await?,
        };
        Ok(Pooled {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
    }
}

impl Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Only `drop` takes it out.
        self.client
            .as_ref()
            .expect("a pooled connection until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .expect("a pooled connection until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                self.pool
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(client);
            }
        }
    }
}
