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

use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::{params, OptionalExtension};
use tessera_core::api::sync::{
    ActorTally, Quarantined, SaleRecord, SyncRequest, SyncResponse, VoidRecord,
};
use tessera_core::catalogue::Catalogue;
use tessera_core::ids::new_id;
use tessera_core::inventory::{availability_line, LeasePolicy, LeaseTotals};
use tessera_core::leases::{self, LeaseState, Sizing, SlotChange, SlotToSize};
use tessera_core::reconcile;
use tessera_core::slot::SlotId;
use tessera_core::tally::Tallies;
use tessera_core::ticket_code::KeyRing;
use tessera_core::upload::batch::{
    self, BatchRefusal, Judging, KnownSale, LeaseAtUpload, Plan, Quarantine, SaleFacts, VoidCheck,
    VoidPlan, VoidTarget, Write,
};
use tessera_core::upload::{self, LeaseEvent, LeaseStep, VoidPlaces};
use uuid::Uuid;

use super::sql::Text;
use super::state::{parse_slot, parse_uuid, LeaseRow, State};
use super::writer::{Ctx, Fatal};
use crate::store::{DeviceInfo, Refusal, StoreError};
use crate::uploads::{Acks, QuarantineItem};
use tessera_core::clock::from_ms;

/// Quarantined uploads listed back to their counter in one answer.
const QUARANTINE_LISTED: i64 = 1000;

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

