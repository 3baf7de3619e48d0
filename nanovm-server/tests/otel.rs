//! Feature `otel`: the runtime's spans exported as OpenTelemetry spans, checked with the SDK's
//! in-memory exporter: a run, its steps, its model call and its tool calls, nested, with the
//! documented fields as attributes, and no input value (a secret, a name in the request) in
//! any attribute.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nanovm_runtime::testing::ScriptedModel;
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{Json, RunOptions, RunStatus, Runtime, ToolContext, ToolError};
use nanovm_server::otel::{layer, sdk};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt as _;

include!("../../nanovm-runtime/tests/support/generated/customer_refund.rs");

struct Shop(AtomicBool);

impl customer_refund::Tools for Shop {
    async fn issue_refund(&self, _: &ToolContext, _: String, _: i64) -> Result<Json, ToolError> {
        if !self.0.swap(true, Ordering::SeqCst) {
            return Err(ToolError::transient("timeout"));
        }
        Ok(json!({ "refund_id": "rf-1" }))
    }
    async fn send_rejection(
        &self,
        _: &ToolContext,
        _: nanovm_runtime::Secret<String>,
    ) -> Result<Json, ToolError> {
        Ok(json!({ "sent": true }))
    }
}

#[test]
fn runs_steps_and_calls_become_nested_otel_spans_with_ids_and_never_a_value() {
    let exporter = sdk::trace::InMemorySpanExporter::default();
    let provider = sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(layer(&provider));
    let vault = Arc::new(MemoryVault::seeded(3));
    let rt = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "yes").shared())
        .vault(vault.clone())
        .build();
    let input = customer_refund::Input {
        request: "Parcel for Grace Hopper arrived broken.".into(),
        order_id: "order-4471".into(),
        amount_cents: 100,
        email: vault.secret(&"grace@example.com".to_string()).unwrap(),
    };
    let e = tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(rt.run::<customer_refund::Program>(
                input,
                Arc::new(Shop(AtomicBool::new(false))),
                RunOptions::new().run_id("otel-1"),
            ))
    })
    .unwrap();
    assert_eq!(e.status, RunStatus::Success);
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let attrs = |s: &sdk::trace::SpanData| -> HashMap<String, String> {
        s.attributes
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect()
    };
    let named =
        |n: &str| -> Vec<&sdk::trace::SpanData> { spans.iter().filter(|s| s.name == n).collect() };
    let run = named("nanovm.run");
    assert_eq!(run.len(), 1, "{spans:#?}");
    let run = run[0];
    let a = attrs(run);
    assert_eq!(a["run_id"], "otel-1");
    assert_eq!(a["program"], "customer_refund");
    assert!(a.contains_key("program_hash"), "{a:?}");
    let steps = named("nanovm.step");
    let step_names: Vec<String> = steps.iter().map(|s| attrs(s)["step"].clone()).collect();
    for step in ["analyze", "policy", "refund"] {
        assert!(step_names.iter().any(|s| s == step), "{step_names:?}");
    }
    assert!(
        steps
            .iter()
            .all(|s| s.parent_span_id == run.span_context.span_id()),
        "steps are inside the run"
    );
    let model = named("nanovm.model_call");
    assert_eq!(model.len(), 1);
    assert_eq!(attrs(model[0])["step"], "analyze");
    let tools = named("nanovm.tool_call");
    assert_eq!(tools.len(), 2, "the failed attempt and the retry");
    let attempts: Vec<String> = tools.iter().map(|t| attrs(t)["attempt"].clone()).collect();
    assert_eq!(attempts, ["1", "2"]);
    for t in &tools {
        let a = attrs(t);
        assert_eq!(
            (a["tool"].as_str(), a["step"].as_str()),
            ("issue_refund", "refund")
        );
        assert_eq!(a["effect"], "true");
        assert_eq!(a["effect_id"].len(), 64, "{a:?}");
        let parent = spans
            .iter()
            .find(|s| s.span_context.span_id() == t.parent_span_id)
            .expect("a parent");
        assert_eq!(parent.name, "nanovm.step");
    }
    assert!(
        spans
            .iter()
            .all(|s| s.span_context.trace_id() == run.span_context.trace_id()),
        "one trace"
    );
    let everything = format!("{spans:?}");
    for value in ["Grace Hopper", "grace@example.com", "order-4471"] {
        assert!(!everything.contains(value), "{value} exported");
    }
}
