//! `pg-spike`: the hot-slot spike against the PostgreSQL backend, with one
//! or several server processes on one database. C online clients hold +
//! confirm one admission at a time on ONE slot (closed loop), spread over the
//! processes, for a fixed time; then the books are checked in PostgreSQL:
//! nothing oversold, every 201 stored once.
//!
//! The cluster is a throw-away one (the test kit's `PgCluster`: initdb in a
//! temporary directory, a free loopback port, PostgreSQL's durable defaults);
//! the server is the release build. Compare with `scripts/pg-hot-row-bench`,
//! the naive one-transaction-per-admission `UPDATE` driven by pgbench.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tessera_server::testkit::{slot, PgCluster, PgMuseum};
use tokio::task::JoinSet;

use crate::client::{http_client, HoldAnswer, Shop};
use crate::cpu::{CpuMark, CpuSpent};
use crate::stats::{error_code, transport_code, Errors, Samples, Summary};
use crate::thread_cpu::{us_per_request, NamedThreadCpu, ThreadSpent};

#[derive(Clone, Debug)]
pub struct PgSpikeOptions {
    pub capacity: u32,
    pub clients: usize,
    /// Server processes of each run, in order (e.g. 1 then 3).
    pub processes: Vec<usize>,
    /// Commit modes to run ("group", "per-request"), each with every
    /// process count.
    pub modes: Vec<String>,
    pub duration: Duration,
    pub server_bin: PathBuf,
    /// Load pg_stat_statements in the throw-away cluster and print the
    /// statements that took PostgreSQL's time during each run.
    pub pg_stats: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct PgSpikeRun {
    pub commit: String,
    pub processes: usize,
    pub clients: usize,
    pub elapsed_s: f64,
    pub online_orders: u64,
    pub admissions_per_sec: f64,
    pub hold: Summary,
    pub confirm: Summary,
    pub errors: Errors,
    /// From PostgreSQL after the run.
    pub pg_sold_online: i64,
    pub pg_orders: i64,
    /// Sold + held beyond capacity: must be 0.
    pub oversold: i64,
    /// Orders in PostgreSQL minus 201s the clients got: must be 0 (a
    /// confirm that timed out on the client side would make it positive).
    pub books_mismatch: i64,
    /// The writers' batches during the run, all processes together (from
    /// /metrics).
    pub batches: u64,
    pub jobs_per_batch: f64,
    /// Wall time per batch by phase, in ms (the writer's own clock).
    pub batch_phases_ms: Vec<(String, f64)>,
    /// With `--pg-stats`: PostgreSQL's busiest statements during the run.
    pub pg_statements: Vec<PgStatement>,
    /// Where the machine's CPU went during the run.
    pub cpu: CpuSpent,
    /// Holds and confirms the servers answered during the run.
    pub write_requests: u64,
    /// The writer threads' own on-CPU time, all processes together: only
    /// where the backend runs its writer on a thread named
    /// `tessera-writer` (PostgreSQL's writer is a task on the tokio
    /// runtime today, so `None`: n/a).
    pub writer_cpu: Option<ThreadSpent>,
    pub writer_cpu_us_per_request: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PgStatement {
    pub calls: i64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub rows: i64,
    pub query: String,
}

/// The phases the writer reports (`postgres::writer::Phase`), in order.
const PHASES: [&str; 11] = [
    "wait", "begin", "claim", "lock", "confirm", "decide", "write", "other", "notify", "commit",
    "answer",
];

/// A counter's value in Prometheus text; `label` is `key="value"`.
fn counter(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let matches = match label {
                None => key == name,
                Some(label) => key.starts_with(&format!("{name}{{")) && key.contains(label),
            };
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// What the writers did between two scrapes of every process's /metrics.
fn writer_phases(before: &[String], after: &[String]) -> (u64, f64, Vec<(String, f64)>) {
    let delta = |name: &str, label: Option<&str>| -> f64 {
        after.iter().map(|t| counter(t, name, label)).sum::<f64>()
            - before.iter().map(|t| counter(t, name, label)).sum::<f64>()
    };
    let batches = delta("tessera_pg_batches_total", None).max(0.0);
    let jobs = delta("tessera_pg_batch_jobs_total", None);
    let per = |x: f64| if batches > 0.0 { x / batches } else { 0.0 };
    let phases = PHASES
        .iter()
        .map(|p| {
            let us = delta(
                "tessera_pg_batch_phase_us_total",
                Some(&format!("phase=\"{p}\"")),
            );
            (p.to_string(), per(us) / 1000.0)
        })
        .collect();
    (batches as u64, per(jobs), phases)
}

pub async fn run(opts: &PgSpikeOptions) -> Result<Vec<PgSpikeRun>> {
    // The test kit starts the server binary TESSERA_SERVER_BIN names.
    std::env::set_var("TESSERA_SERVER_BIN", &opts.server_bin);
    let mut runs = Vec::new();
    for mode in &opts.modes {
        for &processes in &opts.processes {
            eprintln!(
                "pg-spike: commit={mode}, {processes} process(es), {} clients, {} s …",
                opts.clients,
                opts.duration.as_secs()
            );
            let r = run_one(opts, mode, processes.max(1)).await?;
            eprintln!(
                "pg-spike: commit={mode}, {processes} process(es): {:.0} admissions/s",
                r.admissions_per_sec
            );
            runs.push(r);
        }
    }
    Ok(runs)
}

async fn run_one(opts: &PgSpikeOptions, mode: &str, processes: usize) -> Result<PgSpikeRun> {
    let commit = mode.to_string();
    let pg_stats = opts.pg_stats;
    let (pg, museum, servers) = tokio::task::spawn_blocking(move || {
        let pg = PgCluster::start();
        if pg_stats {
            pg.psql(
                "postgres",
                "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
            );
            pg.restart_fast();
            // Nested statements too (the foreign keys' checks run as such);
            // a setting PostgreSQL knows only once the library is loaded.
            pg.psql(
                "postgres",
                "ALTER SYSTEM SET pg_stat_statements.track = 'all'",
            );
            pg.psql("postgres", "SELECT pg_reload_conf()");
        }
        let museum = PgMuseum::init(&pg.url(), "09:00");
        let servers: Vec<_> = (0..processes)
            .map(|i| museum.serve(&format!("p{i}"), &["--commit", &commit]))
            .collect();
        (pg, museum, servers)
    })
    .await
    .context("starting PostgreSQL and the servers")?;
    let hot = slot(museum.day, "11:00");
    pg.psql(
        "tessera",
        &format!(
            "UPDATE slots SET capacity = {}, version = version + 1 WHERE slot_id = '{hot}';
             NOTIFY tessera_changes, 'slots:{hot}'",
            opts.capacity
        ),
    );
    let http = http_client(opts.clients)?;
    let shops: Vec<Shop> = servers
        .iter()
        .map(|s| Shop::new(http.clone(), &s.url).with_channel(&museum.channel_token))
        .collect();
    for shop in &shops {
        let deadline = Instant::now() + Duration::from_secs(30);
        while shop.available(hot).await? != opts.capacity {
            if Instant::now() > deadline {
                bail!("a server did not see the hot slot's capacity");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    if opts.pg_stats {
        pg.psql(
            "tessera",
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()",
        );
    }
    let mut metrics_before = Vec::new();
    for shop in &shops {
        metrics_before.push(shop.metrics().await.unwrap_or_default());
    }

    let pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
    let cpu_before = CpuMark::now(&pids);
    let writers_before: Vec<NamedThreadCpu> = pids
        .iter()
        .map(|&p| NamedThreadCpu::start(p, crate::spike::WRITER_THREAD))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let orders = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut set = JoinSet::new();
    for c in 0..opts.clients {
        let shop = shops[c % shops.len()].clone();
        let (stop, orders) = (stop.clone(), orders.clone());
        set.spawn(async move {
            let (mut hold, mut confirm, mut errors) =
                (Samples::default(), Samples::default(), Errors::default());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                n += 1;
                let key = format!("pgs-{c}-{n}");
                let t = Instant::now();
                let answer = shop.hold(&key, hot, "adult", 1).await;
                hold.push(t.elapsed());
                let hold_id = match answer {
                    Ok((201, body)) => match serde_json::from_slice::<HoldAnswer>(&body) {
                        Ok(h) => h.hold_id,
                        Err(_) => {
                            errors.add("hold_unreadable");
                            continue;
                        }
                    },
                    Ok((status, body)) => {
                        let code = error_code(status, &body);
                        if code == "sold_out" {
                            stop.store(true, Ordering::Relaxed);
                        }
                        errors.add(code);
                        continue;
                    }
                    Err(e) => {
                        errors.add(transport_code(&e));
                        continue;
                    }
                };
                let t = Instant::now();
                let answer = shop.confirm(&format!("{key}-c"), &hold_id).await;
                confirm.push(t.elapsed());
                match answer {
                    Ok((201, _)) => {
                        orders.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((status, body)) => errors.add(error_code(status, &body)),
                    Err(e) => errors.add(transport_code(&e)),
                }
            }
            (hold, confirm, errors)
        });
    }
    let (mut hold, mut confirm, mut errors) =
        (Samples::default(), Samples::default(), Errors::default());
    while let Some(done) = set.join_next().await {
        let (h, c, e) = done.context("client task")?;
        hold.extend(h);
        confirm.extend(c);
        errors.merge(e);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_before.spent(&CpuMark::now(&pids));
    let writer_cpu = writers_spent(&writers_before);
    let write_requests = hold.0.len() as u64 + confirm.0.len() as u64;
    let online_orders = orders.load(Ordering::Relaxed);
    let mut metrics_after = Vec::new();
    for shop in &shops {
        metrics_after.push(shop.metrics().await.unwrap_or_default());
    }
    let (batches, jobs_per_batch, batch_phases_ms) = writer_phases(&metrics_before, &metrics_after);
    let pg_statements = if opts.pg_stats {
        top_statements(&pg)
    } else {
        Vec::new()
    };
    let where_hot = format!("WHERE slot_id = '{hot}'");
    let pg_sold_online = pg.count(&format!("SELECT sold_online FROM slots {where_hot}"));
    let held = pg.count(&format!("SELECT held_online FROM slots {where_hot}"));
    let pg_orders = pg.count(&format!("SELECT COUNT(*) FROM orders {where_hot}"));
    drop(servers);
    drop(pg);
    Ok(PgSpikeRun {
        commit: mode.to_string(),
        processes,
        clients: opts.clients,
        elapsed_s: elapsed,
        online_orders,
        admissions_per_sec: online_orders as f64 / elapsed.max(1e-9),
        hold: hold.summary(),
        confirm: confirm.summary(),
        errors,
        pg_sold_online,
        pg_orders,
        oversold: (pg_sold_online + held - i64::from(opts.capacity)).max(0),
        books_mismatch: pg_orders - i64::try_from(online_orders).unwrap_or(i64::MAX),
        batches,
        jobs_per_batch,
        batch_phases_ms,
        pg_statements,
        cpu,
        write_requests,
        writer_cpu,
        writer_cpu_us_per_request: writer_cpu.and_then(|w| us_per_request(&w, write_requests)),
    })
}

/// Every process's writer thread together; `None` unless each has one.
fn writers_spent(writers: &[NamedThreadCpu]) -> Option<ThreadSpent> {
    let mut total: Option<ThreadSpent> = None;
    for w in writers {
        let spent = w.spent()?;
        total = Some(match total {
            None => spent,
            Some(t) => ThreadSpent {
                on_cpu_s: t.on_cpu_s + spent.on_cpu_s,
                ..t
            },
        });
    }
    total
}

/// The statements that took the most of PostgreSQL's time (the writer's
/// nested ones included: triggers' foreign-key checks show up on their own).
fn top_statements(pg: &PgCluster) -> Vec<PgStatement> {
    let text = pg.psql(
        "tessera",
        "SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), rows,
                left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
         FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15",
    );
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(5, '|');
            Some(PgStatement {
                calls: f.next()?.parse().ok()?,
                total_ms: f.next()?.parse().ok()?,
                mean_ms: f.next()?.parse().ok()?,
                rows: f.next()?.parse().ok()?,
                query: f.next()?.to_string(),
            })
        })
        .collect()
}

pub fn print(runs: &[PgSpikeRun]) {
    println!("PostgreSQL hot-slot spike: hold + confirm of 1 admission, closed loop");
    for r in runs {
        println!(
            "  commit={}, {} process(es), {} clients: {:.0} admissions/s over {:.1} s ({} orders)",
            r.commit, r.processes, r.clients, r.admissions_per_sec, r.elapsed_s, r.online_orders
        );
        println!(
            "    writer CPU per request {}",
            crate::spike::writer_line(
                r.writer_cpu_us_per_request,
                r.writer_cpu,
                r.write_requests,
                "the PostgreSQL writer is a task on the server's tokio runtime, not a named thread"
            )
        );
        println!("    hold    {}", r.hold.line());
        println!("    confirm {}", r.confirm.line());
        println!("    errors  {}", r.errors.line());
        println!("    cpu     {}", r.cpu.line(r.online_orders, "admission"));
        println!(
            "    books   PostgreSQL sold {} in {} orders; oversold {}; orders without a 201 {}",
            r.pg_sold_online, r.pg_orders, r.oversold, r.books_mismatch
        );
        let busy: f64 = r
            .batch_phases_ms
            .iter()
            .filter(|(p, _)| p != "wait")
            .map(|(_, ms)| ms)
            .sum();
        let phases: Vec<String> = r
            .batch_phases_ms
            .iter()
            .map(|(p, ms)| format!("{p} {ms:.2}"))
            .collect();
        println!(
            "    writer  {} batches, {:.1} jobs each, {busy:.2} ms busy per batch; ms per batch: {}",
            r.batches,
            r.jobs_per_batch,
            phases.join(", ")
        );
        for s in &r.pg_statements {
            println!(
                "    pg      {:>9.1} ms {:>7} calls {:>8.3} ms/call {:>8} rows  {}",
                s.total_ms, s.calls, s.mean_ms, s.rows, s.query
            );
        }
    }
}

pub fn violations(runs: &[PgSpikeRun]) -> Vec<String> {
    let mut v = Vec::new();
    for r in runs {
        if r.oversold > 0 {
            v.push(format!(
                "{} process(es): oversold by {}",
                r.processes, r.oversold
            ));
        }
        if r.books_mismatch != 0 {
            v.push(format!(
                "{} process(es): PostgreSQL has {} orders, clients got {} 201s",
                r.processes, r.pg_orders, r.online_orders
            ));
        }
    }
    v
}
