//! Gates inside the writer: online redemption (one ticket, one entry,
//! atomically) and the merge of scans that gates made offline, where a ticket
//! admitted twice is found and recorded as a conflict naming both gates.
//!
//! Times. Every admission carries the time the server orders it by
//! (`scanned_at` in `scans`, `redeemed_at` in `redemptions`, `*_at` in
//! `gate_conflicts`) and, for offline scans, the time the device claimed
//! (`device_at`), plus when the server received it (`received_at`). The
//! server trusts its own clock first: an online redemption happened when the
//! server recorded it; an offline scan happened no later than the server
//! received it, and its claimed time is read through the gate's measured
//! clock error. So a gate whose clock runs 90 s fast is never believed to
//! have admitted someone in the server's future, nor named first for it.
//!
//! Cost. Everything that does not need the database (signatures, matching a
//! scan to its code, duplicates inside one body) is checked before the job
//! reaches the writer ([`check_sync`]); inside the writer a body costs a few
//! indexed statements per scan, whatever the number of scans per ticket.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};
use tessera_core::admission::{decide, EntryPolicy};
use tessera_core::api::gate::{RedeemResult, Redemption};
use tessera_core::api::gate_sync::GateSyncResponse;
use tessera_core::clock::from_ms;
use tessera_core::ids::new_id;
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::TicketClaims;
use uuid::Uuid;

use super::sql::Text;
use super::writer::{Ctx, Fatal};
pub(crate) use crate::gates::check_sync;
use crate::gates::{admitted, already_used, scan_id_reused, CheckedSync};
use crate::store::{DeviceInfo, StoreError};

/// One admission as the server records it.
#[derive(Clone, Debug)]
struct Admission {
    scan_id: String,
    /// The time the server orders admissions by (see the module doc).
    at: i64,
    /// What the device said (offline scans only).
    device_at: Option<i64>,
    received_at: i64,
    gate_device: String,
    gate_name: String,
    mode: String,
}

impl Admission {
    /// Earlier first; the scan id breaks ties so every server agrees.
    fn key(&self) -> (i64, &str) {
        (self.at, &self.scan_id)
    }
}

fn recorded_first(ctx: &Ctx<'_>, ticket: &str) -> Result<Option<Admission>, Fatal> {
    Ok(ctx
        .tx
        .prepare_cached(
            "SELECT scan_id, redeemed_at, device_at, COALESCE(received_at, redeemed_at), gate_device, gate_name, mode
             FROM redemptions WHERE ticket_id = ?1",
        )?
        .query_row(params![ticket], |r| {
            Ok(Admission {
                scan_id: r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                at: r.get(1)?,
                device_at: r.get(2)?,
                received_at: r.get(3)?,
                gate_device: r.get(4)?,
                gate_name: r.get(5)?,
                mode: r.get(6)?,
            })
        })
        .optional()?)
}

