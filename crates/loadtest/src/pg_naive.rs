//! PostgreSQL's naive hot row, the reference the spike is compared with:
//! each admission is one transaction
//! `UPDATE … SET sold = sold + 1 WHERE id = 1 AND sold < capacity`, driven
//! by `pgbench` at the spike's client count and duration, with PostgreSQL's
//! durable defaults (the same as `scripts/pg-hot-row-bench`, here inside the
//! spike's invocation so that both figures come from the same minutes of
//! the same machine). The cluster is the test kit's throw-away one (initdb
//! in a temporary directory, a free loopback port, removed afterwards); its
//! capacity is large enough that every transaction updates the row.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tessera_server::testkit::pg::pg_bin;
use tessera_server::testkit::PgCluster;

use crate::cpu::{CpuMark, CpuSpent};

/// The test kit's clusters allow 300 connections; psql and PostgreSQL's own
/// processes need a few.
pub const MAX_CLIENTS: usize = 280;

#[derive(Clone, Debug, Serialize)]
pub struct PgNaiveRun {
    pub clients: usize,
    pub duration_s: f64,
    /// pgbench's whole run, connecting included.
    pub wall_s: f64,
    /// The hot row's `sold` after the run minus before it.
    pub rows_updated: i64,
    /// Rows updated per second of the run (each is one admission).
    pub admissions_per_sec: f64,
    /// pgbench's own count and mean latency.
    pub transactions: Option<u64>,
    pub latency_avg_ms: Option<f64>,
    pub cpu: CpuSpent,
}

/// The reference statement, as pgbench runs it.
pub const STATEMENT: &str = "UPDATE slots SET sold = sold + 1 WHERE id = 1 AND sold < capacity";

/// Refuses a client count the throw-away cluster cannot take, before any run.
pub fn check_clients(clients: usize) -> Result<()> {
    if clients == 0 || clients > MAX_CLIENTS {
        bail!(
            "--pg-reference runs pgbench with one connection per client on a cluster that \
             allows {MAX_CLIENTS}: {clients} clients cannot be compared; use \
             scripts/pg-hot-row-bench {clients} for more"
        );
    }
    let pgbench = pgbench_path()?;
    if !pgbench.exists() {
        bail!(
            "--pg-reference needs pgbench ({} is missing): run scripts/setup",
            pgbench.display()
        );
    }
    Ok(())
}

fn pgbench_path() -> Result<PathBuf> {
    // The test kit panics with its own advice when PostgreSQL is missing.
    std::panic::catch_unwind(pg_bin)
        .map(|bin| bin.join("pgbench"))
        .map_err(|panic| anyhow!("{}", panic_text(panic.as_ref())))
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "PostgreSQL could not be started".into())
}

/// Starts a cluster, runs the naive update for `duration` with `clients`
/// connections, and removes the cluster. Blocking: call it off the runtime.
pub fn run(clients: usize, duration: Duration) -> Result<PgNaiveRun> {
    check_clients(clients)?;
    // The test kit's cluster panics on a failed start; that is this run's
    // error, not the harness's end.
    let pg = std::panic::catch_unwind(PgCluster::start)
        .map_err(|p| anyhow!("starting PostgreSQL: {}", panic_text(p.as_ref())))?;
    pg.try_psql(
        "tessera",
        "CREATE TABLE slots (id int PRIMARY KEY, sold int NOT NULL, capacity int NOT NULL);
         INSERT INTO slots VALUES (1, 0, 2000000000)",
    )
    .map_err(|e| anyhow!("creating the hot row: {e}"))?;
    let script = tempfile::Builder::new()
        .prefix("tessera-hot-row")
        .suffix(".sql")
        .tempfile()
        .context("pgbench script")?;
    std::fs::write(script.path(), format!("{STATEMENT};\n")).context("pgbench script")?;

    let sold = |pg: &PgCluster| -> Result<i64> {
        let text = pg
            .try_psql("tessera", "SELECT sold FROM slots WHERE id = 1")
            .map_err(|e| anyhow!("reading the hot row: {e}"))?;
        text.parse()
            .map_err(|_| anyhow!("the hot row's sold is {text:?}"))
    };
    let before = sold(&pg)?;
    let cpu_before = CpuMark::now(&[]);
    let started = Instant::now();
    let out = Command::new(pgbench_path()?)
        .args(["-n", "-M", "prepared"])
        .args(["-c", &clients.to_string(), "-j", "2"])
        .args(["-T", &duration.as_secs().max(1).to_string()])
        .arg("-f")
        .arg(script.path())
        .args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", "postgres", "tessera"])
        .output()
        .context("running pgbench")?;
    let wall = started.elapsed();
    let cpu = cpu_before.spent(&CpuMark::now(&[]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows_updated = sold(&pg)? - before;
    drop(pg);
    // The script divides by the requested duration; so does this, so that
    // both give the same figure for the same run.
    let duration_s = duration.as_secs().max(1) as f64;
    Ok(PgNaiveRun {
        clients,
        duration_s,
        wall_s: wall.as_secs_f64(),
        rows_updated,
        admissions_per_sec: rows_updated as f64 / duration_s,
        transactions: pgbench_transactions(&text),
        latency_avg_ms: pgbench_latency_ms(&text),
        cpu,
    })
}

/// `number of transactions actually processed: 10425` (or `10425/10425`).
fn pgbench_transactions(text: &str) -> Option<u64> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed:"))?;
    rest.trim().split('/').next()?.trim().parse().ok()
}

/// `latency average = 191.826 ms`.
fn pgbench_latency_ms(text: &str) -> Option<f64> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("latency average ="))?;
    rest.trim().strip_suffix("ms")?.trim().parse().ok()
}

pub fn print(r: &PgNaiveRun) {
    println!(
        "-- PostgreSQL naive hot row ({STATEMENT}; pgbench, {} clients, {:.0} s, shared cores)",
        r.clients, r.duration_s
    );
    println!(
        "   admissions/s             {:>10.0}   ({} rows updated; pgbench: {} transactions, latency average {})",
        r.admissions_per_sec,
        r.rows_updated,
        r.transactions.map_or("?".into(), |t| t.to_string()),
        r.latency_avg_ms
            .map_or("?".into(), |ms| format!("{ms:.2} ms")),
    );
    // pgbench is a child of this process, not this process: its CPU is in
    // "other".
    println!(
        "   cpu                      {} (pgbench is in other)",
        r.cpu.line(r.rows_updated.max(0) as u64, "row updated")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output_is_read() {
        let out = "transaction type: /tmp/x.sql\nscaling factor: 1\nquery mode: prepared\n\
                   number of clients: 100\nnumber of threads: 2\nduration: 20 s\n\
                   number of transactions actually processed: 10425\n\
                   latency average = 191.826 ms\ninitial connection time = 80.1 ms\n\
                   tps = 521.3 (without initial connection time)\n";
        assert_eq!(pgbench_transactions(out), Some(10425));
        assert_eq!(pgbench_latency_ms(out), Some(191.826));
        let newer = "number of transactions actually processed: 77/77\n";
        assert_eq!(pgbench_transactions(newer), Some(77));
        assert_eq!(pgbench_transactions("nothing"), None);
        assert_eq!(pgbench_latency_ms("latency average = fast"), None);
    }

    #[test]
    fn client_counts_the_cluster_cannot_take_are_refused() {
        assert!(check_clients(0).is_err());
        let err = check_clients(MAX_CLIENTS + 1).expect_err("too many");
        assert!(err.to_string().contains("pg-hot-row-bench"), "{err}");
    }
}
