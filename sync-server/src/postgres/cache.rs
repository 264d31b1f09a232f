//! What each process keeps in memory so that reads never wait for the
//! database: the slots' counts (availability, sellable slots), the trusted
//! channels, the enrolled devices and ticket keys, and the staff's PIN
//! verifiers. Every write commits a NOTIFY naming the slots it changed; a
//! listener task in each process LISTENs, re-reads those rows and keeps the
//! newest version of each (the `version` column), so one process's sale shows
//! in every other's availability as soon as its commit is delivered. The
//! listener re-reads everything when it (re)connects, since notifications
//! sent while it was away are lost, and every 30 seconds as a backstop. It
//! checks its connection every second and says when it last could
//! (`liveness`), so that `/healthz` fails while the view may be stale.
//!
//! Like SQLite's writer it keeps only what is live: slots (and their
//! tallies) from core's `first_live_slot` of the museum's today on, so its
//! size and every re-read's cost do not grow with the days behind the
//! museum. An older slot is read from the database when a request names it
//! (`PgStore::availability`, `sellable_slot`); writes never read the cache.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use tessera_core::ids::DeviceId;
use tessera_core::inventory::SlotLedger;
use tessera_core::slot::{Slot, SlotId};
use tessera_core::tally::SlotTally;
use tokio_postgres::{AsyncMessage, GenericClient, Row};

use jiff::tz::TimeZone;
use tessera_core::api::devices::{KeyRole, PublicKeyInfo, PublicKeys, Role};
use tessera_core::clock::Clock;
use tessera_core::staff::{for_counters, PinVerifier, StaffMember, StaffRole};
use tessera_core::ticket_code::KeyRing;

use super::connector::Connector;
use super::liveness::{ListenerHealth, HEARTBEAT, HEARTBEAT_WAIT};
use super::schema::{PgError, CHANGES};
use crate::store::{ChannelInfo, DeviceInfo, DeviceNotes, Topics};
use tessera_core::api::events::DeviceTopic;

/// A slot as last read from the database.
#[derive(Clone, Debug)]
pub struct CachedSlot {
    pub slot: Slot,
    pub ledger: SlotLedger,
    pub version: i64,
}

/// Every ticket key the gates and the server check against: the server's
/// and each counter's certified key, revoked ones marked.
#[derive(Clone)]
pub struct Keys {
    pub ring: Arc<KeyRing>,
    pub public: Arc<PublicKeys>,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            ring: Arc::new(KeyRing::new()),
            public: Arc::new(PublicKeys { keys: Vec::new() }),
        }
    }
}

/// The staff as counters and the server need them.
#[derive(Clone, Default)]
pub struct Staff {
    /// What counters get at sync (cashiers and supervisors who sell).
    pub for_counters: Vec<StaffMember>,
    /// Whose PIN approves a void (checked here, never sent to devices).
    pub supervisors: Vec<StaffMember>,
}

#[derive(Default)]
pub struct Cache {
    pub slots: RwLock<BTreeMap<SlotId, CachedSlot>>,
    /// Channels that may confirm, by the SHA-256 of their token.
    pub channels: RwLock<HashMap<Vec<u8>, ChannelInfo>>,
    /// Enrolled, unrevoked devices by the SHA-256 of their token.
    pub devices: RwLock<HashMap<Vec<u8>, DeviceInfo>>,
    pub keys: RwLock<Keys>,
    pub staff: RwLock<Staff>,
    /// Counters' net admissions per slot (their tallies), re-read with the
    /// slot rows a NOTIFY names.
    pub counter_sold: RwLock<HashMap<SlotId, u32>>,
    /// Whether the listener keeping all of this fresh is alive.
    pub listener: ListenerHealth,
    /// Told which days changed whenever slot rows or tallies are re-read.
    pub changes: Arc<crate::store::Changes>,
    /// The museum's clock and time zone, which say which slots are live
    /// (none: every slot is kept).
    live: Option<(Clock, TimeZone)>,
}

/// The columns `slot_from_row` reads, for `SELECT`s and `RETURNING`s.
pub const SLOT_COLUMNS: &str =
    "slot_id, starts_at, ends_at, window_minutes, capacity, sold_online, held_online, leased, over_capacity, version";

