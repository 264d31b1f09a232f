//! The writer's in-memory copy of the inventory, loaded from the database at
//! start (and again whenever another process, such as an admin command, has
//! committed to it), and the read-only views it publishes after each commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use jiff::tz::TimeZone;
use rusqlite::{params, Connection, OptionalExtension};
use tessera_core::api::devices::{KeyRole, PublicKeyInfo, PublicKeys, Role};
use tessera_core::api::events::DeviceTopic;
use tessera_core::api::sync::SyncRequest;
use tessera_core::catalogue::Catalogue;
use tessera_core::ids::{DeviceId, LeaseId};
use tessera_core::inventory::{hold_is_open, LeaseTotals, SlotLedger};
use tessera_core::leases::Footprint;
use tessera_core::pricing::PricedLine;
use tessera_core::slot::{Slot, SlotId};
use tessera_core::staff::StaffMember;
use tessera_core::tally::Tallies;
use tessera_core::ticket_code::{KeyRing, TicketSigner};
use uuid::Uuid;

use super::idempotency::IdempotencyIndex;
use super::presign::HoldSketch;
use super::schema::OpenError;
use crate::store::{ChannelInfo, DeviceInfo};
use tessera_core::clock::from_ms;

/// How long a retry with the same Idempotency-Key gets the first answer.
pub(crate) const IDEMPOTENCY_KEEP_MS: i64 = 24 * 3600 * 1000;

pub(crate) struct SlotRow {
    pub slot: Slot,
    pub ledger: SlotLedger,
}

pub(crate) struct OpenHold {
    pub slot: SlotId,
    pub admissions: u32,
    pub expires_ms: i64,
    pub lines: Vec<PricedLine>,
    /// `lines` as stored in the hold's row, when known: the order's row
    /// stores the same text, so a confirmation need not serialize it again.
    pub lines_json: Option<String>,
    pub total: i64,
}

/// A lease as the writer holds it: the core's own type, so every rule that
/// changes a lease is core's.
pub(crate) type LeaseRow = tessera_core::leases::LeaseState;

pub(crate) struct State {
    pub catalogue: Arc<Catalogue>,
    pub tz: TimeZone,
    pub slots: BTreeMap<SlotId, SlotRow>,
    pub holds: HashMap<Uuid, OpenHold>,
    pub expiry: BTreeSet<(i64, Uuid)>,
    pub signer: Arc<TicketSigner>,
    pub leases: Leases,
    pub tallies: Tallies,
    pub catalogue_version: u64,
    /// Cashiers' verifiers: what counters receive with every sync.
    pub staff: Vec<StaffMember>,
    /// Supervisors' verifiers: checked here, never sent anywhere.
    pub supervisors: Vec<StaffMember>,
    /// Ticket-signing public keys (with revocations), as gates get them.
    pub keys: (Arc<KeyRing>, Arc<PublicKeys>),
    /// Idempotency keys of the last day, the newest in memory.
    pub idempotency: IdempotencyIndex,
    /// When each counter last synced: counters heard from recently are
    /// "online" for lease sizing. Kept in memory only.
    pub last_sync: HashMap<Uuid, i64>,
    pub dirty_slots: HashSet<SlotId>,
    /// Slots whose sold_online or tally changed in memory and must be written
    /// before the batch commits.
    pub unsaved_slots: HashSet<SlotId>,
    pub devices_dirty: bool,
    /// What the device channel is to hear of once this batch commits.
    pub device_notes: crate::store::DeviceNotes,
    /// Open holds created (`Some`) or closed (`None`) since the last publish,
    /// for confirm handlers that sign tickets ahead (`presign`).
    pub hold_sketches: Vec<(Uuid, Option<Arc<HoldSketch>>)>,
    /// Every open hold's sketch is to be published afresh (after a load).
    pub sketches_reset: bool,
}

