//! Connecting, migrating and the operator commands that work on a PostgreSQL
//! database directly: `init` and the trusted channels. Like the SQLite admin
//! commands they may run while servers serve the database; a change they make
//! is announced with NOTIFY so that every process reloads it.

use jiff::civil::Date;
use jiff::Timestamp;
use tessera_core::catalogue::Catalogue;
use tessera_core::ids::new_id;
use tessera_core::ticket_code::TicketSigner;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, GenericClient};

use crate::admin::{ChannelLine, InitSummary};
use crate::secrets;
use tessera_core::channels;
use tessera_core::fixture::parse_fixture;

mod embedded {
    refinery::embed_migrations!("src/postgres/migrations");
}

/// The channel every process LISTENs on; a payload names what changed
/// (see `super::cache::Change`).
pub const CHANGES: &str = "tessera_changes";

/// Taken (per session) while migrating, so that several processes starting
/// at once migrate one after another.
const MIGRATION_LOCK: i64 = 0x7465_7373_6d69_6772; // "tessmigr"

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL: {}", loggable(.0))]
    Sql(#[from] tokio_postgres::Error),
    /// No pooled connection came free in time.
    #[error("{0}")]
    Busy(String),
    /// A connection's round trip (the listener's heartbeat) took too long.
    #[error("PostgreSQL did not answer within {0:?}")]
    Unanswered(std::time::Duration),
    #[error("PostgreSQL did not accept a connection within {0:?}")]
    ConnectTimeout(std::time::Duration),
    #[error("migrating the PostgreSQL schema: {0}")]
    Migrate(#[from] refinery::Error),
    #[error("the database is not initialised: run `tessera-server init --database …` first")]
    NotInitialised,
    #[error("the database is already initialised")]
    AlreadyInitialised,
    #[error("the stored catalogue does not load: {0}")]
    BadCatalogue(String),
    #[error("fixtures file {path}: {message}")]
    Fixtures { path: String, message: String },
    #[error("{0}")]
    Channel(String),
    /// A staff or device command refused (unknown name, PIN in use, …).
    #[error("{0}")]
    Staff(String),
    #[error("no server signing key in the database")]
    NoSigningKey,
    #[error("no slot {0}")]
    UnknownSlot(String),
    #[error(transparent)]
    Inventory(#[from] tessera_core::inventory::InventoryError),
}

/// What a failed statement may say in a log: its SQLSTATE, PostgreSQL's
/// message and the constraint, never the DETAIL, which quotes the row's
/// values (addresses, booking tokens, mail payloads).
pub fn loggable(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.constraint() {
            Some(c) => format!("{} {} ({c})", db.code().code(), db.message()),
            None => format!("{} {}", db.code().code(), db.message()),
        },
        // Connection and protocol errors quote no row.
        None => e.to_string(),
    }
}

/// Connects one client for an operator command, with the default limits
/// (see `connector`); its connection runs on a task of its own.
pub async fn connect(url: &str) -> Result<Client, PgError> {
    super::connector::Connector::new(url, &super::connector::PgLimits::default())?
        .connect("admin")
        .await
}

/// A statement that PostgreSQL gave up on because of one of our session
/// limits (`statement_timeout`, `lock_timeout`, or the transaction idle too
/// long): nothing it did stays, and the same request may well work a moment
/// later, so it is answered 503, never 500.
pub fn is_timeout(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::QUERY_CANCELED
            || *c == SqlState::LOCK_NOT_AVAILABLE
            || *c == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
    })
}

/// Applies the migrations in `postgres/migrations` that are not applied yet.
pub async fn migrate(client: &mut Client) -> Result<(), PgError> {
    // Another process may be migrating (waiting for its advisory lock is the
    // point), and a migration may rewrite a big table: no session limits
    // here, restored (to the connection's own) once done.
    client
        .batch_execute("SET statement_timeout = 0; SET lock_timeout = 0")
        .await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = embedded::migrations::runner()
        .set_migration_table_name("schema_history")
        .run_async(client)
        .await;
    // Unlocked whatever happened: the session may live on (init, tests).
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    client
        .batch_execute("RESET statement_timeout; RESET lock_timeout")
        .await?;
    result?;
    Ok(())
}