/// What a re-read of slot rows selects (`read_live` adds the bound).
pub fn slots_select() -> String {
    format!("SELECT {SLOT_COLUMNS} FROM slots")
}

/// What a re-read of the counters' tallies selects.
pub const TALLIES_SELECT: &str = "SELECT slot_id, state FROM tallies";

/// Start-up (and every full re-read) reads the rows of the live slots only
/// (`$1` the first live slot) through the table's primary key: slot ids
/// are `YYYY-MM-DDTHH:MM`, which sort as the slots do.
pub fn live_rows_sql(select: &str) -> String {
    format!("{select} WHERE slot_id >= $1")
}

fn count(row: &Row, i: usize) -> u32 {
    u32::try_from(row.get::<_, i32>(i)).unwrap_or(0)
}

pub fn slot_from_row(row: &Row) -> Option<CachedSlot> {
    let id: String = row.get(0);
    let id: SlotId = id.parse().ok()?;
    let ledger = SlotLedger {
        capacity: count(row, 4),
        sold_online: count(row, 5),
        held_online: count(row, 6),
        leased: count(row, 7),
        over_capacity: count(row, 8),
    };
    Some(CachedSlot {
        slot: Slot {
            id,
            window_minutes: u16::try_from(row.get::<_, i32>(3)).ok()?,
            starts_at: tessera_core::clock::from_ms(row.get(1)),
            ends_at: tessera_core::clock::from_ms(row.get(2)),
            capacity: ledger.capacity,
        },
        ledger,
        version: row.get(9),
    })
}

impl Cache {
    /// A cache that keeps the slots live on `clock`'s today in `tz`.
    pub fn live_on(clock: Clock, tz: TimeZone) -> Cache {
        Cache {
            live: Some((clock, tz)),
            ..Cache::default()
        }
    }

    /// The first slot kept: core's `first_live_slot` of the museum's today
    /// (none when the cache keeps every slot).
    pub fn first_live(&self) -> Option<SlotId> {
        let (clock, tz) = self.live.as_ref()?;
        let today = tz.to_datetime(clock.now()).date();
        tessera_core::leases::first_live_slot(today).ok()
    }

    /// Whether the cache keeps `slot` (or the older slot must be read from
    /// the database).
    pub fn keeps(&self, slot: SlotId) -> bool {
        self.first_live().is_none_or(|first| slot >= first)
    }

    /// `first_live` as the slot ids are stored: they sort as the slots do
    /// (`YYYY-MM-DDTHH:MM`), so `slot_id >= this` is the live range.
    fn first_live_text(&self) -> String {
        self.first_live().map(|s| s.to_string()).unwrap_or_default()
    }

    /// Keeps each live row unless the cache already has a newer version of
    /// it (a notification and a writer's own answer may arrive in any
    /// order). Rows of older slots are not kept.
    pub fn apply(&self, rows: impl IntoIterator<Item = CachedSlot>) {
        let first = self.first_live();
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        let mut catalogue = false;
        for row in rows {
            if first.is_some_and(|first| row.slot.id < first) {
                continue;
            }
            match slots.get(&row.slot.id) {
                Some(have) if have.version >= row.version => {}
                have => {
                    // A new slot, or a capacity the operator changed: the
                    // day's slots changed, not only their places.
                    catalogue |= have.is_none_or(|h| h.slot != row.slot);
                    if have.is_none_or(|h| h.ledger != row.ledger) {
                        changed.push(row.slot.id);
                    }
                    slots.insert(row.slot.id, row);
                }
            }
        }
        metrics::gauge!("tessera_pg_cached_slots").set(slots.len() as f64);
        drop(slots);
        self.changes.slots(&changed);
        if catalogue {
            self.changes.topic(DeviceTopic::Catalogue);
        }
    }

