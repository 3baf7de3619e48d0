//! [`Versions`]: several versions of one program served at once.
//!
//! Runs outlive deploys. A host that edits a workflow keeps the build its runs in flight were
//! started with, registers both, and every operation on a stored run is routed to the version
//! the run is pinned to (the program hash in its `run_started`): workers
//! ([`Worker::run_once_any`]), deliveries, timeouts, reconciliations, resumes and redrives. New
//! runs are started by the host with the newest build's types (`v2::Program`), so they take the
//! newest version. A run whose version is registered by nobody is left alone (never claimed
//! in a loop) and reported ([`Versions::unserved`], and `nanovm runs`).

use std::fmt;
use std::sync::Arc;

use crate::durable::{DeliverError, Delivery, ReconcileError, RedriveOptions, Resolution};
use crate::error::RunError;
use crate::program::{BoxFuture, Program};
use crate::run::{Execution, RunOptions};
use crate::runtime::Runtime;
use crate::store::{JournalStore, Lease, RunQuery, RunRecord};
use crate::trace::Actor;
use crate::value::{Digest, Json};
use crate::worker::Worker;

/// The versions of programs a host serves: for each, the compiled program (its hash) and the
/// host's tools for it. Built once at start-up:
///
/// ```no_run
/// # use std::sync::Arc;
/// # use nanovm_runtime::{Versions, __private_v0_1::Program};
/// # fn demo<V1: Program, V2: Program>(t1: Arc<V1::Tools>, t2: Arc<V2::Tools>) {
/// let versions = Versions::new().add::<V1>(t1).add::<V2>(t2);
/// # }
/// ```
///
/// Versions of one program are kept in the order they were added; the last one added is the
/// newest ([`Versions::newest`]). Adding a build whose hash is registered already replaces its
/// tools.
#[derive(Clone, Default)]
pub struct Versions {
    served: Vec<Arc<dyn Served>>,
}

impl fmt::Debug for Versions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.served
                    .iter()
                    .map(|s| format!("{} {}", s.name(), s.hash().short())),
            )
            .finish()
    }
}

impl Versions {
    /// No versions.
    pub fn new() -> Self {
        Versions::default()
    }

