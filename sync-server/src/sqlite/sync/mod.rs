//! `POST /v1/sync` inside the writer: load → decide → write. The functions
//! here load the facts a rule needs from the transaction and the writer's
//! state, call one rule of `tessera_core` per decision (`upload::batch`
//! judges the body, `leases` counts sales and voids and sizes leases,
//! `reconcile` folds lease reports and over-capacity flags), and write what
//! it decided, all in the same transaction as the rest of the batch. No
//! inventory rule lives here: a second backend loads and writes the same
//! decisions.
//!
//! Only a malformed body (what no honest counter sends) is refused as a whole;
//! an upload the server cannot accept as it is goes to quarantine with its
//! reason, is acknowledged, and never holds back the uploads behind it.
//!
//! The round's steps, as on PostgreSQL (`postgres/sync/`): `load` (the
//! stored facts judging needs), `judge`, `apply`, `sizing` (grants, recalls,
//! lease steps) and `answer`.

use tessera_core::api::sync::{SyncRequest, SyncResponse};
use tessera_core::inventory::LeasePolicy;
use tessera_core::upload;
use tessera_core::upload::batch::BatchRefusal;
use uuid::Uuid;

use super::writer::{Ctx, Fatal};
use crate::store::{DeviceInfo, Refusal, StoreError};

mod answer;
mod apply;
mod judge;
mod load;
mod sizing;

/// The tally query, for the planner test in `schema.rs`.
#[cfg(test)]
pub(super) use apply::TALLY_OF_SQL;

fn refuse(message: String) -> StoreError {
    StoreError::from(Refusal::Invalid(message))
}

fn refusal(r: BatchRefusal) -> StoreError {
    if r.is_forbidden() {
        StoreError::from(Refusal::Forbidden(r.to_string()))
    } else {
        refuse(r.to_string())
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, Fatal> {
    serde_json::to_string(value).map_err(|e| Fatal::Bookkeeping(e.to_string()))
}

pub(super) fn sync(
    ctx: &mut Ctx<'_>,
    device: &DeviceInfo,
    mut request: SyncRequest,
    policy: LeasePolicy,
) -> Result<Result<SyncResponse, StoreError>, Fatal> {
    if request.device_id != device.device_id.0 {
        return Ok(Err(Refusal::Forbidden(format!(
            "this token belongs to device {}, but the body is for {}",
            device.device_id, request.device_id
        ))
        .into()));
    }
    // Repeats dropped by the normaliser are acknowledged all the same, so the
    // counter stops sending them.
    let void_ids: Vec<Uuid> = request.voids.iter().map(|v| v.void_id).collect();
    let shift_ids: Vec<Uuid> = request.shifts.iter().map(|s| s.shift_id).collect();
    if let Err(e) = upload::normalise_body(&mut request) {
        return Ok(Err(refuse(e.to_string())));
    }
    // Older slots and leases the upload names are only on disk; loaded only
    // for the body's own device, once the body is known to be well formed.
    ctx.state.ensure_for_sync(ctx.tx, &request)?;
    let catalogue_version_seen = request.catalogue_version;
    let plan = match judge::judge(ctx, device, &request)? {
        Ok(plan) => plan,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let acks = apply::apply(ctx, device, &request, plan, void_ids, shift_ids)?;
    let recalls = sizing::size_leases(ctx, device, &request, policy)?;
    sizing::record_lease_steps(ctx, device, &request)?;
    Ok(Ok(answer::respond(
        ctx,
        device,
        &request,
        acks,
        recalls,
        catalogue_version_seen,
    )?))
}
