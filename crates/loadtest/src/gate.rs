//! `gate`: how fast tickets get in.
//!
//! 1. Online redeem at a steady rate (open loop, default 500 scans/s): each
//!    scan is sent at its scheduled time whatever the previous ones do, and
//!    its latency counts from that time (no coordinated omission).
//! 2. Online redeem flat out (closed loop, 64 scanners): scans per second.
//! 3. The gate engine online (`Terminal::scan`: local checks, server redeem,
//!    local log), one gate scanning one ticket after another.
//! 4. The gate engine offline (server killed): signature, window, local
//!    "already used" log and the durable local write, as `decided_in_us`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tessera_core::api::gate::RedeemResult;
use tokio::task::JoinSet;

use crate::client::{enrol_gate, http_client, Shop};
use crate::server::{Server, ServerOptions};
use crate::stats::{error_code, transport_code, Errors, Samples, Summary};

#[derive(Clone, Debug)]
pub struct GateOptions {
    pub tickets: usize,
    /// Scans per second of the steady online phase.
    pub rate: u32,
    pub server_bin: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct GateReport {
    pub scenario: &'static str,
    pub tickets: usize,
    pub online_rate_target: u32,
    pub online_rate_achieved: f64,
    pub online_at_rate: Summary,
    pub online_at_rate_admitted: u64,
    pub online_max_scans_per_sec: f64,
    pub online_max: Summary,
    pub online_max_admitted: u64,
    pub engine_online: Summary,
    pub engine_online_offline_fallbacks: u64,
    pub offline_decided: Summary,
    pub offline_admitted: u64,
    pub offline_p99_us: f64,
    pub errors: Errors,
    pub targets: GateTargets,
}

#[derive(Clone, Debug, Serialize)]
pub struct GateTargets {
    pub online_p99_ms_max_at_500: f64,
    pub offline_p99_ms_max: f64,
}

pub async fn run(opts: &GateOptions) -> Result<GateReport> {
    let mut server = Server::start(ServerOptions::new(opts.server_bin.clone()))?;
    let slot = server.slot("11:00");
    let n = opts.tickets.max(1);
    let engine_n = n.min(500);
    let needed = 2 * n + engine_n;
    server.set_capacity(slot, needed as u32 + 10)?;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let http = http_client(128)?;
    let shop = Shop::new(http.clone(), &server.url).with_channel(&server.channel_token);
    eprintln!("gate: buying {needed} tickets …");
    let codes = buy_tickets(&shop, slot, needed).await?;
    let (rate_codes, rest) = codes.split_at(n);
    let (max_codes, engine_codes) = rest.split_at(n);

    let mut tokens = Vec::new();
    for g in 0..4 {
        let code = server.enrolment_code("gate", &format!("Bench gate {}", g + 1))?;
        let v: serde_json::Value = http
            .post(format!("{}/v1/devices/enrol", server.url))
            .json(&serde_json::json!({"code": code, "name": format!("Bench gate {}", g + 1)}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        tokens.push(v["token"].as_str().context("gate token")?.to_string());
    }
    let tokens = Arc::new(tokens);
    let mut errors = Errors::default();

    // 1. Steady rate.
    eprintln!("gate: {n} online redeems at {} scans/s …", opts.rate);
    let interval = Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1)));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for (i, code) in rate_codes.iter().enumerate() {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let http = http.clone();
        let url = server.url.clone();
        let token = tokens[i % tokens.len()].clone();
        let code = code.clone();
        set.spawn(async move {
            let r = redeem(&http, &url, &token, &code).await;
            (due.elapsed(), r)
        });
    }
    let mut at_rate = Samples::default();
    let mut at_rate_admitted = 0;
    while let Some(r) = set.join_next().await {
        let (latency, r) = r?;
        match r {
            Ok(true) => {
                at_rate.push(latency);
                at_rate_admitted += 1;
            }
            Ok(false) => {
                at_rate.push(latency);
                errors.add("online_denied");
            }
            Err(code) => errors.add(code),
        }
    }
    let rate_achieved = n as f64 / start.elapsed().as_secs_f64();

    // 2. Flat out.
    eprintln!("gate: {n} online redeems flat out (64 scanners) …");
    let queue = Arc::new(std::sync::Mutex::new(max_codes.to_vec()));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for s in 0..64usize {
        let http = http.clone();
        let url = server.url.clone();
        let token = tokens[s % tokens.len()].clone();
        let queue = queue.clone();
        set.spawn(async move {
            let mut lat = Samples::default();
            let mut admitted = 0u64;
            let mut errs = Errors::default();
            loop {
                let code = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some(code) = code else { break };
                let t = Instant::now();
                match redeem(&http, &url, &token, &code).await {
                    Ok(ok) => {
                        lat.push(t.elapsed());
                        if ok {
                            admitted += 1;
                        } else {
                            errs.add("online_denied");
                        }
                    }
                    Err(c) => errs.add(c),
                }
            }
            (lat, admitted, errs)
        });
    }
    let mut flat = Samples::default();
    let mut flat_admitted = 0;
    while let Some(r) = set.join_next().await {
        let (lat, admitted, errs) = r?;
        flat.extend(lat);
        flat_admitted += admitted;
        errors.merge(errs);
    }
    let flat_rate = n as f64 / start.elapsed().as_secs_f64();

