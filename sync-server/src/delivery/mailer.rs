//! The background mailer: works through the due rows of the mail outbox,
//! renders each one and sends it over SMTP (`[mail]` settings).
//!
//! A sent mail is marked sent and its payload blanked (it carries secret
//! links). A failure that may mend (connection refused, a 4xx answer) is
//! tried again later with a growing delay; one that cannot (an unreadable
//! payload, an invalid address, a 5xx answer) is given up at once, and so
//! is any mail still unsent three days after it was queued. Each row stands
//! alone: one bad row never keeps the others from going out. No SMTP host
//! configured: the mails stay queued (said once in the log) and go out once
//! a host is configured and the server restarted.

use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tessera_core::clock::Clock;

use super::email::{self, ComposeError, Museum};
use super::text::MailKind;
use crate::config::MailSettings;
use crate::error::ServiceError;
use crate::store::{MailOutbox, OutboxRow};

/// The SMTP password, better given here than in the config file.
pub const PASSWORD_ENV: &str = "TESSERA_SMTP_PASSWORD";

/// How often the outbox is looked at when idle.
const POLL: Duration = Duration::from_secs(1);
/// Mails taken per round.
const BATCH: u32 = 20;
/// The first retry's delay; it doubles per attempt up to `MAX_DELAY_MS`.
const FIRST_DELAY_MS: i64 = 30_000;
const MAX_DELAY_MS: i64 = 3_600_000;
/// A mail still unsent this long after it was queued is given up on: the
/// visit is likely over, and "my booking" can send it again.
const GIVE_UP_AFTER_MS: i64 = 3 * 24 * 3_600_000;

#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("[mail] smtp_security must be none, starttls or tls, got {0:?}")]
    Security(String),
    #[error("[mail] smtp_host {host:?}: {message}")]
    Host { host: String, message: String },
    #[error("[mail] from {0:?} is not an email address (\"Name <address>\" or \"address\")")]
    From(String),
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub sent: u32,
    pub retrying: u32,
    pub given_up: u32,
}

pub struct Mailer<S> {
    store: Arc<S>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: String,
    museum: Museum,
}

/// The delay before the next attempt after `attempts` failed ones.
pub fn retry_delay_ms(attempts: u32) -> i64 {
    let doublings = attempts.saturating_sub(1).min(20);
    (FIRST_DELAY_MS << doublings).min(MAX_DELAY_MS)
}

impl<S: MailOutbox> Mailer<S> {
    /// `None` when no SMTP host is configured.
    pub fn new(store: Arc<S>, settings: &MailSettings) -> Result<Option<Mailer<S>>, MailerError> {
        let Some(host) = settings
            .smtp_host
            .as_deref()
            .filter(|h| !h.trim().is_empty())
        else {
            return Ok(None);
        };
        let host_err = |e: lettre::transport::smtp::Error| MailerError::Host {
            host: host.to_string(),
            message: e.to_string(),
        };
        let builder = match settings.smtp_security.as_str() {
            // Plain SMTP: only for a relay on this machine or in tests.
            "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            "starttls" => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(host_err)?
            }
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(host_err)?,
            other => return Err(MailerError::Security(other.to_string())),
        };
        let mut builder = builder
            .port(settings.smtp_port)
            .timeout(Some(Duration::from_secs(30)));
        let password = std::env::var(PASSWORD_ENV)
            .ok()
            .or_else(|| settings.smtp_password.clone());
        if let Some(user) = &settings.smtp_username {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.unwrap_or_default()));
        }
        if settings.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(MailerError::From(settings.from.clone()));
        }
        let catalogue = store.catalogue();
        let museum = Museum {
            name: catalogue.museum.name.clone(),
            time_zone: catalogue.museum.time_zone.clone(),
        };
        Ok(Some(Mailer {
            store,
            transport: builder.build(),
            from: settings.from.clone(),
            museum,
        }))
    }

    /// Sends what is due at `now_ms`, one mail at a time.
    pub async fn run_once(&self, now_ms: i64) -> Result<Round, ServiceError> {
        let mut round = Round::default();
        for row in self.store.due_mail(now_ms, BATCH).await? {
            match self.send(&row).await {
                Ok(()) => {
                    self.store.mail_sent(row.mail_id.clone(), now_ms).await?;
                    tracing::info!(mail = %row.mail_id, kind = %row.kind, "mail sent");
                    round.sent += 1;
                }
                Err(failure) => {
                    let attempts = row.attempts.saturating_add(1);
                    let too_old = now_ms.saturating_sub(row.created_at) >= GIVE_UP_AFTER_MS;
                    let retry_at = (!failure.permanent && !too_old)
                        .then(|| now_ms.saturating_add(retry_delay_ms(attempts)));
                    if retry_at.is_some() {
                        tracing::warn!(mail = %row.mail_id, kind = %row.kind, attempts, error = %failure.message, "mail not sent; will retry");
                        round.retrying += 1;
                    } else {
                        tracing::error!(mail = %row.mail_id, kind = %row.kind, attempts, error = %failure.message, "mail given up");
                        round.given_up += 1;
                    }
                    self.store
                        .mail_failed(row.mail_id.clone(), failure.message, retry_at)
                        .await?;
                }
            }
        }
        Ok(round)
    }

    async fn send(&self, row: &OutboxRow) -> Result<(), Failure> {
        let kind = MailKind::parse(&row.kind).ok_or_else(|| Failure {
            permanent: true,
            message: format!("unknown mail kind {:?}", row.kind),
        })?;
        let composed = email::parse_payload(kind, &row.payload)
            .and_then(|payload| {
                email::compose(kind, &row.recipient, &payload, &self.museum, &self.from)
            })
            .map_err(|e: ComposeError| Failure {
                permanent: true,
                message: e.to_string(),
            })?;
        self.transport
            .send(composed.message)
            .await
            .map(|_| ())
            .map_err(|e| Failure {
                permanent: e.is_permanent(),
                message: e.to_string(),
            })
    }
}

struct Failure {
    permanent: bool,
    message: String,
}

/// Starts the mailer beside the server; with no SMTP host it says once how
/// many mails wait and stops.
pub fn spawn<S: MailOutbox>(
    store: Arc<S>,
    settings: MailSettings,
    clock: Clock,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mailer = match Mailer::new(store.clone(), &settings) {
            Ok(Some(mailer)) => mailer,
            Ok(None) => {
                let queued = store.queued_mail().await.unwrap_or(0);
                tracing::warn!(
                    queued,
                    "no SMTP host configured ([mail] smtp_host): emails stay queued until one is"
                );
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "the mailer cannot start; emails stay queued");
                return;
            }
        };
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = mailer.run_once(clock.now_ms()).await {
                tracing::warn!(error = %e, "mailer round failed; trying again");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay_ms(1), 30_000);
        assert_eq!(retry_delay_ms(2), 60_000);
        assert_eq!(retry_delay_ms(3), 120_000);
        assert_eq!(retry_delay_ms(8), 3_600_000);
        assert_eq!(retry_delay_ms(u32::MAX), 3_600_000);
    }
}
