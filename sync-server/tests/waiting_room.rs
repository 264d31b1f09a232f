//! The waiting room over HTTP, on a real server: visitors who join before
//! the opening are drawn at random, later ones queue in arrival order, the
//! line lets in at the configured pace and nobody twice or out of turn; a
//! place or a pass copied into another browser session is refused, a day
//! sold through the room needs a pass while other days do not, a client
//! cannot take more places than its cap, and a restart loses no place.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_server::testkit::{slot, ServerProcess, UNLIMITED_CLIENTS_TOML};

const EARLY: usize = 400;
const LATE: usize = 120;
/// Visitors let in and not yet booked at once: the line moves only when
/// the test lets it, so positions can be read between moves.
const IN_SHOP: usize = 20;

struct Visitor {
    cookie: String,
    place: String,
}

fn cookie_of(r: &reqwest::Response) -> Option<String> {
    let set = r.headers().get("set-cookie")?.to_str().ok()?;
    set.split(';').next().map(str::to_string)
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value, Option<String>) {
    let r = req.send().await.expect("request");
    let status = r.status();
    let cookie = cookie_of(&r);
    let text = r.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        cookie,
    )
}

async fn join(
    http: &reqwest::Client,
    base: &str,
    room: &str,
    cookie: Option<&str>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = http.post(format!("{base}/v1/queue/{room}/join"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    send(req).await
}

async fn poll(http: &reqwest::Client, base: &str, room: &str, v: &Visitor) -> (StatusCode, Value) {
    let (s, b, _) = send(
        http.get(format!("{base}/v1/queue/{room}/place"))
            .header("cookie", &v.cookie)
            .header("tessera-queue-place", &v.place),
    )
    .await;
    (s, b)
}

/// A server whose clock stands on the test day at 11:05, with room
/// `blockbuster` selling the next day from `opens_in` from now, and room
/// `small` (two places per client) selling the day after.
fn server(dir: &tempfile::TempDir, opens_in: Duration) -> ServerProcess {
    let day = tessera_server::testkit::test_day();
    let offset = tessera_server::testkit::offset_for(day, "11:05").expect("offset");
    let opens = jiff::Timestamp::now()
        + jiff::SignedDuration::from_secs(offset)
        + jiff::SignedDuration::try_from(opens_in).expect("duration");
    let next = day.tomorrow().expect("date");
    let after = next.tomorrow().expect("date");
    let path = dir.path().join("rooms.toml");
    std::fs::write(
        &path,
        format!(
            "{UNLIMITED_CLIENTS_TOML}
[[waiting_rooms]]
id = \"blockbuster\"
name = \"Vermeer\"
from = \"{next}\"
until = \"{next}\"
opens_at = \"{opens}\"
rate_per_minute = 60000
max_in_shop = {IN_SHOP}
max_places_per_client = 1000000
away_after_secs = 3600

[[waiting_rooms]]
id = \"small\"
name = \"Small\"
from = \"{after}\"
until = \"{after}\"
opens_at = \"{opens}\"
max_places_per_client = 2
"
        ),
    )
    .expect("write config");
    ServerProcess::start_at("11:05", &["--config", &path.display().to_string()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_visitors_are_drawn_late_ones_queue_and_each_goes_in_once_in_turn() {
    let dir = tempfile::tempdir().expect("dir");
    // Long enough for every early visitor to join on a busy machine; the
    // test checks that they did.
    let server = server(&dir, Duration::from_secs(20));
    let base = server.url.clone();
    let http = reqwest::Client::new();
    let room = "blockbuster";

    // Early visitors, eight at a time, numbered by when they joined.
    let mut early: Vec<Visitor> = Vec::new();
    for chunk in 0..EARLY.div_ceil(8) {
        let joins = (0..8.min(EARLY - chunk * 8)).map(|_| join(&http, &base, room, None));
        for (status, body, cookie) in futures_util::future::join_all(joins).await {
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(
                body["state"], "before_opening",
                "joined after the opening: {body}"
            );
            assert!(
                body["position"].is_null(),
                "no position before the draw: {body}"
            );
            early.push(Visitor {
                cookie: cookie.expect("session cookie"),
                place: body["place"].as_str().expect("place").to_string(),
            });
        }
    }
    // One session, one place: joining again (another tab) gives it back.
    let (_, again, none) = join(&http, &base, room, Some(&early[0].cookie)).await;
    assert_eq!(again["place"].as_str(), Some(early[0].place.as_str()));
    assert!(none.is_none(), "no new session for a session that has one");

    // The opening.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, info, _) = send(http.get(format!("{base}/v1/queue/{room}"))).await;
        if info["phase"] == "open" {
            break;
        }
        assert!(Instant::now() < deadline, "the room never opened: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Late visitors, one after another.
    let mut late: Vec<Visitor> = Vec::new();
    for _ in 0..LATE {
        let (status, body, cookie) = join(&http, &base, room, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        late.push(Visitor {
            cookie: cookie.expect("cookie"),
            place: body["place"].as_str().expect("place").to_string(),
        });
    }

    // Let the line move IN_SHOP at a time: poll everyone, note who is in
    // and each waiting visitor's position, then those let in leave.
    let everyone: Vec<&Visitor> = early.iter().chain(late.iter()).collect();
    let mut admitted_round: HashMap<usize, usize> = HashMap::new();
    let mut first_positions: HashMap<usize, u64> = HashMap::new();
    let mut round = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while admitted_round.len() < everyone.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} let in",
            admitted_round.len(),
            everyone.len()
        );
        // A round starts once the line has let in the next ones (at its
        // tick after the last round's leavers), so nobody is let in while
        // a round is read.
        let expected = (admitted_round.len() + IN_SHOP).min(everyone.len()) as u64;
        let wait_until = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, info, _) = send(http.get(format!("{base}/v1/queue/{room}"))).await;
            if info["admitted"].as_u64() >= Some(expected) {
                break;
            }
            assert!(Instant::now() < wait_until, "the line did not move: {info}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut in_now = Vec::new();
        for (i, v) in everyone.iter().enumerate() {
            if admitted_round.contains_key(&i) {
                continue;
            }
            let (status, body) = poll(&http, &base, room, v).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            match body["state"].as_str() {
                Some("admitted") => {
                    assert!(body["pass"].is_string(), "{body}");
                    in_now.push(i);
                }
                Some("waiting") => {
                    first_positions
                        .entry(i)
                        .or_insert_with(|| body["position"].as_u64().expect("position"));
                }
                other => panic!("visitor {i}: {other:?} {body}"),
            }
        }
        assert!(in_now.len() <= IN_SHOP, "{} in at once", in_now.len());
        for i in in_now {
            admitted_round.insert(i, round);
            let (s, b, _) = send(
                http.delete(format!("{base}/v1/queue/{room}/place"))
                    .header("cookie", &everyone[i].cookie)
                    .header("tessera-queue-place", &everyone[i].place),
            )
            .await;
            assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
        }
        round += 1;
    }

    // Every early visitor went in before every late one, and the late ones
    // in the order they came.
    let last_early = (0..EARLY).map(|i| admitted_round[&i]).max().unwrap();
    let first_late = (EARLY..everyone.len())
        .map(|i| admitted_round[&i])
        .min()
        .unwrap();
    assert!(
        last_early <= first_late,
        "an early visitor after a late one"
    );
    let late_rounds: Vec<usize> = (EARLY..everyone.len())
        .map(|i| admitted_round[&i])
        .collect();
    assert!(
        late_rounds.windows(2).all(|w| w[0] <= w[1]),
        "late ones out of arrival order: {late_rounds:?}"
    );
    // Positions first seen after the opening, for those not let in at once:
    // the order they were let in.
    let mut by_position: Vec<(u64, usize)> =
        first_positions.iter().map(|(i, p)| (*p, *i)).collect();
    by_position.sort_unstable();
    let rounds: Vec<usize> = by_position.iter().map(|(_, i)| admitted_round[i]).collect();
    if let Some(k) = rounds.windows(2).position(|w| w[0] > w[1]) {
        panic!(
            "let in out of turn: visitor {} (position {}) in round {}, visitor {} (position {}) in round {}",
            by_position[k].1, by_position[k].0, rounds[k], by_position[k + 1].1, by_position[k + 1].0, rounds[k + 1]
        );
    }
    // The draw: where the early visitors stood has nothing to do with when
    // they came. A 4×4 table of join quarter against admission quarter
    // (chi-square, 9 degrees of freedom, 0.1 % level 27.9); the same
    // statistic on the join order itself is far above it.
    let mut order: Vec<(usize, usize)> = (0..EARLY).map(|i| (admitted_round[&i], i)).collect();
    order.sort_unstable();
    let chi = |pairs: &[(usize, usize)]| {
        let mut t = [[0f64; 4]; 4];
        for (position, joined) in pairs {
            t[joined * 4 / EARLY][position * 4 / EARLY] += 1.0;
        }
        let e = EARLY as f64 / 16.0;
        t.iter().flatten().map(|o| (o - e).powi(2) / e).sum::<f64>()
    };
    let drawn: Vec<(usize, usize)> = order
        .iter()
        .enumerate()
        .map(|(pos, (_, joined))| (pos, *joined))
        .collect();
    let queue: Vec<(usize, usize)> = (0..EARLY).map(|i| (i, i)).collect();
    let (fair, unfair) = (chi(&drawn), chi(&queue));
    eprintln!("chi-square of the draw {fair:.1}, of join order {unfair:.1} (0.1 % level 27.9)");
    assert!(fair < 27.9, "the draw follows join order: {fair:.1}");
    assert!(unfair > 27.9);
    // Once let in and gone, a place does not come back in.
    let (_, gone) = poll(&http, &base, room, everyone[0]).await;
    assert_eq!(gone["state"], "over", "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_are_refused_days_of_the_sale_need_a_pass_and_a_restart_keeps_places() {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = server(&dir, Duration::from_secs(0));
    let base = server.url.clone();
    let http = reqwest::Client::new();
    let room = "blockbuster";
    let day = server.day;
    let next = day.tomorrow().unwrap();
    let hold = |cookie: Option<String>, pass: Option<String>, date, key: &str| {
        let mut req = http
            .post(format!("{base}/v1/holds"))
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(json!({"slot_id": slot(date, "15:30"), "items": [{"product_id": "adult", "quantity": 1}]}).to_string());
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(p) = pass {
            req = req.header("tessera-queue-pass", p);
        }
        send(req)
    };

    // Without a pass, a day of the sale is refused with a reason; other
    // days sell as always.
    let (s, b, _) = hold(None, None, next, "no-pass").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["error"]["code"], "queue_required", "{b}");
    let (s, b, _) = hold(None, None, day, "other-day").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // Join (the room is open) and wait to be let in.
    let (_, body, cookie) = join(&http, &base, room, None).await;
    let me = Visitor {
        cookie: cookie.expect("cookie"),
        place: body["place"].as_str().unwrap().to_string(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let pass = loop {
        let (_, b) = poll(&http, &base, room, &me).await;
        if let Some(p) = b["pass"].as_str() {
            break p.to_string();
        }
        assert!(Instant::now() < deadline, "never let in: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The place copied into another browser (another session, or none).
    let (_, _, other) = join(&http, &base, "small", None).await;
    let thief = Visitor {
        cookie: other.expect("cookie"),
        place: me.place.clone(),
    };
    let (s, b) = poll(&http, &base, room, &thief).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["error"]["code"], "place_not_yours");
    let (s, b, _) = send(
        http.get(format!("{base}/v1/queue/{room}/place"))
            .header("tessera-queue-place", &me.place),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    // The pass copied: refused; a changed pass: refused; the pass in its
    // own session: the hold is made.
    let (s, b, _) = hold(
        Some(thief.cookie.clone()),
        Some(pass.clone()),
        next,
        "thief",
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("pass_not_yours")),
        "{b}"
    );
    let mut forged = pass.clone();
    forged.replace_range(10..11, if &pass[10..11] == "A" { "B" } else { "A" });
    let (s, b, _) = hold(Some(me.cookie.clone()), Some(forged), next, "forged").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("bad_pass")),
        "{b}"
    );
    let (s, b, _) = hold(Some(me.cookie.clone()), Some(pass.clone()), next, "mine").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (_, info, _) = send(http.get(format!("{base}/v1/queue/{room}"))).await;
    assert_eq!(
        info["in_shop"], 0,
        "a visitor who booked no longer counts as shopping: {info}"
    );

    // The per-client cap: two places, then a reason.
    for _ in 0..2 {
        let (s, b, _) = join(&http, &base, "small", None).await;
        if s != StatusCode::OK {
            assert_eq!(b["error"]["code"], "too_many_places", "{b}");
        }
    }
    let (s, b, _) = join(&http, &base, "small", None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(b["error"]["code"], "too_many_places");
    // Bad input: an unknown room, a malformed place.
    let (s, b, _) = join(&http, &base, "no-such-room", None).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_room"))
    );
    let junk = Visitor {
        cookie: me.cookie.clone(),
        place: "é".repeat(30),
    };
    let (s, b) = poll(&http, &base, room, &junk).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_place")),
        "{b}"
    );

    // A second visitor waiting when the server restarts keeps the place,
    // and the pass given before the restart still books.
    let (_, body, cookie) = join(&http, &base, room, None).await;
    let second = Visitor {
        cookie: cookie.unwrap(),
        place: body["place"].as_str().unwrap().to_string(),
    };
    server.restart();
    let (s, b) = poll(&http, &base, room, &second).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        matches!(b["state"].as_str(), Some("waiting" | "admitted")),
        "{b}"
    );
    let (s, b, _) = hold(
        Some(me.cookie.clone()),
        Some(pass.clone()),
        next,
        "after-restart",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // A retry gets its first answer; a third hold is allowed (a checkout
    // that failed), a fourth is not.
    let (s, _, _) = hold(Some(me.cookie.clone()), Some(pass.clone()), next, "mine").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b, _) = hold(Some(me.cookie.clone()), Some(pass.clone()), next, "third").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b, _) = hold(Some(me.cookie.clone()), Some(pass.clone()), next, "fourth").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("pass_used")),
        "{b}"
    );
    // Given up, the pass books nothing more.
    let (s, b, _) = send(
        http.delete(format!("{base}/v1/queue/{room}/place"))
            .header("cookie", &me.cookie)
            .header("tessera-queue-place", &me.place),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b, _) = hold(Some(me.cookie.clone()), Some(pass), next, "after-leaving").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("pass_over")),
        "{b}"
    );
}
