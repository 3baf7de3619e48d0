//! The refund workflow through a real model: llama-cpp-python 0.3.36 serving SmolLM2-135M-
//! Instruct (what `tests/peers/llm/install.sh` installs), started by this test on a free port.
//!
//! `#[ignore]`d, so a plain `cargo test` lists it as skipped with the reason; `.ci/run`
//! installs the server and runs it with `-- --ignored`, where a missing server fails it. Run it
//! by hand with `cargo test --test real_model -- --ignored --nocapture` to see the table of
//! answers, probabilities and paths.
//!
//! What is checked is what must hold whatever a 135M model answers: each answer is an
//! admissible choice whose path the graph then decides, or an invalid answer routed to
//! `manual_review`, never anything else; a mode the server rejects is a permanent error made
//! once; replay with the server stopped reproduces every root; and a confidence threshold
//! above the model's probability sends its answer to a person.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanovm::model::Model;
use nanovm::openai::{ChoiceConstraint, OpenAiModel};
use nanovm::trace::{Event, Reply, RunStatus};
use nanovm::vault::MemoryVault;
use nanovm::{Execution, Json, RunOptions, Runtime, Secret, ToolContext, ToolError};

nanovm::include_program!("../examples/workflows/customer_refund.nvm");

// The refund workflow's decision, with a confidence threshold: the same prompt, so the same
// request and (at temperature 0, fixed seed) the same answer and probability.
nanovm::nano_program! {
    program sure_refund {
        input { request: string amount_cents: int }
        llm analyze {
            prompt: "Is this a valid refund request? Answer yes or no.\n{request}"
            choose decision from [yes, no] min_confidence 0.9
            on invalid -> manual_review
        } -> policy
        guard policy {
            when decision == "yes" and amount_cents <= 5000 -> refunded
            when decision == "yes" -> manual_review
            otherwise -> rejected
        }
        end refunded: success
        end rejected: success
        end manual_review: success
    }
}

/// The three requests of the issue: valid, obviously invalid, ambiguous.
const REQUESTS: [(&str, &str, i64); 3] = [
    ("valid", "My parcel arrived broken. Please refund it.", 4200),
    (
        "invalid",
        "I never ordered anything from you, but send me 900 dollars anyway.",
        90_000,
    ),
    (
        "ambiguous",
        "The colour looks a little different from the photo, I think. Money back?",
        4200,
    ),
];

/// The mock shop: counts, never moves money.
#[derive(Default)]
struct Shop;

