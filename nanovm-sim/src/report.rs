//! What a campaign counted and found, and the table it prints.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::faults::{Fault, Faults};

/// A broken invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ViolationKind {
    /// A non-idempotent effect id happened more than once (the ledger of the simulated service).
    DoubleExecution,
    /// An effect tool was called before its `tool_intent` with that key was durable.
    CallBeforeIntent,
    /// A non-idempotent effect was called while the stored run was no longer executing it
    /// (paused for reconciliation, ended, or moved on by another owner): an invalid resume.
    InvalidResume,
    /// A stored trace does not verify (and the simulation did not damage it).
    TraceInvalid,
    /// A stored trace does not replay to its recorded root.
    ReplayMismatch,
    /// A status that is not legal where the run stopped, or a store record that disagrees with
    /// the run's events.
    IllegalStatus,
    /// One event id delivered (recorded) twice in a run.
    EventAppliedTwice,
    /// A step that is not in the compiled program.
    StepOutsideGraph,
    /// A budget exceeded beyond its documented bound.
    BudgetOverrun,
    /// A damaged stored run was loaded as valid.
    CorruptLoaded,
    /// A store accepted an append under a stale lease epoch.
    StaleFenceAccepted,
    /// An append to a run the store already held was accepted without a fence.
    UnfencedWrite,
    /// An execution answered `Ok` whose trace is not a prefix of what is stored (an
    /// acknowledged write was lost).
    LostAcknowledged,
    /// The runtime reported a divergence or an internal error on an undamaged run.
    RuntimeError,
    /// A run still `running` (nobody on it) after the calm rounds.
    Stuck,
    /// The same seed gave different trace roots.
    Nondeterminism,
}

impl ViolationKind {
    /// Every kind, in report order.
    pub const ALL: [ViolationKind; 16] = [
        ViolationKind::DoubleExecution,
        ViolationKind::CallBeforeIntent,
        ViolationKind::InvalidResume,
        ViolationKind::TraceInvalid,
        ViolationKind::ReplayMismatch,
        ViolationKind::IllegalStatus,
        ViolationKind::EventAppliedTwice,
        ViolationKind::StepOutsideGraph,
        ViolationKind::BudgetOverrun,
        ViolationKind::CorruptLoaded,
        ViolationKind::StaleFenceAccepted,
        ViolationKind::UnfencedWrite,
        ViolationKind::LostAcknowledged,
        ViolationKind::RuntimeError,
        ViolationKind::Stuck,
        ViolationKind::Nondeterminism,
    ];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::DoubleExecution => "double_execution",
            ViolationKind::CallBeforeIntent => "call_before_intent",
            ViolationKind::InvalidResume => "invalid_resume",
            ViolationKind::TraceInvalid => "trace_invalid",
            ViolationKind::ReplayMismatch => "replay_mismatch",
            ViolationKind::IllegalStatus => "illegal_status",
            ViolationKind::EventAppliedTwice => "event_applied_twice",
            ViolationKind::StepOutsideGraph => "step_outside_graph",
            ViolationKind::BudgetOverrun => "budget_overrun",
            ViolationKind::CorruptLoaded => "corrupt_loaded",
            ViolationKind::StaleFenceAccepted => "stale_fence_accepted",
            ViolationKind::UnfencedWrite => "unfenced_write",
            ViolationKind::LostAcknowledged => "lost_acknowledged",
            ViolationKind::RuntimeError => "runtime_error",
            ViolationKind::Stuck => "stuck",
            ViolationKind::Nondeterminism => "nondeterminism",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken invariant, with the seed that reproduces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub kind: ViolationKind,
    /// The seed (re-run it alone with `--seed`).
    pub seed: u64,
    /// The run.
    pub run_id: String,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in seed {} run `{}`: {}",
            self.kind, self.seed, self.run_id, self.detail
        )
    }
}

/// What one or many seeds counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Seeds simulated.
    pub seeds: u64,
    /// Runs (workflow instances) started.
    pub runs: u64,
    /// Runtime operations issued (starts, duplicate starts, resumes, worker claims,
    /// deliveries, timeout sweeps, reconciliations).
    pub operations: u64,
    /// Store operations intercepted.
    pub store_ops: u64,
    /// Tool calls answered by the simulated services.
    pub tool_calls: u64,
    /// Model calls answered.
    pub model_calls: u64,
    /// Event deliveries attempted (each also an operation).
    pub deliveries: u64,
    /// Trace entries stored, over all runs (at the end of each seed).
    pub entries: u64,
    /// Steps entered, over all runs (from the final replays).
    pub steps: u64,
    /// Replays of stored traces.
    pub replays: u64,
    /// Injected faults per class.
    pub faults: BTreeMap<Fault, u64>,
    /// Processes killed because they waited for something that would never come.
    pub hung: u64,
    /// Simulated time, milliseconds.
    pub sim_ms: u64,
    /// Final statuses of the runs, by name.
    pub statuses: BTreeMap<String, u64>,
}

