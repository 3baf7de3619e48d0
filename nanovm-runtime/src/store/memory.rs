//! [`MemoryStore`]: a [`JournalStore`] in memory, for tests and benchmarks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::append::{Batch, Tip, check_append, check_loaded, pin, started};
use super::{
    FeedItem, FeedPos, Fence, JournalError, JournalStore, Lease, LogLeaf, Reference, RunQuery,
    RunRecord,
};
use crate::db::wall_ms;
use crate::program::BoxFuture;
use crate::trace::{Entry, RunStatus, Trace, secret_inputs};
use crate::value::Digest;
use crate::view::RunView;

/// A [`JournalStore`] in memory: for tests and benchmarks (nothing survives the process).
///
/// Clones share the same store. It counts appends (durable writes) and can be told to fail, to
/// exercise error paths; [`MemoryStore::set_entries`] plants or truncates a run's entries (a
/// crash, a recorded prefix, or damage: [`JournalStore::load`] re-verifies the chain, so a
/// planted broken chain loads as [`JournalError::Corrupt`]).
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    appends: AtomicUsize,
    /// Appends after this many successful ones fail (`usize::MAX`: never).
    fail_after: AtomicUsize,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            state: Mutex::default(),
            appends: AtomicUsize::new(0),
            fail_after: AtomicUsize::new(usize::MAX),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    runs: HashMap<String, Run>,
    /// Run ids in creation order.
    order: Vec<String>,
    /// The evidence log: (run id, leaf).
    log: Vec<(String, Vec<u8>)>,
    /// The latest signed tree head: (size, JSON).
    head: Option<(u64, String)>,
    /// The erasure index's subject links: (subject, run id).
    subjects: Vec<(String, String)>,
    /// The feed: (run id, seq) in append order; an item's position is its index + 1.
    feed: Vec<(String, u64)>,
}

impl State {
    fn feed(&mut self, run_id: &str, entries: &[Entry]) {
        self.feed
            .extend(entries.iter().map(|e| (run_id.to_string(), e.seq)));
    }
}

#[derive(Debug)]
struct Run {
    record: RunRecord,
    entries: Vec<Entry>,
}

impl State {
    fn create(&mut self, run_id: &str, program: String, program_hash: Digest) -> &mut Run {
        let now = wall_ms();
        self.order.push(run_id.to_string());
        self.runs.entry(run_id.to_string()).or_insert(Run {
            record: RunRecord {
                run_id: run_id.to_string(),
                program,
                program_hash,
                status: RunStatus::Running,
                entries: 0,
                end_step: None,
                message: None,
                waiting_for: None,
                deadline_ms: None,
                epoch: 0,
                lease_owner: None,
                lease_expires_ms: None,
                created_ms: now,
                updated_ms: now,
            },
            entries: Vec::new(),
        })
    }
}

impl Run {
    fn tip(&self) -> Tip {
        Tip {
            at_rest: self.record.status != RunStatus::Running,
            entries: self.entries.len() as u64,
            last_hash: self.entries.last().map_or(Digest::ZERO, |e| e.hash),
            epoch: self.record.epoch,
        }
    }

    fn view(&self) -> RunView {
        let r = &self.record;
        RunView::from_record(
            r.status,
            r.end_step.clone(),
            r.message.clone(),
            r.waiting_for.clone(),
            r.deadline_ms,
        )
    }

    /// Adds entries (already checked) and moves the record along their events.
    fn extend(&mut self, entries: &[Entry]) {
        let mut view = self.view();
        for e in entries {
            view.apply_status(&e.event);
        }
        self.entries.extend_from_slice(entries);
        let r = &mut self.record;
        (
            r.status,
            r.end_step,
            r.message,
            r.waiting_for,
            r.deadline_ms,
        ) = view.into_record();
        r.entries = self.entries.len() as u64;
        r.updated_ms = wall_ms();
        // A migration pins the run to its new program: the record follows.
        if let Some(to) = pin(entries) {
            r.program_hash = to;
        }
    }
}

