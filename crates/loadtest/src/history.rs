//! `history`: does a request cost more when the museum has a year behind it?
//!
//! One database is walked through `days` open days (320 by default) through
//! the real APIs, with the real server binary and real counter terminals:
//! every morning the server is restarted with its clock (and the counters')
//! set to 09:10 that day (`ServerProcess::set_clock`: a process keeps its
//! clock offset, so a new day is a restart), each of three counters opens a
//! shift, syncs (which settles yesterday's leases and takes today's), sells
//! from its leases, syncs and closes its shift, and the web shop books
//! `orders_per_day` online orders (hold + confirm through a trusted channel)
//! spread over the next week. Nothing is written to the database behind the
//! server's back, and nothing is read from it either while walking: the
//! days' slots come from `GET /v1/availability`, so the same walk runs on
//! SQLite and on PostgreSQL (`--backend`, the test kit's throw-away cluster
//! served with `--database`).
//!
//! After the first day and after the last, the same probe runs at 11:00:
//! server start-up (restart to listening), `/v1/sync` as a counter sees it
//! (three counters syncing back to back), hold + confirm at low load while
//! they sync, availability of the day, and the day report as a supervisor
//! gets it (`GET /v1/reports/day` with a supervisor device's token). Each
//! figure of the last day is compared with the first day's.
//!
//! Those two probes are the walk's length apart (minutes on PostgreSQL, and
//! the load of a shared machine changes in minutes), so with
//! `paired_rounds` a twin museum is also opened at the end: a fresh database
//! walked through its first day only. The twin's day 1 and the walked
//! database's last day are then probed in alternating rounds (twin, walked,
//! walked, twin, …), and their samples pooled: what is left between the two
//! is what the history costs, not what the machine did meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use jiff::civil::Date;
use serde::Serialize;
use tessera_core::slot::SlotId;
use tessera_server::testkit::{Api, Backend};
use tessera_terminal::Terminal;

use crate::client::{card_sale, enrol_counter, http_client, Counter, Shop};
use crate::server::{Server, ServerOptions};
use crate::stats::{Samples, Summary};

#[derive(Clone, Debug)]
pub struct HistoryOptions {
    /// Open days of history.
    pub days: usize,
    /// Online orders booked each day (spread over the next seven days).
    pub orders_per_day: usize,
    /// Sales each of the three counters makes each day.
    pub counter_sales_per_day: usize,
    /// Syncs each counter makes in a probe.
    pub probe_syncs: usize,
    /// Online hold + confirm pairs in a probe.
    pub probe_orders: usize,
    /// The store the server serves.
    pub backend: Backend,
    pub server_bin: PathBuf,
    /// Where to copy the walked databases (the server's directory and each
    /// counter's) when the walk ends, so the last day can be studied
    /// afterwards; SQLite only (a PostgreSQL cluster dies with the run).
    pub keep_db: Option<PathBuf>,
    /// Rounds of the paired comparison at the end (0: none): each round
    /// probes a fresh twin's day 1 and the walked database's last day.
    pub paired_rounds: usize,
}

