//! What both backends' gates share: the checks of an offline gate's upload
//! that need no database (size, signatures, each scan against its code,
//! duplicates inside one body, the gate's clock error), and the answers a
//! gate reads, so that SQLite and PostgreSQL say the same thing about the
//! same scan.

use std::collections::HashMap;

use jiff::tz::TimeZone;
use tessera_core::admission::{self, DenyReason};
use tessera_core::api::gate::{RedeemResult, Redemption};
use tessera_core::api::gate_sync::{GateSyncRequest, ScanRecord};
use tessera_core::clock::from_ms;
use tessera_core::limits;
use tessera_core::ticket_code::{decode_unverified, CodeError, KeyRing, TicketClaims};
use uuid::Uuid;

use crate::store::{DeviceInfo, Refusal, StoreError};

/// An offline scan that passed every check that needs no database.
pub(crate) struct CheckedScan {
    pub scan_id: Uuid,
    pub claims: TicketClaims,
    pub device_at: i64,
    /// The server's reading of when it happened.
    pub at: i64,
}

/// A gate sync body, checked before any storage is touched.
pub(crate) struct CheckedSync {
    pub catalogue_version: u64,
    pub received_at: i64,
    pub scans: Vec<CheckedScan>,
    pub acked: Vec<Uuid>,
}

/// Checks a gate's upload before it reaches a backend: size, signatures
/// (each distinct code verified once), each scan against its code, and
/// duplicate scan ids inside the body. `received_at` is the server's clock
/// when the body arrived.
pub(crate) fn check_sync(
    ring: &KeyRing,
    gate: &DeviceInfo,
    request: GateSyncRequest,
    received_at: i64,
) -> Result<CheckedSync, StoreError> {
    if request.device_id != gate.device_id.0 {
        return Err(Refusal::Forbidden(format!(
            "this token belongs to device {}, but the body is for {}",
            gate.device_id, request.device_id
        ))
        .into());
    }
    limits::count("scans", request.scans.len(), limits::SCANS_PER_SYNC)
        .map_err(|e| Refusal::Invalid(e.to_string()))?;
    // How far the gate's clock is ahead of ours (behind if negative).
    let skew = admission::clock_skew_ms(request.sent_at.map(|t| t.as_millisecond()), received_at);
    let mut seen: HashMap<Uuid, &ScanRecord> = HashMap::with_capacity(request.scans.len());
    let mut verified: HashMap<&str, TicketClaims> = HashMap::new();
    let mut scans = Vec::with_capacity(request.scans.len());
    let mut acked = Vec::with_capacity(request.scans.len());
    for scan in &request.scans {
        if let Some(earlier) = seen.get(&scan.scan_id) {
            // The same admission listed twice is one admission; one nonce
            // for two different admissions is a broken gate.
            if *earlier == scan {
                continue;
            }
            return Err(Refusal::Invalid(format!(
                "scan_id {} appears twice in this body for different admissions",
                scan.scan_id
            ))
            .into());
        }
        seen.insert(scan.scan_id, scan);
        let n = limits::chars(&scan.code);
        if n > limits::TICKET_CODE_CHARS {
            return Err(Refusal::Invalid(format!(
                "scan {}: code is {n} characters, at most {}",
                scan.scan_id,
                limits::TICKET_CODE_CHARS
            ))
            .into());
        }
        let claims = match verified.get(scan.code.as_str()) {
            Some(c) => c.clone(),
            None => {
                let c = verify_scanned(ring, &scan.code).map_err(|e| {
                    StoreError::from(Refusal::Invalid(format!("scan {}: {e}", scan.scan_id)))
                })?;
                verified.insert(scan.code.as_str(), c.clone());
                c
            }
        };
        if claims.ticket_id != scan.ticket_id || claims.slot != scan.slot_id {
            return Err(Refusal::Invalid(format!(
                "scan {} does not match its ticket code",
                scan.scan_id
            ))
            .into());
        }
        let device_at = scan.scanned_at.as_millisecond();
        // It cannot have happened after we received it.
        let at = admission::scan_time_ms(device_at, skew, received_at);
        acked.push(scan.scan_id);
        scans.push(CheckedScan {
            scan_id: scan.scan_id,
            claims,
            device_at,
            at,
        });
    }
    Ok(CheckedSync {
        catalogue_version: request.catalogue_version,
        received_at,
        scans,
        acked,
    })
}

/// A code an offline gate admitted: a signer revoked since is still an entry
/// that happened (the gate could not know), so only the signature must hold.
fn verify_scanned(ring: &KeyRing, code: &str) -> Result<TicketClaims, CodeError> {
    match ring.verify(code) {
        Ok(c) => Ok(c),
        // `verify` reports a revoked key only after the signature checked out.
        Err(CodeError::RevokedKey(_)) => decode_unverified(code).map(|(c, _, _)| c),
        Err(e) => Err(e),
    }
}

/// The answer to a code that admits, before anything is decided.
pub(crate) fn admitted(claims: &TicketClaims) -> Redemption {
    Redemption {
        result: RedeemResult::Admitted,
        reason: None,
        message: format!("Admit {}", claims.admits),
        ticket_id: Some(claims.ticket_id),
        product_id: Some(claims.product_id.clone()),
        slot_id: Some(claims.slot),
        admits: Some(claims.admits),
        first_redeemed_at: None,
        first_redeemed_by: None,
    }
}

/// Turns `answer` into "already used", naming where and when (the
/// museum's local time) the ticket was first admitted.
pub(crate) fn already_used(
    answer: &mut Redemption,
    first_at: i64,
    first_gate: String,
    tz: &TimeZone,
) {
    answer.result = RedeemResult::Denied;
    answer.reason = Some(DenyReason::AlreadyUsed);
    answer.message = format!(
        "Already used at {} by {}",
        from_ms(first_at).to_zoned(tz.clone()).strftime("%H:%M:%S"),
        first_gate
    );
    answer.first_redeemed_at = Some(from_ms(first_at));
    answer.first_redeemed_by = Some(first_gate);
    metrics::counter!("tessera_redemptions_total", "result" => "already_used").increment(1);
}

/// The message for a scan id already recorded for another admission.
pub(crate) fn scan_id_reused(scan_id: Uuid) -> StoreError {
    StoreError::from(Refusal::Conflict(format!(
        "scan_id {scan_id} is already recorded for another admission; send a new scan_id for every scan"
    )))
}
