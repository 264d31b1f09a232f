//! Entry gates: online they redeem at the server, offline they decide alone
//! from signed codes, and every refusal says why.

mod common;

use common::*;
use tessera_core::admission::DenyReason;
use tessera_core::api::gate::RedeemResult;
use tessera_core::ticket_code::{TicketClaims, TicketSigner};
use tessera_server::testkit::{slot, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_and_online_tickets_get_in_once_online_and_offline() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let now_slot = slot(server.day, "11:00");
    let c = counter(&server, "Counter 1").await;
    let north = gate(&server, "North gate").await;
    let south = gate(&server, "South gate").await;

    let counter_ticket =
        c.t.sell(card_sale(now_slot, &[("adult", 1)]))
            .await
            .unwrap()
            .sale
            .tickets[0]
            .code
            .clone();
    let online_ticket = buy_online(&server, "o1", now_slot, 1).await.remove(0);
    c.t.sync_now().await.unwrap();

    // Online: admitted at North, refused at South naming North.
    for code in [&counter_ticket, &online_ticket] {
        let first = north.t.scan(code).await.unwrap();
        assert_eq!(first.result, RedeemResult::Admitted, "{first:?}");
        assert!(!first.offline);
        assert_eq!(first.admits, Some(1));
        assert_eq!(first.product_name.as_deref(), Some("Adult"));
        let second = south.t.scan(code).await.unwrap();
        assert_eq!(second.result, RedeemResult::Denied);
        assert_eq!(second.reason, Some(DenyReason::AlreadyUsed));
        assert_eq!(second.first_used_by.as_deref(), Some("North gate"));
        assert_eq!(second.first_used_at, first.first_used_at);
        assert!(second.message.contains("North gate"), "{}", second.message);
    }
    assert_eq!(
        north.t.scan(&counter_ticket).await.unwrap().reason,
        Some(DenyReason::AlreadyUsed)
    );

    // Offline: a ticket sold offline at the counter and one bought online
    // earlier both get in, once, and the gate says it decided alone.
    let online_2 = buy_online(&server, "o2", now_slot, 1).await.remove(0);
    server.kill();
    let offline_sale =
        c.t.sell(card_sale(now_slot, &[("adult", 1)]))
            .await
            .unwrap()
            .sale
            .tickets[0]
            .code
            .clone();
    for code in [&offline_sale, &online_2] {
        let first = north.t.scan(code).await.unwrap();
        assert_eq!(first.result, RedeemResult::Admitted, "{first:?}");
        assert!(first.offline, "{first:?}");
        assert!(first.message.contains("offline"));
        let again = north.t.scan(code).await.unwrap();
        assert_eq!(again.reason, Some(DenyReason::AlreadyUsed));
        assert!(again.first_used_at.is_some());
    }
    assert_eq!(north.t.scan(&online_2).await.unwrap().admitted_today, 4);
    assert_eq!(north.t.status().unwrap().pending_scans, 2);

    // Back online: the offline admissions upload; South now refuses them.
    server.restart();
    north.t.sync_now().await.unwrap();
    assert_eq!(north.t.status().unwrap().pending_scans, 0);
    south.t.sync_now().await.unwrap();
    let late = south.t.scan(&online_2).await.unwrap();
    assert_eq!(late.reason, Some(DenyReason::AlreadyUsed), "{late:?}");
    assert_eq!(late.first_used_by.as_deref(), Some("North gate"));
    assert_eq!(
        server_count(&server, "SELECT COUNT(*) FROM gate_conflicts"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_offline_gates_admitting_one_ticket_are_reported_as_a_conflict() {
    let mut server = ServerProcess::start_at("11:05", &[]);
    let north = gate(&server, "North gate").await;
    let south = gate(&server, "South gate").await;
    let code = buy_online(&server, "fam", slot(server.day, "11:00"), 1)
        .await
        .remove(0);
    server.kill();
    let a = north.t.scan(&code).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let b = south.t.scan(&code).await.unwrap();
    assert_eq!(
        (a.result, b.result),
        (RedeemResult::Admitted, RedeemResult::Admitted),
        "offline, neither can know"
    );
    server.restart();
    north.t.sync_now().await.unwrap();
    south.t.sync_now().await.unwrap();
    // Replaying the uploads changes nothing.
    north.t.sync_now().await.unwrap();

    assert_eq!(
        server.query("SELECT first_gate, second_gate FROM gate_conflicts"),
        [["North gate", "South gate"]],
        "one conflict, the first gate first"
    );
    let out = server.admin(&["report", "--date", &server.day.to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("admitted by North gate") && text.contains("again by South gate"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_revoked_truncated_tomorrows_and_voided_tickets_are_refused() {
    let server = ServerProcess::start_at("11:05", &[]);
    let now_slot = slot(server.day, "11:00");
    let c = counter(&server, "Counter 1").await;
    let stolen = counter(&server, "Counter 2").await;
    let g = gate(&server, "Gate").await;

    // Signed by a key nobody certified.
    let forger = TicketSigner::from_seed(77, [5u8; 32]);
    let forged = forger
        .sign(&TicketClaims {
            key_id: 77,
            ticket_id: uuid::Uuid::now_v7(),
            slot: now_slot,
            window_minutes: 30,
            admits: 4,
            product_id: "family".into(),
        })
        .unwrap();
    assert_eq!(
        g.t.scan(&forged).await.unwrap().reason,
        Some(DenyReason::Invalid)
    );

    let good =
        c.t.sell(card_sale(now_slot, &[("adult", 1)]))
            .await
            .unwrap()
            .sale
            .tickets[0]
            .code
            .clone();
    assert_eq!(
        g.t.scan(&good[..good.len() - 10]).await.unwrap().reason,
        Some(DenyReason::Invalid)
    );

    let tomorrow = buy_online(
        &server,
        "t",
        slot(server.day.tomorrow().unwrap(), "11:00"),
        1,
    )
    .await
    .remove(0);
    let v = g.t.scan(&tomorrow).await.unwrap();
    assert_eq!(v.reason, Some(DenyReason::WrongDay));
    assert!(v.message.contains("another day"), "{}", v.message);

    // A counter reported stolen: its tickets are refused once gates sync.
    let from_stolen = stolen
        .t
        .sell(card_sale(now_slot, &[("adult", 1)]))
        .await
        .unwrap()
        .sale
        .tickets[0]
        .code
        .clone();
    let out = server.admin(&["revoke-device", "--device", "Counter 2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    g.t.sync_now().await.unwrap();
    assert_eq!(
        g.t.scan(&from_stolen).await.unwrap().reason,
        Some(DenyReason::RevokedKey)
    );

    // A voided sale's tickets are refused after sync, offline too.
    let sold =
        c.t.sell(card_sale(now_slot, &[("adult", 2)]))
            .await
            .unwrap()
            .sale;
    c.t.void(sold.sale_id, "9999", "customer changed their mind")
        .await
        .unwrap();
    c.t.sync_now().await.unwrap();
    g.t.sync_now().await.unwrap();
    for t in &sold.tickets {
        let v = g.t.scan(&t.code).await.unwrap();
        assert_eq!(v.reason, Some(DenyReason::Voided), "{v:?}");
    }
    // The one good ticket still gets in.
    assert_eq!(
        g.t.scan(&good).await.unwrap().result,
        RedeemResult::Admitted
    );
}
