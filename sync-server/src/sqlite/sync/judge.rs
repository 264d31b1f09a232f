//! Judging a counter's uploads: each sale's and void's stored facts are
//! loaded (`load`) and `tessera_core::upload::batch::Judging` decides.

use std::collections::HashMap;

use tessera_core::api::sync::{SyncRequest, VoidRecord};
use tessera_core::leases::LeaseState;
use tessera_core::upload::batch::{
    self, BatchRefusal, Judging, LeaseAtUpload, Plan, SaleFacts, VoidCheck,
};
use tessera_core::upload::{LeaseEvent, VoidPlaces};
use uuid::Uuid;

use super::load::{
    admitted, device_keyring, known_sale, lease_steps, seq_taken_by, stored_tickets,
    stored_void_target, void_known, Catalogues,
};
use super::refusal;
use crate::sqlite::staff;
use crate::sqlite::writer::{Ctx, Fatal};
use crate::store::{DeviceInfo, StoreError};

/// Judges the body against what the server stores: `Err` refuses it whole.
pub(super) fn judge(
    ctx: &Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
) -> Result<Result<Plan, StoreError>, Fatal> {
    let mut judging = Judging::new(request, device.device_id.0);
    if let Err(r) = judge_sales(ctx, device, request, &mut judging)? {
        return Ok(Err(refusal(r)));
    }
    judge_voids(ctx, device, request, &mut judging)?;
    // Replay each lease's new sales and voids against the lease as it stood
    // at each sale's seq.
    let events =
        judging.lease_events(|id| ctx.state.leases.get(id).is_some_and(LeaseState::is_revoked));
    let leases = leases_at_upload(ctx, &events)?;
    judging.settle(batch::replay_leases(&events, &leases));
    Ok(judging
        .finish(|id| ctx.state.leases.get(id))
        .map_err(refusal))
}

fn judge_sales(
    ctx: &Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
    judging: &mut Judging<'_>,
) -> Result<Result<(), BatchRefusal>, Fatal> {
    let dev = device.device_id.to_string();
    let keyring = device_keyring(ctx, device.device_id.0)?;
    let current = ctx.state.catalogue.clone();
    let mut catalogues = Catalogues {
        current: (ctx.state.catalogue_version, &current),
        older: HashMap::new(),
    };
    for (i, sale) in request.sales.iter().enumerate() {
        match judging.is_new(i, known_sale(ctx, sale.sale_id)?) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(r) => return Ok(Err(r)),
        }
        if let Err(r) = judging.seq_is_free(i, seq_taken_by(ctx, &dev, sale.terminal_seq)?) {
            return Ok(Err(r));
        }
        let tickets_stored = stored_tickets(ctx, sale)?;
        let facts = SaleFacts {
            catalogue: catalogues.get(ctx, sale.catalogue_version)?,
            slot_window_minutes: ctx
                .state
                .slots
                .get(&sale.slot_id)
                .map(|s| s.slot.window_minutes),
            lease: ctx.state.leases.get(&sale.lease_id),
            tickets_stored: &tickets_stored,
        };
        judging.judge_sale(i, &facts, &keyring);
    }
    Ok(Ok(()))
}

/// Voids: of this counter's sales, once each, decided by the server.
fn judge_voids(
    ctx: &Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
    judging: &mut Judging<'_>,
) -> Result<(), Fatal> {
    let dev = device.device_id.to_string();
    for (i, v) in request.voids.iter().enumerate() {
        if void_known(ctx, v.void_id)? {
            continue;
        }
        let target = match judging.void_target_here(v.sale_id) {
            Some(target) => target,
            None => stored_void_target(ctx, &dev, v.sale_id)?,
        };
        let Some(check) = judging.judge_void(i, target) else {
            continue;
        };
        // Staff secrets: only a void the server approved (the supervisor's
        // PIN checked by the server, never by the counter) is applied.
        if let Err(reason) = staff::check_void(ctx.tx, device.device_id.0, v)? {
            judging.refuse_void(i, reason);
            continue;
        }
        let places = void_places(ctx, v, &check)?;
        judging.plan_void(i, &check, places);
    }
    Ok(())
}

/// Loads what decides a void's places: its lease revoked or not, its slot's
/// start, and whether a gate admitted any of its tickets.
fn void_places(ctx: &Ctx<'_>, v: &VoidRecord, check: &VoidCheck) -> Result<VoidPlaces, Fatal> {
    let revoked = ctx
        .state
        .leases
        .get(&check.lease)
        .is_some_and(LeaseState::is_revoked);
    let starts = ctx
        .state
        .slots
        .get(&check.slot)
        .map(|s| s.slot.starts_at.as_millisecond())
        .unwrap_or(i64::MIN);
    Ok(batch::decide_void_places(
        v.returned_to_lease,
        revoked,
        starts,
        ctx.now_ms,
        admitted(ctx, &check.tickets)?,
    ))
}

/// The leases the replay needs, as they stood at each seq.
fn leases_at_upload(
    ctx: &Ctx<'_>,
    events: &std::collections::BTreeMap<Uuid, Vec<LeaseEvent>>,
) -> Result<HashMap<Uuid, LeaseAtUpload>, Fatal> {
    let mut leases = HashMap::new();
    for id in events.keys() {
        let Some(lease) = ctx.state.leases.get(id) else {
            continue;
        };
        let steps = lease_steps(ctx, *id)?;
        leases.insert(
            *id,
            LeaseAtUpload {
                sold: lease.sold,
                revoked: lease.is_revoked(),
                history: batch::history_or_now(steps, lease.totals),
            },
        );
    }
    Ok(leases)
}
