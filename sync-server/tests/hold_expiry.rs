//! An abandoned checkout gives its places back.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tessera_server::testkit::{slot, ServerProcess};

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

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        api.available(s).await,
        120,
        "read-time check: expired places are free again"
    );

    let (status, body) = api
        .confirm("too-late", hold["hold_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["error"]["code"], "hold_expired");

    // The background sweep also records it, so the database agrees.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status_text, orders): (String, u32) = server
        .db()
        .query_row(
            "SELECT status, (SELECT COUNT(*) FROM orders) FROM holds WHERE hold_id = ?1",
            [hold["hold_id"].as_str().unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((status_text.as_str(), orders), ("expired", 0));
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
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let status_text: String = server
        .db()
        .query_row(
            "SELECT status FROM holds WHERE hold_id = ?1",
            [hold["hold_id"].as_str().unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status_text, "expired");
}
