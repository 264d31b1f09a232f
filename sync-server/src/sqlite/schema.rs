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
    #[error("cannot make database {path} readable by its owner only: {source}")]
    Permissions {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
}

pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/0001_init.sql")),
        M::up(include_str!("../../migrations/0002_counters.sql")),
        M::up(include_str!("../../migrations/0003_gates_reports.sql")),
        M::up(include_str!("../../migrations/0004_idempotency_log.sql")),
        M::up(include_str!("../../migrations/0005_quarantine.sql")),
        M::up(include_str!("../../migrations/0006_gate_times.sql")),
        M::up(include_str!("../../migrations/0007_staff.sql")),
        M::up(include_str!(
            "../../migrations/0008_idempotency_evicted.sql"
        )),
        M::up(include_str!(
            "../../migrations/0009_quarantine_resolution.sql"
        )),
        M::up(include_str!("../../migrations/0010_payments_orders.sql")),
        M::up(include_str!("../../migrations/0011_mail_outbox.sql")),
        M::up(include_str!("../../migrations/0012_waitlist.sql")),
        M::up(include_str!("../../migrations/0013_waitlist_bounds.sql")),
        M::up(include_str!("../../migrations/0014_history_indexes.sql")),
        M::up(include_str!(
            "../../migrations/0015_sales_by_device_slot.sql"
        )),
        M::up(include_str!("../../migrations/0016_history_bounds.sql")),
        M::up(include_str!(
            "../../migrations/0017_idempotency_compact.sql"
        )),
    ])
}

/// Opens (creating if needed) and migrates. Every connection, the server's and
/// an admin command's alike, gets the same durability settings.
///
/// The database holds the server's ticket-signing key, so the file and its
/// WAL and shared-memory files are readable by their owner only (0600):
/// created so, and tightened (with a warning) if found open to others. The
/// key stays in the database rather than in a file of its own so that a
/// backup of the database is a complete, consistent server; guarding the
/// file guards both.
pub fn open(path: &Path) -> Result<Connection, OpenError> {
    let shown = path.display().to_string();
    owner_only(path).map_err(|e| OpenError::Permissions {
        path: shown.clone(),
        source: e,
    })?;
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

/// Creates the database file 0600 if it is missing, and takes away any
/// group/other access from it and its `-wal`/`-shm` files. SQLite creates
/// the WAL and shared-memory files with the database file's mode, so a
/// database created here never has a readable moment.
#[cfg(unix)]
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path.as_os_str();
    if name.is_empty() || name == ":memory:" {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = name.to_owned();
        file.push(suffix);
        let file = Path::new(&file);
        let Ok(meta) = std::fs::metadata(file) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))?;
            tracing::warn!(file = %file.display(), was = format!("{:o}", mode & 0o777), "database file was open to other users; now owner-only");
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn owner_only(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }

    /// SQLite's plan for `sql`, one line per step.
    fn plan(conn: &rusqlite::Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let n = stmt.parameter_count();
        let params: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                r.get::<_, String>(3)
            })
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("\n")
    }

    /// Issue 11: the start-up and per-sync queries reach their rows through
    /// the index made for them, not through one that reads a growing share
    /// of the table (the planner has no statistics to tell them apart).
    #[test]
    fn history_bounded_queries_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::open(&dir.path().join("plan.db")).unwrap();

        let startup = plan(&conn, super::super::state::OLDER_UNSETTLED_SLOTS_SQL);
        assert!(
            startup.contains("USING INDEX leases_unsettled_by_slot"),
            "{startup}"
        );

        let tally = plan(&conn, super::super::sync::TALLY_OF_SQL);
        assert!(!tally.contains("counter_voids_by_device_time"), "{tally}");
        assert_eq!(tally.matches("sales_by_device_slot").count(), 2, "{tally}");

        let voided = plan(
            &conn,
            "SELECT ticket_id FROM tickets WHERE voided_at IS NOT NULL AND slot_id >= ?1",
        );
        assert!(voided.contains("tickets_voided_by_slot"), "{voided}");
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
