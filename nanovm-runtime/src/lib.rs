//! The nanovm runtime: executes compiled programs, journals every event into a blake3 hash
//! chain, and replays.
//!
//! Code generated from a `.nvm` program implements [`program::Program`]; a [`Runtime`] runs it
//! with a [`model::Model`], the host's tools, a [`Vault`] for secrets, a [`Clock`] and
//! optionally a [`JournalStore`] (see [`store`]). Every run yields an [`Execution`] whose
//! [`trace::Trace`] is a blake3 hash chain; [`replay()`] re-runs the program over a trace without any I/O and must
//! reproduce it exactly. With a store, [`durable`] is what happens between executions
//! (duplicate starts, [`Runtime::deliver`], [`Runtime::fire_timeouts`], [`Runtime::reconcile`],
//! [`Runtime::submit`]) and [`Worker`]s execute a shared store's runs under leases. The
//! semantics are specified in `docs/runtime.md`.

#![warn(missing_docs)]

pub mod budget;
pub mod cache;
pub mod cancel;
pub mod canonical;
pub mod clock;
mod db;
pub mod durable;
mod error;
mod exec;
pub mod ids;
pub mod model;
#[cfg(feature = "openai")]
pub mod openai;
pub mod program;
pub mod replay;
mod run;
mod runtime;
pub mod scripted;
pub mod store;
pub mod trace;
pub mod value;
pub mod vault;
pub mod view;
pub mod worker;

pub use budget::{Backoff, Usage};
pub use cancel::CancelToken;
pub use clock::{Clock, ManualClock, SystemClock};
pub use durable::{DeliverError, Delivery, ReconcileError, Resolution};
pub use error::{Mismatch, ReplayError, RunError};
pub use replay::replay;
pub use run::{Execution, Metrics, ReplayReport, RunOptions};
pub use runtime::{Runtime, RuntimeBuilder};
pub use scripted::{FnModel, ScriptedModel};
pub use store::{Fence, JournalError, JournalStore, Lease, MemoryStore, RunQuery, RunRecord};
pub use vault::{MemoryVault, Vault, VaultError};
pub use view::RunView;
pub use worker::Worker;

mod generated;

pub use generated::UnknownChoice;

/// Support for generated code; not a public API. The version in the name changes with every
/// breaking change of the contract between `nanovm-dsl`'s output and this crate.
#[doc(hidden)]
pub mod __private_v0_1 {
    pub use crate::generated::*;
}
