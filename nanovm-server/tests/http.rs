//! Issue 13, item 2: the HTTP server, driven from Rust with reqwest against a real bound
//! loopback port, on a SQLite store (and PostgreSQL, with `DATABASE_URL`).
//!
//! Attacks: a repeated start (same run id) must not start a second run nor store the secret
//! again; a repeated webhook (same event id) must not be applied twice; a request without a
//! token, with a wrong token, or with a token lacking the scope; bad JSON, an unknown program,
//! wrong types, unknown fields, an oversized body, another content type, a reused run id with
//! other inputs: each a 4xx with a JSON error naming the problem, and nothing written. A slow
//! request is cut at the time limit while the work it started goes on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanovm_runtime::store::SqliteStore;
use nanovm_runtime::testing::ScriptedModel;
use nanovm_runtime::{Json, Runtime, ToolContext, ToolError};
use nanovm_server::{Running, Scope, Server};
use reqwest::StatusCode;
use serde_json::json;

include!("../../nanovm-runtime/tests/support/generated/customer_refund.rs");

/// Mock shop: counts executions per effect id (an idempotent refund API keyed by the id).
#[derive(Default)]
struct Shop {
    executed: Mutex<BTreeMap<String, usize>>,
    delay: Mutex<Duration>,
}

impl Shop {
    fn executions(&self) -> usize {
        self.executed.lock().unwrap().values().sum()
    }
    fn max_per_effect(&self) -> usize {
        self.executed
            .lock()
            .unwrap()
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }
}

impl customer_refund::Tools for Shop {
    async fn issue_refund(
        &self,
        ctx: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> Result<Json, ToolError> {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        *self
            .executed
            .lock()
            .unwrap()
            .entry(ctx.idempotency_key.to_hex())
            .or_default() += 1;
        Ok(json!({ "refund_id": format!("rf-{order_id}"), "amount_cents": amount_cents }))
    }

    async fn send_rejection(
        &self,
        ctx: &ToolContext,
        email: nanovm_runtime::Secret<String>,
    ) -> Result<Json, ToolError> {
        *self
            .executed
            .lock()
            .unwrap()
            .entry(ctx.idempotency_key.to_hex())
            .or_default() += 1;
        Ok(json!({ "sent": true, "len": email.expose().len() }))
    }
}

const ALL: &str = "all-token";
const READ: &str = "read-token";
const START: &str = "start-token";

struct Fixture {
    server: Running,
    shop: Arc<Shop>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn fixture(answer: &str, timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("runs.db")).await.unwrap();
    let vault = store.vault();
    let runtime = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", answer))
        .vault(vault)
        .store(store)
        .build();
    let shop = Arc::new(Shop::default());
    let server = Server::new(runtime)
        .program::<customer_refund::Program>(shop.clone())
        .token(ALL, "ops", &[Scope::Read, Scope::Start, Scope::Operate])
        .token(READ, "viewer", &[Scope::Read])
        .token(START, "shopfront", &[Scope::Start])
        .body_limit(4096)
        .request_timeout(timeout)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    Fixture {
        server,
        shop,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

fn input(amount_cents: i64) -> Json {
    json!({
        "request": "It arrived broken.",
        "order_id": "o-1",
        "amount_cents": amount_cents,
        "email": "cy@example.com",
    })
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    async fn post(&self, path: &str, token: &str, body: &Json) -> (StatusCode, Json) {
        let res = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Json::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Json) {
        let res = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Json::Null))
    }

    async fn start(&self, run_id: &str, input: Json) -> (StatusCode, Json) {
        self.post(
            "/v1/programs/customer_refund/runs",
            START,
            &json!({ "run_id": run_id, "input": input }),
        )
        .await
    }

