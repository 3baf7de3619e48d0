//! `OpenAiModel` against a local wiremock server (random port, no internet).

#![cfg(feature = "openai")]

mod support;

use std::sync::Arc;
use std::time::Duration;

use nanovm_runtime::model::{Model, ModelError, ModelReply, ModelRequest};
use nanovm_runtime::openai::{ChoiceConstraint, OpenAiBuilder, OpenAiConfigError, OpenAiModel};
use nanovm_runtime::testing::ManualClock;
use nanovm_runtime::trace::{BudgetKind, Event, Reply, RunStatus};
use nanovm_runtime::{RunOptions, Runtime};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ENDPOINT: &str = "/v1/chat/completions";

fn request(prompt: &str) -> ModelRequest {
    ModelRequest {
        step: "classify".into(),
        model: None,
        system: None,
        prompt: prompt.into(),
        max_tokens: None,
        choices: None,
        instruction: None,
        min_confidence: None,
        answer: None,
    }
}

fn builder(server: &MockServer) -> OpenAiBuilder {
    OpenAiModel::builder(format!("{}/v1", server.uri()))
        .model("test-model")
        .no_proxy()
}

fn model(server: &MockServer) -> OpenAiModel {
    builder(server).build().expect("valid config")
}

/// A well-formed completion with usage.
fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    })
}

/// A server answering every completion request with `response`.
async fn serving(response: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ENDPOINT))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

async fn complete(m: &OpenAiModel, req: &ModelRequest) -> Result<ModelReply, ModelError> {
    m.complete(req).await
}

#[tokio::test]
async fn sends_the_exact_request_json() {
    let server = MockServer::start().await;
    let expected = json!({
        "model": "gpt-step",
        "messages": [
            {"role": "system", "content": "You sort tickets."},
            {"role": "user", "content": "My card was charged twice."}
        ],
        "max_tokens": 5,
        "temperature": 0.0
    });
    Mock::given(method("POST"))
        .and(path(ENDPOINT))
        .and(header("content-type", "application/json"))
        .and(body_json(&expected))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("billing")))
        .expect(1)
        .mount(&server)
        .await;

    let mut req = request("My card was charged twice.");
    req.model = Some("gpt-step".into());
    req.system = Some("You sort tickets.".into());
    req.max_tokens = Some(5);
    let reply = complete(&model(&server), &req).await.expect("reply");
    assert_eq!(reply.text, "billing");

    // Byte for byte: fields in declaration order, nothing else.
    let sent = server.received_requests().await.expect("recording on");
    assert_eq!(
        String::from_utf8(sent[0].body.clone()).unwrap(),
        r#"{"model":"gpt-step","messages":[{"role":"system","content":"You sort tickets."},{"role":"user","content":"My card was charged twice."}],"max_tokens":5,"temperature":0.0}"#
    );
}

#[tokio::test]
async fn falls_back_to_configured_model_and_sends_seed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ENDPOINT))
        .and(body_json(json!({
            "model": "test-model",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 64,
            "temperature": 0.5,
            "seed": 7
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("hello")))
        .expect(1)
        .mount(&server)
        .await;
    let m = builder(&server)
        .temperature(0.5)
        .seed(7)
        .default_max_tokens(64)
        .build()
        .unwrap();
    assert_eq!(complete(&m, &request("hi")).await.unwrap().text, "hello");
}

#[tokio::test]
async fn omitted_temperature_is_not_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_json(json!({
            "model": "test-model",
            "messages": [{"role": "user", "content": "hi"}]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("ok")))
        .expect(1)
        .mount(&server)
        .await;
    let m = builder(&server).no_temperature().build().unwrap();
    complete(&m, &request("hi")).await.unwrap();
}

#[tokio::test]
async fn success_records_usage() {
    let server = serving(ResponseTemplate::new(200).set_body_json(completion(" refund \n"))).await;
    let reply = complete(&model(&server), &request("x")).await.unwrap();
    assert_eq!(
        reply,
        ModelReply {
            text: " refund \n".into(), // untrimmed: trimming is the runtime's job
            prompt_tokens: 11,
            completion_tokens: 3,
            cache_hit: false,
            tokens_estimated: false,
            probability: None,
            raw_text: None,
            constraint: None,
        }
    );
}

#[tokio::test]
async fn tolerates_missing_optional_fields() {
    // Shaped like mock-llm's default reply: no usage, index, created, id or finish_reason,
    // plus fields nobody knows.
    let body = json!({
        "object": "chat.completion",
        "choices": [{"message": {"role": "assistant", "content": "echo"}, "extra": [1, 2]}],
        "system_fingerprint": null,
        "x_vendor": {"anything": true}
    });
    let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
    let reply = complete(&model(&server), &request("x")).await.unwrap();
    assert_eq!(reply.text, "echo");
    // No usage: estimated, never free.
    assert!(reply.tokens_estimated);
    assert!(
        reply.prompt_tokens > 0 && reply.completion_tokens > 0,
        "{reply:?}"
    );
}

#[tokio::test]
async fn tolerates_oddly_typed_optional_fields() {
    let body = json!({
        "id": 42,
        "created": "yesterday",
        "choices": [{"index": "0", "message": {"content": "ok"}, "finish_reason": 1, "logprobs": "?"}],
        "usage": {"prompt_tokens": "many", "completion_tokens": 2}
    });
    let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
    let reply = complete(&model(&server), &request("x")).await.unwrap();
    assert_eq!(
        (
            reply.text.as_str(),
            reply.completion_tokens,
            reply.tokens_estimated
        ),
        ("ok", 2, true)
    );
    // `"many"` prompt tokens are estimated rather than read as 0.
    assert!(reply.prompt_tokens > 0, "{reply:?}");
}

#[tokio::test]
async fn null_content_reads_as_empty_text() {
    let body =
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null}}]});
    let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
    let reply = complete(&model(&server), &request("x")).await.unwrap();
    assert_eq!(reply.text, "");
}

