//! The web shop's money path against a real server: a visitor pays through
//! the demo provider's signed callback and gets a booking; forged and
//! replayed callbacks change nothing; a payment that arrives after its hold
//! ran out is ticketed if places are left and refunded otherwise; "my
//! booking" cancels until its deadline, gives the places back and makes the
//! gates refuse the tickets; only a trusted channel's token confirms a hold.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::clock::Clock;
use tessera_server::payments::demo::DemoEvent;
use tessera_server::testkit::{slot, wait_for, Api, ServerProcess, UNLIMITED_CLIENTS_TOML};

fn family_with_guides() -> Value {
    json!([
        {"product_id": "adult", "quantity": 2},
        {"product_id": "child", "quantity": 1},
        {"product_id": "audio-guide", "quantity": 2}
    ])
}

async fn supervisor(server: &ServerProcess, api: &Api) -> String {
    let (status, dev) = api
        .enrol(
            &server.enrolment_code("supervisor", "Office"),
            "office",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{dev}");
    dev["token"].as_str().unwrap().to_string()
}

async fn day_report(api: &Api, token: &str, date: jiff::civil::Date) -> Value {
    let r = api
        .http
        .get(format!("{}/v1/reports/day?date={date}", api.base))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// A signed demo event, as the demo page would send it, for `payment_id`.
fn signed_event(
    server: &ServerProcess,
    event_id: &str,
    payment_id: &str,
    amount: i64,
    kind: &str,
) -> (String, String) {
    let event = DemoEvent {
        id: event_id.into(),
        kind: kind.into(),
        payment_id: payment_id.into(),
        amount,
        currency: "EUR".into(),
    };
    let body = serde_json::to_string(&event).unwrap();
    let now = Clock::with_offset_secs(server.offset_secs).now();
    let signature = server.demo_signer().sign(body.as_bytes(), now);
    (body, signature)
}

async fn deliver(api: &Api, body: &str, signature: &str) -> (StatusCode, Value) {
    api.post_raw(
        "/v1/payments/demo/webhook",
        &[("tessera-signature", signature)],
        body,
    )
    .await
    .unwrap()
}

fn payment_id_of(checkout: &Value) -> String {
    checkout["redirect_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_pays_on_the_demo_page_gets_a_booking_and_cancels_a_ticket() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    // In two days, so the 24-hour cancellation deadline is still ahead.
    let s = slot(server.day.tomorrow().unwrap().tomorrow().unwrap(), "11:00");
    let before = api.available(s).await;

    let (status, hold) = api.hold("v1-h", s, family_with_guides()).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let hold_id = hold["hold_id"].as_str().unwrap();

    // Checkout refuses a visitor who did not accept the terms, changing nothing.
    let (status, body) = api
        .post_raw(
            &format!("/v1/holds/{hold_id}/checkout"),
            &[("idempotency-key", "v1-terms")],
            &json!({"name": "Ada", "email": "ada@example.org", "language": "en", "accept_terms": false}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "terms_not_accepted");
    let (status, body) = api
        .post_raw(
            &format!("/v1/holds/{hold_id}/checkout"),
            &[("idempotency-key", "v1-mail")],
            &json!({"name": "Ada", "email": "not an address", "language": "en", "accept_terms": true}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_body");
    assert_eq!(server.count("SELECT COUNT(*) FROM payments"), 0);

    let (status, checkout) = api.checkout("v1-c", hold_id).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{checkout}");
    assert_eq!(checkout["provider"], "demo");
    assert_eq!(checkout["total"]["amount"], 4000);
    // A retry with the same key is the same checkout.
    let (status, again) = api.checkout("v1-c", hold_id).await.unwrap();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again, checkout);
    let checkout_id = checkout["checkout_id"].as_str().unwrap();
    let redirect = checkout["redirect_url"].as_str().unwrap();
    assert!(redirect.starts_with(&server.url), "{redirect}");

    // The demo page says it is a demo, in the visitor's language or the other.
    let page = api.http.get(redirect).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("DEMO — no money moves"), "{html}");
    assert!(html.contains("€40.00"), "{html}");
    assert!(html.contains("value=\"paid\""));
    let fr = api
        .http
        .get(format!("{redirect}?lang=fr"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(fr.contains("DÉMO — aucun argent ne circule"), "{fr}");
    assert!(fr.contains("40,00 €"));

    let (_, waiting) = api
        .get(&format!("/v1/checkouts/{checkout_id}"))
        .await
        .unwrap();
    assert_eq!(waiting["state"], "awaiting_payment");

    let (status, location) = api.demo_pay(redirect, "paid").await.unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some(format!("{}/return/{checkout_id}", server.url).as_str())
    );
    let done = api.await_checkout(checkout_id).await;
    assert_eq!(done["state"], "confirmed", "{done}");
    let token = done["booking_token"].as_str().unwrap().to_string();
    // Handed out once: the link is in the email from now on.
    let (_, later) = api
        .get(&format!("/v1/checkouts/{checkout_id}"))
        .await
        .unwrap();
    assert_eq!(later["state"], "confirmed");
    assert!(later["booking_token"].is_null(), "{later}");
    assert_eq!(api.available(s).await, before - 3);
    // The page, pressed again, changes nothing.
    let (status, _) = api.demo_pay(redirect, "paid").await.unwrap();
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(server.count("SELECT COUNT(*) FROM orders"), 1);

    let (status, booking) = api.get(&format!("/v1/bookings/{token}")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{booking}");
    assert_eq!(booking["channel"], "web");
    assert_eq!(booking["name"], "Ada Lovelace");
    assert_eq!(booking["language"], "en");
    assert_eq!(booking["total"]["amount"], 4000);
    assert!(booking["reference"].as_str().unwrap().starts_with("TS-"));
    let tickets = booking["tickets"].as_array().unwrap().clone();
    assert_eq!(tickets.len(), 5);
    assert!(tickets.iter().all(|t| t["state"] == "valid"));
    assert_eq!(
        server.count(
            "SELECT COUNT(*) FROM mail_outbox WHERE kind = 'booking_confirmed' AND recipient = 'ada@example.org'"
        ),
        1
    );
    let payload =
        server.query_one("SELECT payload FROM mail_outbox WHERE kind = 'booking_confirmed'");
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        payload["link"],
        format!("{}/booking/{token}", server.url).as_str()
    );
    assert_eq!(payload["booking"]["order_id"], booking["order_id"]);

    // A changed character, a shape that is not ours: no such booking.
    let mut tampered = token.clone().into_bytes();
    tampered[10] = if tampered[10] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [tampered.as_str(), "x", "%2e%2e%2f", &"a".repeat(300)] {
        let (status, body) = api.get(&format!("/v1/bookings/{bad}")).await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "unknown_booking");
    }
    let (status, body) = api
        .post_raw(
            &format!("/v1/bookings/{tampered}/cancel"),
            &[("idempotency-key", "evil")],
            &json!({"ticket_ids": [tickets[0]["ticket_id"]]}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Cancel one adult: refunded, its place back on sale, refused at the gate.
    let adult = tickets
        .iter()
        .find(|t| t["product_id"] == "adult")
        .unwrap()
        .clone();
    let cancel_body = json!({"ticket_ids": [adult["ticket_id"]]}).to_string();
    let (status, after) = api
        .post_raw(
            &format!("/v1/bookings/{token}/cancel"),
            &[("idempotency-key", "cancel-1")],
            &cancel_body,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["refunded"]["amount"], 1500);
    let cancelled: Vec<&Value> = after["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "cancelled")
        .collect();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["ticket_id"], adult["ticket_id"]);
    assert_eq!(api.available(s).await, before - 2);
    // The same request again is the same answer, nothing more.
    let (status, replay) = api
        .post_raw(
            &format!("/v1/bookings/{token}/cancel"),
            &[("idempotency-key", "cancel-1")],
            &cancel_body,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay, after);
    let (status, twice) = api
        .post_raw(
            &format!("/v1/bookings/{token}/cancel"),
            &[("idempotency-key", "cancel-2")],
            &cancel_body,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{twice}");
    assert_eq!(twice["error"]["code"], "already_cancelled");
    assert_eq!(api.available(s).await, before - 2);

    // The refund is worked by the queue; the visitor is told.
    server.wait_count("the refund to go through", "SELECT COUNT(*) FROM refunds WHERE status = 'done' AND amount = 1500 AND reason = 'cancelled' AND provider_refund_id IS NOT NULL", 1, Duration::from_secs(20)).await;
    server
        .wait_count(
            "the refund's email",
            "SELECT COUNT(*) FROM mail_outbox WHERE kind = 'refund_issued'",
            1,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM mail_outbox WHERE kind = 'tickets_cancelled'"),
        1
    );

    let gate = server.enrol_gate("North gate").await;
    let (status, denied) = api
        .redeem(&gate, adult["code"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(denied["result"], "denied", "{denied}");
    assert_eq!(denied["reason"], "voided");
    // Gates that work offline learn it too.
    let (status, sync) = api
        .post_raw(
            "/v1/gate/sync",
            &[("authorization", &format!("Bearer {gate}"))],
            &json!({"device_id": gate_device(&server), "catalogue_version": 1, "scans": []})
                .to_string(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{sync}");
    assert!(sync["voided_tickets"]
        .as_array()
        .unwrap()
        .contains(&adult["ticket_id"]));

    // Cancelling every admission takes the audio-guides with it.
    let rest: Vec<Value> = tickets
        .iter()
        .filter(|t| t["admits"].as_u64() == Some(1) && t["ticket_id"] != adult["ticket_id"])
        .map(|t| t["ticket_id"].clone())
        .collect();
    let (status, all) = api
        .post_raw(
            &format!("/v1/bookings/{token}/cancel"),
            &[("idempotency-key", "cancel-3")],
            &json!({"ticket_ids": rest}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{all}");
    assert!(all["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["state"] == "cancelled"));
    assert_eq!(all["refunded"]["amount"], 4000);
    assert_eq!(api.available(s).await, before);

    // Resend queues the email again.
    let (status, _) = api
        .post_raw(&format!("/v1/bookings/{token}/resend"), &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        server.count("SELECT COUNT(*) FROM mail_outbox WHERE kind = 'resend'"),
        1
    );

    // Tallies still equal the orders: online sold minus cancelled.
    let sold_online = server.count(&format!(
        "SELECT sold_online FROM slots WHERE slot_id = '{s}'"
    ));
    assert_eq!(sold_online, 0);
    let av = api.availability(s.date).await;
    let line = av["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["slot_id"] == s.to_string())
        .unwrap()
        .clone();
    assert_eq!(line["sold"], 0, "{line}");

    // The day's books: an order cancelled whole, over two requests, leaves
    // nothing behind — not a cent of VAT (the audio guides' line was sold
    // with 1.67 of tax, each guide alone would give back 0.83).
    let sup = supervisor(&server, &api).await;
    let report = day_report(&api, &sup, server.day).await;
    assert!(report["does_not_add_up"].is_null(), "{report}");
    let online = report["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == "online")
        .unwrap_or_else(|| panic!("no online channel in {report}"))
        .clone();
    assert_eq!(online["net_takings"], 0, "{online}");
    let vat = online["vat"].as_array().unwrap();
    assert!(!vat.is_empty(), "{online}");
    for row in vat {
        assert_eq!(
            (&row["net"], &row["tax"], &row["gross"]),
            (&json!(0), &json!(0), &json!(0)),
            "{online}"
        );
    }
    assert_eq!(online["voids_count"], 2, "two cancellations: {online}");
}

fn gate_device(server: &ServerProcess) -> String {
    server.query_one("SELECT device_id FROM devices WHERE role = 'gate'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_the_provider_cannot_take_is_retried_and_survives_a_restart() {
    let mut server = ServerProcess::start_with_env(
        "11:05",
        &[],
        &[("TESSERA_TEST_FAILPOINTS", "demo_refund=error")],
    );
    let api = server.api();
    let s = slot(server.day.tomorrow().unwrap().tomorrow().unwrap(), "14:00");
    let done = api
        .buy_online("r", s, json!([{"product_id": "adult", "quantity": 2}]))
        .await;
    let token = done["booking_token"].as_str().unwrap().to_string();
    let (_, booking) = api.get(&format!("/v1/bookings/{token}")).await.unwrap();
    let (status, body) = api
        .post_raw(
            &format!("/v1/bookings/{token}/cancel"),
            &[("idempotency-key", "r-cancel")],
            &json!({"ticket_ids": [booking["tickets"][0]["ticket_id"]]}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    // The provider is down: the refund stays queued, with the reason.
    server.wait_count("a failed attempt", "SELECT COUNT(*) FROM refunds WHERE status = 'queued' AND attempts >= 1 AND last_error LIKE '%unavailable%'", 1, Duration::from_secs(20)).await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM mail_outbox WHERE kind = 'refund_issued'"),
        0
    );
    // The server restarts and the provider is back: the queue pays it.
    server.set_env(&[]);
    server.restart();
    server
        .wait_count(
            "the refund after the restart",
            "SELECT COUNT(*) FROM refunds WHERE status = 'done' AND amount = 1500",
            1,
            Duration::from_secs(30),
        )
        .await;
    server
        .wait_count(
            "the refund's email",
            "SELECT COUNT(*) FROM mail_outbox WHERE kind = 'refund_issued'",
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM refunds WHERE link IS NOT NULL"),
        0,
        "the link (it carries the token) is not kept once mailed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_callbacks_change_nothing() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let s = slot(server.day, "15:00");
    let (_, hold) = api
        .hold("f-h", s, json!([{"product_id": "adult", "quantity": 2}]))
        .await
        .unwrap();
    let (_, checkout) = api
        .checkout("f-c", hold["hold_id"].as_str().unwrap())
        .await
        .unwrap();
    let payment_id = payment_id_of(&checkout);
    let checkout_id = checkout["checkout_id"].as_str().unwrap();

    let (body, signature) = signed_event(&server, "evt_1", &payment_id, 3000, "payment.succeeded");
    // Signed with another secret, a changed body, no signature, a stale one.
    let forged = tessera_server::payments::demo::DemoProvider::new(b"guess".to_vec(), "").sign(
        body.as_bytes(),
        Clock::with_offset_secs(server.offset_secs).now(),
    );
    let changed = body.replace("3000", "1");
    let stale = server.demo_signer().sign(
        body.as_bytes(),
        Clock::with_offset_secs(server.offset_secs - 3600).now(),
    );
    for (b, sig) in [
        (body.as_str(), forged.as_str()),
        (changed.as_str(), signature.as_str()),
        (body.as_str(), ""),
        (body.as_str(), "t=1,v1=zz"),
        (body.as_str(), stale.as_str()),
    ] {
        let (status, answer) = deliver(&api, b, sig).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["code"], "bad_signature");
    }
    assert_eq!(server.count("SELECT COUNT(*) FROM webhook_events"), 0);
    assert_eq!(server.count("SELECT COUNT(*) FROM orders"), 0);
    let (_, st) = api
        .get(&format!("/v1/checkouts/{checkout_id}"))
        .await
        .unwrap();
    assert_eq!(st["state"], "awaiting_payment");
    // A provider this server does not use.
    let (status, answer) = api
        .post_raw("/v1/payments/stripe/webhook", &[], &body)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(answer["error"]["code"], "unknown_provider");

    // The genuine event three times, and a second genuine event for the
    // same payment: one order.
    for _ in 0..3 {
        let (status, answer) = deliver(&api, &body, &signature).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["received"], true);
    }
    let (body2, sig2) = signed_event(&server, "evt_2", &payment_id, 3000, "payment.succeeded");
    assert_eq!(deliver(&api, &body2, &sig2).await.0, StatusCode::OK);
    let (body3, sig3) = signed_event(&server, "evt_3", &payment_id, 3000, "payment.failed");
    assert_eq!(deliver(&api, &body3, &sig3).await.0, StatusCode::OK);
    assert_eq!(server.count("SELECT COUNT(*) FROM orders"), 1);
    assert_eq!(server.count("SELECT COUNT(*) FROM tickets"), 2);
    assert_eq!(server.count("SELECT COUNT(*) FROM refunds"), 0);
    assert_eq!(server.count("SELECT COUNT(*) FROM webhook_events"), 3);
    assert_eq!(
        server.count("SELECT COUNT(*) FROM mail_outbox"),
        1,
        "one confirmation email"
    );
    let done = api.await_checkout(checkout_id).await;
    assert_eq!(done["state"], "confirmed");
}

fn slow_config(server_dir: &std::path::Path, extra: &str) -> String {
    let path = server_dir.join("shop-test.toml");
    std::fs::write(&path, format!("{UNLIMITED_CLIENTS_TOML}\n{extra}")).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_after_the_hold_ran_out_is_ticketed_if_places_are_left_else_refunded() {
    let dir = tempfile::tempdir().unwrap();
    let config = slow_config(dir.path(), "");
    let server = ServerProcess::start_at("11:05", &["--hold-ttl-secs", "1", "--config", &config]);
    let api = server.api();
    let s = slot(server.day, "16:00");

    // Places left: the late payment gets its tickets.
    let (_, hold) = api
        .hold("late-h", s, json!([{"product_id": "adult", "quantity": 2}]))
        .await
        .unwrap();
    let hold_id = hold["hold_id"].as_str().unwrap().to_string();
    let (_, checkout) = api.checkout("late-c", &hold_id).await.unwrap();
    let full = api.available(s).await + 2;
    wait_for("the hold to run out", Duration::from_secs(10), || async {
        (api.available(s).await == full).then_some(())
    })
    .await;
    api.demo_pay(checkout["redirect_url"].as_str().unwrap(), "paid")
        .await
        .unwrap();
    let done = api
        .await_checkout(checkout["checkout_id"].as_str().unwrap())
        .await;
    assert_eq!(done["state"], "confirmed", "{done}");
    assert_eq!(api.available(s).await, full - 2);

    // No places left: refunded, no ticket, and the queue pays it back.
    let s2 = slot(server.day, "16:30");
    server.set_capacity(s2, 2);
    wait_for("the capacity change", Duration::from_secs(10), || async {
        (api.available(s2).await == 2).then_some(())
    })
    .await;
    let (_, hold) = api
        .hold(
            "gone-h",
            s2,
            json!([{"product_id": "adult", "quantity": 2}]),
        )
        .await
        .unwrap();
    let (_, checkout) = api
        .checkout("gone-c", hold["hold_id"].as_str().unwrap())
        .await
        .unwrap();
    wait_for("the hold to run out", Duration::from_secs(10), || async {
        (api.available(s2).await == 2).then_some(())
    })
    .await;
    // Someone else books the two places meanwhile (a partner).
    let (status, other) = api
        .buy(
            "partner",
            s2,
            json!([{"product_id": "adult", "quantity": 2}]),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{other}");
    api.demo_pay(checkout["redirect_url"].as_str().unwrap(), "paid")
        .await
        .unwrap();
    let done = api
        .await_checkout(checkout["checkout_id"].as_str().unwrap())
        .await;
    assert_eq!(done["state"], "refunded", "{done}");
    assert!(done["booking_token"].is_null());
    assert_eq!(
        server.count("SELECT COUNT(*) FROM orders WHERE channel = 'web'"),
        1,
        "no order for the refunded payment"
    );
    let sold = server.count(&format!(
        "SELECT sold_online FROM slots WHERE slot_id = '{s2}'"
    ));
    assert_eq!(sold, 2, "never more than capacity");
    server
        .wait_count(
            "the refund",
            "SELECT COUNT(*) FROM payments WHERE status = 'refunded' AND amount = 3000",
            1,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        server.count(
            "SELECT COUNT(*) FROM refunds WHERE status = 'done' AND reason = 'no_places' AND amount = 3000"
        ),
        1
    );
    // The visitor is told by email too: the return page may never be seen.
    let row =
        server.query_row("SELECT kind, payload FROM mail_outbox WHERE kind = 'payment_refunded'");
    let (kind, payload) = (&row[0], &row[1]);
    let payload: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(kind, "payment_refunded");
    assert_eq!(payload["refund"]["reason"], "no_places", "{payload}");
    assert_eq!(payload["refund"]["amount"]["amount"], 3000, "{payload}");
    assert_eq!(payload["refund"]["slot_id"], s2.to_string(), "{payload}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_after_the_deadline_is_refused_and_changes_nothing() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    // Today at 16:00: less than 24 hours ahead.
    let s = slot(server.day, "16:00");
    let done = api
        .buy_online("late", s, json!([{"product_id": "adult", "quantity": 1}]))
        .await;
    let token = done["booking_token"].as_str().unwrap();
    let (_, booking) = api.get(&format!("/v1/bookings/{token}")).await.unwrap();
    let available = api.available(s).await;
    let (status, body) = api
        .post_raw(
            &format!("/v1/bookings/{token}/cancel"),
            &[("idempotency-key", "too-late")],
            &json!({"ticket_ids": [booking["tickets"][0]["ticket_id"]]}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "cancel_deadline_passed");
    let (_, unchanged) = api.get(&format!("/v1/bookings/{token}")).await.unwrap();
    assert_eq!(unchanged, booking);
    assert_eq!(api.available(s).await, available);
    assert_eq!(server.count("SELECT COUNT(*) FROM refunds"), 0);
    // An empty list and a ticket of another booking are refused by name.
    for (ids, code) in [
        (json!([]), "empty"),
        (json!([uuid::Uuid::now_v7()]), "unknown_ticket"),
    ] {
        let (status, body) = api
            .post_raw(
                &format!("/v1/bookings/{token}/cancel"),
                &[("idempotency-key", &format!("k-{code}"))],
                &json!({"ticket_ids": ids}).to_string(),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["error"]["code"], code);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_channel_token_confirms_and_the_day_report_shows_each_channel() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let s = slot(server.day, "14:00");
    let (_, hold) = api
        .hold("a-h", s, json!([{"product_id": "adult", "quantity": 5}]))
        .await
        .unwrap();
    let hold_id = hold["hold_id"].as_str().unwrap();
    // The free ride of the issue: refused, nothing sold.
    let anonymous = Api::new(&server.url);
    let (status, body) = anonymous.confirm("free-ride", hold_id).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "channel_token_required");
    let (status, body) = Api::new(&server.url)
        .with_channel("tch_not-a-real-token")
        .confirm("guess", hold_id)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unknown_channel");
    assert_eq!(server.count("SELECT COUNT(*) FROM orders"), 0);

    // A channel confirms: the order carries it.
    let office = server.add_channel("Office de tourisme");
    let office_api = Api::new(&server.url).with_channel(&office);
    let (status, order) = wait_for("the new channel", Duration::from_secs(10), || {
        let office_api = office_api.clone();
        async move {
            let r = office_api.confirm("office-1", hold_id).await.unwrap();
            (r.0 != StatusCode::UNAUTHORIZED).then_some(r)
        }
    })
    .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let channel = server.query_one("SELECT channel FROM orders");
    assert_eq!(channel, "Office de tourisme");

    // And a web sale beside it.
    let web = api
        .buy_online("web", s, json!([{"product_id": "reduced", "quantity": 2}]))
        .await;
    assert_eq!(web["state"], "confirmed");

    let sup = supervisor(&server, &api).await;
    let report = day_report(&api, &sup, server.day).await;
    assert!(report["does_not_add_up"].is_null(), "{report}");
    let lines = report["online_channels"]
        .as_array()
        .expect("online_channels");
    let of = |name: &str| {
        lines
            .iter()
            .find(|l| l["channel"] == name)
            .unwrap_or_else(|| panic!("{name} not in {lines:?}"))
            .clone()
    };
    assert_eq!(of("Office de tourisme")["orders"], 1);
    assert_eq!(of("Office de tourisme")["admissions"], 5);
    assert_eq!(of("Office de tourisme")["net_takings"], 7500);
    assert_eq!(of("web")["orders"], 1);
    assert_eq!(of("web")["net_takings"], 2000);
    let text = api
        .http
        .get(format!(
            "{}/v1/reports/day?date={}&format=text",
            api.base, server.day
        ))
        .header("authorization", format!("Bearer {sup}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ONLINE CHANNELS"), "{text}");
    assert!(text.contains("Office de tourisme"), "{text}");

    // Revoked: the token stops working; the order stands.
    let out = server.admin(&["channel", "revoke", "--name", "Office de tourisme"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, hold) = api
        .hold("b-h", s, json!([{"product_id": "adult", "quantity": 1}]))
        .await
        .unwrap();
    let hold_id = hold["hold_id"].as_str().unwrap().to_string();
    let (status, body) = wait_for("the revocation", Duration::from_secs(10), || {
        let office_api = office_api.clone();
        let hold_id = hold_id.clone();
        async move {
            let r = office_api
                .confirm(&format!("office-{}", uuid::Uuid::now_v7()), &hold_id)
                .await
                .unwrap();
            (r.0 == StatusCode::UNAUTHORIZED).then_some(r)
        }
    })
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unknown_channel");
    assert_eq!(server.count("SELECT COUNT(*) FROM orders"), 2);
}

/// 200 visitors race the last 30 places through the whole payment flow:
/// hold, checkout, the provider's callback delivered three times (at once).
/// Holds are short, so some payments arrive after their hold ran out and
/// others have taken the places. Never more sold than capacity, every paid
/// payment ticketed or refunded, and the replays change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_visitors_race_the_last_places_through_payment() {
    const CAPACITY: i64 = 30;
    const VISITORS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let config = slow_config(dir.path(), "");
    let server = ServerProcess::start_at("11:05", &["--hold-ttl-secs", "2", "--config", &config]);
    let api = server.api();
    let s = slot(server.day, "15:30");
    server.set_capacity(s, CAPACITY as u32);
    wait_for("the capacity change", Duration::from_secs(10), || async {
        (api.available(s).await == CAPACITY as u64).then_some(())
    })
    .await;

    let signer = std::sync::Arc::new(server.demo_signer());
    let offset = server.offset_secs;
    let mut tasks = Vec::new();
    for v in 0..VISITORS {
        let api = api.clone();
        let signer = signer.clone();
        tasks.push(tokio::spawn(async move {
            // Up to 8 s of tries: places come back as holds run out.
            let until = Instant::now() + Duration::from_secs(8);
            let mut attempt = 0;
            while Instant::now() < until {
                attempt += 1;
                let quantity = 1 + (v % 2) as u32;
                let (status, hold) = api
                    .hold(
                        &format!("race-{v}-{attempt}-h"),
                        s,
                        json!([{"product_id": "adult", "quantity": quantity}]),
                    )
                    .await
                    .unwrap();
                if status != StatusCode::CREATED {
                    tokio::time::sleep(Duration::from_millis(100 + (v as u64 % 7) * 40)).await;
                    continue;
                }
                let hold_id = hold["hold_id"].as_str().unwrap().to_string();
                let (status, checkout) = api
                    .checkout(&format!("race-{v}-{attempt}-c"), &hold_id)
                    .await
                    .unwrap();
                if status != StatusCode::CREATED {
                    continue;
                }
                // Some visitors dawdle past their hold's end.
                if v % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                }
                let payment_id = payment_id_of(&checkout);
                let event = DemoEvent {
                    id: format!("evt_race_{v}_{attempt}"),
                    kind: "payment.succeeded".into(),
                    payment_id: payment_id.clone(),
                    amount: checkout["total"]["amount"].as_i64().unwrap(),
                    currency: "EUR".into(),
                };
                let body = serde_json::to_string(&event).unwrap();
                let signature = signer.sign(body.as_bytes(), Clock::with_offset_secs(offset).now());
                // The provider delivers it three times, concurrently.
                let deliveries = (0..3).map(|_| {
                    let api = api.clone();
                    let body = body.clone();
                    let signature = signature.clone();
                    async move {
                        api.post_raw(
                            "/v1/payments/demo/webhook",
                            &[("tessera-signature", &signature)],
                            &body,
                        )
                        .await
                        .unwrap()
                    }
                });
                for (status, answer) in futures_util::future::join_all(deliveries).await {
                    assert_eq!(status, StatusCode::OK, "{answer}");
                }
                return Some((payment_id, body, signature, checkout["checkout_id"].clone()));
            }
            None
        }));
    }
    let mut paid = Vec::new();
    for t in tasks {
        if let Some(p) = t.await.unwrap() {
            paid.push(p);
        }
    }
    assert!(!paid.is_empty());

    let check = |server: &ServerProcess| {
        let [orders, sold] = server.numbers(&format!(
            "SELECT (SELECT COALESCE(SUM(admissions), 0) FROM orders WHERE slot_id = '{s}'),
                    (SELECT sold_online FROM slots WHERE slot_id = '{s}')"
        ));
        (orders, sold)
    };
    let (orders, sold) = check(&server);
    assert!(orders <= CAPACITY, "{orders} admissions sold of {CAPACITY}");
    assert_eq!(orders, sold);
    assert_eq!(
        server.count("SELECT COUNT(*) FROM tickets"),
        orders,
        "one ticket per adult"
    );
    // Every paid payment: exactly one of an order or a refund.
    let rows: HashMap<String, (String, i64, i64)> = server
        .query(
            "SELECT p.payment_id, p.status,
                    (SELECT COUNT(*) FROM orders o WHERE o.payment_id = p.payment_id),
                    (SELECT COUNT(*) FROM refunds r WHERE r.payment_id = p.payment_id)
             FROM payments p",
        )
        .into_iter()
        .map(|r| {
            let n = |i: usize| r[i].parse::<i64>().unwrap();
            (r[0].clone(), (r[1].clone(), n(2), n(3)))
        })
        .collect();
    let mut refunded = 0;
    for (payment_id, _, _, _) in &paid {
        let (status, orders, refunds) = &rows[payment_id];
        match status.as_str() {
            "paid" => assert_eq!((*orders, *refunds), (1, 0), "{payment_id}"),
            "refunding" | "refunded" => {
                assert_eq!((*orders, *refunds), (0, 1), "{payment_id}");
                refunded += 1;
            }
            other => panic!("paid payment {payment_id} is {other}"),
        }
    }
    assert_eq!(
        server.count("SELECT COUNT(*) FROM webhook_events"),
        paid.len() as i64,
        "each event recorded once"
    );
    // The queue pays every refund back.
    server
        .wait_count(
            "every refund",
            "SELECT COUNT(*) FROM refunds WHERE status != 'done'",
            0,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM payments WHERE status = 'refunded'"),
        refunded
    );

    // Every callback delivered again: nothing changes.
    let before: (i64, i64, i64, i64) = (
        server.count("SELECT COUNT(*) FROM orders"),
        server.count("SELECT COUNT(*) FROM tickets"),
        server.count("SELECT COUNT(*) FROM refunds"),
        server.count("SELECT COUNT(*) FROM mail_outbox"),
    );
    let mut seen = HashSet::new();
    for (payment_id, body, _, _) in &paid {
        assert!(seen.insert(payment_id.clone()));
        let event: DemoEvent = serde_json::from_str(body).unwrap();
        let (body, signature) =
            signed_event(&server, &event.id, payment_id, event.amount, &event.kind);
        let (status, _) = deliver(&api, &body, &signature).await;
        assert_eq!(status, StatusCode::OK);
    }
    let after = (
        server.count("SELECT COUNT(*) FROM orders"),
        server.count("SELECT COUNT(*) FROM tickets"),
        server.count("SELECT COUNT(*) FROM refunds"),
        server.count("SELECT COUNT(*) FROM mail_outbox"),
    );
    assert_eq!(before, after);
    assert_eq!(check(&server), (orders, sold));
    // What the visitors' return pages say agrees.
    for (_, _, _, checkout_id) in paid.iter().take(40) {
        let st = api.await_checkout(checkout_id.as_str().unwrap()).await;
        assert!(
            st["state"] == "confirmed" || st["state"] == "refunded",
            "{st}"
        );
    }
}
