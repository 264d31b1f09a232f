//! A few connections for work outside the online writer's group commit
//! (gates, reports): a gate's scan must not wait behind a batch of holds,
//! and a report's reads must not hold up either. Connecting per request
//! would cost a round of authentication per scan, so connections are kept
//! and reused; at most `size` are open, so a burst of scans queues here
//! instead of exhausting PostgreSQL's connection slots.

use std::ops::{Deref, DerefMut};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::Client;

use super::schema::{connect, PgError};

pub struct Pool {
    url: String,
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
    pub fn new(url: &str, size: usize) -> Pool {
        Pool {
            url: url.to_string(),
            idle: std::sync::Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    pub async fn get(&self) -> Result<Pooled<'_>, PgError> {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match reused {
            Some(client) => client,
            None => connect(&self.url).await?,
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
