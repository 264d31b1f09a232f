//! Server configuration: built-in defaults, then an optional TOML file, then
//! environment variables and command-line flags (clap reads both). The file
//! `sync-server/tessera-server.example.toml` documents every key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tessera_core::admission::EntryPolicy;
use tessera_core::inventory::LeasePolicy;

use crate::store::{CommitMode, StoreConfig};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub db: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Minutes an online checkout holds its places.
    pub hold_ttl_secs: u64,
    /// "group" (default) or "per-request".
    pub commit: String,
    pub max_batch: usize,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    pub entry: EntryPolicy,
    /// How counters' leases are sized (see README, "Lease sizing").
    pub leases: LeasePolicy,
    /// "text" or "json".
    pub log_format: String,
    /// What one anonymous client may do (`[clients]` in the example config).
    pub clients: ClientLimits,
    /// Idempotency-Key records the writer keeps in memory; older ones are
    /// found in the database (slower, still correct).
    pub idempotency_keys_in_memory: usize,
    /// SQLite: the WAL file's bound in MiB; past it the writer checkpoints
    /// and truncates the WAL between batches.
    pub wal_limit_mib: u64,
    /// The visitors' web shop (`[shop]`).
    pub shop: ShopSettings,
    /// How online payments are taken (`[payments]`).
    pub payments: PaymentSettings,
    /// Outgoing email (`[mail]`): tickets, cancellations, waiting-list offers.
    pub mail: MailSettings,
    /// The waiting list of sold-out entry times (`[waitlist]`).
    pub waitlist: WaitlistSettings,
    /// The PostgreSQL backend's connections and time limits (`[postgres]`;
    /// see docs/POSTGRES.md, "Operational limits").
    pub postgres: PgLimits,
    /// High-demand sales with a waiting room in front (`[[waiting_rooms]]`;
    /// see docs/WAITING-ROOM.md).
    pub waiting_rooms: Vec<WaitingRoomSettings>,
}

/// One high-demand sale: its days are booked online only through its
/// waiting room, from its opening on.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WaitingRoomSettings {
    /// In the room's address, `/queue/<id>`: 1-40 of a-z, 0-9 and '-'.
    pub id: String,
    /// What visitors see, e.g. the exhibition's title.
    pub name: String,
    /// The first and last museum day sold through the room.
    pub from: jiff::civil::Date,
    pub until: jiff::civil::Date,
    /// When booking opens: museum time (`2026-12-05T10:00`) or an instant
    /// with its offset (`2026-12-05T09:00:00Z`).
    pub opens_at: String,
    /// Visitors let in per minute at most.
    #[serde(default = "WaitingRoomSettings::default_rate")]
    pub rate_per_minute: u32,
    /// Visitors let in and not yet booked, at most.
    #[serde(default = "WaitingRoomSettings::default_in_shop")]
    pub max_in_shop: u32,
    /// Minutes a visitor let in has to make their booking's hold.
    #[serde(default = "WaitingRoomSettings::default_window")]
    pub window_minutes: u32,
    /// Seconds without asking after which a waiting visitor is passed
    /// over (their place comes back when they ask again).
    #[serde(default = "WaitingRoomSettings::default_away")]
    pub away_after_secs: u32,
    /// Places one client address may hold at once.
    #[serde(default = "WaitingRoomSettings::default_per_client")]
    pub max_places_per_client: u32,
    /// Places in the line at once (memory bound).
    #[serde(default = "WaitingRoomSettings::default_places")]
    pub max_places: u32,
}

