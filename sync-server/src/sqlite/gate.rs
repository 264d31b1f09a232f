//! Gates inside the writer: online redemption (one ticket, one entry,
//! atomically) and the merge of scans that gates made offline, where a ticket
//! admitted twice is found and recorded as a conflict naming both gates.

use crdts::GSet;
use rusqlite::{params, OptionalExtension};
use tessera_core::admission::{DenyReason, EntryPolicy};
use tessera_core::api::gate::{RedeemResult, Redemption};
use tessera_core::api::gate_sync::{GateSyncRequest, GateSyncResponse};
use tessera_core::clock::from_ms;
use tessera_core::ids::new_id;
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::{CodeError, TicketClaims};
use uuid::Uuid;

use super::writer::{Ctx, Fatal};
use crate::error::ServiceError;
use crate::store::DeviceInfo;

/// One admission: when, which nonce, which gate. Ordered by time first, so
/// the set's first element is the admission that really came first.
type Admission = (i64, String, String);

fn admissions_of(ctx: &Ctx<'_>, ticket: &str) -> Result<GSet<Admission>, Fatal> {
    let mut set = GSet::new();
    let mut stmt = ctx
        .tx
        .prepare_cached("SELECT scanned_at, scan_id, gate_name FROM scans WHERE ticket_id = ?1")?;
    for row in stmt.query_map(params![ticket], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
        set.insert(row?);
    }
    Ok(set)
}

fn first_redemption(
    ctx: &Ctx<'_>,
    ticket: &str,
) -> Result<Option<(i64, String, Option<String>)>, Fatal> {
    Ok(ctx
        .tx
        .prepare_cached(
            "SELECT redeemed_at, gate_name, scan_id FROM redemptions WHERE ticket_id = ?1",
        )?
        .query_row(params![ticket], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?)
}

/// Writes an admission to the scan log (and as the ticket's first entry if it
/// is), then merges it with what other gates recorded for the same ticket.
/// Returns how many conflicts it created.
fn record_admission(
    ctx: &mut Ctx<'_>,
    gate: &DeviceInfo,
    claims: &TicketClaims,
    scan_id: Uuid,
    at: i64,
    mode: &str,
) -> Result<u32, Fatal> {
    let ticket = claims.ticket_id.to_string();
    ctx.tx
        .prepare_cached(
            "INSERT INTO scans (scan_id, ticket_id, slot_id, product_id, admits, key_id, gate_device, gate_name, scanned_at, mode, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            scan_id.to_string(),
            ticket,
            claims.slot.to_string(),
            claims.product_id,
            claims.admits,
            claims.key_id,
            gate.device_id.to_string(),
            gate.name,
            at,
            mode,
            ctx.now_ms
        ])?;
    if first_redemption(ctx, &ticket)?.is_none() {
        ctx.tx
            .prepare_cached(
                "INSERT INTO redemptions (ticket_id, slot_id, admits, redeemed_at, gate_device, gate_name, mode, scan_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                ticket,
                claims.slot.to_string(),
                claims.admits,
                at,
                gate.device_id.to_string(),
                gate.name,
                mode,
                scan_id.to_string()
            ])?;
    }
    // Merge every gate's admissions of this ticket: more than one is a
    // double entry, reported against the one that came first.
    let merged = admissions_of(ctx, &ticket)?;
    let all = merged.read();
    let mut conflicts = 0;
    if all.len() > 1 {
        let mut iter = all.iter();
        if let Some((first_at, first_scan, first_gate)) = iter.next() {
            for (at, scan, gate_name) in iter {
                conflicts += ctx
                    .tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO gate_conflicts (ticket_id, slot_id, first_scan, first_gate, first_at,
                             second_scan, second_gate, second_at, detected_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        ticket,
                        claims.slot.to_string(),
                        first_scan,
                        first_gate,
                        first_at,
                        scan,
                        gate_name,
                        at,
                        ctx.now_ms
                    ])? as u32;
            }
        }
    }
    if conflicts > 0 {
        tracing::warn!(ticket = %ticket, conflicts, "ticket admitted more than once by offline gates");
        metrics::counter!("tessera_gate_conflicts_total").increment(u64::from(conflicts));
    }
    Ok(conflicts)
}