/// What request handlers read without asking the writer: always committed data.
pub(crate) struct Shared {
    pub catalogue: RwLock<Arc<Catalogue>>,
    pub supervisors: RwLock<Vec<StaffMember>>,
    pub slots: RwLock<BTreeMap<SlotId, SlotView>>,
    pub devices: RwLock<HashMap<Vec<u8>, DeviceInfo>>,
    /// Trusted sales channels by the SHA-256 of their token.
    pub channels: RwLock<HashMap<Vec<u8>, ChannelInfo>>,
    pub keys: RwLock<(Arc<KeyRing>, Arc<PublicKeys>)>,
    /// Open holds with lines, as of the last commit: what a confirm handler
    /// signs tickets from before its job reaches the writer.
    pub hold_sketches: RwLock<HashMap<Uuid, Arc<HoldSketch>>>,
    /// The server's current ticket-signing key.
    pub signer: RwLock<Option<Arc<TicketSigner>>>,
    /// Told which days changed each time the writer publishes.
    pub changes: Arc<crate::store::Changes>,
}

#[derive(Clone, PartialEq)]
pub(crate) struct SlotView {
    pub slot: Slot,
    /// The ledger with `held_online` as of the commit; readers subtract holds
    /// that have expired since, from `hold_expiries`.
    pub ledger: SlotLedger,
    pub hold_expiries: Vec<(i64, u32)>,
    pub sold: u32,
}

impl SlotView {
    /// The ledger at `now_ms`: holds that expired since the last sweep
    /// already count as free (the read-time half of hold expiry).
    pub fn ledger_at(&self, now_ms: i64) -> SlotLedger {
        let mut ledger = self.ledger;
        ledger.held_online = self
            .hold_expiries
            .iter()
            .filter(|(expires, _)| hold_is_open(*expires, now_ms))
            .map(|(_, n)| *n)
            .sum();
        ledger
    }
}

pub(crate) fn load_catalogue(conn: &Connection) -> Result<Catalogue, OpenError> {
    let json: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'catalogue'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let json = json.ok_or_else(|| OpenError::NotInitialised(db_name(conn)))?;
    let catalogue: Catalogue =
        serde_json::from_str(&json).map_err(|e| OpenError::BadCatalogue(e.to_string()))?;
    catalogue
        .validate()
        .map_err(|e| OpenError::BadCatalogue(e.to_string()))?;
    Ok(catalogue)
}

fn db_name(conn: &Connection) -> String {
    conn.path().unwrap_or("database").to_string()
}

pub(crate) use super::sql::{parse_slot, parse_uuid, Text};

/// Marks holds whose time is up as expired, so every later count agrees.
pub(crate) fn expire_due_holds(conn: &Connection, now_ms: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE holds SET status = 'expired' WHERE status = 'held' AND expires_at <= ?1",
        params![now_ms],
    )
}

/// The leases the writer keeps in memory, with an index from each slot to its
/// leases so that sizing a slot never walks every lease of every slot.
///
/// Whenever a slot is in memory, all its leases are too (its ledger counts
/// their escrow); a lease's slot never changes after it is granted.
#[derive(Default)]
pub(crate) struct Leases {
    rows: HashMap<Uuid, LeaseRow>,
    by_slot: HashMap<SlotId, Vec<Uuid>>,
}

impl Leases {
    pub fn get(&self, id: &Uuid) -> Option<&LeaseRow> {
        self.rows.get(id)
    }

    pub fn get_mut(&mut self, id: &Uuid) -> Option<&mut LeaseRow> {
        self.rows.get_mut(id)
    }

    pub fn contains_key(&self, id: &Uuid) -> bool {
        self.rows.contains_key(id)
    }

    pub fn insert(&mut self, id: Uuid, lease: LeaseRow) -> Option<LeaseRow> {
        let slot = lease.slot;
        let before = self.rows.insert(id, lease);
        match &before {
            Some(old) if old.slot == slot => {}
            Some(old) => {
                let old_slot = old.slot;
                self.unindex(old_slot, id);
                self.by_slot.entry(slot).or_default().push(id);
            }
            None => self.by_slot.entry(slot).or_default().push(id),
        }
        before
    }

