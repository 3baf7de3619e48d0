//! The nanovm workflow compiler.
//!
//! `.nvm` text goes through four phases, each a module, in this order:
//!
//! 1. [`syntax`]: pest grammar -> [`syntax::ast`], every node with its byte span;
//! 2. [`check`]: the rules of LANGUAGE.md §5, one function per rule, all errors collected;
//! 3. [`lower`]: the checked tree -> a typed, resolved program model;
//! 4. [`codegen`]: the model -> Rust tokens (enums, `match` transitions, `PROGRAM_HASH`).
//!
//! The same core serves the proc macros (`nanovm-macros`), build scripts ([`build::Builder`]),
//! the `nanovm` CLI and the benchmarks. Nothing here depends on how diagnostics are shown:
//! [`Diagnostic`] is a plain value and [`render`] is one way to print it.

#![warn(missing_docs)]
#![deny(unreachable_pub)]

pub mod check;
pub mod diagnostic;
pub mod render;
pub mod syntax;

pub use diagnostic::{Diagnostic, Label, Severity, SourceFile};
pub use syntax::{Parsed, parse, parse_bytes};
