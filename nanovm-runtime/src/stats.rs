//! Drift metrics over stored runs, per program: [`stats`]. Pure functions over [`RunView`]s
//! (their [`Activity`]); the formulas are in `docs/metrics.md`.
//!
//! The runs of a program are split into a *baseline* (its own history) and a *window* (the
//! runs being judged): the runs created before `since` and the runs created at or after it;
//! without `since`, the older half and the newer half (by creation time). Every number is
//! reported for the window; path variance compares the window's paths with the baseline's,
//! and each window run is flagged where it is worse than the given percentile of the
//! baseline's runs: no fixed thresholds.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::{JournalError, JournalStore, RunQuery};
use crate::view::{Activity, RunView};

/// One stored run, as [`stats`] reads it.
#[derive(Clone, Debug)]
pub struct RunSample {
    /// The run id.
    pub run_id: String,
    /// Its program.
    pub program: String,
    /// When the store created it (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// The view of its entries, made [`RunView::counting`] (`RunView::new().counting().read(&entries)`);
    /// `None` when its stored trace does not verify (counted as a divergence).
    pub view: Option<RunView>,
}

/// How [`stats`] splits and judges the runs.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StatsOptions {
    /// Runs created at or after this instant are the window, older ones the baseline
    /// (`None`: the newer half is the window, the older half the baseline).
    pub since_ms: Option<u64>,
    /// A window run is flagged on a metric above this percentile of the baseline's values of
    /// it (nearest rank; default 95).
    pub percentile: f64,
    /// Fewer baseline runs than this and no run is flagged (too little history; default 5).
    pub min_history: usize,
    /// The model's price per million prompt tokens (`None`: no cost is reported).
    pub price_in_per_mtok: Option<f64>,
    /// The model's price per million completion tokens.
    pub price_out_per_mtok: Option<f64>,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions {
            since_ms: None,
            percentile: 95.0,
            min_history: 5,
            price_in_per_mtok: None,
            price_out_per_mtok: None,
        }
    }
}

impl StatsOptions {
    /// The defaults.
    pub fn new() -> Self {
        StatsOptions::default()
    }

    /// Sets [`StatsOptions::since_ms`].
    #[must_use]
    pub fn since_ms(mut self, since_ms: u64) -> Self {
        self.since_ms = Some(since_ms);
        self
    }

    /// Sets [`StatsOptions::percentile`] (clamped to 0..=100).
    #[must_use]
    pub fn percentile(mut self, p: f64) -> Self {
        self.percentile = p.clamp(0.0, 100.0);
        self
    }

    /// Sets [`StatsOptions::min_history`].
    #[must_use]
    pub fn min_history(mut self, n: usize) -> Self {
        self.min_history = n;
        self
    }

    /// Sets the model's prices per million prompt and completion tokens.
    #[must_use]
    pub fn prices(mut self, in_per_mtok: f64, out_per_mtok: f64) -> Self {
        self.price_in_per_mtok = Some(in_per_mtok);
        self.price_out_per_mtok = Some(out_per_mtok);
        self
    }
}

/// The drift metrics of one program's window (see `docs/metrics.md`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProgramStats {
    /// The program.
    pub program: String,
    /// Runs in the baseline.
    pub baseline_runs: usize,
    /// Runs in the window.
    pub window_runs: usize,
    /// Transitions taken by the window's runs.
    pub transitions: u64,
    /// H(A|S) over the window's transitions, in bits: Σ_s p(s)·H(A|S=s).
    pub transition_entropy: f64,
    /// Per decision point (a step the window left by more than one successor, or any step
    /// left at least once), H(A|S=s) in bits, with the successors counted.
    pub decision_points: Vec<DecisionPoint>,
    /// Retries per transition.
    pub retry_density: f64,
    /// Loops back (a transition into a step entered before in the run) per transition.
    pub rollback_density: f64,
    /// (divergences + refusals + faults + budget trips) per transition.
    pub violation_rate: f64,
    /// The violations counted: runs whose stored trace does not verify.
    pub divergences: u64,
    /// Refused model replies.
    pub refusals: u64,
    /// Failed model and tool calls.
    pub faults: u64,
    /// Budget trips.
    pub budget_trips: u64,
    /// Repeated tool calls (same tool, same arguments, again in the run) per tool call.
    pub tool_churn: f64,
    /// Mean prompt + completion tokens per window run.
    pub tokens_per_run: f64,
    /// Mean model cost per window run, with prices given (`None`: no prices).
    pub cost_per_run: Option<f64>,
    /// Path variance: the Jensen–Shannon divergence (bits, 0..=1) between the distributions
    /// of whole paths in the baseline and in the window (`None`: an empty side).
    pub path_divergence: Option<f64>,
    /// The share of window runs whose path no baseline run took (`None`: no window run).
    pub unseen_path_share: Option<f64>,
    /// The window's runs with a health flag, oldest first.
    pub flagged: Vec<RunHealth>,
    /// Every run of the baseline and the window, oldest first, with the per-run values the
    /// health flags compare: the points of the viewer's plots over time.
    pub runs: Vec<RunPoint>,
    /// Each per-run metric's flagging threshold (the baseline's percentile; absent with too
    /// little history).
    pub thresholds: BTreeMap<&'static str, f64>,
}

