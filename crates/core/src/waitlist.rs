//! The waiting list of a sold-out entry time: who may join, and who is
//! offered places when some come back.
//!
//! The line is first come, first served. When places come back to a slot,
//! the server walks its line in arrival order and offers places to each
//! waiting party that fits in what is still free, taking those places off
//! before looking at the next one. A party that does not fit keeps its place
//! at the front and is offered the next places that are enough for it.
//!
//! Decided: a later, smaller party *is* served while an earlier, larger one
//! waits for more places ("the first in line whose party fits"). Holding the
//! places back for the larger party would not help it: places that nobody in
//! the line is offered are on sale to everyone, so they would go to a visitor
//! who never queued rather than to the next in line.
//!
//! Only waiting entries are in the line the rules see: an entry with an open
//! offer already has its places, so nobody is offered twice at once.
//!
//! An offer's link shows its state ([`offer_state`]) and turns it into a
//! checkout once ([`check_take`] decides, from the offer as stored).

use crate::api::shop::OfferState;
use crate::pricing::CartLimits;
use crate::slot::SlotId;

/// Why a party cannot join a slot's waiting list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("a party needs at least one admission")]
    EmptyParty,
    #[error("a party of {party} cannot be booked online for this entry time: at most {max}")]
    PartyTooLarge { party: u32, max: u32 },
    #[error("{available} places are still free for this entry time: book them instead")]
    NotSoldOut { available: u32 },
}

/// The largest party that could ever be booked online for a slot of this
/// capacity: the slot's size and the online cart's limit, whichever is less.
pub fn max_party(capacity: u32) -> u32 {
    capacity.min(CartLimits::ONLINE.max_admissions)
}

/// May a party of `party` join the line of a slot with `capacity` places of
/// which `available` are free now?
pub fn check_join(party: u32, capacity: u32, available: u32) -> Result<(), JoinRefusal> {
    if party == 0 {
        return Err(JoinRefusal::EmptyParty);
    }
    let max = max_party(capacity);
    if party > max {
        return Err(JoinRefusal::PartyTooLarge { party, max });
    }
    if available >= party {
        return Err(JoinRefusal::NotSoldOut { available });
    }
    Ok(())
}

/// One waiting party, as the rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting<Id> {
    pub id: Id,
    pub party: u32,
}

/// Who is offered places, in line order, when `available` places are free:
/// each waiting party that fits in what the parties before it left over.
///
/// `line` must be in arrival order and hold only entries that are waiting
/// (no open offer).
pub fn offers<Id: Copy>(line: &[Waiting<Id>], available: u32) -> Vec<Waiting<Id>> {
    let mut left = available;
    let mut chosen = Vec::new();
    for entry in line {
        if left == 0 {
            break;
        }
        if entry.party > 0 && entry.party <= left {
            left -= entry.party;
            chosen.push(*entry);
        }
    }
    chosen
}

/// When an offer made at `now_ms` lapses: after the offer's time, but never
/// past the end of the entry time (no use holding places nobody can use).
pub fn offer_expires_at(now_ms: i64, offer_ms: i64, slot_ends_ms: i64) -> i64 {
    now_ms.saturating_add(offer_ms).min(slot_ends_ms)
}

/// A waiting-list entry's stored state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// In the line, no places yet.
    Waiting,
    /// Places are held for it until the offer lapses.
    Offered,
    /// The offer became a checkout.
    Taken,
    /// Out of the line for good: the offer lapsed, or the entry time was
    /// over before places came back.
    Ended,
}

impl EntryState {
    /// Reads `waitlist.state`. Words other than the live ones (`expired`,
    /// `removed`) all mean the entry is over: an offer link never revives it.
    pub fn from_stored(word: &str) -> EntryState {
        match word {
            "waiting" => EntryState::Waiting,
            "offered" => EntryState::Offered,
            "taken" => EntryState::Taken,
            _ => EntryState::Ended,
        }
    }
}

/// What an offer's link shows at `now_ms`. An offer still marked offered
/// whose time is up reads expired at once, before the sweep closes it.
pub fn offer_state(state: EntryState, expires_ms: Option<i64>, now_ms: i64) -> OfferState {
    match state {
        EntryState::Taken => OfferState::Taken,
        EntryState::Offered if expires_ms.is_some_and(|e| e > now_ms) => OfferState::Open,
        _ => OfferState::Expired,
    }
}

