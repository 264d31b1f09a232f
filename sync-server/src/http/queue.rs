//! The waiting rooms' HTTP side: join, ask where you stand, leave; and the
//! check `POST /v1/holds` makes for a day sold through a room.
//!
//! A browser session is a random secret in an HttpOnly cookie, set at the
//! first join. Places and passes carry a hash of it, so a token copied
//! into another browser (or another HTTP client) is refused there; one
//! session has one place per room, whatever its tabs do.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::civil::Date;
use tessera_core::api::queue::{
    PlaceState, PlaceStatus, RoomInfo, PASS_HEADER, PLACE_HEADER, SESSION_COOKIE,
};
use tessera_core::clock::from_ms;
use tessera_core::queue::line::{LineError, PassError, PlaceView};
use tessera_core::queue::token::{session_tag, Pass, Place, TokenError};
use uuid::Uuid;

use super::extract::Path;
use super::limits::Client;
use super::AppState;
use crate::error::ServiceError;
use crate::queue::{client_key, per_minute, Room};
use crate::store::Store;

const SESSION_BYTES: usize = 16;

fn refused(status: u16, code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Refused {
        status,
        code,
        message: message.into(),
    }
}

fn room<'a, S>(app: &'a AppState<S>, id: &str) -> Result<&'a Room, ServiceError> {
    app.queue.get(id).ok_or_else(|| {
        refused(
            404,
            "unknown_room",
            format!(
                "no waiting room {:?} on this server",
                id.chars().take(40).collect::<String>()
            ),
        )
    })
}

/// The session secret from the request's cookie, if it has a well-formed one.
fn session_of(headers: &HeaderMap) -> Option<[u8; SESSION_BYTES]> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            let Some((name, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if name != SESSION_COOKIE {
                continue;
            }
            let bytes = data_encoding::HEXLOWER.decode(v.as_bytes()).ok()?;
            return bytes.try_into().ok();
        }
    }
    None
}

fn set_cookie(app_url: &str, secret: &[u8; SESSION_BYTES]) -> Option<HeaderValue> {
    let secure = if app_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=604800{secure}",
        data_encoding::HEXLOWER.encode(secret)
    ))
    .ok()
}

fn line_error(e: LineError) -> ServiceError {
    match e {
        LineError::NotYours => refused(
            403,
            "place_not_yours",
            "this place was taken in another browser session; a place cannot be moved to another browser",
        ),
        LineError::Unknown => refused(404, "unknown_place", "no such place in this waiting room"),
        LineError::ClientCap(n) => refused(
            429,
            "too_many_places",
            format!("your address already holds {n} places in this waiting room"),
        ),
        LineError::Full => refused(503, "room_full", "the waiting room is full; try again shortly"),
    }
}

fn token_error(e: TokenError) -> ServiceError {
    refused(
        400,
        "bad_place",
        format!("the waiting-room token is not valid: {e}"),
    )
}

