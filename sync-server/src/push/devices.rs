//! The device channel's hub: one mailbox per connected device, holding the
//! set of topics (and slot ids) it has yet to hear of. Publishing merges into
//! each mailbox and wakes it, so it never waits for a device and never grows
//! with the number of changes: a device that stops reading just finds its
//! pending set coalesced when it reads again.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tessera_core::api::devices::Role;
use tessera_core::api::events::{DeviceEvent, DeviceTopic};
use tessera_core::slot::SlotId;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::{DeviceInfo, DeviceNotes, Topics, MAX_SLOT_IDS};

/// What each role hears of (besides `hello`, which every connection gets
/// first, and `leases`, which a counter hears of its own leases only).
fn topics_of(role: Role) -> Topics {
    match role {
        Role::Counter => Topics::of(&[
            DeviceTopic::Slots,
            DeviceTopic::Catalogue,
            DeviceTopic::Staff,
            DeviceTopic::Voided,
            DeviceTopic::Keys,
            DeviceTopic::Policy,
        ]),
        Role::Gate => Topics::of(&[
            DeviceTopic::Voided,
            DeviceTopic::Keys,
            DeviceTopic::Policy,
            DeviceTopic::Catalogue,
        ]),
        Role::Supervisor => Topics::of(&[DeviceTopic::Slots]),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "too many connected devices ({0}); try again later (syncing on its own clock still works)"
    )]
    Full(usize),
}

#[derive(Default)]
struct Waiting {
    topics: Topics,
    slots: BTreeSet<SlotId>,
    any_slot: bool,
}

/// One connection's pending set and its wake-up.
pub struct Mailbox {
    waiting: Mutex<Waiting>,
    wake: Notify,
    /// Replaced by a newer connection of the same device, or the server is
    /// stopping: the stream ends.
    closed: AtomicBool,
}

