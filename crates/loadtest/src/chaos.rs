//! `chaos`: online clients and counters sell one slot while the harness cuts
//! each counter's network (a proxy per counter) and SIGKILLs the server,
//! restarting it on the same file; some requests are sent twice. Then it
//! heals everything, lets every counter upload, and checks the promises:
//!
//! - oversold 0: online + counter admissions never exceed capacity, and the
//!   escrow invariant `sold_online + held + Σ leases ≤ capacity` holds;
//! - lost 0: every sale a counter committed and every order answered 201 is
//!   on the server, exactly once, with the same admissions;
//! - duplicated 0: the server has nothing else (no unknown orders or sales,
//!   a request sent twice got the same answer, lease counts match the log);
//! - tallies equal the log: the CRDT tallies per actor and in total equal
//!   the orders and sales stored.
//!
//! The schedule of faults, the think times and the duplicates come from one
//! seeded RNG per actor, so a failing seed replays the same fault plan (the
//! interleaving with the OS scheduler still varies).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tessera_core::slot::SlotId;
use tessera_core::tally::SlotTally;
use tessera_terminal::Terminal;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::client::{
    device_token, enrol_counter, http_client, sync_until_drained, Counter, HoldAnswer, OrderAnswer,
    Raw, Shop,
};
use crate::counters::{
    check_counter, sell_until, tally_actor_sold, Findings, SellerOut, StoredSales,
};
use crate::proxy::{CutMode, Proxy};
use crate::server::{Server, ServerOptions};
use crate::stats::{error_code, Errors};

#[derive(Clone, Debug)]
pub struct ChaosOptions {
    pub capacity: u32,
    pub clients: usize,
    pub terminals: usize,
    pub kills: usize,
    pub partitions: usize,
    pub seed: u64,
    /// How long faults are injected and new sales started.
    pub duration: Duration,
    /// Share of online requests sent twice (same Idempotency-Key).
    pub duplicate_rate: f64,
    pub server_bin: PathBuf,
    /// Tests only: delete one counter sale from the server's database before
    /// checking, to prove the checks see a lost sale.
    pub sabotage: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ChaosReport {
    pub scenario: &'static str,
    pub seed: u64,
    pub capacity: u32,
    pub clients: usize,
    pub terminals: usize,
    pub duration_s: f64,
    pub kills_done: u64,
    pub partitions_done: u64,
    pub online_requests_sent_twice: u64,
    pub sync_bodies_sent_twice: u64,
    pub online_retries: u64,
    pub online_orders: u64,
    pub online_admissions: u64,
    pub counter_sales: u64,
    pub counter_admissions: u64,
    pub counter_sales_while_partitioned: u64,
    pub sold_out: bool,
    pub capacity_left: i64,
    pub oversold: u64,
    pub escrow_overcommit: u64,
    pub lost_orders: u64,
    pub lost_sales: u64,
    pub duplicated: u64,
    pub tally_mismatches: u64,
    pub errors: Errors,
    pub heal_s: f64,
    pub violations: Vec<String>,
    pub passed: bool,
}

struct Ctx {
    shop: Shop,
    slot: SlotId,
    seed: u64,
    duplicate_rate: f64,
    /// Mean pause between two purchases of one actor, so that demand sells
    /// the slot out near the end of the faults, not before they start.
    gap_ms: u64,
    stop: AtomicBool,
    sent_twice: AtomicU64,
    retries: AtomicU64,
    violations: Mutex<Vec<String>>,
}

impl Ctx {
    fn violation(&self, v: String) {
        self.violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(v);
    }
}

/// What one online client was told.
#[derive(Default)]
struct ClientOut {
    orders: Vec<(String, String, u32, usize)>,
    errors: Errors,
}

/// One RNG per actor, all derived from the seed.
fn rng_for(seed: u64, actor: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ actor.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[derive(Debug)]
enum Fault {
    Kill {
        down: Duration,
    },
    Cut {
        terminal: usize,
        len: Duration,
        mode: CutMode,
    },
    ReplaySync {
        terminal: usize,
    },
}

fn plan(opts: &ChaosOptions) -> Vec<(Duration, Fault)> {
    let mut rng = rng_for(opts.seed, u64::MAX);
    let d = opts.duration.as_millis() as u64;
    let mut faults = Vec::new();
    for _ in 0..opts.kills {
        let at = rng.random_range(d / 10..=d * 8 / 10);
        let down = rng.random_range(150..=900);
        faults.push((
            Duration::from_millis(at),
            Fault::Kill {
                down: Duration::from_millis(down),
            },
        ));
    }
    if opts.terminals > 0 {
        for _ in 0..opts.partitions {
            let at = rng.random_range(0..=d * 8 / 10);
            let len = rng.random_range(200..=(d / 3).clamp(400, 3000));
            let mode = if rng.random_bool(0.25) {
                CutMode::Blackhole
            } else {
                CutMode::Refuse
            };
            faults.push((
                Duration::from_millis(at),
                Fault::Cut {
                    terminal: rng.random_range(0..opts.terminals),
                    len: Duration::from_millis(len),
                    mode,
                },
            ));
        }
        for _ in 0..(opts.kills + opts.partitions).max(2) {
            let at = rng.random_range(0..=d);
            faults.push((
                Duration::from_millis(at),
                Fault::ReplaySync {
                    terminal: rng.random_range(0..opts.terminals),
                },
            ));
        }
    }
    faults.sort_by_key(|(at, _)| *at);
    faults
}

pub async fn run(opts: &ChaosOptions) -> Result<ChaosReport> {
    let mut options = ServerOptions::new(opts.server_bin.clone());
    options.commit = "group".into();
    let server = Server::start(options)?;
    let slot = server.slot("15:30");
    server.set_capacity(slot, opts.capacity)?;
    let upstream: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse()?;
    let base_url = server.url.clone();
    let shop = Shop::new(http_client(opts.clients * 2 + 8)?, &base_url)
        .with_channel(&server.channel_token);

    let mut proxies = Vec::new();
    let mut counters: Vec<Counter> = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..opts.terminals {
        let proxy = Proxy::start(upstream).await?;
        let c = enrol_counter(&server, &proxy.url(), &format!("Counter {}", i + 1)).await?;
        c.t.sync_now().await.context("first sync")?;
        tokens.push(device_token(c.dir.path())?);
        proxies.push(proxy);
        counters.push(c);
    }
    // Let the server notice the capacity change before the first sale.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ctx = Arc::new(Ctx {
        shop: shop.clone(),
        slot,
        seed: opts.seed,
        duplicate_rate: opts.duplicate_rate,
        gap_ms: {
            let actors = (opts.clients + opts.terminals).max(1) as f64;
            let per_second =
                f64::from(opts.capacity.max(1)) / (0.8 * opts.duration.as_secs_f64().max(0.1));
            (1.5 * actors * 1000.0 / per_second).clamp(2.0, 5000.0) as u64
        },
        stop: AtomicBool::new(false),
        sent_twice: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        violations: Mutex::new(Vec::new()),
    });
    let started = Instant::now();
    let server = Arc::new(Mutex::new(server));

