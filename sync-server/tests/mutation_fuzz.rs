//! Mutation fuzzing against a real server: valid requests of every kind a
//! hostile or broken client sends (holds, confirms, enrolment, counter sync,
//! gate sync, redeem) are mutated with a seeded RNG — wrong types, huge and
//! negative numbers, seqs above `i64::MAX`, multi-byte text, duplicated
//! entries inside one body, missing fields, broken JSON and headers — and
//! sent to a live server process.
//!
//! Every answer must be below 500, and an answer of 4xx must have changed
//! nothing: availability and the day report read the same before and after.
//! A 2xx is allowed to change state and becomes the new baseline.
//!
//! `issue_triggers_…` replays the exact triggers of issue 9 one by one;
//! `mutated_requests_…` runs a few thousand random mutations. Both collect
//! every violation and fail at the end with the exact requests, so one run
//! shows all that is wrong. Seed: `TESSERA_FUZZ_SEED` (printed on failure).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tessera_core::api::sync::{LeaseGrant, SyncResponse};
use tessera_core::catalogue::Catalogue;
use tessera_core::pricing::{price_cart, CartLimits, CartLine, Channel};
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::{TicketClaims, TicketSigner};
use tessera_server::testkit::{slot, ServerProcess};
use uuid::Uuid;

const RANDOM_REQUESTS: usize = 1500;
const DEFAULT_SEED: u64 = 0x7e55_e7a9;
/// Scans of one ticket in one gate sync: enough to show a quadratic merge
/// without making this test slow while it is one.
const MANY_SCANS: usize = 400;
/// An answer slower than this is a finding (a stalled writer), not a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);
/// Slots of the test day a counter and the web shop sell from (the server's
/// clock stands at 11:05, so all of them are still ahead).
const SELL_SLOTS: &[&str] = &[
    "11:30", "12:00", "12:30", "13:00", "13:30", "14:00", "14:30", "15:00", "15:30", "16:00",
];
/// The slot whose tickets the gates scan (its window is open at 11:05).
const GATE_SLOT: &str = "11:00";

/// One HTTP request, kept as bytes so it can be reported exactly.
#[derive(Clone)]
struct Req {
    kind: &'static str,
    method: Method,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

impl Req {
    fn json(kind: &'static str, path: &str, headers: Vec<(String, Vec<u8>)>, body: &Value) -> Req {
        Req {
            kind,
            method: Method::POST,
            path: path.to_string(),
            headers,
            body: Some(body.to_string().into_bytes()),
        }
    }

