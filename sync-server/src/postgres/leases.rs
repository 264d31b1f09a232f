//! Counters' leases and quarantine on PostgreSQL, for supervisors and
//! operators: the day's leases, a revocation (core's `LeaseState::revoke`,
//! on the slot's locked row, like every other change to a slot's `leased`),
//! and marking a quarantined upload resolved. The API and the admin
//! commands (`leases`, `revoke-lease`, `resolve-quarantine` with
//! `--database`) share these functions; each runs in a transaction of its
//! own.

use jiff::civil::Date;
use jiff::Timestamp;
use tessera_core::api::supervisor::{LeaseInfo, Revoked};
use tessera_core::ids::LeaseId;
use tessera_core::slot::SlotId;
use tokio_postgres::{GenericClient, Transaction};

use super::cache::{slot_from_row, CachedSlot, SLOT_COLUMNS};
use super::schema::{connect, PgError, CHANGES};
use super::sync::{lease_from_row, SyncError, LEASE_COLUMNS};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Round(#[from] SyncError),
    #[error("no lease {0}")]
    UnknownLease(String),
    #[error("nothing in quarantine has id {0:?} (see the day report's quarantine section)")]
    UnknownQuarantine(String),
    #[error("{0} is resolved already")]
    AlreadyResolved(String),
    #[error("{0}")]
    Invalid(String),
}

impl LeaseError {
    /// 503 when PostgreSQL is out of reach or gave up on a session limit
    /// (the supervisor retries), 500
    /// otherwise; logged without row values.
    pub fn into_service(self, what: &str) -> StoreError {
        let unreachable = match &self {
            LeaseError::Round(SyncError::Db(e)) | LeaseError::Pg(PgError::Sql(e)) => {
                e.as_db_error().is_none() || super::schema::is_timeout(e)
            }
            LeaseError::Pg(PgError::ConnectTimeout(_)) => true,
            _ => false,
        };
        if unreachable {
            tracing::warn!(error = %self, "{what}: PostgreSQL out of reach");
            StoreError::Unavailable
        } else {
            tracing::error!(error = %self, "{what} failed");
            StoreError::Storage(format!("{what} failed"))
        }
    }
}

impl From<tokio_postgres::Error> for LeaseError {
    fn from(e: tokio_postgres::Error) -> Self {
        LeaseError::Round(SyncError::Db(e))
    }
}

/// The leases of the slots in `[$1, $2)` (a day's: `{date}T` to
/// `{date}U`) with their counter's name and last sync, through
/// `leases_by_slot`.
pub fn leases_on_sql() -> String {
    format!(
        "SELECT {cols}, d.name, s.last_sync_at
         FROM leases l JOIN devices d ON d.device_id = l.device_id
         LEFT JOIN device_sync s ON s.device_id = l.device_id
         WHERE l.slot_id >= $1 AND l.slot_id < $2 ORDER BY l.slot_id, d.name",
        cols = LEASE_COLUMNS
            .split(", ")
            .map(|c| format!("l.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Leases of a day's slots, by slot then device name.
pub async fn leases_on(
    client: &impl GenericClient,
    date: Date,
) -> Result<Vec<LeaseInfo>, LeaseError> {
    let rows = client
        .query(
            &leases_on_sql(),
            &[&format!("{date}T"), &format!("{date}U")],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let lease = lease_from_row(row)?;
        out.push(LeaseInfo {
            lease_id: LeaseId(lease.lease_id),
            device: row.try_get(9)?,
            slot_id: lease.slot,
            escrow: lease.escrow(),
            sold: lease.sold,
            revoked: lease.is_revoked(),
            last_sync_at: row.try_get(10)?,
        });
    }
    Ok(out)
}

/// Revokes a lease of a counter that is not coming back: what it had not
/// reported sold goes back on sale (core's rule), on the slot's locked row;
/// a sale from it that still arrives is accepted and flagged over capacity.
/// Logged; every process re-reads the slot. `None`: no such lease.
pub async fn revoke_in(
    tx: &Transaction<'_>,
    lease_id: LeaseId,
    actor: &str,
    now: Timestamp,
) -> Result<Option<(Revoked, Option<CachedSlot>)>, LeaseError> {
    let id = lease_id.as_uuid();
    // A lease's slot never changes: read it first, lock the slot, then the
    // lease as it stands (slot rows before lease rows, as everywhere).
    let Some(row) = tx
        .query_opt("SELECT slot_id FROM leases WHERE lease_id = $1", &[&id])
        .await?
    else {
        return Ok(None);
    };
    let slot_text: String = row.try_get(0)?;
    let slot_row = tx
        .query_one(
            &format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = $1 FOR UPDATE"),
            &[&slot_text],
        )
        .await?;
    let mut slot = slot_from_row(&slot_row)
        .ok_or_else(|| LeaseError::Invalid(format!("slot {slot_text} does not parse")))?;
    let row = tx
        .query_one(
            &format!(
                "SELECT {LEASE_COLUMNS}, (SELECT name FROM devices d WHERE d.device_id = l.device_id)
                 FROM leases l WHERE lease_id = $1 FOR UPDATE"
            ),
            &[&id],
        )
        .await?;
    let mut lease = lease_from_row(&row)?;
    let device: String = row.try_get::<_, Option<String>>(9)?.unwrap_or_default();
    let slot_id: SlotId = lease.slot;
    if lease.is_revoked() {
        return Ok(Some((
            Revoked {
                lease_id,
                device,
                slot_id,
                sold: lease.sold,
                returned: 0,
                already_revoked: true,
            },
            None,
        )));
    }
    let escrow = lease.escrow();
    let change = lease.revoke();
    change
        .apply(&mut slot.ledger)
        .map_err(|e| LeaseError::Round(SyncError::Inventory(e)))?;
    let revoked_escrow = lease
        .revoked_escrow
        .map(i32::try_from)
        .transpose()
        .map_err(|_| LeaseError::Invalid("escrow out of range".into()))?;
    tx.execute(
        "UPDATE leases SET revoked_at = $2, revoked_escrow = $3 WHERE lease_id = $1",
        &[&id, &now.as_millisecond(), &revoked_escrow],
    )
    .await?;
    let count =
        |n: u32| i32::try_from(n).map_err(|_| LeaseError::Invalid(format!("{n} is out of range")));
    let written = tx
        .query_one(
            &format!(
                "UPDATE slots SET leased = $2, over_capacity = $3, version = version + 1
                 WHERE slot_id = $1 RETURNING {SLOT_COLUMNS}"
            ),
            &[
                &slot_text,
                &count(slot.ledger.leased)?,
                &count(slot.ledger.over_capacity)?,
            ],
        )
        .await?;
    let (sold, returned) = (lease.sold, change.returned());
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, $2, 'revoke_lease', $3)",
        &[
            &now.as_millisecond(),
            &actor,
            &format!("lease {lease_id} of {device:?} for {slot_id}: {escrow} escrowed, {sold} reported sold, {returned} back on sale"),
        ],
    )
    .await?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANGES, &format!("slots:{slot_id}")],
    )
    .await?;
    // Its counter hears at once that its lease is gone.
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[
            &CHANGES,
            &format!("{}{}", super::cache::LEASES_CHANGED, lease.device_id),
        ],
    )
    .await?;
    Ok(Some((
        Revoked {
            lease_id,
            device,
            slot_id,
            sold,
            returned,
            already_revoked: false,
        },
        slot_from_row(&written),
    )))
}

