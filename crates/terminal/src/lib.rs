//! tessera-terminal: the counter's engine, with no UI. It keeps a local SQLite
//! replica (catalogue, slots, leases, sales, shifts; the sales above the
//! server's acknowledged seq are the outbox), sells from leased capacity with
//! or without network, signs tickets with the counter's own key, prints
//! receipts, and syncs with the server exactly once per sale.
//! The `tessera-terminal` binary and the desktop app are thin fronts over
//! [`Terminal`]. At a gate it also shares its admissions with the other gates
//! over the LAN ([`peers`]), so an outage of the server does not open a
//! window for a double entry.

mod engine;
mod error;
mod gate;
mod local;
pub mod peers;
pub mod printer;
pub mod receipt;
mod sales;
mod shifts;
mod sync;
pub mod views;

pub use engine::{PeerRound, Terminal};
pub use error::TerminalError;
