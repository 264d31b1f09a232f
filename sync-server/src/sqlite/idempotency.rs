//! Idempotency-Key bookkeeping for online writes: a retry with the same key
//! gets the first answer from the log, the same key with another request is
//! refused, and records older than a day are dropped.

use rusqlite::params;

use super::state::IDEMPOTENCY_KEEP_MS;
use super::writer::{Ctx, Fatal};
use crate::error::ServiceError;
use crate::store::{Answer, Idem};

/// Runs `f` at most once per Idempotency-Key: a retry gets the stored first
/// answer; the same key with a different request is refused.
pub(crate) fn idempotent(
    ctx: &mut Ctx<'_>,
    idem: &Idem,
    f: impl FnOnce(&mut Ctx<'_>) -> Result<Result<(u16, serde_json::Value), ServiceError>, Fatal>,
) -> Result<Result<Answer, ServiceError>, Fatal> {
    let key = key_hash(&idem.key);
    let request: [u8; 32] = idem
        .request_hash
        .as_slice()
        .try_into()
        .map_err(|_| Fatal::Bookkeeping("request hash is not 32 bytes".into()))?;
    if let Some(&(first_request, row)) = ctx.state.idempotency.get(&key) {
        if first_request != request {
            return Ok(Err(ServiceError::IdempotencyKeyReused));
        }
        let (status, body): (u16, String) = ctx
            .tx
            .prepare_cached("SELECT status, body FROM idempotency_log WHERE id = ?1")?
            .query_row(params![row], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        metrics::counter!("tessera_idempotent_replays_total").increment(1);
        return Ok(Ok(Answer {
            status,
            body,
            replayed: true,
        }));
    }
    let (status, body) = match f(ctx)? {
        Ok(ok) => ok,
        Err(e) if e.is_final_outcome() => (e.status(), e.body()),
        Err(e) => return Ok(Err(e)),
    };
    ctx.tx
        .prepare_cached(
            "INSERT INTO idempotency_log (key_hash, request_hash, status, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![key.to_vec(), request.to_vec(), status, body.to_string(), ctx.now_ms])?;
    ctx.state
        .idempotency
        .insert(key, (request, ctx.tx.last_insert_rowid()));
    Ok(Ok(Answer {
        status,
        body,
        replayed: false,
    }))
}

fn key_hash(key: &str) -> [u8; 16] {
    let digest = crate::secrets::hash(key);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Drops records older than a day, from the log and from memory.
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
    ctx.state.idempotency.retain(|_, (_, row)| *row >= oldest);
    Ok(())
}
