//! How many visitors a room lets in at a time, and how long the rest will
//! wait.
//!
//! Three limits, the tightest wins:
//! - the rate the museum configured (a token bucket: the shop and the
//!   server were sized for it);
//! - visitors in the shop at once (`max_in_shop`): admitted visitors who
//!   have not booked yet and whose window is still open. When the sale
//!   serves them more slowly than they are let in, fewer leave the shop and
//!   fewer are let in: the rate follows what the sale takes;
//! - the places left: no more visitors shopping than the places can serve,
//!   at the admissions per booking observed in this sale (a little over, as
//!   some leave without booking), so that at the end nobody is let in to
//!   find everything gone.

use std::collections::VecDeque;

/// What the museum configures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaceRules {
    pub rate_per_minute: u32,
    pub max_in_shop: u32,
    /// Visitors let in per place left, in percent of the places' need at the
    /// observed admissions per booking (125: a quarter more).
    pub overbook_percent: u32,
}

/// How long the observed admission rate looks back.
const RATE_WINDOW_MS: i64 = 60_000;
/// Before this much history the estimate uses the configured rate.
const RATE_WARMUP_MS: i64 = 10_000;
/// Admissions per booking assumed before any was seen.
const FIRST_GUESS_PER_BOOKING: f64 = 2.0;

#[derive(Clone, Debug)]
pub struct Pace {
    rules: PaceRules,
    bucket: f64,
    last_ms: Option<i64>,
    since_ms: Option<i64>,
    admitted: VecDeque<(i64, u32)>,
    per_booking: f64,
    bookings: u64,
}

impl Pace {
    pub fn new(rules: PaceRules) -> Pace {
        Pace {
            rules,
            bucket: 0.0,
            last_ms: None,
            since_ms: None,
            admitted: VecDeque::new(),
            per_booking: FIRST_GUESS_PER_BOOKING,
            bookings: 0,
        }
    }

    pub fn rules(&self) -> PaceRules {
        self.rules
    }

    fn per_ms(&self) -> f64 {
        f64::from(self.rules.rate_per_minute) / 60_000.0
    }

    /// Visitors to let in now, given how many are shopping and the places
    /// left; call `admitted` with what was let in.
    pub fn allowance(&mut self, now_ms: i64, in_shop: u32, places_left: u32) -> u32 {
        self.since_ms.get_or_insert(now_ms);
        // A burst of at most one second's worth, and at least one visitor;
        // the door opens with the bucket full.
        let cap = (self.per_ms() * 1000.0).max(1.0);
        let added = match self.last_ms {
            Some(last) => self.per_ms() * (now_ms - last).max(0) as f64,
            None => cap,
        };
        self.last_ms = Some(now_ms);
        self.bucket = (self.bucket + added).min(cap);
        let by_rate = self.bucket.floor() as u32;
        let by_shop = self.rules.max_in_shop.saturating_sub(in_shop);
        let need = f64::from(places_left) * f64::from(self.rules.overbook_percent)
            / 100.0
            / self.per_booking.max(1.0);
        let by_places = (need.ceil() as u32).saturating_sub(in_shop);
        by_rate.min(by_shop).min(by_places)
    }

    pub fn admitted(&mut self, now_ms: i64, count: u32) {
        if count == 0 {
            return;
        }
        self.bucket = (self.bucket - f64::from(count)).max(0.0);
        self.admitted.push_back((now_ms, count));
        self.forget(now_ms);
    }

    /// An admitted visitor made their first booking of `admissions`.
    pub fn booked(&mut self, admissions: u32) {
        self.bookings += 1;
        // A running mean over the first hundred bookings, then a moving one.
        let weight = 1.0 / (self.bookings.min(100) as f64);
        self.per_booking += (f64::from(admissions) - self.per_booking) * weight;
    }

    pub fn per_booking(&self) -> f64 {
        self.per_booking
    }

    fn forget(&mut self, now_ms: i64) {
        while self
            .admitted
            .front()
            .is_some_and(|(at, _)| now_ms - at > RATE_WINDOW_MS)
        {
            self.admitted.pop_front();
        }
    }

    /// Visitors let in per second lately, or the configured rate before
    /// there is enough history to say.
    pub fn rate_per_s(&mut self, now_ms: i64) -> f64 {
        self.forget(now_ms);
        let Some(since) = self.since_ms else {
            return self.per_ms() * 1000.0;
        };
        let span = (now_ms - since).min(RATE_WINDOW_MS);
        if span < RATE_WARMUP_MS {
            return self.per_ms() * 1000.0;
        }
        let n: u32 = self.admitted.iter().map(|(_, c)| c).sum();
        f64::from(n) * 1000.0 / span as f64
    }

    /// Seconds until `ahead` visitors have gone in at the recent rate, and
    /// the error the page states with it: a quarter of the estimate plus
    /// fifteen seconds (the rate changes as visitors book and leave).
    pub fn estimate(&mut self, now_ms: i64, ahead: u32) -> Option<(u32, u32)> {
        let observed = self.rate_per_s(now_ms);
        // Nobody let in for a minute (the shop full, the sale paused): the
        // configured rate is all there is to go on, and the error says so.
        let (rate, stalled) = if observed > 0.0 {
            (observed, false)
        } else {
            (self.per_ms() * 1000.0, true)
        };
        if rate <= 0.0 {
            return None;
        }
        let secs = (f64::from(ahead) + 1.0) / rate;
        let secs = secs.min(f64::from(u32::MAX / 2)).ceil() as u32;
        let error = if stalled {
            secs.saturating_add(60)
        } else {
            secs / 4 + 15
        };
        Some((secs, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> PaceRules {
        PaceRules {
            rate_per_minute: 600,
            max_in_shop: 50,
            overbook_percent: 125,
        }
    }

    #[test]
    fn the_configured_rate_is_a_ceiling() {
        let mut p = Pace::new(rules());
        let mut let_in = 0;
        for step in 0..100 {
            let n = p.allowance(step * 100, 0, 1_000_000);
            p.admitted(step * 100, n);
            let_in += n;
        }
        // Ten seconds at ten a second.
        assert!((95..=110).contains(&let_in), "{let_in}");
    }

    #[test]
    fn a_full_shop_and_few_places_hold_the_door() {
        let mut p = Pace::new(rules());
        p.allowance(0, 0, 100);
        assert_eq!(p.allowance(5_000, 50, 1_000), 0, "shop full");
        assert_eq!(p.allowance(10_000, 0, 0), 0, "nothing left");
        // 8 places at 2 a booking, a quarter more: 5 visitors, 3 shopping.
        assert_eq!(p.allowance(15_000, 3, 8), 2);
        for _ in 0..200 {
            p.booked(4);
        }
        assert!((p.per_booking() - 4.0).abs() < 0.1);
    }

    #[test]
    fn the_estimate_follows_the_observed_rate() {
        let mut p = Pace::new(rules());
        p.allowance(0, 0, 1);
        assert_eq!(p.estimate(0, 99), Some((10, 17)));
        // 5 a second for a minute: half the configured rate.
        for s in 0..60 {
            p.admitted(s * 1000, 5);
        }
        let (secs, _) = p.estimate(60_000, 99).unwrap();
        assert!((19..=21).contains(&secs), "{secs}");
    }
}
