//! Supervisor endpoints: the day report, lease revocation, and approvals of
//! counter actions (voids) checked against a supervisor's PIN.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tessera_core::api::approvals::{ApprovalRequest, SUPERVISOR_PIN};
use tessera_core::api::devices::Role;
use tessera_core::ids::LeaseId;
use tessera_core::slot::parse_date;

use super::extract::{ApiJson, Device, Path, Query, Supervisor};
use super::AppState;
use crate::error::ServiceError;
use crate::reports::{to_csv, to_text};
use crate::store::Store;

#[derive(Deserialize)]
pub struct ReportQuery {
    date: Option<String>,
    format: Option<String>,
}

fn date_of(text: Option<String>) -> Result<jiff::civil::Date, ServiceError> {
    let text = text.ok_or_else(|| {
        ServiceError::BadRequest("query parameter date=YYYY-MM-DD is required".into())
    })?;
    parse_date(&text).map_err(|e| ServiceError::BadRequest(e.to_string()))
}

#[utoipa::path(get, path = "/v1/reports/day", tag = "supervisor", summary = "The day's reconciliation: channels, cash drawers, everything missing, slots, gate conflicts", security(("device_token" = []), ("device_token" = [], "supervisor_pin" = [])), params(("date" = String, Query, format = Date, description = "Museum day, YYYY-MM-DD"), ("format" = Option<String>, Query, description = "json (default), csv or text")), responses((status = 200, description = "The report", content((tessera_core::api::report::DayReport = "application/json"), (String = "text/csv"), (String = "text/plain"))), (status = 400, description = "date or format missing or malformed (bad_request)", body = tessera_core::api::ErrorBody), (status = 422, description = "date out of range (invalid_body)", body = tessera_core::api::ErrorBody)))]
pub async fn day_report<S: Store>(
    State(app): State<AppState<S>>,
    Supervisor(who): Supervisor,
    Query(q): Query<ReportQuery>,
) -> Result<Response, ServiceError> {
    let date = date_of(q.date)?;
    let format = q.format.unwrap_or_else(|| "json".into());
    if !["json", "csv", "text"].contains(&format.as_str()) {
        return Err(ServiceError::BadRequest(
            "format must be json, csv or text".into(),
        ));
    }
    let report = app.store.day_report(date).await?;
    tracing::info!(%date, by = %who, "day report");
    Ok(match format.as_str() {
        "csv" => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"tessera-day-{date}.csv\""),
                ),
            ],
            to_csv(&report),
        )
            .into_response(),
        "text" => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            to_text(&report),
        )
            .into_response(),
        _ => Json(report).into_response(),
    })
}

#[derive(Deserialize)]
pub struct DateQuery {
    date: Option<String>,
}

#[utoipa::path(get, path = "/v1/leases", tag = "supervisor", summary = "The counters' leases of one day", security(("device_token" = []), ("device_token" = [], "supervisor_pin" = [])), params(("date" = String, Query, format = Date, description = "Museum day, YYYY-MM-DD")), responses((status = 200, description = "Leases by slot, then counter", body = Vec<tessera_core::api::supervisor::LeaseInfo>), (status = 400, description = "date missing or malformed (bad_request)", body = tessera_core::api::ErrorBody), (status = 422, description = "date out of range (invalid_body)", body = tessera_core::api::ErrorBody)))]
pub async fn leases<S: Store>(
    State(app): State<AppState<S>>,
    Supervisor(_): Supervisor,
    Query(q): Query<DateQuery>,
) -> Result<Response, ServiceError> {
    let date = date_of(q.date)?;
    Ok(Json(app.store.leases(date).await?).into_response())
}

#[utoipa::path(post, path = "/v1/leases/{lease_id}/revoke", tag = "supervisor", summary = "Revoke a lost counter's lease: its unsold places go back on sale", security(("device_token" = []), ("device_token" = [], "supervisor_pin" = [])), params(("lease_id" = String, Path, format = Uuid, description = "The lease's id")), responses((status = 200, description = "Revoked (or already revoked)", body = tessera_core::api::supervisor::Revoked), (status = 404, description = "not_found: no such lease", body = tessera_core::api::ErrorBody)))]
pub async fn revoke_lease<S: Store>(
    State(app): State<AppState<S>>,
    Supervisor(who): Supervisor,
    Path(lease): Path<String>,
) -> Result<Response, ServiceError> {
    let id: LeaseId = lease
        .parse()
        .map_err(|_| ServiceError::NotFound(format!("no lease {lease}")))?;
    let done = app.store.revoke_lease(id, who).await?;
    Ok(Json(done).into_response())
}

/// `POST /v1/approvals`: a supervisor at a counter approves one action. The
/// PIN is checked here (the counter holds no supervisor verifier), against
/// the device's lockout; the approval is bound to the device and the action's
/// subject, and the upload of the action must carry it.
#[utoipa::path(post, path = "/v1/approvals", tag = "supervisor", security(("device_token" = [], "supervisor_pin" = [])), request_body = tessera_core::api::approvals::ApprovalRequest, responses((status = 201, description = "Approved", body = tessera_core::api::approvals::Approval)))]
pub async fn approve<S: Store>(
    State(app): State<AppState<S>>,
    device: Device,
    headers: axum::http::HeaderMap,
    body: ApiJson<ApprovalRequest>,
) -> Result<Response, ServiceError> {
    let device = device.require(&[Role::Counter], "a supervisor's approval")?;
    let pin = headers
        .get(SUPERVISOR_PIN)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ServiceError::BadRequest(
                "the supervisor's PIN goes in the X-Supervisor-Pin header".into(),
            )
        })?;
    let staff = app.pins.supervisor(&*app.store, &device, pin).await?;
    let request = body.value;
    let approval = app
        .store
        .create_approval(device.id(), request, staff.name.clone())
        .await?;
    tracing::info!(
        action = request.action(),
        subject = %request.subject(),
        by = %staff.name,
        device = %device.name,
        "supervisor approval"
    );
    Ok((axum::http::StatusCode::CREATED, Json(approval)).into_response())
}
