//! The fault-injecting journal store: every operation of every simulated process goes through
//! it to the seed's "disk" (a [`MemoryStore`]), with an await point, injected failures before
//! and after the write, crashes, lost and torn writes, and checks of what the store accepted
//! against an independent reading of the run's lease.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nanovm_runtime::store::{
    Fence, JournalError, JournalStore, Lease, MemoryStore, RunQuery, RunRecord,
};
use nanovm_runtime::trace::Entry;
use nanovm_runtime::{BoxFuture, Clock, Digest};

use crate::faults::Fault;
use crate::report::ViolationKind;
use crate::sched::{YieldOnce, current_task};
use crate::world::World;

/// The memory store answers at once; this takes that answer.
pub(crate) fn now<T>(fut: impl Future<Output = T>) -> T {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the memory store never waits"),
    }
}

/// What happens to one store operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    Normal,
    /// Fails, nothing applied.
    ErrBefore,
    /// Applied, then reported as failed.
    ErrAfter,
    /// The process dies before the write reaches the disk.
    CrashBefore,
    /// The write reaches the disk, the process dies before it hears so.
    CrashAfter,
    /// The process dies while the write is being synced: it is lost.
    Lost,
    /// The process dies while the write is being synced: its last entry is torn.
    TornWrite,
}

/// The store every simulated process uses.
#[derive(Clone)]
pub(crate) struct FaultStore {
    world: Arc<World>,
}

impl FaultStore {
    pub(crate) fn new(world: Arc<World>) -> Self {
        FaultStore { world }
    }

    fn disk(&self) -> &MemoryStore {
        &self.world.disk
    }

    /// An await point, and the plan for a write (`write`) or a read.
    async fn enter(&self, write: bool) -> Plan {
        let w = &self.world;
        w.count(|c| c.store_ops += 1);
        // Latency: an await point, sometimes one that takes simulated time.
        match w.below(10) {
            0..=3 => YieldOnce::new().await,
            4 => w.clock.sleep(Duration::from_millis(w.below(400))).await,
            _ => {}
        }
        if w.inject(Fault::StoreError, 8) {
            return if write && w.chance(500) {
                Plan::ErrAfter
            } else {
                Plan::ErrBefore
            };
        }
        if write && w.inject(Fault::Crash, 6) {
            return if w.chance(500) {
                Plan::CrashAfter
            } else {
                Plan::CrashBefore
            };
        }
        if write && w.inject(Fault::Torn, 4) {
            return if w.chance(500) {
                Plan::Lost
            } else {
                Plan::TornWrite
            };
        }
        Plan::Normal
    }

    /// A write of entries (an append, a start, a closing write) under the plan `enter` draws:
    /// it fails or the process dies before the store applies it; once applied, it is checked
    /// against the lease as it was before (`checked`: the fence it was written under), its
    /// acknowledgement is an await point, and the plan may still fail it, kill the process, or
    /// (`tears`) damage its last entry as the process dies.
    async fn write_entries<T>(
        &self,
        run_id: &str,
        checked: Option<Option<Fence>>,
        tears: bool,
        op: impl FnOnce(&MemoryStore) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let plan = self.enter(true).await;
        match plan {
            Plan::ErrBefore => {
                return Err(JournalError::Io("sim: injected write failure".into()));
            }
            Plan::CrashBefore | Plan::Lost => return self.die().await,
            _ => {}
        }
        let before = checked.map(|fence| (fence, now(self.disk().run(run_id)).ok().flatten()));
        let result = op(self.disk());
        if result.is_ok() {
            if let Some((fence, before)) = &before {
                self.check_accepted(run_id, before.as_ref(), *fence);
            }
            self.acked().await;
            match plan {
                Plan::ErrAfter => {
                    return Err(JournalError::Io(
                        "sim: injected failure after the write".into(),
                    ));
                }
                Plan::CrashAfter => return self.die().await,
                Plan::TornWrite => {
                    if tears {
                        FaultStore::damage(&self.world, run_id, None);
                    }
                    return self.die().await;
                }
                _ => {}
            }
        }
        result
    }

    /// A lease operation (claim, renewal, release: no entries to tear) under the plan `enter`
    /// draws: it fails or the process dies before the store applies it, or the store applies it
    /// and the caller hears of a failure (`after`: what the message calls it) or never hears.
    async fn lease_op<T>(
        &self,
        what: &str,
        after: &str,
        op: impl FnOnce(&MemoryStore) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let plan = self.enter(true).await;
        match plan {
            Plan::ErrBefore => {
                return Err(JournalError::Io(format!("sim: injected {what} failure")));
            }
            Plan::CrashBefore | Plan::Lost | Plan::TornWrite => return self.die().await,
            _ => {}
        }
        let result = op(self.disk());
        match plan {
            Plan::ErrAfter => Err(JournalError::Io(format!(
                "sim: injected failure after the {after}"
            ))),
            Plan::CrashAfter => self.die().await,
            _ => result,
        }
    }

