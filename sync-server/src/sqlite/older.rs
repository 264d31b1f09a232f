//! Slots and days the writer does not keep in memory (those before core's
//! `first_live_slot` of the museum's today), read from the database as
//! committed, so that an older day answers as it does on PostgreSQL, whose
//! cache keeps the same live range, rather than as an empty day.

use std::collections::HashMap;

use jiff::civil::Date;
use rusqlite::{params, Connection, OptionalExtension};
use tessera_core::api::online::SlotAvailability;
use tessera_core::inventory::{availability_line, SlotLedger};
use tessera_core::leases::Footprint;
use tessera_core::slot::{Slot, SlotId};
use tessera_core::tally::SlotTally;

use super::state::{leases_of_slot_in, parse_slot, slot_row, SlotRow, State, SLOT_COLUMNS};
use crate::store::{Refusal, StoreError};

/// The first slot of `date` and of the day after: slot ids sort as the
/// slots do, so `[from, until)` is the day.
pub(crate) fn day_range(date: Date) -> Result<(SlotId, SlotId), StoreError> {
    let bad = |e: String| StoreError::from(Refusal::BadRequest(e));
    let from = SlotId::new(date, 0).map_err(|e| bad(e.to_string()))?;
    let next = date.tomorrow().map_err(|e| bad(e.to_string()))?;
    let until = SlotId::new(next, 0).map_err(|e| bad(e.to_string()))?;
    Ok((from, until))
}

/// Every slot of one day as committed, as availability lists them.
pub(crate) fn day(
    conn: &Connection,
    date: Date,
    now_ms: i64,
) -> Result<Vec<SlotAvailability>, StoreError> {
    let (from, until) = day_range(date)?;
    let rows = conn
        .prepare_cached(&format!(
            "SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id >= ?1 AND slot_id < ?2 ORDER BY slot_id"
        ))?
        .query_map(params![from, until], slot_row)?
        .collect::<rusqlite::Result<Vec<SlotRow>>>()?;
    let mut sold: HashMap<SlotId, u64> = HashMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT slot_id, state FROM tallies WHERE slot_id >= ?1 AND slot_id < ?2",
    )?;
    let tallies = stmt.query_map(params![from, until], |r| {
        Ok((parse_slot(&r.get::<_, String>(0)?)?, r.get::<_, String>(1)?))
    })?;
    for tally in tallies {
        let (slot, json) = tally?;
        match serde_json::from_str::<SlotTally>(&json) {
            Ok(t) => {
                sold.insert(slot, t.net());
            }
            // As the writer does when it loads one: the tally rebuilds as
            // devices sync, and the day still answers meanwhile.
            Err(e) => tracing::warn!(%slot, error = %e, "unreadable tally; counted as none"),
        }
    }
    rows.into_iter()
        .map(|row| {
            // A window that is over shows nothing available: no need to
            // complete its ledger.
            let ledger = if row.slot.is_over(now_ms) {
                row.ledger
            } else {
                ledger_of(conn, &row, now_ms)?
            };
            // The tally counts online sales and the counters' alike.
            let sold = sold.get(&row.slot.id).copied().unwrap_or(0);
            Ok(availability_line(&row.slot, &ledger, sold, now_ms))
        })
        .collect()
}

/// The ledger of an older slot that is not over yet (a window past
/// midnight), completed from its stored leases and open holds.
fn ledger_of(conn: &Connection, row: &SlotRow, now_ms: i64) -> rusqlite::Result<SlotLedger> {
    let footprint = Footprint::of(&leases_of_slot_in(conn, &row.slot.id)?);
    let held: u32 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(admissions), 0) FROM holds
             WHERE slot_id = ?1 AND status = 'held' AND expires_at > ?2",
        )?
        .query_row(params![row.slot.id, now_ms], |r| r.get(0))?;
    let mut ledger = row.ledger;
    ledger.leased = footprint.escrow;
    ledger.over_capacity = footprint.over_capacity;
    ledger.held_online = held;
    Ok(ledger)
}

/// One slot as stored.
pub(crate) fn slot(conn: &Connection, slot: SlotId) -> rusqlite::Result<Option<Slot>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = ?1"
        ))?
        .query_row(params![slot], slot_row)
        .optional()?
        .map(|row| row.slot))
}

/// For the writer, before it sells from a slot it does not keep: an older
/// slot that is over is refused as past (not as unknown), as on
/// PostgreSQL, which reads the slot row; one still open (a window past
/// midnight) is brought into memory to be sold from.
pub(crate) fn keep_if_sellable(
    state: &mut State,
    conn: &Connection,
    slot_id: SlotId,
    now_ms: i64,
) -> rusqlite::Result<Result<(), StoreError>> {
    if state.slots.contains_key(&slot_id) {
        return Ok(Ok(()));
    }
    match slot(conn, slot_id)? {
        None => Ok(Err(Refusal::UnknownSlot(slot_id.to_string()).into())),
        Some(s) if s.is_over(now_ms) => Ok(Err(Refusal::SlotPast(slot_id.to_string()).into())),
        Some(_) => {
            state.ensure_slot(conn, slot_id)?;
            Ok(Ok(()))
        }
    }
}
