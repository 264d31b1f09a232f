//! What one anonymous client may take: a rate of writes and of enrolment
//! attempts (token buckets from `tower_governor`), and a number of places
//! held at once in unfinished checkouts. A client is its IP address, or its
//! /64 for IPv6 (one subscriber's whole network); behind a trusted reverse
//! proxy, the address the proxy appended to `X-Forwarded-For`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tessera_core::inventory::hold_is_open;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};
use uuid::Uuid;

use super::AppState;
use crate::config::ClientLimits;
use crate::store::Store;

/// Per-process client limits, shared by every request.
pub struct Edge {
    pub limits: ClientLimits,
    pub holds: HoldCap,
    pub streams: Arc<super::stream_cap::StreamCap>,
}

impl Edge {
    pub fn new(limits: ClientLimits) -> Edge {
        Edge {
            holds: HoldCap::new(limits.max_held_admissions),
            streams: Arc::new(super::stream_cap::StreamCap::new(
                limits.max_streams_per_client,
            )),
            limits,
        }
    }
}

/// The client a request counts against.
pub fn client_of(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let Some(peer) = peer else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    let peer = canonical(peer.ip());
    let mut client = peer;
    if trusted.iter().any(|t| canonical(*t) == peer) {
        // Only the last hop is the proxy's own word; earlier entries are
        // whatever the client sent.
        let last = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|s| s.trim().parse::<IpAddr>().ok());
        if let Some(ip) = last {
            client = canonical(ip);
        }
    }
    match client {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Rate-limit key: the client, as [`client_of`] sees it.
#[derive(Clone)]
pub struct ClientKey {
    trusted: Arc<[IpAddr]>,
}

impl KeyExtractor for ClientKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &Request<T>) -> Result<IpAddr, GovernorError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(client_of(peer, req.headers(), &self.trusted))
    }
}

/// The client of a request, for handlers.
pub struct Client(pub IpAddr);

impl<S: Store> FromRequestParts<AppState<S>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState<S>,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(Client(client_of(
            peer,
            &parts.headers,
            &app.edge.limits.trusted_proxies,
        )))
    }
}

pub type RateLimit = GovernorLayer<ClientKey, governor::middleware::NoOpMiddleware, Body>;

/// A token bucket per client: `burst` requests at once, then `per_minute`.
/// Refusals are 429 with the usual JSON error body and `Retry-After`.
pub fn rate_limit(per_minute: u32, burst: u32, trusted: &[IpAddr]) -> RateLimit {
    let period_ns = (60_000_000_000u64 / u64::from(per_minute.max(1))).max(1);
    let config: Arc<GovernorConfig<ClientKey, _>> = Arc::new(
        GovernorConfigBuilder::default()
            .key_extractor(ClientKey {
                trusted: trusted.into(),
            })
            .per_nanosecond(period_ns)
            .burst_size(burst.max(1))
            .finish()
            // `finish` refuses only a zero period or burst, both at least 1 here.
            .unwrap_or_else(|| unreachable!("rate limit period and burst are non-zero")),
    );
    forget_idle_clients(Arc::downgrade(&config));
    GovernorLayer::new(config).error_handler(too_many_requests)
}

/// The limiter remembers every client it saw; drop those whose bucket is
/// full again, so a scan from many addresses does not grow memory for ever.
fn forget_idle_clients(
    config: Weak<GovernorConfig<ClientKey, governor::middleware::NoOpMiddleware>>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(config) = config.upgrade() else {
                break;
            };
            config.limiter().retain_recent();
            config.limiter().shrink_to_fit();
        }
    });
}

fn too_many_requests(e: GovernorError) -> Response<Body> {
    let wait = match &e {
        GovernorError::TooManyRequests { wait_time, .. } => *wait_time,
        _ => 1,
    };
    refusal(
        "rate_limited",
        format!(
            "too many requests from this address; retry in {} s",
            wait.max(1)
        ),
        wait,
    )
}

/// 429 with `{"error":{code,message}}` and a `Retry-After` of at least 1 s.
pub(super) fn refusal(code: &str, message: String, retry_after_secs: u64) -> Response<Body> {
    metrics::counter!("tessera_client_limited_total", "code" => code.to_string()).increment(1);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    response
        .headers_mut()
        .insert("retry-after", HeaderValue::from(retry_after_secs.max(1)));
    response
}

/// Admissions each client holds in unexpired, unconfirmed checkouts. Kept in
/// memory: a restart forgets it, which only lets clients hold again what
/// they held before (holds themselves are in the database and expire).
pub struct HoldCap {
    max: u32,
    state: Mutex<CapState>,
}

#[derive(Default)]
struct CapState {
    clients: HashMap<IpAddr, Held>,
    owners: HashMap<Uuid, IpAddr>,
    reserves: u64,
}

#[derive(Default)]
struct Held {
    /// Admissions of requests on their way to the writer.
    reserved: u64,
    holds: Vec<HeldHold>,
}

struct HeldHold {
    hold: Uuid,
    admissions: u32,
    expires_ms: i64,
    /// Hash of the Idempotency-Key that made it: its retry is no new hold.
    key: u64,
}

impl Held {
    fn total(&self) -> u64 {
        self.reserved
            + self
                .holds
                .iter()
                .map(|h| u64::from(h.admissions))
                .sum::<u64>()
    }
}

/// A client that already holds its share.
pub struct HoldCapRefusal {
    pub held: u64,
    pub max: u32,
    pub retry_after_secs: u64,
}

