//! A counter in trouble: a damaged database is refused (never rebuilt empty
//! over its unsynced sales), a failed sync does not stop the quick refill,
//! and a sync round never blocks the async threads on SQLite.

mod common;

use std::path::Path;

use common::*;
use tessera_server::testkit::{slot, ServerProcess};
use tessera_terminal::{Terminal, TerminalError};

/// What `Terminal::open` says about `dir`, which must be a refusal naming
/// the file.
fn refusal(dir: &Path) -> String {
    match Terminal::open(dir) {
        Err(TerminalError::Storage(message)) => message,
        Err(other) => panic!("expected a storage refusal, got {other:?}"),
        Ok(_) => panic!("a damaged database was opened"),
    }
}

#[tokio::test]
async fn a_damaged_database_is_refused_and_never_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("terminal.db");

    // No database at all: not enrolled, and opening creates nothing.
    assert!(matches!(
        Terminal::open(dir.path()),
        Err(TerminalError::NotEnrolled)
    ));
    assert!(!Terminal::is_enrolled(dir.path()));
    assert!(!db.exists(), "opening must not create a database");

    for (content, says) in [
        (&b""[..], "empty (0 bytes)"),
        (
            &b"this is not a database at all, it is a shopping list"[..],
            "not a SQLite database",
        ),
        (&b"SQLite"[..], "cut short"),
    ] {
        std::fs::write(&db, content).unwrap();
        let message = refusal(dir.path());
        assert!(message.contains(&db.display().to_string()), "{message}");
        assert!(message.contains(says), "{message}");
        assert!(message.contains("not uploaded"), "{message}");
        // A front must show the refusal, not offer to enrol over the file.
        assert!(Terminal::is_enrolled(dir.path()));
        // Enrolment refuses before it spends a code or touches the file
        // (the address below is never contacted).
        let enrol =
            Terminal::enrol(dir.path(), "http://127.0.0.1:9", "ABCD-EFGH", "Counter 1").await;
        match enrol {
            Err(TerminalError::Storage(m)) => assert!(m.contains(says), "{m}"),
            Err(other) => panic!("enrol should refuse the damaged file, got {other:?}"),
            Ok(_) => panic!("enrolled over a damaged database"),
        }
        assert_eq!(std::fs::read(&db).unwrap(), content, "the file was changed");
    }
}

#[tokio::test]
async fn a_truncated_database_is_refused() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter 1").await;
    let s = slot(server.day, "14:00");
    c.t.sell(cash_sale(s, &[("adult", 1)], 1500)).await.unwrap();
    let dir = c.dir.path().to_path_buf();
    drop(c.t);
    // Folds the log into the file, then loses the second half of it.
    let db = dir.join("terminal.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(len > 8192, "a database of several pages ({len} bytes)");
    let page = 4096;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len((len / 2 / page) * page)
        .unwrap();
    let message = refusal(&dir);
    assert!(message.contains("terminal.db is damaged"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_one_failed_sync_a_sale_beyond_the_lease_is_refilled() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter 1").await;
    let s = slot(server.day, "14:00");
    let lease = lease_left(&c.t, s);
    assert!(lease > 0, "the first sync granted a lease for 14:00");
    let need = lease + 1;
    assert!(need <= 60, "one sale can ask for {need} places");

    // One round fails: the counter now counts itself offline.
    server.kill();
    let failed = c.t.sync_now().await;
    assert!(
        matches!(failed, Err(TerminalError::Offline(_))),
        "{failed:?}"
    );
    assert!(!c.t.status().unwrap().online);

    // The server is back with plenty of places; nobody syncs by hand.
    server.restart();
    let done =
        c.t.sell(cash_sale(s, &[("adult", need)], i64::from(need) * 1500))
            .await
            .expect("a sale beyond the lease is refilled in one quick sync");
    assert_eq!(done.sale.terminal_seq, 1);
    assert!(c.t.status().unwrap().online);
}

/// A sync round's SQLite work waits for the file's write lock (and for its
/// fsyncs) on the blocking pool. Here another connection holds the lock and
/// gives it up only when a task on the test's single runtime thread asks it
/// to: if the round blocked that thread on SQLite, the task could not run
/// until SQLite's busy timeout failed the round.
#[tokio::test(flavor = "current_thread")]
async fn a_sync_round_waits_for_sqlite_off_the_runtime_thread() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter 1").await;
    let s = slot(server.day, "14:00");
    c.t.sell(cash_sale(s, &[("adult", 1)], 1500)).await.unwrap();

    let locker = rusqlite::Connection::open(c.dir.path().join("terminal.db")).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        released.recv().unwrap();
        locker.execute_batch("COMMIT").unwrap();
    });

    // Spawned first, so the round runs (and meets the lock) before the
    // task that releases it.
    let t = c.t.clone();
    let round = tokio::spawn(async move { t.sync_now().await });
    tokio::spawn(async move {
        let _ = release.send(());
    });
    let summary = round
        .await
        .unwrap()
        .expect("the round completes once the lock is released");
    holder.join().unwrap();
    assert_eq!(summary.acked_seq, 1);
    assert_eq!(summary.pending_sales, 0);
}
