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

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/0001_init.sql")),
        M::up(include_str!("../../migrations/0002_counters.sql")),
        M::up(include_str!("../../migrations/0003_gates_reports.sql")),
        M::up(include_str!("../../migrations/0004_idempotency_log.sql")),
        M::up(include_str!(
            "../../migrations/0008_idempotency_evicted.sql"
        )),
    ])
}

/// Opens (creating if needed) and migrates. Every connection, the server's and
/// an admin command's alike, gets the same durability settings.
pub fn open(path: &Path) -> Result<Connection, OpenError> {
    let shown = path.display().to_string();
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

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        super::migrations().validate().unwrap();
    }
}
