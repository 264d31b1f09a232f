//! `tessera-server`: parses the command line and wires the library together.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tessera_core::api::devices::Role;
use tessera_core::clock::{Clock, OFFSET_ENV};
use tessera_core::slot::SlotId;
use tessera_server::config::ServerConfig;
use tessera_server::postgres;
use tessera_server::sqlite::admin;

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
    /// A PostgreSQL database instead (postgres://…; a preview: see
    /// docs/POSTGRES.md for what runs on it).
    #[arg(long, env = "TESSERA_DATABASE_URL")]
    database: Option<String>,
}

enum Backend {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Storage {
    fn backend(self) -> Result<Backend> {
        match (self.db, self.database) {
            (_, Some(url)) => Ok(Backend::Postgres(url)),
            (Some(db), None) => Ok(Backend::Sqlite(db)),
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
        /// file; several processes may serve the same one. Work in progress:
        /// the online path only, the rest answers 501.
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
    match cli.command {
        Command::Init {
            store,
            fixtures,
            days,
        } => {
            let now = clock.now();
            let catalogue_tz = read_tz(&fixtures)?;
            let today = now.to_zoned(catalogue_tz).date();
            let (summary, what) = match store.backend()? {
                Backend::Postgres(url) => (
                    block_on(postgres::schema::init(&url, &fixtures, today, days, now))?,
                    "the PostgreSQL database".to_string(),
                ),
                Backend::Sqlite(db) => (
                    admin::init(&db, &fixtures, today, days, now)?,
                    db.display().to_string(),
                ),
            };
            println!(
                "initialised {} for {}: {} slots from {} over {} days",
                what, summary.museum, summary.slots, summary.first_day, summary.days
            );
        }
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
            serve(cfg, database, clock)?;
        }
        Command::Enrol {
            store,
            role,
            name,
            valid_hours,
        } => {
            let role = Role::parse(&role).context("role must be counter, gate or supervisor")?;
            let name = name.trim();
            tessera_core::limits::text("name", name, tessera_core::limits::DEVICE_NAME_CHARS)?;
            let code = match store.backend()? {
                Backend::Postgres(url) => block_on(postgres::devices::create_enrolment_code(
                    &url,
                    role,
                    name,
                    clock.now(),
                    valid_hours,
                ))?,
                Backend::Sqlite(db) => {
                    admin::create_enrolment_code(&db, role, name, clock.now(), valid_hours)?
                }
            };
            println!("{code}");
            eprintln!(
                "one-time enrolment code for {} \"{}\", valid {} hours",
                role.as_str(),
                name,
                valid_hours
            );
        }
        Command::Leases { store, date } => {
            let backend = store.backend()?;
            let date = match (date, &backend) {
                (Some(d), _) => tessera_core::slot::parse_date(&d)?,
                (None, Backend::Sqlite(db)) => clock.now().to_zoned(museum_tz(db)?).date(),
                (None, Backend::Postgres(url)) => clock
                    .now()
                    .to_zoned(block_on(postgres::leases::museum_tz(url))?)
                    .date(),
            };
            let leases = match &backend {
                Backend::Sqlite(db) => admin::leases(db, date)?,
                Backend::Postgres(url) => block_on(postgres::leases::leases(url, date))?,
            };
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
        }
        Command::RevokeLease { store, lease, by } => {
            let r = match store.backend()? {
                Backend::Sqlite(db) => admin::revoke_lease(&db, lease.trim(), &by, clock.now())?,
                Backend::Postgres(url) => block_on(postgres::leases::revoke_lease(
                    &url,
                    lease.trim(),
                    &by,
                    clock.now(),
                ))?,
            };
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
        }
        Command::ResolveQuarantine {
            store,
            id,
            note,
            by,
        } => {
            let (id, note, by) = (id.trim(), note.trim(), by.trim());
            let kind = match store.backend()? {
                Backend::Sqlite(db) => admin::resolve_quarantine(&db, id, note, by, clock.now())?,
                Backend::Postgres(url) => block_on(postgres::leases::resolve_quarantine(
                    &url,
                    id,
                    note,
                    by,
                    clock.now(),
                ))?,
            };
            println!(
                "{kind} {} resolved; its counter's count drops at its next sync",
                id.trim()
            );
        }
        Command::RevokeDevice { store, device, by } => {
            let name = match store.backend()? {
                Backend::Postgres(url) => block_on(postgres::devices::revoke_device(
                    &url,
                    device.trim(),
                    &by,
                    clock.now(),
                ))?,
                Backend::Sqlite(db) => admin::revoke_device(&db, device.trim(), &by, clock.now())?,
            };
            println!("revoked {name:?}: its token no longer works; gates refuse its tickets after their next sync");
        }
        Command::SetPin {
            store,
            name,
            role,
            by,
        } => {
            let role = match role.as_deref().map(str::trim) {
                None => None,
                Some("cashier") => Some(tessera_core::staff::StaffRole::Cashier),
                Some("supervisor") => Some(tessera_core::staff::StaffRole::Supervisor),
                Some(other) => anyhow::bail!("--role must be cashier or supervisor, not {other:?}"),
            };
            let mut pin = String::new();
            std::io::stdin()
                .read_line(&mut pin)
                .context("reading the PIN from standard input")?;
            let done = match store.backend()? {
                Backend::Postgres(url) => block_on(postgres::devices::set_pin(
                    &url,
                    &name,
                    role,
                    &pin,
                    &by,
                    clock.now(),
                ))?,
                Backend::Sqlite(db) => admin::set_pin(&db, &name, role, &pin, &by, clock.now())?,
            };
            let what = match done {
                admin::PinSet::Added => "added",
                admin::PinSet::Changed => "PIN changed",
            };
            println!(
                "{}: {what}; counters get the change at their next sync",
                name.trim()
            );
        }
        Command::Report {
            store,
            date,
            format,
        } => {
            let day_of =
                |catalogue: &tessera_core::catalogue::Catalogue| -> Result<jiff::civil::Date> {
                    Ok(match &date {
                        Some(d) => tessera_core::slot::parse_date(d)?,
                        None => clock.now().to_zoned(catalogue.time_zone()?).date(),
                    })
                };
            let report = match store.backend()? {
                Backend::Postgres(url) => block_on(async {
                    let mut client = postgres::schema::connect(&url).await?;
                    let catalogue = postgres::schema::load_catalogue(&client).await?;
                    let date = day_of(&catalogue)?;
                    anyhow::Ok(
                        postgres::report::day_report(&mut client, &catalogue, date, clock.now())
                            .await?,
                    )
                })?,
                Backend::Sqlite(db) => {
                    let conn = tessera_server::sqlite::schema::open(&db)?;
                    let catalogue = admin::catalogue(&conn)?;
                    let date = day_of(&catalogue)?;
                    tessera_server::reports::day_report(&conn, &catalogue, date, clock.now())?
                }
            };
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&report)?),
                "csv" => print!("{}", tessera_server::reports::to_csv(&report)),
                _ => print!("{}", tessera_server::reports::to_text(&report)),
            }
            if let Err(e) = report.check() {
                anyhow::bail!("the report does not add up: {e}");
            }
        }
        Command::DemoOffset { fixtures } => {
            let text = std::fs::read_to_string(&fixtures)
                .with_context(|| format!("reading {}", fixtures.display()))?;
            let (catalogue, _) = admin::parse_fixtures(&text).map_err(anyhow::Error::msg)?;
            let now = clock.now();
            let tz = catalogue.time_zone()?;
            let mut date = now.to_zoned(tz).date();
            let mut offset = None;
            for _ in 0..14 {
                for slot in catalogue.slots_on(date)? {
                    if slot.ends_at > now {
                        let target = slot.starts_at.max(now);
                        offset = Some(if target == now {
                            0
                        } else {
                            target.duration_since(now).as_secs() + 300
                        });
                        break;
                    }
                }
                if offset.is_some() {
                    break;
                }
                date = date.tomorrow()?;
            }
            println!(
                "{}",
                offset.context("the museum does not open in the next two weeks")?
            );
        }
        Command::Channel { action } => match action {
            ChannelAction::Add { store, name } => {
                let token = match store.backend()? {
                    Backend::Postgres(url) => {
                        block_on(postgres::schema::add_channel(&url, &name, clock.now()))?
                    }
                    Backend::Sqlite(db) => {
                        tessera_server::sqlite::channels::add(&db, &name, clock.now())?
                    }
                };
                println!("{token}");
                eprintln!(
                    "channel {:?} added; its token is shown this once: confirm holds with \
                     Authorization: Bearer <token>",
                    name.trim()
                );
            }
            ChannelAction::List { store } => {
                let list: Vec<(String, String, jiff::Timestamp, Option<jiff::Timestamp>)> =
                    match store.backend()? {
                        Backend::Postgres(url) => block_on(postgres::schema::list_channels(&url))?
                            .into_iter()
                            .map(|c| (c.channel_id.to_string(), c.name, c.created_at, c.revoked_at))
                            .collect(),
                        Backend::Sqlite(db) => tessera_server::sqlite::channels::list(&db)?
                            .into_iter()
                            .map(|c| (c.channel_id, c.name, c.created_at, c.revoked_at))
                            .collect(),
                    };
                if list.is_empty() {
                    println!("no channels");
                }
                for (channel_id, name, created_at, revoked_at) in list {
                    println!(
                        "{}  {:<30} added {}{}",
                        channel_id,
                        name,
                        created_at,
                        revoked_at
                            .map(|t| format!("  REVOKED {t}"))
                            .unwrap_or_default()
                    );
                }
            }
            ChannelAction::Revoke { store, name, by } => {
                let name = match store.backend()? {
                    Backend::Postgres(url) => block_on(postgres::schema::revoke_channel(
                        &url,
                        &name,
                        &by,
                        clock.now(),
                    ))?,
                    Backend::Sqlite(db) => {
                        tessera_server::sqlite::channels::revoke(&db, &name, &by, clock.now())?
                    }
                };
                println!("channel {name:?} revoked: its token no longer confirms holds; its orders stand");
            }
        },
        Command::Capacity { store, slot, set } => {
            let slot: SlotId = slot.parse()?;
            let (ledger, before) = match store.backend()? {
                Backend::Postgres(url) => block_on(postgres::schema::set_capacity(
                    &url,
                    &slot,
                    set,
                    clock.now(),
                ))?,
                Backend::Sqlite(db) => admin::set_capacity(&db, &slot, set, clock.now())?,
            };
            println!(
                "slot {slot}: capacity {before} -> {set} ({} sold online, {} held, {} leased to counters, \
                 {} sold by revoked counters beyond their leases, {} now available)",
                ledger.sold_online,
                ledger.held_online,
                ledger.leased,
                ledger.over_capacity,
                ledger.available()
            );
        }
    }
    Ok(())
}

fn museum_tz(db: &std::path::Path) -> Result<jiff::tz::TimeZone> {
    let conn = tessera_server::sqlite::schema::open(db)?;
    let catalogue = tessera_server::sqlite::admin::catalogue(&conn)?;
    Ok(catalogue.time_zone()?)
}

fn read_tz(fixtures: &std::path::Path) -> Result<jiff::tz::TimeZone> {
    let text = std::fs::read_to_string(fixtures)
        .with_context(|| format!("reading {}", fixtures.display()))?;
    let (catalogue, _) = admin::parse_fixtures(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("parsing {}", fixtures.display()))?;
    Ok(catalogue.time_zone()?)
}

/// Runs one admin command against PostgreSQL on a runtime of its own.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
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
            Database::Postgres(_) => tracing::warn!(
                addr = %server.addr,
                "serving PostgreSQL: work in progress, only the online path (holds, confirm, \
                 availability) is served; the rest answers 501"
            ),
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
