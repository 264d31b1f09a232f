//! The real `tessera-server` as a child process, through the test kit's
//! `ServerProcess`: a fresh database in a temporary directory, the demo
//! museum loaded, served on a loopback port, with every process's clock
//! shifted to a known opening hour (a Wednesday at least a week ahead, 11:05
//! in Paris) so runs do not depend on the wall clock. This file only finds
//! the release binary and turns the kit's errors into `anyhow`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use jiff::civil::Date;
use tessera_core::clock::Clock;
use tessera_core::slot::SlotId;
use tessera_server::testkit::{Backend, Launch, ServerProcess};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}

/// The release-built server: `TESSERA_SERVER_BIN` if set, else
/// `target/release/tessera-server` of this workspace. Benchmarks of a debug
/// build mean nothing, so a missing release binary is an error.
pub fn release_server_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TESSERA_SERVER_BIN") {
        let p = PathBuf::from(p);
        if !p.exists() {
            bail!(
                "TESSERA_SERVER_BIN points to {}, which does not exist",
                p.display()
            );
        }
        return Ok(p);
    }
    // Beside this binary when it is itself the release build (any target dir).
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let beside = dir.join("tessera-server");
        if dir.ends_with("release") && beside.exists() {
            return Ok(beside);
        }
    }
    let bin = target_dir().join("release/tessera-server");
    if !bin.exists() {
        bail!(
            "the release server is not built: {} is missing.\n\
             Build it first:  cargo build --release -p tessera-server\n\
             (or point TESSERA_SERVER_BIN at a tessera-server binary)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The debug-built server (tests: `cargo test --workspace` builds it), or
/// `TESSERA_SERVER_BIN`.
pub fn debug_server_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("TESSERA_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let bin = target_dir().join("debug/tessera-server");
    if !bin.exists() {
        bail!(
            "{} is missing; run `cargo build -p tessera-server` (or set TESSERA_SERVER_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub binary: PathBuf,
    /// "group" or "per-request".
    pub commit: String,
    /// Extra TOML for `--config` (e.g. a `[leases]` table).
    pub config_toml: Option<String>,
    /// Local time on the test day that the shifted clocks read at start.
    pub local_time: String,
    /// The day the clocks stand on at start; the testkit's test day if `None`.
    pub day: Option<Date>,
    /// Days of slots `init` generates.
    pub init_days: u32,
    /// The store to serve; the test kit's `TESSERA_TEST_BACKEND` switch
    /// (SQLite unless set) if `None`. On PostgreSQL the test kit starts a
    /// throw-away cluster of the server's own and serves it with
    /// `--database`.
    pub backend: Option<Backend>,
}

impl ServerOptions {
    pub fn new(binary: PathBuf) -> ServerOptions {
        ServerOptions {
            binary,
            commit: "group".into(),
            config_toml: None,
            local_time: "11:05".into(),
            day: None,
            init_days: 14,
            backend: None,
        }
    }
}

/// The server under load: the test kit's [`ServerProcess`] (one copy of the
/// process-spawning code), with the figures the scenarios read kept as
/// fields and errors as `anyhow` instead of panics.
pub struct Server {
    pub db: PathBuf,
    pub offset_secs: i64,
    pub day: Date,
    pub url: String,
    pub port: u16,
    /// A sales channel's token (made at start): online confirms need one.
    pub channel_token: String,
    process: ServerProcess,
}

impl Server {
    /// `init` a fresh database and `serve` it on 127.0.0.1:0.
    pub fn start(options: ServerOptions) -> Result<Server> {
        let mut launch = Launch::new(options.binary);
        launch.local = options.local_time;
        launch.day = options.day;
        launch.args = vec!["--commit".into(), options.commit];
        launch.config_toml = options.config_toml;
        launch.init_days = options.init_days;
        launch.channel = "Load test".into();
        if let Some(backend) = options.backend {
            launch.backend = backend;
        }
        let process = ServerProcess::launch(launch).map_err(|e| anyhow!(e))?;
        let mut me = Server {
            db: process.db.clone(),
            offset_secs: process.offset_secs,
            day: process.day,
            url: String::new(),
            port: 0,
            channel_token: process.channel_token.clone(),
            process,
        };
        me.refresh();
        Ok(me)
    }

    /// Copies what a (re)start may have changed.
    fn refresh(&mut self) {
        self.url = self.process.url.clone();
        self.port = self.process.port();
        self.offset_secs = self.process.offset_secs;
        self.day = self.process.day;
    }

    pub fn clock(&self) -> Clock {
        self.process.clock()
    }

    /// The server process's id (0 while it is not running).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn db_str(&self) -> String {
        self.process.db_str()
    }

    pub fn slot(&self, hhmm: &str) -> SlotId {
        tessera_server::testkit::slot(self.day, hhmm)
    }

    pub fn log_tail(&self) -> String {
        let text = self.process.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Runs a `tessera-server` subcommand on this server's clock; its output.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        self.process.cli_ok(args).map_err(|e| anyhow!(e))
    }

    /// Runs an admin command on this server's store (`--db FILE` or
    /// `--database URL` appended, as the test kit's backend switch says).
    pub fn admin_ok(&self, args: &[&str]) -> Result<String> {
        self.process.admin_ok(args).map_err(|e| anyhow!(e))
    }

    /// The directory that holds the SQLite file, the server's log and its
    /// test config (a temporary directory, removed when the server drops).
    pub fn data_dir(&self) -> &std::path::Path {
        self.process.dir.path()
    }

    /// The store this server serves (`TESSERA_TEST_BACKEND`).
    pub fn backend(&self) -> Backend {
        self.process.backend
    }

    pub fn set_capacity(&self, slot: SlotId, capacity: u32) -> Result<()> {
        self.admin_ok(&[
            "capacity",
            "--slot",
            &slot.to_string(),
            "--set",
            &capacity.to_string(),
        ])?;
        Ok(())
    }

    /// A one-time enrolment code for a counter or a gate.
    pub fn enrolment_code(&self, role: &str, name: &str) -> Result<String> {
        self.admin_ok(&["enrol", "--role", role, "--name", name])
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// SIGKILL: no shutdown code runs; only what was fsynced survives.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts again on the same file and the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.process.try_restart().map_err(|e| anyhow!(e))?;
        self.refresh();
        Ok(())
    }

    /// Restarts with every clock reading `local` on `day`: how the history
    /// benchmark walks one database through a year.
    pub fn restart_at(&mut self, day: Date, local: &str) -> Result<()> {
        self.process.set_clock(day, local).map_err(|e| anyhow!(e))?;
        self.restart()
    }

    /// One number from the server's store (`SELECT COUNT(*) …`), on either
    /// backend (the test kit's backend-neutral query).
    pub fn count(&self, sql: &str) -> Result<i64> {
        let rows = self
            .process
            .try_query(sql)
            .map_err(|e| anyhow!("{sql}: {e}"))?;
        let cell = rows
            .first()
            .and_then(|r| r.first())
            .ok_or_else(|| anyhow!("{sql}: no row"))?;
        cell.parse()
            .map_err(|_| anyhow!("{sql} answered {cell:?}, not a number"))
    }

    /// The size of the server's database: the SQLite file (without its
    /// WAL, which checkpoints empty it), or the PostgreSQL database
    /// (`pg_database_size`: tables, indexes and TOAST).
    pub fn db_bytes(&self) -> Result<u64> {
        match self.backend() {
            Backend::Sqlite => Ok(std::fs::metadata(&self.db).map(|m| m.len()).unwrap_or(0)),
            Backend::Postgres => Ok(self
                .count("SELECT pg_database_size(current_database())")?
                .max(0) as u64),
        }
    }

    /// A read connection to the server's database, for checking what is stored.
    pub fn read_db(&self) -> Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn)
    }
}
