//! The device channel (`GET /v1/events/device`) as counters, gates and
//! supervisor devices use it, on a real server of either backend
//! (`TESSERA_TEST_BACKEND`): `hello` first, then the topics that concern
//! each device — places of slots, its own leases, voids — merged while it
//! does not read, never holding anyone else up.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::api::sync::SyncResponse;
use tessera_core::catalogue::Catalogue;
use tessera_core::pricing::{price_cart, CartLimits, CartLine, Channel};
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::{TicketClaims, TicketSigner};
use tessera_server::testkit::{slot, Api, ServerProcess};
use uuid::Uuid;

const WITHIN: Duration = Duration::from_secs(60);

/// One event as the stream carried it.
#[derive(Debug)]
struct Sse {
    id: Option<String>,
    event: String,
    data: Value,
}

/// A device reading its channel.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

async fn open(url: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{url}/v1/events/device"))
        .header("accept", "text/event-stream")
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("the server answers")
}

impl Stream {
    async fn open(url: &str, token: &str) -> Stream {
        let response = open(url, token).await;
        assert_eq!(response.status(), StatusCode::OK);
        Stream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (heartbeats skipped), or `None` when the stream ends;
    /// fails the test if neither happens within a minute.
    async fn next(&mut self) -> Option<Sse> {
        tokio::time::timeout(WITHIN, self.next_event())
            .await
            .expect("an event or the end within a minute")
    }

    async fn next_event(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a heartbeat
                }
                return Some(Sse {
                    id,
                    event,
                    data: serde_json::from_str(&data).expect("event data is JSON"),
                });
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    /// Events until one satisfies `hit` (which it returns with the others).
    async fn until(&mut self, what: &str, hit: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let e = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before {what}: {seen:?}"));
            let done = hit(&e);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }

    async fn hello(&mut self) {
        let first = self.next().await.expect("a first event");
        assert_eq!(first.event, "hello", "{first:?}");
        assert_eq!(first.data["topic"], "hello");
        assert!(first.id.is_some(), "events carry ids");
    }
}

fn names_slot(e: &Sse, s: SlotId) -> bool {
    e.event == "slots"
        && e.data["slots"]
            .as_array()
            .is_some_and(|l| l.iter().any(|v| v == &json!(s.to_string())))
}

struct Enrolled {
    device_id: Uuid,
    token: String,
}

async fn enrol(server: &ServerProcess, role: &str, name: &str, key: Option<&str>) -> Enrolled {
    let code = server.enrolment_code(role, name);
    let (status, body) = server.api().enrol(&code, name, key).await.expect("enrol");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Enrolled {
        device_id: body["device_id"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .expect("device id"),
        token: body["token"].as_str().expect("token").to_string(),
    }
}

/// A counter built by hand, as the terminal would speak: leases, signed
/// sales, approved voids.
struct Counter {
    device: Enrolled,
    signer: TicketSigner,
    catalogue: Catalogue,
    catalogue_version: u64,
    leases: HashMap<SlotId, Uuid>,
    next_seq: u64,
    shift_id: Uuid,
    now: jiff::Timestamp,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Counter {
    async fn enrol(server: &ServerProcess, name: &str) -> Counter {
        let seed: [u8; 32] = rand::random();
        let unkeyed = TicketSigner::from_seed(0, seed);
        let code = server.enrolment_code("counter", name);
        let (status, body) = server
            .api()
            .enrol(&code, name, Some(&hex(&unkeyed.public_key())))
            .await
            .expect("enrol");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let key_id = body["key_id"].as_u64().expect("key id") as u32;
        let (_, cat) = server.api().get("/v1/catalogue").await.expect("catalogue");
        Counter {
            device: Enrolled {
                device_id: body["device_id"]
                    .as_str()
                    .and_then(|d| d.parse().ok())
                    .expect("device id"),
                token: body["token"].as_str().expect("token").to_string(),
            },
            signer: TicketSigner::from_seed(key_id, seed),
            catalogue: serde_json::from_value(cat).expect("catalogue parses"),
            catalogue_version: 0,
            leases: HashMap::new(),
            next_seq: 1,
            shift_id: Uuid::now_v7(),
            now: jiff::Timestamp::now(),
        }
    }

    async fn sync(&mut self, api: &Api, mut body: Value) -> SyncResponse {
        body["device_id"] = json!(self.device.device_id);
        body["catalogue_version"] = json!(self.catalogue_version);
        if body.get("last_seq").is_none() {
            body["last_seq"] = json!(self.next_seq - 1);
        }
        let (status, reply) = api
            .post_raw(
                "/v1/sync",
                &[("authorization", &format!("Bearer {}", self.device.token))],
                &body.to_string(),
            )
            .await
            .expect("sync answers");
        assert_eq!(status, StatusCode::OK, "{reply}");
        let r: SyncResponse = serde_json::from_value(reply).expect("a sync response");
        self.catalogue_version = r.catalogue_version;
        self.now = r.server_time;
        for g in &r.leases {
            if !g.revoked {
                self.leases.insert(g.slot_id, g.lease_id);
            }
        }
        r
    }

    async fn lease(&mut self, api: &Api, s: SlotId) -> Uuid {
        self.sync(api, json!({"wants": [{"slot_id": s, "need": 4}]}))
            .await;
        *self.leases.get(&s).expect("a lease granted")
    }

    /// Sells one adult from its lease of `s` and uploads it; the sale.
    async fn sell(&mut self, api: &Api, s: SlotId) -> (Uuid, i64) {
        let cart = price_cart(
            &self.catalogue,
            &[CartLine {
                product_id: "adult".into(),
                quantity: 1,
                membership_numbers: vec![],
            }],
            Channel::Counter,
            CartLimits::COUNTER,
        )
        .expect("prices");
        let mut tickets = Vec::new();
        for line in &cart.lines {
            for _ in 0..line.quantity {
                let ticket_id = Uuid::now_v7();
                let code = self
                    .signer
                    .sign(&TicketClaims {
                        key_id: self.signer.key_id,
                        ticket_id,
                        slot: s,
                        window_minutes: 30,
                        admits: line.admits_each,
                        product_id: line.product_id.clone(),
                    })
                    .expect("signs");
                tickets.push(json!({"ticket_id": ticket_id, "product_id": line.product_id, "admits": line.admits_each, "code": code}));
            }
        }
        let sale_id = Uuid::now_v7();
        let total = cart.total.amount;
        let sale = json!({
            "sale_id": sale_id,
            "terminal_seq": self.next_seq,
            "lease_id": self.leases[&s],
            "slot_id": s,
            "shift_id": self.shift_id,
            "cashier": "Camille",
            "created_at": self.now,
            "lines": cart.lines,
            "total": cart.total,
            "admissions": cart.admissions,
            "payment": {"method": "card", "amount": total},
            "tickets": tickets,
        });
        let body = json!({
            "last_seq": self.next_seq,
            "open_shift": {"shift_id": self.shift_id, "cashier": "Camille", "opened_at": self.now, "float": 20000},
            "sales": [sale],
        });
        self.next_seq += 1;
        let r = self.sync(api, body).await;
        assert_eq!(r.acked_seq, self.next_seq - 1, "the sale is stored");
        (sale_id, total)
    }

    /// Voids `sale` with a supervisor's approval and uploads the void.
    async fn void(&mut self, api: &Api, sale: (Uuid, i64)) {
        let approval = api
            .approve_void(&self.device.token, "9999", &sale.0.to_string())
            .await;
        let body = json!({
            "voids": [{
                "void_id": Uuid::now_v7(),
                "sale_id": sale.0,
                "after_seq": self.next_seq - 1,
                "at": self.now,
                "shift_id": self.shift_id,
                "approved_by": "Inès",
                "approval_id": approval,
                "reason": "visitor changed plans",
                "returned_to_lease": true,
                "refund": sale.1,
                "refund_method": "card",
            }],
        });
        let r = self.sync(api, body).await;
        assert!(!r.voids_acked.is_empty(), "the void is stored: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_hears_hello_then_the_slots_an_online_order_changed() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let counter = Counter::enrol(&server, "Desk 1").await;
    let mut stream = Stream::open(&server.url, &counter.device.token).await;
    stream.hello().await;
    let s = slot(server.day, "14:00");
    let (status, order) = api
        .buy(
            "order-1",
            s,
            json!([{"product_id": "adult", "quantity": 2}]),
        )
        .await
        .expect("buy");
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let seen = stream
        .until("slots naming 14:00", |e| names_slot(e, s))
        .await;
    let last = seen.last().expect("an event");
    assert_eq!(last.data["topic"], "slots");
    let ids: Vec<u64> = seen
        .iter()
        .filter_map(|e| e.id.as_deref()?.parse().ok())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids count up: {ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_hears_voided_after_a_counters_void_and_a_visitors_cancellation() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let gate = enrol(&server, "gate", "North entrance", None).await;
    let mut counter = Counter::enrol(&server, "Desk 1").await;
    let s = slot(server.day, "14:00");
    counter.lease(&api, s).await;
    let sale = counter.sell(&api, s).await;

    let mut stream = Stream::open(&server.url, &gate.token).await;
    stream.hello().await;
    counter.void(&api, sale).await;
    let seen = stream.until("voided", |e| e.event == "voided").await;
    assert!(
        seen.iter()
            .all(|e| e.event != "slots" && e.event != "leases"),
        "a gate hears no slots or leases: {seen:?}"
    );

    // A visitor cancels an online booking (a slot beyond the deadline).
    let later = slot(
        server
            .day
            .checked_add(jiff::Span::new().days(3))
            .expect("day"),
        "14:00",
    );
    let done = api
        .buy_online(
            "cancel-me",
            later,
            json!([{"product_id": "adult", "quantity": 2}]),
        )
        .await;
    assert_eq!(done["state"], "confirmed", "{done}");
    let token = done["booking_token"].as_str().expect("booking token");
    let (_, booking) = api
        .get(&format!("/v1/bookings/{token}"))
        .await
        .expect("booking");
    let ticket = booking["tickets"][0]["ticket_id"].clone();
    let (status, after) = api
        .post_raw(
            &format!("/v1/bookings/{token}/cancel"),
            &[("idempotency-key", "cancel-1")],
            &json!({"ticket_ids": [ticket]}).to_string(),
        )
        .await
        .expect("cancel answers");
    assert_eq!(status, StatusCode::OK, "{after}");
    stream.until("voided again", |e| e.event == "voided").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisors_revoke_tells_that_counter_only() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let supervisor = enrol(&server, "supervisor", "Back office", None).await;
    let mut a = Counter::enrol(&server, "Desk A").await;
    let mut b = Counter::enrol(&server, "Desk B").await;
    let s = slot(server.day, "15:00");
    let lease = a.lease(&api, s).await;
    b.lease(&api, s).await;

    let mut stream_a = Stream::open(&server.url, &a.device.token).await;
    let mut stream_b = Stream::open(&server.url, &b.device.token).await;
    stream_a.hello().await;
    stream_b.hello().await;
    let (status, revoked) = api
        .post_raw(
            &format!("/v1/leases/{lease}/revoke"),
            &[("authorization", &format!("Bearer {}", supervisor.token))],
            "",
        )
        .await
        .expect("revoke answers");
    assert_eq!(status, StatusCode::OK, "{revoked}");
    stream_a.until("leases", |e| e.event == "leases").await;
    // B hears that the slot's places changed (the revoke returned some),
    // and nothing of leases: its own did not change.
    let seen_b = stream_b.until("slots of 15:00", |e| names_slot(e, s)).await;
    assert!(
        seen_b.iter().all(|e| e.event != "leases"),
        "B is not told of A's lease: {seen_b:?}"
    );
    // Something later reaches B (a sale elsewhere) with still no `leases`
    // before it: what was pending for B held no lease notice.
    let other = slot(server.day, "16:00");
    let (status, order) = api
        .buy(
            "later",
            other,
            json!([{"product_id": "adult", "quantity": 1}]),
        )
        .await
        .expect("buy");
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let seen_b = stream_b
        .until("slots of 16:00", |e| names_slot(e, other))
        .await;
    assert!(seen_b.iter().all(|e| e.event != "leases"), "{seen_b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_a_bad_one_is_refused_and_a_second_connection_ends_the_first() {
    let server = ServerProcess::start_at("11:05", &[]);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/events/device", server.url);
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut request = http.get(&url);
        if let Some(a) = auth {
            request = request.header("authorization", a);
        }
        let r = request.send().await.expect("answers");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        let body: Value = r.json().await.expect("a JSON error");
        assert!(body["error"]["code"].is_string(), "{auth:?}: {body}");
    }
    let gate = enrol(&server, "gate", "South entrance", None).await;
    let mut first = Stream::open(&server.url, &gate.token).await;
    first.hello().await;
    let mut second = Stream::open(&server.url, &gate.token).await;
    second.hello().await;
    assert!(first.next().await.is_none(), "the first stream ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_does_not_read_holds_nobody_up_and_gets_its_changes_merged() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let counter = Counter::enrol(&server, "Idle desk").await;
    let s = slot(server.day, "16:30");
    let before = api.available(s).await;
    // Connected, never read while the orders happen.
    let mut idle = Stream::open(&server.url, &counter.device.token).await;
    for i in 0..50 {
        let (status, order) = api
            .buy(
                &format!("many-{i}"),
                s,
                json!([{"product_id": "adult", "quantity": 1}]),
            )
            .await
            .expect("buy");
        assert_eq!(status, StatusCode::CREATED, "{order}");
    }
    // Every order was answered while the device read nothing.
    assert_eq!(api.available(s).await, before - 50);
    // A marker after the orders: everything the orders caused is queued
    // for the device before it (another topic, from another process).
    set_pin(&server, "Marker Cashier", "cashier", "4711");
    idle.hello().await;
    let seen = idle.until("the staff marker", |e| e.event == "staff").await;
    let slots_events = seen.iter().filter(|e| e.event == "slots").count();
    assert!(
        seen.iter().any(|e| names_slot(e, s)),
        "the orders' slot was told: {seen:?}"
    );
    // 50 orders are 100 commits (hold, confirm): merged, far fewer events.
    assert!(
        slots_events < 50,
        "merged, not one per order: {slots_events} slots events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_revoking_a_counter_ends_its_stream_and_tells_the_gates_of_keys() {
    let server = ServerProcess::start_at("11:05", &[]);
    let gate = enrol(&server, "gate", "East entrance", None).await;
    let counter = Counter::enrol(&server, "Lost desk").await;
    let mut gate_stream = Stream::open(&server.url, &gate.token).await;
    let mut counter_stream = Stream::open(&server.url, &counter.device.token).await;
    gate_stream.hello().await;
    counter_stream.hello().await;
    // Another process (the operator's command) commits the revocation.
    server
        .admin_ok(&["revoke-device", "--device", "Lost desk"])
        .expect("revoke-device");
    gate_stream.until("keys", |e| e.event == "keys").await;
    // The revoked counter hears nothing more: its stream ends.
    assert!(counter_stream.next().await.is_none(), "the stream ends");
    let again = open(&server.url, &counter.device.token).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}

/// `set-pin` as the operator runs it, the PIN on standard input.
fn set_pin(server: &ServerProcess, name: &str, role: &str, pin: &str) {
    let mut command = std::process::Command::new(tessera_server::testkit::server_binary());
    command
        .arg("set-pin")
        .args(server.store_args())
        .args(["--name", name, "--role", role])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("set-pin");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{pin}\n").as_bytes())
            .expect("write the PIN");
    }
    let out = child.wait_with_output().expect("set-pin ends");
    assert!(
        out.status.success(),
        "set-pin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_capacity_and_pin_commands_reach_the_devices() {
    let server = ServerProcess::start_at("11:05", &[]);
    let gate = enrol(&server, "gate", "West entrance", None).await;
    let counter = Counter::enrol(&server, "Desk 9").await;
    let mut gate_stream = Stream::open(&server.url, &gate.token).await;
    let mut counter_stream = Stream::open(&server.url, &counter.device.token).await;
    gate_stream.hello().await;
    counter_stream.hello().await;
    server.set_capacity(slot(server.day, "15:30"), 150);
    counter_stream
        .until("catalogue", |e| e.event == "catalogue")
        .await;
    gate_stream
        .until("catalogue", |e| e.event == "catalogue")
        .await;
    set_pin(&server, "Noé", "cashier", "2468");
    counter_stream.until("staff", |e| e.event == "staff").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_ends_the_device_streams_instead_of_waiting_for_them() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let gate = enrol(&server, "gate", "Night entrance", None).await;
    let mut stream = Stream::open(&server.url, &gate.token).await;
    stream.hello().await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // The stream ends (the server closed it), then the process exits.
    assert!(stream.next().await.is_none(), "the stream ends");
    let (exit, server) = tokio::task::spawn_blocking(move || {
        let exit = server.wait_exit(Duration::from_secs(120));
        (exit, server)
    })
    .await
    .expect("join");
    assert!(exit.is_some(), "the server did not stop");
    let log = server.log();
    assert!(
        !log.contains("still open"),
        "the stop waited for the stream:\n{log}"
    );
}
