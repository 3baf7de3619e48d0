//! Typed model answers (issue 16, item 2): `answer claim: Claim` on an `llm` step, against a
//! local OpenAI-compatible server (wiremock, random port, no internet), through the real
//! `OpenAiModel` and the real compiler's output (`tests/support/programs/typed_answer.nvm`).
//!
//! The request carries the type's JSON Schema (in the instruction always; as a
//! `response_format` when a constraint mode is set); the reply is checked against the type,
//! and anything else (not JSON, a wrong field type, an extra or missing field) is an invalid
//! answer that follows `on invalid`, exactly like a `choose` miss.

#![cfg(feature = "openai")]

mod support;

use std::sync::{Arc, Mutex};

use nanovm_runtime::openai::{ChoiceConstraint, OpenAiModel};
use nanovm_runtime::trace::{Event, Reply, RunStatus};
use nanovm_runtime::{Execution, Json, RunOptions, Runtime, ToolContext, ToolError};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

#[allow(dead_code, reason = "the test uses part of the module")]
mod typed {
    include!("support/generated/typed_answer.rs");
}

use typed::typed_answer as program;

type P = program::Program;

#[derive(Clone, Default)]
struct Bank {
    refunds: Arc<Mutex<Vec<(i64, String)>>>,
}

impl program::Tools for Bank {
    async fn refund(
        &self,
        _: &ToolContext,
        amount: i64,
        reason: String,
    ) -> Result<Json, ToolError> {
        self.refunds.lock().unwrap().push((amount, reason));
        Ok(json!({"refunded": amount}))
    }
}

fn completion(content: &str) -> Value {
    json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 12}
    })
}

/// A server answering every completion with `content`; returns it and the bodies it received.
async fn serving(content: &str) -> (MockServer, Arc<Mutex<Vec<Value>>>) {
    let server = MockServer::start().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let body = completion(content);
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(move |req: &Request| {
            log.lock()
                .unwrap()
                .push(serde_json::from_slice::<Value>(&req.body).unwrap());
            ResponseTemplate::new(200).set_body_json(body.clone())
        })
        .mount(&server)
        .await;
    (server, seen)
}

async fn run(server: &MockServer, mode: ChoiceConstraint, bank: &Bank) -> Execution {
    let model = OpenAiModel::builder(format!("{}/v1", server.uri()))
        .model("test-model")
        .no_proxy()
        .constrain_choices(mode)
        .build()
        .expect("valid config");
    let rt = Runtime::builder().model(model).build();
    rt.run::<P>(
        program::Input {
            email: "Please refund the 12 euros, the mug arrived broken. Order 7.".into(),
            limit: 50,
        },
        Arc::new(bank.clone()),
        RunOptions::new(),
    )
    .await
    .expect("runs")
}

fn claim_schema() -> Value {
    serde_json::from_str(program::Claim::SCHEMA).unwrap()
}

#[tokio::test]
async fn a_valid_answer_is_typed_recorded_and_decides_the_guard() {
    let (server, seen) =
        serving(r#"{"amount": 12, "reason": "mug arrived broken", "order_id": "7"}"#).await;
    let bank = Bank::default();
    let e = run(&server, ChoiceConstraint::Off, &bank).await;
    assert_eq!(e.status, RunStatus::Success, "{:?}", e.message);
    assert_eq!(e.path, ["extract", "policy", "pay", "done"]);
    assert_eq!(
        e.outputs["claim"],
        json!({"amount": 12, "reason": "mug arrived broken", "order_id": "7"})
    );
    assert_eq!(
        bank.refunds.lock().unwrap().as_slice(),
        [(12, "mug arrived broken".to_string())]
    );
    // Unconstrained: no response_format, but the instruction names the type and its schema.
    let body = seen.lock().unwrap()[0].clone();
    assert!(body.get("response_format").is_none(), "{body}");
    let content = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        content.ends_with(&format!(
            "Answer with one JSON value of type `Claim` matching this JSON Schema, and no other text: {}",
            program::Claim::SCHEMA
        )),
        "{content}"
    );
    // The trace records the request's instruction and the answer the typed value came from.
    let model_event = e
        .trace
        .entries()
        .iter()
        .find_map(|en| match &en.event {
            Event::Model {
                instruction, reply, ..
            } => Some((instruction.clone(), reply.clone())),
            _ => None,
        })
        .expect("a model event");
    assert!(model_event.0.unwrap().contains("`Claim`"));
    assert!(
        matches!(model_event.1, Reply::Answer { ref text, .. } if text.contains("\"amount\": 12"))
    );
    // A reply in a Markdown code fence is the same value.
    let (server, _) =
        serving("```json\n{\"amount\": 60, \"reason\": \"late\", \"order_id\": null}\n```").await;
    let e = run(&server, ChoiceConstraint::Off, &bank).await;
    assert_eq!(e.end_step.as_deref(), Some("refused"), "over the limit");
    assert_eq!(e.outputs["claim"]["amount"], json!(60));
}

