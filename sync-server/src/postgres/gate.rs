//! Gates on PostgreSQL: online redemption (one ticket, one entry, across
//! every process) and the merge of scans that gates made offline, where a
//! ticket admitted twice is recorded as a conflict naming both gates. The
//! rules and the times are the SQLite backend's (`sqlite::gate`, whose
//! module doc explains which clock an admission is ordered by); what
//! changes is who decides between two processes.
//!
//! Admitted once: the database decides, never a read in one process
//! followed by a write. An online scan inserts the ticket's `redemptions`
//! row with `ON CONFLICT (ticket_id) DO NOTHING`. When two processes insert
//! it at the same instant, PostgreSQL makes the second wait for the first
//! one's commit and then insert nothing: exactly one of them sees its row
//! come back and admits; the other reads the committed row and answers
//! where and when. An upload that must compare its scans with the recorded
//! first admission locks that row (`FOR UPDATE`) for the comparison, so two
//! uploads of one ticket on two processes merge one after the other.
//!
//! These run on connections of their own (`pool`), each call one short
//! transaction: a gate's scan does not wait behind a batch of holds. An
//! upload takes its tickets' rows in ticket order; a deadlock with another
//! upload (possible only through the same scan sent to two processes) runs
//! the call again.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use tessera_core::admission::{decide, EntryPolicy};
use tessera_core::api::devices::PublicKeys;
use tessera_core::api::gate::{RedeemResult, Redemption};
use tessera_core::api::gate_sync::GateSyncResponse;
use tessera_core::catalogue::Catalogue;
use tessera_core::clock::{from_ms, Clock};
use tessera_core::ids::new_id;
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::TicketClaims;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use super::schema::loggable;

use super::pool::{Pool, Pooled};
use crate::gates::{admitted, already_used, scan_id_reused, CheckedSync};
use crate::store::{DeviceInfo, Refusal, StoreError};

/// How often a call that lost a deadlock runs again before it is answered 503.
pub(super) const ATTEMPTS: u32 = 5;

/// Tickets of today and later that gates must refuse (voided at a counter
/// or cancelled online), for every gate sync (`$1` today's first slot):
/// through the partial index `tickets_refused_by_slot` (V6), which holds
/// those tickets only, not every ticket sold for the days ahead.
pub const VOIDED_TICKETS_SQL: &str = "SELECT ticket_id FROM tickets
 WHERE (voided_at IS NOT NULL OR cancelled_at IS NOT NULL) AND slot_id >= $1
 ORDER BY ticket_id";

pub(super) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// What a gate call needs besides the connection.
pub(super) struct GateEnv<'a> {
    pub catalogue: &'a Catalogue,
    pub tz: &'a TimeZone,
    pub clock: &'a Clock,
}

/// What ended one attempt at a call.
enum Attempt<T> {
    Done(Result<T, StoreError>),
    /// A deadlock or serialization failure: the transaction was rolled
    /// back, and the call (written to be re-run) may run again.
    Again(tokio_postgres::Error),
}

fn settle<T>(
    what: &'static str,
    result: Result<Result<T, StoreError>, tokio_postgres::Error>,
    attempt: u32,
) -> Attempt<T> {
    match result {
        Ok(answer) => Attempt::Done(answer),
        Err(e) if is_retryable(&e) && attempt < ATTEMPTS => Attempt::Again(e),
        Err(e) => Attempt::Done(Err(super::db_failure(what)(e))),
    }
}

async fn connection(pool: &Pool) -> Result<Pooled<'_>, StoreError> {
    pool.get().await.map_err(|e| {
        tracing::warn!(error = %e, "cannot reach PostgreSQL for a gate");
        StoreError::Unavailable
    })
}

/// Redeems a verified code (see [`redeem_once`]), again after a deadlock.
pub(super) async fn redeem(
    pool: &Pool,
    env: &GateEnv<'_>,
    gate: &DeviceInfo,
    claims: &TicketClaims,
    scan_id: Option<Uuid>,
    entry: EntryPolicy,
) -> Result<Redemption, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut client = connection(pool).await?;
        let now_ms = env.clock.now_ms();
        let result = redeem_once(&mut client, env, now_ms, gate, claims, scan_id, entry).await;
        match settle("redeeming a ticket", result, attempt) {
            Attempt::Done(answer) => return answer,
            Attempt::Again(e) => {
                tracing::debug!(error = %loggable(&e), attempt, "redeem: running again")
            }
        }
    }
}

