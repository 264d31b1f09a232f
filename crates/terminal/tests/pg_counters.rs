//! Counters on the PostgreSQL backend, with real counter engines and two
//! server processes on one throw-away cluster, as a museum behind a proxy
//! would run it: counters syncing to different processes and online buyers
//! sell a slot to its last place and never oversell; a round sent to both
//! processes at once stores each sale once; both processes agree on what is
//! sold; a revoked lease returns its places and a late sale from it is
//! flagged over capacity; a void approved by a supervisor gives its places
//! back; a round that waits past `lock_timeout` for a slot row another
//! session holds is a 503 that stores nothing, and the counter's next round
//! goes through. Every count is taken in PostgreSQL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::clock::Clock;
use tessera_core::slot::SlotId;
use tessera_server::testkit::{slot, wait_for, Api, HeldLocks, PgCluster, PgMuseum, PgServer};
use tessera_terminal::views::{PaymentRequest, SaleRequest};
use tessera_terminal::Terminal;

const WITHIN: Duration = Duration::from_secs(30);

struct Counter {
    dir: tempfile::TempDir,
    t: Terminal,
}

/// Enrols a counter through `server` (where its rounds go) and opens
/// Camille's shift.
async fn counter(museum: &PgMuseum, server: &PgServer, name: &str) -> Counter {
    let dir = tempfile::tempdir().expect("temp dir");
    let code = museum.admin_ok(&["enrol", "--role", "counter", "--name", name]);
    let clock = Clock::with_offset_secs(museum.offset_secs);
    let t = match Terminal::enrol_with_clock(dir.path(), &server.url, &code, name, clock).await {
        Ok(t) => t,
        // Enrolled, and its first counter round done; only the gate round
        // that follows it failed (see `round`).
        Err(e) if gates_not_ported(&e) => {
            Terminal::open_with_clock(dir.path(), clock).expect("open")
        }
        Err(e) => panic!("enrol: {e}"),
    };
    t.open_shift("1111", 20_000).expect("open shift");
    Counter { dir, t }
}

/// Gates are being ported to PostgreSQL separately: until they are, the
/// gate round a counter runs after its counter round answers 501.
fn gates_not_ported(e: &tessera_terminal::TerminalError) -> bool {
    e.to_string()
        .contains("gate sync is not available on the PostgreSQL backend")
}

/// One sync of the counter (its counter round, then its gate round).
async fn round(t: &Terminal) {
    match t.sync_now().await {
        Ok(_) => {}
        Err(e) if gates_not_ported(&e) => {}
        Err(e) => panic!("sync: {e}"),
    }
}

fn adults(s: SlotId, n: u32) -> SaleRequest {
    SaleRequest {
        slot_id: s,
        items: vec![tessera_core::pricing::CartLine {
            product_id: "adult".into(),
            quantity: n,
            membership_numbers: vec![],
        }],
        payment: PaymentRequest::Card,
    }
}

fn lease_left(t: &Terminal, s: SlotId) -> u32 {
    t.slots_today()
        .expect("slots")
        .into_iter()
        .find(|v| v.slot_id == s)
        .map(|v| v.lease_left)
        .unwrap_or(0)
}

fn token_of(c: &Counter) -> String {
    let conn = rusqlite::Connection::open(c.dir.path().join("terminal.db")).expect("terminal db");
    let json: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| {
            r.get(0)
        })
        .expect("identity");
    let v: Value = serde_json::from_str(&json).expect("identity json");
    v["token"].as_str().expect("token").to_string()
}

/// Posts what the counter's next round would send, to any process.
async fn post_round(api: &Api, token: &str, c: &Counter) -> (StatusCode, Value) {
    let body = c.t.pending_sync_request().expect("a round to send");
    api.post_raw(
        "/v1/sync",
        &[("authorization", &format!("Bearer {token}"))],
        &serde_json::to_string(&body).expect("body"),
    )
    .await
    .expect("the server answered")
}

fn set_capacity(museum: &PgMuseum, s: SlotId, to: u32) {
    museum.admin_ok(&[
        "capacity",
        "--slot",
        &s.to_string(),
        "--set",
        &to.to_string(),
    ]);
}