#[tokio::test]
async fn too_many_requests_is_retryable() {
    let server = serving(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "3")
            .set_body_json(json!({"error": {"message": "Rate limit reached", "type": "requests"}})),
    )
    .await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains("429"), "{err}");
    assert!(err.message.contains("Rate limit reached"), "{err}");
    assert!(err.message.contains("retry-after: 3"), "{err}");
}

#[tokio::test]
async fn server_errors_are_retryable() {
    for status in [500, 502, 503] {
        let server = serving(ResponseTemplate::new(status).set_body_string("upstream down")).await;
        let err = complete(&model(&server), &request("x")).await.unwrap_err();
        assert!(err.retryable, "{status}: {err}");
        assert!(err.message.contains(&status.to_string()), "{err}");
        assert!(err.message.contains("upstream down"), "{err}");
    }
}

#[tokio::test]
async fn client_errors_are_permanent() {
    for status in [400, 401, 404, 422] {
        let server = serving(ResponseTemplate::new(status).set_body_json(
            json!({"error": {"message": "'max_tokens' is too large", "type": "invalid_request_error"}}),
        ))
        .await;
        let err = complete(&model(&server), &request("x")).await.unwrap_err();
        assert!(!err.retryable, "{status}: {err}");
        assert!(err.message.contains(&status.to_string()), "{err}");
        assert!(err.message.contains("'max_tokens' is too large"), "{err}");
    }
}

#[tokio::test]
async fn malformed_json_is_permanent_with_a_snippet() {
    let server = serving(
        ResponseTemplate::new(200).set_body_raw("<html>upstream proxy error</html>", "text/html"),
    )
    .await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("malformed"), "{err}");
    assert!(
        err.message.contains("<html>upstream proxy error</html>"),
        "{err}"
    );

    // A long body is quoted only in part.
    let long = format!("{{\"choices\": [{}", "x".repeat(10_000));
    let server = serving(ResponseTemplate::new(200).set_body_raw(long, "application/json")).await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(!err.retryable);
    assert!(err.message.len() < 1_000, "{}", err.message.len());
    assert!(err.message.contains("(10013 bytes)"), "{err}");
    assert!(err.message.contains(r#"body: {"choices": [xxx"#), "{err}");
}

#[tokio::test]
async fn well_formed_json_of_the_wrong_shape_is_permanent() {
    for body in [
        json!([1, 2, 3]),
        json!({"choices": []}),
        json!({"choices": [{"index": 0}]}),
        json!({"choices": [{"message": {"content": 5}}]}),
        json!({"error": {"message": "model overloaded"}}),
    ] {
        let server = serving(ResponseTemplate::new(200).set_body_json(&body)).await;
        let err = complete(&model(&server), &request("x")).await.unwrap_err();
        assert!(!err.retryable, "{body}: {err}");
    }
}

#[tokio::test]
async fn oversized_body_is_permanent() {
    let server =
        serving(ResponseTemplate::new(200).set_body_json(completion(&"y".repeat(4096)))).await;
    let m = builder(&server).max_response_bytes(1024).build().unwrap();
    let err = complete(&m, &request("x")).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("exceeds 1024 bytes"), "{err}");
}

