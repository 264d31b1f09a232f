//! `POST /v1/sync` inside the writer: a counter's sales, voids, lease reports
//! and closed shifts are checked in full first (a bad body changes nothing),
//! then applied, then its leases are sized and the answer is built, all in the
//! same transaction as the rest of the batch.

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::{params, OptionalExtension};
use tessera_core::api::online::SlotAvailability;
use tessera_core::api::sync::{
    LeaseGrant, PaymentMethod, SaleRecord, SyncRequest, SyncResponse, VoidRecord,
};
use tessera_core::ids::new_id;
use tessera_core::inventory::{LeasePolicy, LeaseTotals};
use tessera_core::slot::SlotId;
use tessera_core::tally::Tallies;
use tessera_core::ticket_code::KeyRing;
use uuid::Uuid;

use super::state::{LeaseRow, State};
use super::writer::{Ctx, Fatal};
use crate::error::ServiceError;
use crate::store::DeviceInfo;
use tessera_core::clock::from_ms;

/// A counter that synced this recently counts as online when leases are sized.
const ONLINE_WINDOW_MS: i64 = 15_000;
const MAX_SALES_PER_SYNC: usize = 1000;

type Refusal = ServiceError;

fn refuse(message: String) -> Refusal {
    ServiceError::InvalidBody(message)
}

/// One change to a lease's sold count, in the order the terminal made them.
enum Event<'a> {
    Sale(&'a SaleRecord),
    /// A void that returned places: (lease, admissions).
    Void(Uuid, u32),
}

