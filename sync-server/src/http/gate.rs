//! Online redemption: verify the signature here, then let the writer judge
//! and record the entry atomically so a ticket admits once across every gate.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tessera_core::admission::DenyReason;
use tessera_core::api::devices::Role;
use tessera_core::api::gate::{RedeemResult, Redemption};
use tessera_core::limits;
use tessera_core::ticket_code::{decode_unverified, normalize_scanned};
use uuid::Uuid;

use super::extract::{ApiJson, Device};
use super::AppState;
use crate::error::ServiceError;
use crate::store::Store;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::ToSchema)]
pub struct RedeemBody {
    pub code: String,
    /// A gate's own id for this scan, so a retried request is not a second entry.
    #[serde(default)]
    pub scan_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/v1/gate/redeem", tag = "gate", summary = "Admit a ticket once across every gate", security(("device_token" = [])), request_body = RedeemBody, responses((status = 200, description = "Admitted or denied, with the reason; a denial is not an HTTP error", body = tessera_core::api::gate::Redemption)))]
pub async fn redeem<S: Store>(
    State(app): State<AppState<S>>,
    device: Device,
    body: ApiJson<RedeemBody>,
) -> Result<Json<Redemption>, ServiceError> {
    // A counter in gate mode scans too.
    let gate = device.require(
        &[Role::Gate, Role::Counter, Role::Supervisor],
        "redeeming tickets",
    )?;
    if limits::chars(&body.value.code) > limits::TICKET_CODE_CHARS {
        return Ok(Json(Redemption::denied(DenyReason::Invalid)));
    }
    let code = normalize_scanned(&body.value.code);
    let claims = match app.store.keyring().verify(&code) {
        Ok(c) => c,
        Err(e) => {
            let reason = DenyReason::from_code_error(&e);
            let mut denied = Redemption::denied(reason);
            if let Ok((c, _, _)) = decode_unverified(&code) {
                // Say which ticket it claims to be only when the signer is
                // real but revoked; a forged code gets no echo.
                if reason == DenyReason::RevokedKey {
                    denied.ticket_id = Some(c.ticket_id);
                }
            }
            metrics::counter!("tessera_redemptions_total", "result" => reason.as_str())
                .increment(1);
            return Ok(Json(denied));
        }
    };
    // Catalogue, voided, day and window are judged by the writer, which
    // knows whether the ticket was voided, in the order core's rules give.
    let redemption = app
        .store
        .redeem(gate, claims, body.value.scan_id, app.entry)
        .await?;
    debug_assert!(redemption.result == RedeemResult::Admitted || redemption.reason.is_some());
    Ok(Json(redemption))
}
