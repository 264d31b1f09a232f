//! `tessera-server`: parses the command line and wires the library together.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jiff::Timestamp;
use tessera_core::api::devices::Role;
use tessera_core::clock::{Clock, OFFSET_ENV};
use tessera_core::fixture::parse_fixture;
use tessera_core::slot::SlotId;
use tessera_core::staff::StaffRole;
use tessera_server::admin::PinSet;
use tessera_server::config::ServerConfig;
use tessera_server::operator::Store;

// Every request allocates (JSON, SQL, HTTP): under a spike glibc's malloc
// spent a sixth of the server's CPU in its own locks and free lists.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A one-time code lives at most a month: long enough to post it to a branch
/// museum, short enough that a forgotten one does not stay a way in.
const ENROLMENT_CODE_MAX_HOURS: i64 = 720;

#[derive(Parser)]
#[command(
    name = "tessera-server",
    version,
    about = "Tessera sync server: one inventory for online and counter sales"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where an admin command works: the SQLite file (the embedded default) or
/// a PostgreSQL database.
#[derive(clap::Args)]
struct Storage {
    /// The SQLite file.
    #[arg(
        long,
        env = "TESSERA_DB",
        required_unless_present = "database",
        conflicts_with = "database"
    )]
    db: Option<PathBuf>,
    /// A PostgreSQL database instead (postgres://…; see docs/POSTGRES.md).
    #[arg(long, env = "TESSERA_DATABASE_URL")]
    database: Option<String>,
}

impl Storage {
    fn store(self) -> Result<Store> {
        match (self.db, self.database) {
            (_, Some(url)) => Ok(Store::Postgres(url)),
            (Some(db), None) => Ok(Store::Sqlite(db)),
            (None, None) => anyhow::bail!("--db FILE or --database postgres://… is needed"),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create the database: catalogue, signing key and slots.
    Init {
        #[command(flatten)]
        store: Storage,
        #[arg(long)]
        fixtures: PathBuf,
        /// Days of slots to generate from today (the server keeps extending).
        #[arg(long, default_value_t = 60)]
        days: i64,
    },
    /// Serve the HTTP API.
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, env = "TESSERA_DB", conflicts_with = "database")]
        db: Option<PathBuf>,
        /// Serve a PostgreSQL database (postgres://…) instead of a SQLite
        /// file; several processes may serve the same one (docs/POSTGRES.md).
        #[arg(long, env = "TESSERA_DATABASE_URL")]
        database: Option<String>,
        /// PostgreSQL connections this process opens at most, in all (the
        /// writer, the reader, the listener and the pool; at least 4,
        /// default 10; `[postgres] connections` in the config file).
        #[arg(long, env = "TESSERA_PG_CONNECTIONS")]
        pg_connections: Option<usize>,
        #[arg(long, env = "TESSERA_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        #[arg(long, env = "TESSERA_HOLD_TTL_SECS")]
        hold_ttl_secs: Option<u64>,
        /// group | per-request
        #[arg(long, env = "TESSERA_COMMIT")]
        commit: Option<String>,
        /// text | json
        #[arg(long, env = "TESSERA_LOG_FORMAT")]
        log_format: Option<String>,
    },
    /// Print a one-time enrolment code for a new device.
    Enrol {
        #[command(flatten)]
        store: Storage,
        /// counter | gate | supervisor
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
        /// Hours the code stays valid (1 to 720).
        #[arg(long, default_value_t = 72, value_parser = clap::value_parser!(i64).range(1..=ENROLMENT_CODE_MAX_HOURS))]
        valid_hours: i64,
    },
    /// List the counters' leases of a day.
    Leases {
        #[command(flatten)]
        store: Storage,
        /// YYYY-MM-DD (default: today in the museum's zone)
        #[arg(long)]
        date: Option<String>,
    },
    /// Revoke the lease of a counter that is not coming back (its unsold
    /// places go back on sale; late sales from it are flagged).
    RevokeLease {
        #[command(flatten)]
        store: Storage,
        #[arg(long)]
        lease: String,
        /// Who decided, for the audit log.
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Mark a counter upload held in quarantine as dealt with, with a note;
    /// it leaves the day report's open list and the counter's count.
    ResolveQuarantine {
        #[command(flatten)]
        store: Storage,
        /// The sale's, void's or shift's id, as the day report lists it.
        #[arg(long)]
        id: String,
        /// What was done about it (refunded, re-entered as a new sale…).
        #[arg(long)]
        note: String,
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Revoke a lost or stolen device: its token stops working and gates
    /// refuse the tickets it signed.
    RevokeDevice {
        #[command(flatten)]
        store: Storage,
        /// Device id or name.
        #[arg(long)]
        device: String,
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// Set a staff member's PIN, read from standard input (never the command
    /// line, which other users can see); with --role, adds a new member.
    SetPin {
        #[command(flatten)]
        store: Storage,
        #[arg(long)]
        name: String,
        /// cashier | supervisor (needed to add someone; changes the role otherwise)
        #[arg(long)]
        role: Option<String>,
        #[arg(long, default_value = "operator")]
        by: String,
    },
    /// The day's reconciliation: online and each counter, cash drawers,
    /// everything missing, slots, gate conflicts.
    Report {
        #[command(flatten)]
        store: Storage,
        /// YYYY-MM-DD (default: today in the museum's zone)
        #[arg(long)]
        date: Option<String>,
        #[arg(long, default_value = "text", value_parser = ["text", "json", "csv"])]
        format: String,
    },
    /// For demos: seconds to add to the clock (TESSERA_CLOCK_OFFSET_SECS) so
    /// that it stands five minutes into the next entry window (0 if one is
    /// open now).
    DemoOffset {
        #[arg(long)]
        fixtures: PathBuf,
    },
    /// Trusted sales channels (a partner's site, a tourist office) that
    /// confirm holds with a token of their own.
    Channel {
        #[command(subcommand)]
        action: ChannelAction,
    },
    /// Change a slot's capacity (also while the server runs).
    Capacity {
        #[command(flatten)]
        store: Storage,
        #[arg(long)]
        slot: String,
        #[arg(long)]
        set: u32,
    },
}

#[derive(Subcommand)]
enum ChannelAction {
    /// Add a channel and print its token (shown once; only its hash is kept).
    Add {
        #[command(flatten)]
        store: Storage,
        #[arg(long)]
        name: String,
    },
    /// List the channels, revoked ones included.
    List {
        #[command(flatten)]
        store: Storage,
    },
    /// Revoke a channel by name or id: its token stops working; its orders stand.
    Revoke {
        #[command(flatten)]
        store: Storage,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "operator")]
        by: String,
    },
}

