//! Tickets reach the visitor: the PDF's QR codes scan back (with a real
//! rasteriser and decoder, `pdftoppm` and `zbarimg`) to codes that a real
//! gate admits; the mailer sends through a real SMTP server on loopback
//! (Debian's aiosmtpd), in the booking's language, with the QR codes inline
//! and the PDF and calendar entry attached; a bad row never blocks a good
//! one, and a mail that meets a dead SMTP server goes out once it is back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_core::api::shop::{Booking, BookingTicket, Language, Offer, OfferState, TicketState};
use tessera_core::clock::Clock;
use tessera_core::money::{Currency, Money};
use tessera_core::slot::SlotId;
use tessera_core::ticket_code::{KeyRing, TicketClaims, TicketSigner};
use tessera_server::config::MailSettings;
use tessera_server::delivery::email::MailPayload;
use tessera_server::delivery::mailer::{Mailer, Round};
use tessera_server::delivery::pdf::tickets_pdf;
use tessera_server::sqlite::outbox::enqueue;
use tessera_server::sqlite::{SqliteStore, StoreConfig};
use tessera_server::testkit::{
    self, demo_fixture, free_port, paris, scan_pdf, slot, ServerProcess, SmtpSink,
    UNLIMITED_CLIENTS_TOML,
};
use uuid::Uuid;

fn eur(amount: i64) -> Money {
    Money::new(amount, Currency::new("EUR").unwrap())
}

fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    seed
}

/// Signs one ticket code for `slot` with `signer`.
fn sign(signer: &TicketSigner, slot: SlotId, product: &str, admits: u8) -> (Uuid, String) {
    let ticket_id = Uuid::now_v7();
    let code = signer
        .sign(&TicketClaims {
            key_id: signer.key_id,
            ticket_id,
            slot,
            window_minutes: 30,
            admits,
            product_id: product.into(),
        })
        .unwrap();
    (ticket_id, code)
}

fn ticket(
    id: Uuid,
    code: String,
    product: &str,
    name: &str,
    admits: u8,
    price: i64,
    state: TicketState,
) -> BookingTicket {
    BookingTicket {
        ticket_id: id,
        product_id: product.into(),
        product_name: name.into(),
        admits,
        price: eur(price),
        code,
        state,
    }
}

/// A booking of the demo museum for `slot`, as "my booking" returns it.
fn booking(language: Language, slot: SlotId, tickets: Vec<BookingTicket>) -> Booking {
    let starts_at = slot
        .date
        .to_datetime(
            jiff::civil::Time::new(
                (slot.start_minute / 60) as i8,
                (slot.start_minute % 60) as i8,
                0,
                0,
            )
            .unwrap(),
        )
        .to_zoned(paris())
        .unwrap()
        .timestamp();
    let ends_at = starts_at + jiff::SignedDuration::from_mins(30);
    let total = tickets.iter().map(|t| t.price.amount).sum();
    Booking {
        order_id: Uuid::now_v7(),
        reference: "TSR-7K4Q".into(),
        museum: "Musée des Tessères".into(),
        time_zone: "Europe/Paris".into(),
        language,
        name: "Zoé <b>Lefèvre</b> & Cie".into(),
        email: "zoe@example.org".into(),
        channel: "web".into(),
        slot_id: slot,
        starts_at,
        ends_at,
        total: eur(total),
        refunded: eur(0),
        created_at: Timestamp::now(),
        cancellable_until: starts_at - jiff::SignedDuration::from_hours(24),
        tickets,
    }
}

