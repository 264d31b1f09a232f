//! Shared setup: a real server process and real terminals, each with its own
//! data directory (its own SQLite file), on the server's shifted clock.

#![allow(dead_code)]

use tessera_core::clock::Clock;
use tessera_core::pricing::CartLine;
use tessera_core::slot::SlotId;
use tessera_server::testkit::ServerProcess;
use tessera_terminal::views::{PaymentRequest, SaleRequest};
use tessera_terminal::Terminal;

pub struct Counter {
    pub dir: tempfile::TempDir,
    pub t: Terminal,
}

pub fn clock(server: &ServerProcess) -> Clock {
    Clock::with_offset_secs(server.offset_secs)
}

/// Enrols a counter and opens Camille's shift with a 200.00 float.
pub async fn counter(server: &ServerProcess, name: &str) -> Counter {
    let dir = tempfile::tempdir().expect("temp dir");
    let code = server.enrolment_code("counter", name);
    let t = Terminal::enrol_with_clock(dir.path(), &server.url, &code, name, clock(server))
        .await
        .expect("enrol");
    t.open_shift("1111", 20_000).expect("open shift");
    Counter { dir, t }
}

pub fn items(list: &[(&str, u32)]) -> Vec<CartLine> {
    list.iter()
        .map(|(p, q)| CartLine {
            product_id: p.to_string(),
            quantity: *q,
            membership_numbers: vec![],
        })
        .collect()
}

pub fn cash_sale(slot: SlotId, list: &[(&str, u32)], tendered: i64) -> SaleRequest {
    SaleRequest {
        slot_id: slot,
        items: items(list),
        payment: PaymentRequest::Cash { tendered },
    }
}

pub fn card_sale(slot: SlotId, list: &[(&str, u32)]) -> SaleRequest {
    SaleRequest {
        slot_id: slot,
        items: items(list),
        payment: PaymentRequest::Card,
    }
}

pub fn lease_left(t: &Terminal, slot: SlotId) -> u32 {
    t.slots_today()
        .expect("slots")
        .into_iter()
        .find(|s| s.slot_id == slot)
        .map(|s| s.lease_left)
        .unwrap_or(0)
}

/// Counts in the server's database (either backend).
pub fn server_count(server: &ServerProcess, sql: &str) -> i64 {
    server.count(sql)
}

/// The device token, read from the terminal's own database (tests only: it
/// is never printed or logged by the terminal).
pub fn token_of(c: &Counter) -> String {
    let conn = rusqlite::Connection::open(c.dir.path().join("terminal.db")).expect("terminal db");
    let json: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| {
            r.get(0)
        })
        .expect("identity");
    let v: serde_json::Value = serde_json::from_str(&json).expect("identity json");
    v["token"].as_str().expect("token").to_string()
}

/// A snapshot of everything a sync can change on the server.
pub fn server_books(server: &ServerProcess) -> Vec<i64> {
    [
        "SELECT COUNT(*) FROM sales",
        "SELECT COALESCE(SUM(admissions), 0) FROM sales",
        "SELECT COUNT(*) FROM tickets",
        "SELECT COUNT(*) FROM counter_voids",
        "SELECT COALESCE(SUM(granted_total), 0) FROM leases",
        "SELECT COALESCE(SUM(released_total), 0) FROM leases",
        "SELECT COALESCE(SUM(sold), 0) FROM leases",
        "SELECT COUNT(*) FROM leases",
        "SELECT COUNT(*) FROM shifts",
        "SELECT COALESCE(SUM(acked_seq), 0) FROM device_sync",
    ]
    .iter()
    .map(|q| server_count(server, q))
    .collect()
}

/// Enrols a gate (it syncs keys and the catalogue at once).
pub async fn gate(server: &ServerProcess, name: &str) -> Counter {
    let dir = tempfile::tempdir().expect("temp dir");
    let code = server.enrolment_code("gate", name);
    let t = Terminal::enrol_with_clock(dir.path(), &server.url, &code, name, clock(server))
        .await
        .expect("enrol gate");
    Counter { dir, t }
}

/// Buys tickets online; returns their codes.
pub async fn buy_online(server: &ServerProcess, key: &str, slot: SlotId, n: u32) -> Vec<String> {
    let (status, order) = server
        .api()
        .buy(
            key,
            slot,
            serde_json::json!([{"product_id": "adult", "quantity": n}]),
        )
        .await
        .expect("buy");
    assert_eq!(status, reqwest::StatusCode::CREATED, "{order}");
    order["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(|t| t["code"].as_str().expect("code").to_string())
        .collect()
}

/// A finished command's success and everything it printed (stdout, then
/// stderr), for asserting on what an operator would read.
pub fn outcome(out: &std::process::Output) -> (bool, String) {
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Posts a sync body as the device with `token` would, bypassing the engine
/// (to replay, split or tamper with what a counter sends).
pub async fn post_sync(
    server: &ServerProcess,
    token: &str,
    body: &tessera_core::api::sync::SyncRequest,
) -> (reqwest::StatusCode, serde_json::Value) {
    let json = serde_json::to_string(body).expect("a sync body serialises");
    server
        .api()
        .post_raw(
            "/v1/sync",
            &[("authorization", &format!("Bearer {token}"))],
            &json,
        )
        .await
        .expect("the server answered")
}
