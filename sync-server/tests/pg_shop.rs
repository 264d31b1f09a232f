//! The visitor web shop on the PostgreSQL backend, with two (or three) real
//! server processes on one throw-away cluster: a visitor pays on one
//! process and the booking shows on the other; one payment callback
//! delivered to both processes issues one order; a cancelled booking gives
//! its places back and its money is refunded; places freed by a cancelled
//! or an expired hold are offered to the waiting list and the offer can be
//! taken; with a mailer in each process every mail reaches the SMTP server
//! once.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::clock::Clock;
use tessera_core::slot::SlotId;
use tessera_server::payments::demo::{DemoEvent, DemoProvider};
use tessera_server::testkit::{free_port, slot, wait_for, Api, PgCluster, PgMuseum, SmtpSink};

const WITHIN: Duration = Duration::from_secs(30);

fn adults(n: u32) -> Value {
    json!([{"product_id": "adult", "quantity": n}])
}

/// Sets a slot's capacity with the operator's command.
fn set_capacity(museum: &PgMuseum, s: SlotId, to: u32) {
    let out = museum.cli(&[
        "capacity",
        "--database",
        &museum.database_url,
        "--slot",
        &s.to_string(),
        "--set",
        &to.to_string(),
    ]);
    assert!(
        out.status.success(),
        "capacity failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_available(api: &Api, s: SlotId, expected: u64, who: &str) {
    wait_for(
        &format!("{who} to show {expected} places left in {s}"),
        WITHIN,
        || async { (api.available(s).await == expected).then_some(()) },
    )
    .await
}

async fn wait_count(pg: &PgCluster, what: &str, sql: &str, expected: i64) {
    wait_for(what, WITHIN, || async {
        (pg.count(sql) == expected).then_some(())
    })
    .await
}

/// The demo provider's signer with the museum's secret, as the demo page
/// signs its callbacks.
fn demo_signer(pg: &PgCluster, url: &str) -> DemoProvider {
    let hex = pg.psql(
        "tessera",
        "SELECT value FROM meta WHERE key = 'demo_payment_secret'",
    );
    let secret = data_encoding::HEXLOWER_PERMISSIVE
        .decode(hex.as_bytes())
        .expect("hex secret");
    DemoProvider::new(secret, url)
}

fn payment_id_of(checkout: &Value) -> String {
    checkout["redirect_url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .expect("redirect url")
        .to_string()
}

/// A hold and its checkout on `api` (not paid yet).
async fn checkout(api: &Api, key: &str, s: SlotId, n: u32) -> Value {
    let (status, hold) = api
        .hold(&format!("{key}-h"), s, adults(n))
        .await
        .expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, checkout) = api
        .checkout(&format!("{key}-c"), hold["hold_id"].as_str().expect("id"))
        .await
        .expect("checkout");
    assert_eq!(status, StatusCode::CREATED, "{checkout}");
    checkout
}

/// The offer token mailed to `email`, once the offer is queued.
fn offer_token(pg: &PgCluster, email: &str) -> Option<String> {
    let payload = pg.psql(
        "tessera",
        &format!(
            "SELECT payload FROM mail_outbox WHERE kind = 'waitlist_offer' AND recipient = '{email}'"
        ),
    );
    let payload: Value = serde_json::from_str(&payload).ok()?;
    let link = payload["link"].as_str()?;
    assert!(link.contains("/offer/"), "{link}");
    Some(link.rsplit('/').next()?.to_string())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_visitor_pays_on_one_process_and_cancels_on_the_other() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "11:05");
    let a = museum.serve("a", &[]);
    let b = museum.serve("b", &[]);
    let (api_a, api_b) = (a.api(), b.api());
    // In two days, so the cancellation deadline is still ahead.
    let day = museum
        .day
        .tomorrow()
        .and_then(|d| d.tomorrow())
        .expect("day");
    let s = slot(day, "11:00");
    set_capacity(&museum, s, 10);
    wait_available(&api_a, s, 10, "A").await;

    let done = api_a.buy_online("v1", s, adults(3)).await;
    assert_eq!(done["state"], "confirmed", "{done}");
    let token = done["booking_token"].as_str().expect("token").to_string();
    wait_available(&api_b, s, 7, "B").await;
    // The return page got the token once; B does not hand it out again.
    let checkout_id = done["checkout_id"].as_str().expect("checkout id");
    let (status, later) = api_b
        .get(&format!("/v1/checkouts/{checkout_id}"))
        .await
        .expect("status");
    assert_eq!(status, StatusCode::OK, "{later}");
    assert_eq!(later["state"], "confirmed");
    assert!(later["booking_token"].is_null(), "{later}");

    let (status, booking) = api_b
        .get(&format!("/v1/bookings/{token}"))
        .await
        .expect("booking");
    assert_eq!(status, StatusCode::OK, "{booking}");
    assert_eq!(booking["channel"], "web");
    assert_eq!(booking["name"], "Ada Lovelace");
    let tickets = booking["tickets"].as_array().expect("tickets").clone();
    assert_eq!(tickets.len(), 3);
    assert!(tickets.iter().all(|t| t["state"] == "valid"), "{booking}");
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM mail_outbox WHERE kind = 'booking_confirmed'"),
        1
    );

    // One ticket cancelled on B: its place is back on both, its price is
    // refunded, and the same request again on A is the same answer.
    let body = json!({"ticket_ids": [tickets[0]["ticket_id"]]}).to_string();
    let path = format!("/v1/bookings/{token}/cancel");
    let (status, after) = api_b
        .post_raw(&path, &[("idempotency-key", "cancel-1")], &body)
        .await
        .expect("cancel");
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["refunded"]["amount"], tickets[0]["price"]["amount"]);
    let cancelled = after["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .filter(|t| t["state"] == "cancelled")
        .count();
    assert_eq!(cancelled, 1, "{after}");
    wait_available(&api_a, s, 8, "A").await;
    wait_available(&api_b, s, 8, "B").await;
    let (status, replay) = api_a
        .post_raw(&path, &[("idempotency-key", "cancel-1")], &body)
        .await
        .expect("replay");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay, after);
    let (status, twice) = api_a
        .post_raw(&path, &[("idempotency-key", "cancel-2")], &body)
        .await
        .expect("cancel again");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{twice}");
    assert_eq!(twice["error"]["code"], "already_cancelled");
    assert_eq!(
        pg.count(&format!(
            "SELECT sold_online FROM slots WHERE slot_id = '{s}'"
        )),
        2
    );
    // The refund queue (run by both processes) pays it back once.
    wait_count(
        &pg,
        "the refund to go through",
        "SELECT COUNT(*) FROM refunds WHERE status = 'done' AND reason = 'cancelled'
           AND provider_refund_id IS NOT NULL",
        1,
    )
    .await;
    assert_eq!(pg.count("SELECT COUNT(*) FROM refunds"), 1);
    wait_count(
        &pg,
        "the refund's mail",
        "SELECT COUNT(*) FROM mail_outbox WHERE kind = 'refund_issued'",
        1,
    )
    .await;
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM mail_outbox WHERE kind = 'tickets_cancelled'"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_callback_delivered_to_both_processes_issues_one_order() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "11:05");
    let a = museum.serve("a", &[]);
    let b = museum.serve("b", &[]);
    let (api_a, api_b) = (a.api(), b.api());
    let s = slot(museum.day, "15:00");
    let checkout = checkout(&api_a, "twice", s, 2).await;
    let payment_id = payment_id_of(&checkout);
    let amount = checkout["total"]["amount"].as_i64().expect("amount");

    let signer = demo_signer(&pg, &a.url);
    let now = Clock::with_offset_secs(museum.offset_secs).now();
    let event = |id: &str| {
        let body = serde_json::to_string(&DemoEvent {
            id: id.into(),
            kind: "payment.succeeded".into(),
            payment_id: payment_id.clone(),
            amount,
            currency: "EUR".into(),
        })
        .expect("event json");
        let signature = signer.sign(body.as_bytes(), now);
        (body, signature)
    };
    let (body, signature) = event("evt_1");
    let deliver = |api: Api, body: String, signature: String| async move {
        api.post_raw(
            "/v1/payments/demo/webhook",
            &[("tessera-signature", &signature)],
            &body,
        )
        .await
        .expect("deliver")
    };
    // The same event to both at once, and each once more.
    for round in 0..2 {
        let (to_a, to_b) = tokio::join!(
            deliver(a.api(), body.clone(), signature.clone()),
            deliver(b.api(), body.clone(), signature.clone())
        );
        assert_eq!(to_a.0, StatusCode::OK, "round {round}: {}", to_a.1);
        assert_eq!(to_b.0, StatusCode::OK, "round {round}: {}", to_b.1);
    }
    // Another event for the same payment (a provider sending two kinds).
    let (body2, signature2) = event("evt_2");
    let (status, answer) = deliver(b.api(), body2, signature2).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    assert_eq!(pg.count("SELECT COUNT(*) FROM orders"), 1);
    assert_eq!(pg.count("SELECT COUNT(*) FROM tickets"), 2);
    assert_eq!(pg.count("SELECT COUNT(*) FROM webhook_events"), 2);
    assert_eq!(pg.count("SELECT COUNT(*) FROM refunds"), 0);
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM mail_outbox WHERE kind = 'booking_confirmed'"),
        1
    );
    let s_text = s.to_string();
    assert_eq!(
        pg.count(&format!(
            "SELECT sold_online FROM slots WHERE slot_id = '{s_text}'"
        )),
        2
    );
    let done = api_b
        .await_checkout(checkout["checkout_id"].as_str().expect("id"))
        .await;
    assert_eq!(done["state"], "confirmed", "{done}");
    assert!(done["booking_token"].is_string(), "{done}");
    // The demo page on B shows the payment A started.
    let page = api_b
        .http
        .get(format!("{}/pay/demo/{payment_id}", b.url))
        .send()
        .await
        .expect("demo page");
    assert_eq!(page.status(), StatusCode::OK);
    let before = api_a.available(s).await;
    // A failed event after the payment changes nothing.
    let failed = serde_json::to_string(&DemoEvent {
        id: "evt_3".into(),
        kind: "payment.failed".into(),
        payment_id: payment_id.clone(),
        amount,
        currency: "EUR".into(),
    })
    .expect("event json");
    let sig = signer.sign(failed.as_bytes(), now);
    let (status, _) = deliver(a.api(), failed, sig).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pg.count("SELECT COUNT(*) FROM orders"), 1);
    assert_eq!(api_a.available(s).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn freed_places_are_offered_to_the_waiting_list_across_processes() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let waitlist = "[waitlist]\noffer_seconds = 600\n";
    let a = museum.serve_with("a", waitlist, &[]);
    let b = museum.serve_with("b", waitlist, &[]);
    // A third process whose holds run out after two seconds.
    let c = museum.serve_with("c", waitlist, &["--hold-ttl-secs", "2"]);
    let (api_a, api_b, api_c) = (a.api(), b.api(), c.api());
    let s = slot(museum.day, "14:00");
    set_capacity(&museum, s, 2);
    wait_available(&api_b, s, 2, "B").await;

    // Sold out by a hold on A; Ann waits on B.
    let (status, hold) = api_a.hold("h2", s, adults(2)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    wait_available(&api_b, s, 0, "B").await;
    let (status, ann) = join(&api_b, "ann", s, "ann@example.org", 2).await;
    assert_eq!(status, StatusCode::CREATED, "{ann}");
    assert_eq!(ann["position"], 1);
    let (status, again) = join(&api_a, "ann-2", s, "ANN@example.org", 2).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["entry_id"], ann["entry_id"]);
    assert!(offer_token(&pg, "ann@example.org").is_none());

    // The hold is cancelled on A: its places go to Ann, not back on sale.
    let (status, _) = api_a
        .cancel(hold["hold_id"].as_str().expect("id"))
        .await
        .expect("cancel");
    assert!(status.is_success(), "{status}");
    let token = offer_token(&pg, "ann@example.org").expect("an offer in the cancel's commit");
    assert_eq!(api_b.available(s).await, 0);
    let (status, offer) = api_b
        .get(&format!("/v1/offers/{token}"))
        .await
        .expect("offer");
    assert_eq!(status, StatusCode::OK, "{offer}");
    assert_eq!(offer["state"], "open", "{offer}");
    assert_eq!(offer["party"], 2);
    // Nobody else can hold them meanwhile.
    let (status, refused) = api_a.hold("thief", s, adults(1)).await.expect("hold");
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");

    // Ann takes the offer on A and pays on A; B shows it sold.
    let (status, taken) = api_a
        .post_raw(
            &format!("/v1/offers/{token}/hold"),
            &[("idempotency-key", "ann-take")],
            &json!({"items": adults(2)}).to_string(),
        )
        .await
        .expect("take");
    assert_eq!(status, StatusCode::CREATED, "{taken}");
    let hold_id = taken["hold_id"].as_str().expect("hold id");
    let (status, checkout) = api_a.checkout("ann-c", hold_id).await.expect("checkout");
    assert_eq!(status, StatusCode::CREATED, "{checkout}");
    let (status, _) = api_a
        .demo_pay(checkout["redirect_url"].as_str().expect("redirect"), "paid")
        .await
        .expect("pay");
    assert_eq!(status, StatusCode::SEE_OTHER);
    let done = api_a
        .await_checkout(checkout["checkout_id"].as_str().expect("id"))
        .await;
    assert_eq!(done["state"], "confirmed", "{done}");
    let (_, offer) = api_b
        .get(&format!("/v1/offers/{token}"))
        .await
        .expect("offer");
    assert_eq!(offer["state"], "taken", "{offer}");
    let s_text = s.to_string();
    assert_eq!(
        pg.count(&format!(
            "SELECT sold_online FROM slots WHERE slot_id = '{s_text}'"
        )),
        2
    );

    // Another slot: sold out by a hold on C that runs out; whichever
    // process sweeps offers its place to Ben.
    let t = slot(museum.day, "15:00");
    set_capacity(&museum, t, 1);
    wait_available(&api_c, t, 1, "C").await;
    let (status, short) = api_c.hold("short", t, adults(1)).await.expect("hold");
    assert_eq!(status, StatusCode::CREATED, "{short}");
    wait_available(&api_b, t, 0, "B").await;
    let (status, ben) = join(&api_b, "ben", t, "ben@example.org", 1).await;
    assert_eq!(status, StatusCode::CREATED, "{ben}");
    let ben_token = wait_for("Ben's offer", WITHIN, || async {
        offer_token(&pg, "ben@example.org")
    })
    .await;
    let t_text = t.to_string();
    assert_eq!(
        pg.count(&format!(
            "SELECT held_online FROM slots WHERE slot_id = '{t_text}'"
        )),
        1,
        "the offer holds the place the expired hold gave back"
    );
    assert_eq!(api_a.available(t).await, 0);
    let (_, offer) = api_a
        .get(&format!("/v1/offers/{ben_token}"))
        .await
        .expect("offer");
    assert_eq!(offer["state"], "open", "{offer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_mailer_in_each_process_every_mail_is_sent_once() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "11:05");
    let port = free_port();
    let inbox = tempfile::tempdir().expect("inbox");
    let sink = SmtpSink::start(port, inbox.path());
    let mail = format!(
        "[mail]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_security = \"none\"\nfrom = \"billetterie@example.org\"\n"
    );
    let a = museum.serve_with("a", &mail, &[]);
    let b = museum.serve_with("b", &mail, &[]);
    let (api_a, api_b) = (a.api(), b.api());

    // Two bookings, each with its confirmation and five resends: twelve
    // mails queued on both processes while both mailers run.
    let mut tokens = Vec::new();
    for (i, hhmm) in ["14:00", "15:00"].into_iter().enumerate() {
        let done = api_a
            .buy_online(&format!("m{i}"), slot(museum.day, hhmm), adults(1))
            .await;
        assert_eq!(done["state"], "confirmed", "{done}");
        tokens.push(done["booking_token"].as_str().expect("token").to_string());
    }
    for token in &tokens {
        for n in 0..5 {
            let api = if n % 2 == 0 { &api_a } else { &api_b };
            let (status, body) = api
                .post_raw(&format!("/v1/bookings/{token}/resend"), &[], "")
                .await
                .expect("resend");
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        }
    }
    let queued = pg.count("SELECT COUNT(*) FROM mail_outbox");
    assert_eq!(queued, 12);
    wait_count(
        &pg,
        "every mail to be sent",
        "SELECT COUNT(*) FROM mail_outbox WHERE sent_at IS NOT NULL",
        12,
    )
    .await;
    wait_for("the sink to have written every mail", WITHIN, || async {
        (sink.count() >= 12).then_some(())
    })
    .await;
    // Each sent once: no mail is left claimed, and the sink holds twelve.
    assert_eq!(sink.count(), 12);
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM mail_outbox WHERE attempts <> 1 OR payload <> ''"),
        0
    );
    // A sixth resend of one booking the same day is refused.
    let (status, body) = api_b
        .post_raw(&format!("/v1/bookings/{}/resend", tokens[0]), &[], "")
        .await
        .expect("resend");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
}
