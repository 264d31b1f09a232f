//! Ten thousand simulated visitors through one waiting room: half arrive
//! before the opening, half after. The line must draw the early ones at
//! random (uniformly: a test that arrival order fails), take the later ones
//! in arrival order, let everyone present in exactly once at the configured
//! rate, and tell the truth about the wait.

use std::collections::HashMap;

use tessera_core::queue::line::{Line, LineError, LineRules, PassError, PlaceView, Supply};
use tessera_core::queue::PaceRules;
use tessera_core::queue::Rank;
use uuid::Uuid;

const OPENS: i64 = 600_000;
const EARLY: usize = 5_000;
const LATE: usize = 5_000;
const RATE_PER_S: u32 = 20;
const STEP: i64 = 500;

/// splitmix64: a fixed seed makes the run repeatable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn rules() -> LineRules {
    LineRules {
        opens_at_ms: OPENS,
        window_ms: 120_000,
        away_after_ms: 30_000,
        max_per_client: 1,
        max_places: 100_000,
        pace: PaceRules {
            rate_per_minute: RATE_PER_S * 60,
            max_in_shop: 1_000,
            overbook_percent: 125,
        },
    }
}

fn session(i: usize) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&(i as u64).to_be_bytes());
    s
}

struct Run {
    /// Visitor index (arrival order) of each admission, in admission order.
    order: Vec<usize>,
    admitted_at: HashMap<usize, i64>,
    /// (visitor, predicted wait in s, stated error in s, asked at).
    estimates: Vec<(usize, u32, u32, i64)>,
    per_second: HashMap<i64, u32>,
}

fn simulate(seed: u64) -> Run {
    let mut rng = Rng(seed);
    let mut line = Line::new(rules());
    // Early arrivals at random moments of the ten minutes before opening,
    // numbered in the order they arrive; late ones at 25 a second after.
    let mut early: Vec<i64> = (0..EARLY)
        .map(|_| (rng.next() % OPENS as u64) as i64)
        .collect();
    early.sort_unstable();
    let arrivals: Vec<i64> = early
        .into_iter()
        .chain((0..LATE).map(|k| OPENS + 40 * k as i64))
        .collect();
    let ids: Vec<Uuid> = (0..arrivals.len())
        .map(|i| Uuid::from_u128(i as u128 + 1))
        .collect();
    let index: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut run = Run {
        order: Vec::new(),
        admitted_at: HashMap::new(),
        estimates: Vec::new(),
        per_second: HashMap::new(),
    };
    let mut next = 0;
    let mut t = 0;
    while run.order.len() < arrivals.len() {
        while next < arrivals.len() && arrivals[next] <= t {
            line.join(t, ids[next], session(next), next as u128, rng.next())
                .expect("join");
            next += 1;
        }
        for id in line.tick(
            t,
            Supply {
                places_left: 1_000_000,
            },
        ) {
            let i = index[&id];
            assert!(
                run.admitted_at.insert(i, t).is_none(),
                "visitor {i} let in twice"
            );
            run.order.push(i);
            *run.per_second.entry(t / 1000).or_default() += 1;
            // They book straight away: the shop never fills, so only the
            // rate limits.
            line.booked(id, 2);
        }
        // Everyone waiting asks every 5 s, each at their own moment.
        let group = ((t / STEP) % 10) as usize;
        for i in (group..next).step_by(10) {
            let id = &ids[i];
            if !run.admitted_at.contains_key(&i) {
                let view = line.poll(t, *id, session(i)).expect("own place");
                if let PlaceView::Waiting {
                    eta_s: Some(eta),
                    eta_error_s: Some(err),
                    ..
                } = view
                {
                    if t >= OPENS + 20_000 && i % 97 == 0 {
                        run.estimates.push((i, eta, err, t));
                    }
                }
            }
        }
        t += STEP;
        assert!(
            t < 3_600_000,
            "the line stopped moving with {} let in",
            run.order.len()
        );
    }
    run
}

/// Pearson's chi-square of a 10×10 table: arrival decile against admission
/// decile, for the early arrivals.
fn chi_square(positions: &[(usize, usize)], n: usize) -> f64 {
    let mut table = [[0f64; 10]; 10];
    for &(arrival, admitted) in positions {
        table[arrival * 10 / n][admitted * 10 / n] += 1.0;
    }
    let expected = n as f64 / 100.0;
    table
        .iter()
        .flatten()
        .map(|o| (o - expected).powi(2) / expected)
        .sum()
}

/// The 0.1 % critical value of chi-square with 81 degrees of freedom.
const CHI2_81_P001: f64 = 126.1;

