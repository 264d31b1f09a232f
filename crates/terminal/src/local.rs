//! The terminal's own SQLite file: opened with WAL and `synchronous=FULL` so a
//! committed sale survives a power cut, migrated at start, and a small typed
//! key/value store for identity and cached server data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
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
        M::up(include_str!("../migrations/0005_live_sync.sql")),
        M::up(include_str!("../migrations/0006_unsent_indexes.sql")),
        M::up(include_str!("../migrations/0007_peer_admissions.sql")),
    ])
}

pub(crate) fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_FILE)
}

/// What a database file is checked for before anything is written to it.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Where enrolment builds a new database before moving it into place, so a
/// crash half-way never leaves an empty `terminal.db` behind.
const ENROLLING_FILE: &str = "terminal.db.enrolling";

/// The refusal for a database that is there but damaged. It names the file
/// and what is wrong, because its unsynced sales may be in it: the counter
/// must not carry on (or start afresh) over it.
fn damaged(path: &Path, what: &str) -> TerminalError {
    TerminalError::Storage(format!(
        "{} is damaged: {what}. Sales in it that were not uploaded yet may be lost, so this \
         counter will not start on it or replace it: keep the file for recovery, restore a \
         backup or move it aside, then enrol this machine again",
        path.display()
    ))
}

/// Opens this directory's existing terminal database, or `None` when there is
/// none. Never creates one: only enrolment does ([`create`]). A file that is
/// there but empty or not a sound SQLite database is refused, never rebuilt.
pub(crate) fn open_existing(dir: &Path) -> Result<Option<Connection>, TerminalError> {
    let path = db_path(dir);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(TerminalError::Storage(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    if !meta.is_file() {
        return Err(damaged(&path, "it is not a file"));
    }
    check_header(&path, meta.len())?;
    let mut conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| damaged(&path, &format!("SQLite cannot open it ({e})")))?;
    restrict_permissions(&path);
    configure(&conn).map_err(|e| damaged(&path, &format!("SQLite cannot read it ({e})")))?;
    integrity(&conn, &path)?;
    migrate(&mut conn, &path)?;
    Ok(Some(conn))
}

/// A 0-byte file or one with another header is not a database SQLite would
/// open as such: it would quietly start a fresh, empty one over it.
fn check_header(path: &Path, len: u64) -> Result<(), TerminalError> {
    if len == 0 {
        // Committed pages can sit in the write-ahead log until a checkpoint;
        // only with no log either is an empty file certainly empty.
        let wal = path.with_extension("db-wal");
        let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if wal_len == 0 {
            return Err(damaged(
                path,
                "the file is empty (0 bytes) where this counter's sales, shifts and identity should be",
            ));
        }
        return Ok(());
    }
    let mut header = [0u8; 16];
    let read = std::fs::File::open(path)
        .and_then(|mut f| {
            use std::io::Read;
            f.read_exact(&mut header)
        })
        .map(|_| header == *SQLITE_MAGIC);
    match read {
        Ok(true) => Ok(()),
        Ok(false) => Err(damaged(path, "it is not a SQLite database (wrong header)")),
        Err(_) => Err(damaged(
            path,
            &format!("it is cut short ({len} bytes, not even a SQLite header)"),
        )),
    }
}

/// `quick_check` reads every page's structure: a truncated or overwritten
/// file is caught here rather than at the first sale that touches it.
fn integrity(conn: &Connection, path: &Path) -> Result<(), TerminalError> {
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| damaged(path, &format!("SQLite cannot check it ({e})")))?;
    if problems.len() == 1 && problems[0] == "ok" {
        Ok(())
    } else {
        Err(damaged(
            path,
            &format!("SQLite's check found: {}", problems.join("; ")),
        ))
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), TerminalError> {
    migrations()
        .to_latest(conn)
        .map_err(|e| TerminalError::Storage(format!("cannot migrate {}: {e}", path.display())))
}

/// A database being created by enrolment, under a temporary name until
/// [`Creating::install`] moves it into place.
pub(crate) struct Creating {
    pub conn: Connection,
    temp: PathBuf,
    target: PathBuf,
}

/// Starts a new terminal database for enrolment, beside where it will live.
pub(crate) fn create(dir: &Path) -> Result<Creating, TerminalError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| TerminalError::Storage(format!("cannot create {}: {e}", dir.display())))?;
    let temp = dir.join(ENROLLING_FILE);
    // Left over from an enrolment that never finished: it holds no sales.
    remove_with_journal(&temp);
    let mut conn = Connection::open(&temp)?;
    restrict_permissions(&temp);
    conn.busy_timeout(Duration::from_secs(10))?;
    // A rollback journal while building: on close nothing is left beside the
    // file, so it can be moved as one. `open_existing` switches it to WAL.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn, &temp)?;
    Ok(Creating {
        conn,
        temp,
        target: db_path(dir),
    })
}

impl Creating {
    /// Moves the finished database into place; refuses to replace a file that
    /// appeared meanwhile (a hard link cannot overwrite).
    pub(crate) fn install(self) -> Result<(), TerminalError> {
        let Creating { conn, temp, target } = self;
        conn.close().map_err(|(_, e)| TerminalError::from(e))?;
        std::fs::File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| TerminalError::Storage(format!("cannot write {}: {e}", temp.display())))?;
        std::fs::hard_link(&temp, &target).map_err(|e| {
            TerminalError::Storage(format!("cannot create {}: {e}", target.display()))
        })?;
        remove_with_journal(&temp);
        if let Some(dir) = target.parent() {
            // The new name must survive a power cut too.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Enrolment failed: nothing of it stays on disk.
    pub(crate) fn abandon(self) {
        let Creating { conn, temp, .. } = self;
        drop(conn);
        remove_with_journal(&temp);
    }
}

fn remove_with_journal(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("enrolling-journal"));
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
    /// Gate peers this device shares admissions with (base URLs).
    pub const PEERS: &str = "peers";
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }

    /// Issue 11: the leases given back at every sync are found from the
    /// unsettled ones, not from every slot the counter ever knew.
    #[test]
    fn closed_leases_are_found_from_the_unsettled_ones() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        super::migrations().to_latest(&mut conn).unwrap();
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT lease_id FROM leases WHERE {}",
            crate::sync::CLOSED_UNSETTLED
        );
        let plan: Vec<String> = conn
            .prepare(&sql)
            .unwrap()
            .query_map([0i64], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("leases_unsettled"), "{plan}");
        assert!(!plan.contains("SCAN slots"), "{plan}");

        let unsent: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT report FROM shifts WHERE closed_at IS NOT NULL AND uploaded = 0",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(unsent.contains("shifts_unsent"), "{unsent}");
    }
}
