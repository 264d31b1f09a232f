//! A ticket admits once; a second scan is denied and names the first.

use reqwest::StatusCode;
use serde_json::json;
use tessera_server::testkit::{slot, ServerProcess};

async fn buy_one(
    api: &tessera_server::testkit::Api,
    key: &str,
    s: tessera_core::slot::SlotId,
) -> String {
    let (status, order) = api
        .buy(key, s, json!([{"product_id": "adult", "quantity": 1}]))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order["tickets"][0]["code"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_admits_once_and_explains_every_refusal() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let gate_token = server.enrol_gate("North entrance").await;
    let (_, gate2) = api
        .enrol(
            &server.enrolment_code("gate", "South entrance"),
            "gate-2",
            None,
        )
        .await
        .unwrap();
    let gate2_token = gate2["token"].as_str().unwrap().to_string();

    let code = buy_one(&api, "now", slot(server.day, "11:00")).await;
    let (status, first) = api.redeem(&gate_token, &code).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["result"], "admitted", "{first}");
    assert_eq!(first["admits"], 1);
    assert_eq!(first["product_id"], "adult");

    let (_, second) = api.redeem(&gate2_token, &code).await.unwrap();
    assert_eq!(second["result"], "denied", "{second}");
    assert_eq!(second["reason"], "already_used");
    assert_eq!(second["first_redeemed_by"], "North entrance");
    assert_eq!(second["first_redeemed_at"], first["first_redeemed_at"]);
    assert!(second["message"]
        .as_str()
        .unwrap()
        .contains("North entrance"));

    // One changed character: not a ticket.
    let fresh = buy_one(&api, "tamper", slot(server.day, "11:00")).await;
    let mut chars: Vec<char> = fresh.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let (_, denied) = api.redeem(&gate_token, &tampered).await.unwrap();
    assert_eq!(denied["reason"], "invalid", "{denied}");
    // The untouched ticket still works: the forgery did not burn it.
    let (_, ok) = api.redeem(&gate_token, &fresh).await.unwrap();
    assert_eq!(ok["result"], "admitted");

    let tomorrow = buy_one(
        &api,
        "tomorrow",
        slot(server.day.tomorrow().unwrap(), "11:00"),
    )
    .await;
    let (_, denied) = api.redeem(&gate_token, &tomorrow).await.unwrap();
    assert_eq!(denied["reason"], "wrong_day", "{denied}");

    let later = buy_one(&api, "later", slot(server.day, "16:00")).await;
    let (_, denied) = api.redeem(&gate_token, &later).await.unwrap();
    assert_eq!(denied["reason"], "too_early", "{denied}");

    let (_, denied) = api.redeem(&gate_token, "HELLO").await.unwrap();
    assert_eq!(denied["reason"], "invalid");

    // A scanner that types lower case still works (and is still single-use).
    let (_, again) = api.redeem(&gate_token, &code.to_lowercase()).await.unwrap();
    assert_eq!(again["reason"], "already_used");

    let redemptions = server.count("SELECT COUNT(*) FROM redemptions");
    assert_eq!(redemptions, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_in_gate_mode_redeems_and_its_key_is_published() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let key = hex_key();
    let (status, counter) = api
        .enrol(
            &server.enrolment_code("counter", "Counter 1"),
            "till-1",
            Some(&key),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{counter}");
    assert!(counter["key_id"].as_u64().unwrap() > 1);
    let code = buy_one(&api, "x", slot(server.day, "11:00")).await;
    let (status, body) = api
        .redeem(counter["token"].as_str().unwrap(), &code)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"], "admitted");
    assert_eq!(body["first_redeemed_by"], "Counter 1");

    // The counter's certified key is published for gates.
    let (_, keys) = api.get("/v1/keys").await.unwrap();
    assert!(keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["public_key"] == key.as_str() && k["owner"] == "Counter 1"));
}

fn hex_key() -> String {
    let signer = tessera_core::ticket_code::TicketSigner::from_seed(0, [9u8; 32]);
    data_encoding::HEXLOWER.encode(&signer.public_key())
}
