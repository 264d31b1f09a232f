//! What `chaos` (SQLite) and `pg-chaos` (PostgreSQL) share about counters:
//! the cashier's loop that sells from the counter's leases (also while its
//! link is cut), and the check that what a counter committed is on the
//! server exactly once, with its admissions and tickets, and that the
//! server's tally for the counter equals its stored sales. Each scenario
//! reads its own backend into [`StoredSales`]; the judging is one copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::Rng;
use tessera_core::slot::SlotId;
use tessera_terminal::{Terminal, TerminalError};
use uuid::Uuid;

use crate::client::card_sale;
use crate::proxy::Proxy;
use crate::stats::Errors;

/// What one counter's cashier did.
#[derive(Default)]
pub struct SellerOut {
    /// Every sale `sell` reported done: (sale id, admissions).
    pub sales: Vec<(Uuid, u32)>,
    pub while_partitioned: u64,
    pub errors: Errors,
}

/// Sells 1–2 adults at a time, a pause of about `gap_ms` between sales,
/// until `stop`; a sale is done when the engine says so (committed
/// locally), whether or not `link` is up.
pub async fn sell_until(
    t: &Terminal,
    slot: SlotId,
    gap_ms: u64,
    stop: &AtomicBool,
    link: &Proxy,
    rng: &mut StdRng,
) -> SellerOut {
    let mut out = SellerOut::default();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(
            rng.random_range(gap_ms / 2..=gap_ms * 3 / 2),
        ))
        .await;
        let adults: u32 = rng.random_range(1..=2);
        let partitioned = !link.is_up();
        match t.sell(card_sale(slot, adults)).await {
            Ok(done) => {
                out.sales.push((done.sale.sale_id, done.sale.admissions));
                if partitioned {
                    out.while_partitioned += 1;
                }
            }
            Err(TerminalError::NotEnoughPlaces { .. }) => {
                out.errors.add("not_enough_places");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                out.errors.add(e.code());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    out
}

/// One stored counter sale: its seq, admissions and ticket ids (sorted).
pub type StoredSale = (u64, u32, Vec<Uuid>);

/// What the server stored of one counter, read by the scenario from its
/// backend.
#[derive(Default)]
pub struct StoredSales {
    pub sales: HashMap<Uuid, StoredSale>,
    /// The highest seq stored, and the seq the server acknowledged.
    pub max_seq: u64,
    pub acked_seq: u64,
    /// Admissions the stored tally says this counter sold (`None`: the
    /// tally has no entry for it).
    pub tallied: Option<u64>,
}

/// What the counter checks found; the scenarios add them to their reports.
#[derive(Default)]
pub struct Findings {
    pub lost_sales: u64,
    pub duplicated: u64,
    pub tally_mismatches: u64,
    pub violations: Vec<String>,
}

/// Checks one counter against what the server stored: every sale the
/// cashier was told done is in the counter's own database; every sale
/// there is stored once with the same seq, admissions and tickets; the
/// server stores nothing else for it and acknowledged all of it; its tally
/// equals its stored admissions. Returns those admissions.
pub fn check_counter(
    t: &Terminal,
    done: &[(Uuid, u32)],
    stored: &StoredSales,
    f: &mut Findings,
) -> Result<u64> {
    let name = t.name().to_string();
    let local = t
        .sales_today()
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let local_ids: HashMap<Uuid, StoredSale> = local
        .iter()
        .map(|s| {
            let mut tickets: Vec<Uuid> = s.tickets.iter().map(|k| k.ticket_id).collect();
            tickets.sort();
            (s.sale_id, (s.terminal_seq, s.admissions, tickets))
        })
        .collect();
    // The counter itself kept every sale it reported done.
    for (id, adm) in done {
        match local_ids.get(id) {
            Some((_, a, _)) if a == adm => {}
            _ => {
                f.lost_sales += 1;
                f.violations.push(format!(
                    "{name}: sale {id} was done but is not in its own database"
                ));
            }
        }
    }
    for (id, v) in &local_ids {
        match stored.sales.get(id) {
            None => {
                f.lost_sales += 1;
                f.violations.push(format!(
                    "{name}: sale {id} (seq {}) is not on the server",
                    v.0
                ));
            }
            Some(sv) if sv.0 != v.0 || sv.1 != v.1 => {
                f.violations.push(format!(
                    "{name}: sale {id} is seq {} / {} admissions here, {} / {} on the server",
                    v.0, v.1, sv.0, sv.1
                ));
            }
            Some(sv) if sv.2 != v.2 => {
                f.violations.push(format!(
                    "{name}: sale {id} has tickets {:?} here, {:?} on the server",
                    v.2, sv.2
                ));
            }
            Some(_) => {}
        }
    }
    for id in stored.sales.keys() {
        if !local_ids.contains_key(id) {
            f.duplicated += 1;
            f.violations.push(format!(
                "{name}: the server has sale {id}, which the counter never made"
            ));
        }
    }
    let n = local.len() as u64;
    if stored.sales.len() as u64 != n || stored.max_seq != n || stored.acked_seq != n {
        f.violations.push(format!(
            "{name}: {n} sales here; the server has {} with seq up to {}, acknowledged {}",
            stored.sales.len(),
            stored.max_seq,
            stored.acked_seq
        ));
    }
    let admissions: u64 = stored.sales.values().map(|s| u64::from(s.1)).sum();
    match stored.tallied {
        Some(t) if t != admissions => {
            f.tally_mismatches += 1;
            f.violations.push(format!(
                "{name}: tally says {t} admissions sold, the sales log {admissions}"
            ));
        }
        None if admissions > 0 => {
            f.tally_mismatches += 1;
            f.violations
                .push(format!("{name}: no tally for its {admissions} admissions"));
        }
        _ => {}
    }
    Ok(admissions)
}

/// What a stored slot tally (`SlotTally` as JSON) says `actor` sold.
pub fn tally_actor_sold(state: &serde_json::Value, actor: &str) -> Option<u64> {
    state["sold"]["inner"]["dots"][actor].as_u64()
}