impl WaitingRoomSettings {
    fn default_rate() -> u32 {
        600
    }
    fn default_in_shop() -> u32 {
        1_000
    }
    fn default_window() -> u32 {
        10
    }
    fn default_away() -> u32 {
        60
    }
    fn default_per_client() -> u32 {
        10
    }
    fn default_places() -> u32 {
        500_000
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopSettings {
    /// The address visitors reach the shop at, used in emailed links
    /// (`https://tickets.example.org`); defaults to `http://{listen}`.
    pub public_url: Option<String>,
    /// Tickets can be cancelled until this many hours before their entry time.
    pub cancel_deadline_hours: u32,
    /// How many days ahead the calendar offers.
    pub booking_horizon_days: u32,
    /// The built shop (`shop/dist`); found next to the repository when unset.
    pub dir: Option<PathBuf>,
}

impl Default for ShopSettings {
    fn default() -> Self {
        ShopSettings {
            public_url: None,
            cancel_deadline_hours: 24,
            booking_horizon_days: 90,
            dir: None,
        }
    }
}

/// `Debug` by hand: the Stripe keys are shown as set or not, never their
/// value (the config is logged and printed in error messages).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentSettings {
    /// `demo` (default: a page on this server, no money moves) or `stripe`.
    pub provider: String,
    /// Stripe's secret API key (`sk_live_…`/`sk_test_…`); better given as
    /// the environment variable `TESSERA_STRIPE_SECRET_KEY`.
    pub stripe_secret_key: Option<String>,
    /// The signing secret of the Stripe webhook endpoint (`whsec_…`); or
    /// `TESSERA_STRIPE_WEBHOOK_SECRET`.
    pub stripe_webhook_secret: Option<String>,
    /// Stripe's API address; tests point it at a loopback listener.
    pub stripe_api_base: String,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            provider: "demo".into(),
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_api_base: "https://api.stripe.com".into(),
        }
    }
}

impl PaymentSettings {
    /// Takes the Stripe secrets from `TESSERA_STRIPE_SECRET_KEY` and
    /// `TESSERA_STRIPE_WEBHOOK_SECRET` where the config file leaves them
    /// unset, so that secrets need not sit in a file.
    pub fn fill_from_env(&mut self) {
        self.fill_from(|name| std::env::var(name).ok());
    }

    /// `fill_from_env` over any source of variables (tests pass a map).
    pub fn fill_from(&mut self, var: impl Fn(&str) -> Option<String>) {
        let fill = |slot: &mut Option<String>, name: &str| {
            if slot.as_deref().is_none_or(|v| v.trim().is_empty()) {
                *slot = var(name).filter(|v| !v.trim().is_empty());
            }
        };
        fill(&mut self.stripe_secret_key, "TESSERA_STRIPE_SECRET_KEY");
        fill(
            &mut self.stripe_webhook_secret,
            "TESSERA_STRIPE_WEBHOOK_SECRET",
        );
    }
}

/// `Debug` by hand: the SMTP password is shown as set or not, never its value.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSettings {
    /// SMTP relay; no host: mails stay queued in the database (and are sent
    /// once one is configured).
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    /// `none` (loopback relays, tests), `starttls` or `tls`.
    pub smtp_security: String,
    pub smtp_username: Option<String>,
    /// Better given as `TESSERA_SMTP_PASSWORD`.
    pub smtp_password: Option<String>,
    /// The sender, e.g. `Musée des Tessères <billetterie@example.org>`.
    pub from: String,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings {
            smtp_host: None,
            smtp_port: 25,
            smtp_security: "starttls".into(),
            smtp_username: None,
            smtp_password: None,
            from: "Tessera <tickets@localhost>".into(),
        }
    }
}

/// How a secret shows in `Debug`: whether it is set, not what it is.
fn redacted(secret: &Option<String>) -> &'static str {
    match secret {
        Some(_) => "Some(<redacted>)",
        None => "None",
    }
}

impl std::fmt::Debug for PaymentSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentSettings")
            .field("provider", &self.provider)
            .field(
                "stripe_secret_key",
                &format_args!("{}", redacted(&self.stripe_secret_key)),
            )
            .field(
                "stripe_webhook_secret",
                &format_args!("{}", redacted(&self.stripe_webhook_secret)),
            )
            .field("stripe_api_base", &self.stripe_api_base)
            .finish()
    }
}

