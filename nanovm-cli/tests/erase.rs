//! `nanovm erase` (issue 12, deliverable 3) and the canary test of its "Done when": random
//! canary strings stored as secret inputs; after `nanovm erase --subject`, not one byte of
//! them is left in any file of the SQLite store (database, `-wal`, `-shm`, journal), in the
//! JSONL export, in the auditor's bundle, or in anything the commands printed; the trace, the
//! checkpoints and the tree still verify. A control canary of another subject is found in the
//! store before and after (so the search would find an erased one that survived).

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use nanovm_runtime::Digest;
use nanovm_runtime::evidence::{self, Signer};
use nanovm_runtime::store::{JournalStore, SqliteStore};
use nanovm_runtime::trace::{Datum, Encoder, Event, RunStatus, Trace};
use nanovm_runtime::vault::Vault;
use serde_json::json;

mod common;

use common::{Run, nanovm, public_key_file, s, signer};

/// A canary nobody could have typed: 32 random hex digits after a marker.
fn canary(tag: &str) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write(tag.as_bytes());
    let a = h.finish();
    let mut h = RandomState::new().build_hasher();
    h.write_u64(a);
    format!("canary-{tag}-{a:016x}{:016x}", h.finish())
}

fn workflow(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/workflows")
        .join(name)
}

fn refund_hash() -> Digest {
    let source = fs::read_to_string(workflow("refund.nvm")).unwrap();
    let c = nanovm_dsl::compile("refund.nvm", &source);
    assert!(!c.has_errors());
    Digest(c.programs[0].hash)
}

/// A run of the refund program with one secret input, ended or suspended.
fn trace(run_id: &str, email: (nanovm_runtime::VaultId, Digest), suspended: bool) -> Trace {
    let mut t = Trace::new();
    let mut s = Encoder::new();
    t.push(
        Event::RunStarted {
            run_id: run_id.into(),
            program: "customer_refund".to_string().into(),
            program_hash: refund_hash(),
            inputs: vec![
                ("amount_cents".into(), Datum::Plain(json!(9000))),
                (
                    "email".into(),
                    Datum::Secret {
                        vault_id: email.0,
                        commitment: email.1,
                    },
                ),
            ],
        },
        &mut s,
    );
    t.push(
        if suspended {
            Event::Suspended {
                step: "manual_review".into(),
                event: "approval".into(),
                deadline_ms: None,
            }
        } else {
            Event::RunEnded {
                status: RunStatus::Success,
                step: Some("refunded".into()),
                message: None,
            }
        },
        &mut s,
    );
    t
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A store with runs `c1` (ended) and `c2` (suspended) of subject `subj-1`, holding canaries
/// `a` and `b`, and `k1` of subject `subj-2` holding `keep`; every run checkpointed.
fn database(path: &Path, a: &str, b: &str, keep: &str) {
    block_on(async {
        let store = SqliteStore::open(path).await.unwrap();
        let vault = store.vault();
        for (id, subject, secret, suspended) in [
            ("c1", "subj-1", a, false),
            ("c2", "subj-1", b, true),
            ("k1", "subj-2", keep, false),
        ] {
            let email = vault.put(json!(secret)).await.unwrap();
            store.link_subject(id, subject).await.unwrap();
            let t = trace(id, email, suspended);
            store.append(id, t.entries(), None).await.unwrap();
            evidence::checkpoint(&store, &signer(), 1_700_000_000_000, t.entries())
                .await
                .unwrap();
        }
    });
}

/// Every file under `dir` (the store's database and its `-wal`, `-shm`, `-journal`, the
/// exports) that contains `needle`, by bytes.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let bytes = fs::read(&p).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(p);
            }
        }
    }
    found
}

fn seed_file(dir: &Path) -> PathBuf {
    let path = dir.join("signing.key");
    fs::write(&path, format!("{}\n", "2a".repeat(32))).unwrap();
    assert_eq!(
        nanovm_runtime::evidence::KeySigner::from_file(&path)
            .unwrap()
            .public_key(),
        signer().public_key()
    );
    path
}