    let loops: Vec<_> = counters.iter().map(|c| c.t.spawn_sync_loop()).collect();
    let mut sellers = JoinSet::new();
    for (i, c) in counters.iter().enumerate() {
        let t = c.t.clone();
        let ctx = ctx.clone();
        let proxy = proxies[i].clone();
        sellers.spawn(async move { seller(ctx, t, proxy, i).await });
    }
    let mut clients = JoinSet::new();
    for id in 0..opts.clients {
        let ctx = ctx.clone();
        clients.spawn(async move { online_client(ctx, id).await });
    }

    // The fault schedule.
    let faults = plan(opts);
    let mut kills_done = 0u64;
    let mut partitions_done = 0u64;
    let mut replays = 0u64;
    let mut restores: JoinSet<()> = JoinSet::new();
    let replay_http = http_client(4)?;
    for (at, fault) in faults {
        let now = started.elapsed();
        if at > now {
            tokio::time::sleep(at - now).await;
        }
        match fault {
            Fault::Kill { down } => {
                let s = server.clone();
                tokio::task::spawn_blocking(move || {
                    s.lock().unwrap_or_else(|p| p.into_inner()).kill();
                })
                .await?;
                kills_done += 1;
                tokio::time::sleep(down).await;
                let s = server.clone();
                tokio::task::spawn_blocking(move || {
                    s.lock().unwrap_or_else(|p| p.into_inner()).restart()
                })
                .await??;
            }
            Fault::Cut {
                terminal,
                len,
                mode,
            } => {
                let p = proxies[terminal].clone();
                p.cut(mode);
                partitions_done += 1;
                restores.spawn(async move {
                    tokio::time::sleep(len).await;
                    p.restore_one(mode);
                });
            }
            Fault::ReplaySync { terminal } => {
                // The same sync body twice, at once, straight to the server:
                // what a retry after a lost answer looks like.
                if let Ok(body) = counters[terminal].t.pending_sync_request() {
                    let body = serde_json::to_string(&body)?;
                    let send = || {
                        replay_http
                            .post(format!("{base_url}/v1/sync"))
                            .bearer_auth(&tokens[terminal])
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                    };
                    let (a, b) = tokio::join!(send(), send());
                    replays += 1;
                    for r in [a, b].into_iter().flatten() {
                        let status = r.status().as_u16();
                        if (400..500).contains(&status) {
                            let text = r.text().await.unwrap_or_default();
                            ctx.violation(format!(
                                "a replayed sync body of Counter {} was refused ({status}): {text}",
                                terminal + 1
                            ));
                        }
                    }
                }
            }
        }
    }
    let rest = opts.duration.saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;

