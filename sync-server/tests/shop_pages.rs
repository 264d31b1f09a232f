//! The web shop's own answers (issue 10): its settings in the visitor's
//! language, the calendar of bookable days, the nearest entry times to a
//! full one, and the built shop served at `/` — client routes get the page,
//! hashed assets are cached for good, nothing outside the shop is reachable.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_server::testkit::{slot, Api, ServerProcess};

/// A stand-in for `shop/dist`, so this test does not need npm.
fn fake_dist() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("assets")).expect("assets dir");
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>shop</title><script type=module src=/assets/app-3f2a.js></script>",
    )
    .expect("index");
    std::fs::write(dir.path().join("assets/app-3f2a.js"), "console.log(1)").expect("js");
    std::fs::write(dir.path().join("assets/app-3f2a.css"), "body{}").expect("css");
    dir
}

fn start(dist: &tempfile::TempDir) -> ServerProcess {
    let dist = dist.path().display().to_string();
    ServerProcess::start_with_env("11:05", &[], &[("TESSERA_SHOP_DIR", dist.as_str())])
}

async fn get_with(api: &Api, path: &str, header: (&str, &str)) -> reqwest::Response {
    api.http
        .get(format!("{}{path}", api.base))
        .header(header.0, header.1)
        .send()
        .await
        .expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_speaks_french_unless_the_browser_prefers_english() {
    let dist = fake_dist();
    let server = start(&dist);
    let api = server.api();
    let (status, config) = api.get("/v1/shop/config").await.expect("config");
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["museum"], "Musée des Tessères");
    assert_eq!(config["time_zone"], "Europe/Paris");
    assert_eq!(config["currency"], "EUR");
    assert_eq!(config["default_language"], "fr");
    assert_eq!(config["language"], "fr");
    assert_eq!(config["languages"], json!(["fr", "en"]));
    assert_eq!(config["payment_provider"], "demo");
    assert_eq!(config["hold_seconds"], 600);
    // The server's (shifted) clock, which the shop counts down against:
    // 11:05 in Paris is 10:05 UTC in winter, 09:05 in summer.
    let now = config["now"].as_str().expect("now");
    assert!(now.starts_with(&server.day.to_string()), "{now}");

    for (accept, expected) in [
        ("en-GB,en;q=0.9", "en"),
        ("de-DE,de;q=0.9", "fr"),
        ("de, en;q=0.4, fr;q=0.6", "fr"),
        ("en-US", "en"),
    ] {
        let body: Value = get_with(&api, "/v1/shop/config", ("accept-language", accept))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(body["language"], expected, "{accept}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calendar_shows_closed_days_and_live_places() {
    let dist = fake_dist();
    let server = start(&dist);
    let api = server.api();
    // The test day is a Wednesday; the Monday before it is a closing day.
    let monday = server.day - jiff::Span::new().days(2);
    let (status, cal) = api
        .get(&format!("/v1/calendar?from={monday}&days=3"))
        .await
        .expect("calendar");
    assert_eq!(status, StatusCode::OK, "{cal}");
    let days = cal["days"].as_array().expect("days");
    assert_eq!(days.len(), 3);
    assert_eq!(days[0]["date"], monday.to_string());
    assert_eq!(days[0]["closed"], true);
    assert_eq!(days[0]["available"], 0);
    // Wednesday, 11:05: 14 entry times of 120, 10:00 and 10:30 are over.
    assert_eq!(days[2]["closed"], false);
    assert_eq!(days[2]["capacity"], 14 * 120);
    assert_eq!(days[2]["available"], 12 * 120);
    assert_eq!(days[2]["sold_out"], false);

    // A hold takes places from the day at once.
    let s = slot(server.day, "12:00");
    let (status, hold) = api
        .hold("cal-1", s, json!([{"product_id": "adult", "quantity": 3}]))
        .await
        .expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (_, cal) = api
        .get(&format!("/v1/calendar?from={}&days=1", server.day))
        .await
        .expect("calendar");
    assert_eq!(cal["days"][0]["available"], 12 * 120 - 3);

    // Beyond the booking horizon (90 days) nothing is on sale.
    let far = server.day + jiff::Span::new().days(120);
    let (_, cal) = api
        .get(&format!("/v1/calendar?from={far}&days=1"))
        .await
        .expect("calendar");
    assert_eq!(cal["days"][0]["available"], 0);
    assert_eq!(cal["days"][0]["sold_out"], false);

    for (path, status, code) in [
        ("/v1/calendar?days=0", 422, "invalid_body"),
        ("/v1/calendar?days=63", 422, "invalid_body"),
        ("/v1/calendar?from=2026-13-01", 400, "bad_request"),
        ("/v1/calendar?days=x", 400, "bad_request"),
    ] {
        let (got, body) = api.get(path).await.expect("answered");
        assert_eq!(got.as_u16(), status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_time_gets_the_nearest_times_that_fit_the_party() {
    let dist = fake_dist();
    let server = start(&dist);
    let api = server.api();
    let full = slot(server.day, "14:00");
    // Fill 14:00 (120 places) and leave 2 at 13:30.
    for i in 0..6 {
        let (status, body) = api
            .hold(
                &format!("fill-{i}"),
                full,
                json!([{"product_id": "adult", "quantity": 20}]),
            )
            .await
            .expect("hold");
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let almost = slot(server.day, "13:30");
    for i in 0..6 {
        let n = if i == 5 { 18 } else { 20 };
        let (status, body) = api
            .hold(
                &format!("almost-{i}"),
                almost,
                json!([{"product_id": "adult", "quantity": n}]),
            )
            .await
            .expect("hold");
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, nearest) = api
        .get(&format!("/v1/nearest?slot_id={full}&admissions=3"))
        .await
        .expect("nearest");
    assert_eq!(status, StatusCode::OK, "{nearest}");
    let ids: Vec<String> = nearest["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| s["slot_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let d = server.day;
    assert_eq!(
        ids,
        [
            format!("{d}T14:30"),
            format!("{d}T13:00"),
            format!("{d}T15:00"),
            format!("{d}T12:30"),
            format!("{d}T15:30"),
            format!("{d}T12:00"),
        ],
        "13:30 has 2 places, too few for 3"
    );

    for (path, status, code) in [
        (format!("/v1/nearest?slot_id={full}"), 400, "bad_request"),
        (
            format!("/v1/nearest?slot_id={full}&admissions=0"),
            422,
            "invalid_body",
        ),
        (
            "/v1/nearest?slot_id=nope&admissions=2".into(),
            400,
            "bad_request",
        ),
        (
            format!("/v1/nearest?slot_id={d}T03:00&admissions=2"),
            422,
            "unknown_slot",
        ),
    ] {
        let (got, body) = api.get(&path).await.expect("answered");
        assert_eq!(got.as_u16(), status, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_shop_is_served_with_client_routes_and_cache_rules() {
    let dist = fake_dist();
    let server = start(&dist);
    let api = server.api();
    let page = |path: &'static str| {
        let api = &api;
        async move {
            api.http
                .get(format!("{}{path}", api.base))
                .send()
                .await
                .expect("answered")
        }
    };
    for path in [
        "/",
        "/day/2026-12-05",
        "/slot/2026-12-05T10:00",
        "/booking/ABCDEFGH234567",
        "/return/co_1",
    ] {
        let r = page(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(r
            .text()
            .await
            .expect("body")
            .contains("<title>shop</title>"));
    }
    let js = page("/assets/app-3f2a.js").await;
    assert_eq!(js.status(), StatusCode::OK);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        js.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let css = page("/assets/app-3f2a.css").await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");

    // A missing asset is a 404, not the page; API paths keep their JSON 404.
    for path in ["/assets/gone-1234.js", "/v1/nope", "/favicon.ico"] {
        let r = page(path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/json"));
    }

    // Nothing outside the shop's directory, however the path is spelled.
    let secret = dist.path().parent().expect("tmp").join("shop-secret.txt");
    std::fs::write(&secret, "secret").expect("write");
    for raw in [
        "/../shop-secret.txt",
        "/assets/../../shop-secret.txt",
        "/%2e%2e/shop-secret.txt",
        "/assets/..%2f..%2fshop-secret.txt",
        "/.%2e/shop-secret.txt",
    ] {
        // reqwest normalises `..`; send the path as typed over a raw socket.
        let text = raw_get(&api.base, raw).await;
        assert!(!text.contains("\r\n\r\nsecret"), "{raw}: {text}");
    }
    let _ = std::fs::remove_file(secret);
}

/// GET with the request target exactly as given.
async fn raw_get(base: &str, target: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.expect("connect");
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    String::from_utf8_lossy(&out).into_owned()
}
