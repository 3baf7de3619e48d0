//! `nanovm runs` and `nanovm trace` on a real SQLite store: the table, the filters, the JSONL
//! export (byte-identical to the runtime's), a damaged database (exit 1, nothing on stdout),
//! and the usage errors (exit 2).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nanovm_runtime::Digest;
use nanovm_runtime::store::{JournalStore, SqliteStore};
use nanovm_runtime::trace::Datum;
use nanovm_runtime::trace::Encoder;
use nanovm_runtime::trace::{Event, RunStatus, ToolOutcome, Trace};
use serde_json::json;

mod common;

use common::{nanovm, s};

fn scratch(test: &str) -> PathBuf {
    common::scratch("store", test)
}

/// A run's trace as the runtime writes it: started, a tool result, then `last`.
fn trace(run_id: &str, program: &str, result: &str, last: Option<Event>) -> Trace {
    let mut t = Trace::new();
    let mut s = Encoder::new();
    t.push(
        Event::RunStarted {
            run_id: run_id.into(),
            program: program.to_string().into(),
            program_hash: Digest::of(program.as_bytes()),
            inputs: vec![("order_id".into(), Datum::Plain(json!("A-17")))],
        },
        &mut s,
    );
    t.push(
        Event::ToolResult {
            step: "lookup".into(),
            branch: None,
            attempt: 1,
            tool: "lookup_order".into(),
            key: Digest::of(b"call"),
            args: Some(vec![("order_id".into(), Datum::Plain(json!("A-17")))]),
            result: ToolOutcome::Ok(json!({ "marker": result })),
            next: Some("next".into()),
        },
        &mut s,
    );
    if let Some(e) = last {
        t.push(e, &mut s);
    }
    t
}

/// A database with four runs: success, suspended, needs_reconciliation (customer_refund) and a
/// running one of another program. Returns the path and the traces.
fn database(dir: &Path) -> (PathBuf, Vec<Trace>) {
    let path = dir.join("runs.db");
    let traces = vec![
        trace(
            "r-ok",
            "customer_refund",
            "MARKER-OK",
            Some(Event::RunEnded {
                status: RunStatus::Success,
                step: Some("refunded".into()),
                message: None,
            }),
        ),
        trace(
            "r-wait",
            "customer_refund",
            "MARKER-WAIT",
            Some(Event::Suspended {
                step: "manual_review".into(),
                event: "approval".into(),
                deadline_ms: Some(1_700_086_400_000),
            }),
        ),
        trace(
            "r-nr",
            "customer_refund",
            "MARKER-NR",
            Some(Event::RunEnded {
                status: RunStatus::NeedsReconciliation,
                step: Some("reject".into()),
                message: Some("an operator must reconcile it".into()),
            }),
        ),
        trace("o-1", "order_pipeline", "MARKER-RUN", None),
    ];
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(&path).await.unwrap();
            for t in &traces {
                let Event::RunStarted { run_id, .. } = &t.entries()[0].event else {
                    unreachable!()
                };
                store.append(run_id, t.entries(), None).await.unwrap();
            }
        });
    (path, traces)
}

