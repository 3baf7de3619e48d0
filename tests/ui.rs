//! Compile-fail tests: broken programs are compile errors whose spans land on the exact tokens
//! at fault (the `.stderr` files show rustc's own rendering), and the typed `Tools` trait makes
//! a missing or undeclared tool a compile error. The `.stderr` files are tied to the pinned
//! toolchain (`rust-toolchain.toml`, Rust 1.95.0); regenerate them with `TRYBUILD=overwrite` when
//! it changes.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
