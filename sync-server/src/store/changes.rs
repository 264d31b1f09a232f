//! What changed since the push hub last looked: told by each backend after
//! its commits, read by `push`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use jiff::civil::Date;
use tessera_core::slot::SlotId;
use tokio::sync::Notify;

/// The museum days whose availability changed, as the backends tell them
/// after each commit (SQLite's writer when it publishes, PostgreSQL's cache
/// when it re-reads what any process committed).
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
}

impl Pending {
    fn is_empty(&self) -> bool {
        !self.all && self.dates.is_empty()
    }
}

impl Changes {
    /// These slots changed.
    pub fn slots<'a>(&self, ids: impl IntoIterator<Item = &'a SlotId>) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let before = p.dates.len();
        p.dates.extend(ids.into_iter().map(|id| id.date));
        if p.dates.len() != before {
            drop(p);
            self.wake.notify_one();
        }
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
}
