//! tessera-core: the domain rules every part of Tessera shares, with no IO.
//!
//! Money and VAT, the museum's catalogue and the slots its schedule generates,
//! pricing a cart, signed ticket codes, the entry rules a gate applies, the
//! lease arithmetic that keeps online and counter sales inside one capacity,
//! the CRDT tallies for live availability, and the wire types of the HTTP API.
//! The server's inventory rules live here too, as decisions over facts a
//! backend loads: judging a counter's upload (`upload`, `upload::batch`), a
//! lease's state and its sizing (`leases`), the counter's side of a lease
//! (`counter_lease`), reconciling reports and
//! over-capacity flags (`reconcile`), the day report's arithmetic over
//! the facts a backend loads (`day_report`), and the shop's rules a backend
//! would otherwise decide itself: a payment's provider events (`payment`),
//! what "my booking" allows (`booking`), and waiting-list offers
//! (`waitlist`). Backends load, call these, and write.
//! Clocks, files, sockets and randomness stay at the edges: functions here take
//! `now` and seeds as arguments.

pub mod admission;
pub mod api;
pub mod booking;
pub mod catalogue;
pub mod channels;
pub mod clock;
pub mod counter_lease;
pub mod day_report;
pub mod enrolment;
pub mod fixture;
pub mod ids;
pub mod inventory;
pub mod leases;
pub mod limits;
pub mod money;
#[cfg(feature = "openapi")]
mod openapi;
pub mod payment;
pub mod pricing;
pub mod queue;
pub mod reconcile;
pub mod shop;
pub mod slot;
#[cfg(feature = "sql")]
mod sql;
pub mod staff;
pub mod tally;
pub mod ticket_code;
#[cfg(feature = "ts")]
mod ts;
pub mod upload;
pub mod vat;
pub mod waitlist;

pub use jiff;
pub use uuid;
