//! A counter's uploads never wedge: each sale is judged against its lease as
//! it stood at the sale's seq, a sale the server cannot accept goes to
//! quarantine (acknowledged, shown to the supervisor, counted on the
//! counter's status bar), malformed bodies get a 4xx, never a 5xx, and the
//! server decides from its own clock and its gates whether a void returns
//! places.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::clock::Clock;
use tessera_server::testkit::{slot, ServerProcess};
use tessera_terminal::Terminal;

async fn day_report(server: &ServerProcess, c: &Counter) -> Value {
    let api = server.api();
    let reply = api
        .http
        .get(format!("{}/v1/reports/day?date={}", api.base, server.day))
        .header("authorization", format!("Bearer {}", token_of(c)))
        .header("x-supervisor-pin", "9999")
        .send()
        .await
        .expect("report");
    assert_eq!(reply.status(), StatusCode::OK);
    reply.json().await.expect("report json")
}

fn token_in(dir: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open(dir.join("terminal.db")).expect("terminal db");
    let json: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| {
            r.get(0)
        })
        .expect("identity");
    let v: Value = serde_json::from_str(&json).expect("identity json");
    v["token"].as_str().expect("token").to_string()
}

fn slot_line(report: &Value, slot: &str) -> Value {
    report["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .find(|l| l["slot_id"] == slot)
        .cloned()
        .expect("slot line")
}

/// The counter's uploads arrive in two rounds (as after an outage longer than
/// one round of 500 sales), and between its sales and its upload it voided
/// the last sale and its slot closed, so its lease was settled down to what
/// it kept. The second round used to be refused ("goes beyond its lease")
/// and retried for ever; a void reason of 170 CJK characters likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_round_after_a_void_and_a_slot_close_is_accepted() {
    let server = ServerProcess::start_at("11:05", &[]);
    let s = slot(server.day, "12:00");
    let c = counter(&server, "Counter 1").await;
    assert!(lease_left(&c.t, s) >= 3);
    let mut sales = Vec::new();
    for _ in 0..3 {
        sales.push(c.t.sell(card_sale(s, &[("adult", 1)])).await.unwrap());
    }
    let reason = "展".repeat(170);
    c.t.void(sales[2].sale.sale_id, "9999", &reason)
        .await
        .unwrap();

    // Hours later, by the counter's clock, the 12:00 slot is over: the next
    // sync settles its lease to the 2 places it kept.
    let dir = c.dir.path().to_path_buf();
    let later = Clock::with_offset_secs(server.offset_secs + 3 * 3600);
    drop(c.t);
    let t = Terminal::open_with_clock(&dir, later).unwrap();
    let body = t.pending_sync_request().unwrap();
    let report = body.leases.iter().find(|l| l.slot_id == s).unwrap();
    assert_eq!(report.granted_total - report.released_total, 2);

    // First round: sales 1-2 and the settled lease.
    let mut first = body.clone();
    first.sales.retain(|x| x.terminal_seq <= 2);
    first.voids.retain(|v| v.after_seq <= 2);
    let (status, reply) = post_sync(&server, &token_in(&dir), &first).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["acked_seq"], 2);

    // Second round, by the counter itself: sale 3 and its void.
    let summary = t.sync_now().await.expect("second round accepted");
    assert_eq!(summary.acked_seq, 3);
    assert_eq!(summary.needs_supervisor, 0);
    let status = t.status().unwrap();
    assert_eq!(status.pending_sales, 0);
    assert_eq!(status.pending_voids, 0);
    assert_eq!(
        server_count(&server, "SELECT COUNT(*) FROM counter_voids"),
        1
    );
    assert_eq!(server_count(&server, "SELECT COUNT(*) FROM quarantine"), 0);
}

