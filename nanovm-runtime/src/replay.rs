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
use std::task::{Context, Poll, Waker};

use crate::executor::{ReplayError, ReplayReport, RunError, replay_entries};
use crate::program::Program;
use crate::trace::Trace;

/// Replays `trace` with program `P`; see the module docs.
///
/// Synchronous: a replay performs no I/O, so it never waits. A trace that stops mid-run (a
/// journal read while the run was live, or after a crash) replays up to where it stops and says
/// so in [`ReplayReport::stopped`].
pub fn replay<P: Program>(trace: &Trace) -> Result<ReplayReport, ReplayError> {
    let fut = pin!(replay_entries::<P>(trace.entries().to_vec()));
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(RunError::Internal(
            "a replay waited for I/O, which replays never do".into(),
        )),
    }
}
