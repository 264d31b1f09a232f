//! `Terminal`: the one handle the CLI and the desktop app hold. It owns the
//! local database, the device identity and the HTTP client; every method is a
//! complete use case (sell, void, close a shift, sync).

use std::path::{Path, PathBuf};
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
    PrintOutcome, ProductView, Quote, ReportKind, SaleDone, SaleRequest, SaleView, ScanView,
    ShiftReport, ShiftView, SlotStatus, StaffView, Status, SyncSummary, VoidDone,
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
    interval: Duration,
    /// Gate mode's decision data, loaded on first scan, dropped after syncs.
    gate: std::sync::RwLock<Option<Arc<GateCache>>>,
    /// When an online redeem last failed: for a few seconds after, scans are
    /// decided offline straight away instead of waiting for a dead network.
    gate_offline_until: Mutex<Option<std::time::Instant>>,
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
    pub fn is_enrolled(dir: &Path) -> bool {
        local::open(dir)
            .ok()
            .and_then(|c| local::get::<Identity>(&c, keys::IDENTITY).ok().flatten())
            .is_some()
    }

    /// Opens an enrolled terminal's data directory.
    pub fn open(dir: &Path) -> Result<Terminal, TerminalError> {
        Terminal::open_with_clock(dir, clock()?)
    }

    /// As [`Terminal::open`], on a given clock (tests, demos).
    pub fn open_with_clock(dir: &Path, clock: Clock) -> Result<Terminal, TerminalError> {
        let conn = local::open(dir)?;
        let identity: Identity =
            local::get(&conn, keys::IDENTITY)?.ok_or(TerminalError::NotEnrolled)?;
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
                interval,
                gate: std::sync::RwLock::new(None),
                gate_offline_until: Mutex::new(None),
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
        if name.is_empty() || name.len() > 100 || code.trim().is_empty() {
            return Err(TerminalError::Invalid(
                "a device name and an enrolment code are needed".into(),
            ));
        }
        {
            let conn = local::open(dir)?;
            if let Some(existing) = local::get::<Identity>(&conn, keys::IDENTITY)? {
                return Err(TerminalError::AlreadyEnrolled(existing.name));
            }
        }
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
        let enrolled: Enrolled = sync::post(
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
        })?;
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
        {
            let conn = local::open(dir)?;
            local::set(&conn, keys::IDENTITY, &identity)?;
            local::set(&conn, keys::PRINTER, "none")?;
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

    fn staff_with_pin(&self, pin: &str) -> Result<StaffMember, TerminalError> {
        let staff = self.staff()?;
        who_has_pin(&staff, pin)
            .cloned()
            .ok_or(TerminalError::BadPin)
    }

    pub fn printer(&self) -> Result<PrinterSpec, TerminalError> {
        let text =
            local::get::<String>(&self.db(), keys::PRINTER)?.unwrap_or_else(|| "none".into());
        text.parse::<PrinterSpec>()
            .map_err(|e| TerminalError::Printer(e.to_string()))
    }

    pub fn set_printer(&self, spec: &str) -> Result<(), TerminalError> {
        let parsed: PrinterSpec = spec
            .trim()
            .parse()
            .map_err(|e: printer::PrintError| TerminalError::Invalid(e.to_string()))?;
        local::set(&self.db(), keys::PRINTER, &parsed.to_string())
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
        let museum = local::get::<Catalogue>(&conn, keys::CATALOGUE)?
            .map(|c| c.museum.name)
            .unwrap_or_default();
        Ok(Status {
            device_name: self.inner.identity.name.clone(),
            role: self.inner.identity.role,
            museum,
            server_url: self.inner.identity.server_url.clone(),
            online: local::get::<bool>(&conn, keys::ONLINE)?.unwrap_or(false),
            last_sync_at: local::get(&conn, keys::LAST_SYNC_AT)?,
            last_sync_error: local::get::<Option<String>>(&conn, keys::LAST_SYNC_ERROR)?.flatten(),
            pending_sales,
            pending_voids: count("SELECT COUNT(*) FROM voids WHERE uploaded = 0")?,
            pending_shifts: count(
                "SELECT COUNT(*) FROM shifts WHERE closed_at IS NOT NULL AND uploaded = 0",
            )?,
            pending_scans: gate::pending(&conn)?,
            shift: shifts::current(&conn)?,
            printer: local::get::<String>(&conn, keys::PRINTER)?.unwrap_or_else(|| "none".into()),
            now: self.inner.clock.now(),
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
        for (slot, t) in sync::own_tallies(&conn, i64::MAX as u64)? {
            tallies.set_actor(&me, slot, t.sold, t.voided);
        }
        let from = SlotId::new(today, 0).map_err(|e| TerminalError::Storage(e.to_string()))?;
        let mut stmt = conn.prepare_cached(
            "SELECT s.slot_id, s.starts_at, s.ends_at, s.capacity, s.as_of,
                    COALESCE(CASE WHEN l.revoked = 1 THEN 0 ELSE l.granted_total - l.released_total - l.sold END, 0)
             FROM slots s LEFT JOIN leases l ON l.slot_id = s.slot_id
             WHERE s.slot_id >= ?1 ORDER BY s.slot_id",
        )?;
        let rows = stmt.query_map(params![from.to_string()], |r| {
            Ok((
                parse_slot(&r.get::<_, String>(0)?)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, u32>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (slot_id, starts, ends, capacity, as_of, left) = row?;
            if slot_id.date != today {
                continue;
            }
            let sold = tallies.net(&slot_id).min(u64::from(capacity)) as u32;
            let closed = now.as_millisecond() >= ends;
            out.push(SlotStatus {
                slot_id,
                label: slot_id.hhmm(),
                starts_at: tessera_core::clock::from_ms(starts),
                ends_at: tessera_core::clock::from_ms(ends),
                capacity,
                lease_left: if closed { 0 } else { left.max(0) as u32 },
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

    pub fn open_shift(&self, pin: &str, float: i64) -> Result<ShiftView, TerminalError> {
        self.require_counter()?;
        let who = self.staff_with_pin(pin)?;
        shifts::open(&mut self.db(), &who, float, self.inner.clock.now())
    }

    pub fn current_shift(&self) -> Result<Option<ShiftView>, TerminalError> {
        shifts::current(&self.db())
    }

    fn commit(&self, request: &SaleRequest) -> Result<SaleView, TerminalError> {
        let signer = self.require_counter()?;
        let catalogue = self.catalogue()?;
        let ctx = SellContext {
            catalogue: &catalogue,
            signer,
            now: self.inner.clock.now(),
        };
        sales::commit_sale(&mut self.db(), &ctx, request)
    }

    fn online(&self) -> bool {
        local::get::<bool>(&self.db(), keys::ONLINE)
            .ok()
            .flatten()
            .unwrap_or(false)
    }

    /// Sells: commits the sale locally (durable), then prints the receipt.
    /// Beyond this counter's lease, an online counter asks the server for the
    /// places once and tries again; offline, the cashier is told how many are
    /// left here.
    pub async fn sell(&self, request: SaleRequest) -> Result<SaleDone, TerminalError> {
        let sale = match self.commit(&request) {
            Err(TerminalError::NotEnoughPlaces {
                slot,
                left,
                requested,
            }) => {
                sales::want(&self.db(), request.slot_id, requested, self.inner.clock.now())?;
                if !self.online() {
                    return Err(TerminalError::NotEnoughPlaces {
                        slot,
                        left,
                        requested,
                    });
                }
                let _ = self.sync_with_timeout(REFILL_TIMEOUT).await;
                self.commit(&request)?
            }
            other => other?,
        };
        crash_point("abort-after-sale-commit");
        self.inner.wake.notify_one();
        let printed = self.print_sale(&sale, false).await;
        Ok(SaleDone { sale, printed })
    }

    async fn print_sale(&self, sale: &SaleView, reprint: bool) -> PrintOutcome {
        let receipt = match self.receipt_for(sale, reprint) {
            Ok(r) => r,
            Err(e) => {
                return PrintOutcome::Failed {
                    message: e.to_string(),
                }
            }
        };
        let spec = match self.printer() {
            Ok(s) => s,
            Err(e) => {
                return PrintOutcome::Failed {
                    message: e.to_string(),
                }
            }
        };
        let result =
            tokio::task::spawn_blocking(move || printer::print_receipt(&spec, &receipt)).await;
        outcome(
            result
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
        )
    }

    fn receipt_for(&self, sale: &SaleView, reprint: bool) -> Result<Receipt, TerminalError> {
        let catalogue = self.catalogue()?;
        let tz = Self::tz(&catalogue)?;
        let window = sales::slot_row(&self.db(), sale.slot_id)?
            .map(|s| s.window_minutes)
            .unwrap_or(catalogue.schedule.slot_minutes);
        Ok(Receipt::for_sale(
            sale,
            &catalogue,
            &self.inner.identity.name,
            &tz,
            window,
            reprint,
        ))
    }

    pub fn sale(&self, sale_id: Uuid) -> Result<SaleView, TerminalError> {
        let catalogue = self.catalogue()?;
        let conn = self.db();
        let acked = sync::acked_seq(&conn)?;
        sales::load_sale(&conn, &catalogue, sale_id, acked)
    }

    /// Today's sales at this counter, newest first.
    pub fn sales_today(&self) -> Result<Vec<SaleView>, TerminalError> {
        let catalogue = self.catalogue()?;
        let tz = Self::tz(&catalogue)?;
        let today = self.inner.clock.now().to_zoned(tz.clone()).date();
        let start = today
            .to_zoned(tz.clone())
            .map_err(|e| TerminalError::Storage(e.to_string()))?
            .timestamp();
        let end = today
            .tomorrow()
            .and_then(|d| d.to_zoned(tz))
            .map_err(|e| TerminalError::Storage(e.to_string()))?
            .timestamp();
        let conn = self.db();
        let acked = sync::acked_seq(&conn)?;
        sales::sales_between(
            &conn,
            &catalogue,
            start.as_millisecond(),
            end.as_millisecond(),
            acked,
        )
    }

    /// Prints a sale's receipt again, marked REPRINT.
    pub async fn reprint(&self, sale_id: Uuid) -> Result<PrintOutcome, TerminalError> {
        let sale = self.sale(sale_id)?;
        Ok(self.print_sale(&sale, true).await)
    }

    pub fn void(
        &self,
        sale_id: Uuid,
        supervisor_pin: &str,
        reason: &str,
    ) -> Result<VoidDone, TerminalError> {
        self.require_counter()?;
        let approver = self.staff_with_pin(supervisor_pin)?;
        if !approver.may_approve() {
            return Err(TerminalError::NotSupervisor);
        }
        let done = sales::void_sale(
            &mut self.db(),
            sale_id,
            &approver,
            reason,
            self.inner.clock.now(),
        )?;
        self.inner.wake.notify_one();
        Ok(done)
    }

    fn currency(&self) -> String {
        self.catalogue()
            .map(|c| c.museum.currency.to_string())
            .unwrap_or_else(|_| "EUR".into())
    }

    /// The Z report of the most recently closed shift.
    pub fn last_z_report(&self) -> Result<Option<ShiftReport>, TerminalError> {
        shifts::last_closed(&self.db())
    }

    pub fn x_report(&self) -> Result<ShiftReport, TerminalError> {
        let currency = self.currency();
        let conn = self.db();
        let shift = shifts::current(&conn)?.ok_or(TerminalError::NoShift)?;
        shifts::report(
            &conn,
            &shift,
            &self.inner.identity.name,
            &currency,
            ReportKind::X,
            None,
            self.inner.clock.now(),
        )
    }

    /// Closes the shift with the counted cash; the Z report is stored, queued
    /// for upload and printed.
    pub async fn close_shift(&self, counted: i64) -> Result<ShiftReport, TerminalError> {
        let currency = self.currency();
        let report = shifts::close(
            &mut self.db(),
            &self.inner.identity.name,
            &currency,
            counted,
            self.inner.clock.now(),
        )?;
        self.inner.wake.notify_one();
        let _ = self.print_report(&report).await;
        Ok(report)
    }

    pub async fn print_report(&self, report: &ShiftReport) -> Result<PrintOutcome, TerminalError> {
        let catalogue = self.catalogue()?;
        let tz = Self::tz(&catalogue)?;
        let document = TextDocument::for_shift(report, &catalogue.museum.name, &tz);
        let spec = self.printer()?;
        let result =
            tokio::task::spawn_blocking(move || printer::print_document(&spec, &document)).await;
        Ok(outcome(
            result
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
        ))
    }

    pub async fn test_print(&self) -> Result<PrintOutcome, TerminalError> {
        let name = self
            .catalogue()
            .map(|c| c.museum.name)
            .unwrap_or_else(|_| "Tessera".into());
        let document = TextDocument {
            museum_name: name,
            title: "TEST PRINT".into(),
            rows: vec![
                ("Counter".into(), self.inner.identity.name.clone()),
                ("Time".into(), self.inner.clock.now().to_string()),
            ],
        };
        let spec = self.printer()?;
        let result =
            tokio::task::spawn_blocking(move || printer::print_document(&spec, &document)).await;
        Ok(outcome(
            result
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
        ))
    }

    /// What the next sync round would send (the outbox and lease reports),
    /// for diagnostics.
    pub fn pending_sync_request(
        &self,
    ) -> Result<tessera_core::api::sync::SyncRequest, TerminalError> {
        let tz = self.catalogue().and_then(|c| Self::tz(&c))?;
        let today = self.inner.clock.now().to_zoned(tz).date();
        sync::build_request(
            &mut self.db(),
            &self.inner.identity,
            self.inner.clock.now(),
            today,
        )
    }

    /// One sync round now (more if there is more to upload or places to give
    /// back), at most one at a time.
    pub async fn sync_now(&self) -> Result<SyncSummary, TerminalError> {
        match self.inner.identity.role {
            Role::Counter => {
                let summary = self.sync_with_timeout(UPLOAD_TIMEOUT).await?;
                // A counter can work the gate too: keep its scans and
                // revocation list current.
                self.gate_sync_now().await?;
                Ok(summary)
            }
            _ => {
                self.gate_sync_now().await?;
                Ok(SyncSummary {
                    uploaded_sales: 0,
                    acked_seq: 0,
                    pending_sales: 0,
                    leases_granted: 0,
                    places_returned: 0,
                })
            }
        }
    }

    /// Uploads offline scans; fetches keys, voided tickets and entry policy.
    pub async fn gate_sync_now(&self) -> Result<u32, TerminalError> {
        let _guard = self.inner.sync_lock.lock().await;
        let request = gate::build_request(&self.db(), &self.inner.identity)?;
        let sent = request.scans.len() as u32;
        let url = format!("{}/v1/gate/sync", self.inner.identity.server_url);
        let response: Result<tessera_core::api::gate_sync::GateSyncResponse, _> = sync::post(
            &self.inner.http,
            &url,
            Some(&self.inner.identity.token),
            &request,
            UPLOAD_TIMEOUT,
        )
        .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                let _ = sync::record_failure(&self.db(), &e);
                return Err(e);
            }
        };
        gate::apply_response(&mut self.db(), &response, self.inner.clock.now())?;
        self.forget_gate_cache();
        if response.conflicts > 0 {
            tracing::warn!(
                conflicts = response.conflicts,
                "tickets this gate admitted offline were also admitted elsewhere"
            );
        }
        Ok(sent)
    }

    fn forget_gate_cache(&self) {
        *self.inner.gate.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn gate_cache(&self) -> Result<Arc<GateCache>, TerminalError> {
        if let Some(cache) = self
            .inner
            .gate
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            return Ok(cache.clone());
        }
        let cache = Arc::new(gate::load_cache(&self.db())?);
        *self.inner.gate.write().unwrap_or_else(|p| p.into_inner()) = Some(cache.clone());
        Ok(cache)
    }

    /// Scans a ticket at the gate: decided here from the code (signature,
    /// day, window, voided), then redeemed at the server within 300 ms, or,
    /// if the server does not answer in time, admitted offline and uploaded
    /// later (the answer says so).
    pub async fn scan(&self, code: &str) -> Result<ScanView, TerminalError> {
        let started = std::time::Instant::now();
        let code = normalize_scanned(code);
        let cache = self.gate_cache()?;
        let now = self.inner.clock.now();
        let day_start = now
            .to_zoned(cache.tz.clone())
            .start_of_day()
            .map_err(|e| TerminalError::Storage(e.to_string()))?
            .timestamp()
            .as_millisecond();
        let mut view = ScanView {
            result: RedeemResult::Denied,
            reason: None,
            message: String::new(),
            ticket_id: None,
            product_id: None,
            product_name: None,
            admits: None,
            slot_id: None,
            first_used_at: None,
            first_used_by: None,
            offline: true,
            admitted_today: 0,
            decided_in_us: 0,
        };
        let finish = |mut v: ScanView, this: &Terminal| -> Result<ScanView, TerminalError> {
            v.admitted_today = gate::admitted_since(&this.db(), day_start)?;
            v.decided_in_us = started.elapsed().as_micros() as u64;
            Ok(v)
        };
        let claims = match gate::precheck(&cache, &code, now) {
            Ok(c) => c,
            Err((reason, claims)) => {
                view.reason = Some(reason);
                view.message = reason.explain().to_string();
                if let Some(c) = claims {
                    view.message = format!(
                        "{} ({} on {})",
                        reason.explain(),
                        c.slot.hhmm(),
                        c.slot.date
                    );
                    describe(&mut view, &c, &cache);
                }
                return finish(view, self);
            }
        };
        describe(&mut view, &claims, &cache);
        // Bound first: a guard in an `if let` lives through its block.
        let first = gate::first_admission(&self.db(), claims.ticket_id)?;
        if let Some(at) = first {
            let at = tessera_core::clock::from_ms(at);
            view.reason = Some(DenyReason::AlreadyUsed);
            view.first_used_at = Some(at);
            view.first_used_by = Some(self.inner.identity.name.clone());
            view.message = format!(
                "Already used at {} at this gate",
                at.to_zoned(cache.tz.clone()).strftime("%H:%M:%S")
            );
            return finish(view, self);
        }
        let scan_id = tessera_core::ids::new_id();
        if let Some(answer) = self.redeem_online(&code, scan_id).await {
            view.offline = false;
            view.result = answer.result;
            view.reason = answer.reason;
            view.message = answer.message;
            view.first_used_at = answer.first_redeemed_at;
            view.first_used_by = answer.first_redeemed_by;
            if answer.result == RedeemResult::Admitted {
                gate::record(&mut self.db(), scan_id, &claims, &code, now, true)?;
            }
            return finish(view, self);
        }
        // Offline: this device's own log decides, and the server merges later.
        let recorded = gate::record(&mut self.db(), scan_id, &claims, &code, now, false)?;
        if recorded {
            view.result = RedeemResult::Admitted;
            view.message = format!(
                "Admit {} (offline: checked here, will upload)",
                claims.admits
            );
            view.first_used_at = Some(now);
            view.first_used_by = Some(self.inner.identity.name.clone());
        } else {
            view.reason = Some(DenyReason::AlreadyUsed);
            view.message = "Already used at this gate".into();
        }
        self.inner.wake.notify_one();
        finish(view, self)
    }

    /// The server's answer, or None if it cannot give one within 300 ms.
    async fn redeem_online(
        &self,
        code: &str,
        scan_id: Uuid,
    ) -> Option<tessera_core::api::gate::Redemption> {
        {
            let until = self
                .inner
                .gate_offline_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if until.is_some_and(|t| std::time::Instant::now() < t) {
                return None;
            }
        }
        let url = format!("{}/v1/gate/redeem", self.inner.identity.server_url);
        let body = serde_json::json!({"code": code, "scan_id": scan_id});
        let result = tokio::time::timeout(
            GATE_TIMEOUT,
            sync::post::<_, tessera_core::api::gate::Redemption>(
                &self.inner.http,
                &url,
                Some(&self.inner.identity.token),
                &body,
                GATE_TIMEOUT,
            ),
        )
        .await;
        match result {
            Ok(Ok(answer)) => Some(answer),
            Ok(Err(e)) => {
                tracing::info!(error = %e, "gate falls back to offline");
                self.gate_offline_for(GATE_OFFLINE_HOLD);
                None
            }
            Err(_) => {
                tracing::info!("server did not answer within 300 ms; gate falls back to offline");
                self.gate_offline_for(GATE_OFFLINE_HOLD);
                None
            }
        }
    }

    fn gate_offline_for(&self, hold: Duration) {
        *self
            .inner
            .gate_offline_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now() + hold);
    }

    async fn supervisor_get(
        &self,
        pin: &str,
        path: &str,
    ) -> Result<reqwest::Response, TerminalError> {
        self.inner
            .http
            .get(format!("{}{path}", self.inner.identity.server_url))
            .bearer_auth(&self.inner.identity.token)
            .header("x-supervisor-pin", pin.trim())
            .timeout(UPLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| TerminalError::Offline(e.to_string()))
    }

    /// The server's day report (needs the network and a supervisor's PIN).
    pub async fn day_report(
        &self,
        supervisor_pin: &str,
        date: jiff::civil::Date,
    ) -> Result<serde_json::Value, TerminalError> {
        let response = self
            .supervisor_get(supervisor_pin, &format!("/v1/reports/day?date={date}"))
            .await?;
        sync::read(response).await
    }

    /// The day report as CSV, for a spreadsheet.
    pub async fn day_report_csv(
        &self,
        supervisor_pin: &str,
        date: jiff::civil::Date,
    ) -> Result<String, TerminalError> {
        let response = self
            .supervisor_get(
                supervisor_pin,
                &format!("/v1/reports/day?date={date}&format=csv"),
            )
            .await?;
        if !response.status().is_success() {
            return sync::read::<String>(response).await;
        }
        response
            .text()
            .await
            .map_err(|e| TerminalError::Offline(e.to_string()))
    }

    /// The counters' leases of a day, for choosing one to revoke.
    pub async fn leases(
        &self,
        supervisor_pin: &str,
        date: jiff::civil::Date,
    ) -> Result<serde_json::Value, TerminalError> {
        let response = self
            .supervisor_get(supervisor_pin, &format!("/v1/leases?date={date}"))
            .await?;
        sync::read(response).await
    }

    /// Revokes a dead counter's lease at the server.
    pub async fn revoke_lease(
        &self,
        supervisor_pin: &str,
        lease_id: Uuid,
    ) -> Result<serde_json::Value, TerminalError> {
        let response = self
            .inner
            .http
            .post(format!(
                "{}/v1/leases/{lease_id}/revoke",
                self.inner.identity.server_url
            ))
            .bearer_auth(&self.inner.identity.token)
            .header("x-supervisor-pin", supervisor_pin.trim())
            .timeout(UPLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| TerminalError::Offline(e.to_string()))?;
        sync::read(response).await
    }

    async fn sync_with_timeout(&self, timeout: Duration) -> Result<SyncSummary, TerminalError> {
        self.require_counter()?;
        let _guard = self.inner.sync_lock.lock().await;
        let mut summary = SyncSummary {
            uploaded_sales: 0,
            acked_seq: 0,
            pending_sales: 0,
            leases_granted: 0,
            places_returned: 0,
        };
        for _round in 0..20 {
            // Before the first sync there is no catalogue: any zone will do
            // for a request that only asks for it.
            let tz = self
                .catalogue()
                .ok()
                .and_then(|c| c.time_zone().ok())
                .unwrap_or(TimeZone::UTC);
            let today = self.inner.clock.now().to_zoned(tz).date();
            let request = sync::build_request(
                &mut self.db(),
                &self.inner.identity,
                self.inner.clock.now(),
                today,
            )?;
            let url = format!("{}/v1/sync", self.inner.identity.server_url);
            let response: Result<tessera_core::api::sync::SyncResponse, _> = sync::post(
                &self.inner.http,
                &url,
                Some(&self.inner.identity.token),
                &request,
                timeout,
            )
            .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    let _ = sync::record_failure(&self.db(), &e);
                    return Err(e);
                }
            };
            let applied =
                sync::apply_response(&mut self.db(), &request, &response, self.inner.clock.now())?;
            summary.uploaded_sales += response.sales_stored;
            summary.acked_seq = response.acked_seq;
            summary.leases_granted += applied.granted;
            summary.places_returned += applied.returned;
            let more_sales = request.sales.len() >= sync::BATCH;
            // Places given back on recall are reported at once, so the
            // server can sell them; a terminal that did not know today's
            // slots yet (first sync) asks for leases right away.
            let learned_slots = request.wants.is_empty()
                && response
                    .slots
                    .iter()
                    .any(|s| !s.past && s.slot_id.date == today);
            if !more_sales && applied.returned == 0 && !learned_slots {
                break;
            }
        }
        let conn = self.db();
        let acked = sync::acked_seq(&conn)?;
        summary.pending_sales = conn.query_row(
            "SELECT COUNT(*) FROM sales WHERE terminal_seq > ?1",
            params![acked],
            |r| r.get(0),
        )?;
        Ok(summary)
    }

    /// Keeps syncing in the background: every ~2 s while the server answers,
    /// backing off to 10 s while it does not; a sale or void wakes it early.
    pub fn spawn_sync_loop(&self) -> tokio::task::JoinHandle<()> {
        let terminal = self.clone();
        tokio::spawn(async move {
            let interval = terminal.inner.interval;
            let mut delay = interval;
            loop {
                delay = match terminal.sync_now().await {
                    Ok(_) => interval,
                    Err(TerminalError::Offline(reason)) => {
                        tracing::info!(%reason, "server unreachable; selling from leases");
                        (delay * 2).clamp(interval, MAX_BACKOFF)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "sync refused");
                        MAX_BACKOFF
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = terminal.inner.wake.notified() => {}
                }
            }
        })
    }
}

/// Lets a test kill the process at a precise point (`TESSERA_FAILPOINT`), to
/// prove that what was committed before it survives. Not set, it does nothing.
fn crash_point(name: &str) {
    if std::env::var("TESSERA_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

fn describe(
    view: &mut ScanView,
    claims: &tessera_core::ticket_code::TicketClaims,
    cache: &GateCache,
) {
    view.ticket_id = Some(claims.ticket_id);
    view.product_name = cache.names.get(&claims.product_id).cloned();
    view.product_id = Some(claims.product_id.clone());
    view.admits = Some(claims.admits);
    view.slot_id = Some(claims.slot);
}

fn outcome(result: Result<PrintOutcomeKind, String>) -> PrintOutcome {
    match result {
        Ok(PrintOutcomeKind::Printed) => PrintOutcome::Printed,
        Ok(PrintOutcomeKind::NoPrinter) => PrintOutcome::NoPrinter,
        Err(message) => {
            tracing::warn!(%message, "receipt not printed; the sale stands and can be reprinted");
            PrintOutcome::Failed { message }
        }
    }
}
