//! A gate whose clock runs 90 s fast, offline behind a cut cable, admits a
//! visitor; a gate with a right clock, cut off later, admits the same ticket
//! again. The server keeps what each gate said beside what it knows, never
//! records an admission in its own future, and names the gate that really
//! came first.

use std::net::SocketAddr;

use tessera_core::admission::DenyReason;
use tessera_core::api::gate::RedeemResult;
use tessera_core::clock::Clock;
use tessera_loadtest::proxy::{CutMode, Proxy};
use tessera_server::testkit::{slot, ServerProcess};
use tessera_terminal::Terminal;

struct Gate {
    _dir: tempfile::TempDir,
    t: Terminal,
}

async fn gate(server: &ServerProcess, url: &str, name: &str, clock_ahead_secs: i64) -> Gate {
    let dir = tempfile::tempdir().expect("temp dir");
    let code = server.enrolment_code("gate", name);
    let clock = Clock::with_offset_secs(server.offset_secs + clock_ahead_secs);
    let t = Terminal::enrol_with_clock(dir.path(), url, &code, name, clock)
        .await
        .expect("enrol gate");
    Gate { _dir: dir, t }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_gate_clock_is_read_in_server_time_and_the_first_gate_is_named_first() {
    let server = ServerProcess::start_at("11:05", &[]);
    let upstream: SocketAddr = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let fast_cable = Proxy::start(upstream).await.unwrap();
    let right_cable = Proxy::start(upstream).await.unwrap();
    let fast = gate(&server, &fast_cable.url(), "Fast gate", 90).await;
    let right = gate(&server, &right_cable.url(), "Right gate", 0).await;
    let south = gate(&server, &server.url, "South gate", 0).await;

    let (status, order) = server
        .api()
        .buy(
            "one",
            slot(server.day, "11:00"),
            serde_json::json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED, "{order}");
    let code = order["tickets"][0]["code"].as_str().unwrap().to_string();

    // The fast gate admits the visitor offline, 90 s ahead by its clock.
    fast_cable.cut(CutMode::Refuse);
    let first = fast.t.scan(&code).await.unwrap();
    assert_eq!(first.result, RedeemResult::Admitted, "{first:?}");
    assert!(first.offline);

    // It uploads; then the other gate, cut off, admits the ticket again.
    right_cable.cut(CutMode::Refuse);
    fast_cable.heal();
    fast.t.sync_now().await.unwrap();
    let [at, device_at, received_at] = server.numbers(
        "SELECT scanned_at, device_at, received_at FROM scans WHERE gate_name = 'Fast gate'",
    );
    assert!(
        at <= received_at,
        "stored in the server's future: {at} > {received_at}"
    );
    assert!(
        device_at - at >= 85_000,
        "the gate's own time is kept: {device_at} vs {at}"
    );

    let second = right.t.scan(&code).await.unwrap();
    assert_eq!(
        second.result,
        RedeemResult::Admitted,
        "offline, it cannot know"
    );
    assert!(second.offline);
    right_cable.heal();
    right.t.sync_now().await.unwrap();

    assert_eq!(
        server.query_row("SELECT first_gate, second_gate FROM gate_conflicts"),
        ["Fast gate", "Right gate"]
    );
    let [first_at, second_at, first_device_at] =
        server.numbers("SELECT first_at, second_at, first_device_at FROM gate_conflicts");
    assert!(first_at < second_at);
    assert_eq!(first_device_at, device_at);

    // A third gate, online, is told who was first, at a time that has passed.
    let third = south.t.scan(&code).await.unwrap();
    assert_eq!(third.reason, Some(DenyReason::AlreadyUsed), "{third:?}");
    assert_eq!(third.first_used_by.as_deref(), Some("Fast gate"));
    let server_now = Clock::with_offset_secs(server.offset_secs).now();
    assert!(third.first_used_at.unwrap() <= server_now, "{third:?}");
}
