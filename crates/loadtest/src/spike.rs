//! `spike`: C online clients hold + confirm on ONE hot slot as fast as the
//! server answers (closed loop: each client sends its next request when the
//! previous one is answered), while M counters sell the same slot from their
//! leases. Measures admissions per second, hold/confirm latency, errors, and
//! checks the books: nothing oversold, every 201 on the server, what is left
//! stranded in leases at sell-out.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tessera_core::slot::SlotId;
use tessera_terminal::TerminalError;
use tokio::task::JoinSet;

use crate::affinity::{allowed_cpus, pin_process, pin_this_process, Pinning};
use crate::client::{card_sale, enrol_counter, http_client, HoldAnswer, Shop};
use crate::cpu::{CpuMark, CpuSpent};
use crate::pg_naive::PgNaiveRun;
use crate::server::{Server, ServerOptions};
use crate::stats::{error_code, metric_sum_count, transport_code, Errors, Samples, Summary};
use crate::thread_cpu::{us_per_request, NamedThreadCpu, ThreadSpent};

/// The SQLite server's writer thread (sync-server/src/sqlite/mod.rs).
pub const WRITER_THREAD: &str = "tessera-writer";

#[derive(Clone, Debug)]
pub struct SpikeOptions {
    pub capacity: u32,
    pub clients: usize,
    pub terminals: usize,
    /// Longest a run lasts if the slot does not sell out first.
    pub duration: Duration,
    /// Commit modes to run, in order ("group", "per-request").
    pub modes: Vec<String>,
    pub server_bin: PathBuf,
    /// Admissions per online order.
    pub quantity: u32,
    /// Core settings to run every mode with, in order.
    pub cores: Vec<Cores>,
    /// Also run PostgreSQL's naive hot-row update (pgbench) at the same
    /// client count and duration, and compare.
    pub pg_reference: bool,
}

/// How the server and the load generator share the machine's CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cores {
    /// The scheduler puts every thread where it likes (as in production
    /// when the load comes from elsewhere, but here the load generator
    /// competes with the server).
    Shared,
    /// The server on one CPU, the load generator on another.
    Pinned,
}