#[tokio::test]
async fn connection_refused_is_retryable() {
    // A port that was free a moment ago and has nobody listening now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let m = OpenAiModel::builder(format!("http://127.0.0.1:{port}/v1"))
        .model("m")
        .no_proxy()
        .build()
        .unwrap();
    let err = complete(&m, &request("x")).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn timeout_is_retryable() {
    let server = serving(
        ResponseTemplate::new(200)
            .set_body_json(completion("late"))
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    let m = builder(&server)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = complete(&m, &request("x")).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains("timed out"), "{err}");
}

#[tokio::test]
async fn authorization_only_with_a_key() {
    let server = serving(ResponseTemplate::new(200).set_body_json(completion("ok"))).await;
    complete(&model(&server), &request("no key")).await.unwrap();
    let keyed = builder(&server).api_key("sk-test-123").build().unwrap();
    complete(&keyed, &request("key")).await.unwrap();

    let sent = server.received_requests().await.unwrap();
    assert_eq!(sent.len(), 2);
    assert!(sent[0].headers.get("authorization").is_none());
    assert_eq!(
        sent[1].headers.get("authorization").unwrap(),
        "Bearer sk-test-123"
    );
    // The key never shows up in Debug output.
    assert!(!format!("{keyed:?}").contains("sk-test-123"));
}

fn choose_request() -> ModelRequest {
    ModelRequest {
        choices: Some(&["refund", "replace", "escalate"]),
        ..request("Which action?")
    }
}

#[tokio::test]
async fn choices_do_not_constrain_by_default() {
    let server = MockServer::start().await;
    Mock::given(body_json(json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": "Which action?"}],
        "max_tokens": 24,
        "temperature": 0.0,
        "logprobs": true,
        "top_logprobs": 1
    })))
    .respond_with(ResponseTemplate::new(200).set_body_json(completion(r#"{"choice":"refund"}"#)))
    .expect(1)
    .mount(&server)
    .await;
    let reply = complete(&model(&server), &choose_request()).await.unwrap();
    // Unconstrained replies are passed through untouched.
    assert_eq!(reply.text, r#"{"choice":"refund"}"#);
}

fn choice_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"choice": {"type": "string", "enum": ["refund", "replace", "escalate"]}},
        "required": ["choice"],
        "additionalProperties": false
    })
}

