//! The nanovm runtime: executes compiled programs, journals every event into a blake3 hash
//! chain, and replays.
//!
//! Code generated from a `.nvm` program implements the runtime's program trait (a contract
//! between `nanovm-dsl`'s output and this crate, in the hidden module `__private_v0_1`); a
//! [`Runtime`] runs it with a [`model::Model`], the host's tools, a [`vault::Vault`] for
//! secrets, a [`Clock`] and optionally a [`store::JournalStore`]. Every run yields an
//! [`Execution`] whose [`trace::Trace`] is a blake3 hash chain; [`replay()`] re-runs the program
//! over a trace without any I/O and must reproduce it exactly. With a store, the durable
//! protocol is what happens between executions (duplicate starts, [`Runtime::deliver`],
//! [`Runtime::fire_timeouts`], [`Runtime::reconcile`], [`Runtime::submit`]) and [`Worker`]s
//! execute a shared store's runs under leases. [`RunView`] reads where a run stands from its
//! events. The semantics are specified in `docs/runtime.md`.
//!
//! # Where things are
//!
//! Dependencies run one way, from the bottom of this list to the top; no module imports from
//! one that imports it back.
//!
//! | module | what |
//! | --- | --- |
//! | `versions` | [`Versions`]: several versions of a program served at once; routing a stored run to the one it is pinned to; [`Worker::run_once_any`] |
//! | `worker` | [`Worker`]: claims a shared store's runs and executes them under leases |
//! | `runtime` | [`Runtime`], [`RuntimeBuilder`]: the entry point (run, resume, replay, the durable operations) |
//! | `migrate` | [`migrate_run`]: moving a waiting run to another version of its program (`nanovm migrate`) |
//! | `durable` | the durable protocol: duplicate starts, deliveries, timeouts, reconciliation, pending runs; executing under a lease |
//! | `replay` | [`replay()`] and replayed executions: the one replay configuration and the one poll-once driver |
//! | `exec/mod.rs`, `exec/start.rs` | the step engine: the step loop, `guard` / `branch` steps, budgets and interruptions; setting a run up and handing back its [`Execution`] |
//! | `exec/{llm,tool,suspend,reconcile}.rs` | `llm` steps, `call` steps, `await` steps, reconciliation pauses |
//! | `exec/parallel/{mod,round}.rs` | `parallel` steps: the block's scheduling and join; one round of branches |
//! | `exec/race.rs`, `exec/recorder.rs` | racing a call against cancellation and the deadline; the engine's only door to the trace and the store |
//! | `run` | [`RunOptions`], [`Execution`], [`Metrics`], [`ReplayReport`] |
//! | `operator` | [`act`]: an operator's cancellation, answer or delivery recorded at store level, under the run's lease, without the program |
//! | `erase` | [`erase()`]: erasure end to end (the store's erasure index, tombstones under each run's lease, the vault, compaction) |
//! | `stats` | drift metrics over stored runs, per program ([`stats::stats`], `docs/metrics.md`) |
//! | `state` | [`run_state`]: a stored run's state as JSON of a stable shape |
//! | `view` | [`RunView`]: where a run stands, read from its events |
//! | `store/` | [`store::JournalStore`], what every store shares (append checks, rows), and the implementations (memory, SQLite, PostgreSQL) |
//! | `vault/` | [`vault::Vault`] and its implementations (memory, SQLite, PostgreSQL) |
//! | `db/` | what the SQL stores and vaults share: the databases, their schema, the writer thread, the pool |
//! | `evidence/` | signed checkpoints, the Merkle log across runs, [`evidence::audit`] |
//! | `error` | [`RunError`], [`Mismatch`], [`store::JournalError`] |
//! | `model`, `cache`, `scripted`, `openai` | the model trait, the cache wrapper, scripted models, the OpenAI-compatible adapter |
//! | `input` | typed JSON at the boundary: [`input_from_json`], [`input_schema`], [`InputError`] |
//! | `trace`, `canonical`, `ids` | events, entries and the hash chain; the canonical encoding; run and effect ids |
//! | `budget`, `clock`, `cancel`, `value` | budgets and usage, clocks, cancellation, values (JSON, digests, secrets) |
//! | `program`, `generated` | the contract with generated code (re-exported in `__private_v0_1` only) |
//! | `testing` | deterministic stand-ins: scripted models, a manual clock |
//! | `mutants` | known bugs to switch on one at a time (feature `sabotage-mutants`, the simulation's tests) |