#[test]
fn after_nanovm_erase_no_canary_is_left_anywhere_and_the_evidence_verifies() {
    let dir = common::scratch("erase", "canary");
    let db = dir.join("runs.db");
    let (a, b, keep) = (canary("a"), canary("b"), canary("keep"));
    database(&db, &a, &b, &keep);
    let key = public_key_file(&dir);
    let signing = seed_file(&dir);
    // The search works: before the erasure every canary is in the store's files.
    for c in [&a, &b, &keep] {
        assert!(!files_holding(&dir, c).is_empty(), "{c} is stored");
    }
    let mut printed: Vec<Run> = Vec::new();

    let r = nanovm(&[
        "erase",
        "--db",
        s(&db),
        "--subject",
        "subj-1",
        "--by",
        "dpo@example.com",
        "--reason",
        "GDPR art. 17 request 4711",
        "--signing-key",
        s(&signing),
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("run `c1`") && r.stdout.contains("run `c2`"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("k1"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("subj-1"),
        "the subject id is not printed: {}",
        r.stdout
    );
    printed.push(r);

    // The evidence: the audit is clean, each run's export verifies against its checkpoint.
    let audit = nanovm(&["audit", "--db", s(&db), "--key", s(&key)]);
    assert_eq!(audit.code, 0, "{}{}", audit.stdout, audit.stderr);
    printed.push(audit);
    for id in ["c1", "c2"] {
        let jsonl = dir.join(format!("{id}.jsonl"));
        let cp = dir.join(format!("{id}.cp.json"));
        let t = nanovm(&[
            "trace",
            "--db",
            s(&db),
            "--key",
            s(&key),
            "--checkpoint-out",
            s(&cp),
            id,
        ]);
        assert_eq!(t.code, 0, "{}", t.stderr);
        assert!(t.stdout.contains(r#""type":"erased""#), "{}", t.stdout);
        assert!(t.stdout.contains("dpo@example.com"), "{}", t.stdout);
        fs::write(&jsonl, &t.stdout).unwrap();
        printed.push(t);
        let v = nanovm(&[
            "verify",
            s(&jsonl),
            "--key",
            s(&key),
            "--checkpoint",
            s(&cp),
        ]);
        assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
        printed.push(v);
    }
    let bundle = dir.join("c1.tar");
    let e = nanovm(&[
        "export",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--program",
        s(&workflow("refund.nvm")),
        "--bundle",
        s(&bundle),
        "c1",
    ]);
    assert_eq!(e.code, 0, "{}{}", e.stdout, e.stderr);
    printed.push(e);
    let ab = nanovm(&["audit", s(&bundle), "--key", s(&key)]);
    assert_eq!(ab.code, 0, "{}{}", ab.stdout, ab.stderr);
    printed.push(ab);
    // Listing and the run state, too.
    printed.push(nanovm(&["runs", "--db", s(&db), "--format", "json"]));

    // Not one byte of an erased canary anywhere; the control is still there.
    for c in [&a, &b] {
        let left = files_holding(&dir, c);
        assert!(left.is_empty(), "{c} survives in {left:?}");
        for r in &printed {
            assert!(!r.stdout.contains(c.as_str()) && !r.stderr.contains(c.as_str()));
        }
    }
    assert!(
        !files_holding(&dir, &keep).is_empty(),
        "the control survives"
    );
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "runs.db"), "{names:?}");

    // A second erasure finds nothing more to do; an unknown vault id is a usage error.
    let again = nanovm(&[
        "erase",
        "--db",
        s(&db),
        "--subject",
        "subj-1",
        "--by",
        "dpo",
        "--reason",
        "again",
    ]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.contains("no stored run"), "{}", again.stdout);
    let bad = nanovm(&[
        "erase",
        "--db",
        s(&db),
        "--vault-id",
        "xyz",
        "--by",
        "dpo",
        "--reason",
        "r",
    ]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}

/// A run an execution holds is refused (exit 1) and nothing is erased.
#[test]
fn nanovm_erase_refuses_a_run_held_by_an_execution() {
    let dir = common::scratch("erase", "held");
    let db = dir.join("runs.db");
    let (a, b, keep) = (canary("a"), canary("b"), canary("keep"));
    database(&db, &a, &b, &keep);
    block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        store
            .claim_run("c2", "worker-1", now, 600_000)
            .await
            .unwrap()
            .expect("claimed");
    });
    let r = nanovm(&[
        "erase",
        "--db",
        s(&db),
        "--subject",
        "subj-1",
        "--by",
        "dpo",
        "--reason",
        "r",
    ]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("run `c2` is held by `worker-1`"),
        "{}",
        r.stderr
    );
    for c in [&a, &b] {
        assert!(!files_holding(&dir, c).is_empty(), "{c} was not erased");
    }
    let t = nanovm(&["trace", "--db", s(&db), "c1"]);
    assert!(!t.stdout.contains("erased"), "{}", t.stdout);
}

#[path = "../../nanovm-runtime/tests/support/peers.rs"]
mod peers;

/// The canary test on PostgreSQL: after `nanovm erase --db postgres://...` and the documented
/// maintenance step (`VACUUM FULL` of the vault and index tables, as their owner), no row of
/// any nanovm table holds an erased canary, read as text; the control canary is found the same
/// way (so the search works); the audit passes. The server's data directory and WAL are not
/// reachable from a client and are not searched here (see docs/compliance.md).
#[test]
#[ignore = "needs PostgreSQL (DATABASE_URL)"]
fn after_nanovm_erase_on_postgres_and_vacuum_no_canary_is_left_in_any_table() {
    let url = peers::database_url();
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let (a, b, keep) = (canary("a"), canary("b"), canary("keep"));
    let id = |r: &str| format!("erase-{tag}-{r}");
    let (subject, other) = (format!("subj-{tag}"), format!("other-{tag}"));
    block_on(async {
        let store = nanovm_runtime::store::PostgresStore::connect(&url)
            .await
            .unwrap();
        let vault = store.vault();
        for (run, subj, secret, suspended) in [
            (id("c1"), &subject, &a, false),
            (id("c2"), &subject, &b, true),
            (id("k1"), &other, &keep, false),
        ] {
            let email = vault.put(json!(secret)).await.unwrap();
            store.link_subject(&run, subj).await.unwrap();
            let t = trace(&run, email, suspended);
            store.append(&run, t.entries(), None).await.unwrap();
            evidence::checkpoint(&store, &signer(), 1_700_000_000_000, t.entries())
                .await
                .unwrap();
        }
    });
    let hits = |needle: &str| -> Vec<String> {
        block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut found = Vec::new();
            for table in [
                "nanovm_runs",
                "nanovm_entries",
                "nanovm_vault",
                "nanovm_reveals",
                "nanovm_log",
                "nanovm_heads",
                "nanovm_secret_refs",
                "nanovm_subjects",
            ] {
                let n: i64 = client
                    .query_one(
                        &format!(
                            "SELECT count(*) FROM public.{table} t \
                             WHERE strpos(t::text, $1) > 0"
                        ),
                        &[&needle],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if n > 0 {
                    found.push(table.to_string());
                }
            }
            found
        })
    };
    assert_eq!(
        hits(&a),
        ["nanovm_vault"],
        "the search finds a stored canary"
    );
    let r = nanovm(&[
        "erase",
        "--db",
        &url,
        "--subject",
        &subject,
        "--by",
        "dpo",
        "--reason",
        "request",
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(&id("c1")) && r.stdout.contains(&id("c2")),
        "{}",
        r.stdout
    );
    // The documented maintenance step.
    block_on(async {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        // One statement each: VACUUM cannot run inside a transaction block.
        for table in ["nanovm_vault", "nanovm_subjects"] {
            client
                .batch_execute(&format!("VACUUM FULL public.{table}"))
                .await
                .unwrap();
        }
    });
    for c in [&a, &b] {
        assert!(hits(c).is_empty(), "{c} survives in {:?}", hits(c));
        assert!(!r.stdout.contains(c.as_str()) && !r.stderr.contains(c.as_str()));
    }
    assert!(hits(&subject).is_empty(), "the subject's links are gone");
    assert_eq!(hits(&keep), ["nanovm_vault"], "the control survives");
    let t = nanovm(&["trace", "--db", &url, &id("c2")]);
    assert_eq!(t.code, 0, "{}", t.stderr);
    assert!(t.stdout.contains(r#""type":"erased""#), "{}", t.stdout);
    for c in [&a, &b] {
        assert!(!t.stdout.contains(c.as_str()));
    }
}

/// What an erasure costs (`cargo test -p nanovm-cli --test erase -- --ignored erasure_cost
/// --nocapture`): a store of 2,000 runs, 10 per subject plus one subject with 500; the time of
/// `nanovm erase --subject` (the whole command: process start, claims, tombstones, vault,
/// WAL truncation) for a subject of 10 runs and for the one of 500.
#[test]
#[ignore = "a measurement, not a check"]
fn erasure_cost() {
    let dir = common::scratch("erase", "cost");
    let db = dir.join("runs.db");
    block_on(async {
        let store = SqliteStore::open(&db).await.unwrap();
        let vault = store.vault();
        for i in 0..2_000 {
            let subject = if i < 500 {
                "big".to_string()
            } else {
                format!("s{}", i / 10)
            };
            let id = format!("r{i}");
            let email = vault
                .put(json!(format!("user{i}@example.com")))
                .await
                .unwrap();
            store.link_subject(&id, &subject).await.unwrap();
            let t = trace(&id, email, i % 2 == 0);
            store.append(&id, t.entries(), None).await.unwrap();
        }
    });
    for subject in ["s100", "big"] {
        let start = std::time::Instant::now();
        let r = nanovm(&[
            "erase",
            "--db",
            s(&db),
            "--subject",
            subject,
            "--by",
            "dpo",
            "--reason",
            "cost",
        ]);
        let took = start.elapsed();
        assert_eq!(r.code, 0, "{}", r.stderr);
        let runs = r.stdout.lines().filter(|l| l.starts_with("run `")).count();
        println!("erasing subject {subject}: {runs} runs in {took:?}");
    }
}

fn erase_subject(db: &Path, subject: &str, signing: Option<&Path>) -> Run {
    let mut args = vec![
        "erase",
        "--db",
        s(db),
        "--subject",
        subject,
        "--by",
        "dpo@example.com",
        "--reason",
        "GDPR art. 17 request 4711",
    ];
    if let Some(k) = signing {
        args.extend(["--signing-key", s(k)]);
    }
    nanovm(&args)
}

fn prune_all(db: &Path, signing: &Path) -> Run {
    nanovm(&[
        "prune",
        "--db",
        s(db),
        "--ended-before",
        "2100-01-01",
        "--by",
        "ops@example.com",
        "--reason",
        "retention",
        "--signing-key",
        s(signing),
    ])
}

/// Red team: erase, then prune, then audit against a head kept before both. The erased run
/// that ended is pruned (its latest checkpoint covers its tombstone), the suspended one stays
/// with its tombstone, the audit passes naming the prunes, and no byte of the erased canaries
/// is left in the store's files. An erasure made without the signing key leaves its
/// tombstone uncovered, so the prune refuses that run instead of deleting what no
/// checkpoint proves.
#[test]
fn attack_erase_then_prune_then_audit_passes_and_leaves_no_canary() {
    let dir = common::scratch("erase", "erase-prune");
    let db = dir.join("runs.db");
    let (a, b, keep) = (canary("a"), canary("b"), canary("keep"));
    database(&db, &a, &b, &keep);
    let key = public_key_file(&dir);
    let signing = seed_file(&dir);
    let kept = dir.join("kept.json");
    let audit = nanovm(&[
        "audit",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--save-head",
        s(&kept),
    ]);
    assert_eq!(audit.code, 0, "{}", audit.stdout);
    let r = erase_subject(&db, "subj-1", Some(&signing));
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let p = prune_all(&db, &signing);
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    assert!(
        p.stdout.contains("pruned run `c1`") && p.stdout.contains("pruned run `k1`"),
        "{}",
        p.stdout
    );
    assert!(
        !p.stdout.contains("`c2`"),
        "a suspended run stays: {}",
        p.stdout
    );
    let audit = nanovm(&[
        "audit",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--head",
        s(&kept),
    ]);
    assert_eq!(audit.code, 0, "{}{}", audit.stdout, audit.stderr);
    assert!(
        audit.stdout.contains("pruned: run `c1`"),
        "{}",
        audit.stdout
    );
    assert!(!audit.stdout.contains("deleted run"), "{}", audit.stdout);
    let t = nanovm(&["trace", "--db", s(&db), "--key", s(&key), "c2"]);
    assert_eq!(t.code, 0, "{}", t.stderr);
    assert!(t.stdout.contains(r#""type":"erased""#), "{}", t.stdout);
    for c in [&a, &b] {
        assert!(
            files_holding(&dir, c).is_empty(),
            "{c}: {:?}",
            files_holding(&dir, c)
        );
        for out in [&r, &p, &audit, &t] {
            assert!(!out.stdout.contains(c.as_str()) && !out.stderr.contains(c.as_str()));
        }
    }

    // Without the key, the erasure's tombstone is beyond the last checkpoint: not pruned.
    let dir = common::scratch("erase", "erase-unsigned-prune");
    let db = dir.join("runs.db");
    database(&db, &canary("a"), &canary("b"), &canary("keep"));
    let signing = seed_file(&dir);
    let r = erase_subject(&db, "subj-1", None);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let p = prune_all(&db, &signing);
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    assert!(!p.stdout.contains("pruned run `c1`"), "{}", p.stdout);
    assert!(
        p.stderr.contains("c1"),
        "c1 listed as skipped: {}",
        p.stderr
    );
    assert!(p.stdout.contains("pruned run `k1`"), "{}", p.stdout);
}
