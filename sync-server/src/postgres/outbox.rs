//! The mail outbox on PostgreSQL: rows are queued by the transaction of what
//! causes the mail ([`enqueue`]); any process's mailer works through them
//! (`crate::delivery::mailer`, through `MailOutbox`).
//!
//! Several processes run mailers on one database. A mailer claims the mails
//! it is about to send: `due_mail` takes due rows `FOR UPDATE SKIP LOCKED`
//! (two mailers asking at once get different rows) and, in the same
//! statement, moves their `next_attempt_at` a lease ahead ([`LEASE_MS`]), so
//! no other process finds them due while this one sends them. Sending ends
//! with `mail_sent` (sent, payload blanked) or `mail_failed` (the next
//! attempt's time, or never), which replaces the lease.
//!
//! A process that dies mid-send leaves its claimed mails unsent with the
//! lease as their next attempt: once the lease has run out, any process's
//! mailer sends them. A mail that the SMTP server had already accepted when
//! the process died (before `mail_sent` committed) is then sent a second
//! time: delivery is at least once, never lost, and twice only after a crash
//! in that window.

use tokio_postgres::Transaction;
use uuid::Uuid;

use super::shop::{in_transaction, PgResult};
use super::PgStore;
use crate::store::{MailOutbox, OutboxRow, StoreError};

/// How long a claimed mail is kept from other mailers: a round sends at most
/// 20 mails, each with a 30-second SMTP timeout, so 10 minutes in the worst
/// case; a quarter of an hour leaves room.
pub const LEASE_MS: i64 = 15 * 60 * 1000;

/// Never due again: how a mail that was given up on is parked.
pub const NEVER: i64 = i64::MAX;

/// Queues a mail inside the caller's transaction, due at once. `payload` is
/// the JSON of `crate::delivery::email::MailPayload`.
pub(super) async fn enqueue(
    tx: &Transaction<'_>,
    kind: &str,
    recipient: &str,
    language: &str,
    payload: &serde_json::Value,
    order_id: Option<Uuid>,
    now_ms: i64,
) -> PgResult<()> {
    tx.execute(
        "INSERT INTO mail_outbox (mail_id, kind, recipient, language, payload, order_id,
                                  created_at, attempts, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $7)",
        &[
            &tessera_core::ids::new_id(),
            &kind,
            &recipient,
            &language,
            &payload.to_string(),
            &order_id,
            &now_ms,
        ],
    )
    .await?;
    Ok(())
}

impl MailOutbox for PgStore {
    /// Claims the due mails for this process's mailer (see the module docs).
    async fn due_mail(&self, now_ms: i64, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let limit = i64::from(limit);
        let lease_until = now_ms.saturating_add(LEASE_MS);
        in_transaction!(self, "due_mail", |tx, _changes| async {
            let rows = tx
                .query(
                    "WITH due AS (
                         SELECT mail_id, next_attempt_at AS due_at FROM mail_outbox
                         WHERE sent_at IS NULL AND next_attempt_at <= $1
                         ORDER BY next_attempt_at, created_at LIMIT $2
                         FOR UPDATE SKIP LOCKED
                     )
                     UPDATE mail_outbox m SET next_attempt_at = $3 FROM due
                     WHERE m.mail_id = due.mail_id
                     RETURNING m.mail_id, m.kind, m.recipient, m.language, m.payload,
                               m.attempts, m.created_at, due.due_at",
                    &[&now_ms, &limit, &lease_until],
                )
                .await?;
            let mut out: Vec<(i64, OutboxRow)> = rows
                .iter()
                .map(|r| {
                    (
                        r.get(7),
                        OutboxRow {
                            mail_id: r.get::<_, Uuid>(0).to_string(),
                            kind: r.get(1),
                            recipient: r.get(2),
                            language: r.get(3),
                            payload: r.get(4),
                            attempts: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
                            created_at: r.get(6),
                        },
                    )
                })
                .collect();
            // RETURNING keeps no order: oldest due first, as asked.
            out.sort_by_key(|(due, row)| (*due, row.created_at));
            Ok::<_, super::online::JobError>(Ok(out.into_iter().map(|(_, r)| r).collect()))
        }
        .await)
    }

    async fn queued_mail(&self) -> Result<u64, StoreError> {
        in_transaction!(self, "queued_mail", |tx, _changes| {
            async {
            let n: i64 = tx
                .query_one(
                    "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND next_attempt_at < $1",
                    &[&NEVER],
                )
                .await?
                .get(0);
            Ok::<_, super::online::JobError>(Ok(u64::try_from(n).unwrap_or(0)))
        }
        .await
        })
    }

    async fn mail_sent(&self, mail_id: String, now_ms: i64) -> Result<(), StoreError> {
        let Ok(id) = Uuid::parse_str(&mail_id) else {
            return Ok(());
        };
        in_transaction!(self, "mail_sent", |tx, _changes| async {
            tx.execute(
                "UPDATE mail_outbox SET sent_at = $2, payload = '', last_error = NULL,
                        attempts = attempts + 1
                 WHERE mail_id = $1",
                &[&id, &now_ms],
            )
            .await?;
            Ok::<_, super::online::JobError>(Ok(()))
        }
        .await)
    }

    async fn mail_failed(
        &self,
        mail_id: String,
        error: String,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let Ok(id) = Uuid::parse_str(&mail_id) else {
            return Ok(());
        };
        // Error texts come from remote servers: bounded before storing.
        let error: String = error.chars().take(500).collect();
        in_transaction!(self, "mail_failed", |tx, _changes| async {
            match retry_at {
                Some(at) => {
                    tx.execute(
                        "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2,
                                next_attempt_at = $3
                         WHERE mail_id = $1 AND sent_at IS NULL",
                        &[&id, &error, &at],
                    )
                    .await?
                }
                None => {
                    tx.execute(
                        "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2,
                                next_attempt_at = $3, payload = ''
                         WHERE mail_id = $1 AND sent_at IS NULL",
                        &[&id, &error, &NEVER],
                    )
                    .await?
                }
            };
            Ok::<_, super::online::JobError>(Ok(()))
        }
        .await)
    }
}
