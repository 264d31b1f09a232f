//! `drain`: a counter cut off from the server sells N sales from its lease
//! (each a durable local transaction), then its network comes back: how long
//! until the server has them all (the outbox uploads in rounds of 500).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::client::{card_sale, enrol_counter, lease_left};
use crate::proxy::{CutMode, Proxy};
use crate::server::{Server, ServerOptions};
use crate::stats::{Samples, Summary};

#[derive(Clone, Debug)]
pub struct DrainOptions {
    pub sales: usize,
    pub server_bin: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct DrainReport {
    pub scenario: &'static str,
    pub sales: usize,
    /// Selling offline: one local durable transaction per sale.
    pub offline_sale: Summary,
    pub offline_sales_per_sec: f64,
    pub pending_before: u32,
    /// Seconds from reconnect to the last sale acknowledged.
    pub drain_s: f64,
    pub drained_sales_per_sec: f64,
    pub server_sales: u64,
    pub target_drain_s_for_10000: f64,
}

pub async fn run(opts: &DrainOptions) -> Result<DrainReport> {
    let n = opts.sales.max(1);
    let mut options = ServerOptions::new(opts.server_bin.clone());
    // One generous lease, so a single counter can hold N places.
    options.config_toml = Some(format!(
        "[leases]\nshare_divisor = 1\nmax_lease = {}\n",
        n + 1000
    ));
    let server = Server::start(options)?;
    let slot = server.slot("15:30");
    server.set_capacity(slot, (2 * n + 200) as u32)?;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let upstream = format!("127.0.0.1:{}", server.port).parse()?;
    let proxy = Proxy::start(upstream).await?;
    let c = enrol_counter(&server, &proxy.url(), "Drain counter").await?;
    for _ in 0..5 {
        if lease_left(&c.t, slot) as usize >= n {
            break;
        }
        c.t.sync_now().await.context("sync for a lease")?;
    }
    let left = lease_left(&c.t, slot) as usize;
    if left < n {
        bail!("the counter's lease holds {left} places, {n} needed");
    }

    proxy.cut(CutMode::Refuse);
    eprintln!("drain: selling {n} sales offline …");
    let mut lat = Samples::default();
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        c.t.sell(card_sale(slot, 1))
            .await
            .map_err(|e| anyhow::anyhow!("offline sale: {e}"))?;
        lat.push(t.elapsed());
    }
    let offline_rate = n as f64 / start.elapsed().as_secs_f64();
    let pending_before =
        c.t.status()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .pending_sales;

    eprintln!("drain: reconnecting and uploading {pending_before} sales …");
    proxy.heal();
    let start = Instant::now();
    loop {
        match c.t.sync_now().await {
            Ok(s) if s.pending_sales == 0 => break,
            Ok(_) => {}
            Err(e) if start.elapsed() > Duration::from_secs(300) => bail!("drain stuck: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let drain = start.elapsed().as_secs_f64();
    let server_sales: u64 = server.read_db()?.query_row(
        "SELECT COUNT(*) FROM sales WHERE device_id = ?1",
        [c.t.device_id().to_string()],
        |r| r.get(0),
    )?;
    Ok(DrainReport {
        scenario: "drain",
        sales: n,
        offline_sale: lat.summary(),
        offline_sales_per_sec: offline_rate,
        pending_before,
        drain_s: drain,
        drained_sales_per_sec: n as f64 / drain.max(1e-6),
        server_sales,
        target_drain_s_for_10000: 5.0,
    })
}

pub fn print(r: &DrainReport) {
    println!("== drain: {} sales queued offline at one counter", r.sales);
    println!(
        "   selling offline             {:.0} sales/s, {}",
        r.offline_sales_per_sec,
        r.offline_sale.line()
    );
    println!(
        "   upload after reconnect      {:.2} s for {} sales ({:.0} sales/s); server has {}",
        r.drain_s, r.pending_before, r.drained_sales_per_sec, r.server_sales
    );
    println!(
        "-- target: 10,000 queued sales drain in <= {:.0} s",
        r.target_drain_s_for_10000
    );
}

pub fn violations(r: &DrainReport) -> Vec<String> {
    if r.server_sales as usize != r.sales {
        vec![format!(
            "{} sales queued, the server has {}",
            r.sales, r.server_sales
        )]
    } else {
        vec![]
    }
}
