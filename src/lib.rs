//! nanovm: deterministic, compiled workflows for LLM agents that touch money, databases and
//! personal data. The model proposes; the compiled graph decides.
//!
//! Workflows are written in the `.nvm` language and compiled at build time into typed Rust:
//! [`nano_program!`] for programs written inline, [`include_program!`] for `.nvm` files, and
//! `nanovm_dsl::build::Builder` in `build.rs` together with [`include_compiled!`]. The runtime
//! (everything else re-exported here, from `nanovm-runtime`) only executes, journals and
//! hashes.

// Generated code names `::nanovm`; this makes that path work inside this crate too.
extern crate self as nanovm;

pub use nanovm_macros::{include_program, nano_program};
pub use nanovm_runtime::*;

// What a host file names besides the runtime's root items, flat at the crate root: the tool
// signatures of generated `Tools` traits, the run's status, the trace, model adapters' types.
pub use nanovm_runtime::model::{Model, ModelError, ModelReply, ModelRequest};
pub use nanovm_runtime::program::{Program, ToolContext, ToolError};
pub use nanovm_runtime::trace::{Event, RunStatus, Trace};
pub use nanovm_runtime::value::{Digest, Json, Secret, SecretRef};

/// Everything a host file usually needs: `use nanovm::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Execution, Json, MemoryStore, MemoryVault, Model, ModelError, ModelReply, ModelRequest,
        Program, RunError, RunOptions, RunStatus, Runtime, ScriptedModel, Secret, SecretRef,
        ToolContext, ToolError, Trace, Vault, include_program, nano_program,
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
