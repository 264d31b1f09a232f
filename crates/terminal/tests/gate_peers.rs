//! Gates sharing admissions over the LAN (issue 12): with the server down, a
//! ticket admitted at one gate is refused at the next, naming the first; a
//! forged message changes nothing; a gate that was away catches up; a gate's
//! own key never makes a ticket.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use tessera_core::admission::DenyReason;
use tessera_core::api::gate::RedeemResult;
use tessera_core::ticket_code::{TicketClaims, TicketSigner};
use tessera_server::testkit::{slot, ServerProcess};
use tessera_terminal::peers::{PeerAdmission, PeerHello};
use tessera_terminal::Terminal;
use uuid::Uuid;

const ANY_PORT: &str = "127.0.0.1:0";

/// Waits (with a generous deadline for a busy machine) until `t` knows of
/// an admission of `ticket`.
async fn until_known(t: &Terminal, ticket: Uuid) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let known = t.peer_admissions().expect("peer admissions");
        if known.iter().any(|a| a.ticket_id == ticket) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never heard of ticket {ticket}",
            t.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ticket_of(code: &str) -> Uuid {
    tessera_core::ticket_code::decode_unverified(code)
        .expect("a ticket code")
        .0
        .ticket_id
}

/// Syncs each gate once (so each holds the others' certified keys), starts
/// its peer service and points it at the others.
async fn mesh(gates: &[&Terminal]) -> Vec<SocketAddr> {
    for g in gates {
        g.sync_now().await.expect("sync");
    }
    let mut addrs = Vec::new();
    for g in gates {
        addrs.push(
            g.start_peer_service(ANY_PORT.parse().unwrap())
                .await
                .expect("peer service"),
        );
    }
    for (i, g) in gates.iter().enumerate() {
        let others: Vec<String> = addrs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, a)| format!("http://{a}"))
            .collect();
        g.set_peers(&others).expect("set peers");
    }
    addrs
}

