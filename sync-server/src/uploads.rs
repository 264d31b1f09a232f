//! What both backends' counter sync writes and answers the same way: the
//! acknowledgements of a round, and an upload set aside for a supervisor
//! (quarantine) as it is stored. Core's `upload::batch` decides what is
//! quarantined and why; this turns its decision into the stored item.

use tessera_core::api::sync::{SaleRecord, ShiftRecord, SyncRequest, VoidRecord};
use tessera_core::limits;
use tessera_core::slot::SlotId;
use tessera_core::upload::batch::Quarantine;
use uuid::Uuid;

/// What the answer acknowledges.
pub(crate) struct Acks {
    pub acked_seq: u64,
    pub sales_stored: u32,
    pub sales_duplicate: u32,
    pub voids: Vec<Uuid>,
    pub shifts: Vec<Uuid>,
}

/// An upload set aside for a supervisor, as it is written.
pub(crate) struct QuarantineItem {
    pub kind: &'static str,
    pub id: Uuid,
    pub seq: Option<u64>,
    pub slot: Option<SlotId>,
    pub reason: String,
    pub body: String,
    pub device_at: Option<i64>,
}

impl QuarantineItem {
    /// The item core's decision `q` sets aside from `request` (logged and
    /// counted here, once, whichever backend stores it).
    pub fn of(request: &SyncRequest, q: &Quarantine) -> Result<Self, serde_json::Error> {
        match q {
            Quarantine::Sale { index, reason } => sale(&request.sales[*index], reason),
            Quarantine::Void { index, seq, reason } => void(&request.voids[*index], *seq, reason),
            Quarantine::Shift { index, reason } => shift(&request.shifts[*index], reason),
        }
    }
}

fn sale(sale: &SaleRecord, reason: &str) -> Result<QuarantineItem, serde_json::Error> {
    tracing::warn!(sale = %sale.sale_id, seq = sale.terminal_seq, %reason, "counter sale quarantined");
    metrics::counter!("tessera_quarantined_total", "kind" => "sale").increment(1);
    Ok(QuarantineItem {
        kind: "sale",
        id: sale.sale_id,
        seq: Some(sale.terminal_seq),
        slot: Some(sale.slot_id),
        reason: format!("sale #{}: {reason}", sale.terminal_seq),
        body: serde_json::to_string(sale)?,
        device_at: Some(sale.created_at.as_millisecond()),
    })
}

fn void(
    v: &VoidRecord,
    seq: Option<u64>,
    reason: &str,
) -> Result<QuarantineItem, serde_json::Error> {
    tracing::warn!(void = %v.void_id, sale = %v.sale_id, %reason, "counter void quarantined");
    metrics::counter!("tessera_quarantined_total", "kind" => "void").increment(1);
    Ok(QuarantineItem {
        kind: "void",
        id: v.void_id,
        seq,
        slot: None,
        reason: format!("void of sale {}: {reason}", v.sale_id),
        body: serde_json::to_string(v)?,
        device_at: Some(v.at.as_millisecond()),
    })
}

fn shift(s: &ShiftRecord, reason: &str) -> Result<QuarantineItem, serde_json::Error> {
    tracing::warn!(shift = %s.shift_id, %reason, "closed shift quarantined");
    metrics::counter!("tessera_quarantined_total", "kind" => "shift").increment(1);
    Ok(QuarantineItem {
        kind: "shift",
        id: s.shift_id,
        seq: None,
        slot: None,
        reason: format!(
            "shift of {}: {reason}",
            limits::prefix(&s.cashier, limits::STAFF_NAME_CHARS)
        ),
        body: serde_json::to_string(s)?,
        device_at: Some(s.closed_at.as_millisecond()),
    })
}
