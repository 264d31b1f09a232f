//! Devices and staff on PostgreSQL: enrolment, the supervisor-PIN lockout,
//! one-use approvals, and the operator commands that make enrolment codes,
//! set PINs and revoke devices.
//!
//! These writes are few (a device enrols once, a supervisor approves a void
//! now and then), so each runs in a transaction of its own on a connection
//! of its own, not in the online writer's group commit. Each one that
//! changes what processes keep in memory (devices, ticket keys, staff)
//! NOTIFYs it in the same transaction, so every process re-reads it once it
//! is committed.

use jiff::Timestamp;
use tessera_core::api::approvals::{Approval, ApprovalRequest};
use tessera_core::api::devices::{EnrolRequest, Enrolled, Role};
use tessera_core::enrolment::{self, EnrolRefusal, StoredCode};
use tessera_core::ids::new_id;
use tessera_core::staff::{
    minutes_left, pin_change, Attempts, PinChange, PinVerifier, StaffFixture, StaffMember,
    StaffRole,
};
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use super::cache::{DEVICES_CHANGED, STAFF_CHANGED};
use super::schema::{connect, load_catalogue, PgError, CHANGES};
use crate::admin::PinSet;
use crate::secrets;
use crate::store::{Refusal, StoreError};

async fn notify(tx: &Transaction<'_>, what: &str) -> Result<(), tokio_postgres::Error> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES, &what])
        .await
        .map(|_| ())
}

async fn audit(
    tx: &Transaction<'_>,
    now: Timestamp,
    actor: &str,
    action: &str,
    detail: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES ($1, $2, $3, $4)",
        &[&now.as_millisecond(), &actor, &action, &detail],
    )
    .await
    .map(|_| ())
}

/// A one-time code becomes a device with a token (and, for a counter, a
/// certified ticket-signing key). The code's row is locked, so two
/// processes handed the same code enrol one device.
pub(super) async fn enrol(
    tx: &Transaction<'_>,
    request: &EnrolRequest,
    now_ms: i64,
) -> Result<Result<Enrolled, StoreError>, tokio_postgres::Error> {
    let Some(code) = secrets::normalize_enrolment_code(&request.code) else {
        return Ok(Err(Refusal::EnrolmentCodeInvalid.into()));
    };
    let code_hash = secrets::hash(&code);
    let row = tx
        .query_opt(
            "SELECT role, name, expires_at, used_at FROM enrolment_codes
             WHERE code_hash = $1 FOR UPDATE",
            &[&code_hash],
        )
        .await?;
    let mut name = String::new();
    let stored = match &row {
        None => None,
        Some(row) => {
            let Some(role) = Role::parse(row.get(0)) else {
                // The table's CHECK allows only known roles.
                return Ok(Err(StoreError::Storage(
                    "enrolment code with an unknown role".into(),
                )));
            };
            name = row.get(1);
            Some(StoredCode {
                role,
                expires_at_ms: row.get(2),
                used: row.get::<_, Option<i64>>(3).is_some(),
            })
        }
    };
    let (role, public_key) = match enrolment::check(stored, now_ms, request.public_key.as_deref()) {
        Ok(e) => (e.role, e.public_key),
        Err(EnrolRefusal::CodeInvalid) => return Ok(Err(Refusal::EnrolmentCodeInvalid.into())),
        Err(refusal) => return Ok(Err(Refusal::Invalid(refusal.to_string()).into())),
    };
    // The operator named the device when making the code (`name`); that name
    // is what reports and gates show.
    let device_id = new_id();
    let token = secrets::new_token();
    let key_id: Option<u32> = match public_key {
        Some(key) => {
            // Key ids are handed out under a lock: two enrolments on two
            // processes never take the same number.
            tx.execute("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE", &[])
                .await?;
            let next: i32 = tx
                .query_one("SELECT COALESCE(MAX(key_id), 0) + 1 FROM signing_keys", &[])
                .await?
                .get(0);
            tx.execute(
                "INSERT INTO signing_keys (key_id, owner, device_id, public_key, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&next, &name, &device_id, &key.to_vec(), &now_ms],
            )
            .await?;
            u32::try_from(next).ok()
        }
        None => None,
    };
    let key_id_sql = key_id.and_then(|k| i32::try_from(k).ok());
    tx.execute(
        "INSERT INTO devices (device_id, role, name, token_hash, key_id, enrolled_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &device_id,
            &role.as_str(),
            &name,
            &secrets::hash(&token),
            &key_id_sql,
            &now_ms,
        ],
    )
    .await?;
    tx.execute(
        "UPDATE enrolment_codes SET used_at = $2, device_id = $3 WHERE code_hash = $1",
        &[&code_hash, &now_ms, &device_id],
    )
    .await?;
    notify(tx, DEVICES_CHANGED).await?;
    tracing::info!(%device_id, role = role.as_str(), name = %name, device_says = %request.name, "device enrolled");
    Ok(Ok(Enrolled {
        device_id,
        role,
        token,
        key_id,
    }))
}