/// Creates the museum in an empty database: catalogue, the server's signing
/// key, a demo payment secret and slots for `days` days from `today`.
pub async fn init(
    url: &str,
    fixtures: &std::path::Path,
    today: Date,
    days: i64,
    now: Timestamp,
) -> Result<InitSummary, PgError> {
    let fixtures_error = |message: String| PgError::Fixtures {
        path: fixtures.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(fixtures).map_err(|e| fixtures_error(e.to_string()))?;
    let (catalogue, staff) = parse_fixture(&text).map_err(fixtures_error)?;
    catalogue
        .validate()
        .map_err(|e| fixtures_error(e.to_string()))?;
    let mut client = connect(url).await?;
    migrate(&mut client).await?;
    let tx = client.transaction().await?;
    let exists = tx
        .query_opt("SELECT 1 FROM meta WHERE key = 'catalogue' FOR UPDATE", &[])
        .await?;
    if exists.is_some() {
        return Err(PgError::AlreadyInitialised);
    }
    let json = serde_json::to_string(&catalogue).map_err(|e| fixtures_error(e.to_string()))?;
    let meta: [(&str, String); 4] = [
        ("catalogue", json.clone()),
        ("catalogue_version", "1".into()),
        ("horizon_days", days.to_string()),
        (
            "demo_payment_secret",
            data_encoding::HEXLOWER.encode(&secrets::random_bytes::<32>()),
        ),
    ];
    for (key, value) in &meta {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)",
            &[key, value],
        )
        .await?;
    }
    let signer = TicketSigner::from_seed(1, secrets::random_bytes::<32>());
    tx.execute(
        "INSERT INTO signing_keys (key_id, owner, public_key, secret_seed, created_at) VALUES (1, 'server', $1, $2, $3)",
        &[&signer.public_key().to_vec(), &signer.seed().to_vec(), &now.as_millisecond()],
    )
    .await?;
    tx.execute(
        "INSERT INTO catalogue_versions (version, catalogue) VALUES (1, $1)",
        &[&json],
    )
    .await?;
    super::devices::insert_staff(&tx, &staff).await?;
    let slots = ensure_slots(&tx, &catalogue, today, days).await?;
    tx.commit().await?;
    Ok(InitSummary {
        museum: catalogue.museum.name,
        slots,
        first_day: today,
        days,
    })
}

/// Inserts the slots of `[from, from + days)` that do not exist yet (any
/// process may run it; a slot another process inserted first is skipped).
pub async fn ensure_slots(
    client: &impl GenericClient,
    catalogue: &Catalogue,
    from: Date,
    days: i64,
) -> Result<usize, PgError> {
    let insert = client
        .prepare(
            "INSERT INTO slots (slot_id, date, starts_at, ends_at, window_minutes, capacity)
             VALUES ($1, $2::text::date, $3, $4, $5, $6) ON CONFLICT (slot_id) DO NOTHING",
        )
        .await?;
    let mut added = 0;
    for offset in 0..days.max(0) {
        let Ok(date) = from.checked_add(jiff::Span::new().days(offset)) else {
            break;
        };
        let Ok(slots) = catalogue.slots_on(date) else {
            continue;
        };
        for s in slots {
            let capacity = i32::try_from(s.capacity).unwrap_or(i32::MAX);
            added += client
                .execute(
                    &insert,
                    &[
                        &s.id.to_string(),
                        &date.to_string(),
                        &s.starts_at.as_millisecond(),
                        &s.ends_at.as_millisecond(),
                        &i32::from(s.window_minutes),
                        &capacity,
                    ],
                )
                .await? as usize;
        }
    }
    Ok(added)
}

pub async fn load_catalogue(client: &impl GenericClient) -> Result<Catalogue, PgError> {
    let row = client
        .query_opt("SELECT value FROM meta WHERE key = 'catalogue'", &[])
        .await?
        .ok_or(PgError::NotInitialised)?;
    let json: String = row.get(0);
    let catalogue: Catalogue =
        serde_json::from_str(&json).map_err(|e| PgError::BadCatalogue(e.to_string()))?;
    catalogue
        .validate()
        .map_err(|e| PgError::BadCatalogue(e.to_string()))?;
    Ok(catalogue)
}

pub async fn meta(client: &impl GenericClient, key: &str) -> Result<Option<String>, PgError> {
    Ok(client
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
        .await?
        .map(|r| r.get(0)))
}

/// Adds a trusted channel; returns its token (shown once, only its hash is
/// kept). Running servers pick it up through NOTIFY.
pub async fn add_channel(url: &str, name: &str, now: Timestamp) -> Result<String, PgError> {
    let name = channels::new_name(name).map_err(|e| PgError::Channel(e.to_string()))?;
    let mut client = connect(url).await?;
    load_catalogue(&client).await?;
    let tx = client.transaction().await?;
    let token = secrets::new_channel_token();
    let inserted = tx
        .execute(
            "INSERT INTO channels (channel_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
            &[&new_id(), &name, &secrets::hash(&token), &now.as_millisecond()],
        )
        .await?;
    if inserted == 0 {
        return Err(PgError::Channel(format!(
            "a channel named {name:?} exists already (revoked ones keep their name: their orders still carry it)"
        )));
    }
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, 'admin', 'channel_add', $2)",
        &[&now.as_millisecond(), &format!("{name:?}")],
    )
    .await?;
    tx.execute("SELECT pg_notify($1, 'channels')", &[&CHANGES])
        .await?;
    tx.commit().await?;
    Ok(token)
}

