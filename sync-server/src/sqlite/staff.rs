//! Staff secrets in the database: PIN verifiers, the supervisor-PIN lockout
//! (stored, so a restart does not hand a thief five fresh guesses) and the
//! one-use approvals a counter's void must carry.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tessera_core::api::approvals::{Approval, ApprovalRequest};
use tessera_core::api::sync::VoidRecord;
use tessera_core::staff::{
    for_counters, minutes_left, pin_change, Attempts, PinChange, PinVerifier, StaffFixture,
    StaffMember, StaffRole,
};
use tessera_core::upload::{check_void_approval, StoredApproval};
use uuid::Uuid;

use super::admin::AdminError;
use super::sql::Text;
use super::writer::{Ctx, Fatal};
use crate::admin::PinSet;
use crate::store::{Refusal, StoreError};

pub use crate::secrets::{member_from_fixture, pin_cost};

pub fn insert(conn: &Connection, member: &StaffMember) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO staff (name, role, pin_salt, pin_hash, pin_verifier) VALUES (?1, ?2, '', '', ?3)",
        params![
            member.name,
            member.role.as_str(),
            member.pin_verifier.as_str()
        ],
    )?;
    Ok(())
}

/// (what counters get: cashiers, what the server checks: supervisors).
pub(crate) fn load(conn: &Connection) -> rusqlite::Result<(Vec<StaffMember>, Vec<StaffMember>)> {
    let mut stmt = conn.prepare("SELECT name, role, pin_verifier FROM staff ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    let mut all = Vec::new();
    for row in rows {
        let (name, role, verifier) = row?;
        let role = if role == "supervisor" {
            StaffRole::Supervisor
        } else {
            StaffRole::Cashier
        };
        match verifier.as_deref().map(PinVerifier::parse) {
            Some(Ok(pin_verifier)) => all.push(StaffMember {
                name,
                role,
                pin_verifier,
            }),
            // Names only: a verifier never goes to the log.
            _ => tracing::warn!(
                staff = %name,
                "no usable PIN verifier (a database from before argon2id PINs?): this member cannot sign in until the PIN is set again"
            ),
        }
    }
    let supervisors = all.iter().filter(|s| s.may_approve()).cloned().collect();
    Ok((for_counters(&all), supervisors))
}

fn attempts_of(tx: &Transaction<'_>, device: &str) -> rusqlite::Result<Attempts> {
    Ok(tx
        .prepare_cached(
            "SELECT failures, last_at, locked_until FROM pin_attempts WHERE device_id = ?1",
        )?
        .query_row(params![device], |r| {
            Ok(Attempts {
                failures: r.get(0)?,
                last_at_ms: r.get(1)?,
                locked_until_ms: r.get(2)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// Counts a supervisor-PIN attempt from `device` before the PIN is checked,
/// and commits it, so neither concurrent guesses nor a restart escape it.
pub(crate) fn begin_attempt(
    ctx: &mut Ctx<'_>,
    device: Uuid,
) -> Result<Result<(), StoreError>, Fatal> {
    let dev = device.to_string();
    let before = attempts_of(ctx.tx, &dev)?;
    match before.begin(ctx.now_ms) {
        Err(left_ms) => Ok(Err(Refusal::TooManyAttempts(format!(
            "too many wrong supervisor PINs from this device; try again in {} min",
            minutes_left(left_ms)
        ))
        .into())),
        Ok(next) => {
            if next.locked_until_ms != 0 && before.locked_until_ms == 0 {
                tracing::warn!(%device, "supervisor PIN locked after repeated wrong guesses");
            }
            ctx.tx
                .prepare_cached(
                    "INSERT INTO pin_attempts (device_id, failures, last_at, locked_until) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (device_id) DO UPDATE SET failures = excluded.failures,
                         last_at = excluded.last_at, locked_until = excluded.locked_until",
                )?
                .execute(params![dev, next.failures, next.last_at_ms, next.locked_until_ms])?;
            Ok(Ok(()))
        }
    }
}

/// The right PIN: the device's count starts again.
pub(crate) fn attempt_succeeded(ctx: &mut Ctx<'_>, device: Uuid) -> Result<(), Fatal> {
    ctx.tx
        .prepare_cached("DELETE FROM pin_attempts WHERE device_id = ?1")?
        .execute(params![Text(&device)])?;
    Ok(())
}

/// Records a verified supervisor's approval for `device`.
pub(crate) fn create_approval(
    ctx: &mut Ctx<'_>,
    device: Uuid,
    request: ApprovalRequest,
    approved_by: String,
) -> Result<Approval, Fatal> {
    attempt_succeeded(ctx, device)?;
    let approval_id = Uuid::now_v7();
    ctx.tx
        .prepare_cached(
            "INSERT INTO approvals (approval_id, device_id, action, subject, approved_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            Text(&approval_id),
            Text(&device),
            request.action(),
            request.subject().to_string(),
            approved_by,
            ctx.now_ms
        ])?;
    Ok(Approval {
        approval_id,
        request,
        approved_by,
        approved_at: tessera_core::clock::from_ms(ctx.now_ms),
    })
}

/// Whether `v`, uploaded by `device`, may be applied: loads the approval it
/// names and asks core's rule (`check_void_approval`). `Ok(Ok(name))`: the
/// approver as the server knows them; `Ok(Err(reason))`: the void must not
/// be applied.
pub(crate) fn check_void(
    tx: &Transaction<'_>,
    device: Uuid,
    v: &VoidRecord,
) -> Result<Result<String, String>, Fatal> {
    let stored = match v.approval_id {
        None => None,
        Some(approval) => tx
            .prepare_cached(
                "SELECT device_id, action, subject, approved_by, used_by FROM approvals WHERE approval_id = ?1",
            )?
            .query_row(params![Text(&approval)], |r| {
                // A row whose ids do not read (hand-edited) approves nothing:
                // this void is refused, the rest of the upload goes on.
                let id = |i: usize| -> rusqlite::Result<Option<Uuid>> {
                    Ok(r.get::<_, Option<String>>(i)?
                        .and_then(|t| Uuid::parse_str(&t).ok()))
                };
                Ok(match (id(0)?, id(2)?) {
                    (Some(device_id), Some(subject)) => Some(StoredApproval {
                        device_id,
                        action: r.get(1)?,
                        subject,
                        approved_by: r.get(3)?,
                        used_by: id(4)?,
                    }),
                    _ => None,
                })
            })
            .optional()?
            .flatten(),
    };
    Ok(check_void_approval(device, v, stored.as_ref()))
}

/// Marks the approval used by this void (after [`check_void`] passed) and
/// names the supervisor it records.
pub(crate) fn use_for_void(tx: &Transaction<'_>, v: &VoidRecord) -> Result<Option<String>, Fatal> {
    let Some(approval) = v.approval_id else {
        return Ok(None);
    };
    tx.prepare_cached(
        "UPDATE approvals SET used_by = ?2 WHERE approval_id = ?1 AND used_by IS NULL",
    )?
    .execute(params![Text(&approval), Text(&v.void_id)])?;
    Ok(tx
        .prepare_cached("SELECT approved_by FROM approvals WHERE approval_id = ?1")?
        .query_row(params![Text(&approval)], |r| r.get(0))
        .optional()?)
}

/// Sets `name`'s PIN (adding them with `role` if new), from an operator's
/// command; `core::staff::pin_change` decides (a PIN another member already
/// has is refused: PINs identify staff on their own, and a cashier's
/// verifier sits on every counter).
pub fn set_pin(
    db: &std::path::Path,
    name: &str,
    role: Option<StaffRole>,
    pin: &str,
    actor: &str,
    now: jiff::Timestamp,
) -> Result<PinSet, AdminError> {
    let name = name.trim();
    let pin = pin.trim();
    let member = member_from_fixture(
        &StaffFixture {
            name: name.to_string(),
            role: role.unwrap_or(StaffRole::Cashier),
            pin: pin.to_string(),
        },
        pin_cost(),
    )
    .map_err(|e| AdminError::Staff(e.to_string()))?;
    let mut conn = super::schema::open(db)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let on_staff: Vec<(String, Option<PinVerifier>)> = tx
        .prepare("SELECT name, pin_verifier FROM staff")?
        .query_map([], |r| {
            let verifier: Option<String> = r.get(1)?;
            Ok((
                r.get(0)?,
                verifier.and_then(|v| PinVerifier::parse(&v).ok()),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let change =
        pin_change(name, role, pin, &on_staff).map_err(|e| AdminError::Staff(e.to_string()))?;
    let outcome = match change {
        PinChange::Change { role: Some(role) } => {
            tx.execute(
                "UPDATE staff SET pin_verifier = ?2, role = ?3, pin_salt = '', pin_hash = '' WHERE name = ?1",
                params![name, member.pin_verifier.as_str(), role.as_str()],
            )?;
            PinSet::Changed
        }
        PinChange::Change { role: None } => {
            tx.execute(
                "UPDATE staff SET pin_verifier = ?2, pin_salt = '', pin_hash = '' WHERE name = ?1",
                params![name, member.pin_verifier.as_str()],
            )?;
            PinSet::Changed
        }
        PinChange::Add(_) => {
            insert(&tx, &member)?;
            PinSet::Added
        }
    };
    super::admin::audit(&tx, now, actor, "set_pin", &format!("{name:?}"))?;
    tx.commit()?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrading_wipes_the_old_fast_hashes_and_keeps_no_pin_usable() {
        let mut conn = Connection::open_in_memory().unwrap();
        let migrations = super::super::schema::migrations();
        // The staff table as version 4 knew it, with a SHA-256 hash.
        migrations.to_version(&mut conn, 4).unwrap();
        conn.execute(
            "INSERT INTO staff (name, role, pin_salt, pin_hash) VALUES ('Inès', 'supervisor', '00ff', 'abcdef')",
            [],
        )
        .unwrap();
        migrations.to_latest(&mut conn).unwrap();
        let (salt, hash, verifier): (String, String, Option<String>) = conn
            .query_row(
                "SELECT pin_salt, pin_hash, pin_verifier FROM staff",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((salt.as_str(), hash.as_str(), verifier), ("", "", None));
        let (cashiers, supervisors) = load(&conn).unwrap();
        assert!(cashiers.is_empty() && supervisors.is_empty());

        let member = member_from_fixture(
            &StaffFixture {
                name: "Camille".into(),
                role: StaffRole::Cashier,
                pin: "1111".into(),
            },
            tessera_core::staff::KdfCost::INSECURE_TEST_ONLY,
        )
        .unwrap();
        insert(&conn, &member).unwrap();
        let (cashiers, supervisors) = load(&conn).unwrap();
        assert_eq!(cashiers, vec![member]);
        assert!(supervisors.is_empty());
    }
}
