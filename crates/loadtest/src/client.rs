//! What the scenarios drive: an online shop client over the public API
//! (hold + confirm with Idempotency-Key), and counter terminals enrolled
//! against a server (directly or through a proxy).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::Client;
use serde::Deserialize;
use tessera_core::clock::Clock;
use tessera_core::pricing::CartLine;
use tessera_core::slot::SlotId;
use tessera_terminal::views::{PaymentRequest, SaleRequest};
use tessera_terminal::Terminal;

use crate::server::Server;

/// An HTTP/1.1 client whose keep-alive pool holds one connection per
/// concurrent caller.
pub fn http_client(pool: usize) -> Result<Client> {
    Client::builder()
        .pool_max_idle_per_host(pool.max(1))
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .context("HTTP client")
}

/// A raw answer: status and body bytes.
pub type Raw = (u16, Vec<u8>);

#[derive(Deserialize)]
pub struct HoldAnswer {
    pub hold_id: String,
}

#[derive(Deserialize)]
pub struct OrderAnswer {
    pub order_id: String,
    pub hold_id: String,
    pub tickets: Vec<TicketAnswer>,
}

#[derive(Deserialize)]
pub struct TicketAnswer {
    pub ticket_id: String,
    pub code: String,
}

/// The public booking API, as a web shop calls it.
#[derive(Clone)]
pub struct Shop {
    pub http: Client,
    pub base: String,
    /// A sales channel's token: `confirm` needs one.
    pub channel_token: Option<String>,
}

impl Shop {
    pub fn new(http: Client, base: &str) -> Shop {
        Shop {
            http,
            base: base.trim_end_matches('/').to_string(),
            channel_token: None,
        }
    }

    /// Confirms as the channel whose token this is.
    pub fn with_channel(mut self, token: &str) -> Shop {
        self.channel_token = Some(token.to_string());
        self
    }

    async fn post(&self, path: &str, key: &str, body: String) -> Result<Raw, reqwest::Error> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("idempotency-key", key);
        if let Some(token) = &self.channel_token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let r = request.body(body).send().await?;
        let status = r.status().as_u16();
        let bytes = r.bytes().await?;
        Ok((status, bytes.to_vec()))
    }

    pub async fn hold(
        &self,
        key: &str,
        slot: SlotId,
        product: &str,
        quantity: u32,
    ) -> Result<Raw, reqwest::Error> {
        let body = format!(
            r#"{{"slot_id":"{slot}","items":[{{"product_id":"{product}","quantity":{quantity}}}]}}"#
        );
        self.post("/v1/holds", key, body).await
    }

    pub async fn confirm(&self, key: &str, hold_id: &str) -> Result<Raw, reqwest::Error> {
        let body = format!(r#"{{"payment_reference":"psp-{key}"}}"#);
        self.post(&format!("/v1/holds/{hold_id}/confirm"), key, body)
            .await
    }

    /// Places bookable in `slot` now.
    pub async fn available(&self, slot: SlotId) -> Result<u32> {
        Ok(self.slot_figure(slot, "available").await? as u32)
    }

    /// `sold` of the slot as the availability view reports it (the CRDT tallies).
    pub async fn tallied_sold(&self, slot: SlotId) -> Result<u64> {
        self.slot_figure(slot, "sold").await
    }

    /// One number of one slot from `GET /v1/availability`.
    async fn slot_figure(&self, slot: SlotId, field: &str) -> Result<u64> {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/v1/availability?date={}", self.base, slot.date))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let slot_id = slot.to_string();
        v["slots"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["slot_id"] == slot_id.as_str()))
            .and_then(|s| s[field].as_u64())
            .with_context(|| format!("slot {slot} not in the availability answer"))
    }

    /// Hold and confirm, retrying each step on network trouble with the same
    /// key; the order's ticket codes.
    pub async fn buy(&self, key: &str, slot: SlotId, quantity: u32) -> Result<OrderAnswer> {
        let hkey = format!("{key}-h");
        let (status, body) = retry(|| self.hold(&hkey, slot, "adult", quantity))
            .await
            .context("hold")?;
        anyhow::ensure!(
            status == 201,
            "hold answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let hold: HoldAnswer = serde_json::from_slice(&body)?;
        let ckey = format!("{key}-c");
        let (status, body) = retry(|| self.confirm(&ckey, &hold.hold_id))
            .await
            .context("confirm")?;
        anyhow::ensure!(
            status == 201,
            "confirm answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(serde_json::from_slice(&body)?)
    }

    /// Prometheus text from `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?)
    }
}

