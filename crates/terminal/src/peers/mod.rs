//! Gates sharing their admissions over the museum's LAN, so that when the
//! server is down a ticket admitted at one gate is refused at the next a
//! moment later. Each admission is signed by the admitting device's
//! certified key ([`message`]), merged into a grow-only set of today's
//! admissions ([`book`]), pushed to every peer at once and exchanged in full
//! every few seconds so a peer that was away catches up ([`sender`]), and
//! received by a small HTTP listener ([`listener`]), which tells its own
//! admissions only to a peer that signs its request with a certified key. Peers are the list the
//! device was configured with; the server stays the judge whenever it answers.

pub(crate) mod book;
pub(crate) mod listener;
pub mod message;
pub(crate) mod sender;
pub mod wire;

pub use message::{PeerAdmission, PeerHello, PeerRefusal};