    fn unindex(&mut self, slot: SlotId, id: Uuid) {
        if let Some(ids) = self.by_slot.get_mut(&slot) {
            ids.retain(|l| *l != id);
            if ids.is_empty() {
                self.by_slot.remove(&slot);
            }
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &LeaseRow> + '_ {
        self.rows.values()
    }

    /// The leases of one slot, through the index.
    pub fn of_slot<'a>(&'a self, slot: &SlotId) -> impl Iterator<Item = &'a LeaseRow> + 'a {
        self.by_slot
            .get(slot)
            .into_iter()
            .flatten()
            .filter_map(|id| self.rows.get(id))
    }
}

/// Older slots that still have an unsettled lease: what start-up loads
/// besides the slots from yesterday on.
///
/// Leases whose slot is over are "settled" once the counter has given back
/// all it did not sell and every sale has arrived: nothing about them can
/// change the inventory any more. Those of older slots stay in the database
/// only; the condition here is, word for word, that of the partial index
/// `leases_unsettled_by_slot` (migration 0016), so the search reads the few
/// unsettled leases only.
///
/// `sold <` comes first on purpose: SQLite rewrites a comparison whose right
/// side only is a column (`… > sold`) into `sold < …` before it matches a
/// partial index's condition, and then no longer recognises it. Written so,
/// 0014's `leases_unsettled` was never used, and start-up read every lease
/// of every past slot through `leases_by_slot`.
pub(crate) const OLDER_UNSETTLED_SLOTS_SQL: &str = "SELECT DISTINCT slot_id FROM leases
     WHERE slot_id < ?1
       AND revoked_escrow IS NULL AND (sold < granted_total - released_total OR unused_reported > 0)";

const LEASE_COLUMNS: &str = "lease_id, device_id, slot_id, granted_total, released_total, sold, unused_reported, revoked_escrow, kept";

fn lease_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeaseRow> {
    Ok(LeaseRow {
        lease_id: parse_uuid(&r.get::<_, String>(0)?)?,
        device_id: parse_uuid(&r.get::<_, String>(1)?)?,
        slot: parse_slot(&r.get::<_, String>(2)?)?,
        totals: LeaseTotals {
            granted_total: r.get(3)?,
            released_total: r.get(4)?,
        },
        sold: r.get(5)?,
        unused_reported: r.get(6)?,
        revoked_escrow: r.get(7)?,
        kept: r.get(8)?,
    })
}

/// Every lease of one slot, as stored (live or settled).
pub(crate) fn leases_of_slot_in(
    conn: &Connection,
    slot: &SlotId,
) -> rusqlite::Result<Vec<LeaseRow>> {
    conn.prepare_cached(&format!(
        "SELECT {LEASE_COLUMNS} FROM leases WHERE slot_id = ?1"
    ))?
    .query_map(params![slot], lease_row)?
    .collect()
}

/// One lease, as stored.
pub(crate) fn lease_in(conn: &Connection, lease: LeaseId) -> rusqlite::Result<Option<LeaseRow>> {
    conn.prepare_cached(&format!(
        "SELECT {LEASE_COLUMNS} FROM leases WHERE lease_id = ?1"
    ))?
    .query_row(params![lease], lease_row)
    .optional()
}

/// What a slot's stored leases take from it (escrow and over capacity), by
/// core's lease rules: for checks that read the database, not the writer's
/// state.
pub fn slot_footprint(conn: &Connection, slot: &SlotId) -> rusqlite::Result<Footprint> {
    Ok(Footprint::of(&leases_of_slot_in(conn, slot)?))
}

pub(super) const SLOT_COLUMNS: &str =
    "slot_id, starts_at, ends_at, window_minutes, capacity, sold_online";

pub(super) fn slot_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SlotRow> {
    let id = parse_slot(&r.get::<_, String>(0)?)?;
    Ok(SlotRow {
        slot: Slot {
            id,
            starts_at: from_ms(r.get(1)?),
            ends_at: from_ms(r.get(2)?),
            window_minutes: r.get(3)?,
            capacity: r.get(4)?,
        },
        ledger: SlotLedger {
            capacity: r.get(4)?,
            sold_online: r.get(5)?,
            ..SlotLedger::default()
        },
    })
}