fn pdf_text(pdf: &Path) -> String {
    let out = Command::new("pdftotext")
        .args(["-enc", "UTF-8"])
        .arg(pdf)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_qr_in_the_pdf_scans_to_a_code_the_gate_admits() {
    let server = ServerProcess::start_at("11:05", &[]);
    let api = server.api();
    let gate_token = server.enrol_gate("North entrance").await;

    // The server's own key signs, as it does for online orders: what the
    // PDF carries must be exactly what the gates accept.
    let key = server.query_row(
        "SELECT key_id, secret_seed FROM signing_keys WHERE owner = 'server' AND secret_seed IS NOT NULL",
    );
    let seed = data_encoding::HEXLOWER
        .decode(key[1].trim_start_matches("\\x").as_bytes())
        .unwrap();
    let signer = TicketSigner::from_seed(key[0].parse().unwrap(), seed.try_into().unwrap());
    let s = slot(server.day, "11:00");
    let (a1, c1) = sign(&signer, s, "adult", 1);
    let (a2, c2) = sign(&signer, s, "adult", 1);
    let (ch, c3) = sign(&signer, s, "child", 1);
    let (x, cancelled_code) = sign(&signer, s, "reduced", 1);
    let b = booking(
        Language::Fr,
        s,
        vec![
            ticket(
                a1,
                c1.clone(),
                "adult",
                "Adulte",
                1,
                1500,
                TicketState::Valid,
            ),
            ticket(
                x,
                cancelled_code.clone(),
                "reduced",
                "Tarif réduit",
                1,
                1000,
                TicketState::Cancelled,
            ),
            ticket(
                a2,
                c2.clone(),
                "adult",
                "Adulte",
                1,
                1500,
                TicketState::Valid,
            ),
            ticket(
                ch,
                c3.clone(),
                "child",
                "Enfant (moins de 18 ans)",
                1,
                0,
                TicketState::Valid,
            ),
        ],
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tickets.pdf");
    std::fs::write(&path, tickets_pdf(&b).unwrap()).unwrap();

    let pages = scan_pdf(&path);
    // One page per ticket not cancelled, each with exactly its one code.
    assert_eq!(pages.len(), 3, "{pages:?}");
    for (page, expected) in pages.iter().zip([&c1, &c2, &c3]) {
        assert_eq!(page, &vec![expected.clone()]);
    }
    let ring = api.keyring().await;
    for page in &pages {
        ring.verify(&page[0]).expect("decoded code verifies");
    }

    // French wording, accents and the euro sign survive into the PDF
    // (pdftotext gives no-break spaces back as spaces).
    let text = pdf_text(&path).replace('\u{a0}', " ");
    for expected in [
        "Musée des Tessères",
        "Entrée entre 11:00 et 11:30",
        "15,00 €",
        "Réservation : TSR-7K4Q",
        "Billet 1 sur 3",
        "Enfant (moins de 18 ans)",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} not in PDF text:\n{text}"
        );
    }
    assert!(
        !text.contains("Tarif réduit"),
        "the cancelled ticket is left out"
    );

    // Each decoded code admits once at a real gate.
    for page in &pages {
        let (status, body) = api.redeem(&gate_token, &page[0]).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["result"], "admitted", "{body}");
    }
}

