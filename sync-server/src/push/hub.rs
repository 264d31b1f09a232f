//! Events per museum day, numbered, buffered per subscriber.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::civil::Date;
use serde::Serialize;
use tessera_core::api::online::{Availability, SlotAvailability};
use tessera_core::slot::SlotId;
use tokio::sync::mpsc;

use crate::store::{Changes, Store};

/// Recent events kept per day for reconnects (`Last-Event-ID`).
const RECENT: usize = 256;
/// How long a day nobody listens to any more is kept fresh, so that a page
/// reconnecting after a dropped connection (a phone changing networks, a
/// reload) resumes where it stopped instead of starting over.
const KEEP_IDLE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The whole day: a first connection, or one that could not resume.
    Snapshot,
    /// The lines of the day that changed.
    Changed,
}

/// One event as sent: its number and its JSON body, serialised once for
/// every subscriber.
#[derive(Clone, Debug)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
    pub data: Arc<str>,
}

/// Where a reconnecting subscriber says it stopped (`Last-Event-ID`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    pub epoch: u64,
    pub seq: u64,
    /// The day the id was given for: a point in one day's stream is no
    /// point in another's (a client that changed days without dropping the
    /// id gets the new day whole).
    pub day: Date,
}

impl Resume {
    /// `EPOCH-SEQ-YYYYMMDD` (hex, decimal, the day); anything else is no
    /// resume point.
    pub fn parse(text: &str) -> Option<Resume> {
        let mut parts = text.trim().split('-');
        let (epoch, seq, day) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || epoch.is_empty()
            || epoch.len() > 16
            || seq.is_empty()
            || seq.len() > 20
            || day.len() != 8
            || !day.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let (y, m, d) = (&day[..4], &day[4..6], &day[6..]);
        Some(Resume {
            epoch: u64::from_str_radix(epoch, 16).ok()?,
            seq: seq.parse().ok()?,
            day: Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?).ok()?,
        })
    }
}

/// A subscriber's side: what to send first, then the live events. When the
/// live channel ends and `lagged` is set, the subscriber was too slow and
/// must be told to resync.
pub struct Subscription {
    pub first: Vec<Event>,
    pub live: mpsc::Receiver<Event>,
    pub lagged: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("too many listeners ({0}); try again later or poll /v1/availability")]
    Full(usize),
}

struct Subscriber {
    tx: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

#[derive(Default)]
struct Day {
    /// What the subscribers were last told, line by line.
    lines: BTreeMap<SlotId, SlotAvailability>,
    /// The whole day as last told (for snapshots).
    head: Option<Availability>,
    recent: VecDeque<Event>,
    /// The hub's number when this day was first listened to: a resume
    /// point before it may have missed events nobody kept.
    since: u64,
    /// The number of the newest event of this day dropped from `recent`.
    forgotten: u64,
    subscribers: Vec<Subscriber>,
    /// Since when nobody listens (kept fresh for `KEEP_IDLE` more).
    idle_since: Option<Instant>,
}

#[derive(Default)]
struct State {
    seq: u64,
    days: HashMap<Date, Day>,
    subscribers: usize,
}

/// The push hub of one server process.
pub struct Hub {
    epoch: u64,
    /// Events a subscriber may have waiting before it is dropped.
    buffer: usize,
    max_subscribers: usize,
    state: Mutex<State>,
}

#[derive(Serialize)]
struct ChangedBody<'a> {
    date: Date,
    slots: &'a [SlotAvailability],
}

