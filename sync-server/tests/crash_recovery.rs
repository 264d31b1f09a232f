//! SIGKILL during a booking burst: every order answered 201 survives, with its
//! tickets, and the inventory invariant holds after restart.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_server::testkit::{slot, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_answered_201_survive_a_kill_during_a_burst() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let slots: Vec<_> = [
        "12:00", "12:30", "13:00", "13:30", "14:00", "14:30", "15:00", "15:30", "16:00",
    ]
    .iter()
    .map(|h| slot(server.day, h))
    .collect();
    let confirmed: Arc<Mutex<Vec<Value>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut clients = Vec::new();
    for c in 0..16 {
        let api = api.clone();
        let slots = slots.clone();
        let confirmed = confirmed.clone();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let s = slots[(c + i) % slots.len()];
                let items = json!([{"product_id": "adult", "quantity": 1 + (i % 2)}]);
                match api.buy(&format!("c{c}-{i}"), s, items).await {
                    Ok((StatusCode::CREATED, order)) => confirmed.lock().unwrap().push(order),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let confirmed = confirmed.lock().unwrap().clone();
    assert!(
        confirmed.len() > 10,
        "the burst confirmed orders before the kill ({})",
        confirmed.len()
    );

    server.restart();
    for order in &confirmed {
        let id = order["order_id"].as_str().unwrap();
        let stored = server.count(&format!(
            "SELECT COUNT(*) FROM tickets WHERE order_id = '{id}'"
        ));
        assert_eq!(
            stored as usize,
            order["tickets"].as_array().unwrap().len(),
            "order {id} lost tickets"
        );
    }
    for s in &slots {
        let [capacity, sold, by_orders, by_tickets, held] = server.numbers(&format!(
            "SELECT capacity, sold_online,
                    (SELECT COALESCE(SUM(admissions), 0) FROM orders WHERE slot_id = '{s}'),
                    (SELECT COALESCE(SUM(admits), 0) FROM tickets WHERE slot_id = '{s}' AND channel = 'online'),
                    (SELECT COALESCE(SUM(admissions), 0) FROM holds WHERE slot_id = '{s}' AND status = 'held')
             FROM slots WHERE slot_id = '{s}'"
        ));
        assert_eq!(sold, by_orders);
        assert_eq!(sold, by_tickets);
        assert!(
            sold + held <= capacity,
            "{s}: {sold} sold + {held} held > {capacity}"
        );
    }
    let total_sold = server.count("SELECT SUM(sold_online) FROM slots");
    assert!(
        total_sold < 9 * 120,
        "the kill came mid-burst, not after a sell-out ({total_sold} sold)"
    );
    // Availability after restart matches the database, and sales go on.
    let api = server.api();
    let s = slots[0];
    let [sold, held] = server.numbers(&format!(
        "SELECT sold_online,
                (SELECT COALESCE(SUM(admissions), 0) FROM holds WHERE slot_id = '{s}' AND status = 'held')
         FROM slots WHERE slot_id = '{s}'"
    ));
    assert_eq!(api.available(s).await as i64, 120 - sold - held);
    let (status, _) = api
        .buy(
            "after",
            slot(server.day, "16:30"),
            json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
}
