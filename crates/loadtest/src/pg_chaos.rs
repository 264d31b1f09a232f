//! `pg-chaos`: the online path on PostgreSQL under faults. Three server
//! processes on one throw-away cluster sell one slot to online clients that
//! go to any live process, as behind a reverse proxy; mid-run one process is
//! SIGKILLed and started again, PostgreSQL is restarted (fast shutdown), and
//! another process is killed and started again. Clients retry every request
//! with its Idempotency-Key until it is answered (any process), and send some
//! requests to two processes at once. Then the books are checked in
//! PostgreSQL: nothing oversold, every 201 order stored once, no order stored
//! that no client was answered, every answer to one key the same.
//!
//! Counters are not on PostgreSQL yet, so this is the online half of
//! `chaos`; see docs/POSTGRES.md.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tessera_core::slot::SlotId;
use tessera_server::testkit::{slot, PgCluster, PgMuseum, PgServer};
use tokio::task::JoinSet;

use crate::client::{http_client, Raw, Shop};
use crate::stats::{error_code, Errors};

#[derive(Clone, Debug)]
pub struct PgChaosOptions {
    pub capacity: u32,
    pub clients: usize,
    pub seed: u64,
    pub duration: Duration,
    /// Share of requests also sent to a second process at the same time.
    pub duplicate_rate: f64,
    pub server_bin: PathBuf,
    /// Deletes one answered order before the check, to show the check
    /// catches a lost order (for the harness's own test).
    pub sabotage: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PgChaosReport {
    pub seed: u64,
    pub capacity: u32,
    pub online_orders: u64,
    pub requests_sent_twice: u64,
    pub kills_done: u64,
    pub postgres_restarts: u64,
    pub errors: Errors,
    pub pg_sold_online: i64,
    pub pg_held_online: i64,
    pub pg_orders: i64,
    pub oversold: i64,
    /// 201 orders PostgreSQL does not have.
    pub lost_orders: u64,
    /// Orders stored that no client was answered, or stored twice.
    pub orders_without_answer: u64,
    /// Two answers to one Idempotency-Key that differ.
    pub inconsistent_answers: u64,
    /// Requests no live process answered within a minute of retries.
    pub unanswered: u64,
    pub violations: Vec<String>,
    pub passed: bool,
}

/// The live processes' addresses, as a reverse proxy would know them.
#[derive(Clone, Default)]
struct Pool {
    urls: Arc<RwLock<Vec<String>>>,
}

impl Pool {
    fn pick(&self, rng: &mut StdRng) -> Option<String> {
        let urls = self.urls.read().unwrap_or_else(|p| p.into_inner());
        (!urls.is_empty()).then(|| urls[rng.random_range(0..urls.len())].clone())
    }

