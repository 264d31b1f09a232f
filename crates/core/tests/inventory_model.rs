//! The server's inventory rules, driven end to end from memory.
//!
//! A small in-memory server makes every decision with the core rules a real
//! backend calls (`upload::batch` judges each sync body, `leases` counts
//! sales and voids and sizes leases, `reconcile` folds reports and lowers
//! over-capacity flags), in the order `sqlite/sync/` makes them; honest
//! counters sell from their leases, void, give places back, obey recalls and
//! sync now and then (answers sometimes lost, bodies sometimes delivered
//! twice); a supervisor revokes leases; online checkouts hold and confirm;
//! an operator changes the capacity. After every step the invariants the
//! museum relies on must hold.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;
use tessera_core::api::sync::{
    LeaseReport, LeaseWant, Payment, PaymentMethod, SaleRecord, SoldTicket, SyncRequest, VoidRecord,
};
use tessera_core::catalogue::Catalogue;
use tessera_core::fixture::parse_fixture;
use tessera_core::inventory::{LeasePolicy, LeaseTotals, SlotLedger};
use tessera_core::jiff::Timestamp;
use tessera_core::leases::{self, LeaseState, SlotToSize};
use tessera_core::pricing::{price_cart, CartLimits, CartLine, Channel};
use tessera_core::reconcile;
use tessera_core::slot::SlotId;
use tessera_core::tally::Tallies;
use tessera_core::ticket_code::{KeyRing, TicketClaims, TicketSigner};
use tessera_core::upload::batch::{
    self, BatchRefusal, Judging, KnownSale, LeaseAtUpload, SaleFacts, VoidTarget, Write,
};
use tessera_core::upload::{self, LeaseStep, VoidPlaces};
use tessera_core::uuid::Uuid;

const WINDOW: u16 = 30;
const STARTS_MS: i64 = 1_000_000;
const ENDS_MS: i64 = 2_000_000;

fn slot() -> SlotId {
    "2026-12-02T10:00".parse().expect("slot")
}

fn catalogue() -> Catalogue {
    let text = include_str!("../../../fixtures/demo-museum.toml");
    parse_fixture(text).expect("demo fixture").0
}

/// Ids in creation order, unique across the whole run.
#[derive(Default)]
struct Ids(u64);

