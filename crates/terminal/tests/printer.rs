//! The receipt printer, end to end: a loopback TCP listener stands in for a
//! network printer (port 9100 in real life), the bytes it receives are decoded
//! back, and every QR code on the paper must verify as a signed ticket.

use std::error::Error;
use std::io::Read;
use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use tessera_core::ids::new_id;
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::{KeyRing, TicketClaims, TicketSigner};
use tessera_terminal::printer::decode::{decode, Decoded};
use tessera_terminal::printer::{
    print_document, print_receipt, render_document, render_receipt, PrintError, PrintOutcomeKind,
    PrinterSpec, CONNECT_TIMEOUT,
};
use tessera_terminal::receipt::{Receipt, ReceiptLine, ReceiptTicket, ReceiptVat, TextDocument};

type TestResult = Result<(), Box<dyn Error>>;

const KEY_ID: u32 = 31;
const MUSEUM: &str = "Musée des Tessères";
const SPEC_HELP: &str = "printer must be none, network:HOST:PORT, file:PATH or usb:VID:PID";

fn signer() -> TicketSigner {
    TicketSigner::from_seed(KEY_ID, [7u8; 32])
}

fn key_ring() -> Result<KeyRing, Box<dyn Error>> {
    let mut ring = KeyRing::new();
    ring.insert(KEY_ID, signer().public_key(), false)?;
    Ok(ring)
}

fn ticket(product_id: &str, product: &str, admits: u8) -> Result<ReceiptTicket, Box<dyn Error>> {
    let claims = TicketClaims {
        key_id: KEY_ID,
        ticket_id: new_id(),
        slot: "2026-12-02T14:00".parse::<SlotId>()?,
        window_minutes: 30,
        admits,
        product_id: product_id.to_string(),
    };
    Ok(ReceiptTicket {
        code: signer().sign(&claims)?,
        product: product.to_string(),
        slot: "Wed 2 Dec 2026, entry 14:00-14:30".to_string(),
        admits,
    })
}

fn line(quantity: u32, name: &str, unit_price: i64) -> ReceiptLine {
    ReceiptLine {
        quantity,
        name: name.to_string(),
        unit_price,
        amount: i64::from(quantity) * unit_price,
    }
}

/// A cash sale of two adults, a child and a family ticket plus an audio guide,
/// at two VAT rates.
fn receipt() -> Result<Receipt, Box<dyn Error>> {
    Ok(Receipt {
        museum_name: MUSEUM.to_string(),
        address: vec!["1 rue des Mosaïques".into(), "75003 Paris".into()],
        vat_number: Some("FR 12 345678901".into()),
        title: None,
        sold_at: "2026-12-02 11:05".into(),
        counter: "Desk 1".into(),
        cashier: "Inès".into(),
        sale_id: new_id().to_string(),
        terminal_seq: 42,
        lines: vec![
            line(2, "Adult", 1200),
            line(1, "Child (6-17)", 600),
            line(1, "Family (2+2)", 3000),
            line(1, "Audio guide", 500),
        ],
        currency: "EUR".into(),
        total: 6500,
        vat: vec![
            ReceiptVat {
                label: "VAT 5.5 %".into(),
                net: 5687,
                tax: 313,
                gross: 6000,
            },
            ReceiptVat {
                label: "VAT 10 %".into(),
                net: 455,
                tax: 45,
                gross: 500,
            },
        ],
        payment_method: "Cash".into(),
        tendered: Some(10000),
        change: Some(3500),
        tickets: vec![
            ticket("adult", "Adult", 1)?,
            ticket("adult", "Adult", 1)?,
            ticket("child", "Child (6-17)", 1)?,
            ticket("family", "Family (2+2)", 4)?,
        ],
        footer: Some("Thank you for your visit!\nValid on the day and entry shown.".into()),
    })
}

fn z_report() -> TextDocument {
    TextDocument {
        museum_name: MUSEUM.to_string(),
        title: "Z report Desk 1, 2026-12-02".into(),
        rows: vec![
            ("Opening float".into(), "100.00".into()),
            ("Cash sales".into(), "115.00".into()),
            ("Expected cash".into(), "215.00".into()),
            ("Counted cash".into(), "214.50".into()),
            ("Difference".into(), "-0.50".into()),
        ],
    }
}

/// Runs `print` against a loopback listener and returns what it received,
/// read to EOF as a real printer would.
fn via_loopback_printer<T>(
    print: impl FnOnce(&PrinterSpec) -> Result<T, PrintError>,
) -> Result<(T, Vec<u8>), Box<dyn Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let printer = thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut received = Vec::new();
        stream.read_to_end(&mut received)?;
        Ok(received)
    });
    let spec: PrinterSpec = format!("network:127.0.0.1:{port}").parse()?;
    let outcome = print(&spec)?;
    let received = printer
        .join()
        .map_err(|_| "the loopback printer thread panicked")??;
    Ok((outcome, received))
}

