//! A booking's tickets as files, by its "my booking" token: the PDF (one
//! page per ticket) and the calendar entry. Same link, same 404 as the
//! booking itself.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::extract::Path;
use super::AppState;
use crate::delivery;
use crate::error::ServiceError;
use crate::store::Store;

/// Headers of a file only its link's holder may see: not cached by shared
/// caches, not indexed, its address not sent on as a referrer.
fn private_file(content_type: &'static str, disposition: String, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
            (
                header::HeaderName::from_static("x-robots-tag"),
                "noindex".to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

#[utoipa::path(get, path = "/v1/bookings/{token}/tickets.pdf", tag = "shop", summary = "A booking's tickets as a PDF, one page per ticket not cancelled", params(("token" = String, Path, description = "The token from the booking's link")), responses((status = 200, description = "The PDF, in the booking's language", content_type = "application/pdf"), (status = 404, description = "unknown_booking", body = tessera_core::api::ErrorBody), (status = 429, description = "rate_limited: too many reads by token from this client", body = tessera_core::api::ErrorBody)))]
pub async fn tickets_pdf<S: Store>(
    State(app): State<AppState<S>>,
    Path(text): Path<String>,
) -> Result<Response, ServiceError> {
    let token = super::bookings::token(text)?;
    let booking = app.store.booking(token, app.booking_context()).await?;
    let name = delivery::email::attachment_name(&booking);
    // Drawing a few pages of QR squares is CPU work: off the async threads.
    let pdf = tokio::task::spawn_blocking(move || delivery::pdf::tickets_pdf(&booking))
        .await
        .map_err(|_| ServiceError::Unavailable)?
        .map_err(|e| ServiceError::Failed(format!("cannot draw the tickets: {e}")))?;
    Ok(private_file(
        "application/pdf",
        format!("inline; filename=\"{name}.pdf\""),
        pdf,
    ))
}

#[utoipa::path(get, path = "/v1/bookings/{token}/booking.ics", tag = "shop", summary = "A booking's calendar entry (iCalendar)", params(("token" = String, Path, description = "The token from the booking's link")), responses((status = 200, description = "One VEVENT for the entry window, with the booking's link", content_type = "text/calendar"), (status = 404, description = "unknown_booking", body = tessera_core::api::ErrorBody), (status = 429, description = "rate_limited: too many reads by token from this client", body = tessera_core::api::ErrorBody)))]
pub async fn booking_ics<S: Store>(
    State(app): State<AppState<S>>,
    Path(text): Path<String>,
) -> Result<Response, ServiceError> {
    let token = super::bookings::token(text)?;
    let context = app.booking_context();
    let link = format!("{}/booking/{token}", context.public_url);
    let booking = app.store.booking(token, context).await?;
    let name = delivery::email::attachment_name(&booking);
    let ics = delivery::ics::booking_ics(&booking, &link);
    Ok(private_file(
        "text/calendar; charset=utf-8",
        format!("attachment; filename=\"{name}.ics\""),
        ics.into_bytes(),
    ))
}