fn fenced(run_id: &str, held: u64, current: u64) -> JournalError {
    JournalError::Fenced {
        run_id: run_id.to_string(),
        held,
        current,
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The number of successful `append` calls so far (each is one durable write).
    pub fn appends(&self) -> usize {
        self.shared.appends.load(Ordering::SeqCst)
    }

    /// The stored entries of a run (empty if unknown), as stored (not verified).
    pub fn entries(&self, run_id: &str) -> Vec<Entry> {
        self.state()
            .runs
            .get(run_id)
            .map(|r| r.entries.clone())
            .unwrap_or_default()
    }

    /// Makes every append after the next `n` successful ones fail with [`JournalError::Io`].
    pub fn fail_after(&self, n: usize) {
        let done = self.appends();
        self.shared
            .fail_after
            .store(done.saturating_add(n), Ordering::SeqCst);
    }

    /// Replaces a run's stored entries, unchecked (tests: simulate a crash by truncating, plant
    /// a recorded prefix, or damage a run). The record's status fields are recomputed from the
    /// entries; lease and epoch are kept.
    pub fn set_entries(&self, run_id: &str, entries: Vec<Entry>) {
        let mut s = self.state();
        let (program, hash) = entries
            .first()
            .and_then(|e| started(&e.event))
            .map_or((String::new(), Digest::ZERO), |(p, h)| (p.to_string(), h));
        if !s.runs.contains_key(run_id) {
            s.create(run_id, program.clone(), hash);
        }
        let Some(run) = s.runs.get_mut(run_id) else {
            return;
        };
        run.record.program = program;
        run.record.program_hash = hash;
        run.entries.clear();
        run.record.status = RunStatus::Running;
        run.record.end_step = None;
        run.record.message = None;
        run.record.waiting_for = None;
        run.record.deadline_ms = None;
        run.extend(&entries);
    }

    fn append_now(
        &self,
        run_id: &str,
        entries: &[Entry],
        fence: Option<Fence>,
    ) -> Result<(), JournalError> {
        if entries.is_empty() {
            return Ok(());
        }
        if self.appends() >= self.shared.fail_after.load(Ordering::SeqCst) {
            return Err(JournalError::Io("MemoryStore told to fail".into()));
        }
        let mut s = self.state();
        let tip = s.runs.get(run_id).map(Run::tip);
        check_append(run_id, tip.as_ref(), entries, fence)?;
        let run = match s.runs.get_mut(run_id) {
            Some(run) => run,
            None => {
                let (program, hash) = started(&entries[0].event)
                    .map_or((String::new(), Digest::ZERO), |(p, h)| (p.to_string(), h));
                s.create(run_id, program, hash)
            }
        };
        run.extend(entries);
        s.feed(run_id, entries);
        self.shared.appends.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// [`JournalStore::start_run`]: the append and the lease under one lock (counted as one
    /// append, and failing like one when told to).
    fn start_run_now(
        &self,
        run_id: &str,
        entries: &[Entry],
        worker: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Lease, JournalError> {
        if self.appends() >= self.shared.fail_after.load(Ordering::SeqCst) {
            return Err(JournalError::Io("MemoryStore told to fail".into()));
        }
        let mut s = self.state();
        let tip = s.runs.get(run_id).map(Run::tip);
        Batch::new(run_id, entries).check_start(tip.as_ref())?;
        let (program, hash) = started(&entries[0].event)
            .map_or((String::new(), Digest::ZERO), |(p, h)| (p.to_string(), h));
        let run = s.create(run_id, program, hash);
        run.extend(entries);
        let r = &mut run.record;
        let expires_ms = now_ms.saturating_add(lease_ms);
        r.epoch += 1;
        r.lease_owner = Some(worker.to_string());
        r.lease_expires_ms = Some(expires_ms);
        let lease = Lease {
            run_id: run_id.to_string(),
            epoch: r.epoch,
            worker: worker.to_string(),
            expires_ms,
        };
        s.feed(run_id, entries);
        self.shared.appends.fetch_add(1, Ordering::SeqCst);
        Ok(lease)
    }

    /// [`JournalStore::append_release`]: the append and the release under one lock (counted as
    /// one append, and failing like one when told to; an empty batch only releases).
    fn append_release_now(
        &self,
        run_id: &str,
        entries: &[Entry],
        lease: &Lease,
    ) -> Result<(), JournalError> {
        if !entries.is_empty() && self.appends() >= self.shared.fail_after.load(Ordering::SeqCst) {
            return Err(JournalError::Io("MemoryStore told to fail".into()));
        }
        let mut s = self.state();
        if !crate::mutant(crate::Mutant::AppendWithoutFence) {
            Self::held(&mut s, lease)?;
        }
        let run = s
            .runs
            .get_mut(run_id)
            .filter(|_| lease.run_id == run_id)
            .ok_or_else(|| fenced(run_id, lease.epoch, 0))?;
        if !entries.is_empty() {
            check_append(run_id, Some(&run.tip()), entries, Some(lease.fence()))?;
            run.extend(entries);
            self.shared.appends.fetch_add(1, Ordering::SeqCst);
        }
        let r = &mut run.record;
        r.lease_owner = None;
        r.lease_expires_ms = None;
        r.updated_ms = wall_ms();
        s.feed(run_id, entries);
        Ok(())
    }

    fn load_now(&self, run_id: &str) -> Result<Option<Vec<Entry>>, JournalError> {
        let Some(entries) = self.state().runs.get(run_id).map(|r| r.entries.clone()) else {
            return Ok(None);
        };
        match Trace::from_entries(entries) {
            Ok(t) => {
                // The memory store keeps no last hash apart from its entries.
                check_loaded(run_id, t.entries(), None)?;
                Ok(Some(t.into_entries()))
            }
            Err(e) => Err(JournalError::Corrupt {
                run_id: run_id.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    fn runs_now(&self, q: &RunQuery) -> Vec<RunRecord> {
        let s = self.state();
        s.order
            .iter()
            .filter_map(|id| s.runs.get(id))
            .map(|r| &r.record)
            .filter(|r| q.program.as_ref().is_none_or(|p| *p == r.program))
            .filter(|r| q.status.is_none_or(|st| st == r.status))
            .take(q.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    fn claim_now(&self, program: &str, worker: &str, now_ms: u64, lease_ms: u64) -> Option<Lease> {
        self.claim_matching(program, None, worker, now_ms, lease_ms)
    }

    /// The oldest claimable run of `program` (recorded under one of `hashes`, if given).
    fn claim_matching(
        &self,
        program: &str,
        hashes: Option<&[Digest]>,
        worker: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Option<Lease> {
        let mut s = self.state();
        let State { runs, order, .. } = &mut *s;
        let run = order.iter().filter_map(|id| runs.get(id)).find(|r| {
            let r = &r.record;
            let wants_worker = r.status == RunStatus::Running
                || (r.status == RunStatus::Suspended && r.deadline_ms.is_some_and(|d| d <= now_ms));
            r.program == program
                && hashes.is_none_or(|h| h.contains(&r.program_hash))
                && r.entries > 0
                && wants_worker
                && r.lease_expires_ms.is_none_or(|e| e <= now_ms)
        })?;
        let id = run.record.run_id.clone();
        let r = &mut runs.get_mut(&id)?.record;
        r.epoch += 1;
        r.lease_owner = Some(worker.to_string());
        r.lease_expires_ms = Some(now_ms.saturating_add(lease_ms));
        r.updated_ms = wall_ms();
        Some(Lease {
            run_id: id,
            epoch: r.epoch,
            worker: worker.to_string(),
            expires_ms: now_ms.saturating_add(lease_ms),
        })
    }

    fn claim_run_now(
        &self,
        run_id: &str,
        worker: &str,
        now_ms: u64,
        lease_ms: u64,
    ) -> Option<Lease> {
        let mut s = self.state();
        let r = &mut s.runs.get_mut(run_id)?.record;
        if r.lease_expires_ms.is_some_and(|e| e > now_ms) {
            return None;
        }
        let expires_ms = now_ms.saturating_add(lease_ms);
        r.epoch += 1;
        r.lease_owner = Some(worker.to_string());
        r.lease_expires_ms = Some(expires_ms);
        r.updated_ms = wall_ms();
        Some(Lease {
            run_id: run_id.to_string(),
            epoch: r.epoch,
            worker: worker.to_string(),
            expires_ms,
        })
    }

    /// The record of a run whose lease `lease` still is, for renew and release.
    fn held<'s>(s: &'s mut State, lease: &Lease) -> Result<&'s mut RunRecord, JournalError> {
        let Some(run) = s.runs.get_mut(&lease.run_id) else {
            return Err(fenced(&lease.run_id, lease.epoch, 0));
        };
        let r = &mut run.record;
        if r.epoch != lease.epoch || r.lease_owner.as_deref() != Some(lease.worker.as_str()) {
            return Err(fenced(&lease.run_id, lease.epoch, r.epoch));
        }
        Ok(r)
    }
}

impl JournalStore for MemoryStore {
    fn log_append<'a>(
        &'a self,
        run_id: &'a str,
        data: &'a [u8],
    ) -> BoxFuture<'a, Result<u64, JournalError>> {
        let mut s = self.state();
        s.log.push((run_id.to_string(), data.to_vec()));
        let index = s.log.len() as u64 - 1;
        Box::pin(std::future::ready(Ok(index)))
    }

    fn feed<'a>(
        &'a self,
        after: Option<FeedPos>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<FeedItem>, JournalError>> {
        let s = self.state();
        let from = after.map_or(0, |p| usize::try_from(p.minor).unwrap_or(usize::MAX));
        let items = s
            .feed
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(_, (run_id, _))| !run_id.is_empty())
            .take(limit)
            .map(|(i, (run_id, seq))| FeedItem {
                pos: FeedPos {
                    major: 0,
                    minor: i as u64 + 1,
                },
                run_id: run_id.clone(),
                seq: *seq,
            })
            .collect();
        Box::pin(std::future::ready(Ok(items)))
    }

    fn log<'a>(&'a self, from: u64) -> BoxFuture<'a, Result<Vec<LogLeaf>, JournalError>> {
        let s = self.state();
        let leaves = s
            .log
            .iter()
            .enumerate()
            .skip(usize::try_from(from).unwrap_or(usize::MAX))
            .map(|(i, (run_id, data))| LogLeaf {
                index: i as u64,
                run_id: run_id.clone(),
                data: data.clone(),
            })
            .collect();
        Box::pin(std::future::ready(Ok(leaves)))
    }

    fn put_head<'a>(&'a self, size: u64, head: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        let mut s = self.state();
        if s.head.as_ref().is_none_or(|(n, _)| *n <= size) {
            s.head = Some((size, head.to_string()));
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn head<'a>(&'a self) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        let h = self.state().head.as_ref().map(|(_, h)| h.clone());
        Box::pin(std::future::ready(Ok(h)))
    }

    fn link_subject<'a>(
        &'a self,
        run_id: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        let mut s = self.state();
        let link = (subject.to_string(), run_id.to_string());
        if !s.subjects.contains(&link) {
            s.subjects.push(link);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn link_sole_subject<'a>(
        &'a self,
        run_id: &'a str,
        subject: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, JournalError>> {
        let mut s = self.state();
        let mine = s
            .subjects
            .iter()
            .any(|(sub, r)| sub == subject && r == run_id);
        let other = s
            .subjects
            .iter()
            .find(|(sub, r)| sub != subject && r == run_id)
            .map(|(sub, _)| sub.clone());
        let out = match (mine, other) {
            (true, _) => None,
            (false, Some(other)) => Some(other),
            (false, None) => {
                s.subjects.push((subject.to_string(), run_id.to_string()));
                None
            }
        };
        Box::pin(std::future::ready(Ok(out)))
    }

    /// The memory store answers from its runs themselves (a scan: it is for tests).
    fn referencing<'a>(
        &'a self,
        what: &'a Reference,
    ) -> BoxFuture<'a, Result<Vec<String>, JournalError>> {
        let s = self.state();
        let found = s
            .order
            .iter()
            .filter(|id| match what {
                Reference::Subject(subject) => {
                    s.subjects.iter().any(|(sub, r)| sub == subject && r == *id)
                }
                Reference::Secret(vault_id) => s.runs.get(*id).is_some_and(|r| {
                    r.entries
                        .first()
                        .is_some_and(|e| secret_inputs(&e.event).contains(vault_id))
                }),
            })
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn unlink_subject<'a>(&'a self, subject: &'a str) -> BoxFuture<'a, Result<(), JournalError>> {
        self.state().subjects.retain(|(s, _)| s != subject);
        Box::pin(std::future::ready(Ok(())))
    }

    fn delete_run<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        let mut s = self.state();
        let out = Self::held(&mut s, lease).map(|_| ());
        if out.is_ok() {
            let id = lease.run_id.as_str();
            s.runs.remove(id);
            s.order.retain(|r| r != id);
            s.subjects.retain(|(_, r)| r != id);
            // The feed names only what the store still holds; positions stay where they are.
            for item in s.feed.iter_mut().filter(|(r, _)| r == id) {
                item.0.clear();
            }
        }
        Box::pin(std::future::ready(out))
    }

    fn append<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        fence: Option<Fence>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(std::future::ready(self.append_now(run_id, entries, fence)))
    }

    fn load<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<Entry>>, JournalError>> {
        Box::pin(std::future::ready(self.load_now(run_id)))
    }

    fn run<'a>(
        &'a self,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<RunRecord>, JournalError>> {
        let r = self.state().runs.get(run_id).map(|r| r.record.clone());
        Box::pin(std::future::ready(Ok(r)))
    }

    fn runs<'a>(
        &'a self,
        query: &'a RunQuery,
    ) -> BoxFuture<'a, Result<Vec<RunRecord>, JournalError>> {
        Box::pin(std::future::ready(Ok(self.runs_now(query))))
    }

    fn claim<'a>(
        &'a self,
        program: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        let l = self.claim_now(program, worker, now_ms, lease_ms);
        Box::pin(std::future::ready(Ok(l)))
    }

    fn claim_versions<'a>(
        &'a self,
        program: &'a str,
        hashes: &'a [Digest],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        let l = self.claim_matching(program, Some(hashes), worker, now_ms, lease_ms);
        Box::pin(std::future::ready(Ok(l)))
    }

    fn renew<'a>(
        &'a self,
        lease: &'a Lease,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        let mut s = self.state();
        let r = Self::held(&mut s, lease).map(|r| {
            let expires_ms = now_ms.saturating_add(lease_ms);
            r.lease_expires_ms = Some(expires_ms);
            r.updated_ms = wall_ms();
            Lease {
                expires_ms,
                ..lease.clone()
            }
        });
        Box::pin(std::future::ready(r))
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), JournalError>> {
        let mut s = self.state();
        let r = Self::held(&mut s, lease).map(|r| {
            r.lease_owner = None;
            r.lease_expires_ms = None;
            r.updated_ms = wall_ms();
        });
        Box::pin(std::future::ready(r))
    }

    fn claim_run<'a>(
        &'a self,
        run_id: &'a str,
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Lease>, JournalError>> {
        let l = self.claim_run_now(run_id, worker, now_ms, lease_ms);
        Box::pin(std::future::ready(Ok(l)))
    }

    fn start_run<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        worker: &'a str,
        now_ms: u64,
        lease_ms: u64,
    ) -> BoxFuture<'a, Result<Lease, JournalError>> {
        let l = self.start_run_now(run_id, entries, worker, now_ms, lease_ms);
        Box::pin(std::future::ready(l))
    }

    fn append_release<'a>(
        &'a self,
        run_id: &'a str,
        entries: &'a [Entry],
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(std::future::ready(
            self.append_release_now(run_id, entries, lease),
        ))
    }
}
