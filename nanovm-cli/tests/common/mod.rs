//! What the CLI's store tests share: running the real binary, a scratch directory per test,
//! and a SQLite store whose runs are checkpointed with a fixed signing key.

#![allow(
    dead_code,
    reason = "each test binary uses its own part of this module"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use nanovm_runtime::evidence::{self, KeySigner, Signer};
use nanovm_runtime::store::{JournalStore, SqliteStore};
use nanovm_runtime::trace::Trace;

/// What a run of the binary left.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `nanovm ARGS`; a panic of the binary fails the test whatever its exit code.
pub fn nanovm(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_nanovm"))
        .args(args)
        .output()
        .expect("the nanovm binary runs");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "the binary panicked:\n{}",
        run.stderr
    );
    run
}

/// An empty directory for one test of one suite, under cargo's target tmpdir.
pub fn scratch(suite: &str, test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("nanovm-cli-{suite}"))
        .join(test);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A path as an argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The signing key of the evidence tests (fixed: the tests are about what is detected).
pub fn signer() -> KeySigner {
    KeySigner::from_seed([42; 32])
}

/// Writes `signer()`'s public key to `dir/key.pub` and returns its path.
pub fn public_key_file(dir: &Path) -> PathBuf {
    let key = dir.join("key.pub");
    fs::write(&key, format!("{}\n", signer().public_key())).unwrap();
    key
}

/// Appends each trace to the SQLite store at `path` (created if missing) as its run; a
/// `signed` one is then checkpointed, as a runtime with `signer()` does when a run ends.
pub fn add_runs(path: &Path, runs: &[(&str, Trace, bool)]) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = SqliteStore::open(path).await.unwrap();
            for (id, t, signed) in runs {
                store.append(id, t.entries(), None).await.unwrap();
                if *signed {
                    evidence::checkpoint(&store, &signer(), 1_700_000_000_000, t.entries())
                        .await
                        .unwrap();
                }
            }
        });
}