#[test]
fn runs_lists_every_run_with_status_and_where_it_is() {
    let dir = scratch("list");
    let (db, _) = database(&dir);
    let run = nanovm(&["runs", "--db", s(&db)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{}", run.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["RUN", "ID", "PROGRAM", "STATUS", "ENTRIES", "AT", "UPDATED"]
    );
    let cells = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>();
    // Oldest first: the order they were stored in.
    assert_eq!(
        cells(1)[..5],
        ["r-ok", "customer_refund", "success", "3", "refunded"]
    );
    // The timeout deadline as an RFC 3339 UTC instant, not epoch milliseconds.
    assert_eq!(
        cells(2)[..10],
        [
            "r-wait",
            "customer_refund",
            "suspended",
            "3",
            "manual_review",
            "(waiting",
            "for",
            "approval",
            "until",
            "2023-11-15T22:13:20Z)"
        ]
    );
    assert!(!run.stdout.contains("1700086400000"), "{}", run.stdout);
    assert_eq!(
        cells(3)[..5],
        [
            "r-nr",
            "customer_refund",
            "needs_reconciliation",
            "3",
            "reject"
        ]
    );
    // A running run shows the step it is at: `lookup` chose `next`, so the run is there.
    assert_eq!(
        cells(4)[..5],
        ["o-1", "order_pipeline", "running", "2", "next"]
    );
    // The update time is an RFC 3339 UTC timestamp.
    let ts: Vec<&str> = cells(1)[5..].to_vec();
    assert_eq!(ts.len(), 1, "{ts:?}");
    assert_eq!(ts[0].len(), "2026-12-07T18:30:00Z".len(), "{ts:?}");
    assert_eq!(ts[0].as_bytes()[10], b'T', "{ts:?}");
    assert!(ts[0].ends_with('Z'), "{ts:?}");
}

#[test]
fn runs_shows_a_lease_expiry_as_an_instant() {
    let dir = scratch("lease");
    let (db, _) = database(&dir);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(&db).await.unwrap();
            store
                .claim_run("o-1", "w-7", 1_700_000_000_000, 60_000)
                .await
                .unwrap()
                .expect("the run is free");
        });
    let run = nanovm(&["runs", "--db", s(&db), "--program", "order_pipeline"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = run.stdout.lines().nth(1).unwrap();
    assert!(
        row.contains("(lease w-7 until 2023-11-14T22:14:20Z)"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("1700000060000"), "{}", run.stdout);
}

#[test]
fn runs_shows_where_a_running_run_is() {
    let dir = scratch("running");
    let path = dir.join("running.db");
    let started = trace("r-new", "customer_refund", "unused", None).entries()[..1].to_vec();
    let mut paying = Trace::new();
    let mut enc = Encoder::new();
    let first = trace("r-pay", "customer_refund", "unused", None).entries()[0]
        .event
        .clone();
    paying.push(first, &mut enc);
    paying.push(
        Event::ToolIntent {
            step: "pay".into(),
            branch: None,
            attempt: 1,
            tool: "issue_refund".into(),
            effect_id: Digest::of(b"effect"),
            args: vec![],
        },
        &mut enc,
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(&path).await.unwrap();
            store.append("r-new", &started, None).await.unwrap();
            store.append("r-pay", paying.entries(), None).await.unwrap();
        });
    let run = nanovm(&["runs", "--db", s(&path)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    // Started, no step taken yet: said so, not `-`.
    assert_eq!(
        rows[0][..5],
        ["r-new", "customer_refund", "running", "1", "(starting)"]
    );
    // An effect in flight: the step calling it.
    assert_eq!(
        rows[1][..5],
        ["r-pay", "customer_refund", "running", "2", "pay"]
    );
}

#[test]
fn runs_filters_by_status_and_program() {
    let dir = scratch("filters");
    let (db, _) = database(&dir);
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["runs", "--db", s(&db)];
        all.extend_from_slice(args);
        let run = nanovm(&all);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--status", "suspended"]), ["r-wait"]);
    assert_eq!(ids(&["--status", "needs_reconciliation"]), ["r-nr"]);
    assert_eq!(ids(&["--program", "order_pipeline"]), ["o-1"]);
    assert_eq!(
        ids(&["--program", "customer_refund", "--status", "running"]),
        ["(no"]
    );
    assert_eq!(ids(&["--program", "customer_refund"]).len(), 3);
}

#[test]
fn trace_exports_the_stored_run_as_the_runtime_writes_it() {
    let dir = scratch("export");
    let (db, traces) = database(&dir);
    for (id, t) in [("r-ok", &traces[0]), ("o-1", &traces[3])] {
        let run = nanovm(&["trace", "--db", s(&db), id]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stdout, t.to_jsonl(), "byte-identical JSONL");
        // And `nanovm verify` accepts it: as it stands when the run has closed, as a prefix
        // (`--partial`) while it is still running.
        let file = dir.join(format!("{id}.jsonl"));
        fs::write(&file, &run.stdout).unwrap();
        let partial = if id == "o-1" { "--partial" } else { "--" };
        let verified = nanovm(&["verify", partial, s(&file)]);
        assert_eq!(verified.code, 0, "{}", verified.stdout);
        assert!(
            verified.stdout.contains(&t.root().to_hex()),
            "{}",
            verified.stdout
        );
    }
}

#[test]
fn trace_of_a_damaged_database_exits_1_and_writes_nothing() {
    let dir = scratch("damaged");
    let (db, _) = database(&dir);
    // Edit one byte of r-nr's stored tool result, as a disk fault or a hand edit would.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "UPDATE nanovm_entries SET line = replace(line, 'MARKER-NR', 'MARKER-XR') \
             WHERE instr(line, 'MARKER-NR') > 0",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    let run = nanovm(&["trace", "--db", s(&db), "r-nr"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.is_empty(), "nothing exported: {}", run.stdout);
    assert!(
        run.stderr.starts_with("broken: run `r-nr`:"),
        "{}",
        run.stderr
    );
    // The other runs are intact.
    assert_eq!(nanovm(&["trace", "--db", s(&db), "r-ok"]).code, 0);
}

#[test]
fn store_commands_report_usage_errors_with_exit_2() {
    let dir = scratch("usage");
    let (db, _) = database(&dir);
    let missing = dir.join("nope.db");
    let run = nanovm(&["runs", "--db", s(&missing)]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no such file"), "{}", run.stderr);
    assert!(!missing.exists(), "a missing database is not created");
    let run = nanovm(&["trace", "--db", s(&db), "ghost"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("run `ghost` is not in"),
        "{}",
        run.stderr
    );
    let run = nanovm(&["runs", "--db", s(&db), "--status", "finished"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("is not a status"), "{}", run.stderr);
    let not_a_db = dir.join("text.db");
    fs::write(&not_a_db, "hello, not sqlite").unwrap();
    let run = nanovm(&["runs", "--db", s(&not_a_db)]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

/// Attack: `nanovm runs` on an empty file wrote a schema into it. Inspection opens stores
/// read-only and creates nothing.
#[test]
fn inspection_never_writes_to_the_database() {
    let dir = scratch("read_only");
    let empty = dir.join("empty.db");
    fs::write(&empty, "").unwrap();
    for args in [
        vec!["runs", "--db", s(&empty)],
        vec!["trace", "--db", s(&empty), "r-ok"],
    ] {
        let run = nanovm(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stdout);
        assert!(run.stderr.contains("not a nanovm store"), "{}", run.stderr);
        assert_eq!(fs::read(&empty).unwrap(), b"", "{args:?} wrote to the file");
    }
    let names = |d: &Path| {
        let mut v: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&dir), ["empty.db"], "nothing created next to it");

    // A real store: listing and exporting leave its bytes as they were. The store's writer
    // thread checkpoints and removes the WAL when it closes, shortly after the store is
    // dropped: wait for that before taking the snapshot.
    let (db, _) = database(&dir);
    let wal = dir.join("runs.db-wal");
    let waited = std::time::Instant::now();
    while wal.exists() && waited.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!wal.exists(), "the store never closed its WAL");
    let before = fs::read(&db).unwrap();
    assert_eq!(nanovm(&["runs", "--db", s(&db)]).code, 0);
    assert_eq!(nanovm(&["trace", "--db", s(&db), "r-ok"]).code, 0);
    let after = fs::read(&db).unwrap();
    assert!(after == before, "the database file changed");
}

/// Stores runs the runtime itself would refuse (it validates run ids since then): what another
/// writer, an older version or an attacker with write access to the file could leave.
fn hostile_database(dir: &Path, traces: &[Trace]) -> PathBuf {
    let path = dir.join("hostile.db");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(&path).await.unwrap();
            for t in traces {
                let Event::RunStarted { run_id, .. } = &t.entries()[0].event else {
                    unreachable!()
                };
                store.append(run_id, t.entries(), None).await.unwrap();
            }
        });
    path
}

/// Attack: a run id of 65,536 characters made `nanovm runs` panic ("Formatting argument out of
/// range"), and would have printed 64 KiB per row.
#[test]
fn runs_survives_a_huge_run_id() {
    let dir = scratch("huge_id");
    let huge = "x".repeat(65_536);
    let db = hostile_database(&dir, &[trace(&huge, "customer_refund", "M", None)]);
    let run = nanovm(&["runs", "--db", s(&db)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "header and one row");
    assert!(lines[1].starts_with("xxxxxxxx"), "{}", &lines[1][..40]);
    assert!(lines[1].contains('…'), "the id is cut");
    assert!(lines[1].chars().count() < 400, "{}", lines[1].len());
}

/// No control character of `text` reaches the terminal raw (line breaks are the CLI's own).
#[track_caller]
fn assert_no_raw_controls(text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n' || ('\u{202a}'..='\u{202e}').contains(c))
        .collect();
    assert!(
        raw.is_empty(),
        "raw control characters {raw:?} in:\n{text:?}"
    );
}

/// Attack: run ids, program and step names with terminal escape sequences were printed raw by
/// `nanovm runs` and `nanovm trace` (clear the screen, retitle the terminal, reorder a line).
#[test]
fn store_text_is_printed_with_controls_escaped() {
    let dir = scratch("escapes");
    let id = "r\u{1b}[2J\u{1b}]0;pwned\u{7}";
    let db = hostile_database(
        &dir,
        &[trace(
            id,
            "refund\u{202e}gnp.exe",
            "M",
            Some(Event::Suspended {
                step: "wait\u{1b}[31m".into(),
                event: "paid\r\n\u{9b}2J".into(),
                deadline_ms: None,
            }),
        )],
    );
    let run = nanovm(&["runs", "--db", s(&db)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_no_raw_controls(&run.stdout);
    assert_eq!(run.stdout.lines().count(), 2, "{:?}", run.stdout);
    assert!(
        run.stdout.contains("r\\u{1b}[2J\\u{1b}]0;pwned\\u{7}"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("refund\\u{202e}gnp.exe"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("wait\\u{1b}[31m (waiting for paid\\r\\n\\u{9b}2J)"),
        "{}",
        run.stdout
    );

    // The id as an argument, echoed in an error.
    let run = nanovm(&["trace", "--db", s(&db), "ghost\u{1b}[2J"]);
    assert_eq!(run.code, 2);
    assert_no_raw_controls(&run.stderr);
    assert!(run.stderr.contains("ghost\\u{1b}[2J"), "{}", run.stderr);
}

/// On a terminal, `nanovm trace` escapes what JSON leaves raw (C1 controls, bidi overrides);
/// redirected, the export stays byte for byte the runtime's (checked above). The terminal is a
/// pseudo-terminal from util-linux `script`; without it the check is skipped, visibly.
#[test]
fn trace_on_a_terminal_escapes_what_json_leaves_raw() {
    let script = Path::new("/usr/bin/script");
    if !script.exists() {
        println!(
            "skipped: util-linux `script` not installed, so the terminal path was NOT checked"
        );
        return;
    }
    let dir = scratch("trace_tty");
    let db = hostile_database(
        &dir,
        &[trace(
            "r-tty",
            "refund\u{202e}gnp.exe",
            "csi\u{9b}2J",
            Some(Event::RunEnded {
                status: RunStatus::Success,
                step: None,
                message: None,
            }),
        )],
    );
    let command = format!(
        "'{}' trace --db '{}' r-tty",
        env!("CARGO_BIN_EXE_nanovm"),
        s(&db)
    );
    let out = Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("refund\\u{202e}gnp.exe"), "{text}");
    assert!(text.contains("csi\\u{9b}2J"), "{text}");
    assert!(
        !text.contains('\u{202e}') && !text.contains('\u{9b}'),
        "{text:?}"
    );
}

/// `nanovm redrive` records the redrive (who, why, the raised budgets) under the run's lease
/// and makes the failed run `running` again, for a worker with its program; a completed run
/// is refused with nothing written.
#[test]
fn redrive_records_the_request_and_refuses_a_completed_run() {
    let dir = scratch("redrive");
    let (db, _) = database(&dir);
    let failed = trace(
        "r-fail",
        "customer_refund",
        "MARKER-FAIL",
        Some(Event::RunEnded {
            status: RunStatus::Failed,
            step: Some("refund".into()),
            message: Some("refund tool failed".into()),
        }),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        store
            .append("r-fail", failed.entries(), None)
            .await
            .unwrap();
    });
    let run = nanovm(&[
        "redrive",
        "--db",
        s(&db),
        "r-fail",
        "--actor",
        "ops@example.com",
        "--reason",
        "INC-42",
        "--extend-budget",
        "steps=5,duration=60000",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("r-fail redriven at `refund`"),
        "{}",
        run.stdout
    );
    let (record, entries) = rt.block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        (
            store.run("r-fail").await.unwrap().unwrap(),
            store.load("r-fail").await.unwrap().unwrap(),
        )
    });
    assert_eq!(record.status, RunStatus::Running);
    assert_eq!(record.lease_owner, None, "the lease was given back");
    match &entries.last().unwrap().event {
        Event::Redriven { step, by, extend } => {
            assert_eq!(
                (step.as_ref(), by.id.as_str(), by.reason.as_str()),
                ("refund", "ops@example.com", "INC-42")
            );
            assert_eq!(
                extend,
                &vec![
                    (nanovm_runtime::trace::BudgetKind::MaxSteps, 5),
                    (nanovm_runtime::trace::BudgetKind::MaxDuration, 60_000)
                ]
            );
        }
        other => panic!("not a redrive: {other:?}"),
    }
    // A completed run: refused by its state, exit 1 (as the other acts), nothing written.
    let run = nanovm(&[
        "redrive",
        "--db",
        s(&db),
        "r-ok",
        "--actor",
        "a",
        "--reason",
        "r",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("refused: run `r-ok` cannot be redriven"),
        "{}",
        run.stderr
    );
    let n = rt.block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        store.load("r-ok").await.unwrap().unwrap().len()
    });
    assert_eq!(n, 3);
}

/// `nanovm runs --registered FILE.nvm` marks the runs that are not ended and whose version
/// (program hash) no given program has: nobody will continue them.
#[test]
fn runs_marks_runs_of_unregistered_versions() {
    let dir = scratch("registered");
    let (db, _) = database(&dir);
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/workflows/customer_refund.nvm");
    let run = nanovm(&["runs", "--db", s(&db), "--registered", s(&src)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let line = |id: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no {id} in {}", run.stdout))
            .to_string()
    };
    // The fixture's hashes are not the compiled program's: every open run is unregistered.
    assert!(line("r-wait").contains("not registered"), "{}", run.stdout);
    assert!(line("r-nr").contains("not registered"), "{}", run.stdout);
    assert!(line("o-1 ").contains("not registered"), "{}", run.stdout);
    assert!(
        !line("r-ok").contains("not registered"),
        "an ended run needs no version"
    );
    let plain = nanovm(&["runs", "--db", s(&db)]);
    assert!(!plain.stdout.contains("not registered"));
    // A run of the registered version itself is not marked.
    let source = fs::read_to_string(&src).unwrap();
    let hash = nanovm_dsl::compile("customer_refund.nvm", &source).programs[0].hash;
    let mut t = Trace::new();
    t.push(
        Event::RunStarted {
            run_id: "r-current".into(),
            program: "customer_refund".into(),
            program_hash: Digest(hash),
            inputs: vec![],
        },
        &mut Encoder::new(),
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(&db).await.unwrap();
            store.append("r-current", t.entries(), None).await.unwrap();
        });
    let run = nanovm(&["runs", "--db", s(&db), "--registered", s(&src)]);
    let current = run
        .stdout
        .lines()
        .find(|l| l.starts_with("r-current"))
        .expect("listed");
    assert!(!current.contains("not registered"), "{current}");
}

#[path = "../../nanovm-runtime/tests/support/peers.rs"]
mod peers;

/// The same redrive on PostgreSQL (`--db postgres://...`): recorded under the run's lease,
/// the run `running` again; a completed run refused (exit 1) with nothing written.
#[test]
#[ignore = "needs PostgreSQL (DATABASE_URL)"]
fn redrive_works_on_postgres_too() {
    use nanovm_runtime::store::PostgresStore;
    let url = peers::database_url();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let (failed_id, ok_id) = (
        format!("cli-redrive-fail-{stamp}"),
        format!("cli-redrive-ok-{stamp}"),
    );
    let failed = trace(
        &failed_id,
        "customer_refund",
        "MARKER-FAIL",
        Some(Event::RunEnded {
            status: RunStatus::Failed,
            step: Some("refund".into()),
            message: Some("refund tool failed".into()),
        }),
    );
    let ok = trace(&ok_id, "customer_refund", "MARKER-OK", None);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = PostgresStore::connect(&url).await.unwrap();
        store
            .append(&failed_id, failed.entries(), None)
            .await
            .unwrap();
        store.append(&ok_id, ok.entries(), None).await.unwrap();
    });
    let redrive = |id: &str| {
        nanovm(&[
            "redrive", "--db", &url, id, "--actor", "ops", "--reason", "INC-7",
        ])
    };
    let run = redrive(&failed_id);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = redrive(&ok_id);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("cannot be redriven"), "{}", run.stderr);
    let (failed_now, ok_now) = rt.block_on(async {
        let store = PostgresStore::connect(&url).await.unwrap();
        (
            store.run(&failed_id).await.unwrap().unwrap(),
            store.load(&ok_id).await.unwrap().unwrap(),
        )
    });
    assert_eq!(failed_now.status, RunStatus::Running);
    assert_eq!(failed_now.lease_owner, None, "the lease was given back");
    assert_eq!(ok_now.len(), ok.entries().len(), "nothing written");
}
