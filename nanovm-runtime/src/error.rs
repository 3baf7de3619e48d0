//! The errors of running and replaying: what stops a run from being executed or recorded
//! faithfully (as opposed to run outcomes, which are statuses).

use std::fmt;

use crate::model::ModelError;
use crate::trace::{Event, VerifyError};
use crate::value::Digest;

/// A failure that is not a run outcome: the run could not be executed or recorded faithfully.
/// (Run outcomes such as `failed` or `budget_exceeded` are statuses in [`Execution`](crate::Execution).)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The journal refused or failed a write; the run stopped at the last durable point.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The program has an `llm` step but the runtime has no model.
    #[error(
        "step `{step}` calls a model, but the runtime has none (use Runtime::builder().model(..))"
    )]
    NoModel {
        /// The first step that needs one.
        step: &'static str,
    },
    /// The trace was recorded by a different build of the program: another program text, or
    /// the same text compiled to another semantics version (see [`SEMANTICS_VERSIONS`]).
    ///
    /// [`SEMANTICS_VERSIONS`]: crate::SEMANTICS_VERSIONS
    #[error(
        "the trace was recorded by program `{program}` with hash {recorded}, but this build of `{program}` has hash {compiled} \
         (another text of the program, or another semantics version; keep the build it was recorded with registered)"
    )]
    ProgramMismatch {
        /// The program's name.
        program: &'static str,
        /// The hash of the compiled program.
        compiled: Digest,
        /// The hash recorded in the trace.
        recorded: Digest,
    },
    /// The program was compiled to a semantics version this runtime does not execute (a
    /// `nanovm-dsl` newer or older than the runtime, whose generated code behaves differently).
    /// Nothing was executed or recorded.
    #[error(
        "program `{program}` was compiled to semantics version {found}, but this runtime executes semantics version {}",
        supported.join(", ")
    )]
    UnsupportedSemantics {
        /// The program's name.
        program: &'static str,
        /// The program's semantics version.
        found: &'static str,
        /// The semantics versions this runtime executes ([`SEMANTICS_VERSIONS`](crate::SEMANTICS_VERSIONS)).
        supported: &'static [&'static str],
    },
    /// The run is pinned to a version of its program (a program hash) that is not registered
    /// in the [`Versions`](crate::Versions) the operation was routed with. Nothing was
    /// executed or recorded; register that build again to continue the run.
    #[error(
        "run `{run_id}` was started by version {hash} of program `{program}`, which is not registered"
    )]
    UnregisteredVersion {
        /// The run.
        run_id: String,
        /// The program's name.
        program: String,
        /// The program hash the run is pinned to.
        hash: Digest,
    },
    /// A redrive was refused: the run did not stop where a redrive can continue it (it is not
    /// `failed`, `budget_exceeded` or `stalled`, or the program itself ended it there).
    /// Nothing was recorded.
    #[error("run `{run_id}` cannot be redriven: {reason}")]
    NotRedrivable {
        /// The run.
        run_id: String,
        /// Its status.
        status: crate::trace::RunStatus,
        /// Why.
        reason: String,
    },
    /// A fork was refused (see [`crate::Runtime::fork`]). Nothing was recorded.
    #[error("run `{run_id}` cannot be forked there: {reason}")]
    NotForkable {
        /// The run to fork.
        run_id: String,
        /// Why.
        reason: String,
    },
    /// The recorded entries are not the trace of a run.
    #[error("not a run trace: {0}")]
    NotARun(String),
    /// The recorded entries fail hash-chain verification.
    #[error(transparent)]
    Corrupt(#[from] VerifyError),
    /// The recorded entries hold an `erased` tombstone no erasure could have appended
    /// ([`check_erasures`](crate::trace::check_erasures)): refused before anything is replayed.
    #[error(transparent)]
    ForgedErasure(#[from] crate::trace::ForgedErasure),
    /// Re-running the program over a recorded trace produced a different event.
    #[error(transparent)]
    Divergence(Box<Mismatch>),
    /// The model refused the program before the run started or continued (a
    /// [`ScriptedModel`](crate::testing::ScriptedModel) scripting a step the program does not
    /// have); nothing was recorded.
    #[error("the model refuses program `{program}`: {error}")]
    ModelRefused {
        /// The program's name.
        program: &'static str,
        /// The model's reason.
        #[source]
        error: ModelError,
    },
    /// The compiled program answered something the runtime cannot act on (a step id out of
    /// range, a tool index with no tool); a code generation bug.
    #[error("the compiled program is inconsistent: {0}")]
    InvalidProgram(String),
    /// The run is not in the journal.
    #[error("run `{0}` is not in the journal")]
    UnknownRun(String),
    /// The operation needs a journal and the runtime has none.
    #[error("the runtime has no journal")]
    NoJournal,
    /// The run id chosen in [`RunOptions::run_id`](crate::RunOptions::run_id) is not acceptable.
    #[error("invalid run id: {0}")]
    InvalidRunId(#[from] crate::ids::RunIdError),
    /// A replay needed to wait for I/O, which a replay never does (a runtime bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// The run is in progress elsewhere: another execution owns it (holds its live lease). A
    /// run is owned from its first write to its end or suspension, so this is what a second
    /// start, resume, delivery or reconciliation hears while the owner is alive, like an HTTP
    /// 409. Nothing was executed or recorded. Retry later: once the owner is done, the same
    /// request is answered as the run then stands; once its lease expired (the owner died),
    /// the run is taken over.
    #[error("run `{run_id}` is in progress: `{owner}` owns it (lease until {expires_ms} ms)")]
    Leased {
        /// The run.
        run_id: String,
        /// The worker holding the lease.
        owner: String,
        /// When the lease expires, in milliseconds since the Unix epoch.
        expires_ms: u64,
    },
    /// The run id is taken by a run that is not the one requested (another program, or other
    /// plain inputs).
    #[error("run id `{run_id}` is in use {reason}")]
    RunIdInUse {
        /// The run id.
        run_id: String,
        /// How the stored run differs.
        reason: String,
    },
    /// A start (or submission) named a data subject, but the run id is tied to another subject
    /// in the store's erasure index: a repeated start cannot tie a run to a second subject
    /// (an erasure of that subject would reach the first one's run). Nothing was linked; the
    /// other subject is not named. [`crate::Runtime::link_subject`] ties a run to several
    /// subjects deliberately.
    #[error(
        "run `{run_id}` is tied to another data subject: a start naming a different subject is \
         refused (nothing was linked; use the run's own subject, or link it deliberately with \
         Runtime::link_subject)"
    )]
    SubjectInUse {
        /// The run id.
        run_id: String,
    },
    /// A start named an empty (or blank) data subject, or one longer than 256 bytes: a
    /// subject is a pseudonymous id such as a customer number. Nothing was linked or recorded.
    #[error(
        "a data subject is a non-empty id of at most 256 bytes (a pseudonymous id such as a \
         customer number); nothing was linked or recorded"
    )]
    InvalidSubject,
    /// The program refused a delivered event's payload (it does not have the `await`'s
    /// declared type). Nothing was recorded. ([`crate::Runtime::deliver`] reports it as
    /// [`crate::DeliverError::Payload`].)
    #[error("the program refuses the event's payload: {0}")]
    PayloadRefused(String),
    /// A migrated run cannot be continued: the `migrated` event names a step or carries a
    /// variable the program does not take (the migration was made for another build).
    #[error("the migration cannot be applied: {0}")]
    Migration(String),
}

