//! The waiting room in front of a high-demand sale: a visitor joins, asks
//! where they stand, and once let in books with the pass they were given.

use jiff::civil::Date;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The header a visitor's place travels in when they ask about it.
pub const PLACE_HEADER: &str = "tessera-queue-place";
/// The header a pass travels in with `POST /v1/holds`.
pub const PASS_HEADER: &str = "tessera-queue-pass";
/// The cookie naming the browser session a place and a pass belong to.
pub const SESSION_COOKIE: &str = "tessera_session";

/// A waiting room as everyone may see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomInfo {
    pub id: String,
    pub name: String,
    /// The museum days whose entry times are sold through this room.
    pub from: Date,
    pub until: Date,
    pub opens_at: Timestamp,
    pub phase: RoomPhase,
    /// Visitors present in the line.
    pub waiting: u32,
    /// Visitors let in and still choosing.
    pub in_shop: u32,
    /// Visitors let in since this process started.
    pub admitted: u64,
    /// Visitors let in per minute lately (the configured rate until the
    /// first ten seconds after the opening have passed).
    pub rate_per_minute: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RoomPhase {
    /// Places are drawn at `opens_at` among everyone present.
    BeforeOpening,
    Open,
    /// Every entry time is sold, held in a checkout or leased to a counter.
    SoldOut,
}

/// Where one visitor stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlaceStatus {
    pub room: String,
    pub state: PlaceState,
    pub opens_at: Timestamp,
    /// The place, to keep and send back (in the `Tessera-Queue-Place`
    /// header); it only works with this browser session's cookie.
    pub place: String,
    /// 1 for the next visitor in; absent before the opening.
    pub position: Option<u32>,
    /// Visitors present ahead.
    pub ahead: Option<u32>,
    pub waiting: u32,
    /// Seconds until this visitor is let in, at the recent rate…
    pub eta_seconds: Option<u32>,
    /// …give or take this many.
    pub eta_error_seconds: Option<u32>,
    pub rate_per_minute: u32,
    /// Once let in: send it as `Tessera-Queue-Pass` with `POST /v1/holds`.
    pub pass: Option<String>,
    /// The pass works for holds made before this moment.
    pub pass_until: Option<Timestamp>,
    /// When to ask again.
    pub poll_after_ms: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PlaceState {
    BeforeOpening,
    Waiting,
    Admitted,
    /// Everything is taken; the place is kept in case places come back,
    /// and the waiting list is open.
    SoldOut,
    /// The window passed without a booking, or the visitor left.
    Over,
}