    /// Polls the run's state until `done` says so (10 s at most).
    async fn wait(&self, run_id: &str, done: impl Fn(&Json) -> bool) -> Json {
        let t0 = Instant::now();
        loop {
            let (s, state) = self.get(&format!("/v1/runs/{run_id}"), READ).await;
            assert_eq!(s, StatusCode::OK, "{state}");
            if done(&state) {
                return state;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "stuck: {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn run_count(&self) -> usize {
        let (_, runs) = self.get("/v1/runs", READ).await;
        runs["runs"].as_array().unwrap().len()
    }
}

fn status_is(s: &'static str) -> impl Fn(&Json) -> bool {
    move |st| st["status"] == s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_runs_once_and_a_repeat_returns_the_existing_run() {
    let f = fixture("yes", Duration::from_secs(10)).await;
    let (s, created) = f.start("r-1", input(1200)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["run_id"], "r-1");
    assert_eq!(created["created"], true);
    let done = f.wait("r-1", status_is("success")).await;
    assert_eq!(done["step"], "refunded");
    // The repeat: the run as it stands, nothing new.
    let (s, again) = f.start("r-1", input(1200)).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["created"], false);
    assert_eq!(again["status"], "success");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.shop.executions(), 1, "the refund executed once");
    assert_eq!(f.run_count().await, 1);
    // The trace: verified JSONL, its root in a header, no plaintext secret.
    let res = f
        .http
        .get(f.url("/v1/runs/r-1/trace"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let root = res.headers()["x-nanovm-root"].to_str().unwrap().to_string();
    let text = res.text().await.unwrap();
    let (n, verified_root) = nanovm_runtime::trace::verify_jsonl(&text).expect("verifies");
    assert!(n > 3);
    assert_eq!(verified_root.to_hex(), root);
    assert!(
        !text.contains("cy@example.com"),
        "plaintext secret in the trace"
    );
    // Listing and filtering.
    let (_, runs) = f
        .get("/v1/runs?status=success&program=customer_refund", READ)
        .await;
    assert_eq!(runs["runs"][0]["run_id"], "r-1");
    let (_, none) = f.get("/v1/runs?status=failed", READ).await;
    assert_eq!(none["runs"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_starts_make_one_run() {
    let f = Arc::new(fixture("yes", Duration::from_secs(10)).await);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let f = f.clone();
        tasks.push(tokio::spawn(
            async move { f.start("dup", input(900)).await },
        ));
    }
    let mut created = 0;
    for t in tasks {
        let (s, body) = t.await.unwrap();
        assert!(
            s == StatusCode::CREATED || s == StatusCode::OK,
            "{s} {body}"
        );
        created += usize::from(s == StatusCode::CREATED);
    }
    assert_eq!(
        created, 1,
        "one start created the run; the others were told it existed"
    );
    f.wait("dup", status_is("success")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.run_count().await, 1);
    assert_eq!(f.shop.executions(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_shows_what_it_waits_for_and_a_webhook_applies_once() {
    let f = fixture("yes", Duration::from_secs(10)).await;
    // Over 5000: manual review.
    f.start("w-1", input(9000)).await;
    let waiting = f.wait("w-1", status_is("suspended")).await;
    assert_eq!(waiting["step"], "manual_review");
    assert_eq!(waiting["waiting"]["event"], "approval");
    assert!(waiting["waiting"]["deadline_ms"].as_u64().unwrap() > 0);
    assert!(
        waiting["waiting"]["deadline"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    // A read token cannot deliver.
    let hook = json!({ "event_id": "evt-1", "payload": { "approved": true } });
    let (s, e) = f.post("/v1/runs/w-1/events/approval", READ, &hook).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    // Another event than the awaited one.
    let (s, e) = f.post("/v1/runs/w-1/events/payment", ALL, &hook).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "not_waiting");
    // The webhook, three times.
    let (s, first) = f.post("/v1/runs/w-1/events/approval", ALL, &hook).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    assert_eq!(first["outcome"], "delivered");
    assert_eq!(first["status"], "success");
    for _ in 0..2 {
        let (s, again) = f.post("/v1/runs/w-1/events/approval", ALL, &hook).await;
        assert_eq!(s, StatusCode::OK, "{again}");
        assert_eq!(again["outcome"], "duplicate");
    }
    // The same event id with another payload is not a duplicate to acknowledge.
    let other = json!({ "event_id": "evt-1", "payload": { "approved": false } });
    let (s, e) = f.post("/v1/runs/w-1/events/approval", ALL, &other).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(f.shop.executions(), 1);
    // The trace names who delivered.
    let text = f
        .http
        .get(f.url("/v1/runs/w-1/trace"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"ops\""), "the actor is recorded: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_list_their_input_schema_and_graph() {
    let f = fixture("yes", Duration::from_secs(10)).await;
    let (s, list) = f.get("/v1/programs", READ).await;
    assert_eq!(s, StatusCode::OK);
    let p = &list["programs"][0];
    assert_eq!(p["name"], "customer_refund");
    assert_eq!(p["input_schema"]["additionalProperties"], false);
    assert_eq!(p["input_schema"]["properties"]["email"]["writeOnly"], true);
    assert!(p["mermaid"].as_str().unwrap().starts_with("flowchart TD"));
    assert_eq!(
        p["events"],
        json!([{ "step": "manual_review", "event": "approval", "type": "json", "payload_schema": {} }])
    );
    let (s, one) = f.get("/v1/programs/customer_refund", READ).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["hash"], p["hash"]);
    // Health needs no token; readiness asks the store.
    let res = f.http.get(f.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = f.http.get(f.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// The bad-input table of docs/runtime.md: each request, what came back, and nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_clear_4xx_and_write_nothing() {
    let f = fixture("yes", Duration::from_secs(10)).await;
    let start = "/v1/programs/customer_refund/runs";
    let ok = json!({ "run_id": "b-1", "input": input(100) });
    let raw = |token: Option<&str>, path: &str, ct: &str, body: Vec<u8>| {
        let mut rb = f
            .http
            .post(f.url(path))
            .header("content-type", ct.to_string())
            .body(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb
    };
    let mut wrong_types = input(100);
    wrong_types["amount_cents"] = json!("100");
    wrong_types["email"] = json!(7);
    let mut unknown_field = input(100);
    unknown_field["is_admin"] = json!(true);
    let mut missing = input(100);
    missing.as_object_mut().unwrap().remove("order_id");
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str, &str)> = vec![
        (
            "no token",
            raw(None, start, "application/json", ok.to_string().into()),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token",
        ),
        (
            "wrong token",
            raw(
                Some("guess"),
                start,
                "application/json",
                ok.to_string().into(),
            ),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown token",
        ),
        (
            "read token starts",
            raw(Some(READ), start, "application/json", ok.to_string().into()),
            StatusCode::FORBIDDEN,
            "forbidden",
            "lacks the scope `start`",
        ),
        (
            "bad JSON",
            raw(
                Some(START),
                start,
                "application/json",
                b"{\"run_id\": \"b-1\", ".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            "bad_json",
            "EOF while parsing",
        ),
        (
            "unknown program",
            raw(
                Some(START),
                "/v1/programs/transfer_all/runs",
                "application/json",
                ok.to_string().into(),
            ),
            StatusCode::NOT_FOUND,
            "unknown_program",
            "no program `transfer_all`",
        ),
        (
            "wrong types",
            raw(
                Some(START),
                start,
                "application/json",
                json!({ "run_id": "b-1", "input": wrong_types })
                    .to_string()
                    .into(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "field `amount_cents`: expected an integer (i64) (declared `int`), found a string; field `email`: expected a string",
        ),
        (
            "unknown input field",
            raw(
                Some(START),
                start,
                "application/json",
                json!({ "run_id": "b-1", "input": unknown_field })
                    .to_string()
                    .into(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "unknown field `is_admin`",
        ),
        (
            "missing input field",
            raw(
                Some(START),
                start,
                "application/json",
                json!({ "run_id": "b-1", "input": missing })
                    .to_string()
                    .into(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "missing field `order_id`",
        ),
        (
            "unknown top-level field",
            raw(
                Some(START),
                start,
                "application/json",
                json!({ "run_id": "b-1", "input": input(100), "priority": 1 })
                    .to_string()
                    .into(),
            ),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unknown field `priority`",
        ),
        (
            "oversized body",
            raw(
                Some(START),
                start,
                "application/json",
                json!({ "run_id": "b-1", "input": { "request": "x".repeat(10_000) } })
                    .to_string()
                    .into(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "larger than 4096 bytes",
        ),
        (
            "not JSON",
            raw(Some(START), start, "text/plain", ok.to_string().into()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "must be JSON",
        ),
        (
            "bad run id",
            raw(
                Some(START),
                start,
                "application/json",
                json!({ "run_id": "a\u{202e}b", "input": input(100) })
                    .to_string()
                    .into(),
            ),
            StatusCode::BAD_REQUEST,
            "bad_run_id",
            "",
        ),
        (
            "deliver to an unknown run",
            raw(
                Some(ALL),
                "/v1/runs/nope/events/approval",
                "application/json",
                json!({ "event_id": "e" }).to_string().into(),
            ),
            StatusCode::NOT_FOUND,
            "unknown_run",
            "no run `nope`",
        ),
    ];
    for (what, req, status, code, message) in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), status, "{what}");
        let body: Json = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(message), "{what}: {msg}");
        println!("| {what} | {} | `{code}` | {msg} |", status.as_u16());
    }
    assert_eq!(f.run_count().await, 0, "a refused request wrote a run");
    // A run id in use with other inputs: 409, and the first run untouched.
    let (s, _) = f.start("b-2", input(100)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e) = f.start("b-2", input(200)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "run_id_in_use");
    assert_eq!(f.run_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_is_cut_at_the_time_limit_and_its_work_goes_on() {
    let f = fixture("yes", Duration::from_millis(300)).await;
    f.start("t-1", input(9000)).await;
    f.wait("t-1", status_is("suspended")).await;
    *f.shop.delay.lock().unwrap() = Duration::from_millis(1500);
    let hook = json!({ "event_id": "evt-slow", "payload": { "approved": true } });
    let t0 = Instant::now();
    let (s, e) = f.post("/v1/runs/t-1/events/approval", ALL, &hook).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert_eq!(e["error"]["code"], "timeout");
    assert!(t0.elapsed() < Duration::from_millis(1200));
    // The delivery was recorded and the run goes on to the refund.
    f.wait("t-1", status_is("success")).await;
    assert_eq!(f.shop.executions(), 1);
    assert_eq!(f.shop.max_per_effect(), 1);
}

/// Tools whose rejection mail never answers: the process "dies" with the call in flight.
struct Hang(Arc<std::sync::atomic::AtomicUsize>);

impl customer_refund::Tools for Hang {
    async fn issue_refund(&self, _: &ToolContext, _: String, _: i64) -> Result<Json, ToolError> {
        std::future::pending().await
    }
    async fn send_rejection(
        &self,
        _: &ToolContext,
        _: nanovm_runtime::Secret<String>,
    ) -> Result<Json, ToolError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_effect_is_shown_and_reconciled_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    // A process starts the run and dies while the (not idempotent) mail is in flight.
    {
        let store = SqliteStore::open(&db).await.unwrap();
        let runtime = Runtime::builder()
            .model(ScriptedModel::new().always("analyze", "no"))
            .vault(store.vault())
            .store(store)
            .operation_lease(Duration::from_millis(200))
            .build();
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let input = nanovm_runtime::input_from_json::<customer_refund::Program>(
            runtime.vault().as_ref(),
            &input(100),
        )
        .await
        .unwrap();
        let run = runtime.run::<customer_refund::Program>(
            input,
            Arc::new(Hang(calls.clone())),
            nanovm_runtime::RunOptions::new().run_id("amb-1"),
        );
        tokio::select! {
            _ = run => panic!("the run must hang in the mail"),
            () = async {
                while calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            } => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The server's worker takes the run over: the mail may or may not have gone out.
    let store = SqliteStore::open(&db).await.unwrap();
    let runtime = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "no"))
        .vault(store.vault())
        .store(store)
        .build();
    let shop = Arc::new(Shop::default());
    let server = Server::new(runtime)
        .program::<customer_refund::Program>(shop.clone())
        .token(ALL, "ops", &[Scope::Read, Scope::Start, Scope::Operate])
        .token(READ, "viewer", &[Scope::Read])
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let f = Fixture {
        server,
        shop,
        http: reqwest::Client::new(),
        _dir: dir,
    };
    let state = f.wait("amb-1", status_is("needs_reconciliation")).await;
    let open = &state["open_effects"][0];
    assert_eq!(open["tool"], "send_rejection");
    assert_eq!(open["idempotent"], false);
    let effect_id = open["effect_id"].as_str().unwrap().to_string();
    assert_eq!(state["to_reconcile"], json!([effect_id]));
    // Operating needs the scope; a wrong effect id is refused; then the operator answers.
    let answer = json!({ "effect_id": effect_id, "resolution": "done",
                         "result": { "sent": true }, "reason": "mail log says sent" });
    let (s, _) = f.post("/v1/runs/amb-1/reconcile", READ, &answer).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let wrong = json!({ "effect_id": "00".repeat(32), "resolution": "done" });
    let (s, e) = f.post("/v1/runs/amb-1/reconcile", ALL, &wrong).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "not_ambiguous");
    let (s, done) = f.post("/v1/runs/amb-1/reconcile", ALL, &answer).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "success");
    assert_eq!(f.shop.executions(), 0, "the mail is not sent again");
    let (s, e) = f.post("/v1/runs/amb-1/reconcile", ALL, &answer).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "not_needed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_needs_a_token_and_a_local_host_name() {
    let f = fixture("yes", Duration::from_secs(10)).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let post = |token: Option<&str>, host: Option<&str>| {
        let mut rb = f
            .http
            .post(f.url("/mcp"))
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(h) = host {
            rb = rb.header("host", h);
        }
        rb.send()
    };
    assert_eq!(
        post(None, None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(Some("guess"), None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host.
    let res = post(Some(ALL), Some("evil.example")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = post(Some(READ), None).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[path = "../../nanovm-runtime/tests/support/peers.rs"]
mod peers;

/// Two servers (two runtimes, two pools, like two processes) on one PostgreSQL schema: starts
/// of one run id sent to both make one run, a webhook sent to both applies once, and the
/// refund executes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (DATABASE_URL)"]
async fn two_servers_on_one_postgres_database_share_the_runs() {
    use nanovm_runtime::store::{PostgresOptions, PostgresStore};
    let url = peers::database_url();
    let mut opts = PostgresOptions::default();
    opts.schema = format!("srv_http_{}", std::process::id());
    let shop = Arc::new(Shop::default());
    let mut servers = Vec::new();
    for _ in 0..2 {
        let store = PostgresStore::connect_with(&url, opts.clone())
            .await
            .unwrap();
        let runtime = Runtime::builder()
            .model(ScriptedModel::new().always("analyze", "yes"))
            .vault(store.vault())
            .store(store)
            .build();
        servers.push(
            Server::new(runtime)
                .program::<customer_refund::Program>(shop.clone())
                .token(ALL, "ops", &[Scope::Read, Scope::Start, Scope::Operate])
                .token(READ, "viewer", &[Scope::Read])
                .token(START, "shopfront", &[Scope::Start])
                .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap(),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let [a, b]: [Running; 2] = servers.try_into().unwrap();
    let fa = Fixture {
        server: a,
        shop: shop.clone(),
        http: reqwest::Client::new(),
        _dir: dir,
    };
    let fb_url = b.url();
    let mut created = 0;
    for i in 0..8 {
        let (s, body) = if i % 2 == 0 {
            fa.start("pg-1", input(9000)).await
        } else {
            let res = fa
                .http
                .post(format!("{fb_url}/v1/programs/customer_refund/runs"))
                .bearer_auth(START)
                .json(&json!({ "run_id": "pg-1", "input": input(9000) }))
                .send()
                .await
                .unwrap();
            (res.status(), res.json().await.unwrap())
        };
        assert!(
            s == StatusCode::CREATED || s == StatusCode::OK,
            "{s} {body}"
        );
        created += usize::from(s == StatusCode::CREATED);
    }
    assert_eq!(created, 1);
    fa.wait("pg-1", status_is("suspended")).await;
    let hook = json!({ "event_id": "pg-evt", "payload": { "approved": true } });
    let mut outcomes = Vec::new();
    for url in [fa.server.url(), fb_url.clone(), fa.server.url()] {
        loop {
            let res = fa
                .http
                .post(format!("{url}/v1/runs/pg-1/events/approval"))
                .bearer_auth(ALL)
                .json(&hook)
                .send()
                .await
                .unwrap();
            let s = res.status();
            let body: Json = res.json().await.unwrap();
            if s == StatusCode::CONFLICT && body["error"]["code"] == "busy" {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            assert_eq!(s, StatusCode::OK, "{body}");
            outcomes.push(body["outcome"].as_str().unwrap().to_string());
            break;
        }
    }
    assert_eq!(outcomes, ["delivered", "duplicate", "duplicate"]);
    fa.wait("pg-1", status_is("success")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(shop.executions(), 1);
    b.stop().await;
}

/// One JSON-RPC exchange with `/mcp` (Streamable HTTP; the answer may come as SSE).
async fn mcp_rpc(
    f: &Fixture,
    token: &str,
    session: Option<&str>,
    body: Json,
) -> (Option<String>, Json) {
    let mut rb = f
        .http
        .post(f.url("/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&body);
    if let Some(s) = session {
        rb = rb.header("mcp-session-id", s);
    }
    let res = rb.send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let session = res
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap().to_string());
    let text = res.text().await.unwrap();
    let json = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Json>(d.trim()).ok())
        .find(|j| j.get("id").is_some())
        .or_else(|| serde_json::from_str(&text).ok())
        .unwrap_or(Json::Null);
    (session, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tools_need_their_scope_and_never_reach_a_programs_tools() {
    let f = fixture("yes", Duration::from_secs(10)).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let (session, _) = mcp_rpc(&f, READ, None, init).await;
    let session = session.expect("a session id");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let _ = f
        .http
        .post(f.url("/mcp"))
        .bearer_auth(READ)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .json(&note)
        .send()
        .await
        .unwrap();
    let call = |id: u64, name: &str, args: Json| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": name, "arguments": args}})
    };
    let mut args = input(100);
    args["run_id"] = json!("mcp-scope");
    // A read-only token may not start a run.
    let (_, res) = mcp_rpc(
        &f,
        READ,
        Some(&session),
        call(2, "start_customer_refund", args),
    )
    .await;
    assert_eq!(res["result"]["isError"], true, "{res}");
    let msg = res["result"]["content"][0]["text"].as_str().unwrap();
    assert!(msg.contains("lacks the scope `start`"), "{msg}");
    // No MCP tool reaches a program's own tools, whatever the token.
    let (_, res) = mcp_rpc(
        &f,
        READ,
        Some(&session),
        call(
            3,
            "issue_refund",
            json!({"order_id": "o", "amount_cents": 1}),
        ),
    )
    .await;
    assert_eq!(res["result"]["isError"], true, "{res}");
    // Reading is allowed.
    let (_, res) = mcp_rpc(
        &f,
        READ,
        Some(&session),
        call(4, "run_status", json!({"run_id": "none"})),
    )
    .await;
    assert!(
        res["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("unknown_run"),
        "{res}"
    );
    assert_eq!(f.run_count().await, 0);
    assert_eq!(f.shop.executions(), 0);
}

/// A start over HTTP or MCP may name the data subject the run's personal data belongs to
/// (`subject`): the run is found by `nanovm erase --subject`. A repeat with the same run id
/// naming a *different* subject is refused (409 `subject_in_use`, the other subject not
/// named, nothing linked); the same subject again is a plain repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_names_its_data_subject_and_a_repeat_cannot_change_it() {
    use nanovm_runtime::store::{JournalStore, Reference};
    let f = fixture("yes", Duration::from_secs(10)).await;
    let store = SqliteStore::open(f._dir.path().join("runs.db"))
        .await
        .unwrap();
    let linked = |subject: &str| {
        let store = store.clone();
        let subject = subject.to_string();
        async move {
            store
                .referencing(&Reference::Subject(subject))
                .await
                .unwrap()
        }
    };
    let f = &f;
    let start = |run_id: &str, subject: Json| {
        let body = json!({ "run_id": run_id, "input": input(1200), "subject": subject });
        async move {
            f.post("/v1/programs/customer_refund/runs", START, &body)
                .await
        }
    };
    let (s, created) = start("s-1", json!("cust-1")).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(linked("cust-1").await, ["s-1"]);
    let (s, refused) = start("s-1", json!("cust-2")).await;
    assert_eq!(s, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "subject_in_use", "{refused}");
    assert!(!refused.to_string().contains("cust-1"), "{refused}");
    assert!(linked("cust-2").await.is_empty(), "nothing linked");
    let (s, again) = start("s-1", json!("cust-1")).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    // A subject that is not a non-empty string is a bad request, nothing written.
    for bad in [json!(7), json!(""), json!("  ")] {
        let (s, res) = start("s-2", bad.clone()).await;
        assert!(s.is_client_error(), "{bad}: {s} {res}");
    }
    assert!(store.run("s-2").await.unwrap().is_none());
    // MCP's start tool takes it too.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let (session, _) = mcp_rpc(f, ALL, None, init).await;
    let session = session.expect("a session id");
    let (_, tools) = mcp_rpc(
        f,
        ALL,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let start_tool = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "start_customer_refund")
        .expect("the start tool")
        .clone();
    assert!(
        start_tool["inputSchema"]["properties"]["subject"].is_object(),
        "{start_tool}"
    );
    let call = |id: u64, run_id: &str, subject: &str| {
        let mut args = input(100);
        args["run_id"] = json!(run_id);
        args["subject"] = json!(subject);
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "start_customer_refund", "arguments": args}})
    };
    let (_, res) = mcp_rpc(f, ALL, Some(&session), call(3, "m-1", "cust-3")).await;
    assert_ne!(res["result"]["isError"], true, "{res}");
    assert_eq!(linked("cust-3").await, ["m-1"]);
    let (_, res) = mcp_rpc(f, ALL, Some(&session), call(4, "m-1", "cust-4")).await;
    assert_eq!(res["result"]["isError"], true, "{res}");
    let msg = res["result"]["content"][0]["text"].as_str().unwrap();
    assert!(msg.contains("subject_in_use"), "{msg}");
    assert!(linked("cust-4").await.is_empty());
}