    // Heal: no new sales; network back; server up; everyone uploads.
    ctx.stop.store(true, Ordering::Relaxed);
    let heal_started = Instant::now();
    restores.abort_all();
    for p in &proxies {
        p.heal();
    }
    {
        let s = server.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            if s.is_running() {
                Ok(())
            } else {
                s.restart()
            }
        })
        .await??;
    }
    let mut sold_by: Vec<Vec<(Uuid, u32)>> = vec![Vec::new(); opts.terminals];
    let mut report = ChaosReport {
        scenario: "chaos",
        seed: opts.seed,
        capacity: opts.capacity,
        clients: opts.clients,
        terminals: opts.terminals,
        duration_s: opts.duration.as_secs_f64(),
        kills_done,
        partitions_done,
        sync_bodies_sent_twice: replays,
        ..ChaosReport::default()
    };
    while let Some(r) = sellers.join_next().await {
        let (i, out) = r.context("seller task")?;
        report.counter_sales += out.sales.len() as u64;
        report.counter_admissions += out.sales.iter().map(|(_, a)| u64::from(*a)).sum::<u64>();
        report.counter_sales_while_partitioned += out.while_partitioned;
        for (k, v) in out.errors.0 {
            *report.errors.0.entry(format!("counter_{k}")).or_default() += v;
        }
        sold_by[i] = out.sales;
    }
    let mut told: Vec<(String, String, u32, usize)> = Vec::new();
    while let Some(r) = clients.join_next().await {
        let out = r.context("client task")?;
        told.extend(out.orders);
        report.errors.merge(out.errors);
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
    report.online_requests_sent_twice = ctx.sent_twice.load(Ordering::Relaxed);
    report.online_retries = ctx.retries.load(Ordering::Relaxed);
    report.online_orders = told.len() as u64;
    report.online_admissions = told.iter().map(|o| u64::from(o.2)).sum();

    let mut violations =
        std::mem::take(&mut *ctx.violations.lock().unwrap_or_else(|p| p.into_inner()));
    let tallied = shop.tallied_sold(slot).await.ok();
    let server = server.lock().unwrap_or_else(|p| p.into_inner());
    if opts.sabotage {
        let db = rusqlite::Connection::open(&server.db)?;
        db.busy_timeout(Duration::from_secs(10))?;
        db.execute_batch(
            "DELETE FROM tickets WHERE sale_id = (SELECT sale_id FROM sales ORDER BY rowid LIMIT 1);
             DELETE FROM sales WHERE rowid = (SELECT MIN(rowid) FROM sales);",
        )?;
    }
    check(
        &server,
        slot,
        &counters,
        &sold_by,
        &told,
        tallied,
        &mut report,
        &mut violations,
    )?;
    report.passed = violations.is_empty();
    report.violations = violations;
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn check(
    server: &Server,
    slot: SlotId,
    counters: &[Counter],
    sold_by: &[Vec<(Uuid, u32)>],
    told: &[(String, String, u32, usize)],
    tallied: Option<u64>,
    report: &mut ChaosReport,
    violations: &mut Vec<String>,
) -> Result<()> {
    let db = server.read_db()?;
    let slot_s = slot.to_string();
    let (capacity, sold_online): (u64, u64) = db.query_row(
        "SELECT capacity, sold_online FROM slots WHERE slot_id = ?1",
        [&slot_s],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;

    // Online orders: each 201 stored once, nothing else stored.
    let mut stored: HashMap<String, (String, u32)> = HashMap::new();
    {
        let mut st =
            db.prepare("SELECT order_id, hold_id, admissions FROM orders WHERE slot_id = ?1")?;
        let rows = st.query_map([&slot_s], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        for row in rows {
            let (o, h, a): (String, String, u32) = row?;
            stored.insert(o, (h, a));
        }
    }
    let mut seen: HashSet<&str> = HashSet::new();
    for (order, hold, admissions, tickets) in told {
        if !seen.insert(order) {
            report.duplicated += 1;
            violations.push(format!(
                "order {order} was answered to two different purchases"
            ));
        }
        match stored.get(order) {
            None => {
                report.lost_orders += 1;
                violations.push(format!(
                    "order {order} was answered 201 but is not on the server"
                ));
            }
            Some((h, a)) if h != hold || a != admissions => {
                report.lost_orders += 1;
                violations.push(format!(
                    "order {order}: client was told hold {hold} / {admissions} admissions, server has {h} / {a}"
                ));
            }
            Some(_) => {}
        }
        if *tickets != *admissions as usize {
            violations.push(format!(
                "order {order}: {tickets} tickets for {admissions} admissions"
            ));
        }
    }
    for order in stored.keys() {
        if !seen.contains(order.as_str()) {
            report.duplicated += 1;
            violations.push(format!(
                "order {order} is on the server but no client was ever answered it"
            ));
        }
    }
    let orders_admissions: u64 = stored.values().map(|(_, a)| u64::from(*a)).sum();
    if orders_admissions != sold_online {
        violations.push(format!(
            "slots.sold_online is {sold_online} but the orders add up to {orders_admissions}"
        ));
    }
    let online_tickets: u64 = db.query_row(
        "SELECT COUNT(*) FROM tickets WHERE channel = 'online' AND slot_id = ?1",
        [&slot_s],
        |r| r.get(0),
    )?;
    if online_tickets != orders_admissions {
        violations.push(format!(
            "{online_tickets} online tickets stored for {orders_admissions} admissions"
        ));
    }

    // Counter sales: what each counter committed is on the server once.
    let mut counter_total = 0u64;
    let tally_json: Option<serde_json::Value> = db
        .query_row(
            "SELECT state FROM tallies WHERE slot_id = ?1",
            [&slot_s],
            |r| r.get::<_, String>(0),
        )
        .ok()
        .and_then(|state| serde_json::from_str(&state).ok());
    let actor_sold = |actor: &str| -> Option<u64> {
        tally_json.as_ref().and_then(|v| tally_actor_sold(v, actor))
    };
    let mut found = Findings::default();
    for (i, c) in counters.iter().enumerate() {
        let device = c.t.device_id().to_string();
        let mut stored = StoredSales {
            tallied: actor_sold(&device),
            ..StoredSales::default()
        };
        {
            let mut st = db.prepare(
                "SELECT s.sale_id, s.terminal_seq, s.admissions, t.ticket_id
                 FROM sales s LEFT JOIN tickets t ON t.sale_id = s.sale_id
                 WHERE s.device_id = ?1",
            )?;
            let rows = st.query_map([&device], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u64>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })?;
            for row in rows {
                let (id, seq, adm, ticket) = row?;
                let sale =
                    stored
                        .sales
                        .entry(Uuid::parse_str(&id)?)
                        .or_insert((seq, adm, Vec::new()));
                if let Some(ticket) = ticket {
                    sale.2.push(Uuid::parse_str(&ticket)?);
                }
            }
            for sale in stored.sales.values_mut() {
                sale.2.sort();
            }
        }
        (stored.max_seq, stored.acked_seq) = db.query_row(
            "SELECT COALESCE((SELECT MAX(terminal_seq) FROM sales WHERE device_id = ?1), 0),
                    COALESCE((SELECT acked_seq FROM device_sync WHERE device_id = ?1), 0)",
            [&device],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        counter_total += check_counter(&c.t, &sold_by[i], &stored, &mut found)?;
    }
    report.lost_sales += found.lost_sales;
    report.duplicated += found.duplicated;
    report.tally_mismatches += found.tally_mismatches;
    violations.extend(found.violations);
    // Any counter sale on the slot from a device we do not drive?
    let all_counter: u64 = db.query_row(
        "SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE slot_id = ?1 AND voided_at IS NULL",
        [&slot_s],
        |r| r.get(0),
    )?;
    let counter_on_slot: u64 = {
        let mut st = db.prepare(
            "SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE slot_id = ?1 AND device_id = ?2 AND voided_at IS NULL",
        )?;
        let mut sum = 0u64;
        for c in counters {
            sum += st.query_row([&slot_s, &c.t.device_id().to_string()], |r| {
                r.get::<_, u64>(0)
            })?;
        }
        sum
    };
    if all_counter != counter_on_slot || counter_total != all_counter {
        violations.push(format!(
            "counter admissions on the slot: {all_counter} stored, {counter_on_slot} from our counters, {counter_total} in their logs"
        ));
    }
    // Each lease's sold count equals the sales recorded against it.
    {
        let mut st = db.prepare(
            "SELECT l.lease_id, l.sold,
                    (SELECT COALESCE(SUM(admissions), 0) FROM sales s WHERE s.lease_id = l.lease_id AND s.voided_at IS NULL)
             FROM leases l WHERE l.slot_id = ?1",
        )?;
        let rows = st.query_map([&slot_s], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u64>(1)?,
                r.get::<_, u64>(2)?,
            ))
        })?;
        for row in rows {
            let (lease, sold, logged) = row?;
            if sold != logged {
                report.duplicated += 1;
                violations.push(format!(
                    "lease {lease} counts {sold} sold, its sales add up to {logged}"
                ));
            }
        }
    }

    // Oversold, and the escrow invariant.
    let total = sold_online + all_counter;
    report.oversold = total.saturating_sub(capacity);
    if report.oversold > 0 {
        violations.push(format!(
            "OVERSOLD: {sold_online} online + {all_counter} at counters > capacity {capacity}"
        ));
    }
    let now_ms = server.clock().now_ms();
    let held: u64 = db.query_row(
        "SELECT COALESCE(SUM(admissions), 0) FROM holds WHERE slot_id = ?1 AND status = 'held' AND expires_at > ?2",
        rusqlite::params![slot_s, now_ms],
        |r| r.get(0),
    )?;
    // What the leases take, by core's lease rules over the stored rows.
    let escrow = u64::from(tessera_server::sqlite::slot_footprint(&db, &slot)?.escrow);
    report.escrow_overcommit = (sold_online + held + escrow).saturating_sub(capacity);
    if report.escrow_overcommit > 0 {
        violations.push(format!(
            "escrow invariant broken: sold online {sold_online} + held {held} + leased {escrow} > capacity {capacity}"
        ));
    }
    report.capacity_left = capacity as i64 - total as i64;
    report.sold_out = report.capacity_left == 0 || report.errors.0.contains_key("sold_out");

    // Tallies equal the log.
    let net = tally_json
        .as_ref()
        .and_then(|v| serde_json::from_value::<SlotTally>(v.clone()).ok())
        .map(|t| t.net());
    if net != Some(total) && total > 0 {
        report.tally_mismatches += 1;
        violations.push(format!(
            "stored tally says {net:?} admissions, the log {total}"
        ));
    }
    if let Some(online) = actor_sold(tessera_core::tally::ONLINE_ACTOR) {
        if online != sold_online {
            report.tally_mismatches += 1;
            violations.push(format!(
                "online tally {online}, online orders {sold_online}"
            ));
        }
    } else if sold_online > 0 {
        report.tally_mismatches += 1;
        violations.push("no online tally".into());
    }
    if tallied != Some(total) {
        report.tally_mismatches += 1;
        violations.push(format!(
            "availability reports {tallied:?} sold, the log {total}"
        ));
    }
    Ok(())
}

