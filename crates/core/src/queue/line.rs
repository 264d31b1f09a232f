//! One waiting room's line: places, who is present, who is let in.
//!
//! A visitor who stops asking for their place (a closed tab, a lost
//! connection) is *away*: not counted ahead of anyone and not let in, so
//! the line moves for those who are there. Coming back with the same token
//! restores the place: the rank is theirs. An admitted visitor who does not
//! book within the window loses it, and the next present visitor goes in.

use std::collections::{BTreeSet, HashMap, HashSet};

use uuid::Uuid;

use super::pace::{Pace, PaceRules};
use super::Rank;

/// A place away for this many times `away_after_ms` ends.
const GONE_AFTER_AWAYS: i64 = 20;
/// Holds one pass may make: the booking, and a retry or two after a
/// checkout that failed. A retry with the same Idempotency-Key is no new
/// hold and always reaches its first answer.
pub const HOLDS_PER_PASS: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LineRules {
    pub opens_at_ms: i64,
    /// How long an admitted visitor has to start booking.
    pub window_ms: i64,
    /// Silence after which a waiting visitor counts as away.
    pub away_after_ms: i64,
    /// Places one client (an address) may hold at once.
    pub max_per_client: u32,
    /// Places in the line at once, to bound memory.
    pub max_places: usize,
    pub pace: PaceRules,
}

/// What the sale has left, as the room's owner reads it before a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Supply {
    /// Places neither sold nor held nor leased, over the sale's days.
    pub places_left: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Waiting,
    Admitted {
        until_ms: i64,
        booked: bool,
    },
    /// Window over or left: the entry only remembers its session.
    Done,
}

#[derive(Clone, Debug)]
struct Entry {
    rank: Rank,
    session: [u8; 16],
    client: u128,
    seen_ms: i64,
    state: State,
    /// Idempotency keys (hashed) of the holds made with this entry's pass.
    holds: Vec<[u8; 8]>,
}

/// Where the line stands for one visitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaceView {
    /// The line opens at `opens_at_ms`; everyone present then is drawn.
    BeforeOpening {
        waiting: u32,
    },
    Waiting {
        /// Visitors present ahead.
        ahead: u32,
        waiting: u32,
        eta_s: Option<u32>,
        eta_error_s: Option<u32>,
    },
    Admitted {
        until_ms: i64,
    },
    /// Everything is sold, held or leased; the place is kept in case
    /// places come back.
    SoldOut {
        ahead: u32,
        waiting: u32,
    },
    /// The window passed without a booking, or the visitor left.
    Over,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("this place belongs to another browser session")]
    NotYours,
    #[error("no such place in this line")]
    Unknown,
    #[error("this client already holds {0} places in the line")]
    ClientCap(u32),
    #[error("the line is full")]
    Full,
}

/// Why a pass cannot make a hold now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    #[error("the time to book with this pass is over")]
    Expired,
    #[error("this pass was given up or its place has ended")]
    Over,
    #[error("this pass has made its {HOLDS_PER_PASS} holds")]
    Used,
    #[error("this place has not been let in yet")]
    NotAdmitted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    BeforeOpening,
    Open,
    SoldOut,
}

pub struct Line {
    rules: LineRules,
    entries: HashMap<Uuid, Entry>,
    by_session: HashMap<[u8; 16], Uuid>,
    /// Entries that ended and were forgotten: their tokens never come back.
    finished: HashSet<Uuid>,
    /// Entries not ended (waiting, away or let in).
    live: usize,
    per_client: HashMap<u128, u32>,
    /// Present waiting places, in the order they go in.
    present: BTreeSet<(Rank, Uuid)>,
    /// `present`'s ranks as of the last tick, for positions by bisection.
    ranks: Vec<Rank>,
    in_shop: u32,
    last_arrival: (i64, u32),
    phase: Phase,
    pace: Pace,
    admitted_total: u64,
}