pub(crate) fn sync(
    ctx: &mut Ctx<'_>,
    device: &DeviceInfo,
    request: SyncRequest,
    policy: LeasePolicy,
) -> Result<Result<SyncResponse, ServiceError>, Fatal> {
    let catalogue_version_seen = request.catalogue_version;
    let plan = match check(ctx, device, &request)? {
        Ok(plan) => plan,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let acks = apply(ctx, device, &request, plan)?;
    let recalls = size_leases(ctx, device, &request, policy)?;
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

/// What checking found: which sales and voids are new.
struct Plan {
    new_sales: HashSet<Uuid>,
    new_voids: Vec<(usize, Uuid, u32)>, // index in request.voids, lease, admissions
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

fn check(
    ctx: &Ctx<'_>,
    device: &DeviceInfo,
    request: &SyncRequest,
) -> Result<Result<Plan, Refusal>, Fatal> {
    if request.device_id != device.device_id {
        return Ok(Err(ServiceError::Forbidden(format!(
            "this token belongs to device {}, but the body is for {}",
            device.device_id, request.device_id
        ))));
    }
    if request.sales.len() > MAX_SALES_PER_SYNC {
        return Ok(Err(refuse(format!(
            "at most {MAX_SALES_PER_SYNC} sales per sync"
        ))));
    }
    let mut previous = 0;
    for sale in &request.sales {
        if sale.terminal_seq <= previous {
            return Ok(Err(refuse(format!(
                "sales must come in increasing terminal_seq order: #{} after #{previous}",
                sale.terminal_seq
            ))));
        }
        previous = sale.terminal_seq;
    }
    let keyring = device_keyring(ctx, device.device_id)?;
    let catalogue = ctx.state.catalogue.clone();
    let mut new_sales = HashSet::new();
    let mut sale_lease: HashMap<Uuid, (Uuid, u32)> = HashMap::new();
    let mut seen_tickets = HashSet::new();
    for sale in &request.sales {
        let stored: Option<(u64, String)> = ctx
            .tx
            .prepare_cached("SELECT terminal_seq, device_id FROM sales WHERE sale_id = ?1")?
            .query_row(params![sale.sale_id.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((seq, owner)) = stored {
            if owner != device.device_id.to_string() || seq != sale.terminal_seq {
                return Ok(Err(refuse(format!(
                    "sale {} is stored as #{seq} and now arrives as #{} (seq tampered)",
                    sale.sale_id, sale.terminal_seq
                ))));
            }
            sale_lease.insert(sale.sale_id, (sale.lease_id, sale.admissions));
            continue;
        }
        let taken: Option<String> = ctx
            .tx
            .prepare_cached("SELECT sale_id FROM sales WHERE device_id = ?1 AND terminal_seq = ?2")?
            .query_row(
                params![device.device_id.to_string(), sale.terminal_seq],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(other) = taken {
            return Ok(Err(refuse(format!(
                "sale #{} of this counter is already sale {other}, not {} (seq tampered)",
                sale.terminal_seq, sale.sale_id
            ))));
        }
        if let Err(refusal) =
            check_sale(ctx, device, &catalogue, &keyring, sale, &mut seen_tickets)?
        {
            return Ok(Err(refusal));
        }
        new_sales.insert(sale.sale_id);
        sale_lease.insert(sale.sale_id, (sale.lease_id, sale.admissions));
    }

    // Voids: of this device's sales, once each.
    let mut new_voids = Vec::new();
    for (i, v) in request.voids.iter().enumerate() {
        let known: Option<String> = ctx
            .tx
            .prepare_cached("SELECT sale_id FROM counter_voids WHERE void_id = ?1")?
            .query_row(params![v.void_id.to_string()], |r| r.get(0))
            .optional()?;
        if known.is_some() {
            continue;
        }
        let target = match sale_lease.get(&v.sale_id) {
            Some(&(lease, admissions)) => Some((lease, admissions, None)),
            None => ctx
                .tx
                .prepare_cached("SELECT lease_id, admissions, voided_at FROM sales WHERE sale_id = ?1 AND device_id = ?2")?
                .query_row(params![v.sale_id.to_string(), device.device_id.to_string()], |r| {
                    Ok((
                        super::state::parse_uuid(&r.get::<_, String>(0)?)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                })
                .optional()?,
        };
        let Some((lease, admissions, voided)) = target else {
            return Ok(Err(refuse(format!(
                "void {} names sale {}, which this counter never uploaded",
                v.void_id, v.sale_id
            ))));
        };
        if voided.is_some() {
            continue;
        }
        if v.reason.len() > 500 || v.approved_by.is_empty() {
            return Ok(Err(refuse(format!(
                "void {} needs an approver and a reason under 500 characters",
                v.void_id
            ))));
        }
        // Staff secrets: only a void the server approved (supervisor PIN
        // checked here, not at the counter) is applied.
        if let Err(reason) = super::staff::check_void(ctx.tx, device.device_id, v)? {
            return Ok(Err(refuse(reason)));
        }
        new_voids.push((i, lease, admissions));
    }

    // Replay the terminal's history on each lease: no sale may exceed what
    // the lease escrowed at that point (revoked leases excepted: those sales
    // are accepted and flagged).
    let mut sold: HashMap<Uuid, u32> = HashMap::new();
    let mut events: Vec<(u64, u8, Event)> = Vec::new();
    for sale in request
        .sales
        .iter()
        .filter(|s| new_sales.contains(&s.sale_id))
    {
        events.push((sale.terminal_seq, 1, Event::Sale(sale)));
    }
    for &(i, lease, admissions) in &new_voids {
        let v = &request.voids[i];
        if v.returned_to_lease {
            events.push((v.after_seq, 2, Event::Void(lease, admissions)));
        }
    }
    // A void happened after sale `after_seq`: order by seq, sale before void.
    events.sort_by_key(|(seq, kind, _)| (*seq, *kind));
    for (_, _, event) in &events {
        match event {
            Event::Sale(sale) => {
                let Some(lease) = ctx.state.leases.get(&sale.lease_id) else {
                    return Ok(Err(refuse(format!(
                        "sale #{} names unknown lease {}",
                        sale.terminal_seq, sale.lease_id
                    ))));
                };
                let count = sold.entry(sale.lease_id).or_insert(lease.sold);
                *count += sale.admissions;
                if lease.revoked_escrow.is_none() && *count > lease.totals.escrow() {
                    return Ok(Err(refuse(format!(
                        "sale #{} goes beyond its lease for {}: {} sold of {} granted",
                        sale.terminal_seq,
                        sale.slot_id,
                        count,
                        lease.totals.escrow()
                    ))));
                }
            }
            Event::Void(lease_id, admissions) => {
                let base = ctx.state.leases.get(lease_id).map(|l| l.sold).unwrap_or(0);
                let count = sold.entry(*lease_id).or_insert(base);
                *count = count.saturating_sub(*admissions);
            }
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
        let sold_now = sold.get(&report.lease_id).copied().unwrap_or(lease.sold);
        let released = report.released_total.max(lease.totals.released_total);
        if lease.revoked_escrow.is_none() && lease.totals.granted_total - released < sold_now {
            return Ok(Err(refuse(format!(
                "lease {} would release places it has already sold",
                report.lease_id
            ))));
        }
    }
    for want in &request.wants {
        if !ctx.state.slots.contains_key(&want.slot_id) {
            return Ok(Err(ServiceError::UnknownSlot(want.slot_id.to_string())));
        }
    }
    for slot in request.own_tallies.keys() {
        if !ctx.state.slots.contains_key(slot) {
            return Ok(Err(ServiceError::UnknownSlot(slot.to_string())));
        }
    }
    Ok(Ok(Plan {
        new_sales,
        new_voids,
    }))
}

fn check_sale(
    ctx: &Ctx<'_>,
    device: &DeviceInfo,
    catalogue: &tessera_core::catalogue::Catalogue,
    keyring: &KeyRing,
    sale: &SaleRecord,
    seen_tickets: &mut HashSet<Uuid>,
) -> Result<Result<(), Refusal>, Fatal> {
    let n = sale.terminal_seq;
    let bad = |why: String| Ok(Err(refuse(format!("sale #{n}: {why}"))));
    let Some(slot) = ctx.state.slots.get(&sale.slot_id) else {
        return Ok(Err(ServiceError::UnknownSlot(sale.slot_id.to_string())));
    };
    match ctx.state.leases.get(&sale.lease_id) {
        Some(l) if l.device_id == device.device_id && l.slot == sale.slot_id => {}
        Some(_) => {
            return bad(format!(
                "lease {} is not this counter's lease for {}",
                sale.lease_id, sale.slot_id
            ))
        }
        None => return bad(format!("unknown lease {}", sale.lease_id)),
    }
    if sale.total.currency != catalogue.museum.currency {
        return bad(format!(
            "currency {} is not the museum's",
            sale.total.currency
        ));
    }
    let mut gross = 0i64;
    let mut admissions = 0u32;
    let mut per_product: BTreeMap<&str, (u32, u8)> = BTreeMap::new();
    for line in &sale.lines {
        let Some(product) = catalogue.product(&line.product_id) else {
            return Ok(Err(ServiceError::Pricing(
                tessera_core::pricing::PricingError::UnknownProduct(line.product_id.clone()),
            )));
        };
        if line.quantity == 0 || line.quantity > 1000 {
            return bad(format!("quantity {} of {}", line.quantity, line.product_id));
        }
        if line.amounts.gross != line.unit_price * i64::from(line.quantity)
            || line.admits_each != product.admits
        {
            return bad(format!("line {} does not add up", line.product_id));
        }
        gross += line.amounts.gross;
        admissions += u32::from(line.admits_each) * line.quantity;
        let e = per_product
            .entry(line.product_id.as_str())
            .or_insert((0, line.admits_each));
        e.0 += line.quantity;
    }
    if gross != sale.total.amount || admissions != sale.admissions || sale.admissions == 0 {
        return bad("total or admissions do not match its lines".into());
    }
    let p = &sale.payment;
    let paid_ok = p.amount == sale.total.amount
        && match p.method {
            PaymentMethod::Cash => {
                p.tendered.is_some_and(|t| t >= p.amount)
                    && p.change == p.tendered.map(|t| t - p.amount)
            }
            PaymentMethod::Card => p.tendered.is_none(),
        };
    if !paid_ok {
        return bad("payment does not match the total".into());
    }
    let mut counted: BTreeMap<&str, u32> = BTreeMap::new();
    for t in &sale.tickets {
        let claims = match keyring.verify(&t.code) {
            Ok(c) => c,
            Err(e) => return bad(format!("ticket {}: {e}", t.ticket_id)),
        };
        let matches = claims.ticket_id == t.ticket_id
            && claims.slot == sale.slot_id
            && claims.product_id == t.product_id
            && claims.admits == t.admits
            && claims.window_minutes == slot.slot.window_minutes;
        if !matches {
            return bad(format!("ticket {} does not match its code", t.ticket_id));
        }
        if !seen_tickets.insert(t.ticket_id) {
            return bad(format!("ticket {} appears twice", t.ticket_id));
        }
        let exists: Option<i64> = ctx
            .tx
            .prepare_cached("SELECT 1 FROM tickets WHERE ticket_id = ?1")?
            .query_row(params![t.ticket_id.to_string()], |r| r.get(0))
            .optional()?;
        if exists.is_some() {
            return bad(format!("ticket {} belongs to another sale", t.ticket_id));
        }
        *counted.entry(t.product_id.as_str()).or_default() += 1;
    }
    let expected: BTreeMap<&str, u32> = per_product.iter().map(|(k, (q, _))| (*k, *q)).collect();
    if counted != expected {
        return bad("its tickets do not match its lines".into());
    }
    if sale.cashier.is_empty() || sale.cashier.len() > 100 {
        return bad("cashier name missing".into());
    }
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
) -> Result<Acks, Fatal> {
    let now = ctx.now_ms;
    let dev = device.device_id.to_string();
    let key_id: Option<u32> = ctx.tx.query_row(
        "SELECT key_id FROM devices WHERE device_id = ?1",
        params![dev],
        |r| r.get(0),
    )?;
    let mut void_at: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, _, _) in &plan.new_voids {
        void_at
            .entry(request.voids[*i].after_seq)
            .or_default()
            .push(*i);
    }
    let void_lease: HashMap<usize, (Uuid, u32)> = plan
        .new_voids
        .iter()
        .map(|(i, l, a)| (*i, (*l, *a)))
        .collect();
    let mut pending_voids = void_at.into_iter().peekable();
    let mut apply_voids_up_to = |ctx: &mut Ctx<'_>, seq: u64| -> Result<(), Fatal> {
        while let Some((after, _)) = pending_voids.peek() {
            if *after >= seq {
                break;
            }
            let Some((_, list)) = pending_voids.next() else {
                break;
            };
            for i in list {
                let (lease, admissions) = void_lease[&i];
                store_void(ctx, &dev, &request.voids[i], lease, admissions)?;
            }
        }
        Ok(())
    };

    for sale in &request.sales {
        if !plan.new_sales.contains(&sale.sale_id) {
            continue;
        }
        apply_voids_up_to(ctx, sale.terminal_seq)?;
        let over_before = ctx
            .state
            .leases
            .get(&sale.lease_id)
            .map(LeaseRow::over_capacity)
            .unwrap_or(0);
        let over = match ctx.state.leases.get_mut(&sale.lease_id) {
            Some(lease) => {
                lease.sold += sale.admissions;
                lease.over_capacity().saturating_sub(over_before)
            }
            None => {
                return Err(Fatal::Bookkeeping(format!(
                    "lease {} vanished",
                    sale.lease_id
                )))
            }
        };
        refresh_over_capacity(ctx.state, sale.lease_id, over_before);
        let lines =
            serde_json::to_string(&sale.lines).map_err(|e| Fatal::Bookkeeping(e.to_string()))?;
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
                now,
                lines,
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
    }
    apply_voids_up_to(ctx, u64::MAX)?;

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
        lease.unused_reported =
            (report.unused + heard_of).saturating_sub(released_after - report.released_total);
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

    for (slot, totals) in &request.own_tallies {
        ctx.state
            .tallies
            .set_actor(&dev, *slot, totals.sold, totals.voided);
        ctx.state.unsaved_slots.insert(*slot);
        ctx.state.dirty_slots.insert(*slot);
    }

    for s in &request.shifts {
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

    let open_shift = match &request.open_shift {
        Some(s) => Some(serde_json::to_string(s).map_err(|e| Fatal::Bookkeeping(e.to_string()))?),
        None => None,
    };
    // The highest seq below which nothing is missing.
    let (mut acked, _): (u64, u64) = ctx
        .tx
        .prepare_cached("SELECT acked_seq, max_seq FROM device_sync WHERE device_id = ?1")?
        .query_row(params![dev], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0));
    {
        let mut stmt = ctx
            .tx
            .prepare_cached("SELECT terminal_seq FROM sales WHERE device_id = ?1 AND terminal_seq > ?2 ORDER BY terminal_seq")?;
        let seqs = stmt.query_map(params![dev, acked], |r| r.get::<_, u64>(0))?;
        for seq in seqs {
            if seq? != acked + 1 {
                break;
            }
            acked += 1;
        }
    }
    let max_seq: u64 = ctx.tx.query_row(
        "SELECT COALESCE(MAX(terminal_seq), 0) FROM sales WHERE device_id = ?1",
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
    let stored = plan.new_sales.len() as u32;
    Ok(Acks {
        acked_seq: acked,
        sales_stored: stored,
        sales_duplicate: request.sales.len() as u32 - stored,
        voids: request.voids.iter().map(|v| v.void_id).collect(),
        shifts: request.shifts.iter().map(|s| s.shift_id).collect(),
    })
}

fn store_void(
    ctx: &mut Ctx<'_>,
    dev: &str,
    v: &VoidRecord,
    lease_id: Uuid,
    admissions: u32,
) -> Result<(), Fatal> {
    // The approver the server verified, not the name the counter sent.
    let approved_by =
        super::staff::use_for_void(ctx.tx, v)?.unwrap_or_else(|| v.approved_by.clone());
    ctx.tx
        .prepare_cached(
            "INSERT INTO counter_voids (void_id, sale_id, device_id, after_seq, at, shift_id, approved_by, reason,
                                        returned_to_lease, refund, refund_method, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
            ctx.now_ms
        ])?;
    ctx.tx
        .prepare_cached("UPDATE sales SET voided_at = ?2 WHERE sale_id = ?1")?
        .execute(params![v.sale_id.to_string(), v.at.as_millisecond()])?;
    ctx.tx
        .prepare_cached("UPDATE tickets SET voided_at = ?2 WHERE sale_id = ?1")?
        .execute(params![v.sale_id.to_string(), v.at.as_millisecond()])?;
    if v.returned_to_lease {
        let over_before = ctx
            .state
            .leases
            .get(&lease_id)
            .map(LeaseRow::over_capacity)
            .unwrap_or(0);
        if let Some(lease) = ctx.state.leases.get_mut(&lease_id) {
            lease.sold = lease.sold.saturating_sub(admissions);
        }
        refresh_over_capacity(ctx.state, lease_id, over_before);
        ctx.tx
            .prepare_cached("UPDATE leases SET sold = MAX(sold - ?2, 0) WHERE lease_id = ?1")?
            .execute(params![lease_id.to_string(), admissions])?;
    }
    metrics::counter!("tessera_counter_voids_total").increment(1);
    Ok(())
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
    let mut slots: BTreeMap<SlotId, u32> = BTreeMap::new();
    for want in &request.wants {
        slots.insert(want.slot_id, want.need);
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
    })
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
