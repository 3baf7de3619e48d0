//! The nanovm runtime: executes compiled programs, journals every event into a blake3 hash
//! chain, and replays.

#![warn(missing_docs)]

pub mod cache;
pub mod canonical;
pub mod model;
#[cfg(feature = "openai")]
pub mod openai;
pub mod program;
pub mod trace;
pub mod value;
