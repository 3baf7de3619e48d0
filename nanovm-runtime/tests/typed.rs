//! Record, list and optional types at the runtime's boundaries (issue 16, item 1):
//! `tests/support/programs/typed_refund.nvm`, compiled by the real compiler.
//!
//! * The host implements a typed tool: `quote_refund` returns a `Refund` struct, and
//!   `pay_refund` receives one, not JSON.
//! * A payload of the wrong shape is refused at delivery with the path of the bad field
//!   (`lines[2].qty`) and changes nothing; the run then takes a good one.
//! * A tool result of the wrong shape (from a host that answers in raw JSON) is a tool error
//!   naming the bad field, and never becomes a partial value.
//! * Replaying the run verifies: the typed values were recorded as JSON, exactly.

mod support;

use std::sync::{Arc, Mutex};

use nanovm_runtime::__private_v0_1::BoxFuture;
use nanovm_runtime::store::MemoryStore;
use nanovm_runtime::trace::RunStatus;
use nanovm_runtime::{DeliverError, Delivery, Json, RunOptions, Runtime, ToolContext, ToolError};
use serde_json::json;

use support::block_on;

#[allow(dead_code, reason = "the test uses part of the module")]
mod typed {
    include!("support/generated/typed_refund.rs");
}

use typed::typed_refund::{self as program, Item, Order, Refund};

type P = program::Program;

/// A host whose `quote_refund` answers with a `Refund` struct and whose `pay_refund` records
/// the typed refund it was given.
#[derive(Clone, Default)]
struct TypedHost {
    quote: Arc<Mutex<Option<Refund>>>,
    paid: Arc<Mutex<Vec<(Refund, i64)>>>,
    quoted_items: Arc<Mutex<Vec<Vec<Item>>>>,
}

impl program::Tools for TypedHost {
    async fn quote_refund(
        &self,
        _ctx: &ToolContext,
        order_id: String,
        items: Vec<Item>,
    ) -> Result<Refund, ToolError> {
        assert_eq!(order_id, "o-1");
        self.quoted_items.lock().unwrap().push(items);
        self.quote
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| ToolError::permanent("no quote"))
    }

    async fn pay_refund(
        &self,
        _ctx: &ToolContext,
        refund: Refund,
        amount: i64,
    ) -> Result<Json, ToolError> {
        self.paid.lock().unwrap().push((refund, amount));
        Ok(json!({"paid": true}))
    }
}

fn order() -> Order {
    Order {
        id: "o-1".into(),
        items: vec![
            Item {
                sku: "a".into(),
                qty: 1,
                note: None,
            },
            Item {
                sku: "b".into(),
                qty: 2,
                note: Some("scratched".into()),
            },
        ],
        tags: vec!["vip".into()],
    }
}

fn refund(amount: i64) -> Refund {
    Refund {
        id: "rf-1".into(),
        amount,
        reason: Some("damaged".into()),
    }
}

fn runtime(store: &MemoryStore) -> Runtime {
    Runtime::builder()
        .store(store.clone())
        .backoff(nanovm_runtime::Backoff::none())
        .build()
}

fn input(limit: i64) -> program::Input {
    program::Input {
        order: order(),
        limit,
    }
}

#[test]
fn a_host_implements_a_typed_tool_and_receives_typed_arguments() {
    let store = MemoryStore::new();
    let rt = runtime(&store);
    let host = TypedHost::default();
    *host.quote.lock().unwrap() = Some(refund(1200));
    let tools: Arc<dyn program::ToolsDyn> = Arc::new(host.clone());
    let e = block_on(rt.run::<P>(input(5000), tools.clone(), RunOptions::new().run_id("t-1")))
        .expect("runs");
    assert_eq!(e.status, RunStatus::Suspended, "{:?}", e.message);
    assert_eq!(e.path, ["check", "quote", "policy", "pay", "confirm"]);
    // The typed list reached the tool as `Vec<Item>`, the record the effect as `Refund`.
    assert_eq!(
        host.quoted_items.lock().unwrap().as_slice(),
        [order().items]
    );
    assert_eq!(host.paid.lock().unwrap().as_slice(), [(refund(1200), 1200)]);
    // The variable holds the whole value (an absent optional would be an explicit null).
    assert_eq!(
        e.outputs["refund"],
        json!({"id": "rf-1", "amount": 1200, "reason": "damaged"})
    );

    // A well-shaped confirmation completes the run.
    let good = json!({"refund_id": "rf-1", "lines": [{"sku": "a", "qty": 1}]});
    let d = block_on(rt.deliver::<P>("t-1", "refund_confirmed", "ev-1", good, tools.clone()))
        .expect("delivered");
    let Delivery::Resumed(done) = d else {
        panic!("resumed: {d:?}")
    };
    assert_eq!(done.status, RunStatus::Success);
    assert_eq!(
        done.outputs["confirmation"],
        json!({"refund_id": "rf-1", "lines": [{"sku": "a", "qty": 1, "note": null}]})
    );
    // The recorded run replays and verifies: the typed values were recorded as JSON.
    let replayed = rt.replay::<P>(&done.trace).expect("replays");
    assert_eq!(replayed.root, done.root());
    assert_eq!(replayed.status, RunStatus::Success);
}

