//! Issue 15 on the server: several versions of one program served at once; cancellation; and
//! a run's entries streamed as Server-Sent Events (issue 14).
//!
//! Attacks: a run started under v1 must be continued by v1 after the host also registers v2
//! (never by the newer build), new runs must start on the newest, a server that no longer
//! serves a run's version must refuse to touch it (409, nothing written) instead of running
//! it under another build; a cancellation must end a waiting run once, be refused for an ended
//! run, and need the operate scope; a stream must show every stored entry once, in order,
//! across a reconnection with `Last-Event-ID`, and end when the run does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanovm_runtime::store::{JournalStore, SqliteStore};
use nanovm_runtime::{Json, Runtime, ToolContext, ToolError};
use nanovm_server::{Running, Scope, Server};
use reqwest::StatusCode;
use serde_json::json;

#[allow(dead_code, reason = "the tests use part of the generated code")]
mod v1 {
    include!("../../nanovm-runtime/tests/support/generated/shop_v1.rs");
}
#[allow(dead_code, reason = "the tests use part of the generated code")]
mod v2 {
    include!("../../nanovm-runtime/tests/support/generated/shop_v2.rs");
}

/// Which build's tools did what: `(version, tool, order)`.
#[derive(Default)]
struct Ledger(Mutex<Vec<(&'static str, &'static str, String)>>);

struct Tools {
    version: &'static str,
    ledger: Arc<Ledger>,
}

impl Tools {
    fn note(&self, tool: &'static str, order: &str) -> Result<Json, ToolError> {
        let entry = (self.version, tool, order.to_string());
        self.ledger.0.lock().unwrap().push(entry);
        Ok(json!({ "ok": true }))
    }
}

impl v1::shop::Tools for Tools {
    async fn charge(&self, _: &ToolContext, order_id: String, _: i64) -> Result<Json, ToolError> {
        self.note("charge", &order_id)
    }
    async fn ship(&self, _: &ToolContext, order_id: String) -> Result<Json, ToolError> {
        self.note("ship", &order_id)
    }
}

impl v2::shop::Tools for Tools {
    async fn charge(&self, _: &ToolContext, order_id: String, _: i64) -> Result<Json, ToolError> {
        self.note("charge", &order_id)
    }
    async fn ship(&self, _: &ToolContext, order_id: String) -> Result<Json, ToolError> {
        self.note("ship", &order_id)
    }
}

const ALL: &str = "all-token";
const READ: &str = "read-token";

fn hash_of<P: nanovm_runtime::__private_v0_1::Program>() -> String {
    P::info().hash.to_hex()
}

/// A server on the store at `db` with the given versions (`"v1"`, `"v2"`, in order).
async fn serve(db: &std::path::Path, versions: &[&'static str], ledger: &Arc<Ledger>) -> Running {
    let store = SqliteStore::open(db).await.unwrap();
    let runtime = Runtime::builder().vault(store.vault()).store(store).build();
    let mut server = Server::new(runtime);
    for v in versions {
        let tools = Arc::new(Tools {
            version: v,
            ledger: ledger.clone(),
        });
        server = match *v {
            "v1" => server.program::<v1::shop::Program>(tools),
            _ => server.program::<v2::shop::Program>(tools),
        };
    }
    server
        .token(ALL, "ops", &[Scope::Read, Scope::Start, Scope::Operate])
        .token(READ, "viewer", &[Scope::Read])
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

async fn call(
    server: &Running,
    post: Option<&Json>,
    path: &str,
    token: &str,
) -> (StatusCode, Json) {
    let http = reqwest::Client::new();
    let url = format!("{}{path}", server.url());
    let req = match post {
        Some(body) => http.post(url).json(body),
        None => http.get(url),
    };
    let res = req.bearer_auth(token).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Json::Null))
}

