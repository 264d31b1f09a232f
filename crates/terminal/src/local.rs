//! The terminal's own SQLite file: opened with WAL and `synchronous=FULL` so a
//! committed sale survives a power cut, migrated at start, and a small typed
//! key/value store for identity and cached server data.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tessera_core::api::devices::Role;
use uuid::Uuid;

use crate::error::TerminalError;

pub(crate) const DB_FILE: &str = "terminal.db";

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../migrations/0001_init.sql")),
        M::up(include_str!("../migrations/0002_gate.sql")),
        M::up(include_str!("../migrations/0003_quarantine.sql")),
        M::up(include_str!("../migrations/0004_staff.sql")),
    ])
}

pub(crate) fn open(dir: &Path) -> Result<Connection, TerminalError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| TerminalError::Storage(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(DB_FILE);
    let mut conn = Connection::open(&path)?;
    restrict_permissions(&path);
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrations()
        .to_latest(&mut conn)
        .map_err(|e| TerminalError::Storage(format!("cannot migrate {}: {e}", path.display())))?;
    Ok(conn)
}

/// The file holds the device token and signing key: owner-only.
fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

pub(crate) fn get<T: DeserializeOwned>(
    conn: &Connection,
    key: &str,
) -> Result<Option<T>, TerminalError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row(params![key], |r| r.get(0))
        .optional()?;
    match text {
        Some(t) => Ok(Some(serde_json::from_str(&t)?)),
        None => Ok(None),
    }
}

pub(crate) fn set<T: Serialize + ?Sized>(
    conn: &Connection,
    key: &str,
    value: &T,
) -> Result<(), TerminalError> {
    let text = serde_json::to_string(value)?;
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, text])?;
    Ok(())
}

/// Who this terminal is to the server.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub device_id: Uuid,
    pub role: Role,
    pub name: String,
    pub server_url: String,
    pub token: String,
    pub key_id: Option<u32>,
    /// Hex seed of the ticket-signing key (counters only).
    pub signing_seed: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token or the key.
        f.debug_struct("Identity")
            .field("device_id", &self.device_id)
            .field("role", &self.role)
            .field("name", &self.name)
            .field("server_url", &self.server_url)
            .finish()
    }
}

pub(crate) mod keys {
    pub const IDENTITY: &str = "identity";
    pub const CATALOGUE: &str = "catalogue";
    pub const CATALOGUE_VERSION: &str = "catalogue_version";
    pub const STAFF: &str = "staff";
    pub const PUBLIC_KEYS: &str = "public_keys";
    pub const TALLIES: &str = "tallies";
    pub const ACKED_SEQ: &str = "acked_seq";
    pub const LAST_SYNC_AT: &str = "last_sync_at";
    pub const LAST_SYNC_ERROR: &str = "last_sync_error";
    pub const ONLINE: &str = "online";
    pub const PRINTER: &str = "printer";
    pub const ENTRY_POLICY: &str = "entry_policy";
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
