//! A visitor's tickets by their "my booking" link, end to end on a real
//! server: book and pay (demo provider), receive the confirmation by SMTP,
//! download the PDF and the calendar entry, scan every page's QR and get in
//! at a real gate with it. A tampered link gets nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tessera_server::testkit::{
    free_port, scan_pdf, slot, ServerProcess, SmtpSink, UNLIMITED_CLIENTS_TOML,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_booking_downloads_as_pdf_and_ics_and_arrives_by_email() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let smtp_port = free_port();
    let sink = SmtpSink::start(smtp_port, &inbox);
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "{UNLIMITED_CLIENTS_TOML}\n[mail]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\nsmtp_security = \"none\"\nfrom = \"Musée des Tessères <billetterie@example.org>\"\n"
        ),
    )
    .unwrap();
    let server = ServerProcess::start_at("11:05", &["--config", config.to_str().unwrap()]);
    let api = server.api();
    let gate_token = server.enrol_gate("North entrance").await;

    // Book 2 adults and a child for 11:00 and pay with the demo provider.
    let (status, hold) = api
        .hold(
            "h1",
            slot(server.day, "11:00"),
            json!([{"product_id": "adult", "quantity": 2}, {"product_id": "child", "quantity": 1}]),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let hold_id = hold["hold_id"].as_str().unwrap();
    let body = json!({"name": "Zoé Lefèvre", "email": "zoe@example.org", "language": "fr", "accept_terms": true});
    let (status, checkout) = api
        .post_raw(
            &format!("/v1/holds/{hold_id}/checkout"),
            &[("idempotency-key", "c1")],
            &body.to_string(),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{checkout}");
    let redirect = checkout["redirect_url"].as_str().unwrap();
    let checkout_id = checkout["checkout_id"].as_str().unwrap();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let paid = no_redirects
        .post(redirect)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("outcome=paid")
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), StatusCode::SEE_OTHER);
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let (_, status) = api
            .get(&format!("/v1/checkouts/{checkout_id}"))
            .await
            .unwrap();
        if status["state"] == "confirmed" {
            break status["booking_token"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "not confirmed: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, booking) = api.get(&format!("/v1/bookings/{token}")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{booking}");
    let codes: Vec<String> = booking["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 3);

    // The PDF: one page per ticket, each QR scans to its ticket's code,
    // and each admits at the gate.
    let pdf = api
        .http
        .get(format!("{}/v1/bookings/{token}/tickets.pdf", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(pdf.status(), StatusCode::OK);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    assert!(pdf.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-store"));
    let path = dir.path().join("tickets.pdf");
    std::fs::write(&path, pdf.bytes().await.unwrap()).unwrap();
    let pages = scan_pdf(&path);
    assert_eq!(
        pages,
        codes.iter().map(|c| vec![c.clone()]).collect::<Vec<_>>()
    );
    for page in &pages {
        let (status, body) = api.redeem(&gate_token, &page[0]).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"], "admitted", "{body}");
    }

    // The calendar entry.
    let ics = api
        .http
        .get(format!("{}/v1/bookings/{token}/booking.ics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ics.status(), StatusCode::OK);
    assert!(ics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/calendar"));
    let ics = ics.text().await.unwrap();
    assert!(ics.contains(&format!(
        "UID:{}@tessera\r\n",
        booking["order_id"].as_str().unwrap()
    )));
    assert!(ics
        .replace("\r\n ", "")
        .contains(&format!("/booking/{token}")));

    // A tampered link gets nothing, in the API's error shape.
    let mut tampered: Vec<char> = token.chars().collect();
    tampered[3] = if tampered[3] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    for file in ["tickets.pdf", "booking.ics"] {
        let (status, body) = api
            .get(&format!("/v1/bookings/{tampered}/{file}"))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["error"]["code"], "unknown_booking");
    }

    // The confirmation email, in French, with the link and the tickets.
    let m = sink.message(1, Duration::from_secs(30));
    assert!(
        m["subject"]
            .as_str()
            .unwrap()
            .starts_with("Vos billets pour Musée des Tessères"),
        "{m}"
    );
    assert_eq!(m["rcpt_tos"], json!(["zoe@example.org"]));
    let text = m["text"].as_str().unwrap();
    assert!(text.contains(&format!("/booking/{token}")));
    // The products in French too, as the museum's catalogue names them.
    assert!(text.contains("Adulte"), "{text}");
    assert!(text.contains("Enfant de moins de 18 ans"), "{text}");
    let parts = m["parts"].as_array().unwrap();
    assert_eq!(parts.iter().filter(|p| p["type"] == "image/png").count(), 3);
    let attached = parts
        .iter()
        .find(|p| p["type"] == "application/pdf")
        .expect("PDF attached");
    // Scanned when the tickets were still valid: the same codes.
    let emailed = scan_pdf(Path::new(attached["saved"].as_str().unwrap()));
    assert_eq!(emailed, pages);
}
