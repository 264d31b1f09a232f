//! Idempotency-Key bookkeeping for online writes: a retry with the same key
//! gets the first answer from the log, the same key with another request is
//! refused, and records older than a day are dropped.
//!
//! Only answers worth replaying are recorded: a request that changed state,
//! or one whose answer can no longer change (the hold is confirmed, expired,
//! cancelled). Bad input, a reused key, a rate limit or a sold-out slot leave
//! no record, so a stream of such requests costs neither memory nor disk, and
//! a visitor retrying a sold-out hold gets a fresh chance at returned places.
//!
//! The writer keeps only the newest keys in memory (a bounded map). When it
//! outgrows its bound, the oldest quarter is written to `idempotency_evicted`
//! in one bulk insert in key order (the log itself stays append-only), and a
//! key missed in memory is looked up there: a retry of an evicted key still
//! gets its first answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::{params, Connection, OptionalExtension};

use super::sql::{parse_slot, parse_uuid, Text};
use super::state::IDEMPOTENCY_KEEP_MS;
use super::writer::{Ctx, Fatal};
use crate::store::{Answer, Idem, Refusal, StoreError};
use tessera_core::api::online::{Hold, IssuedTicket, Order};
use tessera_core::clock::from_ms;
use tessera_core::money::{Currency, Money};
use uuid::Uuid;

/// About 10 MB of memory (see docs/BENCHMARKS.md): far more keys than a
/// museum's day of online checkouts.
pub const DEFAULT_KEYS_IN_MEMORY: usize = crate::store::DEFAULT_IDEMPOTENCY_KEYS_IN_MEMORY;
const MIN_KEYS_IN_MEMORY: usize = 16;

/// Process-wide because the writer rebuilds its state (and this index) from
/// the database in several places; one server process has one store.
static KEYS_IN_MEMORY: AtomicUsize = AtomicUsize::new(DEFAULT_KEYS_IN_MEMORY);

pub(crate) fn set_keys_in_memory(n: usize) {
    KEYS_IN_MEMORY.store(n.max(MIN_KEYS_IN_MEMORY), Ordering::Relaxed);
}

/// Key hash -> `idempotency_log` row, for the newest keys; older ones are
/// in `idempotency_evicted`.
pub struct IdempotencyIndex {
    recent: HashMap<[u8; 16], i64>,
    cap: usize,
    /// Every log row up to this id (still in the log) has its key in
    /// `idempotency_evicted`; every later one is in `recent`.
    evicted_upto: i64,
}

impl IdempotencyIndex {
    /// Loads the last day's keys, keeping at most `cap` in memory (evicting
    /// the rest to the database).
    pub fn load(conn: &Connection, now_ms: i64, cap: usize) -> rusqlite::Result<Self> {
        let mut index = IdempotencyIndex {
            recent: HashMap::new(),
            cap: cap.max(MIN_KEYS_IN_MEMORY),
            evicted_upto: conn.query_row(
                "SELECT COALESCE(MAX(log_id), 0) FROM idempotency_evicted",
                [],
                |r| r.get(0),
            )?,
        };
        let mut stmt = conn.prepare(
            "SELECT id, key_hash FROM idempotency_log WHERE id > ?1 AND created_at > ?2 ORDER BY id",
        )?;
        let rows = stmt.query_map(
            params![index.evicted_upto, now_ms - IDEMPOTENCY_KEEP_MS],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )?;
        for row in rows {
            let (id, key) = row?;
            if let Ok(key) = <[u8; 16]>::try_from(key) {
                index.insert(conn, key, id)?;
            }
        }
        Ok(index)
    }

    pub(crate) fn load_configured(conn: &Connection, now_ms: i64) -> rusqlite::Result<Self> {
        Self::load(conn, now_ms, KEYS_IN_MEMORY.load(Ordering::Relaxed))
    }

    /// Keys held in memory.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// The log row of a key's first answer, from memory or else the database.
    pub fn find(&self, conn: &Connection, key: &[u8; 16]) -> rusqlite::Result<Option<i64>> {
        if let Some(&row) = self.recent.get(key) {
            return Ok(Some(row));
        }
        if self.evicted_upto == 0 {
            return Ok(None);
        }
        conn.prepare_cached("SELECT log_id FROM idempotency_evicted WHERE key_hash = ?1")?
            .query_row(params![&key[..]], |r| r.get(0))
            .optional()
    }