#[test]
fn ten_thousand_visitors_are_drawn_fairly_then_served_in_arrival_order() {
    let run = simulate(20_261_203);
    let n = EARLY + LATE;
    assert_eq!(run.order.len(), n, "everyone let in");
    assert_eq!(run.admitted_at.len(), n, "nobody twice");
    // Nobody who came before the opening goes in after someone who came
    // after it; the later ones go in exactly in arrival order.
    assert!(run.order[..EARLY].iter().all(|&i| i < EARLY));
    let late: Vec<usize> = run.order[EARLY..].to_vec();
    assert_eq!(
        late,
        (EARLY..n).collect::<Vec<_>>(),
        "late ones in arrival order"
    );
    // The early ones: where they went in has nothing to do with when they
    // came. The same statistic on arrival order must fail, or the test
    // could not tell.
    let drawn: Vec<(usize, usize)> = run.order[..EARLY]
        .iter()
        .enumerate()
        .map(|(position, &arrival)| (arrival, position))
        .collect();
    let fair = chi_square(&drawn, EARLY);
    let queue: Vec<(usize, usize)> = (0..EARLY).map(|i| (i, i)).collect();
    let unfair = chi_square(&queue, EARLY);
    eprintln!("chi-square of the draw {fair:.1}, of arrival order {unfair:.1} (0.1 % critical {CHI2_81_P001})");
    assert!(
        fair < CHI2_81_P001,
        "draw not uniform: chi-square {fair:.1}"
    );
    assert!(
        unfair > CHI2_81_P001,
        "the test cannot tell arrival order: {unfair:.1}"
    );
    // The first tenth to arrive is spread over the whole line: mean
    // position within four standard errors of the middle.
    let first: Vec<f64> = drawn
        .iter()
        .filter(|(a, _)| *a < EARLY / 10)
        .map(|(_, p)| *p as f64)
        .collect();
    let mean = first.iter().sum::<f64>() / first.len() as f64;
    let se = (EARLY as f64 / 12f64.sqrt()) / (first.len() as f64).sqrt();
    assert!(
        (mean - EARLY as f64 / 2.0).abs() < 4.0 * se,
        "first arrivals sit at {mean:.0} on average"
    );
    // The rate: never more in one second than the configured rate and the
    // one-second burst allow.
    let busiest = run.per_second.values().max().copied().unwrap_or(0);
    assert!(
        busiest <= 2 * RATE_PER_S,
        "{busiest} let in within one second"
    );
    // The estimates shown: at least 95 % within the error they stated.
    assert!(
        run.estimates.len() > 50,
        "{} estimates",
        run.estimates.len()
    );
    let right = run
        .estimates
        .iter()
        .filter(|(i, eta, err, asked)| {
            let waited = (run.admitted_at[i] - asked) as f64 / 1000.0;
            (waited - f64::from(*eta)).abs() <= f64::from(*err)
        })
        .count();
    assert!(
        right * 100 >= run.estimates.len() * 95,
        "{right} of {} estimates within their stated error",
        run.estimates.len()
    );
}

fn small_line(opens: i64) -> Line {
    let mut r = rules();
    r.opens_at_ms = opens;
    r.max_per_client = 2;
    Line::new(r)
}

#[test]
fn one_place_per_session_a_cap_per_client_and_a_copied_token_refused() {
    let mut line = small_line(0);
    let a = Uuid::from_u128(1);
    let first = line.join(10, a, session(1), 7, 1).unwrap();
    // The same browser session asking again keeps its one place.
    assert_eq!(
        line.join(20, Uuid::from_u128(2), session(1), 7, 2),
        Ok(first)
    );
    line.join(30, Uuid::from_u128(3), session(2), 7, 3).unwrap();
    assert_eq!(
        line.join(40, Uuid::from_u128(4), session(3), 7, 4),
        Err(LineError::ClientCap(2))
    );
    // The place asked for from another session: refused, and unchanged.
    assert_eq!(line.poll(50, a, session(9)), Err(LineError::NotYours));
    assert!(matches!(
        line.poll(60, a, session(1)),
        Ok(PlaceView::Waiting { .. })
    ));
    // Leaving frees the client's place.
    line.leave(a, session(1)).unwrap();
    assert!(line.join(70, Uuid::from_u128(5), session(3), 7, 5).is_ok());
}

#[test]
fn the_away_are_passed_over_and_keep_their_place_when_back() {
    let mut r = rules();
    r.opens_at_ms = 0;
    // One a second, so that each tick lets in one visitor.
    r.pace.rate_per_minute = 60;
    let mut line = Line::new(r);
    let ids: Vec<Uuid> = (1..=4).map(Uuid::from_u128).collect();
    for (i, id) in ids.iter().enumerate() {
        line.join(i as i64, *id, session(i), i as u128, 0).unwrap();
    }
    // Visitor 0, first in line, goes quiet; the others keep asking.
    let mut t = 10;
    while t < 40_000 {
        for (i, id) in ids.iter().enumerate().skip(1) {
            line.poll(t, *id, session(i)).unwrap();
        }
        t += 1_000;
    }
    let places = Supply { places_left: 100 };
    assert_eq!(
        line.tick(t, places),
        vec![ids[1]],
        "the away one passed over"
    );
    // Back: first in line again, and the next one in.
    assert!(matches!(
        line.poll(t + 10, ids[0], session(0)),
        Ok(PlaceView::Waiting { ahead: 0, .. })
    ));
    assert_eq!(line.tick(t + 1_000, places), vec![ids[0]]);
    assert_eq!(line.tick(t + 2_000, places), vec![ids[2]]);
}

