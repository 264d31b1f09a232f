//! A counter sale prints a receipt the printer really receives, its tickets
//! verify with the server's published keys and get in at the gate, and the
//! live tallies agree with the sales log.

mod common;

use std::io::Read;
use std::net::TcpListener;

use common::*;
use tessera_server::testkit::{slot, ServerProcess};
use tessera_terminal::printer::decode::decode;
use tessera_terminal::views::PrintOutcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_reaches_the_printer_and_its_tickets_get_in() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter 1").await;
    let printer = TcpListener::bind("127.0.0.1:0").unwrap();
    c.t.set_printer(&format!("network:{}", printer.local_addr().unwrap()))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = printer.accept().unwrap();
        let mut bytes = Vec::new();
        conn.read_to_end(&mut bytes).unwrap();
        bytes
    });

    let s = slot(server.day, "11:00");
    let done =
        c.t.sell(cash_sale(
            s,
            &[("adult", 2), ("child", 1), ("audio-guide", 1)],
            5000,
        ))
        .await
        .unwrap();
    assert!(
        matches!(done.printed, PrintOutcome::Printed),
        "{:?}",
        done.printed
    );
    assert_eq!(done.sale.total, 3500);
    assert_eq!(done.sale.change, Some(1500));

    let receipt = decode(&reader.join().unwrap()).expect("valid ESC/POS");
    let text = receipt.text.clone();
    for expected in [
        "Musée des Tessères",
        "12 rue des Mosaïstes",
        "Camille",
        "Adult",
        "30.00",
        "Child under 18",
        "Audio guide",
        "35.00",
        "VAT 5.5 %",
        "VAT 20 %",
        "Cash",
        "50.00",
        "15.00",
    ] {
        assert!(
            text.contains(expected),
            "receipt lacks {expected:?}:\n{text}"
        );
    }
    // VAT lines: 30.00 at 5.5 % is 1.56 tax; 5.00 at 20 % is 0.83.
    assert!(text.contains("1.56") && text.contains("0.83"), "{text}");
    assert_eq!(receipt.qr_payloads.len(), 4, "one QR per ticket");

    // Every QR verifies with the keys the server publishes.
    let ring = server.api().keyring().await;
    for qr in &receipt.qr_payloads {
        let claims = ring
            .verify(qr)
            .expect("counter ticket verifies with published keys");
        assert_eq!(claims.slot, s);
    }

    // Tallies equal the sales log after sync.
    c.t.sync_now().await.unwrap();
    let api = server.api();
    let day = api.availability(server.day).await;
    let sold = day["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["slot_id"] == s.to_string())
        .unwrap()["sold"]
        .as_i64()
        .unwrap();
    let logged = server_count(
        &server,
        &format!("SELECT COALESCE(SUM(admissions), 0) FROM sales WHERE slot_id = '{s}'"),
    );
    assert_eq!(sold, logged);
    assert_eq!(sold, 3);
    let shown =
        c.t.slots_today()
            .unwrap()
            .into_iter()
            .find(|x| x.slot_id == s)
            .unwrap();
    assert_eq!(shown.remaining, 120 - 3, "the counter's live view agrees");

    // A counter ticket gets in at the gate, once.
    let (_, gate) = api
        .enrol(&server.enrolment_code("gate", "Main gate"), "g", None)
        .await
        .unwrap();
    let token = gate["token"].as_str().unwrap();
    let code = &done.sale.tickets[0].code;
    let (_, first) = api.redeem(token, code).await.unwrap();
    assert_eq!(first["result"], "admitted", "{first}");
    let (_, second) = api.redeem(token, code).await.unwrap();
    assert_eq!(second["reason"], "already_used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_printer_leaves_the_sale_standing_and_reprint_works() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter 1").await;
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap();
    drop(gone);
    c.t.set_printer(&format!("network:{addr}")).unwrap();
    let s = slot(server.day, "12:00");
    let done = c.t.sell(card_sale(s, &[("family", 1)])).await.unwrap();
    assert!(
        matches!(done.printed, PrintOutcome::Failed { .. }),
        "{:?}",
        done.printed
    );
    assert_eq!(c.t.sales_today().unwrap().len(), 1, "the sale stands");

    let printer = TcpListener::bind(addr).unwrap();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = printer.accept().unwrap();
        let mut bytes = Vec::new();
        conn.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let again = c.t.reprint(done.sale.sale_id).await.unwrap();
    assert!(matches!(again, PrintOutcome::Printed));
    let receipt = decode(&reader.join().unwrap()).unwrap();
    assert!(receipt.text.contains("REPRINT"));
    assert!(receipt.text.contains("Family"));
}