pub(crate) fn sync(
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
    let plan = match judge(ctx, device, &request)? {
        Ok(plan) => plan,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let acks = apply(ctx, device, &request, plan, void_ids, shift_ids)?;
    let recalls = size_leases(ctx, device, &request, policy)?;
    record_lease_steps(ctx, device, &request)?;
    Ok(Ok(respond(
        ctx,
        device,
        &request,
        acks,
        recalls,
        catalogue_version_seen,
    )?))
}

// ---- judge: load the facts of each item, let `Judging` decide ----

/// Judges the body against what the server stores: `Err` refuses it whole.
fn judge(
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
        if let Err(reason) = super::staff::check_void(ctx.tx, device.device_id.0, v)? {
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

// ---- loads ----

fn device_keyring(ctx: &Ctx<'_>, device: Uuid) -> Result<KeyRing, Fatal> {
    let key: Option<(u32, Vec<u8>)> = ctx
        .tx
        .prepare_cached(
            "SELECT k.key_id, k.public_key FROM devices d JOIN signing_keys k ON k.key_id = d.key_id WHERE d.device_id = ?1",
        )?
        .query_row(params![Text(&device)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let mut ring = KeyRing::new();
    if let Some((id, bytes)) = key {
        if let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) {
            // A revoked key still verifies what the device signed before:
            // uploads are history, not admissions.
            let _ = ring.insert(id, bytes, false);
        }
    }
    Ok(ring)
}

/// Catalogue versions named by the sales of one body, loaded once each.
struct Catalogues<'c> {
    current: (u64, &'c Catalogue),
    older: HashMap<u64, Option<Catalogue>>,
}

impl Catalogues<'_> {
    fn get(&mut self, ctx: &Ctx<'_>, version: u64) -> Result<Option<&Catalogue>, Fatal> {
        if version == 0 || version == self.current.0 {
            return Ok(Some(self.current.1));
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = self.older.entry(version) {
            let text: Option<String> = ctx
                .tx
                .prepare_cached("SELECT catalogue FROM catalogue_versions WHERE version = ?1")?
                .query_row(params![i64::try_from(version).unwrap_or(i64::MAX)], |r| {
                    r.get(0)
                })
                .optional()?;
            slot.insert(text.and_then(|t| serde_json::from_str::<Catalogue>(&t).ok()));
        }
        Ok(self.older.get(&version).and_then(Option::as_ref))
    }
}

/// A sale already stored or quarantined under this id, as the server knows it.
fn known_sale(ctx: &Ctx<'_>, sale_id: Uuid) -> Result<Option<KnownSale>, Fatal> {
    let id = sale_id.to_string();
    let row = |r: &rusqlite::Row<'_>| {
        Ok(KnownSale {
            seq: r.get(0)?,
            device: parse_uuid(&r.get::<_, String>(1)?)?,
        })
    };
    let stored = ctx
        .tx
        .prepare_cached("SELECT terminal_seq, device_id FROM sales WHERE sale_id = ?1")?
        .query_row(params![id], row)
        .optional()?;
    if stored.is_some() {
        return Ok(stored);
    }
    Ok(ctx
        .tx
        .prepare_cached(
            "SELECT terminal_seq, device_id FROM quarantine WHERE item_id = ?1 AND kind = 'sale'",
        )?
        .query_row(params![id], row)
        .optional()?)
}

fn seq_taken_by(ctx: &Ctx<'_>, device: &str, seq: u64) -> Result<Option<String>, Fatal> {
    let taken: Option<String> = ctx
        .tx
        .prepare_cached(
            "SELECT sale_id FROM sales WHERE device_id = ?1 AND terminal_seq = ?2
             UNION ALL SELECT item_id FROM quarantine WHERE device_id = ?1 AND kind = 'sale' AND terminal_seq = ?2
             LIMIT 1",
        )?
        .query_row(params![device, seq], |r| r.get(0))
        .optional()?;
    Ok(taken)
}

/// Which of a sale's tickets the server already stores.
fn stored_tickets(ctx: &Ctx<'_>, sale: &SaleRecord) -> Result<HashSet<Uuid>, Fatal> {
    let mut stmt = ctx
        .tx
        .prepare_cached("SELECT 1 FROM tickets WHERE ticket_id = ?1")?;
    let mut stored = HashSet::new();
    for t in &sale.tickets {
        if stmt.exists(params![Text(&t.ticket_id)])? {
            stored.insert(t.ticket_id);
        }
    }
    Ok(stored)
}

/// A void already applied or quarantined.
fn void_known(ctx: &Ctx<'_>, void_id: Uuid) -> Result<bool, Fatal> {
    Ok(ctx
        .tx
        .prepare_cached(
            "SELECT 1 FROM counter_voids WHERE void_id = ?1 UNION ALL SELECT 1 FROM quarantine WHERE item_id = ?1",
        )?
        .exists(params![Text(&void_id)])?)
}

/// Whether a gate admitted any of these tickets, online or offline, as far as
/// the server knows.
fn admitted(ctx: &Ctx<'_>, tickets: &[Uuid]) -> Result<bool, Fatal> {
    let mut scans = ctx
        .tx
        .prepare_cached("SELECT 1 FROM scans WHERE ticket_id = ?1 LIMIT 1")?;
    for t in tickets {
        if scans.exists(params![Text(&t)])? {
            return Ok(true);
        }
    }
    let mut redemptions = ctx
        .tx
        .prepare_cached("SELECT 1 FROM redemptions WHERE ticket_id = ?1")?;
    for t in tickets {
        if redemptions.exists(params![Text(&t)])? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The sale a void names, as the server stores it (stored or quarantined).
fn stored_void_target(ctx: &Ctx<'_>, dev: &str, sale_id: Uuid) -> Result<VoidTarget, Fatal> {
    let stored = ctx
        .tx
        .prepare_cached(
            "SELECT lease_id, slot_id, admissions, total, voided_at FROM sales WHERE sale_id = ?1 AND device_id = ?2",
        )?
        .query_row(params![Text(&sale_id), dev], |r| {
            Ok((
                parse_uuid(&r.get::<_, String>(0)?)?,
                parse_slot(&r.get::<_, String>(1)?)?,
                r.get::<_, u32>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })
        .optional()?;
    if let Some((lease, slot, admissions, total, voided)) = stored {
        return Ok(VoidTarget::Sale {
            lease,
            slot,
            admissions,
            total,
            tickets: tickets_of(ctx, sale_id)?,
            voided: voided.is_some(),
        });
    }
    let quarantined: Option<Option<u64>> = ctx
        .tx
        .prepare_cached(
            "SELECT terminal_seq FROM quarantine WHERE item_id = ?1 AND device_id = ?2 AND kind = 'sale'",
        )?
        .query_row(params![Text(&sale_id), dev], |r| r.get(0))
        .optional()?;
    Ok(match quarantined {
        Some(seq) => VoidTarget::Quarantined(seq),
        None => VoidTarget::Unknown,
    })
}

fn tickets_of(ctx: &Ctx<'_>, sale_id: Uuid) -> Result<Vec<Uuid>, Fatal> {
    let mut stmt = ctx
        .tx
        .prepare_cached("SELECT ticket_id FROM tickets WHERE sale_id = ?1")?;
    let tickets = stmt
        .query_map(params![Text(&sale_id)], |r| {
            parse_uuid(&r.get::<_, String>(0)?)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(tickets)
}

/// A lease's recorded steps (none for a lease older than the history).
fn lease_steps(ctx: &Ctx<'_>, lease: Uuid) -> Result<Vec<LeaseStep>, Fatal> {
    let mut stmt = ctx.tx.prepare_cached(
        // Two steps may share an after_seq (two rounds with no sale between):
        // core keeps their order and the later one counts.
        "SELECT after_seq, granted_total, released_total FROM lease_history
             WHERE lease_id = ?1 ORDER BY after_seq, rowid",
    )?;
    let steps = stmt
        .query_map(params![Text(&lease)], |r| {
            Ok(LeaseStep {
                after_seq: r.get(0)?,
                totals: LeaseTotals {
                    granted_total: r.get(1)?,
                    released_total: r.get(2)?,
                },
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(steps)
}

// ---- apply: write what judging decided ----

fn apply(
    ctx: &mut Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
    plan: Plan,
    void_ids: Vec<Uuid>,
    shift_ids: Vec<Uuid>,
) -> Result<Acks, Fatal> {
    let dev = device.device_id.to_string();
    let touched = write_sales_and_voids(ctx, &dev, request, &plan)?;
    write_quarantine(ctx, &dev, request, &plan.quarantine)?;
    fold_reports(ctx, request)?;
    derive_tallies(ctx, &dev, request, touched)?;
    write_shifts(ctx, &dev, request, &plan.shifts)?;
    let acked_seq = record_device_sync(ctx, &dev, request)?;
    ctx.state.last_sync.insert(device.device_id.0, ctx.now_ms);
    Ok(Acks {
        acked_seq,
        sales_stored: plan.accepted.len() as u32,
        sales_duplicate: plan.duplicates,
        voids: void_ids,
        shifts: shift_ids,
    })
}

/// Accepted sales and voids in the order the counter made them; returns the
/// slots whose tallies they change.
fn write_sales_and_voids(
    ctx: &mut Ctx<'_>,
    dev: &str,
    request: &SyncRequest,
    plan: &Plan,
) -> Result<BTreeSet<SlotId>, Fatal> {
    let key_id: Option<u32> = ctx.tx.query_row(
        "SELECT key_id FROM devices WHERE device_id = ?1",
        params![dev],
        |r| r.get(0),
    )?;
    let mut touched = BTreeSet::new();
    for write in batch::write_order(request, plan) {
        match write {
            Write::Sale(i) => {
                let sale = &request.sales[i];
                touched.insert(sale.slot_id);
                store_sale(ctx, dev, key_id, sale)?;
            }
            Write::Void(k) => {
                let vp = &plan.voids[k];
                if let Some(slot) = store_void(ctx, dev, &request.voids[vp.index], vp)? {
                    touched.insert(slot);
                }
            }
        }
    }
    Ok(touched)
}

/// Moves a slot's ledger with one change to one of its leases.
fn follow_lease(state: &mut State, slot: SlotId, change: SlotChange) -> Result<(), Fatal> {
    if change.is_empty() {
        return Ok(());
    }
    if let Some(row) = state.slots.get_mut(&slot) {
        change.apply(&mut row.ledger)?;
    }
    state.dirty_slots.insert(slot);
    Ok(())
}

fn store_sale(
    ctx: &mut Ctx<'_>,
    dev: &str,
    key_id: Option<u32>,
    sale: &SaleRecord,
) -> Result<(), Fatal> {
    let Some(lease) = ctx.state.leases.get_mut(&sale.lease_id) else {
        return Err(Fatal::Bookkeeping(format!(
            "lease {} vanished",
            sale.lease_id
        )));
    };
    let counted = lease.count_sale(sale.admissions);
    let slot = lease.slot;
    follow_lease(ctx.state, slot, counted.slot)?;
    write_sale(ctx, dev, sale, counted.over)?;
    write_tickets(ctx, key_id, sale)?;
    if counted.over > 0 {
        tracing::warn!(sale = %sale.sale_id, over = counted.over, slot = %sale.slot_id, "sale from a revoked lease: accepted, flagged over capacity");
        metrics::counter!("tessera_sales_over_capacity_total").increment(1);
    }
    metrics::counter!("tessera_admissions_sold_total", "channel" => "counter")
        .increment(u64::from(sale.admissions));
    Ok(())
}

fn write_sale(ctx: &mut Ctx<'_>, dev: &str, sale: &SaleRecord, over: u32) -> Result<(), Fatal> {
    ctx.tx
        .prepare_cached(
            "INSERT INTO sales (sale_id, device_id, terminal_seq, lease_id, slot_id, shift_id, cashier, created_at, received_at,
                                lines, total, currency, admissions, payment_method, tendered, change, over_capacity)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?
        .execute(params![
            Text(&sale.sale_id),
            dev,
            sale.terminal_seq,
            Text(&sale.lease_id),
            sale.slot_id,
            Text(&sale.shift_id),
            sale.cashier,
            sale.created_at.as_millisecond(),
            ctx.now_ms,
            json(&sale.lines)?,
            sale.total.amount,
            sale.total.currency.as_str(),
            sale.admissions,
            sale.payment.method.as_str(),
            sale.payment.tendered,
            sale.payment.change,
            over
        ])?;
    ctx.tx
        .prepare_cached("UPDATE leases SET sold = sold + ?2 WHERE lease_id = ?1")?
        .execute(params![Text(&sale.lease_id), sale.admissions])?;
    Ok(())
}

fn write_tickets(ctx: &mut Ctx<'_>, key_id: Option<u32>, sale: &SaleRecord) -> Result<(), Fatal> {
    let mut insert = ctx.tx.prepare_cached(
        "INSERT INTO tickets (ticket_id, slot_id, product_id, admits, code, channel, sale_id, key_id)
         VALUES (?1, ?2, ?3, ?4, ?5, 'counter', ?6, ?7)",
    )?;
    for t in &sale.tickets {
        insert.execute(params![
            Text(&t.ticket_id),
            sale.slot_id,
            t.product_id,
            t.admits,
            t.code,
            Text(&sale.sale_id),
            key_id
        ])?;
    }
    Ok(())
}

/// Stores a void as the server decided it; returns the slot whose tally it
/// changes.
fn store_void(
    ctx: &mut Ctx<'_>,
    dev: &str,
    v: &VoidRecord,
    vp: &VoidPlan,
) -> Result<Option<SlotId>, Fatal> {
    write_void(ctx, dev, v, vp.places == VoidPlaces::Returned)?;
    metrics::counter!("tessera_counter_voids_total").increment(1);
    let Some(lease) = ctx.state.leases.get_mut(&vp.lease) else {
        return Ok(None);
    };
    let counted = lease.count_void(vp.places, vp.admissions);
    let (slot, sold, kept, revoked_escrow) =
        (lease.slot, lease.sold, lease.kept, lease.revoked_escrow);
    if counted.kept_aside {
        tracing::warn!(void = %v.void_id, sale = %v.sale_id, "void of an admitted or started ticket: its places stay out of sale");
    }
    follow_lease(ctx.state, slot, counted.slot)?;
    ctx.tx
        .prepare_cached(
            "UPDATE leases SET sold = ?2, kept = ?3, revoked_escrow = ?4 WHERE lease_id = ?1",
        )?
        .execute(params![Text(&vp.lease), sold, kept, revoked_escrow])?;
    if let Some(overflow) = counted.reflag_to {
        reflag(ctx, vp.lease, v.sale_id, overflow)?;
    }
    Ok((vp.places == VoidPlaces::Returned).then_some(slot))
}

fn write_void(ctx: &mut Ctx<'_>, dev: &str, v: &VoidRecord, returned: bool) -> Result<(), Fatal> {
    let now = ctx.now_ms;
    // The approver the server verified, not the name the counter sent.
    let approved_by =
        super::staff::use_for_void(ctx.tx, v)?.unwrap_or_else(|| v.approved_by.clone());
    ctx.tx
        .prepare_cached(
            "INSERT INTO counter_voids (void_id, sale_id, device_id, after_seq, at, shift_id, approved_by, reason,
                                        returned_to_lease, refund, refund_method, received_at, places_returned)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            Text(&v.void_id),
            Text(&v.sale_id),
            dev,
            v.after_seq,
            v.at.as_millisecond(),
            v.shift_id.map(Text),
            approved_by,
            v.reason,
            v.returned_to_lease,
            v.refund,
            v.refund_method.as_str(),
            now,
            returned
        ])?;
    // Voided as of the server's receipt: the counter's clock stays in
    // counter_voids.at.
    ctx.tx
        .prepare_cached("UPDATE sales SET voided_at = ?2 WHERE sale_id = ?1")?
        .execute(params![Text(&v.sale_id), now])?;
    ctx.tx
        .prepare_cached("UPDATE tickets SET voided_at = ?2 WHERE sale_id = ?1")?
        .execute(params![Text(&v.sale_id), now])?;
    Ok(())
}

/// After a void on a revoked lease, its sales' over-capacity flags follow
/// what the lease is still over (`reconcile::lower_flags`).
fn reflag(ctx: &mut Ctx<'_>, lease: Uuid, voided_sale: Uuid, overflow: u32) -> Result<(), Fatal> {
    let flagged: Vec<(Uuid, u32)> = ctx
        .tx
        .prepare_cached(
            "SELECT sale_id, over_capacity FROM sales WHERE lease_id = ?1 AND over_capacity > 0 ORDER BY terminal_seq DESC",
        )?
        .query_map(params![Text(&lease)], |r| {
            Ok((parse_uuid(&r.get::<_, String>(0)?)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut update = ctx
        .tx
        .prepare_cached("UPDATE sales SET over_capacity = ?2 WHERE sale_id = ?1")?;
    for (sale, over) in reconcile::lower_flags(&flagged, voided_sale, overflow) {
        update.execute(params![Text(&sale), over])?;
    }
    Ok(())
}

fn write_quarantine(
    ctx: &mut Ctx<'_>,
    dev: &str,
    request: &SyncRequest,
    quarantine: &[Quarantine],
) -> Result<(), Fatal> {
    for q in quarantine {
        let q = QuarantineItem::of(request, q).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
        ctx.tx
            .prepare_cached(
                "INSERT OR IGNORE INTO quarantine (item_id, kind, device_id, terminal_seq, slot_id, reason, body, device_at, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                Text(&q.id),
                q.kind,
                dev,
                q.seq,
                q.slot,
                q.reason,
                q.body,
                q.device_at,
                ctx.now_ms
            ])?;
    }
    Ok(())
}

/// Folds each lease report into its lease (`reconcile::fold_report`).
fn fold_reports(ctx: &mut Ctx<'_>, request: &SyncRequest) -> Result<(), Fatal> {
    for report in &request.leases {
        let Some(lease) = ctx.state.leases.get_mut(&report.lease_id) else {
            continue;
        };
        let before = (lease.totals.released_total, lease.unused_reported);
        let change = reconcile::fold_report(lease, report);
        let (slot, released, unused) = (
            lease.slot,
            lease.totals.released_total,
            lease.unused_reported,
        );
        follow_lease(ctx.state, slot, change)?;
        // A report that changes nothing (a settled lease, a quiet one)
        // writes nothing: a counter's sync costs what is live, not its past.
        if before == (released, unused) {
            continue;
        }
        ctx.tx
            .prepare_cached(
                "UPDATE leases SET released_total = ?2, unused_reported = ?3 WHERE lease_id = ?1",
            )?
            .execute(params![Text(&report.lease_id), released, unused])?;
    }
    Ok(())
}

/// The device's live tallies, derived from what the server stored (never
/// taken from the counter's word). What the counter reported is compared and
/// a difference logged.
fn derive_tallies(
    ctx: &mut Ctx<'_>,
    dev: &str,
    request: &SyncRequest,
    mut slots: BTreeSet<SlotId>,
) -> Result<(), Fatal> {
    slots.extend(
        request
            .own_tallies
            .keys()
            .filter(|s| ctx.state.slots.contains_key(s)),
    );
    for slot in slots {
        let derived = tally_of(ctx, dev, slot)?;
        let reported = request.own_tallies.get(&slot);
        if reconcile::tally_differs(reported, derived) {
            tracing::warn!(device = %dev, %slot, ?reported, ?derived,
                "counter's tallies differ from its uploads; the server's count is used");
            metrics::counter!("tessera_tally_mismatch_total").increment(1);
        }
        ctx.state
            .tallies
            .set_actor(dev, slot, derived.sold, derived.voided);
        ctx.state.unsaved_slots.insert(slot);
        ctx.state.dirty_slots.insert(slot);
    }
    Ok(())
}

/// A device's totals for a slot by the sales log.
///
/// The voids are reached through the slot's sales (`CROSS JOIN` fixes that
/// order): left to itself, SQLite's planner, which has no statistics here,
/// started from `counter_voids_by_device_time` and read every void the
/// counter ever made, at every sync, for each slot it reported.
pub(crate) const TALLY_OF_SQL: &str =
    "SELECT (SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE device_id = ?1 AND slot_id = ?2),
            (SELECT COALESCE(SUM(s.admissions), 0) FROM sales s CROSS JOIN counter_voids v ON v.sale_id = s.sale_id
              WHERE s.device_id = ?1 AND s.slot_id = ?2 AND v.device_id = ?1 AND v.places_returned = 1)";

fn tally_of(ctx: &Ctx<'_>, dev: &str, slot: SlotId) -> Result<ActorTally, Fatal> {
    Ok(ctx
        .tx
        .prepare_cached(TALLY_OF_SQL)?
        .query_row(params![dev, slot], |r| {
            Ok(ActorTally {
                sold: r.get(0)?,
                voided: r.get(1)?,
            })
        })?)
}

fn write_shifts(
    ctx: &mut Ctx<'_>,
    dev: &str,
    request: &SyncRequest,
    shifts: &[usize],
) -> Result<(), Fatal> {
    for &i in shifts {
        let s = &request.shifts[i];
        ctx.tx
            .prepare_cached(
                "INSERT OR IGNORE INTO shifts (shift_id, device_id, cashier, opened_at, closed_at, float, cash_sales, card_sales,
                    cash_refunds, card_refunds, expected_cash, counted_cash, first_seq, last_seq, sales_count, voids_count, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )?
            .execute(params![
                Text(&s.shift_id),
                dev,
                s.cashier,
                s.opened_at.as_millisecond(),
                s.closed_at.as_millisecond(),
                s.float,
                s.cash_sales,
                s.card_sales,
                s.cash_refunds,
                s.card_refunds,
                s.expected_cash,
                s.counted_cash,
                s.first_seq,
                s.last_seq,
                s.sales_count,
                s.voids_count,
                ctx.now_ms
            ])?;
    }
    Ok(())
}

/// The counter's sync record: its acknowledged and highest seqs, when it
/// synced, its open shift. Returns the acknowledged seq.
fn record_device_sync(ctx: &mut Ctx<'_>, dev: &str, request: &SyncRequest) -> Result<u64, Fatal> {
    let open_shift = match &request.open_shift {
        Some(s) if batch::open_shift_storable(s) => Some(json(s)?),
        Some(_) => {
            tracing::warn!(device = %dev, "open shift out of range; not stored");
            None
        }
        None => None,
    };
    let (acked, max_seq) = received_seqs(ctx, dev)?;
    ctx.tx
        .prepare_cached(
            "INSERT INTO device_sync (device_id, acked_seq, max_seq, last_sync_at, reported_seq, open_shift)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (device_id) DO UPDATE SET acked_seq = excluded.acked_seq, max_seq = excluded.max_seq,
                 last_sync_at = excluded.last_sync_at, reported_seq = MAX(reported_seq, excluded.reported_seq),
                 open_shift = excluded.open_shift",
        )?
        .execute(params![
            dev,
            acked,
            max_seq,
            ctx.now_ms,
            request.last_seq.max(max_seq),
            open_shift
        ])?;
    Ok(acked)
}

/// The highest seq below which nothing is missing (stored and quarantined
/// sales both count as received), and the highest received.
fn received_seqs(ctx: &Ctx<'_>, dev: &str) -> Result<(u64, u64), Fatal> {
    let (acked, _): (u64, u64) = ctx
        .tx
        .prepare_cached("SELECT acked_seq, max_seq FROM device_sync WHERE device_id = ?1")?
        .query_row(params![dev], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0));
    let acked = {
        let mut stmt = ctx.tx.prepare_cached(
            "SELECT terminal_seq FROM sales WHERE device_id = ?1 AND terminal_seq > ?2
             UNION SELECT terminal_seq FROM quarantine WHERE device_id = ?1 AND kind = 'sale' AND terminal_seq > ?2
             ORDER BY 1",
        )?;
        let seqs = stmt.query_map(params![dev, acked], |r| r.get::<_, u64>(0))?;
        batch::contiguous_ack(acked, seqs)?
    };
    let max_seq: u64 = ctx.tx.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(terminal_seq) FROM sales WHERE device_id = ?1), 0),
                    COALESCE((SELECT MAX(terminal_seq) FROM quarantine WHERE device_id = ?1 AND kind = 'sale'), 0))",
        params![dev],
        |r| r.get(0),
    )?;
    Ok((acked, max_seq))
}

// ---- leases: sizing, history steps ----

/// Grants and recalls for this counter's slots (`leases::size_slot`);
/// returns the recalls by lease.
fn size_leases(
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
fn record_lease_steps(
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

// ---- the answer ----

/// This counter's uploads still in quarantine, for its status screen.
fn quarantined_of(ctx: &Ctx<'_>, dev: &str) -> Result<Vec<Quarantined>, Fatal> {
    let mut stmt = ctx.tx.prepare_cached(
        "SELECT kind, item_id, terminal_seq, reason FROM quarantine
         WHERE device_id = ?1 AND resolved_at IS NULL ORDER BY received_at, terminal_seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![dev, QUARANTINE_LISTED], |r| {
        Ok(Quarantined {
            kind: r.get(0)?,
            id: super::state::parse_uuid(&r.get::<_, String>(1)?)?,
            terminal_seq: r.get(2)?,
            reason: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn respond(
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
