//! A place's order in the line, as one integer: random draws before the
//! opening sort below every arrival after it, and arrivals sort by time.

use serde::{Deserialize, Serialize};

/// Lower ranks are admitted first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rank(pub u64);

/// Arrivals after the opening have the top bit set, so they follow every
/// draw; the rest holds milliseconds since the opening and a sequence
/// number within the millisecond.
const ARRIVAL: u64 = 1 << 63;
const SEQ_BITS: u32 = 12;

impl Rank {
    /// A place drawn before the opening: `random` must come from a
    /// cryptographic RNG, so nobody can predict or steer a draw.
    pub fn drawn(random: u64) -> Rank {
        Rank(random >> 1)
    }

    /// A place taken after the opening, `since_opening_ms` after it; `seq`
    /// orders arrivals within one millisecond (wraps past 4,095, which only
    /// reorders arrivals of the same millisecond).
    pub fn arrived(since_opening_ms: i64, seq: u32) -> Rank {
        let ms = since_opening_ms.clamp(0, (1 << (63 - SEQ_BITS)) - 1) as u64;
        Rank(ARRIVAL | (ms << SEQ_BITS) | u64::from(seq & ((1 << SEQ_BITS) - 1)))
    }

    pub fn is_draw(self) -> bool {
        self.0 & ARRIVAL == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_draw_precedes_every_arrival_and_arrivals_keep_their_order() {
        assert!(Rank::drawn(u64::MAX) < Rank::arrived(0, 0));
        assert!(Rank::arrived(5, 4095) < Rank::arrived(6, 0));
        assert!(Rank::arrived(5, 1) < Rank::arrived(5, 2));
        assert!(Rank::drawn(7).is_draw());
        assert!(!Rank::arrived(-3, 0).is_draw());
    }
}
