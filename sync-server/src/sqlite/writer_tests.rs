//! The writer's containment, in process and deterministic: one batch with
//! jobs that succeed, panic, fail with an error and answer a 5xx, checked
//! against the database and against a fresh load of it.

use std::path::Path;
use std::sync::Arc;

use rusqlite::params;
use tessera_core::api::online::ConfirmRequest;
use tessera_core::booking::UNCLAIMED_TOKEN_MS;
use tessera_core::pricing::{price_cart, CartLimits, CartLine, Channel};
use tessera_core::slot::SlotId;
use tokio::sync::oneshot;
use uuid::Uuid;

use super::*;
use crate::sqlite::{admin, online, schema};

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo-museum.toml")
}

fn writer(dir: &Path) -> Writer {
    let db = dir.join("server.db");
    let clock = Clock::system();
    let today = clock
        .now()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Paris").expect("tz"))
        .date();
    admin::init(&db, &fixtures(), today, 14, clock.now()).expect("init");
    let conn = schema::open(&db).expect("open");
    let state = State::load(&conn, clock.now_ms()).expect("load");
    let shared = Arc::new(Shared::empty(state.catalogue.clone()));
    Writer {
        conn,
        state,
        shared,
        clock,
        hold_ttl_ms: 600_000,
        max_batch: 64,
        data_version: 0,
        horizon_days: 14,
        offers: Arc::new(crate::sqlite::waitlist::OfferSettings {
            offer_ms: 1_800_000,
            public_url: std::sync::RwLock::new("http://127.0.0.1".into()),
        }),
        wal: crate::sqlite::checkpoint::WalBound::new(&db, 64 * 1024 * 1024),
    }
}

type Rx<T> = oneshot::Receiver<Result<T, StoreError>>;

fn answer<T>(mut rx: Rx<T>) -> Result<T, StoreError> {
    rx.try_recv()
        .expect("every job is answered when its batch ends")
}

/// The last slot generated: far enough ahead to be sellable all day.
fn open_slot(w: &Writer) -> SlotId {
    *w.state.slots.keys().next_back().expect("slots")
}