/// Sends a request until it gets an answer (not a network error, not 5xx);
/// sometimes twice at once with the same key: both answers must agree.
async fn answered<F, Fut>(
    ctx: &Ctx,
    rng: &mut StdRng,
    what: &str,
    id_field: &str,
    f: F,
) -> Option<Raw>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Raw, reqwest::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let twice = rng.random_bool(ctx.duplicate_rate);
        let results: Vec<Result<Raw, reqwest::Error>> = if twice {
            ctx.sent_twice.fetch_add(1, Ordering::Relaxed);
            let (a, b) = tokio::join!(f(), f());
            vec![a, b]
        } else {
            vec![f().await]
        };
        let good: Vec<Raw> = results
            .into_iter()
            .filter_map(Result::ok)
            .filter(|(s, _)| *s < 500)
            .collect();
        if good.len() == 2 {
            let id = |b: &[u8]| {
                serde_json::from_slice::<serde_json::Value>(b)
                    .ok()
                    .map(|v| (v[id_field].clone(), v["error"]["code"].clone()))
            };
            let (a, b) = (&good[0], &good[1]);
            if a.0 != b.0 || id(&a.1) != id(&b.1) {
                ctx.violation(format!(
                    "{what} sent twice got two different answers: {} {} / {} {}",
                    a.0,
                    String::from_utf8_lossy(&a.1),
                    b.0,
                    String::from_utf8_lossy(&b.1)
                ));
            }
        }
        if let Some(first) = good.into_iter().next() {
            return Some(first);
        }
        if Instant::now() > deadline {
            ctx.violation(format!("{what}: no answer within 90 s"));
            return None;
        }
        ctx.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(rng.random_range(40..=200))).await;
    }
}