fn hold_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Uuid, OpenHold)> {
    let lines: String = r.get(4)?;
    Ok((
        parse_uuid(&r.get::<_, String>(0)?)?,
        OpenHold {
            slot: parse_slot(&r.get::<_, String>(1)?)?,
            admissions: r.get(2)?,
            expires_ms: r.get(3)?,
            lines: serde_json::from_str(&lines).unwrap_or_default(),
            lines_json: Some(lines),
            total: r.get(5)?,
        },
    ))
}

/// The first slot the writer keeps in memory (core's `first_live_slot` for
/// the museum's today). Older ones load on demand.
pub(crate) fn first_live_slot(tz: &TimeZone, now_ms: i64) -> Result<SlotId, OpenError> {
    let today = tz.to_datetime(from_ms(now_ms)).date();
    tessera_core::leases::first_live_slot(today).map_err(|e| OpenError::BadCatalogue(e.to_string()))
}

impl State {
    /// Loads what is live: slots from yesterday on, every slot that still has
    /// an unsettled lease or an open hold, all leases of those slots, open
    /// holds. The cost does not grow with the days behind the museum.
    pub fn load(conn: &Connection, now_ms: i64) -> Result<State, OpenError> {
        let catalogue = load_catalogue(conn)?;
        let tz = catalogue
            .time_zone()
            .map_err(|e| OpenError::BadCatalogue(e.to_string()))?;
        expire_due_holds(conn, now_ms)?;
        let first = first_live_slot(&tz, now_ms)?;

        let (key_id, seed): (u32, Vec<u8>) = conn.query_row(
            "SELECT key_id, secret_seed FROM signing_keys WHERE owner = 'server' AND secret_seed IS NOT NULL AND revoked_at IS NULL ORDER BY key_id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| OpenError::BadCatalogue("server signing key is not 32 bytes".into()))?;

        let catalogue_version: u64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'catalogue_version'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let (staff, supervisors) = super::staff::load(conn)?;

        let idempotency = IdempotencyIndex::load_configured(conn, now_ms)?;

        let mut state = State {
            catalogue: Arc::new(catalogue),
            tz,
            slots: BTreeMap::new(),
            holds: HashMap::new(),
            expiry: BTreeSet::new(),
            signer: Arc::new(TicketSigner::from_seed(key_id, seed)),
            leases: Leases::default(),
            tallies: Tallies::default(),
            catalogue_version,
            staff,
            supervisors,
            keys: load_keys(conn)?,
            idempotency,
            last_sync: HashMap::new(),
            dirty_slots: HashSet::new(),
            unsaved_slots: HashSet::new(),
            devices_dirty: true,
            device_notes: Default::default(),
            hold_sketches: Vec::new(),
            sketches_reset: true,
        };
        state.load_live(conn, first)?;
        state.dirty_slots = state.slots.keys().copied().collect();
        Ok(state)
    }

    fn load_live(&mut self, conn: &Connection, first: SlotId) -> rusqlite::Result<()> {
        let first = first.to_string();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id >= ?1"
        ))?;
        for row in stmt.query_map(params![first], slot_row)? {
            let row = row?;
            self.slots.insert(row.slot.id, row);
        }
        let mut stmt = conn.prepare(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE slot_id >= ?1"
        ))?;
        for lease in stmt.query_map(params![first], lease_row)? {
            self.add_lease(lease?);
        }
        let mut stmt = conn.prepare("SELECT slot_id, state FROM tallies WHERE slot_id >= ?1")?;
        let rows = stmt.query_map(params![first], |r| {
            Ok((parse_slot(&r.get::<_, String>(0)?)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (slot, json) = row?;
            self.add_tally(slot, &json);
        }
        // Older slots that still matter: a lease a counter has not settled
        // (it may have been offline since), or an open hold.
        let mut older: BTreeSet<SlotId> = BTreeSet::new();
        let mut stmt = conn.prepare(OLDER_UNSETTLED_SLOTS_SQL)?;
        for slot in stmt.query_map(params![first], |r| parse_slot(&r.get::<_, String>(0)?))? {
            older.insert(slot?);
        }
        let mut stmt = conn.prepare(
            "SELECT hold_id, slot_id, admissions, expires_at, lines, total FROM holds WHERE status = 'held'",
        )?;
        let holds = stmt
            .query_map([], hold_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        older.extend(holds.iter().map(|(_, h)| h.slot));
        for slot in older {
            self.ensure_slot(conn, slot)?;
        }
        for (id, hold) in holds {
            if let Some(s) = self.slots.get_mut(&hold.slot) {
                s.ledger.held_online += hold.admissions;
            }
            self.expiry.insert((hold.expires_ms, id));
            self.holds.insert(id, hold);
        }
        Ok(())
    }

    fn add_lease(&mut self, lease: LeaseRow) {
        if let Some(s) = self.slots.get_mut(&lease.slot) {
            s.ledger.leased += lease.escrow();
            s.ledger.over_capacity += lease.over_capacity();
        }
        self.leases.insert(lease.lease_id, lease);
    }

    fn add_tally(&mut self, slot: SlotId, json: &str) {
        match serde_json::from_str(json) {
            Ok(tally) => {
                self.tallies.0.insert(slot, tally);
            }
            Err(e) => {
                tracing::warn!(%slot, error = %e, "unreadable tally; it rebuilds as devices sync")
            }
        }
    }

    /// Brings an older slot into memory with all its leases and its tally,
    /// for what still concerns it (a late upload, a lease report). Open holds
    /// are loaded by `load` only: a hold is never for a slot that is over.
    /// `false` if the database has no such slot.
    pub fn ensure_slot(&mut self, conn: &Connection, slot: SlotId) -> rusqlite::Result<bool> {
        if self.slots.contains_key(&slot) {
            return Ok(true);
        }
        let id = slot.to_string();
        let row = conn
            .prepare_cached(&format!(
                "SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = ?1"
            ))?
            .query_row(params![id], slot_row)
            .optional()?;
        let Some(row) = row else {
            return Ok(false);
        };
        self.slots.insert(slot, row);
        for lease in leases_of_slot_in(conn, &slot)? {
            self.add_lease(lease);
        }
        let tally: Option<String> = conn
            .prepare_cached("SELECT state FROM tallies WHERE slot_id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        if let Some(json) = tally {
            self.add_tally(slot, &json);
        }
        self.dirty_slots.insert(slot);
        Ok(true)
    }

    /// Brings into memory every older slot and lease a counter's upload
    /// names (its sales' leases and slots, the sales its voids cancel, the
    /// leases it reports), so a late upload is judged exactly as it would
    /// have been on its day.
    pub fn ensure_for_sync(
        &mut self,
        conn: &Connection,
        request: &SyncRequest,
    ) -> rusqlite::Result<()> {
        let mut slots: BTreeSet<SlotId> = BTreeSet::new();
        slots.extend(request.sales.iter().map(|s| s.slot_id));
        slots.extend(request.leases.iter().map(|l| l.slot_id));
        let mut lease_ids: BTreeSet<Uuid> = BTreeSet::new();
        lease_ids.extend(request.sales.iter().map(|s| s.lease_id));
        lease_ids.extend(request.leases.iter().map(|l| l.lease_id));
        {
            let mut stmt = conn.prepare_cached("SELECT slot_id FROM leases WHERE lease_id = ?1")?;
            for id in lease_ids.iter().filter(|id| !self.leases.contains_key(id)) {
                let slot: Option<String> = stmt
                    .query_row(params![Text(&id)], |r| r.get(0))
                    .optional()?;
                if let Some(slot) = slot {
                    slots.insert(parse_slot(&slot)?);
                }
            }
        }
        {
            let mut stmt = conn.prepare_cached("SELECT slot_id FROM sales WHERE sale_id = ?1")?;
            for v in &request.voids {
                let slot: Option<String> = stmt
                    .query_row(params![Text(&v.sale_id)], |r| r.get(0))
                    .optional()?;
                if let Some(slot) = slot {
                    slots.insert(parse_slot(&slot)?);
                }
            }
        }
        for slot in slots {
            self.ensure_slot(conn, slot)?;
        }
        Ok(())
    }

    /// The leases of one slot, found through the index (lease sizing weighs
    /// them all).
    pub fn leases_of_slot<'a>(&'a self, slot: &SlotId) -> impl Iterator<Item = &'a LeaseRow> + 'a {
        self.leases.of_slot(slot)
    }

    pub fn slot_view(&self, id: &SlotId) -> Option<SlotView> {
        let row = self.slots.get(id)?;
        let mut hold_expiries: Vec<(i64, u32)> = self
            .holds
            .values()
            .filter(|h| h.slot == *id)
            .map(|h| (h.expires_ms, h.admissions))
            .collect();
        // In a stable order, so that views compare equal when nothing moved
        // (`publish` tells only views that differ).
        hold_expiries.sort_unstable();
        Some(SlotView {
            slot: row.slot.clone(),
            ledger: row.ledger,
            hold_expiries,
            sold: self.tallies.net(id).min(u64::from(u32::MAX)) as u32,
        })
    }

    /// What devices are to hear of when `self` replaces `old` (a reload after
    /// another process's commit, or after an admin path in a job): the
    /// notes `old` still held, and what the reload shows changed.
    pub fn notes_since(&mut self, old: &mut State) {
        let mut notes = std::mem::take(&mut old.device_notes);
        // Slots only the old state has are days that went by, not a change.
        let catalogue_changed = self.catalogue_version != old.catalogue_version
            || self
                .slots
                .iter()
                .any(|(id, row)| old.slots.get(id).is_none_or(|o| o.slot != row.slot));
        if catalogue_changed {
            notes.topic(DeviceTopic::Catalogue);
        }
        if self.staff != old.staff || self.supervisors != old.supervisors {
            notes.topic(DeviceTopic::Staff);
        }
        if self.keys.1 != old.keys.1 {
            notes.topic(DeviceTopic::Keys);
        }
        for lease in self.leases.values() {
            if old.leases.get(&lease.lease_id) != Some(lease) {
                notes.leases_of(lease.device_id);
            }
        }
        for lease in old.leases.values() {
            // Gone while its slot is still live (not a day gone by).
            if self.leases.get(&lease.lease_id).is_none() && self.slots.contains_key(&lease.slot) {
                notes.leases_of(lease.device_id);
            }
        }
        notes.merge(std::mem::take(&mut self.device_notes));
        self.device_notes = notes;
    }

    /// Hands committed changes to readers.
    pub fn publish(&mut self, conn: &Connection, shared: &Shared) -> rusqlite::Result<()> {
        if !self.dirty_slots.is_empty() {
            let dirty: Vec<SlotId> = self.dirty_slots.drain().collect();
            let views: Vec<(SlotId, Option<SlotView>)> = dirty
                .into_iter()
                .map(|id| (id, self.slot_view(&id)))
                .collect();
            let mut slots = shared.slots.write().unwrap_or_else(|p| p.into_inner());
            // Only views that differ are told: a reload marks every slot
            // dirty, and devices must not hear of places that did not move.
            let mut ids: Vec<SlotId> = Vec::with_capacity(views.len());
            for (id, view) in views {
                let old = match view {
                    Some(v) => slots.insert(id, v),
                    None => slots.remove(&id),
                };
                if old.as_ref() != slots.get(&id) {
                    ids.push(id);
                }
            }
            drop(slots);
            // Told only once readers can see it: the push hub re-reads the
            // day as soon as it hears.
            shared.changes.slots(&ids);
        }
        if self.devices_dirty {
            self.devices_dirty = false;
            *shared
                .supervisors
                .write()
                .unwrap_or_else(|p| p.into_inner()) = self.supervisors.clone();
            let devices = load_devices(conn)?;
            let channels = load_channels(conn)?;
            let keys = load_keys(conn)?;
            self.keys = keys.clone();
            *shared.devices.write().unwrap_or_else(|p| p.into_inner()) = devices;
            *shared.channels.write().unwrap_or_else(|p| p.into_inner()) = channels;
            *shared.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        }
        self.publish_sketches(shared);
        shared
            .changes
            .devices(std::mem::take(&mut self.device_notes));
        let mut cat = shared.catalogue.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&cat, &self.catalogue) {
            *cat = self.catalogue.clone();
            shared.changes.everything();
        }
        Ok(())
    }
}

