//! Receipt and report layout, written through the escpos crate's `Printer`
//! into memory. Nothing here does IO: the bytes are complete before anyone
//! decides where they go.

use std::cell::RefCell;
use std::rc::Rc;

use escpos::driver::Driver;
use escpos::errors::{PrinterError, Result as EscResult};
use escpos::printer::Printer;
use escpos::printer_options::PrinterOptions;
use escpos::utils::{
    Encoder, JustifyMode, Protocol, QRCodeCorrectionLevel, QRCodeModel, QRCodeOption,
};
use tessera_core::money::format_minor;

use super::charset::{printable, PAGE};
use super::error::PrintError;
use super::layout::{row, table_row, wrap, WIDTH};
use crate::receipt::{Receipt, ReceiptTicket, TextDocument};

/// QR module size in dots: a 160-character ticket code (version 7, 45
/// modules) comes out about 34 mm wide, easy for gate scanners at arm's length.
const QR_MODULE_DOTS: u8 = 6;

/// The ESC/POS bytes of `receipt` for a 48-column printer, ending in a cut.
pub fn render_receipt(receipt: &Receipt) -> Result<Vec<u8>, PrintError> {
    render(|p| receipt_body(p, receipt))
}

/// The ESC/POS bytes of `document` for a 48-column printer, ending in a cut.
pub fn render_document(document: &TextDocument) -> Result<Vec<u8>, PrintError> {
    render(|p| document_body(p, document))
}

/// Collects what the escpos `Printer` flushes, instead of sending it anywhere.
#[derive(Clone, Default)]
struct Capture(Rc<RefCell<Vec<u8>>>);

impl Driver for Capture {
    fn name(&self) -> String {
        "memory".to_string()
    }

    fn write(&self, data: &[u8]) -> EscResult<()> {
        self.0.try_borrow_mut()?.extend_from_slice(data);
        Ok(())
    }

    fn read(&self, _buf: &mut [u8]) -> EscResult<usize> {
        Ok(0)
    }

    fn flush(&self) -> EscResult<()> {
        Ok(())
    }
}

/// The escpos `Printer` plus the layout verbs receipts are made of. Every
/// string from a receipt passes `charset::printable` before it reaches
/// `line`; only our own ASCII (labels, figures) goes there directly.
struct Paper {
    inner: Printer<Capture>,
}

fn render(body: impl FnOnce(&mut Paper) -> EscResult<()>) -> Result<Vec<u8>, PrintError> {
    let capture = Capture::default();
    // The encoder only sees characters missing from the page table, and
    // `printable` leaves none; should that ever change, WINDOWS_1252 keeps the
    // bytes consistent with the page, and refuses what it cannot map.
    let protocol = Protocol::new(Encoder::new(encoding_rs::WINDOWS_1252));
    let options = PrinterOptions::new(Some(PAGE), None, WIDTH as u8);
    let mut paper = Paper {
        inner: Printer::new(capture.clone(), protocol, Some(options)),
    };
    let laid_out = (|| {
        paper.inner.init()?;
        body(&mut paper)?;
        paper.inner.print_cut()?;
        Ok::<(), PrinterError>(())
    })();
    laid_out.map_err(|e| PrintError::Layout(e.to_string()))?;
    let bytes = std::mem::take(
        &mut *capture
            .0
            .try_borrow_mut()
            .map_err(|e| PrintError::Layout(e.to_string()))?,
    );
    Ok(bytes)
}

impl Paper {
    fn line(&mut self, text: &str) -> EscResult<()> {
        self.inner.writeln(text)?;
        Ok(())
    }

    /// Writes `text` wrapped to `width` columns.
    fn wrapped(&mut self, text: &str, width: usize) -> EscResult<()> {
        for line in wrap(&printable(text), width) {
            self.line(&line)?;
        }
        Ok(())
    }

    fn row(&mut self, left: &str, right: &str) -> EscResult<()> {
        for line in row(&printable(left), &printable(right), WIDTH) {
            self.line(&line)?;
        }
        Ok(())
    }

    fn rule(&mut self) -> EscResult<()> {
        self.line(&"-".repeat(WIDTH))
    }

    fn blank(&mut self) -> EscResult<()> {
        self.inner.feed()?;
        Ok(())
    }

    fn justify(&mut self, mode: JustifyMode) -> EscResult<()> {
        self.inner.justify(mode)?;
        Ok(())
    }

    /// Bold text at `width` × `height` times the normal size, or back to plain.
    fn style(&mut self, bold: bool, width: u8, height: u8) -> EscResult<()> {
        self.inner.bold(bold)?.size(width, height)?;
        Ok(())
    }

    /// The museum's name, large and centred; the caller is centred already.
    fn banner(&mut self, museum_name: &str) -> EscResult<()> {
        self.style(true, 2, 2)?;
        self.wrapped(museum_name, WIDTH / 2)?;
        self.style(false, 1, 1)
    }