    fn set(&self, urls: Vec<String>) {
        *self.urls.write().unwrap_or_else(|p| p.into_inner()) = urls;
    }
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
        let servers: Vec<PgServer> = (0..3)
            .map(|i| museum.serve(&format!("p{i}"), &[]))
            .collect();
        (pg, museum, servers)
    })
    .await
    .context("starting PostgreSQL and three servers")?;
    let pg = Arc::new(pg);
    let museum = Arc::new(museum);
    let hot = slot(museum.day, "11:00");
    let out = museum.cli(&[
        "capacity",
        "--database",
        &museum.database_url,
        "--slot",
        &hot.to_string(),
        "--set",
        &opts.capacity.to_string(),
    ]);
    anyhow::ensure!(
        out.status.success(),
        "capacity: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pool = Pool::default();
    pool.set(servers.iter().map(|s| s.url.clone()).collect());
    let ctx = Arc::new(Ctx {
        http: http_client(opts.clients * 2)?,
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
    let mut clients = JoinSet::new();
    for c in 0..opts.clients {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        let seed = opts.seed.wrapping_add(c as u64 + 1);
        clients.spawn(async move { client(ctx, stop, c, seed).await });
    }
    let (faults, servers) = faults(opts, pg.clone(), museum.clone(), servers, pool).await?;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = clients.join_next().await {
        done.context("client task")?;
    }
    drop(servers);

    let mut answered = ctx.orders.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if opts.sabotage {
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
    answered.sort();
    let report = check(opts, &pg, hot, &answered, &ctx, faults);
    Ok(report)
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
        pool.set(
            servers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != victim)
                .map(|(_, s)| s.url.clone())
                .collect(),
        );
        tokio::time::sleep(step / 4).await;
        let museum = museum.clone();
        let name = format!("p{victim}-again{phase}");
        servers[victim] = tokio::task::spawn_blocking(move || museum.serve(&name, &[]))
            .await
            .context("starting a killed process again")?;
        pool.set(servers.iter().map(|s| s.url.clone()).collect());
    }
    tokio::time::sleep((start + opts.duration).saturating_duration_since(Instant::now())).await;
    // The caller keeps them until the clients have their last answers.
    Ok((done, servers))
}

fn check(
    opts: &PgChaosOptions,
    pg: &PgCluster,
    hot: SlotId,
    answered: &[String],
    ctx: &Ctx,
    faults: Faults,
) -> PgChaosReport {
    let where_hot = format!("WHERE slot_id = '{hot}'");
    let sold = pg.count(&format!("SELECT sold_online FROM slots {where_hot}"));
    let held = pg.count(&format!("SELECT held_online FROM slots {where_hot}"));
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
    let mut r = PgChaosReport {
        seed: opts.seed,
        capacity: opts.capacity,
        online_orders: answered_set.len() as u64,
        requests_sent_twice: ctx.sent_twice.load(Ordering::Relaxed),
        kills_done: faults.kills,
        postgres_restarts: faults.postgres_restarts,
        errors: ctx.errors.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        pg_sold_online: sold,
        pg_held_online: held,
        pg_orders: stored.len() as i64,
        oversold: (sold + held - i64::from(opts.capacity)).max(0),
        lost_orders: answered_set
            .iter()
            .filter(|id| !stored_set.contains(*id))
            .count() as u64,
        orders_without_answer: stored_set
            .iter()
            .filter(|id| !answered_set.contains(*id))
            .count() as u64
            + times.values().filter(|n| **n > 1).count() as u64,
        inconsistent_answers: ctx.inconsistent.load(Ordering::Relaxed),
        unanswered: ctx.unanswered.load(Ordering::Relaxed),
        ..PgChaosReport::default()
    };
    if r.unanswered > 0 {
        r.violations.push(format!(
            "{} requests no process answered within {} s",
            r.unanswered,
            ANSWER_WITHIN.as_secs()
        ));
    }
    if r.oversold > 0 {
        r.violations.push(format!(
            "OVERSOLD: {sold} sold + {held} held > capacity {}",
            opts.capacity
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
    r.passed = r.violations.is_empty();
    r
}

pub fn print(r: &PgChaosReport) {
    println!(
        "pg-chaos seed {}: 3 processes, capacity {}, {} kills, {} PostgreSQL restarts, {} requests sent twice",
        r.seed, r.capacity, r.kills_done, r.postgres_restarts, r.requests_sent_twice
    );
    println!(
        "  orders answered {}, stored {}, sold {}, held {}",
        r.online_orders, r.pg_orders, r.pg_sold_online, r.pg_held_online
    );
    println!(
        "  oversold {}  lost {}  stored without an answer {}  inconsistent answers {}  unanswered {}",
        r.oversold, r.lost_orders, r.orders_without_answer, r.inconsistent_answers, r.unanswered
    );
    println!("  errors seen (then retried) {}", r.errors.line());
    for v in &r.violations {
        println!("  VIOLATION {v}");
    }
    println!("  {}", if r.passed { "PASSED" } else { "FAILED" });
}
