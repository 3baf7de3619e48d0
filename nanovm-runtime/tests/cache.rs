//! `CachedModel`: keys, hits, errors, the JSONL file store, single-flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nanovm_runtime::BoxFuture;
use nanovm_runtime::CachedModel;
use nanovm_runtime::model::{Model, ModelError, ModelReply, ModelRequest};

/// Counts its calls; answers `echo:<prompt>` with made-up token counts, or fails on demand.
#[derive(Default)]
struct Counting {
    calls: AtomicUsize,
    fail: AtomicBool,
}

impl Counting {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// The test side keeps an `Arc` to read the counters; the cache owns the other.
struct Shared<T>(Arc<T>);

impl Model for Shared<Counting> {
    fn complete<'a>(
        &'a self,
        req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        Box::pin(async move {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            if self.0.fail.load(Ordering::SeqCst) {
                return Err(ModelError::transient("boom"));
            }
            Ok(ModelReply {
                text: format!("echo:{}", req.prompt),
                prompt_tokens: req.prompt.len() as u64,
                completion_tokens: 2,
                cache_hit: false,
                tokens_estimated: false,
                probability: None,
                raw_text: None,
                constraint: None,
            })
        })
    }
}

fn request(prompt: &str) -> ModelRequest {
    ModelRequest {
        step: "s".into(),
        model: None,
        system: None,
        prompt: prompt.into(),
        max_tokens: None,
        choices: None,
        instruction: None,
        min_confidence: None,
        answer: None,
    }
}

fn counting() -> (Arc<Counting>, CachedModel<Shared<Counting>>) {
    let inner = Arc::new(Counting::default());
    (inner.clone(), CachedModel::new(Shared(inner)))
}

#[tokio::test]
async fn a_repeated_request_is_answered_from_the_cache() {
    let (inner, cache) = counting();
    let first = cache.complete(&request("hello")).await.unwrap();
    let second = cache.complete(&request("hello")).await.unwrap();
    assert_eq!(inner.calls(), 1);
    assert!(!first.cache_hit);
    assert!(second.cache_hit);
    // Same text and token counts: budgets see the same numbers cold and warm.
    assert_eq!(
        second,
        ModelReply {
            cache_hit: true,
            ..first
        }
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
}

#[tokio::test]
async fn the_step_name_is_not_part_of_the_key() {
    let (inner, cache) = counting();
    cache.complete(&request("hello")).await.unwrap();
    let other_step = ModelRequest {
        step: "another_step".into(),
        ..request("hello")
    };
    assert!(cache.complete(&other_step).await.unwrap().cache_hit);
    assert_eq!(inner.calls(), 1);
}

#[tokio::test]
async fn any_difference_the_model_would_see_is_a_miss() {
    let (inner, cache) = counting();
    let base = request("hello");
    let variants = [
        base.clone(),
        ModelRequest {
            prompt: "hello!".into(),
            ..base.clone()
        },
        ModelRequest {
            model: Some("other-model".into()),
            ..base.clone()
        },
        ModelRequest {
            system: Some("be brief".into()),
            ..base.clone()
        },
        ModelRequest {
            system: Some(String::new()),
            ..base.clone()
        },
        ModelRequest {
            max_tokens: Some(10),
            ..base.clone()
        },
        ModelRequest {
            choices: Some(&["a", "b"]),
            ..base.clone()
        },
        ModelRequest {
            choices: Some(&["a", "b", "c"]),
            ..base.clone()
        },
    ];
    for v in &variants {
        assert!(!cache.complete(v).await.unwrap().cache_hit, "{v:?}");
    }
    assert_eq!(inner.calls(), variants.len());
    // And each of them is now a hit.
    for v in &variants {
        assert!(cache.complete(v).await.unwrap().cache_hit, "{v:?}");
    }
    assert_eq!(inner.calls(), variants.len());
}

#[tokio::test]
async fn errors_are_not_cached() {
    let (inner, cache) = counting();
    inner.fail.store(true, Ordering::SeqCst);
    let err = cache.complete(&request("x")).await.unwrap_err();
    assert!(err.retryable);
    cache.complete(&request("x")).await.unwrap_err();
    assert_eq!(inner.calls(), 2);

    inner.fail.store(false, Ordering::SeqCst);
    assert!(!cache.complete(&request("x")).await.unwrap().cache_hit);
    assert!(cache.complete(&request("x")).await.unwrap().cache_hit);
    assert_eq!(inner.calls(), 3);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (1, 3, 2));
}

