//! Opening the database the way Tessera needs it: WAL, full fsync on commit,
//! foreign keys, and the migrations in `migrations/` applied in order.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot migrate database {path}: {source}")]
    Migrate {
        path: String,
        source: rusqlite_migration::Error,
    },
    #[error("database {0} has not been initialised; run `tessera-server init` first")]
    NotInitialised(String),
    #[error("database {0} is already initialised")]
    AlreadyInitialised(String),
    #[error("stored catalogue is unreadable: {0}")]
    BadCatalogue(String),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/0001_init.sql")),
        M::up(include_str!("../../migrations/0002_counters.sql")),
        M::up(include_str!("../../migrations/0003_gates_reports.sql")),
        M::up(include_str!("../../migrations/0004_idempotency_log.sql")),
        M::up(include_str!("../../migrations/0007_staff.sql")),
    ])
}

/// Opens (creating if needed) and migrates. Every connection, the server's and
/// an admin command's alike, gets the same durability settings.
pub fn open(path: &Path) -> Result<Connection, OpenError> {
    let shown = path.display().to_string();
    owner_only(path);
    let mut conn = Connection::open(path).map_err(|source| OpenError::Open {
        path: shown.clone(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // WAL lets readers (reports, admin commands) run beside the writer;
    // synchronous=FULL makes each commit durable before it is acknowledged.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrations()
        .to_latest(&mut conn)
        .map_err(|source| OpenError::Migrate {
            path: shown,
            source,
        })?;
    Ok(conn)
}

/// The database holds the server's ticket-signing key, staff PIN verifiers
/// and device token hashes: no other user may read it. A new file is created
/// owner-only (no moment of being world-readable); an existing one, and its
/// WAL and shared-memory files, are tightened. SQLite gives the WAL and
/// shared-memory files it creates the database file's mode.
fn owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let file = std::path::PathBuf::from(file);
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            if meta.permissions().mode() & 0o077 != 0 {
                if let Err(e) =
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                {
                    tracing::warn!(file = %file.display(), error = %e, "cannot make the database owner-only");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn the_database_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh.db");
        let conn = super::open(&fresh).unwrap();
        conn.execute("CREATE TABLE t (x INTEGER)", []).unwrap();
        // An older database, world-readable, is tightened on open.
        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        let conn2 = super::open(&old).unwrap();
        conn2.execute("CREATE TABLE t (x INTEGER)", []).unwrap();
        for file in [
            "fresh.db",
            "fresh.db-wal",
            "fresh.db-shm",
            "old.db",
            "old.db-wal",
        ] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
        }
    }
}
