//! Seeing runs as they happen: an [`Observer`] set on the runtime
//! ([`RuntimeBuilder::observer`](crate::RuntimeBuilder::observer)) is handed every entry of
//! every run this runtime executes, in order, with its sequence number and hash, as soon as it
//! is durable.
//!
//! "Durable" is the point: an observer never sees an entry that a crash could still take back.
//! With a store, entries are handed over right after the store write that made them durable
//! (one write per durability point: an effect's intent, a suspension, the end); without one,
//! at the same points of the execution. Entries a continuation reproduces from the stored
//! prefix (a resume, a delivery, a replay) are not handed over again, and a replay
//! ([`Runtime::replay`](crate::Runtime::replay)) hands over nothing. Entries written by other
//! processes (another worker on a shared store) are not seen: read the store for those
//! (`nanovm-server` streams a run from the store for that reason).
//!
//! Besides entries, an observer hears of two things a trace does not record, for metrics:
//! each live model or tool call's duration ([`Observer::call`], when the call returns, before
//! its outcome is durable; never on replay), and each time a worker continues a run another
//! execution left mid-way ([`Observer::takeover`]). Both carry names and ids only, never a
//! value. Without an observer none of it is measured.
//!
//! An observer runs on the executing task: keep it quick (push to a channel, count, log).

use std::time::Duration;

use crate::trace::Entry;

/// Which kind of external call [`Observer::call`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallKind {
    /// A model call.
    Model,
    /// A tool call.
    Tool,
}

/// A live model or tool call that returned (or was stopped): names, ids and its duration only.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CallTiming<'a> {
    /// Model or tool.
    pub kind: CallKind,
    /// The run.
    pub run_id: &'a str,
    /// The step.
    pub step: &'a str,
    /// The tool's name, or the step's `model: "..."` (empty when it names none).
    pub name: &'a str,
    /// 1 for the first attempt (model calls: always 1; their retries are separate entries).
    pub attempt: u32,
    /// How long the call took (the wall clock of this process).
    pub elapsed: Duration,
    /// The call returned a result (a reply, a tool value); `false`: an error, a
    /// cancellation or a deadline.
    pub ok: bool,
}

/// Sees each entry of every run as it becomes durable (see the module docs).
pub trait Observer: Send + Sync + 'static {
    /// Entry `entry` (its `seq`, `prev`, `hash` and event) of run `run_id` is durable.
    fn entry(&self, run_id: &str, entry: &Entry);

    /// A live model or tool call returned (see the module docs). The default ignores it.
    fn call(&self, call: &CallTiming<'_>) {
        let _ = call;
    }

    /// A worker of this runtime continued run `run_id`, which another execution had left
    /// mid-way (it crashed, or its lease expired): a lease takeover. The default ignores it.
    fn takeover(&self, run_id: &str) {
        let _ = run_id;
    }
}

impl<O: Observer + ?Sized> Observer for std::sync::Arc<O> {
    fn entry(&self, run_id: &str, entry: &Entry) {
        (**self).entry(run_id, entry);
    }

    fn call(&self, call: &CallTiming<'_>) {
        (**self).call(call);
    }

    fn takeover(&self, run_id: &str) {
        (**self).takeover(run_id);
    }
}