/// Merges a gate's checked upload (see [`gate_sync_once`]), again after a
/// deadlock.
pub(super) async fn gate_sync(
    pool: &Pool,
    env: &GateEnv<'_>,
    gate: &DeviceInfo,
    checked: &CheckedSync,
    entry: EntryPolicy,
    keys: PublicKeys,
) -> Result<GateSyncResponse, StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut client = connection(pool).await?;
        let now_ms = env.clock.now_ms();
        let result =
            gate_sync_once(&mut client, env, now_ms, gate, checked, entry, keys.clone()).await;
        match settle("merging a gate's scans", result, attempt) {
            Attempt::Done(answer) => return answer,
            Attempt::Again(e) => {
                tracing::debug!(error = %loggable(&e), attempt, "gate sync: running again")
            }
        }
    }
}

/// One admission as the server records it.
#[derive(Clone, Debug)]
struct Admission {
    scan_id: Uuid,
    /// The time the server orders admissions by.
    at: i64,
    /// What the device said (offline scans only).
    device_at: Option<i64>,
    received_at: i64,
    gate_device: Uuid,
    gate_name: String,
    mode: &'static str,
}

/// The recorded first admission of a ticket, as far as ordering and the
/// conflict lines need it.
#[derive(Clone, Debug)]
struct First {
    scan_id: Uuid,
    at: i64,
    device_at: Option<i64>,
    gate_device: Uuid,
    gate_name: String,
}

impl Admission {
    /// Earlier first; the scan id breaks ties so every process agrees (the
    /// same order as SQLite's text ids: a UUID's bytes sort as its text).
    fn key(&self) -> (i64, Uuid) {
        (self.at, self.scan_id)
    }

    fn as_first(&self) -> First {
        First {
            scan_id: self.scan_id,
            at: self.at,
            device_at: self.device_at,
            gate_device: self.gate_device,
            gate_name: self.gate_name.clone(),
        }
    }
}

impl First {
    fn key(&self) -> (i64, Uuid) {
        (self.at, self.scan_id)
    }
}

/// Whether the ticket was voided at a counter or cancelled from "my
/// booking"; a code the server never issued (an unknown ticket) is judged
/// by its signature alone, as on SQLite.
async fn refused_ticket(tx: &Transaction<'_>, ticket: Uuid) -> Result<bool, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT voided_at IS NOT NULL OR cancelled_at IS NOT NULL FROM tickets WHERE ticket_id = $1",
            &[&ticket],
        )
        .await?;
    Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
}

/// How the recorded first admission is read.
#[derive(Clone, Copy)]
enum Lock {
    /// To answer "already used": waits for an upload merging this ticket,
    /// so the answer names the admission the upload leaves first.
    Share,
    /// To merge an upload into it: one merge of a ticket at a time.
    Update,
}

async fn recorded_first(
    tx: &Transaction<'_>,
    ticket: Uuid,
    lock: Lock,
) -> Result<Option<First>, tokio_postgres::Error> {
    let sql = match lock {
        Lock::Update => {
            "SELECT scan_id, redeemed_at, device_at, gate_device, gate_name FROM redemptions
             WHERE ticket_id = $1 FOR UPDATE"
        }
        Lock::Share => {
            "SELECT scan_id, redeemed_at, device_at, gate_device, gate_name FROM redemptions
             WHERE ticket_id = $1 FOR SHARE"
        }
    };
    Ok(tx.query_opt(sql, &[&ticket]).await?.map(|r| First {
        // Every row written here has one; a missing one sorts first, as
        // SQLite's empty text does.
        scan_id: r.get::<_, Option<Uuid>>(0).unwrap_or_default(),
        at: r.get(1),
        device_at: r.get(2),
        gate_device: r.get(3),
        gate_name: r.get(4),
    }))
}