fn hold(w: &mut Writer, slot: SlotId, adults: u32) -> Uuid {
    let cart = price_cart(
        &w.state.catalogue,
        &[CartLine {
            product_id: "adult".into(),
            quantity: adults,
            membership_numbers: vec![],
        }],
        Channel::Online,
        CartLimits::ONLINE,
    )
    .expect("priced");
    let (job, rx) = job(
        move |ctx| {
            let lines = online::CartLines::of(&cart).expect("lines");
            Ok(
                online::create_hold(ctx, slot, cart, lines)?.map(|(_, body)| {
                    body.into_json()["hold_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                }),
            )
        },
        None,
    );
    let mut batch = vec![job];
    assert!(w.run_batch(&mut batch));
    answer(rx).expect("held").parse().expect("hold id")
}

fn confirm_request() -> ConfirmRequest {
    ConfirmRequest {
        payment_reference: "psp-1".into(),
        email: None,
    }
}

/// A confirmation that then goes wrong in the way given.
fn confirm_then(hold: Uuid, fail: Option<&'static str>) -> (Job, Rx<u16>) {
    job(
        move |ctx| {
            let answer = online::confirm_hold(ctx, hold, confirm_request(), "Test partner", None)?;
            // Touch a second slot's unsaved counts too, so the undo has to
            // restore more than the slot it confirmed in.
            let other = *ctx.state.slots.keys().next().expect("slots");
            ctx.state.tallies.add_sale("ghost", other, 7);
            ctx.state.unsaved_slots.insert(other);
            match fail {
                Some("panic") => panic!("a bug in the middle of a job"),
                Some("fatal") => Err(Fatal::Bookkeeping("a broken invariant".into())),
                Some("5xx") => Ok(Err(StoreError::Storage("disk trouble".into()))),
                _ => Ok(answer.map(|(status, _)| status)),
            }
        },
        Some(format!("req-{}", fail.unwrap_or("ok"))),
    )
}

fn hold_status(w: &Writer, hold: Uuid) -> String {
    w.conn
        .query_row(
            "SELECT status FROM holds WHERE hold_id = ?1",
            params![hold.to_string()],
            |r| r.get(0),
        )
        .expect("hold row")
}

#[test]
fn a_failing_job_is_undone_alone_and_the_rest_of_its_batch_commits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut w = writer(dir.path());
    let slot = open_slot(&w);
    let first = *w.state.slots.keys().next().expect("slots");
    let holds: Vec<Uuid> = (0..6).map(|_| hold(&mut w, slot, 2)).collect();

    // One batch: good, panic, good, error, 5xx, good. The first good job
    // leaves the slot's counts unsaved in memory before the failures run.
    let (j0, ok0) = confirm_then(holds[0], None);
    let (j1, panicked) = confirm_then(holds[1], Some("panic"));
    let (j2, ok2) = confirm_then(holds[2], None);
    let (j3, fatal) = confirm_then(holds[3], Some("fatal"));
    let (j4, server_fault) = confirm_then(holds[4], Some("5xx"));
    let (j5, ok5) = confirm_then(holds[5], None);
    let mut batch = vec![j0, j1, j2, j3, j4, j5];
    assert!(w.run_batch(&mut batch), "the batch commits");

    for rx in [ok0, ok2, ok5] {
        assert_eq!(answer(rx).expect("confirmed"), 201);
    }
    for (rx, id) in [
        (panicked, "req-panic"),
        (fatal, "req-fatal"),
        (server_fault, "req-5xx"),
    ] {
        match answer(rx) {
            Err(StoreError::Internal { request_id }) => assert_eq!(request_id, id),
            other => panic!("expected internal, got {other:?}"),
        }
    }

    // The database: three orders, the failed jobs' holds still open.
    for (i, h) in holds.iter().enumerate() {
        let expected = if [0, 2, 5].contains(&i) {
            "confirmed"
        } else {
            "held"
        };
        assert_eq!(hold_status(&w, *h), expected, "hold {i}");
    }
    let orders: i64 = w
        .conn
        .query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))
        .expect("count");
    assert_eq!(orders, 3);
    let sold_online: u32 = w
        .conn
        .query_row(
            "SELECT sold_online FROM slots WHERE slot_id = ?1",
            params![slot.to_string()],
            |r| r.get(0),
        )
        .expect("slot");
    assert_eq!(sold_online, 6, "three confirmed orders of two");

    // Memory agrees with the database, counts that were unsaved when the
    // failures struck included.
    let fresh = State::load(&w.conn, w.clock.now_ms()).expect("load");
    let mine = &w.state.slots[&slot].ledger;
    assert_eq!(*mine, fresh.slots[&slot].ledger);
    assert_eq!(mine.sold_online, 6);
    assert_eq!(mine.held_online, 6, "the three failed confirmations' holds");
    assert_eq!(w.state.tallies, fresh.tallies);
    assert_eq!(w.state.tallies.net(&slot), 6);
    assert!(
        w.state.tallies.net(&first) > 0,
        "the good jobs' ghost sales"
    );
    assert!(w.state.holds.contains_key(&holds[1]));
    assert!(!w.state.holds.contains_key(&holds[0]));

    // And the failed holds can still be confirmed by a later request.
    let (again, rx) = confirm_then(holds[1], None);
    let mut batch = vec![again];
    assert!(w.run_batch(&mut batch));
    assert_eq!(answer(rx).expect("confirmed"), 201);
    assert_eq!(w.state.slots[&slot].ledger.sold_online, 8);
}

