//! Online visitors and three counters sell one slot to the end: together they
//! sell exactly its capacity, never more, and at sell-out no place is left
//! stranded in a counter's lease.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use tessera_server::testkit::{slot, ServerProcess};
use tessera_terminal::TerminalError;

const CAPACITY: i64 = 400;
/// Consecutive refusals after which a seller believes the slot is sold out.
const GIVE_UP: u32 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_and_three_counters_sell_a_slot_to_exactly_its_capacity() {
    // Counters here sync every 100 ms instead of 2 s, to keep the test short.
    std::env::set_var("TESSERA_SYNC_INTERVAL_MS", "100");
    let server = ServerProcess::start_at("11:05", &[]);
    let s = slot(server.day, "15:30");
    let out = server.admin(&[
        "capacity",
        "--slot",
        &s.to_string(),
        "--set",
        &CAPACITY.to_string(),
    ]);
    assert!(out.status.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut counters = Vec::new();
    for i in 1..=3 {
        counters.push(counter(&server, &format!("Counter {i}")).await);
    }
    let loops: Vec<_> = counters.iter().map(|c| c.t.spawn_sync_loop()).collect();
    let counter_sold = Arc::new(AtomicU32::new(0));
    let online_sold = Arc::new(AtomicU32::new(0));

    let mut tasks = Vec::new();
    for c in &counters {
        let t = c.t.clone();
        let sold = counter_sold.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            while refused < GIVE_UP {
                match t.sell(card_sale(s, &[("adult", 1)])).await {
                    Ok(done) => {
                        sold.fetch_add(done.sale.admissions, Ordering::Relaxed);
                        refused = 0;
                    }
                    Err(TerminalError::NotEnoughPlaces { .. }) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    Err(e) => panic!("counter: {e}"),
                }
            }
        }));
    }
    for v in 0..12 {
        let api = server.api();
        let sold = online_sold.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            let mut i = 0;
            while refused < GIVE_UP {
                i += 1;
                let n = if refused > 0 { 1 } else { 1 + (i % 2) };
                let (status, body) = api
                    .buy(
                        &format!("v{v}-{i}"),
                        s,
                        json!([{"product_id": "adult", "quantity": n}]),
                    )
                    .await
                    .unwrap();
                match status {
                    StatusCode::CREATED => {
                        sold.fetch_add(n, Ordering::Relaxed);
                        refused = 0;
                    }
                    StatusCode::CONFLICT => {
                        assert_eq!(body["error"]["code"], "sold_out");
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    other => panic!("online: {other} {body}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for l in loops {
        l.abort();
    }
    for c in &counters {
        c.t.sync_now().await.unwrap();
    }

    let counter_sold = i64::from(counter_sold.load(Ordering::Relaxed));
    let online_sold = i64::from(online_sold.load(Ordering::Relaxed));
    assert!(
        counter_sold > 0 && online_sold > 0,
        "both channels sold: {counter_sold} / {online_sold}"
    );
    assert_eq!(
        counter_sold + online_sold,
        CAPACITY,
        "exactly the capacity was sold"
    );

    let [db_online, db_counter] = server.numbers(&format!(
        "SELECT sold_online, (SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE slot_id = '{s}') FROM slots WHERE slot_id = '{s}'"
    ));
    assert_eq!(
        (db_online, db_counter),
        (online_sold, counter_sold),
        "the server's books agree"
    );
    let stranded: u32 = counters.iter().map(|c| lease_left(&c.t, s)).sum();
    assert!(
        i64::from(stranded) * 100 <= CAPACITY,
        "stranded {stranded} > 1 %"
    );
    assert_eq!(server.api().available(s).await, 0);
}
