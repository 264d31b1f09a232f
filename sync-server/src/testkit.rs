//! Test harness (feature `testkit`): a real `tessera-server` process on a
//! loopback port over a temporary database, the demo museum loaded, and the
//! clock shifted to a known opening hour so tests do not depend on when they run;
//! and the real parts mail tests read back: an SMTP sink, a PDF's QR codes.
//!
//! The backend matrix: `TESSERA_TEST_BACKEND=sqlite` (the default) serves a
//! SQLite file in a temporary directory; `TESSERA_TEST_BACKEND=postgres` gives
//! every [`ServerProcess`] a throw-away PostgreSQL cluster of its own
//! ([`PgCluster`]) and serves it with `--database URL`. Tests reach the store
//! through backend-neutral helpers ([`ServerProcess::store_args`],
//! [`ServerProcess::admin`], [`ServerProcess::count`],
//! [`ServerProcess::query`], [`ServerProcess::execute`]); a test that is
//! about SQLite itself says so with [`skip_unless_sqlite`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use tessera_core::slot::SlotId;

use tessera_core::clock::OFFSET_ENV;

/// PostgreSQL: a throw-away cluster and servers on it (`PgCluster`).
pub mod pg;
pub use pg::{HeldLocks, PgCluster, PgMuseum, PgServer};

/// The switch of the backend matrix: which store every [`ServerProcess`]
/// serves.
pub const BACKEND_ENV: &str = "TESSERA_TEST_BACKEND";

/// What [`ServerProcess::query`] answers for an SQL NULL (on both backends).
pub const NULL: &str = "<NULL>";

/// The store a test server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the server's temporary directory (the default).
    Sqlite,
    /// A PostgreSQL cluster of the server's own, served with `--database`.
    Postgres,
}

impl Backend {
    /// Reads [`BACKEND_ENV`]: `sqlite` (or unset, or empty) or `postgres`.
    pub fn from_env() -> Result<Backend, String> {
        match std::env::var(BACKEND_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Backend::Sqlite),
            Err(e) => Err(format!("{BACKEND_ENV}: {e}")),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "sqlite" => Ok(Backend::Sqlite),
                "postgres" | "postgresql" => Ok(Backend::Postgres),
                other => Err(format!(
                    "{BACKEND_ENV}={other:?}: must be `sqlite` (the default) or `postgres`"
                )),
            },
        }
    }

    pub fn is_sqlite(self) -> bool {
        self == Backend::Sqlite
    }

    pub fn is_postgres(self) -> bool {
        self == Backend::Postgres
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// The backend this test run is on ([`BACKEND_ENV`]); panics on a value that
/// names no backend, so a typo never silently tests SQLite twice.
pub fn backend() -> Backend {
    Backend::from_env().unwrap_or_else(|e| panic!("{e}"))
}

/// For a test that is about SQLite itself (its WAL file, its writer's
/// internals, its file permissions…): on another backend, prints
/// `skipped on PostgreSQL: <reason>` and returns `true`, so the test reads
/// `if testkit::skip_unless_sqlite("inspects the WAL file") { return; }`.
pub fn skip_unless_sqlite(reason: &str) -> bool {
    let backend = backend();
    if backend.is_sqlite() {
        return false;
    }
    eprintln!("skipped on {}: {reason}", backend.name());
    true
}

/// The server binary: `TESSERA_SERVER_BIN`, else next to the running test's
/// `deps` directory (where `cargo test --workspace` builds it).
pub fn server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TESSERA_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("tessera-server");
    assert!(
        bin.exists(),
        "{} not built; run `cargo build -p tessera-server` or set TESSERA_SERVER_BIN",
        bin.display()
    );
    bin
}

pub fn demo_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo-museum.toml")
}

pub fn paris() -> TimeZone {
    TimeZone::get("Europe/Paris").expect("tz database has Europe/Paris")
}

/// A Wednesday at least a week ahead (the demo museum opens 10:00-18:00).
pub fn test_day() -> Date {
    let mut d = Timestamp::now().to_zoned(paris()).date() + jiff::Span::new().days(7);
    while d.weekday() != Weekday::Wednesday {
        d = d.tomorrow().expect("date in range");
    }
    d
}

pub fn slot(date: Date, hhmm: &str) -> SlotId {
    format!("{date}T{hhmm}").parse().expect("valid slot id")
}

