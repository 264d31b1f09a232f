//! The push channel (Server-Sent Events): what changed, told to whoever
//! listens, the moment it is committed, instead of each client polling.
//!
//! - [`Changes`] (the store's) is what a backend tells after each commit: which museum
//!   days changed. It is a set and a wake-up, never a queue, so a writer's
//!   commit costs a lock and an insert whatever the listeners do.
//! - [`Hub`] turns those into events: it re-reads a changed day's
//!   availability (committed state, through the store), keeps what it last
//!   told, and sends each subscriber of that day the lines that changed,
//!   numbered, into a bounded buffer per subscriber. A subscriber whose
//!   buffer is full is dropped and told to resync; nobody else waits for it.
//! - Event ids are `EPOCH-SEQ`: a reconnect with `Last-Event-ID` of this
//!   process's epoch is resumed from the hub's recent events; any other id
//!   (another process, a restart, too old) gets the whole day again.

//! - [`DeviceHub`] is the device channel's: per connected counter, gate or
//!   supervisor device a pending set of topics, merged, never queued.

mod devices;
mod hub;

pub use crate::store::Changes;
pub use devices::{ConnectError, Connection, DeviceHub, Mailbox};
pub use hub::{run, Event, EventKind, Hub, Resume, SubscribeError, Subscription};
