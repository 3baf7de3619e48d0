//! `tracing` spans: a run, its steps, its model calls and tool calls, nested, with run id,
//! program, step, effect id and attempt; and no input, argument, prompt or secret in any
//! field (a log pipeline is where personal data leaks first).
//!
//! The subscriber is written here (a few lines over `tracing`'s own trait) so the test needs
//! nothing the runtime does not depend on already.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nanovm_runtime::testing::{ManualClock, ScriptedModel};
use nanovm_runtime::trace::RunStatus;
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{RunOptions, Runtime};
use support::{Host, START, customer_refund as cr};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// One span as it was opened: its name, fields and parent.
#[derive(Clone, Debug)]
struct Span {
    name: &'static str,
    fields: HashMap<String, String>,
    parent: Option<u64>,
}

#[derive(Default)]
struct Collect {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, Span>>,
    /// Every field value of every span and event, for the leak check.
    values: Mutex<Vec<String>>,
    entered: Mutex<Vec<u64>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = match attrs.parent() {
            Some(p) => Some(p.into_u64()),
            None if attrs.is_contextual() => self.entered.lock().unwrap().last().copied(),
            None => None,
        };
        self.values.lock().unwrap().extend(fields.values().cloned());
        let span = Span {
            name: attrs.metadata().name(),
            fields,
            parent,
        };
        self.spans.lock().unwrap().insert(id, span);
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut fields = HashMap::new();
        values.record(&mut Fields(&mut fields));
        self.values.lock().unwrap().extend(fields.into_values());
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.values.lock().unwrap().extend(fields.into_values());
    }
    fn enter(&self, span: &Id) {
        self.entered.lock().unwrap().push(span.into_u64());
    }
    fn exit(&self, span: &Id) {
        let mut entered = self.entered.lock().unwrap();
        if let Some(i) = entered.iter().rposition(|s| *s == span.into_u64()) {
            entered.remove(i);
        }
    }
}

#[test]
fn a_run_is_traced_as_nested_spans_with_ids_and_never_a_value() {
    let collect = Arc::new(Collect::default());
    let vault = Arc::new(MemoryVault::seeded(11));
    let rt = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "yes").shared())
        .vault(vault.clone())
        .clock(ManualClock::new(START))
        .build();
    let input = cr::Input {
        request: "My parcel for Ada Lovelace arrived broken.".into(),
        order_id: "order-7781".into(),
        amount_cents: 100,
        email: vault.secret(&"ada@example.com".to_string()).unwrap(),
    };
    let e = tracing::subscriber::with_default(collect.clone(), || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(rt.run::<cr::Program>(
                input,
                Arc::new(Host::new()),
                RunOptions::new().run_id("traced-1"),
            ))
    })
    .unwrap();
    assert_eq!(e.status, RunStatus::Success);

    let spans = collect.spans.lock().unwrap().clone();
    let named = |n: &str| -> Vec<(u64, Span)> {
        let mut v: Vec<_> = spans
            .iter()
            .filter(|(_, s)| s.name == n)
            .map(|(i, s)| (*i, s.clone()))
            .collect();
        v.sort_by_key(|(i, _)| *i);
        v
    };
    let runs = named("nanovm.run");
    assert_eq!(runs.len(), 1, "{spans:#?}");
    let (run_id, run) = &runs[0];
    assert_eq!(run.fields["run_id"], "traced-1");
    assert_eq!(run.fields["program"], "\"customer_refund\"");
    let steps = named("nanovm.step");
    let step_names: Vec<&str> = steps
        .iter()
        .map(|(_, s)| s.fields["step"].as_str())
        .collect();
    assert_eq!(
        step_names,
        ["\"analyze\"", "\"policy\"", "\"refund\"", "\"refunded\""],
        "every step the run took, in order"
    );
    assert!(
        steps.iter().all(|(_, s)| s.parent == Some(*run_id)),
        "{steps:#?}"
    );
    let models = named("nanovm.model_call");
    assert_eq!(models.len(), 1);
    assert_eq!(
        models[0].1.parent,
        Some(steps[0].0),
        "the model call is in `analyze`"
    );
    let tools = named("nanovm.tool_call");
    assert_eq!(tools.len(), 1, "{tools:#?}");
    let (_, tool) = &tools[0];
    assert_eq!(
        tool.parent,
        Some(steps[2].0),
        "the tool call is in `refund`"
    );
    assert_eq!(tool.fields["tool"], "\"issue_refund\"");
    assert_eq!(tool.fields["attempt"], "1");
    assert_eq!(tool.fields["effect"], "true");
    assert_eq!(tool.fields["effect_id"].len(), 64, "{:?}", tool.fields);

    // No value of the run anywhere: the request, the order id, the secret, the amount.
    let values = collect.values.lock().unwrap();
    for leak in [
        "Lovelace",
        "order-7781",
        "ada@example.com",
        "arrived broken",
    ] {
        assert!(
            !values.iter().any(|v| v.contains(leak)),
            "`{leak}` in a span or event field: {values:?}"
        );
    }
}
