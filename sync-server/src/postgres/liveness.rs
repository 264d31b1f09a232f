//! Whether this process's LISTEN connection is alive, for `/healthz`.
//!
//! Every process answers availability, the sellable check and device
//! tokens from its in-memory view (`cache`), which only NOTIFYs keep fresh.
//! A listener that is disconnected, or connected to a backend that no
//! longer answers, leaves that view stale — a revoked device would still be
//! let in — while the writer may be perfectly healthy. So the listener
//! proves itself every [`HEARTBEAT`] (a round trip on its own connection,
//! bounded by [`HEARTBEAT_WAIT`]) and after every full re-read; a process
//! whose listener has not done so for [`STALE_AFTER`] reports unhealthy, and
//! a load balancer takes it out until the listener is back and has re-read
//! everything. A reconnect within that time (PostgreSQL restarted, a backend
//! terminated) is no outage.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the listener checks its connection.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A heartbeat not answered within this is a dead connection: reconnect.
pub const HEARTBEAT_WAIT: Duration = Duration::from_secs(2);
/// Unhealthy once the listener was last known alive this long ago.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

pub struct ListenerHealth {
    /// When the listener last proved its connection (or the process
    /// started: its first full read happens before it serves).
    last_alive: Mutex<Instant>,
}

impl Default for ListenerHealth {
    fn default() -> Self {
        ListenerHealth {
            last_alive: Mutex::new(Instant::now()),
        }
    }
}

impl ListenerHealth {
    /// The connection answered (and the view is as fresh as its NOTIFYs).
    pub fn alive(&self) {
        *self.last_alive.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        metrics::gauge!("tessera_pg_listener_up").set(1.0);
    }

    /// How long the listener has not been known alive, if longer than
    /// [`STALE_AFTER`].
    pub fn stale_for(&self) -> Option<Duration> {
        let since = self
            .last_alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        (since > STALE_AFTER).then(|| {
            metrics::gauge!("tessera_pg_listener_up").set(0.0);
            since
        })
    }
}
