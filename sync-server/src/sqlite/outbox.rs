//! The mail outbox (migration 0011): rows are written in the same
//! transaction as what causes the mail ([`enqueue`]), and worked through by
//! the mailer (`crate::delivery::mailer`) through [`MailOutbox`].
//!
//! The mailer reads and writes the outbox through the writer's own jobs
//! rather than a connection of its own: any commit from another connection
//! changes SQLite's `data_version`, which the writer takes as "an admin
//! command changed the database" and answers by reloading its whole state.
//! A job is one small indexed query or one-row update, a few per mail.

use rusqlite::{params, Transaction};
use uuid::Uuid;

use super::SqliteStore;
use crate::store::{MailOutbox, OutboxRow, StoreError};

/// Queues a mail inside the caller's transaction, due at once. `payload`
/// is the JSON of `crate::delivery::email::MailPayload`.
pub fn enqueue(
    tx: &Transaction<'_>,
    kind: &str,
    recipient: &str,
    language: &str,
    payload: &str,
    order_id: Option<Uuid>,
    now_ms: i64,
) -> rusqlite::Result<String> {
    let mail_id = Uuid::now_v7().to_string();
    tx.execute(
        "INSERT INTO mail_outbox (mail_id, kind, recipient, language, payload, order_id,
                                  created_at, attempts, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?7)",
        params![
            mail_id,
            kind,
            recipient,
            language,
            payload,
            order_id.map(|o| o.to_string()),
            now_ms
        ],
    )?;
    Ok(mail_id)
}

/// Never due again: how a mail that was given up on is parked.
pub const NEVER: i64 = i64::MAX;

impl MailOutbox for SqliteStore {
    async fn due_mail(&self, now_ms: i64, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        self.submit(move |ctx| {
            let mut stmt = ctx.tx.prepare_cached(
                "SELECT mail_id, kind, recipient, language, payload, attempts, created_at
                 FROM mail_outbox
                 WHERE sent_at IS NULL AND next_attempt_at <= ?1
                 ORDER BY next_attempt_at, created_at LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![now_ms, limit], |r| {
                    Ok(OutboxRow {
                        mail_id: r.get(0)?,
                        kind: r.get(1)?,
                        recipient: r.get(2)?,
                        language: r.get(3)?,
                        payload: r.get(4)?,
                        attempts: r.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
                        created_at: r.get(6)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Ok(rows))
        })
        .await
    }

    async fn queued_mail(&self) -> Result<u64, StoreError> {
        self.submit(move |ctx| {
            let n: i64 = ctx.tx.query_row(
                "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND next_attempt_at < ?1",
                [NEVER],
                |r| r.get(0),
            )?;
            Ok(Ok(n.max(0) as u64))
        })
        .await
    }

    async fn mail_sent(&self, mail_id: String, now_ms: i64) -> Result<(), StoreError> {
        self.submit(move |ctx| {
            ctx.tx.execute(
                "UPDATE mail_outbox SET sent_at = ?2, payload = '', last_error = NULL,
                        attempts = attempts + 1
                 WHERE mail_id = ?1",
                params![mail_id, now_ms],
            )?;
            Ok(Ok(()))
        })
        .await
    }

    async fn mail_failed(
        &self,
        mail_id: String,
        error: String,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        // Error texts come from remote servers: bounded before storing.
        let error: String = error.chars().take(500).collect();
        self.submit(move |ctx| {
            match retry_at {
                Some(at) => ctx.tx.execute(
                    "UPDATE mail_outbox SET attempts = attempts + 1, last_error = ?2,
                            next_attempt_at = ?3
                     WHERE mail_id = ?1",
                    params![mail_id, error, at],
                )?,
                None => ctx.tx.execute(
                    "UPDATE mail_outbox SET attempts = attempts + 1, last_error = ?2,
                            next_attempt_at = ?3, payload = ''
                     WHERE mail_id = ?1",
                    params![mail_id, error, NEVER],
                )?,
            };
            Ok(Ok(()))
        })
        .await
    }
}
