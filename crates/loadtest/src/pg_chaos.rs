//! `pg-chaos`: online clients and counters on PostgreSQL under faults.
//! Three server processes on one throw-away cluster sell one slot to online
//! clients that go to any live process, as behind a reverse proxy, and to
//! real counter engines (`tessera_terminal::Terminal`, each with its own
//! SQLite replica) selling from their leases. Each counter talks to one
//! process through a proxy of its own (counter i to process i mod 3), which
//! moves it to another live process while its own is dead and back when it
//! returns; each counter's link is also cut once (it keeps selling from its
//! leases), and a counter's pending round is sent to two processes at once
//! now and then. Mid-run one process is SIGKILLed and started again,
//! PostgreSQL is restarted (fast shutdown), and another process is killed
//! and started again. Online clients retry every request with its
//! Idempotency-Key until it is answered (any process), and send some
//! requests to two processes at once. Then every counter uploads until
//! drained and the books are checked in PostgreSQL:
//!
//! - oversold 0: online + counter admissions ≤ capacity, no counter sale
//!   accepted over capacity, and `sold_online + held_online + leased ≤
//!   capacity` on every slot row;
//! - every 201 order stored once, no order stored that no client was
//!   answered, every answer to one key the same;
//! - every sale a counter committed stored once with its seq, admissions
//!   and tickets, nothing else stored for it, all of it acknowledged;
//!   each lease's `sold` equals the sales stored against it;
//! - tallies equal the log: each counter's actor in the `tallies` row (the
//!   PostgreSQL backend keeps the counters' actors there, online sales are
//!   the row's `sold_online`) equals its stored admissions, and every
//!   process's availability reports online + counter admissions sold.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tessera_core::clock::Clock;
use tessera_core::slot::SlotId;
use tessera_core::tally::SlotTally;
use tessera_server::testkit::{slot, PgCluster, PgMuseum, PgServer};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::client::{
    device_token, enrol_counter_with, http_client, sync_until_drained, Counter, Raw, Shop,
};
use crate::counters::{check_counter, sell_until, tally_actor_sold, Findings, StoredSales};
use crate::proxy::{CutMode, Proxy};
use crate::stats::{error_code, Errors};

/// Server processes in the run.
const PROCESSES: usize = 3;

/// What the harness breaks on purpose before checking, to show the check
/// catches it (for the harness's own test).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sabotage {
    /// Deletes one answered online order.
    pub order: bool,
    /// Deletes one sale a counter committed (and its tickets).
    pub counter_sale: bool,
}

#[derive(Clone, Debug)]
pub struct PgChaosOptions {
    pub capacity: u32,
    pub clients: usize,
    pub seed: u64,
    pub duration: Duration,
    /// Share of requests also sent to a second process at the same time.
    pub duplicate_rate: f64,
    /// Counters selling the slot beside the online clients (counter i syncs
    /// to process i mod 3).
    pub counters: usize,
    /// Mean pause between two sales of one counter. Every sale wakes the
    /// counter's sync loop, and a round holds the slot's row locked for its
    /// transaction, so counters selling every 100 ms leave online holds
    /// little of the row (see docs/BENCHMARKS.md); a few hundred ms lets
    /// both channels sell through the faults.
    pub counter_gap: Duration,
    pub server_bin: PathBuf,
    pub sabotage: Sabotage,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PgChaosReport {
    pub seed: u64,
    pub capacity: u32,
    pub online_orders: u64,
    pub requests_sent_twice: u64,
    pub kills_done: u64,
    pub postgres_restarts: u64,
    pub counters: usize,
    /// Times a counter's proxy moved it to another process (or back home).
    pub counter_moves: u64,
    pub counter_cuts: u64,
    /// Counter rounds sent to two processes at once.
    pub sync_bodies_sent_twice: u64,
    pub counter_sales: u64,
    pub counter_admissions: u64,
    pub counter_sales_while_cut: u64,
    pub errors: Errors,
    pub pg_sold_online: i64,
    pub pg_held_online: i64,
    pub pg_leased: i64,
    pub pg_orders: i64,
    /// Counter admissions stored for the slot.
    pub pg_counter_admissions: i64,
    pub capacity_left: i64,
    /// Online + counter admissions beyond capacity (and counter admissions
    /// accepted over capacity).
    pub oversold: i64,
    /// `sold_online + held_online + leased` beyond capacity, any slot row.
    pub escrow_overcommit: i64,
    /// 201 orders PostgreSQL does not have.
    pub lost_orders: u64,
    /// Orders stored that no client was answered, or stored twice.
    pub orders_without_answer: u64,
    /// Two answers to one Idempotency-Key that differ.
    pub inconsistent_answers: u64,
    /// Requests no live process answered within a minute of retries.
    pub unanswered: u64,
    /// Committed counter sales not stored (or not as made).
    pub lost_sales: u64,
    /// Counter sales stored that no counter made, lease counts off the log.
    pub duplicated_sales: u64,
    pub tally_mismatches: u64,
    pub heal_s: f64,
    pub violations: Vec<String>,
    pub passed: bool,
}

/// The processes' addresses as a reverse proxy would know them (`None`:
/// dead), and the counters' proxies, each with its home process.
#[derive(Clone, Default)]
struct Pool {
    urls: Arc<RwLock<Vec<Option<String>>>>,
    counters: Arc<Mutex<Vec<(Proxy, usize)>>>,
    moves: Arc<AtomicU64>,
}

impl Pool {
    fn live(&self) -> Vec<String> {
        let urls = self.urls.read().unwrap_or_else(|p| p.into_inner());
        urls.iter().flatten().cloned().collect()
    }

