//! Operator commands that work on the database file directly, also while a
//! server runs on it: each is one IMMEDIATE transaction, and the running
//! server notices the change (`PRAGMA data_version`) and reloads.

use std::path::Path;

use jiff::civil::Date;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tessera_core::api::devices::Role;
pub use tessera_core::api::supervisor::{LeaseInfo, Revoked};
use tessera_core::catalogue::Catalogue;
use tessera_core::ids::LeaseId;
use tessera_core::inventory::{InventoryError, SlotLedger};
use tessera_core::leases::Footprint;
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::TicketSigner;

use super::schema::{self, OpenError};
use super::sql::Text;
use super::state::{expire_due_holds, lease_in, leases_of_slot_in, load_catalogue};
use crate::admin::InitSummary;
use crate::secrets;
use tessera_core::fixture::parse_fixture;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("fixtures file {path}: {message}")]
    Fixtures { path: String, message: String },
    #[error("no such slot {0}")]
    UnknownSlot(String),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("no such lease {0}")]
    UnknownLease(String),
    #[error("no device with id or name {0:?}")]
    UnknownDevice(String),
    #[error("{} devices are named {name:?}; revoke one by its id:\n{}", matches.len(), matches.join("\n"))]
    AmbiguousDevice { name: String, matches: Vec<String> },
    #[error("{0}")]
    Staff(String),
    #[error("{0}")]
    Channel(String),
    #[error("nothing in quarantine has id {0:?} (see the day report's quarantine section)")]
    UnknownQuarantine(String),
    #[error("{0} is already resolved")]
    AlreadyResolved(String),
}

/// Creates the database: catalogue, the server's signing key and slots for
/// `days` days from `today`.
pub fn init(
    db: &Path,
    fixtures: &Path,
    today: Date,
    days: i64,
    now: Timestamp,
) -> Result<InitSummary, AdminError> {
    let text = std::fs::read_to_string(fixtures).map_err(|e| AdminError::Fixtures {
        path: fixtures.display().to_string(),
        message: e.to_string(),
    })?;
    let (catalogue, staff) = parse_fixture(&text).map_err(|message| AdminError::Fixtures {
        path: fixtures.display().to_string(),
        message,
    })?;
    catalogue.validate().map_err(|e| AdminError::Fixtures {
        path: fixtures.display().to_string(),
        message: e.to_string(),
    })?;
    let mut conn = schema::open(db)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists: Option<String> = tx
        .query_row("SELECT value FROM meta WHERE key = 'catalogue'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if exists.is_some() {
        return Err(OpenError::AlreadyInitialised(db.display().to_string()).into());
    }
    let json = serde_json::to_string(&catalogue).map_err(|e| AdminError::Fixtures {
        path: fixtures.display().to_string(),
        message: e.to_string(),
    })?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('catalogue', ?1)",
        params![json],
    )?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('catalogue_version', '1')",
        [],
    )?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('horizon_days', ?1)",
        params![Text(&days)],
    )?;
    let signer = TicketSigner::from_seed(1, secrets::random_bytes::<32>());
    tx.execute(
        "INSERT INTO signing_keys (key_id, owner, public_key, secret_seed, created_at) VALUES (1, 'server', ?1, ?2, ?3)",
        params![signer.public_key().to_vec(), signer.seed().to_vec(), now.as_millisecond()],
    )?;
    let cost = super::staff::pin_cost();
    for member in &staff {
        let member =
            super::staff::member_from_fixture(member, cost).map_err(|e| AdminError::Fixtures {
                path: fixtures.display().to_string(),
                message: format!("staff {:?}: {e}", member.name),
            })?;
        super::staff::insert(&tx, &member)?;
    }
    let slots = ensure_slots(&tx, &catalogue, today, days)?;
    tx.commit()?;
    Ok(InitSummary {
        museum: catalogue.museum.name,
        slots,
        first_day: today,
        days,
    })
}

pub use super::staff::set_pin;

