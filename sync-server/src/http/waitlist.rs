//! The waiting list of sold-out entry times, as the shop calls it: join a
//! line, look at an offer from its emailed link, turn it into a checkout.

use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::Response;
use axum::Json;
use tessera_core::api::shop::{Offer, OfferHoldRequest, WaitlistRequest};
use tessera_core::limits;
use tessera_core::pricing::{price_cart, CartLimits, Channel};

use super::extract::{ApiJson, IdempotencyKey, Path};
use super::limits::Client;
use super::online::{answer, idem, made_hold};
use super::AppState;
use crate::error::ServiceError;
use crate::secrets::sha256;
use crate::store::{JoinBounds, Refusal, Store, StoreError, WaitlistError};

/// An address we can mail an offer to: one line, at most 254 characters, a
/// non-empty name and domain around one `@`, no spaces.
fn check_email(email: &str) -> Result<(), ServiceError> {
    limits::email("email", email).map_err(|e| ServiceError::InvalidBody(e.to_string()))
}

#[utoipa::path(post, path = "/v1/waitlist", tag = "online", summary = "Join the waiting list of a sold-out entry time",
    description = "First come, first served: when places come back, the first in line whose party fits is emailed a link to places held for them for a while; unused, they pass to the next. Joining again with the same address returns the same entry (200).",
    params(super::openapi::IdempotencyKeyHeader), request_body = tessera_core::api::shop::WaitlistRequest,
    responses(
        (status = 201, description = "In line; a retry with the same Idempotency-Key returns this answer again", body = tessera_core::api::shop::WaitlistEntry),
        (status = 200, description = "This address already waits for this entry time: its entry, with its place now", body = tessera_core::api::shop::WaitlistEntry),
        (status = 422, description = "party_too_large (more than the entry time holds or one online order admits), not_sold_out (there is room: book it), unknown_slot, museum_closed, slot_past, invalid_body, idempotency_key_reused", body = tessera_core::api::ErrorBody),
        (status = 429, description = "waitlist_limit: this address, or this client, already waits for as many entry times as one may (`[waitlist]` in the config); rate_limited", body = tessera_core::api::ErrorBody)))]
pub async fn join<S: Store>(
    State(app): State<AppState<S>>,
    client: Client,
    method: Method,
    uri: Uri,
    key: IdempotencyKey,
    body: ApiJson<WaitlistRequest>,
) -> Result<Response, ServiceError> {
    let mut request = body.value.clone();
    request.email = request.email.trim().to_string();
    check_email(&request.email)?;
    if request.party == 0 {
        return Err(ServiceError::InvalidBody("party must be at least 1".into()));
    }
    // A slot whose window is over still goes to the store, so a retry of a
    // join made in time gets its first answer; the store refuses it as past.
    match app.store.sellable_slot(request.slot_id).await {
        Ok(_) | Err(StoreError::Refused(Refusal::SlotPast(_))) => {}
        Err(e) => return Err(e.into()),
    }
    let settings = &app.config.waitlist;
    let bounds = JoinBounds {
        // The address itself is not stored; entries are counted by its hash.
        client_tag: sha256(&[b"waitlist client", client.0.to_string().as_bytes()]),
        per_email: settings.max_entries_per_email,
        per_client: settings.max_entries_per_client,
    };
    let idem = idem(key, &method, &uri, &body.raw);
    Ok(answer(
        app.store.join_waitlist(idem, request, bounds).await?,
    ))
}

/// Offer tokens are 52 base32 characters; anything else is answered before
/// the store is asked, the same way as a token that names nothing.
fn token(text: String) -> Result<String, ServiceError> {
    if crate::secrets::is_link_token(&text) {
        Ok(text)
    } else {
        Err(WaitlistError::UnknownOffer.into())
    }
}

#[utoipa::path(get, path = "/v1/offers/{token}", tag = "online", summary = "A waiting-list offer, from the token in its emailed link",
    params(("token" = String, Path, description = "The token of the offer's link")),
    responses(
        (status = 200, description = "The offer: open until `expires_at`, taken, or expired", body = tessera_core::api::shop::Offer),
        (status = 404, description = "unknown_offer: no offer has this token", body = tessera_core::api::ErrorBody),
        (status = 429, description = "rate_limited: too many reads by token from this client", body = tessera_core::api::ErrorBody)))]
pub async fn offer<S: Store>(
    State(app): State<AppState<S>>,
    Path(text): Path<String>,
) -> Result<Json<Offer>, ServiceError> {
    Ok(Json(app.store.offer(token(text)?).await?))
}

#[utoipa::path(post, path = "/v1/offers/{token}/hold", tag = "online", summary = "Turn an offer's held places into a checkout hold",
    description = "The offer's places and the chosen tickets change hands in one step: nobody else can take them in between. The tickets may admit at most the offered party; places left over go to the next in line. The hold is then checked out like any other.",
    params(("token" = String, Path, description = "The token of the offer's link"), super::openapi::IdempotencyKeyHeader),
    request_body = tessera_core::api::shop::OfferHoldRequest,
    responses(
        (status = 201, description = "Held; a retry with the same Idempotency-Key returns this answer again", body = tessera_core::api::online::Hold),
        (status = 404, description = "unknown_offer", body = tessera_core::api::ErrorBody),
        (status = 409, description = "offer_taken: already turned into a checkout", body = tessera_core::api::ErrorBody),
        (status = 410, description = "offer_expired: not used in time; the places went to the next in line", body = tessera_core::api::ErrorBody),
        (status = 422, description = "too_many_for_offer, slot_past, unknown_product, bad_quantity, too_many, empty_cart, membership_number, add_on_alone, not_sold_online, invalid_body, idempotency_key_reused", body = tessera_core::api::ErrorBody)))]
pub async fn take_offer<S: Store>(
    State(app): State<AppState<S>>,
    client: Client,
    Path(text): Path<String>,
    method: Method,
    uri: Uri,
    key: IdempotencyKey,
    body: ApiJson<OfferHoldRequest>,
) -> Result<Response, ServiceError> {
    let token = token(text)?;
    // An unknown token is refused before the cart is looked at: a made-up
    // link learns nothing from a pricing error.
    app.store.offer(token.clone()).await?;
    let cart = price_cart(
        &app.store.catalogue(),
        &body.value.items,
        Channel::Online,
        CartLimits::ONLINE,
    )?;
    let room = match app
        .edge
        .holds
        .reserve(client.0, &key.0, cart.admissions, app.clock.now_ms())
    {
        Ok(room) => room,
        Err(refusal) => return Ok(axum::response::IntoResponse::into_response(refusal)),
    };
    let idem = idem(key, &method, &uri, &body.raw);
    let first = app.store.take_offer(idem, token, cart).await?;
    if first.status == 201 && !first.replayed {
        if let Some((hold, expires_ms)) = made_hold(&first.body) {
            room.keep(hold, expires_ms);
        }
    }
    Ok(answer(first))
}

#[cfg(test)]
mod tests {
    use super::check_email;

    #[test]
    fn emails_are_checked_for_shape_and_length() {
        assert!(check_email("ana@example.org").is_ok());
        assert!(check_email("ana.b+wait@musée.fr").is_ok());
        for bad in [
            "",
            "ana",
            "@example.org",
            "ana@",
            "ana@example",
            "ana@.org",
            "a b@example.org",
            "ana@ex@ample.org",
            "ana@example.org\n",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(check_email(&long).is_err());
    }
}
