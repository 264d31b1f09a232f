//! The PostgreSQL backend's online path, with two real server processes on
//! one throw-away cluster: the last places of a slot raced from both are
//! never oversold and every 201 has its order exactly once; one
//! Idempotency-Key sent to both processes makes one hold and one order; an
//! expired hold is released once whichever process sweeps; a sale on one
//! process shows in the other's availability; a miscounted slot never stops
//! the sweep; an unknown booking link is a JSON 404.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::slot::SlotId;
use tessera_server::testkit::{slot, wait_for, Api, PgCluster, PgMuseum};

const WITHIN: Duration = Duration::from_secs(30);

/// The operator's `capacity --database` command.
fn capacity(museum: &PgMuseum, s: SlotId, to: u32) -> std::process::Output {
    museum.cli(&[
        "capacity",
        "--database",
        &museum.database_url,
        "--slot",
        &s.to_string(),
        "--set",
        &to.to_string(),
    ])
}

/// Sets a slot's capacity with the operator's command; the running
/// processes follow through NOTIFY.
fn set_capacity(museum: &PgMuseum, s: SlotId, to: u32) {
    let out = capacity(museum, s, to);
    assert!(
        out.status.success(),
        "capacity failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_available(api: &Api, s: SlotId, expected: u64, who: &str) {
    wait_for(
        &format!("{who} to show {expected} places left in {s}"),
        WITHIN,
        || async { (api.available(s).await == expected).then_some(()) },
    )
    .await
}

fn adults(n: u32) -> Value {
    json!([{"product_id": "adult", "quantity": n}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_racing_for_the_last_places_never_oversell() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve("a", &[]);
    let b = museum.serve("b", &[]);
    let s = slot(museum.day, "11:00");
    set_capacity(&museum, s, 12);
    wait_available(&a.api(), s, 12, "A").await;
    wait_available(&b.api(), s, 12, "B").await;

    // 80 visitors for 12 places, half on each process; each confirms on
    // the other process than the one that held.
    let mut tasks = Vec::new();
    for i in 0..80 {
        let (hold_on, confirm_on) = if i % 2 == 0 {
            (a.api(), b.api())
        } else {
            (b.api(), a.api())
        };
        tasks.push(tokio::spawn(async move {
            let (status, hold) = hold_on
                .hold(&format!("h-{i}"), s, adults(1))
                .await
                .expect("hold");
            if status != StatusCode::CREATED {
                assert_eq!(status, StatusCode::CONFLICT, "{hold}");
                assert_eq!(hold["error"]["code"], "sold_out", "{hold}");
                return None;
            }
            let hold_id = hold["hold_id"].as_str().expect("hold id").to_string();
            let (status, order) = confirm_on
                .confirm(&format!("c-{i}"), &hold_id)
                .await
                .expect("confirm");
            assert_eq!(status, StatusCode::CREATED, "{order}");
            Some(order)
        }));
    }
    let mut orders = Vec::new();
    for t in tasks {
        if let Some(order) = t.await.expect("visitor task") {
            orders.push(order);
        }
    }

    assert_eq!(orders.len(), 12, "every place sold, none twice");
    let ids: HashSet<String> = orders
        .iter()
        .map(|o| o["order_id"].as_str().expect("order id").to_string())
        .collect();
    assert_eq!(ids.len(), 12, "each 201 names its own order");
    for id in &ids {
        assert_eq!(
            pg.count(&format!(
                "SELECT COUNT(*) FROM orders WHERE order_id = '{id}'"
            )),
            1,
            "order {id} stored once"
        );
    }
    let where_slot = format!("WHERE slot_id = '{s}'");
    assert_eq!(
        pg.count(&format!("SELECT COUNT(*) FROM orders {where_slot}")),
        12
    );
    assert_eq!(
        pg.count(&format!("SELECT COUNT(*) FROM tickets {where_slot}")),
        12
    );
    assert_eq!(
        pg.count(&format!("SELECT sold_online FROM slots {where_slot}")),
        12
    );
    assert_eq!(
        pg.count(&format!("SELECT held_online FROM slots {where_slot}")),
        0
    );
    wait_available(&a.api(), s, 0, "A").await;
    wait_available(&b.api(), s, 0, "B").await;

    // The last line of defence: the database itself refuses a write that
    // would sell beyond capacity, whoever sends it.
    let refused = pg.try_psql(
        "tessera",
        &format!("UPDATE slots SET sold_online = sold_online + 1 {where_slot}"),
    );
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("slots_never_oversold")),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_to_both_processes_makes_one_order() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve("a", &[]);
    let b = museum.serve("b", &[]);
    let (a, b) = (a.api(), b.api());
    let s = slot(museum.day, "14:00");

    // The same hold request with one key, to both at once: one hold.
    let (first, second) = tokio::join!(
        a.hold("same-hold", s, adults(2)),
        b.hold("same-hold", s, adults(2))
    );
    let (first, second) = (first.expect("hold on A"), second.expect("hold on B"));
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    assert_eq!(second.0, StatusCode::CREATED, "{}", second.1);
    assert_eq!(first.1["hold_id"], second.1["hold_id"]);
    assert_eq!(pg.count("SELECT COUNT(*) FROM holds"), 1);
    let hold_id = first.1["hold_id"].as_str().expect("hold id").to_string();

    // The same confirm with one key, to both at once: one order.
    let (first, second) = tokio::join!(
        a.confirm("same-confirm", &hold_id),
        b.confirm("same-confirm", &hold_id)
    );
    let (first, second) = (first.expect("confirm on A"), second.expect("confirm on B"));
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    assert_eq!(second.0, StatusCode::CREATED, "{}", second.1);
    assert_eq!(first.1["order_id"], second.1["order_id"]);
    assert_eq!(first.1["tickets"], second.1["tickets"]);
    assert_eq!(pg.count("SELECT COUNT(*) FROM orders"), 1);
    assert_eq!(pg.count("SELECT COUNT(*) FROM tickets"), 2);

    // A retry later, on either process, replays; the key with another
    // request is refused.
    let (status, again) = b.confirm("same-confirm", &hold_id).await.expect("retry");
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["order_id"], first.1["order_id"]);
    let (status, reused) = a.hold("same-hold", s, adults(3)).await.expect("reused key");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reused}");
    assert_eq!(pg.count("SELECT COUNT(*) FROM orders"), 1);
    assert_eq!(
        pg.count(&format!(
            "SELECT sold_online FROM slots WHERE slot_id = '{s}'"
        )),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_hold_is_released_once_whichever_process_sweeps() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve("a", &["--hold-ttl-secs", "1"]);
    let b = museum.serve("b", &["--hold-ttl-secs", "1"]);
    let (a, b) = (a.api(), b.api());
    let s = slot(museum.day, "15:00");
    set_capacity(&museum, s, 10);
    wait_available(&a, s, 10, "A").await;
    wait_available(&b, s, 10, "B").await;

    let (status, on_a) = a.hold("exp-a", s, adults(3)).await.expect("hold on A");
    assert_eq!(status, StatusCode::CREATED, "{on_a}");
    let (status, on_b) = b.hold("exp-b", s, adults(2)).await.expect("hold on B");
    assert_eq!(status, StatusCode::CREATED, "{on_b}");

    wait_for("both holds to be swept", WITHIN, || async {
        (pg.count("SELECT COUNT(*) FROM holds WHERE status = 'expired'") == 2).then_some(())
    })
    .await;
    let where_slot = format!("WHERE slot_id = '{s}'");
    assert_eq!(
        pg.count(&format!("SELECT held_online FROM slots {where_slot}")),
        0
    );
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM holds WHERE released_by IS NOT NULL"),
        2,
        "each hold names the process that released it"
    );
    wait_available(&a, s, 10, "A").await;
    wait_available(&b, s, 10, "B").await;

    // Confirming an expired hold, on the other process, gives nothing back twice.
    let hold_id = on_a["hold_id"].as_str().expect("hold id");
    let (status, refused) = b.confirm("exp-confirm", hold_id).await.expect("confirm");
    assert_eq!(status, StatusCode::GONE, "{refused}");
    assert_eq!(
        pg.count(&format!("SELECT held_online FROM slots {where_slot}")),
        0
    );
    assert_eq!(a.available(s).await, 10);
    assert_eq!(pg.count("SELECT COUNT(*) FROM orders"), 0);
}

