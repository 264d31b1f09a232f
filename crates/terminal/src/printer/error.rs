//! Why a print failed, in words a cashier can act on. The sale stands either
//! way; these messages end up on the counter's screen next to "Reprint".

use std::io;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    #[error(
        "printer spec {spec:?} is not valid ({reason}): \
         printer must be none, network:HOST:PORT, file:PATH or usb:VID:PID"
    )]
    InvalidSpec { spec: String, reason: String },

    /// A receipt that cannot be laid out; a bug or absurd data, not the printer.
    #[error("the receipt could not be laid out for printing: {0}")]
    Layout(String),

    #[error("printer host {host} could not be found: {reason}")]
    UnknownHost { host: String, reason: String },

    #[error("printer at {addr} did not answer within {} s", timeout.as_secs())]
    NoAnswer { addr: String, timeout: Duration },

    #[error("printer at {addr} refused the connection: is it switched on, and is the port right?")]
    Refused { addr: String },

    #[error(
        "printer at {addr} stopped taking data for {} s: check paper and cover",
        timeout.as_secs()
    )]
    Stalled { addr: String, timeout: Duration },

    #[error("printer at {addr} failed: {source}")]
    Network {
        addr: String,
        #[source]
        source: io::Error,
    },

    #[error("could not write to printer file {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("no USB printer {vendor_id:04x}:{product_id:04x} is connected")]
    UsbNotFound { vendor_id: u16, product_id: u16 },

    #[error("USB printer {vendor_id:04x}:{product_id:04x} failed: {message}")]
    Usb {
        vendor_id: u16,
        product_id: u16,
        message: String,
    },
}
