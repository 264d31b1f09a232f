//! `push`: how fast a change reaches those who listen.
//!
//! Fan-out: N pages listen to a day's availability stream
//! (`/v1/events/availability`); an online hold (a commit that changes the
//! slot's places) is made, and the time from sending it to each page
//! receiving the `changed` event is one sample. Rounds are sequential: the
//! next hold is made once every page has the previous event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::client::Shop;
use crate::server::{Server, ServerOptions};
use crate::stats::{Samples, Summary};

#[derive(Clone, Debug)]
pub struct PushOptions {
    pub subscribers: Vec<usize>,
    pub rounds: usize,
    pub server: ServerOptions,
}

#[derive(Clone, Debug, Serialize)]
pub struct FanOut {
    pub subscribers: usize,
    pub rounds: usize,
    /// From sending the hold to each page receiving its event.
    pub hold_to_event: Summary,
    /// The hold's own answer time (its commit), for comparison.
    pub hold_answer: Summary,
    /// Seconds to open every stream and receive its snapshot.
    pub connect_s: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PushReport {
    pub scenario: &'static str,
    pub fan_out: Vec<FanOut>,
}

pub async fn run(opts: &PushOptions) -> Result<PushReport> {
    // Each page is a socket here and one at the server (a child, which
    // inherits the limit).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut fan_out = Vec::new();
    for &n in &opts.subscribers {
        let server = Server::start(opts.server.clone())?;
        fan_out.push(fan_out_round(&server, n, opts.rounds).await?);
    }
    Ok(PushReport {
        scenario: "push",
        fan_out,
    })
}

async fn fan_out_round(server: &Server, n: usize, rounds: usize) -> Result<FanOut> {
    let slot = server.slot("15:00");
    let url = format!("{}/v1/events/availability?date={}", server.url, server.day);
    // One client per 500 pages: a pool of sockets each, like browsers.
    // (places available the event says, when it arrived)
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    let mut pages = JoinSet::new();
    let started = Instant::now();
    let clients: Vec<reqwest::Client> = (0..n.div_ceil(500).max(1))
        .map(|_| reqwest::Client::builder().build())
        .collect::<Result<_, _>>()?;
    let gate = Arc::new(tokio::sync::Semaphore::new(200));
    for i in 0..n {
        let http = clients[i / 500].clone();
        let url = url.clone();
        let tx = tx.clone();
        let ready = ready_tx.clone();
        let gate = gate.clone();
        pages.spawn(async move { listen(http, url, tx, ready, gate).await });
    }
    drop(ready_tx);
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(120), ready_rx.recv())
            .await
            .context("pages still connecting after 120 s")?
            .context("a page failed to connect")?;
    }
    let connect_s = started.elapsed().as_secs_f64();

    let shop = Shop::new(crate::client::http_client(4)?, &server.url);
    let first = shop.available(slot).await?;
    let mut to_event = Samples::default();
    let mut answer = Samples::default();
    for round in 1..=rounds {
        let sent = Instant::now();
        let (status, body) = shop
            .hold(&format!("push-{n}-{round}"), slot, "adult", 1)
            .await?;
        answer.push(sent.elapsed());
        if status != 201 && status != 200 {
            bail!("hold answered {status}: {}", String::from_utf8_lossy(&body));
        }
        let mut seen = 0;
        while seen < n {
            let (r, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .with_context(|| format!("round {round}: {seen} of {n} pages got the event"))?
                .context("pages gone")?;
            // Known by the figure it carries: each hold takes one place.
            if r + round == first as usize {
                seen += 1;
                to_event.push(at.saturating_duration_since(sent));
            }
        }
    }
    pages.abort_all();
    Ok(FanOut {
        subscribers: n,
        rounds,
        hold_to_event: to_event.summary(),
        hold_answer: answer.summary(),
        connect_s,
    })
}

/// One page: connects (at most 200 at once), reports its snapshot, then
/// the arrival of each `changed` event with the places it reports.
async fn listen(
    http: reqwest::Client,
    url: String,
    tx: mpsc::UnboundedSender<(usize, Instant)>,
    ready: mpsc::UnboundedSender<()>,
    gate: Arc<tokio::sync::Semaphore>,
) -> Result<()> {
    let mut response = {
        let _permit = gate.acquire().await?;
        let r = http
            .get(&url)
            .header("accept", "text/event-stream")
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("stream answered {}", r.status());
        }
        r
    };
    let mut text = String::new();
    let mut snapshot = false;
    while let Some(chunk) = response.chunk().await? {
        let at = Instant::now();
        text.push_str(&String::from_utf8_lossy(&chunk));
        // Whole events only: they end with a blank line.
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.contains("event: snapshot") && !snapshot {
                snapshot = true;
                let _ = ready.send(());
            } else if event.contains("event: changed") {
                if let Some(places) = available_in(&event) {
                    let _ = tx.send((places, at));
                }
            }
        }
    }
    Ok(())
}

/// The first `"available":N` of an event's data.
fn available_in(event: &str) -> Option<usize> {
    let rest = &event[event.find("\"available\":")? + "\"available\":".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

pub fn print(r: &PushReport) {
    println!("push: commit -> event delivered (availability stream)");
    for f in &r.fan_out {
        println!(
            "  {:>6} listeners, {} rounds: hold sent -> event received p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (hold answered p50 {:.1} ms); {} streams opened in {:.1} s",
            f.subscribers,
            f.rounds,
            f.hold_to_event.p50_ms,
            f.hold_to_event.p99_ms,
            f.hold_to_event.max_ms,
            f.hold_answer.p50_ms,
            f.subscribers,
            f.connect_s
        );
    }
}