fn init_logging(format: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // tokio-postgres logs every statement's parameters at debug level: booking
    // tokens, email addresses, PIN verifiers. Whatever TESSERA_LOG asks, they
    // never reach the log.
    if let Ok(quiet) = "tokio_postgres=info".parse() {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let clock = Clock::from_env().map_err(anyhow::Error::msg)?;
    let now = clock.now();
    match cli.command {
        Command::Init {
            store,
            fixtures,
            days,
        } => init(store.store()?, &fixtures, days, now),
        Command::Serve {
            config,
            db,
            database,
            pg_connections,
            listen,
            hold_ttl_secs,
            commit,
            log_format,
        } => {
            let mut cfg = match &config {
                Some(path) => ServerConfig::from_file(path)?,
                None => ServerConfig::default(),
            };
            cfg.db = db.or(cfg.db);
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(t) = hold_ttl_secs {
                cfg.hold_ttl_secs = t;
            }
            if let Some(c) = commit {
                cfg.commit = c;
            }
            if let Some(f) = log_format {
                cfg.log_format = f;
            }
            if let Some(n) = pg_connections {
                cfg.postgres.connections = n;
            }
            cfg.payments.fill_from_env();
            init_logging(&cfg.log_format);
            serve(cfg, database, clock)
        }
        Command::Enrol {
            store,
            role,
            name,
            valid_hours,
        } => enrol(store.store()?, &role, &name, valid_hours, now),
        Command::Leases { store, date } => leases(store.store()?, date.as_deref(), now),
        Command::RevokeLease { store, lease, by } => {
            let r = store.store()?.revoke_lease(lease.trim(), &by, now)?;
            if r.already_revoked {
                println!(
                    "lease {} of {} for {} was already revoked",
                    r.lease_id, r.device, r.slot_id
                );
            } else {
                println!(
                    "revoked lease {} of {} for {}: {} reported sold, {} places back on sale; late sales from it will be flagged",
                    r.lease_id, r.device, r.slot_id, r.sold, r.returned
                );
            }
            Ok(())
        }
        Command::ResolveQuarantine {
            store,
            id,
            note,
            by,
        } => {
            let id = id.trim();
            let kind = store
                .store()?
                .resolve_quarantine(id, note.trim(), by.trim(), now)?;
            println!("{kind} {id} resolved; its counter's count drops at its next sync");
            Ok(())
        }
        Command::RevokeDevice { store, device, by } => {
            let name = store.store()?.revoke_device(device.trim(), &by, now)?;
            println!("revoked {name:?}: its token no longer works; gates refuse its tickets after their next sync");
            Ok(())
        }
        Command::SetPin {
            store,
            name,
            role,
            by,
        } => set_pin(store.store()?, &name, role.as_deref(), &by, now),
        Command::Report {
            store,
            date,
            format,
        } => report(store.store()?, date.as_deref(), &format, now),
        Command::DemoOffset { fixtures } => demo_offset(&fixtures, now),
        Command::Channel { action } => channel(action, now),
        Command::Capacity { store, slot, set } => {
            let slot: SlotId = slot.parse()?;
            let (ledger, before) = store.store()?.set_capacity(&slot, set, now)?;
            println!(
                "slot {slot}: capacity {before} -> {set} ({} sold online, {} held, {} leased to counters, \
                 {} sold by revoked counters beyond their leases, {} now available)",
                ledger.sold_online,
                ledger.held_online,
                ledger.leased,
                ledger.over_capacity,
                ledger.available()
            );
            Ok(())
        }
    }
}

fn init(store: Store, fixtures: &Path, days: i64, now: Timestamp) -> Result<()> {
    let today = now.to_zoned(read_tz(fixtures)?).date();
    let summary = store.init(fixtures, today, days, now)?;
    println!(
        "initialised {} for {}: {} slots from {} over {} days",
        store.describe(),
        summary.museum,
        summary.slots,
        summary.first_day,
        summary.days
    );
    Ok(())
}

fn enrol(store: Store, role: &str, name: &str, valid_hours: i64, now: Timestamp) -> Result<()> {
    let role = Role::parse(role).context("role must be counter, gate or supervisor")?;
    let name = name.trim();
    tessera_core::limits::text("name", name, tessera_core::limits::DEVICE_NAME_CHARS)?;
    let code = store.enrolment_code(role, name, now, valid_hours)?;
    println!("{code}");
    eprintln!(
        "one-time enrolment code for {} \"{}\", valid {} hours",
        role.as_str(),
        name,
        valid_hours
    );
    Ok(())
}

fn leases(store: Store, date: Option<&str>, now: Timestamp) -> Result<()> {
    let date = date.map(tessera_core::slot::parse_date).transpose()?;
    let date = store.day_or_today(date, now)?;
    let leases = store.leases(date)?;
    if leases.is_empty() {
        println!("no leases on {date}");
    }
    for l in leases {
        println!(
            "{}  {}  {:<20} escrow {:>4}  sold {:>4}{}",
            l.lease_id,
            l.slot_id,
            l.device,
            l.escrow,
            l.sold,
            if l.revoked { "  REVOKED" } else { "" }
        );
    }
    Ok(())
}

fn set_pin(store: Store, name: &str, role: Option<&str>, by: &str, now: Timestamp) -> Result<()> {
    let role = match role.map(str::trim) {
        None => None,
        Some("cashier") => Some(StaffRole::Cashier),
        Some("supervisor") => Some(StaffRole::Supervisor),
        Some(other) => anyhow::bail!("--role must be cashier or supervisor, not {other:?}"),
    };
    // Standard input, never the command line, which other users can see.
    let mut pin = String::new();
    std::io::stdin()
        .read_line(&mut pin)
        .context("reading the PIN from standard input")?;
    let what = match store.set_pin(name, role, &pin, by, now)? {
        PinSet::Added => "added",
        PinSet::Changed => "PIN changed",
    };
    println!(
        "{}: {what}; counters get the change at their next sync",
        name.trim()
    );
    Ok(())
}

fn report(store: Store, date: Option<&str>, format: &str, now: Timestamp) -> Result<()> {
    let date = date.map(tessera_core::slot::parse_date).transpose()?;
    let report = store.day_report(date, now)?;
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&report)?),
        "csv" => print!("{}", tessera_server::reports::to_csv(&report)),
        _ => print!("{}", tessera_server::reports::to_text(&report)),
    }
    // Printed first, so the operator sees which line is off.
    if let Err(e) = report.check() {
        anyhow::bail!("the report does not add up: {e}");
    }
    Ok(())
}

