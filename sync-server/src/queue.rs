//! The waiting rooms of this process: one line per high-demand sale
//! (`[[waiting_rooms]]`), ticked four times a second against what the sale
//! has left. The rules are core's (`tessera_core::queue`); this module
//! reads the configuration, the clock and the store's availability.
//!
//! A line lives in this process's memory. Places and passes are signed
//! tokens, so a restart loses no place (a visitor's next question restores
//! it from the token) and no pass; with several PostgreSQL processes, the
//! rooms' addresses must reach one process (see docs/WAITING-ROOM.md).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use tessera_core::api::queue::{RoomInfo, RoomPhase};
use tessera_core::clock::Clock;
use tessera_core::queue::line::{Line, LineRules, Phase, Supply};
use tessera_core::queue::token::{room_tag, TokenKey};
use tessera_core::queue::PaceRules;

use crate::config::{check_waiting_rooms as check, RoomConfigError, WaitingRoomSettings};
use crate::store::Store;

const TICK: Duration = Duration::from_millis(250);

fn opening(r: &WaitingRoomSettings, tz: &TimeZone) -> Result<Timestamp, RoomConfigError> {
    let bad = || RoomConfigError::OpensAt(r.id.clone(), r.opens_at.clone());
    if let Ok(t) = r.opens_at.parse::<Timestamp>() {
        return Ok(t);
    }
    let civil: jiff::civil::DateTime = r.opens_at.parse().map_err(|_| bad())?;
    tz.to_ambiguous_timestamp(civil)
        .compatible()
        .map_err(|_| bad())
}

/// One high-demand sale's room.
pub struct Room {
    pub id: String,
    pub name: String,
    pub from: Date,
    pub until: Date,
    pub opens_at: Timestamp,
    pub tag: [u8; 8],
    line: Mutex<Line>,
}

impl Room {
    /// The line, for one short step; a panic elsewhere never locks it for
    /// good (the state is plain data, consistent after every call).
    pub fn line(&self) -> MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn covers(&self, date: Date) -> bool {
        self.from <= date && date <= self.until
    }

    pub fn info(&self, now_ms: i64) -> RoomInfo {
        let mut line = self.line();
        let phase = match line.phase() {
            Phase::BeforeOpening if now_ms < line.rules().opens_at_ms => RoomPhase::BeforeOpening,
            Phase::SoldOut => RoomPhase::SoldOut,
            _ => RoomPhase::Open,
        };
        RoomInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            from: self.from,
            until: self.until,
            opens_at: self.opens_at,
            phase,
            waiting: line.waiting(),
            in_shop: line.in_shop(),
            admitted: line.admitted_total(),
            rate_per_minute: per_minute(line.rate_per_s(now_ms)),
        }
    }
}

pub fn per_minute(per_s: f64) -> u32 {
    (per_s * 60.0).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The rooms of this server and the key their tokens are signed with.
pub struct Rooms {
    pub rooms: Vec<Room>,
    pub key: TokenKey,
}

impl Rooms {
    pub fn new(
        settings: &[WaitingRoomSettings],
        tz: &TimeZone,
        installation_secret: &[u8],
    ) -> Result<Rooms, RoomConfigError> {
        check(settings)?;
        let mut rooms = Vec::new();
        for r in settings {
            let opens_at = opening(r, tz)?;
            let rules = LineRules {
                opens_at_ms: opens_at.as_millisecond(),
                window_ms: i64::from(r.window_minutes) * 60_000,
                away_after_ms: i64::from(r.away_after_secs) * 1_000,
                max_per_client: r.max_places_per_client,
                max_places: r.max_places as usize,
                pace: PaceRules {
                    rate_per_minute: r.rate_per_minute,
                    max_in_shop: r.max_in_shop,
                    overbook_percent: 125,
                },
            };
            rooms.push(Room {
                id: r.id.clone(),
                name: r.name.clone(),
                from: r.from,
                until: r.until,
                opens_at,
                tag: room_tag(&r.id, opens_at.as_millisecond()),
                line: Mutex::new(Line::new(rules)),
            });
        }
        Ok(Rooms {
            rooms,
            key: TokenKey::derive(installation_secret),
        })
    }

    pub fn get(&self, id: &str) -> Option<&Room> {
        self.rooms.iter().find(|r| r.id == id)
    }

    pub fn for_date(&self, date: Date) -> Option<&Room> {
        self.rooms.iter().find(|r| r.covers(date))
    }
}

/// A client address as the line counts it.
pub fn client_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Places a room's days have left for online visitors: neither sold, held,
/// nor leased, in entry times not yet over.
async fn supply<S: Store>(store: &S, room: &Room) -> Option<u32> {
    let mut left: u32 = 0;
    let mut day = room.from;
    while day <= room.until {
        let a = store.availability(day).await.ok()?;
        for s in a.slots.iter().filter(|s| !s.past) {
            left = left.saturating_add(s.available);
        }
        day = day.tomorrow().ok()?;
    }
    Some(left)
}

/// Ticks every room until the process ends. A room whose supply cannot be
/// read this tick keeps its door as it was (no one let in on a guess).
pub async fn run<S: Store>(rooms: Arc<Rooms>, store: Arc<S>, clock: Clock) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for room in &rooms.rooms {
            let now = clock.now_ms();
            let places_left = if now < room.opens_at.as_millisecond() {
                // Before the opening nobody goes in; no need to count.
                1
            } else {
                match supply(store.as_ref(), room).await {
                    Some(n) => n,
                    None => continue,
                }
            };
            let let_in = room.line().tick(now, Supply { places_left });
            if !let_in.is_empty() {
                metrics::counter!("tessera_queue_admitted_total", "room" => room.id.clone())
                    .increment(let_in.len() as u64);
            }
        }
    }
}
