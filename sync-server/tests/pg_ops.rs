//! The PostgreSQL backend's operational limits, as an operator running it
//! on shared PostgreSQL sees them, on a throw-away cluster:
//!
//! - a slot row locked by another session past `lock_timeout` makes a hold
//!   (the writer's group commit) and a checkout (the shop, on the pool)
//!   answer 503 with a JSON error and change nothing; while that checkout
//!   holds the only pooled connection, another request waits at most the
//!   pool's bound and is answered 503; once the row is released the same
//!   requests succeed;
//! - a burst of gate scans, shop requests and holds never opens more
//!   connections than `--pg-connections`, counted in `pg_stat_activity` by
//!   the `application_name` every connection carries;
//! - `/healthz` fails while the listener is disconnected and recovers once
//!   it is back, its view re-read in full.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_server::secrets::new_booking_token;
use tessera_server::testkit::{slot, wait_for, Api, PgCluster, PgMuseum, PgServer};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

const WITHIN: Duration = Duration::from_secs(30);

fn adults(n: u32) -> Value {
    json!([{"product_id": "adult", "quantity": n}])
}

/// A session of the test's own, as another application on the shared
/// database would hold one.
async fn session(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(connection);
    client
}

/// `application_name`s of a server process's connections.
fn names_of(server: &PgServer) -> String {
    format!("tessera {} %", server.pid())
}

async fn connections_by_part(admin: &Client, server: &PgServer) -> BTreeMap<String, i64> {
    admin
        .query(
            "SELECT application_name, count(*) FROM pg_stat_activity
             WHERE application_name LIKE $1 GROUP BY 1",
            &[&names_of(server)],
        )
        .await
        .expect("pg_stat_activity")
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let part = name.rsplit(' ').next().unwrap_or_default().to_string();
            (part, r.get::<_, i64>(1))
        })
        .collect()
}