impl std::fmt::Debug for MailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailSettings")
            .field("smtp_host", &self.smtp_host)
            .field("smtp_port", &self.smtp_port)
            .field("smtp_security", &self.smtp_security)
            .field("smtp_username", &self.smtp_username)
            .field(
                "smtp_password",
                &format_args!("{}", redacted(&self.smtp_password)),
            )
            .field("from", &self.from)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WaitlistSettings {
    /// Minutes the places offered to the first in line stay held for them.
    pub offer_minutes: u32,
    /// The same in seconds, overriding `offer_minutes` when set (tests and
    /// demos that want to watch an offer pass on).
    pub offer_seconds: Option<u32>,
    /// Entry times one email address may wait for at once (entries waiting
    /// or offered, across all entry times).
    pub max_entries_per_email: u32,
    /// Entries one client (an IP address; an IPv6 /64) may have waiting or
    /// offered at once, whatever addresses it gives. Counted in the database.
    pub max_entries_per_client: u32,
}

impl Default for WaitlistSettings {
    fn default() -> Self {
        WaitlistSettings {
            offer_minutes: 30,
            offer_seconds: None,
            // A family waiting for two or three times of one visit.
            max_entries_per_email: 3,
            // A household or a small office behind one address.
            max_entries_per_client: 10,
        }
    }
}

impl WaitlistSettings {
    pub fn offer_ttl(&self) -> Duration {
        let secs = self
            .offer_seconds
            .map(u64::from)
            .unwrap_or(u64::from(self.offer_minutes) * 60);
        Duration::from_secs(secs.max(1))
    }
}

/// The PostgreSQL connections one process opens outside the pool: the
/// writer, the reader and the listener.
pub const PG_DEDICATED_CONNECTIONS: usize = 3;

/// The longest session timeout PostgreSQL accepts (`i32::MAX` ms, about
/// 24.8 days).
pub const PG_MAX_TIMEOUT_MS: u64 = i32::MAX as u64;

/// The PostgreSQL backend's operational limits (`[postgres]` in the config
/// file; `connections` also from `--pg-connections` / `TESSERA_PG_CONNECTIONS`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PgLimits {
    /// Connections one server process opens at most, in all: the writer,
    /// the reader and the listener have one each, the rest is the pool that
    /// the shop, counters' rounds, gates, reports and side writes borrow
    /// from. At least 4.
    pub connections: usize,
    /// How long a request waits for a pooled connection before it is
    /// answered 503.
    pub pool_wait_ms: u64,
    /// Opening a connection (TCP, startup, authentication).
    pub connect_timeout_ms: u64,
    /// `statement_timeout` of every session.
    pub statement_timeout_ms: u64,
    /// `lock_timeout` of every session: a row held by someone else this long
    /// fails the statement (answered 503) instead of queueing behind it.
    pub lock_timeout_ms: u64,
    /// `idle_in_transaction_session_timeout` of every session.
    pub idle_in_transaction_timeout_ms: u64,
    /// TCP keepalive: idle seconds before the first probe (then every 10 s,
    /// 3 probes).
    pub keepalive_idle_secs: u64,
}

impl Default for PgLimits {
    fn default() -> Self {
        PgLimits {
            connections: 10,
            pool_wait_ms: 5_000,
            connect_timeout_ms: 5_000,
            statement_timeout_ms: 30_000,
            lock_timeout_ms: 5_000,
            idle_in_transaction_timeout_ms: 60_000,
            keepalive_idle_secs: 30,
        }
    }
}

impl PgLimits {
    /// Connections in the shared pool (the total less the dedicated ones).
    pub fn pool_size(&self) -> usize {
        self.connections
            .saturating_sub(PG_DEDICATED_CONNECTIONS)
            .max(1)
    }

    /// The total this process opens at most (`connections`, raised to the
    /// smallest that works).
    pub fn total(&self) -> usize {
        self.pool_size() + PG_DEDICATED_CONNECTIONS
    }