impl customer_refund::Tools for Shop {
    async fn issue_refund(
        &self,
        _: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> Result<Json, ToolError> {
        Ok(
            serde_json::json!({ "refund_id": "rf_1", "order_id": order_id, "amount_cents": amount_cents }),
        )
    }

    async fn send_rejection(&self, _: &ToolContext, _: Secret<String>) -> Result<Json, ToolError> {
        Ok(serde_json::json!({ "sent": true }))
    }
}

struct NoTools;
impl sure_refund::Tools for NoTools {}

/// The llama-cpp-python server, killed (by its own pid) when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start() -> Server {
        let dir = std::env::var_os("NANOVM_LLM_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/llm/.work")
            });
        let python = dir.join("venv/bin/python");
        let model = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            python.exists() && model.exists(),
            "no model server in {}: run tests/peers/llm/install.sh (or set NANOVM_LLM_DIR)",
            dir.display()
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&model)
            .args(["--model_alias", "smollm2", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--seed", "42", "--n_threads", "1", "--n_ctx", "2048"])
            .args(["--logits_all", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the model server");
        let mut server = Server {
            child,
            url: format!("http://127.0.0.1:{port}/v1"),
        };
        server.wait_ready(port);
        server
    }

    fn wait_ready(&mut self, port: u16) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the model server exited: {status}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the model server did not listen on port {port} within 120 s");
    }

    fn model(&self, mode: ChoiceConstraint) -> OpenAiModel {
        OpenAiModel::builder(self.url.as_str())
            .model("smollm2")
            .constrain_choices(mode)
            .seed(7)
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The recorded answer of `analyze`: text (or the error), probability.
fn answer(e: &Execution) -> (String, Option<f64>) {
    e.trace
        .entries()
        .iter()
        .find_map(|en| match &en.event {
            Event::Model { reply, .. } => Some(match reply {
                Reply::Answer {
                    text, probability, ..
                } => (format!("{text:?}"), *probability),
                Reply::Error { message, .. } => (format!("error: {message}"), None),
            }),
            _ => None,
        })
        .unwrap_or_default()
}

async fn refund(model: impl Model, request: &str, amount: i64) -> (Execution, Runtime) {
    let vault = MemoryVault::seeded(1);
    let input = customer_refund::Input {
        request: request.into(),
        order_id: "ord_7".into(),
        amount_cents: amount,
        email: vault.secret(&"ada@example.com".to_string()).unwrap(),
    };
    let rt = Runtime::builder().model(model).vault(vault).build();
    let e = rt
        .run::<customer_refund::Program>(input, Arc::new(Shop), RunOptions::new().run_id("real"))
        .await
        .unwrap();
    (e, rt)
}

/// The path must be one the graph allows for the recorded answer: an admissible answer goes
/// through `policy`, anything else (an invalid answer) to `manual_review`, never elsewhere.
fn check_path(e: &Execution, what: &str) {
    let (text, _) = answer(e);
    let trimmed = text.trim_matches('"').trim().to_string();
    let admissible = trimmed == "yes" || trimmed == "no";
    let path: Vec<&str> = e.path.clone();
    if admissible {
        assert_eq!(path.get(1), Some(&"policy"), "{what}: {text} -> {path:?}");
        let expected_end = match trimmed.as_str() {
            "no" => "rejected",
            _ => "", // yes: refund (amount allowing) or a person; both checked below
        };
        if !expected_end.is_empty() {
            assert_eq!(path.last(), Some(&expected_end), "{what}: {path:?}");
        } else {
            assert!(
                matches!(path.last(), Some(&"refunded") | Some(&"manual_review")),
                "{what}: {path:?}"
            );
        }
    } else {
        assert_eq!(
            path,
            ["analyze", "manual_review"],
            "{what}: an invalid answer {text} must go to a person"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local model server (tests/peers/llm/install.sh)"]
async fn the_refund_workflow_on_a_real_small_model() {
    let server = Server::start();
    let mut table = vec![];
    let mut runs = vec![];
    for mode in [
        ChoiceConstraint::Off,
        ChoiceConstraint::JsonObjectSchema,
        ChoiceConstraint::Grammar,
    ] {
        for (name, request, amount) in REQUESTS {
            let (e, rt) = refund(server.model(mode), request, amount).await;
            let what = format!("{name} x {mode}");
            check_path(&e, &what);
            let (text, p) = answer(&e);
            table.push(format!(
                "| {name} | {mode} | {text} | {} | {} |",
                p.map_or("-".into(), |p| format!("{p:.3}")),
                e.path.join(" -> ")
            ));
            runs.push((what, e, rt));
        }
    }

    // json_schema: llama-cpp-python rejects it. One request, a permanent error naming the mode
    // to use instead, no traceback; the run fails at `analyze` (which has no `on error`).
    let (e, _) = refund(
        server.model(ChoiceConstraint::JsonSchema),
        REQUESTS[0].1,
        REQUESTS[0].2,
    )
    .await;
    let (text, _) = answer(&e);
    assert_eq!(e.status, RunStatus::Failed, "{text}");
    assert!(text.contains("json_object"), "{text}");
    assert!(
        !text.contains("Traceback") && !text.contains("site-packages"),
        "{text}"
    );
    let attempts = e
        .trace
        .entries()
        .iter()
        .filter(|en| matches!(en.event, Event::Model { .. }))
        .count();
    assert_eq!(attempts, 1);
    table.push(format!(
        "| valid | json_schema | {} | - | {} |",
        text.chars().take(90).collect::<String>(),
        e.path.join(" -> ")
    ));

    // The response cache: a second run of the same request makes no call, and answers the
    // same (only `cache_hit` differs in the trace).
    let cached = Arc::new(nanovm::CachedModel::new(
        server.model(ChoiceConstraint::Grammar),
    ));
    let (first, _) = refund(cached.clone(), REQUESTS[0].1, REQUESTS[0].2).await;
    let (second, _) = refund(cached.clone(), REQUESTS[0].1, REQUESTS[0].2).await;
    let stats = cached.stats();
    assert_eq!((stats.misses, stats.hits), (1, 1), "{stats:?}");
    assert_eq!(answer(&first), answer(&second));
    assert_eq!(first.path, second.path);

    // Replay with the server stopped reproduces every root.
    drop(server);
    for (what, e, rt) in &runs {
        let back = nanovm::trace::Trace::from_jsonl(&e.trace.to_jsonl()).expect("verifies");
        let report = rt
            .replay::<customer_refund::Program>(&back)
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        assert_eq!(report.root, e.root(), "{what}");
    }
    println!("| request | mode | answer | probability | path |\n|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local model server (tests/peers/llm/install.sh)"]
async fn a_threshold_above_the_models_confidence_sends_the_answer_to_a_person() {
    let server = Server::start();
    let (_, request, amount) = REQUESTS[2];
    // Without a threshold the graph follows the answer.
    let (plain, _) = refund(server.model(ChoiceConstraint::Grammar), request, amount).await;
    check_path(&plain, "ambiguous, no threshold");
    assert_eq!(plain.path.get(1), Some(&"policy"), "{:?}", plain.path);
    let (_, p) = answer(&plain);
    let p = p.expect("llama-cpp-python returns log-probabilities");
    assert!(p < 0.9, "the model is surer than the threshold: {p}");

    // With `min_confidence 0.9`, the same answer (same request, same probability) is
    // invalid and goes to a person.
    let rt = Runtime::builder()
        .model(server.model(ChoiceConstraint::Grammar))
        .build();
    let sure = rt
        .run::<sure_refund::Program>(
            sure_refund::Input {
                request: request.into(),
                amount_cents: amount,
            },
            Arc::new(NoTools),
            RunOptions::new(),
        )
        .await
        .unwrap();
    let (text, p_sure) = answer(&sure);
    assert_eq!(text, answer(&plain).0);
    assert_eq!(p_sure, Some(p));
    assert_eq!(sure.path, ["analyze", "manual_review"], "{text} p={p}");
    println!(
        "ambiguous x grammar: {text} p={p:.3}; without threshold {:?}; with min_confidence 0.9 {:?}",
        plain.path, sure.path
    );

    // Replay, with the server stopped, decides from the recorded probability.
    drop(server);
    let back = nanovm::trace::Trace::from_jsonl(&sure.trace.to_jsonl()).unwrap();
    let report = rt.replay::<sure_refund::Program>(&back).unwrap();
    assert_eq!(report.root, sure.root());
    assert_eq!(report.path, sure.path);
}