impl IntoResponse for HoldCapRefusal {
    fn into_response(self) -> axum::response::Response {
        refusal(
            "too_many_held",
            format!(
                "this address already holds {} places in unfinished checkouts (at most {} at once): \
                 confirm or cancel a checkout, or wait until one expires",
                self.held, self.max
            ),
            self.retry_after_secs,
        )
    }
}

/// Room for one hold request, given back when dropped unless kept.
pub struct Reservation<'a> {
    cap: &'a HoldCap,
    client: IpAddr,
    admissions: u64,
    key: u64,
}

fn key_tag(key: &str) -> u64 {
    let digest = crate::secrets::hash(key);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(out)
}

impl HoldCap {
    pub fn new(max: u32) -> HoldCap {
        HoldCap {
            max,
            state: Mutex::new(CapState::default()),
        }
    }

    /// Makes room for `admissions` more, or says why not. A retry of a hold
    /// this client still has (same Idempotency-Key) always passes: the store
    /// answers it from its record without holding anything.
    pub fn reserve(
        &self,
        client: IpAddr,
        idempotency_key: &str,
        admissions: u32,
        now_ms: i64,
    ) -> Result<Reservation<'_>, HoldCapRefusal> {
        let key = key_tag(idempotency_key);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.reserves += 1;
        if state.reserves.is_multiple_of(4096) {
            state.sweep(now_ms);
        }
        let CapState {
            clients, owners, ..
        } = &mut *state;
        let held = clients.entry(client).or_default();
        held.holds.retain(|h| {
            let open = hold_is_open(h.expires_ms, now_ms);
            if !open {
                owners.remove(&h.hold);
            }
            open
        });
        let retry = held.holds.iter().any(|h| h.key == key);
        let total = held.total();
        if !retry && total + u64::from(admissions) > u64::from(self.max) {
            let first_expiry = held.holds.iter().map(|h| h.expires_ms).min();
            let retry_after_secs = first_expiry
                .map(|e| ((e - now_ms).max(0) as u64).div_ceil(1000))
                .unwrap_or(1);
            return Err(HoldCapRefusal {
                held: total,
                max: self.max,
                retry_after_secs,
            });
        }
        held.reserved += u64::from(admissions);
        Ok(Reservation {
            cap: self,
            client,
            admissions: u64::from(admissions),
            key,
        })
    }

    /// The hold was confirmed or cancelled: its places no longer count.
    pub fn release(&self, hold: Uuid) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = state.owners.remove(&hold) {
            if let Some(held) = state.clients.get_mut(&client) {
                held.holds.retain(|h| h.hold != hold);
            }
        }
    }
}

impl CapState {
    /// Drops expired holds and clients with nothing left.
    fn sweep(&mut self, now_ms: i64) {
        self.clients.retain(|_, held| {
            held.holds.retain(|h| hold_is_open(h.expires_ms, now_ms));
            held.reserved > 0 || !held.holds.is_empty()
        });
        let clients = &self.clients;
        self.owners.retain(|hold, client| {
            clients
                .get(client)
                .is_some_and(|held| held.holds.iter().any(|h| h.hold == *hold))
        });
    }
}

impl Reservation<'_> {
    /// The store made hold `hold` (expiring at `expires_ms`) for this request.
    pub fn keep(self, hold: Uuid, expires_ms: i64) {
        let mut state = self.cap.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.owners.contains_key(&hold) {
            return;
        }
        state.owners.insert(hold, self.client);
        state
            .clients
            .entry(self.client)
            .or_default()
            .holds
            .push(HeldHold {
                hold,
                admissions: self.admissions.min(u64::from(u32::MAX)) as u32,
                expires_ms,
                key: self.key,
            });
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut state = self.cap.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = state.clients.get_mut(&self.client) {
            held.reserved = held.reserved.saturating_sub(self.admissions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 4000))
    }

    #[test]
    fn clients_are_addresses_and_ipv6_networks() {
        let none = HeaderMap::new();
        assert_eq!(
            client_of(at("2001:db8:1:2:aaaa::1"), &none, &[]),
            client_of(at("2001:db8:1:2:bbbb::9"), &none, &[])
        );
        assert_ne!(
            client_of(at("2001:db8:1:2::1"), &none, &[]),
            client_of(at("2001:db8:1:3::1"), &none, &[])
        );
        assert_eq!(
            client_of(at("::ffff:192.0.2.7"), &none, &[]),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy_and_only_its_last_hop() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 198.51.100.4"),
        );
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            client_of(at("127.0.0.1"), &headers, &[proxy]),
            "198.51.100.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_of(at("203.0.113.9"), &headers, &[proxy]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_cap_counts_unexpired_holds_and_lets_retries_through() {
        let cap = HoldCap::new(10);
        let me: IpAddr = "192.0.2.1".parse().unwrap();
        let r = cap.reserve(me, "k1", 6, 0).ok().unwrap();
        r.keep(Uuid::from_u128(1), 1_000);
        assert!(cap.reserve(me, "k2", 5, 0).is_err());
        // The same request again is a retry, not a new hold.
        assert!(cap.reserve(me, "k1", 6, 0).is_ok());
        // Another client is not affected.
        assert!(cap
            .reserve("192.0.2.2".parse().unwrap(), "k2", 10, 0)
            .is_ok());
        // Expired, or confirmed: room again.
        assert!(cap.reserve(me, "k2", 5, 1_000).is_ok());
        let r = cap.reserve(me, "k3", 6, 1_000).ok().unwrap();
        r.keep(Uuid::from_u128(2), 5_000);
        assert!(cap.reserve(me, "k4", 5, 1_000).is_err());
        cap.release(Uuid::from_u128(2));
        assert!(cap.reserve(me, "k4", 5, 1_000).is_ok());
    }
}
