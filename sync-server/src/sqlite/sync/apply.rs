//! Writing what judging decided: sales, voids, quarantine, folded lease
//! reports, derived tallies, shifts and the device's sync record.

use std::collections::BTreeSet;

use rusqlite::{params, OptionalExtension};
use tessera_core::api::sync::{ActorTally, SaleRecord, SyncRequest, VoidRecord};
use tessera_core::leases::SlotChange;
use tessera_core::reconcile;
use tessera_core::slot::SlotId;
use tessera_core::upload::batch::{self, Plan, Quarantine, VoidPlan, Write};
use tessera_core::upload::VoidPlaces;
use uuid::Uuid;

use super::json;
use crate::sqlite::sql::Text;
use crate::sqlite::staff;
use crate::sqlite::state::{parse_uuid, State};
use crate::sqlite::writer::{Ctx, Fatal};
use crate::store::DeviceInfo;
use crate::uploads::{Acks, QuarantineItem};

pub(super) fn apply(
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
    // Its tickets no longer admit: gates re-fetch their voided lists.
    ctx.state
        .device_notes
        .topic(tessera_core::api::events::DeviceTopic::Voided);
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
    let approved_by = staff::use_for_void(ctx.tx, v)?.unwrap_or_else(|| v.approved_by.clone());
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
pub(in crate::sqlite) const TALLY_OF_SQL: &str =
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