/// Waits until run `id` is `status`.
async fn until(server: &Running, id: &str, status: &str) -> Json {
    let t0 = Instant::now();
    loop {
        let (_, state) = call(server, None, &format!("/v1/runs/{id}"), READ).await;
        if state["status"] == status {
            return state;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{id}: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start(server: &Running, id: &str) -> Json {
    let body = json!({ "run_id": id, "input": { "order_id": id, "amount_cents": 500 } });
    let (s, state) = call(server, Some(&body), "/v1/programs/shop/runs", ALL).await;
    assert!(s.is_success(), "{s} {state}");
    until(server, id, "suspended").await
}

async fn approve(server: &Running, id: &str) -> (StatusCode, Json) {
    let body = json!({ "event_id": format!("ok-{id}"), "payload": { "by": "qa" } });
    call(
        server,
        Some(&body),
        &format!("/v1/runs/{id}/events/approved"),
        ALL,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_run_is_continued_by_its_own_version_and_new_runs_take_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let ledger = Arc::new(Ledger::default());
    let old = serve(&db, &["v1"], &ledger).await;
    let state = start(&old, "r1").await;
    assert_eq!(state["program_hash"], hash_of::<v1::shop::Program>());
    old.stop().await;

    // The deploy: v2 is added, v1 kept for the runs it started.
    let both = serve(&db, &["v1", "v2"], &ledger).await;
    let state = start(&both, "r2").await;
    assert_eq!(
        state["program_hash"],
        hash_of::<v2::shop::Program>(),
        "newest"
    );
    for id in ["r1", "r2"] {
        let (s, state) = approve(&both, id).await;
        assert_eq!(s, StatusCode::OK, "{state}");
        until(&both, id, "success").await;
    }
    let mut done = ledger.0.lock().unwrap().clone();
    done.sort();
    let mut want = vec![
        ("v1", "charge", "r1".to_string()),
        ("v1", "ship", "r1".to_string()),
        ("v2", "charge", "r2".to_string()),
        ("v2", "ship", "r2".to_string()),
    ];
    want.sort();
    assert_eq!(done, want, "each run's effects by its own build, once");
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_runs_version_refuses_to_touch_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let ledger = Arc::new(Ledger::default());
    let old = serve(&db, &["v1"], &ledger).await;
    start(&old, "r1").await;
    old.stop().await;
    let new = serve(&db, &["v2"], &ledger).await;
    let store = SqliteStore::open(&db).await.unwrap();
    let before = store.load("r1").await.unwrap().unwrap().len();
    let (s, err) = approve(&new, "r1").await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "version_not_served", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pinned to version"),
        "{err}"
    );
    // Its workers leave the run alone too.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = store.load("r1").await.unwrap().unwrap().len();
    assert_eq!(before, after, "nothing written");
    assert_eq!(
        ledger.0.lock().unwrap().len(),
        1,
        "only v1's charge, before"
    );
    new.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_is_cancelled_once_under_the_operate_scope() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let ledger = Arc::new(Ledger::default());
    let server = serve(&db, &["v1"], &ledger).await;
    start(&server, "c1").await;
    let why = json!({ "reason": "customer withdrew" });
    let (s, err) = call(&server, Some(&why), "/v1/runs/c1/cancel", READ).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{err}");
    let (s, state) = call(&server, Some(&why), "/v1/runs/c1/cancel", ALL).await;
    assert_eq!(s, StatusCode::OK, "{state}");
    assert_eq!(state["status"], "cancelled", "{state}");
    let (s, err) = call(&server, Some(&why), "/v1/runs/c1/cancel", ALL).await;
    assert_eq!(s, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "ended", "{err}");
    let (s, err) = call(&server, Some(&why), "/v1/runs/nope/cancel", ALL).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{err}");
    // The approval that comes later finds nothing to continue: nothing shipped.
    let (s, _) = approve(&server, "c1").await;
    assert_eq!(s, StatusCode::CONFLICT);
    let trace = reqwest::Client::new()
        .get(format!("{}/v1/runs/c1/trace", server.url()))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(trace.contains("customer withdrew"), "{trace}");
    assert_eq!(ledger.0.lock().unwrap().len(), 1, "charged, never shipped");
    server.stop().await;
}

/// The SSE events in `text` as `(id, event, data)`.
fn sse(text: &str) -> Vec<(Option<u64>, String, String)> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty() && !b.starts_with(':'))
        .map(|block| {
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
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

/// Reads the stream of run `id` (after `last`, if given) until it sends `until` or closes.
async fn read_stream(
    server: &Running,
    id: &str,
    last: Option<u64>,
    until: impl Fn(&[(Option<u64>, String, String)]) -> bool,
) -> Vec<(Option<u64>, String, String)> {
    let mut req = reqwest::Client::new()
        .get(format!("{}/v1/runs/{id}/stream", server.url()))
        .bearer_auth(READ);
    if let Some(n) = last {
        req = req.header("Last-Event-ID", n.to_string());
    }
    let mut res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut text = String::new();
    let t0 = Instant::now();
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
            .await
            .expect("the stream goes on or ends");
        match chunk.unwrap() {
            Some(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
            None => break,
        }
        if until(&sse(&text)) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{text}");
    }
    sse(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_stream_shows_each_stored_entry_once_resumes_and_ends_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let ledger = Arc::new(Ledger::default());
    let server = serve(&db, &["v1"], &ledger).await;
    start(&server, "s1").await;
    // Up to the suspension: the stream stays open while the run waits.
    let first = read_stream(&server, "s1", None, |evs| {
        evs.iter().any(|(_, _, d)| d.contains("\"suspended\""))
    })
    .await;
    let ids: Vec<u64> = first.iter().filter_map(|(id, _, _)| *id).collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "{first:?}");
    assert!(first.iter().all(|(_, e, _)| e == "entry"));
    let last = *ids.last().unwrap();
    let (s, _) = approve(&server, "s1").await;
    assert_eq!(s, StatusCode::OK);
    until(&server, "s1", "success").await;
    // Reconnecting after the last id received: the rest, then the end.
    let rest = read_stream(&server, "s1", Some(last), |evs| {
        evs.iter().any(|(_, e, _)| e == "end")
    })
    .await;
    let (end, entries) = rest.split_last().unwrap();
    assert_eq!((end.1.as_str(), end.2.as_str()), ("end", "success"));
    let store = SqliteStore::open(&db).await.unwrap();
    let stored = store.load("s1").await.unwrap().unwrap();
    let mut streamed: Vec<String> = first.iter().map(|(_, _, d)| d.clone()).collect();
    streamed.extend(entries.iter().map(|(_, _, d)| d.clone()));
    let lines: Vec<String> = stored
        .iter()
        .map(nanovm_runtime::trace::entry_line)
        .collect();
    assert_eq!(
        streamed, lines,
        "every stored entry once, in order, as exported"
    );
    // Unknown runs and bad ids are refused before a stream opens.
    let (s, _) = call(&server, None, "/v1/runs/nope/stream", READ).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let res = reqwest::Client::new()
        .get(format!("{}/v1/runs/s1/stream", server.url()))
        .bearer_auth(READ)
        .header("Last-Event-ID", "x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = reqwest::Client::new()
        .get(format!("{}/v1/runs/s1/stream", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}
