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

use tessera_core::catalogue::Catalogue;
use tessera_core::money::format_minor;

use crate::views::{ReportKind, SaleView, ShiftReport};

impl Receipt {
    /// The receipt of a committed sale; `reprint` marks copies.
    pub fn for_sale(
        sale: &SaleView,
        catalogue: &Catalogue,
        counter: &str,
        tz: &jiff::tz::TimeZone,
        window_minutes: u16,
        reprint: bool,
    ) -> Receipt {
        let museum = &catalogue.museum;
        let slot = crate::sales::slot_text(sale.slot_id, window_minutes);
        Receipt {
            museum_name: museum.name.clone(),
            address: museum.address.clone(),
            vat_number: museum.vat_number.clone(),
            title: reprint.then(|| "REPRINT".to_string()),
            sold_at: sale
                .created_at
                .to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string(),
            counter: counter.to_string(),
            cashier: sale.cashier.clone(),
            sale_id: sale.sale_id.to_string(),
            terminal_seq: sale.terminal_seq,
            lines: sale
                .lines
                .iter()
                .map(|l| ReceiptLine {
                    quantity: l.quantity,
                    name: l.name.clone(),
                    unit_price: l.unit_price,
                    amount: l.amounts.gross,
                })
                .collect(),
            currency: sale.currency.clone(),
            total: sale.total,
            vat: sale
                .vat
                .iter()
                .map(|v| ReceiptVat {
                    label: format!("VAT {}", v.label),
                    net: v.amounts.net,
                    tax: v.amounts.tax,
                    gross: v.amounts.gross,
                })
                .collect(),
            payment_method: match sale.payment_method {
                tessera_core::api::sync::PaymentMethod::Cash => "Cash".into(),
                tessera_core::api::sync::PaymentMethod::Card => "Card".into(),
            },
            tendered: sale.tendered,
            change: sale.change,
            tickets: sale
                .tickets
                .iter()
                .map(|t| ReceiptTicket {
                    code: t.code.clone(),
                    product: t.product_name.clone(),
                    slot: slot.clone(),
                    admits: t.admits,
                })
                .collect(),
            footer: museum.receipt_footer.clone(),
        }
    }
}

impl TextDocument {
    /// An X or Z report as printed on the receipt printer.
    pub fn for_shift(report: &ShiftReport, museum: &str, tz: &jiff::tz::TimeZone) -> TextDocument {
        let at = |t: jiff::Timestamp| {
            t.to_zoned(tz.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        };
        let money = |v: i64| format!("{} {}", format_minor(v), report.currency);
        let mut rows = vec![
            ("Counter".to_string(), report.counter.clone()),
            ("Cashier".to_string(), report.cashier.clone()),
            ("Opened".to_string(), at(report.opened_at)),
        ];
        if let Some(closed) = report.closed_at {
            rows.push(("Closed".into(), at(closed)));
        }
        let seq = |s: Option<u64>| s.map(|v| format!("#{v}")).unwrap_or_else(|| "-".into());
        rows.push((
            "First / last sale".into(),
            format!("{} / {}", seq(report.first_seq), seq(report.last_seq)),
        ));
        rows.push(("Sales".into(), report.sales_count.to_string()));
        rows.push(("Voids".into(), report.voids_count.to_string()));
        rows.push(("Admissions".into(), report.admissions.to_string()));
        rows.push(("Gross sales".into(), money(report.gross)));
        for m in &report.by_method {
            let name = match m.method {
                tessera_core::api::sync::PaymentMethod::Cash => "Cash",
                tessera_core::api::sync::PaymentMethod::Card => "Card",
            };
            rows.push((format!("{name} sales"), money(m.sales)));
            rows.push((format!("{name} refunds"), money(-m.refunds)));
        }
        for p in &report.by_product {
            rows.push((format!("{} x{}", p.name, p.quantity), money(p.gross)));
        }
        for v in &report.vat {
            rows.push((format!("VAT {} net", v.label), money(v.amounts.net)));
            rows.push((format!("VAT {} tax", v.label), money(v.amounts.tax)));
        }
        rows.push(("Float".into(), money(report.float)));
        rows.push(("Expected cash".into(), money(report.expected_cash)));
        if let Some(c) = report.counted_cash {
            rows.push(("Counted cash".into(), money(c)));
        }
        if let Some(d) = report.over_short {
            let label = if d >= 0 { "Over" } else { "Short" };
            rows.push((label.into(), money(d)));
        }
        TextDocument {
            museum_name: museum.to_string(),
            title: match report.kind {
                ReportKind::X => "X REPORT (interim)".into(),
                ReportKind::Z => "Z REPORT (shift closed)".into(),
            },
            rows,
        }
    }
}
