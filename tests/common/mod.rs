//! What the tests that drive the example as real OS processes share (`tests/kill.rs`,
//! `tests/concurrent_start.rs`, `tests/example_exit.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// SplitMix64: a seeded generator, so a schedule is the same on every run.
#[allow(
    dead_code,
    reason = "not every test that shares this module draws a schedule"
)]
pub struct Rng(pub u64);

#[allow(
    dead_code,
    reason = "not every test that shares this module draws a schedule"
)]
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The `customer_refund` example binary, next to the test's `deps` directory; built (or
/// brought up to date: `cargo test --test NAME` alone does not build examples) first, so a
/// test never runs a stale binary.
pub fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = dir
        .join("examples")
        .join(format!("customer_refund{}", std::env::consts::EXE_SUFFIX));
    {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "customer_refund"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the example failed");
    }
    assert!(bin.exists(), "no example binary at {}", bin.display());
    bin
}
