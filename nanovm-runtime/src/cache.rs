//! [`CachedModel`]: a response cache in front of any [`Model`].

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::model::{Model, ModelError, ModelReply, ModelRequest};
use crate::program::BoxFuture;
use crate::value::Digest;

/// Counters of a [`CachedModel`] since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests passed to the inner model (successful or not).
    pub misses: u64,
    /// Misses whose reply was an error (and so was not cached).
    pub errors: u64,
    /// Requests that found an identical request in flight and waited for it.
    pub coalesced: u64,
    /// Entries dropped to stay within the entry bound.
    pub evictions: u64,
    /// Entries currently held in memory.
    pub entries: u64,
    /// Entries loaded from the file when it was opened.
    pub loaded: u64,
    /// File lines skipped on open because they did not parse (a torn last line, typically).
    pub skipped_lines: u64,
    /// Appends to the file that failed.
    pub write_errors: u64,
}

/// One line of the cache file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    key: Digest,
    text: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    /// Absent when false (files written before the flag existed read as reported counts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    tokens_estimated: bool,
    /// The answer's probability, when the server gave log-probabilities: a `min_confidence`
    /// judges a cached answer exactly as it judged the live one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    probability: Option<f64>,
    /// What the server really sent, when it differs from `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    raw_text: Option<String>,
    /// The constraint mode the answer was decoded under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    constraint: Option<String>,
}

#[derive(Default)]
struct Store {
    map: HashMap<Digest, ModelReply>,
    /// Insertion order, for FIFO eviction (holds each key in `map` exactly once).
    order: VecDeque<Digest>,
    stats: CacheStats,
}

struct FileStore {
    path: PathBuf,
    file: File,
    /// The file ends in the middle of a line: start the next append on a new one.
    needs_newline: bool,
}

/// A [`Model`] that answers repeated identical requests from a cache.
///
/// Entries are keyed by [`ModelRequest::cache_key`] (blake3 of the canonical request: model,
/// system, prompt, max_tokens, choices; not the step name), optionally mixed with a
/// [namespace](CachedModel::with_namespace) that stands for the adapter configuration the key
/// does not see (endpoint, default model, temperature, seed).
///
/// * A hit is answered without calling the inner model and comes back with
///   `cache_hit: true`, which the trace records. Its token counts are those of the original
///   reply, so budgets behave the same on a cold and a warm run.
/// * Only successful replies are stored; errors are never cached.
/// * Identical requests in flight at the same time are coalesced (single-flight): at most one
///   inner call per key runs at a time, and the requests that waited are answered from the
///   cache once it succeeds (if it fails, the next waiter makes its own call).
/// * Storage is in memory, optionally bounded ([`with_max_entries`](CachedModel::with_max_entries),
///   oldest entry evicted first), and optionally backed by an append-only JSONL file
///   ([`with_file`](CachedModel::with_file)) so reruns of examples and CI jobs hit.
///
/// # File format
///
/// One JSON object per line, appended as replies arrive:
///
/// ```text
/// {"key":"<64 hex digits>","text":"refund","prompt_tokens":12,"completion_tokens":1}
/// ```
///
/// On open, every line is loaded (a later line for the same key wins). A line that does not
/// parse, typically the last one torn by a crash mid-write, is skipped and counted in
/// [`CacheStats::skipped_lines`]; the next append starts on a fresh line. One file should be
/// written by one process at a time; the file grows without bound (the in-memory bound does
/// not compact it). A failed append is counted in [`CacheStats::write_errors`] and does not fail
/// the model call.
pub struct CachedModel<M: Model> {
    inner: M,
    namespace: Option<String>,
    max_entries: Option<usize>,
    store: Mutex<Store>,
    file: Option<Mutex<FileStore>>,
    /// Per-key locks of the calls in flight (single-flight).
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl<M: Model> std::fmt::Debug for CachedModel<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedModel")
            .field("namespace", &self.namespace)
            .field("max_entries", &self.max_entries)
            .field("file", &self.file.as_ref().map(|f| lock(f).path.clone()))
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering from poisoning (the data is a cache: always consistent between
/// statements).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<M: Model> CachedModel<M> {
    /// An unbounded in-memory cache in front of `inner`.
    pub fn new(inner: M) -> Self {
        CachedModel {
            inner,
            namespace: None,
            max_entries: None,
            store: Mutex::new(Store::default()),
            file: None,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps at most `max` entries in memory (at least 1), evicting the oldest first. Entries
    /// already held beyond the bound are evicted now.
    pub fn with_max_entries(mut self, max: usize) -> Self {
        let max = max.max(1);
        self.max_entries = Some(max);
        let store = self.store.get_mut().unwrap_or_else(|e| e.into_inner());
        evict(store, max);
        self
    }

    /// Mixes `namespace` into every key, so caches (or one shared file) in front of differently
    /// configured adapters (another endpoint, default model, temperature or seed) never answer
    /// for each other. Set it before [`with_file`](Self::with_file) and keep it stable across
    /// runs.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Backs the cache with the JSONL file at `path` (created if missing): loads its entries
    /// now and appends every new one. Lines that do not parse are skipped and counted.
    pub fn with_file(mut self, path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut bytes)?;
        let needs_newline = bytes.last().is_some_and(|b| *b != b'\n');

        let store = self.store.get_mut().unwrap_or_else(|e| e.into_inner());
        for line in bytes.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<FileEntry>(line) {
                Ok(e) => {
                    let reply = ModelReply {
                        text: e.text,
                        prompt_tokens: e.prompt_tokens,
                        completion_tokens: e.completion_tokens,
                        cache_hit: false,
                        tokens_estimated: e.tokens_estimated,
                        probability: e.probability,
                        raw_text: e.raw_text,
                        constraint: e.constraint,
                    };
                    insert(store, e.key, reply, self.max_entries);
                    store.stats.loaded += 1;
                }
                Err(_) => store.stats.skipped_lines += 1,
            }
        }
        self.file = Some(Mutex::new(FileStore {
            path,
            file,
            needs_newline,
        }));
        Ok(self)
    }

    /// The wrapped model.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        let store = lock(&self.store);
        let mut stats = store.stats;
        stats.entries = store.map.len() as u64;
        stats
    }

