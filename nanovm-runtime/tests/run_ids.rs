//! Caller-chosen run ids are validated before anything runs or is stored.
//!
//! Attack: a run id of 65,536 characters, or one holding terminal escape sequences, was accepted
//! and stored; `nanovm runs` then panicked on it or printed the escapes raw.

mod support;

use std::sync::Arc;

use nanovm_runtime::store::MemoryStore;
use nanovm_runtime::store::{JournalStore, RunQuery};
use nanovm_runtime::testing::ScriptedModel;
use nanovm_runtime::{MAX_RUN_ID_BYTES, RunIdError};
use nanovm_runtime::{RunError, RunOptions, Runtime};

use support::small::{self, Input};
use support::{Host, block_on};

fn start(store: &MemoryStore, id: &str) -> Result<String, RunError> {
    let model = ScriptedModel::new().always("classify", "a");
    let host = Host::new();
    host.fallback("fetch", serde_json::json!({"status": "again"}));
    let rt = Runtime::builder().model(model).store(store.clone()).build();
    block_on(rt.run::<small::Program<small::Steps5>>(
        Input::new("pricing"),
        Arc::new(host),
        RunOptions::new().run_id(id),
    ))
    .map(|e| e.run_id)
}

#[test]
fn unusable_run_ids_are_refused_before_anything_is_stored() {
    let store = MemoryStore::new();
    match start(&store, &"x".repeat(65_536)) {
        Err(RunError::InvalidRunId(RunIdError::TooLong { len: 65_536 })) => {}
        other => panic!("{other:?}"),
    }
    for bad in [
        "run\u{1b}[2J\u{1b}]0;pwned\u{7}",
        "",
        "two words",
        "rtl\u{202e}",
    ] {
        let err = start(&store, bad).unwrap_err();
        assert!(matches!(err, RunError::InvalidRunId(_)), "{bad:?}: {err:?}");
        // The message says what is wrong and never echoes the raw character.
        let msg = err.to_string();
        assert!(msg.starts_with("invalid run id: "), "{msg}");
        assert!(!msg.chars().any(char::is_control), "{msg:?}");
    }
    assert!(block_on(store.runs(&RunQuery::new())).unwrap().is_empty());

    // The longest acceptable id runs.
    let longest = "r".repeat(MAX_RUN_ID_BYTES);
    assert_eq!(start(&store, &longest).unwrap(), longest);
    assert_eq!(block_on(store.runs(&RunQuery::new())).unwrap().len(), 1);
}