#[test]
fn a_job_that_fails_first_in_its_batch_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut w = writer(dir.path());
    let slot = open_slot(&w);
    let h = hold(&mut w, slot, 3);
    let (j, rx) = confirm_then(h, Some("panic"));
    let mut batch = vec![j];
    assert!(w.run_batch(&mut batch));
    assert!(matches!(answer(rx), Err(StoreError::Internal { .. })));
    assert_eq!(hold_status(&w, h), "held");
    let fresh = State::load(&w.conn, w.clock.now_ms()).expect("load");
    assert_eq!(w.state.tallies, fresh.tallies);
    assert_eq!(w.state.slots[&slot].ledger, fresh.slots[&slot].ledger);
    assert!(w.state.unsaved_slots.is_empty());
}

/// A job that leaves many slots unsaved makes the next job flush them first
/// (keeping the undo copy small); a failure after that still comes back to
/// exactly what the earlier jobs did.
#[test]
fn many_unsaved_slots_are_flushed_and_a_later_failure_keeps_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut w = writer(dir.path());
    let slots: Vec<SlotId> = w.state.slots.keys().copied().take(40).collect();
    assert_eq!(slots.len(), 40);
    let touch = |slots: Vec<SlotId>, n: u64, fail: bool| {
        job(
            move |ctx| {
                for s in &slots {
                    ctx.state.tallies.add_sale("counter-x", *s, n);
                    ctx.state.unsaved_slots.insert(*s);
                }
                if fail {
                    panic!("after touching {} slots", slots.len());
                }
                Ok(Ok(()))
            },
            None,
        )
    };
    let (a, ok_a) = touch(slots.clone(), 2, false);
    let (b, failed) = touch(slots[..5].to_vec(), 100, true);
    let (c, ok_c) = touch(slots[..1].to_vec(), 1, false);
    let mut batch = vec![a, b, c];
    assert!(w.run_batch(&mut batch));
    assert!(answer(ok_a).is_ok() && answer(ok_c).is_ok());
    assert!(matches!(answer(failed), Err(StoreError::Internal { .. })));

    let fresh = State::load(&w.conn, w.clock.now_ms()).expect("load");
    assert_eq!(w.state.tallies, fresh.tallies);
    assert_eq!(fresh.tallies.net(&slots[0]), 3);
    for s in &slots[1..] {
        assert_eq!(fresh.tallies.net(s), 2, "{s}");
    }
}

/// A failing job that had flushed and reloaded the state itself (as lease
/// revocation and housekeeping do) takes the earlier jobs' flushed counts
/// down with its savepoint; the undo copy brings them back.
#[test]
fn a_failing_job_that_reloaded_the_state_loses_no_earlier_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut w = writer(dir.path());
    let slot = open_slot(&w);
    let (a, ok) = job(
        move |ctx| {
            ctx.state.tallies.add_sale("counter-y", slot, 4);
            ctx.state.unsaved_slots.insert(slot);
            Ok(Ok(()))
        },
        None,
    );
    let (b, failed) = job::<(), _>(
        move |ctx| {
            Writer::reload_in(ctx)?;
            panic!("after a reload");
        },
        None,
    );
    let mut batch = vec![a, b];
    assert!(w.run_batch(&mut batch));
    assert!(answer(ok).is_ok());
    assert!(matches!(answer(failed), Err(StoreError::Internal { .. })));
    let fresh = State::load(&w.conn, w.clock.now_ms()).expect("load");
    assert_eq!(fresh.tallies.net(&slot), 4);
    assert_eq!(w.state.tallies, fresh.tallies);
}