/// One run's per-run metrics ([`ProgramStats::runs`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunPoint {
    /// The run.
    pub run_id: String,
    /// When the store created it (milliseconds since the Unix epoch).
    pub created_ms: u64,
    /// In the window (`false`: the baseline).
    pub window: bool,
    /// Its stored trace does not verify: no metrics (a divergence).
    pub diverged: bool,
    /// `retries`, `rollbacks`, `violations`, `repeated_calls`, `tokens`, `transitions`: the
    /// values [`RunHealth`]'s flags compare.
    pub metrics: BTreeMap<&'static str, f64>,
}

/// H(A|S=s) of one decision point.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DecisionPoint {
    /// The step.
    pub step: String,
    /// Transitions out of it.
    pub count: u64,
    /// The entropy of its successors, in bits.
    pub entropy: f64,
    /// Each successor and how often it was taken.
    pub next: BTreeMap<String, u64>,
}

/// A window run that is worse than its program's history on some metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunHealth {
    /// The run.
    pub run_id: String,
    /// The metrics it is flagged on: `retries`, `rollbacks`, `violations`, `repeated_calls`,
    /// `tokens`, `transitions`; each with the run's value and the baseline percentile it
    /// exceeds.
    pub flags: Vec<Flag>,
}

/// One health flag.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Flag {
    /// The metric.
    pub metric: &'static str,
    /// The run's value.
    pub value: f64,
    /// The baseline's percentile it exceeds.
    pub threshold: f64,
}

/// Shannon entropy (bits) of the distribution given by `counts`.
pub fn entropy<'a>(counts: impl IntoIterator<Item = &'a u64>) -> f64 {
    let counts: Vec<f64> = counts.into_iter().map(|&c| c as f64).collect();
    let total: f64 = counts.iter().sum();
    if total == 0.0 {
        return 0.0;
    }
    let h = -counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|c| {
            let p = c / total;
            p * p.log2()
        })
        .sum::<f64>();
    // One outcome sums to -0.0.
    if h > 0.0 { h } else { 0.0 }
}