    fn pick(&self, rng: &mut StdRng) -> Option<String> {
        let urls = self.live();
        (!urls.is_empty()).then(|| urls[rng.random_range(0..urls.len())].clone())
    }

    /// Process `i` died (`None`) or listens at `url`; every counter whose
    /// process that changes is moved.
    fn set(&self, i: usize, url: Option<String>) {
        self.urls.write().unwrap_or_else(|p| p.into_inner())[i] = url;
        self.reroute();
    }

    /// Points each counter's proxy at its home process if alive, else at
    /// the next live one (as a proxy's health check would).
    fn reroute(&self) {
        let urls = self.urls.read().unwrap_or_else(|p| p.into_inner()).clone();
        for (proxy, home) in self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let Some(url) = (0..urls.len())
                .map(|k| (home + k) % urls.len())
                .find_map(|k| urls[k].as_ref())
            else {
                continue;
            };
            let Some(addr) = socket_of(url) else { continue };
            if proxy.upstream() != addr {
                proxy.route_to(addr);
                self.moves.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// `http://127.0.0.1:port` → the address.
fn socket_of(url: &str) -> Option<SocketAddr> {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .ok()
}

struct Ctx {
    http: reqwest::Client,
    token: String,
    pool: Pool,
    hot: SlotId,
    duplicate_rate: f64,
    sent_twice: AtomicU64,
    errors: Mutex<Errors>,
    /// Every answered order id, once per 201 a client kept.
    orders: Mutex<Vec<String>>,
    inconsistent: AtomicU64,
    unanswered: AtomicU64,
}

/// How long a request is retried before the run counts it unanswered (a
/// violation) instead of hanging.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

impl Ctx {
    fn shop(&self, url: &str) -> Shop {
        Shop::new(self.http.clone(), url).with_channel(&self.token)
    }

    /// Sends a request until it is answered (not a network error, not 5xx),
    /// on whichever processes are alive; sometimes to two at once, whose
    /// answers must agree.
    async fn answered<F, Fut>(&self, rng: &mut StdRng, f: F) -> Raw
    where
        F: Fn(Shop) -> Fut,
        Fut: std::future::Future<Output = Result<Raw, reqwest::Error>>,
    {
        let deadline = Instant::now() + ANSWER_WITHIN;
        loop {
            if Instant::now() > deadline {
                self.unanswered.fetch_add(1, Ordering::Relaxed);
                return (599, Vec::new());
            }
            let Some(url) = self.pool.pick(rng) else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let twice = rng.random_bool(self.duplicate_rate);
            let first = if twice {
                let other = self.pool.pick(rng).unwrap_or_else(|| url.clone());
                self.sent_twice.fetch_add(1, Ordering::Relaxed);
                let (a, b) = tokio::join!(f(self.shop(&url)), f(self.shop(&other)));
                if let (Ok(a), Ok(b)) = (&a, &b) {
                    if a.0 < 500 && b.0 < 500 && !same_answer(a, b) {
                        self.inconsistent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                a.or(b)
            } else {
                f(self.shop(&url)).await
            };
            match first {
                Ok(raw) if raw.0 < 500 => return raw,
                Ok(raw) => self.error(&error_code(raw.0, &raw.1)),
                Err(_) => self.error("transport"),
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
        }
    }

    fn error(&self, code: &str) {
        let code = code.to_string();
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(code);
    }
}

/// Whether two final answers (both below 500) to one key say the same.
fn same_answer(a: &Raw, b: &Raw) -> bool {
    if a.0 != b.0 {
        return false;
    }
    let id = |r: &Raw, field: &str| -> Option<String> {
        serde_json::from_slice::<serde_json::Value>(&r.1)
            .ok()?
            .get(field)?
            .as_str()
            .map(str::to_string)
    };
    id(a, "hold_id") == id(b, "hold_id") && id(a, "order_id") == id(b, "order_id")
}

pub async fn run(opts: &PgChaosOptions) -> Result<PgChaosReport> {
    std::env::set_var("TESSERA_SERVER_BIN", &opts.server_bin);
    let (pg, museum, servers) = tokio::task::spawn_blocking(|| {
        let pg = PgCluster::start();
        let museum = PgMuseum::init(&pg.url(), "09:00");
        let servers: Vec<PgServer> = (0..PROCESSES)
            .map(|i| museum.serve(&format!("p{i}"), &[]))
            .collect();
        (pg, museum, servers)
    })
    .await
    .context("starting PostgreSQL and three servers")?;
    let pg = Arc::new(pg);
    let museum = Arc::new(museum);
    let hot = slot(museum.day, "11:00");
    admin(
        &museum,
        &[
            "capacity",
            "--slot",
            &hot.to_string(),
            "--set",
            &opts.capacity.to_string(),
        ],
    )?;

    let pool = Pool::default();
    *pool.urls.write().unwrap_or_else(|p| p.into_inner()) =
        servers.iter().map(|s| Some(s.url.clone())).collect();

    // Counters: each enrolled and syncing through a proxy of its own in
    // front of its home process.
    let mut counters: Vec<Counter> = Vec::new();
    let mut links: Vec<Proxy> = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..opts.counters {
        let home = i % PROCESSES;
        let upstream = socket_of(&servers[home].url).context("a server's address")?;
        let link = Proxy::start(upstream).await?;
        let name = format!("Counter {}", i + 1);
        let code = admin(&museum, &["enrol", "--role", "counter", "--name", &name])?;
        let clock = Clock::with_offset_secs(museum.offset_secs);
        let c = enrol_counter_with(&link.url(), &code, &name, clock).await?;
        c.t.sync_now().await.context("first sync")?;
        tokens.push(device_token(c.dir.path())?);
        pool.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((link.clone(), home));
        links.push(link);
        counters.push(c);
    }

    let ctx = Arc::new(Ctx {
        http: http_client(opts.clients * 2 + 4)?,
        token: museum.channel_token.clone(),
        pool: pool.clone(),
        hot,
        duplicate_rate: opts.duplicate_rate,
        sent_twice: AtomicU64::new(0),
        errors: Mutex::new(Errors::default()),
        orders: Mutex::new(Vec::new()),
        inconsistent: AtomicU64::new(0),
        unanswered: AtomicU64::new(0),
    });

    let stop = Arc::new(AtomicBool::new(false));
    let heal_started;
    let mut report = PgChaosReport {
        counters: opts.counters,
        ..PgChaosReport::default()
    };
    let mut sold_by: Vec<Vec<(Uuid, u32)>> = vec![Vec::new(); opts.counters];
    let servers = {
        let loops: Vec<_> = counters.iter().map(|c| c.t.spawn_sync_loop()).collect();
        let mut sellers = JoinSet::new();
        let gap_ms = opts.counter_gap.as_millis() as u64;
        for (i, c) in counters.iter().enumerate() {
            let (t, link, stop) = (c.t.clone(), links[i].clone(), stop.clone());
            let mut rng = StdRng::seed_from_u64(opts.seed ^ (0xC0FFEE + i as u64));
            sellers.spawn(async move {
                let out = sell_until(&t, hot, gap_ms, &stop, &link, &mut rng).await;
                (i, out)
            });
        }
        let mut clients = JoinSet::new();
        for c in 0..opts.clients {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            let seed = opts.seed.wrapping_add(c as u64 + 1);
            clients.spawn(async move { client(ctx, stop, c, seed).await });
        }
        let mut counter_faults = JoinSet::new();
        for (i, c) in counters.iter().enumerate() {
            let plan = CounterFaults {
                link: links[i].clone(),
                t: c.t.clone(),
                token: tokens[i].clone(),
                pool: pool.clone(),
                http: ctx.http.clone(),
                duration: opts.duration,
                seed: opts.seed ^ (0xFA17 + i as u64),
            };
            counter_faults.spawn(plan.run());
        }
        let (faults, servers) =
            faults(opts, pg.clone(), museum.clone(), servers, pool.clone()).await?;
        report.kills_done = faults.kills;
        report.postgres_restarts = faults.postgres_restarts;

        // Heal: no new sales or purchases; every link up, every counter at
        // home; then every counter uploads what it still holds.
        stop.store(true, Ordering::Relaxed);
        heal_started = Instant::now();
        while let Some(done) = counter_faults.join_next().await {
            let (cuts, twice, refused) = done.context("counter fault task")?;
            report.counter_cuts += cuts;
            report.sync_bodies_sent_twice += twice;
            report.violations.extend(refused);
        }
        for l in &links {
            l.heal();
        }
        pool.reroute();
        while let Some(done) = clients.join_next().await {
            done.context("client task")?;
        }
        while let Some(done) = sellers.join_next().await {
            let (i, out) = done.context("seller task")?;
            report.counter_sales += out.sales.len() as u64;
            report.counter_admissions += out.sales.iter().map(|(_, a)| u64::from(*a)).sum::<u64>();
            report.counter_sales_while_cut += out.while_partitioned;
            let mut errors = ctx.errors.lock().unwrap_or_else(|p| p.into_inner());
            for (k, v) in out.errors.0 {
                *errors.0.entry(format!("counter_{k}")).or_default() += v;
            }
            sold_by[i] = out.sales;
        }
        for l in loops {
            l.abort();
        }
        for c in &counters {
            sync_until_drained(&c.t, Duration::from_secs(90)).await?;
            // Once more, so the tallies the server keeps cover every sale.
            let _ = c.t.sync_now().await;
        }
        report.heal_s = heal_started.elapsed().as_secs_f64();
        servers
    };
    report.counter_moves = pool.moves.load(Ordering::Relaxed);

    let mut answered = ctx.orders.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if opts.sabotage.order {
        if let Some(victim) = answered.first() {
            pg.psql(
                "tessera",
                &format!(
                    "DELETE FROM tickets WHERE order_id = '{victim}';
                     DELETE FROM orders WHERE order_id = '{victim}';"
                ),
            );
        }
    }
    if opts.sabotage.counter_sale {
        if let Some((victim, _)) = sold_by.iter().flatten().next() {
            pg.psql(
                "tessera",
                &format!(
                    "DELETE FROM tickets WHERE sale_id = '{victim}';
                     DELETE FROM sales WHERE sale_id = '{victim}';"
                ),
            );
        }
    }
    answered.sort();
    check(opts, &pg, hot, &answered, &ctx, &mut report)?;
    let tallied = check_counters(&pg, hot, &counters, &sold_by, &mut report)?;
    check_availability(&ctx, &servers, tallied, &mut report).await;
    // The processes are kept until every answer has been read.
    drop(servers);
    report.passed = report.violations.is_empty();
    Ok(report)
}

/// Runs an admin command on the museum's database; its output.
fn admin(museum: &PgMuseum, args: &[&str]) -> Result<String> {
    let mut all = args.to_vec();
    all.extend(["--database", &museum.database_url]);
    let out = museum.cli(&all);
    anyhow::ensure!(
        out.status.success(),
        "{}: {}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One counter's own faults: its link cut once (it sells from its leases
/// meanwhile), and its pending round sent to two live processes at once
/// twice, as a proxy retrying a round it thinks lost would.
struct CounterFaults {
    link: Proxy,
    t: tessera_terminal::Terminal,
    token: String,
    pool: Pool,
    http: reqwest::Client,
    duration: Duration,
    seed: u64,
}

impl CounterFaults {
    /// (cuts, rounds sent twice, violations).
    async fn run(self) -> (u64, u64, Vec<String>) {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let d = self.duration.as_millis() as u64;
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let cut_at = rng.random_range(d / 10..=d * 6 / 10);
        let cut_len = (d / 8).max(200);
        let replays = [
            rng.random_range(d / 5..=d / 2),
            rng.random_range(d / 2..=d * 9 / 10),
        ];
        let (mut cuts, mut twice, mut violations) = (0, 0, Vec::new());
        tokio::time::sleep_until(at(cut_at).into()).await;
        self.link.cut(CutMode::Refuse);
        cuts += 1;
        tokio::time::sleep(Duration::from_millis(cut_len)).await;
        self.link.restore_one(CutMode::Refuse);
        for when in replays {
            tokio::time::sleep_until(at(when).into()).await;
            let urls = self.pool.live();
            let (Some(a), Some(b)) = (urls.first(), urls.last()) else {
                continue;
            };
            let Ok(body) = self.t.pending_sync_request() else {
                continue;
            };
            let Ok(body) = serde_json::to_string(&body) else {
                continue;
            };
            let send = |url: &str| {
                self.http
                    .post(format!("{url}/v1/sync"))
                    .bearer_auth(&self.token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
            };
            let (ra, rb) = tokio::join!(send(a), send(b));
            twice += 1;
            for r in [ra, rb].into_iter().flatten() {
                let status = r.status().as_u16();
                // 5xx (a process dying, PostgreSQL away) is retried by the
                // counter; a 4xx would refuse a round it is owed.
                if (400..500).contains(&status) {
                    let text = r.text().await.unwrap_or_default();
                    violations.push(format!(
                        "a round of {} sent to two processes was refused ({status}): {text}",
                        self.t.name()
                    ));
                }
            }
        }
        (cuts, twice, violations)
    }
}

/// One visitor after another: hold one place, confirm it, until the slot
/// sells out or the run ends.
async fn client(ctx: Arc<Ctx>, stop: Arc<AtomicBool>, c: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("pgc-{c}-{n}");
        let hot = ctx.hot;
        let held = ctx
            .answered(&mut rng, |shop| {
                let key = key.clone();
                async move { shop.hold(&key, hot, "adult", 1).await }
            })
            .await;
        if held.0 != 201 {
            let code = error_code(held.0, &held.1);
            ctx.error(&code);
            if code == "sold_out" {
                return;
            }
            continue;
        }
        let Some(hold_id) = serde_json::from_slice::<serde_json::Value>(&held.1)
            .ok()
            .and_then(|v| v["hold_id"].as_str().map(str::to_string))
        else {
            ctx.error("hold_unreadable");
            continue;
        };
        let confirmed = ctx
            .answered(&mut rng, |shop| {
                let (key, hold_id) = (format!("{key}-c"), hold_id.clone());
                async move { shop.confirm(&key, &hold_id).await }
            })
            .await;
        match confirmed.0 {
            201 => {
                if let Some(order) = serde_json::from_slice::<serde_json::Value>(&confirmed.1)
                    .ok()
                    .and_then(|v| v["order_id"].as_str().map(str::to_string))
                {
                    ctx.orders
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(order);
                }
            }
            status => ctx.error(&error_code(status, &confirmed.1)),
        }
    }
}

#[derive(Default)]
struct Faults {
    kills: u64,
    postgres_restarts: u64,
}

/// Kill a process and start it again, restart PostgreSQL, kill another.
async fn faults(
    opts: &PgChaosOptions,
    pg: Arc<PgCluster>,
    museum: Arc<PgMuseum>,
    mut servers: Vec<PgServer>,
    pool: Pool,
) -> Result<(Faults, Vec<PgServer>)> {
    let mut done = Faults::default();
    let start = Instant::now();
    let step = opts.duration / 4;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    for phase in 1..=3u32 {
        tokio::time::sleep((start + step * phase).saturating_duration_since(Instant::now())).await;
        if phase == 2 {
            let pg = pg.clone();
            tokio::task::spawn_blocking(move || pg.restart_fast())
                .await
                .context("restarting PostgreSQL")?;
            done.postgres_restarts += 1;
            continue;
        }
        let victim = rng.random_range(0..servers.len());
        servers[victim].kill();
        done.kills += 1;
        pool.set(victim, None);
        tokio::time::sleep(step / 4).await;
        let museum = museum.clone();
        let name = format!("p{victim}-again{phase}");
        servers[victim] = tokio::task::spawn_blocking(move || museum.serve(&name, &[]))
            .await
            .context("starting a killed process again")?;
        pool.set(victim, Some(servers[victim].url.clone()));
    }
    tokio::time::sleep((start + opts.duration).saturating_duration_since(Instant::now())).await;
    // The caller keeps them until the clients have their last answers.
    Ok((done, servers))
}

/// The online books and the slot rows.
fn check(
    opts: &PgChaosOptions,
    pg: &PgCluster,
    hot: SlotId,
    answered: &[String],
    ctx: &Ctx,
    r: &mut PgChaosReport,
) -> Result<()> {
    let where_hot = format!("WHERE slot_id = '{hot}'");
    let row = one_row(
        pg,
        &format!("SELECT sold_online, held_online, leased FROM slots {where_hot}"),
    )?;
    let (sold, held, leased) = (row[0], row[1], row[2]);
    let stored: Vec<String> = pg
        .psql(
            "tessera",
            &format!("SELECT order_id FROM orders {where_hot} ORDER BY order_id"),
        )
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let stored_set: HashSet<&String> = stored.iter().collect();
    let answered_set: HashSet<&String> = answered.iter().collect();
    let mut times: HashMap<&String, u32> = HashMap::new();
    for id in &stored {
        *times.entry(id).or_default() += 1;
    }
    r.seed = opts.seed;
    r.capacity = opts.capacity;
    r.online_orders = answered_set.len() as u64;
    r.requests_sent_twice = ctx.sent_twice.load(Ordering::Relaxed);
    r.errors = ctx.errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    r.pg_sold_online = sold;
    r.pg_held_online = held;
    r.pg_leased = leased;
    r.pg_orders = stored.len() as i64;
    r.lost_orders = answered_set
        .iter()
        .filter(|id| !stored_set.contains(*id))
        .count() as u64;
    r.orders_without_answer = stored_set
        .iter()
        .filter(|id| !answered_set.contains(*id))
        .count() as u64
        + times.values().filter(|n| **n > 1).count() as u64;
    r.inconsistent_answers = ctx.inconsistent.load(Ordering::Relaxed);
    r.unanswered = ctx.unanswered.load(Ordering::Relaxed);
    if r.unanswered > 0 {
        r.violations.push(format!(
            "{} requests no process answered within {} s",
            r.unanswered,
            ANSWER_WITHIN.as_secs()
        ));
    }
    if r.lost_orders > 0 {
        r.violations
            .push(format!("{} answered orders are not stored", r.lost_orders));
    }
    if r.orders_without_answer > 0 {
        r.violations.push(format!(
            "{} stored orders no client was answered (or stored twice)",
            r.orders_without_answer
        ));
    }
    if i64::try_from(stored.len()).unwrap_or(i64::MAX) != sold {
        r.violations.push(format!(
            "PostgreSQL counts {sold} sold, stores {} one-admission orders",
            stored.len()
        ));
    }
    if r.inconsistent_answers > 0 {
        r.violations.push(format!(
            "{} keys answered differently by two processes",
            r.inconsistent_answers
        ));
    }
    // The escrow invariant on every slot row (the row's CHECK should make
    // this impossible; a harness does not take that on trust).
    for row in pg
        .query(
            "SELECT slot_id, sold_online, held_online, leased, capacity FROM slots
         WHERE sold_online::bigint + held_online + leased > capacity",
        )
        .map_err(anyhow::Error::msg)?
    {
        let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let over = cell(1).parse::<i64>().unwrap_or(0)
            + cell(2).parse::<i64>().unwrap_or(0)
            + cell(3).parse::<i64>().unwrap_or(0)
            - cell(4).parse::<i64>().unwrap_or(0);
        r.escrow_overcommit += over;
        r.violations.push(format!(
            "escrow invariant broken on {}: sold online {} + held {} + leased {} > capacity {}",
            cell(0),
            cell(1),
            cell(2),
            cell(3),
            cell(4)
        ));
    }
    Ok(())
}

/// Numbers of the first row `sql` returns (NULL as 0).
fn one_row(pg: &PgCluster, sql: &str) -> Result<Vec<i64>> {
    let rows = pg.query(sql).map_err(anyhow::Error::msg)?;
    let row = rows.first().with_context(|| format!("no row: {sql}"))?;
    row.iter()
        .map(|c| {
            c.as_deref()
                .unwrap_or("0")
                .parse::<i64>()
                .with_context(|| format!("not a number in {sql}"))
        })
        .collect()
}

/// The counters' books: each counter's sales stored once with their
/// tickets, its tally, the leases' counts, and nothing oversold.
fn check_counters(
    pg: &PgCluster,
    hot: SlotId,
    counters: &[Counter],
    sold_by: &[Vec<(Uuid, u32)>],
    r: &mut PgChaosReport,
) -> Result<u64> {
    let tally: Option<serde_json::Value> = pg
        .query(&format!(
            "SELECT state FROM tallies WHERE slot_id = '{hot}'"
        ))
        .map_err(anyhow::Error::msg)?
        .first()
        .and_then(|row| row.first().cloned().flatten())
        .and_then(|state| serde_json::from_str(&state).ok());
    let mut found = Findings::default();
    let mut counter_total = 0u64;
    for (i, c) in counters.iter().enumerate() {
        let device = c.t.device_id();
        let mut stored = StoredSales {
            tallied: tally
                .as_ref()
                .and_then(|v| tally_actor_sold(v, &device.to_string())),
            ..StoredSales::default()
        };
        for row in pg
            .query(&format!(
                "SELECT s.sale_id, s.terminal_seq, s.admissions, t.ticket_id
                 FROM sales s LEFT JOIN tickets t ON t.sale_id = s.sale_id
                 WHERE s.device_id = '{device}'"
            ))
            .map_err(anyhow::Error::msg)?
        {
            let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let sale = stored.sales.entry(Uuid::parse_str(&cell(0))?).or_insert((
                cell(1).parse()?,
                cell(2).parse()?,
                Vec::new(),
            ));
            if let Some(Some(ticket)) = row.get(3) {
                sale.2.push(Uuid::parse_str(ticket)?);
            }
        }
        for sale in stored.sales.values_mut() {
            sale.2.sort();
        }
        let seqs = one_row(
            pg,
            &format!(
                "SELECT (SELECT MAX(terminal_seq) FROM sales WHERE device_id = '{device}'),
                        (SELECT acked_seq FROM device_sync WHERE device_id = '{device}')"
            ),
        )?;
        stored.max_seq = seqs[0].max(0) as u64;
        stored.acked_seq = seqs[1].max(0) as u64;
        counter_total += check_counter(&c.t, &sold_by[i], &stored, &mut found)?;
    }
    r.lost_sales += found.lost_sales;
    r.duplicated_sales += found.duplicated;
    r.tally_mismatches += found.tally_mismatches;
    r.violations.extend(found.violations);

    // Counter sales on the slot are all ours, and none was accepted beyond
    // its lease (a revoked lease's late sale would be; none is revoked).
    let row = one_row(
        pg,
        &format!(
            "SELECT SUM(admissions) FILTER (WHERE voided_at IS NULL), SUM(over_capacity)
             FROM sales WHERE slot_id = '{hot}'"
        ),
    )?;
    let (on_slot, over_capacity) = (row[0], row[1]);
    r.pg_counter_admissions = on_slot;
    if on_slot != counter_total as i64 {
        r.violations.push(format!(
            "counter admissions on the slot: {on_slot} stored, {counter_total} from our counters"
        ));
    }
    let tally_net = tally
        .as_ref()
        .and_then(|v| serde_json::from_value::<SlotTally>(v.clone()).ok())
        .map(|t| t.net());
    if let Some(net) = tally_net {
        if net != counter_total {
            r.tally_mismatches += 1;
            r.violations.push(format!(
                "the slot's tally row says {net} counter admissions, the sales log {counter_total}"
            ));
        }
    }
    // Each lease's sold count equals the sales recorded against it.
    for row in pg
        .query(&format!(
            "SELECT l.lease_id, l.sold,
                    COALESCE(SUM(s.admissions) FILTER (WHERE s.voided_at IS NULL), 0)
             FROM leases l LEFT JOIN sales s ON s.lease_id = l.lease_id
             WHERE l.slot_id = '{hot}' GROUP BY l.lease_id, l.sold"
        ))
        .map_err(anyhow::Error::msg)?
    {
        let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        if cell(1) != cell(2) {
            r.duplicated_sales += 1;
            r.violations.push(format!(
                "lease {} counts {} sold, its sales add up to {}",
                cell(0),
                cell(1),
                cell(2)
            ));
        }
    }
    let total = r.pg_sold_online + on_slot;
    r.capacity_left = i64::from(r.capacity) - total;
    r.oversold = (total - i64::from(r.capacity)).max(0) + over_capacity;
    if r.oversold > 0 {
        r.violations.push(format!(
            "OVERSOLD: {} online + {on_slot} at counters ({over_capacity} over capacity) > capacity {}",
            r.pg_sold_online, r.capacity
        ));
    }
    Ok(tally_net.unwrap_or(0))
}

/// Tallies equal the log as the processes answer them: every process's
/// availability reports `sold_online` plus the counters' tallies, and that
/// must be every admission stored. Each process re-reads the slot and its
/// tally on NOTIFY, so this first waits until each shows what the database
/// holds (`counters_tallied`: the tally row's net), then compares with the
/// log.
async fn check_availability(
    ctx: &Ctx,
    servers: &[PgServer],
    counters_tallied: u64,
    r: &mut PgChaosReport,
) {
    let caught_up = r.pg_sold_online.max(0) as u64 + counters_tallied;
    let log = (r.pg_sold_online + r.pg_counter_admissions).max(0) as u64;
    for s in servers {
        let shop = ctx.shop(&s.url);
        let deadline = Instant::now() + TALLY_WITHIN;
        let mut shown = None;
        loop {
            shown = shop.tallied_sold(ctx.hot).await.ok().or(shown);
            if shown == Some(caught_up) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if shown != Some(log) {
            r.tally_mismatches += 1;
            r.violations
                .push(format!("{} reports {shown:?} sold, the log {log}", s.url));
        }
    }
}

/// How long a process may take to show what the log says.
const TALLY_WITHIN: Duration = Duration::from_secs(30);

pub fn print(r: &PgChaosReport) {
    println!(
        "pg-chaos seed {}: 3 processes, capacity {}, {} counters, {} kills, {} PostgreSQL restarts",
        r.seed, r.capacity, r.counters, r.kills_done, r.postgres_restarts
    );
    println!(
        "  faults: {} online requests and {} counter rounds sent to two processes, {} counter cuts, {} counter moves",
        r.requests_sent_twice, r.sync_bodies_sent_twice, r.counter_cuts, r.counter_moves
    );
    println!(
        "  online: orders answered {}, stored {}, sold {}, held {}",
        r.online_orders, r.pg_orders, r.pg_sold_online, r.pg_held_online
    );
    println!(
        "  counters: {} sales ({} while cut off), {} admissions; stored {}; leased {}; capacity left {}",
        r.counter_sales,
        r.counter_sales_while_cut,
        r.counter_admissions,
        r.pg_counter_admissions,
        r.pg_leased,
        r.capacity_left
    );
    println!(
        "  oversold {}  escrow overcommit {}  lost orders {}  stored without an answer {}  inconsistent answers {}  unanswered {}",
        r.oversold, r.escrow_overcommit, r.lost_orders, r.orders_without_answer, r.inconsistent_answers, r.unanswered
    );
    println!(
        "  lost sales {}  duplicated sales {}  tally mismatches {}  heal + upload {:.2} s",
        r.lost_sales, r.duplicated_sales, r.tally_mismatches, r.heal_s
    );
    println!("  errors seen (then retried) {}", r.errors.line());
    for v in &r.violations {
        println!("  VIOLATION {v}");
    }
    println!("  {}", if r.passed { "PASSED" } else { "FAILED" });
}
