//! The waiting list of a sold-out entry time: strict first come, places that
//! come back are held for the first in line whose party fits and mailed to
//! them, unused offers pass on, and held plus sold never exceeds capacity.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::slot::SlotId;
use tessera_server::testkit::{slot, Api, ServerProcess, UNLIMITED_CLIENTS_TOML};

/// A server whose offers hold their places for `offer_seconds`; the config
/// file lives in `dir`, which must outlive the server.
fn server_with_offers(dir: &tempfile::TempDir, offer_seconds: u32) -> ServerProcess {
    let path = dir.path().join("waitlist.toml");
    std::fs::write(
        &path,
        format!("{UNLIMITED_CLIENTS_TOML}\n[waitlist]\noffer_seconds = {offer_seconds}\n"),
    )
    .expect("write config");
    let path = path.display().to_string();
    ServerProcess::start_at("11:05", &["--config", &path])
}

/// Polls `check` until it returns `Some`, or fails after 20 s.
async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_available(api: &Api, s: SlotId, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = api.available(s).await;
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "slot {s}: {seen} available, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn join(api: &Api, key: &str, s: SlotId, email: &str, party: u32) -> (StatusCode, Value) {
    let body = json!({"slot_id": s, "email": email, "party": party, "language": "en"});
    api.post_raw(
        "/v1/waitlist",
        &[("idempotency-key", key)],
        &body.to_string(),
    )
    .await
    .expect("join")
}

async fn take(api: &Api, key: &str, token: &str, items: Value) -> (StatusCode, Value) {
    api.post_raw(
        &format!("/v1/offers/{token}/hold"),
        &[("idempotency-key", key)],
        &json!({ "items": items }).to_string(),
    )
    .await
    .expect("take offer")
}

/// The token in the offer mailed to `email`, once it is queued.
fn offer_token(server: &ServerProcess, email: &str) -> Option<String> {
    let payload = server
        .query(&format!(
            "SELECT payload FROM mail_outbox WHERE kind = 'waitlist_offer' AND recipient = '{email}'"
        ))
        .into_iter()
        .next()?
        .remove(0);
    let payload: Value = serde_json::from_str(&payload).ok()?;
    let link = payload["link"].as_str()?;
    assert!(
        link.starts_with(&format!("{}/offer/", server.url)),
        "the link leads to the shop's offer page: {link}"
    );
    assert_eq!(payload["offer"]["email"], email);
    Some(link.rsplit('/').next()?.to_string())
}

fn entry_state(server: &ServerProcess, email: &str) -> String {
    server.query_one(&format!(
        "SELECT state FROM waitlist WHERE email = '{email}' ORDER BY seq DESC LIMIT 1"
    ))
}

/// Held (checkouts and offers) plus sold online plus leased, from the
/// database, never above capacity.
fn assert_within_capacity(server: &ServerProcess, s: SlotId) {
    let [capacity, sold, held] = server.numbers(&format!(
        "SELECT capacity, sold_online,
                (SELECT COALESCE(SUM(admissions), 0) FROM holds WHERE slot_id = '{s}' AND status = 'held')
         FROM slots WHERE slot_id = '{s}'"
    ));
    assert!(
        sold + held <= capacity,
        "{sold} sold + {held} held > capacity {capacity}"
    );
}