impl State {
    /// Tells confirm handlers which holds they may sign tickets for, and
    /// with which key. Costs the writer a map update per hold opened or
    /// closed; a full rebuild only after a load.
    fn publish_sketches(&mut self, shared: &Shared) {
        {
            let mut signer = shared.signer.write().unwrap_or_else(|p| p.into_inner());
            if !signer
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &self.signer))
            {
                *signer = Some(Arc::clone(&self.signer));
            }
        }
        if !self.sketches_reset && self.hold_sketches.is_empty() {
            return;
        }
        let mut map = shared
            .hold_sketches
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if std::mem::take(&mut self.sketches_reset) {
            self.hold_sketches.clear();
            map.clear();
            for (id, hold) in &self.holds {
                // A waiting-list offer's hold has no lines: nothing to sign.
                if hold.lines.is_empty() {
                    continue;
                }
                if let Some(row) = self.slots.get(&hold.slot) {
                    let sketch = HoldSketch::of(hold.slot, row.slot.window_minutes, &hold.lines);
                    map.insert(*id, sketch);
                }
            }
            return;
        }
        for (id, sketch) in self.hold_sketches.drain(..) {
            match sketch {
                Some(s) => map.insert(id, s),
                None => map.remove(&id),
            };
        }
    }

    /// A hold left the open set (confirmed, cancelled, expired).
    pub fn hold_closed(&mut self, hold_id: Uuid) {
        self.hold_sketches.push((hold_id, None));
    }
}