    /// Records a key whose first answer is at log row `row` (rows are
    /// numbered in time order); may evict the oldest keys to the database.
    pub fn insert(&mut self, conn: &Connection, key: [u8; 16], row: i64) -> rusqlite::Result<()> {
        self.recent.insert(key, row);
        if self.recent.len() > self.cap {
            self.evict(conn)?;
        }
        Ok(())
    }

    /// Moves the oldest keys to the database until a quarter of the bound is
    /// free again: one bulk write per `cap / 4` new keys.
    fn evict(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let keep = self.cap * 3 / 4;
        let surplus = self.recent.len().saturating_sub(keep);
        if surplus == 0 {
            return Ok(());
        }
        let mut rows: Vec<i64> = self.recent.values().copied().collect();
        let (_, threshold, _) = rows.select_nth_unstable(surplus - 1);
        let threshold = *threshold;
        drop(rows);
        let mut out: Vec<([u8; 16], i64)> = self
            .recent
            .iter()
            .filter(|(_, row)| **row <= threshold)
            .map(|(k, row)| (*k, *row))
            .collect();
        // Key order: each B-tree page of the table is written once per bulk.
        out.sort_unstable();
        // At start-up the connection is not in a transaction; one bulk of
        // inserts must not cost one fsync each.
        let own_tx = if conn.is_autocommit() {
            Some(conn.unchecked_transaction()?)
        } else {
            None
        };
        {
            let mut stmt = conn.prepare_cached(
                "INSERT OR REPLACE INTO idempotency_evicted (key_hash, log_id) VALUES (?1, ?2)",
            )?;
            for (key, row) in &out {
                stmt.execute(params![&key[..], row])?;
            }
        }
        if let Some(tx) = own_tx {
            tx.commit()?;
        }
        self.recent.retain(|_, row| *row > threshold);
        self.evicted_upto = self.evicted_upto.max(threshold);
        metrics::counter!("tessera_idempotency_keys_evicted_total").increment(out.len() as u64);
        Ok(())
    }

    /// Forgets keys whose log rows (all before `oldest`) were deleted.
    fn forget_before(&mut self, conn: &Connection, oldest: i64) -> rusqlite::Result<()> {
        self.recent.retain(|_, row| *row >= oldest);
        conn.execute(
            "DELETE FROM idempotency_evicted WHERE log_id < ?1",
            params![oldest],
        )?;
        Ok(())
    }
}

/// Answers worth replaying: the request ran and nothing a retry does can
/// change its answer. A sold-out hold changed nothing, and places may come
/// back: its retry runs again.
fn worth_recording(e: &StoreError) -> bool {
    e.is_final_outcome() && !matches!(e, StoreError::Refused(Refusal::SoldOut { .. }))
}

/// How a record's `body` column reads (`form`, migration 0017).
const FORM_JSON: i64 = 0;
const FORM_HOLD: i64 = 1;
const FORM_ORDER: i64 = 2;

/// A first answer as the writer hands it back. Holds and orders stay typed:
/// their JSON is built by the caller's task after the commit, and their
/// record holds only their id, the rows being the answer (they are written
/// once and never changed in what the answer shows).
pub(crate) enum Body {
    Json(serde_json::Value),
    Hold(Box<Hold>),
    Order(Box<Order>),
}

impl Body {
    fn stored(&self) -> (i64, String) {
        match self {
            Body::Json(v) => (FORM_JSON, v.to_string()),
            Body::Hold(h) => (FORM_HOLD, h.hold_id.to_string()),
            Body::Order(o) => (FORM_ORDER, o.order_id.to_string()),
        }
    }

    pub fn into_json(self) -> serde_json::Value {
        match self {
            Body::Json(v) => v,
            Body::Hold(h) => serde_json::json!(h),
            Body::Order(o) => serde_json::json!(o),
        }
    }
}

/// What `idempotent_typed` answers; `into_answer` off the writer's thread.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Body,
    pub replayed: bool,
}

impl Reply {
    pub fn into_answer(self) -> Answer {
        Answer {
            status: self.status,
            body: self.body.into_json(),
            replayed: self.replayed,
        }
    }
}

