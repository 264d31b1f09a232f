//! `gate-peers`: with the server down, how soon the other gates know of an
//! admission. Three gates share their admissions over loopback HTTP; the
//! server is killed; N tickets are admitted one after another, round-robin
//! at gates A, B and C, and for each the time from the start of the scan at
//! the admitting gate until each of the other two holds the admission is
//! measured (polled every 0.1 ms on a thread of its own).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tessera_core::api::gate::RedeemResult;
use tessera_terminal::Terminal;

use crate::client::{enrol_gate, http_client, Counter, Shop};
use crate::gate::buy_tickets;
use crate::server::{Server, ServerOptions};
use crate::stats::{Errors, Samples, Summary};

#[derive(Clone, Debug)]
pub struct GatePeersOptions {
    pub admissions: usize,
    pub server_bin: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct GatePeersReport {
    pub scenario: &'static str,
    pub gates: usize,
    pub admissions: usize,
    pub admitted: u64,
    /// Scan start at the admitting gate → the admission held by one other
    /// gate (two samples per admission).
    pub known_at_peer: Summary,
    /// … → held by both other gates.
    pub known_at_all: Summary,
    /// The admitting gate's own decision (`decided_in_us`).
    pub scan_decided: Summary,
    pub errors: Errors,
}

/// Longest wait for one admission to reach a peer before it counts as lost.
const DEADLINE: Duration = Duration::from_secs(10);

pub async fn run(opts: &GatePeersOptions) -> Result<GatePeersReport> {
    let mut server = Server::start(ServerOptions::new(opts.server_bin.clone()))?;
    let slot = server.slot("11:00");
    let n = opts.admissions.max(1);
    server.set_capacity(slot, n as u32 + 10)?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let http = http_client(32)?;
    let shop = Shop::new(http, &server.url).with_channel(&server.channel_token);
    eprintln!("gate-peers: buying {n} tickets …");
    let codes = buy_tickets(&shop, slot, n).await?;

    let mut gates: Vec<Counter> = Vec::new();
    for name in ["Gate A", "Gate B", "Gate C"] {
        gates.push(enrol_gate(&server, &server.url, name).await?);
    }
    // Each gate needs the others' certified keys: one sync after all are
    // enrolled, as their sync loops would do while the server is up.
    for g in &gates {
        g.t.sync_now().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut addrs = Vec::new();
    for g in &gates {
        addrs.push(
            g.t.start_peer_service("127.0.0.1:0".parse()?)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
    }
    for (i, g) in gates.iter().enumerate() {
        let others: Vec<String> = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| format!("http://{a}"))
            .collect();
        g.t.set_peers(&others).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    server.kill();
    eprintln!("gate-peers: server down; {n} admissions round-robin at 3 gates …");

    let mut errors = Errors::default();
    let mut at_peer = Samples::default();
    let mut at_all = Samples::default();
    let mut decided = Samples::default();
    let mut admitted = 0u64;
    for (i, code) in codes.iter().enumerate() {
        let ticket = tessera_core::ticket_code::decode_unverified(code)
            .context("a bought ticket's code")?
            .0
            .ticket_id;
        let at = i % gates.len();
        let others: Vec<Terminal> = gates
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != at)
            .map(|(_, g)| g.t.clone())
            .collect();
        let start = Instant::now();
        let watch = tokio::task::spawn_blocking(move || watch(&others, ticket, start));
        let v = gates[at]
            .t
            .scan(code)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        decided.push_us(v.decided_in_us);
        if v.result == RedeemResult::Admitted && v.offline {
            admitted += 1;
        } else {
            errors.add(if v.offline { "denied" } else { "not_offline" });
        }
        let seen = watch.await?;
        let mut all = Duration::ZERO;
        for s in &seen {
            match s {
                Some(d) => {
                    at_peer.push(*d);
                    all = all.max(*d);
                }
                None => errors.add("not_propagated"),
            }
        }
        if seen.iter().all(Option::is_some) {
            at_all.push(all);
        }
    }
    for g in &gates {
        g.t.stop_peer_service().await;
    }
    Ok(GatePeersReport {
        scenario: "gate-peers",
        gates: gates.len(),
        admissions: n,
        admitted,
        known_at_peer: at_peer.summary(),
        known_at_all: at_all.summary(),
        scan_decided: decided.summary(),
        errors,
    })
}

/// When each of `gates` first held `ticket`, measured from `start`.
fn watch(gates: &[Terminal], ticket: uuid::Uuid, start: Instant) -> Vec<Option<Duration>> {
    let mut seen = vec![None; gates.len()];
    while start.elapsed() < DEADLINE && seen.iter().any(Option::is_none) {
        for (i, g) in gates.iter().enumerate() {
            if seen[i].is_none() && matches!(g.peer_admission_of(ticket), Ok(Some(_))) {
                seen[i] = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    seen
}

pub fn print(r: &GatePeersReport) {
    println!(
        "== gate-peers: {} gates, server down, {} admissions round-robin ({} admitted)",
        r.gates, r.admissions, r.admitted
    );
    println!(
        "   scan at one gate → known at another   {}",
        r.known_at_peer.line()
    );
    println!(
        "   scan at one gate → known at both      {}",
        r.known_at_all.line()
    );
    println!(
        "   the admitting gate's own decision     {}",
        r.scan_decided.line_us()
    );
    println!(
        "   error codes                           {}",
        r.errors.line()
    );
}

pub fn violations(r: &GatePeersReport) -> Vec<String> {
    let mut v = Vec::new();
    if r.admitted as usize != r.admissions {
        v.push(format!(
            "valid tickets were not all admitted offline: {} of {}",
            r.admitted, r.admissions
        ));
    }
    if r.known_at_all.count as usize != r.admissions {
        v.push(format!(
            "{} of {} admissions never reached both other gates within {:?}",
            r.admissions as u64 - r.known_at_all.count,
            r.admissions,
            DEADLINE
        ));
    }
    v
}