impl Mailbox {
    fn new() -> Mailbox {
        let mut waiting = Waiting::default();
        waiting.topics.insert(DeviceTopic::Hello);
        Mailbox {
            waiting: Mutex::new(waiting),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn add(&self, topics: Topics, notes: &DeviceNotes) {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let before = w.topics;
        w.topics.union(topics);
        if topics.contains(DeviceTopic::Slots) && !w.any_slot {
            if notes.any_slot {
                w.slots.clear();
                w.any_slot = true;
            } else {
                w.slots.extend(notes.slots.iter().copied());
                if w.slots.len() > MAX_SLOT_IDS {
                    w.slots.clear();
                    w.any_slot = true;
                }
            }
        }
        let changed = w.topics != before || topics.contains(DeviceTopic::Slots);
        drop(w);
        if changed {
            self.wake.notify_one();
        }
    }

    /// Takes what is pending, one event per topic (`hello` first); waits
    /// while nothing is. `None` once the connection is closed.
    pub async fn next(&self) -> Option<Vec<DeviceEvent>> {
        loop {
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            let taken = {
                let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                std::mem::take(&mut *w)
            };
            if !taken.topics.is_empty() {
                return Some(
                    taken
                        .topics
                        .iter()
                        .map(|topic| DeviceEvent {
                            topic,
                            slots: if topic == DeviceTopic::Slots && !taken.any_slot {
                                taken.slots.iter().copied().collect()
                            } else {
                                Vec::new()
                            },
                        })
                        .collect(),
                );
            }
            // A wake-up given while nobody waits is kept (one permit), so
            // nothing added between the take and here is missed.
            self.wake.notified().await;
        }
    }
}

struct Entry {
    role: Role,
    connection: u64,
    mailbox: Arc<Mailbox>,
}

/// The device hub of one server process.
pub struct DeviceHub {
    max_devices: usize,
    next_connection: AtomicU64,
    devices: Mutex<HashMap<Uuid, Entry>>,
}

/// A device's connection: its mailbox; dropping it forgets the device
/// (unless a newer connection of the same device took its place).
pub struct Connection {
    pub mailbox: Arc<Mailbox>,
    device: Uuid,
    connection: u64,
    hub: Arc<DeviceHub>,
}

impl Connection {
    /// The device this connection is of.
    pub fn device(&self) -> Uuid {
        self.device
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut devices = self.hub.lock();
        if devices
            .get(&self.device)
            .is_some_and(|e| e.connection == self.connection)
        {
            devices.remove(&self.device);
        }
        metrics::gauge!("tessera_push_devices").set(devices.len() as f64);
    }
}

impl DeviceHub {
    pub fn new(max_devices: usize) -> DeviceHub {
        DeviceHub {
            max_devices,
            next_connection: AtomicU64::new(1),
            devices: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects `device`; its first event is `hello`. A connection the same
    /// device already had is closed (its stream ends): a device that
    /// reconnects after a network change must not be counted twice.
    pub fn connect(self: &Arc<Self>, device: &DeviceInfo) -> Result<Connection, ConnectError> {
        let id = device.device_id.0;
        let mut devices = self.lock();
        if !devices.contains_key(&id) && devices.len() >= self.max_devices {
            return Err(ConnectError::Full(self.max_devices));
        }
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::new());
        let old = devices.insert(
            id,
            Entry {
                role: device.role,
                connection,
                mailbox: mailbox.clone(),
            },
        );
        metrics::gauge!("tessera_push_devices").set(devices.len() as f64);
        drop(devices);
        if let Some(old) = old {
            old.mailbox.close();
        }
        Ok(Connection {
            mailbox,
            device: id,
            connection,
            hub: self.clone(),
        })
    }

    /// Adds what `notes` says to each connected device it concerns, by
    /// role. Never waits for a device.
    pub fn publish(&self, notes: &DeviceNotes) {
        if notes.is_empty() {
            return;
        }
        let mut told = notes.topics;
        if !notes.slots.is_empty() || notes.any_slot {
            told.insert(DeviceTopic::Slots);
        }
        let devices = self.lock();
        for (id, entry) in devices.iter() {
            let mut topics = told.only(topics_of(entry.role));
            if entry.role == Role::Counter && (notes.every_lease || notes.leases.contains(id)) {
                topics.insert(DeviceTopic::Leases);
            }
            if !topics.is_empty() {
                entry.mailbox.add(topics, notes);
            }
        }
    }

    /// Ends every stream (the server is stopping).
    pub fn close(&self) {
        let mut devices = self.lock();
        for (_, entry) in devices.drain() {
            entry.mailbox.close();
        }
        metrics::gauge!("tessera_push_devices").set(0.0);
    }

    pub fn connected(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_core::ids::DeviceId;

    fn device(role: Role) -> DeviceInfo {
        DeviceInfo {
            device_id: DeviceId(tessera_core::ids::new_id()),
            role,
            name: "test".into(),
        }
    }

    fn topics(events: &[DeviceEvent]) -> Vec<DeviceTopic> {
        events.iter().map(|e| e.topic).collect()
    }

    fn pending(c: &Connection) -> Vec<DeviceEvent> {
        // Something is pending in every use below: `next` returns at once.
        futures_util::FutureExt::now_or_never(c.mailbox.next())
            .flatten()
            .unwrap_or_default()
    }

    fn slot(minute: u16) -> SlotId {
        SlotId::new("2026-12-16".parse().expect("date"), minute).expect("slot")
    }

    #[test]
    fn each_role_hears_its_topics_and_a_counter_only_its_own_leases() {
        let hub = Arc::new(DeviceHub::new(10));
        let a = device(Role::Counter);
        let ca = hub.connect(&a).expect("a");
        let cb = hub.connect(&device(Role::Counter)).expect("b");
        let gate = hub.connect(&device(Role::Gate)).expect("gate");
        let sup = hub.connect(&device(Role::Supervisor)).expect("supervisor");
        for c in [&ca, &cb, &gate, &sup] {
            assert_eq!(topics(&pending(c)), vec![DeviceTopic::Hello]);
        }
        let mut notes = DeviceNotes::default();
        notes.slots([&slot(600)]);
        notes.topic(DeviceTopic::Voided);
        notes.topic(DeviceTopic::Staff);
        notes.leases_of(a.device_id.0);
        hub.publish(&notes);
        let got = pending(&ca);
        assert_eq!(
            topics(&got),
            vec![
                DeviceTopic::Slots,
                DeviceTopic::Leases,
                DeviceTopic::Staff,
                DeviceTopic::Voided
            ]
        );
        assert_eq!(got[0].slots, vec![slot(600)]);
        assert_eq!(
            topics(&pending(&cb)),
            vec![DeviceTopic::Slots, DeviceTopic::Staff, DeviceTopic::Voided]
        );
        assert_eq!(topics(&pending(&gate)), vec![DeviceTopic::Voided]);
        assert_eq!(topics(&pending(&sup)), vec![DeviceTopic::Slots]);
    }

    #[test]
    fn a_device_that_does_not_read_gets_its_changes_coalesced() {
        let hub = Arc::new(DeviceHub::new(10));
        let c = hub.connect(&device(Role::Counter)).expect("c");
        for m in 0..50 {
            let mut notes = DeviceNotes::default();
            notes.slots([&slot(600 + m)]);
            notes.topic(DeviceTopic::Voided);
            hub.publish(&notes);
        }
        let got = pending(&c);
        assert_eq!(
            topics(&got),
            vec![DeviceTopic::Hello, DeviceTopic::Slots, DeviceTopic::Voided]
        );
        assert_eq!(got[1].slots.len(), 50);
        for m in 0..(MAX_SLOT_IDS as u16 + 1) {
            let mut notes = DeviceNotes::default();
            notes.slots([&slot(m)]);
            hub.publish(&notes);
        }
        let got = pending(&c);
        assert_eq!(topics(&got), vec![DeviceTopic::Slots]);
        assert!(got[0].slots.is_empty(), "too many: any slot");
    }

    #[test]
    fn a_new_connection_of_a_device_closes_the_old_one_and_the_hub_is_bounded() {
        let hub = Arc::new(DeviceHub::new(2));
        let d = device(Role::Gate);
        let first = hub.connect(&d).expect("first");
        let second = hub.connect(&d).expect("second");
        assert_eq!(
            futures_util::FutureExt::now_or_never(first.mailbox.next()),
            Some(None),
            "the first stream ends"
        );
        assert_eq!(hub.connected(), 1);
        drop(first);
        assert_eq!(
            hub.connected(),
            1,
            "dropping the replaced one keeps the new one"
        );
        let _other = hub.connect(&device(Role::Counter)).expect("other");
        assert!(matches!(
            hub.connect(&device(Role::Counter)),
            Err(ConnectError::Full(2))
        ));
        // The same device again is a replacement, not one more.
        let _third = hub.connect(&d).expect("replacement at the bound");
        drop(second);
        hub.close();
        assert_eq!(hub.connected(), 0);
    }
}