#[tokio::test]
async fn json_schema_constraint_is_sent_and_unwrapped() {
    let server = MockServer::start().await;
    Mock::given(body_json(json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": "Which action?"}],
        "max_tokens": 24,
        "temperature": 0.0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "choice", "strict": true, "schema": choice_schema()}
        },
        "logprobs": true,
        "top_logprobs": 1
    })))
    .respond_with(
        ResponseTemplate::new(200).set_body_json(completion(r#"{ "choice": "replace" }"#)),
    )
    .expect(1)
    .mount(&server)
    .await;
    let m = builder(&server)
        .constrain_choices(ChoiceConstraint::JsonSchema)
        .build()
        .unwrap();
    assert_eq!(
        complete(&m, &choose_request()).await.unwrap().text,
        "replace"
    );

    // A request without choices carries no response_format even when constraining is on.
    let plain = OpenAiModel::chat_request(&m, &request("free text")).unwrap();
    assert_eq!(plain.response_format, None);
}

#[tokio::test]
async fn json_object_constraint_is_sent_and_unwrapped() {
    let server = MockServer::start().await;
    Mock::given(body_json(json!({
        "model": "test-model",
        "messages": [{"role": "user", "content": "Which action?"}],
        "max_tokens": 24,
        "temperature": 0.0,
        "response_format": {"type": "json_object", "schema": choice_schema()},
        "logprobs": true,
        "top_logprobs": 1
    })))
    .respond_with(ResponseTemplate::new(200).set_body_json(completion(r#"{"choice":"escalate"}"#)))
    .expect(1)
    .mount(&server)
    .await;
    let m = builder(&server)
        .constrain_choices(ChoiceConstraint::JsonObjectSchema)
        .build()
        .unwrap();
    assert_eq!(
        complete(&m, &choose_request()).await.unwrap().text,
        "escalate"
    );
}

// --- Attack: configuration mistakes that only showed at the first model step -----------------

#[test]
fn no_model_name_is_a_build_error() {
    // It used to build, and fail at the first model step of the first run.
    let err = OpenAiModel::builder("http://127.0.0.1:8088/v1")
        .build()
        .unwrap_err();
    assert_eq!(err, OpenAiConfigError::MissingModel);
    assert!(err.to_string().contains(".model("), "{err}");
    let blank = OpenAiModel::builder("http://127.0.0.1:8088/v1")
        .model("  ")
        .build();
    assert_eq!(blank.unwrap_err(), OpenAiConfigError::MissingModel);
}

#[test]
fn a_base_url_without_a_scheme_is_refused_with_the_fix() {
    // It used to fail with reqwest's "relative URL without a base", or for `localhost:8088`
    // with an "unsupported scheme \"localhost\"".
    for url in ["127.0.0.1:8088/v1", "localhost:8088/v1"] {
        let err = OpenAiModel::builder(url).model("m").build().unwrap_err();
        let OpenAiConfigError::BadBaseUrl { message, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(
            message.contains(&format!("did you mean \"http://{url}\"")),
            "{message}"
        );
    }
}

#[test]
fn constraint_modes_are_named_and_unknown_ones_refused() {
    for mode in ChoiceConstraint::ALL {
        assert_eq!(mode.as_str().parse::<ChoiceConstraint>().unwrap(), mode);
    }
    let err = "json".parse::<ChoiceConstraint>().unwrap_err();
    assert!(matches!(err, OpenAiConfigError::UnknownConstraint { .. }));
    assert!(err.to_string().contains("grammar"), "{err}");
}

#[test]
fn configuration_is_checked_at_build() {
    let endpoint = OpenAiModel::builder("http://127.0.0.1:8088/v1/")
        .model("m")
        .build()
        .unwrap();
    assert_eq!(
        endpoint.endpoint(),
        "http://127.0.0.1:8088/v1/chat/completions"
    );

    assert!(matches!(
        OpenAiModel::builder("not a url").model("m").build(),
        Err(OpenAiConfigError::BadBaseUrl { .. })
    ));
    assert!(matches!(
        OpenAiModel::builder("ftp://example.com/v1")
            .model("m")
            .build(),
        Err(OpenAiConfigError::BadBaseUrl { .. })
    ));
    assert!(matches!(
        OpenAiModel::builder("http://x/v1")
            .model("m")
            .api_key("bad\nkey")
            .build(),
        Err(OpenAiConfigError::BadApiKey)
    ));
    let https = OpenAiModel::builder("https://api.openai.com/v1")
        .model("m")
        .build();
    if cfg!(feature = "rustls") {
        assert!(https.is_ok());
    } else {
        assert!(matches!(https, Err(OpenAiConfigError::TlsNotEnabled(_))));
    }
}

// --- Attack: refusal / tool-use content parts read as text ------------------------------------

#[tokio::test]
async fn refusal_and_tool_parts_are_never_read_as_text() {
    // `refusal:"ye"` + `tool_use:"s"` used to be concatenated into "yes".
    let body = json!({"choices": [{"message": {"role": "assistant", "content": [
        {"type": "refusal", "refusal": "ye", "text": "ye"},
        {"type": "tool_use", "text": "s"}
    ]}, "finish_reason": "stop"}]});
    let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("invalid answer"), "{err}");
    assert!(err.message.contains("refus"), "{err}");

    // A tool-use part alone is no text either.
    let body = json!({"choices": [{"message": {"content": [
        {"type": "text", "text": "ye"}, {"type": "tool_use", "text": "s"}
    ]}}]});
    let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(err.message.contains("invalid answer"), "{err}");
    assert!(err.message.contains("tool_use"), "{err}");

    // `message.refusal` next to empty content.
    let body = json!({"choices": [{"message": {"content": null, "refusal": "I can't help"}}]});
    let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(err.message.contains("invalid answer"), "{err}");
    assert!(err.message.contains("refus"), "{err}");
}

#[tokio::test]
async fn tool_calls_without_content_are_not_an_empty_answer() {
    let body = json!({"choices": [{"message": {"role": "assistant", "content": null,
        "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "refund", "arguments": "{}"}}]},
        "finish_reason": "tool_calls"}]});
    let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("invalid answer"), "{err}");
    assert!(err.message.contains("tool call"), "{err}");
}

// --- Attack: an answer cut by max_tokens is accepted ------------------------------------------

#[tokio::test]
async fn an_answer_cut_by_the_token_limit_is_invalid() {
    let mut body = completion("refu");
    body["choices"][0]["finish_reason"] = json!("length");
    let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("invalid answer"), "{err}");
    assert!(err.message.contains("truncated"), "{err}");
}

// --- Attack: redirects are followed -----------------------------------------------------------

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ENDPOINT))
        .respond_with(
            ResponseTemplate::new(307).insert_header("location", "/elsewhere/chat/completions"),
        )
        .mount(&server)
        .await;
    Mock::given(path("/elsewhere/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("yes")))
        .expect(0)
        .mount(&server)
        .await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("307"), "{err}");
    assert!(err.message.contains("redirect"), "{err}");
    let sent = server.received_requests().await.unwrap();
    assert_eq!(sent.len(), 1, "the redirect target was asked");
}

// --- Attack: the server's error text is copied into the trace ---------------------------------

#[tokio::test]
async fn error_bodies_are_cut_before_they_reach_the_trace() {
    let traceback = format!(
        "Traceback (most recent call last):\n{}  File \"/srv/app/secrets/config.py\", line 7\nKeyError: 'OPENAI_KEY'",
        "  File \"/usr/lib/python3/site-packages/x.py\", line 1, in f\n".repeat(100)
    );
    let server = serving(ResponseTemplate::new(500).set_body_string(format!(
        "internal error in /srv/app/server.py: {}{traceback}",
        "x".repeat(500)
    )))
    .await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert!(err.message.contains("500"), "{err}");
    assert!(err.message.contains('…'), "{err}");
    // The server's internals never reach the trace: no traceback, no file path.
    for internal in [
        "config.py",
        "Traceback",
        "/srv/app",
        "site-packages",
        "OPENAI_KEY",
    ] {
        assert!(!err.message.contains(internal), "{internal}: {err}");
    }
    assert!(err.message.contains("internal error in <path>"), "{err}");
    let quoted = err
        .message
        .split_once(": internal error")
        .expect("quoted")
        .1;
    assert!(
        quoted.chars().count() <= 200 + 40,
        "{}",
        quoted.chars().count()
    );

    // The same bound for an `error.message` in JSON, cut on a char boundary.
    let long = "é".repeat(5000);
    let server =
        serving(ResponseTemplate::new(400).set_body_json(json!({"error": {"message": long}})))
            .await;
    let err = complete(&model(&server), &request("x")).await.unwrap_err();
    assert!(err.message.chars().count() < 400, "{}", err.message.len());
    assert!(err.message.contains("éé…"), "{err}");
    assert!(!err.message.contains('\u{fffd}'), "{err}");
}

// --- Attack: Retry-After is ignored -----------------------------------------------------------

/// A server answering the first request with `first`, every later one with a completion.
async fn first_then_ok(first: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(ENDPOINT))
        .respond_with(first)
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(ENDPOINT))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("ok")))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

