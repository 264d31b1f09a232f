//! A store whose writer died says so: it is unhealthy at once, and
//! `writer_died` tells its owner (which stops the server; see
//! `writer_containment` for the process exiting non-zero).

use std::time::Duration;

use tessera_core::clock::Clock;
use tessera_server::sqlite::{admin, SqliteStore, StoreConfig, WriterStatus};
use tessera_server::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_writer_died_is_unhealthy() {
    // Read once per process, at the first failpoint: set before the store runs.
    std::env::set_var(
        "TESSERA_TEST_FAILPOINTS",
        "writer_after_batch=panic-after-2",
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("server.db");
    let clock = Clock::system();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo-museum.toml");
    let today = clock
        .now()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Paris").expect("tz"))
        .date();
    admin::init(&db, &fixtures, today, 3, clock.now()).expect("init");
    let store = SqliteStore::open(&db, StoreConfig::default(), clock).expect("open");
    let died = store.writer_died();

    // Each health check is one batch: two pass, the third kills the writer.
    assert!(store.healthy().await);
    assert!(store.healthy().await);
    let _ = store.healthy().await;
    let reason = tokio::time::timeout(Duration::from_secs(30), died)
        .await
        .expect("the writer's death is reported");
    assert!(reason.contains("failpoint writer_after_batch"), "{reason}");
    assert!(matches!(store.writer_status(), WriterStatus::Died(_)));
    assert!(!store.healthy().await);
}
