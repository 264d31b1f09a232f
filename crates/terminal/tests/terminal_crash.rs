//! A counter process that dies right after a sale's commit, before anything
//! is uploaded or printed: the sale is on disk and uploads after restart.

mod common;

use std::process::Command;

use common::server_count;
use tessera_core::clock::OFFSET_ENV;
use tessera_server::testkit::{slot, ServerProcess};

fn cli(
    server: &ServerProcess,
    dir: &std::path::Path,
    args: &[&str],
    failpoint: Option<&str>,
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera-terminal"));
    cmd.arg("--data")
        .arg(dir)
        .args(args)
        .env(OFFSET_ENV, server.offset_secs.to_string());
    if let Some(f) = failpoint {
        cmd.env("TESSERA_FAILPOINT", f);
    }
    cmd.output().expect("run tessera-terminal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_committed_before_a_crash_uploads_after_restart() {
    let server = ServerProcess::start_at("11:05", &[]);
    let dir = tempfile::tempdir().unwrap();
    let code = server.enrolment_code("counter", "Counter 7");
    let out = cli(
        &server,
        dir.path(),
        &[
            "enrol",
            "--server",
            &server.url,
            "--code",
            &code,
            "--name",
            "Counter 7",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        &server,
        dir.path(),
        &["shift", "open", "--float", "10000", "--pin", "2222"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let s = slot(server.day, "13:30").to_string();
    let sell = [
        "sell",
        "--slot",
        s.as_str(),
        "--item",
        "adult=2",
        "--item",
        "child=1",
        "--pay",
        "cash:5000",
    ];
    let out = cli(&server, dir.path(), &sell, Some("abort-after-sale-commit"));
    assert!(!out.status.success(), "the process died");
    assert!(String::from_utf8_lossy(&out.stderr).contains("aborting"));
    assert_eq!(
        server_count(&server, "SELECT COUNT(*) FROM sales"),
        0,
        "nothing reached the server"
    );

    // Restarted, the counter finds its sale and uploads it, once.
    let out = cli(&server, dir.path(), &["--json", "status"], None);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["status"]["pending_sales"], 1);
    let out = cli(&server, dir.path(), &["sync"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&server, dir.path(), &["sync"], None);
    assert!(out.status.success());
    assert_eq!(server_count(&server, "SELECT COUNT(*) FROM sales"), 1);
    assert_eq!(
        server_count(&server, "SELECT SUM(admissions) FROM sales"),
        3
    );
    assert_eq!(
        server_count(
            &server,
            "SELECT COUNT(*) FROM tickets WHERE channel = 'counter'"
        ),
        3
    );
    assert_eq!(server_count(&server, "SELECT change FROM sales"), 2000);
}
