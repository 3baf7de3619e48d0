//! A served program with its tools, behind one object-safe trait, and the workers' loop.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use nanovm_runtime::__private_v0_1::{EventInfo, Program, ProgramInfo};
use nanovm_runtime::trace::{Actor, Entry};
use nanovm_runtime::{
    BoxFuture, DeliverError, Delivery, Digest, Execution, InputError, Json, ReconcileError,
    Resolution, RunError, RunView, Runtime, Submitted, Worker,
};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};

/// One program the server serves: everything the endpoints and the workers do with it.
pub(crate) trait Served: Send + Sync + 'static {
    /// The compiled program's facts.
    fn info(&self) -> &'static ProgramInfo;
    /// Its Mermaid graph, if the program has one.
    fn graph(&self) -> Option<&'static str>;
    /// The events its `await` steps wait for.
    fn events(&self) -> &'static [EventInfo];
    /// Checks `input`, vaults its secrets and records the run as pending, tied to the data
    /// subject `subject` if given ([`Runtime::submit_with`]); the run id.
    fn submit<'a>(
        &'a self,
        rt: &'a Runtime,
        input: &'a Json,
        run_id: Option<&'a str>,
        subject: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Submitted, SubmitError>>;
    /// One claim-and-execute of a worker.
    fn work_once<'a>(
        &'a self,
        worker: &'a Worker,
    ) -> BoxFuture<'a, Result<Option<Execution>, RunError>>;
    /// Delivers an event (continuing the run live).
    fn deliver(
        &self,
        rt: Runtime,
        run_id: String,
        event: String,
        event_id: String,
        payload: Json,
        by: Actor,
    ) -> BoxFuture<'static, Result<Delivery, DeliverError>>;
    /// Reconciles an ambiguous effect (continuing the run live).
    fn reconcile(
        &self,
        rt: Runtime,
        run_id: String,
        effect_id: Digest,
        resolution: Resolution,
        by: Actor,
    ) -> BoxFuture<'static, Result<Execution, ReconcileError>>;
    /// Where a run stands, read from its entries with the program known.
    fn view(&self, entries: &[Entry]) -> RunView;
}

/// Why a start was refused.
#[derive(Debug)]
pub(crate) enum SubmitError {
    Input(InputError),
    Run(RunError),
}

/// `P` and its tools.
pub(crate) struct Typed<P: Program> {
    tools: Arc<P::Tools>,
    _p: PhantomData<fn() -> P>,
}

impl<P: Program> Typed<P> {
    pub(crate) fn new(tools: Arc<P::Tools>) -> Self {
        Typed {
            tools,
            _p: PhantomData,
        }
    }
}

impl<P: Program> Served for Typed<P>
where
    P::Input: DeserializeOwned,
{
    fn info(&self) -> &'static ProgramInfo {
        P::info()
    }

    fn graph(&self) -> Option<&'static str> {
        P::graph()
    }

    fn events(&self) -> &'static [EventInfo] {
        P::events()
    }

    fn submit<'a>(
        &'a self,
        rt: &'a Runtime,
        input: &'a Json,
        run_id: Option<&'a str>,
        subject: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Submitted, SubmitError>> {
        Box::pin(async move {
            let input = nanovm_runtime::input_from_json::<P>(rt.vault().as_ref(), input)
                .await
                .map_err(SubmitError::Input)?;
            rt.submit_with::<P>(input, run_id, subject)
                .await
                .map_err(SubmitError::Run)
        })
    }

    fn work_once<'a>(
        &'a self,
        worker: &'a Worker,
    ) -> BoxFuture<'a, Result<Option<Execution>, RunError>> {
        Box::pin(worker.run_once::<P>(self.tools.clone()))
    }

    fn deliver(
        &self,
        rt: Runtime,
        run_id: String,
        event: String,
        event_id: String,
        payload: Json,
        by: Actor,
    ) -> BoxFuture<'static, Result<Delivery, DeliverError>> {
        let tools = self.tools.clone();
        Box::pin(async move {
            rt.deliver_as::<P>(&run_id, &event, &event_id, payload, by, tools)
                .await
        })
    }

    fn reconcile(
        &self,
        rt: Runtime,
        run_id: String,
        effect_id: Digest,
        resolution: Resolution,
        by: Actor,
    ) -> BoxFuture<'static, Result<Execution, ReconcileError>> {
        let tools = self.tools.clone();
        Box::pin(async move {
            rt.reconcile_as::<P>(&run_id, effect_id, resolution, by, tools)
                .await
        })
    }

    fn view(&self, entries: &[Entry]) -> RunView {
        RunView::of_program::<P>(entries)
    }
}

/// A worker's loop: claims and executes runs of `served` until told to stop; when there is
/// nothing to do, waits for a start in this process or `poll` (runs other processes started,
/// timeouts that came due).
pub(crate) async fn work(
    served: Arc<dyn Served>,
    worker: Worker,
    wake: Arc<Notify>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let idle = match served.work_once(&worker).await {
            Ok(Some(_)) => false,
            Ok(None) => true,
            Err(e) => {
                eprintln!("nanovm-server: worker {}: {e}", worker.name());
                // A run that cannot execute (a refused program, a store down) is not retried
                // in a hot loop.
                tokio::select! {
                    () = tokio::time::sleep(poll * 10) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        if idle {
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(poll) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
