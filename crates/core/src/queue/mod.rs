//! The waiting room in front of a high-demand sale: who stands where, who
//! is let in and when, and the signed tokens that carry a visitor's place.
//!
//! - `rank`: a place's order key. Before the opening it is a random draw
//!   (everyone present at the opening is equally likely to be anywhere in
//!   the line); after it, the arrival time (first come, first served).
//! - `token`: the place and the admission pass as signed, bounded strings,
//!   bound to the browser session that joined.
//! - `line`: the room's state machine (join, poll, admit, leave, sold out).
//! - `pace`: how many visitors to let in now, and the wait estimate.

pub mod line;
pub mod pace;
pub mod rank;
pub mod token;

pub use line::{Line, LineError, LineRules, PlaceView, Supply};
pub use pace::{Pace, PaceRules};
pub use rank::Rank;
pub use token::{Pass, Place, TokenError, TokenKey};