impl Cores {
    pub fn name(self) -> &'static str {
        match self {
            Cores::Shared => "shared",
            Cores::Pinned => "pinned",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SpikeRun {
    pub commit: String,
    pub cores: Cores,
    /// The CPUs of a pinned run.
    pub pinning: Option<Pinning>,
    pub capacity: u32,
    pub clients: usize,
    pub terminals: usize,
    /// Start to the last confirmed online order.
    pub elapsed_s: f64,
    pub online_orders: u64,
    pub online_admissions: u64,
    /// Confirmed online admissions per second.
    pub admissions_per_sec: f64,
    pub counter_sales: u64,
    pub counter_admissions: u64,
    pub sold_out: bool,
    pub hold: Summary,
    pub confirm: Summary,
    pub errors: Errors,
    /// Online + counter admissions beyond capacity, from the server's books.
    pub oversold: u64,
    /// Capacity left unsold at sell-out (in leases, or not sold at all).
    pub stranded: Option<u64>,
    pub stranded_pct: Option<f64>,
    pub server_sold_online: u64,
    pub server_counter_admissions: u64,
    /// Confirmed (201) online admissions the server does not have, or has
    /// beyond what clients were told: must be 0.
    pub online_books_mismatch: i64,
    /// Jobs per commit, averaged over the run (from /metrics).
    pub mean_commit_batch: Option<f64>,
    pub mean_commit_ms: Option<f64>,
    pub commits: Option<u64>,
    /// Where the machine's CPU went during the run.
    pub cpu: CpuSpent,
    /// Holds and confirms the server answered during the run.
    pub write_requests: u64,
    /// The writer thread's own on-CPU time during the run (`None`: the
    /// thread was not found or `/proc` could not be read).
    pub writer_cpu: Option<ThreadSpent>,
    /// Writer on-CPU microseconds per write request.
    pub writer_cpu_us_per_request: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpikeReport {
    pub scenario: &'static str,
    pub runs: Vec<SpikeRun>,
    /// Group-commit admissions/s divided by per-request admissions/s (of
    /// the first core setting run).
    pub group_over_per_request: Option<f64>,
    /// The headline figures of each core setting, side by side.
    pub by_cores: Vec<CoresFigures>,
    /// With `--pg-reference`: PostgreSQL's naive hot row (shared cores).
    pub pg_naive: Option<PgNaiveRun>,
    pub targets: SpikeTargets,
}

/// One core setting's figures.
#[derive(Clone, Debug, Serialize)]
pub struct CoresFigures {
    pub cores: Cores,
    pub group_admissions_per_sec: Option<f64>,
    pub per_request_admissions_per_sec: Option<f64>,
    pub group_writer_cpu_us_per_request: Option<f64>,
    pub per_request_writer_cpu_us_per_request: Option<f64>,
    pub group_over_per_request: Option<f64>,
    /// Against PostgreSQL's naive hot row (with `--pg-reference`).
    pub group_over_naive: Option<f64>,
    pub per_request_over_naive: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SpikeTargets {
    pub admissions_per_sec_min: f64,
    pub p99_ms_max: f64,
    pub ratio_min: f64,
    pub stranded_pct_max: f64,
}

const TARGETS: SpikeTargets = SpikeTargets {
    admissions_per_sec_min: 10_000.0,
    p99_ms_max: 50.0,
    ratio_min: 5.0,
    stranded_pct_max: 1.0,
};

pub async fn run(opts: &SpikeOptions) -> Result<SpikeReport> {
    // Refused before anything runs, not after the shared half.
    let pinning = if opts.cores.contains(&Cores::Pinned) {
        let allowed = allowed_cpus()?;
        Some(Pinning::choose(&allowed).context("--cores pinned")?)
    } else {
        None
    };
    // First, so that a missing PostgreSQL or too many clients stop the
    // invocation before the long part.
    let pg_naive = if opts.pg_reference {
        crate::pg_naive::check_clients(opts.clients)?;
        eprintln!(
            "spike: PostgreSQL naive hot row, {} clients, {} s …",
            opts.clients,
            opts.duration.as_secs()
        );
        let (clients, duration) = (opts.clients, opts.duration);
        let r = tokio::task::spawn_blocking(move || crate::pg_naive::run(clients, duration))
            .await
            .context("the PostgreSQL reference")??;
        eprintln!(
            "spike: PostgreSQL naive hot row: {:.0} admissions/s",
            r.admissions_per_sec
        );
        Some(r)
    } else {
        None
    };
    let mut runs = Vec::new();
    for &cores in &opts.cores {
        let pin = (cores == Cores::Pinned).then(|| pinning.clone()).flatten();
        for mode in &opts.modes {
            eprintln!(
                "spike: commit={mode}, cores {}, capacity {}, {} online clients, {} terminals …",
                cores.name(),
                opts.capacity,
                opts.clients,
                opts.terminals
            );
            let r = run_one(opts, mode, pin.as_ref()).await?;
            eprintln!(
                "spike: commit={mode}, cores {}: {:.0} admissions/s over {:.2} s",
                cores.name(),
                r.admissions_per_sec,
                r.elapsed_s
            );
            runs.push(r);
        }
    }
    let by_cores: Vec<CoresFigures> = opts
        .cores
        .iter()
        .map(|&cores| figures_of(&runs, cores, pg_naive.as_ref()))
        .collect();
    Ok(SpikeReport {
        scenario: "spike",
        group_over_per_request: by_cores.first().and_then(|f| f.group_over_per_request),
        runs,
        by_cores,
        pg_naive,
        targets: TARGETS,
    })
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn figures_of(runs: &[SpikeRun], cores: Cores, naive: Option<&PgNaiveRun>) -> CoresFigures {
    let run = |m: &str| runs.iter().find(|r| r.commit == m && r.cores == cores);
    let group = run("group");
    let per_request = run("per-request");
    let rate = |r: Option<&SpikeRun>| r.map(|r| r.admissions_per_sec);
    CoresFigures {
        cores,
        group_admissions_per_sec: rate(group),
        per_request_admissions_per_sec: rate(per_request),
        group_writer_cpu_us_per_request: group.and_then(|r| r.writer_cpu_us_per_request),
        per_request_writer_cpu_us_per_request: per_request
            .and_then(|r| r.writer_cpu_us_per_request),
        group_over_per_request: ratio(rate(group), rate(per_request)),
        group_over_naive: ratio(rate(group), naive.map(|n| n.admissions_per_sec)),
        per_request_over_naive: ratio(rate(per_request), naive.map(|n| n.admissions_per_sec)),
    }
}

/// Puts this process back on the CPUs it had when dropped, so that a pinned
/// run leaves the next one (and the counters' uploads) unpinned.
struct Unpin(Vec<usize>);

impl Drop for Unpin {
    fn drop(&mut self) {
        if let Err(e) = pin_this_process(&self.0) {
            eprintln!("spike: could not unpin the load generator: {e}");
        }
    }
}

/// Shared by every task of one run.
struct Ctx {
    shop: Shop,
    slot: SlotId,
    quantity: u32,
    terminals: usize,
    tag: String,
    start: Instant,
    done: AtomicBool,
    /// Microseconds since start of the last confirmed order / counter sale.
    last_confirm_us: AtomicU64,
    last_sale_us: AtomicU64,
}

impl Ctx {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

#[derive(Default)]
struct ClientOut {
    hold: Samples,
    confirm: Samples,
    errors: Errors,
    orders: u64,
    admissions: u64,
}

#[derive(Default)]
struct SellerOut {
    errors: Errors,
    sales: u64,
    admissions: u64,
}

async fn run_one(opts: &SpikeOptions, mode: &str, pin: Option<&Pinning>) -> Result<SpikeRun> {
    let mut options = ServerOptions::new(opts.server_bin.clone());
    options.commit = mode.to_string();
    let server = Server::start(options)?;
    // The server's threads all exist once it serves (those it makes later
    // inherit); then this process's, which the counters' runtime below
    // inherits too.
    let _unpin = match pin {
        Some(p) => {
            pin_process(server.pid(), &[p.server]).context("pinning the server")?;
            let allowed = allowed_cpus()?;
            pin_this_process(&[p.load_generator]).context("pinning the load generator")?;
            Some(Unpin(allowed))
        }
        None => None,
    };
    let slot = server.slot("15:30");
    server.set_capacity(slot, opts.capacity)?;

    let http = http_client(opts.clients + 8)?;
    let shop = Shop::new(http, &server.url).with_channel(&server.channel_token);

    let mut counters = Vec::new();
    for i in 1..=opts.terminals {
        counters.push(enrol_counter(&server, &server.url, &format!("Counter {i}")).await?);
    }
    // Counters learn the slot's capacity and take their first leases.
    for c in &counters {
        c.t.sync_now().await.context("first sync")?;
    }
    // Warm the connection pool so the measurement does not start with a
    // thousand TCP handshakes at once.
    let mut warm = JoinSet::new();
    for _ in 0..opts.clients {
        let shop = shop.clone();
        warm.spawn(async move { shop.available(slot).await.is_ok() });
    }
    while warm.join_next().await.is_some() {}
    let metrics_before = shop.metrics().await.unwrap_or_default();
    let cpu_before = CpuMark::now(&[server.pid()]);
    let writer_before = NamedThreadCpu::start(server.pid(), WRITER_THREAD);

    let ctx = Arc::new(Ctx {
        shop: shop.clone(),
        slot,
        quantity: opts.quantity,
        terminals: opts.terminals,
        tag: format!("{mode}-{}", uuid::Uuid::now_v7().simple()),
        start: Instant::now(),
        done: AtomicBool::new(false),
        last_confirm_us: AtomicU64::new(0),
        last_sale_us: AtomicU64::new(0),
    });

    // Counters commit each sale to SQLite synchronously (a blocking fsync):
    // they get threads of their own, so they do not stall the online
    // clients' runtime and inflate the latencies measured there.
    let counter_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.terminals.clamp(1, 4))
        .thread_name("counters")
        .enable_all()
        .build()?;
    let loops: Vec<_> = {
        let _in = counter_rt.enter();
        counters.iter().map(|c| c.t.spawn_sync_loop()).collect()
    };
    let mut sellers = Vec::new();
    for c in &counters {
        let t = c.t.clone();
        let ctx = ctx.clone();
        sellers.push(counter_rt.spawn(async move { seller(ctx, t).await }));
    }
    let mut clients = JoinSet::new();
    for id in 0..opts.clients {
        let ctx = ctx.clone();
        clients.spawn(async move { online_client(ctx, id).await });
    }
    let monitor = {
        let ctx = ctx.clone();
        let duration = opts.duration;
        let sync_ms: u64 = std::env::var("TESSERA_SYNC_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        // No sale anywhere for this long with nothing bookable: sold out.
        let quiet = Duration::from_millis(2 * sync_ms + 1500);
        tokio::spawn(async move {
            let mut sold_out = false;
            while !ctx.done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if ctx.start.elapsed() >= duration {
                    break;
                }
                if ctx.terminals == 0 {
                    continue;
                }
                let last = ctx
                    .last_confirm_us
                    .load(Ordering::Relaxed)
                    .max(ctx.last_sale_us.load(Ordering::Relaxed));
                let idle = Duration::from_micros(ctx.now_us().saturating_sub(last));
                if idle >= quiet && ctx.shop.available(ctx.slot).await.ok() == Some(0) {
                    sold_out = true;
                    break;
                }
            }
            ctx.done.store(true, Ordering::Relaxed);
            sold_out
        })
    };

    let mut online = ClientOut::default();
    let mut saw_sold_out = false;
    while let Some(out) = clients.join_next().await {
        let out = out.context("client task")?;
        saw_sold_out |= out.errors.0.contains_key("sold_out");
        online.hold.extend(out.hold);
        online.confirm.extend(out.confirm);
        online.errors.merge(out.errors);
        online.orders += out.orders;
        online.admissions += out.admissions;
    }
    // Up to the last online client's end; with counters, their selling
    // (in this process) is inside it too.
    let cpu = cpu_before.spent(&CpuMark::now(&[server.pid()]));
    let writer_cpu = writer_before.spent();
    let write_requests = online.hold.0.len() as u64 + online.confirm.0.len() as u64;
    ctx.done.store(true, Ordering::Relaxed);
    let monitor_sold_out = monitor.await.unwrap_or(false);
    let mut counter_out = SellerOut::default();
    for s in sellers {
        let out = s.await.context("seller task")?;
        counter_out.errors.merge(out.errors);
        counter_out.sales += out.sales;
        counter_out.admissions += out.admissions;
    }
    for l in loops {
        l.abort();
    }
    counter_rt.shutdown_background();
    for c in &counters {
        crate::client::sync_until_drained(&c.t, Duration::from_secs(60)).await?;
    }
    let metrics_after = shop.metrics().await.unwrap_or_default();

    // The server's books.
    let conn = server.read_db()?;
    let (capacity, sold_online, counter_adm): (u64, u64, u64) = conn.query_row(
        "SELECT capacity, sold_online,
                (SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE slot_id = ?1 AND voided_at IS NULL)
         FROM slots WHERE slot_id = ?1",
        [slot.to_string()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let total = sold_online + counter_adm;
    let oversold = total.saturating_sub(capacity);
    let sold_out = if opts.terminals == 0 {
        saw_sold_out
    } else {
        monitor_sold_out
    };
    let stranded = sold_out.then(|| capacity.saturating_sub(total));

    let elapsed_s = Duration::from_micros(ctx.last_confirm_us.load(Ordering::Relaxed))
        .as_secs_f64()
        .max(1e-6);
    let batch = |text: &str, name: &str| metric_sum_count(text, name);
    let (mean_commit_batch, mean_commit_ms, commits) = match (
        batch(&metrics_after, "tessera_commit_batch_jobs"),
        batch(&metrics_after, "tessera_commit_seconds"),
    ) {
        (Some((js, jc)), Some((ss, sc))) => {
            let (js0, jc0) =
                batch(&metrics_before, "tessera_commit_batch_jobs").unwrap_or_default();
            let (ss0, sc0) = batch(&metrics_before, "tessera_commit_seconds").unwrap_or_default();
            let n = jc - jc0;
            (
                (n > 0.0).then(|| (js - js0) / n),
                (sc - sc0 > 0.0).then(|| (ss - ss0) / (sc - sc0) * 1000.0),
                Some(n.max(0.0) as u64),
            )
        }
        _ => (None, None, None),
    };
    let mut errors = online.errors;
    for (k, v) in counter_out.errors.0 {
        *errors.0.entry(format!("counter_{k}")).or_default() += v;
    }
    Ok(SpikeRun {
        commit: mode.to_string(),
        cores: if pin.is_some() {
            Cores::Pinned
        } else {
            Cores::Shared
        },
        pinning: pin.cloned(),
        capacity: opts.capacity,
        clients: opts.clients,
        terminals: opts.terminals,
        elapsed_s,
        online_orders: online.orders,
        online_admissions: online.admissions,
        admissions_per_sec: online.admissions as f64 / elapsed_s,
        counter_sales: counter_out.sales,
        counter_admissions: counter_out.admissions,
        sold_out,
        hold: online.hold.summary(),
        confirm: online.confirm.summary(),
        errors,
        oversold,
        stranded,
        stranded_pct: stranded.map(|s| s as f64 * 100.0 / capacity.max(1) as f64),
        server_sold_online: sold_online,
        server_counter_admissions: counter_adm,
        online_books_mismatch: sold_online as i64 - online.admissions as i64,
        mean_commit_batch,
        mean_commit_ms,
        commits,
        cpu,
        write_requests,
        writer_cpu,
        writer_cpu_us_per_request: writer_cpu.and_then(|w| us_per_request(&w, write_requests)),
    })
}

/// One web visitor after another: hold, then confirm. On `sold_out` with no
/// counters in play, the slot is gone for good; with counters, places can
/// come back (recalled from leases), so the visitor watches availability.
async fn online_client(ctx: Arc<Ctx>, id: usize) -> ClientOut {
    let mut out = ClientOut::default();
    let mut i = 0u64;
    while !ctx.done.load(Ordering::Relaxed) {
        i += 1;
        let key = format!("{}-{id}-{i}", ctx.tag);
        let started = Instant::now();
        let hold_id = match ctx
            .shop
            .hold(&format!("{key}-h"), ctx.slot, "adult", ctx.quantity)
            .await
        {
            Err(e) => {
                out.errors.add(transport_code(&e));
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Ok((status, body)) => {
                out.hold.push(started.elapsed());
                if status == 201 {
                    match serde_json::from_slice::<HoldAnswer>(&body) {
                        Ok(h) => h.hold_id,
                        Err(_) => {
                            out.errors.add("unreadable_hold");
                            continue;
                        }
                    }
                } else {
                    let code = error_code(status, &body);
                    let sold_out = code == "sold_out";
                    out.errors.add(code);
                    if sold_out {
                        if ctx.terminals == 0 {
                            break;
                        }
                        wait_for_places(&ctx).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
            }
        };
        // The visitor pays; a confirm lost on the way is retried with the
        // same key (it never makes a second order).
        let ckey = format!("{key}-c");
        for attempt in 0..5u64 {
            let started = Instant::now();
            match ctx.shop.confirm(&ckey, &hold_id).await {
                Ok((201, _)) => {
                    out.confirm.push(started.elapsed());
                    out.orders += 1;
                    out.admissions += u64::from(ctx.quantity);
                    ctx.last_confirm_us
                        .fetch_max(ctx.now_us(), Ordering::Relaxed);
                    break;
                }
                Ok((status, body)) => {
                    out.confirm.push(started.elapsed());
                    out.errors
                        .add(format!("confirm_{}", error_code(status, &body)));
                    if status < 500 {
                        break;
                    }
                }
                Err(e) => out.errors.add(format!("confirm_{}", transport_code(&e))),
            }
            tokio::time::sleep(Duration::from_millis(20 * (attempt + 1))).await;
        }
    }
    out
}

async fn wait_for_places(ctx: &Ctx) {
    while !ctx.done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if ctx.shop.available(ctx.slot).await.unwrap_or(0) > 0 {
            return;
        }
    }
}

/// A counter selling one adult ticket after another from its lease.
async fn seller(ctx: Arc<Ctx>, t: tessera_terminal::Terminal) -> SellerOut {
    let mut out = SellerOut::default();
    while !ctx.done.load(Ordering::Relaxed) {
        match t.sell(card_sale(ctx.slot, 1)).await {
            Ok(done) => {
                out.sales += 1;
                out.admissions += u64::from(done.sale.admissions);
                ctx.last_sale_us.fetch_max(ctx.now_us(), Ordering::Relaxed);
            }
            Err(TerminalError::NotEnoughPlaces { .. }) => {
                out.errors.add("not_enough_places");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                out.errors.add(e.code());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    out
}

pub fn print(report: &SpikeReport) {
    println!("== spike: one hot slot, hold + confirm per online order");
    for r in &report.runs {
        let cores = match &r.pinning {
            Some(p) => format!(
                "pinned (server CPU {}, load generator CPU {})",
                p.server, p.load_generator
            ),
            None => "shared".to_string(),
        };
        println!(
            "-- commit={}  cores {cores}  capacity {}  online clients {}  counters {}",
            r.commit, r.capacity, r.clients, r.terminals
        );
        println!(
            "   confirmed admissions/s   {:>10.0}   ({} admissions in {} orders over {:.2} s{})",
            r.admissions_per_sec,
            r.online_admissions,
            r.online_orders,
            r.elapsed_s,
            if r.sold_out {
                ", sold out"
            } else {
                ", not sold out: duration reached"
            }
        );
        println!(
            "   writer CPU per request   {}",
            writer_line(
                r.writer_cpu_us_per_request,
                r.writer_cpu,
                r.write_requests,
                "no thread named tessera-writer found, or no request answered"
            )
        );
        println!("   hold                     {}", r.hold.line());
        println!("   confirm                  {}", r.confirm.line());
        println!("   error codes              {}", r.errors.line());
        println!(
            "   cpu                      {}",
            r.cpu.line(r.online_admissions, "online admission")
        );
        if r.terminals > 0 {
            println!(
                "   counter sales            {} sales, {} admissions",
                r.counter_sales, r.counter_admissions
            );
        }
        println!(
            "   server books             sold online {}, counters {}, capacity {}",
            r.server_sold_online, r.server_counter_admissions, r.capacity
        );
        println!("   oversold                 {}", r.oversold);
        println!(
            "   online 201s vs server    {} (must be 0)",
            r.online_books_mismatch
        );
        match (r.stranded, r.stranded_pct) {
            (Some(s), Some(p)) => println!("   stranded at sell-out     {s} ({p:.2} %)"),
            _ => println!("   stranded at sell-out     n/a (not sold out)"),
        }
        if let (Some(b), Some(ms), Some(n)) = (r.mean_commit_batch, r.mean_commit_ms, r.commits) {
            println!(
                "   commits                  {n}, {b:.1} jobs each, {ms:.2} ms each on average"
            );
        }
    }
    if let Some(naive) = &report.pg_naive {
        crate::pg_naive::print(naive);
    }
    print_side_by_side(report);
    let t = &report.targets;
    println!(
        "-- targets: >= {:.0} admissions/s with p99 <= {:.0} ms (group), >= {:.0}x per-request, 0 oversold, stranded <= {:.0} %",
        t.admissions_per_sec_min, t.p99_ms_max, t.ratio_min, t.stranded_pct_max
    );
}

/// Violations of what must hold whatever the speed.
pub fn violations(report: &SpikeReport) -> Vec<String> {
    let mut v = Vec::new();
    for r in &report.runs {
        if r.oversold > 0 {
            v.push(format!("commit={}: oversold {}", r.commit, r.oversold));
        }
        if r.online_books_mismatch != 0 {
            v.push(format!(
                "commit={}: clients were told {} admissions, the server has {}",
                r.commit, r.online_admissions, r.server_sold_online
            ));
        }
        if r.server_counter_admissions != r.counter_admissions {
            v.push(format!(
                "commit={}: counters sold {} admissions, the server has {}",
                r.commit, r.counter_admissions, r.server_counter_admissions
            ));
        }
    }
    v
}

/// `12.3 µs (… s on CPU over N holds + confirms, from schedstat)`, or `n/a`.
pub fn writer_line(
    us: Option<f64>,
    spent: Option<ThreadSpent>,
    requests: u64,
    why_not: &str,
) -> String {
    match (us, spent) {
        (Some(us), Some(w)) => format!(
            "{us:>10.1} µs   ({:.2} s on CPU over {requests} holds + confirms, from {})",
            w.on_cpu_s,
            match w.source {
                crate::thread_cpu::Source::Schedstat => "schedstat",
                crate::thread_cpu::Source::Stat => "stat",
            }
        ),
        _ => format!("       n/a   ({why_not})"),
    }
}

/// The headline figures of every core setting in columns.
fn print_side_by_side(report: &SpikeReport) {
    let cols = &report.by_cores;
    if cols.is_empty() {
        return;
    }
    let rate = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.0}"));
    let us = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.1}"));
    let times = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.2}x"));
    let header: String = cols
        .iter()
        .map(|c| format!("{:>12}", c.cores.name()))
        .collect();
    println!("-- hot slot figures, cores: {header}");
    let row = |label: &str, cell: &dyn Fn(&CoresFigures) -> String| {
        let cells: String = cols.iter().map(|c| format!("{:>12}", cell(c))).collect();
        println!("   {label:<31}{cells}");
    };
    row("group admissions/s", &|c| rate(c.group_admissions_per_sec));
    row("per-request admissions/s", &|c| {
        rate(c.per_request_admissions_per_sec)
    });
    row("writer CPU µs/request, group", &|c| {
        us(c.group_writer_cpu_us_per_request)
    });
    row("writer CPU µs/request, per-req", &|c| {
        us(c.per_request_writer_cpu_us_per_request)
    });
    row("group ÷ per-request", &|c| times(c.group_over_per_request));
    if report.pg_naive.is_some() {
        row("group ÷ PostgreSQL naive", &|c| times(c.group_over_naive));
        row("per-request ÷ PostgreSQL naive", &|c| {
            times(c.per_request_over_naive)
        });
    }
}
