//! The HTTP edge: routes, extractors and the error format. Handlers validate
//! input, call the domain in `tessera-core` and the `Store`, nothing more.

mod bookings;
mod demo_page;
mod device_events;
mod devices;
mod events;
pub(crate) mod extract;
mod gate;
mod gate_sync;
pub mod limits;
mod online;
mod openapi;
mod ops;
pub(crate) mod payments;
pub mod pin_guard;
mod queue;
mod shop;
mod stream_cap;
mod supervisor;
mod sync;
mod tickets;
mod waitlist;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tessera_core::admission::EntryPolicy;
use tower_http::timeout::RequestBodyTimeoutLayer;

pub use self::ops::metrics_handle;
use crate::error::ServiceError;
use crate::store::Store;
use tessera_core::clock::Clock;

pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
const SYNC_BODY_BYTES: usize = 16 * 1024 * 1024;

pub struct AppState<S> {
    pub store: Arc<S>,
    pub clock: Clock,
    pub entry: EntryPolicy,
    pub metrics: PrometheusHandle,
    pub pins: Arc<pin_guard::PinGuard>,
    /// Per-client limits on anonymous load.
    pub edge: Arc<limits::Edge>,
    /// The whole configuration, for the shop, payments and mail settings.
    pub config: Arc<crate::config::ServerConfig>,
    /// The payment provider `[payments] provider` names.
    pub payments: Arc<dyn crate::payments::PaymentProvider>,
    /// The demo provider's page signer, when `demo` is the provider.
    pub demo: Option<Arc<crate::payments::demo::DemoProvider>>,
    /// Where visitors reach this server, without a trailing slash.
    pub public_url: Arc<str>,
    /// The push channel's hub (Server-Sent Events).
    pub push: Arc<crate::push::Hub>,
    /// The device channel's hub.
    pub devices: Arc<crate::push::DeviceHub>,
    /// The waiting rooms of high-demand sales.
    pub queue: Arc<crate::queue::Rooms>,
}

impl<S> AppState<S> {
    pub fn booking_context(&self) -> crate::store::BookingContext {
        crate::store::BookingContext {
            cancel_deadline_hours: self.config.shop.cancel_deadline_hours,
            public_url: self.public_url.to_string(),
        }
    }
}

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            store: self.store.clone(),
            clock: self.clock,
            entry: self.entry,
            metrics: self.metrics.clone(),
            pins: self.pins.clone(),
            edge: self.edge.clone(),
            config: self.config.clone(),
            payments: self.payments.clone(),
            demo: self.demo.clone(),
            public_url: self.public_url.clone(),
            push: self.push.clone(),
            devices: self.devices.clone(),
            queue: self.queue.clone(),
        }
    }
}

