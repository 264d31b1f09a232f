//! The same sync body sent twice, concurrently, and out of order changes
//! nothing: every sale is stored once, the seq acknowledged is contiguous.

mod common;

use common::*;
use reqwest::StatusCode;
use tessera_server::testkit::{slot, ServerProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_reordered_sync_bodies_change_nothing() {
    let server = ServerProcess::start_at("11:05", &[]);
    let c = counter(&server, "Counter 1").await;
    let s = slot(server.day, "14:00");
    for i in 0..4 {
        c.t.sell(cash_sale(s, &[("adult", 1), ("child", 1)], 2000 + i))
            .await
            .unwrap();
    }
    let body = c.t.pending_sync_request().unwrap();
    assert_eq!(body.sales.len(), 4);
    let token = format!("Bearer {}", token_of(&c));
    let api = server.api();
    let post = |b: String| {
        let api = api.clone();
        let token = token.clone();
        async move {
            api.post_raw("/v1/sync", &[("authorization", &token)], &b)
                .await
                .unwrap()
        }
    };

    // Out of order: the last sale alone first. Stored, but the gap keeps the
    // acknowledged seq at 0.
    let mut tail = body.clone();
    tail.sales.retain(|x| x.terminal_seq == 4);
    let (status, reply) = post(serde_json::to_string(&tail).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["acked_seq"], 0);
    assert_eq!(reply["sales_stored"], 1);

    // Then the whole body: 1-3 are new, 4 is a duplicate; acked moves to 4.
    let full = serde_json::to_string(&body).unwrap();
    let (_, reply) = post(full.clone()).await;
    assert_eq!(reply["acked_seq"], 4);
    assert_eq!(reply["sales_stored"], 3);
    assert_eq!(reply["sales_duplicate"], 1);
    let books = server_books(&server);

    // Twice more in a row, then five at once: nothing changes.
    for _ in 0..2 {
        let (status, reply) = post(full.clone()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(reply["sales_duplicate"], 4);
    }
    let replies = futures_join(&post, &full, 5).await;
    assert!(replies
        .iter()
        .all(|(st, r)| *st == StatusCode::OK && r["acked_seq"] == 4));
    // The earliest body (only sale 4) replayed late changes nothing either.
    post(serde_json::to_string(&tail).unwrap()).await;
    assert_eq!(server_books(&server), books);
    assert_eq!(server_count(&server, "SELECT COUNT(*) FROM sales"), 4);
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM tickets WHERE channel = 'counter'"
        ),
        8
    );

    // The terminal's own next sync agrees.
    let summary = c.t.sync_now().await.unwrap();
    assert_eq!((summary.acked_seq, summary.pending_sales), (4, 0));
    assert_eq!(server_books(&server)[0..4], books[0..4]);
}

async fn futures_join<F, Fut>(
    post: &F,
    body: &str,
    n: usize,
) -> Vec<(StatusCode, serde_json::Value)>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = (StatusCode, serde_json::Value)> + Send + 'static,
{
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(post(body.to_string())))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}
