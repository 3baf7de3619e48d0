//! Record, list and optional types through the `nano_program!` macro (issue 16): the macro
//! generates the structs, a host implements the typed tools, and a payload of the wrong shape
//! is refused naming the bad field. (The build-script path is `nanovm-runtime/tests/typed.rs`.)

use std::sync::Arc;

use nanovm::store::MemoryStore;
use nanovm::trace::RunStatus;
use nanovm::{DeliverError, Delivery, Json, RunOptions, Runtime, ToolContext, ToolError};
use serde_json::json;

nanovm::nano_program! {
    /// Ships the lines of an order once the warehouse confirms them.
    program shipment {
        type Line { sku: string, qty: int }
        type Parcel { id: string, lines: list<Line>, carrier: string? }
        input { order_id: string, lines: list<Line> }
        tool pack(order_id: string, lines: list<Line>) -> Parcel
        effect tool ship(parcel: Parcel) -> json idempotent
        call packing = pack(order_id: order_id, lines: lines) into parcel -> check
        guard check {
            when len(parcel.lines) > 0 and parcel.carrier != null -> send
            otherwise -> held
        }
        call send = ship(parcel: trusted(parcel, "check saw lines and a carrier")) -> wait
        await wait = delivered into proof: Parcel -> done
        end done: success
        end held: failure "nothing to ship"
    }
}

struct Warehouse;

impl shipment::Tools for Warehouse {
    async fn pack(
        &self,
        _: &ToolContext,
        order_id: String,
        lines: Vec<shipment::Line>,
    ) -> Result<shipment::Parcel, ToolError> {
        Ok(shipment::Parcel {
            id: format!("parcel-{order_id}"),
            lines,
            carrier: Some("dhl".into()),
        })
    }

    async fn ship(&self, _: &ToolContext, parcel: shipment::Parcel) -> Result<Json, ToolError> {
        Ok(json!({ "shipped": parcel.id }))
    }
}

#[test]
fn the_macro_generates_typed_structs_a_host_implements() {
    let rt = Runtime::builder().store(MemoryStore::new()).build();
    let tools: Arc<dyn shipment::ToolsDyn> = Arc::new(Warehouse);
    let input = shipment::Input {
        order_id: "o-7".into(),
        lines: vec![shipment::Line {
            sku: "a".into(),
            qty: 2,
        }],
    };
    let e = futures_lite_block_on(rt.run::<shipment::Program>(
        input,
        tools.clone(),
        RunOptions::new().run_id("m-1"),
    ))
    .expect("runs");
    assert_eq!(e.status, RunStatus::Suspended, "{:?}", e.message);
    assert_eq!(e.outputs["parcel"]["carrier"], json!("dhl"));
    assert!(shipment::Parcel::SCHEMA.contains("\"carrier\""));

    let bad = json!({"id": "parcel-o-7", "lines": [{"sku": "a", "qty": 2.5}]});
    let err = futures_lite_block_on(rt.deliver::<shipment::Program>(
        "m-1",
        "delivered",
        "ev-1",
        bad,
        tools.clone(),
    ))
    .expect_err("refused");
    assert!(matches!(err, DeliverError::Payload(_)), "{err:?}");
    assert!(err.to_string().contains("`lines[0].qty`"), "{err}");

    let good = json!({"id": "parcel-o-7", "lines": [{"sku": "a", "qty": 2}]});
    let d = futures_lite_block_on(rt.deliver::<shipment::Program>(
        "m-1",
        "delivered",
        "ev-2",
        good,
        tools,
    ))
    .expect("delivered");
    assert!(
        matches!(&d, Delivery::Resumed(x) if x.status == RunStatus::Success),
        "{d:?}"
    );
}

fn futures_lite_block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
        .block_on(f)
}

nanovm::nano_program! {
    /// Two typed answers side by side in a parallel block, and one at the top level that
    /// stalls (no `on invalid`) until the model answers with the type.
    program triage {
        type Verdict { label: string, score: float, tags: list<string> }
        input { ticket: string }
        budget { max_steps: 10, max_stalled_steps: 3 }
        parallel both {
            llm first { prompt: "Classify: {ticket}" answer a: Verdict }
            llm second { prompt: "Classify again: {ticket}" answer b: Verdict? }
        } -> pick
        llm pick { prompt: "Which of {a} and {b}?" answer chosen: Verdict } -> check
        branch check {
            when chosen.score >= 0.5 and chosen.tags contains "urgent" and b != null -> urgent
            otherwise -> normal
        }
        end urgent: success
        end normal: success
    }
}

struct NoTools;
impl triage::Tools for NoTools {}

#[test]
fn typed_answers_in_parallel_branches_and_stalls_until_the_type_comes_back() {
    use nanovm::testing::ScriptedModel;
    let model = ScriptedModel::new()
        .answer(
            "first",
            r#"{"label": "bug", "score": 1, "tags": ["urgent"]}"#,
        )
        .answer("second", "null")
        .answers(
            "pick",
            [
                "the first one",
                r#"{"label": "bug", "score": 0.9}"#,
                r#"{"label": "bug", "score": 0.9, "tags": ["urgent"]}"#,
            ],
        );
    let rt = Runtime::builder().model(model).build();
    let e = futures_lite_block_on(rt.run::<triage::Program>(
        triage::Input {
            ticket: "the site is down".into(),
        },
        Arc::new(NoTools),
        RunOptions::new(),
    ))
    .expect("runs");
    // `b` is null, so the branch goes to `normal`; `pick` stalled twice first.
    assert_eq!(
        e.path,
        ["both", "pick", "pick", "pick", "check", "normal"],
        "{:?}",
        e.message
    );
    // The int 1 was read as the float it is declared to be.
    assert_eq!(
        e.outputs["a"],
        json!({"label": "bug", "score": 1.0, "tags": ["urgent"]})
    );
    assert_eq!(e.outputs["b"], json!(null));
}