async fn health(api: &Api) -> StatusCode {
    match api.get("/healthz").await {
        Ok((status, _)) => status,
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

fn assert_unavailable(what: &str, status: StatusCode, body: &Value, took: Duration) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {body}");
    assert_eq!(
        body["error"]["code"], "unavailable",
        "{what}: a JSON error: {body}"
    );
    assert!(
        took < Duration::from_secs(10),
        "{what} answered after {took:?}, not within the limits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_locked_past_the_lock_timeout_is_a_503_that_changes_nothing() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    // One pooled connection (4 in all), a short lock timeout and pool wait.
    let a = museum.serve_with(
        "a",
        "[postgres]\nconnections = 4\nlock_timeout_ms = 1500\npool_wait_ms = 300\n",
        &[],
    );
    let api = a.api();
    let s = slot(museum.day, "11:00");
    let (status, held) = api.hold("before", s, adults(1)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{held}");
    let hold_id = held["hold_id"].as_str().expect("hold id").to_string();
    let counts = |pg: &PgCluster| {
        (
            pg.count(&format!(
                "SELECT held_online FROM slots WHERE slot_id = '{s}'"
            )),
            pg.count("SELECT count(*) FROM holds"),
            pg.count("SELECT count(*) FROM payments"),
            pg.count("SELECT count(*) FROM idempotency"),
        )
    };
    let before = counts(&pg);

    // Another application holds the slot's row in an open transaction.
    let mut other = session(&museum.database_url).await;
    let tx = other.transaction().await.expect("begin");
    tx.execute(
        "SELECT 1 FROM slots WHERE slot_id = $1 FOR UPDATE",
        &[&s.to_string()],
    )
    .await
    .expect("lock the slot row");

    // The writer's batch waits out lock_timeout, then every job in it is
    // answered 503; the writer carries on.
    let started = Instant::now();
    let (status, body) = api.hold("locked", s, adults(2)).await.expect("hold");
    assert_unavailable("a hold on a locked slot", status, &body, started.elapsed());

    // A checkout (the shop, on the pool's only connection) waits for the
    // same row; meanwhile a booking look-up finds no connection free within
    // the pool's bound and is answered 503 at once, not left hanging.
    let checkout = {
        let api = a.api();
        let hold_id = hold_id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (status, body) = api.checkout("pay-1", &hold_id).await.expect("checkout");
            (status, body, started.elapsed())
        })
    };
    let admin = session(&pg.url_of("postgres")).await;
    wait_for("the checkout to wait for the row lock", WITHIN, || async {
        let waiting = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name LIKE $1 AND wait_event_type = 'Lock'",
                &[&names_of(&a)],
            )
            .await
            .expect("pg_stat_activity")
            .get::<_, i64>(0);
        (waiting > 0).then_some(())
    })
    .await;
    let unknown = format!("/v1/bookings/{}", new_booking_token());
    let started = Instant::now();
    let (status, body) = api.get(&unknown).await.expect("booking");
    assert_unavailable(
        "a look-up while the pool is taken",
        status,
        &body,
        started.elapsed(),
    );
    let (status, body, took) = checkout.await.expect("checkout task");
    assert_unavailable("a checkout on a locked slot", status, &body, took);
    assert_eq!(counts(&pg), before, "a timeout changes nothing");
    assert_eq!(health(&api).await, StatusCode::OK);

    // Released: the same requests, with the same keys, go through.
    tx.rollback().await.expect("rollback");
    let (status, body) = api.hold("locked", s, adults(2)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api.checkout("pay-1", &hold_id).await.expect("checkout");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api.get(&unknown).await.expect("booking");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let log = a.log();
    assert!(
        !log.contains("panicked"),
        "the server log shows a panic: {log}"
    );
}

struct Device {
    token: String,
}

async fn enrol_gate(museum: &PgMuseum, api: &Api, name: &str) -> Device {
    let code = museum.admin_ok(&["enrol", "--role", "gate", "--name", name]);
    let (status, body) = api.enrol(&code, name, None).await.expect("enrol");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Device {
        token: body["token"].as_str().expect("token").to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_never_opens_more_connections_than_the_bound() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "11:05");
    let bound: i64 = 5;
    let a = museum.serve("a", &["--pg-connections", &bound.to_string()]);
    let api = a.api();
    let s = slot(museum.day, "11:00");
    let gate = enrol_gate(&museum, &api, "North").await;
    let (status, order) = api.buy("tickets", s, adults(10)).await.expect("buy");
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let codes: Vec<String> = order["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(|t| t["code"].as_str().expect("code").to_string())
        .collect();
    let s2 = slot(museum.day, "14:00");
    museum.admin_ok(&["capacity", "--slot", &s2.to_string(), "--set", "500"]);
    let mut holds = Vec::new();
    for i in 0..20 {
        let (status, hold) = api
            .hold(&format!("h-{i}"), s2, adults(1))
            .await
            .expect("hold");
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        holds.push(hold["hold_id"].as_str().expect("id").to_string());
    }

    // The most connections the process had open, sampled throughout.
    let admin = Arc::new(session(&pg.url_of("postgres")).await);
    let most = Arc::new(AtomicI64::new(0));
    let names = names_of(&a);
    let sampler = {
        let (admin, most) = (admin.clone(), most.clone());
        tokio::spawn(async move {
            loop {
                let n: i64 = admin
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
                        &[&names],
                    )
                    .await
                    .expect("pg_stat_activity")
                    .get(0);
                most.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // Gate scans, checkouts, booking look-ups and holds, all at once.
    let mut tasks = Vec::new();
    for code in codes {
        let (api, token) = (a.api(), gate.token.clone());
        tasks.push(tokio::spawn(async move {
            let (status, body) = api
                .post_raw(
                    "/v1/gate/redeem",
                    &[("authorization", &format!("Bearer {token}"))],
                    &json!({"code": code, "scan_id": Uuid::now_v7()}).to_string(),
                )
                .await
                .expect("redeem answers");
            ("scan", status, body)
        }));
    }
    for (i, hold_id) in holds.into_iter().enumerate() {
        let api = a.api();
        tasks.push(tokio::spawn(async move {
            let (status, body) = api
                .checkout(&format!("c-{i}"), &hold_id)
                .await
                .expect("checkout");
            ("checkout", status, body)
        }));
    }
    for i in 0..40 {
        let api = a.api();
        tasks.push(tokio::spawn(async move {
            let (status, body) = api
                .get(&format!("/v1/bookings/{}", new_booking_token()))
                .await
                .expect("booking");
            ("booking", status, body)
        }));
        let api = a.api();
        tasks.push(tokio::spawn(async move {
            let (status, body) = api
                .hold(&format!("burst-{i}"), s2, adults(1))
                .await
                .expect("hold");
            ("hold", status, body)
        }));
    }
    for task in tasks {
        let (what, status, body) = task.await.expect("task");
        let expected = match what {
            "scan" => StatusCode::OK,
            "checkout" | "hold" => StatusCode::CREATED,
            _ => StatusCode::NOT_FOUND,
        };
        assert_eq!(status, expected, "{what}: {body}");
    }
    sampler.abort();
    let parts = connections_by_part(&admin, &a).await;
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= bound,
        "the process opened {most} connections, more than --pg-connections {bound}; now {parts:?}"
    );
    // Every connection names its part, so an operator sees who holds what.
    for part in ["writer", "listener", "pool"] {
        assert!(
            parts.contains_key(part),
            "no {part} connection in {parts:?}"
        );
    }
    assert!(
        parts
            .keys()
            .all(|p| ["writer", "reader", "listener", "pool"].contains(&p.as_str())),
        "{parts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthz_fails_while_the_listener_is_down_and_recovers_with_a_full_reread() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve("a", &[]);
    let api = a.api();
    let s = slot(museum.day, "11:00");
    assert_eq!(health(&api).await, StatusCode::OK);
    let before = api.available(s).await;

    // Opened while connections are allowed: the other application's
    // session in the museum's database, and the operator's in `postgres`.
    let other = session(&museum.database_url).await;
    let admin = session(&pg.url_of("postgres")).await;
    admin
        .batch_execute("ALTER DATABASE tessera ALLOW_CONNECTIONS false")
        .await
        .expect("refuse new connections");
    let terminated = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1",
            &[&format!("tessera {} listener", a.pid())],
        )
        .await
        .expect("terminate the listener")
        .get::<_, i64>(0);
    assert_eq!(terminated, 1, "one listener connection");
    // A change the listener cannot hear about while it is away.
    other
        .execute(
            "UPDATE slots SET capacity = capacity + 7, version = version + 1 WHERE slot_id = $1",
            &[&s.to_string()],
        )
        .await
        .expect("raise the capacity");
    other
        .batch_execute("NOTIFY tessera_changes, 'slots:*'")
        .await
        .expect("notify");

    wait_for("/healthz to fail without a listener", WITHIN, || async {
        (health(&api).await == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    let (status, body) = api.get("/healthz").await.expect("healthz");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(
        api.available(s).await,
        before,
        "the view is stale meanwhile"
    );

    admin
        .batch_execute("ALTER DATABASE tessera ALLOW_CONNECTIONS true")
        .await
        .expect("allow connections again");
    wait_for("/healthz to recover", WITHIN, || async {
        (health(&api).await == StatusCode::OK).then_some(())
    })
    .await;
    // Healthy again means re-read: the change made while it was away shows.
    assert_eq!(api.available(s).await, before + 7);
    assert!(
        a.log().contains("PostgreSQL listener"),
        "the log says why: {}",
        a.log()
    );
}
