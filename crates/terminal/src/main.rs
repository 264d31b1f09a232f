//! `tessera-terminal`: the counter engine from the command line, for headless
//! counters, scripts and tests. Every command works on one data directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tessera_core::api::gate::RedeemResult;
use tessera_core::money::format_minor;
use tessera_core::pricing::CartLine;
use tessera_core::slot::SlotId;
use tessera_terminal::views::{
    PaymentRequest, PrintOutcome, SaleRequest, SaleView, ScanView, ShiftReport,
};
use tessera_terminal::Terminal;
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "tessera-terminal",
    version,
    about = "Tessera counter: sell from leases, offline or online"
)]
struct Cli {
    /// The terminal's data directory (its own SQLite database).
    #[arg(
        long,
        global = true,
        env = "TESSERA_DATA_DIR",
        default_value = "tessera-terminal"
    )]
    data: PathBuf,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Become a counter (or gate) with a one-time code from the server.
    Enrol {
        #[arg(long)]
        server: String,
        #[arg(long)]
        code: String,
        #[arg(long, default_value = "Counter")]
        name: String,
    },
    /// Online?, pending uploads, leases per slot, live availability.
    Status,
    /// Sell tickets for one slot.
    Sell {
        #[arg(long)]
        slot: String,
        /// PRODUCT=QUANTITY, repeatable: --item adult=2 --item child=1
        #[arg(long = "item", required = true)]
        items: Vec<String>,
        /// Membership numbers for member tickets, one per ticket.
        #[arg(long = "member")]
        members: Vec<String>,
        /// cash:CENTS (amount handed over) or card
        #[arg(long)]
        pay: String,
        /// Also becomes this counter's printer: none, network:HOST:PORT, file:PATH, usb:VID:PID
        #[arg(long)]
        printer: Option<String>,
    },
    /// One sync round now.
    Sync,
    /// Keep syncing in the foreground (every ~2 s online, backing off offline).
    Run {
        /// Also share admissions with the gate peers (see `peers`), listening
        /// on this address, e.g. 0.0.0.0:7801.
        #[arg(long, env = "TESSERA_PEER_LISTEN")]
        peer_listen: Option<std::net::SocketAddr>,
    },
    /// Gate peers: the other gates this one shares its admissions with over
    /// the LAN. Without arguments, shows the list; with URLs, replaces it.
    Peers {
        /// Base URLs of the other gates' peer listeners, e.g. http://10.0.0.12:7801
        urls: Vec<String>,
        /// Empty the list (share with nobody).
        #[arg(long, conflicts_with = "urls")]
        clear: bool,
    },
    /// Open or close the cashier's shift.
    Shift {
        #[command(subcommand)]
        action: ShiftAction,
    },
    /// X report (interim) of the open shift, or Z report of the last closed one.
    Report {
        #[arg(value_parser = ["x", "z"])]
        kind: String,
        /// Print it on the receipt printer too.
        #[arg(long)]
        print: bool,
    },
    /// Void a sale (needs a supervisor's PIN).
    Void {
        #[arg(long)]
        sale: String,
        #[arg(long)]
        supervisor_pin: String,
        /// Why (on the report and the server's record; required).
        #[arg(long)]
        reason: String,
    },
    /// Today's sales at this counter.
    Sales,
    /// Print a sale's receipt again.
    Reprint {
        #[arg(long)]
        sale: String,
    },
    /// Gate mode: scan a ticket code, or read codes from standard input one per
    /// line, the way a keyboard-wedge barcode scanner types them.
    Scan {
        code: Option<String>,
        /// While reading standard input, share admissions with the gate
        /// peers (see `peers`), listening on this address.
        #[arg(long, env = "TESSERA_PEER_LISTEN")]
        peer_listen: Option<std::net::SocketAddr>,
    },
    /// Set the receipt printer (and optionally print a test page).
    Printer {
        spec: String,
        #[arg(long)]
        test: bool,
    },
}

