//! A small chaos run, as in `tessera-loadtest chaos`, with fixed seeds: online
//! clients and counters behind cuttable proxies sell one slot while the
//! server is SIGKILLed and restarted and requests are sent twice. After
//! healing, nothing is oversold, lost or duplicated and the tallies equal the
//! log. No assertion on speed.

use std::time::Duration;

use tessera_loadtest::chaos::{self, ChaosOptions, ChaosReport};

fn options(seed: u64, kills: usize, partitions: usize, duplicate_rate: f64) -> ChaosOptions {
    // Counters sync every half second, so the run stays short.
    std::env::set_var("TESSERA_SYNC_INTERVAL_MS", "500");
    ChaosOptions {
        capacity: 300,
        clients: 5,
        terminals: 3,
        kills,
        partitions,
        seed,
        duration: Duration::from_secs(7),
        duplicate_rate,
        // The server `cargo test --workspace` builds (or TESSERA_SERVER_BIN).
        server_bin: tessera_server::testkit::server_binary(),
        sabotage: false,
    }
}

fn assert_invariants(r: &ChaosReport, kills: usize) {
    chaos::print(r);
    assert!(
        r.violations.is_empty(),
        "seed {}: {:#?}",
        r.seed,
        r.violations
    );
    assert!(r.passed);
    assert_eq!(
        (
            r.oversold,
            r.escrow_overcommit,
            r.lost_orders,
            r.lost_sales,
            r.duplicated,
            r.tally_mismatches
        ),
        (0, 0, 0, 0, 0, 0),
        "seed {}",
        r.seed
    );
    assert_eq!(r.kills_done, kills as u64, "every planned kill happened");
    assert!(
        r.online_orders > 0 && r.counter_sales > 0,
        "both channels sold: {} orders, {} counter sales",
        r.online_orders,
        r.counter_sales
    );
    assert!(r.online_requests_sent_twice > 0, "some requests went twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_11_kills_partitions_and_duplicates_lose_and_oversell_nothing() {
    let opts = options(11, 2, 6, 0.2);
    let report = chaos::run(&opts).await.expect("chaos run");
    assert_invariants(&report, 2);
    assert_eq!(report.partitions_done, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_23_more_kills_fewer_partitions() {
    let opts = options(23, 3, 3, 0.3);
    let report = chaos::run(&opts).await.expect("chaos run");
    assert_invariants(&report, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_notice_a_sale_missing_on_the_server() {
    let mut opts = options(5, 0, 1, 0.1);
    opts.duration = Duration::from_secs(3);
    opts.sabotage = true;
    let report = chaos::run(&opts).await.expect("chaos run");
    chaos::print(&report);
    assert!(report.counter_sales > 0, "the counters sold something");
    assert!(!report.passed);
    assert_eq!(report.lost_sales, 1, "{:#?}", report.violations);
}
