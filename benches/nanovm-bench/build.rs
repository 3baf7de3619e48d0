//! Compiles the benchmark workloads into `$OUT_DIR/nanovm/<stem>.rs`.
//!
//! `guard4`, `guard4_budgets`, `parallel10` and `effects10` are written by hand in `workflows/`. The linear
//! programs (`linear10`, `linear100`, `linear1000`: N read-only tool steps in a row) are
//! generated here into `$OUT_DIR/workflows/` from one template, so their shape cannot drift
//! apart and nobody writes 1000 steps by hand (`cargo run -p nanovm-bench --bin compare --
//! --print-source linear10` prints one). `guard4_tight` (`guard4_budgets` with `max_steps: 2`)
//! is derived for a sanity check.

use std::path::PathBuf;

#[path = "src/linear.rs"]
mod linear;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let generated = out.join("workflows");
    std::fs::create_dir_all(&generated).expect("create $OUT_DIR/workflows");

    let mut files: Vec<PathBuf> = ["guard4", "guard4_budgets", "parallel10", "effects10"]
        .iter()
        .map(|stem| PathBuf::from(format!("workflows/{stem}.nvm")))
        .collect();
    for n in linear::LENGTHS {
        let path = generated.join(format!("linear{n}.nvm"));
        let source = linear::source(n);
        // Rewrite only on change so the generated Rust is not rebuilt needlessly.
        if std::fs::read_to_string(&path).ok().as_deref() != Some(source.as_str()) {
            std::fs::write(&path, source).expect("write a generated workflow");
        }
        files.push(path);
    }
    // For the start-up sanity check that budgets are live: `guard4_budgets` with `max_steps: 2`
    // must end `budget_exceeded` (the peer's script checks the same of its own program).
    let budgets = std::fs::read_to_string("workflows/guard4_budgets.nvm")
        .expect("read workflows/guard4_budgets.nvm");
    let tight = budgets
        .replacen("program guard4_budgets {", "program guard4_tight {", 1)
        .replacen("max_steps: 100,", "max_steps: 2,", 1);
    assert!(
        tight.contains("program guard4_tight {") && tight.contains("max_steps: 2,"),
        "guard4_budgets.nvm no longer has the text guard4_tight is derived from"
    );
    let path = generated.join("guard4_tight.nvm");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(tight.as_str()) {
        std::fs::write(&path, tight).expect("write guard4_tight.nvm");
    }
    files.push(path);
    println!("cargo::rerun-if-changed=src/linear.rs");
    nanovm_dsl::build::Builder::new()
        .compile_files(&files)
        .expect("the benchmark workflows compile");
}