fn load_devices(conn: &Connection) -> rusqlite::Result<HashMap<Vec<u8>, DeviceInfo>> {
    let mut stmt = conn.prepare(
        "SELECT token_hash, device_id, role, name FROM devices WHERE revoked_at IS NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        let role: String = r.get(2)?;
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            DeviceInfo {
                device_id: DeviceId(parse_uuid(&r.get::<_, String>(1)?)?),
                role: Role::parse(&role).unwrap_or(Role::Gate),
                name: r.get(3)?,
            },
        ))
    })?;
    rows.collect()
}

fn load_channels(conn: &Connection) -> rusqlite::Result<HashMap<Vec<u8>, ChannelInfo>> {
    let mut stmt =
        conn.prepare("SELECT token_hash, channel_id, name FROM channels WHERE revoked_at IS NULL")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            ChannelInfo {
                channel_id: parse_uuid(&r.get::<_, String>(1)?)?,
                name: r.get(2)?,
            },
        ))
    })?;
    rows.collect()
}

pub(crate) fn load_keys(conn: &Connection) -> rusqlite::Result<(Arc<KeyRing>, Arc<PublicKeys>)> {
    let mut stmt = conn.prepare(
        "SELECT k.key_id, k.public_key, k.owner, k.device_id, k.revoked_at IS NOT NULL, d.role
         FROM signing_keys k LEFT JOIN devices d ON d.key_id = k.key_id ORDER BY k.key_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, bool>(4)?,
            r.get::<_, Option<String>>(5)?,
        ))
    })?;
    let mut ring = KeyRing::new();
    let mut list = Vec::new();
    for row in rows {
        let (key_id, public, owner, device, revoked, device_role) = row?;
        let role = match device_role.as_deref().map(Role::parse) {
            None => KeyRole::of_device(None),
            Some(Some(r)) => KeyRole::of_device(Some(r)),
            Some(None) => {
                tracing::warn!(key_id, "stored key's device has an unknown role; skipped");
                continue;
            }
        };
        let Ok(bytes) = <[u8; 32]>::try_from(public.as_slice()) else {
            tracing::warn!(key_id, "stored public key is not 32 bytes; skipped");
            continue;
        };
        // Every key is checked, but only ticket signers verify tickets: a
        // gate's key signs shared admissions, never an entry.
        let mut check = KeyRing::new();
        if check.insert(key_id, bytes, revoked).is_err() {
            tracing::warn!(
                key_id,
                "stored public key is not a valid Ed25519 key; skipped"
            );
            continue;
        }
        if role.signs_tickets() {
            let _ = ring.insert(key_id, bytes, revoked);
        }
        list.push(PublicKeyInfo {
            key_id,
            public_key: data_encoding::HEXLOWER.encode(&bytes),
            owner,
            device_id: device.and_then(|d| Uuid::parse_str(&d).ok()),
            revoked,
            role,
        });
    }
    Ok((Arc::new(ring), Arc::new(PublicKeys { keys: list })))
}