/// Inserts the ticket's redemption unless one exists (whichever process
/// inserts first wins; the others wait for its commit and insert nothing).
async fn claim_redemption(
    tx: &Transaction<'_>,
    claims: &TicketClaims,
    a: &Admission,
) -> Result<bool, tokio_postgres::Error> {
    let inserted = tx
        .query_opt(
            "INSERT INTO redemptions (ticket_id, slot_id, admits, redeemed_at, device_at, received_at,
                 gate_device, gate_name, mode, scan_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (ticket_id) DO NOTHING RETURNING 1",
            &[
                &claims.ticket_id,
                &claims.slot.to_string(),
                &i32::from(claims.admits),
                &a.at,
                &a.device_at,
                &a.received_at,
                &a.gate_device,
                &a.gate_name,
                &a.mode,
                &a.scan_id,
            ],
        )
        .await?;
    Ok(inserted.is_some())
}

/// Records a scan; false if its id was taken meanwhile (by a commit of
/// another process, which PostgreSQL waited for).
async fn insert_scan(
    tx: &Transaction<'_>,
    claims: &TicketClaims,
    key_id: i32,
    a: &Admission,
) -> Result<bool, tokio_postgres::Error> {
    let n = tx
        .execute(
            "INSERT INTO scans (scan_id, ticket_id, slot_id, product_id, admits, key_id, gate_device,
                 gate_name, scanned_at, mode, received_at, device_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (scan_id) DO NOTHING",
            &[
                &a.scan_id,
                &claims.ticket_id,
                &claims.slot.to_string(),
                &claims.product_id,
                &i32::from(claims.admits),
                &key_id,
                &a.gate_device,
                &a.gate_name,
                &a.at,
                &a.mode,
                &a.received_at,
                &a.device_at,
            ],
        )
        .await?;
    Ok(n == 1)
}

/// The signer's key id as the `scans` table keeps it. Key ids are handed
/// out from an `integer` column, so a verified code's always fits; one
/// that does not names no key of ours.
fn key_id(claims: &TicketClaims) -> Result<i32, StoreError> {
    i32::try_from(claims.key_id).map_err(|_| {
        StoreError::from(Refusal::Invalid(format!(
            "ticket key id {} is out of range",
            claims.key_id
        )))
    })
}

/// The scan with this id, if the server has it: which ticket, which gate,
/// when, and the gate's name.
async fn known_scan(
    tx: &Transaction<'_>,
    scan_id: Uuid,
) -> Result<Option<(Uuid, Uuid, i64, String)>, tokio_postgres::Error> {
    Ok(tx
        .query_opt(
            "SELECT ticket_id, gate_device, scanned_at, gate_name FROM scans WHERE scan_id = $1",
            &[&scan_id],
        )
        .await?
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))))
}

