//! Deterministic stand-ins for tests, examples and benchmarks: models that answer from a script
//! ([`ScriptedModel`], [`FnModel`]) and a clock that only moves when told ([`ManualClock`]).
//! With a [`MemoryStore`](crate::store::MemoryStore) and a
//! [`MemoryVault::seeded`](crate::vault::MemoryVault::seeded), a run needs no network, no disk
//! and no wall clock.

pub use crate::clock::ManualClock;
pub use crate::scripted::{FnModel, ScriptedModel};
