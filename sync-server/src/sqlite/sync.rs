//! `POST /v1/sync` inside the writer: a counter's sales, voids, lease reports
//! and closed shifts are judged by the rules in `tessera_core::upload`, stored
//! or quarantined, then its leases are sized and the answer is built, all in
//! the same transaction as the rest of the batch.
//!
//! Only a malformed body (what no honest counter sends) is refused as a whole;
//! an upload the server cannot accept as it is goes to quarantine with its
//! reason, is acknowledged, and never holds back the uploads behind it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rusqlite::{params, OptionalExtension};
use tessera_core::api::online::SlotAvailability;
use tessera_core::api::sync::{
    LeaseGrant, Quarantined, SaleRecord, ShiftRecord, SyncRequest, SyncResponse, VoidRecord,
};
use tessera_core::catalogue::Catalogue;
use tessera_core::ids::new_id;
use tessera_core::inventory::{LeasePolicy, LeaseTotals};
use tessera_core::limits;
use tessera_core::slot::SlotId;
use tessera_core::tally::Tallies;
use tessera_core::ticket_code::KeyRing;
use tessera_core::upload::{self, LeaseEvent, LeaseHistory, LeaseStep, SaleVerdict, VoidPlaces};
use uuid::Uuid;

use super::state::{LeaseRow, State};
use super::writer::{Ctx, Fatal};
use crate::error::ServiceError;
use crate::store::DeviceInfo;
use tessera_core::clock::from_ms;

/// A counter that synced this recently counts as online when leases are sized.
const ONLINE_WINDOW_MS: i64 = 15_000;
/// Quarantined uploads listed back to their counter in one answer.
const QUARANTINE_LISTED: i64 = 1000;

type Refusal = ServiceError;

fn refuse(message: String) -> Refusal {
    ServiceError::InvalidBody(message)
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, Fatal> {
    serde_json::to_string(value).map_err(|e| Fatal::Bookkeeping(e.to_string()))
}

pub(crate) fn sync(
    ctx: &mut Ctx<'_>,
    device: &DeviceInfo,
    mut request: SyncRequest,
    policy: LeasePolicy,
) -> Result<Result<SyncResponse, ServiceError>, Fatal> {
    if request.device_id != device.device_id {
        return Ok(Err(ServiceError::Forbidden(format!(
            "this token belongs to device {}, but the body is for {}",
            device.device_id, request.device_id
        ))));
    }
    // Repeats dropped by the normaliser are acknowledged all the same, so the
    // counter stops sending them.
    let void_ids: Vec<Uuid> = request.voids.iter().map(|v| v.void_id).collect();
    let shift_ids: Vec<Uuid> = request.shifts.iter().map(|s| s.shift_id).collect();
    if let Err(e) = upload::normalise_body(&mut request) {
        return Ok(Err(refuse(e.to_string())));
    }
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
        acks,
        recalls,
        catalogue_version_seen,
    )?))
}

/// What the answer acknowledges.
struct Acks {
    acked_seq: u64,
    sales_stored: u32,
    sales_duplicate: u32,
    voids: Vec<Uuid>,
    shifts: Vec<Uuid>,
}

/// An upload set aside for a supervisor.
struct QItem {
    kind: &'static str,
    id: Uuid,
    seq: Option<u64>,
    slot: Option<SlotId>,
    reason: String,
    body: String,
    device_at: Option<i64>,
}

/// A new void and what the server decided it does.
struct VoidPlan {
    index: usize,
    lease: Uuid,
    admissions: u32,
    places: VoidPlaces,
}

/// What judging found.
struct Plan {
    /// Indexes in `request.sales` of the new sales to store.
    accepted: Vec<usize>,
    duplicates: u32,
    voids: Vec<VoidPlan>,
    /// Indexes in `request.shifts` to store.
    shifts: Vec<usize>,
    quarantine: Vec<QItem>,
}