#[test]
fn sold_out_tells_everyone_and_returned_places_reopen_the_door() {
    let mut line = small_line(0);
    for i in 0..50 {
        line.join(
            i,
            Uuid::from_u128(i as u128 + 1),
            session(i as usize),
            i as u128,
            0,
        )
        .unwrap();
    }
    assert!(line.tick(1_000, Supply { places_left: 0 }).is_empty());
    for i in 0..50 {
        let view = line.poll(1_100, Uuid::from_u128(i as u128 + 1), session(i as usize));
        assert!(matches!(view, Ok(PlaceView::SoldOut { .. })), "{view:?}");
    }
    // Four places come back (an expired checkout): at 2 per booking and a
    // quarter more, three visitors go in, not fifty.
    let let_in = line.tick(2_000, Supply { places_left: 4 });
    assert_eq!(let_in.len(), 3, "{let_in:?}");
    assert_eq!(line.in_shop(), 3);
}

#[test]
fn a_pass_books_while_let_in_at_most_three_holds_and_never_after_leaving() {
    let mut line = small_line(0);
    let a = Uuid::from_u128(1);
    line.join(0, a, session(1), 1, 0).unwrap();
    let admitted = line.tick(1_000, Supply { places_left: 100 });
    assert_eq!(admitted, vec![a]);
    let until = 1_000 + rules().window_ms;
    let key = |n: u8| [n; 8];
    for n in 1..=3 {
        assert_eq!(line.use_pass(2_000, a, session(1), until, key(n)), Ok(true));
    }
    assert_eq!(
        line.use_pass(2_000, a, session(1), until, key(4)),
        Err(PassError::Used)
    );
    // A retry of a hold made before is always let through to its answer,
    // also after the window and after leaving.
    assert_eq!(
        line.use_pass(until + 5, a, session(1), until, key(2)),
        Ok(false)
    );
    line.leave(a, session(1)).unwrap();
    assert_eq!(
        line.use_pass(3_000, a, session(1), until, key(2)),
        Ok(false)
    );
    // A new hold after leaving: refused.
    line.pass_unused(a, key(3));
    assert_eq!(
        line.use_pass(3_000, a, session(1), until, key(5)),
        Err(PassError::Over)
    );
}

#[test]
fn an_ended_place_never_comes_back_and_a_session_keeps_one_place() {
    let mut line = small_line(0);
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let rank = line.join(0, a, session(1), 1, 0).unwrap();
    line.leave(a, session(1)).unwrap();
    // Long after, the ended entry is forgotten; its token restores nothing.
    line.tick(10_000_000, Supply { places_left: 100 });
    assert_eq!(
        line.restore(10_000_001, a, rank, session(1), 1),
        Err(LineError::Unknown)
    );
    // A session with a live place cannot bring back a second one.
    line.join(10_000_002, b, session(2), 2, 0).unwrap();
    assert_eq!(
        line.restore(
            10_000_003,
            Uuid::from_u128(3),
            Rank::drawn(5),
            session(2),
            2
        ),
        Err(LineError::Unknown)
    );
}

#[test]
fn before_the_opening_leaving_and_joining_again_is_no_second_draw() {
    let mut line = small_line(1_000_000);
    // Two places per client: a third join after leaving one is refused
    // until the opening (the draw given up still counts).
    line.join(0, Uuid::from_u128(1), session(1), 9, 11).unwrap();
    line.join(1, Uuid::from_u128(2), session(2), 9, 22).unwrap();
    line.leave(Uuid::from_u128(2), session(2)).unwrap();
    assert_eq!(
        line.join(2, Uuid::from_u128(3), session(3), 9, 33),
        Err(LineError::ClientCap(2))
    );
    // From the opening, the client counts its live places again.
    line.tick(1_000_000, Supply { places_left: 100 });
    assert!(line
        .join(1_000_001, Uuid::from_u128(4), session(4), 9, 44)
        .is_ok());
}

#[test]
fn a_pass_from_before_a_restart_counts_as_a_live_place() {
    let mut r = rules();
    r.opens_at_ms = 0;
    r.max_places = 1;
    let mut line = Line::new(r);
    let until = 600_000;
    assert_eq!(
        line.use_pass(1_000, Uuid::from_u128(1), session(1), until, [1; 8]),
        Ok(true)
    );
    // The room's bound is one place, and the restored pass holds it.
    assert_eq!(
        line.join(1_001, Uuid::from_u128(2), session(2), 2, 0),
        Err(LineError::Full)
    );
    line.leave(Uuid::from_u128(1), session(1)).unwrap();
    assert!(line
        .join(1_002, Uuid::from_u128(3), session(3), 3, 0)
        .is_ok());
}
