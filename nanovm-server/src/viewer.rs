//! The live viewer: one static page (`GET /viewer`, `viewer/index.html`, inline script and
//! style, no build chain, nothing fetched from elsewhere) and the JSON it reads besides the run
//! endpoints:
//!
//! - `GET /v1/programs/{program}/graph`: the program's steps and edges. The one source of a
//!   program's graph is the compiler's (`nanovm_dsl::graph::mermaid`, which generated code
//!   embeds as `Program::graph`); this reads that text's nodes and edges into JSON, with each
//!   step's kind from the program's `ProgramInfo`. Nothing here looks at the program itself.
//! - `GET /v1/runs/{run_id}/steps`: the stored trace, verified by the server (the hash chain
//!   recomputed), with where the run stood after each entry, read by [`RunView`] one event at
//!   a time: what the graph and the replay show.
//! - `GET /v1/stats?program=P&since=T`: `nanovm stats --format json`'s document
//!   ([`nanovm_runtime::stats::report`] over [`nanovm_runtime::stats::samples`]).
//!
//! The page holds no data and needs no token; everything it shows comes from the endpoints
//! above under the token's `read` scope. The token is given in the page's URL fragment
//! (`/viewer#token=...`), which browsers never send to a server, and the page sends it as an
//! `Authorization` header, also on the run's event stream (read with `fetch`, not
//! `EventSource`, which cannot send headers): no token ever travels in a URL.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nanovm_runtime::__private_v0_1::ProgramInfo;
use nanovm_runtime::stats::{StatsOptions, report, samples, stats};
use nanovm_runtime::store::RunQuery;
use nanovm_runtime::time::parse_utc;
use nanovm_runtime::{Json, RunView};
use serde::Deserialize;
use serde_json::json;

use crate::App;
use crate::api::{ApiError, entries_of, served, store_error};

/// The page.
const PAGE: &str = include_str!("viewer/index.html");

/// What the page may do: its own inline script and style, requests to this server only.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `GET /viewer` (no token: the page holds no data).
pub(crate) fn page() -> Router<Arc<App>> {
    Router::new().route("/viewer", get(viewer))
}

/// The JSON endpoints the page reads, each under the `read` scope.
pub(crate) fn read() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/programs/{program}/graph", get(graph))
        .route("/v1/runs/{run_id}/steps", get(steps))
        .route("/v1/stats", get(stats_of))
}

async fn viewer() -> Response {
    let mut res = axum::response::Html(PAGE).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A program's graph as JSON: `nodes` (`id`, `name`, `kind`, `detail`, `effect`),
/// `edges` (`from`, `to`, `label`), `start`, `replans` (`on`, `replans`, `to`).
async fn graph(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let served = served(&app, &name)?;
    Ok(axum::Json(graph_json(served.info(), served.graph())).into_response())
}

/// Reads the compiler's Mermaid text (`mermaid`) of `info`'s program. Without one (a program
/// not from generated code) the steps are listed and no edge is known.
pub(crate) fn graph_json(info: &ProgramInfo, mermaid: Option<&str>) -> Json {
    let mut details: Vec<String> = vec![String::new(); info.steps.len()];
    let mut edges = Vec::new();
    let mut replans = Vec::new();
    let mut effects: Vec<usize> = Vec::new();
    let mut start = info.steps.get(info.start as usize).map(|s| s.name);
    let name = |id: &str| -> Option<&'static str> {
        let i: usize = id.strip_prefix('s')?.parse().ok()?;
        info.steps.get(i).map(|s| s.name)
    };
    for line in mermaid.unwrap_or_default().lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("class ") {
            // `class s2,s3 effect`: the compiler's effect steps (calls and parallel blocks).
            if let Some(ids) = rest.strip_suffix(" effect") {
                effects.extend(
                    ids.split(',')
                        .filter_map(|id| id.strip_prefix('s')?.parse::<usize>().ok()),
                );
            }
        } else if let Some(rest) = line.strip_prefix("start([start]) --> ") {
            start = name(rest).or(start);
        } else if let Some((lhs, to)) = line.split_once(" -.-> ") {
            // `rK(["on EVENT<br/><small>replans N</small>"]) -.-> sT`
            let on = between(lhs, "on ", "<br/>");
            let n = between(lhs, "replans ", "</small>").and_then(|n| n.parse::<u64>().ok());
            if let (Some(on), Some(n), Some(to)) = (on, n, name(to)) {
                replans.push(json!({ "on": on, "replans": n, "to": to }));
            }
        } else if let Some((from, rest)) = line.split_once(" -->") {
            let (label, to) = match rest.strip_prefix('|').and_then(|r| r.split_once("| ")) {
                Some((label, to)) => (label.replace("#quot;", "\""), to),
                None => (String::new(), rest.trim()),
            };
            if let (Some(from), Some(to)) = (name(from), name(to)) {
                edges.push(json!({ "from": from, "to": to, "label": label }));
            }
        } else if let Some(i) = line
            .strip_prefix('s')
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|d| d.parse::<usize>().ok())
            && let Some(d) = between(line, "<small>", "</small>")
            && i < details.len()
        {
            details[i] = d.replace("#quot;", "\"");
        }
    }
    let nodes: Vec<Json> = info
        .steps
        .iter()
        .zip(&details)
        .enumerate()
        .map(|(i, (s, d))| {
            json!({
                "id": i,
                "name": s.name,
                "kind": s.kind.as_str(),
                "detail": d,
                "effect": effects.contains(&i),
            })
        })
        .collect();
    json!({
        "program": info.name,
        "hash": info.hash,
        "start": start,
        "nodes": nodes,
        "edges": edges,
        "replans": replans,
    })
}