    /// The key `req` is cached under: [`ModelRequest::cache_key`], mixed with the namespace if
    /// one is set.
    pub fn key(&self, req: &ModelRequest) -> Digest {
        let key = req.cache_key();
        match &self.namespace {
            None => key,
            Some(ns) => {
                let mut e = crate::canonical::Encoder::new();
                e.tag(2).str(ns).digest(&key);
                Digest::of(e.bytes())
            }
        }
    }

    /// Forgets every in-memory entry (the file, if any, is left alone).
    pub fn clear(&self) {
        let mut store = lock(&self.store);
        store.map.clear();
        store.order.clear();
    }

    fn lookup(&self, key: &Digest) -> Option<ModelReply> {
        let mut store = lock(&self.store);
        let mut reply = store.map.get(key).cloned()?;
        store.stats.hits += 1;
        reply.cache_hit = true;
        Some(reply)
    }

    fn remember(&self, key: Digest, reply: &ModelReply) {
        let stored = ModelReply {
            cache_hit: false,
            ..reply.clone()
        };
        insert(&mut lock(&self.store), key, stored, self.max_entries);
        if let Some(file) = &self.file {
            let line = serde_json::to_string(&FileEntry {
                key,
                text: reply.text.clone(),
                prompt_tokens: reply.prompt_tokens,
                completion_tokens: reply.completion_tokens,
                tokens_estimated: reply.tokens_estimated,
                probability: reply.probability.filter(|p| p.is_finite()),
                raw_text: reply.raw_text.clone(),
                constraint: reply.constraint.clone(),
            });
            let mut f = lock(file);
            let written = line.map_err(io::Error::other).and_then(|line| {
                let mut buf = Vec::with_capacity(line.len() + 2);
                if f.needs_newline {
                    buf.push(b'\n');
                }
                buf.extend_from_slice(line.as_bytes());
                buf.push(b'\n');
                // One write per entry: a crash tears at most this line.
                f.file.write_all(&buf)
            });
            match written {
                Ok(()) => f.needs_newline = false,
                Err(_) => {
                    // A partial write may have left half a line: fence it off next time.
                    f.needs_newline = true;
                    drop(f);
                    lock(&self.store).stats.write_errors += 1;
                }
            }
        }
    }

    async fn call(&self, req: &ModelRequest) -> Result<ModelReply, ModelError> {
        let key = self.key(req);
        if let Some(hit) = self.lookup(&key) {
            return Ok(hit);
        }

        // Single-flight: take the key's lock; whoever held it may have filled the cache.
        let key_lock = {
            let mut inflight = lock(&self.inflight);
            let entry = inflight.entry(key).or_default();
            if Arc::strong_count(entry) > 1 {
                lock(&self.store).stats.coalesced += 1;
            }
            Arc::clone(entry)
        };
        let _flight = InflightGuard {
            cache: self,
            key,
            lock: &key_lock,
        };
        let _guard = key_lock.lock().await;
        if let Some(hit) = self.lookup(&key) {
            return Ok(hit);
        }

        lock(&self.store).stats.misses += 1;
        let result = self.inner.complete(req).await;
        match &result {
            Ok(reply) => self.remember(key, reply),
            Err(_) => lock(&self.store).stats.errors += 1,
        }
        result
    }
}

/// Removes a key's in-flight entry once nobody else holds it, also when the request future is
/// dropped mid-call.
struct InflightGuard<'a, M: Model> {
    cache: &'a CachedModel<M>,
    key: Digest,
    lock: &'a Arc<tokio::sync::Mutex<()>>,
}

impl<M: Model> Drop for InflightGuard<'_, M> {
    fn drop(&mut self) {
        let mut inflight = lock(&self.cache.inflight);
        // Clones are only made under this mutex: the map's and ours means no one is waiting.
        if Arc::strong_count(self.lock) <= 2 {
            inflight.remove(&self.key);
        }
    }
}

fn insert(store: &mut Store, key: Digest, reply: ModelReply, max: Option<usize>) {
    if store.map.insert(key, reply).is_none() {
        store.order.push_back(key);
    }
    if let Some(max) = max {
        evict(store, max);
    }
}

fn evict(store: &mut Store, max: usize) {
    while store.map.len() > max {
        let Some(oldest) = store.order.pop_front() else {
            break;
        };
        if store.map.remove(&oldest).is_some() {
            store.stats.evictions += 1;
        }
    }
}

impl<M: Model> Model for CachedModel<M> {
    fn complete<'a>(
        &'a self,
        req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        Box::pin(self.call(req))
    }

    fn check_program(&self, program: &crate::program::ProgramInfo) -> Result<(), ModelError> {
        self.inner.check_program(program)
    }
}