/// Inserts the slots of `[from, from + days)` that do not exist yet.
pub fn ensure_slots(
    conn: &Connection,
    catalogue: &Catalogue,
    from: Date,
    days: i64,
) -> rusqlite::Result<usize> {
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO slots (slot_id, date, starts_at, ends_at, window_minutes, capacity)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut added = 0;
    for offset in 0..days.max(0) {
        let Ok(date) = from.checked_add(jiff::Span::new().days(offset)) else {
            break;
        };
        let Ok(slots) = catalogue.slots_on(date) else {
            continue;
        };
        for s in slots {
            added += insert.execute(params![
                s.id,
                Text(&date),
                s.starts_at.as_millisecond(),
                s.ends_at.as_millisecond(),
                s.window_minutes,
                s.capacity
            ])?;
        }
    }
    Ok(added)
}

pub fn catalogue(conn: &Connection) -> Result<Catalogue, AdminError> {
    Ok(load_catalogue(conn)?)
}

/// Makes a one-time enrolment code, valid for `valid_hours`.
pub fn create_enrolment_code(
    db: &Path,
    role: Role,
    name: &str,
    now: Timestamp,
    valid_hours: i64,
) -> Result<String, AdminError> {
    let conn = schema::open(db)?;
    load_catalogue(&conn)?;
    let code = secrets::new_enrolment_code();
    conn.execute(
        "INSERT INTO enrolment_codes (code_hash, role, name, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            secrets::hash(&code),
            role.as_str(),
            name,
            now.as_millisecond(),
            now.as_millisecond() + valid_hours * 3600 * 1000
        ],
    )?;
    audit(
        &conn,
        now,
        "admin",
        "enrolment_code",
        &format!("{} {name:?}", role.as_str()),
    )?;
    Ok(code)
}

/// The demo payment provider's signing secret (made by migration 10; made
/// here if a database somehow lacks it).
pub fn demo_payment_secret(db: &Path) -> Result<Vec<u8>, AdminError> {
    let conn = schema::open(db)?;
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('demo_payment_secret', ?1)",
        params![data_encoding::HEXLOWER.encode(&secrets::random_bytes::<32>())],
    )?;
    let hex: String = conn.query_row(
        "SELECT value FROM meta WHERE key = 'demo_payment_secret'",
        [],
        |r| r.get(0),
    )?;
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .map_err(|e| AdminError::Channel(format!("demo payment secret unreadable: {e}")))
}

/// What a slot's ledger is by the database's rows, at `now`.
pub fn ledger_from_rows(
    conn: &Connection,
    slot: &SlotId,
    now_ms: i64,
) -> Result<SlotLedger, AdminError> {
    let row: Option<(u32, u32)> = conn
        .query_row(
            "SELECT capacity, sold_online FROM slots WHERE slot_id = ?1",
            params![slot],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (capacity, sold_online) = row.ok_or_else(|| AdminError::UnknownSlot(slot.to_string()))?;
    let held_online: u32 = conn.query_row(
        "SELECT COALESCE(SUM(admissions), 0) FROM holds WHERE slot_id = ?1 AND status = 'held' AND expires_at > ?2",
        params![slot, now_ms],
        |r| r.get(0),
    )?;
    let leases = Footprint::of(&leases_of_slot_in(conn, slot)?);
    Ok(SlotLedger {
        capacity,
        sold_online,
        held_online,
        leased: leases.escrow,
        over_capacity: leases.over_capacity,
    })
}

/// Changes a slot's capacity; refuses to go below what is already taken.
pub fn set_capacity(
    db: &Path,
    slot: &SlotId,
    capacity: u32,
    now: Timestamp,
) -> Result<(SlotLedger, u32), AdminError> {
    let mut conn = schema::open(db)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    expire_due_holds(&tx, now.as_millisecond())?;
    let mut ledger = ledger_from_rows(&tx, slot, now.as_millisecond())?;
    let before = ledger.capacity;
    ledger.set_capacity(capacity)?;
    tx.execute(
        "UPDATE slots SET capacity = ?2 WHERE slot_id = ?1",
        params![slot, capacity],
    )?;
    audit(
        &tx,
        now,
        "admin",
        "capacity",
        &format!("{slot}: {before} -> {capacity}"),
    )?;
    tx.commit()?;
    Ok((ledger, before))
}

pub fn audit(
    conn: &Connection,
    now: Timestamp,
    actor: &str,
    action: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
        params![now.as_millisecond(), actor, action, detail],
    )?;
    Ok(())
}