/// A `[clients]` config table that limits nothing, for tests and load
/// harnesses whose thousands of visitors all come from 127.0.0.1.
pub const UNLIMITED_CLIENTS_TOML: &str = "[clients]
writes_per_minute = 1000000000
write_burst = 1000000000
enrolments_per_minute = 1000000000
enrolment_burst = 1000000000
token_reads_per_minute = 1000000000
token_read_burst = 1000000000
max_held_admissions = 4294967295
max_streams_per_client = 4294967295
";

/// The channel every test server has, so `Api::confirm` works.
pub const TEST_CHANNEL: &str = "Test partner";

pub struct ServerProcess {
    pub dir: tempfile::TempDir,
    /// The SQLite file (on PostgreSQL: where it would be; nothing is there).
    pub db: PathBuf,
    /// The store this server serves.
    pub backend: Backend,
    pub offset_secs: i64,
    pub url: String,
    pub day: Date,
    /// A trusted sales channel's token ("Test partner"), made at init: what
    /// `POST /v1/holds/{id}/confirm` needs.
    pub channel_token: String,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    /// The `tessera-server` this process runs (and its admin commands).
    binary: PathBuf,
    /// Extra TOML for `--config`, written beside the database.
    config_toml: Option<String>,
    /// What follows `--db` or `--database` in every command: the file, or
    /// the cluster's URL.
    store: String,
    child: Option<Child>,
    /// On PostgreSQL, the server's own cluster: it outlives kills and
    /// restarts of `serve`, and stops when this drops (after `serve`: see
    /// `Drop`).
    pg: Option<PgCluster>,
}

/// How to start a [`ServerProcess`] when the defaults of
/// [`ServerProcess::start_at`] do not fit (load harnesses: a release binary,
/// a config of their own, errors instead of panics).
#[derive(Clone, Debug)]
pub struct Launch {
    pub binary: PathBuf,
    /// Local time on `day` the server's clock reads at start ("11:05").
    pub local: String,
    /// The day the clock stands on; [`test_day`] if `None`.
    pub day: Option<Date>,
    /// Arguments added to `serve` (e.g. `--commit per-request`).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// TOML for `--config`; the per-client limits are lifted in any case
    /// (one loopback address plays every visitor).
    pub config_toml: Option<String>,
    /// Days of slots `init` generates.
    pub init_days: u32,
    /// A sales channel made at init (its token in `channel_token`).
    pub channel: String,
    /// The store to serve; [`backend`] (the `TESSERA_TEST_BACKEND` switch)
    /// unless a harness pins one.
    pub backend: Backend,
}

impl Launch {
    pub fn new(binary: PathBuf) -> Launch {
        Launch {
            binary,
            local: "11:05".into(),
            day: None,
            args: Vec::new(),
            env: Vec::new(),
            config_toml: None,
            init_days: 14,
            channel: TEST_CHANNEL.into(),
            backend: backend(),
        }
    }
}

/// The clock offset (seconds) that makes "now" read `local` on `day` in Paris.
pub fn offset_for(day: Date, local: &str) -> Result<i64, String> {
    let target: Timestamp = format!("{day}T{local}:00")
        .parse::<jiff::civil::DateTime>()
        .map_err(|e| format!("local time {local:?}: {e}"))?
        .to_zoned(paris())
        .map_err(|e| format!("{day} {local} in Paris: {e}"))?
        .timestamp();
    Ok(target.duration_since(Timestamp::now()).as_secs())
}

impl ServerProcess {
    /// Initialises a database and starts a server whose clock reads `local`
    /// (e.g. "11:05") on [`test_day`].
    pub fn start_at(local: &str, extra_args: &[&str]) -> ServerProcess {
        Self::start_with_env(local, extra_args, &[])
    }

