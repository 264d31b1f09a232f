//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers'
//! `#[utoipa::path]` attributes and the wire types' `ToSchema`, and served at
//! `GET /v1/openapi.json`. Generated rather than written so it cannot drift
//! from the code; CI fuzzes the live server against it (`scripts/schemathesis`).
//!
//! Answers every operation can give whatever it does (a malformed body, a
//! missing token, a storage failure) are added here once, by rule, instead of
//! on each handler.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tessera_core::api::{ErrorBody, IDEMPOTENCY_KEY};
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// Security scheme names used in the handlers' `security(...)`.
pub const DEVICE_TOKEN: &str = "device_token";
pub const SUPERVISOR_PIN: &str = "supervisor_pin";
pub const CHANNEL_TOKEN: &str = "channel_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera sync server",
        description = "One inventory for a museum's online shop, its counters and its gates. \
            Every error answer is `{\"error\": {\"code\": \"…\", \"message\": \"…\"}}` (schema `ErrorBody`): \
            `code` is stable and machine-readable, `message` is for a person; a 5xx also carries \
            `error.request_id`, the id in the `X-Request-Id` header and the server's log. \
            Writes of the online shop take an `Idempotency-Key` header: a retry with the same key gets the first answer."
    ),
    paths(
        super::ops::healthz,
        super::ops::metrics,
        openapi_json,
        super::online::catalogue,
        super::online::availability,
        super::events::availability,
        super::device_events::device,
        super::shop::config,
        super::shop::calendar,
        super::shop::nearest,
        super::queue::info,
        super::queue::join,
        super::queue::place,
        super::queue::leave,
        super::online::create_hold,
        super::online::confirm_hold,
        super::online::cancel_hold,
        super::waitlist::join,
        super::waitlist::offer,
        super::waitlist::take_offer,
        super::devices::enrol,
        super::devices::keys,
        super::gate::redeem,
        super::gate_sync::gate_sync,
        super::sync::sync,
        super::supervisor::day_report,
        super::supervisor::leases,
        super::supervisor::revoke_lease,
        super::supervisor::approve,
        super::payments::checkout,
        super::payments::checkout_status,
        super::payments::webhook,
        super::bookings::booking,
        super::bookings::cancel,
        super::bookings::resend,
        super::tickets::tickets_pdf,
        super::tickets::booking_ics,
        super::demo_page::show,
        super::demo_page::complete,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security, &CommonAnswers),
    tags(
        (name = "online", description = "The public booking API a web shop calls; no credentials"),
        (name = "shop", description = "The web shop's checkout and \"my booking\"; no credentials (a booking's token is its link)"),
        (name = "channel", description = "Trusted sales channels (a partner's site, a tourist office): a channel token from `tessera-server channel add`"),
        (name = "payments", description = "Payment providers' callbacks and the demo provider's page"),
        (name = "devices", description = "Enrolment and signing keys"),
        (name = "counter", description = "Counters (device token of a counter)"),
        (name = "gate", description = "Entry gates (device token of a gate, or a counter in gate mode)"),
        (name = "supervisor", description = "A supervisor device's token, or a counter's token with a supervisor's PIN"),
        (name = "ops", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The answer of `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or `unavailable` when the writer or the database is down.
    pub status: String,
}

/// The `Idempotency-Key` header of the online writes.
pub struct IdempotencyKeyHeader;

impl IntoParams for IdempotencyKeyHeader {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(200))
            .pattern(Some("^[!-~]{1,200}$"));
        vec![ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::True)
            .description(Some(
                "Unique per attempt, reused on a retry: a retry with the same key and body gets the \
                 first answer (header `Idempotent-Replayed: true`), the same key with another body \
                 gets 422 `idempotency_key_reused`. 1-200 printable ASCII characters.",
            ))
            .schema(Some(schema))
            .build()]
    }
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops", summary = "This document (OpenAPI 3.1)", responses((status = 200, description = "The OpenAPI document", body = Object, content_type = "application/json")))]
pub async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        ApiDoc::openapi().to_json().unwrap_or_else(|e| {
            format!("{{\"error\":{{\"code\":\"internal\",\"message\":\"{e}\"}}}}")
        })
    });
    ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response()
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            DEVICE_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The device token returned once by POST /v1/devices/enrol \
                         (counter, gate or supervisor device).",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            CHANNEL_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A trusted sales channel's token, printed once by \
                         `tessera-server channel add --name NAME`; orders it confirms carry the channel.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            SUPERVISOR_PIN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Supervisor-Pin",
                "A supervisor's PIN typed at a counter; sent with that counter's device token. \
                 Wrong PINs lock the device out for a while (429 too_many_attempts).",
            ))),
        );
    }
}

/// Adds the answers that follow from what an operation takes, not from what
/// it does: a body can be malformed or too large, a token missing or of the
/// wrong role, a key reused, any write refused for load, any request hit a
/// storage failure.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for op in ops.into_iter().flatten() {
                add_common_answers(path, op);
            }
        }
    }
}

fn add_common_answers(path: &str, op: &mut Operation) {
    if !path.starts_with("/v1/") || path == "/v1/openapi.json" {
        return;
    }
    let has_body = op.request_body.is_some();
    let has_query_or_path = op.parameters.iter().flatten().any(|p| {
        matches!(
            p,
            RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Path)
        )
    });
    let idempotent = op
        .parameters
        .iter()
        .flatten()
        .any(|p| matches!(p, RefOr::T(p) if p.name.eq_ignore_ascii_case(IDEMPOTENCY_KEY)));
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut add = |status: &str, description: &str| {
        let responses = &mut op.responses.responses;
        match responses.get_mut(status) {
            // A handler's own description names its specific codes; keep it.
            Some(_) => {}
            None => {
                responses.insert(status.to_string(), error_response(description).into());
            }
        }
    };
    if has_body || has_query_or_path || idempotent {
        add(
            "400",
            "bad_request, malformed_json, missing_idempotency_key or bad_idempotency_key: the request \
             could not be read",
        );
    }
    if has_body {
        add("413", "body_too_large");
        add(
            "422",
            "invalid_body: the JSON does not match the schema or a value is out of range",
        );
    }
    if secured {
        add("401", "unauthorized: no, unknown or revoked device token");
        add(
            "403",
            "forbidden: this device's role may not use the endpoint (or a wrong supervisor PIN)",
        );
    }
    add(
        "429",
        "too_many_attempts / rate_limited: slow down and retry later",
    );
    add(
        "500",
        "internal or storage_error: a fault on the server; nothing was changed",
    );
    add(
        "503",
        "unavailable: the server is shutting down or its storage is unavailable; retry",
    );
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect_refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_string()),
                        _ => collect_refs(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
            _ => {}
        }
    }

    /// Every path the router serves (read from its source, so a route added
    /// without `#[utoipa::path]` and a place in `ApiDoc` fails here).
    fn routed_paths() -> Vec<String> {
        let source = include_str!("mod.rs");
        let mut paths = Vec::new();
        for chunk in source.split(".route(").skip(1) {
            if let Some(path) = chunk.split('"').nth(1) {
                paths.push(path.to_string());
            }
        }
        assert!(paths.len() > 10, "could not read the routes: {paths:?}");
        paths
    }

    #[test]
    fn every_routed_path_is_documented() {
        let doc: serde_json::Value =
            serde_json::from_str(&ApiDoc::openapi().to_json().expect("serializes"))
                .expect("is JSON");
        for path in routed_paths() {
            assert!(
                doc["paths"][path.as_str()].is_object(),
                "{path} is routed but not in the OpenAPI document: add #[utoipa::path] to its \
                 handler and list the handler in ApiDoc (sync-server/src/http/openapi.rs)"
            );
        }
    }

    #[test]
    fn document_is_openapi_3_1_with_every_route() {
        let doc: serde_json::Value =
            serde_json::from_str(&ApiDoc::openapi().to_json().expect("serializes"))
                .expect("is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        for path in [
            "/healthz",
            "/v1/availability",
            "/v1/holds",
            "/v1/holds/{hold_id}/confirm",
            "/v1/holds/{hold_id}",
            "/v1/devices/enrol",
            "/v1/keys",
            "/v1/gate/redeem",
            "/v1/gate/sync",
            "/v1/sync",
            "/v1/reports/day",
            "/v1/leases",
            "/v1/leases/{lease_id}/revoke",
            "/v1/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is not documented");
        }
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes[DEVICE_TOKEN]["scheme"], "bearer");
        assert_eq!(schemes[SUPERVISOR_PIN]["name"], "X-Supervisor-Pin");
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        for r in refs {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} points at no schema"
            );
        }
        let hold = &doc["paths"]["/v1/holds"]["post"];
        assert!(hold["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["required"] == true));
        assert_eq!(
            hold["responses"]["409"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
}
