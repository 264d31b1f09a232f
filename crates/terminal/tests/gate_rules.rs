//! The gate's rules, the same online and offline: a cancelled ticket is
//! refused as cancelled whatever its slot, and a validly signed code must
//! still name what the museum sells (product, admissions, entry window).

mod common;

use common::*;
use reqwest::StatusCode;
use tessera_core::api::gate::RedeemResult;
use tessera_core::ticket_code::{TicketClaims, TicketSigner};
use tessera_server::testkit::{slot, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voided_ticket_for_a_later_slot_is_refused_as_voided_online_and_offline() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter 1").await;
    let g = gate(&server, "North gate").await;

    let sold =
        c.t.sell(card_sale(slot(server.day, "16:00"), &[("adult", 1)]))
            .await
            .unwrap()
            .sale;
    c.t.void(sold.sale_id, "9999", "visitor cannot come")
        .await
        .unwrap();
    c.t.sync_now().await.unwrap();
    g.t.sync_now().await.unwrap();
    let code = &sold.tickets[0].code;

    // The gate decides this one alone (it is refused before any redeem).
    let offline = g.t.scan(code).await.unwrap();
    assert_eq!(offline.result, RedeemResult::Denied);
    assert_eq!(
        offline.reason.map(|r| r.as_str()),
        Some("voided"),
        "{offline:?}"
    );

    // The server's own redeem says the same.
    let (status, online) = server.api().redeem(&token_of(&g), code).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(online["reason"], "voided", "{online}");

    // A live ticket for the same later slot is still only too early.
    let live =
        c.t.sell(card_sale(slot(server.day, "16:00"), &[("adult", 1)]))
            .await
            .unwrap()
            .sale;
    let early = g.t.scan(&live.tickets[0].code).await.unwrap();
    assert_eq!(early.reason.map(|r| r.as_str()), Some("too_early"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_code_claiming_what_the_catalogue_does_not_sell_is_refused() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    // A counter whose signing key we hold: what a stolen counter can sign.
    let seed = [11u8; 32];
    let public = data_encoding::HEXLOWER.encode(&TicketSigner::from_seed(0, seed).public_key());
    let (status, enrolled) = api
        .enrol(
            &server.enrolment_code("counter", "Counter 9"),
            "Counter 9",
            Some(&public),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{enrolled}");
    let key_id = enrolled["key_id"].as_u64().unwrap() as u32;
    let signer = TicketSigner::from_seed(key_id, seed);
    let g = gate(&server, "North gate").await;
    let token = token_of(&g);

    let claims = |product: &str, admits: u8, window: u16| TicketClaims {
        key_id,
        ticket_id: uuid::Uuid::now_v7(),
        slot: slot(server.day, "11:00"),
        window_minutes: window,
        admits,
        product_id: product.into(),
    };
    let forged = [
        (claims("adult", 255, 30), "255"),
        (claims("adult", 1, 24 * 60), "1440"),
        (claims("vip-lounge", 1, 30), "vip-lounge"),
    ];
    for (c, detail) in &forged {
        let code = signer.sign(c).unwrap();
        let at_gate = g.t.scan(&code).await.unwrap();
        assert_eq!(at_gate.result, RedeemResult::Denied, "{at_gate:?}");
        assert_eq!(
            at_gate.reason.map(|r| r.as_str()),
            Some("not_in_catalogue"),
            "{at_gate:?}"
        );
        assert!(at_gate.message.contains(detail), "{}", at_gate.message);

        let (status, online) = api.redeem(&token, &code).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(online["result"], "denied", "{online}");
        assert_eq!(online["reason"], "not_in_catalogue", "{online}");
        assert!(
            online["message"].as_str().unwrap().contains(detail),
            "{online}"
        );
    }
    assert_eq!(server_count(&server, "SELECT COUNT(*) FROM redemptions"), 0);

    // What the catalogue does sell, from the same key, gets in.
    let family = signer.sign(&claims("family", 4, 30)).unwrap();
    let ok = g.t.scan(&family).await.unwrap();
    assert_eq!(ok.result, RedeemResult::Admitted, "{ok:?}");
    assert_eq!(ok.admits, Some(4));
}
