//! Real process kills: the `customer_refund` example runs as a child process on a SQLite file
//! and is killed with SIGKILL at random points (seeded), then restarted with the very command
//! that started it until the run ends: a start of a run id the store holds continues it, and one
//! it does not hold (a kill before the first write) starts it. Some first launches are killed
//! the moment they start, before they can write anything. The mock bank's ledger (one fsynced line per real execution) must show at most one
//! execution per effect id, exactly one for the run's effect, and the stored and exported
//! traces must verify.
//!
//! The example binary is built by `cargo test` (examples are compiled with the tests); when this
//! test runs alone it builds it first.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nanovm::store::SqliteStore;
use nanovm::trace::{Event, Trace};

use common::{Rng, example};

/// What one killed-and-resumed run went through.
#[derive(Default, Debug)]
struct Stats {
    launches: usize,
    kills: usize,
    /// Kills after which the store held no run at all.
    before_first_write: usize,
    reconciled: usize,
}

/// Runs one workflow to its end through kills; returns its stats.
fn one_run(bin: &Path, dir: &Path, answer: &str, kill_at_once: bool, rng: &mut Rng) -> Stats {
    let db = dir.join("x.db");
    let ledger = dir.join("l.txt");
    let trace_out = dir.join("trace.jsonl");
    let mut stats = Stats::default();
    loop {
        assert!(stats.launches < 40, "the run did not end: {stats:?}");
        let mut cmd = Command::new(bin);
        cmd.arg("--db")
            .arg(&db)
            .args([
                "--run-id",
                "r1",
                "--tool-delay-ms",
                "30",
                "--answer",
                answer,
            ])
            // A killed process holds the run's lease this long (a run is owned by the process
            // executing it, from its first write); the restart waits it out.
            .args(["--lease-ms", "200"])
            .arg("--ledger")
            .arg(&ledger)
            .arg("--trace-out")
            .arg(&trace_out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the example starts");
        stats.launches += 1;
        // The first attempts are killed at a random point (the run takes some 60-100 ms); from
        // the seventh on, it is left to finish.
        if stats.launches <= 6 {
            let at = if kill_at_once && stats.launches == 1 {
                Duration::ZERO
            } else {
                Duration::from_millis(rng.below(90))
            };
            let started = Instant::now();
            while started.elapsed() < at {
                if child.try_wait().expect("polls the child").is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            if child.try_wait().expect("polls the child").is_none() {
                child.kill().expect("SIGKILL");
                stats.kills += 1;
            }
        }
        let out = child.wait_with_output().expect("the example ends");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "the example panicked:\n{stderr}"
        );
        if out.status.code().is_none() {
            // Killed: the same command again, whether or not the run was stored.
            if stored(&db).is_none() {
                stats.before_first_write += 1;
            }
            continue;
        }
        assert_eq!(
            out.status.code(),
            Some(0),
            "the example failed:\n{stdout}\n{stderr}"
        );
        stats.reconciled += stdout.matches("reconciled: effect").count();
        assert!(
            stdout.contains("status:  success"),
            "the run did not end in success:\n{stdout}"
        );
        break;
    }

    // The ledger: at most one line per effect id, and the run's effect executed exactly once.
    let text = std::fs::read_to_string(&ledger).unwrap_or_default();
    let mut ids: Vec<&str> = text
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    let lines = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), lines, "an effect executed twice:\n{text}");
    assert_eq!(lines, 1, "one effect per run:\n{text}");

    // The exported trace verifies and is what the store holds (which verifies on load).
    let exported = std::fs::read_to_string(&trace_out).expect("the trace was written");
    let trace = Trace::from_jsonl(&exported).expect("the exported trace verifies");
    let stored = stored(&db).expect("stored");
    assert_eq!(stored, trace.entries());
    let effect = trace
        .entries()
        .iter()
        .find_map(|e| match &e.event {
            Event::ToolIntent { effect_id, .. } => Some(effect_id.to_hex()),
            _ => None,
        })
        .expect("an intent");
    assert_eq!(ids, [effect.as_str()], "the ledger's effect is the run's");
    stats
}

/// What the store holds of run `r1` (nothing when the database was never created).
fn stored(db: &Path) -> Option<Vec<nanovm::trace::Entry>> {
    if !db.exists() {
        return None;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(async {
            use nanovm::store::JournalStore as _;
            let store = SqliteStore::open(db).await.expect("opens the database");
            store.load("r1").await.expect("loads")
        })
}

#[test]
fn killed_at_random_points_the_same_command_finishes_the_run_and_executes_each_effect_once() {
    let bin = example();
    let mut rng = Rng(0x5eed_2026);
    let mut total = Stats::default();
    let started = Instant::now();
    const RUNS: usize = 40;
    for i in 0..RUNS {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Two of three refund (idempotent); every third rejects (not idempotent: a kill with
        // the mail in flight needs reconciliation, done from the ledger).
        let answer = if i % 3 == 2 { "no" } else { "yes" };
        // Every fourth run's first launch is killed before it can write anything.
        let s = one_run(&bin, dir.path(), answer, i % 4 == 0, &mut rng);
        total.launches += s.launches;
        total.kills += s.kills;
        total.before_first_write += s.before_first_write;
        total.reconciled += s.reconciled;
    }
    eprintln!(
        "{RUNS} runs: {} launches, {} SIGKILLs ({} before the first write), {} reconciliations, {:.1} s",
        total.launches,
        total.kills,
        total.before_first_write,
        total.reconciled,
        started.elapsed().as_secs_f64()
    );
    assert!(
        total.kills > 0,
        "no process was killed: the test tested nothing"
    );
    assert!(
        total.before_first_write > 0,
        "no process was killed before its first write: restarting such a run was not tested"
    );
}
