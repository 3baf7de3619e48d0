//! `GET /metrics`: Prometheus metrics (the OpenMetrics text format, `prometheus-client`).
//!
//! Two sources, named apart in `docs/metrics.md`:
//!
//! - **this process**, counted as it happens by [`Metrics`] as the runtime's
//!   [`Observer`](nanovm_runtime::Observer) (entries, steps, retries, budget trips, stalls, runs
//!   ended, call durations, lease takeovers) and by the streams (events streamed). Set it on
//!   the runtime (`RuntimeBuilder::observer(metrics.clone())`) and give the same value to
//!   [`Server::metrics`](crate::Server::metrics); without the observer those stay 0. Several
//!   server processes: sum them across processes.
//! - **the store**, read once per scrape with one query of the run records (never a trace):
//!   runs by status and the reconciliation queue. Every process reports the same store-wide
//!   value: do not sum them.
//!
//! Only names, statuses, budget kinds and tool names become labels; never a run id, a value,
//! a prompt or a result.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use nanovm_runtime::store::RunQuery;
use nanovm_runtime::trace::{Entry, Event, RunStatus};
use nanovm_runtime::{CallKind, CallTiming, Observer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::App;
use crate::api::{ApiError, store_error};

/// Every run status, for the per-status gauges (a status with no run reports 0).
const STATUSES: [RunStatus; 8] = [
    RunStatus::Running,
    RunStatus::Suspended,
    RunStatus::Success,
    RunStatus::Failed,
    RunStatus::BudgetExceeded,
    RunStatus::Stalled,
    RunStatus::Cancelled,
    RunStatus::NeedsReconciliation,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabel {
    budget: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

/// Call durations: 1 ms to about 33 s, doubling.
fn call_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

struct Inner {
    registry: Registry,
    runs: Family<StatusLabel, Gauge>,
    reconciliation_queue: Gauge,
    runs_ended: Family<StatusLabel, Counter>,
    entries: Counter,
    steps: Counter,
    retries: Family<KindLabel, Counter>,
    budget_trips: Family<BudgetLabel, Counter>,
    stalls: Counter,
    model_calls: Histogram,
    tool_calls: Family<ToolLabel, Histogram, fn() -> Histogram>,
    calls_failed: Family<KindLabel, Counter>,
    takeovers: Counter,
    streamed: Family<StreamLabel, Counter>,
}

/// The server's Prometheus metrics; also the runtime's [`Observer`] that counts this
/// process's runs (see the module docs and `docs/metrics.md`). Clones share the counts.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics, every counter at 0.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let runs = Family::<StatusLabel, Gauge>::default();
        registry.register(
            "nanovm_runs",
            "Runs in the store by status (store-wide, read at each scrape)",
            runs.clone(),
        );
        let reconciliation_queue = Gauge::default();
        registry.register(
            "nanovm_reconciliation_queue",
            "Runs waiting for an operator to reconcile an ambiguous effect (store-wide)",
            reconciliation_queue.clone(),
        );
        let runs_ended = Family::<StatusLabel, Counter>::default();
        registry.register(
            "nanovm_runs_ended",
            "run_ended entries written by this process, by status (suspensions included)",
            runs_ended.clone(),
        );
        let entries = Counter::default();
        registry.register(
            "nanovm_entries",
            "Trace entries made durable by this process",
            entries.clone(),
        );
        let steps = Counter::default();
        registry.register(
            "nanovm_steps",
            "Steps completed by this process (entries that choose a successor)",
            steps.clone(),
        );
        let retries = Family::<KindLabel, Counter>::default();
        registry.register(
            "nanovm_retries",
            "Model and tool call attempts after the first (kind: model, tool)",
            retries.clone(),
        );
        let budget_trips = Family::<BudgetLabel, Counter>::default();
        registry.register(
            "nanovm_budget_trips",
            "Budgets that ran out, by budget",
            budget_trips.clone(),
        );
        let stalls = Counter::default();
        registry.register("nanovm_stalls", "Runs that ended stalled", stalls.clone());
        let model_calls = call_buckets();
        registry.register(
            "nanovm_model_call_duration_seconds",
            "Live model calls, by duration",
            model_calls.clone(),
        );
        let tool_calls = Family::<ToolLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            call_buckets as fn() -> Histogram,
        );
        registry.register(
            "nanovm_tool_call_duration_seconds",
            "Live tool calls, by tool and duration",
            tool_calls.clone(),
        );
        let calls_failed = Family::<KindLabel, Counter>::default();
        registry.register(
            "nanovm_calls_failed",
            "Live model and tool calls that returned an error, were cancelled or timed out",
            calls_failed.clone(),
        );
        let takeovers = Counter::default();
        registry.register(
            "nanovm_lease_takeovers",
            "Runs this process's workers continued after another execution left them mid-way",
            takeovers.clone(),
        );
        let streamed = Family::<StreamLabel, Counter>::default();
        registry.register(
            "nanovm_events_streamed",
            "Entries sent on Server-Sent Event streams (stream: run, all)",
            streamed.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                runs,
                reconciliation_queue,
                runs_ended,
                entries,
                steps,
                retries,
                budget_trips,
                stalls,
                model_calls,
                tool_calls,
                calls_failed,
                takeovers,
                streamed,
            }),
        }
    }

    /// Counts one entry sent on a stream (`run` or `all`).
    pub(crate) fn streamed(&self, stream: &str) {
        self.inner
            .streamed
            .get_or_create(&StreamLabel {
                stream: stream.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text, after reading the store's gauges.
    async fn scrape(&self, app: &App) -> Result<String, ApiError> {
        let store = app.runtime.store().expect("checked at bind");
        let records = store.runs(&RunQuery::new()).await.map_err(store_error)?;
        for status in STATUSES {
            let n = records.iter().filter(|r| r.status == status).count();
            self.inner
                .runs
                .get_or_create(&StatusLabel {
                    status: status.as_str().to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let queue = records
            .iter()
            .filter(|r| r.status == RunStatus::NeedsReconciliation)
            .count();
        self.inner
            .reconciliation_queue
            .set(i64::try_from(queue).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
            .map_err(store_error)?;
        Ok(text)
    }
}

impl Observer for Metrics {
    fn entry(&self, _run_id: &str, entry: &Entry) {
        let m = &*self.inner;
        m.entries.inc();
        let retry = |kind: &str, attempt: u32| {
            if attempt > 1 {
                m.retries
                    .get_or_create(&KindLabel {
                        kind: kind.to_string(),
                    })
                    .inc();
            }
        };
        match &entry.event {
            Event::Model { attempt, next, .. } => {
                retry("model", *attempt);
                if next.is_some() {
                    m.steps.inc();
                }
            }
            Event::ToolResult { attempt, next, .. } => {
                retry("tool", *attempt);
                if next.is_some() {
                    m.steps.inc();
                }
            }
            Event::Joined { next: Some(_), .. }
            | Event::Decision { .. }
            | Event::Delivered { .. }
            | Event::TimedOut { .. } => {
                m.steps.inc();
            }
            Event::BudgetExceeded { budget, .. } => {
                m.budget_trips
                    .get_or_create(&BudgetLabel {
                        budget: budget.as_str().to_string(),
                    })
                    .inc();
            }
            Event::RunEnded { status, .. } => {
                m.runs_ended
                    .get_or_create(&StatusLabel {
                        status: status.as_str().to_string(),
                    })
                    .inc();
                if *status == RunStatus::Stalled {
                    m.stalls.inc();
                }
            }
            _ => {}
        }
    }

    fn call(&self, call: &CallTiming<'_>) {
        let m = &*self.inner;
        let secs = call.elapsed.as_secs_f64();
        let kind = match call.kind {
            CallKind::Model => {
                m.model_calls.observe(secs);
                "model"
            }
            _ => {
                m.tool_calls
                    .get_or_create(&ToolLabel {
                        tool: call.name.to_string(),
                    })
                    .observe(secs);
                "tool"
            }
        };
        if !call.ok {
            m.calls_failed
                .get_or_create(&KindLabel {
                    kind: kind.to_string(),
                })
                .inc();
        }
    }

    fn takeover(&self, _run_id: &str) {
        self.inner.takeovers.inc();
    }
}

/// The handler.
pub(crate) async fn scrape(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let text = app.metrics.scrape(&app).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