async fn retry<F, Fut>(mut f: F) -> Result<Raw, reqwest::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Raw, reqwest::Error>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match f().await {
            Ok((s, b)) if s < 500 || tries >= 10 => return Ok((s, b)),
            Ok(_) => {}
            Err(e) if tries >= 10 => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50 * tries)).await;
    }
}

/// A counter terminal with its own data directory.
pub struct Counter {
    pub dir: tempfile::TempDir,
    pub t: Terminal,
}

/// Enrols a counter against `url` (the server, or a proxy in front of it)
/// and opens a cashier's shift.
pub async fn enrol_counter(server: &Server, url: &str, name: &str) -> Result<Counter> {
    let code = server.enrolment_code("counter", name)?;
    enrol_counter_with(url, &code, name, server.clock()).await
}

/// Enrols a counter against `url` with an enrolment code made elsewhere
/// (e.g. `enrol --database` on PostgreSQL), on the servers' `clock`, and
/// opens a cashier's shift.
pub async fn enrol_counter_with(
    url: &str,
    code: &str,
    name: &str,
    clock: Clock,
) -> Result<Counter> {
    let dir = tempfile::Builder::new()
        .prefix("tessera-counter-")
        .tempdir()?;
    let t = Terminal::enrol_with_clock(dir.path(), url, code, name, clock)
        .await
        .with_context(|| format!("enrolling {name}"))?;
    t.open_shift("1111", 20_000)
        .with_context(|| format!("opening a shift at {name}"))?;
    Ok(Counter { dir, t })
}

/// Enrols a gate device.
pub async fn enrol_gate(server: &Server, url: &str, name: &str) -> Result<Counter> {
    let dir = tempfile::Builder::new().prefix("tessera-gate-").tempdir()?;
    let code = server.enrolment_code("gate", name)?;
    let t = Terminal::enrol_with_clock(dir.path(), url, &code, name, server.clock())
        .await
        .with_context(|| format!("enrolling {name}"))?;
    Ok(Counter { dir, t })
}

pub fn card_sale(slot: SlotId, adults: u32) -> SaleRequest {
    SaleRequest {
        slot_id: slot,
        items: vec![CartLine {
            product_id: "adult".into(),
            quantity: adults,
            membership_numbers: vec![],
        }],
        payment: PaymentRequest::Card,
    }
}

/// Places left in this terminal's lease for `slot`.
pub fn lease_left(t: &Terminal, slot: SlotId) -> u32 {
    t.slots_today()
        .ok()
        .and_then(|v| v.into_iter().find(|s| s.slot_id == slot))
        .map(|s| s.lease_left)
        .unwrap_or(0)
}

/// The device token, read from the terminal's own database (the harness
/// replays sync bodies with it; it is never printed).
pub fn device_token(dir: &Path) -> Result<String> {
    let conn = rusqlite::Connection::open(dir.join("terminal.db"))?;
    let json: String =
        conn.query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| {
            r.get(0)
        })?;
    let v: serde_json::Value = serde_json::from_str(&json)?;
    v["token"]
        .as_str()
        .map(str::to_string)
        .context("no token in the terminal's identity")
}

/// Syncs until the terminal has nothing left to upload.
pub async fn sync_until_drained(t: &Terminal, deadline: Duration) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        match t.sync_now().await {
            Ok(s) if s.pending_sales == 0 => return Ok(()),
            Ok(_) => {}
            Err(e) if started.elapsed() > deadline => {
                return Err(anyhow::anyhow!(
                    "{} could not upload within {:?}: {e}",
                    t.name(),
                    deadline
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        if started.elapsed() > deadline {
            anyhow::bail!("{} still has sales to upload after {deadline:?}", t.name());
        }
    }
}