/// A slot whose held count no longer covers its open holds (a hand-edited
/// row, a bug) must not stop the sweep: its hold closes with its places left
/// counted (selling less, never more, and an error in the log), and every
/// other slot's expired holds are still released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miscounted_slot_never_stops_the_sweep_of_the_others() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let server = museum.serve("a", &["--hold-ttl-secs", "4"]);
    let api = server.api();
    let (bad, good) = (slot(museum.day, "14:00"), slot(museum.day, "15:00"));
    set_capacity(&museum, bad, 10);
    set_capacity(&museum, good, 10);
    wait_available(&api, good, 10, "the server").await;

    // The miscount must land while the hold is still open: a sweep that won
    // the race first leaves nothing to miscount, and the round starts again.
    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(attempt <= 5, "never miscounted an open hold in time");
        let (status, body) = api
            .hold(&format!("bad-{attempt}"), bad, adults(3))
            .await
            .expect("hold");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let changed = pg
            .query(&format!(
                "UPDATE slots SET held_online = held_online - 2 WHERE slot_id = '{bad}'
                 AND EXISTS (SELECT 1 FROM holds WHERE slot_id = '{bad}' AND status = 'held'
                             AND hold_id = '{}') RETURNING slot_id",
                body["hold_id"].as_str().expect("hold id")
            ))
            .expect("miscount");
        if changed.len() == 1 {
            break;
        }
    }
    let (status, body) = api.hold("good", good, adults(2)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{body}");

    wait_for("every hold to be swept", WITHIN, || async {
        (pg.count("SELECT COUNT(*) FROM holds WHERE status = 'held'") == 0).then_some(())
    })
    .await;
    assert_eq!(
        pg.count(&format!(
            "SELECT held_online FROM slots WHERE slot_id = '{good}'"
        )),
        0,
        "the other slot's places came back"
    );
    assert_eq!(
        pg.count(&format!(
            "SELECT held_online FROM slots WHERE slot_id = '{bad}'"
        )),
        1,
        "the miscounted slot keeps what it still counted as held"
    );
    wait_available(&api, good, 10, "the server").await;
    wait_for("the miscount in the log", WITHIN, || async {
        server
            .log()
            .contains("did not match its slot's held count")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_on_one_process_shows_in_the_others_availability() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve("a", &[]);
    let b = museum.serve("b", &[]);
    let (a, b) = (a.api(), b.api());
    let s = slot(museum.day, "16:00");
    let before = b.available(s).await;
    assert!(before >= 4, "the demo slot has room");

    let (status, hold) = a.hold("sale-hold", s, adults(4)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    wait_available(&b, s, before - 4, "B (held on A)").await;
    let hold_id = hold["hold_id"].as_str().expect("hold id");
    let (status, order) = a.confirm("sale-confirm", hold_id).await.expect("confirm");
    assert_eq!(status, StatusCode::CREATED, "{order}");
    // The hold already took the places, so B's count of places left does
    // not move on the confirmation; wait for B to count them as sold.
    wait_for("B to count the 4 places sold on A", WITHIN, || async {
        let availability = b.availability(museum.day).await;
        let sold = availability["slots"]
            .as_array()
            .and_then(|list| list.iter().find(|x| x["slot_id"] == s.to_string()))
            .map(|x| x["sold"].clone());
        (sold == Some(json!(4))).then_some(())
    })
    .await;
    assert_eq!(b.available(s).await, before - 4, "sold, no longer held");

    // Cancelling a hold on B gives its places back on A.
    let (status, hold) = b.hold("cancel-hold", s, adults(2)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    wait_available(&a, s, before - 6, "A (held on B)").await;
    let (status, _) = b
        .cancel(hold["hold_id"].as_str().expect("hold id"))
        .await
        .expect("cancel");
    assert!(status.is_success(), "{status}");
    wait_available(&a, s, before - 4, "A (cancelled on B)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_processes_carry_on_after_postgres_restarts() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve("a", &[]);
    let b = museum.serve("b", &[]);
    let (a, b) = (a.api(), b.api());
    let s = slot(museum.day, "12:00");
    let before = b.available(s).await;

    // A fast shutdown drops every connection: the writers and listeners of
    // both processes reconnect by themselves. Until they have, a write may
    // be answered 503; a client retries with the same key.
    pg.restart_fast();
    let hold = wait_for("a hold on A after the restart", WITHIN, || async {
        match a.hold("after-restart", s, adults(2)).await {
            Ok((StatusCode::CREATED, body)) => Some(body),
            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) | Err(_) => None,
            Ok((status, body)) => panic!("hold after the restart: {status} {body}"),
        }
    })
    .await;
    // B's listener re-read the slots after reconnecting.
    wait_available(&b, s, before - 2, "B after the restart").await;
    let hold_id = hold["hold_id"].as_str().expect("hold id").to_string();
    let order = wait_for("a confirm on B after the restart", WITHIN, || async {
        match b.confirm("after-restart-confirm", &hold_id).await {
            Ok((StatusCode::CREATED, body)) => Some(body),
            Ok((StatusCode::SERVICE_UNAVAILABLE, _)) | Err(_) => None,
            Ok((status, body)) => panic!("confirm after the restart: {status} {body}"),
        }
    })
    .await;
    assert_eq!(
        order["tickets"].as_array().map(Vec::len),
        Some(2),
        "{order}"
    );
    assert_eq!(pg.count("SELECT COUNT(*) FROM orders"), 1);
    let (status, _) = a.get("/healthz").await.expect("healthz");
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_booking_link_is_not_found_and_health_and_keys_answer() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve("a", &[]);
    let token = "a".repeat(tessera_server::secrets::LINK_TOKEN_CHARS);
    let (status, body) = a
        .api()
        .get(&format!("/v1/bookings/{token}"))
        .await
        .expect("my booking");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let (status, health) = a.api().get("/healthz").await.expect("healthz");
    assert_eq!(status, StatusCode::OK, "{health}");
    let (status, keys) = a.api().get("/v1/keys").await.expect("keys");
    assert_eq!(status, StatusCode::OK, "{keys}");
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
}

/// A batch is decided together; when that fails, its jobs run again one at
/// a time, each under its own savepoint, so a job that fails in the
/// database is rolled back alone and answered 500 (with its request's own
/// id), and every other job of its batch commits; a refusal worth keeping is
/// answered the same on a retry with its key, and a sold-out is decided
/// afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_failing_in_the_database_fails_alone_and_refusals_replay() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve("a", &[]);
    let b = museum.serve("b", &["--hold-ttl-secs", "1"]);
    let api = a.api();
    let s = slot(museum.day, "14:00");
    set_capacity(&museum, s, 40);
    wait_available(&api, s, 40, "A").await;
    // A fault only a hold of 7 places meets, as a broken row or a bug would.
    pg.psql(
        "tessera",
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.admissions = 7 THEN RAISE EXCEPTION 'poisoned hold'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER poison BEFORE INSERT ON holds FOR EACH ROW EXECUTE FUNCTION poison();",
    );

    let mut tasks = Vec::new();
    for i in 0..30u32 {
        let api = api.clone();
        let (key, n) = if i == 15 {
            ("poisoned".to_string(), 7)
        } else {
            (format!("good-{i}"), 1)
        };
        tasks.push(tokio::spawn(async move {
            let reply = api.hold(&key, s, adults(n)).await.expect("hold");
            (n, reply)
        }));
    }
    let mut created = 0;
    for t in tasks {
        let (n, (status, body)) = t.await.expect("visitor task");
        if n == 7 {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
            let id = body["error"]["request_id"].as_str().expect("a request id");
            // One id for the answer, its message and the log's lines.
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(id)),
                "{body}"
            );
        } else {
            assert_eq!(status, StatusCode::CREATED, "{body}");
            created += 1;
        }
    }
    assert_eq!(created, 29);
    // The batch holding it was decided together first, then one at a time.
    assert!(
        a.log().contains("running its jobs one at a time"),
        "{}",
        a.log()
    );
    let where_slot = format!("WHERE slot_id = '{s}'");
    assert_eq!(
        pg.count(&format!("SELECT held_online FROM slots {where_slot}")),
        29,
        "the failed job took no places"
    );
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM holds WHERE admissions = 7"),
        0
    );
    // The operator cannot take away places that are held.
    let out = capacity(&museum, s, 20);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("29"), "{said}");
    assert_eq!(
        pg.count(&format!("SELECT capacity FROM slots {where_slot}")),
        40
    );

    // The failure was not recorded under its key: once the fault is gone,
    // the same request with the same key is served.
    pg.psql("tessera", "DROP TRIGGER poison ON holds");
    let (status, body) = api.hold("poisoned", s, adults(7)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Sold out is not final: the same key is decided again after places
    // come back.
    let (status, body) = api.hold("later", s, adults(5)).await.expect("hold");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "sold_out", "{body}");
    set_capacity(&museum, s, 45);
    wait_available(&api, s, 9, "A").await;
    let (status, body) = api.hold("later", s, adults(5)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A hold that ran out (on B, whose holds last a second) is refused with
    // 410, and that answer is kept: a retry with the key gets the same.
    let api = b.api();
    let (status, body) = api.hold("short", s, adults(1)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let hold_id = body["hold_id"].as_str().expect("hold id").to_string();
    wait_for("the hold to run out", WITHIN, || async {
        (pg.count(&format!(
            "SELECT COUNT(*) FROM holds WHERE hold_id = '{hold_id}' AND status <> 'held'"
        )) == 1)
            .then_some(())
    })
    .await;
    let (status, first) = api.confirm("too-late", &hold_id).await.expect("confirm");
    assert_eq!(status, StatusCode::GONE, "{first}");
    let (status, again) = api.confirm("too-late", &hold_id).await.expect("confirm");
    assert_eq!(status, StatusCode::GONE, "{again}");
    assert_eq!(first, again);
    assert_eq!(pg.count("SELECT COUNT(*) FROM orders"), 0);
}

/// With no server running to sweep them, holds whose time is up still count
/// for nothing when the operator lowers a slot's capacity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capacity_command_releases_holds_that_ran_out() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    // Long enough that the server is gone before the hold runs out.
    let mut a = museum.serve("a", &["--hold-ttl-secs", "3"]);
    let s = slot(museum.day, "16:00");
    set_capacity(&museum, s, 10);
    wait_available(&a.api(), s, 10, "A").await;
    let (status, body) = a.api().hold("left", s, adults(6)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    a.kill();

    // Refused while the hold runs, accepted once it has run out.
    wait_for("the hold to run out", WITHIN, || async {
        capacity(&museum, s, 5).status.success().then_some(())
    })
    .await;
    let where_slot = format!("WHERE slot_id = '{s}'");
    assert_eq!(
        pg.count(&format!("SELECT held_online FROM slots {where_slot}")),
        0
    );
    assert_eq!(
        pg.count(&format!("SELECT capacity FROM slots {where_slot}")),
        5
    );
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM holds WHERE status = 'expired' AND released_by = 'capacity command'"),
        1
    );
}