    /// The rows `select` (`SELECT … FROM table`) reads for the live slots
    /// named in `only`, or for every live slot; `None` when none of those
    /// named is live. Slot ids are `YYYY-MM-DDTHH:MM`, which sort as the
    /// slots do, so the primary key serves the range.
    async fn read_live(
        &self,
        client: &impl GenericClient,
        select: &str,
        only: Option<&[String]>,
    ) -> Result<Option<Vec<Row>>, PgError> {
        let first = self.first_live_text();
        let rows = match only {
            Some(ids) => {
                let live: Vec<&String> = ids.iter().filter(|id| **id >= first).collect();
                if live.is_empty() {
                    return Ok(None);
                }
                client
                    .query(&format!("{select} WHERE slot_id = ANY($1)"), &[&live])
                    .await?
            }
            None => client.query(&live_rows_sql(select), &[&first]).await?,
        };
        Ok(Some(rows))
    }

    /// Re-reads the slots named (those still live), or every live slot.
    pub async fn reload_slots(
        &self,
        client: &impl GenericClient,
        only: Option<&[String]>,
    ) -> Result<(), PgError> {
        let select = slots_select();
        let Some(rows) = self.read_live(client, &select, only).await? else {
            return Ok(());
        };
        let rows = rows.iter().filter_map(slot_from_row);
        if only.is_some() {
            self.apply(rows);
        } else {
            // A full re-read (start, reconnect, the backstop) takes the rows
            // as they are, whatever version the cache holds: it is how a
            // cache that went wrong comes right again. A commit it missed is
            // NOTIFYed after it and re-read next.
            // Older slots drop out here as the days pass.
            let fresh: BTreeMap<SlotId, CachedSlot> = rows.map(|r| (r.slot.id, r)).collect();
            metrics::gauge!("tessera_pg_cached_slots").set(fresh.len() as f64);
            let old = std::mem::replace(
                &mut *self.slots.write().unwrap_or_else(|p| p.into_inner()),
                fresh.clone(),
            );
            self.changes.everything();
            // Devices hear only of what this re-read found different (it
            // runs every 30 s as a backstop).
            let moved: Vec<SlotId> = fresh
                .iter()
                .filter(|(id, r)| old.get(id).is_none_or(|o| o.ledger != r.ledger))
                .map(|(id, _)| *id)
                .collect();
            self.changes.slots(&moved);
            // Slots only the old view has are days that went by; a first
            // read (an empty view) is no change anyone missed.
            let catalogue = !old.is_empty()
                && fresh
                    .iter()
                    .any(|(id, r)| old.get(id).is_none_or(|o| o.slot != r.slot));
            if catalogue {
                self.changes.topic(DeviceTopic::Catalogue);
            }
        }
        self.reload_counter_sold(client, only).await
    }

    /// Re-reads the counters' tallies of the slots named (those still
    /// live), or of every live slot.
    pub(super) async fn reload_counter_sold(
        &self,
        client: &impl GenericClient,
        only: Option<&[String]>,
    ) -> Result<(), PgError> {
        let select = TALLIES_SELECT;
        let Some(rows) = self.read_live(client, select, only).await? else {
            return Ok(());
        };
        let read = counter_sold_of(&rows);
        let mut sold = self.counter_sold.write().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<SlotId> = read
            .iter()
            .filter(|(id, n)| sold.get(*id) != Some(*n))
            .map(|(id, _)| *id)
            .collect();
        if only.is_none() {
            ids.extend(sold.keys().filter(|id| !read.contains_key(*id)).copied());
            sold.clear();
        }
        sold.extend(read);
        drop(sold);
        // A counter's sale changes what a day has left as much as an
        // online order does.
        self.changes.slots(&ids);
        Ok(())
    }

