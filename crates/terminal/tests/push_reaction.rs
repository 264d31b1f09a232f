//! Counters and gates react to the server's device channel at once: with
//! their own sync ticks an hour apart, an online order still lowers a
//! counter's places, and a ticket voided at a counter is refused at a gate,
//! online and then offline, because the server told them.

mod common;

use std::time::Duration;

use common::*;
use tessera_core::admission::DenyReason;
use tessera_server::testkit::{slot, ServerProcess};
use tessera_terminal::views::EngineChange;
use tessera_terminal::Terminal;

/// Long enough that no tick happens during a test.
const NO_TICK: Duration = Duration::from_secs(3600);

/// Waits (up to a minute) for `check`, polling: the test waits for a state,
/// it does not time the push.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(std::time::Instant::now() < end, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts the device's loops with no ticks, and waits for its channel.
async fn live(t: &Terminal) -> tokio::task::JoinHandle<()> {
    t.set_sync_interval(NO_TICK);
    let handle = t.spawn_sync_loop();
    until("the push channel to connect", || t.push_live()).await;
    assert!(t.status().unwrap().live);
    handle
}

fn remaining(t: &Terminal, slot: tessera_core::slot::SlotId) -> u32 {
    t.slots_today()
        .unwrap()
        .into_iter()
        .find(|s| s.slot_id == slot)
        .map_or(0, |s| s.remaining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_order_reaches_the_counter_without_a_tick() {
    let server = ServerProcess::start_at("11:05", &[]);
    let at = slot(server.day, "14:00");
    let c = counter(&server, "Counter 1").await;
    let loops = live(&c.t).await;
    // The first (hello) sync settles before the figure is read.
    until("the counter to know the slot", || remaining(&c.t, at) > 0).await;
    let before = remaining(&c.t, at);
    let mut screen = c.t.changes();
    buy_online(&server, "web-1", at, 5).await;
    until("the order to show at the counter", || {
        remaining(&c.t, at) == before - 5
    })
    .await;
    // The screens were told, not left to poll.
    let mut told = false;
    while let Ok(change) = screen.try_recv() {
        told |= change == EngineChange::Slots;
    }
    assert!(told, "the engine told its screens the slots changed");
    loops.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_voided_at_a_counter_is_refused_at_a_gate_without_a_tick() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let now_slot = slot(server.day, "11:00");
    let c = counter(&server, "Counter 1").await;
    let g = gate(&server, "North gate").await;
    let counter_loops = live(&c.t).await;
    let gate_loops = live(&g.t).await;

    let sold =
        c.t.sell(card_sale(now_slot, &[("adult", 1)]))
            .await
            .unwrap()
            .sale;
    until("the sale to upload", || {
        c.t.status().unwrap().pending_sales == 0
    })
    .await;
    c.t.void(sold.sale_id, "9999", "visitor cannot come")
        .await
        .unwrap();
    // The void uploads at once (the counter's own wake), the server pushes
    // it to the gate, and the gate fetches it: a sync of the gate's that
    // only the push can have started, its tick being an hour away.
    let code = sold.tickets[0].code.clone();
    until("the gate to know of the void", || {
        g.t.check_locally(&code).unwrap() == Some(DenyReason::Voided)
    })
    .await;
    // Refused with the server up (by the gate itself: it need not ask)...
    let online = g.t.scan(&sold.tickets[0].code).await.unwrap();
    assert_eq!(online.reason, Some(DenyReason::Voided), "{online:?}");
    // ...and with the server gone.
    server.kill();
    let offline = g.t.scan(&sold.tickets[0].code).await.unwrap();
    assert_eq!(offline.reason, Some(DenyReason::Voided), "{offline:?}");
    counter_loops.abort();
    gate_loops.abort();
}