#[derive(Subcommand)]
enum ShiftAction {
    Open {
        /// Cash in the drawer at the start, in cents.
        #[arg(long)]
        float: i64,
        #[arg(long)]
        pin: String,
    },
    Close {
        /// Cash counted in the drawer at the end, in cents.
        #[arg(long)]
        counted: i64,
    },
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn parse_items(items: &[String], members: &[String]) -> Result<Vec<CartLine>> {
    let mut lines: Vec<CartLine> = Vec::new();
    for item in items {
        let (product, quantity) = item
            .split_once('=')
            .with_context(|| format!("--item must look like adult=2, got {item:?}"))?;
        let quantity: u32 = quantity
            .trim()
            .parse()
            .with_context(|| format!("quantity in {item:?} must be a whole number"))?;
        lines.push(CartLine {
            product_id: product.trim().to_string(),
            quantity,
            membership_numbers: Vec::new(),
        });
    }
    if !members.is_empty() {
        let Some(line) = lines.iter_mut().find(|l| l.product_id == "member") else {
            bail!("--member given but no member tickets in the sale");
        };
        line.membership_numbers = members.to_vec();
    }
    Ok(lines)
}

fn parse_payment(text: &str) -> Result<PaymentRequest> {
    match text.split_once(':') {
        None if text == "card" => Ok(PaymentRequest::Card),
        Some(("cash", cents)) => Ok(PaymentRequest::Cash {
            tendered: cents.trim().parse().with_context(|| {
                format!("cash amount must be whole cents, e.g. cash:5000, got {cents:?}")
            })?,
        }),
        _ => bail!("--pay must be cash:CENTS or card, got {text:?}"),
    }
}

fn print_outcome(p: &PrintOutcome) -> String {
    match p {
        PrintOutcome::Printed => "receipt printed".into(),
        PrintOutcome::NoPrinter => "no printer configured".into(),
        PrintOutcome::Failed { message } => {
            format!("RECEIPT NOT PRINTED ({message}); the sale stands: reprint it")
        }
    }
}

fn show_scan(v: &ScanView, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(v)?);
        return Ok(());
    }
    let what = match (&v.product_name, v.admits) {
        (Some(p), Some(n)) => format!("{p}, admits {n}"),
        _ => String::new(),
    };
    let mode = if v.offline { " [OFFLINE]" } else { "" };
    match v.result {
        RedeemResult::Admitted => {
            println!("ADMIT  {what}{mode}  ({} today)", v.admitted_today)
        }
        RedeemResult::Denied => {
            println!("DENY   {}  {what}{mode}", v.message)
        }
    }
    Ok(())
}

fn show_report(r: &ShiftReport) {
    let m = |v: i64| format!("{} {}", format_minor(v), r.currency);
    println!(
        "{:?} report — {} — cashier {}",
        r.kind, r.counter, r.cashier
    );
    println!(
        "  sales {}  voids {}  admissions {}  gross {}",
        r.sales_count,
        r.voids_count,
        r.admissions,
        m(r.gross)
    );
    for t in &r.by_method {
        println!(
            "  {:<5} sales {}  refunds {}  net {}",
            t.method.as_str(),
            m(t.sales),
            m(t.refunds),
            m(t.net)
        );
    }
    for p in &r.by_product {
        println!("  {:<40} x{:<4} {}", p.name, p.quantity, m(p.gross));
    }
    for v in &r.vat {
        println!(
            "  VAT {:<6} net {}  tax {}",
            v.label,
            m(v.amounts.net),
            m(v.amounts.tax)
        );
    }
    println!(
        "  float {}  expected cash {}",
        m(r.float),
        m(r.expected_cash)
    );
    if let (Some(c), Some(d)) = (r.counted_cash, r.over_short) {
        println!(
            "  counted {}  {} {}",
            m(c),
            if d >= 0 { "over" } else { "SHORT" },
            m(d.abs())
        );
    }
}