    /// As a curl command line (bodies cut at 2,000 bytes).
    fn describe(&self) -> String {
        let mut s = format!("curl -X {} 'BASE{}'", self.method, self.path);
        for (k, v) in &self.headers {
            let v = String::from_utf8_lossy(v);
            let v = if k.eq_ignore_ascii_case("authorization") {
                "Bearer <token>".into()
            } else {
                v
            };
            let _ = write!(s, " -H '{k}: {v}'");
        }
        if let Some(b) = &self.body {
            let text = String::from_utf8_lossy(b);
            let cut: String = text.chars().take(2000).collect();
            let more = if cut.len() < text.len() {
                format!(" …(+{} bytes)", text.len() - cut.len())
            } else {
                String::new()
            };
            let _ = write!(s, " --data-raw '{cut}'{more}");
        }
        s
    }
}

struct Finding {
    label: String,
    what: String,
    request: String,
}

/// The server, its devices, and what the client side knows about them.
struct World {
    server: ServerProcess,
    http: reqwest::Client,
    catalogue: Catalogue,
    catalogue_version: u64,
    counter_id: Uuid,
    counter_auth: String,
    signer: TicketSigner,
    gate_id: Uuid,
    gate_auth: String,
    supervisor_auth: String,
    leases: HashMap<SlotId, Uuid>,
    next_seq: u64,
    shift_id: Uuid,
    now: Timestamp,
    /// Sales the server stored: (sale_id, seq, total, slot).
    sales: Vec<(Uuid, u64, i64, SlotId)>,
    open_holds: Vec<String>,
    /// Codes of tickets for the open gate slot: (code, ticket_id).
    gate_tickets: Vec<(String, Uuid)>,
    /// scan_ids already used by a redeem.
    redeem_scans: Vec<Uuid>,
    enrol_codes: Vec<String>,
    idem_keys: Vec<String>,
    baseline: Value,
    findings: Vec<Finding>,
    consecutive_5xx: u32,
    dead: bool,
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl World {
    async fn start() -> World {
        let server = ServerProcess::start_at("11:05", &[]);
        let http = reqwest::Client::builder()
            .timeout(ANSWER_WITHIN)
            .build()
            .expect("http client");
        let api = server.api();
        let (_, cat) = api.get("/v1/catalogue").await.expect("catalogue");
        let catalogue: Catalogue = serde_json::from_value(cat).expect("catalogue parses");

        let signer_seed: [u8; 32] = rand::random();
        let unkeyed = TicketSigner::from_seed(0, signer_seed);
        let code = server.enrolment_code("counter", "Fuzz counter");
        let (status, enrolled) = api
            .enrol(&code, "Fuzz counter", Some(&hex(&unkeyed.public_key())))
            .await
            .expect("enrol counter");
        assert_eq!(status, StatusCode::CREATED, "{enrolled}");
        let key_id = enrolled["key_id"].as_u64().expect("key id") as u32;
        let signer = TicketSigner::from_seed(key_id, signer_seed);
        let counter_id: Uuid = enrolled["device_id"].as_str().unwrap().parse().unwrap();
        let counter_auth = bearer(enrolled["token"].as_str().unwrap());

        let code = server.enrolment_code("gate", "Fuzz gate");
        let (status, gate) = api
            .enrol(&code, "Fuzz gate", None)
            .await
            .expect("enrol gate");
        assert_eq!(status, StatusCode::CREATED, "{gate}");
        let code = server.enrolment_code("supervisor", "Fuzz supervisor");
        let (status, sup) = api
            .enrol(&code, "Fuzz supervisor", None)
            .await
            .expect("enrol supervisor");
        assert_eq!(status, StatusCode::CREATED, "{sup}");
        let enrol_codes = (0..8)
            .map(|i| server.enrolment_code("gate", &format!("Spare gate {i}")))
            .collect();

        let mut world = World {
            http,
            catalogue,
            catalogue_version: 0,
            counter_id,
            counter_auth,
            signer,
            gate_id: gate["device_id"].as_str().unwrap().parse().unwrap(),
            gate_auth: bearer(gate["token"].as_str().unwrap()),
            supervisor_auth: bearer(sup["token"].as_str().unwrap()),
            leases: HashMap::new(),
            next_seq: 1,
            shift_id: Uuid::now_v7(),
            now: Timestamp::now(),
            sales: Vec::new(),
            open_holds: Vec::new(),
            gate_tickets: Vec::new(),
            redeem_scans: Vec::new(),
            enrol_codes,
            idem_keys: Vec::new(),
            baseline: Value::Null,
            findings: Vec::new(),
            consecutive_5xx: 0,
            dead: false,
            server,
        };
        // Leases for every slot the counter sells from.
        let wants: Vec<Value> = SELL_SLOTS
            .iter()
            .map(|t| json!({"slot_id": slot(world.server.day, t), "need": 4}))
            .collect();
        let body = json!({"device_id": world.counter_id, "catalogue_version": 0, "wants": wants});
        let (status, reply) = world
            .send(&world.sync_req(&body))
            .await
            .expect("first sync");
        assert_eq!(status, StatusCode::OK, "first sync: {reply}");
        world.learn_sync(&reply);
        assert!(!world.leases.is_empty(), "no leases granted: {reply}");
        // Online tickets for the gates, and a few open holds to confirm.
        for i in 0..8 {
            let (status, order) = world
                .server
                .api()
                .buy(
                    &format!("setup-{i}"),
                    slot(world.server.day, GATE_SLOT),
                    json!([{"product_id": "adult", "quantity": 2}]),
                )
                .await
                .expect("buy");
            assert_eq!(status, StatusCode::CREATED, "{order}");
            world.learn_order(&order);
        }
        for i in 0..6 {
            let s = slot(world.server.day, SELL_SLOTS[i % SELL_SLOTS.len()]);
            let (status, hold) = world
                .server
                .api()
                .hold(
                    &format!("setup-hold-{i}"),
                    s,
                    json!([{"product_id": "adult", "quantity": 1}]),
                )
                .await
                .expect("hold");
            assert_eq!(status, StatusCode::CREATED, "{hold}");
            world
                .open_holds
                .push(hold["hold_id"].as_str().unwrap().to_string());
        }
        world.baseline = world.snapshot().await.expect("first snapshot");
        world
    }

    fn sync_req(&self, body: &Value) -> Req {
        Req::json(
            "sync",
            "/v1/sync",
            vec![(
                "authorization".into(),
                self.counter_auth.clone().into_bytes(),
            )],
            body,
        )
    }

    fn learn_sync(&mut self, reply: &Value) {
        let Ok(r) = serde_json::from_value::<SyncResponse>(reply.clone()) else {
            return;
        };
        self.catalogue_version = r.catalogue_version;
        self.now = r.server_time;
        self.next_seq = self.next_seq.max(r.acked_seq + 1);
        for LeaseGrant {
            lease_id,
            slot_id,
            revoked,
            ..
        } in r.leases
        {
            if !revoked {
                self.leases.insert(slot_id, lease_id);
            }
        }
    }

    fn learn_order(&mut self, order: &Value) {
        for t in order["tickets"].as_array().into_iter().flatten() {
            if let (Some(code), Some(id)) = (t["code"].as_str(), t["ticket_id"].as_str()) {
                if let Ok(id) = id.parse() {
                    self.gate_tickets.push((code.to_string(), id));
                }
            }
        }
    }

    async fn send(&self, req: &Req) -> Result<(StatusCode, Value), reqwest::Error> {
        let url = format!("{}{}", self.server.url, req.path);
        let mut r = self.http.request(req.method.clone(), url);
        if req.body.is_some() {
            r = r.header("content-type", "application/json");
        }
        for (k, v) in &req.headers {
            // A header the HTTP library itself cannot send is not a request
            // a client can make; send it without that header.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_bytes(v),
            ) {
                r = r.header(name, value);
            }
        }
        if let Some(b) = &req.body {
            r = r.body(b.clone());
        }
        let resp = r.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, body))
    }

    /// What a refused request must not change: the test day's availability
    /// and its report (less the time it was made).
    async fn snapshot(&self) -> Result<Value, reqwest::Error> {
        let day = self.server.day;
        let avail = async {
            self.http
                .get(format!("{}/v1/availability?date={day}", self.server.url))
                .send()
                .await?
                .json::<Value>()
                .await
        };
        let report = async {
            let r = self
                .http
                .get(format!("{}/v1/reports/day?date={day}", self.server.url))
                .header("authorization", &self.supervisor_auth)
                .send()
                .await?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.json::<Value>().await?))
        };
        let (avail, report) = tokio::join!(avail, report);
        let (status, mut report) = report?;
        if let Some(o) = report.as_object_mut() {
            o.remove("generated_at");
        }
        if status != 200 {
            // A report that fails is a finding of its own; its request id
            // differs every time and is not state.
            if let Some(e) = report.get_mut("error").and_then(Value::as_object_mut) {
                e.remove("request_id");
                if let Some(m) = e.get_mut("message") {
                    *m = json!("(message)");
                }
            }
        }
        Ok(json!({"availability": avail?, "report": report, "report_status": status}))
    }

    fn find(&mut self, label: &str, what: String, req: &Req) {
        self.findings.push(Finding {
            label: label.to_string(),
            what,
            request: req.describe(),
        });
    }

    /// Sends, checks the two rules, and keeps the client's model in step.
    async fn check(&mut self, label: &str, req: &Req) -> Option<(StatusCode, Value)> {
        if self.dead {
            return None;
        }
        let reply = match self.send(req).await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                self.find(
                    label,
                    format!("no answer within {} s", ANSWER_WITHIN.as_secs()),
                    req,
                );
                // Slow is a finding; dead ends the run. A writer still busy
                // with that request gets a minute to come back.
                self.dead = true;
                let until = std::time::Instant::now() + Duration::from_secs(60);
                while std::time::Instant::now() < until {
                    if let Ok((StatusCode::OK, _)) = self.server.api().get("/healthz").await {
                        self.dead = false;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                if let Ok(s) = self.snapshot().await {
                    self.baseline = s;
                }
                return None;
            }
            Err(e) => {
                let log = self.server.log();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                self.find(
                    label,
                    format!("no answer ({e}); server log ends:\n{tail}"),
                    req,
                );
                self.dead = true;
                return None;
            }
        };
        let (status, body) = &reply;
        if status.is_server_error() {
            self.find(label, format!("{status}: {body}"), req);
            self.consecutive_5xx += 1;
            // A 5xx that leaves the server unhealthy ends the run: what
            // follows would only repeat it.
            if !matches!(
                self.server.api().get("/healthz").await,
                Ok((StatusCode::OK, _))
            ) {
                self.find(
                    "server unhealthy",
                    format!("/healthz is not ok after {label:?}; stopping"),
                    req,
                );
                self.dead = true;
                return Some(reply);
            }
            if self.consecutive_5xx >= 25 {
                self.find(
                    "abort",
                    "25 answers of 5xx in a row: the server no longer works; stopping".into(),
                    req,
                );
                self.dead = true;
            }
            // Whatever it did, measure from here on.
            if let Ok(s) = self.snapshot().await {
                self.baseline = s;
            }
            return Some(reply);
        }
        self.consecutive_5xx = 0;
        let after = match self.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                self.find(
                    label,
                    format!("snapshot failed after the request: {e}"),
                    req,
                );
                self.dead = true;
                return None;
            }
        };
        if after["report_status"] != 200 && self.baseline["report_status"] == 200 {
            let report = after["report"].to_string();
            self.find(
                "day report fails",
                format!(
                    "after this request ({status}) the day report answers {}: {report}",
                    after["report_status"]
                ),
                req,
            );
        }
        if status.is_client_error() && after != self.baseline {
            let diff = first_difference(&self.baseline, &after);
            self.find(
                label,
                format!("refused with {status} but the state changed: {diff}; answer {body}"),
                req,
            );
        }
        self.baseline = after;
        if status.is_success() {
            self.learn(req, body);
        }
        Some(reply)
    }

    fn learn(&mut self, req: &Req, body: &Value) {
        match req.kind {
            "sync" => {
                self.learn_sync(body);
                let sent: Value = req
                    .body
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                for s in sent["sales"].as_array().into_iter().flatten() {
                    if let Some(seq) = s["terminal_seq"].as_u64() {
                        self.next_seq = self.next_seq.max(seq.saturating_add(1));
                    }
                    let parsed = (
                        s["sale_id"].as_str().and_then(|v| v.parse().ok()),
                        s["terminal_seq"].as_u64(),
                        s["total"]["amount"].as_i64(),
                        s["slot_id"].as_str().and_then(|v| v.parse().ok()),
                    );
                    if let (Some(id), Some(seq), Some(total), Some(slot)) = parsed {
                        self.sales.push((id, seq, total, slot));
                    }
                }
            }
            "hold" => {
                if let Some(id) = body["hold_id"].as_str() {
                    self.open_holds.push(id.to_string());
                }
            }
            "confirm" => self.learn_order(body),
            _ => {}
        }
    }

    // ---- valid requests ----------------------------------------------------

    fn fresh_key(&mut self, rng: &mut StdRng) -> String {
        let key = format!("fuzz-{:016x}", rng.random::<u64>());
        self.idem_keys.push(key.clone());
        key
    }

    fn hold(&mut self, rng: &mut StdRng) -> (Req, Value) {
        let s = slot(self.server.day, SELL_SLOTS.choose(rng).unwrap());
        let items = match rng.random_range(0..3) {
            0 => json!([{"product_id": "adult", "quantity": 1}]),
            1 => json!([{"product_id": "reduced", "quantity": 2}]),
            _ => {
                json!([{"product_id": "adult", "quantity": 1}, {"product_id": "audio-guide", "quantity": 1}])
            }
        };
        let body = json!({"slot_id": s, "items": items});
        let key = self.fresh_key(rng);
        (
            Req::json(
                "hold",
                "/v1/holds",
                vec![("idempotency-key".into(), key.into_bytes())],
                &body,
            ),
            body,
        )
    }

    fn confirm(&mut self, rng: &mut StdRng) -> (Req, Value) {
        let hold = match self.open_holds.choose(rng) {
            Some(h) if rng.random_bool(0.8) => h.clone(),
            _ => Uuid::now_v7().to_string(),
        };
        let body = json!({"payment_reference": format!("psp-{:x}", rng.random::<u32>()), "email": "visitor@example.org"});
        let key = self.fresh_key(rng);
        (
            Req::json(
                "confirm",
                &format!("/v1/holds/{hold}/confirm"),
                vec![
                    ("idempotency-key".into(), key.into_bytes()),
                    (
                        "authorization".into(),
                        format!("Bearer {}", self.server.channel_token).into_bytes(),
                    ),
                ],
                &body,
            ),
            body,
        )
    }

    fn enrol(&mut self, rng: &mut StdRng) -> (Req, Value) {
        let code = match self.enrol_codes.choose(rng) {
            Some(c) if rng.random_bool(0.5) => c.clone(),
            _ => "ABCD-EFGH-JKLM".to_string(),
        };
        let body = json!({"code": code, "name": format!("Gate {}", rng.random_range(0..1000))});
        (Req::json("enrol", "/v1/devices/enrol", vec![], &body), body)
    }

    /// A counter sync carrying one new, correct sale (and sometimes a void of
    /// an earlier one), as the real counter would send it.
    fn sync(&mut self, rng: &mut StdRng) -> (Req, Value) {
        let day = self.server.day;
        let candidates: Vec<SlotId> = SELL_SLOTS
            .iter()
            .map(|t| slot(day, t))
            .filter(|s| self.leases.contains_key(s))
            .collect();
        let mut body = json!({
            "device_id": self.counter_id,
            "catalogue_version": self.catalogue_version,
            "last_seq": self.next_seq.saturating_sub(1),
            "open_shift": {"shift_id": self.shift_id, "cashier": "Camille", "opened_at": self.now, "float": 20000},
        });
        if let Some(&s) = candidates.choose(rng) {
            let (product, qty) = [("adult", 1u32), ("reduced", 1), ("family", 1), ("adult", 2)]
                .choose(rng)
                .copied()
                .unwrap();
            let sale = self.sale(s, product, qty, rng.random_bool(0.5));
            body["sales"] = json!([sale]);
            body["last_seq"] = json!(self.next_seq);
            body["wants"] = json!([{"slot_id": s, "need": qty * 4}]);
        }
        if rng.random_bool(0.3) {
            if let Some(v) = self.void_of_stored(rng) {
                body["voids"] = json!([v]);
            }
        }
        (self.sync_req(&body), body)
    }

    fn sale(&self, s: SlotId, product: &str, qty: u32, cash: bool) -> Value {
        let cart = price_cart(
            &self.catalogue,
            &[CartLine {
                product_id: product.into(),
                quantity: qty,
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
        let total = cart.total.amount;
        let payment = if cash {
            let tendered = (total / 1000 + 1) * 1000;
            json!({"method": "cash", "amount": total, "tendered": tendered, "change": tendered - total})
        } else {
            json!({"method": "card", "amount": total})
        };
        json!({
            "sale_id": Uuid::now_v7(),
            "terminal_seq": self.next_seq,
            "lease_id": self.leases[&s],
            "slot_id": s,
            "shift_id": self.shift_id,
            "cashier": "Camille",
            "created_at": self.now,
            "lines": cart.lines,
            "total": cart.total,
            "admissions": cart.admissions,
            "payment": payment,
            "tickets": tickets,
        })
    }

    fn void_of_stored(&self, rng: &mut StdRng) -> Option<Value> {
        let &(sale_id, _, total, _) = self.sales.choose(rng)?;
        Some(json!({
            "void_id": Uuid::now_v7(),
            "sale_id": sale_id,
            "after_seq": self.next_seq.saturating_sub(1),
            "at": self.now,
            "shift_id": self.shift_id,
            "approved_by": "Inès",
            "reason": "visitor changed plans",
            "returned_to_lease": true,
            "refund": total,
            "refund_method": "card",
        }))
    }

    fn scan(&self, rng: &mut StdRng) -> Value {
        let (code, ticket) = self.gate_tickets.choose(rng).expect("gate tickets").clone();
        json!({
            "scan_id": Uuid::now_v7(),
            "code": code,
            "ticket_id": ticket,
            "slot_id": slot(self.server.day, GATE_SLOT),
            "scanned_at": self.now,
        })
    }

    fn gate_sync(&mut self, rng: &mut StdRng) -> (Req, Value) {
        let n = rng.random_range(1..=3);
        let scans: Vec<Value> = (0..n).map(|_| self.scan(rng)).collect();
        let body = json!({"device_id": self.gate_id, "catalogue_version": self.catalogue_version, "scans": scans});
        (
            Req::json(
                "gate_sync",
                "/v1/gate/sync",
                vec![("authorization".into(), self.gate_auth.clone().into_bytes())],
                &body,
            ),
            body,
        )
    }

    fn redeem(&mut self, rng: &mut StdRng) -> (Req, Value) {
        let (code, _) = self.gate_tickets.choose(rng).expect("gate tickets").clone();
        let scan_id = Uuid::now_v7();
        self.redeem_scans.push(scan_id);
        let body = json!({"code": code, "scan_id": scan_id});
        (
            Req::json(
                "redeem",
                "/v1/gate/redeem",
                vec![("authorization".into(), self.gate_auth.clone().into_bytes())],
                &body,
            ),
            body,
        )
    }

    fn with_body(req: &Req, body: &Value) -> Req {
        let mut r = req.clone();
        r.body = Some(body.to_string().into_bytes());
        r
    }
}

/// Where two snapshots first differ, as a JSON pointer and both values.
fn first_difference(a: &Value, b: &Value) -> String {
    fn walk(a: &Value, b: &Value, path: &mut String) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for k in x.keys().chain(y.keys()) {
                    let len = path.len();
                    path.push('/');
                    path.push_str(k);
                    let found = walk(
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        path,
                    );
                    if found.is_some() {
                        return found;
                    }
                    path.truncate(len);
                }
                None
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    let len = path.len();
                    let _ = write!(path, "/{i}");
                    if let Some(f) = walk(p, q, path) {
                        return Some(f);
                    }
                    path.truncate(len);
                }
                None
            }
            _ if a == b => None,
            _ => Some(format!("{path}: {a} -> {b}")),
        }
    }
    walk(a, b, &mut String::new()).unwrap_or_else(|| "(no difference found)".into())
}