/// Counts a supervisor-PIN attempt from `device` before the PIN is checked,
/// and commits it, so neither concurrent guesses (on any process) nor a
/// restart escape it: the device's row is locked while it is counted.
pub(super) async fn begin_attempt(
    tx: &Transaction<'_>,
    device: Uuid,
    now_ms: i64,
) -> Result<Result<(), StoreError>, tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO pin_attempts (device_id, failures, last_at) VALUES ($1, 0, 0)
         ON CONFLICT (device_id) DO NOTHING",
        &[&device],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT failures, last_at, locked_until FROM pin_attempts
             WHERE device_id = $1 FOR UPDATE",
            &[&device],
        )
        .await?;
    let before = Attempts {
        failures: u32::try_from(row.get::<_, i32>(0)).unwrap_or(u32::MAX),
        last_at_ms: row.get(1),
        locked_until_ms: row.get(2),
    };
    match before.begin(now_ms) {
        Err(left_ms) => Ok(Err(Refusal::TooManyAttempts(format!(
            "too many wrong supervisor PINs from this device; try again in {} min",
            minutes_left(left_ms)
        ))
        .into())),
        Ok(next) => {
            if next.locked_until_ms != 0 && before.locked_until_ms == 0 {
                tracing::warn!(%device, "supervisor PIN locked after repeated wrong guesses");
            }
            let failures = i32::try_from(next.failures).unwrap_or(i32::MAX);
            tx.execute(
                "UPDATE pin_attempts SET failures = $2, last_at = $3, locked_until = $4
                 WHERE device_id = $1",
                &[&device, &failures, &next.last_at_ms, &next.locked_until_ms],
            )
            .await?;
            Ok(Ok(()))
        }
    }
}

/// The right PIN: the device's count starts again.
pub(super) async fn attempt_succeeded(
    client: &impl GenericClient,
    device: Uuid,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute("DELETE FROM pin_attempts WHERE device_id = $1", &[&device])
        .await
        .map(|_| ())
}

/// Records a verified supervisor's one-use approval for `device`.
pub(super) async fn create_approval(
    tx: &Transaction<'_>,
    device: Uuid,
    request: ApprovalRequest,
    approved_by: String,
    now_ms: i64,
) -> Result<Approval, tokio_postgres::Error> {
    attempt_succeeded(tx, device).await?;
    let approval_id = Uuid::now_v7();
    tx.execute(
        "INSERT INTO approvals (approval_id, device_id, action, subject, approved_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &approval_id,
            &device,
            &request.action(),
            &request.subject().to_string(),
            &approved_by,
            &now_ms,
        ],
    )
    .await?;
    Ok(Approval {
        approval_id,
        request,
        approved_by,
        approved_at: tessera_core::clock::from_ms(now_ms),
    })
}

/// The staff of a fixtures file, at `init`.
pub(super) async fn insert_staff(
    tx: &Transaction<'_>,
    staff: &[StaffFixture],
) -> Result<(), PgError> {
    let cost = secrets::pin_cost();
    for fixture in staff {
        let member =
            secrets::member_from_fixture(fixture, cost).map_err(|e| PgError::Fixtures {
                path: "fixtures".into(),
                message: format!("staff {:?}: {e}", fixture.name),
            })?;
        insert_member(tx, &member).await?;
    }
    Ok(())
}

async fn insert_member(
    tx: &Transaction<'_>,
    member: &StaffMember,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO staff (name, role, pin_verifier) VALUES ($1, $2, $3)",
        &[
            &member.name,
            &member.role.as_str(),
            &member.pin_verifier.as_str(),
        ],
    )
    .await
    .map(|_| ())
}

// ---- operator commands -------------------------------------------------------

/// Makes a one-time enrolment code, valid for `valid_hours` (the
/// `enrol --database` command).
pub async fn create_enrolment_code(
    url: &str,
    role: Role,
    name: &str,
    now: Timestamp,
    valid_hours: i64,
) -> Result<String, PgError> {
    let mut client = connect(url).await?;
    load_catalogue(&client).await?;
    let tx = client.transaction().await?;
    let code = secrets::new_enrolment_code();
    let expires = now
        .as_millisecond()
        .saturating_add(valid_hours.saturating_mul(3_600_000));
    tx.execute(
        "INSERT INTO enrolment_codes (code_hash, role, name, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &secrets::hash(&code),
            &role.as_str(),
            &name,
            &now.as_millisecond(),
            &expires,
        ],
    )
    .await?;
    audit(
        &tx,
        now,
        "admin",
        "enrolment_code",
        &format!("{} {name:?}", role.as_str()),
    )
    .await?;
    tx.commit().await?;
    Ok(code)
}

