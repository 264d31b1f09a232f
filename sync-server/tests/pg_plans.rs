//! The PostgreSQL backend's work per request independent of history
//! (issue 11), on a throw-away cluster migrated as a server migrates it:
//!
//! - `UNSETTLED_SQL`, the SQL twin of core's `LeaseState::is_settled`, and
//!   a counter round's own-lease load built on it select exactly the leases
//!   core calls unsettled, lease state by lease state (as the SQLite
//!   backend's `the_unsettled_search_agrees_with_core_on_every_small_lease`);
//! - on a database with months of history behind the asked day (and its
//!   statistics), every query a sync, a gate sync, the day report, the
//!   leases list or the start-up cache makes can be answered through the
//!   index meant for it: with sequential scans discouraged (the planner
//!   still takes one where no index serves), its plan names that index and
//!   reads no table of the history whole.

use std::collections::BTreeSet;

use jiff::civil::Date;
use serde_json::Value;
use tessera_core::day_report::DayBounds;
use tessera_core::inventory::LeaseTotals;
use tessera_core::leases::{first_live_slot, LeaseState};
use tessera_core::slot::SlotId;
use tessera_server::postgres::{bounded, cache, leases, report, schema};
use tessera_server::testkit::{paris, PgCluster};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// A client on the cluster's database, migrated (V1…) as a server does it.
async fn migrated(pg: &PgCluster) -> Client {
    let (mut client, connection) = tokio_postgres::connect(&pg.url(), NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(connection);
    schema::migrate(&mut client).await.expect("migrate");
    client
}

fn device(n: u8) -> Uuid {
    Uuid::from_u128(u128::from(n))
}

async fn add_counter(client: &Client, id: Uuid) {
    client
        .execute(
            "INSERT INTO devices (device_id, role, name, token_hash, enrolled_at)
             VALUES ($1, 'counter', $2, $3, 0)",
            &[&id, &format!("counter {id}"), &id.as_bytes().to_vec()],
        )
        .await
        .expect("insert a counter");
}

async fn add_slot(client: &Client, slot: SlotId) {
    client
        .execute(
            "INSERT INTO slots (slot_id, date, starts_at, ends_at, window_minutes, capacity)
             VALUES ($1, $2::text::date, 0, 1, 30, 100) ON CONFLICT DO NOTHING",
            &[&slot.to_string(), &slot.date.to_string()],
        )
        .await
        .expect("insert a slot");
}

async fn add_lease(client: &Client, l: &LeaseState) {
    let int = |n: u32| i32::try_from(n).expect("small");
    client
        .execute(
            "INSERT INTO leases (lease_id, device_id, slot_id, granted_total, released_total, sold,
                                 unused_reported, kept, created_at, revoked_escrow)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
            &[
                &l.lease_id,
                &l.device_id,
                &l.slot.to_string(),
                &int(l.totals.granted_total),
                &int(l.totals.released_total),
                &int(l.sold),
                &int(l.unused_reported),
                &int(l.kept),
                &l.revoked_escrow.map(int),
            ],
        )
        .await
        .expect("insert a lease");
}

/// Every small lease: settled and not, revoked (with and without an
/// escrow left), unused places reported or not, sold below, at and above
/// the escrow, more released than granted (core's escrow is then 0).
fn small_leases(device_id: Uuid, day: Date) -> Vec<LeaseState> {
    let mut out = Vec::new();
    let mut minute = 0;
    for granted in 0..4u32 {
        for released in 0..=granted + 1 {
            for sold in 0..4u32 {
                for unused in 0..2u32 {
                    for revoked in [None, Some(0u32), Some(2)] {
                        let slot = SlotId::new(day, minute).expect("a slot of the day");
                        minute += 1;
                        let mut l = LeaseState::new(Uuid::now_v7(), device_id, slot);
                        l.totals = LeaseTotals {
                            granted_total: granted,
                            released_total: released,
                        };
                        (l.sold, l.unused_reported, l.revoked_escrow) = (sold, unused, revoked);
                        l.kept = u32::from(minute % 2);
                        out.push(l);
                    }
                }
            }
        }
    }
    out
}

