//! The server is SIGKILLed and restarted while counters keep selling: nothing
//! is lost, nothing is duplicated.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use tessera_server::testkit::{slot, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_keep_selling_through_server_kills() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let counters = [
        counter(&server, "Counter 1").await,
        counter(&server, "Counter 2").await,
    ];
    let slots = [
        slot(server.day, "13:00"),
        slot(server.day, "13:30"),
        slot(server.day, "14:00"),
    ];

    let mut sold_locally = vec![0u32; counters.len()];
    for round in 0..6 {
        if round == 2 || round == 4 {
            server.kill();
        }
        if round == 3 || round == 5 {
            server.restart();
        }
        for (i, c) in counters.iter().enumerate() {
            for s in &slots {
                // Online or not, the counter sells what its lease allows.
                if let Ok(done) = c.t.sell(card_sale(*s, &[("adult", 1)])).await {
                    sold_locally[i] += done.sale.admissions;
                }
            }
            let _ = c.t.sync_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in &counters {
        let summary = c.t.sync_now().await.expect("final sync");
        assert_eq!(summary.pending_sales, 0);
    }
    assert!(
        sold_locally.iter().all(|n| *n > 6),
        "counters sold throughout: {sold_locally:?}"
    );

    for (i, c) in counters.iter().enumerate() {
        let local = c.t.sales_today().unwrap();
        let device = c.t.device_id();
        let [count, admissions, max_seq, acked] = server.numbers(&format!(
            "SELECT COUNT(*), COALESCE(SUM(admissions), 0), COALESCE(MAX(terminal_seq), 0),
                    (SELECT acked_seq FROM device_sync WHERE device_id = '{device}')
             FROM sales WHERE device_id = '{device}'"
        ));
        assert_eq!(count as usize, local.len(), "counter {i}: every sale once");
        assert_eq!(admissions, i64::from(sold_locally[i]));
        assert_eq!(
            (max_seq, acked),
            (count, count),
            "counter {i}: seq 1..=n, contiguous"
        );
        let server_ids: HashSet<String> = server
            .query(&format!(
                "SELECT sale_id FROM sales WHERE device_id = '{device}'"
            ))
            .into_iter()
            .map(|mut row| row.remove(0))
            .collect();
        let local_ids: HashSet<String> = local.iter().map(|s| s.sale_id.to_string()).collect();
        assert_eq!(server_ids, local_ids);
    }
    let tickets = server_count(&server, "SELECT COUNT(*) FROM tickets");
    let distinct = server_count(&server, "SELECT COUNT(DISTINCT ticket_id) FROM tickets");
    assert_eq!(tickets, distinct);
    // The invariant held throughout: nothing oversold.
    for s in &slots {
        let [capacity, online, counter] = server.numbers(&format!(
            "SELECT capacity, sold_online, (SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE slot_id = '{s}') FROM slots WHERE slot_id = '{s}'"
        ));
        assert!(online + counter <= capacity);
    }
}
