//! `Terminal`: the one handle the CLI and the desktop app hold. It owns the
//! local database, the device identity and the HTTP client; every method is a
//! complete use case (sell, void, close a shift, sync); the use cases live in
//! the submodules, grouped by who uses them.

mod gate_mode;
mod peering;
mod printing;
mod push;
mod supervisor;
mod syncing;
mod till;

pub use peering::PeerRound;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::tz::TimeZone;
use rusqlite::{params, Connection};
use tessera_core::admission::DenyReason;
use tessera_core::api::devices::{EnrolRequest, Enrolled, Role};
use tessera_core::api::gate::RedeemResult;
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::Clock;
use tessera_core::pricing::{price_cart, CartLimits, CartLine, Channel};
use tessera_core::slot::SlotId;
use tessera_core::staff::{who_has_pin, StaffMember};
use tessera_core::tally::Tallies;
use tessera_core::ticket_code::{normalize_scanned, TicketSigner};
use uuid::Uuid;

use crate::error::TerminalError;
use crate::gate::{self, GateCache};
use crate::local::{self, keys, Identity};
use crate::printer::{self, PrintOutcomeKind, PrinterSpec};
use crate::receipt::{Receipt, TextDocument};
use crate::sales::{self, parse_slot, SellContext};
use crate::shifts;
use crate::sync;
use crate::views::{
    EngineChange, PrintOutcome, ProductView, Quote, ReportKind, SaleDone, SaleRequest, SaleView,
    ScanView, ShiftReport, ShiftView, SlotStatus, StaffView, Status, SyncSummary, VoidDone,
};

/// How often an online terminal syncs (`TESSERA_SYNC_INTERVAL_MS` overrides).
const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait between attempts while the server is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A cashier waits at most this long for a lease refill before being told.
const REFILL_TIMEOUT: Duration = Duration::from_secs(3);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// An online redeem that takes longer is abandoned for an offline decision.
const GATE_TIMEOUT: Duration = Duration::from_millis(300);
/// After a failed online redeem, decide offline for this long.
const GATE_OFFLINE_HOLD: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Terminal {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    conn: Mutex<Connection>,
    identity: Identity,
    signer: Option<TicketSigner>,
    clock: Clock,
    http: reqwest::Client,
    sync_lock: tokio::sync::Mutex<()>,
    wake: tokio::sync::Notify,
    /// The server said something concerning this device changed: sync,
    /// but not more often than `push::MIN_GAP`.
    push_wake: tokio::sync::Notify,
    /// The server's device channel is connected (its `hello` arrived).
    push_live: AtomicBool,
    /// What changed, for the screens (see [`Terminal::changes`]).
    changes: tokio::sync::broadcast::Sender<EngineChange>,
    /// Between syncs while polling, in ms (see [`Terminal::set_sync_interval`]).
    interval_ms: std::sync::atomic::AtomicU64,
    /// Gate mode's decision data, loaded on first scan, dropped after syncs.
    gate: std::sync::RwLock<Option<Arc<GateCache>>>,
    /// When an online redeem last failed: for a few seconds after, scans are
    /// decided offline straight away instead of waiting for a dead network.
    gate_offline_until: Mutex<Option<std::time::Instant>>,
    /// When a peer's unknown key last made this device fetch keys: at most
    /// once a minute, so anyone on the LAN cannot make it sync on demand.
    key_fetch_at: Mutex<Option<std::time::Instant>>,
    /// Today's admissions shared among gates, loaded on first use.
    peer_book: Mutex<Option<crate::peers::book::PeerBook>>,
    /// The key this device signs shared admissions with (its certified one).
    peer_key: Option<ed25519_dalek::SigningKey>,
    peer_http: reqwest::Client,
    peer_interval: Duration,
    peer_run: tokio::sync::Mutex<Option<peering::PeerRun>>,
    /// Whether the peer service runs: a device off the LAN sends nothing.
    peer_running: std::sync::atomic::AtomicBool,
    peers_down: Mutex<peering::DownPeers>,
}

/// Where enrolment writes the identity.
enum Target {
    /// A new database, moved into place once complete.
    Create(local::Creating),
    /// One left by an enrolment that never finished.
    Reuse(Connection),
}

fn http_client() -> Result<reqwest::Client, TerminalError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| TerminalError::Storage(format!("HTTP client: {e}")))
}