/// `leases --database`.
pub async fn leases(url: &str, date: Date) -> Result<Vec<LeaseInfo>, LeaseError> {
    let client = connect(url).await?;
    leases_on(&client, date).await
}

/// `revoke-lease --database`.
pub async fn revoke_lease(
    url: &str,
    lease: &str,
    actor: &str,
    now: Timestamp,
) -> Result<Revoked, LeaseError> {
    let lease_id: LeaseId = lease
        .parse()
        .map_err(|_| LeaseError::UnknownLease(lease.to_string()))?;
    let mut client = connect(url).await?;
    let tx = client.transaction().await?;
    let (revoked, _) = revoke_in(&tx, lease_id, actor, now)
        .await?
        .ok_or_else(|| LeaseError::UnknownLease(lease.to_string()))?;
    tx.commit().await?;
    Ok(revoked)
}

/// `resolve-quarantine --database`: marks a quarantined upload resolved
/// with the supervisor's note; it leaves the day report's open list and, at
/// its counter's next sync, the counter's count. Logged.
pub async fn resolve_quarantine(
    url: &str,
    item: &str,
    note: &str,
    actor: &str,
    now: Timestamp,
) -> Result<String, LeaseError> {
    tessera_core::limits::text("note", note, tessera_core::limits::VOID_REASON_CHARS)
        .map_err(|e| LeaseError::Invalid(e.to_string()))?;
    tessera_core::limits::text("by", actor, tessera_core::limits::STAFF_NAME_CHARS)
        .map_err(|e| LeaseError::Invalid(e.to_string()))?;
    let id: uuid::Uuid = item
        .parse()
        .map_err(|_| LeaseError::UnknownQuarantine(item.to_string()))?;
    let mut client = connect(url).await?;
    let tx = client.transaction().await?;
    let Some(row) = tx
        .query_opt(
            "SELECT kind, resolved_at, reason FROM quarantine WHERE item_id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
    else {
        return Err(LeaseError::UnknownQuarantine(item.to_string()));
    };
    let kind: String = row.try_get(0)?;
    let resolved: Option<i64> = row.try_get(1)?;
    let reason: String = row.try_get(2)?;
    if resolved.is_some() {
        return Err(LeaseError::AlreadyResolved(item.to_string()));
    }
    tx.execute(
        "UPDATE quarantine SET resolved_at = $2, resolved_by = $3, resolution = $4 WHERE item_id = $1",
        &[&id, &now.as_millisecond(), &actor, &note],
    )
    .await?;
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, $2, 'resolve_quarantine', $3)",
        &[
            &now.as_millisecond(),
            &actor,
            &format!("{kind} {item} ({reason}): {note}"),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(kind)
}

/// The museum's time zone, for commands that default to "today".
pub async fn museum_tz(url: &str) -> Result<jiff::tz::TimeZone, LeaseError> {
    let client = connect(url).await?;
    let catalogue = super::schema::load_catalogue(&client).await?;
    catalogue
        .time_zone()
        .map_err(|e| LeaseError::Invalid(e.to_string()))
}
