//! An offline counter sells exactly its lease and not one place more; back
//! online, every sale reaches the server once, in an unbroken sequence.

mod common;

use common::*;
use tessera_server::testkit::{slot, ServerProcess};
use tessera_terminal::TerminalError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_counter_sells_exactly_its_lease() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter 1").await;
    let s = slot(server.day, "14:00");
    let lease = lease_left(&c.t, s);
    assert!(lease > 0, "the first sync granted a lease for 14:00");

    server.kill();
    let mut sold: u64 = 0;
    let refusal = loop {
        match c.t.sell(cash_sale(s, &[("adult", 1)], 1500)).await {
            Ok(done) => {
                sold += 1;
                assert_eq!(done.sale.terminal_seq, sold);
            }
            Err(e) => break e,
        }
        assert!(sold <= u64::from(lease), "sold beyond the lease");
    };
    assert_eq!(
        sold,
        u64::from(lease),
        "every leased place was sold offline"
    );
    assert!(
        matches!(
            refusal,
            TerminalError::NotEnoughPlaces {
                left: 0,
                requested: 1,
                ..
            }
        ),
        "{refusal:?}"
    );
    assert_eq!(
        refusal.to_string(),
        "only 0 places left on this counter for 14:00; 1 requested"
    );
    let status = c.t.status().unwrap();
    assert!(!status.online);
    assert_eq!(status.pending_sales, lease);

    server.restart();
    let summary = c.t.sync_now().await.expect("sync after reconnect");
    assert_eq!(summary.acked_seq, u64::from(lease));
    assert_eq!(summary.pending_sales, 0);
    // Once, and contiguous: seqs 1..=lease, nothing else.
    let [count, min, max, distinct] = server.numbers(
        "SELECT COUNT(*), MIN(terminal_seq), MAX(terminal_seq), COUNT(DISTINCT terminal_seq) FROM sales",
    );
    assert_eq!(
        (count, min, max, distinct),
        (i64::from(lease), 1, i64::from(lease), i64::from(lease))
    );
    let acked: i64 = server_count(&server, "SELECT acked_seq FROM device_sync");
    assert_eq!(acked, i64::from(lease));
    // Syncing again changes nothing.
    c.t.sync_now().await.unwrap();
    assert_eq!(
        server_count(&server, "SELECT COUNT(*) FROM sales"),
        i64::from(lease)
    );
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM tickets WHERE channel = 'counter'"
        ),
        i64::from(lease)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_counter_gets_more_places_when_its_lease_runs_out() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter 1").await;
    let s = slot(server.day, "15:00");
    let lease = lease_left(&c.t, s);
    // A school group bigger than the lease: the counter asks for the rest.
    let group = lease + 5;
    let done =
        c.t.sell(card_sale(s, &[("reduced", group)]))
            .await
            .expect("refilled and sold");
    assert_eq!(done.sale.admissions, group);
    c.t.sync_now().await.unwrap();
    assert_eq!(
        server_count(&server, "SELECT COALESCE(SUM(admissions), 0) FROM sales"),
        i64::from(group)
    );
}