pub fn router<S: Store>(state: AppState<S>, max_body_bytes: usize) -> Router {
    let l = &state.edge.limits;
    // One bucket for a client's checkout writes, another, much slower, for
    // enrolment: a guessed code costs the guesser time.
    let writes = limits::rate_limit(l.writes_per_minute, l.write_burst, &l.trusted_proxies);
    let enrolments = limits::rate_limit(
        l.enrolments_per_minute,
        l.enrolment_burst,
        &l.trusted_proxies,
    );
    // Reads by a link's token: each costs the database a lookup, so they
    // have a budget of their own (a visitor's own pages stay well inside it).
    let token_reads = limits::rate_limit(
        l.token_reads_per_minute,
        l.token_read_burst,
        &l.trusted_proxies,
    );
    let body_timeout = Duration::from_secs(l.body_read_timeout_secs.max(1));
    let shop_files = shop::ShopFiles::locate(&state.config.shop);
    Router::new()
        .route("/healthz", get(ops::healthz::<S>))
        .route("/metrics", get(ops::metrics::<S>))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .route("/v1/catalogue", get(online::catalogue::<S>))
        .route("/v1/availability", get(online::availability::<S>))
        .route("/v1/events/availability", get(events::availability::<S>))
        .route("/v1/events/device", get(device_events::device::<S>))
        .route("/v1/shop/config", get(shop::config::<S>))
        .route("/v1/calendar", get(shop::calendar::<S>))
        .route("/v1/nearest", get(shop::nearest::<S>))
        .route(
            "/v1/holds",
            post(online::create_hold::<S>).layer(writes.clone()),
        )
        .route(
            "/v1/holds/{hold_id}/confirm",
            post(online::confirm_hold::<S>).layer(writes.clone()),
        )
        .route(
            "/v1/holds/{hold_id}",
            delete(online::cancel_hold::<S>).layer(writes.clone()),
        )
        .route("/v1/queue/{room}", get(queue::info::<S>))
        .route(
            "/v1/queue/{room}/join",
            post(queue::join::<S>).layer(writes.clone()),
        )
        .route(
            "/v1/queue/{room}/place",
            get(queue::place::<S>).delete(queue::leave::<S>),
        )
        .route(
            "/v1/waitlist",
            post(waitlist::join::<S>).layer(writes.clone()),
        )
        .route(
            "/v1/offers/{token}",
            get(waitlist::offer::<S>).layer(token_reads.clone()),
        )
        .route(
            "/v1/offers/{token}/hold",
            post(waitlist::take_offer::<S>).layer(writes.clone()),
        )
        .route(
            "/v1/holds/{hold_id}/checkout",
            post(payments::checkout::<S>).layer(writes.clone()),
        )
        .route(
            "/v1/checkouts/{checkout_id}",
            get(payments::checkout_status::<S>).layer(token_reads.clone()),
        )
        // Providers call from their own addresses, signed: no client budget.
        .route(
            "/v1/payments/{provider}/webhook",
            post(payments::webhook::<S>),
        )
        .route(
            "/v1/bookings/{token}",
            get(bookings::booking::<S>).layer(token_reads.clone()),
        )
        .route(
            "/v1/bookings/{token}/tickets.pdf",
            get(tickets::tickets_pdf::<S>).layer(token_reads.clone()),
        )
        .route(
            "/v1/bookings/{token}/booking.ics",
            get(tickets::booking_ics::<S>).layer(token_reads),
        )
        .route(
            "/v1/bookings/{token}/cancel",
            post(bookings::cancel::<S>).layer(writes.clone()),
        )
        .route(
            "/v1/bookings/{token}/resend",
            post(bookings::resend::<S>).layer(writes.clone()),
        )
        .route(
            "/pay/demo/{payment_id}",
            get(demo_page::show::<S>)
                .post(demo_page::complete::<S>)
                .layer(writes),
        )
        .route(
            "/v1/devices/enrol",
            post(devices::enrol::<S>).layer(enrolments),
        )
        .route("/v1/keys", get(devices::keys::<S>))
        .route("/v1/gate/redeem", post(gate::redeem::<S>))
        .route(
            "/v1/gate/sync",
            post(gate_sync::gate_sync::<S>).layer(DefaultBodyLimit::max(SYNC_BODY_BYTES)),
        )
        .route("/v1/approvals", post(supervisor::approve::<S>))
        .route("/v1/reports/day", get(supervisor::day_report::<S>))
        .route("/v1/leases", get(supervisor::leases::<S>))
        .route(
            "/v1/leases/{lease_id}/revoke",
            post(supervisor::revoke_lease::<S>),
        )
        .route(
            "/v1/sync",
            // A counter back from a long outage uploads hundreds of sales at once.
            post(sync::sync::<S>).layer(DefaultBodyLimit::max(SYNC_BODY_BYTES)),
        )
        // The web shop's files and client routes; API paths get a JSON 404.
        .fallback(move |method, uri| shop::fallback(shop_files.clone(), method, uri))
        .method_not_allowed_fallback(|| async {
            ServiceError::BadRequest("method not allowed on this endpoint".into())
        })
        .layer(DefaultBodyLimit::max(max_body_bytes.min(MAX_BODY_BYTES)))
        // A body that stalls is refused (408) and its connection closed; the
        // head's own timeout is the connection's (see `crate::start`).
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(axum::middleware::from_fn(ops::log_requests))
        .with_state(state)
}
