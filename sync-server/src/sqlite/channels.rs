//! Trusted sales channels (a partner's site, a tourist office): operator
//! commands on the database file, also while a server runs on it (it notices
//! and reloads, like every admin command). A channel's token is printed once
//! and only its SHA-256 is kept.

use std::path::Path;

use jiff::Timestamp;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use tessera_core::ids::new_id;

use super::admin::{audit, AdminError};
use super::schema;
use super::state::load_catalogue;
use crate::admin::ChannelLine;
use crate::secrets;
use tessera_core::channels;

/// Adds a channel; returns its token (shown once).
pub fn add(db: &Path, name: &str, now: Timestamp) -> Result<String, AdminError> {
    let name = channels::new_name(name).map_err(|e| AdminError::Channel(e.to_string()))?;
    let mut conn = schema::open(db)?;
    load_catalogue(&conn)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists: Option<String> = tx
        .query_row(
            "SELECT channel_id FROM channels WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_some() {
        return Err(AdminError::Channel(format!(
            "a channel named {name:?} exists already (revoked ones keep their name: their orders still carry it)"
        )));
    }
    let token = secrets::new_channel_token();
    tx.execute(
        "INSERT INTO channels (channel_id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            new_id().to_string(),
            name,
            secrets::hash(&token),
            now.as_millisecond()
        ],
    )?;
    audit(&tx, now, "admin", "channel_add", &format!("{name:?}"))?;
    tx.commit()?;
    Ok(token)
}

pub fn list(db: &Path) -> Result<Vec<ChannelLine>, AdminError> {
    let conn = schema::open(db)?;
    let mut stmt = conn
        .prepare("SELECT channel_id, name, created_at, revoked_at FROM channels ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(ChannelLine {
            channel_id: super::sql::parse_uuid(&r.get::<_, String>(0)?)?,
            name: r.get(1)?,
            created_at: tessera_core::clock::from_ms(r.get(2)?),
            revoked_at: r
                .get::<_, Option<i64>>(3)?
                .map(tessera_core::clock::from_ms),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Revokes a channel by name or id: its token stops working at once (the
/// running server reloads within a second); its orders stand.
pub fn revoke(db: &Path, who: &str, by: &str, now: Timestamp) -> Result<String, AdminError> {
    let mut conn = schema::open(db)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let row: Option<(String, Option<i64>)> = tx
        .query_row(
            "SELECT name, revoked_at FROM channels WHERE name = ?1 OR channel_id = ?1",
            params![who.trim()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((name, revoked)) = row else {
        return Err(AdminError::Channel(format!("no channel named {who:?}")));
    };
    if revoked.is_none() {
        tx.execute(
            "UPDATE channels SET revoked_at = ?2 WHERE name = ?1",
            params![name, now.as_millisecond()],
        )?;
        audit(&tx, now, by, "channel_revoke", &format!("{name:?}"))?;
    }
    tx.commit()?;
    Ok(name)
}
