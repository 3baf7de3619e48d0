//! What a run is given ([`RunOptions`]) and what it gives back ([`Execution`],
//! [`ReplayReport`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::budget::Usage;
use crate::cancel::CancelToken;
use crate::store::Fence;
use crate::trace::{RunStatus, Trace};
use crate::value::{Digest, Json};

/// Per-run options.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// The run id. Default: derived from the program hash and the recorded inputs
    /// ([`run_id`](crate::run_id)).
    pub run_id: Option<String>,
    /// Cancels the run from outside.
    pub cancel: Option<CancelToken>,
    /// The lease epoch every store append of the run is made under (a worker holding a
    /// [`crate::store::Lease`] passes [`crate::store::Lease::fence`]); `None`: unfenced.
    pub fence: Option<Fence>,
    /// The data subject the run's secret inputs belong to (a pseudonymous id: a customer
    /// number, not an email address). With a store, [`Runtime::run`](crate::Runtime::run)
    /// ties the run to it in the store's erasure index before the run's first write, so
    /// [`Runtime::erase`](crate::Runtime::erase) with [`Erase::Subject`](crate::Erase::Subject)
    /// finds it. Kept in the index only, never in the trace.
    pub subject: Option<String>,
}

impl RunOptions {
    /// Default options.
    pub fn new() -> Self {
        RunOptions::default()
    }

    /// Sets the run id: 1 to 256 bytes of printable characters without whitespace
    /// ([`crate::ids::validate_run_id`]); [`Runtime::run`](crate::Runtime::run) refuses any
    /// other with [`RunError::InvalidRunId`](crate::RunError::InvalidRunId).
    #[must_use]
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Sets the cancellation token.
    #[must_use]
    pub fn cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Ties the run to the data subject `subject` (see [`RunOptions::subject`]).
    #[must_use]
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Makes every store append of the run carry `fence`.
    #[must_use]
    pub fn fence(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }
}

/// The result of a run that reached a status (including failures: a failed run is a successful
/// execution of a program that failed).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Execution {
    /// The run id.
    pub run_id: String,
    /// How it ended (or `suspended`).
    pub status: RunStatus,
    /// The step where it ended: the `end` step, the step that failed or tripped a budget, or
    /// the `await` step it is suspended at.
    pub end_step: Option<String>,
    /// The failure message, if any.
    pub message: Option<String>,
    /// The assigned, non-secret variables.
    pub outputs: BTreeMap<String, Json>,
    /// Every step entered, in order, including stalled re-runs and the final `end` step.
    pub path: Vec<&'static str>,
    /// The trace.
    pub trace: Trace,
    /// What the run consumed.
    pub usage: Usage,
    /// Wall-clock measurements (never part of the trace).
    pub metrics: Metrics,
}

impl Execution {
    /// The trace's root hash.
    pub fn root(&self) -> Digest {
        self.trace.root()
    }
}

/// Timings of a run. Not deterministic, so not in the trace.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Metrics {
    /// The run's clock when it started, in milliseconds since the Unix epoch.
    pub started_ms: u64,
    /// Wall time the executor spent on the run (monotonic clock).
    pub elapsed: Duration,
    /// Wall time per step entered, in order (parallel: the whole block).
    pub step_durations: Vec<(&'static str, Duration)>,
}

/// The result of [`crate::replay()`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// The run id recorded in the trace.
    pub run_id: String,
    /// The status the replay reached (`running` if the trace stops mid-run).
    pub status: RunStatus,
    /// The step where the run ended or suspended.
    pub end_step: Option<String>,
    /// The steps entered, in order (as [`Execution::path`]).
    pub path: Vec<&'static str>,
    /// The root hash of the regenerated trace.
    pub root: Digest,
    /// Entries replayed.
    pub entries: usize,
    /// `None` when the recording covers the run to its end (or its suspension); otherwise why
    /// the replay stopped early (the trace is a prefix of a run, for instance one that crashed
    /// with an effect in flight).
    pub stopped: Option<String>,
    /// What the replayed run consumed (derived from the recorded replies and results).
    pub usage: Usage,
}
