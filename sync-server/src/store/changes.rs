//! What changed since the push hubs last looked: told by each backend after
//! its commits, read by `push`.
//!
//! Two audiences read it: the public availability stream (which museum days
//! changed) and the device channel (which topics, which slots, whose leases).
//! Both are sets with bounds, never queues, so a writer's commit costs a lock
//! and an insert whatever the listeners do.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use jiff::civil::Date;
use tessera_core::api::events::DeviceTopic;
use tessera_core::slot::SlotId;
use tokio::sync::Notify;
use uuid::Uuid;

/// Slot ids kept per take; beyond this the device channel says "any slot"
/// (the wire type's own bound).
pub const MAX_SLOT_IDS: usize = 500;
/// Devices whose leases changed kept per take; beyond this every counter is
/// told (a mass revocation is rare and a spurious sync is cheap).
pub const MAX_LEASE_DEVICES: usize = 10_000;

/// The museum days whose availability changed, as the backends tell them
/// after each commit (SQLite's writer when it publishes, PostgreSQL's cache
/// when it re-reads what any process committed), and what the devices are
/// to hear of.
#[derive(Default)]
pub struct Changes {
    pending: Mutex<Pending>,
    wake: Notify,
}

/// What [`Changes::next`] hands over.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pending {
    pub dates: BTreeSet<Date>,
    /// Everything may have changed (a full re-read, a new catalogue).
    pub all: bool,
    pub devices: DeviceNotes,
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.all && self.dates.is_empty() && self.devices.is_empty()
    }
}

/// What the device channel is to tell: topics other than `slots` and
/// `leases`, the slots whose places changed, the devices whose leases
/// changed without them asking.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceNotes {
    pub topics: Topics,
    /// Slots whose places changed (bounded by [`MAX_SLOT_IDS`]).
    pub slots: BTreeSet<SlotId>,
    /// More slots changed than are kept: any slot may have.
    pub any_slot: bool,
    /// Devices whose leases changed (bounded by [`MAX_LEASE_DEVICES`]).
    pub leases: HashSet<Uuid>,
    /// More devices than are kept: every counter is told.
    pub every_lease: bool,
}

impl DeviceNotes {
    /// Everything may have changed (this process was deaf for a while):
    /// every device re-fetches all it keeps.
    pub fn everything() -> DeviceNotes {
        DeviceNotes {
            topics: Topics::of(&[
                DeviceTopic::Catalogue,
                DeviceTopic::Staff,
                DeviceTopic::Voided,
                DeviceTopic::Keys,
            ]),
            slots: BTreeSet::new(),
            any_slot: true,
            leases: HashSet::new(),
            every_lease: true,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
            && self.slots.is_empty()
            && !self.any_slot
            && self.leases.is_empty()
            && !self.every_lease
    }

    pub fn topic(&mut self, topic: DeviceTopic) {
        self.topics.insert(topic);
    }

    pub fn slots<'a>(&mut self, ids: impl IntoIterator<Item = &'a SlotId>) {
        for id in ids {
            if self.any_slot {
                return;
            }
            self.slots.insert(*id);
            if self.slots.len() > MAX_SLOT_IDS {
                self.slots.clear();
                self.any_slot = true;
            }
        }
    }

    pub fn leases_of(&mut self, device: Uuid) {
        if self.every_lease {
            return;
        }
        self.leases.insert(device);
        if self.leases.len() > MAX_LEASE_DEVICES {
            self.leases.clear();
            self.every_lease = true;
        }
    }

    /// Adds `other`'s notes to these.
    pub fn merge(&mut self, other: DeviceNotes) {
        self.topics.union(other.topics);
        if other.any_slot {
            self.slots.clear();
            self.any_slot = true;
        } else {
            self.slots(&other.slots);
        }
        if other.every_lease {
            self.leases.clear();
            self.every_lease = true;
        } else {
            for d in other.leases {
                self.leases_of(d);
            }
        }
    }
}

/// A set of device topics, one bit each.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Topics(u16);

impl Topics {
    pub const ALL: [DeviceTopic; 8] = [
        DeviceTopic::Hello,
        DeviceTopic::Slots,
        DeviceTopic::Leases,
        DeviceTopic::Catalogue,
        DeviceTopic::Staff,
        DeviceTopic::Voided,
        DeviceTopic::Keys,
        DeviceTopic::Policy,
    ];

