//! The executor's only door to the trace and the journal.
//!
//! Every event the executor produces goes through [`Recorder::emit`]. A recorder may hold a
//! *recorded prefix* (the entries of an earlier run of the same program): while it is
//! non-empty, each emitted event must equal the next recorded one (otherwise the run
//! *diverges*), and the executor answers model and tool calls from the recorded events instead
//! of performing them. Live runs have no prefix; replays stop when it runs out; resumes go on
//! live. That is the one code path for all three.
//!
//! The recorder also owns group commit: [`Recorder::flush`] appends everything not yet durable
//! in one [`JournalStore::append`] call, under the run's lease
//! [`Fence`] when it has one. Entries that came from the recorded prefix are durable
//! already (that is where they were loaded from) and are never written again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::canonical::Encoder;
use crate::clock::Clock;
use crate::error::{Mismatch, RunError};
use crate::observe::Observer;
use crate::store::{Fence, JournalStore, Lease};
use crate::trace::{Entry, Event, Trace};
use crate::view::RunView;

/// The ownership of a fresh run: its first durable write creates the run and takes its lease
/// in one store transaction ([`JournalStore::start_run`]), and every later write is fenced by
/// that lease. Shared with whoever renews and releases the lease (`crate::durable`).
pub(crate) struct Claim {
    /// The lease owner to write.
    pub(crate) worker: String,
    /// The lease length.
    pub(crate) lease_ms: u64,
    /// The clock the lease's expiry is on.
    pub(crate) clock: Arc<dyn Clock>,
    /// The lease, once the run was created (renewals update it).
    lease: Mutex<Option<Lease>>,
    /// Notified when the lease is first taken.
    taken: tokio::sync::Notify,
    /// Set when the execution's last write gave the lease back
    /// ([`JournalStore::append_release`]): nobody renews or releases it after that.
    released: AtomicBool,
}

impl Claim {
    pub(crate) fn new(worker: String, lease_ms: u64, clock: Arc<dyn Clock>) -> Self {
        Claim {
            worker,
            lease_ms,
            clock,
            lease: Mutex::new(None),
            taken: tokio::sync::Notify::new(),
            released: AtomicBool::new(false),
        }
    }

    /// True once the execution's last write gave the lease back.
    pub(crate) fn released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    /// The lease still to give back after the execution: the one held, unless its last write
    /// released it already.
    pub(crate) fn to_release(&self) -> Option<Lease> {
        if self.released() {
            return None;
        }
        self.lease()
    }

    /// The lease held, if the run was created.
    pub(crate) fn lease(&self) -> Option<Lease> {
        self.lease
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the lease (taken, or renewed).
    pub(crate) fn set_lease(&self, lease: Lease) {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease);
        self.taken.notify_one();
    }

    /// Waits until the lease is taken.
    pub(crate) async fn taken(&self) -> Lease {
        loop {
            if let Some(lease) = self.lease() {
                return lease;
            }
            self.taken.notified().await;
        }
    }
}

/// How the executor treats I/O once the recorded prefix, if any, is used up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A new run: no recorded prefix.
    Live,
    /// Re-run a recorded trace without I/O; stop where it ends.
    Replay,
    /// Re-run a recorded prefix, then continue live.
    Resume,
}

/// Why the executor stopped without finishing the run.
#[derive(Debug)]
pub(crate) enum Halt {
    /// Not a run outcome: journal failure, divergence, a broken program.
    Error(RunError),
    /// A replay reached the end of the recorded trace before the run ended.
    ReplayEnd(String),
}

impl From<RunError> for Halt {
    fn from(e: RunError) -> Self {
        Halt::Error(e)
    }
}

impl From<crate::store::JournalError> for Halt {
    fn from(e: crate::store::JournalError) -> Self {
        Halt::Error(RunError::Journal(e))
    }
}