/// The Jensen–Shannon divergence (bits, 0..=1) of two distributions given by counts over the
/// same keys (a missing key counts 0). `None` when either side is empty.
pub fn jensen_shannon(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> Option<f64> {
    let (ta, tb) = (
        a.values().sum::<u64>() as f64,
        b.values().sum::<u64>() as f64,
    );
    if ta == 0.0 || tb == 0.0 {
        return None;
    }
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let kl = |p: f64, m: f64| if p > 0.0 { p * (p / m).log2() } else { 0.0 };
    let mut js = 0.0;
    for k in keys {
        let p = *a.get(k).unwrap_or(&0) as f64 / ta;
        let q = *b.get(k).unwrap_or(&0) as f64 / tb;
        let m = (p + q) / 2.0;
        js += 0.5 * kl(p, m) + 0.5 * kl(q, m);
    }
    Some(js.clamp(0.0, 1.0))
}

/// The nearest-rank `p`-th percentile of `values` (`None` when empty).
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// A run's path: its steps in order, `a > b > c` (the first transition's source, then every
/// target).
pub fn path(a: &Activity) -> String {
    let mut steps: Vec<&str> = Vec::with_capacity(a.transitions.len() + 1);
    if let Some((first, _)) = a.transitions.first() {
        steps.push(first);
    }
    steps.extend(a.transitions.iter().map(|(_, n)| n.as_str()));
    steps.join(" > ")
}

/// The per-run values the health flags compare.
fn run_metrics(a: &Activity) -> [(&'static str, f64); 6] {
    [
        ("retries", a.retries as f64),
        ("rollbacks", a.rollbacks as f64),
        (
            "violations",
            (a.refusals + a.faults + a.budget_trips) as f64,
        ),
        ("repeated_calls", a.repeated_calls as f64),
        ("tokens", (a.prompt_tokens + a.completion_tokens) as f64),
        ("transitions", a.transitions.len() as f64),
    ]
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

/// The drift metrics of every program among `runs` (sorted by program name); see the module
/// docs and `docs/metrics.md`.
pub fn stats(runs: &[RunSample], opts: &StatsOptions) -> Vec<ProgramStats> {
    let mut by_program: BTreeMap<&str, Vec<&RunSample>> = BTreeMap::new();
    for r in runs {
        by_program.entry(r.program.as_str()).or_default().push(r);
    }
    by_program
        .into_iter()
        .map(|(program, mut runs)| {
            runs.sort_by(|a, b| (a.created_ms, &a.run_id).cmp(&(b.created_ms, &b.run_id)));
            let split = match opts.since_ms {
                Some(since) => runs.partition_point(|r| r.created_ms < since),
                None => runs.len() / 2,
            };
            let (baseline, window) = runs.split_at(split);
            program_stats(program, baseline, window, opts)
        })
        .collect()
}

/// The metrics of one program's `window` against its `baseline`.
pub fn program_stats(
    program: &str,
    baseline: &[&RunSample],
    window: &[&RunSample],
    opts: &StatsOptions,
) -> ProgramStats {
    let views = |runs: &[&RunSample]| -> Vec<(String, Activity)> {
        runs.iter()
            .filter_map(|r| {
                r.view
                    .as_ref()
                    .map(|v| (r.run_id.clone(), v.activity().clone()))
            })
            .collect()
    };
    let (base, win) = (views(baseline), views(window));
    let divergences = window.iter().filter(|r| r.view.is_none()).count() as u64;

    let mut points: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    let mut sum = Activity::default();
    for (_, a) in &win {
        for (s, n) in &a.transitions {
            *points.entry(s).or_default().entry(n.clone()).or_default() += 1;
        }
        sum.retries += a.retries;
        sum.rollbacks += a.rollbacks;
        sum.refusals += a.refusals;
        sum.faults += a.faults;
        sum.budget_trips += a.budget_trips;
        sum.tool_calls += a.tool_calls;
        sum.repeated_calls += a.repeated_calls;
        sum.prompt_tokens += a.prompt_tokens;
        sum.completion_tokens += a.completion_tokens;
    }
    let transitions: u64 = points.values().flat_map(BTreeMap::values).sum();
    let decision_points: Vec<DecisionPoint> = points
        .into_iter()
        .map(|(step, next)| DecisionPoint {
            step: step.to_string(),
            count: next.values().sum(),
            entropy: entropy(next.values()),
            next,
        })
        .collect();
    let transition_entropy = decision_points
        .iter()
        .map(|d| ratio(d.count, transitions) * d.entropy)
        .sum();

    let paths = |runs: &[(String, Activity)]| {
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for (_, a) in runs {
            *m.entry(path(a)).or_default() += 1;
        }
        m
    };
    let (base_paths, win_paths) = (paths(&base), paths(&win));
    let unseen = win
        .iter()
        .filter(|(_, a)| !base_paths.contains_key(&path(a)))
        .count() as u64;

    let runs = win.len().max(1) as f64;
    let tokens = (sum.prompt_tokens + sum.completion_tokens) as f64;
    let cost_per_run = match (opts.price_in_per_mtok, opts.price_out_per_mtok) {
        (Some(pi), Some(po)) if !win.is_empty() => {
            Some((sum.prompt_tokens as f64 * pi + sum.completion_tokens as f64 * po) / 1e6 / runs)
        }
        _ => None,
    };

    let points: Vec<RunPoint> = baseline
        .iter()
        .map(|r| (r, false))
        .chain(window.iter().map(|r| (r, true)))
        .map(|(r, window)| RunPoint {
            run_id: r.run_id.clone(),
            created_ms: r.created_ms,
            window,
            diverged: r.view.is_none(),
            metrics: r
                .view
                .as_ref()
                .map(|v| run_metrics(v.activity()).into_iter().collect())
                .unwrap_or_default(),
        })
        .collect();
    let mut limits = BTreeMap::new();
    let mut flagged = Vec::new();
    if base.len() >= opts.min_history.max(1) {
        let history: Vec<[(&str, f64); 6]> = base.iter().map(|(_, a)| run_metrics(a)).collect();
        let thresholds: Vec<f64> = (0..6)
            .map(|i| {
                let values: Vec<f64> = history.iter().map(|m| m[i].1).collect();
                percentile(&values, opts.percentile).unwrap_or(f64::INFINITY)
            })
            .collect();
        for (i, (metric, _)) in run_metrics(&Activity::default()).iter().enumerate() {
            if thresholds[i].is_finite() {
                limits.insert(*metric, thresholds[i]);
            }
        }
        for (run_id, a) in &win {
            let flags: Vec<Flag> = run_metrics(a)
                .iter()
                .zip(&thresholds)
                .filter(|((_, v), t)| v > t)
                .map(|((metric, value), threshold)| Flag {
                    metric,
                    value: *value,
                    threshold: *threshold,
                })
                .collect();
            if !flags.is_empty() {
                flagged.push(RunHealth {
                    run_id: run_id.clone(),
                    flags,
                });
            }
        }
    }

    ProgramStats {
        program: program.to_string(),
        baseline_runs: baseline.len(),
        window_runs: window.len(),
        transitions,
        transition_entropy,
        decision_points,
        retry_density: ratio(sum.retries, transitions),
        rollback_density: ratio(sum.rollbacks, transitions),
        violation_rate: ratio(
            divergences + sum.refusals + sum.faults + sum.budget_trips,
            transitions,
        ),
        divergences,
        refusals: sum.refusals,
        faults: sum.faults,
        budget_trips: sum.budget_trips,
        tool_churn: ratio(sum.repeated_calls, sum.tool_calls),
        tokens_per_run: if win.is_empty() { 0.0 } else { tokens / runs },
        cost_per_run,
        path_divergence: jensen_shannon(&base_paths, &win_paths),
        unseen_path_share: (!win.is_empty()).then(|| ratio(unseen, win.len() as u64)),
        flagged,
        runs: points,
        thresholds: limits,
    }
}

/// The version of [`report`]'s shape: fields are only ever added under one version.
pub const REPORT_VERSION: u32 = 1;

/// The runs `query` selects from `store`, each read by a counting [`RunView`]: what [`stats`]
/// reads (`nanovm stats` and the server's `/v1/stats` both load them here). A stored trace
/// that does not verify is a sample without a view (a divergence), not a reason to stop.
pub async fn samples(
    store: &dyn JournalStore,
    query: &RunQuery,
) -> Result<Vec<RunSample>, JournalError> {
    let records = store.runs(query).await?;
    let mut samples = Vec::with_capacity(records.len());
    for r in records {
        let view = match store.load(&r.run_id).await {
            Ok(Some(entries)) => Some(RunView::new().counting().read(&entries)),
            Ok(None) | Err(_) => None,
        };
        samples.push(RunSample {
            run_id: r.run_id,
            program: r.program,
            created_ms: r.created_ms,
            view,
        });
    }
    Ok(samples)
}

/// The JSON document of `nanovm stats --format json` and `GET /v1/stats`: `version`
/// ([`REPORT_VERSION`]), `since_ms`, `percentile` and `programs` (see `docs/metrics.md`).
pub fn report(programs: &[ProgramStats], opts: &StatsOptions) -> serde_json::Value {
    serde_json::json!({
        "version": REPORT_VERSION,
        "since_ms": opts.since_ms,
        "percentile": opts.percentile,
        "programs": programs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Event, Reply, ToolOutcome};
    use crate::value::{Datum, Digest};

    const EPS: f64 = 1e-9;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < EPS, "{a} != {b}");
    }

    fn decision(step: &str, next: &str) -> Event {
        Event::Decision {
            step: step.to_string().into(),
            arm: None,
            next: next.to_string().into(),
        }
    }

    fn model(step: &str, attempt: u32, tokens: u64, next: Option<&str>) -> Event {
        Event::Model {
            step: step.to_string().into(),
            branch: None,
            attempt,
            model: None,
            system: None,
            prompt: "p".into(),
            instruction: None,
            reply: Reply::Answer {
                text: "a".into(),
                prompt_tokens: tokens,
                completion_tokens: 0,
                cache_hit: false,
                tokens_estimated: false,
                probability: None,
                raw_text: None,
                constraint: None,
            },
            next: next.map(|n| n.to_string().into()),
        }
    }

    fn fetch(topic: &str, attempt: u32, ok: bool, next: Option<&str>) -> Event {
        Event::ToolResult {
            step: "lookup".into(),
            branch: None,
            attempt,
            tool: "fetch".into(),
            key: Digest::of(topic.as_bytes()),
            args: Some(vec![(
                "topic".into(),
                Datum::Plain(serde_json::json!(topic)),
            )]),
            result: if ok {
                ToolOutcome::Ok(serde_json::json!(1))
            } else {
                ToolOutcome::Err {
                    message: "down".into(),
                    retryable: true,
                }
            },
            next: next.map(|n| n.to_string().into()),
        }
    }

    fn view(events: &[Event]) -> RunView {
        let mut v = RunView::new().counting();
        for e in events {
            v.apply(e);
        }
        v
    }

    fn sample(id: usize, events: &[Event]) -> RunSample {
        RunSample {
            run_id: format!("r{id:02}"),
            program: "p".into(),
            created_ms: id as u64,
            view: Some(view(events)),
        }
    }

    #[test]
    fn entropy_of_known_distributions() {
        close(entropy(&[1, 1]), 1.0);
        close(entropy(&[5, 5, 5, 5]), 2.0);
        close(entropy(&[7]), 0.0);
        // -(3/4)·log2(3/4) - (1/4)·log2(1/4)
        close(entropy(&[3, 1]), 0.811_278_124_459_132_9);
        close(entropy(&[]), 0.0);
    }

    #[test]
    fn jensen_shannon_of_known_distributions() {
        let m = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        close(
            jensen_shannon(&m(&[("a", 2), ("b", 1)]), &m(&[("b", 2), ("a", 4)])).unwrap(),
            0.0,
        );
        close(
            jensen_shannon(&m(&[("a", 1)]), &m(&[("b", 3)])).unwrap(),
            1.0,
        );
        // p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4):
        // ½·log2(4/3) + ½·(½·log2(2/3) + ½·log2(2)) = 0.311278...
        close(
            jensen_shannon(&m(&[("a", 6)]), &m(&[("a", 1), ("b", 1)])).unwrap(),
            0.311_278_124_459_132_8,
        );
        assert_eq!(jensen_shannon(&m(&[]), &m(&[("a", 1)])), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 95.0), Some(10.0));
        assert_eq!(percentile(&v, 50.0), Some(5.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    /// fetch(x), its retry, fetch(y), fetch(x) again from a later visit, and its retry: 5
    /// calls, 2 retries, 1 repeated call (the later fetch(x)); the loop back to `lookup`
    /// is one rollback.
    #[test]
    fn churn_retries_and_rollbacks_of_a_known_sequence() {
        let v = view(&[
            fetch("x", 1, false, None),
            fetch("x", 2, true, Some("check")),
            decision("check", "lookup"),
            fetch("y", 1, true, Some("check")),
            decision("check", "lookup"),
            fetch("x", 1, false, None),
            fetch("x", 2, true, Some("done")),
        ]);
        let a = v.activity();
        assert_eq!(a.tool_calls, 5);
        assert_eq!(a.retries, 2);
        assert_eq!(a.repeated_calls, 1);
        assert_eq!(a.faults, 2);
        assert_eq!(a.transitions.len(), 5);
        // check -> lookup twice (lookup was entered), lookup -> check once more.
        assert_eq!(a.rollbacks, 3);
        assert_eq!(path(a), "lookup > check > lookup > check > lookup > done");
    }

    /// A program's history: 6 healthy runs `classify -> route -> a` (100..=105 tokens). The
    /// window: one more like them (100 tokens), and a degraded run that answered `classify`
    /// five times on each of three visits, looped `route -> classify` twice, then took
    /// `route -> b`, where it answered three times. Every number computed by hand.
    #[test]
    fn a_degraded_run_is_flagged_against_a_healthy_history() {
        let healthy = |i: usize| {
            sample(
                i,
                &[
                    model("classify", 1, 100 + (i % 6) as u64, Some("route")),
                    decision("route", "a"),
                ],
            )
        };
        let mut runs: Vec<RunSample> = (0..7).map(healthy).collect();
        let mut degraded = vec![];
        for visit in 0..3 {
            for attempt in 1..=5u32 {
                degraded.push(model(
                    "classify",
                    attempt,
                    400,
                    (attempt == 5).then_some("route"),
                ));
            }
            degraded.push(decision("route", if visit == 2 { "b" } else { "classify" }));
        }
        for attempt in 1..=3u32 {
            degraded.push(model("b", attempt, 0, (attempt == 3).then_some("done")));
        }
        runs.push(sample(7, &degraded));
        let opts = StatsOptions::new().since_ms(6).prices(1.0, 2.0);
        let all = stats(&runs, &opts);
        assert_eq!(all.len(), 1);
        let s = &all[0];
        assert_eq!((s.baseline_runs, s.window_runs), (6, 2));
        // healthy: classify->route, route->a; degraded: classify->route ×3, route->classify ×2,
        // route->b, b->done.
        assert_eq!(s.transitions, 9);
        // route: {a: 1, classify: 2, b: 1}: H = 1.5 bits; classify {route: 4} and b {done: 1}: 0.
        let route = s
            .decision_points
            .iter()
            .find(|d| d.step == "route")
            .unwrap();
        close(route.entropy, 1.5);
        assert_eq!(route.count, 4);
        // H(A|S) = p(route) · 1.5 = 4/9 · 1.5
        close(s.transition_entropy, 4.0 / 9.0 * 1.5);
        // 4 + 4 + 4 + 2 retries; rollbacks: route->classify ×2, classify->route ×2 (2nd, 3rd).
        close(s.retry_density, 14.0 / 9.0);
        close(s.rollback_density, 4.0 / 9.0);
        // Every answer that completed no step is a refusal: 12 + 2.
        assert_eq!(s.refusals, 14);
        close(s.violation_rate, 14.0 / 9.0);
        close(s.unseen_path_share.unwrap(), 0.5);
        close(s.path_divergence.unwrap(), 0.311_278_124_459_132_8);
        close(s.tokens_per_run, (100.0 + 6000.0) / 2.0);
        close(s.cost_per_run.unwrap(), 6100.0 / 1e6 / 2.0);
        assert_eq!(s.flagged.len(), 1, "{:?}", s.flagged);
        let f = &s.flagged[0];
        assert_eq!(f.run_id, "r07");
        let metrics: Vec<&str> = f.flags.iter().map(|f| f.metric).collect();
        assert_eq!(
            metrics,
            [
                "retries",
                "rollbacks",
                "violations",
                "tokens",
                "transitions"
            ]
        );
        let tokens = f.flags.iter().find(|f| f.metric == "tokens").unwrap();
        assert_eq!((tokens.value, tokens.threshold), (6000.0, 105.0));
        // The plots' points: every run, oldest first, with the values the flags compare, and
        // each metric's threshold.
        assert_eq!(s.runs.len(), 8);
        assert!(s.runs[..6].iter().all(|r| !r.window) && s.runs[6..].iter().all(|r| r.window));
        assert_eq!(s.runs[7].run_id, "r07");
        assert_eq!(s.runs[7].created_ms, 7);
        assert_eq!(s.runs[7].metrics["tokens"], 6000.0);
        assert_eq!(s.runs[7].metrics["retries"], 14.0);
        assert_eq!(s.runs[0].metrics["tokens"], 100.0);
        assert_eq!(s.thresholds["tokens"], 105.0);
        assert_eq!(s.thresholds.len(), 6);

        // A window run whose stored trace does not verify is a divergence: a violation.
        let mut with_broken = runs.clone();
        with_broken.push(RunSample {
            run_id: "r08".into(),
            program: "p".into(),
            created_ms: 8,
            view: None,
        });
        let b = &stats(&with_broken, &opts)[0];
        assert_eq!((b.window_runs, b.divergences), (3, 1));
        let broken = b.runs.last().unwrap();
        assert!(broken.diverged && broken.metrics.is_empty());
        close(b.violation_rate, 15.0 / 9.0);

        // Too little history: nothing is flagged.
        let s = &stats(&runs, &opts.clone().min_history(7))[0];
        assert!(s.flagged.is_empty());
        assert!(s.thresholds.is_empty());
        // Without `since`: the older half (4 runs) is the baseline.
        let s = &stats(&runs, &StatsOptions::new())[0];
        assert_eq!((s.baseline_runs, s.window_runs), (4, 4));
    }
}
