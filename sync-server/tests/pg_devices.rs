//! Devices and staff on the PostgreSQL backend, with two server processes on
//! one throw-away cluster: a device enrolled through one process is known to
//! the other (its token, its ticket key); an enrolment code works once
//! whichever process it reaches; the supervisor-PIN lockout counts guesses
//! made on both processes together; a device revoked by the operator is
//! refused by both; staff loaded at init approve voids.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::ticket_code::TicketSigner;
use tessera_server::testkit::{wait_for, Api, PgCluster, PgMuseum};
use uuid::Uuid;

const WITHIN: Duration = Duration::from_secs(30);

async fn approval(api: &Api, token: &str, pin: &str) -> (StatusCode, Value) {
    api.post_raw(
        "/v1/approvals",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-supervisor-pin", pin),
        ],
        &json!({"action": "void", "sale_id": Uuid::now_v7()}).to_string(),
    )
    .await
    .expect("approvals answers")
}

/// Enrols a counter through `api`; its token.
async fn counter(museum: &PgMuseum, api: &Api, name: &str, seed: u8) -> String {
    let code = museum.admin_ok(&["enrol", "--role", "counter", "--name", name]);
    let public =
        data_encoding::HEXLOWER.encode(&TicketSigner::from_seed(0, [seed; 32]).public_key());
    let (status, enrolled) = api.enrol(&code, name, Some(&public)).await.expect("enrol");
    assert_eq!(status, StatusCode::CREATED, "{enrolled}");
    enrolled["token"].as_str().expect("token").to_string()
}

async fn published_key(api: &Api, key_id: u64) -> Option<Value> {
    let (_, keys) = api.get("/v1/keys").await.expect("keys");
    keys["keys"]
        .as_array()?
        .iter()
        .find(|k| k["key_id"] == key_id)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_counter_enrolled_on_one_process_is_known_to_every_process() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let (a, b) = (a.api(), b.api());
    let code = museum.admin_ok(&["enrol", "--role", "counter", "--name", "Desk 1"]);
    let signer = TicketSigner::from_seed(0, [7; 32]);
    let public = data_encoding::HEXLOWER.encode(&signer.public_key());

    // Both processes handed the same code at once: one device is enrolled.
    let (first, second) = tokio::join!(
        a.enrol(&code, "till 1", Some(&public)),
        b.enrol(&code, "till 1", Some(&public))
    );
    let answers = [first.expect("enrol on A"), second.expect("enrol on B")];
    let enrolled: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(enrolled.len(), 1, "{answers:?}");
    let refused = answers
        .iter()
        .find(|(s, _)| *s != StatusCode::CREATED)
        .expect("one refusal");
    assert_eq!(refused.0, StatusCode::FORBIDDEN, "{refused:?}");
    assert_eq!(refused.1["error"]["code"], "enrolment_code_invalid");
    assert_eq!(pg.count("SELECT COUNT(*) FROM devices"), 1);
    let token = enrolled[0]["token"].as_str().expect("token").to_string();
    let key_id = enrolled[0]["key_id"].as_u64().expect("a counter has a key");

    // Both processes publish the counter's key to the gates, and both
    // accept its token (a supervisor's approval needs a device).
    for (api, name) in [(&a, "A"), (&b, "B")] {
        let key = wait_for(
            &format!("{name} to publish the counter's key"),
            WITHIN,
            || published_key(api, key_id),
        )
        .await;
        assert_eq!(key["public_key"], public.as_str(), "{key}");
        assert_eq!(key["revoked"], false, "{key}");
        let (status, body) = approval(api, &token, "9999").await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        assert_eq!(body["approved_by"], "Inès", "{body}");
    }
    assert_eq!(pg.count("SELECT COUNT(*) FROM approvals"), 2);

    // The operator revokes it: refused by both processes, its key marked.
    let out = museum.admin_ok(&["revoke-device", "--device", "Desk 1"]);
    assert!(out.contains("Desk 1"), "{out}");
    for (api, name) in [(&a, "A"), (&b, "B")] {
        wait_for(
            &format!("{name} to refuse the revoked token"),
            WITHIN,
            || async {
                let (status, _) = approval(api, &token, "9999").await;
                (status == StatusCode::UNAUTHORIZED).then_some(())
            },
        )
        .await;
        wait_for(
            &format!("{name} to mark the key revoked"),
            WITHIN,
            || async {
                published_key(api, key_id)
                    .await
                    .filter(|k| k["revoked"] == true)
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_pins_on_both_processes_count_towards_one_lockout() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let (a, b) = (a.api(), b.api());
    let token = counter(&museum, &a, "Desk 2", 8).await;
    wait_for("B to know the counter", WITHIN, || async {
        let (status, _) = approval(&b, &token, "0000").await;
        // A wrong PIN is 403; an unknown token 401.
        (status == StatusCode::FORBIDDEN).then_some(())
    })
    .await;

    // That was one wrong guess on B; three more, alternating processes.
    for api in [&a, &b, &a] {
        let (status, body) = approval(api, &token, "0000").await;
        assert_ne!(status, StatusCode::CREATED, "{body}");
        assert_ne!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    }
    // The fifth guess is judged and locks the device; a sixth, even with
    // the right PIN and on the other process, is refused before it is read.
    let (status, body) = approval(&b, &token, "0000").await;
    assert_ne!(status, StatusCode::CREATED, "{body}");
    let (status, body) = approval(&a, &token, "9999").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_attempts", "{body}");
    assert_eq!(pg.count("SELECT COUNT(*) FROM approvals"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pin_set_by_the_operator_approves_on_a_running_server() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "09:00");
    let a = museum.serve("a", &[]);
    let a = a.api();
    let token = counter(&museum, &a, "Desk 3", 9).await;

    let mut set_pin = std::process::Command::new(tessera_server::testkit::server_binary());
    set_pin
        .args(["set-pin", "--database", &museum.database_url])
        .args(["--name", "Zoé", "--role", "supervisor"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = set_pin.spawn().expect("set-pin");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"4321\n").expect("write the PIN");
    }
    let out = child.wait_with_output().expect("set-pin ends");
    assert!(
        out.status.success(),
        "set-pin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Until the process has re-read the staff, the new PIN is a wrong guess:
    // a right one (Inès's) after each starts the device's count again, so
    // the wait never locks it out.
    let (status, body) = wait_for("the new supervisor's PIN to work", WITHIN, || async {
        let (status, body) = approval(&a, &token, "4321").await;
        if status == StatusCode::CREATED {
            return Some((status, body));
        }
        let (reset, answer) = approval(&a, &token, "9999").await;
        assert_eq!(reset, StatusCode::CREATED, "{answer}");
        None
    })
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["approved_by"], "Zoé", "{body}");
    assert_eq!(
        pg.count("SELECT COUNT(*) FROM audit_log WHERE action = 'set_pin'"),
        1
    );
}
