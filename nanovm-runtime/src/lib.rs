//! The nanovm runtime: executes compiled programs, journals every event into a blake3 hash
//! chain, and replays.

#![warn(missing_docs)]

pub mod budget;
pub mod cache;
pub mod cancel;
pub mod canonical;
pub mod clock;
pub mod ids;
pub mod journal;
pub mod model;
#[cfg(feature = "openai")]
pub mod openai;
pub mod program;
pub mod scripted;
pub mod trace;
pub mod value;
pub mod vault;