pub(crate) struct Recorder {
    pub run_id: Arc<str>,
    /// The run id effect ids are derived from: the run's own, except in a fork's copied
    /// prefix, which keeps the original run's (switched when the `forked` entry is passed).
    pub effect_run: Arc<str>,
    pub trace: Trace,
    pub scratch: Encoder,
    pub mode: Mode,
    store: Option<Arc<dyn JournalStore>>,
    /// The lease epoch appends are made under (`None`: unfenced).
    fence: Option<Fence>,
    /// A fresh run's ownership: the first write creates the run leased (see [`Claim`]).
    claim: Option<Arc<Claim>>,
    /// Entries `..flushed` of `trace` are durable.
    flushed: usize,
    /// A non-idempotent effect's result is in the trace but not durable yet: it must be before
    /// the run's next external act ([`Recorder::settle`]).
    unsettled: bool,
    recorded: VecDeque<Entry>,
    /// Sees each new entry once it is durable (`crate::observe`); `None` in a replay.
    observer: Option<Arc<dyn Observer>>,
    /// Entries `..observed` were handed to the observer, or came from the recorded prefix.
    observed: usize,
}

impl Recorder {
    pub(crate) fn new(
        run_id: Arc<str>,
        mode: Mode,
        store: Option<Arc<dyn JournalStore>>,
        fence: Option<Fence>,
        recorded: Vec<Entry>,
        capacity: usize,
    ) -> Self {
        Recorder {
            effect_run: run_id.clone(),
            run_id,
            trace: Trace::with_capacity(capacity),
            // Grows to a typical event's encoding; `with_scratch` hands in a sized one.
            scratch: Encoder::new(),
            mode,
            store,
            fence,
            claim: None,
            flushed: 0,
            unsettled: false,
            recorded: recorded.into(),
            observer: None,
            observed: 0,
        }
    }

    /// Hands every new entry to `observer` once it is durable (not in a replay).
    pub(crate) fn with_observer(mut self, observer: Option<Arc<dyn Observer>>) -> Self {
        if self.mode != Mode::Replay {
            self.observer = observer;
        }
        self
    }

    /// Hands the entries made durable since the last call to the observer.
    fn observe(&mut self) {
        let Some(observer) = &self.observer else {
            return;
        };
        let entries = self.trace.entries();
        for e in entries.get(self.observed..).unwrap_or_default() {
            observer.entry(&self.run_id, e);
        }
        self.observed = entries.len();
    }

    /// Uses `scratch` (cleared before every use) as the buffer events are encoded in.
    pub(crate) fn with_scratch(mut self, scratch: Encoder) -> Self {
        self.scratch = scratch;
        self
    }

    /// Makes the first write create the run under a lease (a fresh run; see [`Claim`]), or,
    /// for a run continued under a lease already taken, lets [`Recorder::ensure_owned`] see it.
    pub(crate) fn claim(&mut self, claim: Arc<Claim>) {
        self.claim = Some(claim);
    }

    /// Before an act that must not happen twice (the live call of a non-idempotent effect),
    /// checks that the lease this run is written under is still its own. Renewals run every
    /// third of the lease while the run executes; when less than a third is left (or none: the
    /// process was stalled past it), a renewal is overdue and is done now, and a lease someone
    /// else took stops the run ([`JournalError::Fenced`](crate::store::JournalError::Fenced))
    /// before the act. An expired lease nobody claimed is renewed and the act goes ahead.
    /// Nothing to check for a run without a lease.
    pub(crate) async fn ensure_owned(&self) -> Result<(), Halt> {
        let (Some(claim), Some(store)) = (&self.claim, &self.store) else {
            return Ok(());
        };
        let Some(lease) = claim.lease() else {
            return Ok(());
        };
        let now_ms = claim.clock.now_ms();
        if now_ms.saturating_add(claim.lease_ms / 3) < lease.expires_ms {
            return Ok(());
        }
        let renewed = store.renew(&lease, now_ms, claim.lease_ms).await?;
        claim.set_lease(renewed);
        Ok(())
    }

    /// True while recorded entries remain that the executor has not reproduced yet.
    pub(crate) fn replaying(&self) -> bool {
        self.recorded.iter().any(|e| !absorbed(&e.event))
    }

    /// True when the recorded prefix is used up and this is a replay: any further event or
    /// I/O has no recorded counterpart.
    pub(crate) fn replay_over(&self) -> bool {
        self.mode == Mode::Replay && !self.replaying()
    }

    /// The next recorded entry the executor will be compared with (erasure events, which the
    /// executor never produces, are skipped).
    pub(crate) fn peek_entry(&self) -> Option<&Entry> {
        self.recorded.iter().find(|e| !absorbed(&e.event))
    }