    /// The write is durable, its acknowledgement on its way: another await point (a process
    /// may stall here, holding a durable intent it has not acted on yet).
    async fn acked(&self) {
        if self.world.chance(300) {
            YieldOnce::new().await;
        }
    }

    /// The process dies here: it never hears back.
    async fn die<T>(&self) -> T {
        self.world.request_crash(current_task());
        std::future::pending().await
    }

    /// Checks a write the disk accepted against the lease as it was before the write.
    fn check_accepted(&self, run_id: &str, before: Option<&RunRecord>, fence: Option<Fence>) {
        let Some(before) = before else { return };
        match fence {
            Some(f) if f.epoch != before.epoch => self.world.violation(
                ViolationKind::StaleFenceAccepted,
                run_id,
                format!(
                    "an append under epoch {} was accepted while the run's epoch was {}",
                    f.epoch, before.epoch
                ),
            ),
            None if before.entries > 0 => self.world.violation(
                ViolationKind::UnfencedWrite,
                run_id,
                format!(
                    "an append without a fence was accepted at entry {}",
                    before.entries
                ),
            ),
            _ => {}
        }
    }

    /// Damages the last stored entry of `run_id` (a torn write or bit rot).
    pub(crate) fn damage(world: &World, run_id: &str, which: Option<usize>) {
        let mut entries = world.disk.entries(run_id);
        // Damaged once is enough (and a second flip of the same byte would repair it).
        if entries.is_empty() || world.is_corrupted(run_id) {
            return;
        }
        let i = which.unwrap_or(entries.len() - 1).min(entries.len() - 1);
        entries[i].hash.0[0] ^= 0x5a;
        world.disk.set_entries(run_id, entries);
        world.state().corrupted.insert(run_id.to_string());
    }
}

impl JournalStore for FaultStore {
    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(self.write_entries(run_id, Some(fence), true, move |d| {
            now(d.append(run_id, entries, fence))
        }))
    }

    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
        Box::pin(async move {
            if self.enter(false).await == Plan::ErrBefore {
                return Err(JournalError::Io("sim: injected read failure".into()));
            }
            let result = now(self.disk().load(run_id));
            if matches!(result, Ok(Some(_))) && self.world.is_corrupted(run_id) {
                self.world.violation(
                    ViolationKind::CorruptLoaded,
                    run_id,
                    "the store loaded damaged entries as valid",
                );
            }
            result
        })
    }

    fn run<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, JournalError>> {
        Box::pin(async move {
            if self.enter(false).await == Plan::ErrBefore {
                return Err(JournalError::Io("sim: injected read failure".into()));
            }
            now(self.disk().run(run_id))
        })
    }

    fn runs<'a>(
        &'a self,
        query: &'a RunQuery,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, JournalError>> {
        Box::pin(async move {
            if self.enter(false).await == Plan::ErrBefore {
                return Err(JournalError::Io("sim: injected read failure".into()));
            }
            now(self.disk().runs(query))
        })
    }

    fn claim<'a>(
        &'a self,
        program: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        Box::pin(self.lease_op("claim", "claim", move |d| {
            now(d.claim(program, worker, now_ms, lease_ms))
        }))
    }

    fn claim_versions<'a>(
        &'a self,
        program: &'a str,
        hashes: &'a [Digest],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        Box::pin(self.lease_op("claim", "claim", move |d| {
            now(d.claim_versions(program, hashes, worker, now_ms, lease_ms))
        }))
    }

    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        Box::pin(self.lease_op("renew", "renewal", move |d| {
            now(d.renew(lease, now_ms, lease_ms))
        }))
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(self.lease_op("release", "release", move |d| now(d.release(lease))))
    }

    fn claim_run<'a>(
        &'a self,
        run_id: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        Box::pin(self.lease_op("claim", "claim", move |d| {
            now(d.claim_run(run_id, worker, now_ms, lease_ms))
        }))
    }

    /// The closing write: entries and the lease given back in one transaction, faulted like an
    /// append (a torn closing write damages its last entry), checked like a fenced append.
    fn append_release<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        let written = !entries.is_empty();
        let checked = written.then(|| Some(lease.fence()));
        Box::pin(self.write_entries(run_id, checked, written, move |d| {
            now(d.append_release(run_id, entries, lease))
        }))
    }

    fn start_run<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        Box::pin(self.write_entries(run_id, None, true, move |d| {
            now(d.start_run(run_id, entries, worker, now_ms, lease_ms))
        }))
    }
}
