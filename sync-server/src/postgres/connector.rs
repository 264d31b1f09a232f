//! How every connection to PostgreSQL is opened: the operational limits a
//! shared database needs from each of its clients.
//!
//! - a connect timeout (a host that drops packets must not hang a request);
//! - TCP keepalives (a peer that vanished without a FIN is noticed in about
//!   a minute, not after the kernel's two hours);
//! - server-side `statement_timeout`, `lock_timeout` and
//!   `idle_in_transaction_session_timeout`, so that no query, no lock wait
//!   and no forgotten transaction of ours can hold rows (or a connection
//!   slot) for long;
//! - an `application_name` naming the process and the part that opened it
//!   (`tessera 4711 pool`), so an operator reading `pg_stat_activity` sees
//!   who holds what.
//!
//! The defaults come from [`PgLimits`] (the `[postgres]` section of the
//! config file). Whatever the `postgres://` URL sets itself wins: its
//! `connect_timeout` and `keepalives*` parameters, its `application_name`
//! (used as the prefix) and its `options` (`-c lock_timeout=2s` and so on,
//! sent after ours, and PostgreSQL keeps the last value of a setting).
//!
//! TLS is not wired (NoTls): loopback or a private network only.

use std::time::Duration;

use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};

use super::schema::PgError;
pub use crate::config::PgLimits;

/// PostgreSQL's own keepalive default, which a URL that says nothing leaves.
const KERNEL_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// `application_name` is cut by PostgreSQL at 63 bytes.
const NAME_BYTES: usize = 63;

/// Opens this process's connections with its limits (cheap to clone).
#[derive(Clone)]
pub struct Connector {
    config: Config,
    prefix: String,
    limits: PgLimits,
}

impl Connector {
    /// Parses `url` and applies `limits` where the URL sets nothing itself.
    pub fn new(url: &str, limits: &PgLimits) -> Result<Connector, PgError> {
        let mut config: Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(limits.connect_timeout());
        }
        if config.get_keepalives() && config.get_keepalives_idle() == KERNEL_IDLE {
            config.keepalives_idle(Duration::from_secs(limits.keepalive_idle_secs.max(1)));
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(Duration::from_secs(10));
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(3);
        }
        let options = match config.get_options() {
            Some(theirs) => format!("{} {theirs}", limits.session_options()),
            None => limits.session_options(),
        };
        config.options(options);
        let prefix = format!(
            "{} {}",
            config.get_application_name().unwrap_or("tessera"),
            std::process::id()
        );
        Ok(Connector {
            config,
            prefix,
            limits: limits.clone(),
        })
    }

    pub fn limits(&self) -> &PgLimits {
        &self.limits
    }

    /// `application_name` of this process's connections for `part`.
    pub fn name_of(&self, part: &str) -> String {
        let mut name = format!("{} {part}", self.prefix);
        if name.len() > NAME_BYTES {
            let mut cut = NAME_BYTES;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        name
    }

    /// A client and its connection, not yet polled (the listener drives its
    /// own to read notifications).
    pub async fn connect_raw(
        &self,
        part: &str,
    ) -> Result<(Client, Connection<Socket, NoTlsStream>), PgError> {
        let mut config = self.config.clone();
        config.application_name(self.name_of(part));
        // tokio-postgres bounds the TCP connect only; a server that accepts
        // and then never answers the startup must not hang us either.
        let timeout = self.limits.connect_timeout();
        tokio::time::timeout(timeout, config.connect(NoTls))
            .await
            .map_err(|_| PgError::ConnectTimeout(timeout))?
            .map_err(PgError::from)
    }

    /// A client whose connection runs on a task of its own.
    pub async fn connect(&self, part: &str) -> Result<Client, PgError> {
        let (client, connection) = self.connect_raw(part).await?;
        let part = part.to_string();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, part, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_the_url_leaves_open() {
        let c = Connector::new("postgres://u@localhost/db", &PgLimits::default()).unwrap();
        assert_eq!(
            c.config.get_connect_timeout(),
            Some(&Duration::from_secs(5))
        );
        assert_eq!(c.config.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(
            c.config.get_options(),
            Some("-c statement_timeout=30000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=60000")
        );
        assert!(c.name_of("pool").starts_with("tessera "));
        assert!(c.name_of("pool").ends_with(" pool"));
    }

    #[test]
    fn the_url_wins() {
        let c = Connector::new(
            "postgres://u@localhost/db?connect_timeout=2&keepalives_idle=7&application_name=museum-7&options=-c%20lock_timeout%3D1s",
            &PgLimits::default(),
        )
        .unwrap();
        assert_eq!(
            c.config.get_connect_timeout(),
            Some(&Duration::from_secs(2))
        );
        assert_eq!(c.config.get_keepalives_idle(), Duration::from_secs(7));
        // Ours first: PostgreSQL keeps the last value given.
        assert!(c
            .config
            .get_options()
            .unwrap()
            .ends_with("-c lock_timeout=1s"));
        assert!(c.name_of("writer").starts_with("museum-7 "));
    }

    #[test]
    fn names_fit_postgres_and_the_total_is_stated() {
        let long = format!(
            "postgres://u@localhost/db?application_name={}",
            "é".repeat(40)
        );
        let c = Connector::new(&long, &PgLimits::default()).unwrap();
        assert!(c.name_of("listener").len() <= NAME_BYTES);
        let tiny = PgLimits {
            connections: 1,
            ..PgLimits::default()
        };
        assert_eq!(tiny.pool_size(), 1);
        assert_eq!(tiny.total(), 4);
        assert_eq!(PgLimits::default().total(), 10);
    }
}
