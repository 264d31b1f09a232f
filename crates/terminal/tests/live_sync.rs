//! A sync carries only what is live: once a slot is over and both ends agree
//! on what its lease came to, the counter stops reporting that lease; and a
//! late upload about a lease of a past day (which the server no longer keeps
//! in memory) is still judged as it would have been on its day.

mod common;

use common::*;
use tessera_server::testkit::{slot, ServerProcess};
use tessera_terminal::Terminal;

fn terminal_count(c: &Counter, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(c.dir.path().join("terminal.db")).expect("open");
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// Moves the server and the counter to `local` on `day` (a process reads its
/// clock offset once, so both restart).
fn move_clock(server: &mut ServerProcess, c: &mut Counter, day: jiff::civil::Date, local: &str) {
    server.set_clock(day, local).expect("clock");
    server.restart();
    c.t = Terminal::open_with_clock(c.dir.path(), clock(server)).expect("reopen the counter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_lease_drops_out_of_the_sync_once_both_ends_agree() {
    let mut server = ServerProcess::start_at("16:35", &[]);
    let day = server.day;
    let s = slot(day, "16:30");
    let mut c = counter(&server, "Counter 1").await;
    assert!(lease_left(&c.t, s) >= 2);
    c.t.sell(card_sale(s, &[("adult", 2)])).await.unwrap();
    c.t.sync_now().await.unwrap();
    let leases = terminal_count(&c, "SELECT COUNT(*) FROM leases");
    assert!(leases > 0);
    assert_eq!(
        terminal_count(&c, "SELECT COUNT(*) FROM leases WHERE settled = 1"),
        0,
        "slots still on sale: nothing is settled"
    );

    // After closing time the counter gives back what it did not sell; the
    // server records it and says the leases are settled; the counter agrees.
    move_clock(&mut server, &mut c, day, "17:45");
    c.t.sync_now().await.unwrap();
    assert_eq!(
        terminal_count(&c, "SELECT COUNT(*) FROM leases WHERE settled = 1"),
        leases
    );
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM leases WHERE granted_total - released_total != sold"
        ),
        0,
        "every unsold place is back on the server's books"
    );
    assert_eq!(
        server_count(&server, "SELECT COALESCE(SUM(sold), 0) FROM leases"),
        2
    );

    // A counter still on the old protocol keeps reporting a settled lease:
    // it is accepted and changes nothing.
    let lease_id = server.query_one(&format!(
        "SELECT lease_id FROM leases WHERE slot_id = '{s}'"
    ));
    let [granted, released] = server.numbers(&format!(
        "SELECT granted_total, released_total FROM leases WHERE lease_id = '{lease_id}'"
    ));
    let token = token_of(&c);
    let device = c.t.device_id();
    let body: tessera_core::api::sync::SyncRequest = serde_json::from_value(serde_json::json!({
        "device_id": device,
        "catalogue_version": 0,
        "last_seq": 1,
        "leases": [{"lease_id": lease_id, "slot_id": s.to_string(),
                    "granted_total": granted, "released_total": released, "unused": 0}],
    }))
    .unwrap();
    let (status, answer) = post_sync(&server, &token, &body).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{answer}");
    assert!(
        answer["settled_leases"]
            .as_array()
            .is_some_and(|a| a.iter().any(|l| l == &serde_json::json!(lease_id))),
        "{answer}"
    );
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM leases WHERE granted_total - released_total != sold"
        ),
        0
    );
}

/// A grant whose answer the counter never got (the connection dropped after
/// the server committed it) is still given back after the slot is over: the
/// server names the counter's past leases it still reports, the counter
/// learns of the grant, returns it, and the lease settles. Without that the
/// lease would be carried in every sync for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_the_counter_never_heard_of_is_returned_after_its_slot_and_the_lease_settles() {
    let mut server = ServerProcess::start_at("16:35", &[]);
    let day = server.day;
    let s = slot(day, "16:30");
    let mut c = counter(&server, "Counter 2").await;
    assert!(lease_left(&c.t, s) >= 2);
    c.t.sell(card_sale(s, &[("adult", 2)])).await.unwrap();
    c.t.sync_now().await.unwrap();
    let leases = terminal_count(&c, "SELECT COUNT(*) FROM leases");

    // The counter is next online two days later (a Friday: open), and one
    // place of a grant on the past day never reached it.
    let later = day.tomorrow().unwrap().tomorrow().unwrap();
    move_clock(&mut server, &mut c, later, "11:05");
    let conn = rusqlite::Connection::open(c.dir.path().join("terminal.db")).expect("open");
    let forgotten = conn
        .execute(
            "UPDATE leases SET granted_total = granted_total - 1
             WHERE lease_id = (SELECT lease_id FROM leases
                               WHERE granted_total - 1 >= sold + released_total LIMIT 1)",
            [],
        )
        .expect("forget a grant");
    assert_eq!(forgotten, 1, "a lease with a place to spare");
    drop(conn);

    for _ in 0..3 {
        c.t.sync_now().await.unwrap();
    }
    assert_eq!(
        terminal_count(&c, "SELECT COUNT(*) FROM leases WHERE settled = 1"),
        leases,
        "every lease of the past day settles, the one with the unheard grant included"
    );
    assert_eq!(
        server_count(
            &server,
            &format!(
                "SELECT COUNT(*) FROM leases WHERE granted_total - released_total != sold
                 AND slot_id < '{later}'"
            )
        ),
        0,
        "every unsold place of the past day, the unheard grant's included, is back on the server's books"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_sale_from_a_revoked_lease_of_a_past_day_is_kept_and_flagged() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let day = server.day;
    let s = slot(day, "16:00");
    let mut c = counter(&server, "Counter 9").await;
    assert!(lease_left(&c.t, s) >= 2);
    // Sold while cut off; the server never hears of it that day.
    let late = c.t.sell(card_sale(s, &[("adult", 2)])).await.unwrap();
    let lease_id = server.query_one(&format!(
        "SELECT lease_id FROM leases WHERE slot_id = '{s}'"
    ));
    let out = server.admin(&["revoke-lease", "--lease", &lease_id, "--by", "Inès"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Two days later (a Friday: open) the server keeps that day's slots and
    // the settled, revoked lease on disk only; the counter comes back.
    let later = day.tomorrow().unwrap().tomorrow().unwrap();
    move_clock(&mut server, &mut c, later, "11:05");
    c.t.sync_now().await.unwrap();
    let [stored, over] = server.numbers(&format!(
        "SELECT COUNT(*), COALESCE(SUM(over_capacity), 0) FROM sales WHERE sale_id = '{}'",
        late.sale.sale_id
    ));
    assert_eq!((stored, over), (1, 2), "kept, never lost, and flagged");
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM quarantine WHERE kind = 'sale'"
        ),
        0
    );
}
