//! Issue 14 on the server: every run's entries on one stream (`GET /v1/stream`), and
//! Prometheus metrics (`GET /metrics`).
//!
//! Attacks: an entry of one of two concurrent runs missing from the all-runs stream, or out of
//! its run's order; a reconnection with `Last-Event-ID` that repeats or loses an entry; a
//! metric that miscounts a known set of runs (each outcome, a retry, a budget trip, a takeover,
//! the reconciliation queue), or a scrape that is not valid Prometheus text.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanovm_runtime::model::{ModelError, ModelReply, ModelRequest};
use nanovm_runtime::store::{JournalStore, SqliteStore};
use nanovm_runtime::testing::{FnModel, ScriptedModel};
use nanovm_runtime::{Json, Runtime, ToolContext, ToolError};
use nanovm_server::{Metrics, Running, Scope, Server};
use reqwest::StatusCode;
use serde_json::json;

include!("../../nanovm-runtime/tests/support/generated/customer_refund.rs");

const ALL: &str = "all-token";
const READ: &str = "read-token";

/// A shop whose refunds of order `flaky` fail once (a transient error), and whose calls can be
/// slowed down so that runs overlap.
#[derive(Default)]
struct Shop {
    failed: Mutex<BTreeMap<String, bool>>,
    delay_ms: AtomicUsize,
}

