//! The model side: what a step asks a language model, and the adapter trait that answers.
//!
//! An adapter only transports text. It never decides anything: the runtime trims the answer and
//! matches it against the step's admissible set, and the compiled transition picks the successor.

use std::sync::Arc;

pub use crate::program::AnswerType;
use crate::program::{BoxFuture, Name, ProgramInfo};
use crate::value::Digest;

/// One model call, as built from an `llm` step (templates already rendered).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRequest {
    /// The step (or parallel branch) asking.
    pub step: Name,
    /// `model: "..."`; adapters fall back to their configured default.
    pub model: Option<Name>,
    /// The rendered system prompt.
    pub system: Option<String>,
    /// The rendered prompt.
    pub prompt: String,
    /// `max_tokens: N`.
    pub max_tokens: Option<u32>,
    /// For `choose`: the admissible answers. Adapters may use them to constrain decoding; the
    /// runtime checks the answer against them either way.
    pub choices: Option<&'static [&'static str]>,
    /// For `choose`: the runtime's instruction naming the admissible answers
    /// ([`choice_instruction`]), sent after the step's own system prompt. Part of the cache key
    /// and recorded in the trace.
    pub instruction: Option<String>,
    /// For `choose`: `min_confidence P`, the probability below which the runtime treats the
    /// answer as invalid. Not sent and not part of the cache key; an adapter may use it to
    /// decide whether to ask for log-probabilities.
    pub min_confidence: Option<f64>,
    /// For `answer VAR: TYPE`: the type asked for, whose JSON Schema an adapter may use to
    /// constrain decoding (the instruction names it either way; the program checks the reply).
    pub answer: Option<&'static AnswerType>,
}

/// The instruction the runtime adds to an `answer VAR: TYPE` step's request: the type's JSON
/// Schema and the format, `Answer with one JSON value of type `Refund` matching this JSON
/// Schema, and no other text: {...}`.
pub fn answer_instruction(t: &AnswerType) -> String {
    format!(
        "Answer with one JSON value of type `{}` matching this JSON Schema, and no other text: {}",
        t.name, t.schema
    )
}

/// The instruction the runtime adds to a `choose` step's request, naming the admissible
/// answers: `Answer with exactly one word: one of yes, no.` A small model that is not told
/// the format answers in sentences, which are never admissible.
pub fn choice_instruction(choices: &[&str]) -> String {
    format!(
        "Answer with exactly one word: one of {}. No other text.",
        choices.join(", ")
    )
}

impl ModelRequest {
    /// blake3 of the request's canonical encoding: the response-cache key. Two requests have the
    /// same key exactly when they would send the same thing to the model (the step name is not
    /// part of it).
    pub fn cache_key(&self) -> Digest {
        let mut e = crate::canonical::Encoder::new();
        e.tag(1)
            .opt_str(self.model.as_deref())
            .opt_str(self.system.as_deref())
            .str(&self.prompt);
        e.opt(self.max_tokens.as_ref(), |e, n| {
            e.u32(*n);
        });
        e.opt(self.choices, |e, cs| {
            e.u64(cs.len() as u64);
            for c in cs {
                e.str(c);
            }
        });
        // Appended only when present, so the keys of requests without one (every `into` step)
        // stay what they were and existing cache files keep answering them.
        if let Some(i) = &self.instruction {
            e.tag(2).str(i);
        }
        Digest::of(e.bytes())
    }
}

/// `p` as the runtime decides on and records it: a number in [0, 1] rounded to six decimals
/// (`None` for anything else, NaN included). Six decimals are exact in JSON: a 17-digit float
/// can read back one unit in the last place off, which would break an exported trace's hash.
pub fn recorded_probability(p: Option<f64>) -> Option<f64> {
    p.filter(|p| (0.0..=1.0).contains(p))
        .map(|p| (p * 1e6).round() / 1e6)
}

/// What the model said.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ModelReply {
    /// The raw text (the runtime trims it before matching).
    pub text: String,
    /// Tokens in the prompt, as reported (0 if unknown).
    pub prompt_tokens: u64,
    /// Tokens in the completion, as reported (0 if unknown).
    pub completion_tokens: u64,
    /// True when served from a response cache without calling the model.
    pub cache_hit: bool,
    /// True when the token counts are the adapter's estimate, not the server's report (the
    /// server reported none, or counts that cannot be right). Recorded in the trace.
    pub tokens_estimated: bool,
    /// The probability, in [0, 1], that the model gives the answer it gave, where the server
    /// returns log-probabilities (`None`: it returned none). A `choose` step's
    /// `min_confidence` compares against it. Recorded in the trace.
    pub probability: Option<f64>,
    /// What the server really sent, when it differs from `text` (a constrained answer
    /// `{"choice":"yes"}` unwrapped into `yes`). Recorded in the trace.
    pub raw_text: Option<String>,
    /// How decoding was constrained (`json_schema`, `json_object`, `grammar`), if it was.
    /// Recorded in the trace.
    pub constraint: Option<String>,
}

impl ModelReply {
    /// A reply with no token accounting.
    pub fn text(text: impl Into<String>) -> Self {
        ModelReply {
            text: text.into(),
            ..ModelReply::default()
        }
    }
}

/// A failed model call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ModelError {
    /// What went wrong.
    pub message: String,
    /// Whether a retry could help (timeouts, 429, 5xx).
    pub retryable: bool,
    /// The server answered, but with something that is not an answer (a refusal, a tool call,
    /// a non-text part, an answer cut short). For a `choose` step this is an invalid answer
    /// and follows `on invalid`, like any answer outside the admissible set. Never retryable.
    pub invalid_answer: bool,
}

impl ModelError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        ModelError {
            message: message.into(),
            retryable: true,
            invalid_answer: false,
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        ModelError {
            message: message.into(),
            retryable: false,
            invalid_answer: false,
        }
    }

    /// The server answered with something that is not an answer (see
    /// [`invalid_answer`](Self::invalid_answer)).
    pub fn invalid_answer(message: impl Into<String>) -> Self {
        ModelError {
            message: message.into(),
            retryable: false,
            invalid_answer: true,
        }
    }
}

/// A language model adapter.
pub trait Model: Send + Sync + 'static {
    /// Answers one request.
    fn complete<'a>(
        &'a self,
        req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>>;

    /// Called before a run of `program` starts or continues, before anything is recorded: an
    /// adapter that knows which steps it can answer (a [`ScriptedModel`](crate::testing::ScriptedModel)
    /// keyed by step names) refuses a program it cannot serve, and the run fails with
    /// [`RunError::ModelRefused`](crate::RunError::ModelRefused). The default accepts every
    /// program.
    fn check_program(&self, program: &ProgramInfo) -> Result<(), ModelError> {
        let _ = program;
        Ok(())
    }
}

// Lets `builder().model(arc)` take an `Arc<dyn Model>` shared with other code.
impl<M: Model + ?Sized> Model for Arc<M> {
    fn complete<'a>(
        &'a self,
        req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        (**self).complete(req)
    }

    fn check_program(&self, program: &ProgramInfo) -> Result<(), ModelError> {
        (**self).check_program(program)
    }
}