/// A paid checkout's token waits in clear for its return page; one nobody
/// came back for is forgotten by housekeeping after an hour.
#[test]
fn housekeeping_forgets_booking_tokens_nobody_came_back_for() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut w = writer(dir.path());
    let slot = open_slot(&w);
    let held = hold(&mut w, slot, 1);
    let now = w.clock.now_ms();
    for (id, paid_at) in [
        ("pay_old", now - UNCLAIMED_TOKEN_MS - 1),
        ("pay_new", now - 60_000),
    ] {
        w.conn
            .execute(
                "INSERT INTO payments (payment_id, checkout_id, hold_id, provider, amount, currency,
                     status, visitor_name, email, language, booking_token, created_at, paid_at)
                 VALUES (?1, ?2, ?3, 'demo', 1500, 'EUR', 'paid', 'Ana', 'ana@example.org', 'en',
                     ?4, ?5, ?5)",
                params![id, format!("co_{id}"), held.to_string(), format!("token-{id}"), paid_at],
            )
            .expect("payment row");
    }
    let (keep, rx) = job(|ctx| Writer::housekeeping(ctx).map(Ok), None);
    let mut batch = vec![keep];
    assert!(w.run_batch(&mut batch));
    answer(rx).expect("housekeeping ran");
    let token = |id: &str| -> Option<String> {
        w.conn
            .query_row(
                "SELECT booking_token FROM payments WHERE payment_id = ?1",
                params![id],
                |r| r.get(0),
            )
            .expect("payment row")
    };
    assert_eq!(token("pay_old"), None);
    assert_eq!(token("pay_new").as_deref(), Some("token-pay_new"));
}

/// Confirms `hold` with the tickets given; answers the order's ticket ids.
fn confirm_with(
    w: &mut Writer,
    hold: Uuid,
    presigned: Option<crate::sqlite::presign::Presigned>,
) -> Vec<Uuid> {
    let (job, rx) = job(
        move |ctx| {
            Ok(
                online::confirm_hold(ctx, hold, confirm_request(), "Test partner", presigned)?.map(
                    |(_, body)| {
                        body.into_json()["tickets"]
                            .as_array()
                            .map(|ts| {
                                ts.iter()
                                    .filter_map(|t| t["ticket_id"].as_str()?.parse().ok())
                                    .collect::<Vec<Uuid>>()
                            })
                            .unwrap_or_default()
                    },
                ),
            )
        },
        None,
    );
    let mut batch = vec![job];
    assert!(w.run_batch(&mut batch));
    answer(rx).expect("confirmed")
}

fn stored_ticket_ids(w: &Writer, hold: Uuid) -> Vec<Uuid> {
    let mut stmt = w
        .conn
        .prepare(
            "SELECT t.ticket_id FROM tickets t JOIN orders o ON o.order_id = t.order_id
             WHERE o.hold_id = ?1 ORDER BY t.rowid",
        )
        .expect("prepare");
    let ids = stmt
        .query_map(params![hold.to_string()], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|r| r.expect("row").parse().expect("uuid"))
        .collect();
    ids
}

#[test]
fn tickets_signed_ahead_from_the_published_sketch_are_the_ones_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut w = writer(dir.path());
    let slot = open_slot(&w);
    let held = hold(&mut w, slot, 3);
    let sketch = w
        .shared
        .hold_sketches
        .read()
        .unwrap()
        .get(&held)
        .cloned()
        .expect("the committed hold's sketch is published");
    let signer = w
        .shared
        .signer
        .read()
        .unwrap()
        .clone()
        .expect("signer published");
    let signed = crate::sqlite::presign::presign(&signer, held, &sketch).expect("signed");
    let ahead = signed.ticket_ids();
    assert_eq!(ahead.len(), 3);
    assert_eq!(confirm_with(&mut w, held, Some(signed)), ahead);
    assert_eq!(stored_ticket_ids(&w, held), ahead);
    // Confirmed: no longer offered for signing.
    assert!(w.shared.hold_sketches.read().unwrap().get(&held).is_none());
    // Every stored code verifies and names its own ticket.
    let ring = w.state.keys.0.clone();
    let mut stmt = w
        .conn
        .prepare("SELECT ticket_id, code FROM tickets WHERE order_id IS NOT NULL")
        .expect("prepare");
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    for (id, code) in rows {
        assert_eq!(
            ring.verify(&code).expect("verifies").ticket_id.to_string(),
            id
        );
    }
}

