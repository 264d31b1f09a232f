//! The online path on PostgreSQL under faults, briefly (`tessera-loadtest
//! pg-chaos`): three server processes on one database, clients going to any
//! live one, requests sometimes sent to two at once; one process SIGKILLed
//! and started again twice, PostgreSQL restarted once. Nothing oversold,
//! every answered order stored once, no order stored that nobody was
//! answered. And the check itself fails when an answered order is deleted.

use std::time::Duration;

use tessera_loadtest::pg_chaos::{self, PgChaosOptions};

fn options(sabotage: bool) -> PgChaosOptions {
    PgChaosOptions {
        capacity: 400,
        clients: 8,
        seed: 20261202,
        duration: Duration::from_secs(8),
        duplicate_rate: 0.1,
        // The server `cargo test --workspace` builds (or TESSERA_SERVER_BIN).
        server_bin: tessera_server::testkit::server_binary(),
        sabotage,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_processes_and_a_restarted_database_lose_and_oversell_nothing() {
    let r = pg_chaos::run(&options(false)).await.expect("pg-chaos run");
    pg_chaos::print(&r);
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    assert_eq!(
        (
            r.oversold,
            r.lost_orders,
            r.orders_without_answer,
            r.inconsistent_answers
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(
        (r.kills_done, r.postgres_restarts),
        (2, 1),
        "every fault happened"
    );
    assert!(r.online_orders > 0, "something sold");
    assert!(
        r.requests_sent_twice > 0,
        "some requests went to two processes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_check_catches_an_answered_order_that_is_not_stored() {
    let r = pg_chaos::run(&options(true)).await.expect("pg-chaos run");
    assert!(!r.passed);
    assert_eq!(r.lost_orders, 1, "{:#?}", r.violations);
}
