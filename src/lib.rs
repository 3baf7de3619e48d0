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

/// Includes the Rust that `nanovm_dsl::build::Builder` generated in `build.rs` for
/// `<stem>.nvm`: `nanovm::include_compiled!("refund");` brings in the module of every program
/// in `refund.nvm`.
#[macro_export]
macro_rules! include_compiled {
    ($stem:literal) => {
        include!(concat!(env!("OUT_DIR"), "/nanovm/", $stem, ".rs"));
    };
}
