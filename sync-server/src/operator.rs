//! The operator's commands (`init`, `enrol`, `capacity`, `report`, …) against
//! whichever store holds the museum: the SQLite file or a PostgreSQL database.
//! Each command is one call here, whose two arms name the backend's own
//! function; the binary parses the command line, calls, and prints. Like the
//! server, every command may run while servers serve the same store: each
//! backend tells running servers what changed.

use std::future::Future;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use tessera_core::api::devices::Role;
use tessera_core::api::report::DayReport;
use tessera_core::api::supervisor::{LeaseInfo, Revoked};
use tessera_core::catalogue::CatalogueError;
use tessera_core::inventory::SlotLedger;
use tessera_core::slot::SlotId;
use tessera_core::staff::StaffRole;

use crate::admin::{ChannelLine, InitSummary, PinSet};
use crate::postgres::leases::LeaseError;
use crate::postgres::schema::PgError;
use crate::reports::ReportError;
use crate::sqlite::admin::{self, AdminError};
use crate::{postgres, reports, sqlite};

/// Where a command works. The URL of a PostgreSQL database is never shown:
/// it may carry a password.
pub enum Store {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Sqlite(#[from] AdminError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    #[error("starting the command's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, OperatorError>;

impl Store {
    /// What `init` names as initialised.
    pub fn describe(&self) -> String {
        match self {
            Store::Sqlite(db) => db.display().to_string(),
            Store::Postgres(_) => "the PostgreSQL database".to_string(),
        }
    }

    pub fn init(
        &self,
        fixtures: &Path,
        today: Date,
        days: i64,
        now: Timestamp,
    ) -> Result<InitSummary> {
        Ok(match self {
            Store::Sqlite(db) => admin::init(db, fixtures, today, days, now)?,
            Store::Postgres(url) => {
                block_on(postgres::schema::init(url, fixtures, today, days, now))??
            }
        })
    }

    pub fn enrolment_code(
        &self,
        role: Role,
        name: &str,
        now: Timestamp,
        valid_hours: i64,
    ) -> Result<String> {
        Ok(match self {
            Store::Sqlite(db) => admin::create_enrolment_code(db, role, name, now, valid_hours)?,
            Store::Postgres(url) => block_on(postgres::devices::create_enrolment_code(
                url,
                role,
                name,
                now,
                valid_hours,
            ))??,
        })
    }

    /// The zone the museum's days are counted in (its catalogue's).
    pub fn museum_tz(&self) -> Result<TimeZone> {
        Ok(match self {
            Store::Sqlite(db) => {
                let conn = sqlite::schema::open(db).map_err(AdminError::from)?;
                admin::catalogue(&conn)?.time_zone()?
            }
            Store::Postgres(url) => block_on(postgres::leases::museum_tz(url))??,
        })
    }

    /// `date`, or today in the museum's zone.
    pub fn day_or_today(&self, date: Option<Date>, now: Timestamp) -> Result<Date> {
        match date {
            Some(d) => Ok(d),
            None => Ok(now.to_zoned(self.museum_tz()?).date()),
        }
    }

    pub fn leases(&self, date: Date) -> Result<Vec<LeaseInfo>> {
        Ok(match self {
            Store::Sqlite(db) => admin::leases(db, date)?,
            Store::Postgres(url) => block_on(postgres::leases::leases(url, date))??,
        })
    }

    pub fn revoke_lease(&self, lease: &str, by: &str, now: Timestamp) -> Result<Revoked> {
        Ok(match self {
            Store::Sqlite(db) => admin::revoke_lease(db, lease, by, now)?,
            Store::Postgres(url) => block_on(postgres::leases::revoke_lease(url, lease, by, now))??,
        })
    }

    /// Marks a quarantined upload as dealt with; answers what it was (sale,
    /// void or shift).
    pub fn resolve_quarantine(
        &self,
        id: &str,
        note: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<String> {
        Ok(match self {
            Store::Sqlite(db) => admin::resolve_quarantine(db, id, note, by, now)?,
            Store::Postgres(url) => {
                block_on(postgres::leases::resolve_quarantine(url, id, note, by, now))??
            }
        })
    }

    /// Revokes a device by id or name; answers its name.
    pub fn revoke_device(&self, device: &str, by: &str, now: Timestamp) -> Result<String> {
        Ok(match self {
            Store::Sqlite(db) => admin::revoke_device(db, device, by, now)?,
            Store::Postgres(url) => {
                block_on(postgres::devices::revoke_device(url, device, by, now))??
            }
        })
    }

    pub fn set_pin(
        &self,
        name: &str,
        role: Option<StaffRole>,
        pin: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<PinSet> {
        Ok(match self {
            Store::Sqlite(db) => admin::set_pin(db, name, role, pin, by, now)?,
            Store::Postgres(url) => {
                block_on(postgres::devices::set_pin(url, name, role, pin, by, now))??
            }
        })
    }

    /// The day's reconciliation for `date` (today in the museum's zone if
    /// none), read from one consistent view of the store.
    pub fn day_report(&self, date: Option<Date>, now: Timestamp) -> Result<DayReport> {
        match self {
            Store::Sqlite(db) => {
                let conn = sqlite::schema::open(db).map_err(AdminError::from)?;
                let catalogue = admin::catalogue(&conn)?;
                let date = match date {
                    Some(d) => d,
                    None => now.to_zoned(catalogue.time_zone()?).date(),
                };
                Ok(reports::day_report(&conn, &catalogue, date, now)?)
            }
            Store::Postgres(url) => block_on(async {
                let mut client = postgres::schema::connect(url).await?;
                let catalogue = postgres::schema::load_catalogue(&client).await?;
                let date = match date {
                    Some(d) => d,
                    None => now.to_zoned(catalogue.time_zone()?).date(),
                };
                let report = postgres::report::day_report(&mut client, &catalogue, date, now);
                Ok::<_, OperatorError>(report.await?)
            })?,
        }
    }

    /// Adds a trusted channel; answers its token (shown once).
    pub fn add_channel(&self, name: &str, now: Timestamp) -> Result<String> {
        Ok(match self {
            Store::Sqlite(db) => sqlite::channels::add(db, name, now)?,
            Store::Postgres(url) => block_on(postgres::schema::add_channel(url, name, now))??,
        })
    }

    pub fn channels(&self) -> Result<Vec<ChannelLine>> {
        Ok(match self {
            Store::Sqlite(db) => sqlite::channels::list(db)?,
            Store::Postgres(url) => block_on(postgres::schema::list_channels(url))??,
        })
    }

    /// Revokes a channel by name or id; answers its name.
    pub fn revoke_channel(&self, name: &str, by: &str, now: Timestamp) -> Result<String> {
        Ok(match self {
            Store::Sqlite(db) => sqlite::channels::revoke(db, name, by, now)?,
            Store::Postgres(url) => {
                block_on(postgres::schema::revoke_channel(url, name, by, now))??
            }
        })
    }

    /// Sets a slot's capacity; answers the slot's ledger after the change
    /// and the capacity before it.
    pub fn set_capacity(
        &self,
        slot: &SlotId,
        capacity: u32,
        now: Timestamp,
    ) -> Result<(SlotLedger, u32)> {
        Ok(match self {
            Store::Sqlite(db) => admin::set_capacity(db, slot, capacity, now)?,
            Store::Postgres(url) => {
                block_on(postgres::schema::set_capacity(url, slot, capacity, now))??
            }
        })
    }
}

/// Runs one command against PostgreSQL on a runtime of its own (the
/// commands are one-shot; the server's runtime is not running).
fn block_on<F: Future>(future: F) -> Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future))
}
