//! The visitors' web shop: the few JSON answers only its pages need (its
//! settings, a calendar of bookable days, the nearest entry times to a full
//! one) and the built single-page app itself (`shop/dist`), served at `/`.
//!
//! Where the built shop is: `[shop] dir` in the config file, else the
//! environment variable `TESSERA_SHOP_DIR`, else the first of `shop/dist`
//! next to the executable, `../../shop/dist` from it (a cargo build in
//! `target/{debug,release}/`) and `shop/dist` under the working directory.
//! Without one, every page answers 404 saying how to build it.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::civil::Date;
use serde::Deserialize;
use tessera_core::api::shop::{Calendar, Language, Nearest, ShopConfig};
use tessera_core::pricing::CartLimits;
use tessera_core::shop::{
    calendar_dates, calendar_day, nearest as nearest_times, shop_language, within_horizon,
    NEAREST_LATER_DAYS, NEAREST_LIMIT,
};
use tessera_core::slot::{parse_date, SlotId};

use super::extract::Query;
use super::AppState;
use crate::config::ShopSettings;
use crate::error::ServiceError;
use crate::store::{Refusal, Store, StoreError};

/// Days a calendar shows when the request does not say.
const DEFAULT_CALENDAR_DAYS: u32 = 31;

/// The museum's own language, from its catalogue (`[museum] language`).
fn museum_language<S: Store>(app: &AppState<S>) -> Language {
    app.store
        .catalogue()
        .museum
        .language
        .unwrap_or(Language::En)
}

/// The museum's today, on its own wall clock.
fn museum_today<S: Store>(app: &AppState<S>) -> Result<Date, ServiceError> {
    let tz = app
        .store
        .catalogue()
        .time_zone()
        .map_err(|e| StoreError::Storage(format!("the catalogue's time zone: {e}")))?;
    Ok(tz
        .to_datetime(tessera_core::clock::from_ms(app.clock.now_ms()))
        .date())
}

#[utoipa::path(get, path = "/v1/shop/config", tag = "online", summary = "What the web shop needs before its first page", params(("Accept-Language" = Option<String>, Header, description = "The visitor's languages; picks `language` (else the museum's own)")), responses((status = 200, description = "The shop's settings", body = tessera_core::api::shop::ShopConfig)))]
pub async fn config<S: Store>(
    State(app): State<AppState<S>>,
    headers: HeaderMap,
) -> Json<ShopConfig> {
    let catalogue = app.store.catalogue();
    let default_language = museum_language(&app);
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    Json(ShopConfig {
        museum: catalogue.museum.name.clone(),
        time_zone: catalogue.museum.time_zone.clone(),
        currency: catalogue.museum.currency.to_string(),
        languages: Language::ALL.to_vec(),
        default_language,
        language: shop_language(accept, default_language),
        hold_seconds: u32::try_from(app.config.hold_ttl_secs.max(1)).unwrap_or(u32::MAX),
        cancel_deadline_hours: app.config.shop.cancel_deadline_hours,
        payment_provider: app.config.payments.provider.clone(),
        booking_horizon_days: app.config.shop.booking_horizon_days,
        now: tessera_core::clock::from_ms(app.clock.now_ms()),
        waiting_rooms: app
            .queue
            .rooms
            .iter()
            .map(|r| r.info(app.clock.now_ms()))
            .collect(),
    })
}

#[derive(Deserialize)]
pub struct CalendarQuery {
    from: Option<String>,
    days: Option<u32>,
}

#[utoipa::path(get, path = "/v1/calendar", tag = "online", summary = "Bookable days: closed, places left, sold out", params(("from" = Option<String>, Query, format = Date, description = "First day, YYYY-MM-DD (default: the museum's today)"), ("days" = Option<u32>, Query, minimum = 1, maximum = 62, description = "How many days (default 31)")), responses((status = 200, description = "One entry per day; days before today or beyond the booking horizon show no places", body = tessera_core::api::shop::Calendar), (status = 400, description = "from or days not readable (bad_request)", body = tessera_core::api::ErrorBody), (status = 422, description = "days out of 1..=62 (invalid_body)", body = tessera_core::api::ErrorBody)))]
pub async fn calendar<S: Store>(
    State(app): State<AppState<S>>,
    Query(q): Query<CalendarQuery>,
) -> Result<Json<Calendar>, ServiceError> {
    let today = museum_today(&app)?;
    let from = match q.from {
        Some(text) => parse_date(&text).map_err(|e| ServiceError::BadRequest(e.to_string()))?,
        None => today,
    };
    let dates = calendar_dates(from, q.days.unwrap_or(DEFAULT_CALENDAR_DAYS))
        .map_err(|e| ServiceError::InvalidBody(e.to_string()))?;
    let horizon = app.config.shop.booking_horizon_days;
    let mut days = Vec::with_capacity(dates.len());
    for date in dates {
        let day = app.store.availability(date).await?;
        days.push(calendar_day(
            date,
            day.closed,
            within_horizon(date, today, horizon),
            &day.slots,
        ));
    }
    Ok(Json(Calendar { days }))
}

