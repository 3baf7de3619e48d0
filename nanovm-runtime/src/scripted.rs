//! Models that answer from a script: for tests, examples and benchmarks.
//!
//! [`ScriptedModel`] answers by step name (for a parallel branch, the branch name), from a queue
//! of replies or a fixed answer, and can fail at chosen calls. [`FnModel`] wraps a closure.
//! Neither talks to a network, so runs that use them are deterministic.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::model::{Model, ModelError, ModelReply, ModelRequest};
use crate::program::BoxFuture;

/// A model that answers from a script, keyed by step name.
///
/// For each call to step `s` it answers, in order of precedence:
/// 1. the failure planned with [`ScriptedModel::fail_at`] for this call number, if any;
/// 2. the next queued reply ([`answer`](ScriptedModel::answer), [`reply`](ScriptedModel::reply),
///    [`error`](ScriptedModel::error));
/// 3. the fixed answer ([`always`](ScriptedModel::always));
/// 4. otherwise a permanent error saying the script has no answer.
///
/// Clones share the script and the call counters, so a test keeps one clone to inspect after
/// handing another to the runtime.
#[derive(Clone, Default)]
pub struct ScriptedModel {
    shared: Arc<Mutex<Script>>,
}

#[derive(Default)]
struct Script {
    steps: HashMap<String, StepScript>,
    tokens: (u64, u64),
}

#[derive(Default)]
struct StepScript {
    queue: VecDeque<Result<ModelReply, ModelError>>,
    always: Option<String>,
    failures: HashMap<usize, ModelError>,
    calls: usize,
    prompts: Vec<String>,
}

impl fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        let mut steps: Vec<_> = s.steps.iter().map(|(k, v)| (k.as_str(), v.calls)).collect();
        steps.sort_unstable();
        f.debug_struct("ScriptedModel")
            .field("calls", &steps)
            .finish_non_exhaustive()
    }
}

impl ScriptedModel {
    /// An empty script: every call fails until answers are added.
    pub fn new() -> Self {
        ScriptedModel::default()
    }

    fn lock(&self) -> MutexGuard<'_, Script> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn step(&self, step: &str, f: impl FnOnce(&mut StepScript)) -> Self {
        f(self.lock().steps.entry(step.to_string()).or_default());
        self.clone()
    }

    /// Queues one text answer for `step` (with the token usage set by
    /// [`tokens`](ScriptedModel::tokens)).
    pub fn answer(self, step: &str, text: impl Into<String>) -> Self {
        let reply = self.text_reply(text.into());
        self.step(step, |s| s.queue.push_back(Ok(reply)))
    }

    /// Queues several text answers for `step`, in order.
    pub fn answers<S: Into<String>>(self, step: &str, texts: impl IntoIterator<Item = S>) -> Self {
        texts.into_iter().fold(self, |m, t| m.answer(step, t))
    }

    /// Queues a full reply (text, token counts, cache flag) for `step`.
    pub fn reply(self, step: &str, reply: ModelReply) -> Self {
        self.step(step, |s| s.queue.push_back(Ok(reply)))
    }

    /// Queues a failure for `step`.
    pub fn error(self, step: &str, error: ModelError) -> Self {
        self.step(step, |s| s.queue.push_back(Err(error)))
    }

    /// The answer for `step` whenever its queue is empty.
    pub fn always(self, step: &str, text: impl Into<String>) -> Self {
        let text = text.into();
        self.step(step, |s| s.always = Some(text))
    }

    /// Makes call number `call` (1-based) to `step` fail with `error`, without consuming the
    /// queue.
    pub fn fail_at(self, step: &str, call: usize, error: ModelError) -> Self {
        self.step(step, |s| {
            s.failures.insert(call, error);
        })
    }

    /// Token usage reported with every text answer added after this call (and with fixed
    /// answers): `prompt` prompt tokens and `completion` completion tokens.
    pub fn tokens(self, prompt: u64, completion: u64) -> Self {
        self.lock().tokens = (prompt, completion);
        self
    }

    fn text_reply(&self, text: String) -> ModelReply {
        let (p, c) = self.lock().tokens;
        ModelReply {
            text,
            prompt_tokens: p,
            completion_tokens: c,
            cache_hit: false,
            tokens_estimated: false,
        }
    }

    /// How many times `step` was called.
    pub fn calls(&self, step: &str) -> usize {
        self.lock().steps.get(step).map_or(0, |s| s.calls)
    }

    /// How many calls were made, over all steps.
    pub fn total_calls(&self) -> usize {
        self.lock().steps.values().map(|s| s.calls).sum()
    }

    /// The prompts `step` was called with, in order.
    pub fn prompts(&self, step: &str) -> Vec<String> {
        self.lock()
            .steps
            .get(step)
            .map_or_else(Vec::new, |s| s.prompts.clone())
    }

    fn answer_now(&self, req: &ModelRequest) -> Result<ModelReply, ModelError> {
        let mut script = self.lock();
        let tokens = script.tokens;
        let s = script.steps.entry(req.step.to_string()).or_default();
        s.calls += 1;
        s.prompts.push(req.prompt.clone());
        if let Some(e) = s.failures.remove(&s.calls) {
            return Err(e);
        }
        if let Some(r) = s.queue.pop_front() {
            return r;
        }
        match &s.always {
            Some(text) => Ok(ModelReply {
                text: text.clone(),
                prompt_tokens: tokens.0,
                completion_tokens: tokens.1,
                cache_hit: false,
                tokens_estimated: false,
            }),
            None => Err(ModelError::permanent(format!(
                "the scripted model has no answer for step `{}` (call {})",
                req.step, s.calls
            ))),
        }
    }
}

impl Model for ScriptedModel {
    fn complete<'a>(
        &'a self,
        req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        Box::pin(std::future::ready(self.answer_now(req)))
    }
}

/// A model backed by a closure: `FnModel::new(|req| Ok(ModelReply::text("yes")))`.
pub struct FnModel<F> {
    f: F,
}

impl<F> FnModel<F>
where
    F: Fn(&ModelRequest) -> Result<ModelReply, ModelError> + Send + Sync + 'static,
{
    /// Wraps `f`, which answers each request synchronously.
    pub fn new(f: F) -> Self {
        FnModel { f }
    }
}

impl<F> fmt::Debug for FnModel<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnModel")
    }
}

impl<F> Model for FnModel<F>
where
    F: Fn(&ModelRequest) -> Result<ModelReply, ModelError> + Send + Sync + 'static,
{
    fn complete<'a>(
        &'a self,
        req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        Box::pin(std::future::ready((self.f)(req)))
    }
}