/// Sets `name`'s PIN (adding them with `role` if new); `core::staff::
/// pin_change` decides. The staff table is locked for the check, so two
/// operators cannot give one PIN twice.
pub async fn set_pin(
    url: &str,
    name: &str,
    role: Option<StaffRole>,
    pin: &str,
    actor: &str,
    now: Timestamp,
) -> Result<PinSet, PgError> {
    let name = name.trim();
    let pin = pin.trim();
    let member = secrets::member_from_fixture(
        &StaffFixture {
            name: name.to_string(),
            role: role.unwrap_or(StaffRole::Cashier),
            pin: pin.to_string(),
        },
        secrets::pin_cost(),
    )
    .map_err(|e| PgError::Staff(e.to_string()))?;
    let mut client = connect(url).await?;
    let tx = client.transaction().await?;
    tx.execute("LOCK TABLE staff IN SHARE ROW EXCLUSIVE MODE", &[])
        .await?;
    let on_staff: Vec<(String, Option<PinVerifier>)> = tx
        .query("SELECT name, pin_verifier FROM staff", &[])
        .await?
        .iter()
        .map(|r| {
            let verifier: Option<&str> = r.get(1);
            (r.get(0), verifier.and_then(|v| PinVerifier::parse(v).ok()))
        })
        .collect();
    let change =
        pin_change(name, role, pin, &on_staff).map_err(|e| PgError::Staff(e.to_string()))?;
    let outcome = match change {
        PinChange::Change { role: Some(role) } => {
            tx.execute(
                "UPDATE staff SET pin_verifier = $2, role = $3 WHERE name = $1",
                &[&name, &member.pin_verifier.as_str(), &role.as_str()],
            )
            .await?;
            PinSet::Changed
        }
        PinChange::Change { role: None } => {
            tx.execute(
                "UPDATE staff SET pin_verifier = $2 WHERE name = $1",
                &[&name, &member.pin_verifier.as_str()],
            )
            .await?;
            PinSet::Changed
        }
        PinChange::Add(_) => {
            insert_member(&tx, &member).await?;
            PinSet::Added
        }
    };
    audit(&tx, now, actor, "set_pin", &format!("{name:?}")).await?;
    notify(&tx, STAFF_CHANGED).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Revokes a device by id or name: its token stops working in every process
/// and a counter's ticket key is marked revoked. Returns its name.
pub async fn revoke_device(
    url: &str,
    device: &str,
    actor: &str,
    now: Timestamp,
) -> Result<String, PgError> {
    let device = device.trim();
    let mut client = connect(url).await?;
    let tx = client.transaction().await?;
    // By id, else by name: the one in service, or (all revoked already) the
    // latest, so revoking again changes nothing.
    let by_id = match Uuid::parse_str(device) {
        Ok(id) => {
            tx.query_opt(
                "SELECT device_id, name, key_id FROM devices WHERE device_id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
        }
        Err(_) => None,
    };
    let named = match by_id {
        Some(_) => Vec::new(),
        None => {
            tx.query(
                "SELECT device_id, name, key_id, revoked_at IS NULL, role, enrolled_at FROM devices
                 WHERE name = $1 ORDER BY enrolled_at FOR UPDATE",
                &[&device],
            )
            .await?
        }
    };
    let in_service: Vec<_> = named.iter().filter(|r| r.get::<_, bool>(3)).collect();
    let row = match (&by_id, in_service.as_slice(), named.last()) {
        (Some(row), _, _) => row,
        (None, [one], _) => *one,
        (None, [], Some(last)) => last,
        (None, [], None) => return Err(PgError::Staff(format!("no device {device:?}"))),
        (None, several, _) => {
            let list: Vec<String> = several
                .iter()
                .map(|r| {
                    format!(
                        "{} ({}, enrolled {})",
                        r.get::<_, Uuid>(0),
                        r.get::<_, String>(4),
                        tessera_core::clock::from_ms(r.get(5))
                    )
                })
                .collect();
            return Err(PgError::Staff(format!(
                "{} devices in service are named {device:?}: {}; give the device id",
                several.len(),
                list.join(", ")
            )));
        }
    };
    let id: Uuid = row.get(0);
    let name: String = row.get(1);
    let key: Option<i32> = row.get(2);
    let now_ms = now.as_millisecond();
    tx.execute(
        "UPDATE devices SET revoked_at = COALESCE(revoked_at, $2) WHERE device_id = $1",
        &[&id, &now_ms],
    )
    .await?;
    if let Some(key) = key {
        tx.execute(
            "UPDATE signing_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE key_id = $1",
            &[&key, &now_ms],
        )
        .await?;
    }
    audit(
        &tx,
        now,
        actor,
        "revoke_device",
        &format!("{name:?} ({id})"),
    )
    .await?;
    notify(&tx, DEVICES_CHANGED).await?;
    tx.commit().await?;
    Ok(name)
}
