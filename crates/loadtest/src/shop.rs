//! `shop`: a spike of visitors on the web shop. Each visitor loads what the
//! shop's first pages load (the page itself, its config, the calendar, a
//! day's entry times, the catalogue), polls availability as the day page
//! does, and a share of them buy: hold, checkout, pay on the demo
//! provider's page, and wait for the return page to show the booking.
//! Reports requests per second and latency per request kind, and checks the
//! books: nothing oversold, every paid checkout ticketed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::Rng;
use reqwest::Client;
use serde::Serialize;
use tessera_core::slot::SlotId;
use tokio::task::JoinSet;

use crate::client::http_client;
use crate::server::{workspace_root, Server, ServerOptions};
use crate::stats::{Errors, Samples, Summary};

#[derive(Clone, Debug)]
pub struct ShopOptions {
    /// Concurrent visitors (closed loop: each starts its next visit when
    /// the last one ends).
    pub visitors: usize,
    pub duration: Duration,
    /// Share of visits that go on to buy.
    pub buy_share: f64,
    /// Places in each of the six entry times visitors buy.
    pub capacity: u32,
    pub server_bin: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShopReport {
    pub scenario: &'static str,
    pub visitors: usize,
    pub capacity_per_time: u32,
    pub elapsed_s: f64,
    pub visits: u64,
    pub requests: u64,
    pub requests_per_sec: f64,
    /// Latency per kind of request (`page`, `config`, `calendar`, …).
    pub latency: BTreeMap<String, Summary>,
    pub orders: u64,
    /// Checkouts that met a sold-out time (not an error: the page offers others).
    pub sold_out: u64,
    pub errors: Errors,
    /// Admissions sold beyond a slot's capacity, from the availability view.
    pub oversold: u64,
    /// Paid checkouts the return page never showed as confirmed or refunded.
    pub paid_without_outcome: u64,
}

/// What one visitor's requests took, gathered per kind.
#[derive(Default)]
struct Tally {
    latency: BTreeMap<&'static str, Samples>,
    requests: u64,
    visits: u64,
    orders: u64,
    sold_out: u64,
    stuck: u64,
    errors: Errors,
}

impl Tally {
    fn time(&mut self, kind: &'static str, started: Instant) {
        self.latency
            .entry(kind)
            .or_default()
            .push(started.elapsed());
        self.requests += 1;
    }
}

struct Visit<'a> {
    http: &'a Client,
    base: &'a str,
    day: String,
    slots: &'a [SlotId],
}

