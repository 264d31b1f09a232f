//! Today's admissions known to this gate: its own and every peer's, merged
//! as a grow-only set (a ticket admitted stays admitted, whoever hears of it
//! first), kept in SQLite so a restart forgets nothing.

use std::collections::{HashMap, HashSet};

use crdts::GSet;
use jiff::civil::Date;
use rusqlite::{params, Connection, TransactionBehavior};
use uuid::Uuid;

use super::message::PeerAdmission;
use super::wire::Digest;
use crate::error::TerminalError;

/// The merged set for one museum day, with the first admission of each
/// ticket at hand for the scan decision.
pub(crate) struct PeerBook {
    pub day: Date,
    set: GSet<PeerAdmission>,
    first: HashMap<Uuid, PeerAdmission>,
    /// (ticket, admitting device) of every admission held: a device admits
    /// a ticket once, so a second message for the pair is a copy, whatever
    /// its bytes (the database keys its rows the same way).
    pairs: HashSet<(Uuid, Uuid)>,
    digest: Digest,
}

impl PeerBook {
    pub fn new(day: Date) -> PeerBook {
        PeerBook {
            day,
            set: GSet::new(),
            first: HashMap::new(),
            pairs: HashSet::new(),
            digest: Digest::default(),
        }
    }

    /// Adds an admission; true if it was not known yet.
    pub fn insert(&mut self, a: PeerAdmission) -> bool {
        if !self.pairs.insert((a.ticket_id, a.device_id)) {
            return false;
        }
        let earlier = self
            .first
            .get(&a.ticket_id)
            .is_none_or(|f| (a.admitted_at_ms, a.device_id) < (f.admitted_at_ms, f.device_id));
        if earlier {
            self.first.insert(a.ticket_id, a.clone());
        }
        self.digest.count += 1;
        self.digest.xor ^= signature_word(&a.signature);
        self.set.insert(a);
        true
    }

    /// The first admission of `ticket` by a device other than `me`.
    pub fn admitted_elsewhere(&self, ticket: Uuid, me: Uuid) -> Option<PeerAdmission> {
        match self.first.get(&ticket) {
            Some(f) if f.device_id != me => Some(f.clone()),
            // This device was first; another may still have admitted it too.
            Some(_) => self
                .set
                .read()
                .into_iter()
                .filter(|a| a.ticket_id == ticket && a.device_id != me)
                .min_by_key(|a| a.admitted_at_ms),
            None => None,
        }
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn contains(&self, a: &PeerAdmission) -> bool {
        self.pairs.contains(&(a.ticket_id, a.device_id))
    }

    pub fn first_of(&self, ticket: Uuid) -> Option<PeerAdmission> {
        self.first.get(&ticket).cloned()
    }

    pub fn all(&self) -> Vec<PeerAdmission> {
        self.set.read().into_iter().collect()
    }

    /// Today's admissions as stored; older days' are deleted (a ticket is
    /// valid on its own day only, so they can never refuse a scan again).
    pub fn load(
        conn: &Connection,
        day: Date,
        day_start_ms: i64,
    ) -> Result<PeerBook, TerminalError> {
        conn.execute(
            "DELETE FROM peer_admissions WHERE admitted_at < ?1",
            params![day_start_ms],
        )?;
        let mut book = PeerBook::new(day);
        let mut stmt = conn.prepare("SELECT message FROM peer_admissions")?;
        for text in stmt.query_map([], |r| r.get::<_, String>(0))? {
            match serde_json::from_str::<PeerAdmission>(&text?) {
                Ok(a) if a.slot_id.date == day => {
                    book.insert(a);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "unreadable stored peer admission; skipped"),
            }
        }
        Ok(book)
    }
}

/// The first 8 bytes of a (verified) signature: as good as random.
fn signature_word(signature: &str) -> u64 {
    signature
        .get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

/// Stores admissions already verified (and new to the book), in one commit.
pub(crate) fn persist(
    conn: &mut Connection,
    admissions: &[PeerAdmission],
) -> Result<(), TerminalError> {
    if admissions.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO peer_admissions (ticket_id, device_id, admitted_at, message)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for a in admissions {
            stmt.execute(params![
                a.ticket_id.to_string(),
                a.device_id.to_string(),
                a.admitted_at_ms,
                serde_json::to_string(a)?
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use tessera_core::slot::SlotId;

    const DAY: Date = jiff::civil::date(2026, 12, 3);

    fn admission(ticket: Uuid, device: Uuid, name: &str, at: i64) -> PeerAdmission {
        let slot = SlotId::new(DAY, 600).unwrap();
        PeerAdmission::sign(
            &SigningKey::from_bytes(&[1; 32]),
            1,
            ticket,
            slot,
            device,
            name,
            at,
        )
    }

    #[test]
    fn merging_is_idempotent_order_free_and_keeps_the_first_admission() {
        let (t, north, south) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let a = admission(t, north, "North gate", 2_000);
        let b = admission(t, south, "South gate", 1_000);
        let mut one = PeerBook::new(DAY);
        let mut two = PeerBook::new(DAY);
        assert!(one.insert(a.clone()));
        assert!(one.insert(b.clone()));
        assert!(two.insert(b.clone()));
        assert!(two.insert(a.clone()));
        assert!(!two.insert(a.clone()), "merging twice adds nothing");
        assert_eq!(one.all(), two.all());
        assert_eq!(one.digest(), two.digest(), "same set, same digest");
        assert_ne!(one.digest(), PeerBook::new(DAY).digest());
        assert_eq!(one.all().len(), 2);
        let me = Uuid::now_v7();
        assert_eq!(one.admitted_elsewhere(t, me), Some(b.clone()));
        // South itself learns that North admitted it too.
        assert_eq!(one.admitted_elsewhere(t, south), Some(a));
        assert_eq!(one.admitted_elsewhere(Uuid::now_v7(), me), None);
    }

    #[test]
    fn a_copy_in_other_bytes_is_no_new_admission() {
        let (t, north) = (Uuid::now_v7(), Uuid::now_v7());
        let a = admission(t, north, "North gate", 2_000);
        let mut book = PeerBook::new(DAY);
        assert!(book.insert(a.clone()));
        let digest = book.digest();
        // The same (ticket, gate) in other bytes, however it came to be.
        let mut copy = a.clone();
        copy.signature = copy.signature.to_uppercase();
        assert!(
            !book.insert(copy.clone()),
            "one admission per ticket and gate"
        );
        assert!(book.contains(&copy));
        assert_eq!(book.all().len(), 1);
        assert_eq!(book.digest(), digest, "the digest does not drift");
    }

    #[test]
    fn the_book_survives_a_restart_and_forgets_yesterday() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch(include_str!("../../migrations/0007_peer_admissions.sql"))
            .unwrap();
        let (t, north) = (Uuid::now_v7(), Uuid::now_v7());
        let today = admission(t, north, "North gate", 5_000);
        let old = admission(Uuid::now_v7(), north, "North gate", 10);
        persist(&mut conn, &[today.clone(), old, today.clone()]).unwrap();
        let book = PeerBook::load(&conn, DAY, 1_000).unwrap();
        assert_eq!(book.all(), vec![today]);
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM peer_admissions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }
}