    pub fn pool_wait(&self) -> Duration {
        Duration::from_millis(self.pool_wait_ms.max(1))
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    /// Checks what PostgreSQL would refuse at the first connection: its
    /// session timeouts are `int` milliseconds, so a longer one fails every
    /// connection with PostgreSQL's own words, which do not name our key.
    pub fn check(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("statement_timeout_ms", self.statement_timeout_ms),
            ("lock_timeout_ms", self.lock_timeout_ms),
            (
                "idle_in_transaction_timeout_ms",
                self.idle_in_transaction_timeout_ms,
            ),
        ] {
            if value > PG_MAX_TIMEOUT_MS {
                return Err(ConfigError::PgTimeout { key, value });
            }
        }
        Ok(())
    }

    /// The `-c` options our sessions start with (0 turns a timeout off, as
    /// in PostgreSQL).
    pub fn session_options(&self) -> String {
        format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            self.statement_timeout_ms, self.lock_timeout_ms, self.idle_in_transaction_timeout_ms
        )
    }
}

/// Bounds on what one client (one IP address; one /64 for IPv6) and one
/// connection may take, so anonymous load cannot stop the museum selling.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimits {
    /// A connection that has not sent a whole request head within this time
    /// is closed (slowloris); also closes idle keep-alive connections.
    pub header_read_timeout_secs: u64,
    /// A request body that stalls this long between two reads is refused
    /// (408) and its connection closed.
    pub body_read_timeout_secs: u64,
    /// Holds, confirmations and cancellations per minute, per client.
    pub writes_per_minute: u32,
    /// How many of those may come at once before the rate applies.
    pub write_burst: u32,
    /// Enrolment attempts per minute, per client: code guesses are slow.
    pub enrolments_per_minute: u32,
    pub enrolment_burst: u32,
    /// Reads by a link's token (a booking, its PDF and calendar file, a
    /// checkout's state, a waiting-list offer) per minute, per client: each
    /// is database work, and a budget makes guessing tokens slower still.
    pub token_reads_per_minute: u32,
    pub token_read_burst: u32,
    /// Admissions one client may hold at once in unexpired checkouts.
    pub max_held_admissions: u32,
    /// Event streams (`/v1/events/availability`) one client may keep open
    /// at once.
    pub max_streams_per_client: u32,
    /// Peers (a reverse proxy on this host, say) whose `X-Forwarded-For`
    /// names the real client. Requests from any other peer are keyed by
    /// the peer's own address, whatever headers they send.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
            writes_per_minute: 60,
            write_burst: 20,
            enrolments_per_minute: 6,
            enrolment_burst: 3,
            // The return page polls its checkout every second or two, and a
            // visitor opens a booking, its PDF and its calendar file at once.
            token_reads_per_minute: 120,
            token_read_burst: 30,
            // Two full online carts (20 admissions each): a visitor who
            // abandoned one checkout can start another at once.
            max_held_admissions: 40,
            max_streams_per_client: 100,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ClientLimits {
    /// Limits so high that nothing is limited: tests and load harnesses
    /// that play thousands of visitors from one loopback address.
    pub fn unlimited() -> ClientLimits {
        ClientLimits {
            writes_per_minute: 1_000_000_000,
            write_burst: 1_000_000_000,
            enrolments_per_minute: 1_000_000_000,
            enrolment_burst: 1_000_000_000,
            token_reads_per_minute: 1_000_000_000,
            token_read_burst: 1_000_000_000,
            max_held_admissions: u32::MAX,
            max_streams_per_client: u32::MAX,
            ..ClientLimits::default()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            db: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            hold_ttl_secs: 600,
            commit: "group".into(),
            max_batch: 512,
            max_body_bytes: 64 * 1024,
            entry: EntryPolicy::default(),
            leases: LeasePolicy::default(),
            log_format: "text".into(),
            clients: ClientLimits::default(),
            idempotency_keys_in_memory: 200_000,
            wal_limit_mib: 64,
            shop: ShopSettings::default(),
            payments: PaymentSettings::default(),
            mail: MailSettings::default(),
            waitlist: WaitlistSettings::default(),
            postgres: PgLimits::default(),
            waiting_rooms: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("commit must be \"group\" or \"per-request\", got {0:?}")]
    Commit(String),
    #[error("no database given: pass --db FILE, set TESSERA_DB or `db` in the config file")]
    NoDatabase,
    #[error(
        "[postgres] {key} = {value} is more than PostgreSQL accepts: at most {PG_MAX_TIMEOUT_MS} (about 24.8 days; 0 turns the limit off)"
    )]
    PgTimeout { key: &'static str, value: u64 },
    #[error("{0}")]
    Invalid(String),
}

