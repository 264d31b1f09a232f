//! A web visitor books timed tickets: availability, hold, confirm, cancel.

use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

use tessera_server::testkit::{slot, wait_for, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_books_a_family_visit_and_gets_signed_tickets() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let s = slot(server.day, "14:00");

    let day = api.availability(server.day).await;
    assert_eq!(day["closed"], false);
    assert_eq!(day["slots"].as_array().unwrap().len(), 14);
    let first = &day["slots"][0];
    assert_eq!(first["slot_id"], format!("{}T10:00", server.day));
    assert_eq!(first["past"], true, "10:00-10:30 is over at 11:05");
    assert_eq!(first["available"], 0);
    assert_eq!(api.available(s).await, 120);

    let items = json!([
        {"product_id": "adult", "quantity": 2},
        {"product_id": "child", "quantity": 1},
        {"product_id": "audio-guide", "quantity": 2}
    ]);
    let (status, hold) = api.hold("visit-1", s, items).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert_eq!(hold["total"], json!({"amount": 4000, "currency": "EUR"}));
    assert_eq!(hold["admissions"], 3);
    assert_eq!(
        api.available(s).await,
        117,
        "a hold takes its places at once"
    );

    let (status, order) = api
        .confirm("pay-1", hold["hold_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let tickets = order["tickets"].as_array().unwrap();
    assert_eq!(
        tickets.len(),
        5,
        "one ticket per unit, audio guides included"
    );
    assert_eq!(api.available(s).await, 117);

    let ring = api.keyring().await;
    for t in tickets {
        let claims = ring
            .verify(t["code"].as_str().unwrap())
            .expect("ticket code verifies offline");
        assert_eq!(claims.slot, s);
        assert_eq!(
            claims.ticket_id.to_string(),
            t["ticket_id"].as_str().unwrap()
        );
        assert_eq!(claims.product_id, t["product_id"].as_str().unwrap());
    }
    let admits: u64 = tickets.iter().map(|t| t["admits"].as_u64().unwrap()).sum();
    assert_eq!(admits, 3);

    // The database agrees with what the visitor was told.
    let order_id = order["order_id"].as_str().unwrap();
    assert_eq!(
        server.query_row(&format!(
            "SELECT (SELECT sold_online FROM slots WHERE slot_id = '{s}'),
                    (SELECT COUNT(*) FROM tickets WHERE order_id = '{order_id}')"
        )),
        ["3", "5"]
    );

    // Operators see it too.
    let (status, health) = api.get("/healthz").await.unwrap();
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tessera_orders_total 1"), "{metrics}");
    assert!(metrics.contains("tessera_commit_batch_jobs"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_checkout_returns_its_places() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let s = slot(server.day, "15:00");
    let (status, hold) = api
        .hold("c-1", s, json!([{"product_id": "family", "quantity": 2}]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert_eq!(api.available(s).await, 112);
    let id = hold["hold_id"].as_str().unwrap();
    let (status, _) = api.cancel(id).await.unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(api.available(s).await, 120);
    // Cancelling again is harmless; confirming a cancelled hold is refused.
    assert_eq!(api.cancel(id).await.unwrap().0, StatusCode::NO_CONTENT);
    let (status, body) = api.confirm("c-2", id).await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "hold_cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_clients_race_for_the_last_forty_places() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let s = slot(server.day, "16:00");
    // 80 of 120 places go first, in family tickets.
    for i in 0..20 {
        let (status, body) = api
            .buy(
                &format!("early-{i}"),
                s,
                json!([{"product_id": "family", "quantity": 1}]),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert_eq!(api.available(s).await, 40);

    let mut tasks = Vec::new();
    for i in 0..300 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            api.buy(
                &format!("race-{i}"),
                s,
                json!([{"product_id": "adult", "quantity": 1}]),
            )
            .await
            .unwrap()
        }));
    }
    let mut confirmed = 0;
    let mut sold_out = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => confirmed += 1,
            StatusCode::CONFLICT => {
                assert_eq!(body["error"]["code"], "sold_out", "{body}");
                sold_out += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(confirmed, 40);
    assert_eq!(sold_out, 260);
    assert_eq!(api.available(s).await, 0);

    assert_eq!(
        server.query_row(&format!(
            "SELECT capacity, sold_online,
                    (SELECT COALESCE(SUM(admits), 0) FROM tickets WHERE slot_id = '{s}'),
                    (SELECT COUNT(*) FROM holds WHERE slot_id = '{s}' AND status = 'held')
             FROM slots WHERE slot_id = '{s}'"
        )),
        ["120", "120", "120", "0"]
    );
}

/// The slots of a day, as availability lists them, without what changes
/// once the day is over.
fn figures(day: &serde_json::Value) -> Vec<(String, u64, u64)> {
    day["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("no slots in {day}"))
        .iter()
        .map(|s| {
            (
                s["slot_id"].as_str().unwrap_or_default().to_string(),
                s["capacity"].as_u64().unwrap_or(u64::MAX),
                s["sold"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// Both backends keep only the live days in memory; a day a week behind is
/// read from the database and answers as it stood: every slot with its
/// capacity and what it sold, all past, nothing available. A hold on it is
/// refused as past, not as an unknown slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_a_week_ago_still_shows_its_slots_and_sales() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let day = server.day;
    let s = slot(day, "14:00");
    server.set_capacity(s, 50);
    let api = server.api();
    wait_for("the new capacity", Duration::from_secs(10), || async {
        let body = api.availability(day).await;
        figures(&body)
            .iter()
            .any(|(id, capacity, _)| *id == s.to_string() && *capacity == 50)
            .then_some(())
    })
    .await;
    for (key, n) in [("week-1", 3), ("week-2", 2)] {
        let (status, body) = api
            .buy(key, s, json!([{"product_id": "adult", "quantity": n}]))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let then = figures(&api.availability(day).await);
    assert!(then.contains(&(s.to_string(), 50, 5)), "{then:?}");
    assert_eq!(then.len(), 14, "{then:?}");

    server
        .set_clock(day + jiff::Span::new().days(7), "11:05")
        .unwrap();
    server.restart();
    let api = server.api();
    let body = api.availability(day).await;
    assert_eq!(figures(&body), then, "{body}");
    for v in body["slots"].as_array().unwrap() {
        assert_eq!(
            (&v["past"], &v["available"]),
            (&json!(true), &json!(0)),
            "{v}"
        );
    }
    let (status, body) = api
        .hold(
            "week-late",
            s,
            json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "slot_past", "{body}");
    // A day the server never had slots for is empty, as before.
    let body = api.availability(day - jiff::Span::new().days(30)).await;
    assert_eq!(body["slots"], json!([]), "{body}");
}
