//! `queue`: a blockbuster's opening through its waiting room. N visitors
//! (10,000 by default) join before the opening, ask where they stand as
//! often as the server says, and when let in hold one adult with their pass
//! and confirm it. Meanwhile a steady background of holds on another day
//! (not queued) measures the server's latency: first alone, then while the
//! room lets the crowd in. Reports the rate the room let visitors in
//! against the configured one, the background's p99 in both phases, and
//! checks that every visitor was let in exactly once and booked once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use tessera_core::slot::SlotId;
use tokio::task::JoinSet;

use crate::client::{http_client, Shop};
use crate::server::{Server, ServerOptions};
use crate::stats::{Errors, Samples, Summary};

#[derive(Clone, Debug)]
pub struct QueueOptions {
    pub visitors: usize,
    pub rate_per_minute: u32,
    /// Background holds per second on a day outside the room.
    pub background_per_s: u32,
    /// Seconds of background alone before the crowd arrives.
    pub quiet_secs: u64,
    pub server_bin: std::path::PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueueReport {
    pub scenario: &'static str,
    pub visitors: usize,
    pub joined_before_opening: u64,
    pub join_latency: Summary,
    pub configured_per_s: f64,
    /// Let in per second, from the first admission to the last (the room's
    /// own count, sampled every 250 ms).
    pub admitted_per_s: f64,
    pub admitted: u64,
    pub booked: u64,
    /// Passes a visitor was given more than once, or holds refused.
    pub double_admissions: u64,
    pub place_polls: u64,
    pub poll_latency: Summary,
    pub booking_latency: Summary,
    pub background_quiet: Summary,
    pub background_during: Summary,
    pub errors: Errors,
}

const ROOM: &str = "blockbuster";

fn config(opens_at: jiff::Timestamp, day: jiff::civil::Date, o: &QueueOptions) -> String {
    format!(
        "[[waiting_rooms]]
id = \"{ROOM}\"
name = \"Blockbuster\"
from = \"{day}\"
until = \"{day}\"
opens_at = \"{opens_at}\"
rate_per_minute = {}
max_in_shop = 1000000
max_places_per_client = 4294967295
away_after_secs = 120
",
        o.rate_per_minute
    )
}

struct Visitor {
    cookie: String,
    place: String,
}

async fn send(req: reqwest::RequestBuilder) -> Result<(u16, Value, Option<String>)> {
    let r = req.send().await?;
    let status = r.status().as_u16();
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    let body = r.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        cookie,
    ))
}

/// Open loop: one hold every 1/rate s on `slot`, each timed from when it
/// was due, until `stop`.
async fn background(
    shop: Shop,
    slot: SlotId,
    per_s: u32,
    stop: Arc<AtomicBool>,
    tag: &'static str,
) -> (Samples, Errors) {
    let every = Duration::from_secs_f64(1.0 / f64::from(per_s.max(1)));
    let start = Instant::now();
    let samples = Arc::new(Mutex::new(Samples::default()));
    let errors = Arc::new(Mutex::new(Errors::default()));
    let mut tasks = JoinSet::new();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + every.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let (shop, samples, errors) = (shop.clone(), samples.clone(), errors.clone());
        tasks.spawn(async move {
            let key = format!("bg-{tag}-{n}");
            let r = shop.hold(&key, slot, "adult", 1).await;
            let took = due.elapsed();
            match r {
                Ok((201, _)) => samples.lock().unwrap().push(took),
                Ok((s, b)) => errors.lock().unwrap().add(crate::stats::error_code(s, &b)),
                Err(e) => errors.lock().unwrap().add(crate::stats::transport_code(&e)),
            }
        });
        n += 1;
    }
    while tasks.join_next().await.is_some() {}
    let s = samples.lock().unwrap().clone();
    let e = errors.lock().unwrap().clone();
    (s, e)
}