fn clock() -> Result<Clock, TerminalError> {
    Clock::from_env().map_err(TerminalError::Invalid)
}

impl Terminal {
    /// False only when this directory holds no terminal: no database, or one
    /// whose enrolment never finished. A damaged database counts as enrolled,
    /// so a front shows [`Terminal::open`]'s refusal instead of offering to
    /// enrol over it.
    pub fn is_enrolled(dir: &Path) -> bool {
        match local::open_existing(dir) {
            Ok(None) => false,
            Ok(Some(conn)) => !matches!(
                Self::identity_of(&conn, dir),
                Err(TerminalError::NotEnrolled)
            ),
            Err(_) => true,
        }
    }

    /// The identity stored in `conn`. A database without one but with sales
    /// lost its identity somehow: that is damage, not a fresh machine.
    fn identity_of(conn: &Connection, dir: &Path) -> Result<Identity, TerminalError> {
        if let Some(identity) = local::get::<Identity>(conn, keys::IDENTITY)? {
            return Ok(identity);
        }
        let sales: i64 = conn.query_row("SELECT COUNT(*) FROM sales", [], |r| r.get(0))?;
        if sales > 0 {
            return Err(TerminalError::Storage(format!(
                "{} holds {sales} sales but no terminal identity: it is damaged; keep it for \
                 recovery and do not enrol over it",
                local::db_path(dir).display()
            )));
        }
        Err(TerminalError::NotEnrolled)
    }

    /// Opens an enrolled terminal's data directory.
    pub fn open(dir: &Path) -> Result<Terminal, TerminalError> {
        Terminal::open_with_clock(dir, clock()?)
    }

    /// As [`Terminal::open`], on a given clock (tests, demos). Refuses a
    /// damaged database with a message naming the file; creates nothing.
    pub fn open_with_clock(dir: &Path, clock: Clock) -> Result<Terminal, TerminalError> {
        let conn = local::open_existing(dir)?.ok_or(TerminalError::NotEnrolled)?;
        let identity = Self::identity_of(&conn, dir)?;
        let signer = match (&identity.signing_seed, identity.key_id) {
            (Some(hex), Some(key_id)) => {
                let bytes = data_encoding::HEXLOWER
                    .decode(hex.as_bytes())
                    .map_err(|_| TerminalError::Storage("signing key unreadable".into()))?;
                let seed: [u8; 32] = bytes.try_into().map_err(|_| {
                    TerminalError::Storage("signing key has the wrong length".into())
                })?;
                Some(TicketSigner::from_seed(key_id, seed))
            }
            _ => None,
        };
        let interval = std::env::var("TESSERA_SYNC_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_SYNC_INTERVAL);
        let peer_interval = std::env::var("TESSERA_PEER_SYNC_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .unwrap_or(peering::DEFAULT_PEER_INTERVAL);
        let peer_key = peering::peer_key(signer.as_ref());
        Ok(Terminal {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                conn: Mutex::new(conn),
                identity,
                signer,
                clock,
                http: http_client()?,
                sync_lock: tokio::sync::Mutex::new(()),
                wake: tokio::sync::Notify::new(),
                push_wake: tokio::sync::Notify::new(),
                push_live: AtomicBool::new(false),
                changes: tokio::sync::broadcast::channel(64).0,
                interval_ms: std::sync::atomic::AtomicU64::new(
                    u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
                ),
                gate: std::sync::RwLock::new(None),
                gate_offline_until: Mutex::new(None),
                key_fetch_at: Mutex::new(None),
                peer_book: Mutex::new(None),
                peer_key,
                peer_http: crate::peers::sender::client().map_err(TerminalError::Storage)?,
                peer_interval,
                peer_run: tokio::sync::Mutex::new(None),
                peer_running: std::sync::atomic::AtomicBool::new(false),
                peers_down: Mutex::new(Default::default()),
            }),
        })
    }

    /// Enrols this data directory with a one-time code from the server's
    /// operator, then syncs once to fetch the catalogue, staff and leases.
    pub async fn enrol(
        dir: &Path,
        server_url: &str,
        code: &str,
        name: &str,
    ) -> Result<Terminal, TerminalError> {
        Terminal::enrol_with_clock(dir, server_url, code, name, clock()?).await
    }

