//! The writer's in-memory copy of the inventory, loaded from the database at
//! start (and again whenever another process, such as an admin command, has
//! committed to it), and the read-only views it publishes after each commit.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use jiff::tz::TimeZone;
use rusqlite::{params, Connection, OptionalExtension};
use tessera_core::api::devices::{PublicKeyInfo, PublicKeys, Role};
use tessera_core::catalogue::Catalogue;
use tessera_core::inventory::{LeaseTotals, SlotLedger};
use tessera_core::pricing::PricedLine;
use tessera_core::slot::{Slot, SlotId};
use tessera_core::staff::StaffMember;
use tessera_core::tally::Tallies;
use tessera_core::ticket_code::{KeyRing, TicketSigner};
use uuid::Uuid;

use super::idempotency::IdempotencyIndex;
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
    pub signer: TicketSigner,
    pub leases: HashMap<Uuid, LeaseRow>,
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
}

#[derive(Clone)]
pub(crate) struct SlotView {
    pub slot: Slot,
    /// The ledger with `held_online` as of the commit; readers subtract holds
    /// that have expired since, from `hold_expiries`.
    pub ledger: SlotLedger,
    pub hold_expiries: Vec<(i64, u32)>,
    pub sold: u32,
}

impl SlotView {
    /// Places bookable at `now_ms`: holds that expired since the last sweep
    /// already count as free (the read-time half of hold expiry).
    pub fn available_at(&self, now_ms: i64) -> u32 {
        let mut ledger = self.ledger;
        ledger.held_online = self
            .hold_expiries
            .iter()
            .filter(|(exp, _)| *exp > now_ms)
            .map(|(_, n)| *n)
            .sum();
        ledger.available()
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

pub(crate) fn parse_uuid(text: &str) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn parse_slot(text: &str) -> rusqlite::Result<SlotId> {
    text.parse::<SlotId>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Marks holds whose time is up as expired, so every later count agrees.
pub(crate) fn expire_due_holds(conn: &Connection, now_ms: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE holds SET status = 'expired' WHERE status = 'held' AND expires_at <= ?1",
        params![now_ms],
    )
}

impl State {
    pub fn load(conn: &Connection, now_ms: i64) -> Result<State, OpenError> {
        let catalogue = load_catalogue(conn)?;
        let tz = catalogue
            .time_zone()
            .map_err(|e| OpenError::BadCatalogue(e.to_string()))?;
        expire_due_holds(conn, now_ms)?;

        let mut slots = BTreeMap::new();
        let mut stmt = conn.prepare(
            "SELECT slot_id, starts_at, ends_at, window_minutes, capacity, sold_online FROM slots",
        )?;
        let rows = stmt.query_map([], |r| {
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
        })?;
        for row in rows {
            let row = row?;
            slots.insert(row.slot.id, row);
        }

        let mut holds = HashMap::new();
        let mut expiry = BTreeSet::new();
        let mut stmt = conn.prepare(
            "SELECT hold_id, slot_id, admissions, expires_at, lines, total FROM holds WHERE status = 'held'",
        )?;
        let rows = stmt.query_map([], |r| {
            let lines: String = r.get(4)?;
            Ok((
                parse_uuid(&r.get::<_, String>(0)?)?,
                OpenHold {
                    slot: parse_slot(&r.get::<_, String>(1)?)?,
                    admissions: r.get(2)?,
                    expires_ms: r.get(3)?,
                    lines: serde_json::from_str(&lines).unwrap_or_default(),
                    total: r.get(5)?,
                },
            ))
        })?;
        for row in rows {
            let (id, hold) = row?;
            if let Some(s) = slots.get_mut(&hold.slot) {
                s.ledger.held_online += hold.admissions;
            }
            expiry.insert((hold.expires_ms, id));
            holds.insert(id, hold);
        }

        let mut leases = HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT lease_id, device_id, slot_id, granted_total, released_total, sold, unused_reported, revoked_escrow, kept FROM leases",
        )?;
        let rows = stmt.query_map([], |r| {
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
        })?;
        for row in rows {
            let lease = row?;
            if let Some(s) = slots.get_mut(&lease.slot) {
                s.ledger.leased += lease.escrow();
                s.ledger.over_capacity += lease.over_capacity();
            }
            leases.insert(lease.lease_id, lease);
        }

        let mut tallies = Tallies::default();
        let mut stmt = conn.prepare("SELECT slot_id, state FROM tallies")?;
        let rows = stmt.query_map([], |r| {
            Ok((parse_slot(&r.get::<_, String>(0)?)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (slot, json) = row?;
            match serde_json::from_str(&json) {
                Ok(tally) => {
                    tallies.0.insert(slot, tally);
                }
                Err(e) => {
                    tracing::warn!(%slot, error = %e, "unreadable tally; it rebuilds as devices sync")
                }
            }
        }

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

        let dirty_slots = slots.keys().copied().collect();
        Ok(State {
            catalogue: Arc::new(catalogue),
            tz,
            slots,
            holds,
            expiry,
            signer: TicketSigner::from_seed(key_id, seed),
            leases,
            tallies,
            catalogue_version,
            staff,
            supervisors,
            keys: load_keys(conn)?,
            idempotency,
            last_sync: HashMap::new(),
            dirty_slots,
            unsaved_slots: HashSet::new(),
            devices_dirty: true,
        })
    }

    /// The leases of one slot (lease sizing weighs them all).
    pub fn leases_of_slot<'a>(&'a self, slot: &SlotId) -> impl Iterator<Item = &'a LeaseRow> + 'a {
        let slot = *slot;
        self.leases.values().filter(move |l| l.slot == slot)
    }

    pub fn slot_view(&self, id: &SlotId) -> Option<SlotView> {
        let row = self.slots.get(id)?;
        let hold_expiries = self
            .holds
            .values()
            .filter(|h| h.slot == *id)
            .map(|h| (h.expires_ms, h.admissions))
            .collect();
        Some(SlotView {
            slot: row.slot.clone(),
            ledger: row.ledger,
            hold_expiries,
            sold: self.tallies.net(id).min(u64::from(u32::MAX)) as u32,
        })
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
            for (id, view) in views {
                match view {
                    Some(v) => slots.insert(id, v),
                    None => slots.remove(&id),
                };
            }
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
        let mut cat = shared.catalogue.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&cat, &self.catalogue) {
            *cat = self.catalogue.clone();
        }
        Ok(())
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
                device_id: parse_uuid(&r.get::<_, String>(1)?)?,
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
        "SELECT key_id, public_key, owner, device_id, revoked_at IS NOT NULL FROM signing_keys ORDER BY key_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, bool>(4)?,
        ))
    })?;
    let mut ring = KeyRing::new();
    let mut list = Vec::new();
    for row in rows {
        let (key_id, public, owner, device, revoked) = row?;
        let Ok(bytes) = <[u8; 32]>::try_from(public.as_slice()) else {
            tracing::warn!(key_id, "stored public key is not 32 bytes; skipped");
            continue;
        };
        if ring.insert(key_id, bytes, revoked).is_err() {
            tracing::warn!(
                key_id,
                "stored public key is not a valid Ed25519 key; skipped"
            );
            continue;
        }
        list.push(PublicKeyInfo {
            key_id,
            public_key: data_encoding::HEXLOWER.encode(&bytes),
            owner,
            device_id: device.and_then(|d| Uuid::parse_str(&d).ok()),
            revoked,
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
        }
    }
}