fn report(server: &ServerProcess) -> Value {
    let out = server.admin(&[
        "report",
        "--date",
        &server.day.to_string(),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("report json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_places_go_to_the_first_in_line_whose_party_fits() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server_with_offers(&dir, 600);
    let api = server.api();
    let s = slot(server.day, "14:00");
    server.set_capacity(s, 6);
    wait_available(&api, s, 6).await;

    // Sold out: four places in a checkout, two sold.
    let (status, hold) = api
        .hold("h4", s, json!([{"product_id": "adult", "quantity": 4}]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, order) = api
        .buy("b2", s, json!([{"product_id": "adult", "quantity": 2}]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(api.available(s).await, 0);

    // Bad joins are refused and change nothing.
    let (status, body) = join(&api, "big", s, "big@example.org", 7).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "party_too_large");
    let free = slot(server.day, "15:00");
    let (status, body) = join(&api, "cart", free, "cart@example.org", 21).await;
    assert_eq!(body["error"]["code"], "party_too_large", "{status} {body}");
    let (status, body) = join(&api, "free", free, "free@example.org", 2).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "not_sold_out");
    let (status, body) = join(&api, "noat", s, "not-an-address", 2).await;
    assert_eq!(body["error"]["code"], "invalid_body", "{status} {body}");
    let past = slot(server.day, "10:00");
    let (status, body) = join(&api, "past", past, "late@example.org", 2).await;
    assert_eq!(body["error"]["code"], "slot_past", "{status} {body}");
    let count = server.count("SELECT COUNT(*) FROM waitlist");
    assert_eq!(count, 0);

    // The line, in order of arrival.
    let (status, alice) = join(&api, "alice", s, "alice@example.org", 5).await;
    assert_eq!(status, StatusCode::CREATED, "{alice}");
    assert_eq!(alice["position"], 1);
    let (_, bob) = join(&api, "bob", s, "bob@example.org", 3).await;
    assert_eq!(bob["position"], 2);
    let (_, carol) = join(&api, "carol", s, "carol@example.org", 1).await;
    assert_eq!(carol["position"], 3);
    let (_, dave) = join(&api, "dave", s, "dave@example.org", 1).await;
    assert_eq!(dave["position"], 4);
    // The same address again keeps its place; the same key replays.
    let (status, again) = join(&api, "alice-again", s, "ALICE@example.org", 5).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["entry_id"], alice["entry_id"]);
    assert_eq!(again["position"], 1);
    let (status, replay) = join(&api, "alice", s, "alice@example.org", 5).await;
    assert_eq!((status, &replay), (StatusCode::CREATED, &alice));

    // Four places come back. Alice's party of 5 does not fit and keeps her
    // place; Bob's 3 does, then Carol's 1; nothing is left for Dave.
    let (status, _) = api.cancel(hold["hold_id"].as_str().unwrap()).await.unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let bob_token = wait_for("bob's offer", || offer_token(&server, "bob@example.org")).await;
    let carol_token = wait_for("carol's offer", || {
        offer_token(&server, "carol@example.org")
    })
    .await;
    assert_eq!(entry_state(&server, "alice@example.org"), "waiting");
    assert_eq!(entry_state(&server, "dave@example.org"), "waiting");
    assert!(offer_token(&server, "dave@example.org").is_none());
    // The offered places are held: nobody else can book them.
    assert_eq!(api.available(s).await, 0);
    let (status, body) = api
        .hold("snipe", s, json!([{"product_id": "adult", "quantity": 1}]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_within_capacity(&server, s);

    // Offers are durable: after a crash their places are still held.
    server.restart();
    let api = server.api();
    assert_eq!(api.available(s).await, 0);
    assert_eq!(entry_state(&server, "bob@example.org"), "offered");

    // The link shows the offer; a changed or made-up token shows nothing.
    let (status, offer) = api.get(&format!("/v1/offers/{bob_token}")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{offer}");
    assert_eq!(offer["state"], "open");
    assert_eq!(offer["party"], 3);
    assert_eq!(offer["slot_id"], s.to_string());
    let mut tampered: Vec<char> = bob_token.chars().collect();
    tampered[10] = if tampered[10] == 'a' { 'b' } else { 'a' };
    let tampered: String = tampered.into_iter().collect();
    for bad in [tampered.as_str(), "nope", "%E2%82%AC"] {
        let (status, body) = api.get(&format!("/v1/offers/{bad}")).await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "unknown_offer");
        let (status, body) = take(
            &api,
            "t-bad",
            bad,
            json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {body}");
    }

    // The offer's hold is not a checkout anyone can confirm or cancel.
    let offer_hold =
        server.query_one("SELECT offer_hold_id FROM waitlist WHERE email = 'bob@example.org'");
    let (status, body) = api.confirm("c-offer", &offer_hold).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = api.cancel(&offer_hold).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Bob chooses more than offered: refused. Then 2 of his 3 places.
    let (status, body) = take(
        &api,
        "t-4",
        &bob_token,
        json!([{"product_id": "adult", "quantity": 4}]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "too_many_for_offer");
    let items =
        json!([{"product_id": "adult", "quantity": 1}, {"product_id": "child", "quantity": 1}]);
    let (status, bob_hold) = take(&api, "t-bob", &bob_token, items.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{bob_hold}");
    assert_eq!(bob_hold["admissions"], 2);
    let (status, replay) = take(&api, "t-bob", &bob_token, items.clone()).await;
    assert_eq!(
        (status, &replay["hold_id"]),
        (StatusCode::CREATED, &bob_hold["hold_id"])
    );
    let (status, body) = take(&api, "t-bob-2", &bob_token, items).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "offer_taken");
    let (_, offer) = api.get(&format!("/v1/offers/{bob_token}")).await.unwrap();
    assert_eq!(offer["state"], "taken");

    // The place Bob left goes to Dave (Alice's 5 still does not fit).
    wait_for("dave's offer", || offer_token(&server, "dave@example.org")).await;
    assert_eq!(entry_state(&server, "alice@example.org"), "waiting");
    assert_eq!(api.available(s).await, 0);
    assert_within_capacity(&server, s);

    // Bob's hold is an ordinary checkout: paid, it sells his 2 places.
    let (status, checkout) = api
        .checkout("c-bob", bob_hold["hold_id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{checkout}");
    let (status, _) = api
        .demo_pay(checkout["redirect_url"].as_str().unwrap(), "paid")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER);
    let done = api
        .await_checkout(checkout["checkout_id"].as_str().unwrap())
        .await;
    assert_eq!(done["state"], "confirmed", "{done}");
    let (_, booking) = api
        .get(&format!(
            "/v1/bookings/{}",
            done["booking_token"].as_str().unwrap()
        ))
        .await
        .unwrap();
    assert_eq!(
        booking["tickets"].as_array().map(Vec::len),
        Some(2),
        "{booking}"
    );
    assert_within_capacity(&server, s);
    let (_, offer) = api.get(&format!("/v1/offers/{carol_token}")).await.unwrap();
    assert_eq!(
        (offer["state"].as_str(), offer["party"].as_u64()),
        (Some("open"), Some(1))
    );

    let report = report(&server);
    let w = &report["waitlist"];
    assert_eq!(w["waiting"], json!({"entries": 1, "admissions": 5}), "{w}");
    assert_eq!(w["offered"], json!({"entries": 2, "admissions": 2}), "{w}");
    assert_eq!(w["taken"], json!({"entries": 1, "admissions": 3}), "{w}");
    assert_eq!(w["expired"], json!({"entries": 0, "admissions": 0}), "{w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_offer_passes_to_the_next_in_line_and_raised_capacity_is_offered() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_offers(&dir, 4);
    let api = server.api();
    let s = slot(server.day, "16:00");
    server.set_capacity(s, 2);
    wait_available(&api, s, 2).await;
    let (status, hold) = api
        .hold("h2", s, json!([{"product_id": "adult", "quantity": 2}]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{hold}");

    let (status, _) = join(&api, "dan", s, "dan@example.org", 2).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = join(&api, "eve", s, "eve@example.org", 2).await;
    assert_eq!(status, StatusCode::CREATED);

    api.cancel(hold["hold_id"].as_str().unwrap()).await.unwrap();
    let dan_token = wait_for("dan's offer", || offer_token(&server, "dan@example.org")).await;
    assert_eq!(entry_state(&server, "eve@example.org"), "waiting");
    assert_eq!(api.available(s).await, 0);

    // Dan lets it lapse: the places pass to Eve, never to the public.
    let eve_token = wait_for("eve's offer", || offer_token(&server, "eve@example.org")).await;
    assert_eq!(entry_state(&server, "dan@example.org"), "expired");
    let (_, offer) = api.get(&format!("/v1/offers/{dan_token}")).await.unwrap();
    assert_eq!(offer["state"], "expired");
    let (status, body) = take(
        &api,
        "t-dan",
        &dan_token,
        json!([{"product_id": "adult", "quantity": 2}]),
    )
    .await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(body["error"]["code"], "offer_expired");
    assert_within_capacity(&server, s);

    // Eve takes hers in time.
    let (status, eve_hold) = take(
        &api,
        "t-eve",
        &eve_token,
        json!([{"product_id": "adult", "quantity": 2}]),
    )
    .await;
    if status == StatusCode::GONE {
        // A very slow machine: four seconds passed between the offer and
        // this request. Nothing was double-sold either way.
        eprintln!("eve's offer lapsed before she could take it; later steps skipped");
        assert_within_capacity(&server, s);
        return;
    }
    assert_eq!(status, StatusCode::CREATED, "{eve_hold}");
    assert_eq!(entry_state(&server, "eve@example.org"), "taken");

    // The museum adds a place while the server runs: the next in line (a
    // party of 1) is offered it at once.
    let (status, _) = join(&api, "fay", s, "fay@example.org", 1).await;
    assert_eq!(status, StatusCode::CREATED);
    server.set_capacity(s, 3);
    wait_for("fay's offer", || offer_token(&server, "fay@example.org")).await;
    assert_eq!(api.available(s).await, 0);
    assert_within_capacity(&server, s);

    let report = report(&server);
    let w = &report["waitlist"];
    assert_eq!(w["expired"], json!({"entries": 1, "admissions": 2}), "{w}");
    assert_eq!(w["taken"], json!({"entries": 1, "admissions": 2}), "{w}");
    assert_eq!(w["offered"], json!({"entries": 1, "admissions": 1}), "{w}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn places_a_counter_gives_back_are_offered_and_never_leased_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_offers(&dir, 600);
    let api = server.api();
    let s = slot(server.day, "16:30");
    server.set_capacity(s, 3);
    wait_available(&api, s, 3).await;

    let signer = tessera_core::ticket_code::TicketSigner::from_seed(0, [7u8; 32]);
    let key = data_encoding::HEXLOWER.encode(&signer.public_key());
    let (status, counter) = api
        .enrol(
            &server.enrolment_code("counter", "Desk"),
            "desk-1",
            Some(&key),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{counter}");
    let auth = format!("Bearer {}", counter["token"].as_str().unwrap());
    let sync = |need: u32| {
        let api = api.clone();
        let auth = auth.clone();
        let body = json!({
            "device_id": counter["device_id"],
            "catalogue_version": 0,
            "wants": [{"slot_id": s, "need": need}],
        });
        async move {
            let (status, reply) = api
                .post_raw("/v1/sync", &[("authorization", &auth)], &body.to_string())
                .await
                .expect("sync");
            assert_eq!(status, StatusCode::OK, "{reply}");
            reply
        }
    };
    let reply = sync(3).await;
    let lease = reply["leases"]
        .as_array()
        .and_then(|l| l.iter().find(|g| g["slot_id"] == s.to_string()))
        .unwrap_or_else(|| panic!("no lease for {s}: {reply}"))
        .clone();
    let granted = lease["granted_total"].as_u64().unwrap();
    // Whatever the counter did not get is sold online: the slot is full.
    let rest = 3 - granted;
    if rest > 0 {
        let (status, order) = api
            .buy(
                "rest",
                s,
                json!([{"product_id": "adult", "quantity": rest}]),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{order}");
    }
    assert_eq!(api.available(s).await, 0);

    let (status, body) = join(&api, "gil", s, "gil@example.org", 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A supervisor revokes the counter's lease (nothing sold from it): its
    // places come back and the first in line is offered one at once.
    let out = server.admin(&[
        "revoke-lease",
        "--lease",
        lease["lease_id"].as_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("gil's offer", || offer_token(&server, "gil@example.org")).await;
    wait_available(&api, s, granted - 1).await;

    // The counter asks again: the offered place is not among what it can
    // be granted, so held + sold + leased stays within capacity.
    let reply = sync(3).await;
    let leased: u64 = reply["leases"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|g| g["slot_id"] == s.to_string() && g["revoked"] == false)
                .map(|g| {
                    g["granted_total"].as_u64().unwrap() - g["released_total"].as_u64().unwrap()
                })
                .sum()
        })
        .unwrap_or(0);
    let [sold, held] = server.numbers(&format!(
        "SELECT sold_online, (SELECT COALESCE(SUM(admissions), 0) FROM holds WHERE slot_id = '{s}' AND status = 'held')
         FROM slots WHERE slot_id = '{s}'"
    ));
    let (sold, held) = (sold as u64, held as u64);
    assert_eq!(held, 1, "gil's offer holds one place");
    assert!(
        sold + held + leased <= 3,
        "{sold} sold + {held} held + {leased} leased > 3"
    );
}

/// One client cannot fill the lines with made-up addresses: an address
/// waits for at most `max_entries_per_email` entry times, a client has at
/// most `max_entries_per_client` entries waiting or offered; a refusal is
/// `429 waitlist_limit` and changes nothing, and an entry that ends (its
/// offer taken) makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_and_one_client_wait_in_a_bounded_number_of_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("waitlist.toml");
    std::fs::write(
        &path,
        format!(
            "{UNLIMITED_CLIENTS_TOML}\n[waitlist]\noffer_seconds = 600\n\
             max_entries_per_email = 2\nmax_entries_per_client = 3\n"
        ),
    )
    .unwrap();
    let server = ServerProcess::start_at("11:05", &["--config", path.to_str().unwrap()]);
    let api = server.api();
    let slots: Vec<SlotId> = ["13:00", "14:00", "15:00", "16:00"]
        .iter()
        .map(|t| slot(server.day, t))
        .collect();
    let mut holds = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        server.set_capacity(*s, 1);
        wait_available(&api, *s, 1).await;
        let (status, hold) = api
            .hold(
                &format!("sold-{i}"),
                *s,
                json!([{"product_id": "adult", "quantity": 1}]),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{hold}");
        holds.push(hold["hold_id"].as_str().unwrap().to_string());
    }
    let entries = |server: &ServerProcess| server.count("SELECT COUNT(*) FROM waitlist");

    let (status, body) = join(&api, "ana-0", slots[0], "ana@example.org", 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = join(&api, "ana-1", slots[1], "ana@example.org", 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A third line for the same address, in any case: refused.
    let (status, body) = join(&api, "ana-2", slots[2], "ANA@example.org", 1).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "waitlist_limit", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("this address"),
        "{body}"
    );
    // Joining a line it is already in is no new entry: still answered.
    let (status, _) = join(&api, "ana-0-again", slots[0], "ana@example.org", 1).await;
    assert_eq!(status, StatusCode::OK);

    // A third entry from this client with another address fits; a fourth,
    // whatever its address, does not.
    let (status, body) = join(&api, "bob-2", slots[2], "bob@example.org", 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = join(&api, "cy-3", slots[3], "cy@example.org", 1).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "waitlist_limit", "{body}");
    assert_eq!(entries(&server), 3, "refusals add nothing");

    // Ana's first line gets its place back and she takes the offer: that
    // entry has ended, so she (and her client) may wait for another time.
    api.cancel(&holds[0]).await.unwrap();
    let token = wait_for("ana's offer", || offer_token(&server, "ana@example.org")).await;
    let (status, body) = take(
        &api,
        "ana-take",
        &token,
        json!([{"product_id": "adult", "quantity": 1}]),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = join(&api, "ana-3", slots[3], "ana@example.org", 1).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = join(&api, "dee-3", slots[3], "dee@example.org", 1).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(entries(&server), 4);
}
