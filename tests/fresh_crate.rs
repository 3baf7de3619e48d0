//! The acceptance test of the code generator: a fresh crate, outside this workspace, that depends
//! on it by path compiles the shared example programs through both `include_program!` and a
//! build script, and fails `cargo build` on each broken program with its named error at the right
//! line. It also proves that editing a `.nvm` file triggers a rebuild in both modes.
//!
//! Slow-ish (it runs `cargo build` on a separate target directory, `target/fresh-crate`), so it
//! is one test that does everything in sequence.

use std::path::{Path, PathBuf};
use std::process::Command;

const GOOD: [&str; 3] = ["customer_refund", "order_pipeline", "payment_recovery"];

/// (broken program, code, text, line:col)
const BROKEN: [(&str, &str, &str, &str); 5] = [
    (
        "choice_typo",
        "E0304",
        "\"yse\" is not one of the choices of `decision` (yes, no)",
        "5:32",
    ),
    (
        "secret_in_prompt",
        "E0305",
        "the secret `card_number` cannot be interpolated into a prompt",
        "4:28",
    ),
    (
        "trap_cycle",
        "E0104",
        "steps `poll` and `wait` form a cycle with no way out",
        "6:10",
    ),
    ("typo_target", "E0102", "`reviw` names no step", "4:72"),
    (
        "unguarded_effect",
        "E0106",
        "unguarded effect: the call `charge` is reachable from `start` without passing a guard",
        "7:10",
    ),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn cargo_build(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO"))
        .args(["build", "--offline", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", root().join("target/fresh-crate"))
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn manifest(name: &str) -> String {
    let root = root();
    format!(
        r#"[package]
name = "{name}"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
nanovm = {{ path = "{root}" }}

[build-dependencies]
nanovm-dsl = {{ path = "{root}/nanovm-dsl" }}

[workspace]
"#,
        root = root.display()
    )
}

/// The smallest program: no inputs, no variables, so no outputs.
const BARE: &str = "program bare {
    tool ping() -> json
    start go
    call go = ping() -> done
    end done: success
}
";

/// A crate whose `build.rs` compiles `workflows/` and whose lib includes `lib_rs`.
fn make_crate(dir: &Path, workflows: &[(String, String)], lib_rs: &str) {
    let _ = std::fs::remove_dir_all(dir);
    write(&dir.join("Cargo.toml"), &manifest("fresh"));
    std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    write(
        &dir.join("build.rs"),
        "fn main() {\n    nanovm_dsl::build::Builder::new().graphs(true).compile(\"workflows\").unwrap();\n}\n",
    );
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    for (name, text) in workflows {
        write(&dir.join("workflows").join(format!("{name}.nvm")), text);
    }
    write(&dir.join("src/lib.rs"), lib_rs);
}

fn example(name: &str) -> String {
    std::fs::read_to_string(
        root()
            .join("examples/workflows")
            .join(format!("{name}.nvm")),
    )
    .unwrap()
}

fn broken(name: &str) -> String {
    std::fs::read_to_string(
        root()
            .join("examples/workflows/broken")
            .join(format!("{name}.nvm")),
    )
    .unwrap()
}

#[test]
fn a_fresh_crate_compiles_the_examples_both_ways_and_rejects_the_broken_ones() {
    let dir = root().join("target/fresh-crate/crate");
    let mut workflows: Vec<(String, String)> =
        GOOD.iter().map(|n| (n.to_string(), example(n))).collect();

    // 1. Good programs through build.rs and through the macro, side by side; the two
    //    compilations of each program must agree on its hash.
    let mut lib = String::from("#![deny(warnings)]\n\npub mod via_build {\n");
    for n in GOOD {
        lib.push_str(&format!("    nanovm::include_compiled!(\"{n}\");\n"));
    }
    lib.push_str("}\n\npub mod via_macro {\n");
    for n in GOOD {
        lib.push_str(&format!(
            "    nanovm::include_program!(\"../workflows/{n}.nvm\");\n"
        ));
    }
    lib.push_str("}\n\n");
    // No inputs, no variables, no outputs: the generated code, included as source (where
    // every lint applies, unlike in a macro expansion), must not trip an unused parameter or
    // an empty fill either.
    lib.push_str("pub mod bare {\n    nanovm::include_compiled!(\"bare\");\n}\n\n");
    workflows.push(("bare".to_string(), BARE.to_string()));
    for n in GOOD {
        lib.push_str(&format!(
            "const _: () = assert!(matches!(via_build::{n}::PROGRAM_HASH, h if {{ let m = via_macro::{n}::PROGRAM_HASH; let mut i = 0; let mut same = true; while i < 32 {{ if h[i] != m[i] {{ same = false; }} i += 1; }} same }}));\n"
        ));
    }
    make_crate(&dir, &workflows, &lib);
    let (ok, out) = cargo_build(&dir);
    assert!(ok, "the examples must compile both ways:\n{out}");
    let out_dir_pictures = std::fs::read_dir(root().join("target/fresh-crate/debug/build"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.path().join("out/nanovm/customer_refund.mmd").exists());
    assert!(
        out_dir_pictures,
        "build.rs writes the pictures next to the generated code"
    );

    // 2. Editing a workflow rebuilds: break one, the build fails; repair it, it passes again.
    let path = dir.join("workflows/customer_refund.nvm");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("-> refunded", "-> refundd")).unwrap();
    let (ok, out) = cargo_build(&dir);
    assert!(!ok, "an edited workflow must be recompiled");
    assert!(out.contains("`refundd` names no step"), "{out}");
    std::fs::write(&path, &good).unwrap();
    assert!(cargo_build(&dir).0, "repaired again");

    // 3. Each broken program fails through build.rs, with its error at file:line:col.
    for (name, code, text, at) in BROKEN {
        make_crate(
            &dir,
            &[(name.to_string(), broken(name))],
            &format!("nanovm::include_compiled!(\"{name}\");\n"),
        );
        let (ok, out) = cargo_build(&dir);
        assert!(!ok, "{name} must fail through build.rs");
        assert!(
            out.contains(&format!("error[{code}]: {text}")),
            "{name}:\n{out}"
        );
        assert!(
            out.contains(&format!("workflows/{name}.nvm:{at}")),
            "{name} at {at}:\n{out}"
        );
    }

    // 4. ... and through the macro, reported at the path literal with the file's line and column.
    for (name, code, text, at) in BROKEN {
        make_crate(
            &dir,
            &[],
            &format!("nanovm::include_program!(\"../wf/{name}.nvm\");\n"),
        );
        write(&dir.join(format!("wf/{name}.nvm")), &broken(name));
        let (ok, out) = cargo_build(&dir);
        assert!(!ok, "{name} must fail through the macro");
        // rustc's own `error: ` head, then the message with its code (not `error: error[...]`).
        // (`text` is the start of the message.)
        let head = out
            .lines()
            .find(|l| l.starts_with(&format!("error: {text}")));
        assert!(
            head.is_some_and(|l| l.ends_with(&format!(" [{code}]"))),
            "{name}:\n{out}"
        );
        assert!(
            !out.contains("error: error["),
            "{name}: doubled error prefix:\n{out}"
        );
        assert!(
            out.contains(&format!("{name}.nvm:{at}")),
            "{name} at {at}:\n{out}"
        );
        assert!(
            out.contains("src/lib.rs:1:26"),
            "{name}: the span is the path literal:\n{out}"
        );
    }
}