async fn insert_conflict(
    tx: &Transaction<'_>,
    claims: &TicketClaims,
    first: &First,
    second: &First,
    now_ms: i64,
) -> Result<u32, tokio_postgres::Error> {
    let n = tx
        .execute(
            "INSERT INTO gate_conflicts (ticket_id, slot_id, first_scan, first_gate, first_at, first_device_at,
                 second_scan, second_gate, second_at, second_device_at, detected_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (ticket_id, second_scan) DO NOTHING",
            &[
                &claims.ticket_id,
                &claims.slot.to_string(),
                &first.scan_id,
                &first.gate_name,
                &first.at,
                &first.device_at,
                &second.scan_id,
                &second.gate_name,
                &second.at,
                &second.device_at,
                &now_ms,
            ],
        )
        .await?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Redeems a verified code: catalogue, voided, day and window (core's
/// `decide`), then once per ticket across every gate and every process.
async fn redeem_once(
    client: &mut Client,
    env: &GateEnv<'_>,
    now_ms: i64,
    gate: &DeviceInfo,
    claims: &TicketClaims,
    scan_id: Option<Uuid>,
    entry: EntryPolicy,
) -> Result<Result<Redemption, StoreError>, tokio_postgres::Error> {
    let key_id = match key_id(claims) {
        Ok(k) => k,
        Err(e) => return Ok(Err(e)),
    };
    let tx = client.transaction().await?;
    let mut answer = admitted(claims);
    if let Some(id) = scan_id {
        if let Some((ticket, device, at, name)) = known_scan(&tx, id).await? {
            // The same scan sent again (a retry after a lost answer, maybe
            // to another process) is the same admission: the first answer.
            if ticket == claims.ticket_id && device == gate.device_id.0 {
                answer.first_redeemed_at = Some(from_ms(at));
                answer.first_redeemed_by = Some(name);
                return Ok(Ok(answer));
            }
            return Ok(Err(scan_id_reused(id)));
        }
    }
    let voided = refused_ticket(&tx, claims.ticket_id).await?;
    let now = from_ms(now_ms);
    if let Err(refusal) = decide(claims, env.catalogue, voided, env.tz, now, entry) {
        answer.result = RedeemResult::Denied;
        answer.reason = Some(refusal.reason);
        answer.message = refusal.message;
        metrics::counter!("tessera_redemptions_total", "result" => refusal.reason.as_str())
            .increment(1);
        return Ok(Ok(answer));
    }
    let admission = Admission {
        scan_id: scan_id.unwrap_or_else(new_id),
        at: now_ms,
        device_at: None,
        received_at: now_ms,
        gate_device: gate.device_id.0,
        gate_name: gate.name.clone(),
        mode: "online",
    };
    if !claim_redemption(&tx, claims, &admission).await? {
        let Some(first) = recorded_first(&tx, claims.ticket_id, Lock::Share).await? else {
            // Inserted by nobody yet present: only a row deleted in
            // between, which nothing does. Answer as a busy server would.
            return Ok(Err(StoreError::Unavailable));
        };
        if first.scan_id == admission.scan_id && first.gate_device == gate.device_id.0 {
            // This very scan, sent to two processes at once, won on the other.
            answer.first_redeemed_at = Some(from_ms(first.at));
            answer.first_redeemed_by = Some(first.gate_name);
            return Ok(Ok(answer));
        }
        already_used(&mut answer, first.at, first.gate_name, env.tz);
        return Ok(Ok(answer));
    }
    if !insert_scan(&tx, claims, key_id, &admission).await? {
        // Its id was taken meanwhile by another admission: nothing stands.
        return Ok(Err(scan_id_reused(admission.scan_id)));
    }
    tx.commit().await?;
    answer.first_redeemed_at = Some(now);
    answer.first_redeemed_by = Some(gate.name.clone());
    metrics::counter!("tessera_redemptions_total", "result" => "admitted").increment(1);
    Ok(Ok(answer))
}

/// Records new admissions of one ticket and merges them with the recorded
/// first: the earliest admission is the ticket's redemption, every other a
/// conflict naming it. Returns how many conflicts it created.
async fn merge_admissions(
    tx: &Transaction<'_>,
    claims: &TicketClaims,
    fresh: &[Admission],
    now_ms: i64,
) -> Result<u32, tokio_postgres::Error> {
    let Some(earliest) = fresh.iter().min_by_key(|a| a.key()) else {
        return Ok(0);
    };
    let mut conflicts = 0u32;
    let first = if claim_redemption(tx, claims, earliest).await? {
        earliest.as_first()
    } else {
        // Locked: an online scan or another upload of this ticket on any
        // process waits until this merge commits.
        match recorded_first(tx, claims.ticket_id, Lock::Update).await? {
            Some(old) if old.key() <= earliest.key() => old,
            old => {
                let new_first = earliest.as_first();
                tx.execute(
                    "UPDATE redemptions SET redeemed_at = $2, device_at = $3, received_at = $4,
                         gate_device = $5, gate_name = $6, mode = $7, scan_id = $8
                     WHERE ticket_id = $1",
                    &[
                        &claims.ticket_id,
                        &earliest.at,
                        &earliest.device_at,
                        &earliest.received_at,
                        &earliest.gate_device,
                        &earliest.gate_name,
                        &earliest.mode,
                        &earliest.scan_id,
                    ],
                )
                .await?;
                if let Some(old) = old {
                    // An earlier admission turned up: the conflicts recorded
                    // so far now name it as first, and the old first is a second.
                    tx.execute(
                        "UPDATE gate_conflicts SET first_scan = $2, first_gate = $3, first_at = $4,
                             first_device_at = $5
                         WHERE ticket_id = $1",
                        &[
                            &claims.ticket_id,
                            &new_first.scan_id,
                            &new_first.gate_name,
                            &new_first.at,
                            &new_first.device_at,
                        ],
                    )
                    .await?;
                    conflicts += insert_conflict(tx, claims, &new_first, &old, now_ms).await?;
                }
                new_first
            }
        }
    };
    for a in fresh {
        if a.scan_id != first.scan_id {
            conflicts += insert_conflict(tx, claims, &first, &a.as_first(), now_ms).await?;
        }
    }
    if conflicts > 0 {
        tracing::warn!(ticket = %claims.ticket_id, conflicts, "ticket admitted more than once");
        metrics::counter!("tessera_gate_conflicts_total").increment(u64::from(conflicts));
    }
    Ok(conflicts)
}

/// Accepts a gate's offline scans (checked by `gates::check_sync`) and
/// hands it what it needs offline. A refused body changes nothing: the
/// transaction is dropped.
async fn gate_sync_once(
    client: &mut Client,
    env: &GateEnv<'_>,
    now_ms: i64,
    gate: &DeviceInfo,
    checked: &CheckedSync,
    entry: EntryPolicy,
    keys: PublicKeys,
) -> Result<Result<GateSyncResponse, StoreError>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let ids: Vec<Uuid> = checked.scans.iter().map(|s| s.scan_id).collect();
    let mut known: BTreeMap<Uuid, (Uuid, Uuid)> = BTreeMap::new();
    for r in tx
        .query(
            "SELECT scan_id, ticket_id, gate_device FROM scans WHERE scan_id = ANY($1)",
            &[&ids],
        )
        .await?
    {
        known.insert(r.get(0), (r.get(1), r.get(2)));
    }
    // Grouped by ticket, in ticket order: every upload locks tickets in the
    // same order, so two uploads never wait on each other in a circle.
    let mut fresh: BTreeMap<Uuid, (&TicketClaims, Vec<Admission>)> = BTreeMap::new();
    for scan in &checked.scans {
        if let Some((ticket, by)) = known.get(&scan.scan_id) {
            if *ticket == scan.claims.ticket_id && *by == gate.device_id.0 {
                continue; // uploaded before (or redeemed online with this id)
            }
            return Ok(Err(scan_id_reused(scan.scan_id)));
        }
        fresh
            .entry(scan.claims.ticket_id)
            .or_insert_with(|| (&scan.claims, Vec::new()))
            .1
            .push(Admission {
                scan_id: scan.scan_id,
                at: scan.at,
                device_at: Some(scan.device_at),
                received_at: checked.received_at,
                gate_device: gate.device_id.0,
                gate_name: gate.name.clone(),
                mode: "offline",
            });
    }
    let mut conflicts = 0u32;
    for (claims, admissions) in fresh.into_values() {
        let key_id = match key_id(claims) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let mut stored = Vec::with_capacity(admissions.len());
        for a in admissions {
            if insert_scan(&tx, claims, key_id, &a).await? {
                stored.push(a);
                continue;
            }
            // The same upload reached another process, which committed it
            // first: this scan is known now, as the same admission or not.
            match known_scan(&tx, a.scan_id).await? {
                Some((ticket, by, _, _))
                    if ticket == claims.ticket_id && by == gate.device_id.0 => {}
                _ => return Ok(Err(scan_id_reused(a.scan_id))),
            }
        }
        conflicts = conflicts.saturating_add(merge_admissions(&tx, claims, &stored, now_ms).await?);
    }
    let today = env.tz.to_datetime(from_ms(now_ms)).date();
    let from = SlotId::new(today, 0)
        .map_err(|e| StoreError::Storage(e.to_string()))
        .map(|s| s.to_string());
    let from = match from {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    let voided_tickets: Vec<Uuid> = tx
        .query(VOIDED_TICKETS_SQL, &[&from])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let version = tx
        .query_opt(
            "SELECT value FROM meta WHERE key = 'catalogue_version'",
            &[],
        )
        .await?
        .and_then(|r| r.get::<_, String>(0).parse::<u64>().ok());
    let Some(version) = version else {
        return Ok(Err(StoreError::Storage(
            "the catalogue version is missing or unreadable".into(),
        )));
    };
    tx.commit().await?;
    Ok(Ok(GateSyncResponse {
        server_time: from_ms(now_ms),
        scans_acked: checked.acked.clone(),
        conflicts,
        catalogue_version: version,
        catalogue: (checked.catalogue_version != version).then(|| env.catalogue.clone()),
        keys,
        voided_tickets,
        entry,
    }))
}