/// `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn http_date(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let (year, month, day) = nanovm_runtime::time::civil_from_days(days);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        months[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test]
async fn retry_after_in_seconds_holds_back_the_next_request() {
    let server = first_then_ok(ResponseTemplate::new(429).insert_header("retry-after", "1")).await;
    let m = model(&server);
    let refused = std::time::Instant::now();
    let err = complete(&m, &request("x")).await.unwrap_err();
    assert!(err.retryable, "{err}");
    assert_eq!(complete(&m, &request("x")).await.unwrap().text, "ok");
    let waited = refused.elapsed();
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn retry_after_as_an_http_date_holds_back_the_next_request() {
    let at = std::time::SystemTime::now() + Duration::from_secs(2);
    let server = first_then_ok(
        ResponseTemplate::new(503).insert_header("retry-after", http_date(at).as_str()),
    )
    .await;
    let m = model(&server);
    let refused = std::time::Instant::now();
    assert!(complete(&m, &request("x")).await.unwrap_err().retryable);
    complete(&m, &request("x")).await.unwrap();
    // The date has one-second resolution: at least one second of the two is left.
    let waited = refused.elapsed();
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
}

#[tokio::test]
async fn retry_after_beyond_the_cap_is_permanent_and_not_waited_for() {
    let server =
        first_then_ok(ResponseTemplate::new(429).insert_header("retry-after", "3600")).await;
    let m = builder(&server)
        .max_retry_after(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = complete(&m, &request("x")).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("3600"), "{err}");
    let started = std::time::Instant::now();
    complete(&m, &request("x")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

// --- Attack: a reply without usage is free -----------------------------------------------------

#[tokio::test]
async fn missing_or_malformed_usage_is_estimated_never_zero() {
    let long_prompt = "Please classify this ticket about a double charge. ".repeat(20);
    for usage in [
        Value::Null,
        json!({}),
        json!({"prompt_tokens": 0, "completion_tokens": 0}),
        json!({"prompt_tokens": -5, "completion_tokens": "2"}),
        json!("lots"),
    ] {
        let mut body =
            json!({"choices": [{"message": {"content": "refund"}, "finish_reason": "stop"}]});
        if !usage.is_null() {
            body["usage"] = usage.clone();
        }
        let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
        let reply = complete(&model(&server), &request(&long_prompt))
            .await
            .unwrap();
        assert!(reply.tokens_estimated, "{usage}: {reply:?}");
        // At least one token per 4 bytes sent and received: conservative, never 0.
        assert!(
            reply.prompt_tokens >= long_prompt.len() as u64 / 4,
            "{usage}: {reply:?}"
        );
        assert!(reply.completion_tokens >= 2, "{usage}: {reply:?}");
    }
    // An empty answer with no usage still costs a token.
    let server = serving(
        ResponseTemplate::new(200)
            .set_body_json(json!({"choices": [{"message": {"content": ""}}]})),
    )
    .await;
    let reply = complete(&model(&server), &request("x")).await.unwrap();
    assert!(
        reply.prompt_tokens > 0 && reply.completion_tokens > 0,
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_server_without_usage_still_trips_max_tokens() {
    use support::small_tokens100::{self, Input};
    // Every answer is "a" and none reports usage: the cycle classify -> route -> lookup -> check
    // -> classify runs until a budget stops it. `max_tokens: 100` must, long before `max_steps`.
    let server = serving(ResponseTemplate::new(200).set_body_json(
        json!({"choices": [{"message": {"content": "a"}, "finish_reason": "stop"}]}),
    ))
    .await;
    let host = support::Host::new();
    host.fallback("fetch", json!({"status": "again"}));
    let runtime = Runtime::builder()
        .model(model(&server))
        .clock(ManualClock::auto_advance(1_700_000_000_000))
        .build();
    let e = runtime
        .run::<small_tokens100::Program>(
            Input::new("pricing"),
            Arc::new(host.clone()),
            RunOptions::default(),
        )
        .await
        .expect("the run executes");
    assert_eq!(e.status, RunStatus::BudgetExceeded);
    let tripped = e.trace.entries().iter().find_map(|en| match &en.event {
        Event::BudgetExceeded { budget, used, .. } => Some((*budget, *used)),
        _ => None,
    });
    let (budget, used) = tripped.expect("a budget_exceeded event");
    assert_eq!(budget, BudgetKind::MaxTokens);
    assert!(used > 100, "{used}");
    let calls = server.received_requests().await.unwrap().len();
    assert!(calls <= 8, "{calls} model calls under max_tokens: 100");
    // Every recorded reply says its counts are estimates.
    let mut replies = 0;
    for en in e.trace.entries() {
        if let Event::Model { reply, .. } = &en.event {
            replies += 1;
            assert!(
                matches!(reply, Reply::Answer { tokens_estimated: true, prompt_tokens, completion_tokens, .. }
                    if *prompt_tokens > 0 && *completion_tokens > 0),
                "{reply:?}"
            );
        }
    }
    assert_eq!(replies, calls);
    // The flag is part of the hashed, exported trace: it round-trips and replays.
    let text = e.trace.to_jsonl();
    assert!(text.contains(r#""tokens_estimated":true"#));
    let back = nanovm_runtime::trace::Trace::from_jsonl(&text).expect("verifies");
    assert_eq!(back.root(), e.trace.root());
    let report = runtime
        .replay::<small_tokens100::Program>(&back)
        .expect("replays");
    assert_eq!(report.root, e.trace.root());
    assert_eq!(report.status, RunStatus::BudgetExceeded);
}

// --- Issue 17: what a real small model needs, and what a real server answers ----------------

/// A `choose` request as the runtime builds it (instruction included).
fn runtime_choose_request() -> ModelRequest {
    ModelRequest {
        choices: Some(&["yes", "no"]),
        instruction: Some(nanovm_runtime::model::choice_instruction(&["yes", "no"])),
        ..request("Is this a valid refund request?")
    }
}

/// A completion whose message is `content`, with chat-style logprobs for `tokens`.
fn completion_with_logprobs(content: &str, tokens: &[(&str, f64)]) -> Value {
    let mut c = completion(content);
    c["choices"][0]["logprobs"] = json!({
        "content": tokens
            .iter()
            .map(|(t, lp)| json!({"token": t, "logprob": lp, "bytes": null, "top_logprobs": []}))
            .collect::<Vec<_>>()
    });
    c
}

#[tokio::test]
async fn a_choose_request_names_the_answers_and_bounds_the_reply() {
    // Unconstrained, a small model answered with a sentence: the request said nothing about
    // the format and set no max_tokens.
    let server = MockServer::start().await;
    Mock::given(body_json(json!({
        "model": "test-model",
        "messages": [{"role": "user", "content":
            "Is this a valid refund request?\n\nAnswer with exactly one word: one of yes, no. No other text."}],
        "max_tokens": 24,
        "temperature": 0.0,
        "logprobs": true,
        "top_logprobs": 1
    })))
    .respond_with(ResponseTemplate::new(200).set_body_json(completion("yes")))
    .expect(1)
    .mount(&server)
    .await;
    let reply = complete(&model(&server), &runtime_choose_request())
        .await
        .unwrap();
    assert_eq!(reply.text, "yes");
    assert_eq!(reply.constraint, None);
    assert_eq!(reply.raw_text, None);
    // The step's own max_tokens, or the configured default, still wins.
    let m = builder(&server).default_max_tokens(5).build().unwrap();
    assert_eq!(
        m.chat_request(&runtime_choose_request())
            .unwrap()
            .max_tokens,
        Some(5)
    );
    // A free-text step gets neither a max_tokens nor logprobs.
    let plain = model(&server).chat_request(&request("x")).unwrap();
    assert_eq!(
        (plain.max_tokens, plain.logprobs, plain.top_logprobs),
        (None, None, None)
    );
}

#[tokio::test]
async fn grammar_mode_sends_llama_cpp_grammar() {
    let server = MockServer::start().await;
    Mock::given(body_json(json!({
        "model": "test-model",
        "messages": [{"role": "user", "content":
            "Is this a valid refund request?\n\nAnswer with exactly one word: one of yes, no. No other text."}],
        "max_tokens": 24,
        "temperature": 0.0,
        "grammar": "root ::= \"yes\" | \"no\"",
        "logprobs": true,
        "top_logprobs": 1
    })))
    .respond_with(
        ResponseTemplate::new(200)
            .set_body_json(completion_with_logprobs("no", &[("no", -0.105_360_5)])),
    )
    .expect(1)
    .mount(&server)
    .await;
    let m = builder(&server)
        .constrain_choices(ChoiceConstraint::Grammar)
        .build()
        .unwrap();
    let reply = complete(&m, &runtime_choose_request()).await.unwrap();
    assert_eq!(reply.text, "no");
    assert_eq!(reply.constraint.as_deref(), Some("grammar"));
    let p = reply.probability.unwrap();
    assert!((p - 0.9).abs() < 1e-6, "{p}");
}

#[tokio::test]
async fn the_probability_is_the_answers_not_the_wrappers() {
    // {"choice": "yes"} under a JSON constraint: the wrapper tokens are forced; the answer's
    // probability is that of the tokens spelling `yes`.
    let tokens = [
        ("{\"", -2.0),
        ("choice", -1.0),
        ("\": \"", -3.0),
        ("y", -0.1),
        ("es", -0.2),
        ("\"}", -5.0),
    ];
    let server = serving(
        ResponseTemplate::new(200)
            .set_body_json(completion_with_logprobs(r#"{"choice": "yes"}"#, &tokens)),
    )
    .await;
    let m = builder(&server)
        .constrain_choices(ChoiceConstraint::JsonObjectSchema)
        .build()
        .unwrap();
    let reply = complete(&m, &runtime_choose_request()).await.unwrap();
    assert_eq!(reply.text, "yes");
    // What the server really sent is kept, with the mode.
    assert_eq!(reply.raw_text.as_deref(), Some(r#"{"choice": "yes"}"#));
    assert_eq!(reply.constraint.as_deref(), Some("json_object"));
    let p = reply.probability.unwrap();
    assert!((p - (-0.3f64).exp()).abs() < 1e-9, "{p}");

    // Tokens that do not spell the text: the probability of the whole reply (never more than
    // the answer's).
    let server = serving(
        ResponseTemplate::new(200).set_body_json(completion_with_logprobs(
            "yes",
            &[("ye", -0.5), ("p", -0.5)],
        )),
    )
    .await;
    let reply = complete(&model(&server), &runtime_choose_request())
        .await
        .unwrap();
    assert!((reply.probability.unwrap() - (-1.0f64).exp()).abs() < 1e-9);
}

#[tokio::test]
async fn malformed_or_missing_logprobs_give_no_probability() {
    for logprobs in [
        json!(null),
        json!("high"),
        json!({"content": [{"token": "yes", "logprob": 0.5}]}), // a logprob above 0
        json!({"content": [{"token": "yes", "logprob": "x"}]}),
        json!({"content": [{"token": "yes"}]}),
        json!({"content": []}),
        json!({"tokens": ["yes"], "token_logprobs": []}),
    ] {
        let mut body = completion("yes");
        body["choices"][0]["logprobs"] = logprobs.clone();
        let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
        let reply = complete(&model(&server), &runtime_choose_request())
            .await
            .unwrap();
        assert_eq!(reply.text, "yes");
        assert_eq!(reply.probability, None, "{logprobs}");
    }
    // The legacy completions form is read too.
    let mut body = completion("yes");
    body["choices"][0]["logprobs"] = json!({"tokens": ["yes"], "token_logprobs": [-0.5]});
    let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
    let reply = complete(&model(&server), &runtime_choose_request())
        .await
        .unwrap();
    assert!((reply.probability.unwrap() - (-0.5f64).exp()).abs() < 1e-9);
}

/// llama-cpp-python 0.3.36's answer to `response_format: {"type": "json_schema", ...}`.
fn llama_cpp_python_validation_500() -> Value {
    json!({"error": {
        "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"/opt/venv/lib/python3.11/site-packages/llama_cpp/server/app.py\", line 376, in create_chat_completion\n    POST /v1/chat/completions",
        "type": "internal_server_error"
    }})
}

#[tokio::test]
async fn a_rejected_constraint_mode_is_permanent_detected_once_and_names_the_fix() {
    // It was retryable (a 500), so a step with `retry` retried a request that can never
    // succeed, and the recorded error held the server's traceback and file paths.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_json(llama_cpp_python_validation_500()))
        .expect(1)
        .mount(&server)
        .await;
    let m = builder(&server)
        .constrain_choices(ChoiceConstraint::JsonSchema)
        .build()
        .unwrap();
    let err = complete(&m, &runtime_choose_request()).await.unwrap_err();
    assert!(!err.retryable, "{err}");
    assert!(err.message.contains("`json_schema`"), "{err}");
    assert!(
        err.message.contains("use `json_object` or `grammar`"),
        "{err}"
    );
    for internal in [
        "site-packages",
        "/opt/venv",
        "app.py",
        "create_chat_completion",
    ] {
        assert!(!err.message.contains(internal), "{internal}: {err}");
    }
    // Detected once: the next constrained request fails the same way without being sent.
    let again = complete(&m, &runtime_choose_request()).await.unwrap_err();
    assert_eq!(again, err);
}

#[tokio::test]
async fn validation_errors_are_permanent_whatever_the_status() {
    // FastAPI's own 422, and a 500 with a pydantic `detail` list, on a request without a
    // constraint: permanent, explained from `detail`.
    for status in [422, 500] {
        let server = serving(ResponseTemplate::new(status).set_body_json(json!({"detail": [
            {"type": "extra_forbidden", "loc": ["body", "logprobs"], "msg": "Extra inputs are not permitted"}
        ]})))
        .await;
        let err = complete(&model(&server), &runtime_choose_request())
            .await
            .unwrap_err();
        assert!(!err.retryable, "{status}: {err}");
        assert!(
            err.message
                .contains("body.logprobs: Extra inputs are not permitted"),
            "{err}"
        );
    }
    // A plain 500 stays retryable.
    let server = serving(
        ResponseTemplate::new(500).set_body_json(json!({"error": {"message": "out of memory"}})),
    )
    .await;
    let err = complete(&model(&server), &runtime_choose_request())
        .await
        .unwrap_err();
    assert!(err.retryable, "{err}");
}

#[tokio::test]
async fn a_choose_answer_cut_short_is_an_invalid_answer_not_a_failure() {
    let mut body = completion("No, this is not a valid refund request because");
    body["choices"][0]["finish_reason"] = json!("length");
    let server = serving(ResponseTemplate::new(200).set_body_json(body)).await;
    let err = complete(&model(&server), &runtime_choose_request())
        .await
        .unwrap_err();
    assert!(err.invalid_answer, "{err:?}");
    assert!(!err.retryable);
    assert!(err.message.contains("truncated"), "{err}");
}

#[tokio::test]
async fn an_invalid_request_is_blamed_on_the_mode_only_when_the_server_names_it() {
    // OpenAI's 400 for a prompt too long, with a constraint mode on: permanent, but the mode
    // is not rejected, so the next request is sent.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "This model's maximum context length is 8192 tokens.",
            "code": "context_length_exceeded"
        }})))
        .expect(2)
        .mount(&server)
        .await;
    let m = builder(&server)
        .constrain_choices(ChoiceConstraint::JsonSchema)
        .build()
        .unwrap();
    for _ in 0..2 {
        let err = complete(&m, &runtime_choose_request()).await.unwrap_err();
        assert!(!err.retryable, "{err}");
        assert!(!err.message.contains("constraint mode"), "{err}");
        assert!(err.message.contains("maximum context length"), "{err}");
    }
}
