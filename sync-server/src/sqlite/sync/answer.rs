//! The answer to the counter: acknowledgements, its leases, live slots and
//! tallies, quarantined uploads, and the leases both ends now agree are
//! settled.

use std::collections::{HashMap, HashSet};

use rusqlite::params;
use tessera_core::api::sync::{Quarantined, SyncRequest, SyncResponse};
use tessera_core::clock::from_ms;
use tessera_core::inventory::availability_line;
use tessera_core::leases;
use tessera_core::slot::SlotId;
use tessera_core::tally::Tallies;
use uuid::Uuid;

use crate::sqlite::state::{parse_uuid, State};
use crate::sqlite::writer::{Ctx, Fatal};
use crate::store::DeviceInfo;
use crate::uploads::Acks;

/// Quarantined uploads listed back to their counter in one answer.
const QUARANTINE_LISTED: i64 = 1000;

/// This counter's uploads still in quarantine, for its status screen.
fn quarantined_of(ctx: &Ctx<'_>, dev: &str) -> Result<Vec<Quarantined>, Fatal> {
    let mut stmt = ctx.tx.prepare_cached(
        "SELECT kind, item_id, terminal_seq, reason FROM quarantine
         WHERE device_id = ?1 AND resolved_at IS NULL ORDER BY received_at, terminal_seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![dev, QUARANTINE_LISTED], |r| {
        Ok(Quarantined {
            kind: r.get(0)?,
            id: parse_uuid(&r.get::<_, String>(1)?)?,
            terminal_seq: r.get(2)?,
            reason: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn respond(
    ctx: &Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
    acks: Acks,
    recalls: HashMap<Uuid, u32>,
    catalogue_version_seen: u64,
) -> Result<SyncResponse, Fatal> {
    let now = ctx.now_ms;
    let today = ctx.state.tz.to_datetime(from_ms(now)).date();
    let horizon_end = today
        .tomorrow()
        .map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
    let reported: HashSet<Uuid> = request.leases.iter().map(|l| l.lease_id).collect();
    let leases = leases::grants_in_sync(
        ctx.state.leases.values(),
        device.device_id.0,
        today,
        &reported,
        &recalls,
    );
    let mut slots = Vec::new();
    let mut tallies = Tallies::default();
    for (id, row) in ctx
        .state
        .slots
        .range(SlotId::new(today, 0).map_err(|e| Fatal::Bookkeeping(e.to_string()))?..)
    {
        if id.date > horizon_end {
            break;
        }
        slots.push(availability_line(
            &row.slot,
            &row.ledger,
            ctx.state.tallies.net(id),
            now,
        ));
        if let Some(t) = ctx.state.tallies.0.get(id) {
            tallies.0.insert(*id, t.clone());
        }
    }
    let keys = ctx.state.keys.1.as_ref().clone();
    let catalogue_version = ctx.state.catalogue_version;
    Ok(SyncResponse {
        server_time: from_ms(now),
        acked_seq: acks.acked_seq,
        sales_stored: acks.sales_stored,
        sales_duplicate: acks.sales_duplicate,
        voids_acked: acks.voids,
        shifts_acked: acks.shifts,
        leases,
        catalogue_version,
        catalogue: (catalogue_version != catalogue_version_seen)
            .then(|| ctx.state.catalogue.as_ref().clone()),
        staff: ctx.state.staff.clone(),
        keys,
        slots,
        tallies,
        quarantined: quarantined_of(ctx, &device.device_id.to_string())?,
        settled_leases: settled_leases(ctx.state, device, now),
    })
}

/// The counter's leases whose slot is over and that nothing can change any
/// more: all the counter did not sell given back, every sale received (the
/// escrow is what was sold), or revoked by a supervisor.
fn settled_leases(state: &State, device: &DeviceInfo, now: i64) -> Vec<Uuid> {
    state
        .leases
        .values()
        .filter(|l| l.device_id == device.device_id.0)
        .filter(|l| {
            let over = state
                .slots
                .get(&l.slot)
                .is_some_and(|s| s.slot.is_over(now));
            l.is_settled(over)
        })
        .map(|l| l.lease_id)
        .collect()
}