pub async fn run(o: &QueueOptions) -> Result<QueueReport> {
    // The crowd joins in the seconds after the quiet phase; the room opens
    // when they have all had time to (about 2,000 joins a second here).
    let join_budget = 10 + o.visitors as u64 / 500;
    let mut options = ServerOptions::new(o.server_bin.clone());
    let day = tessera_server::testkit::test_day();
    let room_day = day.tomorrow().map_err(|e| anyhow!("{e}"))?;
    let offset = tessera_server::testkit::offset_for(day, "11:05").map_err(|e| anyhow!(e))?;
    let opens_at = jiff::Timestamp::now()
        + jiff::SignedDuration::from_secs(offset + o.quiet_secs as i64 + join_budget as i64 + 5);
    options.day = Some(day);
    options.config_toml = Some(config(opens_at, room_day, o));
    let server = Server::start(options)?;
    let busy = tessera_server::testkit::slot(day, "15:30");
    let room_slot = tessera_server::testkit::slot(room_day, "15:30");
    server.set_capacity(busy, 1_000_000)?;
    server.set_capacity(room_slot, o.visitors as u32 + 100)?;
    let http = http_client(512)?;
    let shop = Shop::new(http.clone(), &server.url).with_channel(&server.channel_token);

    // 1. Background alone.
    let stop = Arc::new(AtomicBool::new(false));
    let quiet = tokio::spawn(background(
        shop.clone(),
        busy,
        o.background_per_s,
        stop.clone(),
        "quiet",
    ));
    tokio::time::sleep(Duration::from_secs(o.quiet_secs)).await;
    stop.store(true, Ordering::Relaxed);
    let (quiet, mut errors) = quiet.await?;

    // 2. Background again, and the crowd joins.
    let stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(background(
        shop.clone(),
        busy,
        o.background_per_s,
        stop.clone(),
        "during",
    ));
    let base = server.url.clone();
    let mut joins = JoinSet::new();
    let next = Arc::new(AtomicU64::new(0));
    let joined = Arc::new(Mutex::new((Vec::new(), Samples::default(), 0u64)));
    for _ in 0..64 {
        let (http, base, next, joined, n) = (
            http.clone(),
            base.clone(),
            next.clone(),
            joined.clone(),
            o.visitors as u64,
        );
        joins.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                let (s, b, cookie) =
                    send(http.post(format!("{base}/v1/queue/{ROOM}/join"))).await?;
                let took = t.elapsed();
                if s != 200 {
                    bail!("join: {s} {b}");
                }
                let place = b["place"].as_str().context("place")?.to_string();
                let mut j = joined.lock().unwrap();
                j.1.push(took);
                j.2 += u64::from(b["state"] == "before_opening");
                j.0.push(Visitor {
                    cookie: cookie.context("cookie")?,
                    place,
                });
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = joins.join_next().await {
        r??;
    }
    let (visitors, join_latency, before) = std::mem::take(&mut *joined.lock().unwrap());

    // 3. Everyone asks as told; once let in, holds with the pass and confirms.
    let polls = Arc::new(Mutex::new((
        Samples::default(),
        Samples::default(),
        0u64,
        0u64,
        0u64,
        Errors::default(),
    )));
    let mut crowd = JoinSet::new();
    for (i, v) in visitors.into_iter().enumerate() {
        let (http, base, polls, shop) = (http.clone(), base.clone(), polls.clone(), shop.clone());
        crowd.spawn(async move {
            let mut wait = Duration::from_millis(100 + (i as u64 % 5000));
            loop {
                tokio::time::sleep(wait).await;
                let t = Instant::now();
                let r = send(
                    http.get(format!("{base}/v1/queue/{ROOM}/place"))
                        .header("cookie", &v.cookie)
                        .header("tessera-queue-place", &v.place),
                )
                .await;
                let took = t.elapsed();
                let (s, b, _) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        polls.lock().unwrap().5.add(format!("poll: {e}"));
                        wait = Duration::from_secs(1);
                        continue;
                    }
                };
                polls.lock().unwrap().0.push(took);
                polls.lock().unwrap().2 += 1;
                if s != 200 {
                    polls.lock().unwrap().5.add(format!("poll {s} {}", b["error"]["code"]));
                    wait = Duration::from_secs(1);
                    continue;
                }
                if let Some(pass) = b["pass"].as_str() {
                    let t = Instant::now();
                    let body = json!({"slot_id": room_slot, "items": [{"product_id": "adult", "quantity": 1}]}).to_string();
                    let (s, hb, _) = send(
                        http.post(format!("{base}/v1/holds"))
                            .header("content-type", "application/json")
                            .header("idempotency-key", format!("q-{i}-h"))
                            .header("cookie", &v.cookie)
                            .header("tessera-queue-pass", pass)
                            .body(body),
                    )
                    .await?;
                    if s != 201 {
                        polls.lock().unwrap().4 += 1;
                        polls.lock().unwrap().5.add(format!("hold {s} {}", hb["error"]["code"]));
                        return Ok(());
                    }
                    let hold = hb["hold_id"].as_str().unwrap_or_default().to_string();
                    let (s, cb) = shop.confirm(&format!("q-{i}-c"), &hold).await?;
                    polls.lock().unwrap().1.push(t.elapsed());
                    if s == 201 {
                        polls.lock().unwrap().3 += 1;
                    } else {
                        polls.lock().unwrap().5.add(crate::stats::error_code(s, &cb));
                    }
                    return Ok::<_, anyhow::Error>(());
                }
                wait = Duration::from_millis(b["poll_after_ms"].as_u64().unwrap_or(5000).clamp(200, 10_000));
            }
        });
    }
    // The room's own count, sampled.
    let mut first: Option<(Instant, u64)> = None;
    let mut last: Option<(Instant, u64)> = None;
    let deadline = Instant::now()
        + Duration::from_secs(
            join_budget + 60 + 2 * o.visitors as u64 * 60 / u64::from(o.rate_per_minute.max(1)),
        );
    loop {
        let (_, info, _) = send(http.get(format!("{base}/v1/queue/{ROOM}"))).await?;
        let admitted = info["admitted"].as_u64().unwrap_or(0);
        let now = Instant::now();
        if admitted > 0 && first.is_none() {
            first = Some((now, admitted));
        }
        if last.is_none_or(|(_, a)| a < admitted) {
            last = Some((now, admitted));
        }
        if admitted >= o.visitors as u64 || now > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    while let Some(r) = crowd.join_next().await {
        if let Err(e) = r? {
            errors.add(format!("visitor: {e}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (during, during_errors) = during.await?;
    errors.merge(during_errors);
    let (poll_latency, booking_latency, place_polls, booked, refused, poll_errors) =
        std::mem::take(&mut *polls.lock().unwrap());
    errors.merge(poll_errors);
    let (admitted_per_s, admitted) = match (first, last) {
        (Some((t0, a0)), Some((t1, a1))) if t1 > t0 => {
            ((a1 - a0) as f64 / (t1 - t0).as_secs_f64(), a1)
        }
        (_, Some((_, a))) => (0.0, a),
        _ => (0.0, 0),
    };
    Ok(QueueReport {
        scenario: "queue",
        visitors: o.visitors,
        joined_before_opening: before,
        join_latency: join_latency.summary(),
        configured_per_s: f64::from(o.rate_per_minute) / 60.0,
        admitted_per_s,
        admitted,
        booked,
        double_admissions: refused + admitted.saturating_sub(o.visitors as u64),
        place_polls,
        poll_latency: poll_latency.summary(),
        booking_latency: booking_latency.summary(),
        background_quiet: quiet.summary(),
        background_during: during.summary(),
        errors,
    })
}

pub fn print(r: &QueueReport) {
    println!(
        "waiting room: {} visitors, {} joined before the opening (join {})",
        r.visitors,
        r.joined_before_opening,
        r.join_latency.line()
    );
    println!(
        "let in: {} at {:.1}/s (configured {:.1}/s); booked {}; let in twice or refused: {}",
        r.admitted, r.admitted_per_s, r.configured_per_s, r.booked, r.double_admissions
    );
    println!(
        "place polls: {} ({}); hold+confirm after admission: {}",
        r.place_polls,
        r.poll_latency.line(),
        r.booking_latency.line()
    );
    println!(
        "background holds alone:       {}",
        r.background_quiet.line()
    );
    println!(
        "background holds, room busy:  {}",
        r.background_during.line()
    );
    if r.background_quiet.p99_ms > 0.0 {
        println!(
            "p99 during ÷ alone: {:.2}",
            r.background_during.p99_ms / r.background_quiet.p99_ms
        );
    }
    println!("errors: {}", r.errors.line());
}

/// Broken promises: someone not let in, let in twice, or not booked.
pub fn violations(r: &QueueReport) -> Vec<String> {
    let mut v = Vec::new();
    if r.admitted != r.visitors as u64 {
        v.push(format!("{} of {} visitors let in", r.admitted, r.visitors));
    }
    if r.double_admissions > 0 {
        v.push(format!(
            "{} let in twice or refused with a pass",
            r.double_admissions
        ));
    }
    if r.booked != r.visitors as u64 {
        v.push(format!("{} of {} visitors booked", r.booked, r.visitors));
    }
    v
}
