//! Bad input to the counter's CLI and to `/v1/sync` gets a clear error and
//! changes nothing.

mod common;

use std::process::Command;

use common::*;
use reqwest::StatusCode;
use tessera_core::clock::OFFSET_ENV;
use tessera_server::testkit::{slot, ServerProcess};

fn cli(server: &ServerProcess, dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-terminal"))
        .arg("--data")
        .arg(dir)
        .args(args)
        .env(OFFSET_ENV, server.offset_secs.to_string())
        .output()
        .expect("run tessera-terminal");
    outcome(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_bad_sales_with_reasons() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter 1").await;
    let dir = c.dir.path();
    let s = slot(server.day, "14:00").to_string();
    let past = slot(server.day, "10:00").to_string();
    let sales_before = c.t.sales_today().unwrap().len();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["sell", "--slot", &s, "--item", "yacht=1", "--pay", "card"],
            "unknown product \"yacht\"",
        ),
        (
            vec!["sell", "--slot", &s, "--item", "adult=two", "--pay", "card"],
            "must be a whole number",
        ),
        (
            vec!["sell", "--slot", &s, "--item", "adult=0", "--pay", "card"],
            "at least 1",
        ),
        (
            vec!["sell", "--slot", &s, "--item", "adult", "--pay", "card"],
            "--item must look like adult=2",
        ),
        (
            vec![
                "sell",
                "--slot",
                "2026-99-01T10:00",
                "--item",
                "adult=1",
                "--pay",
                "card",
            ],
            "slot id must look like",
        ),
        (
            vec![
                "sell", "--slot", &s, "--item", "adult=1", "--pay", "bitcoin",
            ],
            "--pay must be cash:CENTS or card",
        ),
        (
            vec![
                "sell",
                "--slot",
                &s,
                "--item",
                "adult=2",
                "--pay",
                "cash:1000",
            ],
            "less than the total",
        ),
        (
            vec!["sell", "--slot", &s, "--item", "member=1", "--pay", "card"],
            "membership number",
        ),
        (
            vec!["sell", "--slot", &s, "--item", "adult=500", "--pay", "card"],
            "at most",
        ),
        (
            vec![
                "sell", "--slot", &past, "--item", "adult=1", "--pay", "card",
            ],
            "entry window is over",
        ),
        (
            vec![
                "void",
                "--sale",
                "not-a-sale",
                "--supervisor-pin",
                "9999",
                "--reason",
                "test",
            ],
            "is not a sale id",
        ),
        (
            vec!["shift", "open", "--float", "100", "--pin", "1111"],
            "already open",
        ),
        (
            vec!["printer", "lpt1"],
            "printer must be none, network:HOST:PORT, file:PATH or usb:VID:PID",
        ),
    ];
    for (args, reason) in cases {
        let (ok, output) = cli(&server, dir, &args);
        assert!(!ok, "{args:?} should fail");
        assert!(
            output.contains(reason),
            "{args:?}: expected {reason:?} in {output}"
        );
    }
    // A real sale, then a void with a cashier's PIN or a wrong PIN.
    let (ok, output) = cli(
        &server,
        dir,
        &[
            "--json", "sell", "--slot", &s, "--item", "adult=1", "--pay", "card",
        ],
    );
    assert!(ok, "{output}");
    let sale: serde_json::Value =
        serde_json::from_str(&output[..output.rfind('}').unwrap() + 1]).unwrap();
    let id = sale["sale"]["sale_id"].as_str().unwrap();
    // A reason the server would quarantine (blank, a line break) is refused
    // here first, before any approval or refund.
    for reason in ["   ", "wrong\nslot"] {
        let (ok, output) = cli(
            &server,
            dir,
            &[
                "void",
                "--sale",
                id,
                "--supervisor-pin",
                "9999",
                "--reason",
                reason,
            ],
        );
        assert!(!ok && output.contains("reason"), "{reason:?}: {output}");
    }
    let (ok, output) = cli(
        &server,
        dir,
        &[
            "void",
            "--sale",
            id,
            "--supervisor-pin",
            "1111",
            "--reason",
            "wrong slot",
        ],
    );
    assert!(!ok && output.contains("supervisor's PIN"), "{output}");
    let (ok, output) = cli(
        &server,
        dir,
        &[
            "void",
            "--sale",
            id,
            "--supervisor-pin",
            "0000",
            "--reason",
            "wrong slot",
        ],
    );
    // The server checks supervisors' PINs only: it tells nobody whether a
    // wrong PIN happens to be a cashier's.
    assert!(!ok && output.contains("supervisor's PIN"), "{output}");
    let after = c.t.sales_today().unwrap();
    assert_eq!(after.len(), sales_before + 1, "only the one good sale");
    assert!(!after[0].voided);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sync_bodies_are_refused_and_change_nothing() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let a = counter(&server, "Counter A").await;
    let b = counter(&server, "Counter B").await;
    let s = slot(server.day, "14:30");
    a.t.sell(card_sale(s, &[("adult", 1)])).await.unwrap();
    a.t.sync_now().await.unwrap();
    a.t.sell(card_sale(s, &[("adult", 1)])).await.unwrap();
    let good = a.t.pending_sync_request().unwrap();
    assert_eq!(good.sales.len(), 1);
    let books = server_books(&server);
    let api = server.api();
    let token_a = format!("Bearer {}", token_of(&a));
    let token_b = format!("Bearer {}", token_of(&b));
    let send = |token: String, body: String| {
        let api = api.clone();
        async move {
            api.post_raw("/v1/sync", &[("authorization", &token)], &body)
                .await
                .unwrap()
        }
    };
    let expect = |reply: (StatusCode, serde_json::Value), status: StatusCode, needle: &str| {
        assert_eq!(reply.0, status, "{}", reply.1);
        let msg = reply.1["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    };

    let mut tampered_seq = good.clone();
    tampered_seq.sales[0].terminal_seq = 1;
    expect(
        send(
            token_a.clone(),
            serde_json::to_string(&tampered_seq).unwrap(),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "seq tampered",
    );

    expect(
        send(token_b.clone(), serde_json::to_string(&good).unwrap()).await,
        StatusCode::FORBIDDEN,
        "belongs to device",
    );
    expect(
        send(
            "Bearer nobody".into(),
            serde_json::to_string(&good).unwrap(),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unknown",
    );
    expect(
        send(token_a.clone(), "{\"device_id\": ".into()).await,
        StatusCode::BAD_REQUEST,
        "not valid JSON",
    );
    expect(
        send(token_a.clone(), "{\"device_id\": 7}".into()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid type",
    );
    let (_, gate) = api
        .enrol(&server.enrolment_code("gate", "Gate"), "g", None)
        .await
        .unwrap();
    let gate_token = format!("Bearer {}", gate["token"].as_str().unwrap());
    expect(
        send(gate_token, serde_json::to_string(&good).unwrap()).await,
        StatusCode::FORBIDDEN,
        "needs a counter",
    );
    assert_eq!(server_books(&server), books, "no bad body changed anything");

    // What one sale gets wrong is that sale's problem, not the body's: it is
    // quarantined with its reason (for a supervisor) and acknowledged, so a
    // counter never retries one body for ever. Wants for a slot the server
    // does not have are ignored.
    let forged = |seq: u64| {
        let mut body = good.clone();
        body.sales[0].terminal_seq = seq;
        body.sales[0].sale_id = uuid::Uuid::now_v7();
        body
    };
    let mut unknown_product = forged(1000);
    unknown_product.sales[0].lines[0].product_id = "yacht".into();
    let mut tampered_total = forged(1001);
    tampered_total.sales[0].total.amount = 1;
    tampered_total.sales[0].payment.amount = 1;
    for (body, reason) in [
        (unknown_product, "unknown product"),
        (tampered_total, "differs from the catalogue"),
    ] {
        let id = body.sales[0].sale_id.to_string();
        let (status, reply) = send(token_a.clone(), serde_json::to_string(&body).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let stored = server.query_one(&format!(
            "SELECT reason FROM quarantine WHERE item_id = '{id}'"
        ));
        assert!(stored.contains(reason), "expected {reason:?} in {stored:?}");
    }
    let mut unknown_slot = good.clone();
    unknown_slot.sales.clear();
    unknown_slot.wants.push(tessera_core::api::sync::LeaseWant {
        slot_id: "2031-01-07T10:00".parse().unwrap(),
        need: 5,
    });
    let (status, reply) = send(
        token_a.clone(),
        serde_json::to_string(&unknown_slot).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(server_count(&server, "SELECT COUNT(*) FROM sales"), 1);

    // A tampered terminal that sells beyond its lease: those sales are
    // quarantined, naming why, and the counter's status bar says a
    // supervisor is needed; everything before them is stored.
    server.kill();
    while a.t.sell(card_sale(s, &[("adult", 1)])).await.is_ok() {}
    let db = rusqlite::Connection::open(a.dir.path().join("terminal.db")).unwrap();
    db.execute(
        "UPDATE leases SET granted_total = granted_total + 3 WHERE slot_id = ?1",
        [s.to_string()],
    )
    .unwrap();
    for _ in 0..3 {
        a.t.sell(card_sale(s, &[("adult", 1)])).await.unwrap();
    }
    server.restart();
    a.t.sync_now().await.expect("quarantined, not refused");
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM quarantine WHERE reason LIKE '%goes beyond its lease%'"
        ),
        3
    );
    let status = a.t.status().unwrap();
    assert_eq!(status.pending_sales, 0);
    assert_eq!(
        status.needs_supervisor, 5,
        "3 beyond the lease, 2 forged above"
    );
}