/// The line that starts with `left` (after any indent) and ends with `right`.
fn find_row<'a>(decoded: &'a Decoded, left: &str, right: &str) -> Option<&'a str> {
    decoded
        .lines()
        .find(|l| l.trim_start().starts_with(left) && l.ends_with(right))
}

fn assert_row(decoded: &Decoded, left: &str, right: &str) {
    assert!(
        find_row(decoded, left, right).is_some(),
        "no line {left:?} ... {right:?} in:\n{}",
        decoded.text
    );
}

fn assert_receipt_printed(decoded: &Decoded, r: &Receipt) -> TestResult {
    let text = &decoded.text;
    assert!(text.contains(MUSEUM), "museum name missing:\n{text}");
    for address in &r.address {
        assert!(text.contains(address.as_str()), "{address} missing");
    }
    assert_row(decoded, "VAT no.", "FR 12 345678901");
    assert_row(decoded, "Date", "2026-12-02 11:05");
    assert_row(decoded, "Counter", "Desk 1");
    assert_row(decoded, "Cashier", "Inès");
    assert_row(decoded, "Sale", &r.sale_id);
    assert_row(decoded, "Sale no.", "42");

    let lines: Vec<&str> = decoded.lines().collect();
    for item in &r.lines {
        let amount = format!("{}.{:02}", item.amount / 100, item.amount % 100);
        let at = lines
            .iter()
            .position(|l| l.starts_with(&item.name) && l.ends_with(&amount))
            .ok_or_else(|| format!("no line for {} {amount} in:\n{text}", item.name))?;
        let unit = format!("{}.{:02}", item.unit_price / 100, item.unit_price % 100);
        assert_eq!(
            lines.get(at + 1).map(|l| l.trim()),
            Some(format!("{} x {unit}", item.quantity).as_str()),
            "quantity line of {}",
            item.name
        );
    }

    assert_row(decoded, "TOTAL", "EUR 65.00");
    for (label, figures) in [
        ("VAT 5.5 %", ["56.87", "3.13", "60.00"]),
        ("VAT 10 %", ["4.55", "0.45", "5.00"]),
    ] {
        let vat_line = find_row(decoded, label, figures[2])
            .ok_or_else(|| format!("no VAT line {label}:\n{text}"))?;
        let tail: Vec<&str> = vat_line[label.len()..].split_whitespace().collect();
        assert_eq!(tail, figures, "{vat_line}");
    }
    assert_row(decoded, "Paid by", "Cash");
    assert_row(decoded, "Tendered", "100.00");
    assert_row(decoded, "Change", "35.00");

    // One QR per ticket, in order, each a ticket the gate will accept.
    assert_eq!(decoded.qr_payloads.len(), r.tickets.len());
    let ring = key_ring()?;
    for (payload, ticket) in decoded.qr_payloads.iter().zip(&r.tickets) {
        assert_eq!(payload, &ticket.code);
        let claims = ring.verify(payload)?;
        assert_eq!(claims.admits, ticket.admits);
        assert_eq!(claims.key_id, KEY_ID);
    }
    let admits: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.trim().starts_with("admits "))
        .collect();
    assert_eq!(admits.len(), r.tickets.len());
    assert!(admits.iter().any(|l| l.trim() == "admits 4"));
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.trim() == "Wed 2 Dec 2026, entry 14:00-14:30")
            .count(),
        r.tickets.len()
    );
    assert!(text.contains("Thank you for your visit!"));
    assert!(decoded.cut, "the paper is not cut");
    Ok(())
}

#[test]
fn a_network_printer_receives_the_whole_receipt() -> TestResult {
    let r = receipt()?;
    let (outcome, received) = via_loopback_printer(|spec| print_receipt(spec, &r))?;
    assert_eq!(outcome, PrintOutcomeKind::Printed);
    assert_eq!(
        received,
        render_receipt(&r)?,
        "sent bytes differ from the rendering"
    );
    let decoded = decode(&received)?;
    assert_receipt_printed(&decoded, &r)
}

#[test]
fn a_printer_that_is_not_listening_fails_quickly_and_clearly() -> TestResult {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let spec: PrinterSpec = format!("network:127.0.0.1:{port}").parse()?;
    let started = Instant::now();
    let err = match print_receipt(&spec, &receipt()?) {
        Ok(outcome) => return Err(format!("printed to nobody: {outcome:?}").into()),
        Err(e) => e,
    };
    assert!(started.elapsed() <= CONNECT_TIMEOUT + Duration::from_secs(1));
    assert!(
        matches!(
            err,
            PrintError::Refused { .. } | PrintError::NoAnswer { .. }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("printer at 127.0.0.1:{port} ")),
        "{message}"
    );
    Ok(())
}