#[tokio::test]
async fn an_inner_cache_hit_flag_passes_through_on_a_miss() {
    // Two layers: the outer one misses, the inner one hits; the reply still says cache_hit.
    let inner = Arc::new(Counting::default());
    let two = CachedModel::new(CachedModel::new(Shared(inner.clone())));
    two.inner().complete(&request("x")).await.unwrap();
    assert!(two.complete(&request("x")).await.unwrap().cache_hit);
    assert_eq!(inner.calls(), 1);
}

#[tokio::test]
async fn the_bound_evicts_oldest_first() {
    let (inner, cache) = counting();
    let cache = cache.with_max_entries(2);
    for p in ["a", "b", "c"] {
        cache.complete(&request(p)).await.unwrap();
    }
    assert_eq!(cache.stats().evictions, 1);
    assert_eq!(cache.stats().entries, 2);
    assert!(cache.complete(&request("c")).await.unwrap().cache_hit);
    assert!(cache.complete(&request("b")).await.unwrap().cache_hit);
    assert!(!cache.complete(&request("a")).await.unwrap().cache_hit); // evicted; evicts b
    assert!(!cache.complete(&request("b")).await.unwrap().cache_hit);
    assert_eq!(inner.calls(), 5);
}

#[tokio::test]
async fn namespaces_separate_otherwise_identical_requests() {
    let inner = Arc::new(Counting::default());
    let a = CachedModel::new(Shared(inner.clone())).with_namespace("endpoint-a");
    let b = CachedModel::new(Shared(inner.clone())).with_namespace("endpoint-b");
    let plain = CachedModel::new(Shared(inner.clone()));
    let req = request("x");
    assert_eq!(plain.key(&req), req.cache_key());
    assert_ne!(a.key(&req), req.cache_key());
    assert_ne!(a.key(&req), b.key(&req));
    assert_eq!(
        a.key(&req),
        CachedModel::new(Shared(inner.clone()))
            .with_namespace("endpoint-a")
            .key(&req)
    );
}

#[tokio::test]
async fn the_file_store_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.jsonl");

    let inner = Arc::new(Counting::default());
    {
        let cache = CachedModel::new(Shared(inner.clone()))
            .with_file(&path)
            .unwrap();
        cache.complete(&request("one")).await.unwrap();
        cache.complete(&request("two")).await.unwrap();
        cache.complete(&request("one")).await.unwrap(); // hit: not appended again
        inner.fail.store(true, Ordering::SeqCst);
        cache.complete(&request("three")).await.unwrap_err(); // not written
        inner.fail.store(false, Ordering::SeqCst);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.ends_with('\n'));
    assert!(
        text.contains(&request("one").cache_key().to_hex()),
        "{text}"
    );

    let inner2 = Arc::new(Counting::default());
    let cache = CachedModel::new(Shared(inner2.clone()))
        .with_file(&path)
        .unwrap();
    assert_eq!(cache.stats().loaded, 2);
    let one = cache.complete(&request("one")).await.unwrap();
    assert!(one.cache_hit);
    assert_eq!(
        (one.text.as_str(), one.prompt_tokens, one.completion_tokens),
        ("echo:one", 3, 2)
    );
    assert!(cache.complete(&request("two")).await.unwrap().cache_hit);
    assert!(!cache.complete(&request("three")).await.unwrap().cache_hit);
    assert_eq!(inner2.calls(), 1);
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
}

#[tokio::test]
async fn a_torn_last_line_is_skipped_and_fenced_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.jsonl");
    let inner = Arc::new(Counting::default());
    {
        let cache = CachedModel::new(Shared(inner.clone()))
            .with_file(&path)
            .unwrap();
        cache.complete(&request("kept")).await.unwrap();
    }
    // A crash in the middle of the next append.
    let key = request("torn").cache_key().to_hex();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(format!("{{\"key\":\"{key}\",\"text\":\"ec").as_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let cache = CachedModel::new(Shared(inner.clone()))
        .with_file(&path)
        .unwrap();
    let stats = cache.stats();
    assert_eq!((stats.loaded, stats.skipped_lines), (1, 1));
    assert!(cache.complete(&request("kept")).await.unwrap().cache_hit);
    assert!(!cache.complete(&request("torn")).await.unwrap().cache_hit);
    drop(cache);

    // The new entry went on a line of its own, so a third open reads both entries and still
    // skips only the torn fragment.
    let cache = CachedModel::new(Shared(inner.clone()))
        .with_file(&path)
        .unwrap();
    let stats = cache.stats();
    assert_eq!((stats.loaded, stats.skipped_lines), (2, 1));
    assert!(cache.complete(&request("torn")).await.unwrap().cache_hit);
    assert_eq!(inner.calls(), 2);
}