impl Line {
    pub fn new(rules: LineRules) -> Line {
        Line {
            pace: Pace::new(rules.pace),
            rules,
            entries: HashMap::new(),
            by_session: HashMap::new(),
            finished: HashSet::new(),
            live: 0,
            per_client: HashMap::new(),
            present: BTreeSet::new(),
            ranks: Vec::new(),
            in_shop: 0,
            last_arrival: (i64::MIN, 0),
            phase: Phase::BeforeOpening,
            admitted_total: 0,
        }
    }

    pub fn rules(&self) -> LineRules {
        self.rules
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn waiting(&self) -> u32 {
        u32::try_from(self.present.len()).unwrap_or(u32::MAX)
    }

    pub fn in_shop(&self) -> u32 {
        self.in_shop
    }

    pub fn admitted_total(&self) -> u64 {
        self.admitted_total
    }

    /// Visitors let in per second lately.
    pub fn rate_per_s(&mut self, now_ms: i64) -> f64 {
        self.pace.rate_per_s(now_ms)
    }

    /// The session's live place, if it has one.
    pub fn place_of(&self, session: &[u8; 16]) -> Option<(Uuid, Rank)> {
        let id = self.by_session.get(session)?;
        let e = self.entries.get(id)?;
        (e.state != State::Done).then_some((*id, e.rank))
    }

    /// A new place for a session that has none: a draw before the opening,
    /// the arrival order after it. `random` from a cryptographic RNG.
    pub fn join(
        &mut self,
        now_ms: i64,
        entry: Uuid,
        session: [u8; 16],
        client: u128,
        random: u64,
    ) -> Result<Rank, LineError> {
        if let Some((_, rank)) = self.place_of(&session) {
            return Ok(rank);
        }
        let rank = if now_ms < self.rules.opens_at_ms {
            Rank::drawn(random)
        } else {
            let since = now_ms - self.rules.opens_at_ms;
            let seq = if self.last_arrival.0 == since {
                self.last_arrival.1 + 1
            } else {
                0
            };
            self.last_arrival = (since, seq);
            Rank::arrived(since, seq)
        };
        self.insert(now_ms, entry, rank, session, client)?;
        Ok(rank)
    }

    /// A place whose token came back while the line does not know it (the
    /// server restarted): it takes its rank again.
    pub fn restore(
        &mut self,
        now_ms: i64,
        entry: Uuid,
        rank: Rank,
        session: [u8; 16],
        client: u128,
    ) -> Result<(), LineError> {
        if self.entries.contains_key(&entry) {
            return Ok(());
        }
        // An ended place stays ended; a session has one place.
        if self.finished.contains(&entry) || self.place_of(&session).is_some() {
            return Err(LineError::Unknown);
        }
        self.insert(now_ms, entry, rank, session, client)
    }

    /// A pass is about to make a hold with `key` (its Idempotency-Key,
    /// hashed). `Ok(true)`: a new hold, counted; `Ok(false)`: a retry of
    /// one made before, which the store answers as it did the first time.
    /// A pass this process does not know (made before a restart) is taken
    /// at its word until `until_ms`.
    pub fn use_pass(
        &mut self,
        now_ms: i64,
        entry: Uuid,
        session: [u8; 16],
        until_ms: i64,
        key: [u8; 8],
    ) -> Result<bool, PassError> {
        if self.finished.contains(&entry) {
            return Err(PassError::Over);
        }
        if !self.entries.contains_key(&entry) {
            // Let in before a restart: it counts as live like any place.
            self.live += 1;
        }
        let e = self.entries.entry(entry).or_insert_with(|| Entry {
            rank: Rank(u64::MAX),
            session,
            client: 0,
            seen_ms: now_ms,
            state: State::Admitted {
                until_ms,
                booked: true,
            },
            holds: Vec::new(),
        });
        if e.holds.contains(&key) {
            return Ok(false);
        }
        match e.state {
            State::Waiting => Err(PassError::NotAdmitted),
            State::Done => Err(PassError::Over),
            State::Admitted { until_ms, .. } if now_ms >= until_ms => Err(PassError::Expired),
            State::Admitted { .. } if e.holds.len() >= HOLDS_PER_PASS => Err(PassError::Used),
            State::Admitted { .. } => {
                e.holds.push(key);
                Ok(true)
            }
        }
    }

    /// The hold `key` was refused: it does not count against the pass.
    pub fn pass_unused(&mut self, entry: Uuid, key: [u8; 8]) {
        if let Some(e) = self.entries.get_mut(&entry) {
            e.holds.retain(|k| *k != key);
        }
    }

    fn insert(
        &mut self,
        now_ms: i64,
        entry: Uuid,
        rank: Rank,
        session: [u8; 16],
        client: u128,
    ) -> Result<(), LineError> {
        if self.live >= self.rules.max_places {
            return Err(LineError::Full);
        }
        let held = self.per_client.get(&client).copied().unwrap_or(0);
        if held >= self.rules.max_per_client {
            return Err(LineError::ClientCap(held));
        }
        self.per_client.insert(client, held + 1);
        self.entries.insert(
            entry,
            Entry {
                rank,
                session,
                client,
                seen_ms: now_ms,
                state: State::Waiting,
                holds: Vec::new(),
            },
        );
        self.live += 1;
        self.by_session.insert(session, entry);
        self.present.insert((rank, entry));
        Ok(())
    }

    /// The visitor asks where they stand: they are present.
    pub fn poll(
        &mut self,
        now_ms: i64,
        entry: Uuid,
        session: [u8; 16],
    ) -> Result<PlaceView, LineError> {
        let e = self.entries.get_mut(&entry).ok_or(LineError::Unknown)?;
        if e.session != session {
            return Err(LineError::NotYours);
        }
        e.seen_ms = now_ms;
        let (rank, state) = (e.rank, e.state);
        if self.phase == Phase::BeforeOpening && now_ms >= self.rules.opens_at_ms {
            // Opened since the last tick: the place is drawn, not pending.
            self.phase = Phase::Open;
            self.opened();
        }
        if state == State::Waiting {
            self.present.insert((rank, entry));
        }
        Ok(self.view(now_ms, rank, state))
    }

    fn view(&mut self, now_ms: i64, rank: Rank, state: State) -> PlaceView {
        let waiting = self.waiting();
        match state {
            State::Done => PlaceView::Over,
            State::Admitted { until_ms, .. } => PlaceView::Admitted { until_ms },
            State::Waiting => {
                let ahead =
                    u32::try_from(self.ranks.partition_point(|r| *r < rank)).unwrap_or(u32::MAX);
                match self.phase {
                    Phase::BeforeOpening => PlaceView::BeforeOpening { waiting },
                    Phase::SoldOut => PlaceView::SoldOut { ahead, waiting },
                    Phase::Open => {
                        let eta = self.pace.estimate(now_ms, ahead);
                        PlaceView::Waiting {
                            ahead,
                            waiting,
                            eta_s: eta.map(|e| e.0),
                            eta_error_s: eta.map(|e| e.1),
                        }
                    }
                }
            }
        }
    }

    /// The visitor gives up their place (or their pass): it passes on.
    pub fn leave(&mut self, entry: Uuid, session: [u8; 16]) -> Result<(), LineError> {
        let e = self.entries.get(&entry).ok_or(LineError::Unknown)?;
        if e.session != session {
            return Err(LineError::NotYours);
        }
        self.finish(entry);
        Ok(())
    }

    /// An admitted visitor made a booking (their first, of `admissions`):
    /// they no longer count as shopping.
    pub fn booked(&mut self, entry: Uuid, admissions: u32) {
        let Some(e) = self.entries.get_mut(&entry) else {
            return;
        };
        if let State::Admitted {
            until_ms,
            booked: false,
        } = e.state
        {
            e.state = State::Admitted {
                until_ms,
                booked: true,
            };
            self.in_shop = self.in_shop.saturating_sub(1);
            self.pace.booked(admissions);
        }
    }

    /// From the opening on, a client's count is its live places again
    /// (draws given up before it stop counting).
    fn opened(&mut self) {
        self.per_client.clear();
        for e in self.entries.values() {
            if e.state != State::Done {
                *self.per_client.entry(e.client).or_default() += 1;
            }
        }
    }

    fn finish(&mut self, entry: Uuid) {
        let Some(e) = self.entries.get_mut(&entry) else {
            return;
        };
        match e.state {
            State::Done => return,
            State::Waiting => {
                self.present.remove(&(e.rank, entry));
            }
            State::Admitted { booked, .. } => {
                if !booked {
                    self.in_shop = self.in_shop.saturating_sub(1);
                }
            }
        }
        e.state = State::Done;
        self.live = self.live.saturating_sub(1);
        // A draw given up before the opening still counts against its
        // client until then: leaving and joining again is no second draw.
        if e.rank.is_draw() && self.phase == Phase::BeforeOpening {
            return;
        }
        if let Some(n) = self.per_client.get_mut(&e.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&e.client);
            }
        }
    }

    /// Advances the line to `now`: the phase, who is away, whose window
    /// is over, and who goes in. Returns the entries let in, in order.
    pub fn tick(&mut self, now_ms: i64, supply: Supply) -> Vec<Uuid> {
        let was = self.phase;
        self.phase = if now_ms < self.rules.opens_at_ms {
            Phase::BeforeOpening
        } else if supply.places_left == 0 {
            Phase::SoldOut
        } else {
            Phase::Open
        };
        if was == Phase::BeforeOpening && self.phase != Phase::BeforeOpening {
            self.opened();
        }
        let mut over = Vec::new();
        let mut away = Vec::new();
        for (id, e) in &self.entries {
            match e.state {
                State::Admitted { until_ms, .. } if until_ms <= now_ms => over.push(*id),
                // Away so long they have plainly gone: the place ends and
                // stops counting against the client.
                State::Waiting
                    if now_ms - e.seen_ms > self.rules.away_after_ms * GONE_AFTER_AWAYS =>
                {
                    over.push(*id)
                }
                State::Waiting if now_ms - e.seen_ms > self.rules.away_after_ms => {
                    away.push((e.rank, *id))
                }
                _ => {}
            }
        }
        for id in over {
            self.finish(id);
        }
        for key in away {
            self.present.remove(&key);
        }
        // Done entries are forgotten once they cannot matter: their session
        // may join again, as a new arrival.
        let forget_before = now_ms - self.rules.window_ms.max(self.rules.away_after_ms) * 2;
        let finished = &mut self.finished;
        self.entries.retain(|id, e| {
            let keep = e.state != State::Done || e.seen_ms > forget_before;
            if !keep {
                finished.insert(*id);
            }
            keep
        });
        let entries = &self.entries;
        self.by_session.retain(|_, id| entries.contains_key(id));
        let mut let_in = Vec::new();
        if self.phase == Phase::Open {
            let n = self
                .pace
                .allowance(now_ms, self.in_shop, supply.places_left);
            for _ in 0..n {
                let Some((_, id)) = self.present.pop_first() else {
                    break;
                };
                if let Some(e) = self.entries.get_mut(&id) {
                    e.state = State::Admitted {
                        until_ms: now_ms + self.rules.window_ms,
                        booked: false,
                    };
                    self.in_shop += 1;
                    self.admitted_total += 1;
                    let_in.push(id);
                }
            }
            self.pace
                .admitted(now_ms, u32::try_from(let_in.len()).unwrap_or(u32::MAX));
        }
        self.ranks = self.present.iter().map(|(r, _)| *r).collect();
        let_in
    }
}