// ---- mutations ---------------------------------------------------------------

fn interesting_numbers() -> Vec<Value> {
    vec![
        json!(0),
        json!(-1),
        json!(1),
        json!(255),
        json!(256),
        json!(65536),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!((1u64 << 53) + 1),
        json!(i64::MAX),
        json!(i64::MAX as u64 + 1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(-1_000_000_000_000_000i64),
        json!(1_000_000_000_000i64),
        json!(1.5),
        json!(1e300),
        json!(-0.0),
    ]
}

fn interesting_strings() -> Vec<String> {
    vec![
        String::new(),
        " ".into(),
        "AAAéAAAAAAA".into(),
        "é".repeat(65),
        "漢".repeat(170),
        "漢".repeat(201),
        "漢".repeat(600),
        "😀".repeat(60),
        "e\u{301}".repeat(120),
        "A".repeat(10_000),
        "\u{0}".into(),
        "\u{202e}gnp.exe".into(),
        "'; DROP TABLE sales; --".into(),
        "9999-12-31T10:00".into(),
        "2026-13-45T99:99".into(),
        "0000-01-01T00:00".into(),
        "9999-12-31T23:59:59Z".into(),
        Uuid::nil().to_string(),
        Uuid::max().to_string(),
    ]
}

fn wrong_types() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!("text"),
        json!([]),
        json!({}),
        json!([1, 2, 3]),
        json!({"nested": {"deeper": [null]}}),
    ]
}

