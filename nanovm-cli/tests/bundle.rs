//! `nanovm export --bundle` and `nanovm audit BUNDLE.tar`: the auditor's bundle of one run,
//! checked offline. Each attack rewrites one file of a good bundle the way someone handing the
//! auditor doctored evidence would, and must be named (exit 1).

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use nanovm_runtime::Digest;
use nanovm_runtime::evidence::{KeySigner, Signer};
use nanovm_runtime::trace::{Datum, Encoder, Event, RunStatus, Trace};
use serde_json::json;

mod common;

use common::{Run, nanovm, public_key_file, s};

fn scratch(test: &str) -> PathBuf {
    common::scratch("bundle", test)
}

/// A store with checkpointed runs `a` and `b`, an unsigned run `u`, and `key.pub` beside it.
fn database(dir: &Path) -> (PathBuf, PathBuf) {
    let path = dir.join("runs.db");
    common::add_runs(
        &path,
        &[
            ("a", trace("a", 100), true),
            ("b", trace("b", 200), true),
            ("u", trace("u", 300), false),
        ],
    );
    (path, public_key_file(dir))
}

fn workflow(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/workflows")
        .join(name)
}

/// The hash of the (only) program in an example workflow file.
fn hash_of(file: &str) -> Digest {
    let source = fs::read_to_string(workflow(file)).unwrap();
    let c = nanovm_dsl::compile(file, &source);
    assert!(!c.has_errors(), "{file} compiles");
    Digest(c.programs[0].hash)
}

fn trace(run_id: &str, amount: i64) -> Trace {
    let mut t = Trace::new();
    let mut s = Encoder::new();
    t.push(
        Event::RunStarted {
            run_id: run_id.into(),
            program: "customer_refund".to_string().into(),
            program_hash: hash_of("refund.nvm"),
            inputs: vec![("amount_cents".into(), Datum::Plain(json!(amount)))],
        },
        &mut s,
    );
    t.push(
        Event::RunEnded {
            status: RunStatus::Success,
            step: Some("refunded".into()),
            message: None,
        },
        &mut s,
    );
    t
}

fn export(db: &Path, key: &Path, run: &str, out: &Path) -> Run {
    nanovm(&[
        "export",
        "--db",
        s(db),
        "--key",
        s(key),
        "--program",
        s(&workflow("refund.nvm")),
        "--bundle",
        s(out),
        run,
    ])
}

/// The files of a bundle, in order.
fn files(bundle: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(fs::File::open(bundle).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Writes `files` as a tar.
fn pack(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut tar = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap();
}

fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &files.iter().find(|(n, _)| n == name).unwrap().1
}

/// A copy of the good bundle with file `name` replaced (`None`: removed).
fn doctored(dir: &Path, good: &Path, name: &str, bytes: Option<Vec<u8>>) -> PathBuf {
    let mut f = files(good);
    match bytes {
        Some(b) => f.iter_mut().find(|(n, _)| n == name).unwrap().1 = b,
        None => f.retain(|(n, _)| n != name),
    }
    let out = dir.join(format!("doctored-{}.tar", name.replace('.', "-")));
    pack(&out, &f);
    out
}

fn audit(bundle: &Path, key: &Path) -> Run {
    nanovm(&["audit", s(bundle), "--key", s(key)])
}

#[test]
fn an_exported_bundle_audits_offline_and_is_the_same_bytes_twice() {
    let dir = scratch("good");
    let (db, key) = database(&dir);
    let out = dir.join("a.tar");
    let run = export(&db, &key, "a", &out);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("run `a` (2 entries"), "{}", run.stdout);
    let names: Vec<String> = files(&out).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "manifest.json",
            "trace.jsonl",
            "checkpoint.json",
            "proof.json",
            "program.nvm"
        ]
    );
    let first = fs::read(&out).unwrap();
    assert_eq!(export(&db, &key, "a", &out).code, 0);
    assert_eq!(
        fs::read(&out).unwrap(),
        first,
        "the same run exports the same bytes"
    );
    // Offline: the store is gone.
    fs::remove_file(&db).unwrap();
    let run = audit(&out, &key);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.starts_with("ok: run `a` (2 entries") && run.stdout.contains("leaf 0 of"),
        "{}",
        run.stdout
    );
}

