//! Online clients and counters on PostgreSQL under faults, briefly
//! (`tessera-loadtest pg-chaos`): three server processes on one database,
//! clients going to any live one, requests sometimes sent to two at once;
//! three counters, each syncing to its own process (moved to another while
//! that one is dead), each cut off once, a round of each sent to two
//! processes at once; one process SIGKILLed and started again twice,
//! PostgreSQL restarted once. Nothing oversold, every answered order and
//! every committed counter sale stored once, lease counts and tallies equal
//! the log. And the check itself fails when an answered order and a
//! counter sale are deleted.

use std::time::Duration;

use tessera_loadtest::pg_chaos::{self, PgChaosOptions, Sabotage};

fn options(sabotage: Sabotage) -> PgChaosOptions {
    PgChaosOptions {
        capacity: 120,
        clients: 8,
        seed: 20261202,
        duration: Duration::from_secs(8),
        duplicate_rate: 0.1,
        counters: 3,
        counter_gap: Duration::from_millis(300),
        // The server `cargo test --workspace` builds (or TESSERA_SERVER_BIN).
        server_bin: tessera_server::testkit::server_binary(),
        sabotage,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_processes_and_a_restarted_database_lose_and_oversell_nothing() {
    let r = pg_chaos::run(&options(Sabotage::default()))
        .await
        .expect("pg-chaos run");
    pg_chaos::print(&r);
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    assert_eq!(
        (
            r.oversold,
            r.escrow_overcommit,
            r.lost_orders,
            r.orders_without_answer,
            r.inconsistent_answers
        ),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(
        (r.lost_sales, r.duplicated_sales, r.tally_mismatches),
        (0, 0, 0)
    );
    assert_eq!(
        (r.kills_done, r.postgres_restarts, r.counter_cuts),
        (2, 1, 3),
        "every fault happened"
    );
    assert!(r.online_orders > 0, "something sold online");
    assert!(r.counter_sales > 0, "something sold at the counters");
    assert!(
        r.counter_moves >= 2,
        "a counter was moved off a killed process and back"
    );
    assert!(
        r.requests_sent_twice > 0 && r.sync_bodies_sent_twice > 0,
        "some requests and rounds went to two processes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_check_catches_a_lost_order_and_a_lost_counter_sale() {
    let r = pg_chaos::run(&options(Sabotage {
        order: true,
        counter_sale: true,
    }))
    .await
    .expect("pg-chaos run");
    assert!(!r.passed);
    assert_eq!(r.lost_orders, 1, "{:#?}", r.violations);
    assert_eq!(r.lost_sales, 1, "{:#?}", r.violations);
}