#[test]
fn a_payload_of_the_wrong_shape_is_refused_with_the_path_of_the_bad_field() {
    let store = MemoryStore::new();
    let rt = runtime(&store);
    let host = TypedHost::default();
    *host.quote.lock().unwrap() = Some(refund(100));
    let tools: Arc<dyn program::ToolsDyn> = Arc::new(host.clone());
    let e = block_on(rt.run::<P>(input(5000), tools.clone(), RunOptions::new().run_id("t-2")))
        .expect("runs");
    assert_eq!(e.status, RunStatus::Suspended);
    let bad = json!({"refund_id": "rf-1", "lines": [
        {"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}, {"sku": "c", "qty": "3"}
    ]});
    let err = block_on(rt.deliver::<P>("t-2", "refund_confirmed", "ev-1", bad, tools.clone()))
        .expect_err("refused");
    let msg = err.to_string();
    assert!(matches!(err, DeliverError::Payload(_)), "{err:?}");
    assert!(msg.contains("`lines[2].qty`"), "{msg}");
    assert!(msg.contains("expected an int, found a string"), "{msg}");
    // An unknown field is refused too, by its path.
    let extra = json!({"refund_id": "rf-1", "lines": [], "note": "x"});
    let err = block_on(rt.deliver::<P>("t-2", "refund_confirmed", "ev-2", extra, tools.clone()))
        .expect_err("refused");
    assert!(err.to_string().contains("`note`"), "{err}");
    // Nothing was recorded: the run is still waiting, and takes a good payload.
    let good = json!({"refund_id": "rf-1", "lines": []});
    let d = block_on(rt.deliver::<P>("t-2", "refund_confirmed", "ev-3", good, tools))
        .expect("delivered");
    assert!(
        matches!(&d, Delivery::Resumed(x) if x.status == RunStatus::Success),
        "{d:?}"
    );
}

/// A host that answers `quote_refund` in raw JSON (an untyped bridge, e.g. to an HTTP
/// service), so its answer can have any shape.
struct RawHost(Json);

impl program::ToolsDyn for RawHost {
    fn __invoke(
        self: Arc<Self>,
        call: program::Call,
        _ctx: ToolContext,
    ) -> BoxFuture<'static, Result<Json, ToolError>> {
        let answer = match call {
            program::Call::QuoteRefund { .. } => Ok(self.0.clone()),
            program::Call::PayRefund { .. } => panic!("the effect must not run"),
        };
        Box::pin(async move { answer })
    }
}

#[test]
fn a_tool_result_of_the_wrong_shape_is_a_tool_error_naming_the_field() {
    let store = MemoryStore::new();
    let rt = runtime(&store);
    let tools: Arc<dyn program::ToolsDyn> = Arc::new(RawHost(
        json!({"id": "rf-1", "amount": "1200", "reason": null}),
    ));
    let e =
        block_on(rt.run::<P>(input(5000), tools, RunOptions::new().run_id("t-3"))).expect("runs");
    assert_eq!(e.status, RunStatus::Failed, "{e:?}");
    let msg = e.message.clone().unwrap_or_default();
    assert!(msg.contains("`amount`"), "{msg}");
    assert!(msg.contains("tool `quote_refund`"), "{msg}");
    // Never a partial value: the variable was not assigned.
    assert!(!e.outputs.contains_key("refund"), "{:?}", e.outputs);
    assert_eq!(e.path, ["check", "quote"]);

    // A missing required field is named as well.
    let store = MemoryStore::new();
    let rt = runtime(&store);
    let tools: Arc<dyn program::ToolsDyn> = Arc::new(RawHost(json!({"id": "rf-1"})));
    let e =
        block_on(rt.run::<P>(input(5000), tools, RunOptions::new().run_id("t-4"))).expect("runs");
    assert_eq!(e.status, RunStatus::Failed);
    assert!(
        e.message
            .as_deref()
            .unwrap_or_default()
            .contains("`amount`: missing"),
        "{:?}",
        e.message
    );
}