impl ServerConfig {
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let err = |message: String| ConfigError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let config: ServerConfig = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        config.postgres.check().map_err(|e| err(e.to_string()))?;
        check_waiting_rooms(&config.waiting_rooms).map_err(|e| err(e.to_string()))?;
        Ok(config)
    }

    pub fn commit_mode(&self) -> Result<CommitMode, ConfigError> {
        match self.commit.as_str() {
            "group" => Ok(CommitMode::Group),
            "per-request" => Ok(CommitMode::PerRequest),
            other => Err(ConfigError::Commit(other.to_string())),
        }
    }

    pub fn store_config(&self) -> Result<StoreConfig, ConfigError> {
        Ok(StoreConfig {
            hold_ttl: Duration::from_secs(self.hold_ttl_secs.max(1)),
            commit: self.commit_mode()?,
            max_batch: self.max_batch.max(1),
            lease_policy: self.leases,
            idempotency_keys_in_memory: self.idempotency_keys_in_memory,
            offer_ttl: self.waitlist.offer_ttl(),
            wal_limit_bytes: self.wal_limit_mib.clamp(1, 1 << 20) * 1024 * 1024,
        })
    }
}

/// Days one room may cover: its supply is read every tick.
pub const MAX_ROOM_DAYS: i64 = 400;

