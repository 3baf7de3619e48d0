//! The operator CLI on a real store, end to end: a host runs the compiled `customer_refund`
//! (the runtime's generated test program) on a SQLite file (or PostgreSQL); `nanovm runs`,
//! `deliver`, `cancel` and `reconcile` act on its runs under their leases; a worker that has
//! the program then continues them. `--format json` parses and has the documented shape. An
//! act on a run held by a live lease fails clearly and writes nothing, or waits for it.

#[path = "../../nanovm-runtime/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nanovm_runtime::store::{JournalStore, PostgresStore, SqliteStore};
use nanovm_runtime::testing::ScriptedModel;
use nanovm_runtime::trace::{Event, RunStatus};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{RunOptions, Runtime, Worker};
use serde_json::Value;

use support::customer_refund::{self as cr};
use support::{Host, hang};

/// One multi-thread runtime for the whole test binary: a PostgreSQL pool's connections live on
/// the runtime that made them.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
    .block_on(f)
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn nanovm(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_nanovm"))
        .args(args)
        .output()
        .expect("the nanovm binary runs");
    let run = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    run
}

fn program() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/workflows/customer_refund.nvm")
        .display()
        .to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A host of `customer_refund` on `store`: the system clock, short operation leases (a
/// crashed start's lease lapses in 200 ms).
struct Host_ {
    rt: Runtime,
    /// The same host with a model that answers `no` (the rejection path).
    rt_no: Runtime,
    vault: Arc<MemoryVault>,
    db: String,
    store: Arc<dyn JournalStore>,
}

impl Host_ {
    fn new(db: String, store: Arc<dyn JournalStore>) -> Self {
        let vault = Arc::new(MemoryVault::seeded(11));
        let rt = |answer: &str| {
            Runtime::builder()
                .model(ScriptedModel::new().always("analyze", answer).shared())
                .vault(vault.clone())
                .store(store.clone())
                .operation_lease(Duration::from_millis(200))
                .build()
        };
        Host_ {
            rt: rt("yes"),
            rt_no: rt("no"),
            vault,
            db,
            store,
        }
    }

    fn input(&self, amount_cents: i64) -> cr::Input {
        cr::Input {
            request: "It broke.".into(),
            order_id: "o-5".into(),
            amount_cents,
            email: self.vault.secret(&"cy@example.com".to_string()).unwrap(),
        }
    }

    fn run(&self, id: &str, amount: i64) -> RunStatus {
        block_on(self.rt.run::<cr::Program>(
            self.input(amount),
            Arc::new(Host::new()),
            RunOptions::new().run_id(id),
        ))
        .expect("runs")
        .status
    }

    /// Run `id` crashed while `send_rejection` was in flight, then resumed: paused
    /// `needs_reconciliation`.
    fn paused(&self, id: &str) {
        let crashed = Host::new();
        crashed.hook("send_rejection", hang());
        let run = self.rt_no.run::<cr::Program>(
            self.input(100),
            Arc::new(crashed.clone()),
            RunOptions::new().run_id(id),
        );
        // Dropped while the call is in flight: a crash.
        block_on(async {
            tokio::select! {
                _ = run => panic!("the run finished, it was meant to crash"),
                () = async {
                    while crashed.calls("send_rejection") == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                } => {}
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let resumed = block_on(self.rt_no.run::<cr::Program>(
            self.input(100),
            Arc::new(Host::new()),
            RunOptions::new().run_id(id),
        ))
        .expect("resumes");
        assert_eq!(resumed.status, RunStatus::NeedsReconciliation);
    }

    /// Lets a worker with the program continue runs until it has continued run `id` (a
    /// shared PostgreSQL database may hold runnable runs of other tests: it continues those
    /// too); `None` when nothing is left to do without run `id` among the runs continued.
    fn work(&self, id: &str, host: &Host) -> Option<nanovm_runtime::Execution> {
        let worker = Worker::new(self.rt.clone(), "w1", 30_000);
        for _ in 0..100 {
            let e = block_on(worker.run_once::<cr::Program>(Arc::new(host.clone())))
                .expect("the worker continues the run")?;
            if e.run_id == id {
                return Some(e);
            }
        }
        None
    }

    fn state(&self, id: &str) -> Value {
        let out = nanovm(&["runs", "--db", &self.db, "--format", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let doc: Value = serde_json::from_str(&out.stdout).expect("runs --format json parses");
        assert_eq!(doc["version"], 1);
        doc["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .find(|r| r["run_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("run {id} listed: {doc}"))
    }
}

fn act(db: &str, args: &[&str]) -> Out {
    let mut all = vec![
        args[0],
        "--db",
        db,
        "--by",
        "ops@example.com",
        "--reason",
        "ticket 42",
    ];
    all.extend_from_slice(&args[1..]);
    nanovm(&all)
}

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("nanovm-cli-operate")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sqlite(test: &str) -> Host_ {
    let path = scratch(test).join("runs.db");
    let store = block_on(SqliteStore::open(&path)).unwrap();
    Host_::new(path.display().to_string(), Arc::new(store))
}

/// The whole operator story on one store: `p` prefixes the run ids.
fn operate(h: &Host_, p: &str) {
    let id = |s: &str| format!("{p}{s}");
    // A delivery, continued by a worker.
    assert_eq!(h.run(&id("wait"), 9000), RunStatus::Suspended);
    let s = h.state(&id("wait"));
    assert_eq!(s["status"], "suspended");
    assert_eq!(s["waiting"]["event"], "approval");
    assert!(s["waiting"]["deadline_ms"].is_u64());
    assert_eq!(s["at"], "manual_review");
    let wrong = act(
        &h.db,
        &[
            "deliver",
            "--program",
            &program(),
            &id("wait"),
            "approval",
            "--id",
            "ev-1",
            "--payload",
            "{",
        ],
    );
    assert_eq!(wrong.code, 2, "bad JSON is a usage error");
    let out = act(
        &h.db,
        &[
            "deliver",
            "--program",
            &program(),
            &id("wait"),
            "approval",
            "--id",
            "ev-1",
            "--payload",
            r#"{"approved": true}"#,
            "--format",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(doc["outcome"], "recorded");
    assert_eq!(doc["status"], "running");
    let again = act(
        &h.db,
        &[
            "deliver",
            "--program",
            &program(),
            &id("wait"),
            "approval",
            "--id",
            "ev-1",
            "--payload",
            r#"{"approved":true}"#,
        ],
    );
    assert_eq!(
        again.code, 0,
        "a duplicate is acknowledged: {}",
        again.stderr
    );
    assert!(
        again.stdout.contains("nothing recorded"),
        "{}",
        again.stdout
    );
    let host = Host::new();
    let e = h
        .work(&id("wait"), &host)
        .expect("a worker continues the delivered run");
    assert_eq!(
        (e.run_id.as_str(), e.status),
        (id("wait").as_str(), RunStatus::Success)
    );
    assert_eq!(host.calls("issue_refund"), 1);
    let late = act(
        &h.db,
        &[
            "deliver",
            "--program",
            &program(),
            &id("wait"),
            "approval",
            "--id",
            "ev-2",
        ],
    );
    assert_eq!(late.code, 1);
    assert!(
        late.stderr.contains("is not waiting for `approval`"),
        "{}",
        late.stderr
    );

    // A cancellation, for good.
    assert_eq!(h.run(&id("stop"), 9000), RunStatus::Suspended);
    let out = act(&h.db, &["cancel", &id("stop")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = h.state(&id("stop"));
    assert_eq!(s["status"], "cancelled");
    assert_eq!(s["message"], "cancelled by `ops@example.com`: ticket 42");
    assert!(
        h.work(&id("stop"), &Host::new()).is_none(),
        "nothing for a worker"
    );
    assert_eq!(
        h.run(&id("stop"), 9000),
        RunStatus::Cancelled,
        "a duplicate start replays it"
    );

    // An answer to an ambiguous effect, continued by a worker.
    h.paused(&id("nr"));
    let s = h.state(&id("nr"));
    assert_eq!(s["status"], "needs_reconciliation");
    let effect = s["to_reconcile"][0]
        .as_str()
        .expect("an effect to answer")
        .to_string();
    let refused = act(&h.db, &["reconcile", &id("nr"), &effect, "--not-done"]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("reconcile_as"),
        "{}",
        refused.stderr
    );
    let out = act(
        &h.db,
        &[
            "reconcile",
            &id("nr"),
            &effect,
            "--done",
            r#"{"sent": true}"#,
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let host = Host::new();
    let e = h
        .work(&id("nr"), &host)
        .expect("a worker continues the answered run");
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(
        host.total_calls(),
        0,
        "the effect happened: not called again"
    );
    let trace = nanovm(&["trace", "--db", &h.db, &id("nr")]);
    assert_eq!(trace.code, 0, "{}", trace.stderr);
    assert!(
        trace
            .stdout
            .contains(r#""by":{"id":"ops@example.com","reason":"ticket 42"}"#)
    );

    // A run held by a live lease: refused at once, nothing written; with --wait, done once
    // the holder lets go.
    assert_eq!(h.run(&id("held"), 9000), RunStatus::Suspended);
    let lease = block_on(
        h.store
            .claim_run(&id("held"), "other-worker", now_ms(), 60_000),
    )
    .unwrap()
    .expect("claimed");
    let before = block_on(h.store.run(&id("held"))).unwrap().unwrap().entries;
    let out = act(&h.db, &["cancel", &id("held")]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("held by `other-worker` until 20"),
        "{}",
        out.stderr
    );
    assert_eq!(
        block_on(h.store.run(&id("held"))).unwrap().unwrap().entries,
        before
    );
    let store = h.store.clone();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        block_on(store.release(&lease)).unwrap();
    });
    let out = act(&h.db, &["cancel", &id("held"), "--wait", "10"]);
    releaser.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(h.state(&id("held"))["status"], "cancelled");
    let entries = block_on(h.store.load(&id("held"))).unwrap().unwrap();
    assert!(matches!(
        entries.last().map(|e| &e.event),
        Some(Event::RunEnded {
            status: RunStatus::Cancelled,
            ..
        })
    ));
}

#[test]
fn operator_acts_on_sqlite_are_continued_by_a_worker() {
    let h = sqlite("story");
    operate(&h, "");
}

#[test]
#[ignore = "needs PostgreSQL (DATABASE_URL)"]
fn operator_acts_on_postgres_are_continued_by_a_worker() {
    let url = support::peers::database_url();
    let store = block_on(PostgresStore::connect(&url)).expect("connects");
    let h = Host_::new(url, Arc::new(store));
    operate(&h, &format!("cli-{}-{}-", std::process::id(), now_ms()));
}

#[test]
fn runs_json_has_the_documented_shape_and_acts_refuse_clearly() {
    let h = sqlite("shape");
    assert_eq!(h.run("r1", 100), RunStatus::Success);
    let s = h.state("r1");
    for key in [
        "run_id",
        "program",
        "program_hash",
        "status",
        "entries",
        "step",
        "at",
        "message",
        "waiting",
        "lease",
        "open_effects",
        "to_reconcile",
        "created_ms",
        "updated_ms",
    ] {
        assert!(s.get(key).is_some(), "{key} in {s}");
    }
    assert_eq!(s["program"], "customer_refund");
    assert_eq!(s["step"], "refunded");
    assert_eq!(s["waiting"], Value::Null);
    let out = act(&h.db, &["cancel", "r1", "--format", "json"]);
    assert_eq!(out.code, 1);
    let doc: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(doc["outcome"], "refused");
    assert!(
        doc["error"].as_str().unwrap().contains("has ended"),
        "{doc}"
    );
    let out = act(&h.db, &["cancel", "nope"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not in the store"), "{}", out.stderr);
    // A delivery needs the run's own program: another file is refused before anything is
    // written.
    assert_eq!(h.run("w", 9000), RunStatus::Suspended);
    let other = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/workflows/refund.nvm")
        .display()
        .to_string();
    let out = act(
        &h.db,
        &[
            "deliver",
            "--program",
            &other,
            "w",
            "approval",
            "--id",
            "e1",
        ],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("holds no program with the hash of run `w`"),
        "{}",
        out.stderr
    );
    assert_eq!(h.state("w")["status"], "suspended");
    // An act never creates a store.
    let missing = scratch("missing").join("none.db");
    let out = act(&missing.display().to_string(), &["cancel", "r1"]);
    assert_eq!(out.code, 2);
    assert!(!missing.exists());
}

/// `nanovm stats` on a store with known runs: 6 refunds as the baseline, then a refund and a
/// rejection as the window (`--since`). The rejection takes a path the baseline never took.
#[test]
fn stats_reports_drift_of_a_window_against_the_baseline() {
    let h = sqlite("stats");
    for i in 0..6 {
        assert_eq!(h.run(&format!("base-{i}"), 100), RunStatus::Success);
    }
    std::thread::sleep(Duration::from_millis(20));
    let since = now_ms().to_string();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(h.run("new-refund", 100), RunStatus::Success);
    let rejected = block_on(h.rt_no.run::<cr::Program>(
        h.input(100),
        Arc::new(Host::new()),
        RunOptions::new().run_id("new-reject"),
    ))
    .unwrap();
    assert_eq!(rejected.end_step.as_deref(), Some("rejected"));

    let out = nanovm(&[
        "stats", "--db", &h.db, "--since", &since, "--format", "json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("stats --format json parses");
    assert_eq!(doc["version"], 1);
    let p = &doc["programs"][0];
    assert_eq!(p["program"], "customer_refund");
    assert_eq!(
        (p["baseline_runs"].as_u64(), p["window_runs"].as_u64()),
        (Some(6), Some(2))
    );
    assert_eq!(p["unseen_path_share"], 0.5);
    // Both window runs leave `policy`, one to `refund`, one to `reject`: 1 bit.
    let policy = p["decision_points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["step"] == "policy")
        .expect("policy is a decision point");
    assert_eq!(policy["entropy"], 1.0);
    let js = p["path_divergence"].as_f64().unwrap();
    assert!((js - 0.311_278_124_459_132_8).abs() < 1e-9, "{js}");
    assert!(p["flagged"].is_array());

    let text = nanovm(&[
        "stats",
        "--db",
        &h.db,
        "--since",
        &since,
        "--program",
        "customer_refund",
    ]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("customer_refund"), "{}", text.stdout);
    assert!(text.stdout.contains("H(A|S)"), "{}", text.stdout);
    let none = nanovm(&[
        "stats",
        "--db",
        &h.db,
        "--program",
        "nope",
        "--format",
        "json",
    ]);
    assert_eq!(none.code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&none.stdout).unwrap()["programs"],
        Value::Array(vec![])
    );
    let bad = nanovm(&["stats", "--db", &h.db, "--since", "yesterday"]);
    assert_eq!(bad.code, 2);
}