pub(crate) fn redeem(
    ctx: &mut Ctx<'_>,
    gate: &DeviceInfo,
    claims: &TicketClaims,
    scan_id: Option<Uuid>,
) -> Result<Redemption, Fatal> {
    let ticket = claims.ticket_id.to_string();
    let mut answer = Redemption {
        result: RedeemResult::Admitted,
        reason: None,
        message: String::new(),
        ticket_id: Some(claims.ticket_id),
        product_id: Some(claims.product_id.clone()),
        slot_id: Some(claims.slot),
        admits: Some(claims.admits),
        first_redeemed_at: None,
        first_redeemed_by: None,
    };
    let voided: Option<Option<i64>> = ctx
        .tx
        .prepare_cached("SELECT voided_at FROM tickets WHERE ticket_id = ?1")?
        .query_row(params![ticket], |r| r.get(0))
        .optional()?;
    if let Some(Some(_)) = voided {
        answer.result = RedeemResult::Denied;
        answer.reason = Some(DenyReason::Voided);
        answer.message = DenyReason::Voided.explain().to_string();
        metrics::counter!("tessera_redemptions_total", "result" => "voided").increment(1);
        return Ok(answer);
    }
    if let Some((at, by, first_scan)) = first_redemption(ctx, &ticket)? {
        answer.first_redeemed_at = Some(from_ms(at));
        answer.first_redeemed_by = Some(by.clone());
        // The same scan sent again (a retry after a lost answer) is the same admission.
        if scan_id.is_some() && first_scan == scan_id.map(|s| s.to_string()) {
            answer.message = format!("Admit {}", claims.admits);
            return Ok(answer);
        }
        answer.result = RedeemResult::Denied;
        answer.reason = Some(DenyReason::AlreadyUsed);
        answer.message = format!(
            "Already used at {} by {}",
            from_ms(at)
                .to_zoned(ctx.state.tz.clone())
                .strftime("%H:%M:%S"),
            by
        );
        metrics::counter!("tessera_redemptions_total", "result" => "already_used").increment(1);
        return Ok(answer);
    }
    let now = ctx.now_ms;
    record_admission(
        ctx,
        gate,
        claims,
        scan_id.unwrap_or_else(new_id),
        now,
        "online",
    )?;
    answer.first_redeemed_at = Some(from_ms(now));
    answer.first_redeemed_by = Some(gate.name.clone());
    answer.message = format!("Admit {}", claims.admits);
    metrics::counter!("tessera_redemptions_total", "result" => "admitted").increment(1);
    Ok(answer)
}

/// Accepts a gate's offline scans and hands it what it needs offline.
pub(crate) fn gate_sync(
    ctx: &mut Ctx<'_>,
    gate: &DeviceInfo,
    request: GateSyncRequest,
    entry: EntryPolicy,
) -> Result<Result<GateSyncResponse, ServiceError>, Fatal> {
    if request.device_id != gate.device_id {
        return Ok(Err(ServiceError::Forbidden(format!(
            "this token belongs to device {}, but the body is for {}",
            gate.device_id, request.device_id
        ))));
    }
    if request.scans.len() > 10_000 {
        return Ok(Err(ServiceError::InvalidBody(
            "at most 10000 scans per sync".into(),
        )));
    }
    let (ring, keys) = ctx.state.keys.clone();
    // Check every scan before storing any: a bad upload changes nothing.
    let mut fresh = Vec::new();
    for scan in &request.scans {
        let claims = match ring.verify(&scan.code) {
            Ok(c) => c,
            // It was admitted before the key was revoked: still an entry.
            Err(CodeError::RevokedKey(_)) => {
                match tessera_core::ticket_code::decode_unverified(&scan.code) {
                    Ok((c, _, _)) => c,
                    Err(e) => {
                        return Ok(Err(ServiceError::InvalidBody(format!(
                            "scan {}: {e}",
                            scan.scan_id
                        ))))
                    }
                }
            }
            Err(e) => {
                return Ok(Err(ServiceError::InvalidBody(format!(
                    "scan {}: {e}",
                    scan.scan_id
                ))))
            }
        };
        if claims.ticket_id != scan.ticket_id || claims.slot != scan.slot_id {
            return Ok(Err(ServiceError::InvalidBody(format!(
                "scan {} does not match its ticket code",
                scan.scan_id
            ))));
        }
        let known: Option<i64> = ctx
            .tx
            .prepare_cached("SELECT 1 FROM scans WHERE scan_id = ?1")?
            .query_row(params![scan.scan_id.to_string()], |r| r.get(0))
            .optional()?;
        if known.is_none() {
            fresh.push((scan.scan_id, scan.scanned_at.as_millisecond(), claims));
        }
    }
    let mut conflicts = 0;
    for (scan_id, at, claims) in fresh {
        conflicts += record_admission(ctx, gate, &claims, scan_id, at, "offline")?;
    }
    let today = ctx.state.tz.to_datetime(from_ms(ctx.now_ms)).date();
    let from = SlotId::new(today, 0).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
    let voided_tickets = {
        let mut stmt = ctx.tx.prepare_cached(
            "SELECT ticket_id FROM tickets WHERE voided_at IS NOT NULL AND slot_id >= ?1",
        )?;
        let rows = stmt.query_map(params![from.to_string()], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(super::state::parse_uuid(&row?)?);
        }
        out
    };
    let version = ctx.state.catalogue_version;
    Ok(Ok(GateSyncResponse {
        server_time: from_ms(ctx.now_ms),
        scans_acked: request.scans.iter().map(|s| s.scan_id).collect(),
        conflicts,
        catalogue_version: version,
        catalogue: (request.catalogue_version != version)
            .then(|| ctx.state.catalogue.as_ref().clone()),
        keys: keys.as_ref().clone(),
        voided_tickets,
        entry,
    }))
}
