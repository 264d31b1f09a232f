//! The supervisor's day: online and two counters (one never uploads its last
//! sale), a void, a cash shortage and a double admission at the gates. The
//! report names each, and every total is the sum of its parts to the cent.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;
use tessera_server::testkit::{slot, ServerProcess};

fn sum(channels: &[Value], field: &str) -> i64 {
    channels.iter().map(|c| c[field].as_i64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_day_report_names_every_difference_and_adds_up() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let at_11 = slot(server.day, "11:00");
    let at_14 = slot(server.day, "14:00");

    // Online: 2 adults at 14:00 (30.00) and a family at 11:00 (40.00).
    buy_online(&server, "web-1", at_14, 2).await;
    let (status, _) = server
        .api()
        .buy(
            "web-2",
            at_11,
            serde_json::json!([{"product_id": "family", "quantity": 1}]),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);

    // Counter A: a cash sale, a card sale that is voided, and a drawer 5.00 short.
    let a = counter(&server, "Counter A").await; // float 200.00
    a.t.sell(cash_sale(at_14, &[("adult", 2)], 5000))
        .await
        .unwrap();
    let card =
        a.t.sell(card_sale(at_14, &[("reduced", 1), ("audio-guide", 1)]))
            .await
            .unwrap();
    a.t.void(card.sale.sale_id, "9999", "wrong slot")
        .await
        .unwrap();
    let z = a.t.close_shift(20_000 + 3000 - 500).await.unwrap();
    assert_eq!(z.expected_cash, 23_000);
    assert_eq!(z.over_short, Some(-500));
    a.t.sync_now().await.unwrap();

    // Counter B: one sale uploaded, then one that never is.
    let b = counter(&server, "Counter B").await;
    let uploaded =
        b.t.sell(cash_sale(at_11, &[("adult", 1)], 1500))
            .await
            .unwrap();
    b.t.sync_now().await.unwrap();
    b.t.sell(cash_sale(at_11, &[("child", 1)], 0))
        .await
        .unwrap();

    // Two gates, offline, both let the same visitor in.
    let north = gate(&server, "North gate").await;
    let south = gate(&server, "South gate").await;
    let ticket = uploaded.sale.tickets[0].code.clone();
    server.kill();
    north.t.scan(&ticket).await.unwrap();
    south.t.scan(&ticket).await.unwrap();
    server.restart();
    north.t.sync_now().await.unwrap();
    south.t.sync_now().await.unwrap();

    // The supervisor asks from counter A with her PIN.
    let api = server.api();
    let token = format!("Bearer {}", token_of(&a));
    let path = format!("/v1/reports/day?date={}", server.day);
    let req = api
        .http
        .get(format!("{}{path}", api.base))
        .header("authorization", &token)
        .header("x-supervisor-pin", "9999");
    let response = req.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let r: Value = response.json().await.unwrap();

    let channels = r["channels"].as_array().unwrap();
    let names: Vec<&str> = channels
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["online", "Counter A", "Counter B"]);
    let online = &channels[0];
    assert_eq!(
        (
            online["sales_count"].as_i64(),
            online["gross_sales"].as_i64()
        ),
        (Some(2), Some(7000))
    );
    let ca = &channels[1];
    assert_eq!(ca["sales_count"], 2);
    assert_eq!(ca["voids_count"], 1);
    assert_eq!(ca["gross_sales"], 4500);
    assert_eq!(ca["refunds"], 1500);
    assert_eq!(ca["net_takings"], 3000);
    assert_eq!(ca["admissions"], 2);
    assert_eq!(
        channels[2]["gross_sales"], 1500,
        "the server counts only what B uploaded"
    );

    // Every total is the sum of its parts, to the cent.
    let total = &r["total"];
    for field in [
        "sales_count",
        "voids_count",
        "admissions",
        "gross_sales",
        "refunds",
        "net_takings",
    ] {
        assert_eq!(
            total[field].as_i64().unwrap(),
            sum(channels, field),
            "{field}"
        );
    }
    for c in channels.iter().chain(std::iter::once(total)) {
        let vat = c["vat"].as_array().unwrap();
        let vat_gross: i64 = vat.iter().map(|v| v["gross"].as_i64().unwrap()).sum();
        let paid: i64 = c["payments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["net"].as_i64().unwrap())
            .sum();
        assert_eq!(
            vat_gross,
            c["net_takings"].as_i64().unwrap(),
            "{}",
            c["channel"]
        );
        assert_eq!(paid, c["net_takings"].as_i64().unwrap(), "{}", c["channel"]);
        for v in vat {
            assert_eq!(
                v["net"].as_i64().unwrap() + v["tax"].as_i64().unwrap(),
                v["gross"].as_i64().unwrap()
            );
        }
    }
    for rate in total["vat"].as_array().unwrap() {
        let per_channel: i64 = channels
            .iter()
            .flat_map(|c| c["vat"].as_array().unwrap().iter())
            .filter(|v| v["rate_bp"] == rate["rate_bp"])
            .map(|v| v["tax"].as_i64().unwrap())
            .sum();
        assert_eq!(per_channel, rate["tax"].as_i64().unwrap());
    }

    // The cash shortage, and B's shift without a Z report.
    let shifts = r["shifts"].as_array().unwrap();
    let sa = shifts.iter().find(|s| s["counter"] == "Counter A").unwrap();
    assert_eq!(
        (
            sa["expected_cash"].as_i64(),
            sa["counted_cash"].as_i64(),
            sa["over_short"].as_i64()
        ),
        (Some(23_000), Some(22_500), Some(-500))
    );
    assert_eq!(sa["z_received"], true);
    assert_eq!(sa["not_uploaded_cash"], 0);
    let sb = shifts.iter().find(|s| s["counter"] == "Counter B").unwrap();
    assert_eq!(sb["z_received"], false);

    // What is missing is named.
    let missing = r["missing"]["counters"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0]["counter"], "Counter B");
    assert!(missing[0]["problem"]
        .as_str()
        .unwrap()
        .contains("no Z report"));
    let held = r["missing"]["leases_held"].as_array().unwrap();
    assert!(
        held.iter().any(|l| l["counter"] == "Counter B"),
        "leases still held are listed"
    );

    // Slots and the gate conflict.
    let slot11 = r["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot_id"] == at_11.to_string())
        .unwrap();
    assert_eq!(
        (
            slot11["sold_online"].as_i64(),
            slot11["sold_counter"].as_i64(),
            slot11["admitted"].as_i64()
        ),
        (Some(4), Some(1), Some(1))
    );
    assert_eq!(slot11["no_shows"], 4);
    let slot14 = r["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot_id"] == at_14.to_string())
        .unwrap();
    assert_eq!(
        (
            slot14["sold_online"].as_i64(),
            slot14["sold_counter"].as_i64()
        ),
        (Some(2), Some(2)),
        "the voided sale returned its place"
    );
    let conflicts = r["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (
            conflicts[0]["first_gate"].as_str(),
            conflicts[0]["second_gate"].as_str()
        ),
        (Some("North gate"), Some("South gate"))
    );

    // The CSV opens cleanly in a spreadsheet.
    let csv = a.t.day_report_csv("9999", server.day).await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("date,section,channel,item,count,amount"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(
        rows.iter()
            .all(|r| r.len() == 6 && r[0] == server.day.to_string()),
        "{csv}"
    );
    assert!(rows
        .iter()
        .all(|r| r[5].is_empty() || r[5].rsplit_once('.').is_some_and(|(_, d)| d.len() == 2)));
    assert!(
        csv.contains(",cash,Counter A / Camille,over_short,,-5.00"),
        "{csv}"
    );
    assert!(csv.contains("takings,total,net,"));

    // The CLI prints the same day and checks its own arithmetic.
    let out = server.admin(&["report", "--date", &server.day.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Counter B",
        "no Z report",
        "SHORT",
        "5.00",
        "admitted by North gate",
    ] {
        assert!(text.contains(needle), "{needle} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_endpoints_refuse_the_wrong_credentials_and_change_nothing() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter A").await;
    let g = gate(&server, "Gate").await;
    let api = server.api();
    let get = |path: String, token: String, pin: Option<&'static str>| {
        let api = api.clone();
        async move {
            let mut req = api
                .http
                .get(format!("{}{path}", api.base))
                .header("authorization", token);
            if let Some(pin) = pin {
                req = req.header("x-supervisor-pin", pin);
            }
            let r = req.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let day = format!("/v1/reports/day?date={}", server.day);
    let counter_token = format!("Bearer {}", token_of(&c));
    let gate_token = format!("Bearer {}", token_of(&g));

    let (status, body) = get(day.clone(), counter_token.clone(), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("needs a supervisor"));
    let (status, _) = get(day.clone(), counter_token.clone(), Some("1111")).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a cashier's PIN is not a supervisor's"
    );
    let (status, _) = get(day.clone(), gate_token.clone(), Some("9999")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a gate is not a counter");
    let (status, body) = get(
        "/v1/reports/day?date=28/11/2026".into(),
        counter_token.clone(),
        Some("9999"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "bad_request");
    let (status, _) = get(day.clone(), counter_token.clone(), Some("9999")).await;
    assert_eq!(status, StatusCode::OK);

    // A gate token on the counters' sync endpoint; a cashier revoking a lease.
    let books = server_books(&server);
    let body = serde_json::to_string(&c.t.pending_sync_request().unwrap()).unwrap();
    let (status, _) = api
        .post_raw("/v1/sync", &[("authorization", &gate_token)], &body)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let lease = server.query_one("SELECT lease_id FROM leases LIMIT 1");
    let (status, _) = api
        .post_raw(
            &format!("/v1/leases/{lease}/revoke"),
            &[
                ("authorization", &counter_token),
                ("x-supervisor-pin", "1111"),
            ],
            "",
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(server_books(&server), books);
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM leases WHERE revoked_at IS NOT NULL"
        ),
        0
    );

    // With a supervisor's PIN the revocation works, through the engine too.
    let done =
        c.t.revoke_lease("9999", lease.parse().unwrap())
            .await
            .unwrap();
    assert_eq!(done["already_revoked"], false);
    assert_eq!(server_count(&server, "SELECT COUNT(*) FROM audit_log WHERE action = 'revoke_lease' AND actor = 'Inès at Counter A'"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_the_supervisor_pin_from_a_counter_is_stopped() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter A").await;
    for guess in ["0000", "1234", "1111", "4321", "9998"] {
        let err = c.t.day_report(guess, server.day).await.unwrap_err();
        assert!(err.to_string().contains("not a supervisor's"), "{err}");
    }
    // Locked now, even with the right PIN.
    let err = c.t.day_report("9999", server.day).await.unwrap_err();
    assert!(
        err.to_string().contains("too many wrong supervisor PINs"),
        "{err}"
    );
    // Another counter is not affected.
    let other = counter(&server, "Counter B").await;
    assert!(other.t.day_report("9999", server.day).await.is_ok());
}