async fn run(cli: Cli) -> Result<()> {
    let Cli {
        data,
        json,
        command,
    } = cli;
    if let Command::Enrol { server, code, name } = &command {
        return enrol(&data, server, code, name).await;
    }
    let t = Terminal::open(&data)?;
    match command {
        Command::Enrol { .. } => unreachable!("handled above"),
        Command::Status => status(&t, json),
        Command::Sell {
            slot,
            items,
            members,
            pay,
            printer,
        } => sell(&t, &slot, &items, &members, &pay, printer.as_deref(), json).await,
        Command::Sync => sync_once(&t, json).await,
        Command::Run { peer_listen } => {
            start_peers(&t, peer_listen).await?;
            sync_until_stopped(&t).await
        }
        Command::Peers { urls, clear } => peers(&t, &urls, clear, json),
        Command::Shift { action } => shift(&t, action, json).await,
        Command::Report { kind, print } => report(&t, &kind, print, json).await,
        Command::Void {
            sale,
            supervisor_pin,
            reason,
        } => void(&t, &sale, &supervisor_pin, &reason).await,
        Command::Sales => sales(&t, json),
        Command::Reprint { sale } => {
            println!("{}", print_outcome(&t.reprint(sale_id(&sale)?).await?));
            Ok(())
        }
        Command::Scan {
            code: Some(code), ..
        } => scan_one(&t, &code, json).await,
        Command::Scan {
            code: None,
            peer_listen,
        } => {
            start_peers(&t, peer_listen).await?;
            scan_stdin(&t, json).await
        }
        Command::Printer { spec, test } => printer(&t, &spec, test).await,
    }
}

async fn enrol(dir: &Path, server: &str, code: &str, name: &str) -> Result<()> {
    let t = Terminal::enrol(dir, server, code, name).await?;
    println!(
        "enrolled as {} \"{}\" ({})",
        t.role().as_str(),
        t.name(),
        t.device_id()
    );
    Ok(())
}

fn status(t: &Terminal, json: bool) -> Result<()> {
    let status = t.status()?;
    let slots = t.slots_today().unwrap_or_default();
    if json {
        return print_json(&serde_json::json!({"status": status, "slots": slots}));
    }
    println!(
        "{} — {} — {}",
        status.device_name,
        if status.online { "ONLINE" } else { "OFFLINE" },
        status.museum
    );
    println!(
        "waiting to upload: {} sales, {} voids, {} shift reports; last sync {}",
        status.pending_sales,
        status.pending_voids,
        status.pending_shifts,
        status
            .last_sync_at
            .map(|t| t.to_string())
            .unwrap_or_else(|| "never".into())
    );
    if let Some(e) = &status.last_sync_error {
        println!("last sync failed: {e}");
    }
    for p in &status.gate_peers {
        let state = match p.reachable {
            Some(true) => "answers",
            Some(false) => "UNREACHABLE",
            None => "not sharing (no --peer-listen here)",
        };
        println!("gate peer {}: {state}", p.url);
    }
    if let Some(s) = &status.shift {
        println!(
            "shift open: {} since {}, float {}",
            s.cashier,
            s.opened_at,
            format_minor(s.float)
        );
    }
    for s in slots {
        println!(
            "  {}  this counter can sell {:>3}   left in museum {:>4}/{}{}",
            s.slot_id,
            s.lease_left,
            s.remaining,
            s.capacity,
            if s.closed { "  (closed)" } else { "" }
        );
    }
    Ok(())
}

async fn sell(
    t: &Terminal,
    slot: &str,
    items: &[String],
    members: &[String],
    pay: &str,
    printer: Option<&str>,
    json: bool,
) -> Result<()> {
    if let Some(p) = printer {
        t.set_printer(p)?;
    }
    let slot_id: SlotId = slot.parse()?;
    let request = SaleRequest {
        slot_id,
        items: parse_items(items, members)?,
        payment: parse_payment(pay)?,
    };
    let done = t.sell(request).await?;
    if json {
        return print_json(&done);
    }
    show_sale(&done.sale);
    println!("{}", print_outcome(&done.printed));
    Ok(())
}

fn show_sale(s: &SaleView) {
    println!("sale #{} {} for {}", s.terminal_seq, s.sale_id, s.slot_id);
    for l in &s.lines {
        println!(
            "  {} x {:<40} {}",
            l.quantity,
            l.name,
            format_minor(l.amounts.gross)
        );
    }
    println!("  total {} {}", format_minor(s.total), s.currency);
    if let (Some(tendered), Some(change)) = (s.tendered, s.change) {
        println!(
            "  cash {}  change {}",
            format_minor(tendered),
            format_minor(change)
        );
    }
    for ticket in &s.tickets {
        println!("  ticket {} {}", ticket.product_id, ticket.code);
    }
}

async fn sync_once(t: &Terminal, json: bool) -> Result<()> {
    let summary = t.sync_now().await?;
    if json {
        return print_json(&summary);
    }
    println!(
        "synced: {} sales uploaded, acknowledged up to #{}, {} waiting; {} places granted, {} returned",
        summary.uploaded_sales, summary.acked_seq, summary.pending_sales, summary.leases_granted, summary.places_returned
    );
    Ok(())
}

