//! An abandoned checkout gives its places back.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tessera_server::testkit::{slot, wait_for, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_returns_its_capacity_and_cannot_be_confirmed() {
    let server = ServerProcess::start_at("11:05", &["--hold-ttl-secs", "1"]);
    let api = server.api();
    let s = slot(server.day, "12:00");
    let (status, hold) = api
        .hold(
            "slow-visitor",
            s,
            json!([{"product_id": "adult", "quantity": 4}]),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert_eq!(api.available(s).await, 116);

    // Free again once the hold's second is up: SQLite checks expiry as it
    // reads, PostgreSQL's processes once a sweep has released it (within
    // about a second more); never earlier than the expiry.
    wait_for(
        "the expired hold's places to be free",
        Duration::from_secs(15),
        || async { (api.available(s).await == 120).then_some(()) },
    )
    .await;

    let (status, body) = api
        .confirm("too-late", hold["hold_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["error"]["code"], "hold_expired");

    // The background sweep also records it, so the database agrees.
    let hold_id = hold["hold_id"].as_str().unwrap();
    server
        .wait_count(
            "the sweep to mark the hold expired",
            &format!(
                "SELECT COUNT(*) FROM holds WHERE hold_id = '{hold_id}' AND status = 'expired'"
            ),
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(server.count("SELECT COUNT(*) FROM orders"), 0);
    assert_eq!(api.available(s).await, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_is_swept_without_any_request() {
    let server = ServerProcess::start_at("11:05", &["--hold-ttl-secs", "1"]);
    let api = server.api();
    let s = slot(server.day, "12:30");
    let (status, hold) = api
        .hold(
            "walk-away",
            s,
            json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let hold_id = hold["hold_id"].as_str().unwrap();
    server
        .wait_count(
            "the sweep to mark the hold expired",
            &format!(
                "SELECT COUNT(*) FROM holds WHERE hold_id = '{hold_id}' AND status = 'expired'"
            ),
            1,
            Duration::from_secs(10),
        )
        .await;
}