/// Revokes a trusted channel by name or id: its token stops confirming in
/// every process (NOTIFY); its orders stand. Returns its name.
pub async fn revoke_channel(
    url: &str,
    who: &str,
    actor: &str,
    now: Timestamp,
) -> Result<String, PgError> {
    let who = who.trim();
    let mut client = connect(url).await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            "SELECT name, revoked_at FROM channels WHERE name = $1 OR channel_id::text = $1 FOR UPDATE",
            &[&who],
        )
        .await?;
    let Some(row) = row else {
        return Err(PgError::Channel(format!("no channel named {who:?}")));
    };
    let name: String = row.get(0);
    if row.get::<_, Option<i64>>(1).is_none() {
        tx.execute(
            "UPDATE channels SET revoked_at = $2 WHERE name = $1",
            &[&name, &now.as_millisecond()],
        )
        .await?;
        tx.execute(
            "INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, $2, 'channel_revoke', $3)",
            &[&now.as_millisecond(), &actor, &format!("{name:?}")],
        )
        .await?;
        tx.execute("SELECT pg_notify($1, 'channels')", &[&CHANGES])
            .await?;
    }
    tx.commit().await?;
    Ok(name)
}

/// Changes a slot's capacity (an operator's command); refuses, by core's
/// rule, to go below what is sold, held or leased. The slot's row is locked
/// for the change, so a hold committing meanwhile in any process is counted;
/// running servers re-read the row through NOTIFY. The ledger after, and
/// the capacity before.
pub async fn set_capacity(
    url: &str,
    slot: &tessera_core::slot::SlotId,
    capacity: u32,
    now: Timestamp,
) -> Result<(tessera_core::inventory::SlotLedger, u32), PgError> {
    use super::cache::{slot_from_row, SLOT_COLUMNS};
    let mut client = connect(url).await?;
    let tx = client.transaction().await?;
    let row = tx
        .query_opt(
            &format!("SELECT {SLOT_COLUMNS} FROM slots WHERE slot_id = $1 FOR UPDATE"),
            &[&slot.to_string()],
        )
        .await?
        .ok_or_else(|| PgError::UnknownSlot(slot.to_string()))?;
    let mut ledger = slot_from_row(&row)
        .ok_or_else(|| PgError::UnknownSlot(slot.to_string()))?
        .ledger;
    // Holds whose time is up count for nothing, swept or not (no server may
    // be running to sweep them).
    let expired: i64 = tx
        .query_one(
            "WITH expired AS (
                 UPDATE holds SET status = 'expired', released_by = 'capacity command'
                 WHERE slot_id = $1 AND status = 'held' AND expires_at <= $2 RETURNING admissions)
             SELECT COALESCE(SUM(admissions), 0) FROM expired",
            &[&slot.to_string(), &now.as_millisecond()],
        )
        .await?
        .get(0);
    ledger.release_hold(u32::try_from(expired).unwrap_or(u32::MAX))?;
    let before = ledger.capacity;
    ledger.set_capacity(capacity)?;
    let stored = i32::try_from(capacity)
        .map_err(|_| PgError::Channel(format!("capacity {capacity} is out of range")))?;
    let held = i32::try_from(ledger.held_online).unwrap_or(i32::MAX);
    tx.execute(
        "UPDATE slots SET capacity = $2, held_online = $3, version = version + 1 WHERE slot_id = $1",
        &[&slot.to_string(), &stored, &held],
    )
    .await?;
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, 'admin', 'capacity', $2)",
        &[
            &now.as_millisecond(),
            &format!("{slot}: {before} -> {capacity}"),
        ],
    )
    .await?;
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANGES, &format!("slots:{slot}")],
    )
    .await?;
    tx.commit().await?;
    Ok((ledger, before))
}

pub async fn list_channels(url: &str) -> Result<Vec<ChannelLine>, PgError> {
    let client = connect(url).await?;
    let rows = client
        .query(
            "SELECT channel_id, name, created_at, revoked_at FROM channels ORDER BY name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ChannelLine {
            channel_id: r.get(0),
            name: r.get(1),
            created_at: tessera_core::clock::from_ms(r.get(2)),
            revoked_at: r.get::<_, Option<i64>>(3).map(tessera_core::clock::from_ms),
        })
        .collect())
}