/// Seconds to add to the clock so that it stands five minutes into the next
/// entry window (0 if one is open now), for demos.
fn demo_offset(fixtures: &Path, now: Timestamp) -> Result<()> {
    let text = std::fs::read_to_string(fixtures)
        .with_context(|| format!("reading {}", fixtures.display()))?;
    let (catalogue, _) = parse_fixture(&text).map_err(anyhow::Error::msg)?;
    let tz = catalogue.time_zone()?;
    let mut date = now.to_zoned(tz).date();
    for _ in 0..14 {
        if let Some(slot) = catalogue
            .slots_on(date)?
            .into_iter()
            .find(|slot| slot.ends_at > now)
        {
            let target = slot.starts_at.max(now);
            let offset = if target == now {
                0
            } else {
                target.duration_since(now).as_secs() + 300
            };
            println!("{offset}");
            return Ok(());
        }
        date = date.tomorrow()?;
    }
    anyhow::bail!("the museum does not open in the next two weeks")
}

fn channel(action: ChannelAction, now: Timestamp) -> Result<()> {
    match action {
        ChannelAction::Add { store, name } => {
            let token = store.store()?.add_channel(&name, now)?;
            println!("{token}");
            eprintln!(
                "channel {:?} added; its token is shown this once: confirm holds with \
                 Authorization: Bearer <token>",
                name.trim()
            );
        }
        ChannelAction::List { store } => {
            let list = store.store()?.channels()?;
            if list.is_empty() {
                println!("no channels");
            }
            for c in list {
                println!(
                    "{}  {:<30} added {}{}",
                    c.channel_id,
                    c.name,
                    c.created_at,
                    c.revoked_at
                        .map(|t| format!("  REVOKED {t}"))
                        .unwrap_or_default()
                );
            }
        }
        ChannelAction::Revoke { store, name, by } => {
            let name = store.store()?.revoke_channel(&name, &by, now)?;
            println!(
                "channel {name:?} revoked: its token no longer confirms holds; its orders stand"
            );
        }
    }
    Ok(())
}

