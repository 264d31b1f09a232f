//! A counter dies holding a lease: a supervisor revokes it, its places go back
//! on sale; when the counter comes back, its late sale is accepted (never
//! lost) and flagged as over capacity.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use tessera_server::testkit::{slot, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_dead_counters_lease_returns_its_places_and_flags_late_sales() {
    let server = ServerProcess::start_at("11:05", &[]);
    let s = slot(server.day, "16:00");
    let dead = counter(&server, "Counter 9").await;
    let lease = lease_left(&dead.t, s);
    assert!(lease >= 2);
    let api = server.api();
    let available_before = api.available(s).await;

    // Offline, unseen by the server, the counter sells 2 places.
    let late = dead.t.sell(card_sale(s, &[("adult", 2)])).await.unwrap();

    // The supervisor gives up on it.
    let out = server.admin(&["leases", "--date", &server.day.to_string()]);
    let listing = String::from_utf8_lossy(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.contains(&s.to_string()))
        .expect("lease listed");
    assert!(line.contains("Counter 9"), "{listing}");
    let lease_id = line.split_whitespace().next().unwrap();
    let out = server.admin(&["revoke-lease", "--lease", lease_id, "--by", "Inès"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{lease} places back on sale")));

    // Within a second the running server sells those places online.
    let mut available = 0;
    for _ in 0..30 {
        available = api.available(s).await;
        if available == available_before + u64::from(lease) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(available, available_before + u64::from(lease));
    let rest = available as u32;
    let mut bought = 0;
    while bought < rest {
        let n = (rest - bought).min(20);
        let (status, body) = api
            .buy(
                &format!("sell-out-{bought}"),
                s,
                json!([{"product_id": "adult", "quantity": n}]),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        bought += n;
    }
    assert_eq!(api.available(s).await, 0);

    // The counter comes back: its sale is kept and flagged, and it learns the
    // lease is gone.
    dead.t.sync_now().await.unwrap();
    let [stored, over] = server.numbers(&format!(
        "SELECT COUNT(*), COALESCE(SUM(over_capacity), 0) FROM sales WHERE sale_id = '{}'",
        late.sale.sale_id
    ));
    assert_eq!((stored, over), (1, 2));
    assert_eq!(lease_left(&dead.t, s), 0);
    let err = dead
        .t
        .sell(card_sale(s, &[("adult", 1)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("only 0 places left"), "{err}");
    let audit = server_count(
        &server,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'revoke_lease' AND actor = 'Inès'",
    );
    assert_eq!(audit, 1);
}
