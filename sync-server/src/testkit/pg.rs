//! PostgreSQL for tests: a throw-away cluster (`initdb` in a temporary
//! directory, a free loopback port, removed on drop) and server processes
//! serving a database in it (`serve --database postgres://…`).
//!
//! PostgreSQL comes from Debian's packages (`scripts/setup` installs
//! postgresql-15); its binaries are found in /usr/lib/postgresql/*/bin, or
//! in `TESSERA_PG_BIN`. initdb refuses to run as root: as root, the cluster
//! belongs to the `postgres` user (created if missing).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jiff::civil::Date;
use jiff::Timestamp;
use tessera_core::clock::OFFSET_ENV;

use super::{
    demo_fixture, free_port, paris, server_binary, test_day, Api, TEST_CHANNEL,
    UNLIMITED_CLIENTS_TOML,
};

/// The directory of PostgreSQL's server binaries (initdb, pg_ctl, psql).
pub fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("TESSERA_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run scripts/setup, or set TESSERA_PG_BIN")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(command: &mut Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A PostgreSQL cluster of its own, on 127.0.0.1 and a free port, with one
/// database (`tessera`); stopped (immediate) and removed on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let bin = pg_bin();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("tessera-pg")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            let exists = Command::new("id")
                .arg("postgres")
                .output()
                .is_ok_and(|o| o.status.success());
            if !exists {
                run(
                    Command::new("useradd").args([
                        "--system",
                        "--home",
                        "/var/lib/postgresql",
                        "--shell",
                        "/bin/bash",
                        "postgres",
                    ]),
                    "useradd postgres",
                );
            }
            run(
                Command::new("chown").arg("postgres:").arg(dir.path()),
                "chown the cluster's directory",
            );
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        run(
            cluster
                .pg_command("initdb")
                .arg("-D")
                .arg(cluster.data())
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]),
            "initdb",
        );
        // The free port is free when chosen, not when PostgreSQL binds it:
        // a test or server starting beside this one may take it first. Such
        // a start is tried again on another port; any other failure fails.
        let mut tries = 0;
        while let Err(e) = cluster.try_pg_ctl_start() {
            tries += 1;
            let log = std::fs::read_to_string(cluster.log_path()).unwrap_or_default();
            if tries >= 5 || !log.contains("could not bind") {
                panic!("pg_ctl start failed: {e}\n{log}");
            }
            cluster.port = free_port();
        }
        cluster.psql("postgres", "CREATE DATABASE tessera");
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn pg_ctl_start(&self) {
        if let Err(e) = self.try_pg_ctl_start() {
            panic!("pg_ctl start failed: {e}");
        }
    }

    fn try_pg_ctl_start(&self) -> Result<(), String> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// PostgreSQL's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `tessera` database.
    pub fn url(&self) -> String {
        self.url_of("tessera")
    }

    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Another empty database in the same cluster; its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url_of(name)
    }

    /// Runs SQL with psql in `database`; what it printed (unaligned, tuples
    /// only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql)
            .unwrap_or_else(|e| panic!("{sql} failed: {e}"))
    }

    /// Like [`PgCluster::psql`]; PostgreSQL's error when the SQL fails.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let port = self.port.to_string();
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args(["-p", &port, "-U", "postgres", "-d", database, "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Runs `sql` (one or more statements) in the `tessera` database over
    /// the simple query protocol: the rows of every statement, each cell in
    /// PostgreSQL's text form (`None`: NULL), or PostgreSQL's error. Works
    /// from sync code and inside a test's tokio runtime alike (the client
    /// runs on a thread and runtime of its own).
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        let url = self.url();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("tokio runtime: {e}"))?;
                    runtime.block_on(simple_query(&url, sql))
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// One number from the `tessera` database (`SELECT COUNT(*) …`).
    pub fn count(&self, sql: &str) -> i64 {
        let text = self.psql("tessera", sql);
        text.parse()
            .unwrap_or_else(|_| panic!("{sql} answered {text:?}, not a number"))
    }

    /// Stops the cluster with a fast shutdown (open transactions are rolled
    /// back, clients disconnected) and starts it again on the same port.
    pub fn restart_fast(&self) {
        run(
            self.pg_command("pg_ctl")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "fast", "-w", "stop"]),
            "pg_ctl stop -m fast",
        );
        self.pg_ctl_start();
    }
}

