//! The `nanovm` binary, run as a user runs it: exit codes, output, and the pictures checked by
//! the real tools that draw them (Graphviz `dot`, Mermaid's own parser under Node).
//!
//! Example programs are read from `nanovm-dsl/tests/programs/` (good ones at the top, broken
//! ones under `broken/`), never copied. The tests that need a peer tool are `#[ignore]`d with the
//! tool named, so a fresh machine runs the suite and the summary counts them as ignored, never as
//! passed; `cargo test -- --ignored` runs them and fails if the tool is missing, as `.ci/run`
//! does after installing them with `apt-get install -y graphviz` and
//! `tests/peers/graph/install.sh`.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nanovm_runtime::Digest;
use nanovm_runtime::trace::Datum;
use nanovm_runtime::trace::Encoder;
use nanovm_runtime::trace::{Event, RunStatus, ToolOutcome, Trace};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Helpers

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts the exit code, showing everything the command said when it is wrong.
    #[track_caller]
    fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        assert!(
            !self.stderr.contains("panicked"),
            "the binary panicked:\n{}",
            self.stderr
        );
        self
    }
}

fn nanovm<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_nanovm"))
        .args(args)
        .output()
        .expect("the nanovm binary runs");
    Run {
        // A signal (no code) is never a valid outcome.
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn programs_dir() -> PathBuf {
    workspace().join("nanovm-dsl/tests/programs")
}

/// The `.nvm` files directly in `dir`, sorted.
fn nvm_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nvm"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .nvm files in {}", dir.display());
    files
}

fn good_programs() -> Vec<PathBuf> {
    nvm_files(&programs_dir())
}

fn broken_programs() -> Vec<PathBuf> {
    nvm_files(&programs_dir().join("broken"))
}

fn fixture(name: &str) -> PathBuf {
    programs_dir().join(name)
}

/// A fresh, empty scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("nanovm-cli")
        .join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `customer_refund.nvm` with an unused tool declared on line 12: compiles, with one W0404 there.
/// (The example programs themselves compile warning-free.)
fn program_with_a_warning(test: &str) -> PathBuf {
    let text = fs::read_to_string(fixture("customer_refund.nvm")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(11, "    tool lookup_order(order_id: string) -> json");
    write(
        &scratch(test),
        "customer_refund.nvm",
        lines.join("\n") + "\n",
    )
}

fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, contents).unwrap();
    path
}

/// A test path as an argument (they are all UTF-8).
fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

fn check_json(args: &[&str], code: i32) -> Value {
    let mut all = vec!["check", "--format", "json"];
    all.extend_from_slice(args);
    let run = nanovm(all).expect(code);
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout))
}

