//! The Rust face of `grammar.pest`: the pest parser and its `Rule` enum, used by the parser
//! (to build the tree) and by the error translation (to re-run a failed item with detail on).
//! Both depend on this module and neither on the other's internals for the grammar.

#![allow(
    missing_docs,
    unreachable_pub,
    reason = "pest_derive generates the undocumented public `Rule` enum"
)]

/// The generated pest parser of `grammar.pest`.
#[derive(pest_derive::Parser)]
#[grammar = "syntax/grammar.pest"]
pub(crate) struct NvmParser;
