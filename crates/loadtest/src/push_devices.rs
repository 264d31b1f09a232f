//! `push-devices`: how fast the server's device channel makes counters and
//! gates act.
//!
//! 1. Eight counters with their sync loops and push channels running; an
//!    online order for one of today's times; from the order's confirmation
//!    to each counter engine's own figure of places left for that time
//!    having dropped (its `slots_today`, what the screen shows), one sample
//!    per counter per order.
//! 2. A counter voids a sale; from the void's answer to the gate engine
//!    refusing the ticket as voided on its own (`check_locally`: what an
//!    online gate decides before asking the server, and all an offline one
//!    has), one sample per void.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tessera_core::admission::DenyReason;
use tessera_core::slot::SlotId;
use tessera_terminal::Terminal;
use tokio::task::JoinSet;

use crate::client::{card_sale, enrol_counter, enrol_gate, http_client, Counter, Shop};
use crate::server::{Server, ServerOptions};
use crate::stats::{Samples, Summary};

#[derive(Clone, Debug)]
pub struct DeviceOptions {
    pub counters: usize,
    pub orders: usize,
    pub voids: usize,
    pub server: ServerOptions,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceReport {
    pub scenario: &'static str,
    pub counters: usize,
    pub orders: usize,
    /// Order confirmed -> each counter engine's places left updated.
    pub order_to_counter_view: Summary,
    pub voids: usize,
    /// Void answered at the counter -> the gate refuses the ticket itself.
    pub void_to_gate_refusal: Summary,
}

/// Waits for a state, checking it each time the engine reports a change
/// (and every 50 ms in case a report was missed).
async fn until_engine(t: &Terminal, limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let mut changes = t.changes();
    let end = Instant::now() + limit;
    while !check() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), changes.recv()).await;
    }
    true
}

fn remaining(t: &Terminal, slot: SlotId) -> Option<u32> {
    t.slots_today()
        .ok()?
        .into_iter()
        .find(|s| s.slot_id == slot)
        .map(|s| s.remaining)
}

pub async fn run(opts: &DeviceOptions) -> Result<DeviceReport> {
    let server = Server::start(opts.server.clone())?;
    let slot = server.slot("16:00");
    let mut counters: Vec<Counter> = Vec::new();
    for i in 1..=opts.counters.max(1) {
        counters.push(enrol_counter(&server, &server.url, &format!("Counter {i}")).await?);
    }
    let gate = enrol_gate(&server, &server.url, "North gate").await?;
    let mut loops = Vec::new();
    for t in counters.iter().map(|c| &c.t).chain([&gate.t]) {
        loops.push(t.spawn_sync_loop());
    }
    for t in counters.iter().map(|c| &c.t).chain([&gate.t]) {
        if !until_engine(t, Duration::from_secs(60), || t.push_live()).await {
            bail!("{}: the device channel did not connect", t.name());
        }
    }
    // Every counter knows the slot before the first order.
    for c in &counters {
        if !until_engine(&c.t, Duration::from_secs(60), || {
            remaining(&c.t, slot).is_some()
        })
        .await
        {
            bail!("{} never learnt the {slot} slot", c.t.name());
        }
    }

    let shop = Shop::new(http_client(4)?, &server.url).with_channel(&server.channel_token);
    let mut to_view = Samples::default();
    for order in 1..=opts.orders {
        let before: Vec<u32> = counters
            .iter()
            .map(|c| remaining(&c.t, slot).unwrap_or(0))
            .collect();
        shop.buy(&format!("push-devices-{order}"), slot, 2)
            .await
            .with_context(|| format!("online order {order}"))?;
        let confirmed = Instant::now();
        let mut waits = JoinSet::new();
        for (c, before) in counters.iter().zip(before) {
            let t = c.t.clone();
            waits.spawn(async move {
                let ok = until_engine(&t, Duration::from_secs(60), || {
                    remaining(&t, slot).is_some_and(|r| r + 2 <= before)
                })
                .await;
                (ok, confirmed.elapsed(), t.name().to_string())
            });
        }
        while let Some(done) = waits.join_next().await {
            let (ok, took, name) = done?;
            if !ok {
                bail!("order {order}: {name} never showed it");
            }
            to_view.push(took);
        }
    }

    let seller = &counters[0].t;
    let mut to_gate = Samples::default();
    for void in 1..=opts.voids {
        let sale = seller
            .sell(card_sale(slot, 1))
            .await
            .with_context(|| format!("sale {void}"))?
            .sale;
        if !until_engine(seller, Duration::from_secs(60), || {
            seller.status().is_ok_and(|s| s.pending_sales == 0)
        })
        .await
        {
            bail!("sale {void} never uploaded");
        }
        seller
            .void(sale.sale_id, "9999", "benchmark")
            .await
            .with_context(|| format!("void {void}"))?;
        let voided = Instant::now();
        let code = &sale.tickets[0].code;
        if !until_engine(&gate.t, Duration::from_secs(60), || {
            matches!(gate.t.check_locally(code), Ok(Some(DenyReason::Voided)))
        })
        .await
        {
            bail!("void {void}: the gate never refused the ticket");
        }
        to_gate.push(voided.elapsed());
    }
    for l in loops {
        l.abort();
    }
    Ok(DeviceReport {
        scenario: "push-devices",
        counters: counters.len(),
        orders: opts.orders,
        order_to_counter_view: to_view.summary(),
        voids: opts.voids,
        void_to_gate_refusal: to_gate.summary(),
    })
}

pub fn print(r: &DeviceReport) {
    println!("push-devices: the device channel at work");
    println!(
        "  online order -> each of {} counter engines' places left: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
        r.counters,
        r.order_to_counter_view.p50_ms,
        r.order_to_counter_view.p99_ms,
        r.order_to_counter_view.max_ms,
        r.order_to_counter_view.count
    );
    println!(
        "  void at a counter -> the gate refuses it itself: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} voids)",
        r.void_to_gate_refusal.p50_ms,
        r.void_to_gate_refusal.p99_ms,
        r.void_to_gate_refusal.max_ms,
        r.voids
    );
}