#[test]
fn a_booking_with_no_valid_ticket_still_makes_a_readable_pdf() {
    let signer = TicketSigner::from_seed(7, random_seed());
    let s: SlotId = "2026-12-12T10:00".parse().unwrap();
    let (id, code) = sign(&signer, s, "adult", 1);
    let b = booking(
        Language::En,
        s,
        vec![ticket(
            id,
            code,
            "adult",
            "Adult",
            1,
            1500,
            TicketState::Cancelled,
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pdf");
    std::fs::write(&path, tickets_pdf(&b).unwrap()).unwrap();
    assert_eq!(scan_pdf(&path), vec![Vec::<String>::new()]);
    assert!(pdf_text(&path).contains("no valid ticket"));
}

fn mail_settings(port: u16) -> MailSettings {
    MailSettings {
        smtp_host: Some("127.0.0.1".into()),
        smtp_port: port,
        smtp_security: "none".into(),
        from: "Musée des Tessères <billetterie@example.org>".into(),
        ..MailSettings::default()
    }
}

/// A store over a fresh demo database, and the path of that database.
fn open_store(dir: &Path) -> (Arc<SqliteStore>, PathBuf) {
    let db = dir.join("server.db");
    let now = Timestamp::now();
    tessera_server::sqlite::admin::init(&db, &demo_fixture(), now.to_zoned(paris()).date(), 3, now)
        .unwrap();
    let store = SqliteStore::open(&db, StoreConfig::default(), Clock::system()).unwrap();
    (Arc::new(store), db)
}

fn queue(
    db: &Path,
    kind: &str,
    recipient: &str,
    language: &str,
    payload: &str,
    now_ms: i64,
) -> String {
    let mut conn = tessera_server::sqlite::schema::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    let id = enqueue(&tx, kind, recipient, language, payload, None, now_ms).unwrap();
    tx.commit().unwrap();
    id
}

/// [`queue`] on a test server's store, whichever backend it is: the row
/// `enqueue` writes, with SQL both backends take.
fn queue_on(
    server: &ServerProcess,
    kind: &str,
    recipient: &str,
    language: &str,
    payload: &str,
    now_ms: i64,
) -> String {
    let id = Uuid::now_v7().to_string();
    let text = |s: &str| s.replace('\'', "''");
    server.execute(&format!(
        "INSERT INTO mail_outbox (mail_id, kind, recipient, language, payload, order_id,
                                  created_at, attempts, next_attempt_at)
         VALUES ('{id}', '{}', '{}', '{}', '{}', NULL, {now_ms}, 0, {now_ms})",
        text(kind),
        text(recipient),
        text(language),
        text(payload)
    ));
    id
}

struct Row {
    sent: bool,
    payload: String,
    attempts: i64,
    next_attempt_at: i64,
    last_error: Option<String>,
}

fn row(db: &Path, id: &str) -> Row {
    let conn = tessera_server::sqlite::schema::open(db).unwrap();
    conn.query_row(
        "SELECT sent_at IS NOT NULL, payload, attempts, next_attempt_at, last_error FROM mail_outbox WHERE mail_id = ?1",
        [id],
        |r| {
            Ok(Row {
                sent: r.get(0)?,
                payload: r.get(1)?,
                attempts: r.get(2)?,
                next_attempt_at: r.get(3)?,
                last_error: r.get(4)?,
            })
        },
    )
    .unwrap()
}

fn confirmed_payload(b: &Booking, link: &str) -> String {
    serde_json::to_string(&MailPayload {
        booking: Some(b.clone()),
        offer: None,
        refund: None,
        link: link.into(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_visitor_gets_their_tickets_by_email_and_bad_rows_block_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = open_store(dir.path());
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let port = free_port();
    let sink = SmtpSink::start(port, &inbox);
    let mailer = Mailer::new(store.clone(), &mail_settings(port))
        .unwrap()
        .unwrap();

    let signer = TicketSigner::from_seed(3, random_seed());
    let mut ring = KeyRing::new();
    ring.insert(3, signer.public_key(), false).unwrap();
    let s: SlotId = "2026-12-12T14:30".parse().unwrap();
    let (a, ca) = sign(&signer, s, "adult", 1);
    let (f, cf) = sign(&signer, s, "family", 4);
    let (x, cx) = sign(&signer, s, "child", 1);
    let b = booking(
        Language::Fr,
        s,
        vec![
            ticket(
                a,
                ca.clone(),
                "adult",
                "Adulte",
                1,
                1500,
                TicketState::Valid,
            ),
            ticket(
                f,
                cf.clone(),
                "family",
                "Famille",
                4,
                4000,
                TicketState::Valid,
            ),
            ticket(x, cx, "child", "Enfant", 1, 0, TicketState::Cancelled),
        ],
    );
    let link = "http://shop.example/booking/SECRETTOKEN";
    let now = Clock::system().now_ms();

    // Oldest first: two rows that can never be sent come before the good ones.
    let garbage = queue(
        &db,
        "booking_confirmed",
        "zoe@example.org",
        "fr",
        "{not json",
        now - 3,
    );
    let bad_address = queue(
        &db,
        "booking_confirmed",
        "not an address",
        "fr",
        &confirmed_payload(&b, link),
        now - 2,
    );
    let good = queue(
        &db,
        "booking_confirmed",
        "zoe@example.org",
        "fr",
        &confirmed_payload(&b, link),
        now - 1,
    );
    let offer = Offer {
        slot_id: s,
        party: 3,
        expires_at: "2026-12-11T10:15:00Z".parse().unwrap(),
        state: OfferState::Open,
        language: Language::En,
        email: "sam@example.org".into(),
    };
    let offer_payload = serde_json::to_string(&MailPayload {
        booking: None,
        offer: Some(offer),
        refund: None,
        link: "http://shop.example/offer/OFFERSECRET".into(),
    })
    .unwrap();
    let offered = queue(
        &db,
        "waitlist_offer",
        "sam@example.org",
        "en",
        &offer_payload,
        now,
    );

    let round = mailer.run_once(now).await.unwrap();
    assert_eq!(
        round,
        Round {
            sent: 2,
            retrying: 0,
            given_up: 2
        }
    );
    for id in [&garbage, &bad_address] {
        let r = row(&db, id);
        assert!(!r.sent && r.last_error.is_some() && r.payload.is_empty());
        assert_eq!(r.next_attempt_at, i64::MAX, "given up, never due again");
    }
    for id in [&good, &offered] {
        let r = row(&db, id);
        assert!(r.sent, "sent");
        assert!(
            r.payload.is_empty(),
            "the secret link is not kept once sent"
        );
    }

    // The confirmation, as the visitor's mail client sees it.
    let m = sink.message(1, Duration::from_secs(10));
    assert_eq!(
        m["subject"],
        "Vos billets pour Musée des Tessères — samedi 12 décembre 2026 à 14:30"
    );
    assert_eq!(m["rcpt_tos"], json!(["zoe@example.org"]));
    let text = m["text"].as_str().unwrap();
    assert!(text.contains("Bonjour Zoé <b>Lefèvre</b> & Cie,"), "{text}");
    assert!(text.contains(link));
    assert!(text.contains("Total\u{a0}: 55,00\u{a0}€"), "{text}");
    let html = m["html"].as_str().unwrap();
    assert!(
        html.contains("Zoé &lt;b&gt;Lefèvre&lt;/b&gt; &amp; Cie"),
        "user text is escaped"
    );
    assert!(!html.contains("<b>Lefèvre"));
    assert!(html.contains(&format!("href=\"{link}\"")));
    let parts = m["parts"].as_array().unwrap();
    let of_type = |t: &str| -> Vec<&Value> { parts.iter().filter(|p| p["type"] == t).collect() };
    // One inline QR per valid ticket, each referenced from the HTML.
    let images = of_type("image/png");
    assert_eq!(images.len(), 2);
    for image in &images {
        assert_eq!(image["disposition"], "inline");
        let cid = image["content_id"]
            .as_str()
            .unwrap()
            .trim_matches(['<', '>']);
        assert!(html.contains(&format!("cid:{cid}")), "{cid} not referenced");
        assert_eq!(image["head"], "\u{89}PNG\r\n\u{1a}\n");
    }
    let pdf = of_type("application/pdf");
    assert_eq!(pdf.len(), 1);
    assert_eq!(pdf[0]["disposition"], "attachment");
    assert!(pdf[0]["head"].as_str().unwrap().starts_with("%PDF"));
    // The attached PDF scans back to the valid codes, and they verify.
    let pages = scan_pdf(Path::new(pdf[0]["saved"].as_str().unwrap()));
    assert_eq!(pages, vec![vec![ca.clone()], vec![cf.clone()]]);
    for code in [&ca, &cf] {
        ring.verify(code).unwrap();
    }
    let ics = of_type("text/calendar");
    assert_eq!(ics.len(), 1);
    let ics_text = ics[0]["text"].as_str().unwrap();
    assert!(ics_text.contains("BEGIN:VEVENT\r\n"));
    assert!(
        ics_text.contains("DTSTART:20261212T133000Z\r\n"),
        "{ics_text}"
    );
    assert!(ics_text.contains(&format!("UID:{}@tessera", b.order_id)));
    assert!(ics_text.replace("\r\n ", "").contains(link));

    // The waiting-list offer, in English.
    let m = sink.message(2, Duration::from_secs(10));
    assert_eq!(
        m["subject"],
        "Places for you — Musée des Tessères, Saturday 12 December 2026 at 14:30"
    );
    let text = m["text"].as_str().unwrap();
    assert!(text.contains("http://shop.example/offer/OFFERSECRET"));
    assert!(
        text.contains("held for you until 11:15 (Friday 11 December 2026)"),
        "{text}"
    );
    assert_eq!(sink.count(), 2, "nothing else was sent");

    // Sent mails are not sent again.
    assert_eq!(
        mailer.run_once(now + 10 * 3_600_000).await.unwrap(),
        Round::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_that_meets_a_dead_smtp_server_goes_out_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = open_store(dir.path());
    let port = free_port(); // nothing listens there yet
    let mailer = Mailer::new(store.clone(), &mail_settings(port))
        .unwrap()
        .unwrap();
    let signer = TicketSigner::from_seed(3, random_seed());
    let s: SlotId = "2026-12-12T10:00".parse().unwrap();
    let (a, ca) = sign(&signer, s, "adult", 1);
    let b = booking(
        Language::En,
        s,
        vec![ticket(a, ca, "adult", "Adult", 1, 1500, TicketState::Valid)],
    );
    let now = Clock::system().now_ms();
    let id = queue(
        &db,
        "resend",
        "zoe@example.org",
        "en",
        &confirmed_payload(&b, "http://x/booking/T"),
        now,
    );

    assert_eq!(
        mailer.run_once(now).await.unwrap(),
        Round {
            sent: 0,
            retrying: 1,
            given_up: 0
        }
    );
    let r = row(&db, &id);
    assert!(!r.sent);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.next_attempt_at, now + 30_000, "first retry after 30 s");
    assert!(r.last_error.is_some());
    assert!(!r.payload.is_empty(), "kept for the retry");
    // Not due before its time.
    assert_eq!(
        mailer.run_once(now + 29_000).await.unwrap(),
        Round::default()
    );

    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let sink = SmtpSink::start(port, &inbox);
    assert_eq!(
        mailer.run_once(now + 30_000).await.unwrap(),
        Round {
            sent: 1,
            retrying: 0,
            given_up: 0
        }
    );
    let m = sink.message(1, Duration::from_secs(10));
    assert_eq!(
        m["subject"],
        "Your tickets for Musée des Tessères — Saturday 12 December 2026 at 10:00"
    );
    assert!(row(&db, &id).sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_process_runs_the_mailer() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let port = free_port();
    let sink = SmtpSink::start(port, &inbox);
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "{UNLIMITED_CLIENTS_TOML}\n[mail]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_security = \"none\"\nfrom = \"billetterie@example.org\"\n"
        ),
    )
    .unwrap();
    let server = ServerProcess::start_at("11:05", &["--config", config.to_str().unwrap()]);
    let signer = TicketSigner::from_seed(3, random_seed());
    let s = slot(server.day, "11:00");
    let (a, ca) = sign(&signer, s, "adult", 1);
    let b = booking(
        Language::Fr,
        s,
        vec![ticket(
            a,
            ca,
            "adult",
            "Adulte",
            1,
            1500,
            TicketState::Valid,
        )],
    );
    // As the confirming transaction does: a row in the outbox, nothing else.
    queue_on(
        &server,
        "booking_confirmed",
        "zoe@example.org",
        "fr",
        &confirmed_payload(&b, &format!("{}/booking/T", server.url)),
        Clock::with_offset_secs(server.offset_secs).now_ms(),
    );
    let m = sink.message(1, Duration::from_secs(30));
    assert!(
        m["subject"]
            .as_str()
            .unwrap()
            .starts_with("Vos billets pour Musée des Tessères"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_smtp_host_mails_stay_queued_and_the_log_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _db) = open_store(dir.path());
    assert!(Mailer::new(store.clone(), &MailSettings::default())
        .unwrap()
        .is_none());

    // The server binary, with no [mail] host: it says so once, at start,
    // and leaves the outbox alone.
    let server = ServerProcess::start_at("11:05", &[]);
    let now = Clock::with_offset_secs(server.offset_secs).now_ms();
    let id = queue_on(&server, "resend", "zoe@example.org", "en", "{}", now);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("no SMTP host configured") {
        assert!(Instant::now() < deadline, "log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.log().matches("no SMTP host configured").count(), 1);
    assert_eq!(
        server.query_row(&format!(
            "SELECT CASE WHEN sent_at IS NULL THEN 0 ELSE 1 END, attempts, last_error
             FROM mail_outbox WHERE mail_id = '{id}'"
        )),
        ["0", "0", testkit::NULL],
        "unsent, never tried"
    );
}