    /// Registers the build `P` with the host's `tools` for it.
    #[must_use]
    #[allow(
        clippy::should_implement_trait,
        reason = "a builder step with a type parameter, not addition"
    )]
    pub fn add<P: Program>(mut self, tools: Arc<P::Tools>) -> Self {
        let hash = P::info().hash;
        self.served.retain(|s| s.hash() != hash);
        self.served.push(Arc::new(Version::<P> { tools }));
        self
    }

    /// Unregisters the version with program hash `hash` (its runs stay in the store,
    /// unserved, until a host registers it again).
    #[must_use]
    pub fn remove(mut self, hash: Digest) -> Self {
        self.served.retain(|s| s.hash() != hash);
        self
    }

    /// The program hashes registered for `program`, oldest first.
    pub fn hashes(&self, program: &str) -> Vec<Digest> {
        self.served
            .iter()
            .filter(|s| s.name() == program)
            .map(|s| s.hash())
            .collect()
    }

    /// The newest registered version of `program` (the one new runs should take).
    pub fn newest(&self, program: &str) -> Option<Digest> {
        self.hashes(program).last().copied()
    }

    /// Whether the version with hash `hash` is registered.
    pub fn contains(&self, hash: Digest) -> bool {
        self.served.iter().any(|s| s.hash() == hash)
    }

    /// The program names registered, in the order first added.
    pub fn programs(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for s in &self.served {
            if !names.contains(&s.name()) {
                names.push(s.name());
            }
        }
        names
    }

    fn get(&self, hash: Digest) -> Option<&Arc<dyn Served>> {
        self.served.iter().find(|s| s.hash() == hash)
    }

    /// The version run `run_id` is pinned to, if registered; its record otherwise says which
    /// one it needs ([`RunError::UnregisteredVersion`]).
    async fn route(&self, runtime: &Runtime, run_id: &str) -> Result<Arc<dyn Served>, RunError> {
        let store = runtime.store().ok_or(RunError::NoJournal)?;
        let record = store
            .run(run_id)
            .await?
            .ok_or_else(|| RunError::UnknownRun(run_id.to_string()))?;
        self.get(record.program_hash)
            .cloned()
            .ok_or_else(|| RunError::UnregisteredVersion {
                run_id: run_id.to_string(),
                program: record.program,
                hash: record.program_hash,
            })
    }

    /// The runs of the registered programs that no registered version can continue: not
    /// ended (running, suspended, or waiting for reconciliation) and recorded under a program
    /// hash that is not registered. Workers leave them alone; this is how a host finds them
    /// (register their build again, or let an operator decide).
    pub async fn unserved(&self, store: &dyn JournalStore) -> Result<Vec<RunRecord>, RunError> {
        let mut out = Vec::new();
        for program in self.programs() {
            for r in store.runs(&RunQuery::new().program(program)).await? {
                if !r.status.is_terminal() && !self.contains(r.program_hash) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// [`Runtime::deliver_as`] (or [`Runtime::deliver`] without `by`), routed to the version
    /// run `run_id` is pinned to.
    pub async fn deliver(
        &self,
        runtime: &Runtime,
        run_id: &str,
        event: &str,
        event_id: &str,
        payload: Json,
        by: Option<Actor>,
    ) -> Result<Delivery, DeliverError> {
        let v = self.route(runtime, run_id).await.map_err(|e| match e {
            RunError::UnknownRun(id) => DeliverError::UnknownRun(id),
            e => DeliverError::Run(e),
        })?;
        v.deliver(runtime, run_id, event, event_id, payload, by)
            .await
    }

    /// [`Runtime::reconcile_as`] (or [`Runtime::reconcile`] without `by`), routed to the
    /// version run `run_id` is pinned to.
    pub async fn reconcile(
        &self,
        runtime: &Runtime,
        run_id: &str,
        effect_id: Digest,
        resolution: Resolution,
        by: Option<Actor>,
    ) -> Result<Execution, ReconcileError> {
        let v = self.route(runtime, run_id).await.map_err(|e| match e {
            RunError::UnknownRun(id) => ReconcileError::UnknownRun(id),
            e => ReconcileError::Run(e),
        })?;
        v.reconcile(runtime, run_id, effect_id, resolution, by)
            .await
    }

    /// [`Runtime::resume_journaled`], routed to the version run `run_id` is pinned to.
    pub async fn resume(&self, runtime: &Runtime, run_id: &str) -> Result<Execution, RunError> {
        let v = self.route(runtime, run_id).await?;
        v.resume(runtime, run_id).await
    }

    /// [`Runtime::redrive`], routed to the version run `run_id` is pinned to.
    pub async fn redrive(
        &self,
        runtime: &Runtime,
        run_id: &str,
        opts: RedriveOptions,
    ) -> Result<Execution, RunError> {
        let v = self.route(runtime, run_id).await?;
        v.redrive(runtime, run_id, opts).await
    }

    /// [`Runtime::fire_timeouts`] for every registered version (each fires the runs pinned to
    /// it).
    pub async fn fire_timeouts(&self, runtime: &Runtime) -> Result<Vec<Execution>, RunError> {
        let mut fired = Vec::new();
        for v in &self.served {
            fired.extend(v.fire_timeouts(runtime).await?);
        }
        Ok(fired)
    }
}

impl Worker {
    /// [`Worker::run_once`] over every registered version: claims one runnable run of a
    /// registered program recorded under a registered version
    /// ([`JournalStore::claim_versions`]; runs of other versions are not claimed, so never
    /// claimed in a loop), and executes it with the version it is pinned to. Programs are
    /// polled in the order they were registered. `Ok(None)`: nothing to do.
    pub async fn run_once_any(&self, versions: &Versions) -> Result<Option<Execution>, RunError> {
        let runtime = self.runtime();
        let store = runtime.store().cloned().ok_or(RunError::NoJournal)?;
        let clock = runtime.clock().clone();
        for program in versions.programs() {
            let hashes = versions.hashes(program);
            let Some(lease) = store
                .claim_versions(
                    program,
                    &hashes,
                    self.name(),
                    clock.now_ms(),
                    self.lease_ms(),
                )
                .await?
            else {
                continue;
            };
            let record = store.run(&lease.run_id).await;
            let version = match &record {
                Ok(Some(r)) => versions.get(r.program_hash).cloned(),
                _ => None,
            };
            let (result, lease) = match (version, record) {
                (Some(v), _) => v.work(self, &store, lease).await,
                (None, Err(e)) => (Err(e.into()), Some(lease)),
                (None, Ok(r)) => (
                    Err(RunError::UnregisteredVersion {
                        run_id: lease.run_id.clone(),
                        program: program.to_string(),
                        hash: r.map_or(Digest::ZERO, |r| r.program_hash),
                    }),
                    Some(lease),
                ),
            };
            let released = match &lease {
                Some(lease) => store.release(lease).await,
                None => Ok(()),
            };
            return match (result, released) {
                (Err(e), _) => Err(e),
                (Ok(e), Ok(())) => Ok(Some(e)),
                (Ok(_), Err(e)) => Err(e.into()),
            };
        }
        Ok(None)
    }
}

/// One registered version, its program type erased.
trait Served: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn hash(&self) -> Digest;
    fn work<'a>(
        &'a self,
        worker: &'a Worker,
        store: &'a Arc<dyn JournalStore>,
        lease: Lease,
    ) -> BoxFuture<'a, (Result<Execution, RunError>, Option<Lease>)>;
    fn deliver<'a>(
        &'a self,
        runtime: &'a Runtime,
        run_id: &'a str,
        event: &'a str,
        event_id: &'a str,
        payload: Json,
        by: Option<Actor>,
    ) -> BoxFuture<'a, Result<Delivery, DeliverError>>;
    fn reconcile<'a>(
        &'a self,
        runtime: &'a Runtime,
        run_id: &'a str,
        effect_id: Digest,
        resolution: Resolution,
        by: Option<Actor>,
    ) -> BoxFuture<'a, Result<Execution, ReconcileError>>;
    fn resume<'a>(
        &'a self,
        runtime: &'a Runtime,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Execution, RunError>>;
    fn fire_timeouts<'a>(
        &'a self,
        runtime: &'a Runtime,
    ) -> BoxFuture<'a, Result<Vec<Execution>, RunError>>;
    fn redrive<'a>(
        &'a self,
        runtime: &'a Runtime,
        run_id: &'a str,
        opts: RedriveOptions,
    ) -> BoxFuture<'a, Result<Execution, RunError>>;
}