#[utoipa::path(get, path = "/v1/queue/{room}", tag = "online", summary = "A waiting room: its sale, opening and line", params(("room" = String, Path, description = "The room's id")), responses((status = 200, description = "The room", body = tessera_core::api::queue::RoomInfo), (status = 404, description = "unknown_room", body = tessera_core::api::ErrorBody)))]
pub async fn info<S: Store>(
    State(app): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<RoomInfo>, ServiceError> {
    Ok(Json(room(&app, &id)?.info(app.clock.now_ms())))
}

#[utoipa::path(post, path = "/v1/queue/{room}/join", tag = "online", summary = "Take a place in a waiting room (one per browser session)", description = "Before the opening every place is drawn at random; after it, places follow arrival. Sets the session cookie the place is bound to; a session that has a place gets the same one back.", params(("room" = String, Path, description = "The room's id")), responses((status = 200, description = "The place and where it stands", body = tessera_core::api::queue::PlaceStatus), (status = 404, description = "unknown_room", body = tessera_core::api::ErrorBody), (status = 429, description = "too_many_places (this address holds the most a client may)", body = tessera_core::api::ErrorBody), (status = 503, description = "room_full", body = tessera_core::api::ErrorBody)))]
pub async fn join<S: Store>(
    State(app): State<AppState<S>>,
    Path(id): Path<String>,
    client: Client,
    headers: HeaderMap,
) -> Result<Response, ServiceError> {
    let room = room(&app, &id)?;
    let (secret, fresh) = match session_of(&headers) {
        Some(s) => (s, false),
        None => (crate::secrets::random_bytes::<SESSION_BYTES>(), true),
    };
    let session = session_tag(&secret);
    let now = app.clock.now_ms();
    let entry = Uuid::now_v7();
    // Before the opening the draw is the session's own (keyed, so nobody
    // can predict it): joining again from it draws the same place.
    let random = app.queue.key.draw(&room.tag, &session);
    let (entry, rank) = {
        let mut line = room.line();
        match line.place_of(&session) {
            Some(existing) => existing,
            None => {
                let rank = line
                    .join(now, entry, session, client_key(client.0), random)
                    .map_err(line_error)?;
                (entry, rank)
            }
        }
    };
    let place = Place {
        room: room.tag,
        entry,
        rank,
        session,
    };
    let status = status(&app, room, place, session)?;
    let mut response = Json(status).into_response();
    if fresh {
        if let Some(cookie) = set_cookie(&app.public_url, &secret) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
    }
    Ok(response)
}

/// Reads the place header and checks it belongs to this room and session.
fn presented(
    app_room: &Room,
    key: &tessera_core::queue::TokenKey,
    headers: &HeaderMap,
) -> Result<(Place, [u8; 16]), ServiceError> {
    let value = headers.get(PLACE_HEADER).ok_or_else(|| {
        refused(
            400,
            "place_required",
            format!("send the place from the join answer in the {PLACE_HEADER} header"),
        )
    })?;
    let text = value
        .to_str()
        .map_err(|_| token_error(TokenError::Malformed))?;
    let place = key.read_place(text).map_err(token_error)?;
    if place.room != app_room.tag {
        return Err(refused(
            400,
            "bad_place",
            "this place is for another waiting room",
        ));
    }
    let session = session_of(headers)
        .map(|s| session_tag(&s))
        .ok_or_else(|| line_error(LineError::NotYours))?;
    if session != place.session {
        return Err(line_error(LineError::NotYours));
    }
    Ok((place, session))
}

#[utoipa::path(get, path = "/v1/queue/{room}/place", tag = "online", summary = "Where a place stands; once let in, the pass to book with", params(("room" = String, Path, description = "The room's id"), ("Tessera-Queue-Place" = String, Header, description = "The place from the join answer")), responses((status = 200, description = "Where the place stands", body = tessera_core::api::queue::PlaceStatus), (status = 400, description = "place_required, bad_place", body = tessera_core::api::ErrorBody), (status = 403, description = "place_not_yours: the place belongs to another browser session", body = tessera_core::api::ErrorBody), (status = 404, description = "unknown_room", body = tessera_core::api::ErrorBody)))]
pub async fn place<S: Store>(
    State(app): State<AppState<S>>,
    Path(id): Path<String>,
    client: Client,
    headers: HeaderMap,
) -> Result<Json<PlaceStatus>, ServiceError> {
    let room = room(&app, &id)?;
    let (place, session) = presented(room, &app.queue.key, &headers)?;
    {
        // A place this process does not know (it restarted) takes its
        // rank again from the signed token.
        let now = app.clock.now_ms();
        let mut line = room.line();
        line.restore(now, place.entry, place.rank, session, client_key(client.0))
            .map_err(line_error)?;
    }
    Ok(Json(status(&app, room, place, session)?))
}

#[utoipa::path(delete, path = "/v1/queue/{room}/place", tag = "online", summary = "Give up a place (or a pass): it passes on", params(("room" = String, Path, description = "The room's id"), ("Tessera-Queue-Place" = String, Header, description = "The place from the join answer")), responses((status = 204, description = "Left"), (status = 400, description = "place_required, bad_place", body = tessera_core::api::ErrorBody), (status = 403, description = "place_not_yours", body = tessera_core::api::ErrorBody), (status = 404, description = "unknown_room, unknown_place", body = tessera_core::api::ErrorBody)))]
pub async fn leave<S: Store>(
    State(app): State<AppState<S>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ServiceError> {
    let room = room(&app, &id)?;
    let (place, session) = presented(room, &app.queue.key, &headers)?;
    room.line()
        .leave(place.entry, session)
        .map_err(line_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn status<S>(
    app: &AppState<S>,
    room: &Room,
    place: Place,
    session: [u8; 16],
) -> Result<PlaceStatus, ServiceError> {
    let now = app.clock.now_ms();
    let (view, rate) = {
        let mut line = room.line();
        let view = line.poll(now, place.entry, session).map_err(line_error)?;
        (view, line.rate_per_s(now))
    };
    let mut s = PlaceStatus {
        room: room.id.clone(),
        state: PlaceState::Waiting,
        opens_at: room.opens_at,
        place: app.queue.key.place(&place),
        position: None,
        ahead: None,
        waiting: 0,
        eta_seconds: None,
        eta_error_seconds: None,
        rate_per_minute: per_minute(rate),
        pass: None,
        pass_until: None,
        poll_after_ms: 5_000,
    };
    match view {
        PlaceView::BeforeOpening { waiting } => {
            s.state = PlaceState::BeforeOpening;
            s.waiting = waiting;
            // Everyone asks again just after the opening, spread over two
            // seconds so the first question is not one burst.
            let until = room.opens_at.as_millisecond() - now;
            let spread = (place.rank.0 % 2_000) as i64;
            s.poll_after_ms = u32::try_from((until + spread).clamp(500, 10_000)).unwrap_or(10_000);
        }
        PlaceView::Waiting {
            ahead,
            waiting,
            eta_s,
            eta_error_s,
        } => {
            s.position = Some(ahead.saturating_add(1));
            s.ahead = Some(ahead);
            s.waiting = waiting;
            s.eta_seconds = eta_s;
            s.eta_error_seconds = eta_error_s;
            // Near the front, ask often; far back, every five seconds.
            s.poll_after_ms = match eta_s {
                Some(e) if e < 10 => 1_000,
                Some(e) if e < 60 => 2_000,
                _ => 5_000,
            };
        }
        PlaceView::SoldOut { ahead, waiting } => {
            s.state = PlaceState::SoldOut;
            s.position = Some(ahead.saturating_add(1));
            s.ahead = Some(ahead);
            s.waiting = waiting;
        }
        PlaceView::Admitted { until_ms } => {
            s.state = PlaceState::Admitted;
            s.pass = Some(app.queue.key.pass(&Pass {
                room: room.tag,
                entry: place.entry,
                until_ms,
                session,
            }));
            s.pass_until = Some(from_ms(until_ms));
            s.poll_after_ms = 30_000;
        }
        PlaceView::Over => {
            s.state = PlaceState::Over;
            s.poll_after_ms = 60_000;
        }
    }
    Ok(s)
}

/// A pass checked for one hold: tell the line how the hold went.
pub struct PassUse<'a> {
    pub room: &'a Room,
    pub entry: Uuid,
    key: [u8; 8],
    /// A new hold (not a retry of one made before).
    fresh: bool,
}

impl PassUse<'_> {
    /// The hold was made (`Some(admissions)`) or refused (`None`).
    pub fn finish(self, made: Option<u32>) {
        let mut line = self.room.line();
        match made {
            Some(admissions) if self.fresh => line.booked(self.entry, admissions),
            Some(_) => {}
            None if self.fresh => line.pass_unused(self.entry, self.key),
            None => {}
        }
    }
}

fn pass_error(e: PassError, path: &str) -> ServiceError {
    match e {
        PassError::Expired => refused(
            403,
            "pass_expired",
            format!("the time to book with this pass is over; take a new place ({path}/join)"),
        ),
        PassError::Over => refused(
            403,
            "pass_over",
            format!("this pass was given up or its place has ended; take a new place ({path}/join)"),
        ),
        PassError::Used => refused(
            403,
            "pass_used",
            format!("this pass has made the holds it may (a booking and two retries); take a new place ({path}/join)"),
        ),
        PassError::NotAdmitted => refused(403, "bad_pass", "this place has not been let in yet"),
    }
}

/// For `POST /v1/holds`: a day sold through a waiting room needs a pass of
/// that room, for this browser session, let in and not given up, still in
/// its window, with holds left (a retry with the same Idempotency-Key is
/// always let through to its first answer).
pub fn check_pass<'a, S>(
    app: &'a AppState<S>,
    date: Date,
    headers: &HeaderMap,
    idempotency_key: &str,
) -> Result<Option<PassUse<'a>>, ServiceError> {
    let Some(room) = app.queue.for_date(date) else {
        return Ok(None);
    };
    let path = format!("/v1/queue/{}", room.id);
    let now = app.clock.now_ms();
    let Some(value) = headers.get(PASS_HEADER) else {
        let message = if now < room.opens_at.as_millisecond() {
            format!(
                "{} opens at {}: take a place in its waiting room ({path}/join)",
                room.name, room.opens_at
            )
        } else {
            format!("{} is sold through its waiting room: take a place ({path}/join) and book with the pass you are given", room.name)
        };
        return Err(refused(403, "queue_required", message));
    };
    let text = value.to_str().unwrap_or("");
    let pass = app.queue.key.read_pass(text).map_err(|e| {
        refused(
            403,
            "bad_pass",
            format!("the waiting-room pass is not valid: {e}"),
        )
    })?;
    if pass.room != room.tag {
        return Err(refused(403, "bad_pass", "this pass is for another sale"));
    }
    let session = session_of(headers).map(|s| session_tag(&s));
    if session != Some(pass.session) {
        return Err(refused(
            403,
            "pass_not_yours",
            "this pass was given to another browser session",
        ));
    }
    let key: [u8; 8] = crate::secrets::sha256(&[idempotency_key.as_bytes()])[..8]
        .try_into()
        .unwrap_or([0; 8]);
    let fresh = room
        .line()
        .use_pass(now, pass.entry, pass.session, pass.until_ms, key)
        .map_err(|e| pass_error(e, &path))?;
    Ok(Some(PassUse {
        room,
        entry: pass.entry,
        key,
        fresh,
    }))
}