    pub async fn reload_channels(&self, client: &impl GenericClient) -> Result<(), PgError> {
        let rows = client
            .query(
                "SELECT token_hash, channel_id, name FROM channels WHERE revoked_at IS NULL",
                &[],
            )
            .await?;
        let map = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, Vec<u8>>(0),
                    ChannelInfo {
                        channel_id: r.get(1),
                        name: r.get(2),
                    },
                )
            })
            .collect();
        *self.channels.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    /// Devices and the ticket keys they were certified with (a revocation
    /// takes both away).
    pub async fn reload_devices(&self, client: &impl GenericClient) -> Result<(), PgError> {
        let rows = client
            .query(
                "SELECT token_hash, device_id, role, name FROM devices WHERE revoked_at IS NULL",
                &[],
            )
            .await?;
        let mut map = HashMap::with_capacity(rows.len());
        for r in &rows {
            let role: String = r.get(2);
            let Some(role) = Role::parse(&role) else {
                tracing::warn!(role = %role, "device with an unknown role; skipped");
                continue;
            };
            map.insert(
                r.get::<_, Vec<u8>>(0),
                DeviceInfo {
                    device_id: DeviceId(r.get(1)),
                    role,
                    name: r.get(3),
                },
            );
        }
        *self.devices.write().unwrap_or_else(|p| p.into_inner()) = map;
        let keys = load_keys(client).await?;
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(())
    }

    pub async fn reload_staff(&self, client: &impl GenericClient) -> Result<(), PgError> {
        let rows = client
            .query(
                "SELECT name, role, pin_verifier FROM staff ORDER BY name",
                &[],
            )
            .await?;
        let mut all = Vec::with_capacity(rows.len());
        for r in &rows {
            let name: String = r.get(0);
            let role = if r.get::<_, String>(1) == "supervisor" {
                StaffRole::Supervisor
            } else {
                StaffRole::Cashier
            };
            match PinVerifier::parse(r.get(2)) {
                Ok(pin_verifier) => all.push(StaffMember {
                    name,
                    role,
                    pin_verifier,
                }),
                // Names only: a verifier never goes to the log.
                Err(_) => tracing::warn!(
                    staff = %name,
                    "unusable PIN verifier: this member cannot sign in until the PIN is set again"
                ),
            }
        }
        let staff = Staff {
            for_counters: for_counters(&all),
            supervisors: all.iter().filter(|s| s.may_approve()).cloned().collect(),
        };
        *self.staff.write().unwrap_or_else(|p| p.into_inner()) = staff;
        Ok(())
    }

    pub fn keys(&self) -> Keys {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Everything a process keeps, re-read (at start and when the listener
    /// reconnects).
    pub async fn reload_all(&self, client: &impl GenericClient) -> Result<(), PgError> {
        self.reload_slots(client, None).await?;
        self.reload_channels(client).await?;
        self.reload_devices(client).await?;
        self.reload_staff(client).await
    }
}

/// Counters' net admissions per slot, from `slot_id, state` rows of
/// `tallies`.
pub fn counter_sold_of(rows: &[Row]) -> HashMap<SlotId, u32> {
    let mut read = HashMap::with_capacity(rows.len());
    for row in rows {
        let (Ok(id), Ok(tally)) = (
            row.get::<_, String>(0).parse::<SlotId>(),
            serde_json::from_str::<SlotTally>(row.get(1)),
        ) else {
            continue;
        };
        read.insert(id, u32::try_from(tally.net()).unwrap_or(u32::MAX));
    }
    read
}

async fn load_keys(client: &impl GenericClient) -> Result<Keys, PgError> {
    let rows = client
        .query(
            "SELECT k.key_id, k.public_key, k.owner, k.device_id, k.revoked_at IS NOT NULL, d.role
             FROM signing_keys k LEFT JOIN devices d ON d.key_id = k.key_id ORDER BY k.key_id",
            &[],
        )
        .await?;
    let mut ring = KeyRing::new();
    let mut list = Vec::new();
    for row in &rows {
        let Ok(key_id) = u32::try_from(row.get::<_, i32>(0)) else {
            continue;
        };
        let Ok(bytes) = <[u8; 32]>::try_from(row.get::<_, Vec<u8>>(1)) else {
            tracing::warn!(key_id, "stored public key is not 32 bytes; skipped");
            continue;
        };
        let revoked: bool = row.get(4);
        let role = match row.get::<_, Option<String>>(5).as_deref().map(Role::parse) {
            None => KeyRole::of_device(None),
            Some(Some(r)) => KeyRole::of_device(Some(r)),
            Some(None) => {
                tracing::warn!(key_id, "stored key's device has an unknown role; skipped");
                continue;
            }
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
            owner: row.get(2),
            device_id: row.get(3),
            revoked,
            role,
        });
    }
    Ok(Keys {
        ring: Arc::new(ring),
        public: Arc::new(PublicKeys { keys: list }),
    })
}

