//! Syntax: the pest grammar, the tree it builds, and the input limits.

pub mod ast;