    /// Like [`ServerProcess::start_at`], with extra environment for `serve`
    /// (e.g. `TESSERA_TEST_FAILPOINTS`).
    pub fn start_with_env(local: &str, extra_args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut launch = Launch::new(server_binary());
        launch.local = local.to_string();
        launch.args = extra_args.iter().map(|s| s.to_string()).collect();
        launch.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::launch(launch).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Initialises a database and starts a server as `launch` says; an error
    /// (with the server's words) instead of a panic.
    pub fn launch(launch: Launch) -> Result<ServerProcess, String> {
        let day = launch.day.unwrap_or_else(test_day);
        let offset_secs = offset_for(day, &launch.local)?;
        let dir = tempfile::Builder::new()
            .prefix("tessera-server-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let db = dir.path().join("server.db");
        let pg = match launch.backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(PgCluster::start()),
        };
        let store = match &pg {
            None => db.display().to_string(),
            Some(cluster) => cluster.url(),
        };
        let mut me = ServerProcess {
            dir,
            db,
            backend: launch.backend,
            offset_secs,
            url: String::new(),
            day,
            channel_token: String::new(),
            extra_args: launch.args,
            env: launch.env,
            binary: launch.binary,
            config_toml: launch.config_toml,
            store,
            child: None,
            pg,
        };
        me.admin_ok(&[
            "init",
            "--fixtures",
            &demo_fixture().display().to_string(),
            "--days",
            &launch.init_days.to_string(),
        ])?;
        me.channel_token = me.admin_ok(&["channel", "add", "--name", &launch.channel])?;
        me.try_spawn(None)?;
        Ok(me)
    }

    /// Runs an admin command; its trimmed standard output, or an error with
    /// its standard error.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .args(args)
            .env(OFFSET_ENV, self.offset_secs.to_string())
            .env("TESSERA_LOG", "error")
            .output()
            .map_err(|e| format!("running {}: {e}", self.binary.display()))?;
        if !out.status.success() {
            return Err(format!(
                "tessera-server {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The clock every process of this server reads (terminals too).
    pub fn clock(&self) -> tessera_core::clock::Clock {
        tessera_core::clock::Clock::with_offset_secs(self.offset_secs)
    }

    /// Moves this server's clock (and its admin commands') so that it reads
    /// `local` on `day`; takes effect at the next (re)start, since a running
    /// process keeps its offset. How a harness walks a server through days.
    pub fn set_clock(&mut self, day: Date, local: &str) -> Result<(), String> {
        self.offset_secs = offset_for(day, local)?;
        self.day = day;
        Ok(())
    }

    /// Adds a sales channel; its token.
    pub fn add_channel(&self, name: &str) -> String {
        let out = self.admin(&["channel", "add", "--name", name]);
        assert!(
            out.status.success(),
            "channel add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The demo payment provider's signer, with this server's secret: what
    /// a test needs to deliver (or forge) payment callbacks itself.
    pub fn demo_signer(&self) -> crate::payments::demo::DemoProvider {
        let hex = self.query_one("SELECT value FROM meta WHERE key = 'demo_payment_secret'");
        let secret = data_encoding::HEXLOWER_PERMISSIVE
            .decode(hex.as_bytes())
            .expect("hex secret");
        crate::payments::demo::DemoProvider::new(secret, &self.url)
    }

    pub fn db_str(&self) -> String {
        self.db.display().to_string()
    }

    /// Runs a `tessera-server` subcommand with this server's clock.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.binary)
            .args(args)
            .env(OFFSET_ENV, self.offset_secs.to_string())
            .output()
            .expect("run tessera-server")
    }

    /// Where admin commands find this server's store: `["--db", FILE]` on
    /// SQLite, `["--database", URL]` on PostgreSQL.
    pub fn store_args(&self) -> [&str; 2] {
        let flag = match self.backend {
            Backend::Sqlite => "--db",
            Backend::Postgres => "--database",
        };
        [flag, &self.store]
    }

    /// `args` (subcommand first) followed by [`ServerProcess::store_args`].
    fn with_store<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(self.store_args());
        all
    }

    /// Runs an admin command on this server's store (`args`, then
    /// [`ServerProcess::store_args`]) with this server's clock.
    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        self.cli(&self.with_store(args))
    }

    /// [`ServerProcess::admin`]: its trimmed standard output, or an error
    /// with its standard error.
    pub fn admin_ok(&self, args: &[&str]) -> Result<String, String> {
        self.cli_ok(&self.with_store(args))
    }

    /// The PostgreSQL database's URL (`None` on SQLite).
    pub fn database_url(&self) -> Option<String> {
        self.pg.as_ref().map(PgCluster::url)
    }

    /// The server's own PostgreSQL cluster (`None` on SQLite).
    pub fn pg(&self) -> Option<&PgCluster> {
        self.pg.as_ref()
    }

    /// Runs `sql` (one or more statements, no results) on the server's
    /// store: a test's own setup or sabotage. Write it to run on both
    /// backends.
    pub fn execute(&self, sql: &str) {
        if let Err(e) = self.try_execute(sql) {
            panic!("{sql}: {e}");
        }
    }

    /// [`ServerProcess::execute`], with the database's error instead of a
    /// panic.
    pub fn try_execute(&self, sql: &str) -> Result<(), String> {
        match &self.pg {
            Some(cluster) => cluster.query(sql).map(drop),
            None => self.db().execute_batch(sql).map_err(|e| e.to_string()),
        }
    }

    /// The rows `sql` selects from the server's store, every cell as text
    /// (integers in decimal, text as is, blobs as `\x` and lowercase hex,
    /// SQL NULL as [`NULL`]). Write the SQL to run on both backends: ids are
    /// `uuid` on PostgreSQL (compare with `'…'` literals, select them as
    /// `CAST(id AS TEXT)` or let them print), booleans print `t`/`f` there
    /// (select `CASE WHEN … THEN 1 ELSE 0 END`), and SQLite-only functions
    /// are out.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        self.try_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// [`ServerProcess::query`], with the database's error instead of a
    /// panic.
    pub fn try_query(&self, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let rows = match &self.pg {
            Some(cluster) => cluster.query(sql)?,
            None => sqlite_query(&self.db(), sql).map_err(|e| e.to_string())?,
        };
        Ok(rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|cell| cell.unwrap_or_else(|| NULL.to_string()))
                    .collect()
            })
            .collect())
    }

