//! The operator changes a slot's capacity, also while the server runs.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tessera_server::testkit::{slot, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_changes_reach_the_running_server_and_never_go_below_what_is_sold() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let s = slot(server.day, "15:30");
    let (status, _) = api
        .buy("a", s, json!([{"product_id": "family", "quantity": 2}]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api
        .hold("b", s, json!([{"product_id": "adult", "quantity": 2}]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);

    let refused = server.admin(&["capacity", "--slot", &s.to_string(), "--set", "5"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("10 places are taken"), "{err}");
    assert!(
        err.contains("8 sold online") && err.contains("2 held"),
        "{err}"
    );
    assert_eq!(
        api.available(s).await,
        110,
        "a refused change changes nothing"
    );

    let ok = server.admin(&["capacity", "--slot", &s.to_string(), "--set", "60"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let mut seen = 0;
    for _ in 0..50 {
        seen = api.available(s).await;
        if seen == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, 50, "the running server picked up the new capacity");

    let bad_slot = server.admin(&["capacity", "--slot", "someday", "--set", "60"]);
    assert!(!bad_slot.status.success());
    assert_eq!(
        server.count("SELECT COUNT(*) FROM audit_log WHERE action = 'capacity'"),
        1
    );
}