#[test]
fn each_doctored_file_of_a_bundle_is_named() {
    let dir = scratch("doctored");
    let (db, key) = database(&dir);
    let (good, other) = (dir.join("a.tar"), dir.join("b.tar"));
    assert_eq!(export(&db, &key, "a", &good).code, 0);
    assert_eq!(export(&db, &key, "b", &other).code, 0);
    let theirs = files(&other);
    let refund = fs::read(workflow("refund.nvm")).unwrap();
    let order = fs::read(workflow("order_pipeline.nvm")).unwrap();
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        // A rewritten run, rechained: it verifies as a chain but is not what was signed.
        (
            "trace.jsonl",
            Some(trace("a", 99_999).to_jsonl().into_bytes()),
            "is not the one the checkpoint signs",
        ),
        // A trace cut short of its end.
        (
            "trace.jsonl",
            Some(
                trace("a", 100)
                    .to_jsonl()
                    .lines()
                    .next()
                    .unwrap()
                    .as_bytes()
                    .to_vec(),
            ),
            "incomplete",
        ),
        // Another run's evidence passed off as this one's.
        (
            "checkpoint.json",
            Some(file(&theirs, "checkpoint.json").to_vec()),
            "the checkpoint is of run `b`",
        ),
        (
            "proof.json",
            Some(file(&theirs, "proof.json").to_vec()),
            "proves another checkpoint",
        ),
        // Another program's source under the run's hash.
        (
            "program.nvm",
            Some(order),
            "holds no program with the run's hash",
        ),
        // The same program reformatted is still the program (the hash is of its meaning).
        (
            "program.nvm",
            Some([b"// reviewed\n".as_slice(), &refund].concat()),
            "",
        ),
        ("manifest.json", Some(b"{}".to_vec()), "`run_id` is missing"),
        ("checkpoint.json", None, "`checkpoint.json` is missing"),
    ];
    for (name, bytes, says) in cases {
        let bundle = doctored(&dir, &good, name, bytes);
        let run = audit(&bundle, &key);
        if says.is_empty() {
            assert_eq!(run.code, 0, "{name}: {}", run.stdout);
            continue;
        }
        assert_eq!(run.code, 1, "{name}: {}", run.stdout);
        assert!(run.stdout.contains(says), "{name} ({says}): {}", run.stdout);
        assert!(run.stdout.contains("bundle failed"), "{}", run.stdout);
    }
    // A proof whose path was tampered with.
    let mut proof: serde_json::Value =
        serde_json::from_slice(file(&files(&good), "proof.json")).unwrap();
    proof["index"] = json!(1);
    let bundle = doctored(
        &dir,
        &good,
        "proof.json",
        Some(proof.to_string().into_bytes()),
    );
    let run = audit(&bundle, &key);
    assert!(
        run.stdout.contains("does not verify under the key"),
        "{}",
        run.stdout
    );
    // Another key: nothing is signed by it.
    let wrong = dir.join("wrong.pub");
    fs::write(
        &wrong,
        KeySigner::from_seed([7; 32]).public_key().to_string(),
    )
    .unwrap();
    let run = audit(&good, &wrong);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("not signed by this key"),
        "{}",
        run.stdout
    );
    // A duplicated file, an unexpected one, and a bundle cut in half.
    let mut f = files(&good);
    f.push(("trace.jsonl".into(), b"".to_vec()));
    f.push(("notes.txt".into(), b"trust me".to_vec()));
    let twice = dir.join("twice.tar");
    pack(&twice, &f);
    let run = audit(&twice, &key);
    assert!(
        run.stdout.contains("`trace.jsonl` appears twice"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("unexpected file `notes.txt`"),
        "{}",
        run.stdout
    );
    let bytes = fs::read(&good).unwrap();
    let cut = dir.join("cut.tar");
    fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let run = audit(&cut, &key);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("is missing"), "{}", run.stdout);
}

#[test]
fn export_refuses_what_the_store_cannot_prove() {
    let dir = scratch("refused");
    let (db, key) = database(&dir);
    let out = dir.join("u.tar");
    // A run nothing signed.
    let run = export(&db, &key, "u", &out);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("no bundle: run `u`"), "{}", run.stderr);
    assert!(!out.exists(), "nothing written");
    // Another program's file.
    let run = nanovm(&[
        "export",
        "--db",
        s(&db),
        "--key",
        s(&key),
        "--program",
        s(&workflow("order_pipeline.nvm")),
        "--bundle",
        s(&out),
        "a",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("holds no program with the run's hash"),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "nothing written");
    // A run that is not there.
    let run = export(&db, &key, "nope", &out);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("is not in"), "{}", run.stderr);
}
