//! Device secrets at enrolment and revocation: a small-order public key is
//! refused, and `revoke-device` refuses a name that fits several devices.

use reqwest::StatusCode;
use tessera_server::testkit::ServerProcess;

fn count(server: &ServerProcess, sql: &str) -> i64 {
    server.db().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_order_public_key_is_refused_at_enrolment() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let code = server.enrolment_code("counter", "Counter 1");
    // The identity point: on the curve, but of order 1.
    let identity = format!("01{}", "00".repeat(31));
    for weak in [identity, "00".repeat(32)] {
        let (status, body) = api.enrol(&code, "till", Some(&weak)).await.unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("public_key"));
    }
    assert_eq!(count(&server, "SELECT COUNT(*) FROM devices"), 0);
    assert_eq!(
        count(
            &server,
            "SELECT COUNT(*) FROM signing_keys WHERE owner != 'server'"
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_device_refuses_a_name_that_fits_several_devices() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let mut ids = Vec::new();
    for device in ["old gate pc", "new gate pc"] {
        let code = server.enrolment_code("gate", "North gate");
        let (status, body) = api.enrol(&code, device, None).await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["device_id"].as_str().unwrap().to_string());
    }
    let db = server.db_str();
    let out = server.cli(&["revoke-device", "--db", &db, "--device", "North gate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("devices are named") && err.contains(&ids[0]) && err.contains(&ids[1]),
        "{err}"
    );
    assert_eq!(
        count(
            &server,
            "SELECT COUNT(*) FROM devices WHERE revoked_at IS NOT NULL"
        ),
        0
    );

    let out = server.cli(&["revoke-device", "--db", &db, "--device", &ids[1]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked: String = server
        .db()
        .query_row(
            "SELECT device_id FROM devices WHERE revoked_at IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(revoked, ids[1]);
}