#[derive(Deserialize)]
pub struct NearestQuery {
    slot_id: Option<String>,
    admissions: Option<u32>,
}

#[utoipa::path(get, path = "/v1/nearest", tag = "online", summary = "Entry times nearest to one that cannot take a party", params(("slot_id" = String, Query, pattern = "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}$", description = "The full entry time, e.g. 2026-12-05T10:00"), ("admissions" = u32, Query, minimum = 1, maximum = 20, description = "Admissions the party needs")), responses((status = 200, description = "Up to 6 entry times with room: the same day's nearest first, then later days'", body = tessera_core::api::shop::Nearest), (status = 400, description = "slot_id or admissions missing or unreadable (bad_request)", body = tessera_core::api::ErrorBody), (status = 422, description = "unknown_slot, museum_closed; admissions out of range (invalid_body)", body = tessera_core::api::ErrorBody)))]
pub async fn nearest<S: Store>(
    State(app): State<AppState<S>>,
    Query(q): Query<NearestQuery>,
) -> Result<Json<Nearest>, ServiceError> {
    let text = q
        .slot_id
        .ok_or_else(|| ServiceError::BadRequest("query parameter slot_id is required".into()))?;
    let slot: SlotId = text
        .parse()
        .map_err(|e: tessera_core::slot::SlotError| ServiceError::BadRequest(e.to_string()))?;
    let admissions = q
        .admissions
        .ok_or_else(|| ServiceError::BadRequest("query parameter admissions is required".into()))?;
    let max = CartLimits::ONLINE.max_admissions;
    if !(1..=max).contains(&admissions) {
        return Err(ServiceError::InvalidBody(format!(
            "admissions must be between 1 and {max}, got {admissions}"
        )));
    }
    let day = app.store.availability(slot.date).await?;
    if day.closed {
        return Err(Refusal::MuseumClosed(slot.date.to_string()).into());
    }
    if !day.slots.iter().any(|s| s.slot_id == slot) {
        return Err(Refusal::UnknownSlot(slot.to_string()).into());
    }
    let today = museum_today(&app)?;
    let horizon = app.config.shop.booking_horizon_days;
    let mut later = Vec::new();
    for date in slot.date.series(jiff::Span::new().days(1)).skip(1) {
        if later.len() as i64 >= NEAREST_LATER_DAYS || !within_horizon(date, today, horizon) {
            break;
        }
        later.push(app.store.availability(date).await?.slots);
    }
    let same_day = if within_horizon(slot.date, today, horizon) {
        day.slots
    } else {
        Vec::new()
    };
    let slots = nearest_times(
        slot,
        admissions,
        &same_day,
        later.iter().map(Vec::as_slice),
        NEAREST_LIMIT,
    );
    Ok(Json(Nearest {
        slot_id: slot,
        admissions,
        slots,
    }))
}

/// The built shop on disk.
pub struct ShopFiles {
    dir: Option<PathBuf>,
}

impl ShopFiles {
    pub fn locate(settings: &ShopSettings) -> Arc<ShopFiles> {
        let dir = match &settings.dir {
            Some(dir) => Some(dir.clone()),
            None => match std::env::var_os("TESSERA_SHOP_DIR") {
                Some(dir) => Some(PathBuf::from(dir)),
                None => candidates()
                    .into_iter()
                    .find(|d| d.join("index.html").is_file()),
            },
        };
        match &dir {
            Some(d) if d.join("index.html").is_file() => {
                tracing::info!(dir = %d.display(), "serving the web shop")
            }
            _ => tracing::warn!(
                "the web shop is not built (no shop/dist/index.html): run `cd shop && npm ci && npm run build`, or set [shop] dir"
            ),
        }
        Arc::new(ShopFiles { dir })
    }
}

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(FsPath::to_path_buf))
    {
        out.push(exe_dir.join("shop/dist"));
        // target/debug/tessera-server → the repository's shop/dist.
        out.push(exe_dir.join("../../shop/dist"));
        // target/debug/deps/… (a test binary's neighbour).
        out.push(exe_dir.join("../../../shop/dist"));
    }
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd.join("shop/dist"));
    }
    out
}

