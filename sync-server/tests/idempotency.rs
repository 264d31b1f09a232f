//! Retries never double an order: the same Idempotency-Key gets the first answer.

use reqwest::StatusCode;
use serde_json::json;
use tessera_server::testkit::{slot, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_hold_and_confirm_use_capacity_once() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let s = slot(server.day, "13:00");
    let items = json!([{"product_id": "adult", "quantity": 2}]);

    let (s1, h1) = api.hold("same-key", s, items.clone()).await.unwrap();
    let (s2, h2) = api.hold("same-key", s, items.clone()).await.unwrap();
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(h1, h2, "the retry gets the first answer");
    assert_eq!(api.available(s).await, 118);

    let hold_id = h1["hold_id"].as_str().unwrap();
    let (c1, o1) = api.confirm("pay-key", hold_id).await.unwrap();
    let (c2, o2) = api.confirm("pay-key", hold_id).await.unwrap();
    assert_eq!((c1, c2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(o1, o2);

    // Same key, different body: refused, nothing changes.
    let (status, body) = api
        .hold(
            "same-key",
            s,
            json!([{"product_id": "adult", "quantity": 3}]),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
    assert_eq!(api.available(s).await, 118);

    assert_eq!(server.count("SELECT COUNT(*) FROM orders"), 1);

    // A retry after a server restart still gets the first answer.
    server.restart();
    let api = server.api();
    let (c3, o3) = api.confirm("pay-key", hold_id).await.unwrap();
    assert_eq!((c3, &o3), (StatusCode::CREATED, &o1));
    let (status, _) = api
        .hold(
            "same-key",
            s,
            json!([{"product_id": "adult", "quantity": 3}]),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api.available(s).await, 118);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_sent_concurrently_makes_one_hold_and_one_order() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let s = slot(server.day, "13:30");
    let items = json!([{"product_id": "reduced", "quantity": 3}]);

    let holds: Vec<_> = (0..20)
        .map(|_| {
            let api = api.clone();
            let items = items.clone();
            tokio::spawn(async move { api.hold("burst-key", s, items).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for h in holds {
        answers.push(h.await.unwrap());
    }
    assert!(
        answers
            .iter()
            .all(|(st, b)| *st == StatusCode::CREATED && *b == answers[0].1),
        "{answers:?}"
    );
    assert_eq!(api.available(s).await, 117);

    let hold_id = answers[0].1["hold_id"].as_str().unwrap().to_string();
    let confirms: Vec<_> = (0..20)
        .map(|_| {
            let api = api.clone();
            let hold_id = hold_id.clone();
            tokio::spawn(async move { api.confirm("burst-pay", &hold_id).await.unwrap() })
        })
        .collect();
    let mut orders = Vec::new();
    for c in confirms {
        orders.push(c.await.unwrap());
    }
    assert!(
        orders
            .iter()
            .all(|(st, b)| *st == StatusCode::CREATED && *b == orders[0].1),
        "{orders:?}"
    );

    assert_eq!(
        server.query_row(&format!(
            "SELECT (SELECT COUNT(*) FROM holds), (SELECT COUNT(*) FROM orders), (SELECT COUNT(*) FROM tickets),
                    (SELECT sold_online FROM slots WHERE slot_id = '{s}')"
        )),
        ["1", "1", "3", "3"]
    );
}

/// Status and the body's exact bytes of one POST.
async fn raw_post(
    api: &tessera_server::testkit::Api,
    path: &str,
    key: &str,
    body: &str,
    channel: bool,
) -> (StatusCode, String) {
    let mut req = api
        .http
        .post(format!("{}{path}", api.base))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string());
    if channel {
        if let Some(t) = &api.channel_token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
    }
    let response = req.send().await.expect("answered");
    let status = response.status();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_holds_and_confirms_return_the_same_bytes_also_after_a_restart() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let s = slot(server.day, "14:00");
    // Several lines, a family product and a reduced one: the rebuilt answer
    // must list lines and tickets in their first order.
    let hold_body = json!({"slot_id": s, "items": [
        {"product_id": "adult", "quantity": 2},
        {"product_id": "reduced", "quantity": 1},
        {"product_id": "child", "quantity": 2}
    ]})
    .to_string();
    let first_hold = raw_post(&api, "/v1/holds", "bytes-hold", &hold_body, false).await;
    assert_eq!(first_hold.0, StatusCode::CREATED, "{}", first_hold.1);
    let hold: serde_json::Value = serde_json::from_str(&first_hold.1).unwrap();
    let hold_id = hold["hold_id"].as_str().unwrap().to_string();
    let confirm_path = format!("/v1/holds/{hold_id}/confirm");
    let confirm_body = json!({"payment_reference": "psp-bytes"}).to_string();
    let first_order = raw_post(&api, &confirm_path, "bytes-pay", &confirm_body, true).await;
    assert_eq!(first_order.0, StatusCode::CREATED, "{}", first_order.1);
    let order: serde_json::Value = serde_json::from_str(&first_order.1).unwrap();
    assert_eq!(order["tickets"].as_array().map(Vec::len), Some(5));

    for round in ["before a restart", "after a restart"] {
        let api = server.api();
        let hold_again = raw_post(&api, "/v1/holds", "bytes-hold", &hold_body, false).await;
        assert_eq!(hold_again, first_hold, "hold replayed {round}");
        let order_again = raw_post(&api, &confirm_path, "bytes-pay", &confirm_body, true).await;
        assert_eq!(order_again, first_order, "confirm replayed {round}");
        if round == "before a restart" {
            server.restart();
        }
    }
    if tessera_server::testkit::backend().is_postgres() {
        // PostgreSQL stores the answer its request's task built; the
        // compact forms below are SQLite's.
        return;
    }
    // Stored compactly: the ids, not the answers.
    assert_eq!(
        server.count(
            "SELECT COUNT(*) FROM idempotency_log WHERE form IN (1, 2) AND length(body) = 36"
        ),
        2
    );
    // Records written before that (the answer's JSON text, form 0) still
    // replay as they were stored.
    let order_text = first_order.1.replace('\'', "''");
    server.execute(&format!(
        "UPDATE idempotency_log SET form = 0, body = '{order_text}' WHERE form = 2"
    ));
    server.restart();
    let api = server.api();
    let order_again = raw_post(&api, &confirm_path, "bytes-pay", &confirm_body, true).await;
    assert_eq!(order_again, first_order, "an old-format record replayed");
    assert_eq!(server.count("SELECT COUNT(*) FROM orders"), 1);
}
