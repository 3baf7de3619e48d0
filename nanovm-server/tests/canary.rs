//! Issue 14's canary: random strings as a secret input, in the model's free text and in a tool's
//! result and error message, through a server with metrics and streams. None may appear in any
//! `tracing` span or event (every level, every crate of the process), in the `/metrics`
//! scrape, or, for the secret, on either event stream. The free text and the tool result are
//! part of the trace by design (a read-scoped client may read a run's prompts and results), so
//! the streams must show those: that also proves the check reads what was sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanovm_runtime::store::SqliteStore;
use nanovm_runtime::testing::ScriptedModel;
use nanovm_runtime::{Json, Runtime, ToolContext, ToolError};
use nanovm_server::{Metrics, Scope, Server};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

include!("../../nanovm-runtime/tests/support/generated/customer_refund.rs");

const READ: &str = "read-token";
const ALL: &str = "all-token";

/// Every span's name and every field value of every span and event, at every level.
#[derive(Default)]
struct Collect {
    next: AtomicU64,
    names: Mutex<Vec<String>>,
    values: Mutex<Vec<String>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl Collect {
    fn keep(&self, fields: HashMap<String, String>) {
        let mut values = self.values.lock().unwrap();
        for (k, v) in fields {
            values.push(format!("{k}={v}"));
        }
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.names
            .lock()
            .unwrap()
            .push(attrs.metadata().name().to_string());
        self.keep(fields);
        Id::from_u64(self.next.fetch_add(1, Ordering::SeqCst) + 1)
    }
    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut fields = HashMap::new();
        values.record(&mut Fields(&mut fields));
        self.keep(fields);
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.keep(fields);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// A random canary (the OS clock and the process id through blake3: fresh every run).
fn canary(kind: &str) -> String {
    let seed = format!(
        "{kind}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    format!(
        "canary{kind}{}",
        &blake3::hash(seed.as_bytes()).to_hex()[..16]
    )
}

struct Shop {
    result: String,
    failed_once: AtomicBool,
}

impl customer_refund::Tools for Shop {
    async fn issue_refund(&self, _: &ToolContext, _: String, _: i64) -> Result<Json, ToolError> {
        if !self.failed_once.swap(true, Ordering::SeqCst) {
            return Err(ToolError::transient(format!(
                "upstream said {}",
                self.result
            )));
        }
        Ok(json!({ "refund_id": self.result }))
    }
    async fn send_rejection(
        &self,
        _: &ToolContext,
        email: nanovm_runtime::Secret<String>,
    ) -> Result<Json, ToolError> {
        Ok(json!({ "sent": email.expose().len() }))
    }
}

async fn read_sse(url: String, until: &str) -> String {
    let mut res = reqwest::Client::new()
        .get(url)
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let mut text = String::new();
    let t0 = Instant::now();
    while !text.contains(until) {
        assert!(t0.elapsed() < Duration::from_secs(20), "{text}");
        match tokio::time::timeout(Duration::from_secs(20), res.chunk())
            .await
            .unwrap()
            .unwrap()
        {
            Some(c) => text.push_str(&String::from_utf8_lossy(&c)),
            None => break,
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_canary_reaches_spans_events_metrics_or_the_streams() {
    let collect = Arc::new(Collect::default());
    tracing::subscriber::set_global_default(collect.clone()).expect("the only subscriber");
    let secret = format!("{}@example.com", canary("secret"));
    let text = canary("text");
    let result = canary("result");

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db")).await.unwrap();
    let metrics = Metrics::new();
    let runtime = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "yes").shared())
        .vault(store.vault())
        .store(store)
        .observer(metrics.clone())
        .build();
    let server = Server::new(runtime)
        .program::<customer_refund::Program>(Arc::new(Shop {
            result: result.clone(),
            failed_once: AtomicBool::new(false),
        }))
        .token(ALL, "ops", &[Scope::Read, Scope::Start, Scope::Operate])
        .token(READ, "viewer", &[Scope::Read])
        .metrics(metrics)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let url = server.url();
    let res = reqwest::Client::new()
        .post(format!("{url}/v1/programs/customer_refund/runs"))
        .bearer_auth(ALL)
        .json(&json!({ "run_id": "c1", "input": {
            "request": format!("My parcel for {text} arrived broken."),
            "order_id": "o-1", "amount_cents": 100, "email": secret } }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let run_stream = read_sse(format!("{url}/v1/runs/c1/stream"), "event: end").await;
    assert!(run_stream.contains("success"), "{run_stream}");
    let all_stream = read_sse(format!("{url}/v1/stream"), "run_ended").await;
    let scrape = reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    server.stop().await;

    let names = collect.names.lock().unwrap().clone();
    assert!(
        names.iter().any(|n| n == "nanovm.tool_call") && names.iter().any(|n| n == "nanovm.run"),
        "the subscriber saw the runtime's spans: {names:?}"
    );
    let values = collect.values.lock().unwrap().join("\n");
    assert!(values.contains("issue_refund"), "fields were captured");
    assert!(scrape.contains("nanovm_retries_total"), "{scrape}");
    for c in [&secret, &text, &result] {
        assert!(
            !values.contains(c.as_str()),
            "{c} in a span or event:\n{values}"
        );
        assert!(!scrape.contains(c.as_str()), "{c} in /metrics");
    }
    // The secret is never on a stream (the trace holds its commitment); the free text and the
    // tool's result and error are the trace's own content, shown to a read-scoped client.
    for stream in [&run_stream, &all_stream] {
        assert!(
            !stream.contains(&secret),
            "the secret on a stream:\n{stream}"
        );
        assert!(
            stream.contains(&text) && stream.contains(&result),
            "{stream}"
        );
    }
}
