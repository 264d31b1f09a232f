//! Gate mode: deciding at the door. Everything needed to decide offline is
//! held in memory (keys, voided tickets, zone, entry policy), so the answer
//! takes microseconds; the scan log in SQLite makes "already used" hold
//! across restarts and feeds the upload the server merges.

use std::collections::{HashMap, HashSet};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tessera_core::admission::{decide, DenyReason, EntryPolicy};
use tessera_core::api::devices::PublicKeys;
use tessera_core::api::gate_sync::{GateSyncRequest, GateSyncResponse, ScanRecord};
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::from_ms;
use tessera_core::limits::SCANS_PER_SYNC;
use tessera_core::ticket_code::{KeyRing, TicketClaims};
use uuid::Uuid;

use crate::error::TerminalError;
use crate::local::{self, keys, Identity};
use crate::peers::message::PeerKeys;
use crate::sales::{parse_slot, parse_uuid};

/// What a gate decides with, rebuilt after every sync.
pub(crate) struct GateCache {
    pub ring: KeyRing,
    pub voided: HashSet<Uuid>,
    pub tz: TimeZone,
    pub policy: EntryPolicy,
    pub names: HashMap<String, String>,
    /// What the museum sells: a signed code must name a real product, its
    /// admissions and a real entry window.
    pub catalogue: Catalogue,
    /// Every certified key with its role, for admissions gates share.
    pub peer_keys: PeerKeys,
}

pub(crate) fn load_cache(conn: &Connection) -> Result<GateCache, TerminalError> {
    let catalogue: Catalogue = local::get(conn, keys::CATALOGUE)?.ok_or_else(|| {
        TerminalError::Invalid(
            "this gate has not synced yet: it needs the museum's keys and catalogue".into(),
        )
    })?;
    let public: PublicKeys =
        local::get(conn, keys::PUBLIC_KEYS)?.unwrap_or(PublicKeys { keys: vec![] });
    let mut ring = KeyRing::new();
    // Only server and counter keys sign tickets; a gate's key signs the
    // admissions gates share, so a "ticket" signed by it is not one.
    for k in public.keys.iter().filter(|k| k.role.signs_tickets()) {
        let bytes = data_encoding::HEXLOWER
            .decode(k.public_key.as_bytes())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        match bytes {
            Some(b) => {
                if ring.insert(k.key_id, b, k.revoked).is_err() {
                    tracing::warn!(
                        key_id = k.key_id,
                        "server sent an invalid public key; ignored"
                    );
                }
            }
            None => tracing::warn!(
                key_id = k.key_id,
                "server sent an unreadable public key; ignored"
            ),
        }
    }
    let mut voided = HashSet::new();
    let mut stmt = conn.prepare("SELECT ticket_id FROM voided_tickets")?;
    for id in stmt.query_map([], |r| parse_uuid(&r.get::<_, String>(0)?))? {
        voided.insert(id?);
    }
    Ok(GateCache {
        ring,
        voided,
        tz: catalogue
            .time_zone()
            .map_err(|e| TerminalError::Storage(e.to_string()))?,
        policy: local::get(conn, keys::ENTRY_POLICY)?.unwrap_or_default(),
        names: catalogue
            .products
            .iter()
            .map(|p| (p.id.clone(), p.name.clone()))
            .collect(),
        catalogue,
        peer_keys: PeerKeys::from_public(&public),
    })
}

/// Why the gate refused a code before looking at its scan log.
#[derive(Debug)]
pub(crate) struct Refused {
    pub reason: DenyReason,
    pub message: String,
    /// What the code claims, when its signature held.
    pub claims: Option<TicketClaims>,
}

/// Everything that can be decided from the code alone: signature, signer,
/// then core's rules (catalogue, voided, day, window) in the server's order.
pub(crate) fn precheck(
    cache: &GateCache,
    code: &str,
    now: Timestamp,
) -> Result<TicketClaims, Refused> {
    let claims = cache.ring.verify(code).map_err(|e| {
        let reason = DenyReason::from_code_error(&e);
        Refused {
            reason,
            message: reason.explain().to_string(),
            claims: None,
        }
    })?;
    let voided = cache.voided.contains(&claims.ticket_id);
    match decide(
        &claims,
        &cache.catalogue,
        voided,
        &cache.tz,
        now,
        cache.policy,
    ) {
        Ok(()) => Ok(claims),
        Err(r) => Err(Refused {
            reason: r.reason,
            message: r.message,
            claims: Some(claims),
        }),
    }
}

