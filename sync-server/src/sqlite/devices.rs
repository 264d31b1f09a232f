//! Enrolment inside the writer: a one-time code becomes a device with a token
//! (and, for a counter, a certified ticket-signing key).

use rusqlite::{params, OptionalExtension};
use tessera_core::api::devices::{EnrolRequest, Enrolled, Role};
use tessera_core::enrolment::{self, EnrolRefusal, StoredCode};
use tessera_core::ids::new_id;

use super::sql::Text;
use super::writer::{Ctx, Fatal};
use crate::secrets;
use crate::store::{Refusal, StoreError};

pub(crate) fn enrol(
    ctx: &mut Ctx<'_>,
    request: EnrolRequest,
) -> Result<Result<Enrolled, StoreError>, Fatal> {
    super::failpoint::hit("enrol")?;
    let Some(code) = secrets::normalize_enrolment_code(&request.code) else {
        return Ok(Err(Refusal::EnrolmentCodeInvalid.into()));
    };
    let code_hash = secrets::hash(&code);
    let row: Option<(String, String, i64, Option<i64>)> = ctx
        .tx
        .prepare_cached(
            "SELECT role, name, expires_at, used_at FROM enrolment_codes WHERE code_hash = ?1",
        )?
        .query_row(params![code_hash], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let (stored, code_name) = match row {
        None => (None, String::new()),
        Some((role, name, expires_at_ms, used_at)) => {
            let Some(role) = Role::parse(&role) else {
                return Err(Fatal::Bookkeeping(format!(
                    "enrolment code with unknown role {role}"
                )));
            };
            let code = StoredCode {
                role,
                expires_at_ms,
                used: used_at.is_some(),
            };
            (Some(code), name)
        }
    };
    let (role, public_key) =
        match enrolment::check(stored, ctx.now_ms, request.public_key.as_deref()) {
            Ok(e) => (e.role, e.public_key),
            Err(EnrolRefusal::CodeInvalid) => return Ok(Err(Refusal::EnrolmentCodeInvalid.into())),
            Err(refusal) => return Ok(Err(Refusal::Invalid(refusal.to_string()).into())),
        };
    // The operator named the device when making the code; that name is what
    // reports and gates show. The device's own name is kept in the log line.
    let name = code_name;
    let device_id = new_id();
    let token = secrets::new_token();
    let key_id: Option<u32> = match public_key {
        Some(key) => {
            let next: u32 = ctx.tx.query_row(
                "SELECT COALESCE(MAX(key_id), 0) + 1 FROM signing_keys",
                [],
                |r| r.get(0),
            )?;
            ctx.tx.execute(
                "INSERT INTO signing_keys (key_id, owner, device_id, public_key, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![next, name, Text(&device_id), key.to_vec(), ctx.now_ms],
            )?;
            Some(next)
        }
        None => None,
    };
    ctx.tx.execute(
        "INSERT INTO devices (device_id, role, name, token_hash, key_id, enrolled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![Text(&device_id), role.as_str(), name, secrets::hash(&token), key_id, ctx.now_ms],
    )?;
    ctx.tx.execute(
        "UPDATE enrolment_codes SET used_at = ?2, device_id = ?3 WHERE code_hash = ?1",
        params![code_hash, ctx.now_ms, Text(&device_id)],
    )?;
    ctx.state.devices_dirty = true;
    if key_id.is_some() {
        // A new counter's key: gates must know it to admit its tickets.
        ctx.state
            .device_notes
            .topic(tessera_core::api::events::DeviceTopic::Keys);
    }
    tracing::info!(%device_id, role = role.as_str(), name = %name, device_says = %request.name, "device enrolled");
    Ok(Ok(Enrolled {
        device_id,
        role,
        token,
        key_id,
    }))
}