/// The scan with this id, if the server has it: which ticket, which gate.
fn known_scan(
    ctx: &Ctx<'_>,
    scan_id: Uuid,
) -> Result<Option<(String, String, i64, String)>, Fatal> {
    Ok(ctx
        .tx
        .prepare_cached(
            "SELECT ticket_id, gate_device, scanned_at, gate_name FROM scans WHERE scan_id = ?1",
        )?
        .query_row(params![Text(&scan_id)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?)
}

fn insert_conflict(
    ctx: &Ctx<'_>,
    ticket: &str,
    slot: &str,
    first: &Admission,
    second: &Admission,
) -> Result<u32, Fatal> {
    let n = ctx
        .tx
        .prepare_cached(
            "INSERT OR IGNORE INTO gate_conflicts (ticket_id, slot_id, first_scan, first_gate, first_at, first_device_at,
                 second_scan, second_gate, second_at, second_device_at, detected_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(params![
            ticket,
            slot,
            first.scan_id,
            first.gate_name,
            first.at,
            first.device_at,
            second.scan_id,
            second.gate_name,
            second.at,
            second.device_at,
            ctx.now_ms
        ])?;
    Ok(n as u32)
}

/// Records new admissions of one ticket (none of them known to the server
/// yet) and merges them with what is already known: the earliest admission
/// is the ticket's redemption, every other one a conflict naming it. Reads
/// only the current first admission, so the cost is linear in `fresh`
/// (plus one update of the ticket's conflicts when an earlier first turns up).
/// Returns how many conflicts it created.
fn merge_admissions(
    ctx: &mut Ctx<'_>,
    claims: &TicketClaims,
    fresh: Vec<Admission>,
) -> Result<u32, Fatal> {
    let ticket = claims.ticket_id.to_string();
    let slot = claims.slot.to_string();
    {
        let mut insert = ctx.tx.prepare_cached(
            "INSERT INTO scans (scan_id, ticket_id, slot_id, product_id, admits, key_id, gate_device, gate_name,
                 scanned_at, mode, received_at, device_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for a in &fresh {
            insert.execute(params![
                a.scan_id,
                ticket,
                slot,
                claims.product_id,
                claims.admits,
                claims.key_id,
                a.gate_device,
                a.gate_name,
                a.at,
                a.mode,
                a.received_at,
                a.device_at
            ])?;
        }
    }
    let Some(earliest_new) = fresh.iter().min_by(|a, b| a.key().cmp(&b.key())) else {
        return Ok(0);
    };
    let known = recorded_first(ctx, &ticket)?;
    let mut conflicts = 0;
    let first = match known {
        Some(old) if old.key() <= earliest_new.key() => old,
        old => {
            let new_first = earliest_new.clone();
            ctx.tx
                .prepare_cached(
                    "INSERT INTO redemptions (ticket_id, slot_id, admits, redeemed_at, gate_device, gate_name, mode,
                         scan_id, device_at, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (ticket_id) DO UPDATE SET redeemed_at = excluded.redeemed_at,
                         gate_device = excluded.gate_device, gate_name = excluded.gate_name,
                         mode = excluded.mode, scan_id = excluded.scan_id,
                         device_at = excluded.device_at, received_at = excluded.received_at",
                )?
                .execute(params![
                    ticket,
                    slot,
                    claims.admits,
                    new_first.at,
                    new_first.gate_device,
                    new_first.gate_name,
                    new_first.mode,
                    new_first.scan_id,
                    new_first.device_at,
                    new_first.received_at
                ])?;
            if let Some(old) = old {
                // An earlier admission turned up: the conflicts recorded so
                // far now name it as first, and the old first is a second.
                ctx.tx
                    .prepare_cached(
                        "UPDATE gate_conflicts SET first_scan = ?2, first_gate = ?3, first_at = ?4, first_device_at = ?5
                         WHERE ticket_id = ?1",
                    )?
                    .execute(params![
                        ticket,
                        new_first.scan_id,
                        new_first.gate_name,
                        new_first.at,
                        new_first.device_at
                    ])?;
                conflicts += insert_conflict(ctx, &ticket, &slot, &new_first, &old)?;
            }
            new_first
        }
    };
    for a in &fresh {
        if a.scan_id != first.scan_id {
            conflicts += insert_conflict(ctx, &ticket, &slot, &first, a)?;
        }
    }
    if conflicts > 0 {
        tracing::warn!(ticket = %ticket, conflicts, "ticket admitted more than once");
        metrics::counter!("tessera_gate_conflicts_total").increment(u64::from(conflicts));
    }
    Ok(conflicts)
}

fn is_voided(ctx: &Ctx<'_>, ticket: &str) -> Result<bool, Fatal> {
    let voided: Option<Option<i64>> = ctx
        .tx
        .prepare_cached("SELECT voided_at FROM tickets WHERE ticket_id = ?1")?
        .query_row(params![ticket], |r| r.get(0))
        .optional()?;
    Ok(matches!(voided, Some(Some(_))))
}

/// Redeems a verified code at the server: catalogue, voided, day and window
/// (core's `decide`), then once per ticket across every gate.
pub(crate) fn redeem(
    ctx: &mut Ctx<'_>,
    gate: &DeviceInfo,
    claims: &TicketClaims,
    scan_id: Option<Uuid>,
    entry: EntryPolicy,
) -> Result<Result<Redemption, StoreError>, Fatal> {
    let ticket = claims.ticket_id.to_string();
    let mut answer = admitted(claims);
    if let Some(id) = scan_id {
        if let Some((known_ticket, device, at, name)) = known_scan(ctx, id)? {
            // The same scan sent again (a retry after a lost answer) is the
            // same admission, and gets the answer it got the first time.
            if known_ticket == ticket && device == gate.device_id.to_string() {
                answer.first_redeemed_at = Some(from_ms(at));
                answer.first_redeemed_by = Some(name);
                return Ok(Ok(answer));
            }
            return Ok(Err(scan_id_reused(id)));
        }
    }
    let voided = is_voided(ctx, &ticket)?;
    let now = from_ms(ctx.now_ms);
    let catalogue = ctx.state.catalogue.clone();
    if let Err(refusal) = decide(claims, &catalogue, voided, &ctx.state.tz, now, entry) {
        answer.result = RedeemResult::Denied;
        answer.reason = Some(refusal.reason);
        answer.message = refusal.message;
        metrics::counter!("tessera_redemptions_total", "result" => refusal.reason.as_str())
            .increment(1);
        return Ok(Ok(answer));
    }
    if let Some(first) = recorded_first(ctx, &ticket)? {
        already_used(&mut answer, first.at, first.gate_name, &ctx.state.tz);
        return Ok(Ok(answer));
    }
    let admission = Admission {
        scan_id: scan_id.unwrap_or_else(new_id).to_string(),
        at: ctx.now_ms,
        device_at: None,
        received_at: ctx.now_ms,
        gate_device: gate.device_id.to_string(),
        gate_name: gate.name.clone(),
        mode: "online".into(),
    };
    merge_admissions(ctx, claims, vec![admission])?;
    answer.first_redeemed_at = Some(now);
    answer.first_redeemed_by = Some(gate.name.clone());
    metrics::counter!("tessera_redemptions_total", "result" => "admitted").increment(1);
    Ok(Ok(answer))
}

/// Accepts a gate's offline scans (checked by [`check_sync`]) and hands it
/// what it needs offline.
pub(crate) fn gate_sync(
    ctx: &mut Ctx<'_>,
    gate: &DeviceInfo,
    checked: CheckedSync,
    entry: EntryPolicy,
) -> Result<Result<GateSyncResponse, StoreError>, Fatal> {
    let device = gate.device_id.to_string();
    // Look everything up before storing anything: a refused body changes nothing.
    let mut fresh: BTreeMap<Uuid, (TicketClaims, Vec<Admission>)> = BTreeMap::new();
    for scan in checked.scans {
        if let Some((ticket, by, _, _)) = known_scan(ctx, scan.scan_id)? {
            if ticket == scan.claims.ticket_id.to_string() && by == device {
                continue; // uploaded before (or redeemed online with this id)
            }
            return Ok(Err(scan_id_reused(scan.scan_id)));
        }
        let admission = Admission {
            scan_id: scan.scan_id.to_string(),
            at: scan.at,
            device_at: Some(scan.device_at),
            received_at: checked.received_at,
            gate_device: device.clone(),
            gate_name: gate.name.clone(),
            mode: "offline".into(),
        };
        fresh
            .entry(scan.claims.ticket_id)
            .or_insert_with(|| (scan.claims, Vec::new()))
            .1
            .push(admission);
    }
    let mut conflicts = 0u32;
    for (_, (claims, admissions)) in fresh {
        conflicts = conflicts.saturating_add(merge_admissions(ctx, &claims, admissions)?);
    }
    let today = ctx.state.tz.to_datetime(from_ms(ctx.now_ms)).date();
    let from = SlotId::new(today, 0).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
    let voided_tickets = {
        let mut stmt = ctx.tx.prepare_cached(
            "SELECT ticket_id FROM tickets WHERE voided_at IS NOT NULL AND slot_id >= ?1",
        )?;
        let rows = stmt.query_map(params![Text(&from)], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(super::sql::parse_uuid(&row?)?);
        }
        out
    };
    let version = ctx.state.catalogue_version;
    Ok(Ok(GateSyncResponse {
        server_time: from_ms(ctx.now_ms),
        scans_acked: checked.acked,
        conflicts,
        catalogue_version: version,
        catalogue: (checked.catalogue_version != version)
            .then(|| ctx.state.catalogue.as_ref().clone()),
        keys: ctx.state.keys.1.as_ref().clone(),
        voided_tickets,
        entry,
    }))
}
