//! Staff secrets against a stolen counter: the counter holds only cashiers'
//! argon2id verifiers; a supervisor's PIN is checked by the server behind a
//! lockout that survives restarts; a void needs the server's approval, bound
//! to the counter and the sale, so offline (or forged) it changes nothing.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::api::sync::{PaymentMethod, VoidRecord};
use tessera_server::testkit::{slot, ServerProcess};
use uuid::Uuid;

const REAL_COST: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

fn local_staff(c: &Counter) -> Vec<Value> {
    let conn = rusqlite::Connection::open(c.dir.path().join("terminal.db")).expect("terminal db");
    let json: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'staff'", [], |r| {
            r.get(0)
        })
        .expect("staff cached");
    serde_json::from_str(&json).expect("staff json")
}

async fn approve(
    server: &ServerProcess,
    token: &str,
    pin: &str,
    sale: Uuid,
) -> (StatusCode, Value) {
    server
        .api()
        .post_raw(
            "/v1/approvals",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-supervisor-pin", pin),
            ],
            &json!({"action": "void", "sale_id": sale}).to_string(),
        )
        .await
        .expect("approvals answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_holds_only_cashier_verifiers_made_with_argon2id() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter A").await;

    let staff = local_staff(&c);
    let names: Vec<&str> = staff.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["Camille", "Hugo"], "no supervisor on the counter");
    for s in &staff {
        assert_eq!(s["role"], "cashier");
        let v = s["pin_verifier"].as_str().expect("verifier");
        // The cost itself: `cheap_test_verifiers_need_an_explicit_setting`.
        assert!(v.starts_with("$argon2id$v=19$"), "{v}");
    }
    // Straight from the wire as well.
    let request = c.t.pending_sync_request().unwrap();
    let (status, answer) = post_sync(&server, &token_of(&c), &request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let sent = answer["staff"].as_array().expect("staff list");
    assert_eq!(sent.len(), 2);
    assert!(!answer.to_string().contains("Inès"));
    assert!(!answer.to_string().contains("pin_hash"));

    // The server keeps no fast hash (SQLite blanks the columns older
    // databases had; PostgreSQL's schema never had them), and argon2id
    // verifiers with their own salts.
    if tessera_server::testkit::backend().is_sqlite() {
        assert_eq!(
            server_count(
                &server,
                "SELECT COUNT(*) FROM staff WHERE pin_salt != '' OR pin_hash != ''"
            ),
            0
        );
    }
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(DISTINCT pin_verifier) FROM staff WHERE pin_verifier LIKE '$argon2id$v=19$%'"
        ),
        3
    );

    // Cashiers unlock the till offline; a supervisor's PIN means nothing here.
    assert_eq!(c.t.login("2222").unwrap().name, "Hugo");
    assert_eq!(c.t.login("9999").unwrap_err().code(), "bad_pin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_a_void_is_refused_and_the_sale_stands_online_the_server_approves_it() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let at_14 = slot(server.day, "14:00");
    let c = counter(&server, "Counter A").await;
    let sale =
        c.t.sell(card_sale(at_14, &[("adult", 2)]))
            .await
            .unwrap()
            .sale;
    let left = lease_left(&c.t, at_14);

    // No server: the counter has nothing to check a supervisor's PIN against.
    server.kill();
    let err =
        c.t.void(sale.sale_id, "9999", "wrong day")
            .await
            .unwrap_err();
    assert_eq!(err.code(), "approval_needs_server");
    assert_eq!(
        err.to_string(),
        "a supervisor approval needs the server; try again when online"
    );
    assert!(!c.t.sale(sale.sale_id).unwrap().voided, "the sale stands");
    assert_eq!(c.t.status().unwrap().pending_voids, 0);
    assert_eq!(lease_left(&c.t, at_14), left);

    // Online: a cashier's PIN is refused by the server, the right one approves.
    server.restart();
    let err =
        c.t.void(sale.sale_id, "1111", "wrong day")
            .await
            .unwrap_err();
    assert_eq!(err.code(), "not_supervisor");
    assert!(!c.t.sale(sale.sale_id).unwrap().voided);
    let done = c.t.void(sale.sale_id, "9999", "wrong day").await.unwrap();
    assert_eq!(done.approved_by, "Inès");
    assert!(c.t.sale(sale.sale_id).unwrap().voided);
    c.t.sync_now().await.unwrap();
    assert_eq!(
        server_count(
            &server,
            &format!(
                "SELECT COUNT(*) FROM counter_voids v
                 JOIN approvals a ON a.used_by = CAST(v.void_id AS TEXT)
                 WHERE v.sale_id = '{}' AND v.approved_by = 'Inès'
                   AND a.subject = CAST(v.sale_id AS TEXT)",
                sale.sale_id
            )
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_without_the_servers_approval_for_that_sale_changes_nothing() {
    let server = ServerProcess::start_at("11:05", &[]);
    let at_14 = slot(server.day, "14:00");
    let a = counter(&server, "Counter A").await;
    let b = counter(&server, "Counter B").await;
    let first =
        a.t.sell(card_sale(at_14, &[("adult", 1)]))
            .await
            .unwrap()
            .sale;
    let second =
        a.t.sell(card_sale(at_14, &[("adult", 1)]))
            .await
            .unwrap()
            .sale;
    a.t.sync_now().await.unwrap();
    let books = server_books(&server);
    let token_a = token_of(&a);

    // Approvals the server did issue, but not for this void of this counter.
    let for_second = server
        .api()
        .approve_void(&token_a, "9999", &second.sale_id.to_string())
        .await;
    let (status, from_b) = approve(&server, &token_of(&b), "9999", first.sale_id).await;
    assert_eq!(status, StatusCode::CREATED, "{from_b}");
    let id = |v: &Value| Some(v["approval_id"].as_str().unwrap().parse::<Uuid>().unwrap());
    let for_second = Some(for_second.parse::<Uuid>().unwrap());

    for approval in [None, Some(Uuid::now_v7()), for_second, id(&from_b)] {
        let mut request = a.t.pending_sync_request().unwrap();
        request.voids.push(VoidRecord {
            void_id: Uuid::now_v7(),
            sale_id: first.sale_id,
            after_seq: 2,
            at: a.t.clock().now(),
            shift_id: None,
            approved_by: "Inès".into(),
            approval_id: approval,
            reason: "forged".into(),
            returned_to_lease: true,
            refund: first.total,
            refund_method: PaymentMethod::Card,
        });
        let (status, body) = post_sync(&server, &token_a, &request).await;
        assert!(!status.is_server_error(), "{status} {body}");
        assert_eq!(
            server_books(&server),
            books,
            "approval {approval:?}: {body}"
        );
        assert_eq!(
            server_count(
                &server,
                "SELECT COUNT(*) FROM sales WHERE voided_at IS NOT NULL"
            ),
            0
        );
    }

    // The counter's own way works, and records who the server matched.
    a.t.void(first.sale_id, "9999", "customer left")
        .await
        .unwrap();
    a.t.sync_now().await.unwrap();
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM counter_voids WHERE approved_by = 'Inès'"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_pin_lockout_survives_a_server_restart() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter A").await;
    let token = token_of(&c);
    let sale = Uuid::now_v7();
    for guess in ["0000", "1234", "1111", "4321", "9998"] {
        let (status, body) = approve(&server, &token, guess, sale).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) = approve(&server, &token, "9999", sale).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "too_many_attempts");

    server.restart();
    let (status, body) = approve(&server, &token, "9999", sale).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "still locked: {body}"
    );
    // Every supervisor action from this counter, revoking leases included.
    let lease = server.query_one("SELECT lease_id FROM leases LIMIT 1");
    let err =
        c.t.revoke_lease("9999", lease.parse().unwrap())
            .await
            .unwrap_err();
    assert!(
        err.to_string().contains("too many wrong supervisor PINs"),
        "{err}"
    );
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM leases WHERE revoked_at IS NOT NULL"
        ),
        0
    );
    assert_eq!(server_count(&server, "SELECT COUNT(*) FROM approvals"), 0);
    // Another counter is not affected.
    let other = counter(&server, "Counter B").await;
    let (status, body) = approve(&server, &token_of(&other), "9999", sale).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["approved_by"], "Inès");
}