#[tokio::test]
async fn garbage_and_blank_lines_do_not_stop_loading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.jsonl");
    let key = request("x").cache_key().to_hex();
    std::fs::write(
        &path,
        format!(
            "not json\n\n{{\"key\":\"{key}\",\"text\":\"cached\",\"prompt_tokens\":1,\"completion_tokens\":1}}\n{{\"key\":\"XYZ\",\"text\":\"bad key\",\"prompt_tokens\":1,\"completion_tokens\":1}}\n"
        ),
    )
    .unwrap();
    let (inner, cache) = counting();
    let cache = cache.with_file(&path).unwrap();
    assert_eq!((cache.stats().loaded, cache.stats().skipped_lines), (1, 2));
    assert_eq!(cache.complete(&request("x")).await.unwrap().text, "cached");
    assert_eq!(inner.calls(), 0);
}

/// Blocks every call until released; counts calls that have started.
struct Gated {
    started: AtomicUsize,
    release: tokio::sync::Semaphore,
}

impl Gated {
    fn new() -> Self {
        Gated {
            started: AtomicUsize::new(0),
            release: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Model for Shared<Gated> {
    fn complete<'a>(
        &'a self,
        req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        Box::pin(async move {
            self.0.started.fetch_add(1, Ordering::SeqCst);
            self.0.release.acquire().await.unwrap().forget();
            Ok(ModelReply::text(format!("echo:{}", req.prompt)))
        })
    }
}

/// Waits (yielding, no timing) until `cond` holds; a generous overall bound turns a
/// regression into a failure rather than a hang.
async fn until(what: &str, cond: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never happened: {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_requests_make_one_inner_call() {
    let gated = Arc::new(Gated::new());
    let cache = Arc::new(CachedModel::new(Shared(gated.clone())));

    let leader = tokio::spawn({
        let cache = cache.clone();
        async move { cache.complete(&request("same")).await }
    });
    until("the leader calls the model", || {
        gated.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let follower = tokio::spawn({
        let cache = cache.clone();
        async move { cache.complete(&request("same")).await }
    });
    until("the follower waits", || cache.stats().coalesced == 1).await;

    gated.release.add_permits(1);
    let (a, b) = (
        leader.await.unwrap().unwrap(),
        follower.await.unwrap().unwrap(),
    );
    assert!(!a.cache_hit);
    assert!(b.cache_hit);
    assert_eq!(b.text, "echo:same");
    assert_eq!(gated.started.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.coalesced), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_requests_are_not_serialized() {
    let gated = Arc::new(Gated::new());
    let cache = Arc::new(CachedModel::new(Shared(gated.clone())));
    let tasks: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|p| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.complete(&request(p)).await })
        })
        .collect();
    // Both are inside the model at once.
    until("both requests reach the model", || {
        gated.started.load(Ordering::SeqCst) == 2
    })
    .await;
    gated.release.add_permits(2);
    for t in tasks {
        assert!(!t.await.unwrap().unwrap().cache_hit);
    }
    assert_eq!(cache.stats().coalesced, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_over_to_a_waiter() {
    let gated = Arc::new(Gated::new());
    let cache = Arc::new(CachedModel::new(Shared(gated.clone())));
    let leader = tokio::spawn({
        let cache = cache.clone();
        async move { cache.complete(&request("same")).await }
    });
    until("the leader calls the model", || {
        gated.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let follower = tokio::spawn({
        let cache = cache.clone();
        async move { cache.complete(&request("same")).await }
    });
    until("the follower waits", || cache.stats().coalesced == 1).await;

    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    until("the follower calls the model itself", || {
        gated.started.load(Ordering::SeqCst) == 2
    })
    .await;
    gated.release.add_permits(1);
    assert!(!follower.await.unwrap().unwrap().cache_hit);
    // Afterwards the key is free again and cached.
    assert!(cache.complete(&request("same")).await.unwrap().cache_hit);
}
