//! Receipt printing: lays out a [`Receipt`] or [`TextDocument`] as ESC/POS
//! bytes for a 48-column (80 mm) thermal printer and sends them to the printer
//! named by a [`PrinterSpec`] (`none`, `network:HOST:PORT`, `file:PATH`,
//! `usb:VID:PID`).
//!
//! A receipt is always rendered completely in memory before the first byte
//! leaves, and then sent with one write: a layout problem never leaves half a
//! receipt in the printer. Everything here is blocking IO (a network printer
//! may take seconds to time out): call it from `spawn_blocking` or a thread.
//!
//! Text goes out in code page WPC1252 (see `charset`); [`decode`] reads the
//! bytes back, for tests and for looking at what a printer was sent.

mod charset;
pub mod decode;
mod error;
mod layout;
mod render;
mod spec;
mod transport;

pub use error::PrintError;
pub use render::{render_document, render_receipt};
pub use spec::PrinterSpec;
pub use transport::{CONNECT_TIMEOUT, WRITE_TIMEOUT};

use crate::receipt::{Receipt, TextDocument};

/// What happened when a print was asked for, when nothing went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrintOutcomeKind {
    /// The whole receipt was handed to the printer.
    Printed,
    /// The spec is `none`: there was nothing to do.
    NoPrinter,
}

/// Renders `receipt` and sends it to `spec`. Blocking; see the module doc.
pub fn print_receipt(
    spec: &PrinterSpec,
    receipt: &Receipt,
) -> Result<PrintOutcomeKind, PrintError> {
    if matches!(spec, PrinterSpec::None) {
        return Ok(PrintOutcomeKind::NoPrinter);
    }
    let bytes = render_receipt(receipt)?;
    send(spec, &bytes)
}

/// Renders `document` (an X/Z report, a test page) and sends it to `spec`.
/// Blocking; see the module doc.
pub fn print_document(
    spec: &PrinterSpec,
    document: &TextDocument,
) -> Result<PrintOutcomeKind, PrintError> {
    if matches!(spec, PrinterSpec::None) {
        return Ok(PrintOutcomeKind::NoPrinter);
    }
    let bytes = render_document(document)?;
    send(spec, &bytes)
}

/// Sends already rendered ESC/POS bytes to `spec` in one write. Blocking.
pub fn send(spec: &PrinterSpec, bytes: &[u8]) -> Result<PrintOutcomeKind, PrintError> {
    match spec {
        PrinterSpec::None => return Ok(PrintOutcomeKind::NoPrinter),
        PrinterSpec::Network { host, port } => transport::send_network(host, *port, bytes)?,
        PrinterSpec::File { path } => transport::send_file(path, bytes)?,
        PrinterSpec::Usb {
            vendor_id,
            product_id,
        } => transport::send_usb(*vendor_id, *product_id, bytes)?,
    }
    Ok(PrintOutcomeKind::Printed)
}
