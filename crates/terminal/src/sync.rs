//! The counter's side of `POST /v1/sync`: what to send (the outbox, lease
//! reports, wants, own tallies, closed shifts) and how to fold the answer in
//! (acknowledgements, lease grants and recalls, catalogue, live availability).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tessera_core::api::sync::{
    ActorTally, LeaseReport, LeaseWant, OpenShift, Payment, PaymentMethod, SaleRecord, SoldTicket,
    SyncRequest, SyncResponse, VoidRecord,
};
use tessera_core::api::ErrorBody;
use tessera_core::clock::from_ms;
use tessera_core::counter_lease::CounterLease;
use tessera_core::money::{Currency, Money};
use tessera_core::pricing::PricedLine;
use tessera_core::slot::SlotId;
use uuid::Uuid;

use crate::error::TerminalError;
use crate::local::{self, keys, Identity};
use crate::sales::{lease_for, lease_row, parse_slot, parse_uuid, store_lease, LEASE_COLUMNS};
use crate::shifts;

fn bad_column<E: std::error::Error + Send + Sync + 'static>(i: usize, e: E) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

/// How long a refused sale's need for places is asked for.
const WANT_TTL_MS: i64 = 60_000;

/// Most sales per round; a counter back from a long outage drains in rounds.
pub(crate) const BATCH: usize = 500;

pub(crate) fn acked_seq(conn: &Connection) -> Result<u64, TerminalError> {
    Ok(local::get::<u64>(conn, keys::ACKED_SEQ)?.unwrap_or(0))
}

/// Unsettled leases whose slot's entry window ended by `?1`.
pub(crate) const CLOSED_UNSETTLED: &str = "settled = 0
    AND EXISTS (SELECT 1 FROM slots s WHERE s.slot_id = leases.slot_id AND s.ends_at <= ?1)";

/// Gives back what is unsold in leases whose entry window is over: nobody can
/// sell those places any more, and the server's books should say so.
///
/// Driven from the unsettled leases (`leases_unsettled`, a handful) with a
/// lookup of each one's slot: written as `slot_id IN (SELECT … FROM slots
/// WHERE ends_at <= ?)`, SQLite built the list of every slot that ever ended
/// (the counter keeps every slot it was told of) and probed the leases with
/// each, at every sync, so a sync cost grew with the counter's days.
fn settle_closed_slots(conn: &Connection, now_ms: i64) -> Result<(), TerminalError> {
    let over = conn
        .prepare_cached(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE {CLOSED_UNSETTLED}"
        ))?
        .query_map(params![now_ms], lease_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for mut lease in over {
        if lease.give_back_unsold() > 0 {
            store_lease(conn, &lease)?;
        }
    }
    Ok(())
}

/// One sync's body. Everything in it is live: sales and voids not yet
/// acknowledged, leases not yet settled with the server, tallies of today's
/// and later slots. Its size does not grow with the days behind the counter.
pub(crate) fn build_request(
    conn: &mut Connection,
    identity: &Identity,
    now: Timestamp,
    today: jiff::civil::Date,
) -> Result<SyncRequest, TerminalError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    settle_closed_slots(&tx, now.as_millisecond())?;
    let acked = acked_seq(&tx)?;
    let mut sales = outbox_sales(&tx, acked)?;
    attach_tickets(&tx, &mut sales)?;
    let max_sent = sales.last().map(|s| s.terminal_seq).unwrap_or(acked);
    let voids = unsent_voids(&tx, max_sent)?;
    let leases = live_leases(&tx)?;
    let wants = wants(&tx, now, today)?;
    let first_live = SlotId::new(today, 0).map_err(|e| TerminalError::Storage(e.to_string()))?;
    let own_tallies = own_tallies_since(&tx, max_sent, first_live)?;
    let shifts = shifts::unsent(&tx)?;
    let last_seq: u64 = tx.query_row(
        "SELECT COALESCE(MAX(terminal_seq), 0) FROM sales",
        [],
        |r| r.get(0),
    )?;
    let open_shift = shifts::current(&tx)?.map(|s| OpenShift {
        shift_id: s.shift_id,
        cashier: s.cashier,
        opened_at: s.opened_at,
        float: s.float,
    });
    let catalogue_version = local::get::<u64>(&tx, keys::CATALOGUE_VERSION)?.unwrap_or(0);
    tx.commit()?;
    Ok(SyncRequest {
        device_id: identity.device_id,
        catalogue_version,
        sales,
        voids,
        leases,
        wants,
        own_tallies,
        shifts,
        last_seq,
        open_shift,
    })
}

fn payment_method(text: &str) -> PaymentMethod {
    if text == "card" {
        PaymentMethod::Card
    } else {
        PaymentMethod::Cash
    }
}

