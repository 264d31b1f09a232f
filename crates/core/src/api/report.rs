//! The day reconciliation as it travels: for one museum day, online and every
//! counter side by side, the cash drawers, and every difference named
//! (uploads missing, leases still held, sales over capacity, double
//! admissions at the gates). The server builds it (`tessera_server::reports`);
//! supervisors' screens and the CLI read it.
//!
//! Money figures are by transaction date (what was taken that day, in the
//! museum's zone); slot figures by the slot's date. Every total is the sum of
//! its parts: `check` says so or names the line that is off.

use jiff::civil::Date;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{DeviceId, LeaseId, SaleId, TicketId};
use crate::slot::SlotId;

pub use super::supervisor::QuarantinedUpload;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct DayReport {
    pub date: Date,
    pub museum: String,
    pub currency: String,
    pub generated_at: Timestamp,
    /// "online", then each counter by name.
    pub channels: Vec<ChannelReport>,
    pub total: ChannelReport,
    pub shifts: Vec<ShiftLine>,
    pub missing: Missing,
    pub slots: Vec<SlotLine>,
    pub conflicts: Vec<ConflictLine>,
    /// Counter uploads the server could not accept as they were, kept aside
    /// for a supervisor (never dropped): received that day or for its slots.
    pub quarantine: Vec<QuarantineLine>,
    /// The waiting lists of the day's entry times.
    pub waitlist: WaitlistReport,
    /// Online orders by who sold them: `web` (the shop, paid through the
    /// payment provider) and each trusted channel. Adds up to the `online`
    /// channel above.
    pub online_channels: Vec<OnlineChannelLine>,
    /// Money the payment provider gives back (queued that day, by state),
    /// and refunds a person must look at.
    pub refunds: RefundsSummary,
    /// Set when the report's own sums disagree (see [`DayReport::check`]):
    /// the figures must not be trusted until the cause is found.
    pub does_not_add_up: Option<String>,
}

/// Entries and the admissions they asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct WaitlistCount {
    pub entries: u32,
    pub admissions: u32,
}