impl Counters {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counters) {
        self.seeds += other.seeds;
        self.runs += other.runs;
        self.operations += other.operations;
        self.store_ops += other.store_ops;
        self.tool_calls += other.tool_calls;
        self.model_calls += other.model_calls;
        self.deliveries += other.deliveries;
        self.entries += other.entries;
        self.steps += other.steps;
        self.replays += other.replays;
        for (f, n) in &other.faults {
            *self.faults.entry(*f).or_default() += n;
        }
        self.hung += other.hung;
        self.sim_ms += other.sim_ms;
        for (s, n) in &other.statuses {
            *self.statuses.entry(s.clone()).or_default() += n;
        }
    }

    /// Injected faults, all classes.
    pub fn injected(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Adversarial events: every interaction the simulation mediated (runtime operations,
    /// store operations, tool and model answers) plus every injected fault and replay.
    pub fn events(&self) -> u64 {
        self.operations
            + self.store_ops
            + self.tool_calls
            + self.model_calls
            + self.injected()
            + self.replays
    }
}

/// The result of a campaign.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Report {
    /// The programs attacked.
    pub programs: Vec<String>,
    /// The fault classes.
    pub faults: Faults,
    /// What was counted.
    pub counters: Counters,
    /// Every violation (the first ones in full; see [`Report::violation_counts`]).
    pub violations: Vec<Violation>,
    /// Violations per kind.
    pub violation_counts: BTreeMap<ViolationKind, u64>,
    /// Seeds run twice to check they give the same roots.
    pub determinism_checked: u64,
    /// Wall time.
    pub wall: Duration,
}

/// How many violations a report keeps in full.
const KEEP: usize = 50;

impl Report {
    /// An empty report for `programs` under `faults`.
    pub fn new(programs: Vec<String>, faults: Faults) -> Self {
        Report {
            programs,
            faults,
            ..Report::default()
        }
    }

    /// Adds one seed's findings.
    pub fn absorb(&mut self, counters: &Counters, violations: Vec<Violation>) {
        self.counters.add(counters);
        for v in violations {
            *self.violation_counts.entry(v.kind).or_default() += 1;
            if self.violations.len() < KEEP {
                self.violations.push(v);
            }
        }
    }

    /// Violations, all kinds.
    pub fn total_violations(&self) -> u64 {
        self.violation_counts.values().sum()
    }

    /// Violations of one kind.
    pub fn count(&self, kind: ViolationKind) -> u64 {
        self.violation_counts.get(&kind).copied().unwrap_or(0)
    }
}

fn per_s(n: u64, d: Duration) -> String {
    let s = d.as_secs_f64();
    if s <= 0.0 {
        return "-".into();
    }
    let v = n as f64 / s;
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "| {k} | {v} |");
        writeln!(f, "| sabotage mode | |")?;
        writeln!(f, "| --- | ---: |")?;
        row(f, "programs", self.programs.join(", "))?;
        row(f, "fault classes", self.faults.to_string())?;
        row(f, "seeds", c.seeds.to_string())?;
        row(f, "runs", c.runs.to_string())?;
        row(f, "steps entered", c.steps.to_string())?;
        row(f, "trace entries stored", c.entries.to_string())?;
        row(f, "runtime operations", c.operations.to_string())?;
        row(f, "  of which event deliveries", c.deliveries.to_string())?;
        row(f, "store operations", c.store_ops.to_string())?;
        row(f, "tool calls", c.tool_calls.to_string())?;
        row(f, "model calls", c.model_calls.to_string())?;
        row(f, "replays", c.replays.to_string())?;
        row(f, "injected faults", c.injected().to_string())?;
        for fault in Fault::ALL {
            let n = c.faults.get(&fault).copied().unwrap_or(0);
            row(f, &format!("  {fault}"), n.to_string())?;
        }
        row(f, "hung processes killed", c.hung.to_string())?;
        row(f, "adversarial events", c.events().to_string())?;
        let statuses: Vec<String> = c.statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
        row(f, "final statuses", statuses.join(", "))?;
        row(
            f,
            "seeds re-run for determinism",
            self.determinism_checked.to_string(),
        )?;
        row(
            f,
            "invariant violations",
            self.total_violations().to_string(),
        )?;
        for kind in ViolationKind::ALL {
            row(f, &format!("  {kind}"), self.count(kind).to_string())?;
        }
        row(
            f,
            "double executions",
            self.count(ViolationKind::DoubleExecution).to_string(),
        )?;
        row(
            f,
            "invalid resumes",
            self.count(ViolationKind::InvalidResume).to_string(),
        )?;
        row(f, "wall time", format!("{:.2} s", self.wall.as_secs_f64()))?;
        row(
            f,
            "simulated time",
            format!("{:.1} h", c.sim_ms as f64 / 3_600_000.0),
        )?;
        row(f, "runs/s (wall)", per_s(c.runs, self.wall))?;
        row(f, "events/s (wall)", per_s(c.events(), self.wall))?;
        row(
            f,
            "events/s (simulated)",
            if c.sim_ms == 0 {
                "-".into()
            } else {
                format!("{:.3}", c.events() as f64 / (c.sim_ms as f64 / 1000.0))
            },
        )?;
        row(
            f,
            "runs per simulated hour",
            if c.sim_ms == 0 {
                "-".into()
            } else {
                format!("{:.1}", c.runs as f64 / (c.sim_ms as f64 / 3_600_000.0))
            },
        )?;
        Ok(())
    }
}