/// The outbox: sales after `acked`, oldest first, one batch at most.
fn outbox_sales(conn: &Connection, acked: u64) -> Result<Vec<SaleRecord>, TerminalError> {
    let mut stmt = conn.prepare_cached(
        "SELECT sale_id, terminal_seq, lease_id, slot_id, shift_id, cashier, created_at, lines, total, currency,
                admissions, payment_method, tendered, change, catalogue_version
         FROM sales WHERE terminal_seq > ?1 ORDER BY terminal_seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![acked, BATCH as i64], |r| {
        let lines: Vec<PricedLine> =
            serde_json::from_str(&r.get::<_, String>(7)?).map_err(|e| bad_column(7, e))?;
        let currency = Currency::new(&r.get::<_, String>(9)?).map_err(|e| bad_column(9, e))?;
        let total: i64 = r.get(8)?;
        Ok(SaleRecord {
            sale_id: parse_uuid(&r.get::<_, String>(0)?)?,
            terminal_seq: r.get(1)?,
            lease_id: parse_uuid(&r.get::<_, String>(2)?)?,
            slot_id: parse_slot(&r.get::<_, String>(3)?)?,
            shift_id: parse_uuid(&r.get::<_, String>(4)?)?,
            cashier: r.get(5)?,
            created_at: from_ms(r.get(6)?),
            lines,
            total: Money::new(total, currency),
            admissions: r.get(10)?,
            payment: Payment {
                method: payment_method(&r.get::<_, String>(11)?),
                amount: total,
                tendered: r.get(12)?,
                change: r.get(13)?,
            },
            tickets: Vec::new(),
            catalogue_version: r.get(14)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn attach_tickets(conn: &Connection, sales: &mut [SaleRecord]) -> Result<(), TerminalError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ticket_id, product_id, admits, code FROM tickets WHERE sale_id = ?1 ORDER BY rowid",
    )?;
    for sale in sales {
        sale.tickets = stmt
            .query_map(params![sale.sale_id.to_string()], |r| {
                Ok(SoldTicket {
                    ticket_id: parse_uuid(&r.get::<_, String>(0)?)?,
                    product_id: r.get(1)?,
                    admits: r.get(2)?,
                    code: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    Ok(())
}

/// Voids not yet acknowledged whose sale goes (or went) up no later than
/// this round.
fn unsent_voids(conn: &Connection, max_sent: u64) -> Result<Vec<VoidRecord>, TerminalError> {
    let mut stmt = conn.prepare_cached(
        "SELECT void_id, sale_id, after_seq, at, shift_id, approved_by, reason, returned_to_lease, refund, refund_method,
                approval_id
         FROM voids WHERE uploaded = 0 AND after_seq <= ?1 ORDER BY after_seq, at",
    )?;
    let rows = stmt.query_map(params![max_sent], |r| {
        let shift: Option<String> = r.get(4)?;
        let approval: Option<String> = r.get(10)?;
        Ok(VoidRecord {
            void_id: parse_uuid(&r.get::<_, String>(0)?)?,
            sale_id: parse_uuid(&r.get::<_, String>(1)?)?,
            after_seq: r.get(2)?,
            at: from_ms(r.get(3)?),
            shift_id: shift.as_deref().map(parse_uuid).transpose()?,
            approved_by: r.get(5)?,
            approval_id: approval.as_deref().map(parse_uuid).transpose()?,
            reason: r.get(6)?,
            returned_to_lease: r.get(7)?,
            refund: r.get(8)?,
            refund_method: payment_method(&r.get::<_, String>(9)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Leases not yet settled with the server: open ones, and closed ones until
/// the server has confirmed what they came to (`settled_leases`).
fn live_leases(conn: &Connection) -> Result<Vec<LeaseReport>, TerminalError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {LEASE_COLUMNS} FROM leases WHERE settled = 0 ORDER BY slot_id"
    ))?;
    let rows = stmt.query_map([], lease_row)?;
    Ok(rows
        .map(|lease| lease.map(|l| l.report()))
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Asks to be kept supplied for every slot of today still on sale, and for
/// whatever a waiting sale needs.
fn wants(
    conn: &Connection,
    now: Timestamp,
    today: jiff::civil::Date,
) -> Result<Vec<LeaseWant>, TerminalError> {
    let mut wants: BTreeMap<SlotId, u32> = BTreeMap::new();
    let first = SlotId::new(today, 0).map_err(|e| TerminalError::Storage(e.to_string()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT slot_id FROM slots WHERE slot_id >= ?1 AND ends_at > ?2 ORDER BY slot_id",
    )?;
    for slot in stmt.query_map(params![first.to_string(), now.as_millisecond()], |r| {
        parse_slot(&r.get::<_, String>(0)?)
    })? {
        let slot = slot?;
        if slot.date == today {
            wants.insert(slot, 0);
        }
    }
    // A customer who walked away should not keep places escrowed here.
    conn.execute(
        "DELETE FROM wants WHERE created_at < ?1",
        params![now.as_millisecond() - WANT_TTL_MS],
    )?;
    let mut stmt = conn.prepare_cached("SELECT slot_id, need FROM wants")?;
    for row in stmt.query_map([], |r| {
        Ok((parse_slot(&r.get::<_, String>(0)?)?, r.get::<_, u32>(1)?))
    })? {
        let (slot, need) = row?;
        wants.insert(slot, need);
    }
    Ok(wants
        .into_iter()
        .map(|(slot_id, need)| LeaseWant { slot_id, need })
        .collect())
}

/// This counter's running totals per slot from `first` on, covering sales
/// up to `max_seq` and the voids that go with them: exactly what the server
/// will have. The server derives every tally from the uploads it stored and
/// only compares the counter's word with it, so leaving past slots out
/// changes no total; it keeps the body and the sums it costs the size of a
/// day, not of the counter's life.
pub(crate) fn own_tallies_since(
    conn: &Connection,
    max_seq: u64,
    first: SlotId,
) -> Result<BTreeMap<SlotId, ActorTally>, TerminalError> {
    own_tallies_of(conn, max_seq, &first.to_string())
}

/// Slot ids sort by date as text (`YYYY-MM-DDTHH:MM`).
fn own_tallies_of(
    conn: &Connection,
    max_seq: u64,
    first: &str,
) -> Result<BTreeMap<SlotId, ActorTally>, TerminalError> {
    let mut out: BTreeMap<SlotId, ActorTally> = BTreeMap::new();
    let mut stmt = conn.prepare_cached(
        "SELECT slot_id, SUM(admissions) FROM sales
         WHERE slot_id >= ?2 AND terminal_seq <= ?1 GROUP BY slot_id",
    )?;
    for row in stmt.query_map(params![max_seq, first], |r| {
        Ok((parse_slot(&r.get::<_, String>(0)?)?, r.get::<_, u64>(1)?))
    })? {
        let (slot, sold) = row?;
        out.entry(slot).or_default().sold = sold;
    }
    let mut stmt = conn.prepare_cached(
        "SELECT s.slot_id, SUM(s.admissions) FROM sales s JOIN voids v ON v.sale_id = s.sale_id
         WHERE s.slot_id >= ?2 AND v.returned_to_lease = 1 AND v.after_seq <= ?1 GROUP BY s.slot_id",
    )?;
    for row in stmt.query_map(params![max_seq, first], |r| {
        Ok((parse_slot(&r.get::<_, String>(0)?)?, r.get::<_, u64>(1)?))
    })? {
        let (slot, voided) = row?;
        out.entry(slot).or_default().voided = voided;
    }
    Ok(out)
}

/// Marks settled the leases the server holds as settled, where this counter
/// agrees: the slot is over, nothing is left to sell or give back (or the
/// lease was revoked), and every sale and void from it was acknowledged.
/// Those leases are not reported any more.
fn mark_settled(
    conn: &Connection,
    settled: &[Uuid],
    acked: u64,
    now_ms: i64,
) -> Result<(), TerminalError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE leases SET settled = 1
         WHERE lease_id = ?1 AND settled = 0
           AND EXISTS (SELECT 1 FROM slots sl WHERE sl.slot_id = leases.slot_id AND sl.ends_at <= ?2)
           AND NOT EXISTS (SELECT 1 FROM sales s WHERE s.lease_id = leases.lease_id AND s.terminal_seq > ?3)
           AND NOT EXISTS (SELECT 1 FROM voids v JOIN sales s ON s.sale_id = v.sale_id
                           WHERE s.lease_id = leases.lease_id AND v.uploaded = 0)",
    )?;
    let mut lease_of = conn.prepare_cached(&format!(
        "SELECT {LEASE_COLUMNS} FROM leases WHERE lease_id = ?1"
    ))?;
    for id in settled {
        let lease = lease_of
            .query_row(params![id.to_string()], lease_row)
            .optional()?;
        if lease.is_some_and(|l| l.is_spent()) {
            stmt.execute(params![id.to_string(), now_ms, acked])?;
        }
    }
    Ok(())
}

/// What applying an answer changed.
#[derive(Default)]
pub(crate) struct Applied {
    pub granted: u32,
    pub returned: u32,
}

pub(crate) fn apply_response(
    conn: &mut Connection,
    sent: &SyncRequest,
    response: &SyncResponse,
    now: Timestamp,
) -> Result<Applied, TerminalError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut applied = Applied::default();
    let max_local: u64 = tx.query_row(
        "SELECT COALESCE(MAX(terminal_seq), 0) FROM sales",
        [],
        |r| r.get(0),
    )?;
    let acked = acked_seq(&tx)?.max(response.acked_seq.min(max_local));
    local::set(&tx, keys::ACKED_SEQ, &acked)?;
    {
        let mut stmt = tx.prepare_cached("UPDATE voids SET uploaded = 1 WHERE void_id = ?1")?;
        for id in &response.voids_acked {
            stmt.execute(params![id.to_string()])?;
        }
    }
    shifts::mark_uploaded(&tx, &response.shifts_acked)?;
    mark_settled(
        &tx,
        &response.settled_leases,
        acked,
        response
            .server_time
            .as_millisecond()
            .min(now.as_millisecond()),
    )?;

    for grant in &response.leases {
        let done = match lease_for(&tx, grant.slot_id)? {
            None => {
                let (lease, done) = CounterLease::first_grant(grant);
                tx.execute(
                    "INSERT INTO leases (lease_id, slot_id, granted_total, released_total, sold, revoked) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                    params![
                        lease.lease_id.to_string(),
                        lease.slot.to_string(),
                        lease.totals.granted_total,
                        lease.totals.released_total,
                        lease.revoked
                    ],
                )?;
                done
            }
            Some(mut lease) => match lease.apply_grant(grant) {
                Ok(done) => {
                    store_lease(&tx, &lease)?;
                    done
                }
                Err(e) => {
                    tracing::warn!(slot = %grant.slot_id, error = %e, "keeping this counter's lease");
                    continue;
                }
            },
        };
        applied.granted += done.granted;
        applied.returned += done.returned;
    }
    // A want is met once the lease covers it.
    let wants = tx
        .prepare_cached("SELECT slot_id, need FROM wants")?
        .query_map([], |r| {
            Ok((parse_slot(&r.get::<_, String>(0)?)?, r.get::<_, u32>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (slot, need) in wants {
        if lease_for(&tx, slot)?.is_some_and(|l| l.covers(need)) {
            tx.execute(
                "DELETE FROM wants WHERE slot_id = ?1",
                params![slot.to_string()],
            )?;
        }
    }
    if let Some(catalogue) = &response.catalogue {
        local::set(&tx, keys::CATALOGUE, catalogue)?;
        local::set(&tx, keys::CATALOGUE_VERSION, &response.catalogue_version)?;
    }
    local::set(&tx, keys::STAFF, &response.staff)?;
    local::set(&tx, keys::PUBLIC_KEYS, &response.keys)?;
    local::set(&tx, keys::TALLIES, &response.tallies)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO slots (slot_id, starts_at, ends_at, window_minutes, capacity, available, sold, as_of)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (slot_id) DO UPDATE SET capacity = excluded.capacity, available = excluded.available,
                 sold = excluded.sold, as_of = excluded.as_of, starts_at = excluded.starts_at, ends_at = excluded.ends_at",
        )?;
        for s in &response.slots {
            let window =
                ((s.ends_at.as_millisecond() - s.starts_at.as_millisecond()) / 60_000) as u16;
            stmt.execute(params![
                s.slot_id.to_string(),
                s.starts_at.as_millisecond(),
                s.ends_at.as_millisecond(),
                window,
                s.capacity,
                s.available,
                s.sold,
                response.server_time.as_millisecond()
            ])?;
        }
    }
    // The server lists everything of ours it still holds in quarantine.
    tx.execute("DELETE FROM quarantined", [])?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO quarantined (item_id, kind, terminal_seq, reason) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for q in &response.quarantined {
            stmt.execute(params![q.id.to_string(), q.kind, q.terminal_seq, q.reason])?;
        }
    }
    local::set(&tx, keys::LAST_SYNC_AT, &now)?;
    local::set(&tx, keys::ONLINE, &true)?;
    local::set(&tx, keys::LAST_SYNC_ERROR, &Option::<String>::None)?;
    tx.commit()?;
    let _ = sent;
    Ok(applied)
}

pub(crate) fn record_failure(
    conn: &Connection,
    error: &TerminalError,
) -> Result<(), TerminalError> {
    local::set(conn, keys::ONLINE, &false)?;
    local::set(conn, keys::LAST_SYNC_ERROR, &Some(error.to_string()))?;
    Ok(())
}

/// Sends one request; network trouble is `Offline`, a refusal `Refused`.
pub(crate) async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &B,
    timeout: Duration,
) -> Result<R, TerminalError> {
    let mut request = http.post(url).json(body).timeout(timeout);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| TerminalError::Offline(describe(&e)))?;
    read(response).await
}

pub(crate) async fn read<R: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<R, TerminalError> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| TerminalError::Offline(describe(&e)))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| {
            TerminalError::Refused(format!("unexpected answer from the server: {e}"))
        });
    }
    let message = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
    if status.is_server_error() {
        Err(TerminalError::Offline(format!(
            "server error {}: {message}",
            status.as_u16()
        )))
    } else {
        Err(TerminalError::Refused(message))
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.to_string()
    }
}