/// The slot as `api` shows it: (available, sold).
async fn shown(api: &Api, s: SlotId) -> (u64, u64) {
    let body = api.availability(s.date).await;
    let row = body["slots"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["slot_id"] == s.to_string()).cloned())
        .unwrap_or_else(|| panic!("slot {s} not in {body}"));
    (
        row["available"].as_u64().expect("available"),
        row["sold"].as_u64().expect("sold"),
    )
}

/// Places sold online and at counters (not voided), in PostgreSQL.
fn sold_in_pg(pg: &PgCluster, s: SlotId) -> (i64, i64) {
    let online = pg.count(&format!(
        "SELECT sold_online FROM slots WHERE slot_id = '{s}'"
    ));
    let counters = pg.count(&format!(
        "SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE slot_id = '{s}' AND voided_at IS NULL"
    ));
    (online, counters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_on_two_processes_and_online_buyers_sell_out_a_slot_and_never_oversell() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let s = slot(museum.day, "14:00");
    const CAPACITY: i64 = 40;
    set_capacity(&museum, s, CAPACITY as u32);
    let one = counter(&museum, &a, "Desk 1").await;
    let two = counter(&museum, &b, "Desk 2").await;

    // Counters sell one place at a time, syncing after each sale (a round
    // asks for more lease when one runs out); buyers book one place at a
    // time on each process; all stop once PostgreSQL counts the slot full.
    let done = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(90);
    let sell = |c: &Counter| {
        let (t, done) = (c.t.clone(), done.clone());
        async move {
            let mut sold = 0u32;
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                match t.sell(adults(s, 1)).await {
                    Ok(_) => sold += 1,
                    // Out of lease: the next round asks for more.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
                round(&t).await;
            }
            sold
        }
    };
    let buy = |api: Api, who: &'static str| {
        let done = done.clone();
        async move {
            let mut bought = 0u32;
            let mut n = 0;
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                n += 1;
                let (status, body) = api
                    .buy(
                        &format!("{who}-{n}"),
                        s,
                        json!([{"product_id": "adult", "quantity": 1}]),
                    )
                    .await
                    .expect("buy");
                match status {
                    StatusCode::CREATED => bought += 1,
                    // Sold out for now: counters may still give places back.
                    StatusCode::CONFLICT => tokio::time::sleep(Duration::from_millis(20)).await,
                    other => panic!("{who}: {other} {body}"),
                }
            }
            bought
        }
    };
    let watch = {
        let done = done.clone();
        let pg = &pg;
        async move {
            wait_for(
                "the slot to be sold out",
                Duration::from_secs(90),
                || async {
                    let (online, counters) = sold_in_pg(pg, s);
                    assert!(
                        online + counters <= CAPACITY,
                        "oversold: {online} online + {counters} at counters > {CAPACITY}"
                    );
                    (online + counters == CAPACITY).then_some(())
                },
            )
            .await;
            done.store(true, Ordering::SeqCst);
        }
    };
    let (sold_one, sold_two, (), bought_a, bought_b) = tokio::join!(
        sell(&one),
        sell(&two),
        watch,
        buy(a.api(), "a"),
        buy(b.api(), "b")
    );
    // Whatever a counter sold last is uploaded by its next round.
    for c in [&one, &two] {
        round(&c.t).await;
        assert_eq!(c.t.status().expect("status").pending_sales, 0);
    }
    let (online, counters) = sold_in_pg(&pg, s);
    assert_eq!(online + counters, CAPACITY, "sold to the last place");
    assert!(sold_one > 0 && sold_two > 0, "{sold_one} {sold_two}");
    assert_eq!(online, i64::from(bought_a + bought_b));
    assert!(online > 0, "online buyers got places too");
    assert_eq!(
        pg.count(&format!(
            "SELECT sold_online + held_online + leased FROM slots WHERE slot_id = '{s}'"
        )),
        CAPACITY
    );
    // Every counter sale stored once, with its tickets.
    assert_eq!(counters, i64::from(sold_one + sold_two));
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM tickets WHERE sale_id IS NOT NULL"),
        counters
    );
    // Both processes show the slot full, with what was sold.
    for (api, who) in [(a.api(), "A"), (b.api(), "B")] {
        wait_for(
            &format!("{who} to show the slot sold out"),
            WITHIN,
            || async { (shown(&api, s).await == (0, CAPACITY as u64)).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_sent_to_both_processes_at_once_stores_each_sale_once() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let s = slot(museum.day, "15:00");
    let c = counter(&museum, &a, "Desk 1").await;
    assert!(lease_left(&c.t, s) >= 5, "{}", lease_left(&c.t, s));
    // Offline, five sales.
    for _ in 0..5 {
        c.t.sell(adults(s, 1)).await.expect("sell from the lease");
    }
    let token = token_of(&c);
    // The proxy (or a retry after a lost answer) sends the same round to
    // both processes at once: each answers, one stores, one recognises.
    let (api_a, api_b) = (a.api(), b.api());
    let ((status_a, body_a), (status_b, body_b)) = tokio::join!(
        post_round(&api_a, &token, &c),
        post_round(&api_b, &token, &c)
    );
    assert_eq!(status_a, StatusCode::OK, "{body_a}");
    assert_eq!(status_b, StatusCode::OK, "{body_b}");
    for body in [&body_a, &body_b] {
        assert_eq!(body["acked_seq"], 5, "{body}");
    }
    let stored = [&body_a, &body_b].map(|b| b["sales_stored"].as_u64().unwrap_or(99));
    let repeats = [&body_a, &body_b].map(|b| b["sales_duplicate"].as_u64().unwrap_or(99));
    assert_eq!(stored.iter().sum::<u64>(), 5, "{body_a} {body_b}");
    assert_eq!(repeats.iter().sum::<u64>(), 5, "{body_a} {body_b}");
    assert_eq!(pg.count("SELECT COUNT(*) FROM sales"), 5);
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM tickets WHERE sale_id IS NOT NULL"),
        5
    );
    assert_eq!(
        pg.count("SELECT COALESCE(SUM(sold), 0) FROM leases"),
        5,
        "the lease counts each sale once"
    );
    // The counter's own next round changes nothing more.
    round(&c.t).await;
    assert_eq!(c.t.status().expect("status").pending_sales, 0);
    assert_eq!(pg.count("SELECT COUNT(*) FROM sales"), 5);
    // Both processes count the five, online and through the tallies.
    let online = pg.count(&format!(
        "SELECT sold_online FROM slots WHERE slot_id = '{s}'"
    ));
    assert_eq!(online, 0);
    for (api, who) in [(a.api(), "A"), (b.api(), "B")] {
        wait_for(
            &format!("{who} to count the counter's sales"),
            WITHIN,
            || async { (shown(&api, s).await.1 == 5).then_some(()) },
        )
        .await;
    }
    let tally = pg.count(&format!(
        "SELECT COUNT(*) FROM tallies WHERE slot_id = '{s}'"
    ));
    assert_eq!(tally, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_lease_returns_its_places_and_a_late_sale_from_it_is_flagged() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let s = slot(museum.day, "16:00");
    set_capacity(&museum, s, 30);
    let dead = counter(&museum, &a, "Counter 9").await;
    let lease = lease_left(&dead.t, s);
    assert!(lease >= 2, "{lease}");
    let before = shown(&b.api(), s).await.0;
    // Offline, unseen by any process, the counter sells 2 places.
    let late = dead.t.sell(adults(s, 2)).await.expect("sell");

    // The supervisor gives up on it, with the operator's commands.
    let listing = museum.admin_ok(&["leases", "--date", &museum.day.to_string()]);
    let line = listing
        .lines()
        .find(|l| l.contains(&s.to_string()))
        .unwrap_or_else(|| panic!("lease listed: {listing}"));
    assert!(line.contains("Counter 9"), "{listing}");
    let lease_id = line.split_whitespace().next().expect("lease id");
    let out = museum.admin_ok(&["revoke-lease", "--lease", lease_id, "--by", "Inès"]);
    assert!(
        out.contains(&format!("{lease} places back on sale")),
        "{out}"
    );
    // Both processes sell those places at once.
    for (api, who) in [(a.api(), "A"), (b.api(), "B")] {
        wait_for(
            &format!("{who} to offer the revoked places"),
            WITHIN,
            || async { (shown(&api, s).await.0 == before + u64::from(lease)).then_some(()) },
        )
        .await;
    }
    let rest = (before + u64::from(lease)) as u32;
    let mut bought = 0;
    while bought < rest {
        let n = (rest - bought).min(20);
        let (status, body) = b
            .api()
            .buy(
                &format!("sell-out-{bought}"),
                s,
                json!([{"product_id": "adult", "quantity": n}]),
            )
            .await
            .expect("buy");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        bought += n;
    }
    assert_eq!(shown(&b.api(), s).await.0, 0);

    // The counter comes back through the other process: its sale is kept
    // and flagged, and it learns the lease is gone.
    round(&dead.t).await;
    let flagged = pg.count(&format!(
        "SELECT over_capacity FROM sales WHERE sale_id = '{}'",
        late.sale.sale_id
    ));
    assert_eq!(flagged, 2);
    assert_eq!(
        pg.count(&format!(
            "SELECT over_capacity FROM slots WHERE slot_id = '{s}'"
        )),
        2
    );
    assert_eq!(
        pg.count(&format!(
            "SELECT sold_online + held_online + leased FROM slots WHERE slot_id = '{s}'"
        )),
        30,
        "within capacity; the late sale is over it, named, not hidden in it"
    );
    assert_eq!(lease_left(&dead.t, s), 0);
    let err = dead.t.sell(adults(s, 1)).await.expect_err("nothing left");
    assert!(err.to_string().contains("only 0 places left"), "{err}");
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM audit_log WHERE action = 'revoke_lease' AND actor = 'Inès'"),
        1
    );
    // Revoking again changes nothing.
    let again = museum.admin_ok(&["revoke-lease", "--lease", lease_id, "--by", "Inès"]);
    assert!(again.contains("already revoked"), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_void_approved_by_a_supervisor_gives_its_places_back() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let s = slot(museum.day, "15:30");
    let c = counter(&museum, &a, "Desk 3").await;
    assert!(lease_left(&c.t, s) >= 2);
    let sold = c.t.sell(adults(s, 2)).await.expect("sell");
    round(&c.t).await;
    for (api, who) in [(a.api(), "A"), (b.api(), "B")] {
        wait_for(&format!("{who} to count the sale"), WITHIN, || async {
            (shown(&api, s).await.1 == 2).then_some(())
        })
        .await;
    }
    // The supervisor's PIN is checked by the server; the void's round goes
    // to the other process than the sale's.
    c.t.void(sold.sale.sale_id, "9999", "visitor changed their mind")
        .await
        .expect("void");
    let (status, body) = post_round(&b.api(), &token_of(&c), &c).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["voids_acked"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    assert_eq!(
        pg.count(
            "SELECT COUNT(*) FROM counter_voids WHERE places_returned = 1 AND approved_by = 'Inès'"
        ),
        1
    );
    assert_eq!(pg.count("SELECT COALESCE(SUM(sold), 0) FROM leases"), 0);
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM approvals WHERE used_by IS NOT NULL"),
        1
    );
    // The counter's own round acknowledges it again and its lease has the
    // two places back; both processes count the sale no more.
    round(&c.t).await;
    assert_eq!(c.t.status().expect("status").pending_voids, 0);
    // Nothing sold from the lease any more: all it holds is the counter's to
    // sell, as the counter and the server both count it.
    assert_eq!(
        pg.count(&format!(
            "SELECT granted_total - released_total - sold FROM leases WHERE slot_id = '{s}'"
        )),
        i64::from(lease_left(&c.t, s))
    );
    for (api, who) in [(a.api(), "A"), (b.api(), "B")] {
        wait_for(&format!("{who} to count the void"), WITHIN, || async {
            (shown(&api, s).await.1 == 0).then_some(())
        })
        .await;
    }
    assert_eq!(sold_in_pg(&pg, s), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_that_waits_past_the_lock_timeout_is_retried_not_wedged() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve_with("a", "[postgres]\nlock_timeout_ms = 1000\n", &[]);
    let s = slot(museum.day, "15:00");
    let c = counter(&museum, &a, "Desk 1").await;
    for _ in 0..3 {
        c.t.sell(adults(s, 1)).await.expect("sell from the lease");
    }
    // Another session holds the slot's row the round must lock.
    let held = HeldLocks::take(
        &museum.database_url,
        &format!("SELECT 1 FROM slots WHERE slot_id = '{s}' FOR UPDATE"),
    )
    .await;
    let token = token_of(&c);
    let started = Instant::now();
    let (status, body) = post_round(&a.api(), &token, &c).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        c.t.sync_now().await.is_err(),
        "the counter's own round fails"
    );
    assert_eq!(c.t.status().expect("status").pending_sales, 3);
    assert_eq!(pg.count("SELECT COUNT(*) FROM sales"), 0, "nothing stored");
    // Released: the counter's next round goes through, each sale once.
    held.release().await;
    round(&c.t).await;
    assert_eq!(c.t.status().expect("status").pending_sales, 0);
    assert_eq!(pg.count("SELECT COUNT(*) FROM sales"), 3);
    assert_eq!(pg.count("SELECT COALESCE(SUM(sold), 0) FROM leases"), 3);
}

/// `tessera_pg_cached_slots` as `api`'s process reports it.
async fn cached_slots(api: &Api) -> i64 {
    let text = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("tessera_pg_cached_slots "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or_else(|| panic!("no tessera_pg_cached_slots in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_started_days_later_keeps_only_live_slots_and_still_answers_for_older_ones() {
    let pg = PgCluster::start();
    let mut museum = PgMuseum::init(&pg.url(), "09:00");
    let day = museum.day;
    let s = slot(day, "16:00");
    let a = museum.serve("a", &[]);
    let Counter { dir, t } = counter(&museum, &a, "Desk 5").await;
    t.sell(adults(s, 2)).await.expect("sell");
    round(&t).await;
    // Sold at the counter that day but not yet uploaded.
    let late = t.sell(adults(s, 3)).await.expect("sell");
    let (status, body) = a
        .api()
        .buy(
            "then-online",
            s,
            json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await
        .expect("buy");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    drop(t);
    drop(a);

    // Three days later a process starts: it keeps slots from yesterday on.
    museum.offset_secs += 3 * 86_400;
    let b = museum.serve("b", &[]);
    let api = b.api();
    let yesterday = (day + jiff::Span::new().days(2)).to_string();
    let live_in_pg = || {
        pg.count(&format!(
            "SELECT COUNT(*) FROM slots WHERE slot_id >= '{yesterday}T00:00'"
        ))
    };
    // (Its upkeep may be adding the days the horizon moved on to.)
    wait_for("the cache to hold the live slots", WITHIN, || async {
        (cached_slots(&api).await == live_in_pg()).then_some(())
    })
    .await;
    let live = live_in_pg();
    let all = pg.count("SELECT COUNT(*) FROM slots");
    assert!(0 < live && live < all, "{live} of {all}");

    // The older day still answers, from the database: past, with what was
    // sold online and uploaded by the counter.
    let body = api.availability(day).await;
    let row = body["slots"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["slot_id"] == s.to_string()).cloned())
        .unwrap_or_else(|| panic!("slot {s} not in {body}"));
    assert_eq!(row["past"], json!(true), "{row}");
    assert_eq!(row["available"], json!(0), "{row}");
    assert_eq!(row["sold"], json!(3), "{row}");
    // Holding a place on it is refused as past, not as an unknown slot.
    let (status, body) = api
        .hold(
            "too-late",
            s,
            json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await
        .expect("hold");
    assert!(
        !body.to_string().contains("unknown_slot") && status.is_client_error(),
        "{status} {body}"
    );

    // The counter comes back, its clock days on too: the late sale is
    // judged (within its lease) and counted. It reaches the process that
    // runs now (A's address is gone).
    {
        let conn = rusqlite::Connection::open(dir.path().join("terminal.db")).expect("terminal db");
        let json: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| {
                r.get(0)
            })
            .expect("identity");
        let mut identity: Value = serde_json::from_str(&json).expect("identity json");
        identity["server_url"] = json!(b.url);
        conn.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'identity'",
            [identity.to_string()],
        )
        .expect("identity moved");
    }
    let t = Terminal::open_with_clock(dir.path(), Clock::with_offset_secs(museum.offset_secs))
        .expect("open");
    round(&t).await;
    assert_eq!(
        pg.count(&format!(
            "SELECT over_capacity FROM sales WHERE sale_id = '{}'",
            late.sale.sale_id
        )),
        0
    );
    assert_eq!(sold_in_pg(&pg, s), (1, 5));
    let body = api.availability(day).await;
    let sold = body["slots"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["slot_id"] == s.to_string()))
        .map(|v| v["sold"].clone());
    assert_eq!(sold, Some(json!(6)), "{body}");
    // The upload named an older slot; the cache still holds the live ones.
    assert_eq!(cached_slots(&api).await, live_in_pg());
}