#[test]
fn cheap_test_verifiers_need_an_explicit_setting() {
    let dir = tempfile::tempdir().unwrap();
    let init = |db: &str, cheap: bool| {
        let mut cmd = std::process::Command::new(tessera_server::testkit::server_binary());
        cmd.args(["init", "--db", db, "--fixtures"])
            .arg(tessera_server::testkit::demo_fixture())
            .args(["--days", "1"]);
        if cheap {
            cmd.env("TESSERA_INSECURE_TEST_PIN_KDF", "1");
        } else {
            cmd.env_remove("TESSERA_INSECURE_TEST_PIN_KDF");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conn = rusqlite::Connection::open(db).unwrap();
        let verifiers: Vec<String> = conn
            .prepare("SELECT pin_verifier FROM staff")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        verifiers
    };
    let real = init(&dir.path().join("real.db").display().to_string(), false);
    assert!(real.iter().all(|v| v.starts_with(REAL_COST)), "{real:?}");
    let cheap = init(&dir.path().join("cheap.db").display().to_string(), true);
    assert!(
        cheap
            .iter()
            .all(|v| v.starts_with("$argon2id$v=19$m=64,t=1,p=1$")),
        "{cheap:?}"
    );
}

fn set_pin(server: &ServerProcess, name: &str, role: Option<&str>, pin: &str) -> (bool, String) {
    use std::io::Write;
    let mut cmd = std::process::Command::new(tessera_server::testkit::server_binary());
    cmd.args(["set-pin", "--name", name])
        .args(server.store_args());
    if let Some(role) = role {
        cmd.args(["--role", role]);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{pin}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    outcome(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sets_pins_and_the_running_server_and_counters_follow() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter A").await;

    let (ok, out) = set_pin(&server, "Hugo", None, "3333");
    assert!(ok, "{out}");
    let (ok, out) = set_pin(&server, "Camille", None, "9999");
    assert!(!ok && out.contains("already has this PIN"), "{out}");
    let (ok, out) = set_pin(&server, "Nobody", None, "4444");
    assert!(!ok && out.contains("--role"), "{out}");
    let (ok, out) = set_pin(&server, "Zoé", Some("supervisor"), "7777");
    assert!(ok, "{out}");
    assert!(!out.contains("7777"));
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM audit_log WHERE action = 'set_pin'"
        ),
        2
    );

    c.t.sync_now().await.unwrap();
    assert_eq!(c.t.login("3333").unwrap().name, "Hugo");
    assert_eq!(c.t.login("2222").unwrap_err().code(), "bad_pin");
    assert_eq!(c.t.login("1111").unwrap().name, "Camille");
    assert!(local_staff(&c).iter().all(|s| s["name"] != "Zoé"));
    let approval = server
        .api()
        .approve_void(&token_of(&c), "7777", &Uuid::now_v7().to_string())
        .await;
    assert!(approval.parse::<Uuid>().is_ok());
}