/// A key is claimed with the job's 201 answer in one write; a job the batch
/// then refuses must leave the refusal (kept) or nothing (sold out), never
/// that 201, and each process replays what the first use answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_claimed_with_its_answer_replays_the_first_answer_on_every_process() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve("a", &[]);
    let b = museum.serve("b", &[]);
    let (a, b) = (a.api(), b.api());
    let s = slot(museum.day, "15:00");
    set_capacity(&museum, s, 1);
    wait_available(&a, s, 1, "A").await;
    wait_available(&b, s, 1, "B").await;

    let (status, first) = a.hold("taken", s, adults(1)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = b.hold("taken", s, adults(1)).await.expect("retry");
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(first, again);

    // Sold out: claimed with a 201 inside the batch, then forgotten.
    let (status, body) = b.hold("too-many", s, adults(1)).await.expect("hold");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(pg.count("SELECT COUNT(*) FROM idempotency"), 1);

    // A refusal worth keeping is stored in place of the 201 it was claimed
    // with: the hold confirmed, then confirmed again under another key.
    let hold_id = first["hold_id"].as_str().expect("hold id").to_string();
    let (status, order) = a.confirm("pay", &hold_id).await.expect("confirm");
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let (status, refused) = b.confirm("pay-twice", &hold_id).await.expect("confirm");
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "already_confirmed", "{refused}");
    let (again_status, again) = a.confirm("pay-twice", &hold_id).await.expect("retry");
    assert_eq!(again_status, status);
    assert_eq!(again, refused);
    let (status, again) = b.confirm("pay", &hold_id).await.expect("retry");
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["order_id"], order["order_id"]);

    // An unknown hold is not kept: its key is forgotten.
    let unknown = "01890000-0000-7000-8000-000000000000";
    let (status, body) = b.confirm("no-such-hold", unknown).await.expect("confirm");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    assert_eq!(
        pg.count("SELECT COUNT(*) FROM idempotency WHERE status = 201"),
        2,
        "the hold's and the first confirm's keys"
    );
    assert_eq!(pg.count("SELECT COUNT(*) FROM idempotency"), 3);
    assert_eq!(pg.count("SELECT COUNT(*) FROM orders"), 1);
}
