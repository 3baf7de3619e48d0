//! [`run_state`]: a stored run's state as one JSON object of a stable, documented shape (the
//! operator CLI's `--format json`; servers answer with the same object).

use serde_json::json;

use crate::store::RunRecord;
use crate::value::Json;
use crate::view::RunView;

/// The version of [`run_state`]'s shape: fields are only ever added under one version.
pub const RUN_STATE_VERSION: u32 = 1;

/// A stored run's state: what its [`RunRecord`] keeps and, with `view` (the [`RunView`] of its
/// entries), where it is and which effects are open. The shape (documented in
/// `docs/runtime.md`, "Operating runs from the command line"):
///
/// ```json
/// {"run_id": "r1", "program": "customer_refund", "program_hash": "<64 hex>",
///  "status": "suspended", "entries": 4, "step": "manual_review", "at": "manual_review",
///  "message": null, "waiting": {"event": "approval", "deadline_ms": 1700086400000},
///  "lease": null, "open_effects": [], "to_reconcile": [],
///  "created_ms": 1700000000000, "updated_ms": 1700000000000}
/// ```
///
/// `waiting` and `lease` are `null` when the run waits for nothing or nobody holds it;
/// `lease` is `{"owner", "expires_ms"}`. `open_effects` lists `{"effect_id", "tool", "step"}`
/// and `to_reconcile` the effect ids an operator must answer; both are empty, and `at` is the
/// record's step, without a view. Instants are milliseconds since the Unix epoch.
pub fn run_state(record: &RunRecord, view: Option<&RunView>) -> Json {
    let waiting = record
        .waiting_for
        .as_ref()
        .map(|event| json!({"event": event, "deadline_ms": record.deadline_ms}));
    let lease = match (&record.lease_owner, record.lease_expires_ms) {
        (Some(owner), Some(expires_ms)) => json!({"owner": owner, "expires_ms": expires_ms}),
        _ => Json::Null,
    };
    let at = view
        .and_then(RunView::at)
        .map(str::to_string)
        .or_else(|| record.end_step.clone());
    let open: Vec<Json> = view.map_or_else(Vec::new, |v| {
        v.open_effects()
            .iter()
            .map(|o| json!({"effect_id": o.effect_id.to_hex(), "tool": o.tool, "step": o.step}))
            .collect()
    });
    let to_reconcile: Vec<String> = view.map_or_else(Vec::new, |v| {
        v.to_answer().iter().map(|d| d.to_hex()).collect()
    });
    json!({
        "run_id": record.run_id,
        "program": record.program,
        "program_hash": record.program_hash.to_hex(),
        "status": record.status.to_string(),
        "entries": record.entries,
        "step": record.end_step,
        "at": at,
        "message": record.message,
        "waiting": waiting,
        "lease": lease,
        "open_effects": open,
        "to_reconcile": to_reconcile,
        "created_ms": record.created_ms,
        "updated_ms": record.updated_ms,
    })
}
