//! Memory the server's idempotency index takes per key, at 1 M keys.
//!
//! Fills an `idempotency_log` (the server's schema, in a temporary file) with
//! N records of random keys, then loads the writer's index from it exactly as
//! the server does at start, under a counting allocator: once with room for
//! every key in memory (bytes per key), once with the default bound (what a
//! day of 1 M keys actually costs), and checks that evicted keys are found.
//!
//! `cargo run -p tessera-loadtest --bin idempotency_memory -- [N]`
//! Memory figures do not depend on the build profile; times do.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rand::RngCore;
use rusqlite::params;
use tessera_server::sqlite::idempotency::{IdempotencyIndex, DEFAULT_KEYS_IN_MEMORY};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("idempotency.db");
    let conn = tessera_server::sqlite::schema::open(&path)?;
    let now_ms: i64 = 1_800_000_000_000;

    let started = Instant::now();
    let mut keys = Vec::with_capacity(n);
    {
        let tx = conn.unchecked_transaction()?;
        let mut insert = tx.prepare(
            "INSERT INTO idempotency_log (key_hash, request_hash, status, body, created_at) VALUES (?1, ?2, 201, ?3, ?4)",
        )?;
        let mut rng = rand::rng();
        let body = r#"{"hold_id":"0192f1c2-0000-7000-8000-000000000000","admissions":2}"#;
        for _ in 0..n {
            let mut key = [0u8; 16];
            let mut request = [0u8; 32];
            rng.fill_bytes(&mut key);
            rng.fill_bytes(&mut request);
            insert.execute(params![&key[..], &request[..], body, now_ms])?;
            keys.push(key);
        }
        drop(insert);
        tx.commit()?;
    }
    println!(
        "filled a log of {n} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Every key in memory: the cost of one key.
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let all = IdempotencyIndex::load(&conn, now_ms, n + 1)?;
    let loaded = started.elapsed();
    let retained = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    println!(
        "all {} keys in memory: {:.1} MiB retained ({:.1} bytes/key), peak {:.1} MiB, loaded in {:.2} s",
        all.len(),
        mib(retained),
        retained as f64 / all.len().max(1) as f64,
        mib(peak),
        loaded.as_secs_f64()
    );
    drop(all);

    // For comparison, the map the writer kept before this bound (key hash ->
    // request hash and log row, every key of the last day).
    let before = LIVE.load(Ordering::Relaxed);
    let mut old: std::collections::HashMap<[u8; 16], ([u8; 32], i64)> =
        std::collections::HashMap::new();
    for (row, key) in keys.iter().enumerate() {
        old.insert(*key, ([0u8; 32], row as i64));
    }
    let retained = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "the previous unbounded map, same keys: {:.1} MiB ({:.1} bytes/key)",
        mib(retained),
        retained as f64 / old.len().max(1) as f64
    );
    drop(old);

    // The default bound: the newest keys stay, the rest go to the database.
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    let bounded = IdempotencyIndex::load(&conn, now_ms, DEFAULT_KEYS_IN_MEMORY)?;
    let loaded = started.elapsed();
    let retained = LIVE.load(Ordering::Relaxed) - before;
    let peak = PEAK.load(Ordering::Relaxed) - before;
    println!(
        "bound {DEFAULT_KEYS_IN_MEMORY}: {} keys in memory, {:.1} MiB retained ({:.1} bytes per key of the log), peak {:.1} MiB, loaded (with eviction) in {:.2} s",
        bounded.len(),
        mib(retained),
        retained as f64 / n.max(1) as f64,
        mib(peak),
        loaded.as_secs_f64()
    );

    // Every key is still found: in memory or in the evicted table.
    let started = Instant::now();
    let sample = 10_000.min(n);
    let mut found = 0;
    for key in keys.iter().step_by((n / sample.max(1)).max(1)) {
        if bounded.find(&conn, key)?.is_some() {
            found += 1;
        }
    }
    let checked = keys.iter().step_by((n / sample.max(1)).max(1)).count();
    anyhow::ensure!(found == checked, "{found} of {checked} keys found");
    println!(
        "found {found} of {checked} sampled keys ({:.1} µs each)",
        started.elapsed().as_secs_f64() * 1e6 / checked.max(1) as f64
    );
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    let size = std::fs::metadata(&path)?.len() as usize;
    println!(
        "database (log + evicted keys, {}-byte bodies): {:.1} MiB ({:.0} bytes/key)",
        r#"{"hold_id":"0192f1c2-0000-7000-8000-000000000000","admissions":2}"#.len(),
        mib(size),
        size as f64 / n.max(1) as f64
    );
    Ok(())
}
