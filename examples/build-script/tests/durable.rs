//! The example as a user drives it from a shell: a held order suspends in one process, the
//! review is delivered by another, a repeated delivery changes nothing, and a late or wrong
//! event is refused with the store untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn example(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanovm-example-build-script"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the example runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{out}"))
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("nanovm-build-script-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_held_order_suspends_and_a_later_process_delivers_the_review_once() {
    let dir = fresh_dir("deliver");
    let db = ["--db", "o.db", "--run-id", "o1"];

    let held = example(&dir, &[&["BR", "40"][..], &db[..]].concat());
    assert!(held.status.success(), "{held:?}");
    let out = stdout(&held);
    assert_eq!(line(&out, "status:"), "suspended", "{out}");
    assert_eq!(line(&out, "path:"), "checks -> gate -> hold");

    // Another process delivers the review: the run continues from the store to its end.
    let delivered = example(
        &dir,
        &[
            &db[..],
            &["--deliver", "cleared", "--event-id", "rev-1"][..],
        ]
        .concat(),
    );
    assert!(delivered.status.success(), "{delivered:?}");
    let out = stdout(&delivered);
    assert!(out.starts_with("delivered: fraud_review rev-1"), "{out}");
    assert_eq!(line(&out, "status:"), "success");
    assert_eq!(
        line(&out, "path:"),
        "checks -> gate -> hold -> review_gate -> reserve -> confirm -> announce -> done"
    );
    let root = line(&out, "root:").to_string();

    // The same event again: acknowledged, nothing recorded, the same run.
    let again = example(
        &dir,
        &[
            &db[..],
            &["--deliver", "cleared", "--event-id", "rev-1"][..],
        ]
        .concat(),
    );
    assert!(again.status.success(), "{again:?}");
    let out = stdout(&again);
    assert!(out.starts_with("duplicate:"), "{out}");
    assert_eq!(line(&out, "root:"), root);

    // Another event for a run that no longer waits: refused, exit 1, the store unchanged.
    let late = example(
        &dir,
        &[
            &db[..],
            &["--deliver", "rejected", "--event-id", "rev-2"][..],
        ]
        .concat(),
    );
    assert_eq!(late.status.code(), Some(1), "{late:?}");
    assert!(
        String::from_utf8_lossy(&late.stderr).contains("is not waiting for `fraud_review`"),
        "{late:?}"
    );
    // The start command again (how a crashed run is continued): a duplicate start.
    let resumed = example(&dir, &[&["BR", "40"][..], &db[..]].concat());
    assert!(resumed.status.success(), "{resumed:?}");
    assert_eq!(
        line(&stdout(&resumed), "root:"),
        root,
        "nothing was appended"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rejected_review_refunds_and_bad_flags_are_usage_errors() {
    let dir = fresh_dir("reject");
    let db = ["--db", "o.db", "--run-id", "o2"];
    let held = example(&dir, &[&["BR", "40"][..], &db[..]].concat());
    assert_eq!(line(&stdout(&held), "status:"), "suspended");
    let rejected = example(&dir, &[&db[..], &["--deliver", "rejected"][..]].concat());
    let out = stdout(&rejected);
    assert_eq!(line(&out, "status:"), "failed", "{out}");
    assert!(
        line(&out, "path:").ends_with("review_gate -> refund -> refunded"),
        "{out}"
    );

    for bad in [
        &["--deliver", "maybe", "--db", "o.db", "--run-id", "o2"][..],
        &["--deliver", "cleared"][..],
        // Gone: the start command continues a crashed run.
        &["--resume", "--db", "o.db", "--run-id", "o2"][..],
        &["DE", "forty"][..],
        &["--bogus"][..],
    ] {
        let o = example(&dir, bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("usage:"),
            "{bad:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