/// Every node of a JSON value, as the steps that lead to it.
fn node_paths(v: &Value) -> Vec<Vec<Step>> {
    fn walk(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
        out.push(here.clone());
        match v {
            Value::Object(m) => {
                for k in m.keys() {
                    here.push(Step::Key(k.clone()));
                    walk(&m[k], here, out);
                    here.pop();
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    here.push(Step::Index(i));
                    walk(x, here, out);
                    here.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn node_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut cur = v;
    for step in path {
        cur = match step {
            Step::Key(k) => cur.get_mut(k.as_str())?,
            Step::Index(i) => cur.get_mut(*i)?,
        };
    }
    Some(cur)
}

fn path_name(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Key(k) => k.clone(),
            Step::Index(_) => "[]".into(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// One random structural mutation; returns its name for grouping findings.
fn mutate(v: &mut Value, rng: &mut StdRng) -> String {
    let paths = node_paths(v);
    let path = paths.choose(rng).cloned().unwrap_or_default();
    let name = path_name(&path);
    let Some(node) = node_mut(v, &path) else {
        return "none".into();
    };
    match rng.random_range(0..9) {
        0 => {
            *node = wrong_types().choose(rng).unwrap().clone();
            format!("wrong type at {name}")
        }
        1 | 2 => {
            *node = interesting_numbers().choose(rng).unwrap().clone();
            format!("number at {name}")
        }
        3 | 4 => {
            if let Value::String(s) = node {
                // Multi-byte text inside or instead of a valid value.
                if rng.random_bool(0.5) && !s.is_empty() {
                    let chars: Vec<char> = s.chars().collect();
                    let at = rng.random_range(0..=chars.len());
                    let insert = ["é", "漢", "😀", "\u{301}"].choose(rng).unwrap();
                    *s = chars[..at].iter().collect::<String>()
                        + insert
                        + &chars[at..].iter().collect::<String>();
                    return format!("multi-byte inside {name}");
                }
            }
            *node = Value::String(interesting_strings().choose(rng).unwrap().clone());
            format!("text at {name}")
        }
        5 => match node {
            Value::Object(m) if !m.is_empty() => {
                let keys: Vec<String> = m.keys().cloned().collect();
                let k = keys.choose(rng).unwrap().clone();
                m.remove(&k);
                format!("missing {name}.{k}")
            }
            _ => {
                *node = Value::Null;
                format!("null at {name}")
            }
        },
        6 => match node {
            Value::Array(a) if !a.is_empty() => {
                let i = rng.random_range(0..a.len());
                let copy = a[i].clone();
                a.push(copy);
                format!("duplicate entry in {name}")
            }
            Value::Object(m) => {
                m.insert("unexpected".into(), json!(1));
                format!("unknown field in {name}")
            }
            _ => {
                *node = json!([node.clone()]);
                format!("wrapped in array at {name}")
            }
        },
        7 => match node {
            Value::Array(a) => {
                a.clear();
                format!("empty {name}")
            }
            _ => {
                *node = interesting_numbers().choose(rng).unwrap().clone();
                format!("number at {name}")
            }
        },
        _ => match node {
            Value::Number(n) => {
                let bumped = n
                    .as_i64()
                    .map(|x| json!(x.wrapping_neg()))
                    .unwrap_or(json!(-1));
                *node = bumped;
                format!("negated {name}")
            }
            _ => {
                *node = json!(u64::MAX);
                format!("u64::MAX at {name}")
            }
        },
    }
}

/// Mutations of a counter sync that need to know what a sync means.
fn mutate_sync(w: &World, body: &mut Value, rng: &mut StdRng) -> Option<String> {
    let has_sale = body["sales"].as_array().is_some_and(|a| !a.is_empty());
    match rng.random_range(0..9) {
        0 if has_sale => {
            // One sale_id at two seqs.
            let mut again = body["sales"][0].clone();
            again["terminal_seq"] = json!(w.next_seq + 1);
            body["sales"].as_array_mut()?.push(again);
            Some("one sale_id at two seqs".into())
        }
        1 if has_sale => {
            body["sales"][0]["terminal_seq"] = json!(i64::MAX as u64 + rng.random_range(1..1000));
            body["last_seq"] = body["sales"][0]["terminal_seq"].clone();
            Some("seq above i64::MAX".into())
        }
        2 => {
            let v = w.void_of_stored(rng)?;
            let mut other = v.clone();
            other["void_id"] = json!(Uuid::now_v7());
            body["voids"] = if rng.random_bool(0.5) {
                json!([v, v])
            } else {
                json!([v, other])
            };
            Some("same void twice / two voids of one sale".into())
        }
        3 => {
            let s = slot(w.server.day, SELL_SLOTS.choose(rng)?);
            body["wants"] = json!([{"slot_id": s, "need": u32::MAX}]);
            Some("wants.need = u32::MAX".into())
        }
        4 if has_sale => {
            let field = [
                "/lines/0/unit_price",
                "/lines/0/amounts/gross",
                "/total/amount",
                "/payment/amount",
                "/payment/tendered",
            ]
            .choose(rng)?;
            let value = [json!(-1500), json!(1), json!(i64::MAX), json!(-1)]
                .choose(rng)?
                .clone();
            *body["sales"][0].pointer_mut(field)? = value;
            Some(format!("money {field}"))
        }
        5 => {
            let mut v = w.void_of_stored(rng)?;
            match rng.random_range(0..3) {
                0 => v["reason"] = json!("漢".repeat(170)),
                1 => v["refund"] = json!(1_000_000_000_000i64),
                _ => v["after_seq"] = json!(u64::MAX),
            }
            body["voids"] = json!([v]);
            Some("void with CJK reason / huge refund / huge after_seq".into())
        }
        6 => {
            body["open_shift"]["float"] = json!(-1_000_000_000_000_000i64);
            Some("float -10^15".into())
        }
        7 => {
            let s = slot(w.server.day, SELL_SLOTS.choose(rng)?).to_string();
            body["own_tallies"] = json!({ s: {"sold": u64::MAX, "voided": 0} });
            Some("own_tallies sold u64::MAX".into())
        }
        8 if has_sale => {
            body["sales"][0]["tickets"][0]["admits"] = json!(255);
            Some("ticket admits 255".into())
        }
        _ => None,
    }
}

fn mutate_gate_sync(w: &World, body: &mut Value, rng: &mut StdRng) -> Option<String> {
    match rng.random_range(0..3) {
        0 => {
            let scan = body["scans"][0].clone();
            body["scans"].as_array_mut()?.push(scan);
            Some("same scan_id twice".into())
        }
        1 => {
            let reused = *w.redeem_scans.choose(rng)?;
            body["scans"][0]["scan_id"] = json!(reused);
            Some("scan_id of an earlier redeem".into())
        }
        _ => {
            let scan = body["scans"][0].clone();
            let scans: Vec<Value> = (0..MANY_SCANS / 4)
                .map(|_| {
                    let mut s = scan.clone();
                    s["scan_id"] = json!(Uuid::now_v7());
                    s
                })
                .collect();
            body["scans"] = json!(scans);
            Some(format!("{} scans of one ticket", MANY_SCANS / 4))
        }
    }
}

/// Breaks the request outside its JSON structure: bytes, headers.
fn mutate_raw(req: &mut Req, w: &World, rng: &mut StdRng) -> String {
    match rng.random_range(0..8) {
        0 => {
            if let Some(b) = &mut req.body {
                let cut = rng.random_range(0..b.len().max(1));
                b.truncate(cut);
            }
            "truncated body".into()
        }
        1 => {
            if let Some(b) = &mut req.body {
                let at = rng.random_range(0..b.len().max(1)).min(b.len());
                b.splice(at..at, [0xff, 0xfe, 0xc3]);
            }
            "invalid UTF-8 in body".into()
        }
        2 => {
            req.body = Some("[".repeat(10_000).into_bytes());
            "deeply nested body".into()
        }
        3 => {
            req.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
            "no Authorization".into()
        }
        4 => {
            for (k, v) in &mut req.headers {
                if k.eq_ignore_ascii_case("authorization") {
                    *v = [b"Bearer ".as_slice(), "tökén".as_bytes()].concat();
                }
            }
            req.headers
                .push(("x-supervisor-pin".into(), "９９９９".as_bytes().to_vec()));
            "non-ASCII token and PIN".into()
        }
        5 => {
            let key = match rng.random_range(0..4) {
                0 => Vec::new(),
                1 => "k".repeat(201).into_bytes(),
                2 => "clé-é".as_bytes().to_vec(),
                _ => w
                    .idem_keys
                    .choose(rng)
                    .cloned()
                    .unwrap_or_default()
                    .into_bytes(),
            };
            req.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("idempotency-key"));
            req.headers.push(("idempotency-key".into(), key));
            "odd or reused Idempotency-Key".into()
        }
        6 => {
            req.path.push_str("?date=9999-12-31&date=x&%ff=%zz");
            "odd query string".into()
        }
        _ => {
            req.body = Some(b"null".to_vec());
            "body null".into()
        }
    }
}

fn seed() -> u64 {
    std::env::var("TESSERA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

fn fail_with(w: &World, title: &str, seed: u64) {
    if w.findings.is_empty() {
        return;
    }
    let mut groups: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for f in &w.findings {
        groups.entry(f.label.as_str()).or_default().push(f);
    }
    let mut out = format!(
        "{title}: {} violations in {} groups (seed {seed}, BASE = the test server)\n",
        w.findings.len(),
        groups.len()
    );
    let _ = writeln!(out, "first, in the order they happened:");
    for f in w.findings.iter().take(5) {
        let _ = writeln!(
            out,
            "  - {}: {}",
            f.label,
            f.what.chars().take(300).collect::<String>()
        );
    }
    for (label, list) in groups.iter().take(40) {
        let f = list[0];
        let _ = writeln!(
            out,
            "\n== {label} ({} times)\n   {}\n   {}",
            list.len(),
            f.what.chars().take(1500).collect::<String>(),
            f.request
        );
    }
    panic!("{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_requests_never_5xx_and_refusals_change_nothing() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = World::start().await;
    let mut sent = 0;
    while sent < RANDOM_REQUESTS && !w.dead {
        let kind = rng.random_range(0..6);
        let (mut req, mut body) = match kind {
            0 => w.hold(&mut rng),
            1 => w.confirm(&mut rng),
            2 => w.enrol(&mut rng),
            3 => w.sync(&mut rng),
            4 => w.gate_sync(&mut rng),
            _ => w.redeem(&mut rng),
        };
        let roll = rng.random_range(0..100);
        let label = if roll < 5 {
            // Some valid requests keep the model moving (new sales to void,
            // holds to confirm) and check that valid input still works.
            "valid".to_string()
        } else if roll < 20 {
            let m = mutate_raw(&mut req, &w, &mut rng);
            format!("{}: {m}", req.kind)
        } else if roll < 40 && (kind == 3 || kind == 4) {
            let m = if kind == 3 {
                mutate_sync(&w, &mut body, &mut rng)
            } else {
                mutate_gate_sync(&w, &mut body, &mut rng)
            };
            match m {
                Some(m) => {
                    req = World::with_body(&req, &body);
                    format!("{}: {m}", req.kind)
                }
                None => {
                    let m = mutate(&mut body, &mut rng);
                    req = World::with_body(&req, &body);
                    format!("{}: {m}", req.kind)
                }
            }
        } else {
            let n = rng.random_range(1..=3);
            let names: Vec<String> = (0..n).map(|_| mutate(&mut body, &mut rng)).collect();
            req = World::with_body(&req, &body);
            format!("{}: {}", req.kind, names.join(" + "))
        };
        w.check(&label, &req).await;
        sent += 1;
    }
    // The server must still be healthy and still take a valid sale.
    if !w.dead {
        let (req, _) = w.sync(&mut rng);
        if let Some((status, body)) = w.check("valid sync after the run", &req).await {
            if status != StatusCode::OK {
                let r = req.clone();
                w.find(
                    "valid sync after the run",
                    format!("a valid sync was answered {status}: {body}"),
                    &r,
                );
            }
        }
        let health = w.server.api().get("/healthz").await;
        if !matches!(&health, Ok((StatusCode::OK, _))) {
            let r = req;
            w.find("healthz after the run", format!("{health:?}"), &r);
        }
    }
    eprintln!(
        "mutation fuzz: {sent} requests, seed {seed}, {} violations",
        w.findings.len()
    );
    fail_with(&w, "mutation fuzz", seed);
}

/// The exact triggers issue 9 lists, each checked on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_triggers_never_5xx_and_refusals_change_nothing() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = World::start().await;
    let day = w.server.day;

    // A stored sale to void, and a redeem whose scan_id a gate reuses.
    let (req, _) = w.sync(&mut rng);
    w.check("valid sync", &req).await;
    let (redeem, redeem_body) = w.redeem(&mut rng);
    w.check("valid redeem", &redeem).await;

    let mut cases: Vec<(String, Req)> = Vec::new();
    {
        let (req, mut body) = w.gate_sync(&mut rng);
        let scan = body["scans"][0].clone();
        body["scans"] = json!([scan, scan]);
        cases.push((
            "gate sync: same scan_id twice".into(),
            World::with_body(&req, &body),
        ));
    }
    {
        let (req, mut body) = w.gate_sync(&mut rng);
        body["scans"][0]["scan_id"] = redeem_body["scan_id"].clone();
        cases.push((
            "gate sync: scan_id of an earlier redeem".into(),
            World::with_body(&req, &body),
        ));
    }
    {
        let (_, mut other) = w.redeem(&mut rng);
        other["scan_id"] = redeem_body["scan_id"].clone();
        let codes: HashSet<&str> = w.gate_tickets.iter().map(|(c, _)| c.as_str()).collect();
        let different = codes
            .into_iter()
            .find(|c| Some(*c) != redeem_body["code"].as_str())
            .unwrap()
            .to_string();
        other["code"] = json!(different);
        cases.push((
            "redeem: one scan_id for two tickets".into(),
            World::with_body(&redeem, &other),
        ));
    }
    let stored = w.sales.first().cloned().expect("a stored sale");
    {
        let (req, mut body) = w.sync(&mut rng);
        let v = w.void_of_stored(&mut rng).unwrap();
        let mut other = v.clone();
        other["void_id"] = json!(Uuid::now_v7());
        body["voids"] = json!([v, other]);
        cases.push((
            "sync: two voids of one sale".into(),
            World::with_body(&req, &body),
        ));
        let mut body2 = body.clone();
        body2["voids"] = json!([v, v]);
        cases.push((
            "sync: the same void twice".into(),
            World::with_body(&req, &body2),
        ));
    }
    {
        let (req, mut body) = w.sync(&mut rng);
        let mut again = body["sales"][0].clone();
        again["terminal_seq"] = json!(w.next_seq + 1);
        body["sales"].as_array_mut().unwrap().push(again);
        cases.push((
            "sync: one sale_id at two seqs".into(),
            World::with_body(&req, &body),
        ));
    }
    {
        let (req, mut body) = w.sync(&mut rng);
        let mut again = body["sales"][0].clone();
        again["sale_id"] = json!(stored.0);
        body["sales"] = json!([again]);
        cases.push((
            "sync: a stored sale_id again at a new seq".into(),
            World::with_body(&req, &body),
        ));
    }
    for seq in [i64::MAX as u64 + 1, u64::MAX] {
        let (req, mut body) = w.sync(&mut rng);
        body["sales"][0]["terminal_seq"] = json!(seq);
        body["last_seq"] = json!(seq);
        cases.push((format!("sync: seq {seq}"), World::with_body(&req, &body)));
    }
    {
        let (req, mut body) = w.sync(&mut rng);
        body["wants"] = json!([{"slot_id": slot(day, "15:30"), "need": u32::MAX}]);
        cases.push((
            "sync: wants.need 4294967295".into(),
            World::with_body(&req, &body),
        ));
    }
    for (what, pointer, value) in [
        ("adult at -15.00", "/lines/0/unit_price", json!(-1500)),
        ("adult at 0.01", "/lines/0/unit_price", json!(1)),
        ("VAT 0", "/lines/0/vat_bp", json!(0)),
        (
            "cash tendered i64::MAX",
            "/payment/tendered",
            json!(i64::MAX),
        ),
        ("ticket admits 255", "/tickets/0/admits", json!(255)),
    ] {
        let (req, mut body) = w.sync(&mut rng);
        if let Some(n) = body["sales"][0].pointer_mut(pointer) {
            *n = value;
        }
        cases.push((format!("sync: {what}"), World::with_body(&req, &body)));
    }
    {
        let (req, mut body) = w.sync(&mut rng);
        let mut v = w.void_of_stored(&mut rng).unwrap();
        v["refund"] = json!(1_000_000_000_000i64);
        body["voids"] = json!([v]);
        cases.push((
            "sync: refund of 10^12".into(),
            World::with_body(&req, &body),
        ));
        let mut v = w.void_of_stored(&mut rng).unwrap();
        v["reason"] = json!("漢".repeat(170));
        body["voids"] = json!([v]);
        cases.push((
            "sync: void reason of 170 CJK characters".into(),
            World::with_body(&req, &body),
        ));
    }
    {
        let (req, mut body) = w.sync(&mut rng);
        body["open_shift"]["float"] = json!(-1_000_000_000_000_000i64);
        cases.push((
            "sync: float of -10^15".into(),
            World::with_body(&req, &body),
        ));
        let mut body = body.clone();
        body["own_tallies"] =
            json!({ slot(day, "16:00").to_string(): {"sold": 4_294_967_295u64, "voided": 0} });
        body["open_shift"]["float"] = json!(20000);
        cases.push((
            "sync: own tallies of 4294967295".into(),
            World::with_body(&req, &body),
        ));
    }
    {
        let (req, mut body) = w.gate_sync(&mut rng);
        let scan = body["scans"][0].clone();
        let scans: Vec<Value> = (0..MANY_SCANS)
            .map(|_| {
                let mut s = scan.clone();
                s["scan_id"] = json!(Uuid::now_v7());
                s
            })
            .collect();
        body["scans"] = json!(scans);
        cases.push((
            format!("gate sync: {MANY_SCANS} scans of one ticket"),
            World::with_body(&req, &body),
        ));
    }
    for q in [
        "/v1/reports/day?date=9999-12-31",
        "/v1/availability?date=9999-12-31",
        "/v1/availability?date=x&date=y",
        "/v1/availability?date=%ff",
        "/v1/leases?date=0000-01-01",
    ] {
        let auth = w.supervisor_auth.clone().into_bytes();
        cases.push((
            format!("GET {q}"),
            Req {
                kind: "get",
                method: Method::GET,
                path: q.into(),
                headers: vec![("authorization".into(), auth)],
                body: None,
            },
        ));
    }
    {
        let (req, mut body) = w.hold(&mut rng);
        body["items"][0]["quantity"] = json!(u64::MAX);
        cases.push((
            "hold: quantity u64::MAX".into(),
            World::with_body(&req, &body),
        ));
        body["items"][0]["quantity"] = json!(1);
        body["slot_id"] = json!("9999-12-31T10:00");
        cases.push((
            "hold: slot 9999-12-31".into(),
            World::with_body(&req, &body),
        ));
    }
    {
        let (mut req, _) = w.confirm(&mut rng);
        req.path = "/v1/holds/%C3%A9%ff/confirm".into();
        cases.push(("confirm: non-UTF-8 hold id".into(), req));
    }
    // Last: in issue 9 this one killed the writer for good.
    {
        let body = json!({"code": "AAAéAAAAAAA", "name": "x"});
        cases.push((
            "enrol: code AAAéAAAAAAA".into(),
            Req::json("enrol", "/v1/devices/enrol", vec![], &body),
        ));
        let body = json!({"code": "é".repeat(64), "name": "漢".repeat(100)});
        cases.push((
            "enrol: 64 multi-byte characters".into(),
            Req::json("enrol", "/v1/devices/enrol", vec![], &body),
        ));
    }

    let total = cases.len();
    for (label, req) in cases {
        w.check(&label, &req).await;
    }
    // After all of them the server still works.
    if !w.dead {
        let (req, _) = w.sync(&mut rng);
        match w.check("valid sync after the triggers", &req).await {
            Some((StatusCode::OK, _)) | None => {}
            Some((status, body)) => {
                let r = req.clone();
                w.find(
                    "valid sync after the triggers",
                    format!("answered {status}: {body}"),
                    &r,
                );
            }
        }
        let health = w.server.api().get("/healthz").await;
        if !matches!(&health, Ok((StatusCode::OK, _))) {
            w.find("healthz after the triggers", format!("{health:?}"), &req);
        }
    }
    eprintln!(
        "issue triggers: {total} cases, {} violations",
        w.findings.len()
    );
    fail_with(&w, "issue 9 triggers", seed);
}