fn codes(file: &Value) -> Vec<&str> {
    file["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect()
}

/// A small trace built the way the runtime builds them.
fn sample_trace(refund_status: &str) -> Trace {
    let mut t = Trace::new();
    let mut s = Encoder::new();
    t.push(
        Event::RunStarted {
            run_id: "run-1".into(),
            program: "customer_refund".into(),
            program_hash: Digest::of(b"customer_refund"),
            inputs: vec![("order_id".into(), Datum::Plain(json!("A-17")))],
        },
        &mut s,
    );
    t.push(
        Event::ToolResult {
            step: "refund".into(),
            branch: None,
            attempt: 1,
            tool: "issue_refund".into(),
            key: Digest::of(b"effect"),
            args: None,
            result: ToolOutcome::Ok(json!({ "status": refund_status })),
            next: Some("done".into()),
        },
        &mut s,
    );
    t.push(
        Event::RunEnded {
            status: RunStatus::Success,
            step: Some("done".into()),
            message: None,
        },
        &mut s,
    );
    t
}

/// Fails an (ignored, explicitly requested) test whose peer tool is missing: a check that
/// cannot run never passes.
fn peer_missing(what: &str, how: &str) -> ! {
    panic!("{what} is not installed, so the graph output cannot be validated; install it ({how})")
}

// ---------------------------------------------------------------------------------------------
// nanovm check

#[test]
fn check_good_programs_exits_0() {
    let warns = program_with_a_warning("check_good_programs");
    let args = std::iter::once(PathBuf::from("check")).chain(good_programs());
    let run = nanovm(args.chain([warns])).expect(0);
    assert!(run.stdout.is_empty(), "text mode writes only to stderr");
    // Warnings are shown, and allowed.
    assert!(run.stderr.contains("warning["), "{}", run.stderr);
    assert!(!run.stderr.contains("error["), "{}", run.stderr);
}

#[test]
fn check_each_broken_program_exits_1_with_its_code() {
    let expected = [
        ("choice_typo", &["E0304"][..]),
        ("secret_in_prompt", &["E0305"]),
        ("trap_cycle", &["E0104"]),
        ("typo_target", &["E0102", "E0103"]),
        ("unguarded_effect", &["E0106"]),
    ];
    let files = broken_programs();
    assert_eq!(
        files.len(),
        expected.len(),
        "a broken example without expectations here"
    );
    for file in files {
        let name = stem(&file);
        let (_, want) = expected
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no expected codes for {name}"));
        let run = nanovm(["check", s(&file)]).expect(1);
        for code in *want {
            assert!(
                run.stderr.contains(&format!("error[{code}]")),
                "{name}: {}",
                run.stderr
            );
        }
        assert!(
            run.stderr.contains("error: could not compile"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn check_several_files_reports_every_error() {
    let mut args = vec![PathBuf::from("check")];
    args.extend(broken_programs());
    args.push(fixture("payment_recovery.nvm"));
    let run = nanovm(&args).expect(1);
    for file in broken_programs() {
        assert!(
            run.stderr
                .contains(&format!("could not compile `{}`", file.display())),
            "{} not reported:\n{}",
            file.display(),
            run.stderr
        );
    }
    let files = args.len() - 1;
    assert!(
        run.stderr
            .contains(&format!("checked {files} files: 6 errors, 0 warnings")),
        "{}",
        run.stderr
    );
}

#[test]
fn check_missing_file_exits_2_and_still_checks_the_others() {
    let dir = scratch("check_missing");
    let missing = dir.join("nope.nvm");
    let run = nanovm(["check", s(&missing)]).expect(2);
    assert!(
        run.stderr
            .contains(&format!("error: {}: no such file", missing.display())),
        "{}",
        run.stderr
    );

    // A missing file outranks compile errors, and does not stop the other files being checked.
    let broken = fixture("broken/typo_target.nvm");
    let run = nanovm(["check", s(&missing), s(&broken)]).expect(2);
    assert!(run.stderr.contains("error[E0102]"), "{}", run.stderr);
    assert!(
        run.stderr.contains("1 file could not be read"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_directory_checks_every_nvm_file_under_it_in_order() {
    // The whole programs folder: three good programs, five broken ones one level down.
    let run = nanovm(["check", s(&programs_dir())]).expect(1);
    let mut expected: Vec<PathBuf> = good_programs();
    expected.extend(broken_programs());
    expected.sort();
    let broken: Vec<PathBuf> = broken_programs();
    let reported: Vec<&str> = run
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("error: could not compile `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let broken_names: Vec<String> = broken.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(
        reported, broken_names,
        "every broken file, sorted:\n{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("checked {} files: 6 errors, ", expected.len())),
        "{}",
        run.stderr
    );

    // JSON lists the files in sorted path order, with the good ones clean.
    let doc = check_json(&[s(&programs_dir())], 1);
    let listed: Vec<&str> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    let expected_names: Vec<String> = expected.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(listed, expected_names);
    assert_eq!(doc["errors"], 6);

    // Only good programs under a directory: exit 0; other files are ignored.
    let dir = scratch("check_directory");
    fs::create_dir_all(dir.join("nested/deeper")).unwrap();
    fs::copy(
        fixture("customer_refund.nvm"),
        dir.join("nested/deeper/a.nvm"),
    )
    .unwrap();
    fs::copy(fixture("order_pipeline.nvm"), dir.join("b.nvm")).unwrap();
    write(&dir, "notes.txt", "not a program");
    let run = nanovm(["check", s(&dir)]).expect(0);
    assert!(
        run.stderr.contains("checked 2 files: 0 errors"),
        "{}",
        run.stderr
    );

    // One broken file deep down makes the whole directory fail.
    fs::copy(
        fixture("broken/typo_target.nvm"),
        dir.join("nested/deeper/c.nvm"),
    )
    .unwrap();
    let run = nanovm(["check", s(&dir)]).expect(1);
    assert!(run.stderr.contains("error[E0102]"), "{}", run.stderr);
}

#[test]
fn check_directory_without_programs_is_a_usage_error() {
    let dir = scratch("check_empty_directory");
    write(&dir, "readme.md", "no programs here");
    let run = nanovm(["check", s(&dir)]).expect(2);
    assert!(
        run.stderr
            .contains(&format!("error: {}: no .nvm file under it", dir.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn check_json_counts_and_codes() {
    let good = program_with_a_warning("check_json_counts");
    let broken = fixture("broken/typo_target.nvm");
    let doc = check_json(&[s(&good), s(&broken)], 1);
    assert_eq!(doc["errors"], 2);
    assert_eq!(doc["warnings"], 1);
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);

    assert_eq!(files[0]["file"], good.display().to_string());
    assert_eq!(files[0]["programs"], json!(["customer_refund"]));
    assert_eq!(files[0]["errors"], 0);
    assert_eq!(files[0]["warnings"], 1);
    assert_eq!(codes(&files[0]), ["W0404"]);
    let w = &files[0]["diagnostics"][0];
    assert_eq!(w["severity"], "warning");
    assert_eq!(w["primary"]["line"], 12);
    assert!(
        w["rendered"]
            .as_str()
            .unwrap()
            .starts_with("warning[W0404]")
    );

    assert_eq!(files[1]["programs"], json!([]));
    assert_eq!(files[1]["errors"], 2);
    assert_eq!(files[1]["warnings"], 0);
    assert_eq!(codes(&files[1]), ["E0102", "E0103"]);
    assert_eq!(files[1]["diagnostics"][0]["help"], "did you mean `review`?");

    // Clean input: exit 0, and the document is still printed.
    let doc = check_json(&[s(&fixture("payment_recovery.nvm"))], 0);
    assert_eq!(doc["errors"], 0);
    assert_eq!(doc["warnings"], 0);
    assert_eq!(doc["files"][0]["diagnostics"], json!([]));
}

#[test]
fn check_json_keeps_stdout_parseable_when_a_file_is_missing() {
    let dir = scratch("check_json_missing");
    let missing = dir.join("gone.nvm");
    let good = fixture("payment_recovery.nvm");
    let doc = check_json(&[s(&missing), s(&good)], 2);
    assert_eq!(doc["files"].as_array().unwrap().len(), 1);
    assert_eq!(doc["files"][0]["programs"], json!(["payment_recovery"]));
}

#[test]
fn deny_warnings_fails_on_warnings_only() {
    let warns = program_with_a_warning("deny_warnings");
    let run = nanovm(["check", s(&warns)]).expect(0);
    assert!(run.stderr.contains("warning[W0404]"), "{}", run.stderr);

    let run = nanovm(["check", "--deny-warnings", s(&warns)]).expect(1);
    assert!(run.stderr.contains("warnings are denied"), "{}", run.stderr);

    let doc = check_json(&["--deny-warnings", s(&warns)], 1);
    assert_eq!(doc["errors"], 0);
    assert_eq!(doc["warnings"], 1);

    let clean = fixture("payment_recovery.nvm");
    nanovm(["check", "--deny-warnings", s(&clean)]).expect(0);
}

#[test]
fn invalid_utf8_is_e0003_not_a_panic() {
    let dir = scratch("invalid_utf8");
    let mut bytes = fs::read(fixture("payment_recovery.nvm")).unwrap();
    bytes.splice(10..10, [0xFF, 0xFE]);
    let file = write(&dir, "latin1.nvm", bytes);
    let run = nanovm(["check", s(&file)]).expect(1);
    assert!(run.stderr.contains("error[E0003]"), "{}", run.stderr);
    assert!(
        run.stderr.contains("invalid byte 0xFF at offset 10"),
        "{}",
        run.stderr
    );
    let doc = check_json(&[s(&file)], 1);
    assert_eq!(codes(&doc["files"][0]), ["E0003"]);
}

#[test]
fn empty_file_is_e0004() {
    let dir = scratch("empty_file");
    let file = write(&dir, "empty.nvm", "");
    let run = nanovm(["check", s(&file)]).expect(1);
    assert!(
        run.stderr.contains("error[E0004]: no program in this file"),
        "{}",
        run.stderr
    );
    let comments = write(&dir, "comments.nvm", "// nothing here yet\n");
    let doc = check_json(&[s(&comments)], 1);
    assert_eq!(codes(&doc["files"][0]), ["E0004"]);
}

#[test]
fn oversized_file_is_e0002_with_its_real_size() {
    let dir = scratch("oversized");
    let size = 3 << 20;
    let file = write(&dir, "huge.nvm", vec![b' '; size]);
    let run = nanovm(["check", s(&file)]).expect(1);
    assert!(
        run.stderr.contains(&format!(
            "error[E0002]: the file is {size} bytes; the limit is"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_2() {
    nanovm(["check"]).expect(2);
    nanovm(["graph"]).expect(2);
    nanovm(["verify"]).expect(2);
    nanovm(["diff", "only-one.jsonl"]).expect(2);
    nanovm(["frobnicate"]).expect(2);
    let good = fixture("payment_recovery.nvm");
    nanovm(["check", "--format", "yaml", s(&good)]).expect(2);
    nanovm(["graph", "--format", "png", s(&good)]).expect(2);
}

// ---------------------------------------------------------------------------------------------
// nanovm graph

#[test]
fn graph_every_good_program_in_both_formats() {
    for file in good_programs() {
        let name = stem(&file);
        let run = nanovm(["graph", s(&file)]).expect(0);
        assert!(
            run.stdout.starts_with("flowchart TD\n"),
            "{name}:\n{}",
            run.stdout
        );
        assert!(run.stdout.contains("classDef guard"), "{name}");
        let mermaid = nanovm(["graph", "--format", "mermaid", s(&file)]).expect(0);
        assert_eq!(mermaid.stdout, run.stdout, "mermaid is the default format");

        let dot = nanovm(["graph", "--format", "dot", s(&file)]).expect(0);
        assert!(
            dot.stdout.starts_with(&format!("digraph \"{name}\" {{\n")),
            "{}",
            dot.stdout
        );
        assert!(dot.stdout.trim_end().ends_with('}'), "{}", dot.stdout);
    }
}

#[test]
fn graph_writes_to_output_file() {
    let dir = scratch("graph_output");
    let out = dir.join("refund.dot");
    let file = fixture("customer_refund.nvm");
    let run = nanovm(["graph", s(&file), "--format", "dot", "-o", s(&out)]).expect(0);
    assert!(run.stdout.is_empty());
    let stdout = nanovm(["graph", s(&file), "--format", "dot"]).expect(0);
    assert_eq!(fs::read_to_string(&out).unwrap(), stdout.stdout);

    let unwritable = dir.join("no/such/dir/out.dot");
    nanovm(["graph", s(&file), "-o", s(&unwritable)]).expect(2);
}

#[test]
fn graph_program_selection() {
    let dir = scratch("graph_program");
    let mut two = fs::read(fixture("customer_refund.nvm")).unwrap();
    two.extend(fs::read(fixture("payment_recovery.nvm")).unwrap());
    let file = write(&dir, "two.nvm", two);

    let run = nanovm(["graph", s(&file)]).expect(2);
    assert!(
        run.stderr.contains("holds 2 programs: `customer_refund`, `payment_recovery`; choose one with --program NAME"),
        "{}",
        run.stderr
    );

    let run = nanovm([
        "graph",
        s(&file),
        "--program",
        "payment_recovery",
        "--format",
        "dot",
    ])
    .expect(0);
    assert!(
        run.stdout.starts_with("digraph \"payment_recovery\""),
        "{}",
        run.stdout
    );
    let alone = nanovm([
        "graph",
        s(&fixture("payment_recovery.nvm")),
        "--format",
        "dot",
    ])
    .expect(0);
    assert_eq!(run.stdout, alone.stdout);

    let run = nanovm(["graph", s(&file), "--program", "nope"]).expect(2);
    assert!(
        run.stderr.contains("has no program `nope`"),
        "{}",
        run.stderr
    );
}

#[test]
fn graph_of_a_broken_program_draws_it_with_the_errors_marked() {
    let file = fixture("broken/unguarded_effect.nvm");
    let run = nanovm(["graph", s(&file)]).expect(1);
    assert!(run.stderr.contains("error[E0106]"), "{}", run.stderr);
    let out = &run.stdout;
    assert!(out.starts_with("flowchart TD\n"), "{out}");
    // The call the error is about carries the code and is styled red.
    let charge = out.lines().find(|l| l.contains("charge<br/>")).expect(out);
    assert!(charge.contains("E0106"), "{out}");
    let id = charge
        .trim()
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap();
    assert!(out.contains("classDef error "), "{out}");
    assert!(
        out.lines().any(|l| l.trim().starts_with("class ")
            && l.trim().ends_with(" error")
            && l.contains(id)),
        "{out}"
    );
    // Steps without errors are drawn plainly.
    let stop = out.lines().find(|l| l.contains("stop<br/>")).expect(out);
    assert!(!stop.contains('E'), "{out}");

    let run = nanovm(["graph", "--format", "dot", s(&file)]).expect(1);
    assert!(run.stderr.contains("error[E0106]"), "{}", run.stderr);
    let charge = run
        .stdout
        .lines()
        .find(|l| l.contains("label=\"charge\\n"))
        .expect(&run.stdout);
    assert!(
        charge.contains("E0106") && charge.contains("#dc2626"),
        "{}",
        run.stdout
    );

    // A target that names no step: drawn as a missing node with the code, the edge red.
    let file = fixture("broken/typo_target.nvm");
    let run = nanovm(["graph", "--format", "dot", s(&file)]).expect(1);
    assert!(run.stderr.contains("error[E0102]"), "{}", run.stderr);
    let missing = run
        .stdout
        .lines()
        .find(|l| l.contains("reviw") && l.contains("label="))
        .expect(&run.stdout);
    assert!(
        missing.contains("E0102") && missing.contains("#dc2626"),
        "{}",
        run.stdout
    );
    let review = run
        .stdout
        .lines()
        .find(|l| l.contains("label=\"review\\n"))
        .expect(&run.stdout);
    assert!(review.contains("E0103"), "{}", run.stdout);

    // Cannot even be parsed: diagnostics only, nothing drawn.
    let dir = scratch("graph_unparsable");
    let bad = write(&dir, "bad.nvm", "program broken {\n    llm ask {\n");
    let run = nanovm(["graph", s(&bad)]).expect(1);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("error["), "{}", run.stderr);

    let dir = scratch("graph_missing");
    nanovm(["graph", s(&dir.join("nope.nvm"))]).expect(2);
}

/// Every good example's DOT goes through Graphviz itself.
#[test]
#[ignore = "needs Graphviz `dot` (apt-get install -y graphviz); run with --ignored"]
fn dot_output_is_accepted_by_graphviz() {
    match Command::new("dot").arg("-V").output() {
        Ok(out) if out.status.success() => {
            println!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        _ => peer_missing("graphviz", "apt-get install -y graphviz"),
    }
    let dir = scratch("dot_peer");
    // Good programs (exit 0) and the sketches of broken ones, errors marked (exit 1).
    let programs = good_programs()
        .into_iter()
        .map(|f| (f, 0))
        .chain(broken_programs().into_iter().map(|f| (f, 1)));
    for (file, code) in programs {
        let name = stem(&file);
        let dot = dir.join(format!("{name}.dot"));
        let svg = dir.join(format!("{name}.svg"));
        nanovm(["graph", s(&file), "--format", "dot", "-o", s(&dot)]).expect(code);
        let out = Command::new("dot")
            .arg("-Tsvg")
            .arg(&dot)
            .arg("-o")
            .arg(&svg)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "dot rejected {name}: {stderr}");
        assert!(
            stderr.trim().is_empty(),
            "dot complained about {name}: {stderr}"
        );
        let svg = fs::read_to_string(&svg).unwrap();
        assert!(svg.contains("<svg"), "{name}: no SVG");
        println!("ok: {name}.dot");
    }

    // And dot does reject what is not DOT, so the check above means something.
    let broken = write(&dir, "broken.dot", "digraph \"x\" {\n    s0 -> ;\n");
    let out = Command::new("dot")
        .arg("-Tsvg")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success(), "dot accepted broken input");
}

/// Every good example's Mermaid goes through Mermaid's own parser (tests/peers/graph).
#[test]
#[ignore = "needs node and Mermaid's parser (tests/peers/graph/install.sh); run with --ignored"]
fn mermaid_output_is_accepted_by_mermaid() {
    let script = workspace().join("tests/peers/graph/check-mermaid.mjs");
    let version = Command::new("node").arg(&script).arg("--version").output();
    match version {
        Ok(out) if out.status.success() => {
            println!("{}", String::from_utf8_lossy(&out.stdout).trim());
        }
        Ok(out) if out.status.code() != Some(3) => {
            panic!(
                "check-mermaid.mjs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }
        _ => peer_missing(
            "mermaid (node + tests/peers/graph packages)",
            "tests/peers/graph/install.sh",
        ),
    }
    let dir = scratch("mermaid_peer");
    let mut files = Vec::new();
    for file in good_programs() {
        let out = dir.join(format!("{}.mmd", stem(&file)));
        nanovm(["graph", s(&file), "-o", s(&out)]).expect(0);
        files.push(out);
    }
    // The sketches of broken programs, errors marked, are Mermaid too.
    for file in broken_programs() {
        let out = dir.join(format!("broken-{}.mmd", stem(&file)));
        nanovm(["graph", s(&file), "-o", s(&out)]).expect(1);
        files.push(out);
    }
    let out = Command::new("node")
        .arg(&script)
        .args(&files)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "mermaid rejected nanovm's output:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("ok: ").count(), files.len(), "{stdout}");

    // The same checker rejects a damaged copy of real output (one node's closing `]]` lost),
    // so a pass above is mermaid's verdict, not a checker that accepts anything.
    let good = fs::read_to_string(&files[0]).unwrap();
    let damaged = good.replacen("\"]]", "\"", 1);
    assert_ne!(
        damaged, good,
        "the first example has no effect node to damage"
    );
    let damaged = write(&dir, "damaged.mmd", damaged);
    let out = Command::new("node")
        .arg(&script)
        .arg(&damaged)
        .arg(&files[0])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("rejected: {}", damaged.display())),
        "{stdout}"
    );
    assert!(stdout.contains("Parse error"), "{stdout}");
    assert!(
        stdout.contains(&format!("ok: {}", files[0].display())),
        "{stdout}"
    );

    let out = Command::new("node")
        .arg(&script)
        .arg("--self-test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// ---------------------------------------------------------------------------------------------
// nanovm verify

#[test]
fn verify_good_trace_prints_root() {
    let dir = scratch("verify_good");
    let trace = sample_trace("refunded");
    let file = write(&dir, "run.jsonl", trace.to_jsonl());
    let run = nanovm(["verify", s(&file)]).expect(0);
    assert_eq!(
        run.stdout,
        format!("ok: 3 entries, root {}\n", trace.root().to_hex())
    );
}

/// Attack: a trace cut after any entry, an empty file, `/dev/null`, a lone `run_ended` and two
/// `run_started` all verified "ok".
#[test]
fn verify_requires_the_whole_run() {
    let dir = scratch("verify_whole");
    let trace = sample_trace("refunded");
    let text = trace.to_jsonl();
    let lines: Vec<&str> = text.lines().collect();

    // Cut after any entry: the chain verifies, the evidence is incomplete.
    for cut in 1..lines.len() {
        let prefix: String = lines[..cut].iter().map(|l| format!("{l}\n")).collect();
        let file = write(&dir, &format!("cut{cut}.jsonl"), &prefix);
        let run = nanovm(["verify", s(&file)]).expect(1);
        let root = trace.entries()[cut - 1].hash.to_hex();
        assert!(
            run.stdout
                .starts_with(&format!("incomplete: {cut} entries, root {root}: ")),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("no closing `run_ended` or `suspended`"),
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains("--partial"), "{}", run.stdout);
        // Accepted as a prefix only when asked.
        let run = nanovm(["verify", "--partial", s(&file)]).expect(0);
        assert!(
            run.stdout
                .starts_with(&format!("ok: {cut} entries, root {root} (a prefix: ")),
            "{}",
            run.stdout
        );
    }
    // The whole run passes with or without --partial.
    let whole = write(&dir, "whole.jsonl", &text);
    nanovm(["verify", "--partial", s(&whole)]).expect(0);

    // Nothing at all is no evidence, even with --partial.
    let empty = write(&dir, "empty.jsonl", "");
    let mut nothing = vec![empty];
    if Path::new("/dev/null").exists() {
        nothing.push(PathBuf::from("/dev/null"));
    }
    for file in &nothing {
        for partial in [false, true] {
            let mut args = vec!["verify"];
            if partial {
                args.push("--partial");
            }
            args.push(s(file));
            let run = nanovm(args).expect(1);
            assert_eq!(
                run.stdout,
                format!(
                    "incomplete: 0 entries, root {}: the trace is empty: it has no `run_started`\n",
                    "0".repeat(64)
                )
            );
        }
    }

    // A lone `run_ended` (a valid chain of one entry).
    let mut lone = Trace::new();
    lone.push(
        Event::RunEnded {
            status: RunStatus::Success,
            step: Some("done".into()),
            message: None,
        },
        &mut Encoder::new(),
    );
    let file = write(&dir, "lone.jsonl", lone.to_jsonl());
    for args in [vec!["verify"], vec!["verify", "--partial"]] {
        let run = nanovm(args.into_iter().chain([s(&file)])).expect(1);
        assert!(
            run.stdout
                .contains("entry 0 is `run_ended`, but a run's trace starts with `run_started`"),
            "{}",
            run.stdout
        );
    }

    // Two runs in one trace (re-chained, so every hash is right).
    let mut twice = Trace::new();
    let mut enc = Encoder::new();
    for e in trace.entries().iter().chain(trace.entries()) {
        twice.push(e.event.clone(), &mut enc);
    }
    let file = write(&dir, "twice.jsonl", twice.to_jsonl());
    for args in [vec!["verify"], vec!["verify", "--partial"]] {
        let run = nanovm(args.into_iter().chain([s(&file)])).expect(1);
        assert!(
            run.stdout.starts_with("broken: 6 entries, root "),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout.contains("entry 3 is a second `run_started`"),
            "{}",
            run.stdout
        );
    }
}

/// A suspended run's stored trace ends with `suspended`: complete as it stands.
#[test]
fn verify_accepts_a_suspension_as_the_close() {
    let dir = scratch("verify_suspended");
    let mut t = Trace::new();
    let mut enc = Encoder::new();
    t.push(sample_trace("x").entries()[0].event.clone(), &mut enc);
    t.push(
        Event::Suspended {
            step: "wait".into(),
            event: "payment".into(),
            deadline_ms: Some(1_700_000_000_000),
        },
        &mut enc,
    );
    let file = write(&dir, "suspended.jsonl", t.to_jsonl());
    let run = nanovm(["verify", s(&file)]).expect(0);
    assert_eq!(
        run.stdout,
        format!("ok: 2 entries, root {}\n", t.root().to_hex())
    );
}

#[test]
fn verify_flipped_byte_names_the_entry() {
    let dir = scratch("verify_flip");
    let text = sample_trace("refunded").to_jsonl();
    // Change `refunded` to `refundee` on the second line.
    let at = text.find("refunded").unwrap() + "refunde".len();
    let mut bytes = text.into_bytes();
    bytes[at] = b'e';
    let file = write(&dir, "tampered.jsonl", &bytes);
    let run = nanovm(["verify", s(&file)]).expect(1);
    assert_eq!(
        run.stdout,
        "broken: entry 1 (line 2): hash does not match the entry's contents\n"
    );

    // Bytes that are not UTF-8 break the entry they sit in; they are not an I/O error.
    bytes[at] = 0xFF;
    let file = write(&dir, "binary.jsonl", &bytes);
    let run = nanovm(["verify", s(&file)]).expect(1);
    assert!(
        run.stdout
            .starts_with("broken: entry 1 (line 2): not valid UTF-8"),
        "{}",
        run.stdout
    );
}

/// Attack: `nanovm verify` quoted a trace's text and a path raw, escape sequences included.
#[test]
fn verify_escapes_what_it_quotes() {
    let dir = scratch("verify_escapes");
    // A status no run has: serde's message quotes it.
    let text = sample_trace("refunded")
        .to_jsonl()
        .replace("\"success\"", "\"\\u001b[2J\\u0007\"");
    let file = write(&dir, "evil.jsonl", text);
    let run = nanovm(["verify", s(&file)]).expect(1);
    assert!(
        run.stdout.starts_with("broken: entry 2 (line 3): "),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("\\u{1b}[2J\\u{7}"), "{}", run.stdout);
    assert!(!run.stdout.contains('\u{1b}'), "{:?}", run.stdout);

    let missing = dir.join("no\u{1b}]0;pwned\u{7}.jsonl");
    let run = nanovm(["verify", s(&missing)]).expect(2);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(
        run.stderr
            .contains("no\\u{1b}]0;pwned\\u{7}.jsonl: no such file"),
        "{}",
        run.stderr
    );
}

/// Attack: `nanovm verify /dev/zero` grew to 5.5 GB before it was killed. It now streams, one
/// line of at most 16 MiB at a time: under a 512 MiB address-space limit it must stop by itself
/// with a verdict.
#[test]
fn verify_of_an_endless_input_stops_in_bounded_memory() {
    let zero = Path::new("/dev/zero");
    let sh = Path::new("/bin/sh");
    if !zero.exists() || !sh.exists() {
        println!(
            "skipped: no /dev/zero or /bin/sh here, so the endless-input bound was NOT checked"
        );
        return;
    }
    let out = Command::new(sh)
        .arg("-c")
        .arg("ulimit -v 524288 && exec \"$0\" verify /dev/zero")
        .arg(env!("CARGO_BIN_EXE_nanovm"))
        .output()
        .expect("sh runs");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
    .expect(1);
    assert_eq!(
        run.stdout,
        "broken: entry 0 (line 1): the line is longer than 16777216 bytes\n"
    );
}

#[test]
fn verify_missing_file_exits_2() {
    let dir = scratch("verify_missing");
    let run = nanovm(["verify", s(&dir.join("nope.jsonl"))]).expect(2);
    assert!(
        run.stderr.contains("nope.jsonl: no such file"),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// nanovm diff

#[test]
fn diff_identical_traces() {
    let dir = scratch("diff_identical");
    let trace = sample_trace("refunded");
    let a = write(&dir, "a.jsonl", trace.to_jsonl());
    let b = write(&dir, "b.jsonl", trace.to_jsonl());
    let run = nanovm(["diff", s(&a), s(&b)]).expect(0);
    assert_eq!(
        run.stdout,
        format!("identical: 3 entries, root {}\n", trace.root().to_hex())
    );
}

#[test]
fn diff_shows_first_divergence() {
    let dir = scratch("diff_different");
    let a = write(&dir, "a.jsonl", sample_trace("refunded").to_jsonl());
    let b = write(&dir, "b.jsonl", sample_trace("denied").to_jsonl());
    let run = nanovm(["diff", s(&a), s(&b)]).expect(1);
    let out = &run.stdout;
    assert!(
        out.starts_with("differ: first divergence at entry 1 (line 2): tool_result\n"),
        "{out}"
    );
    let minus = out
        .find(&format!("--- {} (3 entries, root ", a.display()))
        .expect(out);
    let plus = out
        .find(&format!("+++ {} (3 entries, root ", b.display()))
        .expect(out);
    assert!(minus < plus);
    // Only the field that differs, with its path: never the two whole events.
    let changed: Vec<&str> = out.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(changed.len(), 1, "{out}");
    assert!(
        changed[0].ends_with(".status: \"refunded\" -> \"denied\""),
        "{out}"
    );
    assert!(changed[0].starts_with("result."), "{out}");
    assert!(!out.contains("issue_refund"), "equal fields shown: {out}");
    assert!(!out.contains("\"type\""), "whole events shown: {out}");

    // Different kinds: the kinds, then the fields that differ.
    let mut t = Trace::new();
    let mut enc = Encoder::new();
    t.push(sample_trace("x").entries()[0].event.clone(), &mut enc);
    t.push(
        Event::RunEnded {
            status: RunStatus::Failed,
            step: Some("refund".into()),
            message: None,
        },
        &mut enc,
    );
    let e = write(&dir, "ended.jsonl", t.to_jsonl());
    let run = nanovm(["diff", s(&a), s(&e)]).expect(1);
    let out = &run.stdout;
    assert!(
        out.starts_with("differ: first divergence at entry 1 (line 2): tool_result -> run_ended\n"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l == "type: \"tool_result\" -> \"run_ended\""),
        "{out}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with("step:")),
        "the step is equal on both sides, so it is not shown: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("tool: \"issue_refund\" -> (absent)")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("status: (absent) -> \"failed\"")),
        "{out}"
    );

    // One trace a prefix of the other: the shorter one has ended.
    let full = sample_trace("refunded");
    let short = Trace::from_entries(full.entries()[..2].to_vec()).unwrap();
    let c = write(&dir, "short.jsonl", short.to_jsonl());
    let run = nanovm(["diff", s(&c), s(&a)]).expect(1);
    let out = &run.stdout;
    assert!(
        out.starts_with(
            "differ: first divergence at entry 2 (line 3): (trace ended) -> run_ended\n"
        ),
        "{out}"
    );
    let plus = out.find("+++").unwrap();
    assert!(out[..plus].contains("(2 entries, root "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("(trace ended) -> {\"type\":\"run_ended\"")),
        "{out}"
    );
}

#[test]
fn diff_refuses_a_broken_trace() {
    let dir = scratch("diff_broken");
    let good = write(&dir, "good.jsonl", sample_trace("refunded").to_jsonl());
    let text = sample_trace("refunded")
        .to_jsonl()
        .replacen("run-1", "run-2", 1);
    let bad = write(&dir, "bad.jsonl", text);
    let run = nanovm(["diff", s(&good), s(&bad)]).expect(2);
    assert_eq!(
        run.stderr,
        format!(
            "error: {} is broken: entry 0 (line 1): hash does not match the entry's contents\n",
            bad.display()
        )
    );
    assert!(run.stdout.is_empty());

    // Both broken: both named.
    let run = nanovm(["diff", s(&bad), s(&bad)]).expect(2);
    assert_eq!(
        run.stderr.matches("is broken: entry 0").count(),
        2,
        "{}",
        run.stderr
    );

    let missing = dir.join("nope.jsonl");
    nanovm(["diff", s(&good), s(&missing)]).expect(2);
}

// ---------------------------------------------------------------------------------------------
// compat

fn compat_program(name: &str) -> PathBuf {
    workspace()
        .join("nanovm-dsl/tests/compat_programs")
        .join(name)
}

#[test]
fn compat_exits_1_when_a_pause_point_cannot_continue_and_0_when_all_can() {
    let (v1, v2) = (
        compat_program("approval_v1.nvm"),
        compat_program("approval_v2.nvm"),
    );
    let run = nanovm([OsStr::new("compat"), v1.as_os_str(), v2.as_os_str()]).expect(1);
    assert!(
        run.stdout
            .contains("review (await `approval`, suspended): compatible")
    );
    assert!(
        run.stdout
            .contains("3 pause points: 1 compatible, 2 incompatible")
    );
    let run = nanovm([
        OsStr::new("compat"),
        OsStr::new("--format"),
        OsStr::new("json"),
        v1.as_os_str(),
        v1.as_os_str(),
    ])
    .expect(0);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["points"].as_array().unwrap().len(), 3);
    assert!(
        report["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["compatible"] == json!(true))
    );
}

#[test]
fn compat_of_a_file_with_errors_prints_them_and_exits_1() {
    let dir = scratch("compat-broken");
    let broken = dir.join("broken.nvm");
    fs::write(&broken, "program p { start nowhere }").unwrap();
    let v1 = compat_program("approval_v1.nvm");
    let run = nanovm([OsStr::new("compat"), v1.as_os_str(), broken.as_os_str()]).expect(1);
    assert!(run.stderr.contains("error["), "{}", run.stderr);
}
