//! Syntax: the pest grammar, the tree it builds, and the input limits.
//!
//! [`parse`] turns `.nvm` text into an [`ast::File`] and diagnostics (codes `E0001`-`E0007`);
//! [`limits`] documents every bound it enforces.

pub mod ast;
mod errors;
mod grammar;
pub mod keywords;
mod lexer;
pub mod limits;
mod parser;

pub use parser::{Parsed, parse, parse_bytes};