impl Ids {
    fn next(&mut self) -> Uuid {
        self.0 += 1;
        Uuid::from_u64_pair(7, self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct StoredSale {
    device: Uuid,
    seq: u64,
    lease: Uuid,
    admissions: u32,
    over: u32,
    voided: bool,
    places_returned: bool,
    tickets: Vec<Uuid>,
}

/// What the server stores, and the writer's memory of it.
struct Server {
    catalogue: Catalogue,
    keyrings: HashMap<Uuid, KeyRing>,
    policy: LeasePolicy,
    now_ms: i64,
    ledger: SlotLedger,
    leases: BTreeMap<Uuid, LeaseState>,
    steps: HashMap<Uuid, Vec<LeaseStep>>,
    sales: BTreeMap<Uuid, StoredSale>,
    quarantined_sales: HashMap<Uuid, KnownSale>,
    voids: HashSet<Uuid>,
    tickets: HashSet<Uuid>,
    last_sync: HashMap<Uuid, i64>,
    tallies: Tallies,
}

/// What a counter learns from an answer.
struct Answer {
    leases: Vec<(Uuid, LeaseTotals, u32, bool)>,
}

impl Server {
    fn sync(&mut self, request: &SyncRequest, ids: &mut Ids) -> Result<Answer, BatchRefusal> {
        let mut request = request.clone();
        upload::normalise_body(&mut request).expect("honest bodies are well formed");
        let device = request.device_id;
        let plan = self.judge(&request, device)?;
        // Write, as the backend does.
        let mut touched = false;
        for write in batch::write_order(&request, &plan) {
            match write {
                Write::Sale(i) => {
                    touched = true;
                    self.store_sale(device, &request.sales[i]);
                }
                Write::Void(k) => {
                    let vp = plan.voids[k];
                    touched |= self.store_void(&request.voids[vp.index], vp);
                }
            }
        }
        for q in &plan.quarantine {
            if let batch::Quarantine::Sale { index, .. } = q {
                let s = &request.sales[*index];
                let known = KnownSale {
                    device,
                    seq: s.terminal_seq,
                };
                self.quarantined_sales.insert(s.sale_id, known);
            }
        }
        for report in &request.leases {
            if let Some(lease) = self.leases.get_mut(&report.lease_id) {
                let change = reconcile::fold_report(lease, report);
                change
                    .apply(&mut self.ledger)
                    .expect("ledger follows reports");
            }
        }
        if touched || !request.own_tallies.is_empty() {
            let (sold, voided) = self.log_of(device);
            self.tallies
                .set_actor(&device.to_string(), slot(), sold, voided);
        }
        self.last_sync.insert(device, self.now_ms);
        let recalls = self.size(&request, device, ids);
        self.record_steps(&request, device);
        Ok(self.answer(device, &recalls))
    }

    fn judge(&self, request: &SyncRequest, device: Uuid) -> Result<batch::Plan, BatchRefusal> {
        let mut judging = Judging::new(request, device);
        let keyring = &self.keyrings[&device];
        for (i, sale) in request.sales.iter().enumerate() {
            let known = self
                .sales
                .get(&sale.sale_id)
                .map(|s| KnownSale {
                    device: s.device,
                    seq: s.seq,
                })
                .or_else(|| self.quarantined_sales.get(&sale.sale_id).copied());
            if !judging.is_new(i, known)? {
                continue;
            }
            let taken = self
                .sales
                .iter()
                .find(|(_, s)| s.device == device && s.seq == sale.terminal_seq)
                .map(|(id, _)| id.to_string());
            judging.seq_is_free(i, taken)?;
            let stored: HashSet<Uuid> = sale
                .tickets
                .iter()
                .map(|t| t.ticket_id)
                .filter(|t| self.tickets.contains(t))
                .collect();
            let facts = SaleFacts {
                catalogue: Some(&self.catalogue),
                slot_window_minutes: (sale.slot_id == slot()).then_some(WINDOW),
                lease: self.leases.get(&sale.lease_id),
                tickets_stored: &stored,
            };
            judging.judge_sale(i, &facts, keyring);
        }
        for (i, v) in request.voids.iter().enumerate() {
            if self.voids.contains(&v.void_id) {
                continue;
            }
            let target = judging
                .void_target_here(v.sale_id)
                .unwrap_or_else(|| self.stored_target(device, v.sale_id));
            let Some(check) = judging.judge_void(i, target) else {
                continue;
            };
            let revoked = self
                .leases
                .get(&check.lease)
                .is_some_and(LeaseState::is_revoked);
            let places = batch::decide_void_places(
                v.returned_to_lease,
                revoked,
                STARTS_MS,
                self.now_ms,
                false,
            );
            judging.plan_void(i, &check, places);
        }
        let events =
            judging.lease_events(|id| self.leases.get(id).is_some_and(LeaseState::is_revoked));
        let at_upload: HashMap<Uuid, LeaseAtUpload> = events
            .keys()
            .filter_map(|id| {
                let lease = self.leases.get(id)?;
                let steps = self.steps.get(id).cloned().unwrap_or_default();
                Some((
                    *id,
                    LeaseAtUpload {
                        sold: lease.sold,
                        revoked: lease.is_revoked(),
                        history: batch::history_or_now(steps, lease.totals),
                    },
                ))
            })
            .collect();
        judging.settle(batch::replay_leases(&events, &at_upload));
        judging.finish(|id| self.leases.get(id))
    }

    fn stored_target(&self, device: Uuid, sale_id: Uuid) -> VoidTarget {
        match self.sales.get(&sale_id) {
            Some(s) if s.device == device => VoidTarget::Sale {
                lease: s.lease,
                slot: slot(),
                admissions: s.admissions,
                total: 1500 * i64::from(s.admissions),
                tickets: s.tickets.clone(),
                voided: s.voided,
            },
            _ => match self.quarantined_sales.get(&sale_id) {
                Some(k) if k.device == device => VoidTarget::Quarantined(Some(k.seq)),
                _ => VoidTarget::Unknown,
            },
        }
    }

    fn store_sale(&mut self, device: Uuid, sale: &SaleRecord) {
        let lease = self.leases.get_mut(&sale.lease_id).expect("judged lease");
        let counted = lease.count_sale(sale.admissions);
        counted
            .slot
            .apply(&mut self.ledger)
            .expect("ledger follows sales");
        self.tickets
            .extend(sale.tickets.iter().map(|t| t.ticket_id));
        self.sales.insert(
            sale.sale_id,
            StoredSale {
                device,
                seq: sale.terminal_seq,
                lease: sale.lease_id,
                admissions: sale.admissions,
                over: counted.over,
                voided: false,
                places_returned: false,
                tickets: sale.tickets.iter().map(|t| t.ticket_id).collect(),
            },
        );
    }

    fn store_void(&mut self, v: &VoidRecord, vp: batch::VoidPlan) -> bool {
        self.voids.insert(v.void_id);
        let returned = vp.places == VoidPlaces::Returned;
        if let Some(s) = self.sales.get_mut(&v.sale_id) {
            s.voided = true;
            s.places_returned = returned;
        }
        let Some(lease) = self.leases.get_mut(&vp.lease) else {
            return false;
        };
        let counted = lease.count_void(vp.places, vp.admissions);
        counted
            .slot
            .apply(&mut self.ledger)
            .expect("ledger follows voids");
        if let Some(overflow) = counted.reflag_to {
            let mut flagged: Vec<(u64, Uuid, u32)> = self
                .sales
                .iter()
                .filter(|(_, s)| s.lease == vp.lease && s.over > 0)
                .map(|(id, s)| (s.seq, *id, s.over))
                .collect();
            flagged.sort_by_key(|f| std::cmp::Reverse(f.0));
            let flagged: Vec<(Uuid, u32)> = flagged.into_iter().map(|(_, id, o)| (id, o)).collect();
            for (sale, over) in reconcile::lower_flags(&flagged, v.sale_id, overflow) {
                if let Some(s) = self.sales.get_mut(&sale) {
                    s.over = over;
                }
            }
        }
        returned
    }

    /// A device's running totals by the sales log.
    fn log_of(&self, device: Uuid) -> (u64, u64) {
        let mine = self.sales.values().filter(|s| s.device == device);
        let sold = mine.clone().map(|s| u64::from(s.admissions)).sum();
        let voided = mine
            .filter(|s| s.places_returned)
            .map(|s| u64::from(s.admissions))
            .sum();
        (sold, voided)
    }

    fn size(&mut self, request: &SyncRequest, device: Uuid, ids: &mut Ids) -> HashMap<Uuid, u32> {
        let online = leases::online_devices(&self.last_sync, self.now_ms);
        let available = self.ledger.available();
        let slots = leases::slots_to_size(
            &request.wants,
            &self.catalogue,
            |s| (*s == slot()).then_some(available),
            self.leases.values().filter(|l| l.device_id == device),
        );
        let mut recalls = HashMap::new();
        for (s, need) in slots {
            let of_slot: Vec<&LeaseState> = self.leases.values().filter(|l| l.slot == s).collect();
            let sizing = leases::size_slot(
                &self.policy,
                &SlotToSize {
                    device,
                    need,
                    ends_at_ms: ENDS_MS,
                    available: self.ledger.available(),
                    leases: &of_slot,
                    online: &online,
                    now_ms: self.now_ms,
                },
            );
            let Some(sizing) = sizing else { continue };
            if sizing.decision.grant > 0 {
                let id = sizing.lease.unwrap_or_else(|| {
                    let id = ids.next();
                    self.leases.insert(id, LeaseState::new(id, device, s));
                    id
                });
                self.ledger
                    .grant_lease(sizing.decision.grant)
                    .expect("sizing grants only what is free");
                self.leases
                    .get_mut(&id)
                    .expect("lease")
                    .grant(sizing.decision.grant);
            }
            if let (Some(id), r @ 1..) = (sizing.lease, sizing.decision.recall) {
                recalls.insert(id, r);
            }
        }
        recalls
    }

    fn record_steps(&mut self, request: &SyncRequest, device: Uuid) {
        let after_seq = batch::step_seq(request);
        let reported: HashSet<Uuid> = request.leases.iter().map(|l| l.lease_id).collect();
        let today = slot().date;
        for lease in self.leases.values() {
            if !leases::steps_in_sync(lease, device, today, &reported) {
                continue;
            }
            let steps = self.steps.entry(lease.lease_id).or_default();
            if batch::needs_step(steps.last().map(|s| s.totals), lease.totals) {
                steps.push(LeaseStep {
                    after_seq,
                    totals: lease.totals,
                });
            }
        }
    }

    fn answer(&self, device: Uuid, recalls: &HashMap<Uuid, u32>) -> Answer {
        Answer {
            leases: self
                .leases
                .values()
                .filter(|l| l.device_id == device)
                .map(|l| {
                    let recall = recalls.get(&l.lease_id).copied().unwrap_or(0);
                    (l.lease_id, l.totals, recall, l.is_revoked())
                })
                .collect(),
        }
    }

    fn revoke(&mut self, device: Uuid) {
        for lease in self.leases.values_mut().filter(|l| l.device_id == device) {
            let change = lease.revoke();
            change
                .apply(&mut self.ledger)
                .expect("revocation returns places");
        }
    }

    /// What a replay must not change.
    fn uploads(&self) -> impl PartialEq + std::fmt::Debug {
        // A lease the replay's sizing opened has nothing uploaded to it.
        let leases: Vec<(Uuid, u32, u32, Option<u32>, u32)> = self
            .leases
            .values()
            .map(|l| {
                (
                    l.lease_id,
                    l.sold,
                    l.kept,
                    l.revoked_escrow,
                    l.totals.released_total,
                )
            })
            .filter(|l| *l != (l.0, 0, 0, None, 0))
            .collect();
        (
            self.sales.clone(),
            self.quarantined_sales.len(),
            self.voids.len(),
            self.tallies.clone(),
            leases,
            self.ledger.over_capacity,
            self.ledger.sold_online,
            self.ledger.held_online,
        )
    }
}

/// An honest counter.
struct Counter {
    device: Uuid,
    signer: TicketSigner,
    seq: u64,
    /// Its lease as it knows it: id, totals, revoked.
    lease: Option<(Uuid, LeaseTotals, bool)>,
    /// Admissions sold from the lease and not given back by a void.
    sold: u32,
    recall: u32,
    need: u32,
    made: Vec<(SaleRecord, bool)>,
    unsent_sales: Vec<SaleRecord>,
    unsent_voids: Vec<VoidRecord>,
    last_body: Option<SyncRequest>,
}

impl Counter {
    fn unused(&self) -> u32 {
        match self.lease {
            Some((_, totals, false)) => totals.escrow().saturating_sub(self.sold),
            _ => 0,
        }
    }

    fn sell(&mut self, q: u32, catalogue: &Catalogue, ids: &mut Ids) {
        let Some((lease_id, _, false)) = self.lease else {
            self.need = q;
            return;
        };
        if self.unused() < q {
            self.need = q;
            return;
        }
        let cart = [CartLine {
            product_id: "adult".into(),
            quantity: q,
            membership_numbers: vec![],
        }];
        let priced =
            price_cart(catalogue, &cart, Channel::Counter, CartLimits::COUNTER).expect("priced");
        let tickets = (0..q)
            .map(|_| {
                let ticket_id = ids.next();
                let claims = TicketClaims {
                    key_id: 0,
                    ticket_id,
                    slot: slot(),
                    window_minutes: WINDOW,
                    admits: 1,
                    product_id: "adult".into(),
                };
                SoldTicket {
                    ticket_id,
                    product_id: "adult".into(),
                    admits: 1,
                    code: self.signer.sign(&claims).expect("signed"),
                }
            })
            .collect();
        self.seq += 1;
        self.sold += q;
        self.need = 0;
        let sale = SaleRecord {
            sale_id: ids.next(),
            terminal_seq: self.seq,
            lease_id,
            slot_id: slot(),
            shift_id: Uuid::nil(),
            cashier: "Ana".into(),
            created_at: Timestamp::UNIX_EPOCH,
            lines: priced.lines,
            total: priced.total,
            admissions: priced.admissions,
            payment: Payment {
                method: PaymentMethod::Card,
                amount: priced.total.amount,
                tendered: None,
                change: None,
            },
            tickets,
            catalogue_version: 0,
        };
        self.unsent_sales.push(sale.clone());
        self.made.push((sale, false));
    }

    fn void(&mut self, pick: usize, now_ms: i64, ids: &mut Ids) {
        let open: Vec<usize> = (0..self.made.len()).filter(|i| !self.made[*i].1).collect();
        if open.is_empty() {
            return;
        }
        let i = open[pick % open.len()];
        self.made[i].1 = true;
        let sale = &self.made[i].0;
        // The counter's clock agrees with the server's here.
        let returned = now_ms < STARTS_MS;
        if returned {
            self.sold -= sale.admissions;
        }
        self.unsent_voids.push(VoidRecord {
            void_id: ids.next(),
            sale_id: sale.sale_id,
            after_seq: self.seq,
            at: Timestamp::UNIX_EPOCH,
            shift_id: None,
            approved_by: "Sam".into(),
            approval_id: Some(ids.next()),
            reason: "wrong ticket".into(),
            returned_to_lease: returned,
            refund: sale.total.amount,
            refund_method: PaymentMethod::Card,
        });
    }

    fn give_back(&mut self, n: u32) {
        let n = n.min(self.unused());
        if let Some((_, totals, _)) = &mut self.lease {
            totals.released_total += n;
        }
    }

    fn body(&mut self) -> SyncRequest {
        // A recall is obeyed with what is unsold.
        let recall = std::mem::take(&mut self.recall);
        self.give_back(recall);
        let leases = match self.lease {
            Some((lease_id, totals, _)) => vec![LeaseReport {
                lease_id,
                slot_id: slot(),
                granted_total: totals.granted_total,
                released_total: totals.released_total,
                unused: self.unused(),
            }],
            None => vec![],
        };
        let revoked = matches!(self.lease, Some((_, _, true)));
        let body = SyncRequest {
            device_id: self.device,
            catalogue_version: 1,
            sales: self.unsent_sales.clone(),
            voids: self.unsent_voids.clone(),
            leases,
            wants: if revoked {
                vec![]
            } else {
                vec![LeaseWant {
                    slot_id: slot(),
                    need: self.need,
                }]
            },
            own_tallies: BTreeMap::new(),
            shifts: vec![],
            last_seq: self.seq,
            open_shift: None,
        };
        self.last_body = Some(body.clone());
        body
    }

    fn hear(&mut self, answer: Answer) {
        self.unsent_sales.clear();
        self.unsent_voids.clear();
        if let Some((id, totals, recall, revoked)) = answer.leases.first().copied() {
            let mut known = self.lease.map(|l| l.1).unwrap_or_default();
            known.merge(totals);
            self.lease = Some((id, known, revoked));
            self.recall = recall;
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Sell { counter: usize, q: u32 },
    Void { counter: usize, pick: usize },
    GiveBack { counter: usize, n: u32 },
    Sync { counter: usize, answer_lost: bool },
    Replay { counter: usize },
    Revoke { counter: usize },
    Hold(u32),
    EndHold { confirm: bool },
    SetCapacity(u32),
    Tick(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0usize..3;
    prop_oneof![
        6 => (c.clone(), 1u32..4).prop_map(|(counter, q)| Op::Sell { counter, q }),
        1 => (c.clone(), any::<usize>()).prop_map(|(counter, pick)| Op::Void { counter, pick }),
        1 => (c.clone(), 0u32..6).prop_map(|(counter, n)| Op::GiveBack { counter, n }),
        4 => (c.clone(), prop::bool::weighted(0.2))
            .prop_map(|(counter, answer_lost)| Op::Sync { counter, answer_lost }),
        1 => c.clone().prop_map(|counter| Op::Replay { counter }),
        1 => c.prop_map(|counter| Op::Revoke { counter }),
        1 => (1u32..8).prop_map(Op::Hold),
        1 => any::<bool>().prop_map(|confirm| Op::EndHold { confirm }),
        1 => (0u32..160).prop_map(Op::SetCapacity),
        1 => (0i64..120_000).prop_map(Op::Tick),
    ]
}

struct World {
    ids: Ids,
    server: Server,
    counters: Vec<Counter>,
    holds: Vec<u32>,
}

impl World {
    fn new(capacity: u32) -> World {
        let mut keyrings = HashMap::new();
        let counters = (0..3u8)
            .map(|n| {
                let device = Uuid::from_u64_pair(1, u64::from(n));
                let signer = TicketSigner::from_seed(u32::from(n) + 1, [n + 1; 32]);
                let mut ring = KeyRing::new();
                ring.insert(u32::from(n) + 1, signer.public_key(), false)
                    .expect("key");
                keyrings.insert(device, ring);
                Counter {
                    device,
                    signer,
                    seq: 0,
                    lease: None,
                    sold: 0,
                    recall: 0,
                    need: 0,
                    made: vec![],
                    unsent_sales: vec![],
                    unsent_voids: vec![],
                    last_body: None,
                }
            })
            .collect();
        World {
            ids: Ids::default(),
            server: Server {
                catalogue: catalogue(),
                keyrings,
                policy: LeasePolicy {
                    share_divisor: 2,
                    max_lease: 12,
                },
                now_ms: 0,
                ledger: SlotLedger::with_capacity(capacity),
                leases: BTreeMap::new(),
                steps: HashMap::new(),
                sales: BTreeMap::new(),
                quarantined_sales: HashMap::new(),
                voids: HashSet::new(),
                tickets: HashSet::new(),
                last_sync: HashMap::new(),
                tallies: Tallies::default(),
            },
            counters,
            holds: vec![],
        }
    }

    fn step(&mut self, op: Op) -> Result<(), TestCaseError> {
        let now = self.server.now_ms;
        match op {
            Op::Sell { counter, q } => {
                self.counters[counter].sell(q, &self.server.catalogue, &mut self.ids)
            }
            Op::Void { counter, pick } => self.counters[counter].void(pick, now, &mut self.ids),
            Op::GiveBack { counter, n } => self.counters[counter].give_back(n),
            Op::Sync {
                counter,
                answer_lost,
            } => {
                let body = self.counters[counter].body();
                let answer = self.server.sync(&body, &mut self.ids);
                let answer = answer.map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
                if !answer_lost {
                    self.counters[counter].hear(answer);
                }
            }
            Op::Replay { counter } => {
                if let Some(body) = self.counters[counter].last_body.clone() {
                    let before = self.server.uploads();
                    let answer = self.server.sync(&body, &mut self.ids);
                    prop_assert!(answer.is_ok(), "a replay is refused");
                    // Lease sizing may move on (the pool changed since);
                    // what was uploaded may not.
                    let grew = self.server.uploads();
                    prop_assert_eq!(before, grew, "a replay changed what was uploaded");
                }
            }
            Op::Revoke { counter } => {
                let device = self.counters[counter].device;
                self.server.revoke(device);
            }
            Op::Hold(n) => {
                if self.server.ledger.hold(n).is_ok() {
                    self.holds.push(n);
                }
            }
            Op::EndHold { confirm } => {
                if let Some(n) = self.holds.pop() {
                    let ledger = &mut self.server.ledger;
                    let done = if confirm {
                        ledger.confirm_hold(n)
                    } else {
                        ledger.release_hold(n)
                    };
                    prop_assert!(done.is_ok());
                }
            }
            Op::SetCapacity(n) => {
                let before = self.server.ledger;
                if self.server.ledger.set_capacity(n).is_err() {
                    prop_assert_eq!(self.server.ledger, before);
                }
            }
            Op::Tick(ms) => self.server.now_ms += ms,
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let s = &self.server;
        // The invariant, as the server counts it.
        prop_assert!(s.ledger.check().is_ok(), "{:?}", s.ledger);
        let escrow: u32 = s.leases.values().map(LeaseState::escrow).sum();
        prop_assert_eq!(s.ledger.leased, escrow);
        let over: u32 = s.leases.values().map(LeaseState::over_capacity).sum();
        prop_assert_eq!(s.ledger.over_capacity, over);
        // Late sales of revoked leases are flagged, and the flags add up to
        // what is over: never silently absorbed.
        for lease in s.leases.values() {
            let flags: u32 = s
                .sales
                .values()
                .filter(|x| x.lease == lease.lease_id)
                .map(|x| x.over)
                .sum();
            prop_assert_eq!(flags, lease.overflow(), "flags of {:?}", lease);
            let counted: u32 = s
                .sales
                .values()
                .filter(|x| x.lease == lease.lease_id && !x.places_returned)
                .map(|x| x.admissions)
                .sum();
            // What the server counts as sold from a lease is what its log
            // says (voids that kept places aside moved them to `kept`).
            prop_assert_eq!(counted, lease.sold + lease.kept, "log of {:?}", lease);
        }
        // Honest counters are never quarantined.
        prop_assert!(s.quarantined_sales.is_empty());
        // Tallies equal the sales log.
        let sold: u64 = s.sales.values().map(|x| u64::from(x.admissions)).sum();
        let returned: u64 = s
            .sales
            .values()
            .filter(|x| x.places_returned)
            .map(|x| u64::from(x.admissions))
            .sum();
        prop_assert_eq!(s.tallies.net(&slot()), sold - returned);
        // A counter never sells beyond the lease it knows.
        for c in &self.counters {
            if let Some((_, totals, false)) = c.lease {
                prop_assert!(c.sold <= totals.escrow());
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_sequence_of_syncs_breaks_the_inventory(
        capacity in 0u32..120,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut world = World::new(capacity);
        for op in ops {
            world.step(op)?;
        }
        // Everyone syncs until nothing is left to say: every sale a counter
        // made is stored once, none lost, none twice.
        for _ in 0..2 {
            for c in 0..world.counters.len() {
                world.step(Op::Sync { counter: c, answer_lost: false })?;
            }
        }
        let made: usize = world.counters.iter().map(|c| c.made.len()).sum();
        prop_assert_eq!(world.server.sales.len(), made);
        for c in &world.counters {
            if let Some((id, _, false)) = c.lease {
                prop_assert_eq!(world.server.leases[&id].sold, c.sold);
            }
        }
    }
}

/// The revocation path, step by step: a counter that sells on after its
/// lease was revoked is counted over capacity, sale by sale, and a void of
/// one of those sales lowers the figure; nothing is absorbed into what can
/// still be sold.
#[test]
fn late_sales_of_a_revoked_lease_are_flagged() {
    let mut world = World::new(40);
    let sync = |w: &mut World, counter| {
        w.step(Op::Sync {
            counter,
            answer_lost: false,
        })
        .expect("step")
    };
    sync(&mut world, 0);
    let granted = world.counters[0].unused();
    assert!(granted >= 3, "a first sync grants places ({granted})");
    world.step(Op::Sell { counter: 0, q: 2 }).expect("sell");
    sync(&mut world, 0);
    // The counter goes offline and sells on; meanwhile a supervisor revokes.
    world.step(Op::Sell { counter: 0, q: 1 }).expect("sell");
    world.step(Op::Sell { counter: 0, q: 1 }).expect("sell");
    world.step(Op::Revoke { counter: 0 }).expect("revoke");
    let lease = world.counters[0].lease.expect("lease").0;
    assert_eq!(world.server.leases[&lease].escrow(), 2);
    let free = world.server.ledger.available();
    sync(&mut world, 0);
    let s = &world.server;
    let flagged: Vec<u32> = s.sales.values().map(|x| x.over).collect();
    assert_eq!(flagged.iter().sum::<u32>(), 2, "{flagged:?}");
    assert_eq!(s.ledger.over_capacity, 2);
    // Over-capacity places are taken from what can still be sold.
    assert_eq!(s.ledger.available(), free - 2);
    assert!(
        world.counters[0].lease.expect("lease").2,
        "the counter learns"
    );
    // Voiding one of them (before the slot starts) lowers the figure.
    world
        .step(Op::Void {
            counter: 0,
            pick: 2,
        })
        .expect("void");
    sync(&mut world, 0);
    assert_eq!(world.server.ledger.over_capacity, 1);
    // A replay of the last body changes nothing.
    world.step(Op::Replay { counter: 0 }).expect("replay");
}