#[tokio::test]
async fn constrained_modes_send_the_types_schema() {
    let reply = r#"{"amount": 5, "reason": "broken", "order_id": null}"#;
    let (server, seen) = serving(reply).await;
    let bank = Bank::default();
    let e = run(&server, ChoiceConstraint::JsonSchema, &bank).await;
    assert_eq!(e.status, RunStatus::Success, "{:?}", e.message);
    assert_eq!(
        seen.lock().unwrap()[0]["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "Claim", "strict": true, "schema": claim_schema()}})
    );
    let (server, seen) = serving(reply).await;
    let e = run(&server, ChoiceConstraint::JsonObjectSchema, &bank).await;
    assert_eq!(e.status, RunStatus::Success, "{:?}", e.message);
    assert_eq!(
        seen.lock().unwrap()[0]["response_format"],
        json!({"type": "json_object", "schema": claim_schema()})
    );
    // No grammar is derived for a type: `grammar` mode sends the schema as llama.cpp takes it.
    let (server, seen) = serving(reply).await;
    let e = run(&server, ChoiceConstraint::Grammar, &bank).await;
    assert_eq!(e.status, RunStatus::Success, "{:?}", e.message);
    let body = seen.lock().unwrap()[0].clone();
    assert_eq!(
        body["response_format"],
        json!({"type": "json_object", "schema": claim_schema()})
    );
    assert!(body.get("grammar").is_none(), "{body}");
    // The recorded reply says which mode it was asked under.
    let mode = e.trace.entries().iter().find_map(|en| match &en.event {
        Event::Model {
            reply: Reply::Answer { constraint, .. },
            ..
        } => constraint.clone(),
        _ => None,
    });
    assert_eq!(mode.as_deref(), Some("grammar"));
}

#[tokio::test]
async fn anything_but_a_value_of_the_type_follows_on_invalid() {
    for (what, reply) in [
        ("free text", "The customer wants 12 euros back."),
        (
            "a wrong field type",
            r#"{"amount": "12", "reason": "broken", "order_id": null}"#,
        ),
        (
            "a float for an int",
            r#"{"amount": 12.5, "reason": "broken", "order_id": null}"#,
        ),
        (
            "an extra field",
            r#"{"amount": 12, "reason": "broken", "order_id": null, "iban": "DE00"}"#,
        ),
        ("a missing field", r#"{"amount": 12}"#),
        ("another JSON type", r#"[12, "broken"]"#),
        (
            "two values",
            r#"{"amount": 1, "reason": "a"} {"amount": 2, "reason": "b"}"#,
        ),
    ] {
        let (server, _) = serving(reply).await;
        let bank = Bank::default();
        for mode in [ChoiceConstraint::Off, ChoiceConstraint::JsonSchema] {
            let e = run(&server, mode, &bank).await;
            assert_eq!(e.end_step.as_deref(), Some("unreadable"), "{what} ({mode})");
            assert_eq!(e.path, ["extract", "unreadable"], "{what}");
            // Never a partial value.
            assert!(!e.outputs.contains_key("claim"), "{what}: {:?}", e.outputs);
        }
        assert!(bank.refunds.lock().unwrap().is_empty(), "{what}");
    }
}

#[tokio::test]
async fn a_refusal_is_an_invalid_answer_too() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]
        })))
        .mount(&server)
        .await;
    let e = run(&server, ChoiceConstraint::Off, &Bank::default()).await;
    assert_eq!(e.end_step.as_deref(), Some("unreadable"), "{:?}", e.message);
}

#[tokio::test]
async fn a_typed_answer_replays_from_its_trace() {
    let (server, _) = serving(r#"{"amount": 3, "reason": "scratch", "order_id": null}"#).await;
    let bank = Bank::default();
    let e = run(&server, ChoiceConstraint::Off, &bank).await;
    assert_eq!(e.status, RunStatus::Success);
    let rt = Runtime::builder().build();
    let report = rt.replay::<P>(&e.trace).expect("replays");
    assert_eq!(report.root, e.root());
    assert_eq!(report.path, e.path);
}