/// The text between `open` and the next `close` in `s`.
fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let from = s.find(open)? + open.len();
    let len = s[from..].find(close)?;
    Some(&s[from..from + len])
}

/// The stored run, verified, with where it stood after each entry: `root` (the last hash),
/// `verified` (always true: a trace that does not verify is a 500 `trace_corrupt`), and
/// `entries`, each `seq`, `kind`, `hash`, `prev`, `at` (the step the run is at,
/// [`RunView::at`]), `status`, `waiting` (the event a suspended run waits for) and
/// `transition` (`[step, next]`: the edge of the graph this entry took, from
/// `Activity::transitions`; `null` for an entry that took none) and `open_effects` (the effects
/// whose intent is recorded and whose outcome is not, after it).
async fn steps(
    State(app): State<Arc<App>>,
    Path(run_id): Path<String>,
) -> Result<Response, ApiError> {
    let entries = entries_of(&app, &run_id).await?;
    let mut view = RunView::new().counting();
    let mut rows = Vec::with_capacity(entries.len());
    for e in &entries {
        let before = view.activity().transitions.len();
        view.apply(&e.event);
        let transition = view.activity().transitions.get(before);
        rows.push(json!({
            "seq": e.seq,
            "kind": e.event.kind(),
            "hash": e.hash,
            "prev": e.prev,
            "at": view.at(),
            "status": view.status().to_string(),
            "waiting": view.waiting().map(|w| w.event.clone()),
            "transition": transition,
            "open_effects": view.open_effects().iter().map(|o| json!({
                "effect_id": o.effect_id,
                "tool": o.tool,
                "step": o.step,
                "not_done": o.not_done,
            })).collect::<Vec<_>>(),
        }));
    }
    let trace = crate::api::verified(entries)?;
    Ok(axum::Json(json!({
        "run_id": run_id,
        "verified": true,
        "root": trace.root().to_hex(),
        "entries": rows,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    program: Option<String>,
    since: Option<String>,
    percentile: Option<f64>,
}

/// `nanovm stats --format json`'s document for the store's runs.
async fn stats_of(
    State(app): State<Arc<App>>,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let mut opts = StatsOptions::new();
    if let Some(s) = &q.since {
        let since = parse_utc(s).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_query", format!("since: {e}"))
        })?;
        opts = opts.since_ms(since);
    }
    if let Some(p) = q.percentile {
        if !p.is_finite() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                "percentile must be a number from 0 to 100",
            ));
        }
        opts = opts.percentile(p);
    }
    let mut rq = RunQuery::new();
    if let Some(p) = q.program {
        rq = rq.program(p);
    }
    let store = app.runtime.store().expect("checked at bind");
    let runs = samples(store.as_ref(), &rq).await.map_err(store_error)?;
    Ok(axum::Json(report(&stats(&runs, &opts), &opts)).into_response())
}

#[cfg(test)]
#[allow(unreachable_pub, dead_code, missing_docs)]
mod tests {
    use nanovm_runtime::__private_v0_1::Program;

    use super::graph_json;

    mod generated {
        include!("../../nanovm-runtime/tests/support/generated/customer_refund.rs");
        include!("../../nanovm-runtime/tests/support/generated/fanout.rs");
        include!("../../nanovm-runtime/tests/support/generated/replan.rs");
        include!("../../nanovm-runtime/tests/support/generated/pay.rs");
    }
    use generated::*;

    /// Every node and edge of the compiler's Mermaid is in the JSON, and nothing else.
    fn same_as_mermaid<P: Program>() -> serde_json::Value {
        let mermaid = P::graph().expect("generated code has a graph");
        let g = graph_json(P::info(), Some(mermaid));
        let lines = |pick: &dyn Fn(&str) -> bool| {
            mermaid.lines().map(str::trim).filter(|l| pick(l)).count()
        };
        let edges = lines(&|l| l.starts_with('s') && !l.starts_with("start") && l.contains(" -->"));
        let replans = lines(&|l| l.contains(" -.-> "));
        assert_eq!(g["edges"].as_array().unwrap().len(), edges, "{g}");
        assert_eq!(g["replans"].as_array().unwrap().len(), replans, "{g}");
        assert_eq!(g["nodes"].as_array().unwrap().len(), P::info().steps.len());
        for n in g["nodes"].as_array().unwrap() {
            assert!(!n["detail"].as_str().unwrap().is_empty(), "{n}");
        }
        g
    }

    #[test]
    fn every_generated_graph_is_read_whole() {
        same_as_mermaid::<customer_refund::Program>();
        let fanout = same_as_mermaid::<fanout::Program>();
        // A parallel block with an effect branch is an effect step, as the compiler marks it.
        let work = &fanout["nodes"][1];
        assert_eq!(
            (work["name"].as_str(), work["effect"].as_bool()),
            (Some("work"), Some(true))
        );
        assert_eq!(work["kind"], "parallel");
        let replan = same_as_mermaid::<replan::Program>();
        assert_eq!(
            replan["replans"][0],
            serde_json::json!({ "on": "budget_exceeded", "replans": 2, "to": "rethink" })
        );
        assert!(
            replan["edges"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!({ "from": "plan", "to": "plan", "label": "invalid" }))
        );
        same_as_mermaid::<pay::Program>();
    }

    #[test]
    fn a_program_without_a_graph_lists_its_steps() {
        let g = graph_json(customer_refund::Program::info(), None);
        assert_eq!(g["nodes"].as_array().unwrap().len(), 10);
        assert_eq!(g["edges"], serde_json::json!([]));
        assert_eq!(g["start"], "analyze");
    }
}