/// An offer as the backend loads it by its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfferFacts {
    pub slot: SlotId,
    pub state: EntryState,
    pub party: u32,
    pub expires_ms: Option<i64>,
    /// Whether the offer's hold still holds its places (the sweep may have
    /// released it already).
    pub hold_open: bool,
    /// When the entry time ends; `None` when the backend does not have the
    /// slot at hand (an offer whose hold is open always has it).
    pub slot_ends_ms: Option<i64>,
}

/// Why an offer cannot be turned into a checkout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TakeRefusal {
    #[error("this offer was already used for a checkout")]
    Taken,
    #[error("this offer has expired and its places went to the next in line")]
    Expired,
    #[error("the offer holds {party} places; {requested} were chosen")]
    TooMany { party: u32, requested: u32 },
    #[error("entry time {0} is over")]
    SlotPast(SlotId),
}

/// May `offer` become a checkout of `requested` admissions at `now_ms`?
///
/// Refusals come in this order: an offer already used says so (a second
/// click on the link must not read "expired"); then one that lapsed,
/// whether by its time or because the sweep already passed its places on;
/// only a live offer is told the party is too large, and only a fitting
/// party that the entry time is over.
pub fn check_take(offer: &OfferFacts, requested: u32, now_ms: i64) -> Result<(), TakeRefusal> {
    match offer.state {
        EntryState::Taken => return Err(TakeRefusal::Taken),
        EntryState::Offered => {}
        EntryState::Waiting | EntryState::Ended => return Err(TakeRefusal::Expired),
    }
    if !offer.hold_open || offer.expires_ms.is_none_or(|e| e <= now_ms) {
        // The sweep marks it expired and passes the places on; this answer
        // changes nothing.
        return Err(TakeRefusal::Expired);
    }
    if requested > offer.party {
        return Err(TakeRefusal::TooMany {
            party: offer.party,
            requested,
        });
    }
    if offer.slot_ends_ms.is_some_and(|ends| now_ms >= ends) {
        return Err(TakeRefusal::SlotPast(offer.slot));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(parties: &[u32]) -> Vec<Waiting<usize>> {
        parties
            .iter()
            .enumerate()
            .map(|(id, &party)| Waiting { id, party })
            .collect()
    }

    fn ids(chosen: &[Waiting<usize>]) -> Vec<usize> {
        chosen.iter().map(|w| w.id).collect()
    }

    #[test]
    fn the_first_in_line_whose_party_fits_is_offered() {
        // Four places back: the party of 5 waits, the 3 after it is served,
        // one place is left and the 2 behind does not fit in it.
        assert_eq!(ids(&offers(&line(&[5, 3, 2, 1]), 4)), vec![1, 3]);
        // Enough for everyone in order.
        assert_eq!(ids(&offers(&line(&[2, 2]), 4)), vec![0, 1]);
        // Nothing back: nobody.
        assert!(offers(&line(&[1]), 0).is_empty());
        // The front party is served first when it fits, even if two smaller
        // ones behind it would use the places "better".
        assert_eq!(ids(&offers(&line(&[3, 2, 2]), 4)), vec![0]);
    }

    #[test]
    fn joining_is_for_sold_out_times_and_bookable_parties() {
        assert_eq!(check_join(2, 30, 1), Ok(()));
        assert_eq!(check_join(2, 30, 0), Ok(()));
        assert_eq!(
            check_join(2, 30, 2),
            Err(JoinRefusal::NotSoldOut { available: 2 })
        );
        assert_eq!(
            check_join(8, 6, 0),
            Err(JoinRefusal::PartyTooLarge { party: 8, max: 6 })
        );
        assert_eq!(
            check_join(21, 300, 0),
            Err(JoinRefusal::PartyTooLarge { party: 21, max: 20 })
        );
        assert_eq!(check_join(20, 300, 0), Ok(()));
        assert_eq!(check_join(0, 300, 0), Err(JoinRefusal::EmptyParty));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn offers_never_exceed_what_came_back_and_keep_the_order(
            parties in prop::collection::vec(0u32..25, 0..40),
            available in 0u32..80,
        ) {
            let line = line(&parties);
            let chosen = offers(&line, available);
            let total: u64 = chosen.iter().map(|w| u64::from(w.party)).sum();
            prop_assert!(total <= u64::from(available));
            // In line order, each entry at most once.
            prop_assert!(chosen.windows(2).all(|w| w[0].id < w[1].id));
            // Strict first come: an entry passed over could not have been
            // served with what was left when its turn came, and what is left
            // at the end fits nobody who was passed over.
            let mut left = available;
            for entry in &line {
                if chosen.iter().any(|c| c.id == entry.id) {
                    prop_assert!(entry.party >= 1 && entry.party <= left);
                    left -= entry.party;
                } else {
                    prop_assert!(entry.party == 0 || entry.party > left);
                }
            }
            prop_assert_eq!(u64::from(left), u64::from(available) - total);
        }

        #[test]
        fn a_party_that_may_join_could_be_booked_once_places_come_back(
            party in 0u32..40, capacity in 0u32..60, available in 0u32..60,
        ) {
            if check_join(party, capacity, available).is_ok() {
                prop_assert!(party >= 1);
                prop_assert!(party <= capacity);
                prop_assert!(party <= CartLimits::ONLINE.max_admissions);
                prop_assert!(available < party);
                // Once the whole slot is free again, it is offered.
                let chosen = offers(&[Waiting { id: 0, party }], capacity);
                prop_assert_eq!(chosen.len(), 1);
            }
        }
    }

    #[test]
    fn an_offer_never_outlasts_its_entry_time() {
        assert_eq!(offer_expires_at(1_000, 500, 10_000), 1_500);
        assert_eq!(offer_expires_at(9_800, 500, 10_000), 10_000);
        assert_eq!(offer_expires_at(i64::MAX - 1, 500, i64::MAX), i64::MAX);
    }

    fn live_offer() -> OfferFacts {
        OfferFacts {
            slot: "2026-12-05T10:00".parse().expect("slot"),
            state: EntryState::Offered,
            party: 3,
            expires_ms: Some(2_000),
            hold_open: true,
            slot_ends_ms: Some(10_000),
        }
    }

    #[test]
    fn a_live_offer_is_taken_for_its_party_or_fewer() {
        assert_eq!(check_take(&live_offer(), 3, 1_000), Ok(()));
        assert_eq!(check_take(&live_offer(), 1, 1_999), Ok(()));
        assert_eq!(
            check_take(&live_offer(), 4, 1_000),
            Err(TakeRefusal::TooMany {
                party: 3,
                requested: 4
            })
        );
    }

    #[test]
    fn a_used_offer_says_so_even_once_its_time_is_up() {
        let taken = OfferFacts {
            state: EntryState::Taken,
            hold_open: false,
            ..live_offer()
        };
        assert_eq!(check_take(&taken, 9, 50_000), Err(TakeRefusal::Taken));
    }

    #[test]
    fn a_lapsed_offer_is_expired_before_anything_else_is_judged() {
        // By its time, though the sweep has not run yet.
        assert_eq!(
            check_take(&live_offer(), 9, 2_000),
            Err(TakeRefusal::Expired)
        );
        // Swept: its hold was released and the places passed on.
        let swept = OfferFacts {
            hold_open: false,
            ..live_offer()
        };
        assert_eq!(check_take(&swept, 1, 1_000), Err(TakeRefusal::Expired));
        for state in [EntryState::Ended, EntryState::Waiting] {
            let o = OfferFacts {
                state,
                ..live_offer()
            };
            assert_eq!(check_take(&o, 1, 1_000), Err(TakeRefusal::Expired));
        }
        let no_time = OfferFacts {
            expires_ms: None,
            ..live_offer()
        };
        assert_eq!(check_take(&no_time, 1, 1_000), Err(TakeRefusal::Expired));
    }

    #[test]
    fn an_offer_for_an_entry_time_that_is_over_is_refused() {
        let late = OfferFacts {
            expires_ms: Some(20_000),
            ..live_offer()
        };
        assert_eq!(
            check_take(&late, 2, 10_000),
            Err(TakeRefusal::SlotPast(late.slot))
        );
        // Too many is said first: the party has to be fixed anyway.
        assert!(matches!(
            check_take(&late, 4, 10_000),
            Err(TakeRefusal::TooMany { .. })
        ));
    }

    #[test]
    fn the_link_shows_open_taken_or_expired() {
        use EntryState::*;
        assert_eq!(offer_state(Offered, Some(2_000), 1_999), OfferState::Open);
        assert_eq!(
            offer_state(Offered, Some(2_000), 2_000),
            OfferState::Expired
        );
        assert_eq!(offer_state(Offered, None, 0), OfferState::Expired);
        assert_eq!(offer_state(Taken, Some(0), 5_000), OfferState::Taken);
        assert_eq!(offer_state(Ended, Some(9_000), 0), OfferState::Expired);
        assert_eq!(EntryState::from_stored("removed"), Ended);
        assert_eq!(EntryState::from_stored("expired"), Ended);
        assert_eq!(EntryState::from_stored("offered"), Offered);
        assert_eq!(EntryState::from_stored("waiting"), Waiting);
        assert_eq!(EntryState::from_stored("taken"), Taken);
    }
}
