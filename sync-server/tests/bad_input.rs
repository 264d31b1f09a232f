//! Bad input gets a clear 4xx with a code and a reason, and changes nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_server::testkit::{slot, ServerProcess};

fn assert_error(reply: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["error"]["code"], code, "{}", reply.1);
    let message = reply.1["error"]["message"].as_str().unwrap_or_default();
    assert!(message.len() > 5, "a reason a person can read: {}", reply.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bookings_are_refused_and_change_nothing() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let day = server.day;
    let s = slot(day, "14:30");
    let before = api.availability(day).await;
    let key = [("idempotency-key", "k")];
    let hold = |body: Value| {
        let api = api.clone();
        async move {
            api.post_raw("/v1/holds", &key, &body.to_string())
                .await
                .unwrap()
        }
    };
    let item =
        |p: &str, q: Value| json!({"slot_id": s, "items": [{"product_id": p, "quantity": q}]});

    assert_error(&hold(json!({"slot_id": slot(day, "03:00"), "items": [{"product_id": "adult", "quantity": 1}]})).await, StatusCode::UNPROCESSABLE_ENTITY, "unknown_slot");
    assert_error(
        &hold(item("yacht", json!(1))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_product",
    );
    assert_error(
        &hold(item("adult", json!(0))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad_quantity",
    );
    assert_error(
        &hold(item("adult", json!(-2))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        &hold(item("adult", json!(1.5))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        &hold(item("adult", json!(1_000_000))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "too_many",
    );
    assert_error(
        &hold(item("adult", json!(1e30))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        &hold(item("adult", json!("2"))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        &hold(json!({"slot_id": 5, "items": "adult"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        &hold(json!({"slot_id": "tomorrow at ten", "items": []})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        &hold(json!({"items": [{"product_id": "adult", "quantity": 1}]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_error(
        &hold(json!({"slot_id": s, "items": []})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "empty_cart",
    );
    assert_error(
        &hold(item("member", json!(1))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "membership_number",
    );
    assert_error(
        &hold(item("audio-guide", json!(1))).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "add_on_alone",
    );
    assert_error(&hold(json!({"slot_id": slot(day, "10:00"), "items": [{"product_id": "adult", "quantity": 1}]})).await, StatusCode::UNPROCESSABLE_ENTITY, "slot_past");
    let monday = day + jiff::Span::new().days(5);
    assert_eq!(monday.weekday(), jiff::civil::Weekday::Monday);
    assert_error(&hold(json!({"slot_id": slot(monday, "11:00"), "items": [{"product_id": "adult", "quantity": 1}]})).await, StatusCode::UNPROCESSABLE_ENTITY, "museum_closed");

    let malformed = api
        .post_raw("/v1/holds", &key, "{\"slot_id\": ")
        .await
        .unwrap();
    assert_error(&malformed, StatusCode::BAD_REQUEST, "malformed_json");
    let no_key = api
        .post_raw("/v1/holds", &[], &item("adult", json!(1)).to_string())
        .await
        .unwrap();
    assert_error(&no_key, StatusCode::BAD_REQUEST, "missing_idempotency_key");
    let huge = format!(
        "{{\"slot_id\": \"{s}\", \"items\": [], \"pad\": \"{}\"}}",
        "x".repeat(200_000)
    );
    // Its own connection: a server may close one it refused a body on.
    let too_big = tessera_server::testkit::Api::new(&server.url)
        .post_raw("/v1/holds", &key, &huge)
        .await
        .unwrap();
    assert_error(&too_big, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");

    let unknown_hold = api
        .confirm("k2", "0190a0a0-0000-7000-8000-000000000000")
        .await
        .unwrap();
    assert_error(&unknown_hold, StatusCode::NOT_FOUND, "unknown_hold");
    let garbage_hold = api.confirm("k3", "not-a-hold").await.unwrap();
    assert_error(&garbage_hold, StatusCode::NOT_FOUND, "unknown_hold");
    assert_error(
        &api.get("/v1/availability?date=02/12/2026").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &api.get("/v1/availability").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &api.get("/v1/nothing-here").await.unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // A hold that was refused for bad input did not burn its key either.
    let (status, _) = api
        .post_raw("/v1/holds", &key, &item("adult", json!(1)).to_string())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = api
        .cancel(&{
            let (_, b) = api
                .post_raw("/v1/holds", &key, &item("adult", json!(1)).to_string())
                .await
                .unwrap();
            b["hold_id"].as_str().unwrap().to_string()
        })
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);

    assert_eq!(api.availability(day).await, before, "nothing changed");
    let orders = server.count("SELECT COUNT(*) FROM orders");
    assert_eq!(orders, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_need_a_valid_token_and_a_code_works_once() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();

    let missing = api
        .post_raw("/v1/gate/redeem", &[], &json!({"code": "X"}).to_string())
        .await
        .unwrap();
    assert_error(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
    let wrong = api.redeem("tsr_not-a-real-token", "X").await.unwrap();
    assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized");

    let code = server.enrolment_code("gate", "North entrance");
    let (status, gate) = api.enrol(&code, "gate-pc-1", None).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{gate}");
    assert_eq!(gate["role"], "gate");
    let again = api.enrol(&code, "gate-pc-2", None).await.unwrap();
    assert_error(&again, StatusCode::FORBIDDEN, "enrolment_code_invalid");
    let made_up = api.enrol("AAAA-BBBB-CCCC", "intruder", None).await.unwrap();
    assert_error(&made_up, StatusCode::FORBIDDEN, "enrolment_code_invalid");

    // A counter must bring a real public key.
    let counter_code = server.enrolment_code("counter", "Counter 1");
    let no_key = api.enrol(&counter_code, "till", None).await.unwrap();
    assert_error(&no_key, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let bad_key = api
        .enrol(&counter_code, "till", Some("abcd"))
        .await
        .unwrap();
    assert_error(&bad_key, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body");
    let devices = server.count("SELECT COUNT(*) FROM devices");
    assert_eq!(devices, 1, "only the gate enrolled");
}
