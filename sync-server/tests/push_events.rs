//! The push channel as a web page or a partner site uses it: a museum day's
//! availability over Server-Sent Events, live, resumable, on either backend
//! (`TESSERA_TEST_BACKEND`).

use std::time::Duration;

use serde_json::{json, Value};
use tessera_server::testkit::{slot, ServerProcess};

/// One event as the stream carried it.
#[derive(Debug)]
struct Sse {
    id: Option<String>,
    event: String,
    data: Value,
}

/// A subscriber reading the stream as a browser's EventSource does.
struct Listener {
    response: reqwest::Response,
    buffer: String,
}

impl Listener {
    async fn open(url: &str, date: &str, last_id: Option<&str>) -> Listener {
        let mut request = reqwest::Client::new()
            .get(format!("{url}/v1/events/availability?date={date}"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("subscribe");
        assert_eq!(response.status(), 200);
        assert!(response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream")));
        Listener {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (heartbeat comments skipped); fails the test if none
    /// comes within a minute — a state waited for, with a bound on a
    /// broken server.
    async fn next(&mut self) -> Sse {
        tokio::time::timeout(Duration::from_secs(60), self.next_event())
            .await
            .expect("an event within a minute")
    }

    async fn next_event(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a heartbeat
                }
                return Sse {
                    id,
                    event,
                    data: serde_json::from_str(&data).expect("event data is JSON"),
                };
            }
            let chunk = self
                .response
                .chunk()
                .await
                .expect("stream readable")
                .expect("stream still open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one names `slot` with `available` places.
    async fn until(&mut self, slot: &str, available: u64) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let e = self.next().await;
            let hit = e.data["slots"].as_array().is_some_and(|lines| {
                lines
                    .iter()
                    .any(|l| l["slot_id"] == slot && l["available"] == available)
            });
            seen.push(e);
            if hit {
                return seen;
            }
        }
    }
}

fn line<'a>(e: &'a Sse, slot: &str) -> Option<&'a Value> {
    e.data["slots"]
        .as_array()?
        .iter()
        .find(|l| l["slot_id"] == slot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_sees_each_change_once_across_a_reconnect_and_resyncs_after_a_restart() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let day = server.day.to_string();
    let s = slot(server.day, "14:00");
    let sid = s.to_string();

    let mut page = Listener::open(&server.url, &day, None).await;
    let first = page.next().await;
    assert_eq!(first.event, "snapshot");
    assert_eq!(line(&first, &sid).expect("the slot")["available"], 120);

    // A visitor holds 3 places: the page is told, with no request of its own.
    let (status, hold) = api
        .hold("push-1", s, json!([{"product_id": "adult", "quantity": 3}]))
        .await
        .expect("hold");
    assert_eq!(status, 201, "{hold}");
    let told = page.until(&sid, 117).await;
    let last = told.last().expect("an event");
    assert_eq!(last.event, "changed");
    let last_id = last.id.clone().expect("events carry ids");

    // The page goes away; two more holds happen meanwhile.
    drop(page);
    for (key, n) in [("push-2", 2), ("push-3", 1)] {
        let (status, body) = api
            .hold(key, s, json!([{"product_id": "adult", "quantity": n}]))
            .await
            .expect("hold");
        assert_eq!(status, 201, "{body}");
    }
    // Back with Last-Event-ID: only what it missed, in order, no snapshot.
    let mut page = Listener::open(&server.url, &day, Some(&last_id)).await;
    let missed = page.until(&sid, 114).await;
    assert!(missed.iter().all(|e| e.event == "changed"), "{missed:?}");
    let seen: Vec<u64> = missed
        .iter()
        .filter_map(|e| line(e, &sid))
        .filter_map(|l| l["available"].as_u64())
        .collect();
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "in order, each once: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&114));
    let resume_id = missed.last().and_then(|e| e.id.clone()).expect("id");
    drop(page);

    // A restart forgets the hub's events: the same id gets the whole day.
    server.restart();
    let mut page = Listener::open(&server.url, &day, Some(&resume_id)).await;
    let again = page.next().await;
    assert_eq!(again.event, "snapshot");
    assert_eq!(line(&again, &sid).expect("the slot")["available"], 114);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_subscription_is_refused_with_a_reason() {
    let server = ServerProcess::start_at("11:05", &[]);
    let http = reqwest::Client::new();
    // A parameter given twice is refused like any other malformed query:
    // with the JSON body, not the framework's plain text.
    let twice = format!("?date={0}&date={0}", server.day);
    for query in [
        "",
        "?date=",
        "?date=yesterday",
        "?date=2026-13-40",
        twice.as_str(),
    ] {
        let r = http
            .get(format!("{}/v1/events/availability{query}", server.url))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.expect("a JSON error");
        assert!(body["error"]["code"].is_string(), "{query}: {body}");
    }
    // A garbled Last-Event-ID is no resume point, not an error.
    let mut page = Listener::open(
        &server.url,
        &server.day.to_string(),
        Some("\u{e9}-\u{1f600}"),
    )
    .await;
    assert_eq!(page.next().await.event, "snapshot");
}

/// Stopping the server ends the open streams, so the graceful stop does not
/// wait out its limit (10 s, then "requests still open … exiting anyway")
/// for listeners that would never hang up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_ends_the_streams_instead_of_waiting_for_them() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let mut page = Listener::open(&server.url, &server.day.to_string(), None).await;
    assert_eq!(page.next().await.event, "snapshot");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // The stream ends (the server closed it), then the process exits.
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match page.response.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream was never closed");
    let exit = tokio::task::spawn_blocking(move || {
        let exit = server.wait_exit(Duration::from_secs(120));
        (exit, server)
    })
    .await
    .expect("join");
    let (exit, server) = exit;
    assert!(exit.is_some(), "the server did not stop");
    let log = server.log();
    assert!(
        !log.contains("still open"),
        "the stop waited for the stream:\n{log}"
    );
}

/// One address cannot take the room every visitor's page shares: past its
/// share of open streams it is refused with a reason, the rest of the API
/// still answers it, and a stream it closes gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_keeps_at_most_its_share_of_streams_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[clients]\nmax_streams_per_client = 2\nmax_held_admissions = 1000\n",
    )
    .expect("config");
    let server = ServerProcess::start_at("11:05", &["--config", config.to_str().expect("utf-8")]);
    let date = server.day.to_string();
    let mut first = Listener::open(&server.url, &date, None).await;
    assert_eq!(first.next().await.event, "snapshot");
    let mut second = Listener::open(&server.url, &date, None).await;
    assert_eq!(second.next().await.event, "snapshot");
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events/availability?date={date}", server.url);
    let third = http.get(&url).send().await.expect("answers");
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let body: Value = third.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    // The same client's other reads are not refused.
    let api = server.api();
    let s = slot(server.day, "12:00");
    assert!(api.available(s).await > 0);
    // It hangs up one: the server notices at its next write to it (a
    // change, or the heartbeat), and the place is free again.
    drop(first);
    let end = std::time::Instant::now() + Duration::from_secs(90);
    let mut n = 0;
    loop {
        let r = http.get(&url).send().await.expect("answers");
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(
            std::time::Instant::now() < end,
            "the closed stream's place never came back"
        );
        n += 1;
        let (status, hold) = api
            .hold(
                &format!("nudge-{n}"),
                s,
                json!([{"product_id": "adult", "quantity": 1}]),
            )
            .await
            .expect("hold");
        assert_eq!(status, reqwest::StatusCode::CREATED, "{hold}");
        // The change went out (to the closed stream too).
        assert_eq!(second.next().await.event, "changed");
    }
}