    /// The one row `sql` selects (panics on none or several).
    pub fn query_row(&self, sql: &str) -> Vec<String> {
        let mut rows = self.query(sql);
        assert_eq!(rows.len(), 1, "{sql}: expected one row, got {rows:?}");
        rows.remove(0)
    }

    /// The one cell of the one row `sql` selects.
    pub fn query_one(&self, sql: &str) -> String {
        let mut row = self.query_row(sql);
        assert_eq!(row.len(), 1, "{sql}: expected one column, got {row:?}");
        row.remove(0)
    }

    /// The one row `sql` selects, as `N` integers:
    /// `let [sold, held] = server.numbers(…);`.
    pub fn numbers<const N: usize>(&self, sql: &str) -> [i64; N] {
        let row = self.query_row(sql);
        let numbers: Vec<i64> = row
            .iter()
            .map(|cell| {
                cell.parse()
                    .unwrap_or_else(|_| panic!("{sql}: {cell:?} is not an integer ({row:?})"))
            })
            .collect();
        numbers
            .try_into()
            .unwrap_or_else(|got: Vec<i64>| panic!("{sql}: {} columns, not {N}", got.len()))
    }

    /// One number from the server's store (`SELECT COUNT(*) …`).
    pub fn count(&self, sql: &str) -> i64 {
        let cell = self.query_one(sql);
        cell.parse()
            .unwrap_or_else(|_| panic!("{sql} answered {cell:?}, not a number"))
    }

    /// Waits until `sql` counts `expected`: background work (the refund
    /// queue, the mailer) gets there in its own time.
    pub async fn wait_count(&self, what: &str, sql: &str, expected: i64, within: Duration) {
        wait_for(what, within, || async {
            (self.count(sql) == expected).then_some(())
        })
        .await
    }

