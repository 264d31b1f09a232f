//! Server configuration: built-in defaults, then an optional TOML file, then
//! environment variables and command-line flags (clap reads both). The file
//! `sync-server/tessera-server.example.toml` documents every key.

use std::net::SocketAddr;
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