async fn ids_of(client: &Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> BTreeSet<Uuid> {
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unsettled_search_agrees_with_core_lease_by_lease() {
    let pg = PgCluster::start();
    let client = migrated(&pg).await;
    let today: Date = "2026-12-03".parse().expect("date");
    let first = first_live_slot(today).expect("first live slot");
    let (me, other) = (device(1), device(2));
    add_counter(&client, me).await;
    add_counter(&client, other).await;

    // Every small lease state twice: in a slot that is over (two days ago,
    // before the first live slot) and in one of today.
    let over_day: Date = "2026-12-01".parse().expect("date");
    let mut all = small_leases(me, over_day);
    all.extend(small_leases(me, today));
    // Another counter's unsettled leases, old and live: never in my load.
    let mut theirs = LeaseState::new(Uuid::now_v7(), other, SlotId::new(over_day, 0).unwrap());
    theirs.totals.granted_total = 3;
    theirs.unused_reported = 3;
    let mut theirs_live = theirs.clone();
    (theirs_live.lease_id, theirs_live.slot) = (Uuid::now_v7(), SlotId::new(today, 0).unwrap());
    all.push(theirs.clone());
    all.push(theirs_live.clone());
    for l in &all {
        add_slot(&client, l.slot).await;
        add_lease(&client, l).await;
    }

    // The condition alone: what core calls unsettled once the slot is over.
    let unsettled: BTreeSet<Uuid> = all
        .iter()
        .filter(|l| !l.is_settled(true))
        .map(|l| l.lease_id)
        .collect();
    assert!(!unsettled.is_empty() && unsettled.len() < all.len());
    let found = ids_of(
        &client,
        &format!(
            "SELECT lease_id FROM leases WHERE {}",
            bounded::UNSETTLED_SQL
        ),
        &[],
    )
    .await;
    let wrongly_settled: Vec<_> = all
        .iter()
        .filter(|l| unsettled.contains(&l.lease_id) && !found.contains(&l.lease_id))
        .collect();
    let wrongly_unsettled: Vec<_> = all
        .iter()
        .filter(|l| !unsettled.contains(&l.lease_id) && found.contains(&l.lease_id))
        .collect();
    assert!(
        wrongly_settled.is_empty() && wrongly_unsettled.is_empty(),
        "SQL settled leases core does not: {wrongly_settled:#?}\nSQL kept leases core settled: {wrongly_unsettled:#?}"
    );

    // A round's load: every lease of my live slots (nothing is settled
    // before its slot is over), and my leases of older slots that core
    // calls unsettled; none of the other counter's.
    let expected: BTreeSet<Uuid> = all
        .iter()
        .filter(|l| l.device_id == me && !l.is_settled(l.slot < first))
        .map(|l| l.lease_id)
        .collect();
    assert!(expected.iter().any(|id| !unsettled.contains(id)));
    let loaded = ids_of(
        &client,
        &bounded::own_leases_sql(),
        &[&me, &first.to_string()],
    )
    .await;
    assert_eq!(loaded, expected);
}

/// Months of history around 2026-12-03 for three counters and the web
/// shop: slots, leases, sales with their tickets, voids, shifts, orders
/// with tickets (some cancelled), payments (a few "my booking" tokens
/// kept), refunds (some failed), redemptions, quarantined uploads
/// (resolved), tallies, waiting lists (a few entries waiting, tagged) and
/// gate conflicts; then ANALYZE, so the planner decides on statistics as
/// it would on a museum's database.
const HISTORY: &str = r#"
INSERT INTO devices (device_id, role, name, token_hash, enrolled_at)
SELECT ('00000000-0000-0000-0000-00000000000' || d)::uuid, 'counter', 'counter ' || d,
       decode(md5(d::text), 'hex'), 0
FROM generate_series(1, 3) d;
INSERT INTO slots (slot_id, date, starts_at, ends_at, window_minutes, capacity)
SELECT to_char(day, 'YYYY-MM-DD') || 'T' || lpad(h::text, 2, '0') || ':00', day::date,
       (extract(epoch FROM day + make_interval(hours => h)) * 1000)::bigint,
       (extract(epoch FROM day + make_interval(hours => h + 1)) * 1000)::bigint, 60, 500
FROM generate_series('2026-08-26'::timestamp, '2026-12-16'::timestamp, '1 day') day,
     generate_series(9, 17) h;
INSERT INTO leases (lease_id, device_id, slot_id, granted_total, released_total, sold,
                    unused_reported, created_at)
SELECT gen_random_uuid(), d.device_id, s.slot_id, 20, 5, 15,
       CASE WHEN s.slot_id >= '2026-12-02' THEN 5 ELSE 0 END, s.starts_at - 3600000
FROM slots s CROSS JOIN devices d;
INSERT INTO sales (sale_id, device_id, terminal_seq, lease_id, slot_id, shift_id, cashier,
                   created_at, received_at, lines, total, currency, admissions, payment_method)
SELECT gen_random_uuid(), l.device_id,
       row_number() OVER (PARTITION BY l.device_id ORDER BY l.slot_id, n),
       l.lease_id, l.slot_id, md5(l.device_id::text || s.date::text)::uuid, 'ann',
       s.starts_at - n * 60000, s.starts_at, '[]', 1500, 'EUR', 1, 'cash'
FROM leases l JOIN slots s USING (slot_id) CROSS JOIN generate_series(1, 5) n;
UPDATE sales SET over_capacity = 1 WHERE terminal_seq % 97 = 0;
INSERT INTO tickets (ticket_id, sale_id, slot_id, product_id, admits, code, channel, key_id,
                     price, vat_bp)
SELECT gen_random_uuid(), sale_id, slot_id, 'adult', 1, 'x', 'counter', 2, 1500, 700 FROM sales;
INSERT INTO counter_voids (void_id, sale_id, device_id, after_seq, at, shift_id, approved_by,
                           reason, returned_to_lease, places_returned, refund, refund_method,
                           received_at)
SELECT gen_random_uuid(), sale_id, device_id, terminal_seq, created_at + 1000, shift_id, 'sue',
       'oops', 1, 1, 1500, 'cash', created_at + 2000
FROM sales WHERE terminal_seq % 17 = 0;
UPDATE tickets SET voided_at = 1 WHERE sale_id IN (SELECT sale_id FROM counter_voids);
INSERT INTO shifts (shift_id, device_id, cashier, opened_at, closed_at, float, cash_sales,
                    card_sales, cash_refunds, card_refunds, expected_cash, counted_cash,
                    sales_count, voids_count, received_at)
SELECT DISTINCT ON (shift_id) shift_id, device_id, 'ann', created_at, created_at + 28800000,
       0, 0, 0, 0, 0, 0, 0, 0, 0, created_at
FROM sales ORDER BY shift_id, created_at;
INSERT INTO holds (hold_id, slot_id, admissions, lines, total, currency, created_at,
                   expires_at, status)
SELECT md5(slot_id || n)::uuid, slot_id, 2, '[]', 3000, 'EUR', starts_at - 86400000,
       starts_at - 86000000, 'confirmed'
FROM slots CROSS JOIN generate_series(1, 4) n;
INSERT INTO orders (order_id, hold_id, slot_id, admissions, total, currency, lines,
                    payment_reference, channel, created_at, payment_id, reference)
SELECT gen_random_uuid(), hold_id, slot_id, 2, 3000, 'EUR', '[]', 'p', 'web',
       created_at + 1000, hold_id::text, hold_id::text
FROM holds;
INSERT INTO tickets (ticket_id, order_id, slot_id, product_id, admits, code, channel, key_id,
                     price, vat_bp, cancelled_at)
SELECT gen_random_uuid(), o.order_id, o.slot_id, 'adult', 1, 'x', 'online', 1, 1500, 700,
       CASE WHEN n = 1 AND o.created_at % 7 = 0 THEN o.created_at + 5000 END
FROM orders o CROSS JOIN generate_series(1, 2) n;
INSERT INTO payments (payment_id, checkout_id, hold_id, provider, amount, currency, status,
                      visitor_name, email, language, created_at)
SELECT hold_id::text, hold_id::text, hold_id, 'demo', 3000, 'EUR', 'paid', 'v',
       'v@example.org', 'en', created_at
FROM holds;
INSERT INTO refunds (refund_id, payment_id, amount, currency, reason, idempotency_key, status,
                     next_attempt_at, created_at)
SELECT gen_random_uuid(), payment_id, 1500, 'EUR', 'cancelled', payment_id,
       CASE WHEN created_at % 97 = 0 THEN 'failed' ELSE 'done' END, created_at, created_at + 5000
FROM payments WHERE created_at % 3 = 0;
INSERT INTO redemptions (ticket_id, slot_id, admits, redeemed_at, gate_device, gate_name, mode)
SELECT ticket_id, slot_id, admits, 0, '00000000-0000-0000-0000-000000000001', 'g', 'online'
FROM tickets WHERE slot_id < '2026-12-03';
INSERT INTO quarantine (item_id, kind, device_id, terminal_seq, slot_id, reason, body,
                        received_at, resolved_at)
SELECT gen_random_uuid(), 'sale', device_id, terminal_seq + 100000, slot_id, 'r', '{}',
       received_at, received_at + 1
FROM sales WHERE terminal_seq % 50 = 0;
INSERT INTO tallies (slot_id, state) SELECT slot_id, '{}' FROM slots;
INSERT INTO waitlist (entry_id, slot_id, email, party, language, created_at, state)
SELECT gen_random_uuid(), slot_id, 'w@example.org', 2, 'en', 0, 'taken' FROM slots;
INSERT INTO gate_conflicts (ticket_id, slot_id, first_scan, first_gate, first_at, second_scan,
                            second_gate, second_at, detected_at)
SELECT gen_random_uuid(), slot_id, gen_random_uuid(), 'a', 0, gen_random_uuid(), 'b', 0, 0
FROM slots;
UPDATE payments SET booking_token = 'kept' WHERE created_at % 11 = 0;
INSERT INTO waitlist (entry_id, slot_id, email, party, language, created_at, state, client_tag)
SELECT gen_random_uuid(), slot_id, 'x@example.org', 1, 'en', 0, 'waiting', '\x01'
FROM slots WHERE slot_id >= '2026-12-03';
INSERT INTO device_sync (device_id, last_sync_at) SELECT device_id, 0 FROM devices;
ANALYZE;
"#;

/// Tables whose rows pile up day after day: a plan may not read one whole.
const HISTORY_TABLES: &[&str] = &[
    "orders",
    "tickets",
    "leases",
    "sales",
    "idempotency",
    "holds",
    "counter_voids",
    "shifts",
    "refunds",
    "payments",
    "redemptions",
    "scans",
    "quarantine",
    "slots",
    "tallies",
    "waitlist",
    "gate_conflicts",
    "lease_history",
];

/// Each scan of a plan: (node type, table, index).
fn scans(plan: &Value, out: &mut Vec<(String, String, String)>) {
    let text = |key: &str| plan[key].as_str().unwrap_or_default().to_string();
    if plan.get("Relation Name").is_some() || plan.get("Index Name").is_some() {
        out.push((text("Node Type"), text("Relation Name"), text("Index Name")));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        scans(child, out);
    }
}

/// Asserts that `sql`'s plan (with `params`) reads through every index of
/// `indexes` (`a|b`: either) and scans no history table sequentially.
async fn assert_plan(
    client: &Client,
    what: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    indexes: &[&str],
) {
    let row = client
        .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), params)
        .await
        .unwrap_or_else(|e| panic!("{what}: EXPLAIN {sql}: {e}"));
    let plan: Value = row.get(0);
    let mut found = Vec::new();
    scans(&plan[0]["Plan"], &mut found);
    let shown = serde_json::to_string_pretty(&plan[0]["Plan"]).unwrap_or_default();
    for (node, table, _) in &found {
        assert!(
            !(node == "Seq Scan" && HISTORY_TABLES.contains(&table.as_str())),
            "{what}: a sequential scan of {table}:\n{sql}\n{shown}"
        );
    }
    for index in indexes {
        assert!(
            found
                .iter()
                .any(|(_, _, i)| index.split('|').any(|one| one == i)),
            "{what}: not through {index}:\n{sql}\n{found:?}\n{shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_bounded_queries_use_their_indexes() {
    let pg = PgCluster::start();
    let client = migrated(&pg).await;
    client.batch_execute(HISTORY).await.expect("history");
    // The history is months, not years: without this the planner may
    // still find reading a whole table cheaper than an index.
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .expect("set");

    let today: Date = "2026-12-03".parse().expect("date");
    let first = first_live_slot(today).expect("first live slot").to_string();
    let today_first = SlotId::new(today, 0).expect("slot").to_string();
    let me = device(1);
    let counters: Vec<Uuid> = (1..=3).map(device).collect();
    let slots_of_today: Vec<String> = ["2026-12-03T10:00", "2026-12-03T11:00"]
        .map(String::from)
        .to_vec();
    // A counter's acknowledged seq is near its newest sale.
    let max_seq: i64 = client
        .query_one(
            "SELECT MAX(terminal_seq) FROM sales WHERE device_id = $1",
            &[&me],
        )
        .await
        .expect("max seq")
        .get(0);
    let acked = max_seq - 3;
    let shift: Uuid = client
        .query_one(
            "SELECT shift_id FROM shifts WHERE device_id = $1 ORDER BY opened_at DESC LIMIT 1",
            &[&me],
        )
        .await
        .expect("a shift")
        .get(0);
    let listed: i64 = 1000;
    let day_start = DayBounds::of(today, &paris()).expect("day bounds").start_ms;

    // A counter's sync round.
    assert_plan(
        &client,
        "a round's own leases",
        &bounded::own_leases_sql(),
        &[&me, &first],
        &["leases_device_id_slot_id_key", "leases_unsettled"],
    )
    .await;
    assert_plan(
        &client,
        "the unsettled leases",
        &format!(
            "SELECT lease_id FROM leases WHERE {}",
            bounded::UNSETTLED_SQL
        ),
        &[],
        &["leases_unsettled"],
    )
    .await;
    assert_plan(
        &client,
        "a slot's leases",
        &bounded::slot_leases_sql(),
        &[&slots_of_today],
        &["leases_by_slot"],
    )
    .await;
    assert_plan(
        &client,
        "a counter's tallies",
        bounded::TALLY_SQL,
        &[&me, &slots_of_today],
        &["sales_by_device_slot", "counter_voids_sale_id_key"],
    )
    .await;
    assert_plan(
        &client,
        "the seqs received",
        bounded::RECEIVED_SEQS_SQL,
        &[&me, &acked],
        &["sales_device_id_terminal_seq_key", "quarantine_by_device"],
    )
    .await;
    assert_plan(
        &client,
        "the highest seq",
        bounded::MAX_SEQ_SQL,
        &[&me],
        &["sales_device_id_terminal_seq_key", "quarantine_by_device"],
    )
    .await;
    assert_plan(
        &client,
        "the quarantine listed back",
        bounded::OPEN_QUARANTINE_SQL,
        &[&me, &listed],
        &["quarantine_open_by_device"],
    )
    .await;

    // A gate sync.
    assert_plan(
        &client,
        "the tickets gates refuse",
        bounded::VOIDED_TICKETS_SQL,
        &[&today_first],
        &["tickets_refused_by_slot"],
    )
    .await;

    // Start-up and every full re-read of the cache.
    let first_ref: &(dyn ToSql + Sync) = &first;
    assert_plan(
        &client,
        "the live slots",
        &cache::live_rows_sql(&cache::slots_select()),
        &[first_ref],
        &["slots_pkey"],
    )
    .await;
    assert_plan(
        &client,
        "the live tallies",
        &cache::live_rows_sql(cache::TALLIES_SELECT),
        &[first_ref],
        &["tallies_pkey"],
    )
    .await;

    // The leases list of a day.
    assert_plan(
        &client,
        "the leases of a day",
        &leases::leases_on_sql(),
        &[&format!("{today}T"), &format!("{today}U")],
        &["leases_by_slot"],
    )
    .await;

    // Housekeeping (hourly, and the waiting list's sweep).
    assert_plan(
        &client,
        "forgetting unclaimed booking tokens",
        bounded::FORGET_TOKENS_SQL,
        &[&day_start],
        &["payments_token_kept"],
    )
    .await;
    assert_plan(
        &client,
        "dropping ended entries' tags",
        bounded::DROP_ENDED_TAGS_SQL,
        &[],
        &["waitlist_tagged"],
    )
    .await;

    // The day report.
    let day = DayBounds::of(today, &paris()).expect("day bounds");
    let instants: [&(dyn ToSql + Sync); 2] = [&day.start_ms, &day.end_ms];
    let slot_range: [&(dyn ToSql + Sync); 2] = [&day.slots_from, &day.slots_to];
    let by_instants: &[(&str, String, &[&str])] = &[
        ("orders", report::ORDERS_SQL.into(), &["orders_by_created"]),
        (
            "cancelled lines",
            report::CANCELLED_SQL.into(),
            &["tickets_cancelled", "tickets_by_order", "orders_pkey"],
        ),
        (
            "cancellations",
            report::CANCELLATIONS_SQL.into(),
            &["tickets_cancelled"],
        ),
        (
            "shifts",
            report::SHIFTS_SQL.into(),
            &["shifts_by_closed", "shifts_by_opened"],
        ),
        (
            "refunds by status",
            report::refunds_by_sql("status"),
            &["refunds_by_created"],
        ),
        (
            "refunds by reason",
            report::refunds_by_sql("reason"),
            &["refunds_by_created"],
        ),
    ];
    for (what, sql, indexes) in by_instants {
        assert_plan(&client, what, sql, &instants, indexes).await;
    }
    let by_slots: &[(&str, &str, &[&str])] = &[
        ("leases held", report::LEASES_HELD_SQL, &["leases_by_slot"]),
        (
            "over capacity",
            report::OVER_CAPACITY_SQL,
            &["sales_by_slot"],
        ),
        (
            "slots",
            report::SLOTS_SQL,
            &[
                "slots_pkey",
                "sales_by_slot",
                "redemptions_by_slot",
                "leases_by_slot",
            ],
        ),
        (
            "gate conflicts",
            report::CONFLICTS_SQL,
            &["gate_conflicts_by_slot"],
        ),
        ("waiting lists", report::WAITLIST_SQL, &["waitlist_by_slot"]),
    ];
    for (what, sql, indexes) in by_slots {
        assert_plan(&client, what, sql, &slot_range, indexes).await;
    }
    assert_plan(
        &client,
        "failed refunds",
        report::FAILED_REFUNDS_SQL,
        &[],
        &["refunds_failed"],
    )
    .await;
    assert_plan(
        &client,
        "counters' sales",
        report::SALES_SQL,
        &[&counters, &day.start_ms, &day.end_ms],
        &["sales_by_device_time"],
    )
    .await;
    assert_plan(
        &client,
        "counters' voids",
        report::VOIDS_SQL,
        &[&counters, &day.start_ms, &day.end_ms],
        &["counter_voids_by_device_time", "sales_pkey"],
    )
    .await;
    assert_plan(
        &client,
        "a shift's cash",
        report::SERVER_CASH_SQL,
        &[&shift],
        &["sales_by_shift", "counter_voids_by_shift"],
    )
    .await;
    assert_plan(
        &client,
        "quarantine of the day",
        report::QUARANTINE_SQL,
        &[&day.slots_from, &day.slots_to, &day.start_ms, &day.end_ms],
        // The unresolved items only (few while nothing waits for a
        // supervisor), or those of the day's slots and instants.
        &["quarantine_open_by_device|quarantine_by_slot"],
    )
    .await;
}

/// No inventory rule lives in the database: the functions that once decided
/// holds and confirmations in SQL (V2, V5) are dropped (V7), and no other
/// function takes their place; core's ledger decides on every path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrated_database_holds_no_functions_of_its_own() {
    let pg = PgCluster::start();
    let client = migrated(&pg).await;
    let rows = client
        .query(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .expect("list functions");
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        names.is_empty(),
        "functions left in the database: {names:?}"
    );
    let types: Vec<String> = client
        .query(
            "SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname = 'public' AND t.typtype = 'c'
               AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = t.typrelid AND c.relkind <> 'c')",
            &[],
        )
        .await
        .expect("list composite types")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(types.is_empty(), "composite types left: {types:?}");
}