    /// Sets a slot's capacity with the admin command, as an operator would.
    pub fn set_capacity(&self, slot: SlotId, capacity: u32) {
        let out = self.admin(&[
            "capacity",
            "--slot",
            &slot.to_string(),
            "--set",
            &capacity.to_string(),
        ]);
        assert!(
            out.status.success(),
            "capacity {slot} {capacity}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Enrols a gate named `name`; its bearer token.
    pub async fn enrol_gate(&self, name: &str) -> String {
        let (status, gate) = self
            .api()
            .enrol(&self.enrolment_code("gate", name), name, None)
            .await
            .expect("enrol a gate");
        assert_eq!(status, StatusCode::CREATED, "{gate}");
        gate["token"]
            .as_str()
            .expect("the gate's token")
            .to_string()
    }

    pub fn enrolment_code(&self, role: &str, name: &str) -> String {
        let out = self.admin(&["enrol", "--role", role, "--name", name]);
        assert!(
            out.status.success(),
            "enrol failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts `serve`, on the previous port when restarting.
    fn try_spawn(&mut self, port: Option<u16>) -> Result<(), String> {
        let listen = format!("127.0.0.1:{}", port.unwrap_or(0));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .args(self.store_args())
            .args(["--listen", &listen])
            .args(&self.extra_args);
        // Tests play many visitors from one loopback address: per-client
        // limits off, unless the test brings its own config.
        if !self.extra_args.iter().any(|a| a == "--config") {
            let path = self.dir.path().join("testkit.toml");
            let toml = format!(
                "{}\n{UNLIMITED_CLIENTS_TOML}",
                self.config_toml.as_deref().unwrap_or("")
            );
            std::fs::write(&path, toml).map_err(|e| format!("write test config: {e}"))?;
            command.arg("--config").arg(path);
        }
        let mut child = command
            .env(OFFSET_ENV, self.offset_secs.to_string())
            .env("TESSERA_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.binary.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("server did not start; log: {}", self.log()));
        };
        let Some(url) = line.split_whitespace().last() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("unexpected first line from the server: {line:?}"));
        };
        self.url = url.to_string();
        self.child = Some(child);
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The running `serve` process's id (0 while none runs): what a harness
    /// reads the server's CPU time by.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in url")
    }

    /// Waits up to `within` for the server to exit by itself; its exit status,
    /// or `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => return None,
            }
        }
    }

    /// SIGKILL: no shutdown hook runs, nothing is flushed but what was fsynced.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Environment for the next `restart` (e.g. no failpoints any more).
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Starts again on the same file and port.
    pub fn restart(&mut self) {
        if let Err(e) = self.try_restart() {
            panic!("{e}");
        }
    }

    /// [`ServerProcess::restart`], with an error instead of a panic.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.kill();
        let port = self.port();
        // The port may linger briefly after a kill; retry a few times.
        let mut last = String::new();
        for attempt in 0..20 {
            match self.try_spawn(Some(port)) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
        }
        Err(format!("server did not restart: {last}"))
    }

    /// Whether `serve` is running (not killed, not exited).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A connection to the server's SQLite file, for tests that are about
    /// SQLite itself (everything else: [`ServerProcess::query`] and
    /// friends). Panics on PostgreSQL: such a test starts with
    /// [`skip_unless_sqlite`].
    pub fn db(&self) -> rusqlite::Connection {
        assert!(
            self.backend.is_sqlite(),
            "ServerProcess::db() opens the SQLite file, and this server runs on {}: \
             use query/count/execute, or skip the test with testkit::skip_unless_sqlite(reason)",
            self.backend.name()
        );
        let conn = rusqlite::Connection::open(&self.db).expect("open db");
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        conn
    }

    /// A client that confirms as the test channel.
    pub fn api(&self) -> Api {
        Api::new(&self.url).with_channel(&self.channel_token)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // `serve` first, then (as the fields drop) its PostgreSQL cluster.
        self.kill();
        // A failing test shows what the server said (its directory goes).
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- last lines of the server's log ({}):\n{}",
                self.backend.name(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }
}

/// Every row of `sql` on SQLite, cells as text (`None`: NULL), in the shape
/// PostgreSQL's text protocol gives.
fn sqlite_query(
    conn: &rusqlite::Connection,
    sql: &str,
) -> rusqlite::Result<Vec<Vec<Option<String>>>> {
    use rusqlite::types::ValueRef;
    let mut stmt = conn.prepare(sql)?;
    let columns = stmt.column_count();
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut cells = Vec::with_capacity(columns);
        for i in 0..columns {
            cells.push(match row.get_ref(i)? {
                ValueRef::Null => None,
                ValueRef::Integer(n) => Some(n.to_string()),
                ValueRef::Real(x) => Some(x.to_string()),
                ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Some(format!("\\x{}", data_encoding::HEXLOWER.encode(b))),
            });
        }
        out.push(cells);
    }
    Ok(out)
}

/// A thin HTTP client for the server's API, returning status and JSON.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: Client,
    /// Sent as `Authorization: Bearer` by `confirm` (none: anonymous).
    pub channel_token: Option<String>,
}