    fn bit(topic: DeviceTopic) -> u16 {
        1 << (topic as u16)
    }

    pub fn insert(&mut self, topic: DeviceTopic) {
        self.0 |= Self::bit(topic);
    }

    pub fn union(&mut self, other: Topics) {
        self.0 |= other.0;
    }

    pub fn contains(self, topic: DeviceTopic) -> bool {
        self.0 & Self::bit(topic) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Keeps only the topics also in `other`.
    pub fn only(self, other: Topics) -> Topics {
        Topics(self.0 & other.0)
    }

    pub fn of(topics: &[DeviceTopic]) -> Topics {
        let mut t = Topics::default();
        for topic in topics {
            t.insert(*topic);
        }
        t
    }

    /// In the wire type's order (`hello` first).
    pub fn iter(self) -> impl Iterator<Item = DeviceTopic> {
        Self::ALL.into_iter().filter(move |t| self.contains(*t))
    }
}

impl Changes {
    /// These slots changed (their places: the public stream re-reads their
    /// days, counters hear `slots`). Backends tell only slots whose counts
    /// did change, so that a re-read that found nothing new is not pushed.
    pub fn slots<'a>(&self, ids: impl IntoIterator<Item = &'a SlotId> + Clone) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let before = p.dates.len();
        p.dates.extend(ids.clone().into_iter().map(|id| id.date));
        let any = ids.clone().into_iter().next().is_some();
        p.devices.slots(ids);
        if any || p.dates.len() != before {
            drop(p);
            self.wake.notify_one();
        }
    }

    /// Devices are to hear of these notes (told after the commit that made
    /// them).
    pub fn devices(&self, notes: DeviceNotes) {
        if notes.is_empty() {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.devices.merge(notes);
        drop(p);
        self.wake.notify_one();
    }

    /// Devices are to hear of `topic`.
    pub fn topic(&self, topic: DeviceTopic) {
        let mut notes = DeviceNotes::default();
        notes.topic(topic);
        self.devices(notes);
    }

    /// This day is to be looked at again (a new subscriber's first look).
    pub fn day(&self, date: Date) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.dates.insert(date) {
            drop(p);
            self.wake.notify_one();
        }
    }

    /// Anything may have changed.
    pub fn everything(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !p.all {
            p.all = true;
            drop(p);
            self.wake.notify_one();
        }
    }

    /// Takes what changed since the last take (maybe nothing).
    pub fn take(&self) -> Pending {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *p)
    }

    /// Waits until something is told. A change told while nobody waits
    /// leaves a permit, so a wait after it returns at once: call `take`
    /// after each wait and no change is ever left behind.
    pub async fn wait(&self) {
        self.wake.notified().await;
    }

    /// Waits for changes and takes them.
    pub async fn next(&self) -> Pending {
        loop {
            let p = self.take();
            if !p.is_empty() {
                return p;
            }
            self.wait().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_told_before_anyone_waits_are_kept_and_merged() {
        let c = Changes::default();
        let a: SlotId = "2026-12-16T10:00".parse().expect("slot");
        let b: SlotId = "2026-12-16T10:30".parse().expect("slot");
        let d: SlotId = "2026-12-17T10:00".parse().expect("slot");
        c.slots([&a, &b]);
        c.slots([&d]);
        let p = c.next().await;
        assert_eq!(p.dates.len(), 2);
        assert!(!p.all);
        c.everything();
        assert!(c.next().await.all);
    }

    #[tokio::test]
    async fn device_notes_are_merged_and_bounded() {
        let c = Changes::default();
        let day: Date = "2026-12-16".parse().expect("date");
        let ids: Vec<SlotId> = (0..600)
            .map(|m| SlotId::new(day, m).expect("slot"))
            .collect();
        c.slots(&ids[..3]);
        c.topic(DeviceTopic::Voided);
        let p = c.next().await;
        assert_eq!(p.devices.slots.len(), 3);
        assert!(p.devices.topics.contains(DeviceTopic::Voided));
        assert!(!p.devices.topics.contains(DeviceTopic::Keys));
        c.slots(&ids);
        let p = c.next().await;
        assert!(p.devices.any_slot && p.devices.slots.is_empty());
        let mut notes = DeviceNotes::default();
        notes.leases_of(Uuid::nil());
        c.devices(notes);
        assert_eq!(c.next().await.devices.leases.len(), 1);
    }
}