#[test]
fn tickets_signed_for_another_hold_are_not_taken_and_the_writer_signs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut w = writer(dir.path());
    let slot = open_slot(&w);
    let small = hold(&mut w, slot, 1);
    let big = hold(&mut w, slot, 2);
    let sketch = w
        .shared
        .hold_sketches
        .read()
        .unwrap()
        .get(&small)
        .cloned()
        .expect("sketch");
    let signer = w.shared.signer.read().unwrap().clone().expect("signer");
    // Signed for `small` (one ticket) but sent with `big`'s confirmation.
    let wrong = crate::sqlite::presign::presign(&signer, small, &sketch).expect("signed");
    let wrong_ids = wrong.ticket_ids();
    let tickets = confirm_with(&mut w, big, Some(wrong));
    assert_eq!(tickets.len(), 2);
    assert!(!tickets.contains(&wrong_ids[0]));
    assert_eq!(stored_ticket_ids(&w, big), tickets);
    let ring = w.state.keys.0.clone();
    let code: String = w
        .conn
        .query_row(
            "SELECT code FROM tickets WHERE ticket_id = ?1",
            params![tickets[0].to_string()],
            |r| r.get(0),
        )
        .expect("ticket");
    assert_eq!(ring.verify(&code).expect("verifies").ticket_id, tickets[0]);
}

fn wal_bytes(db: &Path) -> u64 {
    std::fs::metadata(db.with_file_name("server.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0)
}

fn holds_in(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.query_row("SELECT COUNT(*) FROM holds", [], |r| r.get(0))
        .expect("count")
}

#[test]
fn under_continuous_writes_the_wal_stays_bounded_and_a_crash_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("server.db");
    let mut w = writer(dir.path());
    crate::sqlite::checkpoint::writer_connection(&w.conn).expect("autocheckpoint off");
    let limit: u64 = 256 * 1024;
    w.wal = crate::sqlite::checkpoint::WalBound::new(&db, limit);
    // The passive checkpoints run beside the writer, as in the server.
    crate::sqlite::checkpoint::spawn(&db, &w.shared).expect("checkpoint thread");
    // Slots late in the horizon, each far from full with 40 holds.
    let slots: Vec<SlotId> = w.state.slots.keys().rev().take(60).copied().collect();
    assert_eq!(slots.len(), 60);
    let before = holds_in(&db);
    let mut largest_batch_growth = 0;
    let mut most = 0;
    let mut answers = Vec::new();
    for &slot in &slots {
        let start = wal_bytes(&db);
        let mut batch = Vec::new();
        for _ in 0..40 {
            let cart = price_cart(
                &w.state.catalogue,
                &[CartLine {
                    product_id: "adult".into(),
                    quantity: 1,
                    membership_numbers: vec![],
                }],
                Channel::Online,
                CartLimits::ONLINE,
            )
            .expect("priced");
            let lines = online::CartLines::of(&cart).expect("lines");
            let (job, rx) = job(move |ctx| online::create_hold(ctx, slot, cart, lines), None);
            batch.push(job);
            answers.push(rx);
        }
        assert!(w.run_batch(&mut batch));
        for rx in answers.drain(..) {
            answer(rx).expect("held");
        }
        let end = wal_bytes(&db);
        largest_batch_growth = largest_batch_growth.max(end.saturating_sub(start));
        most = most.max(end);
    }
    // 2,400 holds wrote several times the bound in all; the file never held
    // more than the bound plus what one batch adds before the writer's check.
    assert!(
        most <= limit + largest_batch_growth,
        "WAL reached {most} bytes, bound {limit}, one batch {largest_batch_growth}"
    );
    // A crash: the writer's connection is never closed (no final checkpoint).
    let Writer { conn, shared, .. } = w;
    std::mem::forget(conn);
    drop(shared);
    assert_eq!(holds_in(&db) - before, 60 * 40);
    let again = schema::open(&db).expect("reopen");
    let state = State::load(&again, Clock::system().now_ms()).expect("load");
    assert_eq!(
        state
            .holds
            .values()
            .filter(|h| slots.contains(&h.slot))
            .count(),
        60 * 40
    );
}