    /// The event of [`Recorder::peek_entry`].
    pub(crate) fn peek(&self) -> Option<&Event> {
        self.peek_entry().map(|e| &e.event)
    }

    /// The recorded events ahead, in order, erasures skipped.
    pub(crate) fn upcoming(&self) -> impl Iterator<Item = &Entry> {
        self.recorded.iter().filter(|e| !absorbed(&e.event))
    }

    /// Appends an event. With a recorded prefix, the event must equal the next recorded one.
    /// Returns whether it came from the recorded prefix (and so is durable already).
    pub(crate) fn emit(&mut self, event: Event) -> Result<bool, Halt> {
        self.absorb_erasures()?;
        let Some(rec) = self.recorded.pop_front() else {
            if self.mode == Mode::Replay {
                return Err(Halt::ReplayEnd(format!(
                    "the recorded trace ends where the program writes a `{}` event",
                    event.kind()
                )));
            }
            self.trace.push(event, &mut self.scratch);
            return Ok(false);
        };
        if rec.event != event {
            return Err(divergence(
                rec.seq,
                Some(event),
                Some(rec.event),
                "the program produces a different event",
            ));
        }
        self.push_recorded(rec)?;
        Ok(true)
    }

    /// Moves erasure events at the front of the recorded prefix into the trace: erasing a
    /// secret appends an `erased` event to a run at any time, and replays keep it.
    pub(crate) fn absorb_erasures(&mut self) -> Result<(), Halt> {
        while self.recorded.front().is_some_and(|e| absorbed(&e.event)) {
            if let Some(rec) = self.recorded.pop_front() {
                if let Event::Forked { run_id, .. } = &rec.event {
                    self.effect_run = Arc::from(run_id.as_str());
                }
                self.push_recorded(rec)?;
            }
        }
        Ok(())
    }

    /// Re-hashes a recorded event onto the regenerated trace and checks the hash agrees, so a
    /// replay's root hash is computed, not copied.
    fn push_recorded(&mut self, rec: Entry) -> Result<(), Halt> {
        let entry = self.trace.push(rec.event, &mut self.scratch);
        if entry.hash != rec.hash || entry.seq != rec.seq {
            let regenerated = entry.event.clone();
            return Err(divergence(
                rec.seq,
                Some(regenerated.clone()),
                Some(regenerated),
                "the recorded hash does not match the regenerated chain",
            ));
        }
        self.flushed = self.trace.len();
        self.observed = self.flushed;
        Ok(())
    }

    /// Takes the next `n` recorded entries into the trace as they are (re-hashed and checked
    /// against the chain, not regenerated): the part of a migrated run that another program
    /// wrote.
    pub(crate) fn adopt(&mut self, n: usize) -> Result<(), Halt> {
        for _ in 0..n {
            let Some(rec) = self.recorded.pop_front() else {
                break;
            };
            self.push_recorded(rec)?;
        }
        Ok(())
    }

    /// The first recorded entry left over after the run ended, if any (erasures are absorbed).
    pub(crate) fn leftover(&mut self) -> Result<Option<&Entry>, Halt> {
        self.absorb_erasures()?;
        Ok(self.recorded.front())
    }

    /// The result of a non-idempotent effect was just recorded: it is made durable with the next
    /// write, which must come before the run's next external act ([`Recorder::settle`]). Until
    /// then nothing happens but computation, so sharing the next write (the next effect's
    /// intent, or the end) makes it durable as soon as a write of its own would have.
    pub(crate) fn outcome_pending(&mut self) {
        self.unsettled = true;
    }

    /// Before an external act that is not a durability point itself (a model call, a
    /// read-only tool call, a retry's backoff): makes a pending effect result durable first, so
    /// the window in which that effect is ambiguous ends where it always did, before anything
    /// else reaches the outside world or waits.
    pub(crate) async fn settle(&mut self) -> Result<(), Halt> {
        if self.unsettled {
            self.flush().await?;
        }
        Ok(())
    }