async fn online_client(ctx: Arc<Ctx>, id: usize) -> ClientOut {
    let mut rng = rng_for(ctx.seed, id as u64);
    let mut out = ClientOut::default();
    let mut i = 0u64;
    while !ctx.stop.load(Ordering::Relaxed) {
        let gap = ctx.gap_ms;
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(gap / 2..=gap * 3 / 2),
        ))
        .await;
        i += 1;
        let quantity: u32 = rng.random_range(1..=2);
        let key = format!("chaos-{}-{id}-{i}", ctx.seed);
        let hkey = format!("{key}-h");
        let Some((status, body)) = answered(&ctx, &mut rng, "hold", "hold_id", || {
            ctx.shop.hold(&hkey, ctx.slot, "adult", quantity)
        })
        .await
        else {
            continue;
        };
        if status != 201 {
            let code = error_code(status, &body);
            let sold_out = code == "sold_out";
            out.errors.add(code);
            if sold_out {
                // Places may come back from counters' leases: watch.
                while !ctx.stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if ctx.shop.available(ctx.slot).await.unwrap_or(0) > 0 {
                        break;
                    }
                }
            }
            continue;
        }
        let Ok(hold) = serde_json::from_slice::<HoldAnswer>(&body) else {
            ctx.violation(format!(
                "unreadable hold answer: {}",
                String::from_utf8_lossy(&body)
            ));
            continue;
        };
        let ckey = format!("{key}-c");
        let Some((status, body)) = answered(&ctx, &mut rng, "confirm", "order_id", || {
            ctx.shop.confirm(&ckey, &hold.hold_id)
        })
        .await
        else {
            continue;
        };
        if status == 201 {
            match serde_json::from_slice::<OrderAnswer>(&body) {
                Ok(o) => out
                    .orders
                    .push((o.order_id, o.hold_id, quantity, o.tickets.len())),
                Err(e) => ctx.violation(format!("unreadable order answer: {e}")),
            }
        } else {
            out.errors
                .add(format!("confirm_{}", error_code(status, &body)));
        }
    }
    out
}