/// Paths the JSON API, the payment pages and the operators' endpoints own:
/// an unknown one there is a JSON 404, never the shop's page.
fn is_api_path(path: &str) -> bool {
    ["/v1/", "/pay/", "/healthz", "/metrics"]
        .iter()
        .any(|p| path == p.trim_end_matches('/') || path.starts_with(p))
}

/// The file a request path names inside the shop, when it can name one:
/// segments of letters, digits, `-`, `_` and `.` that do not start with a
/// dot. Anything else (`..`, `%2e`, backslashes) names no file, which rules
/// out leaving the directory by construction.
fn file_path(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for segment in path.trim_start_matches('/').split('/') {
        let ok = !segment.is_empty()
            && !segment.starts_with('.')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return None;
        }
        out.push(segment);
    }
    Some(out)
}

fn content_type(path: &FsPath) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Headers every shop answer carries: the booking links hold secrets, so no
/// referrer leaves the page; nothing is sniffed; the shop is not framed.
fn page_headers(response: &mut Response, cache: &'static str) {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
}

/// Everything no route answers: a shop file, the shop's page for a client
/// route, or the JSON 404 of the API.
pub async fn fallback(files: Arc<ShopFiles>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if is_api_path(path) {
        return ServiceError::NotFound("no such endpoint".into()).into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ServiceError::BadRequest("method not allowed on this endpoint".into())
            .into_response();
    }
    let Some(dir) = files.dir.as_deref() else {
        return not_built();
    };
    if let Some(rel) = file_path(path) {
        let full = dir.join(&rel);
        if let Ok(bytes) = tokio::fs::read(&full).await {
            // Vite names what it builds into assets/ by content hash: a new
            // build has new names, so these can be kept for good.
            let cache = if rel.starts_with("assets") {
                "public, max-age=31536000, immutable"
            } else if rel.extension().is_some_and(|e| e == "html") {
                "no-cache"
            } else {
                "public, max-age=3600"
            };
            let mut response =
                ([(header::CONTENT_TYPE, content_type(&full))], bytes).into_response();
            page_headers(&mut response, cache);
            return response;
        }
        // A missing asset is a 404, not the page: a script tag that gets
        // HTML back fails in a confusing way. (Client routes never end in a
        // file extension: tokens and ids hold no dot.)
        if rel.starts_with("assets") || rel.extension().is_some_and(|e| e != "html") {
            return ServiceError::NotFound(format!("no such file {path}")).into_response();
        }
    }
    match tokio::fs::read(dir.join("index.html")).await {
        Ok(bytes) => {
            let mut response =
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], bytes).into_response();
            // Always revalidated: it names the current build's assets.
            page_headers(&mut response, "no-cache");
            response
        }
        Err(_) => not_built(),
    }
}

fn not_built() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": {
            "code": "shop_not_built",
            "message": "the web shop is not built: run `cd shop && npm ci && npm run build` (or set [shop] dir)"
        }})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_segments_name_files() {
        assert_eq!(
            file_path("/assets/index-3f2a.js"),
            Some(PathBuf::from("assets/index-3f2a.js"))
        );
        assert_eq!(
            file_path("/favicon.svg"),
            Some(PathBuf::from("favicon.svg"))
        );
        for bad in [
            "/",
            "/../etc/passwd",
            "/assets/../../x",
            "/.env",
            "/a//b",
            "/a%2e%2e/b",
            "/a\\b",
            "/slot/2026-12-05T10:00",
        ] {
            assert_eq!(file_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn api_paths_are_never_the_shop() {
        assert!(is_api_path("/v1/nope"));
        assert!(is_api_path("/pay/demo/x"));
        assert!(is_api_path("/healthz"));
        assert!(!is_api_path("/"));
        assert!(!is_api_path("/booking/abc"));
        assert!(!is_api_path("/v1x"));
    }
}