impl Shared {
    pub fn empty(catalogue: Arc<Catalogue>) -> Shared {
        Shared {
            catalogue: RwLock::new(catalogue),
            supervisors: RwLock::new(Vec::new()),
            slots: RwLock::new(BTreeMap::new()),
            devices: RwLock::new(HashMap::new()),
            channels: RwLock::new(HashMap::new()),
            keys: RwLock::new((
                Arc::new(KeyRing::new()),
                Arc::new(PublicKeys { keys: vec![] }),
            )),
            hold_sketches: RwLock::new(HashMap::new()),
            signer: RwLock::new(None),
            changes: Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(slot: SlotId) -> LeaseRow {
        LeaseRow {
            lease_id: tessera_core::ids::new_id(),
            device_id: tessera_core::ids::new_id(),
            slot,
            totals: LeaseTotals::default(),
            sold: 0,
            unused_reported: 0,
            revoked_escrow: None,
            kept: 0,
        }
    }

    #[test]
    fn a_slots_leases_are_found_through_the_index() {
        let day: jiff::civil::Date = "2026-12-09".parse().unwrap();
        let (a, b) = (
            SlotId::new(day, 600).unwrap(),
            SlotId::new(day, 630).unwrap(),
        );
        let mut leases = Leases::default();
        let mut of_a = Vec::new();
        for slot in [a, b, a, b, a] {
            let l = lease(slot);
            if slot == a {
                of_a.push(l.lease_id);
            }
            leases.insert(l.lease_id, l);
        }
        // Replacing a row keeps one index entry.
        let again = lease(a);
        let id = of_a[0];
        leases.insert(
            id,
            LeaseRow {
                lease_id: id,
                ..again
            },
        );
        let mut found: Vec<Uuid> = leases.of_slot(&a).map(|l| l.lease_id).collect();
        found.sort();
        of_a.sort();
        assert_eq!(found, of_a);
        assert_eq!(leases.of_slot(&b).count(), 2);
        let other = SlotId::new(day, 660).unwrap();
        assert_eq!(leases.of_slot(&other).count(), 0);
    }

    /// The SQL twin of core's `LeaseState::is_settled` (for a slot that is
    /// over) must pick exactly the leases core calls unsettled, or start-up
    /// would drop a lease that can still change the inventory.
    #[test]
    fn the_unsettled_search_agrees_with_core_on_every_small_lease() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE leases (slot_id TEXT, granted_total INTEGER, released_total INTEGER,
                 sold INTEGER, unused_reported INTEGER, revoked_escrow INTEGER)",
        )
        .unwrap();
        let day: jiff::civil::Date = "2026-12-01".parse().unwrap();
        let mut unsettled = std::collections::BTreeSet::new();
        let mut minute = 0;
        for granted in 0..4u32 {
            for released in 0..=granted {
                for sold in 0..4u32 {
                    for unused in 0..2u32 {
                        for revoked in [None, Some(1u32)] {
                            let slot = SlotId::new(day, minute).unwrap();
                            minute += 1;
                            let mut l = lease(slot);
                            l.totals = LeaseTotals {
                                granted_total: granted,
                                released_total: released,
                            };
                            (l.sold, l.unused_reported, l.revoked_escrow) = (sold, unused, revoked);
                            conn.execute(
                                "INSERT INTO leases VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                                rusqlite::params![
                                    slot.to_string(),
                                    granted,
                                    released,
                                    sold,
                                    unused,
                                    revoked
                                ],
                            )
                            .unwrap();
                            if !l.is_settled(true) {
                                unsettled.insert(slot.to_string());
                            }
                        }
                    }
                }
            }
        }
        let found: std::collections::BTreeSet<String> = conn
            .prepare(OLDER_UNSETTLED_SLOTS_SQL)
            .unwrap()
            .query_map(["9999"], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(!unsettled.is_empty());
        assert_eq!(found, unsettled);
    }
}