async fn seller(ctx: Arc<Ctx>, t: Terminal, proxy: Proxy, i: usize) -> (usize, SellerOut) {
    let mut rng = rng_for(ctx.seed, 1_000_000 + i as u64);
    let out = sell_until(&t, ctx.slot, ctx.gap_ms, &ctx.stop, &proxy, &mut rng).await;
    (i, out)
}

pub fn print(r: &ChaosReport) {
    println!("== chaos: seed {}", r.seed);
    println!(
        "   capacity {}  online clients {}  counters {}  {:.1} s of faults",
        r.capacity, r.clients, r.terminals, r.duration_s
    );
    println!(
        "   faults                   {} server SIGKILLs, {} partitions, {} online requests and {} sync bodies sent twice, {} online retries",
        r.kills_done, r.partitions_done, r.online_requests_sent_twice, r.sync_bodies_sent_twice, r.online_retries
    );
    println!(
        "   sold                     online {} admissions in {} orders; counters {} admissions in {} sales ({} while cut off)",
        r.online_admissions, r.online_orders, r.counter_admissions, r.counter_sales, r.counter_sales_while_partitioned
    );
    println!(
        "   capacity left            {}{}",
        r.capacity_left,
        if r.sold_out { " (sold out)" } else { "" }
    );
    println!("   error codes              {}", r.errors.line());
    println!("   heal + upload            {:.2} s", r.heal_s);
    println!(
        "   oversold {}  escrow overcommit {}  lost orders {}  lost sales {}  duplicated {}  tally mismatches {}",
        r.oversold, r.escrow_overcommit, r.lost_orders, r.lost_sales, r.duplicated, r.tally_mismatches
    );
    if r.passed {
        println!("   PASSED (seed {})", r.seed);
    } else {
        println!("   FAILED (replay with --seed {}):", r.seed);
        for v in &r.violations {
            println!("   - {v}");
        }
    }
}

/// Per-seed default when none is given: time-based, printed so it replays.
pub fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(42)
        % 1_000_000_007
}
