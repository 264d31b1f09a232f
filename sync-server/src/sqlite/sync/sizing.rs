//! Leases: sizing and grants for the counter's slots, and the lease history
//! steps later sales are judged against.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension};
use tessera_core::api::sync::SyncRequest;
use tessera_core::clock::from_ms;
use tessera_core::ids::new_id;
use tessera_core::inventory::{LeasePolicy, LeaseTotals};
use tessera_core::leases::{self, LeaseState, Sizing, SlotToSize};
use tessera_core::slot::SlotId;
use tessera_core::upload::batch;
use uuid::Uuid;

use crate::sqlite::sql::Text;
use crate::sqlite::state::{LeaseRow, State};
use crate::sqlite::writer::{Ctx, Fatal};
use crate::store::DeviceInfo;

/// Grants and recalls for this counter's slots (`leases::size_slot`);
/// returns the recalls by lease.
pub(super) fn size_leases(
    ctx: &mut Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
    policy: LeasePolicy,
) -> Result<HashMap<Uuid, u32>, Fatal> {
    let online = leases::online_devices(&ctx.state.last_sync, ctx.now_ms);
    let state = &*ctx.state;
    let slots = leases::slots_to_size(
        &request.wants,
        &state.catalogue,
        |s| state.slots.get(s).map(|row| row.ledger.available()),
        state
            .leases
            .values()
            .filter(|l| l.device_id == device.device_id.0),
    );
    let mut recalls = HashMap::new();
    for (slot, need) in slots {
        let Some(sizing) = decide_size(
            ctx.state,
            device.device_id.0,
            slot,
            need,
            &online,
            &policy,
            ctx.now_ms,
        ) else {
            continue;
        };
        if sizing.decision.grant > 0 {
            grant(ctx, device.device_id.0, slot, sizing)?;
        }
        if let (Some(lease), recall @ 1..) = (sizing.lease, sizing.decision.recall) {
            recalls.insert(lease, recall);
            metrics::counter!("tessera_lease_recalls_total").increment(1);
        }
    }
    Ok(recalls)
}

/// Loads a slot's ledger and leases and sizes this counter's lease there.
fn decide_size(
    state: &State,
    device: Uuid,
    slot: SlotId,
    need: u32,
    online: &HashSet<Uuid>,
    policy: &LeasePolicy,
    now_ms: i64,
) -> Option<Sizing> {
    let row = state.slots.get(&slot)?;
    let of_slot: Vec<&LeaseRow> = state.leases_of_slot(&slot).collect();
    leases::size_slot(
        policy,
        &SlotToSize {
            device,
            need,
            ends_at_ms: row.slot.ends_at.as_millisecond(),
            available: row.ledger.available(),
            leases: &of_slot,
            online,
            now_ms,
        },
    )
}

/// Writes a grant, opening the counter's lease for the slot if it has none.
fn grant(ctx: &mut Ctx<'_>, device: Uuid, slot: SlotId, sizing: Sizing) -> Result<(), Fatal> {
    let n = sizing.decision.grant;
    let lease_id = match sizing.lease {
        Some(id) => id,
        None => open_lease(ctx, device, slot)?,
    };
    if let Some(row) = ctx.state.slots.get_mut(&slot) {
        row.ledger.grant_lease(n)?;
    }
    if let Some(lease) = ctx.state.leases.get_mut(&lease_id) {
        lease.grant(n);
    }
    ctx.tx
        .prepare_cached("UPDATE leases SET granted_total = granted_total + ?2, unused_reported = unused_reported + ?2 WHERE lease_id = ?1")?
        .execute(params![Text(&lease_id), n])?;
    ctx.state.dirty_slots.insert(slot);
    metrics::counter!("tessera_lease_grants_total").increment(1);
    Ok(())
}

fn open_lease(ctx: &mut Ctx<'_>, device: Uuid, slot: SlotId) -> Result<Uuid, Fatal> {
    let id = new_id();
    ctx.tx
        .prepare_cached(
            "INSERT INTO leases (lease_id, device_id, slot_id, granted_total, released_total, created_at)
             VALUES (?1, ?2, ?3, 0, 0, ?4)",
        )?
        .execute(params![Text(&id), Text(&device), slot, ctx.now_ms])?;
    ctx.state
        .leases
        .insert(id, LeaseState::new(id, device, slot));
    Ok(id)
}

/// Records each of this counter's leases that changed in this sync, tagged
/// with the counter's highest seq: later sales are judged against it.
pub(super) fn record_lease_steps(
    ctx: &mut Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
) -> Result<(), Fatal> {
    let today = ctx.state.tz.to_datetime(from_ms(ctx.now_ms)).date();
    let reported: HashSet<Uuid> = request.leases.iter().map(|l| l.lease_id).collect();
    let after_seq = batch::step_seq(request);
    let leases: Vec<(Uuid, LeaseTotals)> = ctx
        .state
        .leases
        .values()
        .filter(|l| leases::steps_in_sync(l, device.device_id.0, today, &reported))
        .map(|l| (l.lease_id, l.totals))
        .collect();
    for (lease, totals) in leases {
        if batch::needs_step(last_step(ctx, lease)?, totals) {
            ctx.tx
                .prepare_cached(
                    "INSERT INTO lease_history (lease_id, after_seq, granted_total, released_total) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    Text(&lease),
                    after_seq,
                    totals.granted_total,
                    totals.released_total
                ])?;
        }
    }
    Ok(())
}

fn last_step(ctx: &Ctx<'_>, lease: Uuid) -> Result<Option<LeaseTotals>, Fatal> {
    Ok(ctx
        .tx
        .prepare_cached(
            "SELECT granted_total, released_total FROM lease_history WHERE lease_id = ?1
             ORDER BY after_seq DESC, rowid DESC LIMIT 1",
        )?
        .query_row(params![Text(&lease)], |r| {
            Ok(LeaseTotals {
                granted_total: r.get(0)?,
                released_total: r.get(1)?,
            })
        })
        .optional()?)
}