#[derive(Debug, thiserror::Error)]
pub enum RoomConfigError {
    #[error("[[waiting_rooms]] id {0:?}: use 1-40 of a-z, 0-9 and '-'")]
    Id(String),
    #[error("[[waiting_rooms]] id {0:?} appears twice")]
    Duplicate(String),
    #[error("[[waiting_rooms]] {0}: `until` is before `from`, or the room covers more than {MAX_ROOM_DAYS} days")]
    Days(String),
    #[error("[[waiting_rooms]] {0}: rooms {1} and {0} share days; a day belongs to one room")]
    Overlap(String, String),
    #[error("[[waiting_rooms]] {0}: opens_at {1:?} is neither museum time (2026-12-05T10:00) nor an instant (2026-12-05T09:00:00Z)")]
    OpensAt(String, String),
    #[error("[[waiting_rooms]] {0}: {1} must be at least 1")]
    Zero(String, &'static str),
}

/// The settings' own consistency, checked when the file is read.
pub fn check_waiting_rooms(rooms: &[WaitingRoomSettings]) -> Result<(), RoomConfigError> {
    for (i, r) in rooms.iter().enumerate() {
        let id_ok = (1..=40).contains(&r.id.chars().count())
            && r.id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            return Err(RoomConfigError::Id(r.id.clone()));
        }
        let span = r.from.until(r.until).map(|s| s.get_days()).unwrap_or(-1);
        if r.until < r.from || i64::from(span) >= MAX_ROOM_DAYS {
            return Err(RoomConfigError::Days(r.id.clone()));
        }
        for (name, value) in [
            ("rate_per_minute", r.rate_per_minute),
            ("max_in_shop", r.max_in_shop),
            ("window_minutes", r.window_minutes),
            ("away_after_secs", r.away_after_secs),
            ("max_places_per_client", r.max_places_per_client),
            ("max_places", r.max_places),
        ] {
            if value == 0 {
                return Err(RoomConfigError::Zero(r.id.clone(), name));
            }
        }
        for other in &rooms[..i] {
            if other.id == r.id {
                return Err(RoomConfigError::Duplicate(r.id.clone()));
            }
            if other.from <= r.until && r.from <= other.until {
                return Err(RoomConfigError::Overlap(r.id.clone(), other.id.clone()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tessera-server.example.toml");
        let cfg = ServerConfig::from_file(&path).unwrap();
        assert_eq!(cfg.hold_ttl_secs, 600);
        assert!(cfg.commit_mode().is_ok());
        // The example states the defaults.
        assert_eq!(cfg.postgres, PgLimits::default());
    }

    #[test]
    fn a_postgres_timeout_longer_than_postgresql_accepts_is_refused_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tessera.toml");
        let write = |body: &str| std::fs::write(&path, format!("[postgres]\n{body}\n")).unwrap();

        // The longest PostgreSQL accepts, and 0 (off), still start.
        write("statement_timeout_ms = 2147483647\nlock_timeout_ms = 0");
        let cfg = ServerConfig::from_file(&path).unwrap();
        assert_eq!(cfg.postgres.statement_timeout_ms, PG_MAX_TIMEOUT_MS);

        for key in [
            "statement_timeout_ms",
            "lock_timeout_ms",
            "idle_in_transaction_timeout_ms",
        ] {
            write(&format!("{key} = 2147483648"));
            let message = ServerConfig::from_file(&path).unwrap_err().to_string();
            assert!(
                message.contains(&format!("[postgres] {key} = 2147483648")),
                "{message}"
            );
            assert!(message.contains("at most 2147483647"), "{message}");
            assert!(message.contains("tessera.toml"), "{message}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_secrets() {
        let config = ServerConfig {
            payments: PaymentSettings {
                stripe_secret_key: Some("sk_test_SECRETKEY".into()),
                stripe_webhook_secret: Some("whsec_SECRETHOOK".into()),
                ..PaymentSettings::default()
            },
            mail: MailSettings {
                smtp_username: Some("billetterie".into()),
                smtp_password: Some("SECRETPASSWORD".into()),
                ..MailSettings::default()
            },
            ..ServerConfig::default()
        };
        let shown = format!("{config:?} {config:#?}");
        for secret in ["SECRETKEY", "SECRETHOOK", "SECRETPASSWORD"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        // Everything else still shows, and a set secret says it is set.
        assert!(shown.contains("billetterie"), "{shown}");
        assert!(
            shown.contains("stripe_secret_key: Some(<redacted>)"),
            "{shown}"
        );
        assert!(format!("{:?}", MailSettings::default()).contains("smtp_password: None"));
    }

    #[test]
    fn stripe_secrets_come_from_the_environment_when_the_file_has_none() {
        let env = |name: &str| match name {
            "TESSERA_STRIPE_SECRET_KEY" => Some("sk_test_from_env".to_string()),
            "TESSERA_STRIPE_WEBHOOK_SECRET" => Some("whsec_from_env".to_string()),
            _ => None,
        };
        let mut unset = PaymentSettings::default();
        unset.fill_from(env);
        assert_eq!(unset.stripe_secret_key.as_deref(), Some("sk_test_from_env"));
        assert_eq!(
            unset.stripe_webhook_secret.as_deref(),
            Some("whsec_from_env")
        );

        // What the file says wins.
        let mut set = PaymentSettings {
            stripe_secret_key: Some("sk_test_from_file".into()),
            stripe_webhook_secret: Some("whsec_from_file".into()),
            ..PaymentSettings::default()
        };
        set.fill_from(env);
        assert_eq!(set.stripe_secret_key.as_deref(), Some("sk_test_from_file"));
        assert_eq!(
            set.stripe_webhook_secret.as_deref(),
            Some("whsec_from_file")
        );

        // Neither: still unset (the provider then says which is missing).
        let mut none = PaymentSettings::default();
        none.fill_from(|_| Some("  ".into()));
        assert_eq!(none.stripe_secret_key, None);
        assert_eq!(none.stripe_webhook_secret, None);
    }
}