/// The day's waiting lists, by where each entry stands now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct WaitlistReport {
    /// Still in line.
    pub waiting: WaitlistCount,
    /// Places held for them now, waiting for them to check out.
    pub offered: WaitlistCount,
    /// Offer turned into a checkout.
    pub taken: WaitlistCount,
    /// Offer not used in time; the places went to the next in line.
    pub expired: WaitlistCount,
    /// Still in line when the entry time ended.
    pub unserved: WaitlistCount,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct OnlineChannelLine {
    /// `web`, a trusted channel's name, or `anonymous` (orders confirmed
    /// before channels existed).
    pub channel: String,
    pub orders: u32,
    /// Admissions sold, less those cancelled.
    pub admissions: i64,
    pub gross_sales: i64,
    /// Tickets cancelled from "my booking" that day.
    pub refunds: i64,
    pub net_takings: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RefundsSummary {
    /// Refunds queued that day, by state: `queued` (being worked), `done`,
    /// `failed` (the provider refused; see `needs_attention`).
    pub by_state: Vec<RefundCount>,
    /// Refunds queued that day by reason: `cancelled` (tickets cancelled,
    /// part of the online refunds above), `no_places` (paid after the places
    /// were gone: no sale, money back), `duplicate`, `amount_mismatch`.
    pub by_reason: Vec<RefundCount>,
    /// Refunds the provider refused, whenever queued: give the money back by hand.
    pub needs_attention: Vec<RefundLine>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RefundCount {
    pub key: String,
    pub count: u32,
    pub amount: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct RefundLine {
    pub refund_id: String,
    pub payment_id: String,
    pub amount: i64,
    pub reason: String,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct QuarantineLine {
    pub counter: String,
    pub device_id: DeviceId,
    /// `sale`, `void` or `shift`.
    pub kind: String,
    pub item_id: Uuid,
    pub terminal_seq: Option<u64>,
    pub slot_id: Option<SlotId>,
    pub reason: String,
    /// When the counter says it happened (its clock), and when the server
    /// received it (the server's).
    pub device_at: Option<Timestamp>,
    pub received_at: Timestamp,
    /// The upload as received, for the supervisor to judge (`null` if the
    /// stored copy could not be read back).
    pub body: Option<QuarantinedUpload>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ChannelReport {
    pub channel: String,
    pub device_id: Option<DeviceId>,
    pub sales_count: u32,
    pub voids_count: u32,
    /// Admissions sold, less those voided.
    pub admissions: i64,
    pub gross_sales: i64,
    pub refunds: i64,
    /// gross_sales - refunds.
    pub net_takings: i64,
    /// Of the net takings, per VAT rate.
    pub vat: Vec<VatRow>,
    pub payments: Vec<PaymentRow>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct VatRow {
    pub rate_bp: u32,
    pub label: String,
    pub net: i64,
    pub tax: i64,
    pub gross: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct PaymentRow {
    /// cash, card (counters) or online (the web shop's payment provider).
    pub method: String,
    pub sales: i64,
    pub refunds: i64,
    pub net: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ShiftLine {
    pub counter: String,
    pub shift_id: Uuid,
    pub cashier: String,
    pub opened_at: Timestamp,
    pub closed_at: Option<Timestamp>,
    pub float: i64,
    /// The counter's own figure, from its Z report.
    pub expected_cash: Option<i64>,
    pub counted_cash: Option<i64>,
    pub over_short: Option<i64>,
    pub z_received: bool,
    /// float + cash sales - cash refunds, from the sales the server has.
    pub server_expected_cash: i64,
    /// Z report's expected cash minus the server's: cash sales it has not received.
    pub not_uploaded_cash: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Missing {
    pub counters: Vec<CounterUploads>,
    pub leases_held: Vec<LeaseHeld>,
    pub over_capacity: Vec<OverCapacity>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct CounterUploads {
    pub counter: String,
    pub device_id: DeviceId,
    /// Every sale up to this seq is on the server.
    pub acked_seq: u64,
    pub highest_seq_received: u64,
    /// The counter's own highest seq at its last sync.
    pub reported_seq: u64,
    pub last_sync_at: Option<Timestamp>,
    pub shift_open: bool,
    /// In words: what is missing and why it matters.
    pub problem: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct LeaseHeld {
    pub counter: String,
    pub lease_id: LeaseId,
    pub slot_id: SlotId,
    pub escrow: u32,
    pub sold: u32,
    pub unsold: u32,
    pub last_sync_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct OverCapacity {
    pub counter: String,
    pub sale_id: SaleId,
    pub terminal_seq: u64,
    pub slot_id: SlotId,
    pub admissions_over: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SlotLine {
    pub slot_id: SlotId,
    pub capacity: u32,
    pub sold_online: i64,
    pub sold_counter: i64,
    pub admitted: i64,
    pub no_shows: i64,
    pub over_capacity: i64,
    /// Places a counter's void would have put back on sale but the server
    /// kept out (the ticket was admitted, or its slot had started).
    pub kept_by_voids: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct ConflictLine {
    pub ticket_id: TicketId,
    pub slot_id: SlotId,
    pub first_gate: String,
    pub first_at: Timestamp,
    pub second_gate: String,
    pub second_at: Timestamp,
}

impl ChannelReport {
    /// Adds another channel into this one (for the total).
    pub fn absorb(&mut self, other: &ChannelReport) {
        self.sales_count += other.sales_count;
        self.voids_count += other.voids_count;
        self.admissions += other.admissions;
        self.gross_sales += other.gross_sales;
        self.refunds += other.refunds;
        self.net_takings += other.net_takings;
        for v in &other.vat {
            match self.vat.iter_mut().find(|x| x.rate_bp == v.rate_bp) {
                Some(x) => {
                    x.net += v.net;
                    x.tax += v.tax;
                    x.gross += v.gross;
                }
                None => self.vat.push(v.clone()),
            }
        }
        self.vat.sort_by_key(|v| v.rate_bp);
        for p in &other.payments {
            match self.payments.iter_mut().find(|x| x.method == p.method) {
                Some(x) => {
                    x.sales += p.sales;
                    x.refunds += p.refunds;
                    x.net += p.net;
                }
                None => self.payments.push(p.clone()),
            }
        }
    }

    /// The channel's own arithmetic: net = gross - refunds; VAT and payments
    /// each add up to the net takings.
    pub fn check(&self) -> Result<(), String> {
        let vat: i64 = self.vat.iter().map(|v| v.gross).sum();
        let paid: i64 = self.payments.iter().map(|p| p.net).sum();
        let split_ok = self.vat.iter().all(|v| v.net + v.tax == v.gross);
        if self.net_takings != self.gross_sales - self.refunds {
            return Err(format!(
                "{}: net takings are not gross minus refunds",
                self.channel
            ));
        }
        if vat != self.net_takings || !split_ok {
            return Err(format!(
                "{}: VAT lines add up to {vat}, net takings are {}",
                self.channel, self.net_takings
            ));
        }
        if paid != self.net_takings {
            return Err(format!(
                "{}: payments add up to {paid}, net takings are {}",
                self.channel, self.net_takings
            ));
        }
        Ok(())
    }
}

impl DayReport {
    /// Every figure checks: each channel adds up, and the total is the sum of
    /// the channels.
    pub fn check(&self) -> Result<(), String> {
        let mut sum = ChannelReport {
            channel: "total".into(),
            ..ChannelReport::default()
        };
        for c in &self.channels {
            c.check()?;
            sum.absorb(c);
        }
        self.total.check()?;
        let same = sum.sales_count == self.total.sales_count
            && sum.admissions == self.total.admissions
            && sum.gross_sales == self.total.gross_sales
            && sum.refunds == self.total.refunds
            && sum.net_takings == self.total.net_takings
            && sum.vat == self.total.vat;
        if !same {
            return Err("the total is not the sum of the channels".into());
        }
        if let Some(online) = self.channels.iter().find(|c| c.channel == "online") {
            let mut sum = OnlineChannelLine::default();
            for l in &self.online_channels {
                if l.net_takings != l.gross_sales - l.refunds {
                    return Err(format!(
                        "online channel {}: net takings are not gross minus refunds",
                        l.channel
                    ));
                }
                sum.orders += l.orders;
                sum.admissions += l.admissions;
                sum.gross_sales += l.gross_sales;
                sum.refunds += l.refunds;
                sum.net_takings += l.net_takings;
            }
            let same = sum.orders == online.sales_count
                && sum.admissions == online.admissions
                && sum.gross_sales == online.gross_sales
                && sum.refunds == online.refunds
                && sum.net_takings == online.net_takings;
            if !same {
                return Err("the online channels do not add up to the online takings".into());
            }
        }
        Ok(())
    }
}