/// What the gate stored at enrolment: its key id and signing seed.
fn gate_key(g: &Counter) -> TicketSigner {
    let conn = rusqlite::Connection::open(g.dir.path().join("terminal.db")).expect("db");
    let json: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'identity'", [], |r| {
            r.get(0)
        })
        .expect("identity");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let key_id = v["key_id"].as_u64().expect("a gate's key is certified") as u32;
    let seed: [u8; 32] = data_encoding::HEXLOWER
        .decode(v["signing_seed"].as_str().expect("seed").as_bytes())
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    TicketSigner::from_seed(key_id, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_server_down_gates_refuse_what_another_gate_admitted() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let now_slot = slot(server.day, "11:00");
    let north = gate(&server, "North gate").await;
    let south = gate(&server, "South gate").await;
    let east = gate(&server, "East gate").await;
    let codes = buy_online(&server, "peers", now_slot, 4).await;
    let addrs = mesh(&[&north.t, &south.t, &east.t]).await;
    server.kill();

    // Admitted at North; South hears of it and refuses, naming North.
    let first = north.t.scan(&codes[0]).await.unwrap();
    assert_eq!(first.result, RedeemResult::Admitted, "{first:?}");
    assert!(first.offline);
    until_known(&south.t, ticket_of(&codes[0])).await;
    let second = south.t.scan(&codes[0]).await.unwrap();
    assert_eq!(second.result, RedeemResult::Denied, "{second:?}");
    assert_eq!(second.reason, Some(DenyReason::AlreadyUsed));
    assert_eq!(second.first_used_by.as_deref(), Some("North gate"));
    // Peers carry milliseconds.
    assert_eq!(
        second.first_used_at.map(|t| t.as_millisecond()),
        first.first_used_at.map(|t| t.as_millisecond())
    );
    assert!(
        second
            .message
            .starts_with("Already admitted at North gate at "),
        "{}",
        second.message
    );

    // Forged messages to South: refused with a 4xx, nothing merged.
    let known_before = south.t.peer_admissions().unwrap().len();
    let genuine = south
        .t
        .peer_admissions()
        .unwrap()
        .into_iter()
        .find(|a| a.ticket_id == ticket_of(&codes[0]))
        .expect("North's admission");
    let target = ticket_of(&codes[1]);
    let mut tampered = genuine.clone();
    tampered.ticket_id = target;
    let stranger = TicketSigner::from_seed(999, [42u8; 32]);
    let unknown_key = PeerAdmission::sign(
        &ed25519_dalek::SigningKey::from_bytes(&stranger.seed()),
        999,
        target,
        genuine.slot_id,
        genuine.device_id,
        "North gate",
        genuine.admitted_at_ms,
    );
    let http = reqwest::Client::new();
    let south_url = format!("http://{}", addrs[1]);
    for forged in [&tampered, &unknown_key] {
        let r = http
            .post(format!("{south_url}/v1/peers/admission"))
            .json(forged)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    let r = http
        .post(format!("{south_url}/v1/peers/admission"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);
    let r = http
        .post(format!("{south_url}/v1/peers/admission"))
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    // An exchange is for certified peers only.
    let north_key = gate_key(&north);
    let now_ms = clock(&server).now().as_millisecond();
    let hello = |key: &TicketSigner, key_id: u32| {
        PeerHello::sign(
            &ed25519_dalek::SigningKey::from_bytes(&key.seed()),
            key_id,
            north.t.device_id(),
            now_ms,
        )
    };
    for from in [hello(&stranger, north_key.key_id), hello(&stranger, 999)] {
        let r = http
            .post(format!("{south_url}/v1/peers/exchange"))
            .json(&serde_json::json!({"from": from, "admissions": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::FORBIDDEN);
    }
    // In a catch-up batch the forged items are refused and the good one kept.
    let batch = serde_json::json!({
        "from": hello(&north_key, north_key.key_id),
        "admissions": [tampered, genuine, unknown_key, 17]
    });
    let r = http
        .post(format!("{south_url}/v1/peers/exchange"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["refused"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(south.t.peer_admissions().unwrap().len(), known_before);
    let forged_ticket = south.t.scan(&codes[1]).await.unwrap();
    assert_eq!(
        forged_ticket.result,
        RedeemResult::Admitted,
        "a forged admission refuses nobody: {forged_ticket:?}"
    );

    // Yesterday's admission, genuinely signed: not today's, refused.
    let known_before = south.t.peer_admissions().unwrap().len();
    let yesterday = PeerAdmission::sign(
        &ed25519_dalek::SigningKey::from_bytes(&north_key.seed()),
        north_key.key_id,
        target,
        slot(server.day.yesterday().unwrap(), "11:00"),
        north.t.device_id(),
        "North gate",
        genuine.admitted_at_ms - 86_400_000,
    );
    let r = http
        .post(format!("{south_url}/v1/peers/admission"))
        .json(&yesterday)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(south.t.peer_admissions().unwrap().len(), known_before);

    // East leaves the LAN; North admits (and notices); East returns and
    // catches up.
    east.t.stop_peer_service().await;
    let third = north.t.scan(&codes[2]).await.unwrap();
    assert_eq!(third.result, RedeemResult::Admitted, "{third:?}");
    until_known(&south.t, ticket_of(&codes[2])).await;
    let east_url = format!("http://{}", addrs[2]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let links = north.t.status().unwrap().gate_peers;
        let east_link = links
            .iter()
            .find(|l| l.url == east_url)
            .expect("East listed");
        if east_link.reachable == Some(false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "North never noticed East gone: {links:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !east
            .t
            .peer_admissions()
            .unwrap()
            .iter()
            .any(|a| a.ticket_id == ticket_of(&codes[2])),
        "East was away"
    );
    east.t
        .start_peer_service(addrs[2])
        .await
        .expect("back on the LAN");
    until_known(&east.t, ticket_of(&codes[2])).await;
    let late = east.t.scan(&codes[2]).await.unwrap();
    assert_eq!(late.reason, Some(DenyReason::AlreadyUsed), "{late:?}");
    assert_eq!(late.first_used_by.as_deref(), Some("North gate"));

    // A restart keeps what South learned.
    south.t.stop_peer_service().await;
    let south_again = Terminal::open_with_clock(south.dir.path(), clock(&server)).unwrap();
    let again = south_again.scan(&codes[2]).await.unwrap();
    assert_eq!(again.reason, Some(DenyReason::AlreadyUsed), "{again:?}");
    assert_eq!(again.first_used_by.as_deref(), Some("North gate"));

    // Back online, the server is the judge again and sees no conflict.
    server.restart();
    north.t.sync_now().await.unwrap();
    south_again.sync_now().await.unwrap();
    assert_eq!(
        server_count(&server, "SELECT COUNT(*) FROM gate_conflicts"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_signed_with_a_gates_key_is_refused_everywhere() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let now_slot = slot(server.day, "11:00");
    let north = gate(&server, "North gate").await;
    let south = gate(&server, "South gate").await;
    let signer = gate_key(&north);

    let (_, keys) = server.api().get("/v1/keys").await.unwrap();
    let listed = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"].as_u64() == Some(u64::from(signer.key_id)))
        .cloned()
        .expect("the gate's key is certified and published");
    assert_eq!(listed["role"], "gate");

    let fake = signer
        .sign(&TicketClaims {
            key_id: signer.key_id,
            ticket_id: Uuid::now_v7(),
            slot: now_slot,
            window_minutes: 30,
            admits: 1,
            product_id: "adult".into(),
        })
        .unwrap();
    // The server refuses it at redeem.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/gate/redeem", server.url))
        .bearer_auth(token_of(&south))
        .json(&serde_json::json!({"code": fake, "scan_id": Uuid::now_v7()}))
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["result"], "denied", "{answer}");
    // So does a gate, online and offline, and the signing gate itself.
    for g in [&south, &north] {
        let v = g.t.scan(&fake).await.unwrap();
        assert_eq!(v.result, RedeemResult::Denied, "{v:?}");
    }
    server.kill();
    for g in [&south, &north] {
        let v = g.t.scan(&fake).await.unwrap();
        assert_eq!(v.result, RedeemResult::Denied, "{v:?}");
        assert_eq!(v.reason, Some(DenyReason::Invalid), "{v:?}");
    }
}