async fn sync_until_stopped(t: &Terminal) -> Result<()> {
    println!("syncing {} in the background; Ctrl-C to stop", t.name());
    let handle = t.spawn_sync_loop();
    tokio::signal::ctrl_c().await?;
    handle.abort();
    Ok(())
}

async fn shift(t: &Terminal, action: ShiftAction, json: bool) -> Result<()> {
    match action {
        ShiftAction::Open { float, pin } => {
            let shift = t.open_shift(&pin, float)?;
            println!(
                "shift open for {} with a float of {}",
                shift.cashier,
                format_minor(shift.float)
            );
        }
        ShiftAction::Close { counted } => {
            let z = t.close_shift(counted).await?;
            if json {
                return print_json(&z);
            }
            show_report(&z);
        }
    }
    Ok(())
}

async fn report(t: &Terminal, kind: &str, print: bool, json: bool) -> Result<()> {
    let report = if kind == "x" {
        t.x_report()?
    } else {
        t.last_z_report()?
            .context("no shift has been closed on this terminal yet")?
    };
    if print {
        println!("{}", print_outcome(&t.print_report(&report).await?));
    }
    if json {
        return print_json(&report);
    }
    show_report(&report);
    Ok(())
}

fn sale_id(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text.trim()).with_context(|| format!("{text:?} is not a sale id"))
}

async fn void(t: &Terminal, sale: &str, supervisor_pin: &str, reason: &str) -> Result<()> {
    let done = t.void(sale_id(sale)?, supervisor_pin, reason).await?;
    println!(
        "voided {}: refund {} by {}{}; approved by {}",
        done.sale_id,
        format_minor(done.refund),
        done.refund_method.as_str(),
        if done.returned_to_lease {
            ", places back on sale"
        } else {
            ""
        },
        done.approved_by
    );
    Ok(())
}

fn sales(t: &Terminal, json: bool) -> Result<()> {
    let sales = t.sales_today()?;
    if json {
        return print_json(&sales);
    }
    for s in sales {
        println!(
            "#{:<4} {} {} {:>8} {} {}{}",
            s.terminal_seq,
            s.sale_id,
            s.slot_label,
            format_minor(s.total),
            s.payment_method.as_str(),
            if s.uploaded { "uploaded" } else { "waiting" },
            if s.voided { " VOIDED" } else { "" }
        );
    }
    Ok(())
}

/// One code from the command line; exits 2 unless it admits, for scripts.
async fn scan_one(t: &Terminal, code: &str, json: bool) -> Result<()> {
    let view = t.scan(code).await?;
    show_scan(&view, json)?;
    if view.result != RedeemResult::Admitted {
        std::process::exit(2);
    }
    Ok(())
}

/// Codes from standard input, one per line (a keyboard-wedge scanner), with
/// the sync loop running beside.
async fn scan_stdin(t: &Terminal, json: bool) -> Result<()> {
    let _sync = t.spawn_sync_loop();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        match t.scan(&line).await {
            Ok(view) => show_scan(&view, json)?,
            Err(e) => eprintln!("error: {e}"),
        }
    }
    Ok(())
}

async fn start_peers(t: &Terminal, listen: Option<std::net::SocketAddr>) -> Result<()> {
    if let Some(listen) = listen {
        let addr = t.start_peer_service(listen).await?;
        let peers = t.peers()?;
        eprintln!(
            "sharing admissions on {addr} with {} gate peer(s){}",
            peers.len(),
            if peers.is_empty() {
                " (set them with `peers URL...`)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn peers(t: &Terminal, urls: &[String], clear: bool, json: bool) -> Result<()> {
    let list = if clear || !urls.is_empty() {
        t.set_peers(urls)?
    } else {
        t.peers()?
    };
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no gate peers: admissions are not shared");
    }
    for p in &list {
        println!("{p}");
    }
    Ok(())
}

async fn printer(t: &Terminal, spec: &str, test: bool) -> Result<()> {
    t.set_printer(spec)?;
    println!("printer set to {spec}");
    if test {
        println!("{}", print_outcome(&t.test_print().await?));
    }
    Ok(())
}
