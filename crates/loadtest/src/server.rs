//! The real `tessera-server` as a child process: a fresh database in a
//! temporary directory, the demo museum loaded, served on a loopback port,
//! with every process's clock shifted to a known opening hour (a Wednesday at
//! least a week ahead, 11:05 in Paris) so runs do not depend on the wall clock.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use jiff::civil::Date;
use jiff::Timestamp;
use tessera_core::clock::{Clock, OFFSET_ENV};
use tessera_core::slot::SlotId;
use tessera_server::testkit::{demo_fixture, paris, test_day};

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
}

impl ServerOptions {
    pub fn new(binary: PathBuf) -> ServerOptions {
        ServerOptions {
            binary,
            commit: "group".into(),
            config_toml: None,
            local_time: "11:05".into(),
        }
    }
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub offset_secs: i64,
    pub day: Date,
    pub url: String,
    pub port: u16,
    /// A sales channel's token (made at start): online confirms need one.
    pub channel_token: String,
    options: ServerOptions,
    child: Option<Child>,
}

impl Server {
    /// `init` a fresh database and `serve` it on 127.0.0.1:0.
    pub fn start(options: ServerOptions) -> Result<Server> {
        let day = test_day();
        let target: Timestamp = format!("{day}T{}:00", options.local_time)
            .parse::<jiff::civil::DateTime>()
            .context("local time")?
            .to_zoned(paris())
            .context("local time exists in Paris")?
            .timestamp();
        let offset_secs = target.duration_since(Timestamp::now()).as_secs();
        let dir = tempfile::Builder::new()
            .prefix("tessera-loadtest-")
            .tempdir()
            .context("temp dir")?;
        let db = dir.path().join("server.db");
        let mut me = Server {
            dir,
            db,
            offset_secs,
            day,
            url: String::new(),
            port: 0,
            channel_token: String::new(),
            options,
            child: None,
        };
        let fixture = demo_fixture();
        let db_str = me.db_str();
        me.cli_ok(&[
            "init",
            "--db",
            &db_str,
            "--fixtures",
            &fixture.display().to_string(),
            "--days",
            "14",
        ])?;
        me.channel_token =
            me.cli_ok(&["channel", "add", "--db", &db_str, "--name", "Load test"])?;
        // The harness plays thousands of visitors from one loopback address.
        let toml = format!(
            "{}\n{}",
            me.options.config_toml.as_deref().unwrap_or(""),
            tessera_server::testkit::UNLIMITED_CLIENTS_TOML
        );
        std::fs::write(me.dir.path().join("server.toml"), toml)?;
        me.spawn(0)?;
        Ok(me)
    }

    pub fn clock(&self) -> Clock {
        Clock::with_offset_secs(self.offset_secs)
    }

    pub fn db_str(&self) -> String {
        self.db.display().to_string()
    }

    pub fn slot(&self, hhmm: &str) -> SlotId {
        format!("{}T{hhmm}", self.day)
            .parse()
            .expect("valid slot id")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Runs a `tessera-server` subcommand on this server's clock.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.options.binary)
            .args(args)
            .env(OFFSET_ENV, self.offset_secs.to_string())
            .env("TESSERA_LOG", "error")
            .output()
            .with_context(|| format!("running {}", self.options.binary.display()))
    }

    fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "tessera-server {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn set_capacity(&self, slot: SlotId, capacity: u32) -> Result<()> {
        let db = self.db_str();
        self.cli_ok(&[
            "capacity",
            "--db",
            &db,
            "--slot",
            &slot.to_string(),
            "--set",
            &capacity.to_string(),
        ])?;
        Ok(())
    }

    /// A one-time enrolment code for a counter or a gate.
    pub fn enrolment_code(&self, role: &str, name: &str) -> Result<String> {
        let db = self.db_str();
        self.cli_ok(&["enrol", "--db", &db, "--role", role, "--name", name])
    }

    fn spawn(&mut self, port: u16) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(&self.options.binary);
        cmd.args(["serve", "--db", &self.db_str(), "--listen", &listen])
            .args(["--commit", &self.options.commit]);
        cmd.arg("--config").arg(self.dir.path().join("server.toml"));
        let mut child = cmd
            .env(OFFSET_ENV, self.offset_secs.to_string())
            .env("TESSERA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.options.binary.display()))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("server did not start; log:\n{}", self.log_tail());
            }
        };
        let url = line
            .split_whitespace()
            .last()
            .ok_or_else(|| anyhow!("unexpected first line from the server: {line:?}"))?
            .to_string();
        self.port = url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow!("no port in {url:?}"))?;
        self.url = url;
        self.child = Some(child);
        Ok(())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: no shutdown code runs; only what was fsynced survives.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same file and the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let port = self.port;
        let started = Instant::now();
        let mut attempt = 0u64;
        loop {
            match self.spawn(port) {
                Ok(()) => return Ok(()),
                Err(e) if started.elapsed() > Duration::from_secs(20) => {
                    return Err(e.context("server did not restart within 20 s"))
                }
                Err(_) => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(50 * attempt.min(10)));
                }
            }
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

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
