//! Issue 14, item 2: the live viewer and the endpoints it reads.
//!
//! The endpoints are tested with reqwest against a real bound loopback port (a plain `cargo
//! test`). The page itself is tested in a real headless Chromium (the Debian package, driven
//! over the DevTools protocol by playwright-core: `tests/peers/viewer/install.sh`): a run of
//! `customer_refund` waits for its `approval` while the page is open; the event is delivered
//! and the page must show the new entries arrive without a reload, in order, with the stored
//! trace's hashes, the graph marking the step the run is at, and the replay stepping through
//! the entries with the graph following. Screenshots are written to
//! `target/viewer-screenshots/` for a person to look at.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanovm_runtime::store::{RunQuery, SqliteStore};
use nanovm_runtime::testing::ScriptedModel;
use nanovm_runtime::{Json, Runtime, ToolContext, ToolError};
use nanovm_server::{Running, Scope, Server};
use reqwest::StatusCode;
use serde_json::json;

include!("../../nanovm-runtime/tests/support/generated/customer_refund.rs");

#[derive(Default)]
struct Shop {
    executed: Mutex<BTreeMap<String, usize>>,
}

impl customer_refund::Tools for Shop {
    async fn issue_refund(
        &self,
        ctx: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> Result<Json, ToolError> {
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
        _ctx: &ToolContext,
        _email: nanovm_runtime::Secret<String>,
    ) -> Result<Json, ToolError> {
        Ok(json!({ "sent": true }))
    }
}

const ALL: &str = "all-token";
const READ: &str = "read-token";

struct Fixture {
    server: Running,
    http: reqwest::Client,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let vault = store.vault();
    let runtime = Runtime::builder()
        .model(ScriptedModel::new().always("analyze", "yes"))
        .vault(vault)
        .store(store)
        .build();
    let server = Server::new(runtime)
        .program::<customer_refund::Program>(Arc::new(Shop::default()))
        .token(ALL, "ops", &[Scope::Read, Scope::Start, Scope::Operate])
        .token(READ, "viewer", &[Scope::Read])
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    Fixture {
        server,
        http: reqwest::Client::new(),
        db,
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

/// `id` as one path segment (percent-encoded).
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Json) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Json::Null))
    }

    async fn post(&self, path: &str, body: &Json) -> (StatusCode, Json) {
        let res = self
            .http
            .post(self.url(path))
            .bearer_auth(ALL)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Json::Null))
    }

    async fn start(&self, run_id: &str, amount_cents: i64) {
        let (s, body) = self
            .post(
                "/v1/programs/customer_refund/runs",
                &json!({ "run_id": run_id, "input": input(amount_cents) }),
            )
            .await;
        assert!(s.is_success(), "{s} {body}");
    }

    async fn wait(&self, run_id: &str, status: &str) -> Json {
        let t0 = Instant::now();
        loop {
            let (s, state) = self
                .get(&format!("/v1/runs/{}", segment(run_id)), Some(READ))
                .await;
            assert_eq!(s, StatusCode::OK, "{state}");
            if state["status"] == status {
                return state;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "stuck: {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The stored trace's `(seq, hash)` as `GET /v1/runs/{id}/trace` exports it, and its root.
    async fn trace(&self, run_id: &str) -> (Vec<(u64, String)>, String) {
        let res = self
            .http
            .get(self.url(&format!("/v1/runs/{run_id}/trace")))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let root = res.headers()["x-nanovm-root"].to_str().unwrap().to_string();
        let text = res.text().await.unwrap();
        let lines = text
            .lines()
            .map(|l| {
                let v: Json = serde_json::from_str(l).unwrap();
                (
                    v["seq"].as_u64().unwrap(),
                    v["hash"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        (lines, root)
    }
}

#[tokio::test]
async fn the_graph_is_the_compilers_graph_as_json() {
    let f = fixture().await;
    let (s, e) = f.get("/v1/programs/customer_refund/graph", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    let (s, g) = f
        .get("/v1/programs/customer_refund/graph", Some(READ))
        .await;
    assert_eq!(s, StatusCode::OK, "{g}");
    let names: Vec<&str> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "analyze",
            "policy",
            "refund",
            "reject",
            "manual_review",
            "review_policy",
            "refunded",
            "rejected",
            "refund_failed",
            "timed_out"
        ]
    );
    assert_eq!(g["start"], "analyze");
    let node = |name: &str| {
        g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(node("policy")["kind"], "guard");
    assert_eq!(node("manual_review")["detail"], "await approval");
    assert_eq!(node("refund")["effect"], true);
    assert_eq!(node("analyze")["effect"], false);
    // Every edge of the compiler's Mermaid, with its label, and nothing else.
    let mermaid_edges = customer_refund::MERMAID
        .lines()
        .filter(|l| {
            l.trim_start().starts_with("s")
                && !l.trim_start().starts_with("start")
                && l.contains(" -->")
        })
        .count();
    let edges = g["edges"].as_array().unwrap();
    assert_eq!(edges.len(), mermaid_edges, "{g}");
    assert!(
        edges.contains(&json!({ "from": "analyze", "to": "manual_review", "label": "invalid" }))
    );
    assert!(
        edges.contains(&json!({ "from": "manual_review", "to": "timed_out", "label": "timeout" }))
    );
    assert!(edges.contains(&json!({ "from": "refund", "to": "refunded", "label": "" })));
    let (s, e) = f.get("/v1/programs/nope/graph", Some(READ)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    assert_eq!(e["error"]["code"], "unknown_program");
}

#[tokio::test]
async fn steps_are_the_verified_trace_with_where_the_run_stood_after_each_entry() {
    let f = fixture().await;
    f.start("w-1", 9000).await;
    f.wait("w-1", "suspended").await;
    let (s, e) = f.get("/v1/runs/w-1/steps", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{e}");
    let (s, steps) = f.get("/v1/runs/w-1/steps", Some(READ)).await;
    assert_eq!(s, StatusCode::OK, "{steps}");
    let (trace, root) = f.trace("w-1").await;
    let rows = steps["entries"].as_array().unwrap();
    let seen: Vec<(u64, String)> = rows
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().unwrap(),
                r["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(seen, trace);
    assert_eq!(steps["root"], root.as_str());
    assert_eq!(steps["verified"], true);
    assert_eq!(rows[0]["kind"], "run_started");
    for w in rows.windows(2) {
        assert_eq!(w[1]["prev"], w[0]["hash"]);
    }
    let last = rows.last().unwrap();
    assert_eq!(last["kind"], "suspended");
    assert_eq!(last["at"], "manual_review");
    assert_eq!(last["status"], "suspended");
    assert_eq!(last["waiting"], "approval");
    // The path taken: the transitions the entries recorded, each on the entry that took it.
    let taken: Vec<&Json> = rows
        .iter()
        .filter(|r| !r["transition"].is_null())
        .map(|r| &r["transition"])
        .collect();
    assert_eq!(
        taken,
        [
            &json!(["analyze", "policy"]),
            &json!(["policy", "manual_review"])
        ]
    );
    let (s, e) = f.get("/v1/runs/nope/steps", Some(READ)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
}

#[tokio::test]
async fn stats_are_nanovm_stats_json_from_the_same_library_function() {
    let f = fixture().await;
    for (i, amount) in [1200, 1300, 900, 9000].into_iter().enumerate() {
        f.start(&format!("s-{i}"), amount).await;
    }
    for i in 0..3 {
        f.wait(&format!("s-{i}"), "success").await;
    }
    f.wait("s-3", "suspended").await;
    let (s, got) = f.get("/v1/stats?program=customer_refund", Some(READ)).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    // What `nanovm stats --format json` prints for the same store.
    let store = SqliteStore::open_read_only(&f.db).await.unwrap();
    let samples = nanovm_runtime::stats::samples(
        &store,
        &RunQuery::new().program("customer_refund".to_string()),
    )
    .await
    .unwrap();
    let opts = nanovm_runtime::stats::StatsOptions::new();
    let want = nanovm_runtime::stats::report(&nanovm_runtime::stats::stats(&samples, &opts), &opts);
    assert_eq!(got, want);
    let p = &got["programs"][0];
    assert_eq!(p["program"], "customer_refund");
    assert_eq!(p["runs"].as_array().unwrap().len(), 4);
    assert_eq!(
        p["baseline_runs"].as_u64().unwrap() + p["window_runs"].as_u64().unwrap(),
        4
    );

    let (s, since) = f
        .get("/v1/stats?since=2000-01-01T00:00:00Z", Some(READ))
        .await;
    assert_eq!(s, StatusCode::OK, "{since}");
    assert_eq!(since["since_ms"], 946_684_800_000u64);
    assert_eq!(since["programs"][0]["window_runs"], 4);
    for bad in [
        "/v1/stats?since=yesterday",
        "/v1/stats?percentile=NaN",
        "/v1/stats?x=1",
    ] {
        let (s, e) = f.get(bad, Some(READ)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
        assert_eq!(e["error"]["code"], "bad_query", "{bad}");
    }
    let (s, _) = f.get("/v1/stats", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_page_needs_no_token_holds_no_data_and_fetches_nothing_elsewhere() {
    let f = fixture().await;
    f.start("p-1", 1200).await;
    f.wait("p-1", "success").await;
    let res = f.http.get(f.url("/viewer")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert_eq!(h["referrer-policy"], "no-referrer");
    let page = res.text().await.unwrap();
    assert!(!page.contains("p-1"), "the page is static");
    // The SVG namespace is a name, not an address the page loads from.
    let page = page.replace("http://www.w3.org/2000/svg", "");
    for external in ["http://", "https://", "//cdn", "src=\"/"] {
        assert!(!page.contains(external), "the page loads {external}");
    }
    // The token is read from the fragment and sent as a header, never put in a URL.
    assert!(page.contains("Authorization"));
    assert!(!page.contains("?token="));
}

// ---------------------------------------------------------------------------------------
// The page in a real headless Chromium.

const NEEDS_CHROMIUM: &str = "needs Chromium and playwright-core (tests/peers/viewer/install.sh)";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/viewer-screenshots/` (under `CARGO_TARGET_DIR` when set).
fn screenshots() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        workspace().join(target)
    };
    target.join("viewer-screenshots")
}

/// A run id that is markup (valid: printable, no spaces), for the page to show as text.
const HOSTILE: &str = "h-1\"><svg/onload=alert(1)><img/src=x/onerror=alert(2)>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and playwright-core (tests/peers/viewer/install.sh)"]
async fn the_viewer_in_chromium_shows_the_run_live_and_replays_it() {
    let peer = workspace().join("tests/peers/viewer");
    let driver = peer.join("drive-viewer.mjs");
    assert!(
        peer.join("node_modules/playwright-core").is_dir(),
        "{NEEDS_CHROMIUM}: playwright-core is not installed"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "{NEEDS_CHROMIUM}: /usr/bin/chromium is missing (apt-get install chromium)"
    );
    let f = fixture().await;
    // Some history for the metric plots, then the run the page watches: it waits for approval.
    for (i, amount) in [1200, 900, 1500].into_iter().enumerate() {
        let id = if i == 1 {
            HOSTILE.to_string()
        } else {
            format!("h-{i}")
        };
        f.start(&id, amount).await;
        f.wait(&id, "success").await;
    }
    f.start("live-1", 9000).await;
    f.wait("live-1", "suspended").await;
    let (before, _) = f.trace("live-1").await;

    let shots = screenshots();
    std::fs::create_dir_all(&shots).unwrap();
    let mut cmd = std::process::Command::new("node");
    cmd.arg(&driver)
        .arg("--url")
        .arg(f.server.url())
        .arg("--token")
        .arg(ALL)
        .arg("--run")
        .arg("live-1")
        .arg("--shots")
        .arg(&shots)
        .arg("--hostile")
        .arg(HOSTILE);
    // The server answers on this runtime's threads while the driver runs.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "the driver failed: {stderr}");
    let seen: Json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the driver's report: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    println!("screenshots: {}", shots.display());

    let (after, root) = f.trace("live-1").await;
    assert_eq!(f.wait("live-1", "success").await["step"], "refunded");
    assert!(after.len() > before.len());
    let hashes = |v: &Json| -> Vec<(u64, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["seq"].as_u64().unwrap(),
                    e["hash"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };

    // Before the delivery: the events so far, in order, with the stored hashes; the graph marks
    // the awaiting step; the page says what the run waits for.
    let waiting = &seen["waiting"];
    assert_eq!(hashes(&waiting["events"]), before);
    assert_eq!(waiting["current"], json!(["manual_review"]));
    assert_eq!(waiting["waits_for"], "approval");
    assert!(
        waiting["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["verify"] == "verified")
    );
    for step in ["analyze", "policy", "manual_review"] {
        assert!(
            waiting["visited"]
                .as_array()
                .unwrap()
                .contains(&json!(step)),
            "{step} is drawn on the path: {waiting}"
        );
    }

    // After the delivery, without a reload: the new entries arrived on the stream, in order,
    // with the stored trace's hashes; the graph marks the end step.
    let live = &seen["live"];
    assert_eq!(seen["loads"], 1, "the page was not reloaded");
    assert_eq!(hashes(&live["events"]), after);
    assert!(
        live["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["verify"] == "verified")
    );
    assert_eq!(live["current"], json!(["refunded"]));
    assert_eq!(live["status"], "success");
    assert_eq!(live["root"], root.as_str());
    for step in [
        "analyze",
        "policy",
        "manual_review",
        "review_policy",
        "refund",
        "refunded",
    ] {
        assert!(
            live["visited"].as_array().unwrap().contains(&json!(step)),
            "{step} is drawn on the path: {live}"
        );
    }
    assert!(live["taken_edges"].as_u64().unwrap() >= 5, "{live}");
    assert!(live["timeline"].as_array().unwrap().len() >= 5, "{live}");

    // The replay: step k shows entry k (its stored hash) and the graph marks the step the run
    // was at after it, as the server's RunView reads it.
    let (_, steps) = f.get("/v1/runs/live-1/steps", Some(READ)).await;
    let rows = steps["entries"].as_array().unwrap();
    let replay = seen["replay"].as_array().unwrap();
    assert_eq!(replay.len(), rows.len(), "every entry was stepped through");
    for (k, (shown, row)) in replay.iter().zip(rows).enumerate() {
        assert_eq!(shown["seq"], k as u64, "{shown}");
        assert_eq!(shown["hash"], row["hash"], "entry {k}");
        assert_eq!(shown["kind"], row["kind"], "entry {k}");
        let want = row["at"].as_str().map(|s| vec![s]).unwrap_or_default();
        assert_eq!(shown["current"], json!(want), "entry {k}: the graph's step");
        assert_eq!(
            shown["row"],
            json!([k]),
            "entry {k} is highlighted in the events"
        );
        assert_eq!(
            shown["visit"].as_array().unwrap().len(),
            1,
            "entry {k}: one visit shown"
        );
        // The state panel follows: status, what it waits for, open effects after entry k.
        assert_eq!(shown["status"], row["status"], "entry {k}");
        assert_eq!(shown["waits_for"], row["waiting"], "entry {k}");
        let open: Vec<&Json> = row["open_effects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| &o["effect_id"])
            .collect();
        assert_eq!(shown["open"], json!(open), "entry {k}: open effects");
    }
    // The refund's intent is an open effect until its result: the replay showed it.
    let intent = rows
        .iter()
        .position(|r| r["kind"] == "tool_intent")
        .unwrap();
    assert_eq!(rows[intent]["open_effects"][0]["tool"], "issue_refund");
    assert_eq!(replay[intent]["open"].as_array().unwrap().len(), 1);
    assert_eq!(replay[intent + 1]["open"], json!([]));
    assert_eq!(replay[3]["waits_for"], "approval");
    assert!(
        seen["replay_back"]["seq"].as_u64() == Some(rows.len() as u64 - 2),
        "stepping back shows the entry before: {}",
        seen["replay_back"]
    );

    // The metric plots: one per metric, with a point per stored run of the program.
    let plots = seen["plots"].as_array().unwrap();
    assert!(!plots.is_empty());
    for p in plots {
        assert_eq!(p["points"], 4, "{p}");
    }

    // A run id written as markup is shown as text: in the list and the header, nothing injected
    // (and no script ran: a dialog fails the driver).
    let hostile = &seen["hostile"];
    assert_eq!(hostile["header"], HOSTILE, "{hostile}");
    assert_eq!(hostile["status"], "success", "{hostile}");
    assert!(
        hostile["listed"]
            .as_array()
            .unwrap()
            .contains(&json!(HOSTILE))
    );
    assert_eq!(hostile["injected"], 0, "{hostile}");

    // The stream tampered with on the way (one hash altered in a second tab): that entry and
    // the next, whose `prev` no longer links, are shown broken; the others verified.
    let tampered = seen["tampered"].as_array().unwrap();
    assert_eq!(tampered.len(), after.len(), "{tampered:?}");
    for e in tampered {
        let seq = e["seq"].as_u64().unwrap();
        let want = if seq == 3 || seq == 4 {
            "broken"
        } else {
            "verified"
        };
        assert_eq!(e["verify"], want, "entry {seq} of the tampered stream: {e}");
    }
    assert_ne!(
        tampered[3]["hash"].as_str(),
        Some(after[3].1.as_str()),
        "the hash was altered"
    );

    for name in ["waiting.png", "live.png", "replay.png", "tampered.png"] {
        let len = std::fs::metadata(shots.join(name))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1000, "{name} was saved");
    }
}
