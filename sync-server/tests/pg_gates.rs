//! Gates and the day report on the PostgreSQL backend, with two server
//! processes on one throw-away cluster: a ticket scanned at two gates on
//! two processes at the same instant is admitted once, and the other gate
//! is told where and when; an offline scan uploaded to one process and an
//! online scan of the same ticket on the other is a recorded conflict that
//! the day report shows; voided and cancelled tickets are refused online and
//! listed for offline gates; the day report is the same from the operator's
//! command and from either process, adds up, and its online totals are
//! what was sold.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::decode_unverified;
use tessera_server::testkit::{paris, slot, wait_for, Api, PgCluster, PgMuseum};
use uuid::Uuid;

const WITHIN: Duration = Duration::from_secs(30);

struct Device {
    device_id: String,
    token: String,
}

/// Enrols a device with `enrol --database` and the API of `api`.
async fn enrol(museum: &PgMuseum, api: &Api, role: &str, name: &str) -> Device {
    let code = museum.admin_ok(&["enrol", "--role", role, "--name", name]);
    let (status, body) = api.enrol(&code, name, None).await.expect("enrol");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Device {
        device_id: body["device_id"].as_str().expect("device id").to_string(),
        token: body["token"].as_str().expect("token").to_string(),
    }
}

/// A GET with a device's token.
async fn get_as(api: &Api, path: &str, token: &str) -> (StatusCode, Value) {
    let r = api
        .http
        .get(format!("{}{path}", api.base))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("answers");
    let status = r.status();
    let text = r.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Waits until `api` (a process that may not have heard of the device
/// yet: NOTIFY) accepts the device's token.
async fn wait_known(api: &Api, device: &Device, who: &str) {
    wait_for(&format!("{who} to know the device"), WITHIN, || async {
        let (status, _) = get_as(api, "/v1/reports/day?date=2000-01-01", &device.token).await;
        (status != StatusCode::UNAUTHORIZED).then_some(())
    })
    .await
}

/// Hold and confirm `n` adults through the test channel; the order.
async fn buy(api: &Api, key: &str, s: SlotId, n: u32) -> Value {
    let (status, order) = api
        .buy(key, s, json!([{"product_id": "adult", "quantity": n}]))
        .await
        .expect("buy");
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order
}

fn codes_of(order: &Value) -> Vec<String> {
    order["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(|t| t["code"].as_str().expect("code").to_string())
        .collect()
}

async fn redeem(api: &Api, gate: &Device, code: &str, scan_id: Uuid) -> (StatusCode, Value) {
    api.post_raw(
        "/v1/gate/redeem",
        &[("authorization", &format!("Bearer {}", gate.token))],
        &json!({"code": code, "scan_id": scan_id}).to_string(),
    )
    .await
    .expect("redeem answers")
}

/// One offline scan of `code`, `secs_ago` before the museum's 11:05.
fn offline_scan(museum: &PgMuseum, code: &str, scan_id: Uuid, secs_ago: i64) -> Value {
    let (claims, _, _) = decode_unverified(code).expect("a ticket code");
    let at = paris()
        .to_timestamp(
            format!("{}T11:05:00", museum.day)
                .parse::<jiff::civil::DateTime>()
                .expect("local time"),
        )
        .expect("exists in Paris")
        - jiff::SignedDuration::from_secs(secs_ago);
    json!({
        "scan_id": scan_id,
        "code": code,
        "ticket_id": claims.ticket_id,
        "slot_id": claims.slot,
        "scanned_at": at,
    })
}

async fn gate_sync(api: &Api, gate: &Device, scans: Vec<Value>) -> (StatusCode, Value) {
    let body = json!({"device_id": gate.device_id, "catalogue_version": 0, "scans": scans});
    api.post_raw(
        "/v1/gate/sync",
        &[("authorization", &format!("Bearer {}", gate.token))],
        &body.to_string(),
    )
    .await
    .expect("gate sync answers")
}

async fn day_report(api: &Api, supervisor: &Device, date: &str) -> Value {
    let (status, report) = get_as(
        api,
        &format!("/v1/reports/day?date={date}"),
        &supervisor.token,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_ticket_at_two_gates_on_two_processes_is_admitted_once() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "11:05");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let (a, b) = (a.api(), b.api());
    let north = enrol(&museum, &a, "gate", "North entrance").await;
    let south = enrol(&museum, &b, "gate", "South entrance").await;
    wait_known(&a, &south, "A").await;
    wait_known(&b, &north, "B").await;
    let order = buy(&a, "family", slot(museum.day, "11:00"), 12).await;
    let codes = codes_of(&order);

    // Every ticket scanned at both gates at once, one on each process.
    let mut tasks = Vec::new();
    for code in codes.clone() {
        let (a, b) = (a.clone(), b.clone());
        let (north, south) = (
            Device {
                device_id: north.device_id.clone(),
                token: north.token.clone(),
            },
            Device {
                device_id: south.device_id.clone(),
                token: south.token.clone(),
            },
        );
        tasks.push(tokio::spawn(async move {
            let (n, s) = tokio::join!(
                redeem(&a, &north, &code, Uuid::now_v7()),
                redeem(&b, &south, &code, Uuid::now_v7())
            );
            (n, s)
        }));
    }
    for task in tasks {
        let ((ns, n), (ss, s)) = task.await.expect("task");
        assert_eq!((ns, ss), (StatusCode::OK, StatusCode::OK), "{n} {s}");
        let (admitted, denied) = match (n["result"].as_str(), s["result"].as_str()) {
            (Some("admitted"), Some("denied")) => (&n, &s),
            (Some("denied"), Some("admitted")) => (&s, &n),
            _ => panic!("one admission and one refusal expected: {n} {s}"),
        };
        assert_eq!(denied["reason"], "already_used", "{denied}");
        // The refusal names the gate that admitted, and when.
        assert_eq!(
            denied["first_redeemed_by"], admitted["first_redeemed_by"],
            "{denied}"
        );
        assert_eq!(
            denied["first_redeemed_at"], admitted["first_redeemed_at"],
            "{denied}"
        );
        let by = admitted["first_redeemed_by"].as_str().expect("gate name");
        assert!(
            denied["message"].as_str().expect("message").contains(by),
            "{denied}"
        );
    }
    assert_eq!(pg.count("SELECT COUNT(*) FROM redemptions"), 12);
    assert_eq!(pg.count("SELECT COUNT(*) FROM scans"), 12);
    assert_eq!(pg.count("SELECT COUNT(*) FROM gate_conflicts"), 0);

    // A scan sent again (its answer was lost), to the other process: the
    // same admission, the same answer, nothing new recorded.
    let fresh = buy(&b, "single", slot(museum.day, "11:00"), 1).await;
    let code = &codes_of(&fresh)[0];
    let scan_id = Uuid::now_v7();
    let (_, first) = redeem(&a, &north, code, scan_id).await;
    assert_eq!(first["result"], "admitted", "{first}");
    let (_, again) = redeem(&b, &north, code, scan_id).await;
    assert_eq!(again["result"], "admitted", "{again}");
    assert_eq!(again["first_redeemed_at"], first["first_redeemed_at"]);
    assert_eq!(pg.count("SELECT COUNT(*) FROM redemptions"), 13);
    // The same scan id for another gate's admission is a clear 409.
    let (status, body) = redeem(&b, &south, code, scan_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_offline_scan_on_one_process_and_an_online_scan_on_the_other_is_a_reported_conflict() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "11:05");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let (a, b) = (a.api(), b.api());
    let offline = enrol(&museum, &a, "gate", "Garden gate").await;
    let online = enrol(&museum, &b, "gate", "Main hall").await;
    let supervisor = enrol(&museum, &a, "supervisor", "Duty manager").await;
    wait_known(&b, &supervisor, "B").await;
    let order = buy(&a, "pair", slot(museum.day, "11:00"), 2).await;
    let codes = codes_of(&order);

    // The main hall (online, on B) admits the ticket now.
    let (_, admitted) = redeem(&b, &online, &codes[0], Uuid::now_v7()).await;
    assert_eq!(admitted["result"], "admitted", "{admitted}");
    // The garden gate was offline and had admitted it two minutes earlier;
    // its upload reaches A. The other ticket it admitted alone.
    let garden_scan = Uuid::now_v7();
    let scans = vec![
        offline_scan(&museum, &codes[0], garden_scan, 120),
        offline_scan(&museum, &codes[1], Uuid::now_v7(), 90),
    ];
    let (status, synced) = gate_sync(&a, &offline, scans.clone()).await;
    assert_eq!(status, StatusCode::OK, "{synced}");
    assert_eq!(synced["conflicts"], 1, "{synced}");
    assert_eq!(synced["scans_acked"].as_array().map(Vec::len), Some(2));
    assert_eq!(synced["catalogue_version"], 1, "{synced}");
    assert!(
        synced["catalogue"].is_object(),
        "an old catalogue gets the new one"
    );
    assert!(!synced["keys"]["keys"].as_array().expect("keys").is_empty());
    // The same upload again (to the other process): nothing new.
    let (status, again) = gate_sync(&b, &offline, scans).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["conflicts"], 0, "{again}");
    assert_eq!(pg.count("SELECT COUNT(*) FROM gate_conflicts"), 1);
    assert_eq!(pg.count("SELECT COUNT(*) FROM scans"), 3);
    // The earlier admission is the ticket's redemption now.
    assert_eq!(
        pg.count(&format!(
            "SELECT COUNT(*) FROM redemptions WHERE scan_id = '{garden_scan}' AND mode = 'offline'"
        )),
        1
    );
    // A third gate scanning it online is told about the first admission.
    let (_, denied) = redeem(&a, &online, &codes[0], Uuid::now_v7()).await;
    assert_eq!(denied["reason"], "already_used", "{denied}");
    assert_eq!(denied["first_redeemed_by"], "Garden gate", "{denied}");

    // The day report on either process names both gates.
    for api in [&a, &b] {
        let report = day_report(api, &supervisor, &museum.day.to_string()).await;
        let conflicts = report["conflicts"].as_array().expect("conflicts");
        assert_eq!(conflicts.len(), 1, "{report}");
        assert_eq!(conflicts[0]["first_gate"], "Garden gate");
        assert_eq!(conflicts[0]["second_gate"], "Main hall");
        let line = report["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .find(|s| s["slot_id"] == slot(museum.day, "11:00").to_string())
            .expect("the 11:00 slot")
            .clone();
        assert_eq!(line["admitted"], 2, "{line}");
        assert_eq!(line["sold_online"], 2, "{line}");
        assert_eq!(report["does_not_add_up"], Value::Null, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn voided_and_cancelled_tickets_are_refused_on_every_process() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "11:05");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let (a, b) = (a.api(), b.api());
    let gate = enrol(&museum, &a, "gate", "North entrance").await;
    wait_known(&b, &gate, "B").await;
    let order = buy(&a, "three", slot(museum.day, "11:00"), 3).await;
    let codes = codes_of(&order);
    let ids: Vec<String> = order["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(|t| t["ticket_id"].as_str().expect("ticket id").to_string())
        .collect();
    // What a counter's void and a visitor's cancellation leave on a ticket
    // (those writes are being ported; the gate reads the columns).
    pg.psql(
        "tessera",
        &format!(
            "UPDATE tickets SET voided_at = 1 WHERE ticket_id = '{}';
             UPDATE tickets SET voided_at = 2, cancelled_at = 2 WHERE ticket_id = '{}';",
            ids[0], ids[1]
        ),
    );
    for api in [&a, &b] {
        for code in &codes[..2] {
            let (status, denied) = redeem(api, &gate, code, Uuid::now_v7()).await;
            assert_eq!(status, StatusCode::OK, "{denied}");
            assert_eq!(denied["result"], "denied", "{denied}");
            assert_eq!(denied["reason"], "voided", "{denied}");
        }
    }
    let (_, ok) = redeem(&b, &gate, &codes[2], Uuid::now_v7()).await;
    assert_eq!(ok["result"], "admitted", "{ok}");
    assert_eq!(pg.count("SELECT COUNT(*) FROM redemptions"), 1);
    // Offline gates learn them at their next sync, from either process.
    for api in [&a, &b] {
        let (status, synced) = gate_sync(api, &gate, Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{synced}");
        let mut voided: Vec<String> = synced["voided_tickets"]
            .as_array()
            .expect("voided list")
            .iter()
            .map(|v| v.as_str().expect("id").to_string())
            .collect();
        voided.sort();
        let mut expected = ids[..2].to_vec();
        expected.sort();
        assert_eq!(voided, expected, "{synced}");
    }
}

/// The report without the instant it was made.
fn figures(mut report: Value) -> Value {
    report
        .as_object_mut()
        .expect("a report object")
        .remove("generated_at");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_day_report_is_the_same_from_the_command_and_from_either_process_and_adds_up() {
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "11:05");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let (a, b) = (a.api(), b.api());
    let supervisor = enrol(&museum, &a, "supervisor", "Duty manager").await;
    let gate = enrol(&museum, &a, "gate", "North entrance").await;
    wait_known(&b, &supervisor, "B").await;

    // Orders on both processes, in two entry times.
    let orders = [
        buy(&a, "o1", slot(museum.day, "11:00"), 3).await,
        buy(&b, "o2", slot(museum.day, "11:00"), 1).await,
        {
            let (status, order) = b
                .buy(
                    "o3",
                    slot(museum.day, "12:00"),
                    json!([{"product_id": "reduced", "quantity": 2}, {"product_id": "family", "quantity": 1}]),
                )
                .await
                .expect("buy");
            assert_eq!(status, StatusCode::CREATED, "{order}");
            order
        },
    ];
    let gross: i64 = orders
        .iter()
        .map(|o| o["total"]["amount"].as_i64().expect("total"))
        .sum();
    let admissions: i64 = orders
        .iter()
        .flat_map(|o| o["tickets"].as_array().expect("tickets").clone())
        .map(|t| t["admits"].as_i64().expect("admits"))
        .sum();
    assert_eq!(gross, 3 * 1_500 + 1_500 + 2 * 1_000 + 4_000);
    assert_eq!(admissions, 3 + 1 + 2 + 4);
    // One adult of the first order cancelled this morning (what "my
    // booking" writes; that write is being ported), one ticket admitted.
    let morning = paris()
        .to_timestamp(
            format!("{}T10:30:00", museum.day)
                .parse::<jiff::civil::DateTime>()
                .expect("local time"),
        )
        .expect("exists in Paris")
        .as_millisecond();
    let cancelled = orders[0]["tickets"][0]["ticket_id"]
        .as_str()
        .expect("ticket id");
    pg.psql(
        "tessera",
        &format!(
            "UPDATE tickets SET voided_at = {morning}, cancelled_at = {morning} WHERE ticket_id = '{cancelled}'"
        ),
    );
    let (_, admitted) = redeem(
        &b,
        &gate,
        orders[1]["tickets"][0]["code"].as_str().expect("code"),
        Uuid::now_v7(),
    )
    .await;
    assert_eq!(admitted["result"], "admitted", "{admitted}");

    let date = museum.day.to_string();
    let out = museum.cli(&[
        "report",
        "--database",
        &museum.database_url,
        "--date",
        &date,
        "--format",
        "json",
    ]);
    // The command exits non-zero when the report does not add up.
    assert!(
        out.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_command: Value = serde_json::from_slice(&out.stdout).expect("the command prints JSON");
    let from_a = day_report(&a, &supervisor, &date).await;
    let from_b = day_report(&b, &supervisor, &date).await;
    assert_eq!(figures(from_a.clone()), figures(from_command.clone()));
    assert_eq!(figures(from_b), figures(from_command.clone()));
    let report: tessera_core::api::report::DayReport =
        serde_json::from_value(from_command).expect("a day report");
    report.check().expect("the report adds up");
    assert_eq!(report.does_not_add_up, None);

    // Online: what was sold, less the one cancelled adult.
    let online = &report.channels[0];
    assert_eq!(online.channel, "online");
    assert_eq!(online.sales_count, 3);
    assert_eq!(online.gross_sales, gross);
    assert_eq!(online.refunds, 1_500);
    assert_eq!(online.net_takings, gross - 1_500);
    assert_eq!(online.admissions, admissions - 1);
    assert_eq!(online.voids_count, 1);
    assert_eq!(report.online_channels.len(), 1);
    assert_eq!(report.online_channels[0].orders, 3);
    assert_eq!(report.total.net_takings, gross - 1_500);
    let sold: i64 = report.slots.iter().map(|s| s.sold_online).sum();
    // The slots count the inventory: the hand-made cancellation above did
    // not give its place back (the real one will, with the slot row).
    assert_eq!(sold, admissions, "the slots' online sales");
    let admitted: i64 = report.slots.iter().map(|s| s.admitted).sum();
    assert_eq!(admitted, 1);
    // No counters on this day: the counter tables were read and are empty.
    assert_eq!(report.channels.len(), 1);
    assert!(report.shifts.is_empty() && report.quarantine.is_empty());
}

/// Issue 12: a gate's key is certified at enrolment and published with its
/// role, so gates can check each other's shared admissions; a "ticket"
/// signed by it is refused, whichever process it reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gates_certified_key_is_published_as_a_gates_and_signs_no_ticket() {
    use tessera_core::ticket_code::{TicketClaims, TicketSigner};
    let pg = PgCluster::start();
    let museum = PgMuseum::init(&pg.url(), "11:05");
    let (a, b) = (museum.serve("a", &[]), museum.serve("b", &[]));
    let (a, b) = (a.api(), b.api());
    let signer = TicketSigner::from_seed(0, [21u8; 32]);
    let public = data_encoding::HEXLOWER.encode(&signer.public_key());
    let code = museum.admin_ok(&["enrol", "--role", "gate", "--name", "West gate"]);
    let (status, west) = a
        .enrol(&code, "West gate", Some(&public))
        .await
        .expect("enrol");
    assert_eq!(status, StatusCode::CREATED, "{west}");
    let key_id = west["key_id"]
        .as_u64()
        .expect("the gate's key is certified") as u32;
    let east = enrol(&museum, &a, "gate", "East gate").await;
    wait_known(&b, &east, "B").await;

    for api in [&a, &b] {
        let found = wait_for("the gate's key to be published", WITHIN, || async {
            let (_, keys) = api.get("/v1/keys").await.ok()?;
            keys["keys"]
                .as_array()?
                .iter()
                .find(|k| k["key_id"].as_u64() == Some(u64::from(key_id)))
                .cloned()
        })
        .await;
        assert_eq!(found["role"], "gate", "{found}");
        assert_eq!(found["public_key"], public.as_str());
    }
    let signer = TicketSigner::from_seed(key_id, [21u8; 32]);
    let fake = signer
        .sign(&TicketClaims {
            key_id,
            ticket_id: Uuid::now_v7(),
            slot: slot(museum.day, "11:00"),
            window_minutes: 30,
            admits: 1,
            product_id: "adult".into(),
        })
        .expect("sign");
    for api in [&a, &b] {
        let (status, answer) = redeem(api, &east, &fake, Uuid::now_v7()).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["result"], "denied", "{answer}");
    }
}
