//! Counters are never queued: on a day sold online only through a waiting
//! room (here one that has not even opened), the web's holds are refused
//! without a pass while the museum's own till sells from its lease and the
//! sale reaches the server as always.

mod common;

use common::*;
use tessera_server::testkit::{slot, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_sells_a_waiting_rooms_day_while_the_web_waits() {
    let dir = tempfile::tempdir().expect("dir");
    let day = tessera_server::testkit::test_day();
    let path = dir.path().join("room.toml");
    std::fs::write(
        &path,
        format!(
            "[[waiting_rooms]]\nid = \"today\"\nname = \"Today\"\nfrom = \"{day}\"\nuntil = \"{day}\"\nopens_at = \"2099-01-01T10:00\"\n"
        ),
    )
    .expect("config");
    let server = ServerProcess::start_at("11:05", &["--config", &path.display().to_string()]);
    let s = slot(server.day, "14:00");

    // The web: refused, with the reason, nothing held.
    let (status, body) = server
        .api()
        .hold(
            "web-1",
            s,
            serde_json::json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await
        .expect("hold");
    assert_eq!(status.as_u16(), 403, "{body}");
    assert_eq!(body["error"]["code"], "queue_required", "{body}");

    // The counter: leased, sells, uploads.
    let c = counter(&server, "Counter 1").await;
    assert!(
        lease_left(&c.t, s) > 0,
        "the counter got a lease on the room's day"
    );
    let done =
        c.t.sell(cash_sale(s, &[("adult", 2)], 3000))
            .await
            .expect("the till sells");
    assert_eq!(done.sale.terminal_seq, 1);
    let summary = c.t.sync_now().await.expect("sync");
    assert_eq!(summary.acked_seq, 1, "the sale reached the server");
    assert_eq!(
        server_count(&server, "SELECT COUNT(*) FROM sales"),
        1,
        "stored once"
    );
}