const COUNTERS: usize = 3;
/// A figure of the last day within this share of the first day's counts as flat.
const FLAT: f64 = 0.20;
/// Differences below this (ms) are timer noise on a shared machine, not growth.
const NOISE_MS: f64 = 0.5;
/// How far ahead of the probed day the probe's orders book.
const PROBE_AHEAD_DAYS: i64 = 8;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Probe {
    pub day: String,
    pub day_number: usize,
    pub startup: Summary,
    pub sync: Summary,
    pub hold_confirm: Summary,
    pub availability: Summary,
    pub day_report: Summary,
    /// Probe orders that did not complete (not in `hold_confirm`).
    pub failed_orders: usize,
    /// Leases a counter still reports (not yet settled with the server).
    pub leases_reported: i64,
    /// Leases the counter ever held.
    pub leases_held: i64,
    pub db_bytes: u64,
    pub orders: i64,
    pub counter_sales: i64,
    pub server_leases: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub figure: String,
    pub first_p50_ms: f64,
    pub last_p50_ms: f64,
    pub first_p99_ms: f64,
    pub last_p99_ms: f64,
    pub within: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct HistoryReport {
    pub scenario: &'static str,
    /// "SQLite" or "PostgreSQL".
    pub backend: &'static str,
    pub days: usize,
    pub orders_per_day: usize,
    pub counter_sales_per_day: usize,
    pub seed_seconds: f64,
    pub first: Probe,
    pub last: Probe,
    pub comparisons: Vec<Comparison>,
    /// Day 1 of a fresh twin against the last day, probed in alternating
    /// rounds at the end of the walk.
    pub paired: Option<Paired>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Paired {
    pub rounds: usize,
    pub day1: Probe,
    pub last: Probe,
    pub comparisons: Vec<Comparison>,
}

/// A museum as the walk drives it: its server, three counters, a
/// supervisor's device and the web shop.
struct Museum {
    server: Server,
    counters: Vec<Counter>,
    supervisor: String,
    shop: Shop,
}

impl Museum {
    /// A fresh database on the server's first day, 09:10.
    async fn open(opts: &HistoryOptions) -> Result<Museum> {
        let mut options = ServerOptions::new(opts.server_bin.clone());
        options.local_time = "09:10".into();
        options.backend = Some(opts.backend);
        let server = Server::start(options)?;
        let supervisor = enrol_supervisor(&server).await?;
        let mut counters = Vec::new();
        for i in 0..COUNTERS {
            let c = enrol_counter(&server, &server.url, &format!("Counter {}", i + 1)).await?;
            c.t.close_shift(20_000)
                .await
                .context("closing the first shift")?;
            counters.push(c);
        }
        let shop = Shop::new(http_client(16)?, &server.url).with_channel(&server.channel_token);
        Ok(Museum {
            server,
            counters,
            supervisor,
            shop,
        })
    }

    async fn open_day_from(&self, day: Date) -> Result<Date> {
        open_day_after(&self.server, day).await
    }

    /// Walks one open day: restart at 09:10, counters sell, the shop books.
    async fn seed(&mut self, opts: &HistoryOptions, day: Date, n: usize) -> Result<()> {
        self.server.restart_at(day, "09:10")?;
        let shop = shop_for(&self.shop, &self.server);
        seed_day(opts, &self.server, &shop, &mut self.counters, day, n).await
    }
}

pub async fn run(opts: &HistoryOptions) -> Result<HistoryReport> {
    let mut museum = Museum::open(opts).await?;
    let started = Instant::now();
    let mut day = museum.server.day;
    let mut first = None;
    let mut done = 0;
    while done < opts.days {
        day = museum.open_day_from(day).await?;
        done += 1;
        museum.seed(opts, day, done).await?;
        if done == 1 {
            let samples = probe(opts, &mut museum, day, &format!("probe{done}")).await?;
            first = Some(summarise(&museum, &samples, day, done)?);
        }
        if done % 20 == 0 {
            eprintln!(
                "history: {done} days seeded ({day}), {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        day = day.tomorrow()?;
    }
    let seed_seconds = started.elapsed().as_secs_f64();
    let last_day = day.yesterday()?;
    let samples = probe(opts, &mut museum, last_day, &format!("probe{done}")).await?;
    let last = summarise(&museum, &samples, last_day, done)?;
    let first = first.ok_or_else(|| anyhow!("no open day"))?;
    let comparisons = compare(&first, &last);
    let paired = if opts.paired_rounds > 0 {
        Some(paired(opts, &mut museum, last_day, done).await?)
    } else {
        None
    };
    if let Some(dir) = &opts.keep_db {
        keep(&mut museum.server, &museum.counters, last_day, dir)?;
    }
    Ok(HistoryReport {
        scenario: "history",
        backend: opts.backend.name(),
        days: done,
        orders_per_day: opts.orders_per_day,
        counter_sales_per_day: opts.counter_sales_per_day,
        seed_seconds,
        first,
        last,
        comparisons,
        paired,
    })
}

/// Day 1 of a fresh twin and the walked museum's last day, probed in
/// alternating rounds (ABBA, so that a drift of the machine's load within
/// the run weighs on both alike) and pooled.
async fn paired(
    opts: &HistoryOptions,
    walked: &mut Museum,
    last_day: Date,
    days: usize,
) -> Result<Paired> {
    let mut twin = Museum::open(opts).await?;
    let day1 = twin.open_day_from(twin.server.day).await?;
    twin.seed(opts, day1, 1).await?;
    let mut young = ProbeSamples::default();
    let mut old = ProbeSamples::default();
    for round in 0..opts.paired_rounds {
        let tag = format!("pair{round}");
        let twin_first = round % 2 == 0;
        for turn in 0..2 {
            if (turn == 0) == twin_first {
                young.extend(probe(opts, &mut twin, day1, &tag).await?);
            } else {
                old.extend(probe(opts, walked, last_day, &tag).await?);
            }
        }
        eprintln!(
            "history: paired round {} of {}",
            round + 1,
            opts.paired_rounds
        );
    }
    let day1 = summarise(&twin, &young, day1, 1)?;
    let last = summarise(walked, &old, last_day, days)?;
    let comparisons = compare(&day1, &last);
    Ok(Paired {
        rounds: opts.paired_rounds,
        day1,
        last,
        comparisons,
    })
}

/// Copies the server's directory and the counters' to `dir` (`server/`,
/// `counter-1/`…), with the last day in `day.txt`: the server is killed
/// first so that the files (WAL included) are not written while copied.
fn keep(server: &mut Server, counters: &[Counter], day: Date, dir: &Path) -> Result<()> {
    anyhow::ensure!(
        server.backend() == Backend::Sqlite,
        "--keep-db keeps SQLite files; a PostgreSQL cluster ends with the run"
    );
    server.kill();
    copy_dir(server.data_dir(), &dir.join("server"))?;
    for (i, c) in counters.iter().enumerate() {
        copy_dir(c.dir.path(), &dir.join(format!("counter-{}", i + 1)))?;
    }
    std::fs::write(dir.join("day.txt"), format!("{day}\n"))
        .with_context(|| format!("writing {}", dir.join("day.txt").display()))?;
    eprintln!("history: databases kept in {}", dir.display());
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// A supervisor device's token: what the day report over HTTP needs (an
/// operator's office machine, enrolled like any device).
async fn enrol_supervisor(server: &Server) -> Result<String> {
    let code = server.enrolment_code("supervisor", "Office")?;
    let (status, body) = Api::new(&server.url)
        .enrol(&code, "Office", None)
        .await
        .context("enrolling a supervisor")?;
    anyhow::ensure!(
        status.as_u16() == 201,
        "enrolling a supervisor: {status} {body}"
    );
    body["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no token in the supervisor's enrolment"))
}

/// The first open day from `day` on (closed days have no slots: the
/// fixture's weekly and dated closures).
async fn open_day_after(server: &Server, mut day: Date) -> Result<Date> {
    for _ in 0..366 {
        if !slots_between(server, day, day).await?.is_empty() {
            return Ok(day);
        }
        day = day.tomorrow()?;
    }
    Err(anyhow!("no open day in the year from {day}"))
}

/// The slots of the days `from..=to`, as the web shop sees them
/// (`GET /v1/availability`, one request a day): the same on both backends.
async fn slots_between(server: &Server, from: Date, to: Date) -> Result<Vec<SlotId>> {
    let http = http_client(1)?;
    let mut out = Vec::new();
    let mut day = from;
    while day <= to {
        let v: serde_json::Value = http
            .get(format!("{}/v1/availability?date={day}", server.url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for s in v["slots"].as_array().into_iter().flatten() {
            let id = s["slot_id"]
                .as_str()
                .ok_or_else(|| anyhow!("availability: a slot without slot_id"))?;
            out.push(id.parse().map_err(|e| anyhow!("slot id: {e}"))?);
        }
        day = day.tomorrow()?;
    }
    out.sort();
    Ok(out)
}

/// The shop client, pointed at the server's current address.
fn shop_for(shop: &Shop, server: &Server) -> Shop {
    let mut s = shop.clone();
    s.base = server.url.trim_end_matches('/').to_string();
    s
}

/// Reopens each counter on the server's current clock (a terminal reads its
/// clock offset once, like the server).
fn reopen(server: &Server, counters: &mut [Counter]) -> Result<()> {
    for c in counters.iter_mut() {
        c.t = Terminal::open_with_clock(c.dir.path(), server.clock())
            .map_err(|e| anyhow!("reopening a counter: {e}"))?;
    }
    Ok(())
}

async fn seed_day(
    opts: &HistoryOptions,
    server: &Server,
    shop: &Shop,
    counters: &mut [Counter],
    day: Date,
    n: usize,
) -> Result<()> {
    reopen(server, counters)?;
    let today = slots_between(server, day, day).await?;
    let week = slots_between(
        server,
        day.tomorrow()?,
        day.checked_add(jiff::Span::new().days(7))?,
    )
    .await?;
    // Online: bookings for the coming week, as a shop takes them.
    let online = {
        let shop = shop.clone();
        let orders = opts.orders_per_day;
        tokio::spawn(async move { book(&shop, &week, orders, &format!("d{n}")).await })
    };
    let mut sellers = Vec::new();
    for c in counters.iter() {
        let t = c.t.clone();
        let today = today.clone();
        let sales = opts.counter_sales_per_day;
        sellers.push(tokio::spawn(
            async move { sell_day(&t, &today, sales).await },
        ));
    }
    for s in sellers {
        s.await??;
    }
    online.await??;
    Ok(())
}

/// Books `orders` online orders over `slots` with 8 concurrent visitors.
async fn book(shop: &Shop, slots: &[SlotId], orders: usize, tag: &str) -> Result<()> {
    if slots.is_empty() || orders == 0 {
        return Ok(());
    }
    let slots = Arc::new(slots.to_vec());
    let mut tasks = Vec::new();
    for w in 0..8 {
        let shop = shop.clone();
        let slots = Arc::clone(&slots);
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < orders {
                let slot = slots[(i * 7) % slots.len()];
                let quantity = 1 + (i % 2) as u32;
                // A sold-out slot is an answer, not a failure of the run.
                let _ = shop.buy(&format!("{tag}-{i}"), slot, quantity).await;
                i += 8;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// One counter's day: open a shift, take leases, sell, upload, close.
async fn sell_day(t: &Terminal, today: &[SlotId], sales: usize) -> Result<()> {
    t.open_shift("1111", 20_000)
        .map_err(|e| anyhow!("opening a shift: {e}"))?;
    t.sync_now()
        .await
        .map_err(|e| anyhow!("morning sync: {e}"))?;
    let mut sold = 0;
    let mut tries = 0;
    while sold < sales && tries < sales * 4 && !today.is_empty() {
        let slot = today[tries % today.len()];
        tries += 1;
        if t.sell(card_sale(slot, 1 + (tries % 2) as u32))
            .await
            .is_ok()
        {
            sold += 1;
        }
    }
    t.sync_now()
        .await
        .map_err(|e| anyhow!("upload sync: {e}"))?;
    t.close_shift(20_000)
        .await
        .map_err(|e| anyhow!("closing a shift: {e}"))?;
    t.sync_now()
        .await
        .map_err(|e| anyhow!("closing sync: {e}"))?;
    Ok(())
}

/// The raw samples of one or more probes of a day.
#[derive(Default)]
struct ProbeSamples {
    startup: Samples,
    sync: Samples,
    hold_confirm: Samples,
    availability: Samples,
    day_report: Samples,
    /// Probe orders that did not complete (a sold-out slot answers fast and
    /// would flatter the figure, so they are counted, not timed).
    failed_orders: usize,
}

impl ProbeSamples {
    fn extend(&mut self, other: ProbeSamples) {
        self.startup.extend(other.startup);
        self.sync.extend(other.sync);
        self.hold_confirm.extend(other.hold_confirm);
        self.availability.extend(other.availability);
        self.day_report.extend(other.day_report);
        self.failed_orders += other.failed_orders;
    }
}

/// One probe of a day, at 11:00. `tag` keeps each probe's idempotency keys
/// its own when a day is probed more than once.
async fn probe(
    opts: &HistoryOptions,
    museum: &mut Museum,
    day: Date,
    tag: &str,
) -> Result<ProbeSamples> {
    let Museum {
        server,
        counters,
        supervisor,
        ..
    } = museum;
    let mut startup = Samples::default();
    for _ in 0..5 {
        let t = Instant::now();
        server.restart_at(day, "11:00")?;
        startup.push(t.elapsed());
    }
    reopen(server, counters)?;
    let shop = Shop::new(http_client(4)?, &server.url).with_channel(&server.channel_token);
    for c in counters.iter() {
        c.t.open_shift("1111", 20_000)
            .map_err(|e| anyhow!("opening a shift: {e}"))?;
        c.t.sync_now()
            .await
            .map_err(|e| anyhow!("warm-up sync: {e}"))?;
    }

    // Three counters sync back to back while one visitor books.
    let mut loops = Vec::new();
    for c in counters.iter() {
        let t = c.t.clone();
        let rounds = opts.probe_syncs;
        loops.push(tokio::spawn(async move {
            let mut s = Samples::default();
            for _ in 0..rounds {
                let at = Instant::now();
                t.sync_now().await.map_err(|e| anyhow!("sync: {e}"))?;
                s.push(at.elapsed());
            }
            Ok::<_, anyhow::Error>(s)
        }));
    }
    // Bookings for a day eight days ahead: beyond what the walk's shop
    // books (the coming seven days) and what counters lease (today), within
    // the slots generated ahead (14 days in the test kit), so each
    // probe order finds free places on a young and an old database alike,
    // however many rounds probe the same day.
    let ahead = open_day_after(
        &*server,
        day.checked_add(jiff::Span::new().days(PROBE_AHEAD_DAYS))?,
    )
    .await?;
    let later = slots_between(server, ahead, ahead).await?;
    let mut hold_confirm = Samples::default();
    let mut failed_orders = 0;
    for i in 0..opts.probe_orders {
        if later.is_empty() {
            break;
        }
        let at = Instant::now();
        match shop
            .buy(&format!("{tag}-{i}"), later[i % later.len()], 1)
            .await
        {
            Ok(_) => hold_confirm.push(at.elapsed()),
            Err(_) => failed_orders += 1,
        }
    }
    let mut sync = Samples::default();
    for l in loops {
        sync.extend(l.await??);
    }

    let http = http_client(1)?;
    let mut availability = Samples::default();
    for _ in 0..300 {
        let at = Instant::now();
        http.get(format!("{}/v1/availability?date={day}", server.url))
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        availability.push(at.elapsed());
    }

    // The day report as the supervisor's screen asks for it: over HTTP,
    // with a supervisor device's token, built by the server from its store.
    let mut day_report = Samples::default();
    for _ in 0..20 {
        let at = Instant::now();
        http.get(format!("{}/v1/reports/day?date={day}", server.url))
            .bearer_auth(&*supervisor)
            .send()
            .await?
            .error_for_status()
            .context("day report")?
            .bytes()
            .await?;
        day_report.push(at.elapsed());
    }

    for c in counters.iter() {
        c.t.close_shift(20_000)
            .await
            .map_err(|e| anyhow!("closing a shift: {e}"))?;
        c.t.sync_now()
            .await
            .map_err(|e| anyhow!("closing sync: {e}"))?;
    }
    Ok(ProbeSamples {
        startup,
        sync,
        hold_confirm,
        availability,
        day_report,
        failed_orders,
    })
}

/// A day's figures from its samples, with what the database holds.
fn summarise(museum: &Museum, samples: &ProbeSamples, day: Date, n: usize) -> Result<Probe> {
    let (leases_reported, leases_held) = {
        let t = rusqlite::Connection::open_with_flags(
            museum.counters[0].dir.path().join("terminal.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?;
        (
            t.query_row("SELECT COUNT(*) FROM leases WHERE settled = 0", [], |r| {
                r.get(0)
            })?,
            t.query_row("SELECT COUNT(*) FROM leases", [], |r| r.get(0))?,
        )
    };
    let server = &museum.server;
    Ok(Probe {
        day: day.to_string(),
        day_number: n,
        startup: samples.startup.summary(),
        sync: samples.sync.summary(),
        hold_confirm: samples.hold_confirm.summary(),
        availability: samples.availability.summary(),
        day_report: samples.day_report.summary(),
        failed_orders: samples.failed_orders,
        leases_reported,
        leases_held,
        db_bytes: server.db_bytes()?,
        orders: server.count("SELECT COUNT(*) FROM orders")?,
        counter_sales: server.count("SELECT COUNT(*) FROM sales")?,
        server_leases: server.count("SELECT COUNT(*) FROM leases")?,
    })
}

fn compare(first: &Probe, last: &Probe) -> Vec<Comparison> {
    let pairs = [
        ("server start-up", &first.startup, &last.startup),
        ("sync (3 counters back to back)", &first.sync, &last.sync),
        (
            "hold + confirm (low load)",
            &first.hold_confirm,
            &last.hold_confirm,
        ),
        (
            "availability of the day",
            &first.availability,
            &last.availability,
        ),
        ("day report", &first.day_report, &last.day_report),
    ];
    pairs
        .into_iter()
        .map(|(name, a, b)| Comparison {
            figure: name.to_string(),
            first_p50_ms: a.p50_ms,
            last_p50_ms: b.p50_ms,
            first_p99_ms: a.p99_ms,
            last_p99_ms: b.p99_ms,
            within: b.p50_ms <= a.p50_ms * (1.0 + FLAT) || b.p50_ms - a.p50_ms < NOISE_MS,
        })
        .collect()
}

pub fn print(r: &HistoryReport) {
    println!(
        "== history on {}: {} open days, {} online orders/day, {} counters x {} sales/day (seeded in {:.0} s)",
        r.backend,
        r.days, r.orders_per_day, COUNTERS, r.counter_sales_per_day, r.seed_seconds
    );
    print_days(&[&r.first, &r.last]);
    println!("-- the walked database's first day, probed on that day, against its last day:");
    print_comparisons(&r.comparisons);
    if let Some(p) = &r.paired {
        println!(
            "-- paired, {} alternating rounds at the end: a fresh twin's day 1 against the walked database's last day:",
            p.rounds
        );
        print_days(&[&p.day1, &p.last]);
        print_comparisons(&p.comparisons);
    }
    println!(
        "-- a figure is within when its last-day p50 is at most 20 % above day 1's (or less than {NOISE_MS} ms above)"
    );
}

fn print_days(probes: &[&Probe]) {
    for p in probes {
        println!(
            "   day {:>3} ({}): db {:.1} MB, {} orders, {} counter sales, {} leases; a counter reports {} of its {} leases{}",
            p.day_number,
            p.day,
            p.db_bytes as f64 / 1e6,
            p.orders,
            p.counter_sales,
            p.server_leases,
            p.leases_reported,
            p.leases_held,
            if p.failed_orders > 0 {
                format!("; {} probe orders failed (not timed)", p.failed_orders)
            } else {
                String::new()
            }
        );
    }
}

fn print_comparisons(comparisons: &[Comparison]) {
    println!(
        "   {:<32} {:>15} {:>15}   {:>15} {:>15}   within 20 %",
        "figure", "day 1 p50", "last p50", "day 1 p99", "last p99"
    );
    for c in comparisons {
        println!(
            "   {:<32} {:>12.2} ms {:>12.2} ms   {:>12.2} ms {:>12.2} ms   {}",
            c.figure,
            c.first_p50_ms,
            c.last_p50_ms,
            c.first_p99_ms,
            c.last_p99_ms,
            if c.within { "yes" } else { "NO" }
        );
    }
}

/// Growth is reported, not treated as a broken invariant: benchmarks print
/// figures, tests assert behaviour.
pub fn violations(_r: &HistoryReport) -> Vec<String> {
    Vec::new()
}
