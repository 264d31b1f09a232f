//! Server configuration: built-in defaults, then an optional TOML file, then
//! environment variables and command-line flags (clap reads both). The file
//! `sync-server/tessera-server.example.toml` documents every key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tessera_core::admission::EntryPolicy;
use tessera_core::inventory::LeasePolicy;

use crate::sqlite::{CommitMode, StoreConfig};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub db: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Minutes an online checkout holds its places.
    pub hold_ttl_secs: u64,
    /// "group" (default) or "per-request".
    pub commit: String,
    pub max_batch: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    pub entry: EntryPolicy,
    /// How counters' leases are sized (see README, "Lease sizing").
    pub leases: LeasePolicy,
    /// "text" or "json".
    pub log_format: String,
    /// What one anonymous client may do (`[clients]` in the example config).
    pub clients: ClientLimits,
    /// Idempotency-Key records the writer keeps in memory; older ones are
    /// found in the database (slower, still correct).
    pub idempotency_keys_in_memory: usize,
}

/// Bounds on what one client (one IP address; one /64 for IPv6) and one
/// connection may take, so anonymous load cannot stop the museum selling.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimits {
    /// A connection that has not sent a whole request head within this time
    /// is closed (slowloris); also closes idle keep-alive connections.
    pub header_read_timeout_secs: u64,
    /// A request body that stalls this long between two reads is refused
    /// (408) and its connection closed.
    pub body_read_timeout_secs: u64,
    /// Holds, confirmations and cancellations per minute, per client.
    pub writes_per_minute: u32,
    /// How many of those may come at once before the rate applies.
    pub write_burst: u32,
    /// Enrolment attempts per minute, per client: code guesses are slow.
    pub enrolments_per_minute: u32,
    pub enrolment_burst: u32,
    /// Admissions one client may hold at once in unexpired checkouts.
    pub max_held_admissions: u32,
    /// Peers (a reverse proxy on this host, say) whose `X-Forwarded-For`
    /// names the real client. Requests from any other peer are keyed by
    /// the peer's own address, whatever headers they send.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            writes_per_minute: 60,
            write_burst: 20,
            enrolments_per_minute: 6,
            enrolment_burst: 3,
            // Two full online carts (20 admissions each): a visitor who
            // abandoned one checkout can start another at once.
            max_held_admissions: 40,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ClientLimits {
    /// Limits so high that nothing is limited: tests and load harnesses
    /// that play thousands of visitors from one loopback address.
    pub fn unlimited() -> ClientLimits {
        ClientLimits {
            writes_per_minute: 1_000_000_000,
            write_burst: 1_000_000_000,
            enrolments_per_minute: 1_000_000_000,
            enrolment_burst: 1_000_000_000,
            max_held_admissions: u32::MAX,
            ..ClientLimits::default()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            db: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            hold_ttl_secs: 600,
            commit: "group".into(),
            max_batch: 512,
            max_body_bytes: 64 * 1024,
            entry: EntryPolicy::default(),
            leases: LeasePolicy::default(),
            log_format: "text".into(),
            clients: ClientLimits::default(),
            idempotency_keys_in_memory: 200_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("commit must be \"group\" or \"per-request\", got {0:?}")]
    Commit(String),
    #[error("no database given: pass --db FILE, set TESSERA_DB or `db` in the config file")]
    NoDatabase,
}

impl ServerConfig {
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let err = |message: String| ConfigError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string()))
    }

    pub fn commit_mode(&self) -> Result<CommitMode, ConfigError> {
        match self.commit.as_str() {
            "group" => Ok(CommitMode::Group),
            "per-request" => Ok(CommitMode::PerRequest),
            other => Err(ConfigError::Commit(other.to_string())),
        }
    }

    pub fn store_config(&self) -> Result<StoreConfig, ConfigError> {
        Ok(StoreConfig {
            hold_ttl: Duration::from_secs(self.hold_ttl_secs.max(1)),
            commit: self.commit_mode()?,
            max_batch: self.max_batch.max(1),
            lease_policy: self.leases,
            idempotency_keys_in_memory: self.idempotency_keys_in_memory,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tessera-server.example.toml");
        let cfg = ServerConfig::from_file(&path).unwrap();
        assert_eq!(cfg.hold_ttl_secs, 600);
        assert!(cfg.commit_mode().is_ok());
    }
}