    // 3. The gate engine, online.
    eprintln!("gate: {engine_n} scans through the gate engine, online …");
    let gate = enrol_gate(&server, &server.url, "Engine gate").await?;
    let mut engine = Samples::default();
    let mut fallbacks = 0;
    for code in engine_codes {
        let t = Instant::now();
        let v = gate
            .t
            .scan(code)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        engine.push(t.elapsed());
        if v.offline {
            fallbacks += 1;
        }
        if v.result != RedeemResult::Admitted {
            errors.add("engine_denied");
        }
    }

    // 4. Offline: the server is gone; the gate decides alone.
    eprintln!("gate: {n} scans through the gate engine, offline …");
    server.kill();
    let mut offline = Samples::default();
    let mut offline_admitted = 0;
    for code in rate_codes {
        let v = gate
            .t
            .scan(code)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        offline.push_us(v.decided_in_us);
        if v.result == RedeemResult::Admitted {
            offline_admitted += 1;
        } else {
            errors.add("offline_denied");
        }
    }
    let offline_summary = offline.summary();
    Ok(GateReport {
        scenario: "gate",
        tickets: n,
        online_rate_target: opts.rate,
        online_rate_achieved: rate_achieved,
        online_at_rate: at_rate.summary(),
        online_at_rate_admitted: at_rate_admitted,
        online_max_scans_per_sec: flat_rate,
        online_max: flat.summary(),
        online_max_admitted: flat_admitted,
        engine_online: engine.summary(),
        engine_online_offline_fallbacks: fallbacks,
        offline_decided: offline_summary,
        offline_admitted,
        offline_p99_us: offline_summary.p99_ms * 1000.0,
        errors,
        targets: GateTargets {
            online_p99_ms_max_at_500: 20.0,
            offline_p99_ms_max: 2.0,
        },
    })
}

/// `Ok(true)` admitted, `Ok(false)` denied, `Err(code)` failed.
async fn redeem(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    code: &str,
) -> Result<bool, String> {
    let body = format!(r#"{{"code":"{code}"}}"#);
    let r = http
        .post(format!("{url}/v1/gate/redeem"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| transport_code(&e))?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await.map_err(|e| transport_code(&e))?;
    if status != 200 {
        return Err(error_code(status, &bytes));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| "unreadable".to_string())?;
    Ok(v["result"] == "admitted")
}

/// Buys `n` adult tickets for `slot` in orders of 20, 32 buyers at once.
pub(crate) async fn buy_tickets(
    shop: &Shop,
    slot: tessera_core::slot::SlotId,
    n: usize,
) -> Result<Vec<String>> {
    let orders = n.div_ceil(20);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..32 {
        let shop = shop.clone();
        let next = next.clone();
        set.spawn(async move {
            let mut codes = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= orders {
                    break;
                }
                let q = (n - i * 20).min(20) as u32;
                let order = shop.buy(&format!("gate-bench-{i}"), slot, q).await?;
                codes.extend(order.tickets.into_iter().map(|t| t.code));
            }
            anyhow::Ok(codes)
        });
    }
    let mut codes = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        codes.extend(r??);
    }
    anyhow::ensure!(
        codes.len() == n,
        "bought {} tickets, wanted {n}",
        codes.len()
    );
    Ok(codes)
}

pub fn print(r: &GateReport) {
    println!("== gate: {} tickets per phase", r.tickets);
    println!(
        "   online redeem at {} scans/s   {}  (achieved {:.0}/s, {} admitted)",
        r.online_rate_target,
        r.online_at_rate.line(),
        r.online_rate_achieved,
        r.online_at_rate_admitted
    );
    println!(
        "   online redeem flat out        {:.0} scans/s, {}  ({} admitted)",
        r.online_max_scans_per_sec,
        r.online_max.line(),
        r.online_max_admitted
    );
    println!(
        "   gate engine, online           {}  ({} fell back to offline)",
        r.engine_online.line(),
        r.engine_online_offline_fallbacks
    );
    println!(
        "   gate engine, offline          {}  ({} admitted)",
        r.offline_decided.line_us(),
        r.offline_admitted
    );
    println!("   error codes                   {}", r.errors.line());
    println!(
        "-- targets: online redeem p99 <= {:.0} ms at 500 scans/s; offline verify+redeem p99 <= {:.0} ms",
        r.targets.online_p99_ms_max_at_500, r.targets.offline_p99_ms_max
    );
}

pub fn violations(r: &GateReport) -> Vec<String> {
    let mut v = Vec::new();
    if r.online_at_rate_admitted as usize != r.tickets
        || r.online_max_admitted as usize != r.tickets
    {
        v.push(format!(
            "valid tickets were not all admitted online: {} and {} of {}",
            r.online_at_rate_admitted, r.online_max_admitted, r.tickets
        ));
    }
    if r.offline_admitted as usize != r.tickets {
        v.push(format!(
            "valid tickets were not all admitted offline: {} of {}",
            r.offline_admitted, r.tickets
        ));
    }
    v
}