/// Runs `f` at most once per Idempotency-Key: a retry gets the stored first
/// answer; the same key with a different request is refused.
pub(crate) fn idempotent(
    ctx: &mut Ctx<'_>,
    idem: &Idem,
    f: impl FnOnce(&mut Ctx<'_>) -> Result<Result<(u16, serde_json::Value), StoreError>, Fatal>,
) -> Result<Result<Answer, StoreError>, Fatal> {
    let reply = idempotent_typed(ctx, idem, |ctx| {
        Ok(f(ctx)?.map(|(status, body)| (status, Body::Json(body))))
    })?;
    Ok(reply.map(Reply::into_answer))
}

/// `idempotent` for work that answers a typed body (holds, orders).
pub(crate) fn idempotent_typed(
    ctx: &mut Ctx<'_>,
    idem: &Idem,
    f: impl FnOnce(&mut Ctx<'_>) -> Result<Result<(u16, Body), StoreError>, Fatal>,
) -> Result<Result<Reply, StoreError>, Fatal> {
    let key = key_hash(&idem.key);
    let request: [u8; 32] = idem
        .request_hash
        .as_slice()
        .try_into()
        .map_err(|_| Fatal::Bookkeeping("request hash is not 32 bytes".into()))?;
    if let Some(row) = ctx.state.idempotency.find(ctx.tx, &key)? {
        let first: Option<(Vec<u8>, u16, i64, String)> = ctx
            .tx
            .prepare_cached(
                "SELECT request_hash, status, form, body FROM idempotency_log WHERE id = ?1",
            )?
            .query_row(params![row], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        // No row: it was pruned with the rest of its day; the key is new again.
        if let Some((first_request, status, form, body)) = first {
            if first_request != request {
                return Ok(Err(Refusal::IdempotencyKeyReused.into()));
            }
            let body = stored_body(ctx, form, &body)?;
            metrics::counter!("tessera_idempotent_replays_total").increment(1);
            return Ok(Ok(Reply {
                status,
                body,
                replayed: true,
            }));
        }
    }
    let (status, body) = match f(ctx)? {
        Ok(ok) => ok,
        Err(e) if worth_recording(&e) => (e.status(), Body::Json(e.body())),
        Err(e) => return Ok(Err(e)),
    };
    let (form, stored) = body.stored();
    ctx.tx
        .prepare_cached(
            "INSERT INTO idempotency_log (key_hash, request_hash, status, form, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![&key[..], &request[..], status, form, stored, ctx.now_ms])?;
    let row = ctx.tx.last_insert_rowid();
    ctx.state.idempotency.insert(ctx.tx, key, row)?;
    Ok(Ok(Reply {
        status,
        body,
        replayed: false,
    }))
}

/// A stored first answer, read back in the form it was written in.
fn stored_body(ctx: &Ctx<'_>, form: i64, body: &str) -> Result<Body, Fatal> {
    match form {
        FORM_HOLD => {
            let id = parse_uuid(body).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
            Ok(Body::Hold(Box::new(stored_hold(ctx, id)?)))
        }
        FORM_ORDER => {
            let id = parse_uuid(body).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
            Ok(Body::Order(Box::new(stored_order(ctx, id)?)))
        }
        _ => Ok(Body::Json(
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )),
    }
}

fn money(amount: i64, currency: &str) -> Result<Money, Fatal> {
    let currency = Currency::new(currency).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
    Ok(Money::new(amount, currency))
}

/// A hold's first answer, from its row (what it shows never changes).
fn stored_hold(ctx: &Ctx<'_>, hold_id: Uuid) -> Result<Hold, Fatal> {
    let row: Option<(String, i64, i64, String, u32, String)> = ctx
        .tx
        .prepare_cached(
            "SELECT slot_id, expires_at, total, currency, admissions, lines FROM holds WHERE hold_id = ?1",
        )?
        .query_row(params![Text(&hold_id)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .optional()?;
    let Some((slot, expires_ms, total, currency, admissions, lines)) = row else {
        return Err(Fatal::Bookkeeping(format!(
            "idempotency record names hold {hold_id}, which is gone"
        )));
    };
    Ok(Hold {
        hold_id,
        slot_id: parse_slot(&slot)?,
        expires_at: from_ms(expires_ms),
        total: money(total, &currency)?,
        admissions,
        lines: serde_json::from_str(&lines).map_err(|e| Fatal::Bookkeeping(e.to_string()))?,
    })
}

/// An order's first answer, from its row and its tickets in the order they
/// were written.
fn stored_order(ctx: &Ctx<'_>, order_id: Uuid) -> Result<Order, Fatal> {
    let row: Option<(String, String, i64, String, String, i64)> = ctx
        .tx
        .prepare_cached(
            "SELECT hold_id, slot_id, total, currency, payment_reference, created_at FROM orders WHERE order_id = ?1",
        )?
        .query_row(params![Text(&order_id)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })
        .optional()?;
    let Some((hold, slot, total, currency, payment_reference, created_ms)) = row else {
        return Err(Fatal::Bookkeeping(format!(
            "idempotency record names order {order_id}, which is gone"
        )));
    };
    let slot_id = parse_slot(&slot)?;
    let mut stmt = ctx.tx.prepare_cached(
        "SELECT ticket_id, product_id, admits, code FROM tickets WHERE order_id = ?1 ORDER BY rowid",
    )?;
    let tickets = stmt
        .query_map(params![Text(&order_id)], |r| {
            Ok(IssuedTicket {
                ticket_id: parse_uuid(&r.get::<_, String>(0)?)?,
                product_id: r.get(1)?,
                slot_id,
                admits: r.get(2)?,
                code: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Order {
        order_id,
        hold_id: parse_uuid(&hold)?,
        slot_id,
        total: money(total, &currency)?,
        payment_reference,
        created_at: from_ms(created_ms),
        tickets,
    })
}

fn key_hash(key: &str) -> [u8; 16] {
    let digest = crate::secrets::hash(key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Drops records older than a day, from the log, the evicted keys and memory.
pub(crate) fn prune(ctx: &mut Ctx<'_>) -> Result<(), Fatal> {
    let cutoff = ctx.now_ms - IDEMPOTENCY_KEEP_MS;
    ctx.tx.execute(
        "DELETE FROM idempotency_log WHERE created_at < ?1",
        params![cutoff],
    )?;
    // Rows are numbered in time order: what is left starts at the oldest kept row.
    let oldest: Option<i64> = ctx
        .tx
        .query_row("SELECT MIN(id) FROM idempotency_log", [], |r| r.get(0))?;
    let oldest = oldest.unwrap_or(i64::MAX);
    ctx.state.idempotency.forget_before(ctx.tx, oldest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::schema::open(&dir.path().join("t.db")).unwrap();
        (dir, conn)
    }

    fn log(conn: &Connection, key: [u8; 16], now_ms: i64) -> i64 {
        conn.execute(
            "INSERT INTO idempotency_log (key_hash, request_hash, status, body, created_at) VALUES (?1, ?2, 201, '{}', ?3)",
            params![key.to_vec(), vec![0u8; 32], now_ms],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    fn key(i: u32) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&i.to_be_bytes());
        k[15] = 0x5a;
        k
    }

    #[test]
    fn memory_stays_bounded_and_evicted_keys_are_still_found() {
        let (_dir, conn) = db();
        let now = 1_000_000;
        let mut index = IdempotencyIndex::load(&conn, now, 100).unwrap();
        let mut rows = Vec::new();
        for i in 0..1000 {
            let row = log(&conn, key(i), now);
            index.insert(&conn, key(i), row).unwrap();
            rows.push(row);
            assert!(index.len() <= 100);
        }
        for i in 0..1000 {
            assert_eq!(index.find(&conn, &key(i)).unwrap(), Some(rows[i as usize]));
        }
        assert_eq!(index.find(&conn, &key(5000)).unwrap(), None);

        // A restart loads the same picture within the same bound.
        let again = IdempotencyIndex::load(&conn, now, 100).unwrap();
        assert!(again.len() <= 100);
        for i in (0..1000).step_by(7) {
            assert_eq!(again.find(&conn, &key(i)).unwrap(), Some(rows[i as usize]));
        }
    }

    #[test]
    fn a_log_bigger_than_the_bound_is_evicted_at_load() {
        let (_dir, conn) = db();
        let now = 1_000_000;
        let rows: Vec<i64> = (0..500).map(|i| log(&conn, key(i), now)).collect();
        let index = IdempotencyIndex::load(&conn, now, 64).unwrap();
        assert!(index.len() <= 64);
        for i in 0..500 {
            assert_eq!(index.find(&conn, &key(i)).unwrap(), Some(rows[i as usize]));
        }
    }
}
