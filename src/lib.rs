//! nanovm: deterministic, compiled workflows for LLM agents that touch money, databases and
//! personal data. The model proposes; the compiled graph decides.
//!
//! Workflows are written in the `.nvm` language and compiled at build time into typed Rust:
//! [`nano_program!`] for programs written inline, [`include_program!`] for `.nvm` files, and
//! `nanovm_dsl::build::Builder` in `build.rs` together with [`include_compiled!`]. The runtime
//! (everything else re-exported here, from `nanovm-runtime`, under the same paths) only
//! executes, journals and hashes. [`prelude`] has what a typical host file needs.

// Generated code names `::nanovm`; this makes that path work inside this crate too.
extern crate self as nanovm;

pub use nanovm_macros::{include_program, nano_program};
pub use nanovm_runtime::{Act, ActError, Acted, Activity, RUN_STATE_VERSION, act, run_state};
pub use nanovm_runtime::{
    Backoff, BoxFuture, CacheStats, CachedModel, CancelToken, Clock, DeliverError, Delivery,
    Digest, Execution, Json, MAX_RUN_ID_BYTES, Metrics, Mismatch, ModelAnswer, OpenEffect,
    ReconcileError, ReplayError, ReplayReport, Resolution, RunError, RunIdError, RunOptions,
    RunStatus, RunView, Runtime, RuntimeBuilder, Secret, SecretRef, SystemClock, ToolContext,
    ToolError, UnknownChoice, Usage, VaultId, Waiting, Worker, effect_id, replay, run_id,
    validate_run_id,
};
pub use nanovm_runtime::{
    FieldError, InputError, Submitted, check_input, input_from_json, input_schema,
};
pub use nanovm_runtime::{evidence, model, openai, stats, store, testing, trace, vault};

/// Support for generated code; not a public API (see `nanovm_runtime::__private_v0_1`).
#[doc(hidden)]
pub use nanovm_runtime::__private_v0_1;

/// What a typical host file needs: `use nanovm::prelude::*;` brings the runtime and its
/// options, the results, what tools take and return, the macros, the model trait for a custom
/// adapter, and the in-memory store, vault and scripted model for tests.
pub mod prelude {
    pub use crate::model::{Model, ModelError, ModelReply, ModelRequest};
    pub use crate::store::MemoryStore;
    pub use crate::testing::ScriptedModel;
    pub use crate::trace::Trace;
    pub use crate::vault::{MemoryVault, Vault};
    pub use crate::{
        BoxFuture, Execution, Json, RunError, RunOptions, RunStatus, Runtime, Secret, SecretRef,
        ToolContext, ToolError, include_program, nano_program,
    };
}

// Every Rust block of the README and the docs compiles (and runs) as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[doc = include_str!("../docs/language.md")]
#[cfg(doctest)]
pub struct LanguageDoctests;

#[doc = include_str!("../docs/runtime.md")]
#[cfg(doctest)]
pub struct RuntimeDoctests;

#[doc = include_str!("../docs/models.md")]
#[cfg(doctest)]
pub struct ModelsDoctests;

#[doc = include_str!("../docs/diagnostics.md")]
#[cfg(doctest)]
pub struct DiagnosticsDoctests;

#[doc = include_str!("../docs/performance.md")]
#[cfg(doctest)]
pub struct PerformanceDoctests;

/// Includes the Rust that `nanovm_dsl::build::Builder` generated in `build.rs` for
/// `<stem>.nvm`: `nanovm::include_compiled!("refund");` brings in the module of every program
/// in `refund.nvm`.
#[macro_export]
macro_rules! include_compiled {
    ($stem:literal) => {
        include!(concat!(env!("OUT_DIR"), "/nanovm/", $stem, ".rs"));
    };
}