pub type Reply = (StatusCode, Value);

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            channel_token: None,
        }
    }

    /// Confirms as the channel whose token this is.
    pub fn with_channel(mut self, token: &str) -> Api {
        self.channel_token = Some(token.to_string());
        self
    }

    async fn reply(r: Result<reqwest::Response, reqwest::Error>) -> Result<Reply, reqwest::Error> {
        let r = r?;
        let status = r.status();
        let text = r.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, body))
    }

    pub async fn get(&self, path: &str) -> Result<Reply, reqwest::Error> {
        Self::reply(self.http.get(format!("{}{path}", self.base)).send().await).await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::reply(req.send().await).await
    }

    pub async fn availability(&self, date: Date) -> Value {
        let (status, body) = self
            .get(&format!("/v1/availability?date={date}"))
            .await
            .expect("availability");
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn available(&self, slot: SlotId) -> u64 {
        let body = self.availability(slot.date).await;
        body["slots"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["slot_id"] == slot.to_string()))
            .and_then(|s| s["available"].as_u64())
            .unwrap_or_else(|| panic!("slot {slot} not in {body}"))
    }

    pub async fn hold(
        &self,
        key: &str,
        slot: SlotId,
        items: Value,
    ) -> Result<Reply, reqwest::Error> {
        let body = json!({"slot_id": slot, "items": items}).to_string();
        self.post_raw("/v1/holds", &[("idempotency-key", key)], &body)
            .await
    }

    pub async fn confirm(&self, key: &str, hold_id: &str) -> Result<Reply, reqwest::Error> {
        let body = json!({"payment_reference": format!("psp-{key}")}).to_string();
        let auth = self.channel_token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("idempotency-key", key)];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        self.post_raw(&format!("/v1/holds/{hold_id}/confirm"), &headers, &body)
            .await
    }

    /// Starts paying for a hold as a web visitor (`POST …/checkout`).
    pub async fn checkout(&self, key: &str, hold_id: &str) -> Result<Reply, reqwest::Error> {
        let body = json!({
            "name": "Ada Lovelace",
            "email": "ada@example.org",
            "language": "en",
            "accept_terms": true
        })
        .to_string();
        self.post_raw(
            &format!("/v1/holds/{hold_id}/checkout"),
            &[("idempotency-key", key)],
            &body,
        )
        .await
    }

    /// Presses a button on the demo provider's page (`paid` or `cancel`),
    /// as a browser would; the status and where it was sent.
    pub async fn demo_pay(
        &self,
        redirect_url: &str,
        outcome: &str,
    ) -> Result<(StatusCode, Option<String>), reqwest::Error> {
        let client = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?;
        let r = client
            .post(redirect_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("outcome={outcome}"))
            .send()
            .await?;
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((r.status(), location))
    }

    /// Polls a checkout until it leaves `awaiting_payment` (or 20 s pass).
    pub async fn await_checkout(&self, checkout_id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = self
                .get(&format!("/v1/checkouts/{checkout_id}"))
                .await
                .expect("checkout status");
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["state"] != "awaiting_payment" || std::time::Instant::now() > deadline {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Hold, check out and pay on the demo page: the checkout's final status
    /// (with the booking token when confirmed).
    pub async fn buy_online(&self, key: &str, slot: SlotId, items: Value) -> Value {
        let (status, hold) = self
            .hold(&format!("{key}-h"), slot, items)
            .await
            .expect("hold");
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        let hold_id = hold["hold_id"].as_str().expect("hold id");
        let (status, checkout) = self
            .checkout(&format!("{key}-c"), hold_id)
            .await
            .expect("checkout");
        assert_eq!(status, StatusCode::CREATED, "{checkout}");
        let (status, _) = self
            .demo_pay(checkout["redirect_url"].as_str().expect("redirect"), "paid")
            .await
            .expect("demo page");
        assert_eq!(status, StatusCode::SEE_OTHER);
        self.await_checkout(checkout["checkout_id"].as_str().expect("checkout id"))
            .await
    }

    pub async fn cancel(&self, hold_id: &str) -> Result<Reply, reqwest::Error> {
        Self::reply(
            self.http
                .delete(format!("{}/v1/holds/{hold_id}", self.base))
                .send()
                .await,
        )
        .await
    }

    /// Hold and confirm `n` adult tickets; the order on success.
    pub async fn buy(
        &self,
        key: &str,
        slot: SlotId,
        items: Value,
    ) -> Result<Reply, reqwest::Error> {
        let (status, hold) = self.hold(&format!("{key}-h"), slot, items).await?;
        if status != StatusCode::CREATED {
            return Ok((status, hold));
        }
        let id = hold["hold_id"].as_str().unwrap_or_default().to_string();
        self.confirm(&format!("{key}-c"), &id).await
    }

    /// The keys `/v1/keys` publishes, as a gate would hold them.
    pub async fn keyring(&self) -> tessera_core::ticket_code::KeyRing {
        let (_, keys) = self.get("/v1/keys").await.expect("keys");
        let mut ring = tessera_core::ticket_code::KeyRing::new();
        for k in keys["keys"].as_array().expect("key list") {
            // Gates' keys sign shared admissions, never tickets.
            if k["role"].as_str() == Some("gate") {
                continue;
            }
            let bytes: [u8; 32] = data_encoding::HEXLOWER
                .decode(k["public_key"].as_str().expect("hex").as_bytes())
                .expect("hex key")
                .try_into()
                .expect("32 bytes");
            let id = k["key_id"].as_u64().expect("key id") as u32;
            ring.insert(id, bytes, k["revoked"].as_bool().unwrap_or(false))
                .expect("valid key");
        }
        ring
    }

    pub async fn enrol(
        &self,
        code: &str,
        name: &str,
        public_key: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let body = json!({"code": code, "name": name, "public_key": public_key}).to_string();
        self.post_raw("/v1/devices/enrol", &[], &body).await
    }

    /// A supervisor's approval (PIN checked by the server) for `device_token`
    /// to void `sale_id`: what a hand-built sync body's void must carry in
    /// `approval_id`.
    pub async fn approve_void(
        &self,
        device_token: &str,
        supervisor_pin: &str,
        sale_id: &str,
    ) -> String {
        let (status, body) = self
            .post_raw(
                "/v1/approvals",
                &[
                    ("authorization", &format!("Bearer {device_token}")),
                    ("x-supervisor-pin", supervisor_pin),
                ],
                &json!({"action": "void", "sale_id": sale_id}).to_string(),
            )
            .await
            .expect("approvals answers");
        assert_eq!(status, StatusCode::CREATED, "approval refused: {body}");
        body["approval_id"]
            .as_str()
            .expect("approval id")
            .to_string()
    }

    pub async fn redeem(&self, token: &str, code: &str) -> Result<Reply, reqwest::Error> {
        let auth = format!("Bearer {token}");
        self.post_raw(
            "/v1/gate/redeem",
            &[("authorization", &auth)],
            &json!({"code": code}).to_string(),
        )
        .await
    }
}

/// Debian's aiosmtpd on a loopback port, writing what it receives to a
/// directory (see tests/support/smtp_sink.py).
pub struct SmtpSink {
    child: Child,
    dir: PathBuf,
}

impl SmtpSink {
    pub fn start(port: u16, dir: &Path) -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        // Debian's interpreter, which has python3-aiosmtpd (a pyenv or venv
        // python earlier on PATH would not).
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (Debian package python3-aiosmtpd)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "SMTP sink did not start");
        SmtpSink {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Waits for the `n`th message's summary.
    pub fn message(&self, n: usize, within: Duration) -> Value {
        let path = self.dir.join(format!("{n}.json"));
        let deadline = Instant::now() + within;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path) {
                return serde_json::from_str(&text).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no message {n} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn count(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every QR code on every page of a PDF, page by page, as `zbarimg` reads
/// the pages `pdftoppm` renders at 150 dpi.
pub fn scan_pdf(pdf: &Path) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("page");
    let out = Command::new("pdftoppm")
        .args(["-r", "150", "-png"])
        .arg(pdf)
        .arg(&prefix)
        .output()
        .expect("pdftoppm (Debian package poppler-utils; scripts/setup installs it)");
    assert!(
        out.status.success(),
        "pdftoppm: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pages.sort();
    pages
        .iter()
        .map(|page| {
            let out = Command::new("zbarimg")
                .args(["--raw", "-q"])
                .arg(page)
                .output()
                .expect("zbarimg (Debian package zbar-tools; scripts/setup installs it)");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

/// A loopback port nothing listens on (for a server the test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `probe` until it returns `Some`, or fails after `within`: tests wait
/// for states, never for fixed times.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