impl Visit<'_> {
    async fn get(&self, t: &mut Tally, kind: &'static str, path: &str) -> Option<Vec<u8>> {
        let started = Instant::now();
        let answer = self.http.get(format!("{}{path}", self.base)).send().await;
        match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.bytes().await.ok()?.to_vec();
                t.time(kind, started);
                if status == 200 {
                    return Some(body);
                }
                t.errors.add(format!("{kind} {status}"));
                None
            }
            Err(e) => {
                t.errors
                    .add(format!("{kind} {}", crate::stats::transport_code(&e)));
                None
            }
        }
    }

    async fn post(
        &self,
        t: &mut Tally,
        kind: &'static str,
        path: &str,
        key: &str,
        json: Option<serde_json::Value>,
        form: Option<&[(&str, &str)]>,
    ) -> Option<(u16, Vec<u8>)> {
        let started = Instant::now();
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("idempotency-key", key);
        if let Some(json) = json {
            request = request.json(&json);
        }
        if let Some(form) = form {
            request = request.form(form);
        }
        match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.bytes().await.ok()?.to_vec();
                t.time(kind, started);
                Some((status, body))
            }
            Err(e) => {
                t.errors
                    .add(format!("{kind} {}", crate::stats::transport_code(&e)));
                None
            }
        }
    }

    /// Browsing: what the calendar and a day's page load.
    async fn browse(&self, t: &mut Tally) {
        self.get(t, "page", "/").await;
        self.get(t, "config", "/v1/shop/config").await;
        self.get(
            t,
            "calendar",
            &format!("/v1/calendar?from={}&days=35", self.day),
        )
        .await;
        self.get(t, "catalogue", "/v1/catalogue").await;
        // The day page polls its entry times every few seconds.
        for _ in 0..2 {
            self.get(
                t,
                "availability",
                &format!("/v1/availability?date={}", self.day),
            )
            .await;
        }
    }

    /// Buying two adult tickets through the demo provider, as the shop's
    /// pages do it.
    async fn buy(&self, t: &mut Tally, key: &str, slot: SlotId) -> Result<(), &'static str> {
        let hold = serde_json::json!({
            "slot_id": slot.to_string(),
            "items": [{"product_id": "adult", "quantity": 2}],
        });
        let (status, body) = self
            .post(
                t,
                "hold",
                "/v1/holds",
                &format!("{key}-h"),
                Some(hold),
                None,
            )
            .await
            .ok_or("hold transport")?;
        if status == 409 {
            t.sold_out += 1;
            // The page then asks for the nearest times.
            self.get(
                t,
                "nearest",
                &format!("/v1/nearest?slot_id={slot}&admissions=2"),
            )
            .await;
            return Ok(());
        }
        if status != 201 {
            return Err("hold refused");
        }
        let hold: serde_json::Value = serde_json::from_slice(&body).map_err(|_| "hold body")?;
        let hold_id = hold["hold_id"].as_str().ok_or("hold id")?;
        let checkout = serde_json::json!({
            "name": "Load Visitor",
            "email": "visitor@example.org",
            "language": "fr",
            "accept_terms": true,
        });
        let (status, body) = self
            .post(
                t,
                "checkout",
                &format!("/v1/holds/{hold_id}/checkout"),
                &format!("{key}-c"),
                Some(checkout),
                None,
            )
            .await
            .ok_or("checkout transport")?;
        if status != 201 {
            return Err("checkout refused");
        }
        let checkout: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| "checkout body")?;
        let checkout_id = checkout["checkout_id"].as_str().ok_or("checkout id")?;
        let redirect = checkout["redirect_url"].as_str().ok_or("redirect url")?;
        let pay_path = redirect
            .find("/pay/demo/")
            .map(|at| &redirect[at..])
            .ok_or("not the demo provider")?;
        self.get(t, "pay_page", pay_path).await;
        let (status, _) = self
            .post(
                t,
                "pay",
                pay_path,
                &format!("{key}-p"),
                None,
                Some(&[("outcome", "paid")]),
            )
            .await
            .ok_or("pay transport")?;
        if !(200..400).contains(&status) {
            return Err("demo payment refused");
        }
        // The return page polls until the webhook's order is there.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Some(body) = self
                .get(
                    t,
                    "checkout_status",
                    &format!("/v1/checkouts/{checkout_id}"),
                )
                .await
            else {
                return Err("checkout status");
            };
            let state: serde_json::Value =
                serde_json::from_slice(&body).map_err(|_| "status body")?;
            match state["state"].as_str() {
                Some("confirmed") | Some("refunded") => {
                    t.orders += u64::from(state["state"] == "confirmed");
                    return Ok(());
                }
                Some("failed") => return Err("payment failed"),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        t.stuck += 1;
        Err("paid checkout never confirmed")
    }
}

