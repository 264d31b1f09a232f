//! Anonymous load is bounded: slow connections are closed, one client's
//! writes and enrolment guesses are rate-limited, one client cannot hold a
//! day's places, and idempotency records stay few and bounded in memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_server::testkit::{self, slot, ServerProcess, UNLIMITED_CLIENTS_TOML};

/// Starts a server at 11:05 with `toml` as its config file.
/// Stored first answers of Idempotency-Keys: the backends name the table
/// differently (SQLite's `idempotency_log`, PostgreSQL's `idempotency`).
fn idempotency_records(server: &ServerProcess) -> i64 {
    let table = if server.backend.is_sqlite() {
        "idempotency_log"
    } else {
        "idempotency"
    };
    server.count(&format!("SELECT COUNT(*) FROM {table}"))
}

fn start_with(toml: &str) -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, toml).unwrap();
    let server = ServerProcess::start_at("11:05", &["--config", path.to_str().unwrap()]);
    (dir, server)
}

/// Writes `sent`, then waits (without sending more) until the server closes
/// the connection; returns what it answered. The read timeout only keeps a
/// broken server from hanging the test: it fails the test, it measures nothing.
fn stall_until_closed(server: &ServerProcess, sent: &[u8]) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    conn.write_all(sent).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = Vec::new();
    match conn.read_to_end(&mut answer) {
        Ok(_) => {}
        // A reset after the answer is a close too.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close a stalled connection: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_heads_and_bodies_are_closed_while_normal_requests_work() {
    let (_cfg, server) =
        start_with("[clients]\nheader_read_timeout_secs = 1\nbody_read_timeout_secs = 1\n");
    let api = server.api();

    // Twenty slowloris connections: half a request head each, then nothing.
    let port_server = std::sync::Arc::new(server);
    let mut stalled = Vec::new();
    for i in 0..20 {
        let s = port_server.clone();
        stalled.push(tokio::task::spawn_blocking(move || {
            stall_until_closed(
                &s,
                format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: ").as_bytes(),
            )
        }));
    }
    // Meanwhile the server serves everyone else.
    for _ in 0..5 {
        let (status, body) = api.get("/healthz").await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for s in stalled {
        let answer = s.await.unwrap();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "a stalled head gets no answer, or a 408: {answer:?}"
        );
    }

    // A body that stops coming: refused with a JSON 4xx, connection closed,
    // and nothing held.
    let day = port_server.day;
    let s = slot(day, "15:00");
    let before = api.available(s).await;
    let body = json!({"slot_id": s, "items": [{"product_id": "adult", "quantity": 1}]}).to_string();
    let head = format!(
        "POST /v1/holds HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Idempotency-Key: slow-body\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let partial = format!("{head}{}", &body[..10]);
    let s2 = port_server.clone();
    let answer = tokio::task::spawn_blocking(move || stall_until_closed(&s2, partial.as_bytes()))
        .await
        .unwrap();
    let status_line = answer.lines().next().unwrap_or_default().to_string();
    assert!(
        status_line.starts_with("HTTP/1.1 4"),
        "a stalled body is refused: {answer:?}"
    );
    assert!(
        answer.contains("\"error\""),
        "with the JSON error body: {answer:?}"
    );
    assert_eq!(api.available(s).await, before);
    let (status, _) = api.get("/healthz").await.unwrap();
    assert_eq!(status, StatusCode::OK);
}

async fn hold_with_headers(
    api: &tessera_server::testkit::Api,
    key: &str,
    body: &Value,
) -> (StatusCode, Option<String>, Value) {
    let r = api
        .http
        .post(format!("{}/v1/holds", api.base))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = r.text().await.unwrap();
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_writes_are_rate_limited_with_a_json_429_and_retry_after() {
    let (_cfg, server) = start_with(
        "[clients]\nwrites_per_minute = 1\nwrite_burst = 3\nmax_held_admissions = 1000\n",
    );
    let api = server.api();
    let s = slot(server.day, "12:00");
    let body = json!({"slot_id": s, "items": [{"product_id": "adult", "quantity": 1}]});
    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..6 {
        let (status, retry, reply) = hold_with_headers(&api, &format!("rl-{i}"), &body).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((retry, reply));
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        3,
        "{statuses:?}"
    );
    let (retry, reply) = limited.expect("the fourth write in a minute is refused");
    assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!(secs >= 1);
    assert_eq!(api.available(s).await, 117, "refused writes hold nothing");

    // Confirmation shares the bucket; reads are not limited.
    let (status, _) = api
        .confirm("c-1", "00000000-0000-0000-0000-000000000000")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..10 {
        assert_eq!(api.get("/v1/catalogue").await.unwrap().0, StatusCode::OK);
    }
    assert_eq!(
        idempotency_records(&server),
        3,
        "a 429 leaves no idempotency record"
    );
}

/// Reads by a link's token have a budget per client, shared by every such
/// route, and a token that cannot be one of ours is refused at the door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reads_are_rate_limited_per_client() {
    let (_cfg, server) =
        start_with("[clients]\ntoken_reads_per_minute = 1\ntoken_read_burst = 6\n");
    let api = server.api();
    // Well-formed, but nobody's: each costs the budget and answers 404.
    let token = "a".repeat(52);
    let checkout = format!("co_{}", "b".repeat(32));
    let reads = [
        format!("/v1/bookings/{token}"),
        format!("/v1/bookings/{token}/tickets.pdf"),
        format!("/v1/offers/{token}"),
        format!("/v1/checkouts/{checkout}"),
    ];
    for path in &reads {
        let (status, body) = api.get(path).await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    // Made-up shapes (too long, not base32) are answered the same way, and
    // cost the same.
    for made_up in ["z".repeat(60), format!("1{}", "a".repeat(51))] {
        let (status, body) = api.get(&format!("/v1/bookings/{made_up}")).await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "unknown_booking", "{body}");
    }
    let limited = api
        .http
        .get(format!("{}/v1/bookings/{token}/booking.ics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let reply: Value = limited.json().await.unwrap();
    assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
    for path in &reads {
        let (status, _) = api.get(path).await.unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{path}");
    }
    // Other reads are not in this budget.
    assert_eq!(api.get("/v1/catalogue").await.unwrap().0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_code_guesses_are_slowed() {
    let (_cfg, server) = start_with("[clients]\nenrolments_per_minute = 1\nenrolment_burst = 2\n");
    let api = server.api();
    let mut codes = Vec::new();
    for i in 0..10 {
        let (status, body) = api
            .enrol(&format!("GUESS{i:06}"), "intruder", None)
            .await
            .unwrap();
        codes.push((
            status,
            body["error"]["code"].as_str().unwrap_or("").to_string(),
        ));
    }
    let guessed = codes
        .iter()
        .filter(|(_, c)| c == "enrolment_code_invalid")
        .count();
    let slowed = codes.iter().filter(|(_, c)| c == "rate_limited").count();
    assert_eq!((guessed, slowed), (2, 8), "{codes:?}");
    assert!(codes
        .iter()
        .all(|(s, _)| *s == StatusCode::FORBIDDEN || *s == StatusCode::TOO_MANY_REQUESTS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_a_days_places() {
    let (_cfg, server) = start_with(&format!(
        "{}max_held_admissions = 20\n",
        UNLIMITED_CLIENTS_TOML.replace("max_held_admissions = 4294967295\n", "")
    ));
    let api = server.api();
    let day = server.day;
    let slots: Vec<_> = [
        "12:00", "12:30", "13:00", "13:30", "14:00", "14:30", "15:00",
    ]
    .iter()
    .map(|t| slot(day, t))
    .collect();
    let free_before: u64 = api.availability(day).await["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["available"].as_u64().unwrap())
        .sum();

    // 140 concurrent checkouts from one address.
    let mut tasks = Vec::new();
    for i in 0..140 {
        let api = api.clone();
        let s = slots[i % slots.len()];
        tasks.push(tokio::spawn(async move {
            let body = json!({"slot_id": s, "items": [{"product_id": "adult", "quantity": 1}]});
            hold_with_headers(&api, &format!("grab-{i}"), &body).await
        }));
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => held.push(body),
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"]["code"], "too_many_held", "{body}");
                assert!(retry.is_some());
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((held.len(), refused), (20, 120));
    let free_after: u64 = api.availability(day).await["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["available"].as_u64().unwrap())
        .sum();
    assert_eq!(free_before - free_after, 20);

    // Confirming or cancelling a checkout makes room again.
    let id = held[0]["hold_id"].as_str().unwrap().to_string();
    let (status, _) = api.cancel(&id).await.unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let id = held[1]["hold_id"].as_str().unwrap().to_string();
    let (status, order) = api.confirm("pay-1", &id).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let body = json!({"slot_id": slots[0], "items": [{"product_id": "adult", "quantity": 2}]});
    let (status, _, reply) = hold_with_headers(&api, "after-room", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (status, _, reply) = hold_with_headers(&api, "one-too-many", &body).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{reply}");
    // The same request again is its first answer, also at the cap.
    let (status, _, again) = hold_with_headers(&api, "after-room", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_final_answers_leave_idempotency_records() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let s = slot(server.day, "16:30");
    let records = || idempotency_records(&server);
    let twenty = json!([{"product_id": "adult", "quantity": 20}]);
    let mut holds = Vec::new();
    for i in 0..6 {
        let (status, hold) = api
            .hold(&format!("fill-{i}"), s, twenty.clone())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        holds.push(hold);
    }
    assert_eq!(records(), 6);

    // Sold out, a reused key, bad input: answered, nothing recorded.
    let one = json!([{"product_id": "adult", "quantity": 1}]);
    let (status, body) = api.hold("late", s, one.clone()).await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "sold_out");
    let (status, body) = api.hold("fill-0", s, one.clone()).await.unwrap();
    assert_eq!(
        body["error"]["code"], "idempotency_key_reused",
        "{status} {body}"
    );
    let (status, _) = api
        .hold("bad", s, json!([{"product_id": "yacht", "quantity": 1}]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(records(), 6);

    // Places come back: the sold-out request's retry gets them.
    let id = holds[0]["hold_id"].as_str().unwrap();
    assert_eq!(api.cancel(id).await.unwrap().0, StatusCode::NO_CONTENT);
    let (status, body) = api.hold("late", s, one).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A confirmation of a cancelled hold is final: recorded, and replayed.
    let (status, first) = api.confirm("pay-cancelled", id).await.unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{first}");
    assert_eq!(records(), 8);
    assert_eq!(
        api.confirm("pay-cancelled", id).await.unwrap(),
        (status, first)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_evicted_from_memory_still_gets_its_first_answer() {
    if testkit::skip_unless_sqlite(
        "evicts keys from the SQLite writer's in-memory idempotency cache \
         (idempotency_keys_in_memory, idempotency_evicted); PostgreSQL keeps every key in its table",
    ) {
        return;
    }
    let (_cfg, mut server) = start_with(&format!(
        "idempotency_keys_in_memory = 16\n{UNLIMITED_CLIENTS_TOML}"
    ));
    let api = server.api();
    let s = slot(server.day, "16:00");
    let one = json!([{"product_id": "adult", "quantity": 1}]);
    let mut first = Vec::new();
    for i in 0..60 {
        let reply = api.hold(&format!("k-{i}"), s, one.clone()).await.unwrap();
        assert_eq!(reply.0, StatusCode::CREATED, "{}", reply.1);
        first.push(reply);
    }
    let evicted = server.count("SELECT COUNT(*) FROM idempotency_evicted");
    assert!(
        evicted >= 40,
        "the oldest keys left memory ({evicted} evicted)"
    );
    assert_eq!(api.available(s).await, 60);

    for round in 0..2 {
        for i in [0usize, 1, 17, 59] {
            let again = api.hold(&format!("k-{i}"), s, one.clone()).await.unwrap();
            assert_eq!(again, first[i], "round {round}, key {i}");
        }
        let (status, body) = api
            .hold("k-0", s, json!([{"product_id": "adult", "quantity": 2}]))
            .await
            .unwrap();
        assert_eq!(
            body["error"]["code"], "idempotency_key_reused",
            "{status} {body}"
        );
        assert_eq!(api.available(s).await, 60, "retries held nothing more");
        server.restart();
    }
}