fn read_tz(fixtures: &Path) -> Result<jiff::tz::TimeZone> {
    let text = std::fs::read_to_string(fixtures)
        .with_context(|| format!("reading {}", fixtures.display()))?;
    let (catalogue, _) = parse_fixture(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("parsing {}", fixtures.display()))?;
    Ok(catalogue.time_zone()?)
}

/// Where `serve` keeps its data: a SQLite file, or a PostgreSQL database
/// (never logged: its URL may carry a password).
enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

fn serve(cfg: ServerConfig, database: Option<String>, clock: Clock) -> Result<()> {
    let db = match database {
        Some(url) => Database::Postgres(url),
        None => Database::Sqlite(
            cfg.db
                .clone()
                .ok_or(tessera_server::config::ConfigError::NoDatabase)?,
        ),
    };
    if clock.offset_secs() != 0 {
        tracing::warn!(
            offset_secs = clock.offset_secs(),
            "{OFFSET_ENV} is set: the server's clock is shifted (demo/test only)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = match &db {
            Database::Sqlite(path) => tessera_server::start(path, &cfg, clock).await?,
            Database::Postgres(url) => tessera_server::start_postgres(url, &cfg, clock).await?,
        };
        // Scripts and tests read this line to find the port.
        println!("{} listening on {}", server.museum, server.url());
        std::io::stdout().flush()?;
        match &db {
            Database::Sqlite(path) => {
                tracing::info!(addr = %server.addr, db = %path.display(), commit = %cfg.commit, "serving")
            }
            Database::Postgres(_) => {
                tracing::info!(addr = %server.addr, backend = "postgres", "serving")
            }
        }
        let failure = tokio::select! {
            _ = shutdown_signal() => None,
            reason = server.failed() => Some(reason),
        };
        tracing::info!("shutting down");
        // In-flight requests get a moment to finish; a connection that never
        // does must not keep a failed server from exiting.
        if tokio::time::timeout(STOP_GRACE, server.stop())
            .await
            .is_err()
        {
            tracing::warn!("requests still open after {STOP_GRACE:?}; exiting anyway");
        }
        match failure {
            // Non-zero, so that systemd (Restart=on-failure) starts it again.
            Some(reason) => {
                anyhow::bail!("the server stopped because it could not go on: {reason}")
            }
            None => Ok(()),
        }
    })
}

/// How long a stopping server waits for requests in flight.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
