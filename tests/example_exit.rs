//! The `customer_refund` example's exit status tells a script how the run ended: 0 for a run
//! that succeeded or waits for an event, a distinct non-zero code for each outcome that needs
//! someone (needs_reconciliation 4), 1 for an error, 2 for a usage mistake.
//!
//! The `needs_reconciliation` run is made the way it happens: the process is killed while the
//! (not idempotent) rejection mail is in flight, and the same command without `--ledger` (so
//! the example is not the operator) continues the run, which must pause for an operator.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nanovm::store::{JournalStore as _, SqliteStore};
use nanovm::trace::Event;

use common::example;

fn scratch(test: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("example-exit")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(bin: &Path, args: &[&str]) -> Output {
    let out = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the example runs");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn said(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// True once the store holds the rejection mail's intent for run `r1`.
fn mail_in_flight(db: &Path) -> bool {
    if !db.exists() {
        return false;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let Ok(store) = SqliteStore::open(db).await else {
                return false;
            };
            match store.load("r1").await {
                Ok(Some(entries)) => entries
                    .iter()
                    .any(|e| matches!(&e.event, Event::ToolIntent { tool, .. } if tool.as_ref() == "send_rejection")),
                _ => false,
            }
        })
}

#[test]
fn success_and_a_waiting_run_exit_0() {
    let bin = example();
    let out = run(&bin, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("status:  success"));
    // The README's `--answer no` (the rejection path) ends in success too.
    let out = run(&bin, &["--answer", "no"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    // The README's `--answer maybe`: an invalid answer goes to manual review, which waits.
    let out = run(&bin, &["--answer", "maybe"]);
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("status:  suspended"));
    // A usage mistake.
    assert_eq!(run(&bin, &["--bogus"]).status.code(), Some(2));
}

#[test]
fn needs_reconciliation_exits_4() {
    let bin = example();
    let dir = scratch("needs_reconciliation");
    let db = dir.join("x.db");
    let db_arg = db.to_str().unwrap();
    let common = [
        "--db",
        db_arg,
        "--run-id",
        "r1",
        "--answer",
        "no",
        "--lease-ms",
        "200",
    ];
    let mut first = Command::new(&bin)
        .args(common)
        .args(["--tool-delay-ms", "60000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the example starts");
    let started = Instant::now();
    while !mail_in_flight(&db) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the rejection mail never started"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the example ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().expect("SIGKILL");
    first.wait().unwrap();

    let out = run(&bin, &common);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("status:  needs_reconciliation"),
        "{}",
        said(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "a script must tell a run that needs an operator from a success\n{}",
        said(&out)
    );
}