/// Leases of a day's slots, by slot then device.
pub fn leases(db: &Path, date: Date) -> Result<Vec<LeaseInfo>, AdminError> {
    let conn = schema::open(db)?;
    let mut stmt = conn.prepare(
        "SELECT l.lease_id, d.name, l.revoked_at IS NOT NULL, s.last_sync_at
         FROM leases l JOIN devices d ON d.device_id = l.device_id
         LEFT JOIN device_sync s ON s.device_id = l.device_id
         WHERE l.slot_id >= ?1 AND l.slot_id < ?2 ORDER BY l.slot_id, d.name",
    )?;
    let rows = stmt
        .query_map(params![format!("{date}T"), format!("{date}U")], |r| {
            Ok((
                r.get::<_, LeaseId>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (lease_id, device, revoked, last_sync_at) in rows {
        let lease = lease_in(&conn, lease_id)?
            .ok_or_else(|| AdminError::UnknownLease(lease_id.to_string()))?;
        out.push(LeaseInfo {
            lease_id,
            device,
            slot_id: lease.slot,
            escrow: lease.escrow(),
            sold: lease.sold,
            revoked,
            last_sync_at,
        });
    }
    Ok(out)
}

/// Revokes a lease of a counter that is not coming back: what it had not
/// reported sold goes back on sale. A sale from it that still arrives is
/// accepted and reported as over capacity. Logged in `audit_log`.
pub fn revoke_lease(
    db: &Path,
    lease_id: &str,
    actor: &str,
    now: Timestamp,
) -> Result<Revoked, AdminError> {
    let lease_id: LeaseId = lease_id
        .parse()
        .map_err(|_| AdminError::UnknownLease(lease_id.to_string()))?;
    let mut conn = schema::open(db)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let revoked = revoke_lease_in(&tx, lease_id, actor, now)?;
    tx.commit()?;
    Ok(revoked)
}

/// The revocation itself, inside the caller's transaction.
pub(crate) fn revoke_lease_in(
    tx: &Connection,
    lease_id: LeaseId,
    actor: &str,
    now: Timestamp,
) -> Result<Revoked, AdminError> {
    let mut lease =
        lease_in(tx, lease_id)?.ok_or_else(|| AdminError::UnknownLease(lease_id.to_string()))?;
    let device: String = tx.query_row(
        "SELECT name FROM devices WHERE device_id = ?1",
        params![Text(&lease.device_id)],
        |r| r.get(0),
    )?;
    let slot_id = lease.slot;
    if lease.is_revoked() {
        return Ok(Revoked {
            lease_id,
            device,
            slot_id,
            sold: lease.sold,
            returned: 0,
            already_revoked: true,
        });
    }
    let escrow = lease.escrow();
    let change = lease.revoke();
    tx.execute(
        "UPDATE leases SET revoked_at = ?2, revoked_escrow = ?3 WHERE lease_id = ?1",
        params![lease_id, now.as_millisecond(), lease.revoked_escrow],
    )?;
    let (sold, returned) = (lease.sold, change.returned());
    audit(
        tx,
        now,
        actor,
        "revoke_lease",
        &format!("lease {lease_id} of {device:?} for {slot_id}: {escrow} escrowed, {sold} reported sold, {returned} back on sale"),
    )?;
    Ok(Revoked {
        lease_id,
        device,
        slot_id,
        sold,
        returned,
        already_revoked: false,
    })
}

/// The device an operator means by `device`: its id, or a name that exactly
/// one device still in service has. Names are not unique (a replacement is
/// often enrolled under the old name), so a name shared by several devices
/// in service is refused with the list, never resolved by guessing.
fn find_device(tx: &Connection, device: &str) -> Result<(String, String, Option<u32>), AdminError> {
    let mut stmt = tx.prepare(
        "SELECT device_id, name, key_id, role, enrolled_at, revoked_at IS NOT NULL FROM devices
         WHERE device_id = ?1 OR name = ?1 ORDER BY enrolled_at",
    )?;
    let rows = stmt
        .query_map(params![device], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<u32>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, bool>(5)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if let Some(by_id) = rows.iter().find(|r| r.0 == device) {
        return Ok((by_id.0.clone(), by_id.1.clone(), by_id.2));
    }
    let in_service: Vec<_> = rows.iter().filter(|r| !r.5).collect();
    match (in_service.as_slice(), rows.as_slice()) {
        ([one], _) => Ok((one.0.clone(), one.1.clone(), one.2)),
        // Every device of that name is revoked already: revoking again is a no-op.
        ([], [.., last]) => Ok((last.0.clone(), last.1.clone(), last.2)),
        ([], []) => Err(AdminError::UnknownDevice(device.to_string())),
        (several, _) => Err(AdminError::AmbiguousDevice {
            name: device.to_string(),
            matches: several
                .iter()
                .map(|(id, _, _, role, enrolled_at, _)| {
                    let enrolled = jiff::Timestamp::from_millisecond(*enrolled_at)
                        .map(|t| t.to_string())
                        .unwrap_or_else(|_| enrolled_at.to_string());
                    format!("  {id}  {role}, enrolled {enrolled}")
                })
                .collect(),
        }),
    }
}

/// Marks a quarantined upload resolved with the supervisor's note (money
/// refunded, sale re-entered, counter replaced…). The upload itself stays as
/// received; it leaves the open list of the day report and, at its counter's
/// next sync, the counter's "need a supervisor" count. Logged in `audit_log`.
pub fn resolve_quarantine(
    db: &Path,
    item: &str,
    note: &str,
    actor: &str,
    now: Timestamp,
) -> Result<String, AdminError> {
    tessera_core::limits::text("note", note, tessera_core::limits::VOID_REASON_CHARS)
        .map_err(|e| AdminError::Staff(e.to_string()))?;
    tessera_core::limits::text("by", actor, tessera_core::limits::STAFF_NAME_CHARS)
        .map_err(|e| AdminError::Staff(e.to_string()))?;
    let mut conn = schema::open(db)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: Option<(String, Option<i64>, String)> = tx
        .query_row(
            "SELECT kind, resolved_at, reason FROM quarantine WHERE item_id = ?1",
            params![item],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((kind, resolved, reason)) = found else {
        return Err(AdminError::UnknownQuarantine(item.to_string()));
    };
    if resolved.is_some() {
        return Err(AdminError::AlreadyResolved(item.to_string()));
    }
    tx.execute(
        "UPDATE quarantine SET resolved_at = ?2, resolved_by = ?3, resolution = ?4 WHERE item_id = ?1",
        params![item, now.as_millisecond(), actor, note],
    )?;
    audit(
        &tx,
        now,
        actor,
        "resolve_quarantine",
        &format!("{kind} {item} ({reason}): {note}"),
    )?;
    tx.commit()?;
    Ok(kind)
}

/// Revokes a device (lost or stolen): its token stops working and the
/// tickets it signed are refused at the gates from their next sync.
pub fn revoke_device(
    db: &Path,
    device: &str,
    actor: &str,
    now: Timestamp,
) -> Result<String, AdminError> {
    let mut conn = schema::open(db)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (id, name, key) = find_device(&tx, device)?;
    tx.execute(
        "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?2) WHERE device_id = ?1",
        params![id, now.as_millisecond()],
    )?;
    if let Some(key) = key {
        tx.execute(
            "UPDATE signing_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE key_id = ?1",
            params![key, now.as_millisecond()],
        )?;
    }
    audit(
        &tx,
        now,
        actor,
        "revoke_device",
        &format!("{name:?} ({id})"),
    )?;
    tx.commit()?;
    Ok(name)
}
