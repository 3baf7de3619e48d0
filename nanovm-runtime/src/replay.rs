//! Replay: re-run the compiled transition function over a recorded trace, without calling any
//! model or tool.
//!
//! Replay builds the state from the recorded inputs, then drives the same executor as a live
//! run, except that every model reply, tool result, cancellation and duration trip is taken from
//! the recording, and every event the program produces is compared with the recorded one. A
//! faithful trace replays to the same step sequence and the same root hash (the regenerated
//! chain is hashed anew, not copied). The first event that differs is reported as
//! [`RunError::Divergence`]: an edited tool result or model answer
//! shows up there even if the editor re-chained every hash, because the program's own
//! transitions disagree with the recorded successors.
//!
//! A trace recorded by a different build of the program is refused up front
//! ([`RunError::ProgramMismatch`]).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::budget::{Backoff, Usage};
use crate::clock::SystemClock;
use crate::error::{ReplayError, RunError};
use crate::exec::recorder::{Halt, Mode};
use crate::exec::{Engine, Prepared, Start, check_leftover, execute, prepare, run_ended};
use crate::program::Program;
use crate::run::{Execution, ReplayReport, RunOptions};
use crate::store::OPERATION_LEASE_MS;
use crate::trace::{Entry, RunStatus, Trace};
use crate::vault::MemoryVault;

/// Replays `trace` with program `P`; see the module docs.
///
/// Synchronous: a replay performs no I/O, so it never waits. A trace that stops mid-run (a
/// journal read while the run was live, or after a crash) replays up to where it stops and says
/// so in [`ReplayReport::stopped`].
pub fn replay<P: Program>(trace: &Trace) -> Result<ReplayReport, ReplayError> {
    block_on(report::<P>(trace.entries().to_vec()))
}

/// The [`Execution`] a recorded trace describes, replayed without any I/O (no model, no tool,
/// no store): status, path, outputs and root as the run recorded them. A trace that stops
/// mid-run gives status `running`, with the reason in `message`.
pub(crate) fn replay_execution<P: Program>(entries: Vec<Entry>) -> Result<Execution, RunError> {
    block_on(execute::<P>(
        engine(),
        Start::Recorded(Mode::Replay, entries, None),
        None,
        RunOptions::default(),
        None,
    ))
}

/// What every replay runs with: no model, no store, an empty vault, no backoff.
fn engine() -> Arc<Engine> {
    let vault = Arc::new(MemoryVault::new());
    Arc::new(Engine {
        model: None,
        vault: vault.clone(),
        secrets: vault,
        clock: Arc::new(SystemClock),
        backoff: Backoff::none(),
        store: None,
        operation_lease_ms: OPERATION_LEASE_MS,
        signer: None,
        evidence_log: crate::evidence::EvidenceLog::new(),
        observer: None,
    })
}

/// Drives a replay to its end: polled once, with a waker that does nothing, since a replay
/// performs no I/O and so never waits. A replay that does wait is a runtime bug, reported as
/// [`RunError::Internal`].
fn block_on<T>(fut: impl Future<Output = Result<T, RunError>>) -> Result<T, RunError> {
    let fut = pin!(fut);
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(RunError::Internal(
            "a replay waited for I/O, which replays never do".into(),
        )),
    }
}

/// Replays the recorded trace in `entries` into a [`ReplayReport`].
async fn report<P: Program>(entries: Vec<Entry>) -> Result<ReplayReport, RunError> {
    let mut exec = match prepare::<P>(
        engine(),
        Start::Recorded(Mode::Replay, entries, None),
        None,
        RunOptions::default(),
        0,
    ) {
        Ok(Prepared::Ready(exec)) => exec,
        Ok(Prepared::Refused { mut rec, message }) => {
            let ended = match rec.emit(run_ended(RunStatus::Failed, None, Some(&message))) {
                Ok(_) => Ok(()),
                Err(Halt::ReplayEnd(why)) => Err(why),
                Err(Halt::Error(e)) => return Err(e),
            };
            if ended.is_ok() {
                check_leftover(&mut rec)?;
            }
            return Ok(ReplayReport {
                run_id: rec.run_id.to_string(),
                status: if ended.is_ok() {
                    RunStatus::Failed
                } else {
                    RunStatus::Running
                },
                end_step: None,
                path: Vec::new(),
                root: rec.trace.root(),
                entries: rec.trace.len(),
                stopped: ended.err(),
                usage: Usage::default(),
            });
        }
        Err(Halt::Error(e)) => return Err(e),
        Err(Halt::ReplayEnd(why)) => return Err(RunError::NotARun(why)),
    };
    let (status, end_step, stopped) = match exec.drive().await {
        Ok(ended) => {
            exec.check_leftover()?;
            (ended.status, ended.step, None)
        }
        Err(Halt::ReplayEnd(why)) => (RunStatus::Running, None, Some(why)),
        Err(Halt::Error(e)) => return Err(e),
    };
    Ok(exec.into_report(status, end_step, stopped))
}