struct Version<P: Program> {
    tools: Arc<P::Tools>,
}

impl<P: Program> Served for Version<P> {
    fn name(&self) -> &'static str {
        P::info().name
    }

    fn hash(&self) -> Digest {
        P::info().hash
    }

    fn work<'a>(
        &'a self,
        worker: &'a Worker,
        store: &'a Arc<dyn JournalStore>,
        lease: Lease,
    ) -> BoxFuture<'a, (Result<Execution, RunError>, Option<Lease>)> {
        Box::pin(worker.execute::<P>(store, lease, self.tools.clone()))
    }

    fn deliver<'a>(
        &'a self,
        runtime: &'a Runtime,
        run_id: &'a str,
        event: &'a str,
        event_id: &'a str,
        payload: Json,
        by: Option<Actor>,
    ) -> BoxFuture<'a, Result<Delivery, DeliverError>> {
        let tools = self.tools.clone();
        Box::pin(async move {
            match by {
                Some(by) => {
                    runtime
                        .deliver_as::<P>(run_id, event, event_id, payload, by, tools)
                        .await
                }
                None => {
                    runtime
                        .deliver::<P>(run_id, event, event_id, payload, tools)
                        .await
                }
            }
        })
    }

    fn reconcile<'a>(
        &'a self,
        runtime: &'a Runtime,
        run_id: &'a str,
        effect_id: Digest,
        resolution: Resolution,
        by: Option<Actor>,
    ) -> BoxFuture<'a, Result<Execution, ReconcileError>> {
        let tools = self.tools.clone();
        Box::pin(async move {
            match by {
                Some(by) => {
                    runtime
                        .reconcile_as::<P>(run_id, effect_id, resolution, by, tools)
                        .await
                }
                None => {
                    runtime
                        .reconcile::<P>(run_id, effect_id, resolution, tools)
                        .await
                }
            }
        })
    }

    fn resume<'a>(
        &'a self,
        runtime: &'a Runtime,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Execution, RunError>> {
        Box::pin(runtime.resume_journaled::<P>(run_id, self.tools.clone(), RunOptions::new()))
    }

    fn fire_timeouts<'a>(
        &'a self,
        runtime: &'a Runtime,
    ) -> BoxFuture<'a, Result<Vec<Execution>, RunError>> {
        Box::pin(runtime.fire_timeouts::<P>(self.tools.clone()))
    }

    fn redrive<'a>(
        &'a self,
        runtime: &'a Runtime,
        run_id: &'a str,
        opts: RedriveOptions,
    ) -> BoxFuture<'a, Result<Execution, RunError>> {
        Box::pin(runtime.redrive::<P>(run_id, opts, self.tools.clone()))
    }
}