/// Errors of [`crate::replay()`]: the same as a run's.
pub type ReplayError = RunError;

/// Where re-running a program over a recorded trace first disagreed with the recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Index (sequence number) of the recorded entry where it happened.
    pub index: usize,
    /// The event the program produces there (`None` when it needed a recorded model reply or
    /// tool result and found something else, or when the program had ended).
    pub expected: Option<Event>,
    /// The recorded event (`None`: the recording had ended).
    pub recorded: Option<Event>,
    /// What the executor was doing.
    pub context: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the trace diverges at entry {}: {}",
            self.index, self.context
        )?;
        match &self.expected {
            Some(e) => write!(f, "; the program produces {e:?}")?,
            None => f.write_str("; the program produces nothing here")?,
        }
        match &self.recorded {
            Some(e) => write!(f, "; the trace records {e:?}"),
            None => f.write_str("; the trace records nothing here"),
        }
    }
}

impl std::error::Error for Mismatch {}

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The store could not be read or written (connection lost, disk full, database locked
    /// for too long...). Nothing of the failed operation was stored.
    #[error("journal I/O failed: {0}")]
    Io(String),
    /// The appended entries do not continue the stored run: another writer got there first,
    /// entries were skipped or repeated, or a run with this id was started already.
    #[error("journal conflict on run `{run_id}`: the next entry is #{expected}, got #{found}")]
    Conflict {
        /// The run.
        run_id: String,
        /// The sequence number the store expected.
        expected: u64,
        /// The sequence number offered.
        found: u64,
    },
    /// The caller's lease epoch is no longer the run's: another worker claimed the run (or the
    /// lease was given back). Nothing was written.
    #[error("run `{run_id}` is fenced: the lease epoch is {current}, the writer holds {held}")]
    Fenced {
        /// The run.
        run_id: String,
        /// The epoch the caller holds.
        held: u64,
        /// The run's current epoch.
        current: u64,
    },
    /// Stored bytes that do not decode or do not verify (edited or damaged storage).
    #[error("run `{run_id}` is corrupt in the store: {reason}")]
    Corrupt {
        /// The run.
        run_id: String,
        /// What is wrong.
        reason: String,
    },
    /// The appended entries are not a valid continuation of the run even though their
    /// sequence numbers are: their hash chain is broken, the first entry of a run is not
    /// `run_started` (or names another run), or a later entry is. Nothing was written.
    #[error("invalid append to run `{run_id}`: {reason}")]
    Invalid {
        /// The run.
        run_id: String,
        /// What is wrong.
        reason: String,
    },
}
