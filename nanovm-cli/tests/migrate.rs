//! `nanovm migrate`: suspended runs of OLD move to NEW where `nanovm compat` finds their step
//! compatible, recorded as a `migrated` entry under the run's lease; the others stay on OLD and
//! are listed with the reason.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nanovm_runtime::store::{JournalStore, SqliteStore};
use nanovm_runtime::trace::{CarriedValue, Datum, Encoder, Event, RunStatus, Trace};
use nanovm_runtime::{Digest, RunView};
use serde_json::json;

fn nanovm(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nanovm"))
        .args(args)
        .output()
        .expect("the nanovm binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("nanovm-cli-migrate")
        .join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn v2_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../nanovm-dsl/tests/compat_programs/approval_v2.nvm")
}

fn hash_of(path: &Path) -> Digest {
    let src = fs::read_to_string(path).unwrap();
    let c = nanovm_dsl::compile("p", &src);
    assert!(!c.has_errors(), "{}", c.render());
    Digest(c.programs[0].hash)
}

/// A run of `approval_flow` under `hash`, with `events` after `run_started`.
fn run(run_id: &str, hash: Digest, events: Vec<Event>) -> Trace {
    let mut t = Trace::new();
    let mut s = Encoder::new();
    t.push(
        Event::RunStarted {
            run_id: run_id.into(),
            program: "approval_flow".into(),
            program_hash: hash,
            inputs: vec![
                ("request".into(), Datum::Plain(json!("refund"))),
                ("amount_cents".into(), Datum::Plain(json!(700))),
            ],
        },
        &mut s,
    );
    for e in events {
        t.push(e, &mut s);
    }
    t
}

fn suspended(step: &'static str, event: &'static str) -> Event {
    Event::Suspended {
        step: step.into(),
        event: event.into(),
        deadline_ms: Some(4_000_000_000_000),
    }
}

#[test]
fn compatible_suspended_runs_move_and_the_others_stay_with_their_reason() {
    let dir = scratch("mixed");
    let db = dir.join("runs.db");
    // NEW: version 2 with a larger budget (another hash, every pause point compatible).
    let v3 = dir.join("approval_v3.nvm");
    fs::write(
        &v3,
        fs::read_to_string(v2_path())
            .unwrap()
            .replace("max_steps: 12", "max_steps: 30"),
    )
    .unwrap();
    let (old, new) = (hash_of(&v2_path()), hash_of(&v3));
    assert_ne!(old, new);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        // `a`: approved, waiting for the confirmation: `verdict` is what NEW reads next.
        let a = run(
            "a",
            old,
            vec![
                suspended("review", "approval"),
                Event::Delivered {
                    step: "review".into(),
                    event: "approval".into(),
                    event_id: "e1".into(),
                    payload: json!({"approved": true}),
                    next: "confirm".into(),
                    by: None,
                },
                suspended("confirm", "confirmation"),
            ],
        );
        // `b`: paused for reconciliation: not migrated.
        let b = run(
            "b",
            old,
            vec![Event::RunEnded {
                status: RunStatus::NeedsReconciliation,
                step: Some("pay_out".into()),
                message: Some("pay is ambiguous".into()),
            }],
        );
        // `c`: the same program name, another version: not this migration's business.
        let c = run(
            "c",
            Digest::of(b"another"),
            vec![suspended("review", "approval")],
        );
        for (id, t) in [("a", a), ("b", b), ("c", c)] {
            store.append(id, t.entries(), None).await.unwrap();
        }
    });
    let (db_s, old_s, new_s) = (
        db.to_str().unwrap(),
        v2_path().to_str().unwrap().to_string(),
        v3.to_str().unwrap().to_string(),
    );
    let base = [
        "migrate",
        "--db",
        db_s,
        "--from",
        &old_s,
        "--to",
        &new_s,
        "--actor",
        "ops@example.com",
        "--reason",
        "deploy 3",
    ];
    let (code, out, err) = nanovm(&[&base[..], &["--all"]].concat());
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("a: migrated at `confirm`"), "{out}");
    assert!(out.contains("(1 variable carried)"), "{out}");
    assert!(out.contains("b: stays on"), "{out}");
    assert!(out.contains("needs_reconciliation"), "{out}");
    assert!(!out.contains("c:"), "{out}");
    assert!(out.contains("1 migrated, 1 stay on OLD"), "{out}");

    let entries = rt
        .block_on(async { SqliteStore::open(&db).await.unwrap().load("a").await })
        .unwrap()
        .unwrap();
    let view = RunView::of(&entries);
    assert_eq!(view.status(), RunStatus::Suspended);
    assert_eq!(view.program_hash(), Some(new));
    let Event::Migrated {
        step,
        from,
        to,
        carried,
        by,
    } = &entries[entries.len() - 2].event
    else {
        panic!("{:?}", entries[entries.len() - 2].event)
    };
    assert_eq!((step.as_ref(), *from, *to), ("confirm", old, new));
    assert_eq!(
        (by.id.as_str(), by.reason.as_str()),
        ("ops@example.com", "deploy 3")
    );
    assert_eq!(carried.len(), 1);
    assert_eq!(carried[0].var, "verdict");
    assert_eq!(carried[0].step, "review");
    assert_eq!(
        carried[0].value,
        CarriedValue::Event(json!({"approved": true}))
    );
    // The re-issued wait is the same as the one before.
    assert_eq!(
        entries[entries.len() - 1].event,
        entries[entries.len() - 3].event
    );

    // Again: `a` is pinned to NEW now, so asking for it by name says so.
    let (code, out, _) = nanovm(&[&base[..], &["a"]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("a: stays on") && out.contains("pinned to program"),
        "{out}"
    );
}

#[test]
fn an_incompatible_step_keeps_the_run_on_old() {
    let dir = scratch("incompatible");
    let db = dir.join("runs.db");
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../nanovm-dsl/tests/compat_programs/approval_v1.nvm");
    // NEW waits for another event at `review`.
    let v1b = dir.join("approval_v1b.nvm");
    fs::write(
        &v1b,
        fs::read_to_string(&v1)
            .unwrap()
            .replace("await review = approval", "await review = sign_off"),
    )
    .unwrap();
    let old = hash_of(&v1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        let t = run("r", old, vec![suspended("review", "approval")]);
        store.append("r", t.entries(), None).await.unwrap();
    });
    let (code, out, err) = nanovm(&[
        "migrate",
        "--db",
        db.to_str().unwrap(),
        "--from",
        v1.to_str().unwrap(),
        "--to",
        v1b.to_str().unwrap(),
        "r",
        "--actor",
        "ops",
        "--reason",
        "rename the event",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("r: stays on"), "{out}");
    assert!(
        out.contains("waits for the event `approval` in OLD and `sign_off` in NEW"),
        "{out}"
    );
    let entries = rt
        .block_on(async { SqliteStore::open(&db).await.unwrap().load("r").await })
        .unwrap()
        .unwrap();
    assert_eq!(entries.len(), 2, "nothing appended");
}
