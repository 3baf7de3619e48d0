//! Models that answer from a script: for tests, examples and benchmarks.
//!
//! [`ScriptedModel`] answers by step name (for a parallel branch, the branch name), from a queue
//! of replies or a fixed answer, and can fail at chosen calls. A name that is no `llm` step or
//! branch of the program being run is refused when the run starts, with the closest name. [`FnModel`] wraps a closure.
//! Neither talks to a network, so runs that use them are deterministic.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::model::{Model, ModelError, ModelReply, ModelRequest};
use crate::program::{BoxFuture, ProgramInfo, StepKind};

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
///
/// The names are checked when a run starts ([`Model::check_program`]): a scripted name that is
/// not an `llm` step (or an `llm` branch of a `parallel` step) of the program fails the run
/// with [`RunError::ModelRefused`](crate::RunError::ModelRefused), naming the closest step, so
/// a typo fails before anything is recorded rather than as "no answer" half-way. A script shared
/// by several programs names the steps of all of them: [`ScriptedModel::shared`] turns the
/// check off.
#[derive(Clone, Default)]
pub struct ScriptedModel {
    shared: Arc<Mutex<Script>>,
}

#[derive(Default)]
struct Script {
    steps: HashMap<String, StepScript>,
    tokens: (u64, u64),
    probability: Option<f64>,
    /// Set by [`ScriptedModel::shared`]: names are not checked against the program.
    unchecked: bool,
}

#[derive(Default)]
struct StepScript {
    queue: VecDeque<Result<ModelReply, ModelError>>,
    always: Option<String>,
    failures: HashMap<usize, ModelError>,
    calls: usize,
    prompts: Vec<String>,
    /// True once the script names this step (not merely because it was called).
    scripted: bool,
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
        let mut script = self.lock();
        let s = script.steps.entry(step.to_string()).or_default();
        s.scripted = true;
        f(s);
        drop(script);
        self.clone()
    }

    /// Turns off the check of the scripted names against the program a run starts with: for a
    /// script that answers the steps of several programs.
    pub fn shared(self) -> Self {
        self.lock().unchecked = true;
        self
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

    /// The probability reported with every text answer added after this call (and with fixed
    /// answers), as a server with log-probabilities would (`None`, the default: none).
    pub fn probability(self, p: Option<f64>) -> Self {
        self.lock().probability = p;
        self
    }

    fn text_reply(&self, text: String) -> ModelReply {
        let (p, c) = self.lock().tokens;
        ModelReply {
            text,
            prompt_tokens: p,
            completion_tokens: c,
            probability: self.lock().probability,
            ..ModelReply::default()
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
                probability: script.probability,
                ..ModelReply::default()
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

    fn check_program(&self, program: &ProgramInfo) -> Result<(), ModelError> {
        let script = self.lock();
        if script.unchecked {
            return Ok(());
        }
        let llm = llm_names(program);
        let mut unknown: Vec<&str> = script
            .steps
            .iter()
            .filter(|(name, s)| s.scripted && !llm.contains(&name.as_str()))
            .map(|(name, _)| name.as_str())
            .collect();
        unknown.sort_unstable();
        let Some(name) = unknown.first() else {
            return Ok(());
        };
        let what = match program.step_id(name) {
            Some(id) => format!("a `{}` step", program.step(id).kind.as_str()),
            None => "not a step".to_string(),
        };
        let mut message = format!(
            "the script answers `{name}`, which is {what} of program `{}`",
            program.name
        );
        match closest(name, &llm) {
            Some(near) => message.push_str(&format!("; did you mean `{near}`?")),
            None if llm.is_empty() => message.push_str(" (it has no `llm` step)"),
            None => message.push_str(&format!(" (its `llm` steps: {})", llm.join(", "))),
        }
        if unknown.len() > 1 {
            message.push_str(&format!(
                " (also unknown: {})",
                unknown[1..]
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Err(ModelError::permanent(message))
    }
}

/// The names a model is asked under: `llm` steps and the `llm` branches of `parallel` steps.
fn llm_names(program: &ProgramInfo) -> Vec<&'static str> {
    let mut names = Vec::new();
    for step in program.steps {
        if step.kind == StepKind::Llm {
            names.push(step.name);
        }
        if let Some(p) = step.parallel {
            names.extend(
                p.branches
                    .iter()
                    .filter(|b| b.kind == StepKind::Llm)
                    .map(|b| b.name),
            );
        }
    }
    names
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("triage", "triage"), 0);
        assert_eq!(edit_distance("triag", "triage"), 1);
        assert_eq!(edit_distance("traige", "triage"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest("anaylze", &["analyze", "policy"]), Some("analyze"));
        assert_eq!(closest("refund", &["analyze", "policy"]), None);
    }
}
