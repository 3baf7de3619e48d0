//! The fault classes a campaign injects, each counted in the report.

use std::fmt;

/// One class of adversity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Fault {
    /// The process dies at an await point: the runtime and its futures are dropped, the store
    /// stays; a later operation (a new process) continues.
    Crash,
    /// The process dies between a write and its sync: the write is lost, or its last entry is
    /// torn (damaged on disk, so every later load must report it corrupt).
    Torn,
    /// A store operation fails before it applies, or applies and then reports a failure (the
    /// acknowledgement is lost).
    StoreError,
    /// The same run is started (and resumed) several times concurrently.
    DuplicateStart,
    /// Several workers claim runs; some stall past their lease and are taken over.
    Workers,
    /// Event deliveries duplicated, reordered, late, to the wrong run, with the wrong event or
    /// payload, or under a reused id.
    Events,
    /// Tools fail, in cascades (a failing dependency makes the next calls of the run fail too).
    ToolFailure,
    /// Tools time out, or perform the effect and lose the answer (ambiguous outcomes).
    Timeout,
    /// The model answers invalid text, injection attempts, huge and odd Unicode answers,
    /// errors, replies without usage.
    ModelNoise,
    /// Every stored trace is replayed many times.
    ReplayStorm,
    /// Stored entries are damaged behind the store's back.
    Corruption,
    /// The clock jumps forward (past leases, past await deadlines).
    ClockJump,
}

impl Fault {
    /// Every class, in report order.
    pub const ALL: [Fault; 12] = [
        Fault::Crash,
        Fault::Torn,
        Fault::StoreError,
        Fault::DuplicateStart,
        Fault::Workers,
        Fault::Events,
        Fault::ToolFailure,
        Fault::Timeout,
        Fault::ModelNoise,
        Fault::ReplayStorm,
        Fault::Corruption,
        Fault::ClockJump,
    ];

    /// The name used on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Torn => "torn",
            Fault::StoreError => "store-error",
            Fault::DuplicateStart => "dup-start",
            Fault::Workers => "workers",
            Fault::Events => "events",
            Fault::ToolFailure => "tool-failure",
            Fault::Timeout => "timeout",
            Fault::ModelNoise => "model-noise",
            Fault::ReplayStorm => "replay-storm",
            Fault::Corruption => "corruption",
            Fault::ClockJump => "clock-jump",
        }
    }

    fn bit(self) -> u16 {
        1 << (Fault::ALL.iter().position(|f| *f == self).unwrap_or(0) as u16)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of fault classes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Faults(u16);

/// A fault class name that does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault class `{0}` (known: all, none, {names})", names = Fault::ALL.map(Fault::name).join(", "))]
#[non_exhaustive]
pub struct UnknownFault(pub String);

impl Faults {
    /// Every class.
    pub fn all() -> Self {
        Fault::ALL.iter().fold(Faults(0), |s, f| s.with(*f))
    }

    /// No faults at all (the runs still go through the simulation and its checks).
    pub fn none() -> Self {
        Faults(0)
    }

    /// This set plus `fault`.
    #[must_use]
    pub fn with(self, fault: Fault) -> Self {
        Faults(self.0 | fault.bit())
    }

    /// Whether `fault` is in the set.
    pub fn contains(self, fault: Fault) -> bool {
        self.0 & fault.bit() != 0
    }

    /// The classes in the set, in report order.
    pub fn iter(self) -> impl Iterator<Item = Fault> {
        Fault::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// `all`, `none`, or a comma-separated list of class names.
    pub fn parse(text: &str) -> Result<Self, UnknownFault> {
        let mut set = Faults::none();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "all" => set = Faults::all(),
                "none" => {}
                _ => {
                    let f = Fault::ALL
                        .into_iter()
                        .find(|f| f.name() == name)
                        .ok_or_else(|| UnknownFault(name.to_string()))?;
                    set = set.with(f);
                }
            }
        }
        Ok(set)
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Faults::all() {
            return f.write_str("all");
        }
        let names: Vec<&str> = self.iter().map(Fault::name).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}
