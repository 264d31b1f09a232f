//! What a printed receipt or report says, independent of how it is printed.
//! The engine fills these from a sale or a shift; `printer` lays them out in
//! ESC/POS.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub museum_name: String,
    pub address: Vec<String>,
    pub vat_number: Option<String>,
    /// "REPRINT" on a reprint; none on the original.
    pub title: Option<String>,
    /// Local date and time of the sale, e.g. "2026-12-02 11:05".
    pub sold_at: String,
    pub counter: String,
    pub cashier: String,
    pub sale_id: String,
    pub terminal_seq: u64,
    pub lines: Vec<ReceiptLine>,
    /// ISO code, e.g. "EUR".
    pub currency: String,
    /// Cents.
    pub total: i64,
    pub vat: Vec<ReceiptVat>,
    /// "Cash" or "Card".
    pub payment_method: String,
    pub tendered: Option<i64>,
    pub change: Option<i64>,
    pub tickets: Vec<ReceiptTicket>,
    pub footer: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptLine {
    pub quantity: u32,
    pub name: String,
    pub unit_price: i64,
    pub amount: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptVat {
    /// "VAT 5.5 %".
    pub label: String,
    pub net: i64,
    pub tax: i64,
    pub gross: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptTicket {
    /// The signed ticket code: what the QR code holds.
    pub code: String,
    pub product: String,
    /// "Wed 2 Dec 2026, entry 14:00-14:30".
    pub slot: String,
    pub admits: u8,
}

/// A plain report (X/Z report, test page): a title and label/value rows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextDocument {
    pub museum_name: String,
    pub title: String,
    pub rows: Vec<(String, String)>,
}