#![warn(missing_docs)]
#![deny(unreachable_pub)]

mod budget;
mod cache;
mod cancel;
mod canonical;
mod clock;
mod db;
mod durable;
mod erase;
mod error;
pub mod evidence;
mod exec;
mod generated;
mod ids;
mod input;
mod migrate;
pub mod model;
#[cfg(feature = "sabotage-mutants")]
#[doc(hidden)]
pub mod mutants;
mod observe;
#[cfg(feature = "openai")]
pub mod openai;
mod operator;
mod program;
mod replay;
mod run;
mod runtime;
mod scripted;
mod shape;
mod state;
pub mod stats;
pub mod store;
pub mod testing;
pub mod time;
pub mod trace;
mod value;
pub mod vault;
mod versions;
mod view;
mod worker;

pub use budget::{Backoff, Usage};
pub use cache::{CacheStats, CachedModel};
pub use cancel::CancelToken;
pub use clock::{Clock, SystemClock};
pub use durable::{DeliverError, Delivery, ReconcileError, RedriveOptions, Resolution, Submitted};
pub use erase::{Erase, EraseError, ErasedRun, Erasure, erase};
pub use error::{Mismatch, ReplayError, RunError};
pub use generated::UnknownChoice;
pub use ids::{MAX_RUN_ID_BYTES, RunIdError, effect_id, run_id, validate_run_id};
pub use input::{FieldError, InputError, check_input, input_from_json, input_schema, value_schema};
pub use migrate::{MigrateError, Migration, migrate_run};
pub use observe::{CallKind, CallTiming, Observer};
pub use operator::{Act, ActError, Acted, act};
pub use program::{BoxFuture, SEMANTICS_VERSIONS, ToolContext, ToolError};
pub use replay::replay;
pub use run::{Execution, Metrics, ReplayReport, RunOptions};
pub use runtime::{Runtime, RuntimeBuilder};
pub use state::{RUN_STATE_VERSION, run_state};
pub use trace::RunStatus;
pub use value::{Digest, Json, Secret, SecretRef, VaultId};
pub use versions::Versions;
pub use view::{
    Activity, ModelAnswer, OpenEffect, RunView, StepValue, Waiting, payload_fingerprint,
};
pub use worker::Worker;

/// True when the known bug `m` is switched on (feature `sabotage-mutants`, tests only); always
/// false without the feature.
#[cfg(feature = "sabotage-mutants")]
pub(crate) fn mutant(m: mutants::Mutant) -> bool {
    mutants::active() == Some(m)
}

/// Which known bug [`mutant`] asks about (without the feature nothing is ever switched on).
#[cfg(not(feature = "sabotage-mutants"))]
#[allow(dead_code, reason = "the mutants exist only with the feature")]
#[derive(Clone, Copy)]
pub(crate) enum Mutant {
    StartWithoutLease,
    CallBeforeIntentDurable,
    AcceptReusedEventId,
    AppendWithoutFence,
    CallWithoutOwnershipCheck,
}

/// Always false without the feature `sabotage-mutants`.
#[cfg(not(feature = "sabotage-mutants"))]
#[inline(always)]
pub(crate) fn mutant(_: Mutant) -> bool {
    false
}

#[cfg(feature = "sabotage-mutants")]
pub(crate) use mutants::Mutant;

/// Support for generated code; not a public API. The version in the name changes with every
/// breaking change of the contract between `nanovm-dsl`'s output and this crate.
#[doc(hidden)]
pub mod __private_v0_1 {
    pub use crate::generated::*;
    /// serde, for the derives on generated `Input`s (users need no serde dependency).
    pub use serde;
}