#[test]
fn timeouts_are_explained_in_seconds() {
    let err = PrintError::NoAnswer {
        addr: "192.168.1.50:9100".into(),
        timeout: CONNECT_TIMEOUT,
    };
    assert_eq!(
        err.to_string(),
        "printer at 192.168.1.50:9100 did not answer within 3 s"
    );
}

#[test]
fn a_file_printer_appends_each_receipt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("spool").with_extension("bin");
    let spec: PrinterSpec = format!("file:{}", path.display()).parse()?;
    let r = receipt()?;
    assert_eq!(print_receipt(&spec, &r)?, PrintOutcomeKind::Printed);
    let once = std::fs::read(&path)?;
    assert_eq!(once, render_receipt(&r)?);
    assert_eq!(print_receipt(&spec, &r)?, PrintOutcomeKind::Printed);
    let twice = std::fs::read(&path)?;
    assert_eq!(twice, [once.as_slice(), once.as_slice()].concat());
    let decoded = decode(&twice)?;
    assert_eq!(decoded.qr_payloads.len(), 2 * r.tickets.len());
    assert_eq!(decoded.text.matches(MUSEUM).count(), 2);
    Ok(())
}

#[test]
fn a_file_printer_in_a_missing_folder_names_the_path() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("no such folder").join("receipts.bin");
    let spec = PrinterSpec::File { path: path.clone() };
    match print_receipt(&spec, &receipt()?) {
        Err(e @ PrintError::File { .. }) => {
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        other => return Err(format!("expected a file error, got {other:?}").into()),
    }
    assert!(!path.exists());
    Ok(())
}

#[test]
fn no_printer_prints_nothing() -> TestResult {
    let spec: PrinterSpec = "none".parse()?;
    assert_eq!(spec, PrinterSpec::None);
    assert_eq!(
        print_receipt(&spec, &receipt()?)?,
        PrintOutcomeKind::NoPrinter
    );
    assert_eq!(
        print_document(&spec, &z_report())?,
        PrintOutcomeKind::NoPrinter
    );
    Ok(())
}

#[test]
fn bad_specs_are_rejected_with_the_allowed_forms() {
    for text in [
        "",
        "cups:front-desk",
        "network:192.168.1.50",
        "usb:epson",
        "file:",
    ] {
        match text.parse::<PrinterSpec>() {
            Ok(spec) => panic!("{text:?} was accepted as {spec:?}"),
            Err(e) => {
                assert!(matches!(e, PrintError::InvalidSpec { .. }), "{e:?}");
                assert!(e.to_string().contains(SPEC_HELP), "{e}");
            }
        }
    }
}

#[test]
fn a_usb_printer_that_is_not_there_is_an_error() {
    let spec: PrinterSpec = match "usb:ffff:fffe".parse() {
        Ok(spec) => spec,
        Err(e) => panic!("{e}"),
    };
    let err = match print_document(&spec, &z_report()) {
        Ok(outcome) => panic!("printed to a USB printer that does not exist: {outcome:?}"),
        Err(e) => e,
    };
    assert!(
        matches!(err, PrintError::UsbNotFound { .. } | PrintError::Usb { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("ffff:fffe"), "{err}");
}

#[test]
fn a_z_report_prints_its_rows() -> TestResult {
    let report = z_report();
    let (outcome, received) = via_loopback_printer(|spec| print_document(spec, &report))?;
    assert_eq!(outcome, PrintOutcomeKind::Printed);
    assert_eq!(received, render_document(&report)?);
    let decoded = decode(&received)?;
    assert!(decoded.text.contains(MUSEUM));
    assert!(decoded.lines().any(|l| l.trim() == report.title));
    for (label, value) in &report.rows {
        assert_row(&decoded, label, value);
    }
    assert!(decoded.qr_payloads.is_empty());
    assert!(decoded.cut);
    Ok(())
}

#[test]
fn a_reprint_says_so_and_odd_text_cannot_reach_the_printer_raw() -> TestResult {
    let mut r = receipt()?;
    r.title = Some("REPRINT".into());
    r.cashier = "Łukasz".into();
    // ESC i is a cut on many printers; the decoder would refuse it.
    r.lines[0].name = "Adult\u{1b}i".into();
    let decoded = decode(&render_receipt(&r)?)?;
    assert!(decoded.lines().any(|l| l.trim() == "REPRINT"));
    assert_row(&decoded, "Cashier", "Lukasz");
    assert_row(&decoded, "Adult i", "24.00");
    Ok(())
}

#[test]
fn a_ticket_without_a_code_is_refused_before_anything_is_sent() -> TestResult {
    let mut r = receipt()?;
    r.tickets[1].code.clear();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("receipts.bin");
    let spec = PrinterSpec::File { path: path.clone() };
    assert!(matches!(
        print_receipt(&spec, &r),
        Err(PrintError::Layout(_))
    ));
    assert!(!path.exists(), "half a receipt was written");
    Ok(())
}
