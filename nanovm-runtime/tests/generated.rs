//! The programs the runtime's tests run are what the compiler really generates.
//!
//! `tests/support/generated/*.rs` are checked-in outputs of `nanovm_dsl::build::Builder` with
//! `runtime_path("::nanovm_runtime")`, exactly as a build script writes them, from the `.nvm`
//! sources listed in [`PROGRAMS`]. This test compiles each source again and compares the result
//! byte for byte with the checked-in file, so the tests can never drift from the generator: a
//! change of the generator (or of a source) fails here until the files are re-generated with
//!
//! ```text
//! NANOVM_BLESS=1 cargo test -p nanovm-runtime --test generated
//! ```
//!
//! and the diff is reviewed like any other code change.

use std::path::{Path, PathBuf};

/// (source, relative to this crate's directory; generated file in `tests/support/generated/`).
const PROGRAMS: &[(&str, &str)] = &[
    // The shipped example itself, not a copy.
    (
        "../examples/workflows/customer_refund.nvm",
        "customer_refund.rs",
    ),
    ("tests/support/programs/fanout.nvm", "fanout.rs"),
    ("tests/support/programs/small.nvm", "small.rs"),
    // Replanning edges (`tests/replan.rs`).
    ("tests/support/programs/replan.nvm", "replan.rs"),
    // Two versions of one program, for migration (`tests/migrate.rs`); the pair `nanovm
    // compat` is tested on.
    (
        "../nanovm-dsl/tests/compat_programs/approval_v1.nvm",
        "approval_v1.rs",
    ),
    (
        "../nanovm-dsl/tests/compat_programs/approval_v2.nvm",
        "approval_v2.rs",
    ),
    ("tests/support/programs/shop_v1.nvm", "shop_v1.rs"),
    ("tests/support/programs/shop_v2.nvm", "shop_v2.rs"),
    ("tests/support/programs/pay.nvm", "pay.rs"),
    // A secret argument inside a parallel block (`tests/erase.rs`).
    ("tests/support/programs/secret_fan.nvm", "secret_fan.rs"),
    // Record, list and optional types (`tests/typed.rs`).
    ("tests/support/programs/typed_refund.nvm", "typed_refund.rs"),
    // Typed model answers (`tests/typed_answer.rs`).
    ("tests/support/programs/typed_answer.nvm", "typed_answer.rs"),
];

/// What the compiler generates for `source` today.
fn generate(source: &str) -> String {
    let out = tempfile::tempdir().expect("a temporary directory");
    let built = nanovm_dsl::build::Builder::new()
        .runtime_path("::nanovm_runtime")
        .cargo_directives(false)
        .out_dir(out.path())
        .compile_files(&[PathBuf::from(source)])
        .unwrap_or_else(|e| panic!("{source} does not compile:{e:?}"));
    assert_eq!(built.warnings, 0, "{source} compiles with warnings");
    let [file] = built.files.as_slice() else {
        panic!(
            "{source}: expected one generated file, got {:?}",
            built.files
        )
    };
    std::fs::read_to_string(file).expect("the generated file")
}

/// The first differing line of two texts, with a few lines of context, for the failure message.
fn first_difference(want: &str, have: &str) -> String {
    let (w, h): (Vec<&str>, Vec<&str>) = (want.lines().collect(), have.lines().collect());
    let at = w
        .iter()
        .zip(&h)
        .position(|(a, b)| a != b)
        .unwrap_or(w.len().min(h.len()));
    let show = |lines: &[&str], sign: char| {
        lines
            .iter()
            .enumerate()
            .skip(at.saturating_sub(2))
            .take(5)
            .map(|(i, l)| format!("{sign} {:>5} {l}\n", i + 1))
            .collect::<String>()
    };
    format!(
        "first difference at line {}:\n--- checked in\n{}+++ generated now\n{}",
        at + 1,
        show(&h, '-'),
        show(&w, '+')
    )
}

#[test]
fn generated_support_is_current() {
    // Relative source paths keep this machine's directories out of the generated headers.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).expect("the crate directory");
    let bless = std::env::var_os("NANOVM_BLESS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (source, file) in PROGRAMS {
        let want = generate(source);
        let path = Path::new("tests/support/generated").join(file);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if want == have {
            continue;
        }
        if bless {
            std::fs::write(&path, &want).expect("write the generated file");
            eprintln!("re-generated {}", path.display());
        } else {
            stale.push(format!(
                "{} is not what nanovm-dsl generates from {source}; {}",
                path.display(),
                first_difference(&want, &have)
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\nRe-generate with `NANOVM_BLESS=1 cargo test -p nanovm-runtime --test generated` \
         and review the diff.",
        stale.join("\n")
    );
}
