//! Nothing a gate sends can fail anyone else's write: a scan id used twice is
//! one admission or a clear 4xx, and a body of thousands of scans of one
//! ticket is merged in one pass while holds keep being answered.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::ticket_code::decode_unverified;
use tessera_server::testkit::{slot, Api, ServerProcess};
use uuid::Uuid;

struct Gate {
    device_id: String,
    token: String,
}

async fn enrol_gate(server: &ServerProcess, name: &str) -> Gate {
    let (status, body) = server
        .api()
        .enrol(&server.enrolment_code("gate", name), name, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Gate {
        device_id: body["device_id"].as_str().unwrap().to_string(),
        token: body["token"].as_str().unwrap().to_string(),
    }
}

async fn buy(api: &Api, key: &str, server: &ServerProcess) -> String {
    let (status, order) = api
        .buy(
            key,
            slot(server.day, "11:00"),
            json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order["tickets"][0]["code"].as_str().unwrap().to_string()
}

/// One offline scan of `code`, `secs_ago` before 11:05 on the test day.
fn scan(server: &ServerProcess, code: &str, scan_id: Uuid, secs_ago: i64) -> Value {
    let (claims, _, _) = decode_unverified(code).unwrap();
    let at = tessera_server::testkit::paris()
        .to_timestamp(
            format!("{}T11:05:00", server.day)
                .parse::<jiff::civil::DateTime>()
                .unwrap(),
        )
        .unwrap()
        - jiff::SignedDuration::from_secs(secs_ago);
    json!({
        "scan_id": scan_id,
        "code": code,
        "ticket_id": claims.ticket_id,
        "slot_id": claims.slot,
        "scanned_at": at,
    })
}

async fn gate_sync(api: &Api, gate: &Gate, scans: Vec<Value>) -> (StatusCode, Value) {
    let body = json!({"device_id": gate.device_id, "catalogue_version": 0, "scans": scans});
    api.post_raw(
        "/v1/gate/sync",
        &[("authorization", &format!("Bearer {}", gate.token))],
        &body.to_string(),
    )
    .await
    .unwrap()
}

async fn redeem(api: &Api, gate: &Gate, code: &str, scan_id: Uuid) -> (StatusCode, Value) {
    api.post_raw(
        "/v1/gate/redeem",
        &[("authorization", &format!("Bearer {}", gate.token))],
        &json!({"code": code, "scan_id": scan_id}).to_string(),
    )
    .await
    .unwrap()
}

/// Holds sent alongside `work`; every one must be created.
async fn holds_during<F: std::future::Future>(
    api: &Api,
    server: &ServerProcess,
    tag: &str,
    n: usize,
    work: F,
) -> F::Output {
    let holds: Vec<_> = (0..n)
        .map(|i| {
            let api = api.clone();
            let s = slot(server.day, "14:00");
            let key = format!("{tag}-{i}");
            tokio::spawn(async move {
                api.hold(&key, s, json!([{"product_id": "adult", "quantity": 1}]))
                    .await
            })
        })
        .collect();
    let out = work.await;
    for h in holds {
        let (status, body) = h.await.unwrap().expect("hold answered");
        assert_eq!(
            status,
            StatusCode::CREATED,
            "a hold beside a gate sync: {body}"
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_id_used_twice_is_one_admission_or_a_clear_refusal() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let gate = enrol_gate(&server, "North gate").await;
    let a = buy(&api, "a", &server).await;
    let b = buy(&api, "b", &server).await;

    // The same scan listed twice in one body: one admission, and the holds
    // that share the writer with it are all created.
    let twice = Uuid::now_v7();
    let (status, body) = holds_during(&api, &server, "h1", 8, async {
        gate_sync(
            &api,
            &gate,
            vec![scan(&server, &a, twice, 60), scan(&server, &a, twice, 60)],
        )
        .await
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scans_acked"], json!([twice]));
    assert_eq!(body["conflicts"], 0);
    assert_eq!(server.count("SELECT COUNT(*) FROM scans"), 1);

    // Sent again in a later body: still one admission.
    let (status, _) = gate_sync(&api, &gate, vec![scan(&server, &a, twice, 60)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.count("SELECT COUNT(*) FROM scans"), 1);

    // One scan id for two different admissions in one body: refused, named,
    // nothing stored.
    let clash = Uuid::now_v7();
    let (status, body) = holds_during(&api, &server, "h2", 8, async {
        gate_sync(
            &api,
            &gate,
            vec![scan(&server, &b, clash, 30), scan(&server, &a, clash, 20)],
        )
        .await
    })
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains(&clash.to_string()), "{body}");
    assert_eq!(server.count("SELECT COUNT(*) FROM scans"), 1);

    // A scan id already stored for ticket A, sent for ticket B: refused.
    let (status, body) = gate_sync(&api, &gate, vec![scan(&server, &b, twice, 10)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.to_string().contains(&twice.to_string()), "{body}");
    assert_eq!(server.count("SELECT COUNT(*) FROM scans"), 1);

    // Online: one scan id reused across two redeems of different tickets.
    let c = buy(&api, "c", &server).await;
    let d = buy(&api, "d", &server).await;
    let reused = Uuid::now_v7();
    let (status, first) = redeem(&api, &gate, &c, reused).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["result"], "admitted", "{first}");
    let (status, body) =
        holds_during(&api, &server, "h3", 8, redeem(&api, &gate, &d, reused)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.to_string().contains(&reused.to_string()), "{body}");
    // The refused redeem did not burn ticket D, and a retry of the first
    // redeem gets its first answer.
    let (_, retry) = redeem(&api, &gate, &c, reused).await;
    assert_eq!(retry["result"], "admitted", "{retry}");
    assert_eq!(retry["first_redeemed_at"], first["first_redeemed_at"]);
    let (_, fresh) = redeem(&api, &gate, &d, Uuid::now_v7()).await;
    assert_eq!(fresh["result"], "admitted", "{fresh}");
    // The offline upload of a scan this gate already redeemed online is the
    // same admission (an answer lost on the way, then the offline path).
    let (status, body) = gate_sync(&api, &gate, vec![scan(&server, &c, reused, 1)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["conflicts"], 0);

    assert!(!server.log().contains("batch failed"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_scans_of_one_ticket_merge_in_one_pass_beside_holds() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let north = enrol_gate(&server, "North gate").await;
    let south = enrol_gate(&server, "South gate").await;
    let code = buy(&api, "t", &server).await;

    // South admitted it once, 3000 s before 11:05.
    let earliest = Uuid::now_v7();
    let (status, _) = gate_sync(&api, &south, vec![scan(&server, &code, earliest, 3000)]).await;
    assert_eq!(status, StatusCode::OK);

    // North claims 2,000 admissions of the same ticket after that.
    let n = 2000;
    let scans: Vec<Value> = (0..n)
        .map(|i| scan(&server, &code, Uuid::now_v7(), 2000 - i as i64))
        .collect();
    let (status, body) =
        holds_during(&api, &server, "beside", 40, gate_sync(&api, &north, scans)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["conflicts"], n);
    assert_eq!(body["scans_acked"].as_array().unwrap().len(), n);
    assert_eq!(
        server.count("SELECT COUNT(*) FROM gate_conflicts"),
        n as i64
    );
    // Every conflict names South's admission, the first, as first.
    assert_eq!(
        server.count(&format!("SELECT COUNT(*) FROM gate_conflicts WHERE first_scan = '{earliest}' AND first_gate = 'South gate'")
        ),
        n as i64
    );
    assert_eq!(
        server.query_row("SELECT gate_name, scan_id FROM redemptions"),
        ["South gate".to_string(), earliest.to_string()]
    );

    // An even earlier admission turns up later: it becomes the first, and
    // every conflict (South's included) now names it.
    let earlier = Uuid::now_v7();
    let (status, body) = gate_sync(&api, &north, vec![scan(&server, &code, earlier, 4000)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["conflicts"], 1);
    assert_eq!(
        server.count(&format!(
            "SELECT COUNT(*) FROM gate_conflicts WHERE first_scan = '{earlier}'"
        )),
        n as i64 + 1
    );

    // The body cap is the shared limit.
    let over: Vec<Value> = (0..tessera_core::limits::SCANS_PER_SYNC + 1)
        .map(|_| scan(&server, &code, Uuid::now_v7(), 5))
        .collect();
    let (status, body) = gate_sync(&api, &north, over).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(server.count("SELECT COUNT(*) FROM scans"), n as i64 + 2);
}