impl Hub {
    pub fn new(buffer: usize, max_subscribers: usize) -> Hub {
        // A new number per process start: an id from before a restart, or
        // from another process, can never be taken for one of ours.
        // (a v7 id's last eight bytes are random).
        let id = uuid::Uuid::now_v7();
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&id.as_bytes()[8..]);
        let epoch = u64::from_le_bytes(tail);
        Hub {
            epoch,
            buffer: buffer.max(1),
            max_subscribers,
            state: Mutex::new(State::default()),
        }
    }

    /// The `id:` an event goes out with.
    pub fn event_id(&self, seq: u64, day: Date) -> String {
        format!("{:x}-{seq}-{}", self.epoch, day.strftime("%Y%m%d"))
    }

    /// Subscribes to `date`. `fresh` is the day as just read from the store,
    /// used if nobody listens to it yet (and then looked at again through
    /// `changes`, so a commit between that read and now is not missed).
    pub fn subscribe(
        &self,
        date: Date,
        fresh: Availability,
        resume: Option<Resume>,
        changes: &Changes,
    ) -> Result<Subscription, SubscribeError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.subscribers >= self.max_subscribers {
            // Count only those still connected before refusing.
            state.prune(Instant::now());
        }
        if state.subscribers >= self.max_subscribers {
            return Err(SubscribeError::Full(self.max_subscribers));
        }
        let seq = state.seq;
        let new_day = !state.days.contains_key(&date);
        let day = state.days.entry(date).or_default();
        if new_day {
            day.lines = fresh.slots.iter().map(|l| (l.slot_id, l.clone())).collect();
            day.head = Some(fresh);
            day.since = seq;
            changes.day(date);
        }
        // Resumed only if every event of this day after the point is still
        // kept: same process, a point this hub gave, after the day was first
        // listened to and not before what was forgotten.
        let resumed: Option<Vec<Event>> = resume
            .filter(|r| {
                !new_day
                    && r.day == date
                    && r.epoch == self.epoch
                    && r.seq <= seq
                    && r.seq >= day.since
                    && r.seq >= day.forgotten
            })
            .map(|r| {
                day.recent
                    .iter()
                    .filter(|e| e.seq > r.seq)
                    .cloned()
                    .collect()
            });
        let first = match resumed {
            Some(events) => events,
            None => vec![Event {
                seq,
                kind: EventKind::Snapshot,
                data: json(&day.head),
            }],
        };
        let (tx, live) = mpsc::channel(self.buffer);
        let lagged = Arc::new(AtomicBool::new(false));
        day.idle_since = None;
        day.subscribers.push(Subscriber {
            tx,
            lagged: lagged.clone(),
        });
        state.subscribers += 1;
        metrics::gauge!("tessera_push_subscribers").set(state.subscribers as f64);
        Ok(Subscription {
            first,
            live,
            lagged,
        })
    }

    /// Ends every stream (the server is stopping): each subscriber's
    /// channel closes, and its stream ends after what it already has.
    pub fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.days.clear();
        state.subscribers = 0;
        metrics::gauge!("tessera_push_subscribers").set(0.0);
    }

    /// The days someone listens to.
    pub fn days(&self) -> Vec<Date> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.days.keys().copied().collect()
    }

    /// Tells `date`'s subscribers what changed in `fresh` since they were
    /// last told, if anything. Never waits for a subscriber: one whose
    /// buffer is full is dropped (and told to resync when its stream ends).
    pub fn publish(&self, fresh: Availability) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        let date = fresh.date;
        let Some(day) = state.days.get_mut(&date) else {
            return;
        };
        let changed: Vec<SlotAvailability> = fresh
            .slots
            .iter()
            .filter(|l| day.lines.get(&l.slot_id) != Some(*l))
            .cloned()
            .collect();
        if changed.is_empty() && day.head.as_ref().is_some_and(|h| h.closed == fresh.closed) {
            return;
        }
        state.seq += 1;
        let event = Event {
            seq: state.seq,
            kind: EventKind::Changed,
            data: json(&ChangedBody {
                date: fresh.date,
                slots: &changed,
            }),
        };
        for l in changed {
            day.lines.insert(l.slot_id, l);
        }
        day.head = Some(fresh);
        if day.recent.len() == RECENT {
            if let Some(old) = day.recent.pop_front() {
                day.forgotten = old.seq;
            }
        }
        day.recent.push_back(event.clone());
        let before = day.subscribers.len();
        day.subscribers
            .retain(|s| match s.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.lagged.store(true, Ordering::Relaxed);
                    metrics::counter!("tessera_push_dropped_total").increment(1);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        let gone = before - day.subscribers.len();
        if day.subscribers.is_empty() && day.idle_since.is_none() {
            day.idle_since = Some(Instant::now());
        }
        state.subscribers -= gone.min(state.subscribers);
        metrics::gauge!("tessera_push_subscribers").set(state.subscribers as f64);
    }

    /// Forgets subscribers that went away, and the days nobody has listened
    /// to for `KEEP_IDLE` (a later subscriber of such a day starts anew).
    pub fn prune(&self) {
        self.prune_at(Instant::now());
    }

    fn prune_at(&self, now: Instant) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        guard.prune(now);
    }
}

