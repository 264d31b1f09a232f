//! Request extractors that answer bad input the Tessera way: a 4xx with
//! `{"error":{code,message}}`, never axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use tessera_core::api::devices::Role;
use tessera_core::api::IDEMPOTENCY_KEY;

use super::AppState;
use crate::error::ServiceError;
use crate::store::{ChannelInfo, DeviceInfo, Store};

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = axum::http::StatusCode::from_u16(self.status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = self.body();
        if status.is_server_error() {
            let request_id = crate::request_id::current_request_id();
            tracing::error!(code = self.code(), error = %self, request_id = request_id.as_deref().unwrap_or("-"), "request failed");
            if let Some(id) = request_id {
                body["error"]["request_id"] = id.into();
            }
        }
        (status, Json(body)).into_response()
    }
}

/// A JSON body, with its raw bytes kept for idempotency hashing.
pub struct ApiJson<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let raw = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ServiceError::BodyTooLarge(super::MAX_BODY_BYTES)
            } else {
                ServiceError::BadRequest(format!("could not read the request body: {rejection}"))
            }
        })?;
        let value = serde_json::from_slice(&raw).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => ServiceError::InvalidBody(e.to_string()),
            _ => ServiceError::MalformedJson(format!("request body is not valid JSON: {e}")),
        })?;
        Ok(ApiJson { value, raw })
    }
}

/// axum's `Query`, but a malformed query string (a duplicated or mistyped
/// parameter, bad percent-encoding) gets the JSON error body.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ServiceError::BadRequest(rejection.body_text())),
        }
    }
}

/// axum's `Path`, but a path value that cannot be read (bad percent-encoding,
/// not UTF-8) gets the JSON error body.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            // A route whose parameters do not fit its handler: our bug.
            Err(rejection) if rejection.status().is_server_error() => {
                tracing::error!(error = %rejection.body_text(), "path parameters do not fit the handler");
                Err(ServiceError::Internal {
                    request_id: crate::request_id::current_request_id().unwrap_or_default(),
                })
            }
            Err(rejection) => Err(ServiceError::BadRequest(rejection.body_text())),
        }
    }
}

pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ServiceError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(IDEMPOTENCY_KEY)
            .ok_or(ServiceError::MissingIdempotencyKey)?;
        let key = value
            .to_str()
            .map_err(|_| ServiceError::BadIdempotencyKey)?;
        let ok = !key.is_empty()
            && key.len() <= tessera_core::limits::IDEMPOTENCY_KEY_CHARS
            && key.bytes().all(|b| (0x21..0x7f).contains(&b));
        if !ok {
            return Err(ServiceError::BadIdempotencyKey);
        }
        Ok(IdempotencyKey(key.to_string()))
    }
}

/// The device behind a bearer token.
pub struct Device(pub DeviceInfo);

impl<S: Store> FromRequestParts<AppState<S>> for Device {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ServiceError::Unauthorized(
                    "this endpoint needs a device token (Authorization: Bearer …)".into(),
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ServiceError::Unauthorized("Authorization must be \"Bearer <token>\"".into())
            })?;
        let device = state
            .store
            .authenticate(token)
            .ok_or_else(|| ServiceError::Unauthorized("unknown or revoked device token".into()))?;
        Ok(Device(device))
    }
}

impl Device {
    /// Refuses a device whose role may not use the endpoint.
    pub fn require(self, allowed: &[Role], what: &str) -> Result<DeviceInfo, ServiceError> {
        if allowed.contains(&self.0.role) {
            Ok(self.0)
        } else {
            let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            Err(ServiceError::Forbidden(format!(
                "{what} needs a {} device; this token belongs to {} \"{}\"",
                names.join(" or "),
                self.0.role.as_str(),
                self.0.name
            )))
        }
    }
}

/// Who is acting as supervisor: a supervisor device, or a counter at which a
/// supervisor typed their PIN (header `X-Supervisor-Pin`).
pub struct Supervisor(pub String);

impl<S: Store> FromRequestParts<AppState<S>> for Supervisor {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Self, Self::Rejection> {
        let Device(device) = Device::from_request_parts(parts, state).await?;
        if device.role == Role::Supervisor {
            return Ok(Supervisor(device.name));
        }
        let pin = parts
            .headers
            .get("x-supervisor-pin")
            .and_then(|v| v.to_str().ok());
        match (device.role, pin) {
            (Role::Counter, Some(pin)) => {
                let staff = state.pins.supervisor(&*state.store, &device, pin).await?;
                Ok(Supervisor(format!("{} at {}", staff.name, device.name)))
            }
            _ => Err(ServiceError::Forbidden(format!(
                "this needs a supervisor: a supervisor device's token, or a counter's token with a supervisor's PIN \
                 (X-Supervisor-Pin); this token belongs to {} \"{}\"",
                device.role.as_str(),
                device.name
            ))),
        }
    }
}

/// A trusted sales channel, by its bearer token (`tessera-server channel add`).
pub struct Channel(pub ChannelInfo);

impl<S: Store> FromRequestParts<AppState<S>> for Channel {
    type Rejection = ServiceError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState<S>,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(ServiceError::refused(
                401,
                "channel_token_required",
                "confirming a hold needs a sales channel's token (Authorization: Bearer …); \
                 visitors of the web shop pay through POST /v1/holds/{id}/checkout",
            ));
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ServiceError::refused(
                    401,
                    "channel_token_required",
                    "Authorization must be \"Bearer <channel token>\"",
                )
            })?;
        let channel = state.store.authenticate_channel(token).ok_or_else(|| {
            ServiceError::refused(401, "unknown_channel", "unknown or revoked channel token")
        })?;
        Ok(Channel(channel))
    }
}