#[test]
fn the_guard_reads_the_typed_fields() {
    let store = MemoryStore::new();
    let rt = runtime(&store);
    let host = TypedHost::default();
    // Over the limit: the guard refuses, the effect never runs.
    *host.quote.lock().unwrap() = Some(refund(9000));
    let tools: Arc<dyn program::ToolsDyn> = Arc::new(host.clone());
    let e = block_on(rt.run::<P>(input(5000), tools.clone(), RunOptions::new().run_id("g-1")))
        .expect("runs");
    assert_eq!(e.end_step.as_deref(), Some("refused"));
    // No reason (an optional left null): refused too.
    *host.quote.lock().unwrap() = Some(Refund {
        reason: None,
        ..refund(10)
    });
    let e = block_on(rt.run::<P>(input(5000), tools.clone(), RunOptions::new().run_id("g-2")))
        .expect("runs");
    assert_eq!(e.end_step.as_deref(), Some("refused"));
    assert!(host.paid.lock().unwrap().is_empty());
    // A blocked order, or one without items, never asks for a quote.
    let mut blocked = input(5000);
    blocked.order.tags.push("blocked".into());
    let e = block_on(rt.run::<P>(blocked, tools.clone(), RunOptions::new().run_id("g-3")))
        .expect("runs");
    assert_eq!(e.end_step.as_deref(), Some("nothing"));
    let mut empty = input(5000);
    empty.order.items.clear();
    let e = block_on(rt.run::<P>(empty, tools, RunOptions::new().run_id("g-4"))).expect("runs");
    assert_eq!(e.end_step.as_deref(), Some("nothing"));
    // Only the first two runs asked for a quote.
    assert_eq!(host.quoted_items.lock().unwrap().len(), 2);
}

#[test]
fn typed_json_input_is_checked_by_shape_at_the_boundary() {
    use nanovm_runtime::vault::MemoryVault;
    use nanovm_runtime::{FieldError, InputError, input_from_json, input_schema};
    let vault = MemoryVault::new();
    let good = json!({
        "order": {"id": "o-1", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2, "note": "scratched"}], "tags": ["vip"]},
        "limit": 5000
    });
    let input = block_on(input_from_json::<P>(&vault, &good)).expect("accepted");
    assert_eq!(input.order, order());
    // A bad part deep inside is named by its path, and nothing is built.
    let bad = json!({
        "order": {"id": "o-1", "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": "2"}], "tags": []},
        "limit": 5000
    });
    let err = block_on(input_from_json::<P>(&vault, &bad)).expect_err("refused");
    let InputError::Fields(fields) = &err else {
        panic!("{err:?}")
    };
    assert!(
        matches!(&fields[..], [FieldError::WrongShape { path, .. }] if path == "order.items[1].qty"),
        "{fields:?}"
    );
    assert!(
        err.to_string()
            .contains("`order.items[1].qty`: expected an int"),
        "{err}"
    );
    // The input schema describes the record as the compiler's SCHEMA does.
    let schema = input_schema(<P as nanovm_runtime::__private_v0_1::Program>::info());
    let order_schema: Json = serde_json::from_str(Order::SCHEMA).unwrap();
    let mut described = schema["properties"]["order"].clone();
    described.as_object_mut().unwrap().remove("description");
    assert_eq!(described, order_schema);
    assert_eq!(Order::SHAPE.json_schema(), order_schema);
    assert_eq!(
        Refund::SHAPE.json_schema(),
        serde_json::from_str::<Json>(Refund::SCHEMA).unwrap()
    );
}