/// When this device first admitted the ticket, if it did.
pub(crate) fn first_admission(
    conn: &Connection,
    ticket: Uuid,
) -> Result<Option<i64>, TerminalError> {
    Ok(conn
        .prepare_cached("SELECT scanned_at FROM scans WHERE ticket_id = ?1")?
        .query_row(params![ticket.to_string()], |r| r.get(0))
        .optional()?)
}

/// Records an admission (durably) unless this device already admitted the
/// ticket; returns false then.
pub(crate) fn record(
    conn: &mut Connection,
    scan_id: Uuid,
    claims: &TicketClaims,
    code: &str,
    at: Timestamp,
    online: bool,
) -> Result<bool, TerminalError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO scans (scan_id, ticket_id, slot_id, product_id, admits, code, scanned_at, mode, uploaded)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            scan_id.to_string(),
            claims.ticket_id.to_string(),
            claims.slot.to_string(),
            claims.product_id,
            claims.admits,
            code,
            at.as_millisecond(),
            if online { "online" } else { "offline" },
            online
        ],
    )?;
    tx.commit()?;
    Ok(inserted == 1)
}

pub(crate) fn admitted_since(conn: &Connection, since_ms: i64) -> Result<u32, TerminalError> {
    Ok(conn.query_row(
        "SELECT COALESCE(SUM(admits), 0) FROM scans WHERE scanned_at >= ?1",
        params![since_ms],
        |r| r.get(0),
    )?)
}

pub(crate) fn pending(conn: &Connection) -> Result<u32, TerminalError> {
    Ok(
        conn.query_row("SELECT COUNT(*) FROM scans WHERE uploaded = 0", [], |r| {
            r.get(0)
        })?,
    )
}

/// The next upload: the oldest scans not yet acknowledged, and this gate's
/// clock now (`now`), from which the server learns how far it is off.
pub(crate) fn build_request(
    conn: &Connection,
    identity: &Identity,
    now: Timestamp,
) -> Result<GateSyncRequest, TerminalError> {
    let mut stmt = conn.prepare_cached(
        "SELECT scan_id, code, ticket_id, slot_id, scanned_at FROM scans WHERE uploaded = 0 ORDER BY scanned_at LIMIT ?1",
    )?;
    let scans = stmt
        .query_map(params![SCANS_PER_SYNC as i64], |r| {
            Ok(ScanRecord {
                scan_id: parse_uuid(&r.get::<_, String>(0)?)?,
                code: r.get(1)?,
                ticket_id: parse_uuid(&r.get::<_, String>(2)?)?,
                slot_id: parse_slot(&r.get::<_, String>(3)?)?,
                scanned_at: from_ms(r.get(4)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(GateSyncRequest {
        device_id: identity.device_id,
        catalogue_version: local::get::<u64>(conn, keys::CATALOGUE_VERSION)?.unwrap_or(0),
        scans,
        sent_at: Some(now),
    })
}

pub(crate) fn apply_response(
    conn: &mut Connection,
    response: &GateSyncResponse,
    now: Timestamp,
) -> Result<(), TerminalError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached("UPDATE scans SET uploaded = 1 WHERE scan_id = ?1")?;
        for id in &response.scans_acked {
            stmt.execute(params![id.to_string()])?;
        }
    }
    tx.execute("DELETE FROM voided_tickets", [])?;
    {
        let mut stmt =
            tx.prepare_cached("INSERT OR IGNORE INTO voided_tickets (ticket_id) VALUES (?1)")?;
        for id in &response.voided_tickets {
            stmt.execute(params![id.to_string()])?;
        }
    }
    if let Some(catalogue) = &response.catalogue {
        local::set(&tx, keys::CATALOGUE, catalogue)?;
        local::set(&tx, keys::CATALOGUE_VERSION, &response.catalogue_version)?;
    }
    local::set(&tx, keys::PUBLIC_KEYS, &response.keys)?;
    local::set(&tx, keys::ENTRY_POLICY, &response.entry)?;
    local::set(&tx, keys::LAST_SYNC_AT, &now)?;
    local::set(&tx, keys::ONLINE, &true)?;
    local::set(&tx, keys::LAST_SYNC_ERROR, &Option::<String>::None)?;
    tx.commit()?;
    Ok(())
}
