//! The server's small edges (issue 9, items 6 and 8): every refusal is a 4xx
//! with the JSON error body, a retry gets its first answer, the operator's
//! commands refuse what they cannot do safely, the database is not readable
//! by other users, and a weak key cannot be enrolled.

use std::os::unix::fs::PermissionsExt;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_server::testkit::{self, slot, Api, ServerProcess};

/// A 4xx with `{"error":{code,message}}`, sent as JSON.
async fn json_error(api: &Api, method: reqwest::Method, path: &str, token: Option<&str>) -> Value {
    let mut req = api.http.request(method, format!("{}{path}", api.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let response = req.send().await.expect("answered");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.expect("body");
    assert!(status.is_client_error(), "{path}: {status} {text}");
    assert!(
        content_type.starts_with("application/json"),
        "{path}: {content_type} {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("JSON body");
    assert!(body["error"]["code"].is_string(), "{path}: {body}");
    assert!(
        body["error"]["message"].as_str().unwrap_or_default().len() > 5,
        "{path}: {body}"
    );
    body
}

async fn supervisor_token(server: &ServerProcess) -> String {
    let code = server.enrolment_code("supervisor", "Desk");
    let (status, body) = server
        .api()
        .enrol(&code, "Desk", None)
        .await
        .expect("enrol");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().expect("token").to_string()
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_queries_paths_and_dates_get_json_errors() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let token = supervisor_token(&server).await;
    let get = reqwest::Method::GET;

    // A day no slot can have: was a 500 from the report's date arithmetic.
    for path in [
        "/v1/reports/day?date=9999-12-31",
        "/v1/reports/day?date=1970-01-01",
        "/v1/leases?date=9999-12-31",
    ] {
        let body = json_error(&api, get.clone(), path, Some(&token)).await;
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
    }
    let body = json_error(&api, get.clone(), "/v1/availability?date=9999-12-31", None).await;
    assert_eq!(body["error"]["code"], "bad_request", "{body}");

    // Query strings axum could not read: were plain-text 400s.
    for path in [
        "/v1/availability?date=2026-01-01&date=2026-01-02",
        "/v1/reports/day?date=2026-01-01&format=json&format=csv",
        "/v1/leases?date=a&date=b",
    ] {
        let body = json_error(&api, get.clone(), path, Some(&token)).await;
        assert_eq!(body["error"]["code"], "bad_request", "{body}");
    }

    // Path values that are not text.
    let post = reqwest::Method::POST;
    json_error(&api, post.clone(), "/v1/holds/%FF%FE/confirm", None).await;
    json_error(&api, reqwest::Method::DELETE, "/v1/holds/%C3%28", None).await;
    json_error(&api, post, "/v1/leases/%FF/revoke", Some(&token)).await;

    // Every answer carries a request id.
    let response = api
        .http
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .expect("healthz");
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_hold_gets_its_first_answer_after_its_window_ends() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let s = slot(server.day, "11:00");
    let items = json!([{"product_id": "adult", "quantity": 2}]);
    let (status, first) = server
        .api()
        .hold("late-retry", s, items.clone())
        .await
        .expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{first}");

    // An hour later the 11:00 window is over; the client retries its hold.
    server.offset_secs += 3600;
    server.restart();
    let api = server.api();
    let (status, again) = api
        .hold("late-retry", s, items.clone())
        .await
        .expect("retry");
    assert_eq!((status, &again), (StatusCode::CREATED, &first));

    // A new request for that slot is refused as past, as before.
    let (status, body) = api.hold("new-key", s, items).await.expect("hold");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "slot_past");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_refuse_what_they_cannot_do_safely() {
    let server = ServerProcess::start_at("11:05", &[]);

    // Codes valid for negative or zero hours, or for years: refused.
    for hours in ["-5", "0", "100000"] {
        let out = server.admin(&[
            "enrol",
            "--role",
            "gate",
            "--name",
            "G",
            &format!("--valid-hours={hours}"),
        ]);
        assert!(!out.status.success(), "--valid-hours={hours} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("valid-hours"), "{err}");
    }
    let codes = server.count("SELECT COUNT(*) FROM enrolment_codes");
    assert_eq!(codes, 0);

    // Two gates in service under one name: revoking by that name is refused
    // and lists both; by id it works.
    let api = server.api();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let code = server.enrolment_code("gate", "North gate");
        let (status, body) = api.enrol(&code, "North gate", None).await.expect("enrol");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["device_id"].as_str().expect("id").to_string());
    }
    let out = server.admin(&["revoke-device", "--device", "North gate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&ids[0]) && err.contains(&ids[1]), "{err}");
    let revoked = server.count("SELECT COUNT(*) FROM devices WHERE revoked_at IS NOT NULL");
    assert_eq!(revoked, 0, "nothing revoked by an ambiguous name");

    let out = server.admin(&["revoke-device", "--device", &ids[1]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let still = server.query_one("SELECT device_id FROM devices WHERE revoked_at IS NULL");
    assert_eq!(still, ids[0]);
    // Now the name means one device in service: by name works again.
    let out = server.admin(&["revoke-device", "--device", "North gate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_its_signing_key_are_owner_only() {
    if testkit::skip_unless_sqlite(
        "checks the modes of the SQLite file and its -wal and -shm files; PostgreSQL's files are the cluster's",
    ) {
        return;
    }
    let server = ServerProcess::start_at("11:05", &[]);
    // A write, so the WAL and shared-memory files exist.
    let (status, _) = server
        .api()
        .hold(
            "k",
            slot(server.day, "14:00"),
            json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await
        .expect("hold");
    assert_eq!(status, StatusCode::CREATED);
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", server.db_str()));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }

    // A database left open to others (as the old server made it) is closed
    // up by the next command that opens it.
    std::fs::set_permissions(&server.db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = server.cli(&["leases", "--db", &server.db_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&server.db), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_public_keys_are_refused_at_enrolment() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let code = server.enrolment_code("counter", "Counter 9");
    // Small-order points: the identity, and the point of order 4 (y = 0).
    let identity = format!("01{}", "00".repeat(31));
    let order_four = "00".repeat(32);
    for weak in [identity.as_str(), order_four.as_str()] {
        let (status, body) = api
            .enrol(&code, "Counter 9", Some(weak))
            .await
            .expect("enrol");
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{weak}: {body}");
        assert_eq!(body["error"]["code"], "invalid_body");
    }
    let keys = server.count("SELECT COUNT(*) FROM signing_keys");
    assert_eq!(keys, 1, "only the server's own key");

    // The code is still good for a real key.
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    let hex = data_encoding::HEXLOWER.encode(key.as_bytes());
    let (status, body) = api
        .enrol(&code, "Counter 9", Some(&hex))
        .await
        .expect("enrol");
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A day whose sums disagree says so everywhere: the HTTP report carries the
/// reason (the supervisor screen shows it), and the CLI prints it and fails.
/// Only a damaged database can do this now that counters' figures are
/// re-derived, so the test damages one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_does_not_add_up_says_so_over_http_and_in_the_cli() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let token = supervisor_token(&server).await;
    let s = slot(server.day, "14:30");
    let (status, body) = api
        .buy("sum", s, json!([{"product_id": "adult", "quantity": 2}]))
        .await
        .expect("buy");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let report = |api: Api, token: String, day| async move {
        let r = api
            .http
            .get(format!("{}/v1/reports/day?date={day}", api.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("report");
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.expect("JSON")
    };
    let fine = report(api.clone(), token.clone(), server.day).await;
    assert!(fine["does_not_add_up"].is_null(), "{fine}");

    server.execute("UPDATE orders SET total = total + 1");
    let damaged = report(api.clone(), token, server.day).await;
    let reason = damaged["does_not_add_up"].as_str().unwrap_or_default();
    assert!(reason.contains("add up"), "{damaged}");

    let day = server.day.to_string();
    let out = server.admin(&["report", "--date", &day, "--format", "text"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("DOES NOT ADD UP"), "{text}");
}

/// The log's text with its terminal colour codes (`ESC [ … m`) taken out.
fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Paths carry booking tokens, checkout ids and the demo's payment ids: the
/// request log, even at debug, names each request's route, never its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_names_routes_and_never_a_token() {
    let server = ServerProcess::start_with_env("11:05", &[], &[("TESSERA_LOG", "debug")]);
    let api = server.api();
    let s = slot(server.day.tomorrow().unwrap(), "11:00");
    let (status, hold) = api
        .hold("log-h", s, json!([{"product_id": "adult", "quantity": 1}]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, checkout) = api
        .checkout("log-c", hold["hold_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{checkout}");
    let checkout_id = checkout["checkout_id"].as_str().unwrap();
    let redirect = checkout["redirect_url"].as_str().unwrap();
    let payment_id = redirect.rsplit('/').next().unwrap();
    let (status, _) = api.demo_pay(redirect, "paid").await.unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER);
    let done = api.await_checkout(checkout_id).await;
    let token = done["booking_token"].as_str().expect("a booking token");

    let (status, booking) = api.get(&format!("/v1/bookings/{token}")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{booking}");
    for file in ["tickets.pdf", "booking.ics"] {
        let response = api
            .http
            .get(format!("{}/v1/bookings/{token}/{file}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{file}");
    }
    // The shop's own page for the link: no route, served by the fallback.
    api.http
        .get(format!("{}/booking/{token}", api.base))
        .send()
        .await
        .unwrap();

    // Every request above is logged once its answer is on its way.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let log = loop {
        let log = without_colours(&server.log());
        if log.contains("path=/booking/*") {
            break log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the shop page's request was not logged: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for route in [
        "/v1/bookings/{token}",
        "/v1/bookings/{token}/tickets.pdf",
        "/v1/bookings/{token}/booking.ics",
        "/v1/checkouts/{checkout_id}",
        "/pay/demo/{payment_id}",
    ] {
        assert!(log.contains(&format!("path={route} ")), "{route}: {log}");
    }
    for secret in [token, checkout_id, payment_id] {
        assert!(!log.contains(secret), "{secret} is in the log: {log}");
    }
}