    /// As [`Terminal::enrol`], on a given clock.
    pub async fn enrol_with_clock(
        dir: &Path,
        server_url: &str,
        code: &str,
        name: &str,
        clock: Clock,
    ) -> Result<Terminal, TerminalError> {
        let server_url = server_url.trim().trim_end_matches('/').to_string();
        if !(server_url.starts_with("http://") || server_url.starts_with("https://")) {
            return Err(TerminalError::Invalid(format!(
                "server URL must start with http:// or https://, got {server_url:?}"
            )));
        }
        let name = name.trim();
        if code.trim().is_empty() {
            return Err(TerminalError::Invalid(
                "a device name and an enrolment code are needed".into(),
            ));
        }
        tessera_core::limits::text("device name", name, tessera_core::limits::DEVICE_NAME_CHARS)
            .map_err(|e| TerminalError::Invalid(e.to_string()))?;
        // Only a directory without a database gets a new one. One whose
        // enrolment never finished (no identity, no sales) is reused; an
        // enrolled or damaged one is refused before the code is spent.
        let reuse = match local::open_existing(dir)? {
            None => None,
            Some(conn) => match Self::identity_of(&conn, dir) {
                Ok(existing) => return Err(TerminalError::AlreadyEnrolled(existing.name)),
                Err(TerminalError::NotEnrolled) => Some(conn),
                Err(e) => return Err(e),
            },
        };
        let target = match reuse {
            Some(conn) => Target::Reuse(conn),
            None => Target::Create(local::create(dir)?),
        };
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| TerminalError::Storage(format!("no randomness: {e}")))?;
        let public = TicketSigner::from_seed(0, seed).public_key();
        let request = EnrolRequest {
            code: code.trim().to_string(),
            name: name.to_string(),
            public_key: Some(data_encoding::HEXLOWER.encode(&public)),
        };
        let http = http_client()?;
        let enrolled: Result<Enrolled, TerminalError> = sync::post(
            &http,
            &format!("{server_url}/v1/devices/enrol"),
            None,
            &request,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| match e {
            TerminalError::Refused(m) => TerminalError::Enrolment(m),
            other => other,
        });
        let enrolled = match enrolled {
            Ok(e) => e,
            Err(e) => {
                if let Target::Create(c) = target {
                    c.abandon();
                }
                return Err(e);
            }
        };
        let identity = Identity {
            device_id: enrolled.device_id,
            role: enrolled.role,
            name: name.to_string(),
            server_url,
            token: enrolled.token,
            key_id: enrolled.key_id,
            signing_seed: enrolled
                .key_id
                .map(|_| data_encoding::HEXLOWER.encode(&seed)),
        };
        let store = |conn: &Connection| -> Result<(), TerminalError> {
            local::set(conn, keys::IDENTITY, &identity)?;
            local::set(conn, keys::PRINTER, "none")
        };
        match target {
            Target::Create(c) => {
                store(&c.conn)?;
                c.install()?;
            }
            Target::Reuse(conn) => store(&conn)?,
        }
        let terminal = Terminal::open_with_clock(dir, clock)?;
        // The first sync brings the catalogue and keys; without them nothing
        // can be sold or scanned, so a failure here is worth reporting.
        terminal.sync_now().await?;
        Ok(terminal)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (its own
        // transaction rolls back), so a poisoned lock is still usable.
        self.inner.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs database work off the async threads: a commit waits for an
    /// fsync, which must not stall the runtime (or the app's window).
    pub(crate) async fn on_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, TerminalError> + Send + 'static,
    ) -> Result<T, TerminalError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&mut this.db()))
            .await
            .map_err(|e| TerminalError::Storage(format!("database task failed: {e}")))?
    }

    /// Builds a counter's next sync request (and says which day it is in
    /// the museum) on the blocking pool: it commits, so it waits for an fsync.
    pub(crate) async fn build_sync_request_off_thread(
        &self,
    ) -> Result<(jiff::civil::Date, tessera_core::api::sync::SyncRequest), TerminalError> {
        let identity = self.inner.identity.clone();
        let clock = self.inner.clock;
        self.on_db(move |conn| {
            // Before the first sync there is no catalogue: any zone will do
            // for a request that only asks for it.
            let tz = local::get::<Catalogue>(conn, keys::CATALOGUE)
                .ok()
                .flatten()
                .and_then(|c| c.time_zone().ok())
                .unwrap_or(TimeZone::UTC);
            let now = clock.now();
            let today = now.to_zoned(tz).date();
            let request = sync::build_request(conn, &identity, now, today)?;
            Ok((today, request))
        })
        .await
    }

    /// Records a failed exchange for the status bar, on the blocking pool.
    /// Recording is best effort: the caller reports the failure itself.
    pub(crate) async fn record_failure_off_thread(&self, error: &TerminalError) {
        // `Invalid` displays its text as is, so the stored reason reads
        // exactly as `error` would.
        let recorded = TerminalError::Invalid(error.to_string());
        let _ = self
            .on_db(move |conn| sync::record_failure(conn, &recorded))
            .await;
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn device_id(&self) -> Uuid {
        self.inner.identity.device_id
    }

    pub fn role(&self) -> Role {
        self.inner.identity.role
    }

    pub fn name(&self) -> &str {
        &self.inner.identity.name
    }

    /// What changed in the engine, as it happens: the screens re-read what
    /// a change concerns instead of polling. A receiver that falls behind
    /// gets `Lagged` and should re-read everything.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<EngineChange> {
        self.inner.changes.subscribe()
    }

    pub(crate) fn changed(&self, what: &[EngineChange]) {
        for w in what {
            // No receiver (the CLI, a test) is not an error.
            let _ = self.inner.changes.send(*w);
        }
    }

    /// How often this device syncs while its push channel is down (the
    /// channel's changes wake it at once anyway). Starts as
    /// `TESSERA_SYNC_INTERVAL_MS` or 2 s; takes effect after the current wait.
    pub fn set_sync_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.inner.interval_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.inner.interval_ms.load(Ordering::Relaxed))
    }

    /// The server's device channel is connected.
    pub fn push_live(&self) -> bool {
        self.inner.push_live.load(Ordering::Relaxed)
    }

    pub fn clock(&self) -> Clock {
        self.inner.clock
    }

    fn require_counter(&self) -> Result<&TicketSigner, TerminalError> {
        match (&self.inner.signer, self.inner.identity.role) {
            (Some(signer), Role::Counter) => Ok(signer),
            _ => Err(TerminalError::WrongRole {
                actual: self.inner.identity.role.as_str().into(),
                needed: "counter".into(),
            }),
        }
    }

    pub(crate) fn catalogue(&self) -> Result<Catalogue, TerminalError> {
        local::get::<Catalogue>(&self.db(), keys::CATALOGUE)?.ok_or_else(|| {
            TerminalError::Invalid(
                "no catalogue yet: it arrives with the first sync with the server".into(),
            )
        })
    }

    fn tz(catalogue: &Catalogue) -> Result<TimeZone, TerminalError> {
        catalogue
            .time_zone()
            .map_err(|e| TerminalError::Storage(e.to_string()))
    }

    fn staff(&self) -> Result<Vec<StaffMember>, TerminalError> {
        Ok(local::get::<Vec<StaffMember>>(&self.db(), keys::STAFF)?.unwrap_or_default())
    }

    /// The cashier whose PIN this is, checked here against the argon2id
    /// verifiers the server sent (cashiers only: supervisors' PINs are
    /// checked by the server).
    fn staff_with_pin(&self, pin: &str) -> Result<StaffMember, TerminalError> {
        let staff = self.staff()?;
        who_has_pin(&staff, pin)
            .filter(|s| !s.may_approve())
            .cloned()
            .ok_or(TerminalError::BadPin)
    }

    pub fn status(&self) -> Result<Status, TerminalError> {
        let conn = self.db();
        let acked = sync::acked_seq(&conn)?;
        let count = |sql: &str| -> Result<u32, TerminalError> {
            Ok(conn.query_row(sql, [], |r| r.get(0))?)
        };
        let pending_sales: u32 = conn.query_row(
            "SELECT COUNT(*) FROM sales WHERE terminal_seq > ?1",
            params![acked],
            |r| r.get(0),
        )?;
        let catalogue = local::get::<Catalogue>(&conn, keys::CATALOGUE)?;
        let now = self.inner.clock.now();
        let day_start = catalogue
            .as_ref()
            .and_then(|c| c.time_zone().ok())
            .and_then(|tz| now.to_zoned(tz).start_of_day().ok())
            .map(|d| d.timestamp().as_millisecond())
            .unwrap_or(0);
        let (museum, time_zone) = catalogue
            .map(|c| (c.museum.name, c.museum.time_zone))
            .unwrap_or_default();
        Ok(Status {
            device_name: self.inner.identity.name.clone(),
            role: self.inner.identity.role,
            museum,
            time_zone,
            server_url: self.inner.identity.server_url.clone(),
            online: local::get::<bool>(&conn, keys::ONLINE)?.unwrap_or(false),
            last_sync_at: local::get(&conn, keys::LAST_SYNC_AT)?,
            last_sync_error: local::get::<Option<String>>(&conn, keys::LAST_SYNC_ERROR)?.flatten(),
            pending_sales,
            pending_voids: count("SELECT COUNT(*) FROM voids WHERE uploaded = 0")?,
            needs_supervisor: count("SELECT COUNT(*) FROM quarantined")?,
            pending_shifts: count(
                "SELECT COUNT(*) FROM shifts WHERE closed_at IS NOT NULL AND uploaded = 0",
            )?,
            pending_scans: gate::pending(&conn)?,
            admitted_today: gate::admitted_since(&conn, day_start)?,
            shift: shifts::current(&conn)?,
            printer: local::get::<String>(&conn, keys::PRINTER)?.unwrap_or_else(|| "none".into()),
            now,
            live: self.push_live(),
            poll_every_s: u32::try_from(self.poll_interval().as_secs()).unwrap_or(u32::MAX),
            gate_peers: self
                .peer_links(local::get::<Vec<String>>(&conn, keys::PEERS)?.unwrap_or_default()),
        })
    }

    pub fn products(&self) -> Result<Vec<ProductView>, TerminalError> {
        let c = self.catalogue()?;
        Ok(c.products
            .iter()
            .map(|p| ProductView {
                product_id: p.id.clone(),
                name: p.name.clone(),
                price: p.price,
                vat_bp: c.vat_bp(p),
                admits: p.admits,
                requires_membership: p.requires_membership,
            })
            .collect())
    }

    /// Today's slots with what this counter can sell and what is left.
    pub fn slots_today(&self) -> Result<Vec<SlotStatus>, TerminalError> {
        let catalogue = self.catalogue()?;
        let tz = Self::tz(&catalogue)?;
        let now = self.inner.clock.now();
        let today = now.to_zoned(tz).date();
        let conn = self.db();
        let mut tallies: Tallies = local::get(&conn, keys::TALLIES)?.unwrap_or_default();
        let me = self.inner.identity.device_id.to_string();
        let from = SlotId::new(today, 0).map_err(|e| TerminalError::Storage(e.to_string()))?;
        for (slot, t) in sync::own_tallies_since(&conn, i64::MAX as u64, from)? {
            tallies.set_actor(&me, slot, t.sold, t.voided);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT slot_id, starts_at, ends_at, capacity, as_of
             FROM slots WHERE slot_id >= ?1 ORDER BY slot_id",
        )?;
        let rows = stmt.query_map(params![from.to_string()], |r| {
            Ok((
                parse_slot(&r.get::<_, String>(0)?)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (slot_id, starts, ends, capacity, as_of) = row?;
            if slot_id.date != today {
                continue;
            }
            let left = sales::lease_for(&conn, slot_id)?.map_or(0, |l| l.left());
            let sold = tallies.net(&slot_id).min(u64::from(capacity)) as u32;
            let closed = now.as_millisecond() >= ends;
            out.push(SlotStatus {
                slot_id,
                label: slot_id.hhmm(),
                starts_at: tessera_core::clock::from_ms(starts),
                ends_at: tessera_core::clock::from_ms(ends),
                capacity,
                lease_left: if closed { 0 } else { left },
                remaining: capacity - sold,
                as_of: Some(tessera_core::clock::from_ms(as_of)),
                closed,
            });
        }
        Ok(out)
    }

    pub fn quote(&self, slot: SlotId, items: &[CartLine]) -> Result<Quote, TerminalError> {
        let catalogue = self.catalogue()?;
        let priced = price_cart(&catalogue, items, Channel::Counter, CartLimits::COUNTER)?;
        let left = sales::lease_for(&self.db(), slot)?
            .map(|l| l.left())
            .unwrap_or(0);
        Ok(Quote {
            vat: sales::vat_lines(&priced.lines),
            lines: priced.lines,
            total: priced.total.amount,
            currency: priced.total.currency.to_string(),
            admissions: priced.admissions,
            lease_left: left,
        })
    }

    pub fn login(&self, pin: &str) -> Result<StaffView, TerminalError> {
        let who = self.staff_with_pin(pin)?;
        Ok(StaffView {
            name: who.name,
            role: who.role,
        })
    }
}
