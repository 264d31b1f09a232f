//! Getting finished bytes to a printer: TCP (port 9100), a file or device
//! node, or USB. Each sends the whole receipt with one write call; they
//! block, for at most the timeouts below on the network.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use escpos::driver::{Driver, NativeUsbDriver};
use escpos::errors::PrinterError;

use super::error::PrintError;

/// How long a network printer may take to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a network printer may refuse to take more data (paper out, cover
/// open) before we give up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the printer to close its side after our last byte.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) fn send_network(host: &str, port: u16, bytes: &[u8]) -> Result<(), PrintError> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let network = |source: io::Error| PrintError::Network {
        addr: addr.clone(),
        source,
    };
    let mut stream = connect(host, port, &addr)?;
    stream
        .set_write_timeout(Some(WRITE_TIMEOUT))
        .map_err(network)?;
    stream.set_nodelay(true).map_err(network)?;
    stream.write_all(bytes).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => PrintError::Stalled {
            addr: addr.clone(),
            timeout: WRITE_TIMEOUT,
        },
        _ => network(e),
    })?;
    stream.flush().map_err(network)?;
    stream.shutdown(Shutdown::Write).map_err(network)?;
    drain(&mut stream);
    Ok(())
}

/// Tries each address of `host` within one shared [`CONNECT_TIMEOUT`].
fn connect(host: &str, port: u16, addr: &str) -> Result<TcpStream, PrintError> {
    let unknown = |reason: String| PrintError::UnknownHost {
        host: host.to_string(),
        reason,
    };
    let candidates: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| unknown(e.to_string()))?
        .collect();
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut last_error = None;
    for candidate in &candidates {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(candidate, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    let no_answer = PrintError::NoAnswer {
        addr: addr.to_string(),
        timeout: CONNECT_TIMEOUT,
    };
    Err(match last_error {
        None if candidates.is_empty() => unknown("it has no address".to_string()),
        None => no_answer,
        Some(e) => match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => no_answer,
            io::ErrorKind::ConnectionRefused => PrintError::Refused {
                addr: addr.to_string(),
            },
            _ => PrintError::Network {
                addr: addr.to_string(),
                source: e,
            },
        },
    })
}

/// Reads until the printer closes its side. Closing a socket that still has
/// unread bytes from the peer (printers may send status bytes) makes Linux
/// reset the connection, which can throw away the end of the receipt still in
/// flight. The receipt is already sent, so a silent printer is not an error.
fn drain(stream: &mut TcpStream) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Appends to `path`, creating it if missing: a spool file for tests and
/// demos, or a device node such as `/dev/usb/lp0`.
pub(crate) fn send_file(path: &Path, bytes: &[u8]) -> Result<(), PrintError> {
    let failed = |source: io::Error| PrintError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.flush().map_err(failed)
}

/// USB through the escpos crate's `native_usb` driver (nusb: pure Rust over
/// Linux usbfs, no libusb). It needs read-write access to the device under
/// `/dev/bus/usb` (a udev rule) and a printer with bulk in and out endpoints.
/// When it cannot open the printer but the kernel's usblp driver has it as
/// `/dev/usb/lpN` (writable for the `lp` group), that node is used instead.
pub(crate) fn send_usb(vendor_id: u16, product_id: u16, bytes: &[u8]) -> Result<(), PrintError> {
    let open_error = match NativeUsbDriver::open(vendor_id, product_id) {
        Ok(driver) => {
            return driver
                .write(bytes)
                .and_then(|()| driver.flush())
                .map_err(|e| usb_error(vendor_id, product_id, e));
        }
        Err(e) => e,
    };
    // Only when nothing was sent: a retry after a failed write could print
    // the receipt twice.
    if let Some(node) = usblp_node(Path::new("/sys"), vendor_id, product_id) {
        let written = OpenOptions::new()
            .write(true)
            .open(&node)
            .and_then(|mut device| device.write_all(bytes).and_then(|()| device.flush()));
        return written.map_err(|e| PrintError::Usb {
            vendor_id,
            product_id,
            message: format!("{}: {e}", node.display()),
        });
    }
    Err(usb_error(vendor_id, product_id, open_error))
}

fn usb_error(vendor_id: u16, product_id: u16, error: PrinterError) -> PrintError {
    let message = match error {
        PrinterError::Io(m) | PrinterError::Input(m) | PrinterError::InvalidResponse(m) => m,
    };
    // escpos reports a missing device only through this text.
    if message == "USB device not found" {
        return PrintError::UsbNotFound {
            vendor_id,
            product_id,
        };
    }
    let message = if message.contains("ermission") {
        format!(
            "{message} (this user may not use the device: add a udev rule, \
             or use file:/dev/usb/lp0)"
        )
    } else {
        message
    };
    PrintError::Usb {
        vendor_id,
        product_id,
        message,
    }
}

/// The usblp device node for a VID:PID, found through sysfs under `sys`:
/// `class/usbmisc/lpN/device` is the printer's USB interface, whose parent
/// directory holds the device's `idVendor` and `idProduct`.
fn usblp_node(sys: &Path, vendor_id: u16, product_id: u16) -> Option<PathBuf> {
    let read_id = |path: PathBuf| {
        let text = std::fs::read_to_string(path).ok()?;
        u16::from_str_radix(text.trim(), 16).ok()
    };
    let mut names: Vec<String> = std::fs::read_dir(sys.join("class/usbmisc"))
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("lp"))
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        // `..` after the `device` symlink is the parent of its target.
        let device = sys.join("class/usbmisc").join(&name).join("device/..");
        let matches = read_id(device.join("idVendor"))? == vendor_id
            && read_id(device.join("idProduct"))? == product_id;
        matches.then(|| PathBuf::from("/dev/usb").join(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn usblp_nodes_are_found_by_vendor_and_product() -> io::Result<()> {
        let sys = tempfile::tempdir()?;
        let root = sys.path();
        for (lp, port, vendor, product) in [
            ("lp0", "1-1", "1a86\n", "7584\n"),
            ("lp1", "1-2", "04b8\n", "0e15\n"),
        ] {
            let interface = root.join(format!("devices/usb1/{port}/{port}:1.0"));
            std::fs::create_dir_all(&interface)?;
            std::fs::write(root.join(format!("devices/usb1/{port}/idVendor")), vendor)?;
            std::fs::write(root.join(format!("devices/usb1/{port}/idProduct")), product)?;
            let class = root.join("class/usbmisc").join(lp);
            std::fs::create_dir_all(&class)?;
            std::os::unix::fs::symlink(&interface, class.join("device"))?;
        }
        assert_eq!(
            usblp_node(root, 0x04b8, 0x0e15),
            Some(PathBuf::from("/dev/usb/lp1"))
        );
        assert_eq!(usblp_node(root, 0x04b8, 0x0202), None);
        assert_eq!(usblp_node(&root.join("missing"), 0x04b8, 0x0e15), None);
        Ok(())
    }

    #[test]
    fn a_missing_usb_printer_is_named() {
        let e = usb_error(
            0x04b8,
            0x0e15,
            PrinterError::Io("USB device not found".into()),
        );
        assert_eq!(e.to_string(), "no USB printer 04b8:0e15 is connected");
    }
}