    fn qr(&mut self, data: &str) -> EscResult<()> {
        // Model 2 is what every current printer and scanner expects; level M
        // survives a crease or a smudge without making the symbol larger.
        let option = QRCodeOption::new(
            QRCodeModel::Model2,
            QR_MODULE_DOTS,
            QRCodeCorrectionLevel::M,
        );
        self.inner.qrcode_option(data, option)?;
        Ok(())
    }
}

fn receipt_body(p: &mut Paper, r: &Receipt) -> EscResult<()> {
    p.justify(JustifyMode::CENTER)?;
    p.banner(&r.museum_name)?;
    for line in &r.address {
        p.wrapped(line, WIDTH)?;
    }
    if let Some(vat_number) = &r.vat_number {
        p.wrapped(&format!("VAT no. {vat_number}"), WIDTH)?;
    }
    if let Some(title) = &r.title {
        p.blank()?;
        p.style(true, 2, 1)?;
        p.wrapped(title, WIDTH / 2)?;
        p.style(false, 1, 1)?;
    }
    p.justify(JustifyMode::LEFT)?;
    p.blank()?;

    p.row("Date", &r.sold_at)?;
    p.row("Counter", &r.counter)?;
    p.row("Cashier", &r.cashier)?;
    p.row("Sale", &r.sale_id)?;
    p.row("Sale no.", &r.terminal_seq.to_string())?;
    p.rule()?;

    for line in &r.lines {
        p.row(&line.name, &format_minor(line.amount))?;
        p.line(&format!(
            "  {} x {}",
            line.quantity,
            format_minor(line.unit_price)
        ))?;
    }
    p.rule()?;

    // Double height keeps all 48 columns and still stands out.
    p.style(true, 1, 2)?;
    p.row(
        "TOTAL",
        &format!("{} {}", r.currency, format_minor(r.total)),
    )?;
    p.style(false, 1, 1)?;
    p.blank()?;

    if !r.vat.is_empty() {
        vat_table(p, r)?;
        p.blank()?;
    }

    p.row("Paid by", &r.payment_method)?;
    if let Some(tendered) = r.tendered {
        p.row("Tendered", &format_minor(tendered))?;
    }
    if let Some(change) = r.change {
        p.row("Change", &format_minor(change))?;
    }

    for ticket in &r.tickets {
        p.rule()?;
        ticket_stub(p, ticket)?;
    }

    if let Some(footer) = &r.footer {
        p.rule()?;
        p.justify(JustifyMode::CENTER)?;
        for paragraph in footer.lines() {
            p.wrapped(paragraph, WIDTH)?;
        }
        p.justify(JustifyMode::LEFT)?;
    }
    p.blank()
}

/// VAT columns: rate label, then net, tax and gross, 10 columns each, which
/// holds amounts up to 999999.99 with a space before.
fn vat_table(p: &mut Paper, r: &Receipt) -> EscResult<()> {
    const LABEL: usize = WIDTH - 3 * CELL;
    const CELL: usize = 10;
    for line in table_row("VAT", &["Net", "Tax", "Gross"], LABEL, CELL) {
        p.line(&line)?;
    }
    for vat in &r.vat {
        let cells = [
            format_minor(vat.net),
            format_minor(vat.tax),
            format_minor(vat.gross),
        ];
        let cells = [cells[0].as_str(), cells[1].as_str(), cells[2].as_str()];
        for line in table_row(&printable(&vat.label), &cells, LABEL, CELL) {
            p.line(&line)?;
        }
    }
    Ok(())
}

fn ticket_stub(p: &mut Paper, t: &ReceiptTicket) -> EscResult<()> {
    if t.code.is_empty() {
        // A blank QR would look like a ticket and admit no one.
        return Err(PrinterError::Input(format!(
            "the {} ticket has no code",
            t.product
        )));
    }
    p.justify(JustifyMode::CENTER)?;
    p.qr(&t.code)?;
    p.blank()?;
    p.style(true, 1, 1)?;
    p.wrapped(&t.product, WIDTH)?;
    p.style(false, 1, 1)?;
    p.wrapped(&t.slot, WIDTH)?;
    p.line(&format!("admits {}", t.admits))?;
    p.justify(JustifyMode::LEFT)
}

fn document_body(p: &mut Paper, d: &TextDocument) -> EscResult<()> {
    p.justify(JustifyMode::CENTER)?;
    p.banner(&d.museum_name)?;
    p.blank()?;
    p.style(true, 1, 2)?;
    p.wrapped(&d.title, WIDTH)?;
    p.style(false, 1, 1)?;
    p.justify(JustifyMode::LEFT)?;
    p.rule()?;
    for (label, value) in &d.rows {
        p.row(label, value)?;
    }
    p.rule()?;
    p.blank()
}