fn device_keyring(ctx: &Ctx<'_>, device: Uuid) -> Result<KeyRing, Fatal> {
    let key: Option<(u32, Vec<u8>)> = ctx
        .tx
        .prepare_cached(
            "SELECT k.key_id, k.public_key FROM devices d JOIN signing_keys k ON k.key_id = d.key_id WHERE d.device_id = ?1",
        )?
        .query_row(params![device.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
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

/// A sale already stored or quarantined, as the server knows it.
struct Known {
    seq: u64,
    device: String,
}

fn known_sale(ctx: &Ctx<'_>, sale_id: Uuid) -> Result<Option<Known>, Fatal> {
    let id = sale_id.to_string();
    let stored: Option<(u64, String)> = ctx
        .tx
        .prepare_cached("SELECT terminal_seq, device_id FROM sales WHERE sale_id = ?1")?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let stored = match stored {
        Some(s) => Some(s),
        None => ctx
            .tx
            .prepare_cached(
                "SELECT terminal_seq, device_id FROM quarantine WHERE item_id = ?1 AND kind = 'sale'",
            )?
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?,
    };
    Ok(stored.map(|(seq, device)| Known { seq, device }))
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

/// Whether a gate admitted any of these tickets, online or offline, as far as
/// the server knows.
fn admitted(ctx: &Ctx<'_>, tickets: &[Uuid]) -> Result<bool, Fatal> {
    let mut scans = ctx
        .tx
        .prepare_cached("SELECT 1 FROM scans WHERE ticket_id = ?1 LIMIT 1")?;
    for t in tickets {
        if scans.exists(params![t.to_string()])? {
            return Ok(true);
        }
    }
    let mut redemptions = ctx
        .tx
        .prepare_cached("SELECT 1 FROM redemptions WHERE ticket_id = ?1")?;
    for t in tickets {
        if redemptions.exists(params![t.to_string()])? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The sale a void names, wherever the server has it.
enum VoidTarget {
    /// Stored, or new in this body and accepted so far.
    Sale {
        lease: Uuid,
        slot: SlotId,
        admissions: u32,
        total: i64,
        tickets: Vec<Uuid>,
        voided: bool,
    },
    Quarantined(Option<u64>),
    Unknown,
}

fn judge(
    ctx: &Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
) -> Result<Result<Plan, Refusal>, Fatal> {
    let dev = device.device_id.to_string();
    let keyring = device_keyring(ctx, device.device_id)?;
    let current = ctx.state.catalogue.clone();
    let mut catalogues = Catalogues {
        current: (ctx.state.catalogue_version, &current),
        older: HashMap::new(),
    };
    let mut quarantine = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    let mut quarantined_here: HashMap<Uuid, u64> = HashMap::new();
    let mut duplicates = 0;
    let mut seen_tickets = HashSet::new();
    for (i, sale) in request.sales.iter().enumerate() {
        if let Some(known) = known_sale(ctx, sale.sale_id)? {
            if known.device != dev || known.seq != sale.terminal_seq {
                return Ok(Err(refuse(format!(
                    "sale {} is stored as #{} and now arrives as #{} (seq tampered)",
                    sale.sale_id, known.seq, sale.terminal_seq
                ))));
            }
            duplicates += 1;
            continue;
        }
        if let Some(other) = seq_taken_by(ctx, &dev, sale.terminal_seq)? {
            return Ok(Err(refuse(format!(
                "sale #{} of this counter is already sale {other}, not {} (seq tampered)",
                sale.terminal_seq, sale.sale_id
            ))));
        }
        let verdict = match catalogues.get(ctx, sale.catalogue_version)? {
            Some(catalogue) => {
                check_sale(ctx, device, catalogue, &keyring, sale, &mut seen_tickets)?
            }
            None => Err(format!(
                "names catalogue version {}, which the server does not have",
                sale.catalogue_version
            )),
        };
        match verdict {
            Ok(()) => candidates.push(i),
            Err(reason) => {
                quarantined_here.insert(sale.sale_id, sale.terminal_seq);
                quarantine.push(sale_item(sale, reason)?);
            }
        }
    }

    // Voids: of this counter's sales, once each, decided by the server.
    let mut voids = Vec::new();
    for (i, v) in request.voids.iter().enumerate() {
        let id = v.void_id.to_string();
        let known = ctx
            .tx
            .prepare_cached(
                "SELECT 1 FROM counter_voids WHERE void_id = ?1 UNION ALL SELECT 1 FROM quarantine WHERE item_id = ?1",
            )?
            .exists(params![id])?;
        if known {
            continue;
        }
        let target = void_target(
            ctx,
            &dev,
            request,
            &candidates,
            &quarantined_here,
            v.sale_id,
        )?;
        let (lease, slot, admissions, total, tickets) = match target {
            VoidTarget::Sale { voided: true, .. } => continue,
            VoidTarget::Sale {
                lease,
                slot,
                admissions,
                total,
                tickets,
                ..
            } => (lease, slot, admissions, total, tickets),
            VoidTarget::Quarantined(seq) => {
                quarantine.push(void_item(v, seq, "its sale is quarantined".into())?);
                continue;
            }
            VoidTarget::Unknown => {
                quarantine.push(void_item(
                    v,
                    None,
                    format!(
                        "names sale {}, which this counter never uploaded",
                        v.sale_id
                    ),
                )?);
                continue;
            }
        };
        if let Err(reason) = upload::judge_void(v, total) {
            quarantine.push(void_item(v, None, reason)?);
            continue;
        }
        // Staff secrets: only a void the server approved (the supervisor's
        // PIN checked by the server, never by the counter) is applied.
        if let Err(reason) = super::staff::check_void(ctx.tx, device.device_id, v)? {
            quarantine.push(void_item(v, None, reason)?);
            continue;
        }
        let revoked = ctx
            .state
            .leases
            .get(&lease)
            .is_some_and(|l| l.revoked_escrow.is_some());
        let starts = ctx
            .state
            .slots
            .get(&slot)
            .map(|s| s.slot.starts_at.as_millisecond())
            .unwrap_or(i64::MIN);
        // A revoked lease sells nothing more, so its counter's word on
        // returning places does not matter: the server decides alone.
        let places = upload::void_places(
            v.returned_to_lease || revoked,
            starts,
            ctx.now_ms,
            admitted(ctx, &tickets)?,
        );
        voids.push(VoidPlan {
            index: i,
            lease,
            admissions,
            places,
        });
    }

    // Replay each lease's new sales and voids against the lease as it stood
    // at each sale's seq.
    let mut by_lease: BTreeMap<Uuid, Vec<LeaseEvent>> = BTreeMap::new();
    for &i in &candidates {
        let s = &request.sales[i];
        by_lease
            .entry(s.lease_id)
            .or_default()
            .push(LeaseEvent::Sale {
                sale_id: s.sale_id,
                seq: s.terminal_seq,
                admissions: s.admissions,
            });
    }
    for vp in &voids {
        if counts_in_lease(ctx.state, vp) {
            let v = &request.voids[vp.index];
            by_lease
                .entry(vp.lease)
                .or_default()
                .push(LeaseEvent::Void {
                    sale_id: v.sale_id,
                    after_seq: v.after_seq,
                    admissions: vp.admissions,
                });
        }
    }
    let mut refused: HashMap<Uuid, String> = HashMap::new();
    for (lease_id, events) in &by_lease {
        let Some(lease) = ctx.state.leases.get(lease_id) else {
            continue;
        };
        let history = lease_history(ctx, lease)?;
        let (verdicts, _) =
            upload::replay_lease(lease.sold, &history, lease.revoked_escrow.is_some(), events);
        for (sale, verdict) in verdicts {
            if let SaleVerdict::Quarantined(reason) = verdict {
                refused.insert(sale, reason);
            }
        }
    }
    let mut accepted = Vec::new();
    for i in candidates {
        let sale = &request.sales[i];
        match refused.remove(&sale.sale_id) {
            Some(reason) => {
                quarantined_here.insert(sale.sale_id, sale.terminal_seq);
                quarantine.push(sale_item(sale, reason)?);
            }
            None => accepted.push(i),
        }
    }
    let mut kept_voids = Vec::new();
    for vp in voids {
        let v = &request.voids[vp.index];
        match quarantined_here.get(&v.sale_id) {
            Some(seq) => {
                quarantine.push(void_item(v, Some(*seq), "its sale is quarantined".into())?)
            }
            None => kept_voids.push(vp),
        }
    }

    let mut shifts = Vec::new();
    for (i, s) in request.shifts.iter().enumerate() {
        match upload::judge_shift(s) {
            Ok(()) => shifts.push(i),
            Err(reason) => quarantine.push(shift_item(s, reason)?),
        }
    }

    for report in &request.leases {
        let Some(lease) = ctx.state.leases.get(&report.lease_id) else {
            return Ok(Err(refuse(format!("unknown lease {}", report.lease_id))));
        };
        if lease.device_id != device.device_id || lease.slot != report.slot_id {
            return Ok(Err(ServiceError::Forbidden(format!(
                "lease {} does not belong to this counter for {}",
                report.lease_id, report.slot_id
            ))));
        }
        if report.released_total > lease.totals.granted_total {
            return Ok(Err(refuse(format!(
                "lease {} releases {} of only {} granted",
                report.lease_id, report.released_total, lease.totals.granted_total
            ))));
        }
    }
    Ok(Ok(Plan {
        accepted,
        duplicates,
        voids: kept_voids,
        shifts,
        quarantine,
    }))
}

/// Whether a void changes its lease's sold count: the counter put the places
/// back in its lease (a revoked lease: the server returned them).
fn counts_in_lease(state: &State, vp: &VoidPlan) -> bool {
    let revoked = state
        .leases
        .get(&vp.lease)
        .is_some_and(|l| l.revoked_escrow.is_some());
    match vp.places {
        VoidPlaces::Returned => true,
        VoidPlaces::Kept => !revoked,
        VoidPlaces::NotReturned => false,
    }
}

fn void_target(
    ctx: &Ctx<'_>,
    dev: &str,
    request: &SyncRequest,
    candidates: &[usize],
    quarantined_here: &HashMap<Uuid, u64>,
    sale_id: Uuid,
) -> Result<VoidTarget, Fatal> {
    if let Some(seq) = quarantined_here.get(&sale_id) {
        return Ok(VoidTarget::Quarantined(Some(*seq)));
    }
    if let Some(s) = candidates
        .iter()
        .map(|&i| &request.sales[i])
        .find(|s| s.sale_id == sale_id)
    {
        return Ok(VoidTarget::Sale {
            lease: s.lease_id,
            slot: s.slot_id,
            admissions: s.admissions,
            total: s.total.amount,
            tickets: s.tickets.iter().map(|t| t.ticket_id).collect(),
            voided: false,
        });
    }
    let stored = ctx
        .tx
        .prepare_cached(
            "SELECT lease_id, slot_id, admissions, total, voided_at FROM sales WHERE sale_id = ?1 AND device_id = ?2",
        )?
        .query_row(params![sale_id.to_string(), dev], |r| {
            Ok((
                super::state::parse_uuid(&r.get::<_, String>(0)?)?,
                super::state::parse_slot(&r.get::<_, String>(1)?)?,
                r.get::<_, u32>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })
        .optional()?;
    if let Some((lease, slot, admissions, total, voided)) = stored {
        let mut stmt = ctx
            .tx
            .prepare_cached("SELECT ticket_id FROM tickets WHERE sale_id = ?1")?;
        let tickets = stmt
            .query_map(params![sale_id.to_string()], |r| {
                super::state::parse_uuid(&r.get::<_, String>(0)?)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        return Ok(VoidTarget::Sale {
            lease,
            slot,
            admissions,
            total,
            tickets,
            voided: voided.is_some(),
        });
    }
    let quarantined: Option<Option<u64>> = ctx
        .tx
        .prepare_cached(
            "SELECT terminal_seq FROM quarantine WHERE item_id = ?1 AND device_id = ?2 AND kind = 'sale'",
        )?
        .query_row(params![sale_id.to_string(), dev], |r| r.get(0))
        .optional()?;
    Ok(match quarantined {
        Some(seq) => VoidTarget::Quarantined(seq),
        None => VoidTarget::Unknown,
    })
}

/// The lease's recorded steps; a lease without any (older than the history)
/// is judged against its totals now, as before.
fn lease_history(ctx: &Ctx<'_>, lease: &LeaseRow) -> Result<LeaseHistory, Fatal> {
    let mut stmt = ctx.tx.prepare_cached(
        "SELECT after_seq, granted_total, released_total FROM lease_history WHERE lease_id = ?1",
    )?;
    let mut steps = stmt
        .query_map(params![lease.lease_id.to_string()], |r| {
            Ok(LeaseStep {
                after_seq: r.get(0)?,
                totals: LeaseTotals {
                    granted_total: r.get(1)?,
                    released_total: r.get(2)?,
                },
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if steps.is_empty() {
        steps.push(LeaseStep {
            after_seq: 0,
            totals: lease.totals,
        });
    }
    Ok(LeaseHistory::new(steps))
}

fn sale_item(sale: &SaleRecord, reason: String) -> Result<QItem, Fatal> {
    tracing::warn!(sale = %sale.sale_id, seq = sale.terminal_seq, %reason, "counter sale quarantined");
    metrics::counter!("tessera_quarantined_total", "kind" => "sale").increment(1);
    Ok(QItem {
        kind: "sale",
        id: sale.sale_id,
        seq: Some(sale.terminal_seq),
        slot: Some(sale.slot_id),
        reason: format!("sale #{}: {reason}", sale.terminal_seq),
        body: json(sale)?,
        device_at: Some(sale.created_at.as_millisecond()),
    })
}

fn void_item(v: &VoidRecord, seq: Option<u64>, reason: String) -> Result<QItem, Fatal> {
    tracing::warn!(void = %v.void_id, sale = %v.sale_id, %reason, "counter void quarantined");
    metrics::counter!("tessera_quarantined_total", "kind" => "void").increment(1);
    Ok(QItem {
        kind: "void",
        id: v.void_id,
        seq,
        slot: None,
        reason: format!("void of sale {}: {reason}", v.sale_id),
        body: json(v)?,
        device_at: Some(v.at.as_millisecond()),
    })
}

fn shift_item(s: &ShiftRecord, reason: String) -> Result<QItem, Fatal> {
    tracing::warn!(shift = %s.shift_id, %reason, "closed shift quarantined");
    metrics::counter!("tessera_quarantined_total", "kind" => "shift").increment(1);
    Ok(QItem {
        kind: "shift",
        id: s.shift_id,
        seq: None,
        slot: None,
        reason: format!(
            "shift of {}: {reason}",
            limits::prefix(&s.cashier, limits::STAFF_NAME_CHARS)
        ),
        body: json(s)?,
        device_at: Some(s.closed_at.as_millisecond()),
    })
}

/// A new sale's own facts: its slot and lease, prices and payment from the
/// catalogue version it names, and tickets signed by this counter that match
/// its lines. `Err` is the reason to quarantine it.
fn check_sale(
    ctx: &Ctx<'_>,
    device: &DeviceInfo,
    catalogue: &Catalogue,
    keyring: &KeyRing,
    sale: &SaleRecord,
    seen_tickets: &mut HashSet<Uuid>,
) -> Result<Result<(), String>, Fatal> {
    let Some(slot) = ctx.state.slots.get(&sale.slot_id) else {
        return Ok(Err(format!("unknown slot {}", sale.slot_id)));
    };
    match ctx.state.leases.get(&sale.lease_id) {
        Some(l) if l.device_id == device.device_id && l.slot == sale.slot_id => {}
        Some(_) => {
            return Ok(Err(format!(
                "lease {} is not this counter's lease for {}",
                sale.lease_id, sale.slot_id
            )))
        }
        None => return Ok(Err(format!("unknown lease {}", sale.lease_id))),
    }
    if let Err(reason) = upload::judge_sale_money(catalogue, sale) {
        return Ok(Err(reason));
    }
    let mut counted: BTreeMap<&str, u32> = BTreeMap::new();
    let mut in_sale = HashSet::new();
    for t in &sale.tickets {
        let claims = match keyring.verify(&t.code) {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("ticket {}: {e}", t.ticket_id))),
        };
        let admits = catalogue.product(&t.product_id).map(|p| p.admits);
        let matches = claims.ticket_id == t.ticket_id
            && claims.slot == sale.slot_id
            && claims.product_id == t.product_id
            && claims.admits == t.admits
            && admits == Some(t.admits)
            && claims.window_minutes == slot.slot.window_minutes;
        if !matches {
            return Ok(Err(format!(
                "ticket {} does not match its code",
                t.ticket_id
            )));
        }
        if !in_sale.insert(t.ticket_id) || seen_tickets.contains(&t.ticket_id) {
            return Ok(Err(format!("ticket {} appears twice", t.ticket_id)));
        }
        let exists = ctx
            .tx
            .prepare_cached("SELECT 1 FROM tickets WHERE ticket_id = ?1")?
            .exists(params![t.ticket_id.to_string()])?;
        if exists {
            return Ok(Err(format!(
                "ticket {} belongs to another sale",
                t.ticket_id
            )));
        }
        *counted.entry(t.product_id.as_str()).or_default() += 1;
    }
    let mut expected: BTreeMap<&str, u32> = BTreeMap::new();
    for line in &sale.lines {
        *expected.entry(line.product_id.as_str()).or_default() += line.quantity;
    }
    if counted != expected {
        return Ok(Err("its tickets do not match its lines".into()));
    }
    seen_tickets.extend(in_sale);
    Ok(Ok(()))
}

/// Keeps the slot's ledger in step with a lease's over-capacity count.
fn refresh_over_capacity(state: &mut State, lease_id: Uuid, before: u32) {
    let Some(lease) = state.leases.get(&lease_id) else {
        return;
    };
    let after = lease.over_capacity();
    let slot = lease.slot;
    if let Some(row) = state.slots.get_mut(&slot) {
        row.ledger.over_capacity = (row.ledger.over_capacity + after).saturating_sub(before);
    }
    state.dirty_slots.insert(slot);
}

fn apply(
    ctx: &mut Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
    plan: Plan,
    void_ids: Vec<Uuid>,
    shift_ids: Vec<Uuid>,
) -> Result<Acks, Fatal> {
    let now = ctx.now_ms;
    let dev = device.device_id.to_string();
    let key_id: Option<u32> = ctx.tx.query_row(
        "SELECT key_id FROM devices WHERE device_id = ?1",
        params![dev],
        |r| r.get(0),
    )?;
    // Sales and voids in the order the counter made them: a void happened
    // after sale `after_seq` and before the next.
    let mut order: Vec<((u64, u8), usize)> = Vec::new();
    let mut seq_of: HashMap<Uuid, u64> = HashMap::new();
    for (k, &i) in plan.accepted.iter().enumerate() {
        let sale = &request.sales[i];
        seq_of.insert(sale.sale_id, sale.terminal_seq);
        order.push(((sale.terminal_seq, 0), k));
    }
    // A void can only follow its sale, whatever its after_seq claims.
    for (k, vp) in plan.voids.iter().enumerate() {
        let v = &request.voids[vp.index];
        let after = v
            .after_seq
            .max(seq_of.get(&v.sale_id).copied().unwrap_or(0));
        order.push(((after, 1), k));
    }
    order.sort();
    let mut touched: BTreeSet<SlotId> = BTreeSet::new();
    for ((_, kind), k) in order {
        if kind == 1 {
            let vp = &plan.voids[k];
            if let Some(slot) = store_void(ctx, &dev, &request.voids[vp.index], vp)? {
                touched.insert(slot);
            }
            continue;
        }
        let sale = &request.sales[plan.accepted[k]];
        touched.insert(sale.slot_id);
        store_sale(ctx, &dev, key_id, sale)?;
    }
    for q in &plan.quarantine {
        ctx.tx
            .prepare_cached(
                "INSERT OR IGNORE INTO quarantine (item_id, kind, device_id, terminal_seq, slot_id, reason, body, device_at, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                q.id.to_string(),
                q.kind,
                dev,
                q.seq,
                q.slot.map(|s| s.to_string()),
                q.reason,
                q.body,
                q.device_at,
                now
            ])?;
    }

    for report in &request.leases {
        let Some(lease) = ctx.state.leases.get_mut(&report.lease_id) else {
            continue;
        };
        // Read the report against what happened since it was written (grants
        // it had not heard of, releases it did not know), so an old or
        // replayed report cannot make the lease look emptier than it is.
        let released_after = lease.totals.released_total.max(report.released_total);
        let heard_of = lease
            .totals
            .granted_total
            .saturating_sub(report.granted_total);
        let unused_before = lease.unused_reported;
        lease.unused_reported = report
            .unused
            .saturating_add(heard_of)
            .saturating_sub(released_after - report.released_total);
        // A report that changes nothing (a settled lease, a quiet one)
        // writes nothing.
        if released_after == lease.totals.released_total && lease.unused_reported == unused_before {
            continue;
        }
        let delta = released_after - lease.totals.released_total;
        lease.totals.released_total = released_after;
        let slot = lease.slot;
        if delta > 0 && lease.revoked_escrow.is_none() {
            if let Some(row) = ctx.state.slots.get_mut(&slot) {
                row.ledger.shrink_lease(delta)?;
            }
            ctx.state.dirty_slots.insert(slot);
        }
        let unused = lease.unused_reported;
        ctx.tx
            .prepare_cached(
                "UPDATE leases SET released_total = ?2, unused_reported = ?3 WHERE lease_id = ?1",
            )?
            .execute(params![report.lease_id.to_string(), released_after, unused])?;
    }

    derive_tallies(ctx, &dev, request, touched)?;

    for &i in &plan.shifts {
        let s = &request.shifts[i];
        ctx.tx
            .prepare_cached(
                "INSERT OR IGNORE INTO shifts (shift_id, device_id, cashier, opened_at, closed_at, float, cash_sales, card_sales,
                    cash_refunds, card_refunds, expected_cash, counted_cash, first_seq, last_seq, sales_count, voids_count, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )?
            .execute(params![
                s.shift_id.to_string(),
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
                now
            ])?;
    }

    // An open shift is shown to the supervisor as it is; one whose float is
    // out of range is not stored (the counter checks it too).
    let open_shift = match &request.open_shift {
        Some(s)
            if limits::amount("float", s.float).is_ok()
                && limits::text("cashier", &s.cashier, limits::STAFF_NAME_CHARS).is_ok() =>
        {
            Some(json(s)?)
        }
        Some(_) => {
            tracing::warn!(device = %dev, "open shift out of range; not stored");
            None
        }
        None => None,
    };
    // The highest seq below which nothing is missing: stored and quarantined
    // sales both count as received.
    let (mut acked, _): (u64, u64) = ctx
        .tx
        .prepare_cached("SELECT acked_seq, max_seq FROM device_sync WHERE device_id = ?1")?
        .query_row(params![dev], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0));
    {
        let mut stmt = ctx.tx.prepare_cached(
            "SELECT terminal_seq FROM sales WHERE device_id = ?1 AND terminal_seq > ?2
             UNION SELECT terminal_seq FROM quarantine WHERE device_id = ?1 AND kind = 'sale' AND terminal_seq > ?2
             ORDER BY 1",
        )?;
        let seqs = stmt.query_map(params![dev, acked], |r| r.get::<_, u64>(0))?;
        for seq in seqs {
            if seq? != acked + 1 {
                break;
            }
            acked += 1;
        }
    }
    let max_seq: u64 = ctx.tx.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(terminal_seq) FROM sales WHERE device_id = ?1), 0),
                    COALESCE((SELECT MAX(terminal_seq) FROM quarantine WHERE device_id = ?1 AND kind = 'sale'), 0))",
        params![dev],
        |r| r.get(0),
    )?;
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
            now,
            request.last_seq.max(max_seq),
            open_shift
        ])?;
    ctx.state.last_sync.insert(device.device_id, now);
    let stored = plan.accepted.len() as u32;
    Ok(Acks {
        acked_seq: acked,
        sales_stored: stored,
        sales_duplicate: plan.duplicates,
        voids: void_ids,
        shifts: shift_ids,
    })
}

fn store_sale(
    ctx: &mut Ctx<'_>,
    dev: &str,
    key_id: Option<u32>,
    sale: &SaleRecord,
) -> Result<(), Fatal> {
    let over_before = ctx
        .state
        .leases
        .get(&sale.lease_id)
        .map(LeaseRow::over_capacity)
        .unwrap_or(0);
    let over = match ctx.state.leases.get_mut(&sale.lease_id) {
        Some(lease) => {
            let before = lease.overflow();
            lease.sold += sale.admissions;
            lease.overflow().saturating_sub(before)
        }
        None => {
            return Err(Fatal::Bookkeeping(format!(
                "lease {} vanished",
                sale.lease_id
            )))
        }
    };
    refresh_over_capacity(ctx.state, sale.lease_id, over_before);
    ctx.tx
        .prepare_cached(
            "INSERT INTO sales (sale_id, device_id, terminal_seq, lease_id, slot_id, shift_id, cashier, created_at, received_at,
                                lines, total, currency, admissions, payment_method, tendered, change, over_capacity)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?
        .execute(params![
            sale.sale_id.to_string(),
            dev,
            sale.terminal_seq,
            sale.lease_id.to_string(),
            sale.slot_id.to_string(),
            sale.shift_id.to_string(),
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
        .execute(params![sale.lease_id.to_string(), sale.admissions])?;
    let mut insert = ctx.tx.prepare_cached(
        "INSERT INTO tickets (ticket_id, slot_id, product_id, admits, code, channel, sale_id, key_id)
         VALUES (?1, ?2, ?3, ?4, ?5, 'counter', ?6, ?7)",
    )?;
    for t in &sale.tickets {
        insert.execute(params![
            t.ticket_id.to_string(),
            sale.slot_id.to_string(),
            t.product_id,
            t.admits,
            t.code,
            sale.sale_id.to_string(),
            key_id
        ])?;
    }
    if over > 0 {
        tracing::warn!(sale = %sale.sale_id, over, slot = %sale.slot_id, "sale from a revoked lease: accepted, flagged over capacity");
        metrics::counter!("tessera_sales_over_capacity_total").increment(1);
    }
    metrics::counter!("tessera_admissions_sold_total", "channel" => "counter")
        .increment(u64::from(sale.admissions));
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
    let now = ctx.now_ms;
    let returned = vp.places == VoidPlaces::Returned;
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
            v.void_id.to_string(),
            v.sale_id.to_string(),
            dev,
            v.after_seq,
            v.at.as_millisecond(),
            v.shift_id.map(|s| s.to_string()),
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
        .execute(params![v.sale_id.to_string(), now])?;
    ctx.tx
        .prepare_cached("UPDATE tickets SET voided_at = ?2 WHERE sale_id = ?1")?
        .execute(params![v.sale_id.to_string(), now])?;
    metrics::counter!("tessera_counter_voids_total").increment(1);
    let Some(lease) = ctx.state.leases.get_mut(&vp.lease) else {
        return Ok(None);
    };
    let over_before = lease.over_capacity();
    let revoked = lease.revoked_escrow.is_some();
    let slot = lease.slot;
    let mut back_on_sale = 0;
    match vp.places {
        VoidPlaces::Returned => {
            lease.sold = lease.sold.saturating_sub(vp.admissions);
            // A revoked lease sells nothing more: places it no longer needs
            // go back to the slot, not into its escrow.
            if let Some(escrow) = lease.revoked_escrow {
                if lease.sold < escrow {
                    back_on_sale = escrow - lease.sold;
                    lease.revoked_escrow = Some(lease.sold);
                }
            }
        }
        VoidPlaces::Kept if !revoked => {
            lease.sold = lease.sold.saturating_sub(vp.admissions);
            lease.kept += vp.admissions;
            tracing::warn!(void = %v.void_id, sale = %v.sale_id, "void of an admitted or started ticket: its places stay out of sale");
        }
        VoidPlaces::Kept | VoidPlaces::NotReturned => {}
    }
    let (sold, kept, revoked_escrow, overflow) = (
        lease.sold,
        lease.kept,
        lease.revoked_escrow,
        lease.overflow(),
    );
    if back_on_sale > 0 {
        if let Some(row) = ctx.state.slots.get_mut(&slot) {
            row.ledger.shrink_lease(back_on_sale)?;
        }
    }
    refresh_over_capacity(ctx.state, vp.lease, over_before);
    ctx.tx
        .prepare_cached(
            "UPDATE leases SET sold = ?2, kept = ?3, revoked_escrow = ?4 WHERE lease_id = ?1",
        )?
        .execute(params![vp.lease.to_string(), sold, kept, revoked_escrow])?;
    if revoked && returned {
        rebalance_flags(ctx, vp.lease, v.sale_id, overflow)?;
    }
    Ok(returned.then_some(slot))
}

/// After a void on a revoked lease, the over-capacity flags of its sales add
/// up to what the lease is still over: the voided sale's flag goes, and the
/// latest flags are lowered first.
fn rebalance_flags(
    ctx: &mut Ctx<'_>,
    lease: Uuid,
    voided_sale: Uuid,
    overflow: u32,
) -> Result<(), Fatal> {
    ctx.tx
        .prepare_cached("UPDATE sales SET over_capacity = 0 WHERE sale_id = ?1")?
        .execute(params![voided_sale.to_string()])?;
    let flagged: Vec<(String, u32)> = ctx
        .tx
        .prepare_cached(
            "SELECT sale_id, over_capacity FROM sales WHERE lease_id = ?1 AND over_capacity > 0 ORDER BY terminal_seq DESC",
        )?
        .query_map(params![lease.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut excess = flagged
        .iter()
        .map(|(_, o)| *o)
        .sum::<u32>()
        .saturating_sub(overflow);
    for (sale, over) in flagged {
        if excess == 0 {
            break;
        }
        let cut = over.min(excess);
        excess -= cut;
        ctx.tx
            .prepare_cached(
                "UPDATE sales SET over_capacity = over_capacity - ?2 WHERE sale_id = ?1",
            )?
            .execute(params![sale, cut])?;
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
        let (sold, voided): (u64, u64) = ctx
            .tx
            .prepare_cached(
                "SELECT (SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE device_id = ?1 AND slot_id = ?2),
                        (SELECT COALESCE(SUM(s.admissions), 0) FROM counter_voids v JOIN sales s ON s.sale_id = v.sale_id
                          WHERE v.device_id = ?1 AND s.slot_id = ?2 AND v.places_returned = 1)",
            )?
            .query_row(params![dev, slot.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if let Some(reported) = request.own_tallies.get(&slot) {
            if reported.sold != sold || reported.voided != voided {
                tracing::warn!(device = %dev, %slot, reported_sold = reported.sold, reported_voided = reported.voided,
                    sold, voided, "counter's tallies differ from its uploads; the server's count is used");
                metrics::counter!("tessera_tally_mismatch_total").increment(1);
            }
        }
        ctx.state.tallies.set_actor(dev, slot, sold, voided);
        ctx.state.unsaved_slots.insert(slot);
        ctx.state.dirty_slots.insert(slot);
    }
    Ok(())
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
    let received: u64 = request.sales.last().map(|s| s.terminal_seq).unwrap_or(0);
    let after_seq = request.last_seq.max(received);
    let leases: Vec<(Uuid, LeaseTotals)> = ctx
        .state
        .leases
        .values()
        .filter(|l| {
            l.device_id == device.device_id
                && (l.slot.date >= today || reported.contains(&l.lease_id))
        })
        .map(|l| (l.lease_id, l.totals))
        .collect();
    for (lease, totals) in leases {
        let last: Option<(u32, u32)> = ctx
            .tx
            .prepare_cached(
                "SELECT granted_total, released_total FROM lease_history WHERE lease_id = ?1
                 ORDER BY after_seq DESC, rowid DESC LIMIT 1",
            )?
            .query_row(params![lease.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if last != Some((totals.granted_total, totals.released_total)) {
            ctx.tx
                .prepare_cached(
                    "INSERT INTO lease_history (lease_id, after_seq, granted_total, released_total) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    lease.to_string(),
                    after_seq,
                    totals.granted_total,
                    totals.released_total
                ])?;
        }
    }
    Ok(())
}

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

/// What a lease can still sell, as far as the server knows: the terminal's own
/// last report, never more than escrow minus the sales already uploaded.
fn unused_of(lease: &LeaseRow) -> u32 {
    lease
        .totals
        .escrow()
        .saturating_sub(lease.sold)
        .min(lease.unused_reported)
}

/// Grants and recalls for this counter's slots, by the rule in `LeasePolicy`.
fn size_leases(
    ctx: &mut Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
    policy: LeasePolicy,
) -> Result<HashMap<Uuid, u32>, Fatal> {
    let now = ctx.now_ms;
    let online: HashSet<Uuid> = ctx
        .state
        .last_sync
        .iter()
        .filter(|(_, at)| now - **at <= ONLINE_WINDOW_MS)
        .map(|(d, _)| *d)
        .collect();
    let terminals = online.len().max(1) as u32;
    // A want asks for what one sale can need, never more than the slot has
    // free; wants for slots the server does not have are ignored.
    let max_admits = ctx
        .state
        .catalogue
        .products
        .iter()
        .map(|p| p.admits)
        .max()
        .unwrap_or(1);
    let mut slots: BTreeMap<SlotId, u32> = BTreeMap::new();
    for want in &request.wants {
        if let Some(row) = ctx.state.slots.get(&want.slot_id) {
            let need = upload::cap_need(want.need, max_admits, row.ledger.available());
            slots.insert(want.slot_id, need);
        }
    }
    for lease in ctx.state.leases.values() {
        if lease.device_id == device.device_id && lease.revoked_escrow.is_none() {
            slots.entry(lease.slot).or_insert(0);
        }
    }
    let mut recalls = HashMap::new();
    for (slot_id, need) in slots {
        let Some(row) = ctx.state.slots.get(&slot_id) else {
            continue;
        };
        if now >= row.slot.ends_at.as_millisecond() {
            continue;
        }
        let available = row.ledger.available();
        let mine = ctx
            .state
            .leases
            .values()
            .find(|l| l.device_id == device.device_id && l.slot == slot_id)
            .map(|l| (l.lease_id, l.revoked_escrow.is_some(), unused_of(l)));
        if mine.is_some_and(|(_, revoked, _)| revoked) {
            continue;
        }
        let unused = mine.map(|(_, _, u)| u).unwrap_or(0);
        let pooled: u32 = ctx
            .state
            .leases
            .values()
            .filter(|l| {
                l.slot == slot_id && l.revoked_escrow.is_none() && online.contains(&l.device_id)
            })
            .map(unused_of)
            .sum();
        let decision = policy.decide(available, available + pooled, terminals, unused, need);
        if decision.grant > 0 {
            let lease_id = match mine {
                Some((id, _, _)) => id,
                None => {
                    let id = new_id();
                    ctx.tx
                        .prepare_cached(
                            "INSERT INTO leases (lease_id, device_id, slot_id, granted_total, released_total, created_at)
                             VALUES (?1, ?2, ?3, 0, 0, ?4)",
                        )?
                        .execute(params![id.to_string(), device.device_id.to_string(), slot_id.to_string(), now])?;
                    ctx.state.leases.insert(
                        id,
                        LeaseRow {
                            lease_id: id,
                            device_id: device.device_id,
                            slot: slot_id,
                            totals: LeaseTotals::default(),
                            sold: 0,
                            unused_reported: 0,
                            revoked_escrow: None,
                            kept: 0,
                        },
                    );
                    id
                }
            };
            if let Some(row) = ctx.state.slots.get_mut(&slot_id) {
                row.ledger.grant_lease(decision.grant)?;
            }
            if let Some(lease) = ctx.state.leases.get_mut(&lease_id) {
                lease.totals.granted_total += decision.grant;
                lease.unused_reported += decision.grant;
            }
            ctx.tx
                .prepare_cached("UPDATE leases SET granted_total = granted_total + ?2, unused_reported = unused_reported + ?2 WHERE lease_id = ?1")?
                .execute(params![lease_id.to_string(), decision.grant])?;
            ctx.state.dirty_slots.insert(slot_id);
            metrics::counter!("tessera_lease_grants_total").increment(1);
        }
        if decision.recall > 0 {
            if let Some((id, _, _)) = mine {
                recalls.insert(id, decision.recall);
                metrics::counter!("tessera_lease_recalls_total").increment(1);
            }
        }
    }
    Ok(recalls)
}

fn respond(
    ctx: &Ctx<'_>,
    device: &DeviceInfo,
    acks: Acks,
    recalls: HashMap<Uuid, u32>,
    catalogue_version_seen: u64,
) -> Result<SyncResponse, Fatal> {
    let now = ctx.now_ms;
    let today = ctx.state.tz.to_datetime(from_ms(now)).date();
    let horizon_end = today
        .tomorrow()
        .map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
    let mut leases: Vec<LeaseGrant> = ctx
        .state
        .leases
        .values()
        .filter(|l| l.device_id == device.device_id && l.slot.date >= today)
        .map(|l| LeaseGrant {
            lease_id: l.lease_id,
            slot_id: l.slot,
            granted_total: l.totals.granted_total,
            released_total: l.totals.released_total,
            recall: recalls.get(&l.lease_id).copied().unwrap_or(0),
            revoked: l.revoked_escrow.is_some(),
        })
        .collect();
    leases.sort_by_key(|l| l.slot_id);
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
        slots.push(availability_of(ctx.state, *id, row, now));
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
        .filter(|l| l.device_id == device.device_id)
        .filter(|l| {
            state
                .slots
                .get(&l.slot)
                .is_some_and(|s| now >= s.slot.ends_at.as_millisecond())
        })
        .filter(|l| {
            l.revoked_escrow.is_some() || (l.unused_reported == 0 && l.totals.escrow() <= l.sold)
        })
        .map(|l| l.lease_id)
        .collect()
}

pub(crate) fn availability_of(
    state: &State,
    id: SlotId,
    row: &super::state::SlotRow,
    now: i64,
) -> SlotAvailability {
    let past = now >= row.slot.ends_at.as_millisecond();
    SlotAvailability {
        slot_id: id,
        starts_at: row.slot.starts_at,
        ends_at: row.slot.ends_at,
        capacity: row.ledger.capacity,
        available: if past { 0 } else { row.ledger.available() },
        sold: state.tallies.net(&id).min(u64::from(u32::MAX)) as u32,
        past,
    }
}
