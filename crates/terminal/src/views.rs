//! What the engine hands to its fronts (the CLI and the desktop app): plain
//! serializable views, so the app's screens get exactly what the CLI prints.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tessera_core::api::devices::Role;
use tessera_core::api::sync::PaymentMethod;
use tessera_core::pricing::{CartLine, PricedLine};
use tessera_core::slot::SlotId;
use tessera_core::staff::StaffRole;
use tessera_core::vat::VatSplit;
use uuid::Uuid;

/// The status bar: always on screen.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub device_name: String,
    pub role: Role,
    pub museum: String,
    /// The museum's IANA zone: every time on screen is shown in it.
    pub time_zone: String,
    pub server_url: String,
    /// The last sync attempt reached the server.
    pub online: bool,
    pub last_sync_at: Option<Timestamp>,
    /// Why the last sync failed, in words, if it did.
    pub last_sync_error: Option<String>,
    /// Sales committed here and not yet acknowledged by the server.
    pub pending_sales: u32,
    pub pending_voids: u32,
    pub pending_shifts: u32,
    pub pending_scans: u32,
    /// Uploads the server holds in quarantine: "N sales need a supervisor".
    #[serde(default)]
    pub needs_supervisor: u32,
    /// Visitors this device let in today (gate mode).
    pub admitted_today: u32,
    pub shift: Option<ShiftView>,
    pub printer: String,
    pub now: Timestamp,
    /// The server's push channel is connected: changes reach this device
    /// as they happen. False: it polls (`poll_every_s`).
    #[serde(default)]
    pub live: bool,
    /// Seconds between the device's own syncs at the moment.
    #[serde(default)]
    pub poll_every_s: u32,
    /// The gates this one shares admissions with (gate mode).
    #[serde(default)]
    pub gate_peers: Vec<PeerLink>,
}

/// What changed in the engine, pushed to the screens so they re-read only
/// that (the app forwards these as the Tauri event `engine-changed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineChange {
    /// Online/offline, uploads waiting, the shift, admissions today.
    Status,
    /// Today's slots: places left, this counter's lease.
    Slots,
    /// This device's sales (a sale, a void, an upload acknowledged).
    Sales,
    /// Products or prices.
    Catalogue,
}

/// A configured gate peer and whether it answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLink {
    pub url: String,
    /// `None` while this gate's peer service is not running.
    pub reachable: Option<bool>,
}

/// One of today's slots as the cashier sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot_id: SlotId,
    /// "14:00".
    pub label: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub capacity: u32,
    /// Places this counter can sell right now without the network.
    pub lease_left: u32,
    /// Places left in the museum for this slot (server's live figure merged
    /// with this counter's own unsynced sales), as of `as_of`.
    pub remaining: u32,
    pub as_of: Option<Timestamp>,
    /// The entry window is over: no more sales.
    pub closed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProductView {
    pub product_id: String,
    pub name: String,
    pub price: i64,
    pub vat_bp: u32,
    pub admits: u8,
    pub requires_membership: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum PaymentRequest {
    /// `tendered`: cash handed over, in cents.
    Cash {
        tendered: i64,
    },
    Card,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SaleRequest {
    pub slot_id: SlotId,
    pub items: Vec<CartLine>,
    pub payment: PaymentRequest,
}

/// A priced cart before payment (what the screen shows while building it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quote {
    pub lines: Vec<PricedLine>,
    pub total: i64,
    pub currency: String,
    pub admissions: u32,
    pub vat: Vec<VatLine>,
    pub lease_left: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VatLine {
    pub rate_bp: u32,
    /// "5.5 %".
    pub label: String,
    pub amounts: VatSplit,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TicketView {
    pub ticket_id: Uuid,
    pub product_id: String,
    pub product_name: String,
    pub admits: u8,
    pub code: String,
}

/// A completed (committed, durable) sale.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SaleView {
    pub sale_id: Uuid,
    pub terminal_seq: u64,
    pub slot_id: SlotId,
    pub slot_label: String,
    pub created_at: Timestamp,
    pub cashier: String,
    pub lines: Vec<PricedLine>,
    pub total: i64,
    pub currency: String,
    pub admissions: u32,
    pub vat: Vec<VatLine>,
    pub payment_method: PaymentMethod,
    pub tendered: Option<i64>,
    pub change: Option<i64>,
    pub tickets: Vec<TicketView>,
    pub voided: bool,
    pub uploaded: bool,
}

/// What `sell` returns: the sale stands whatever happened at the printer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SaleDone {
    pub sale: SaleView,
    pub printed: PrintOutcome,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PrintOutcome {
    Printed,
    /// No printer configured: nothing to do.
    NoPrinter,
    /// The printer failed; the sale stands and the receipt can be reprinted.
    Failed {
        message: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VoidDone {
    pub sale_id: Uuid,
    pub refund: i64,
    pub refund_method: PaymentMethod,
    /// The places went back to this counter's lease (slot not yet started).
    pub returned_to_lease: bool,
    pub approved_by: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StaffView {
    pub name: String,
    pub role: StaffRole,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShiftView {
    pub shift_id: Uuid,
    pub cashier: String,
    pub opened_at: Timestamp,
    pub float: i64,
}

/// An X report (interim) or a Z report (closed, with counted cash).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShiftReport {
    pub kind: ReportKind,
    pub shift_id: Uuid,
    pub counter: String,
    pub cashier: String,
    pub opened_at: Timestamp,
    pub closed_at: Option<Timestamp>,
    pub printed_at: Timestamp,
    pub currency: String,
    pub float: i64,
    pub sales_count: u32,
    pub voids_count: u32,
    pub admissions: u32,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub gross: i64,
    pub by_method: Vec<MethodTotal>,
    pub by_product: Vec<ProductTotal>,
    pub vat: Vec<VatLine>,
    pub expected_cash: i64,
    pub counted_cash: Option<i64>,
    /// counted - expected: positive is over, negative short.
    pub over_short: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    X,
    Z,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MethodTotal {
    pub method: PaymentMethod,
    pub sales: i64,
    pub refunds: i64,
    pub net: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProductTotal {
    pub product_id: String,
    pub name: String,
    pub quantity: i64,
    pub gross: i64,
}

/// Outcome of one sync round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyncSummary {
    pub uploaded_sales: u32,
    pub acked_seq: u64,
    pub pending_sales: u32,
    pub leases_granted: u32,
    pub places_returned: u32,
    /// Uploads the server holds in quarantine after this sync.
    #[serde(default)]
    pub needs_supervisor: u32,
}

/// What the gate screen shows after a scan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanView {
    pub result: tessera_core::api::gate::RedeemResult,
    pub reason: Option<tessera_core::admission::DenyReason>,
    /// In plain words for the attendant.
    pub message: String,
    pub ticket_id: Option<Uuid>,
    pub product_id: Option<String>,
    pub product_name: Option<String>,
    pub admits: Option<u8>,
    pub slot_id: Option<SlotId>,
    pub first_used_at: Option<Timestamp>,
    pub first_used_by: Option<String>,
    /// Decided here without the server (it did not answer in time, or is known down).
    pub offline: bool,
    /// Admissions made at this device today.
    pub admitted_today: u32,
    /// How long the decision took, in microseconds.
    pub decided_in_us: u64,
}
