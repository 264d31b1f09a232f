//! Reconciling what counters report with what the server counts: lease
//! reports folded into the server's view of a lease, the over-capacity flags
//! of a revoked lease's sales kept in step with what it is actually over, and
//! the check of a counter's own tallies against the sales log.
//!
//! A counter's report is a claim written at some moment and possibly
//! delivered late or twice; these rules read it against what happened since
//! (grants it had not heard of, releases already counted), so no report can
//! make a lease look emptier than it is or count a release twice.

use uuid::Uuid;

use crate::api::sync::{ActorTally, LeaseReport};
use crate::leases::{LeaseState, SlotChange};

/// Why a lease report refuses a whole sync body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("unknown lease {0}")]
    UnknownLease(Uuid),
    #[error("lease {lease} does not belong to this counter for {slot}")]
    NotYours {
        lease: Uuid,
        slot: crate::slot::SlotId,
    },
    #[error("lease {lease} releases {released} of only {granted} granted")]
    ReleasesTooMuch {
        lease: Uuid,
        released: u32,
        granted: u32,
    },
}

/// A report is about a lease the server knows, held by this counter for the
/// slot it names, releasing no more than was ever granted.
pub fn check_report(
    device: Uuid,
    report: &LeaseReport,
    lease: Option<&LeaseState>,
) -> Result<(), ReportError> {
    let lease = lease.ok_or(ReportError::UnknownLease(report.lease_id))?;
    if !lease.belongs_to(device, report.slot_id) {
        return Err(ReportError::NotYours {
            lease: report.lease_id,
            slot: report.slot_id,
        });
    }
    if report.released_total > lease.totals.granted_total {
        return Err(ReportError::ReleasesTooMuch {
            lease: report.lease_id,
            released: report.released_total,
            granted: lease.totals.granted_total,
        });
    }
    Ok(())
}

/// Folds a (checked) report into the lease: releases count once (totals only
/// grow), and what the counter says it can still sell is read against grants
/// it had not heard of and releases made since it wrote the report. A revoked
/// lease's escrow stays frozen: its releases return nothing more.
pub fn fold_report(lease: &mut LeaseState, report: &LeaseReport) -> SlotChange {
    let before = lease.footprint();
    let released_after = lease.totals.released_total.max(report.released_total);
    let heard_of = lease
        .totals
        .granted_total
        .saturating_sub(report.granted_total);
    lease.unused_reported = report
        .unused
        .saturating_add(heard_of)
        .saturating_sub(released_after - report.released_total);
    lease.totals.released_total = released_after;
    SlotChange {
        before,
        after: lease.footprint(),
    }
}

/// The over-capacity flags of a revoked lease's sales after a void returned
/// places: the voided sale's flag goes, and the rest must add up to what the
/// lease is still over (`overflow`), the latest lowered first.
///
/// `flagged`: the lease's sales with a flag, latest first. Returns the new
/// flag of every sale that changes (the voided one always, to 0).
pub fn lower_flags(flagged: &[(Uuid, u32)], voided: Uuid, overflow: u32) -> Vec<(Uuid, u32)> {
    let mut changes = vec![(voided, 0)];
    let others = flagged.iter().filter(|(s, _)| *s != voided);
    let mut excess = others
        .clone()
        .map(|(_, o)| *o)
        .sum::<u32>()
        .saturating_sub(overflow);
    for &(sale, over) in others {
        if excess == 0 {
            break;
        }
        let cut = over.min(excess);
        excess -= cut;
        changes.push((sale, over - cut));
    }
    changes
}

/// A counter's own tallies for a slot disagree with what the server derived
/// from its uploads (the server's count is used either way).
pub fn tally_differs(reported: Option<&ActorTally>, derived: ActorTally) -> bool {
    reported.is_some_and(|r| *r != derived)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::SlotId;

    fn slot() -> SlotId {
        "2026-12-02T10:00".parse().expect("slot")
    }

    fn report(granted: u32, released: u32, unused: u32) -> LeaseReport {
        LeaseReport {
            lease_id: Uuid::from_u64_pair(0, 1),
            slot_id: slot(),
            granted_total: granted,
            released_total: released,
            unused,
        }
    }

    #[test]
    fn a_replayed_report_changes_nothing() {
        let mut l = LeaseState::new(Uuid::from_u64_pair(0, 1), Uuid::from_u64_pair(0, 2), slot());
        l.grant(10);
        let r = report(10, 4, 2);
        let first = fold_report(&mut l, &r);
        assert_eq!(first.returned(), 4);
        let after = l.clone();
        assert!(fold_report(&mut l, &r).is_empty());
        assert_eq!(l, after);
        // Written before a grant of 5 it had not heard of.
        l.grant(5);
        let _ = fold_report(&mut l, &r);
        assert_eq!(l.unused_reported, 7);
    }

    #[test]
    fn flags_are_lowered_latest_first() {
        let id = |n| Uuid::from_u64_pair(0, n);
        let flagged = [(id(3), 2), (id(2), 2), (id(1), 1)];
        assert_eq!(
            lower_flags(&flagged, id(9), 2),
            vec![(id(9), 0), (id(3), 0), (id(2), 1)]
        );
        assert_eq!(lower_flags(&flagged, id(3), 3), vec![(id(3), 0)]);
    }

    #[test]
    fn reports_are_checked() {
        let dev = Uuid::from_u64_pair(0, 2);
        let mut l = LeaseState::new(Uuid::from_u64_pair(0, 1), dev, slot());
        l.grant(3);
        assert!(matches!(
            check_report(dev, &report(3, 4, 0), Some(&l)),
            Err(ReportError::ReleasesTooMuch { .. })
        ));
        assert!(matches!(
            check_report(Uuid::nil(), &report(3, 1, 0), Some(&l)),
            Err(ReportError::NotYours { .. })
        ));
        assert_eq!(check_report(dev, &report(3, 1, 0), Some(&l)), Ok(()));
    }
}