/// A sale whose total does not match the catalogue is quarantined with its
/// reason: the sales after it are stored, the counter's acknowledged seq
/// moves past it, its status bar says a supervisor is needed, and the day
/// report lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_the_server_cannot_accept_is_quarantined_not_retried() {
    let server = ServerProcess::start_at("11:05", &[]);
    let s = slot(server.day, "14:00");
    let c = counter(&server, "Counter 1").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            c.t.sell(card_sale(s, &[("adult", 1)]))
                .await
                .unwrap()
                .sale
                .sale_id,
        );
    }
    // A counter that charged 0.01 for an adult ticket.
    let local = rusqlite::Connection::open(c.dir.path().join("terminal.db")).unwrap();
    local
        .execute(
            "UPDATE sales SET total = 1 WHERE sale_id = ?1",
            [ids[1].to_string()],
        )
        .unwrap();

    let summary = c.t.sync_now().await.expect("never refused as a whole");
    assert_eq!(summary.acked_seq, 3);
    assert_eq!(summary.needs_supervisor, 1);
    let status = c.t.status().unwrap();
    assert_eq!(status.needs_supervisor, 1);
    assert_eq!(status.pending_sales, 0);
    assert_eq!(server_count(&server, "SELECT COUNT(*) FROM sales"), 2);
    let reason = server.query_one(&format!(
        "SELECT reason FROM quarantine WHERE item_id = '{}' AND kind = 'sale'",
        ids[1]
    ));
    assert!(reason.contains("differs from the catalogue"), "{reason}");

    // Syncing again sends nothing twice and changes nothing.
    let books = server_books(&server);
    c.t.sync_now().await.unwrap();
    assert_eq!(server_books(&server), books);

    let report = day_report(&server, &c).await;
    let q = report["quarantine"].as_array().expect("quarantine section");
    assert_eq!(q.len(), 1, "{report}");
    assert_eq!(q[0]["kind"], "sale");
    assert_eq!(q[0]["terminal_seq"], 2);
    assert_eq!(q[0]["counter"], "Counter 1");

    // A supervisor deals with it (refunds the visitor, say) and says so: it
    // leaves the open list and, at the next sync, the counter's count.
    let id = ids[1].to_string();
    let out = server.admin(&[
        "resolve-quarantine",
        "--id",
        &id,
        "--note",
        "refunded 15.00 at the desk",
        "--by",
        "Inès",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = server.admin(&["resolve-quarantine", "--id", &id, "--note", "x"]);
    assert!(!again.status.success(), "resolved twice");
    let summary = c.t.sync_now().await.unwrap();
    assert_eq!(summary.needs_supervisor, 0);
    assert_eq!(c.t.status().unwrap().needs_supervisor, 0);
    let report = day_report(&server, &c).await;
    assert_eq!(
        report["quarantine"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    assert_eq!(
        server.query_row(&format!(
            "SELECT resolved_by, resolution FROM quarantine WHERE item_id = '{id}'"
        )),
        ["Inès", "refunded 15.00 at the desk"]
    );
}

/// Bodies no honest counter sends get a 4xx for that body only, never a
/// database error: one sale at two seqs, a seq above the limit. Exact
/// repeats (one void or shift twice, two voids of one sale) are stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_in_one_body_are_refused_or_deduplicated() {
    let server = ServerProcess::start_at("11:05", &[]);
    let s = slot(server.day, "14:00");
    let c = counter(&server, "Counter 1").await;
    for _ in 0..2 {
        c.t.sell(card_sale(s, &[("adult", 1)])).await.unwrap();
    }
    let body = c.t.pending_sync_request().unwrap();
    let token = format!("Bearer {}", token_of(&c));
    let api = server.api();
    let post = |b: Value| {
        let api = api.clone();
        let token = token.clone();
        async move {
            api.post_raw("/v1/sync", &[("authorization", &token)], &b.to_string())
                .await
                .unwrap()
        }
    };
    let books = server_books(&server);

    let mut twice = serde_json::to_value(&body).unwrap();
    twice["sales"][1]["sale_id"] = twice["sales"][0]["sale_id"].clone();
    let (status, reply) = post(twice).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    assert_eq!(reply["error"]["code"], "invalid_body", "{reply}");

    for seq in [
        json!(1u64 << 53),
        json!(u64::MAX),
        json!(i64::MAX as u64 + 1),
    ] {
        let mut high = serde_json::to_value(&body).unwrap();
        high["sales"][1]["terminal_seq"] = seq;
        let (status, reply) = post(high).await;
        assert!(status.is_client_error(), "{status} {reply}");
    }
    assert_eq!(server_books(&server), books);

    // The real body goes through; then a void sent twice and a second void of
    // the same sale are stored once, and both are acknowledged.
    let (status, _) = post(serde_json::to_value(&body).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let sale = body.sales[0].sale_id;
    c.t.void(sale, "9999", "wrong slot").await.unwrap();
    let with_void = c.t.pending_sync_request().unwrap();
    let mut v = serde_json::to_value(&with_void).unwrap();
    let first = v["voids"][0].clone();
    let mut second = first.clone();
    second["void_id"] = json!(uuid::Uuid::now_v7());
    v["voids"] = json!([first.clone(), first, second.clone()]);
    let (status, reply) = post(v).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["voids_acked"].as_array().unwrap().len(), 3);
    assert_eq!(
        server_count(&server, "SELECT COUNT(*) FROM counter_voids"),
        1
    );
    assert!(server.log().find("panicked").is_none());
}

/// A counter whose clock is 10 minutes slow voids an 11:00 ticket that a gate
/// has already admitted: by its clock the slot has not started, so it puts
/// the place back in its lease. The server, by its own clock and its gates,
/// keeps the place out of sale: the visitor is inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_cannot_resell_an_admitted_visitors_place() {
    let server = ServerProcess::start_at("11:05", &[]);
    let s = slot(server.day, "11:00");
    let dir = tempfile::tempdir().unwrap();
    let code = server.enrolment_code("counter", "Counter slow");
    let t = Terminal::enrol_with_clock(
        dir.path(),
        &server.url,
        &code,
        "Counter slow",
        Clock::with_offset_secs(server.offset_secs - 600),
    )
    .await
    .unwrap();
    t.open_shift("1111", 20_000).unwrap();
    let c = Counter { dir, t };
    let sold = c.t.sell(card_sale(s, &[("adult", 1)])).await.unwrap();
    c.t.sync_now().await.unwrap();

    let gate = gate(&server, "North gate").await;
    let scan = gate.t.scan(&sold.sale.tickets[0].code).await.unwrap();
    assert!(scan.reason.is_none(), "{scan:?}");
    assert!(
        server_count(&server, "SELECT COUNT(*) FROM redemptions")
            + server_count(&server, "SELECT COUNT(*) FROM scans")
            >= 1
    );

    let done =
        c.t.void(sold.sale.sale_id, "9999", "changed their mind")
            .await
            .unwrap();
    assert!(done.returned_to_lease, "by the counter's slow clock");
    c.t.sync_now().await.unwrap();

    let report = day_report(&server, &c).await;
    let line = slot_line(&report, &s.to_string());
    assert_eq!(line["sold_counter"], 1, "{line}");
    assert_eq!(line["admitted"], 1, "{line}");
    let [returned, kept] = server.numbers(
        "SELECT v.places_returned, l.kept FROM counter_voids v JOIN sales x ON x.sale_id = v.sale_id
         JOIN leases l ON l.lease_id = x.lease_id",
    );
    assert_eq!((returned, kept), (0, 1));
    // Everything the slot has promised: leases, plus the admitted visitor.
    let escrow = server_count(
        &server,
        &format!("SELECT COALESCE(SUM(granted_total - released_total), 0) FROM leases WHERE slot_id = '{s}'"),
    );
    let capacity = server_count(
        &server,
        &format!("SELECT capacity FROM slots WHERE slot_id = '{s}'"),
    );
    assert_eq!(
        server.api().available(s).await as i64 + escrow,
        capacity - 1
    );

    assert_eq!(line["kept_by_voids"], 1, "{line}");
}

/// A revoked lease: a late sale flagged over capacity loses its flag when it
/// is voided, and a void of a sale inside the revoked escrow puts the place
/// back on sale (it used to stay stuck in the revoked lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voids_on_a_revoked_lease_return_places_and_lower_flags() {
    let server = ServerProcess::start_at("11:05", &[]);
    let s = slot(server.day, "16:00");
    let c = counter(&server, "Counter 9").await;
    let first = c.t.sell(card_sale(s, &[("adult", 1)])).await.unwrap();
    c.t.sync_now().await.unwrap();
    let late = c.t.sell(card_sale(s, &[("adult", 1)])).await.unwrap();

    let row = server.query_row(&format!(
        "SELECT lease_id, granted_total - released_total FROM leases WHERE slot_id = '{s}'"
    ));
    let (lease_id, escrow): (String, u32) = (row[0].clone(), row[1].parse().unwrap());
    let available_before = server.api().available(s).await;
    let out = server.admin(&["revoke-lease", "--lease", &lease_id, "--by", "Inès"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api = server.api();
    // The running server picks the revocation up: the lease's unsold places
    // go back on sale.
    let expected = available_before + u64::from(escrow - 1);
    for _ in 0..50 {
        if api.available(s).await == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(api.available(s).await, expected);
    c.t.sync_now().await.unwrap();
    assert_eq!(
        server_count(&server, "SELECT COALESCE(SUM(over_capacity), 0) FROM sales"),
        1
    );
    let available = api.available(s).await;

    c.t.void(late.sale.sale_id, "9999", "late sale")
        .await
        .unwrap();
    c.t.sync_now().await.unwrap();
    assert_eq!(
        server_count(&server, "SELECT COALESCE(SUM(over_capacity), 0) FROM sales"),
        0
    );
    let report = day_report(&server, &c).await;
    assert!(
        report["missing"]["over_capacity"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{report}"
    );
    // The late sale no longer takes a place beyond capacity.
    assert_eq!(api.available(s).await, available + 1);

    c.t.void(first.sale.sale_id, "9999", "refund")
        .await
        .unwrap();
    c.t.sync_now().await.unwrap();
    assert_eq!(api.available(s).await, available + 2);
}

/// A counter cannot take a whole slot by asking for 4,294,967,295 places, nor
/// put its own figure into the public "sold" count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_cannot_inflate_its_wants_or_tallies() {
    let server = ServerProcess::start_at("11:05", &[]);
    let s = slot(server.day, "15:00");
    let c = counter(&server, "Counter 1").await;
    c.t.sell(card_sale(s, &[("adult", 2)])).await.unwrap();
    let mut body = c.t.pending_sync_request().unwrap();
    body.wants = vec![tessera_core::api::sync::LeaseWant {
        slot_id: s,
        need: u32::MAX,
    }];
    body.own_tallies.insert(
        s,
        tessera_core::api::sync::ActorTally {
            sold: u64::from(u32::MAX),
            voided: 0,
        },
    );
    let (status, reply) = post_sync(&server, &token_of(&c), &body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let escrow = server_count(
        &server,
        &format!("SELECT granted_total - released_total FROM leases WHERE slot_id = '{s}'"),
    );
    // The 2 places sold, and at most 60 more: what one counter sale can need.
    assert!(escrow <= 2 + 60, "{escrow} places escrowed");
    let day = server.api().availability(server.day).await;
    let line = day["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .find(|l| l["slot_id"] == s.to_string())
        .cloned()
        .expect("slot");
    assert_eq!(line["sold"], 2, "{line}");
}