impl State {
    fn prune(&mut self, now: Instant) {
        let state = self;
        let mut gone = 0;
        state.days.retain(|_, day| {
            let before = day.subscribers.len();
            day.subscribers.retain(|s| !s.tx.is_closed());
            gone += before - day.subscribers.len();
            if day.subscribers.is_empty() {
                let since = *day.idle_since.get_or_insert(now);
                return now.saturating_duration_since(since) < KEEP_IDLE;
            }
            true
        });
        state.subscribers -= gone.min(state.subscribers);
        metrics::gauge!("tessera_push_subscribers").set(state.subscribers as f64);
    }
}

fn json(value: &impl Serialize) -> Arc<str> {
    // Availability and its lines always serialise; an empty object would
    // only ever be sent if that stopped being true.
    serde_json::to_string(value)
        .unwrap_or_else(|_| "{}".into())
        .into()
}

/// Keeps the hub's days fresh: waits for changes, re-reads each changed day
/// someone listens to, publishes; hands the devices' notes to their hub.
/// Runs until the process ends.
pub async fn run<S: Store>(
    hub: Arc<Hub>,
    devices: Arc<super::DeviceHub>,
    store: Arc<S>,
    changes: Arc<Changes>,
) {
    // Listeners that left are noticed at the next change, or at the latest
    // at this tick on a quiet day.
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = changes.wait() => {}
            _ = tick.tick() => {}
        }
        hub.prune();
        let pending = changes.take();
        devices.publish(&pending.devices);
        let days = hub.days();
        for date in days {
            if !pending.all && !pending.dates.contains(&date) {
                continue;
            }
            match store.availability(date).await {
                Ok(fresh) => hub.publish(fresh),
                Err(e) => tracing::warn!(%date, error = %e, "push: reading availability failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn day(available: &[u32]) -> Availability {
        let date: Date = "2026-12-16".parse().expect("date");
        Availability {
            date,
            museum: "Test".into(),
            time_zone: "Europe/Paris".into(),
            closed: false,
            slots: available
                .iter()
                .enumerate()
                .map(|(i, a)| SlotAvailability {
                    slot_id: SlotId::new(date, 600 + 30 * i as u16).expect("slot"),
                    starts_at: Timestamp::UNIX_EPOCH,
                    ends_at: Timestamp::UNIX_EPOCH,
                    capacity: 100,
                    available: *a,
                    sold: 100 - a,
                    past: false,
                })
                .collect(),
        }
    }

    fn lines(e: &Event) -> Vec<(String, u64)> {
        let v: serde_json::Value = serde_json::from_str(&e.data).expect("json");
        v["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .map(|l| {
                (
                    l["slot_id"].as_str().unwrap_or_default().to_string(),
                    l["available"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn a_subscriber_gets_the_day_then_each_change_once_in_order() {
        let hub = Hub::new(16, 10);
        let changes = Changes::default();
        let date = day(&[]).date;
        let mut sub = hub
            .subscribe(date, day(&[10, 20]), None, &changes)
            .expect("subscribe");
        assert_eq!(sub.first.len(), 1);
        assert_eq!(sub.first[0].kind, EventKind::Snapshot);
        hub.publish(day(&[10, 20])); // nothing changed: no event
        hub.publish(day(&[9, 20]));
        hub.publish(day(&[9, 18]));
        let a = sub.live.try_recv().expect("first change");
        let b = sub.live.try_recv().expect("second change");
        assert!(sub.live.try_recv().is_err(), "one event per change");
        assert!(a.seq < b.seq);
        assert_eq!(lines(&a), vec![("2026-12-16T10:00".into(), 9)]);
        assert_eq!(lines(&b), vec![("2026-12-16T10:30".into(), 18)]);
    }

    #[test]
    fn a_reconnect_resumes_after_its_last_event_and_a_foreign_id_gets_the_day() {
        let hub = Hub::new(16, 10);
        let changes = Changes::default();
        let date = day(&[]).date;
        let mut keep = hub
            .subscribe(date, day(&[10, 20]), None, &changes)
            .expect("subscribe");
        hub.publish(day(&[9, 20]));
        let seen = keep.live.try_recv().expect("change");
        hub.publish(day(&[8, 20]));
        hub.publish(day(&[8, 19]));
        let id = hub.event_id(seen.seq, date);
        let resumed = hub
            .subscribe(date, day(&[8, 19]), Resume::parse(&id), &changes)
            .expect("resume");
        let got: Vec<Vec<(String, u64)>> = resumed.first.iter().map(lines).collect();
        assert_eq!(
            got,
            vec![
                vec![("2026-12-16T10:00".to_string(), 8)],
                vec![("2026-12-16T10:30".to_string(), 19)]
            ]
        );
        // Another process's (or a previous run's) id: the whole day again.
        let foreign = format!(
            "{:x}-{}-{}",
            hub.epoch.wrapping_add(1),
            seen.seq,
            date.strftime("%Y%m%d")
        );
        let other = hub
            .subscribe(date, day(&[8, 19]), Resume::parse(&foreign), &changes)
            .expect("subscribe");
        assert_eq!(other.first.len(), 1);
        assert_eq!(other.first[0].kind, EventKind::Snapshot);
        // This process's id, but given for another day: that day whole.
        let elsewhere = hub.event_id(seen.seq, date.tomorrow().expect("a day"));
        let moved = hub
            .subscribe(date, day(&[8, 19]), Resume::parse(&elsewhere), &changes)
            .expect("subscribe");
        assert_eq!(moved.first.len(), 1);
        assert_eq!(moved.first[0].kind, EventKind::Snapshot);
        for bad in [
            "",
            "x",
            "-1",
            "zz-1-20261216",
            "1--20261216",
            "1-x-20261216",
            "1-1",
            "1-1-2026121",
            "1-1-20261340",
            "1-1-2026-12-16",
            "11111111111111111-1-20261216",
        ] {
            assert_eq!(Resume::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_slow_subscriber_is_dropped_and_told_without_holding_up_the_others() {
        let hub = Hub::new(4, 10);
        let changes = Changes::default();
        let date = day(&[]).date;
        let slow = hub
            .subscribe(date, day(&[100]), None, &changes)
            .expect("slow");
        let mut fast = hub
            .subscribe(date, day(&[100]), None, &changes)
            .expect("fast");
        let mut received = 0;
        for left in (0..100).rev() {
            // Never waits: the slow one's buffer fills and it is dropped.
            hub.publish(day(&[left]));
            while fast.live.try_recv().is_ok() {
                received += 1;
            }
        }
        assert_eq!(received, 100, "the reader that keeps up gets every event");
        assert!(slow.lagged.load(Ordering::Relaxed), "the slow one is told");
        let mut slow_live = slow.live;
        let mut buffered = 0;
        while slow_live.try_recv().is_ok() {
            buffered += 1;
        }
        assert_eq!(buffered, 4, "what was buffered before the drop");
        assert!(slow_live.is_closed());
    }

    #[test]
    fn a_day_nobody_listens_to_is_kept_for_a_reconnect_then_forgotten() {
        let hub = Hub::new(4, 10);
        let changes = Changes::default();
        let date = day(&[]).date;
        let mut sub = hub.subscribe(date, day(&[5]), None, &changes).expect("sub");
        hub.publish(day(&[4]));
        let seen = sub.live.try_recv().expect("change");
        drop(sub);
        hub.prune();
        hub.publish(day(&[3]));
        let back = hub
            .subscribe(
                date,
                day(&[3]),
                Resume::parse(&hub.event_id(seen.seq, date)),
                &changes,
            )
            .expect("resume");
        assert_eq!(back.first.len(), 1);
        assert_eq!(back.first[0].kind, EventKind::Changed);
        drop(back);
        hub.prune_at(Instant::now());
        hub.prune_at(Instant::now() + KEEP_IDLE + Duration::from_secs(1));
        assert!(hub.days().is_empty(), "forgotten after {KEEP_IDLE:?}");
    }

    #[test]
    fn subscribers_beyond_the_bound_are_refused() {
        let hub = Hub::new(4, 2);
        let changes = Changes::default();
        let date = day(&[]).date;
        let _a = hub.subscribe(date, day(&[1]), None, &changes).expect("a");
        let _b = hub.subscribe(date, day(&[1]), None, &changes).expect("b");
        assert!(matches!(
            hub.subscribe(date, day(&[1]), None, &changes),
            Err(SubscribeError::Full(2))
        ));
    }
}
