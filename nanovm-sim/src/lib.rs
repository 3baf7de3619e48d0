//! Sabotage mode: a seeded simulation that attacks the whole nanovm runtime and checks its
//! invariants.
//!
//! A [`Campaign`] runs a real compiled program seed by seed. Everything random comes from the
//! seed: the inputs, the schedule of the simulated processes (a single-threaded executor that
//! polls them in a seeded order), simulated time ([`SimClock`]), the models' and tools'
//! answers, and every injected [`Fault`]: crashes at await points, lost and torn writes, store
//! errors before and after the write, concurrent duplicate starts and resumes, workers that
//! stall past their lease, abused event deliveries, tool failure cascades, timeouts and lost
//! answers, model noise, replay storms, corrupted entries and clock jumps. After each seed the
//! stored traces and an independent ledger of the effects (kept by the simulated services) are
//! checked; a broken invariant is a [`Violation`] naming its seed.
//!
//! ```text
//! cargo run --release -p nanovm-sim -- --seeds 100000 --faults all
//! cargo run --release -p nanovm-sim -- --seed 4242 --program review_loop   # one seed again
//! ```
//!
//! Users sabotage their own workflows with [`Campaign::new`] (a compiled program, an input
//! generator and a tools factory) and [`Campaign::run`]. See `docs/runtime.md`, "Sabotage mode".

#![warn(missing_docs)]
#![deny(unreachable_pub)]

pub mod builtin;
mod campaign;
mod clock;
mod faults;
mod report;
mod rng;
mod sabotage;
mod sched;
mod store;
mod world;

pub use campaign::{Campaign, SeedOutcome, default_payload};
pub use clock::SimClock;
pub use faults::{Fault, Faults, UnknownFault};
pub use report::{Counters, Report, Violation, ViolationKind};
pub use rng::Rng;
pub use sabotage::{Sabotaged, SabotagedTools};