pub async fn run(opts: &ShopOptions) -> Result<ShopReport> {
    let mut options = ServerOptions::new(opts.server_bin.clone());
    // The harness's visitors all come from 127.0.0.1; the shop's built pages
    // are served from the repository.
    options.config_toml = Some(format!(
        "[shop]\ndir = {:?}\n",
        workspace_root().join("shop/dist").display().to_string()
    ));
    let server = Server::start(options)?;
    let day = server.day.to_string();
    let slots: Arc<Vec<SlotId>> = Arc::new(
        ["11:30", "12:00", "12:30", "13:00", "14:00", "15:00"]
            .iter()
            .map(|hhmm| server.slot(hhmm))
            .collect(),
    );
    for slot in slots.iter() {
        server.set_capacity(*slot, opts.capacity)?;
    }
    let http = http_client(opts.visitors)?;
    let base: Arc<str> = server.url.trim_end_matches('/').into();
    let stop = Arc::new(AtomicBool::new(false));
    eprintln!(
        "shop: {} visitors for {:?}, {:.0} % buy …",
        opts.visitors,
        opts.duration,
        opts.buy_share * 100.0
    );
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for v in 0..opts.visitors {
        let (http, base, slots, stop, day) = (
            http.clone(),
            base.clone(),
            slots.clone(),
            stop.clone(),
            day.clone(),
        );
        let buy_share = opts.buy_share;
        tasks.spawn(async move {
            let mut t = Tally::default();
            let visit = Visit {
                http: &http,
                base: &base,
                day,
                slots: &slots,
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                visit.browse(&mut t).await;
                let (buys, slot) = {
                    let mut rng = rand::rng();
                    (
                        rng.random_bool(buy_share.clamp(0.0, 1.0)),
                        visit.slots[rng.random_range(0..visit.slots.len())],
                    )
                };
                if buys {
                    if let Err(why) = visit.buy(&mut t, &format!("v{v}-{n}"), slot).await {
                        t.errors.add(why);
                    }
                }
                t.visits += 1;
            }
            t
        });
    }
    tokio::time::sleep(opts.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    while let Some(done) = tasks.join_next().await {
        let t = done.context("visitor task")?;
        for (kind, samples) in t.latency {
            all.latency.entry(kind).or_default().extend(samples);
        }
        all.requests += t.requests;
        all.visits += t.visits;
        all.orders += t.orders;
        all.sold_out += t.sold_out;
        all.stuck += t.stuck;
        all.errors.merge(t.errors);
    }
    let elapsed = started.elapsed().as_secs_f64();

    let availability: serde_json::Value = http
        .get(format!("{base}/v1/availability?date={day}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let oversold = availability["slots"]
        .as_array()
        .map(|slots| {
            slots
                .iter()
                .map(|s| {
                    let sold = s["sold"].as_u64().unwrap_or(0);
                    let capacity = s["capacity"].as_u64().unwrap_or(0);
                    sold.saturating_sub(capacity)
                })
                .sum()
        })
        .unwrap_or(0);

    Ok(ShopReport {
        scenario: "shop",
        visitors: opts.visitors,
        capacity_per_time: opts.capacity,
        elapsed_s: elapsed,
        visits: all.visits,
        requests: all.requests,
        requests_per_sec: all.requests as f64 / elapsed.max(1e-9),
        latency: all
            .latency
            .into_iter()
            .map(|(k, s)| (k.to_string(), s.summary()))
            .collect(),
        orders: all.orders,
        sold_out: all.sold_out,
        errors: all.errors,
        oversold,
        paid_without_outcome: all.stuck,
    })
}

pub fn print(r: &ShopReport) {
    println!(
        "== shop: {} visitors for {:.1} s (6 times of {} places): {} visits, {} requests ({:.0} requests/s), {} orders, {} met a sold-out time",
        r.visitors, r.elapsed_s, r.capacity_per_time, r.visits, r.requests, r.requests_per_sec, r.orders, r.sold_out
    );
    for (kind, summary) in &r.latency {
        println!("   {kind:<16} {}", summary.line());
    }
    println!("   errors: {}", r.errors.line());
    println!(
        "   oversold {}; paid checkouts with no outcome {}",
        r.oversold, r.paid_without_outcome
    );
}

pub fn violations(r: &ShopReport) -> Vec<String> {
    let mut v = Vec::new();
    if r.oversold > 0 {
        v.push(format!("{} admissions sold beyond capacity", r.oversold));
    }
    if r.paid_without_outcome > 0 {
        v.push(format!(
            "{} paid checkouts were neither ticketed nor refunded",
            r.paid_without_outcome
        ));
    }
    v
}
