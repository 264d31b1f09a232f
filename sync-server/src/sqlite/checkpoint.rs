//! WAL checkpoints off the writer's commit path, with the WAL kept bounded.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold, on the writer's thread: 13.5 % of the writer's time on a hot
//! slot (docs/BENCHMARKS.md). So the writer's connection turns it off, and a
//! thread of its own (`tessera-checkpoint`, its own connection) copies the
//! WAL back into the database with PASSIVE checkpoints, which never wait for
//! the writer nor block it.
//!
//! A passive checkpoint alone does not bound the WAL: SQLite rewinds the WAL
//! only when a writer starts a transaction and finds every frame copied back
//! and no reader using it, and under continuous writes new frames arrive
//! before that happens. A RESTART checkpoint from another connection would
//! have to wait for the writer's lock, which a busy writer almost never lets
//! go. So the writer itself, between batches (never inside a batch's
//! transaction), checks the WAL's size and, past the bound, runs a TRUNCATE
//! checkpoint: as the writer it waits for no writer, only for readers still
//! reading older frames, and by then the passive checkpoints have copied
//! most of the WAL already. A reader holding an old snapshot for long can
//! still make that checkpoint give up; it is tried again after the next
//! batch, with a short wait so the writer never stalls on a slow report.
//!
//! Durability is untouched: commits still fsync the WAL (synchronous=FULL)
//! before anyone is answered; checkpoints only move committed pages.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rusqlite::Connection;

use super::state::Shared;

/// Default bound on the WAL file (`wal_limit_mib` in the config).
pub const DEFAULT_WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
/// How often the checkpoint thread copies the WAL back.
const PASSIVE_EVERY: Duration = Duration::from_millis(100);
/// How long the writer's own checkpoint waits for readers before it gives
/// up until the next batch.
const TRUNCATE_WAIT: Duration = Duration::from_millis(200);
/// The writer's connection's usual wait on a locked database.
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Turns SQLite's in-commit automatic checkpoint off on the writer's
/// connection (the checkpoint thread and `WalBound` do its work).
pub fn writer_connection(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)
}

/// Starts the thread that runs passive checkpoints for as long as the store
/// (its `Shared`) lives.
pub(crate) fn spawn(db: &Path, shared: &Arc<Shared>) -> std::io::Result<()> {
    let db = db.to_path_buf();
    let alive: Weak<Shared> = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name("tessera-checkpoint".into())
        .spawn(move || run(&db, alive))
        .map(|_| ())
}

fn run(db: &Path, alive: Weak<Shared>) {
    let conn = match Connection::open(db) {
        Ok(c) => c,
        Err(e) => {
            // The writer's bound still keeps the WAL in check, only slower.
            tracing::error!(error = %e, "checkpoint thread could not open the database");
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::from_millis(50));
    loop {
        std::thread::sleep(PASSIVE_EVERY);
        if alive.strong_count() == 0 {
            return;
        }
        match checkpoint(&conn, "PASSIVE") {
            Ok(_) => {}
            // Busy: the writer is truncating, or another checkpoint runs.
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy => {}
            Err(e) => tracing::warn!(error = %e, "passive checkpoint failed"),
        }
    }
}

/// What one checkpoint did: frames in the WAL, frames copied back, and
/// whether it was stopped short by a reader or another connection.
#[derive(Debug, Clone, Copy)]
pub struct Checkpointed {
    pub busy: bool,
    pub log_frames: i64,
    pub copied_frames: i64,
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Checkpointed> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Checkpointed {
            busy: r.get::<_, i64>(0)? != 0,
            log_frames: r.get(1)?,
            copied_frames: r.get(2)?,
        })
    })
}

/// The writer's side: the WAL file and its bound.
pub(crate) struct WalBound {
    wal: PathBuf,
    limit: u64,
}

impl WalBound {
    pub fn new(db: &Path, limit: u64) -> WalBound {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        WalBound {
            wal: PathBuf::from(wal),
            limit: limit.max(1),
        }
    }

    /// Run by the writer between batches: past the bound, copies what is
    /// left of the WAL back and truncates it. Never fails the writer: a
    /// checkpoint that cannot finish is tried again after the next batch.
    pub fn keep(&self, conn: &Connection) {
        let size = match std::fs::metadata(&self.wal) {
            Ok(m) => m.len(),
            Err(_) => return,
        };
        if size <= self.limit {
            return;
        }
        if conn.busy_timeout(TRUNCATE_WAIT).is_err() {
            return;
        }
        let done = checkpoint(conn, "TRUNCATE");
        let _ = conn.busy_timeout(WRITER_BUSY_TIMEOUT);
        match done {
            Ok(c) if !c.busy => {
                metrics::counter!("tessera_wal_truncations_total").increment(1);
            }
            Ok(c) => {
                tracing::warn!(
                    wal_bytes = size,
                    frames = c.log_frames,
                    copied = c.copied_frames,
                    "WAL over its bound and a reader kept the checkpoint from finishing; trying after the next batch"
                );
                metrics::counter!("tessera_wal_truncations_blocked_total").increment(1);
            }
            Err(e) => {
                tracing::warn!(error = %e, wal_bytes = size, "WAL over its bound; checkpoint failed, trying after the next batch");
                metrics::counter!("tessera_wal_truncations_blocked_total").increment(1);
            }
        }
    }
}