impl customer_refund::Tools for Shop {
    async fn issue_refund(
        &self,
        _: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> Result<Json, ToolError> {
        let delay = self.delay_ms.load(Ordering::SeqCst) as u64;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if order_id == "flaky" {
            let mut failed = self.failed.lock().unwrap();
            if !failed.contains_key(&order_id) {
                failed.insert(order_id.clone(), true);
                return Err(ToolError::transient("the shop's API timed out"));
            }
        }
        Ok(json!({ "refund_id": format!("rf-{order_id}"), "amount_cents": amount_cents }))
    }

    async fn send_rejection(
        &self,
        _: &ToolContext,
        _: nanovm_runtime::Secret<String>,
    ) -> Result<Json, ToolError> {
        let delay = self.delay_ms.load(Ordering::SeqCst) as u64;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok(json!({ "sent": true }))
    }
}

/// Tools whose mail never answers: the process "dies" with the call in flight.
struct Hang(Arc<AtomicUsize>);

impl customer_refund::Tools for Hang {
    async fn issue_refund(&self, _: &ToolContext, _: String, _: i64) -> Result<Json, ToolError> {
        std::future::pending().await
    }
    async fn send_rejection(
        &self,
        _: &ToolContext,
        _: nanovm_runtime::Secret<String>,
    ) -> Result<Json, ToolError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// The model: `no` for requests that say REJECT, 9,000 tokens (over the 8,000 budget) for
/// requests that say EXPENSIVE, `yes` otherwise.
fn model() -> FnModel<impl Fn(&ModelRequest) -> Result<ModelReply, ModelError> + Send + Sync> {
    FnModel::new(|req: &ModelRequest| {
        let mut reply = if req.prompt.contains("REJECT") {
            ModelReply::text("no")
        } else {
            ModelReply::text("yes")
        };
        if req.prompt.contains("EXPENSIVE") {
            reply.prompt_tokens = 4_000;
            reply.completion_tokens = 5_000;
        }
        Ok(reply)
    })
}

struct Fixture {
    server: Running,
    shop: Arc<Shop>,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn serve(dir: tempfile::TempDir) -> Fixture {
    let db = dir.path().join("runs.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let metrics = Metrics::new();
    let runtime = Runtime::builder()
        .model(model())
        .vault(store.vault())
        .store(store)
        .observer(metrics.clone())
        .build();
    let shop = Arc::new(Shop::default());
    let server = Server::new(runtime)
        .program::<customer_refund::Program>(shop.clone())
        .token(ALL, "ops", &[Scope::Read, Scope::Start, Scope::Operate])
        .token(READ, "viewer", &[Scope::Read])
        .metrics(metrics)
        .workers(2)
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    Fixture {
        server,
        shop,
        db,
        _dir: dir,
    }
}

impl Fixture {
    async fn start(&self, run_id: &str, request: &str, order: &str, amount: i64) {
        let res = reqwest::Client::new()
            .post(format!(
                "{}/v1/programs/customer_refund/runs",
                self.server.url()
            ))
            .bearer_auth(ALL)
            .json(&json!({ "run_id": run_id, "input": {
                "request": request, "order_id": order, "amount_cents": amount,
                "email": "cy@example.com" } }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    }

    async fn wait(&self, run_id: &str, status: &str) {
        let t0 = Instant::now();
        loop {
            let res = reqwest::Client::new()
                .get(format!("{}/v1/runs/{run_id}", self.server.url()))
                .bearer_auth(READ)
                .send()
                .await
                .unwrap();
            let state: Json = res.json().await.unwrap();
            if state["status"] == status {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "{run_id}: {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn scrape(&self, token: Option<&str>) -> (StatusCode, String, String) {
        let mut req = reqwest::Client::new().get(format!("{}/metrics", self.server.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let ct = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ct, res.text().await.unwrap())
    }
}

/// One SSE event: (id, event, data).
type Sse = (Option<String>, String, String);

fn sse(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty() && !b.starts_with(':'))
        .map(|block| {
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            (id, event, data)
        })
        .collect()
}

/// Reads `/v1/stream` (after `last`) until `n` entry events arrived; the connection is then
/// dropped (as a client that goes away does).
async fn read_all(server: &Running, last: Option<&str>, n: usize) -> Vec<Sse> {
    let mut req = reqwest::Client::new()
        .get(format!("{}/v1/stream", server.url()))
        .bearer_auth(READ);
    if let Some(id) = last {
        req = req.header("Last-Event-ID", id);
    }
    let mut res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut text = String::new();
    let t0 = Instant::now();
    loop {
        let events = sse(&text);
        // Only whole events: the text may end inside one.
        let complete = text.rfind("\n\n").map_or(0, |_| events.len());
        let entries: Vec<Sse> = events[..complete.min(events.len())]
            .iter()
            .filter(|e| e.1 == "entry")
            .cloned()
            .collect();
        if entries.len() >= n {
            return entries[..n].to_vec();
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{text}");
        let chunk = tokio::time::timeout(Duration::from_secs(20), res.chunk())
            .await
            .expect("the stream goes on")
            .unwrap()
            .expect("the stream never ends");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Every entry of every run in the store, by run.
async fn stored(db: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    stored_in(&SqliteStore::open(db).await.unwrap()).await
}

async fn stored_in(store: &impl JournalStore) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for r in store
        .runs(&nanovm_runtime::store::RunQuery::new())
        .await
        .unwrap()
    {
        let lines = store
            .load(&r.run_id)
            .await
            .unwrap()
            .unwrap()
            .iter()
            .map(nanovm_runtime::trace::entry_line)
            .collect();
        out.insert(r.run_id, lines);
    }
    out
}

/// The entries of `events` by run, in the order they arrived.
fn by_run(events: &[Sse]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, _, data) in events {
        let v: Json = serde_json::from_str(data).unwrap();
        let run = v["run_id"].as_str().unwrap().to_string();
        // The entry's line, byte for byte as the store exports it.
        let at = data.find(",\"entry\":").unwrap();
        let line = &data[at + ",\"entry\":".len()..data.len() - 1];
        out.entry(run).or_default().push(line.to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_runs_stream_shows_every_entry_of_concurrent_runs_once_across_a_reconnect() {
    let f = serve(tempfile::tempdir().unwrap()).await;
    // Two runs at once, their calls slowed so that their entries interleave.
    f.shop.delay_ms.store(150, Ordering::SeqCst);
    let (a, b) = tokio::join!(
        f.start("a", "It broke.", "o-1", 100),
        f.start("b", "REJECT it.", "o-2", 100)
    );
    let ((), ()) = (a, b);
    // The first few entries, then the client goes away mid-run.
    let first = read_all(&f.server, None, 3).await;
    let last = first.last().unwrap().0.clone().expect("an id");
    f.wait("a", "success").await;
    f.wait("b", "success").await;
    let all = stored(&f.db).await;
    let total: usize = all.values().map(Vec::len).sum();
    // Reconnecting after the last id received: everything else, once.
    let rest = read_all(&f.server, Some(&last), total - first.len()).await;
    let mut events = first.clone();
    events.extend(rest);
    let ids: Vec<String> = events.iter().map(|e| e.0.clone().unwrap()).collect();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no entry twice: {ids:?}");
    assert_eq!(
        by_run(&events),
        all,
        "every stored entry of both runs, each run in its order, as exported"
    );
    // Nothing more is sent for a position at the end; a bad id is refused before a stream.
    let res = reqwest::Client::new()
        .get(format!("{}/v1/stream", f.server.url()))
        .bearer_auth(READ)
        .header("Last-Event-ID", "not-a-position")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = reqwest::Client::new()
        .get(format!("{}/v1/stream", f.server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // `?after=` works as the header does.
    let res = reqwest::Client::new()
        .get(format!(
            "{}/v1/stream?after={}",
            f.server.url(),
            ids[total - 2]
        ))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut res = res;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), res.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(sse(&text)[0].0.as_deref(), Some(ids[total - 1].as_str()));
    f.server.stop().await;
}

/// The value of sample `name` with `labels` in a parsed scrape (`None`: absent).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(k).is_some_and(|x| x == *v))
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            other => panic!("{name}: {other:?}"),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_set_of_runs_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    // A process starts a run and dies while its (not idempotent) mail is in flight: the
    // server's worker takes it over and finds the effect ambiguous.
    let prefix = {
        let store = SqliteStore::open(&db).await.unwrap();
        let runtime = Runtime::builder()
            .model(ScriptedModel::new().always("analyze", "no"))
            .vault(store.vault())
            .store(store.clone())
            .operation_lease(Duration::from_millis(200))
            .build();
        let calls = Arc::new(AtomicUsize::new(0));
        let input = nanovm_runtime::input_from_json::<customer_refund::Program>(
            runtime.vault().as_ref(),
            &json!({ "request": "x", "order_id": "o-9", "amount_cents": 100,
                     "email": "cy@example.com" }),
        )
        .await
        .unwrap();
        let run = runtime.run::<customer_refund::Program>(
            input,
            Arc::new(Hang(calls.clone())),
            nanovm_runtime::RunOptions::new().run_id("amb"),
        );
        tokio::select! {
            _ = run => panic!("the run must hang in the mail"),
            () = async {
                while calls.load(Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            } => {}
        }
        store.load("amb").await.unwrap().unwrap().len()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let f = serve(dir).await;
    f.start("ok", "It broke.", "o-1", 100).await;
    f.start("flaky", "It broke.", "flaky", 100).await;
    f.start("rejected", "REJECT it.", "o-3", 100).await;
    f.start("waiting", "It broke.", "o-4", 9_000).await;
    f.start("expensive", "EXPENSIVE and broke.", "o-5", 100)
        .await;
    for (run, status) in [
        ("ok", "success"),
        ("flaky", "success"),
        ("rejected", "success"),
        ("waiting", "suspended"),
        ("expensive", "budget_exceeded"),
        ("amb", "needs_reconciliation"),
    ] {
        f.wait(run, status).await;
    }
    let all = stored(&f.db).await;
    let total: usize = all.values().map(Vec::len).sum();
    // Read the whole store on the all-runs stream once.
    let streamed = read_all(&f.server, None, total).await;
    assert_eq!(streamed.len(), total);

    // The scrape needs the read scope.
    let (s, _, _) = f.scrape(None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, ct, text) = f.scrape(Some(READ)).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&scrape, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    // From the store.
    for (status, n) in [
        ("success", 3.0),
        ("suspended", 1.0),
        ("budget_exceeded", 1.0),
        ("needs_reconciliation", 1.0),
        ("running", 0.0),
        ("failed", 0.0),
        ("stalled", 0.0),
        ("cancelled", 0.0),
    ] {
        assert_eq!(
            v("nanovm_runs", &[("status", status)]),
            n,
            "{status}\n{text}"
        );
    }
    assert_eq!(v("nanovm_reconciliation_queue", &[]), 1.0);
    // From this process's observer.
    assert_eq!(
        v("nanovm_entries_total", &[]),
        (total - prefix) as f64,
        "every entry this process wrote (not the dead process's {prefix})"
    );
    assert_eq!(v("nanovm_retries_total", &[("kind", "tool")]), 1.0);
    assert_eq!(
        v("nanovm_budget_trips_total", &[("budget", "max_tokens")]),
        1.0
    );
    assert_eq!(v("nanovm_lease_takeovers_total", &[]), 1.0);
    assert_eq!(v("nanovm_runs_ended_total", &[("status", "success")]), 3.0);
    assert_eq!(
        v("nanovm_runs_ended_total", &[("status", "budget_exceeded")]),
        1.0
    );
    assert_eq!(
        v(
            "nanovm_runs_ended_total",
            &[("status", "needs_reconciliation")]
        ),
        1.0
    );
    assert_eq!(v("nanovm_stalls_total", &[]), 0.0);
    // ok, flaky, rejected, waiting: analyze completes (4); ok, flaky, rejected, waiting: the
    // policy guard (4); ok, flaky: refund, rejected: reject (3).
    assert_eq!(v("nanovm_steps_total", &[]), 11.0);
    // Five live model calls (the budget trips after the expensive one's reply); refunds: ok
    // once, flaky twice (one failed); one rejection mail (the dead process's is not retried).
    assert_eq!(v("nanovm_model_call_duration_seconds_count", &[]), 5.0);
    assert_eq!(
        v(
            "nanovm_tool_call_duration_seconds_count",
            &[("tool", "issue_refund")]
        ),
        3.0
    );
    assert_eq!(
        v(
            "nanovm_tool_call_duration_seconds_count",
            &[("tool", "send_rejection")]
        ),
        1.0
    );
    assert_eq!(v("nanovm_calls_failed_total", &[("kind", "tool")]), 1.0);
    assert_eq!(
        v("nanovm_events_streamed_total", &[("stream", "all")]),
        total as f64
    );
    f.server.stop().await;
}

#[path = "../../nanovm-runtime/tests/support/peers.rs"]
mod peers;

/// Two server processes on one PostgreSQL database: runs started on both, the all-runs stream
/// read from one, the client cut off, and resumed on the other with the last id: every entry
/// of every run once, each run in order (positions are the database's, not a process's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL (DATABASE_URL)"]
async fn the_all_runs_stream_resumes_on_another_server_process_of_the_database() {
    use nanovm_runtime::store::{PostgresOptions, PostgresStore};
    let url = peers::database_url();
    let mut opts = PostgresOptions::default();
    opts.schema = format!("srv_stream_{}", std::process::id());
    let shop = Arc::new(Shop::default());
    shop.delay_ms.store(30, Ordering::SeqCst);
    let mut servers = Vec::new();
    for _ in 0..2 {
        let store = PostgresStore::connect_with(&url, opts.clone())
            .await
            .unwrap();
        let runtime = Runtime::builder()
            .model(model())
            .vault(store.vault())
            .store(store)
            .build();
        servers.push(
            Server::new(runtime)
                .program::<customer_refund::Program>(shop.clone())
                .token(ALL, "ops", &[Scope::Read, Scope::Start, Scope::Operate])
                .token(READ, "viewer", &[Scope::Read])
                .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .unwrap(),
        );
    }
    let runs = ["p0", "p1", "p2", "p3", "p4", "p5"];
    for (i, run) in runs.iter().enumerate() {
        let res = reqwest::Client::new()
            .post(format!(
                "{}/v1/programs/customer_refund/runs",
                servers[i % 2].url()
            ))
            .bearer_auth(ALL)
            .json(&json!({ "run_id": run, "input": {
                "request": if i % 3 == 0 { "REJECT it." } else { "It broke." },
                "order_id": format!("o-{i}"), "amount_cents": 100,
                "email": "cy@example.com" } }))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }
    let first = read_all(&servers[0], None, 7).await;
    let last = first.last().unwrap().0.clone().unwrap();
    let store = PostgresStore::connect_with(&url, opts.clone())
        .await
        .unwrap();
    let t0 = Instant::now();
    loop {
        let ended = store
            .runs(
                &nanovm_runtime::store::RunQuery::new().status(nanovm_runtime::RunStatus::Success),
            )
            .await
            .unwrap()
            .len();
        if ended == runs.len() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{ended} ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = stored_in(&store).await;
    let total: usize = all.values().map(Vec::len).sum();
    let rest = read_all(&servers[1], Some(&last), total - first.len()).await;
    let mut events = first;
    events.extend(rest);
    let ids: std::collections::BTreeSet<String> =
        events.iter().map(|e| e.0.clone().unwrap()).collect();
    assert_eq!(ids.len(), total, "no entry twice");
    assert_eq!(
        by_run(&events),
        all,
        "every entry of every run once, in order"
    );
    for s in servers {
        s.stop().await;
    }
}
