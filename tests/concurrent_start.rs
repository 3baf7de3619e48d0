//! The attack of issue 10, hole 1: the same start command, twice, at once. Two real OS
//! processes of the `customer_refund` example run the same run id against one SQLite file, the
//! second started a random moment after the first while the first's effect may be in flight.
//! A run is owned by one execution from its first append to its end: the second process must
//! either answer the stored outcome (the first had finished), or be told that the run is in
//! progress (the example says so on stderr, waits for the owner and then answers the stored
//! outcome), never execute the run's effect a second time nor take the live run over. The mock bank's ledger (one fsynced
//! line per real execution) must show at most one execution per effect id, every time; a last
//! run of the same command converges to the run's end.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Rng, example};

fn start(bin: &Path, dir: &Path, answer: &str, delay_ms: u64) -> Child {
    Command::new(bin)
        .arg("--db")
        .arg(dir.join("x.db"))
        .args(["--run-id", "k3", "--answer", answer])
        .args(["--tool-delay-ms", &delay_ms.to_string()])
        .arg("--ledger")
        .arg(dir.join("ledger.txt"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example starts")
}

/// How one process of the pair ended: always with the run's end (it executed the run, or
/// answered the stored outcome), having been told or not that the run was in progress.
#[derive(Debug, PartialEq)]
enum Ended {
    /// It ended the run without being told anything.
    Done,
    /// It was told that another process owns the run (`run ... is in progress`), waited, and
    /// then answered the stored outcome, executing nothing itself.
    WaitedInProgress,
}

fn ended(what: &str, out: &Output) -> Ended {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
    assert!(
        out.status.success() && stdout.contains("status:  success"),
        "{what} did not end the run in success:\n{stdout}\n{stderr}"
    );
    // Nobody died: nothing was ever taken over, so no effect was ever ambiguous.
    assert!(
        !stdout.contains("reconciled:"),
        "{what} took over a live run:\n{stdout}\n{stderr}"
    );
    if !stderr.contains("is in progress") {
        return Ended::Done;
    }
    assert!(
        stdout.contains("effects: 0 refund(s), 0 rejection(s)"),
        "{what} was told the run is in progress, yet executed an effect:\n{stdout}\n{stderr}"
    );
    Ended::WaitedInProgress
}

/// The ledger's effect ids, asserting that none executed twice.
fn ledger(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("ledger.txt")).unwrap_or_default();
    let mut ids: Vec<String> = text
        .lines()
        .map(|l| l.split(' ').next().unwrap_or("").to_string())
        .collect();
    let lines = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), lines, "an effect executed twice:\n{text}");
    ids
}

#[test]
fn two_processes_starting_one_run_execute_each_effect_at_most_once() {
    let bin = example();
    let mut rng = Rng(0x0dd5_7a17);
    let started = Instant::now();
    let mut in_progress = 0;
    const PAIRS: usize = 50;
    for i in 0..PAIRS {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Alternate the idempotent refund and the non-idempotent rejection mail.
        let answer = if i % 2 == 0 { "yes" } else { "no" };
        let delay = 150 + rng.below(150);
        let first = start(&bin, dir.path(), answer, delay);
        // The second start lands before, during or after the first one's effect.
        std::thread::sleep(Duration::from_millis(rng.below(delay + 150)));
        let second = start(&bin, dir.path(), answer, delay);
        let a = ended("the first process", &first.wait_with_output().unwrap());
        let b = ended("the second process", &second.wait_with_output().unwrap());
        assert!(
            a == Ended::Done || b == Ended::Done,
            "pair {i}: neither process ended the run ({a:?}, {b:?})"
        );
        let waited = |e: &Ended| usize::from(*e == Ended::WaitedInProgress);
        in_progress += waited(&a) + waited(&b);
        // The same command again answers the stored outcome and executes nothing.
        let again = start(&bin, dir.path(), answer, delay);
        assert_eq!(
            ended("the third process", &again.wait_with_output().unwrap()),
            Ended::Done
        );
        assert_eq!(ledger(dir.path()).len(), 1, "pair {i}: one effect per run");
    }
    eprintln!(
        "{PAIRS} pairs, {in_progress} answered `run in progress`, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        in_progress > 0,
        "no second start overlapped the first: the test tested nothing"
    );
}
