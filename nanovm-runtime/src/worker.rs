//! Workers: many processes, on many machines, executing the runs of one shared store.
//!
//! A [`Worker`] claims one runnable run at a time with [`JournalStore::claim`] (a `running`
//! run nobody holds, or a suspended one whose timeout is due), executes it to its next end or
//! suspension with every append fenced by the lease's epoch, renews the lease while the run
//! takes long, and gives it back. If the worker stalls past its lease and another worker claims
//! the run, the stalled worker's next append fails with [`JournalError::Fenced`](crate::store::JournalError::Fenced) and it stops:
//! since an effect is only invoked after its intent was appended, it invokes no effect after
//! that either.

use std::fmt;
use std::sync::Arc;

use crate::durable::execute_leased;
use crate::error::RunError;
use crate::exec::Inject;
use crate::program::Program;
use crate::replay::replay_execution;
use crate::run::{Execution, RunOptions};
use crate::runtime::Runtime;
use crate::store::{JournalStore, Lease};
use crate::trace::RunStatus;
use crate::view::RunView;

/// Executes the runs of a shared store, one at a time, under leases. See the module docs.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use nanovm_runtime::{Runtime, Worker, __private_v0_1::Program};
/// # async fn demo<P: Program>(runtime: Runtime, tools: Arc<P::Tools>) -> Result<(), nanovm_runtime::RunError> {
/// let worker = Worker::new(runtime, "worker-1", 30_000);
/// while let Some(execution) = worker.run_once::<P>(tools.clone()).await? {
///     println!("{}: {}", execution.run_id, execution.status);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Worker {
    runtime: Runtime,
    name: String,
    lease_ms: u64,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.name)
            .field("lease_ms", &self.lease_ms)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker named `name` (unique among the workers of a store: it is the lease owner) whose
    /// leases last `lease_ms` milliseconds on the runtime's clock and are renewed every third
    /// of that while a run executes. The runtime must have a store.
    pub fn new(runtime: Runtime, name: impl Into<String>, lease_ms: u64) -> Self {
        Worker {
            runtime,
            name: name.into(),
            lease_ms: lease_ms.max(1),
        }
    }

    /// The worker's name (the lease owner it writes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The runtime it executes with.
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The length of its leases.
    pub(crate) fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// Claims one runnable run of `P` and executes it with `tools` until it ends or suspends.
    /// `Ok(None)`: nothing to do.
    ///
    /// Only runs recorded under this build of `P` (its program hash) are claimed
    /// ([`JournalStore::claim_versions`]); runs of other versions of the program are left to
    /// workers that have them (see [`crate::Versions`] and [`Worker::run_once_any`]).
    ///
    /// A `running` run is resumed from its stored trace; a suspended run whose deadline has
    /// passed takes its timeout edge. Every append carries the lease's fence. The lease is
    /// renewed every `lease_ms / 3` (on the runtime's clock) while the run executes, and
    /// released at the end, whatever the outcome.
    ///
    /// Errors: [`RunError::Journal`] with [`JournalError::Fenced`](crate::store::JournalError::Fenced) when the lease was lost
    /// (the worker stalled past it and another worker claimed the run; this worker stopped
    /// without writing anything more), any other store failure, or a stored trace that does
    /// not replay with this build of `P` (the run stays claimable; fix or remove it).
    pub async fn run_once<P: Program>(
        &self,
        tools: Arc<P::Tools>,
    ) -> Result<Option<Execution>, RunError> {
        let store = self.runtime.store().cloned().ok_or(RunError::NoJournal)?;
        let clock = self.runtime.clock().clone();
        let Some(lease) = store
            .claim_versions(
                P::info().name,
                &[P::info().hash],
                &self.name,
                clock.now_ms(),
                self.lease_ms,
            )
            .await?
        else {
            return Ok(None);
        };
        let (result, lease) = self.execute::<P>(&store, lease, tools).await;
        let released = match &lease {
            Some(lease) => store.release(lease).await,
            None => Ok(()),
        };
        match (result, released) {
            // A lost lease is what the caller needs to hear about, not the failed release.
            (Err(e), _) => Err(e),
            (Ok(e), Ok(())) => Ok(Some(e)),
            (Ok(_), Err(e)) => Err(e.into()),
        }
    }

    /// Executes a claimed run, renewing the lease; returns the outcome and the latest lease to
    /// release (`None`: the run's last write gave it back).
    pub(crate) async fn execute<P: Program>(
        &self,
        store: &Arc<dyn JournalStore>,
        lease: Lease,
        tools: Arc<P::Tools>,
    ) -> (Result<Execution, RunError>, Option<Lease>) {
        let clock = self.runtime.clock().clone();
        let entries = match store.load(&lease.run_id).await {
            Ok(Some(entries)) => entries,
            Ok(None) => return (Err(RunError::UnknownRun(lease.run_id.clone())), Some(lease)),
            Err(e) => return (Err(e.into()), Some(lease)),
        };
        let view = RunView::of(&entries);
        if let Some(o) = &self.runtime.engine().observer
            && view.status() == RunStatus::Running
            && left_mid_way(&entries)
        {
            o.takeover(&lease.run_id);
        }
        let inject = match (view.status(), view.waiting().and_then(|w| w.deadline_ms)) {
            (RunStatus::Running, _) => None,
            (RunStatus::Suspended, Some(d)) if d <= clock.now_ms() => Some(Inject::Timeout),
            // Moved on between the claim and the load (a delivery, say): nothing to execute.
            _ => return (replay_execution::<P>(entries), Some(lease)),
        };
        execute_leased::<P>(
            self.runtime.engine(),
            store,
            lease,
            self.lease_ms,
            entries,
            tools,
            RunOptions::new(),
            inject,
        )
        .await
    }
}

/// Whether a running run's last entry shows an execution that stopped mid-way (it crashed, or
/// lost its lease), rather than a run handed to the workers: just started (submitted), or
/// continued by an operator's act (a delivery, a timeout, a reconciliation, a redrive, a
/// migration, a fork) whose execution did not get further.
fn left_mid_way(entries: &[crate::trace::Entry]) -> bool {
    use crate::trace::Event;
    entries.last().is_some_and(|e| {
        !matches!(
            e.event,
            Event::RunStarted { .. }
                | Event::Delivered { .. }
                | Event::TimedOut { .. }
                | Event::Reconciled { .. }
                | Event::Redriven { .. }
                | Event::Migrated { .. }
                | Event::Forked { .. }
        )
    })
}