/// What a NOTIFY payload asks a process to re-read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub slots: Vec<String>,
    pub all_slots: bool,
    pub channels: bool,
    pub devices: bool,
    pub staff: bool,
    /// What the device channel is to hear of (named by payloads only, never
    /// by a backstop re-read).
    pub notes: DeviceNotes,
}

impl Change {
    fn everything() -> Change {
        Change {
            slots: Vec::new(),
            all_slots: true,
            channels: true,
            devices: true,
            staff: true,
            notes: DeviceNotes::default(),
        }
    }
}

/// NOTIFY payload prefix: devices are to hear of a topic (`device:voided`).
pub const DEVICE_TOPIC: &str = "device:";
/// NOTIFY payload prefix: these devices' leases changed (`leases:UUID,…`).
pub const LEASES_CHANGED: &str = "leases:";

/// The payload telling every process's devices of `topic`.
pub fn topic_payload(topic: DeviceTopic) -> String {
    format!("{DEVICE_TOPIC}{}", topic.as_str())
}

/// NOTIFY payload: devices or ticket keys changed (enrolment, revocation).
pub const DEVICES_CHANGED: &str = "devices";
/// NOTIFY payload: a staff member's PIN or role changed.
pub const STAFF_CHANGED: &str = "staff";

/// Payloads are `slots:ID,ID…`, `slots:*`, `channels`, `devices` or `staff`.
pub fn parse_payload(payload: &str, into: &mut Change) {
    if payload == "channels" {
        into.channels = true;
    } else if payload == DEVICES_CHANGED {
        into.devices = true;
        // An enrolment (a new key) or a revocation: gates re-fetch keys.
        into.notes.topic(DeviceTopic::Keys);
    } else if payload == STAFF_CHANGED {
        into.staff = true;
        into.notes.topic(DeviceTopic::Staff);
    } else if let Some(name) = payload.strip_prefix(DEVICE_TOPIC) {
        match Topics::ALL.into_iter().find(|t| t.as_str() == name) {
            Some(topic) => into.notes.topic(topic),
            None => tracing::warn!(payload, "unknown device topic notified; ignored"),
        }
    } else if let Some(ids) = payload.strip_prefix(LEASES_CHANGED) {
        for id in ids.split(',') {
            match uuid::Uuid::parse_str(id) {
                Ok(device) => into.notes.leases_of(device),
                Err(_) => tracing::warn!(payload, "unreadable device id notified; ignored"),
            }
        }
    } else if let Some(ids) = payload.strip_prefix("slots:") {
        if ids == "*" {
            into.all_slots = true;
        } else {
            into.slots.extend(ids.split(',').map(str::to_string));
        }
    } else {
        // An unknown payload (a newer process?): re-read everything.
        let slots = std::mem::take(&mut into.slots);
        let notes = std::mem::take(&mut into.notes);
        *into = Change::everything();
        into.slots = slots;
        into.notes = notes;
    }
}

/// NOTIFY payloads are limited to 8000 bytes: a batch that touched more
/// slots than fit asks for a full re-read.
pub fn slots_payload<'a>(ids: impl IntoIterator<Item = &'a SlotId>) -> String {
    let list: Vec<String> = ids.into_iter().map(ToString::to_string).collect();
    let joined = list.join(",");
    if joined.len() > 7000 {
        "slots:*".into()
    } else {
        format!("slots:{joined}")
    }
}

