//! Reading what judging needs from the transaction: the device's signing
//! key, the catalogue versions its sales name, and what the server already
//! stores of each sale, void, ticket and lease.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension};
use tessera_core::api::sync::SaleRecord;
use tessera_core::catalogue::Catalogue;
use tessera_core::inventory::LeaseTotals;
use tessera_core::ticket_code::KeyRing;
use tessera_core::upload::batch::{KnownSale, VoidTarget};
use tessera_core::upload::LeaseStep;
use uuid::Uuid;

use crate::sqlite::sql::Text;
use crate::sqlite::state::{parse_slot, parse_uuid};
use crate::sqlite::writer::{Ctx, Fatal};

pub(super) fn device_keyring(ctx: &Ctx<'_>, device: Uuid) -> Result<KeyRing, Fatal> {
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
pub(super) struct Catalogues<'c> {
    pub(super) current: (u64, &'c Catalogue),
    pub(super) older: HashMap<u64, Option<Catalogue>>,
}

impl Catalogues<'_> {
    pub(super) fn get(&mut self, ctx: &Ctx<'_>, version: u64) -> Result<Option<&Catalogue>, Fatal> {
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
pub(super) fn known_sale(ctx: &Ctx<'_>, sale_id: Uuid) -> Result<Option<KnownSale>, Fatal> {
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

pub(super) fn seq_taken_by(ctx: &Ctx<'_>, device: &str, seq: u64) -> Result<Option<String>, Fatal> {
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
pub(super) fn stored_tickets(ctx: &Ctx<'_>, sale: &SaleRecord) -> Result<HashSet<Uuid>, Fatal> {
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
pub(super) fn void_known(ctx: &Ctx<'_>, void_id: Uuid) -> Result<bool, Fatal> {
    Ok(ctx
        .tx
        .prepare_cached(
            "SELECT 1 FROM counter_voids WHERE void_id = ?1 UNION ALL SELECT 1 FROM quarantine WHERE item_id = ?1",
        )?
        .exists(params![Text(&void_id)])?)
}

/// Whether a gate admitted any of these tickets, online or offline, as far as
/// the server knows.
pub(super) fn admitted(ctx: &Ctx<'_>, tickets: &[Uuid]) -> Result<bool, Fatal> {
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
pub(super) fn stored_void_target(
    ctx: &Ctx<'_>,
    dev: &str,
    sale_id: Uuid,
) -> Result<VoidTarget, Fatal> {
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
pub(super) fn lease_steps(ctx: &Ctx<'_>, lease: Uuid) -> Result<Vec<LeaseStep>, Fatal> {
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