    /// A durability point: appends every entry not yet durable in one store write.
    ///
    /// The last write of an execution (its entries end with `run_ended` or `suspended`) that
    /// holds a lease gives the lease back in the same transaction
    /// ([`JournalStore::append_release`]); a run whose first write is already its last is created
    /// by a plain append, never leased (nothing could claim it in between: it does not exist
    /// before that write, and is ended or suspended after it).
    pub(crate) async fn flush(&mut self) -> Result<(), Halt> {
        let Some(store) = &self.store else {
            self.observe();
            return Ok(());
        };
        let entries = self.trace.entries();
        if self.flushed >= entries.len() {
            return Ok(());
        }
        let last = entries
            .last()
            .is_some_and(|e| RunView::ends_execution(&e.event));
        match &self.claim {
            Some(_) if last && self.flushed == 0 && self.fence.is_none() => {
                store.append(&self.run_id, entries, None).await?;
            }
            Some(claim) if last && let Some(lease) = claim.lease() => {
                store
                    .append_release(&self.run_id, &entries[self.flushed..], &lease)
                    .await?;
                claim.released.store(true, Ordering::SeqCst);
            }
            // The run's first write: create it owned, and fence every later write.
            Some(claim)
                if self.flushed == 0
                    && self.fence.is_none()
                    && !crate::mutant(crate::Mutant::StartWithoutLease) =>
            {
                let lease = store
                    .start_run(
                        &self.run_id,
                        entries,
                        &claim.worker,
                        claim.clock.now_ms(),
                        claim.lease_ms,
                    )
                    .await?;
                self.fence = Some(lease.fence());
                claim.set_lease(lease);
            }
            _ => {
                store
                    .append(&self.run_id, &entries[self.flushed..], self.fence)
                    .await?;
            }
        }
        self.flushed = entries.len();
        self.unsettled = false;
        self.observe();
        Ok(())
    }
}

/// Recorded events the executor never produces, taken over as they come: `erased` (a secret
/// erased at any time) and `forked` (where a fork's copied prefix ends).
fn absorbed(event: &Event) -> bool {
    matches!(event, Event::Erased { .. } | Event::Forked { .. })
}

/// A [`RunError::Divergence`] wrapped for the executor.
pub(crate) fn divergence(
    index: u64,
    expected: Option<Event>,
    recorded: Option<Event>,
    context: impl Into<String>,
) -> Halt {
    Halt::Error(RunError::Divergence(Box::new(Mismatch {
        index: usize::try_from(index).unwrap_or(usize::MAX),
        expected,
        recorded,
        context: context.into(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{RunStatus, entry_hash};
    use crate::value::Digest;

    /// The executor relies on `entry_hash` hashing exactly `prev || seq || canonical(event)`.
    #[test]
    fn entry_hash_is_blake3_of_prev_seq_and_encoding() {
        let event = Event::RunEnded {
            status: RunStatus::Success,
            step: Some("done".into()),
            message: Some("x".repeat(200)),
        };
        let prev = Digest::of(b"prev");
        let mut e = Encoder::new();
        event.encode(&mut e);
        let mut h = blake3::Hasher::new();
        h.update(&prev.0)
            .update(&7u64.to_le_bytes())
            .update(e.bytes());
        let want = Digest(*h.finalize().as_bytes());
        assert_eq!(entry_hash(&prev, 7, &event, &mut Encoder::new()), want);
    }

    #[test]
    fn recorded_entries_are_compared_and_rehashed() {
        let mut live = Recorder::new("r".into(), Mode::Live, None, None, Vec::new(), 4);
        live.emit(Event::Erased {
            vault_id: crate::value::VaultId([1; 16]),
            by: crate::trace::Actor::new("dpo", "request 1"),
        })
        .ok();
        let end = Event::RunEnded {
            status: RunStatus::Failed,
            step: None,
            message: None,
        };
        live.emit(end.clone()).ok();
        let recorded = live.trace.entries().to_vec();

        let mut replay = Recorder::new("r".into(), Mode::Replay, None, None, recorded.clone(), 4);
        assert!(replay.replaying());
        assert_eq!(
            replay.peek(),
            Some(&end),
            "erasures are skipped when peeking"
        );
        assert!(matches!(replay.emit(end.clone()), Ok(true)));
        assert_eq!(replay.trace.entries(), &recorded[..]);
        assert!(matches!(replay.emit(end), Err(Halt::ReplayEnd(_))));
    }
}
