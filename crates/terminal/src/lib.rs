//! tessera-terminal: the counter's engine, with no UI. It keeps a local SQLite
//! replica (catalogue, slots, leases, sales, shifts, an outbox), sells from
//! leased capacity with or without network, signs tickets with the counter's
//! own key, prints receipts, and syncs with the server exactly once per sale.
//! The `tessera-terminal` binary and the desktop app are thin fronts over it.

pub mod printer;
pub mod receipt;
pub mod views;