async fn simple_query(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let describe = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(describe)?;
    let driver = tokio::spawn(connection);
    let messages = client.simple_query(sql).await.map_err(describe)?;
    drop(client);
    let _ = driver.await;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .pg_command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The temporary directory (owned by postgres as root; root may
        // remove it) goes with `dir`.
    }
}

/// Another application's session that keeps the rows its statement locked
/// (`SELECT … FOR UPDATE`) in an open transaction until [`HeldLocks::release`]
/// or drop (the connection closes, PostgreSQL rolls back).
pub struct HeldLocks {
    client: tokio_postgres::Client,
}

impl HeldLocks {
    /// Opens a session on `database_url` and runs `BEGIN; {sql}` in it.
    pub async fn take(database_url: &str, sql: &str) -> HeldLocks {
        let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test cluster");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("BEGIN; {sql}"))
            .await
            .expect("take the locks");
        HeldLocks { client }
    }

    pub async fn release(self) {
        self.client
            .batch_execute("ROLLBACK")
            .await
            .expect("release the locks");
    }
}

/// A museum initialised in a PostgreSQL database: what every process serving
/// it shares (the clock offset, the test day, the test channel's token).
pub struct PgMuseum {
    pub database_url: String,
    pub offset_secs: i64,
    pub day: Date,
    pub channel_token: String,
    dir: tempfile::TempDir,
}

impl PgMuseum {
    /// `init --database` with the demo museum, the clock at `local` (e.g.
    /// "11:05") on [`test_day`], and the test channel added.
    pub fn init(database_url: &str, local: &str) -> PgMuseum {
        let day = test_day();
        let target: Timestamp = format!("{day}T{local}:00")
            .parse::<jiff::civil::DateTime>()
            .expect("local time")
            .to_zoned(paris())
            .expect("exists in Paris")
            .timestamp();
        let mut museum = PgMuseum {
            database_url: database_url.to_string(),
            offset_secs: target.duration_since(Timestamp::now()).as_secs(),
            day,
            channel_token: String::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let out = museum.cli(&[
            "init",
            "--database",
            database_url,
            "--fixtures",
            &demo_fixture().display().to_string(),
            "--days",
            "14",
        ]);
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = museum.cli(&[
            "channel",
            "add",
            "--database",
            database_url,
            "--name",
            TEST_CHANNEL,
        ]);
        assert!(
            out.status.success(),
            "channel add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        museum.channel_token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        museum
    }

    /// Runs a `tessera-server` subcommand with the museum's clock.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(server_binary())
            .args(args)
            .env(OFFSET_ENV, self.offset_secs.to_string())
            .output()
            .expect("run tessera-server")
    }

    /// Runs an admin command on this database (`--database` added) and
    /// returns its trimmed standard output; panics with its standard error
    /// when it fails.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["--database", &self.database_url]);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts one more server process on the database (`name` names its log).
    pub fn serve(&self, name: &str, extra_args: &[&str]) -> PgServer {
        self.serve_with(name, "", extra_args)
    }

    /// Like [`PgMuseum::serve`], with `config` (TOML sections such as
    /// `[mail]` or `[waitlist]`) added to the test configuration.
    pub fn serve_with(&self, name: &str, config: &str, extra_args: &[&str]) -> PgServer {
        let log = self.dir.path().join(format!("{name}.log"));
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, format!("{UNLIMITED_CLIENTS_TOML}\n{config}\n"))
            .expect("write test config");
        let config = path;
        let mut child = Command::new(server_binary())
            .args(["serve", "--database", &self.database_url])
            .args(["--listen", "127.0.0.1:0"])
            .arg("--config")
            .arg(&config)
            .args(extra_args)
            .env(OFFSET_ENV, self.offset_secs.to_string())
            .env("TESSERA_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn tessera-server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                panic!(
                    "server {name} did not start; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        PgServer {
            url: line
                .split_whitespace()
                .last()
                .expect("listening line ends with the URL")
                .to_string(),
            channel_token: self.channel_token.clone(),
            log,
            child: Some(child),
        }
    }
}

/// One `tessera-server serve --database …` process; killed on drop.
pub struct PgServer {
    pub url: String,
    channel_token: String,
    log: PathBuf,
    child: Option<Child>,
}

impl PgServer {
    /// A client that confirms as the test channel.
    pub fn api(&self) -> Api {
        Api::new(&self.url).with_channel(&self.channel_token)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process id: its PostgreSQL connections are named
    /// `tessera <pid> <part>` in `pg_stat_activity`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}