/// Runs for the life of the process: LISTEN, re-read what changed, and
/// reconnect (re-reading everything) whenever the connection is lost.
pub async fn listen(connector: Connector, cache: Arc<Cache>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match listen_once(&connector, &cache).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL listener lost its connection; reconnecting");
                // At most a second: `/healthz` fails after five without it.
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn listen_once(connector: &Connector, cache: &Cache) -> Result<(), PgError> {
    let (client, mut connection) = connector.connect_raw("listener").await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // The connection delivers notifications as it polls; forward them.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "PostgreSQL listener connection failed");
                    break;
                }
            }
        }
    });
    let result = async {
        client.batch_execute(&format!("LISTEN {CHANGES}")).await?;
        // Whatever was notified before LISTEN took effect is in these reads.
        cache.reload_all(&client).await?;
        cache.listener.alive();
        // Notifications sent while this process was not listening are
        // lost: every device re-fetches what it keeps.
        cache.changes.devices(crate::store::DeviceNotes::everything());
        tracing::info!("PostgreSQL listener connected; everything re-read");
        let mut backstop = tokio::time::interval(Duration::from_secs(30));
        backstop.tick().await;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut change = Change::default();
            tokio::select! {
                _ = heartbeat.tick() => {
                    // A backend that stopped answering (a hung server, a
                    // network that drops packets) fails here within
                    // seconds, where TCP keepalive would take a minute.
                    match tokio::time::timeout(HEARTBEAT_WAIT, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => cache.listener.alive(),
                        Ok(Err(e)) => return Err(e.into()),
                        Err(_) => return Err(PgError::Unanswered(HEARTBEAT_WAIT)),
                    }
                    continue;
                }
                payload = rx.recv() => {
                    let Some(payload) = payload else { return Ok(()) };
                    parse_payload(&payload, &mut change);
                    // Take whatever else is waiting: one query for all of it.
                    while let Ok(more) = rx.try_recv() {
                        parse_payload(&more, &mut change);
                    }
                }
                _ = backstop.tick() => change = Change::everything(),
            }
            if change.all_slots {
                cache.reload_slots(&client, None).await?;
            } else if !change.slots.is_empty() {
                change.slots.sort_unstable();
                change.slots.dedup();
                cache.reload_slots(&client, Some(&change.slots)).await?;
            }
            if change.channels {
                cache.reload_channels(&client).await?;
            }
            if change.devices {
                cache.reload_devices(&client).await?;
            }
            if change.staff {
                cache.reload_staff(&client).await?;
            }
            // After the re-reads: a device told re-fetches what they read
            // (a revoked device is refused by then).
            cache.changes.devices(change.notes);
        }
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_what_to_reread() {
        let mut c = Change::default();
        parse_payload("slots:2026-01-07T10:00,2026-01-07T10:30", &mut c);
        parse_payload("channels", &mut c);
        assert_eq!(c.slots.len(), 2);
        assert!(c.channels && !c.all_slots && !c.devices && !c.staff);
        let mut c = Change::default();
        parse_payload(DEVICES_CHANGED, &mut c);
        parse_payload(STAFF_CHANGED, &mut c);
        assert!(c.devices && c.staff && !c.channels && !c.all_slots);
        let mut c = Change::default();
        parse_payload("something new", &mut c);
        assert!(c.all_slots && c.channels && c.devices && c.staff);
    }

    #[test]
    fn payloads_name_what_devices_hear_and_a_backstop_tells_them_nothing() {
        let mut c = Change::default();
        let device = uuid::Uuid::now_v7();
        parse_payload(&topic_payload(DeviceTopic::Voided), &mut c);
        parse_payload(&format!("{LEASES_CHANGED}{device},not-a-uuid"), &mut c);
        parse_payload(DEVICES_CHANGED, &mut c);
        parse_payload("device:nonsense", &mut c);
        assert!(c.notes.topics.contains(DeviceTopic::Voided));
        assert!(c.notes.topics.contains(DeviceTopic::Keys));
        assert!(!c.notes.topics.contains(DeviceTopic::Staff));
        assert_eq!(c.notes.leases.len(), 1);
        assert!(c.notes.leases.contains(&device));
        assert!(Change::everything().notes.is_empty());
    }

    #[test]
    fn a_batch_touching_many_slots_asks_for_a_full_reread() {
        let day: jiff::civil::Date = "2026-01-07".parse().unwrap();
        let ids: Vec<SlotId> = (0..600).map(|m| SlotId::new(day, m).unwrap()).collect();
        assert_eq!(slots_payload(&ids), "slots:*");
        assert!(slots_payload(&ids[..3]).starts_with("slots:2026-01-07T"));
    }
}
