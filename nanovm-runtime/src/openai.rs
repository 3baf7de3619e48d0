//! [`OpenAiModel`]: an adapter for OpenAI-compatible `POST {base}/chat/completions` endpoints
//! (OpenAI, llama.cpp / llama-cpp-python servers, vLLM, Ollama's `/v1`, mock servers).
//!
//! The adapter is strict about what it sends, lenient about what does not matter in a reply,
//! and fails closed on what does:
//!
//! * The request body is the typed [`ChatRequest`], serialized with a fixed field order and no
//!   free-form extras, so the same [`ModelRequest`] and configuration always send the same bytes.
//! * The response is read through private types whose fields are all optional and tolerant of
//!   wrong types (`id`, `created`, `index`, `logprobs`, ... may be missing or odd); unknown
//!   fields are ignored. Only `choices[0].message.content` is required to exist (`null` content
//!   reads as the empty string).
//! * Only text is answer text: a refusal, a tool call, a non-text content part, or an answer
//!   cut short (`finish_reason` `length`) is an [`InvalidAnswer`], reported as a permanent
//!   [`ModelError`], never as (part of) the text.
//! * Token usage that is missing or not a positive integer is estimated from the text sent and
//!   received, deliberately high, and the reply says so (`ModelReply::tokens_estimated`): no
//!   call is ever free for the `max_tokens` budget.
//! * Server text quoted in an error (an error body, a refusal) is cut to [`QUOTE_CHARS`]
//!   characters with control characters escaped: it ends up in the trace.
//!
//! The adapter never retries: every failure comes back as a [`ModelError`] whose `retryable`
//! flag says whether the runtime's retry policy may try again (connection failures, timeouts,
//! 408, 429, 5xx) or not (other statuses, malformed bodies, configuration errors). A
//! `Retry-After` on a retryable refusal holds back the adapter's next request until then
//! (bounded by [`OpenAiBuilder::max_retry_after`]; the executor's `max_duration` budget still
//! applies, since the wait is part of the model call it races). Redirects are not followed. No
//! server behaviour makes it panic.
//!
//! The default build speaks plain `http` only (no TLS stack to compile); enable this crate's
//! `rustls` feature for `https` endpoints.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use nanovm_runtime::openai::OpenAiModel;
//! use std::time::Duration;
//!
//! let model = OpenAiModel::builder("http://127.0.0.1:8088/v1")
//!     .model("smollm2")
//!     .timeout(Duration::from_secs(30))
//!     .seed(7)
//!     .build()?;
//! // or: OpenAiModel::from_env()?  (NANOVM_OPENAI_BASE_URL, _API_KEY, _MODEL)
//! # let _ = model; Ok(()) }
//! ```

use std::fmt;
use std::sync::PoisonError;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::{Model, ModelError, ModelReply, ModelRequest};
use crate::program::BoxFuture;
use crate::value::Json;

/// Environment variable holding the base URL (required by [`OpenAiModel::from_env`]).
pub const ENV_BASE_URL: &str = "NANOVM_OPENAI_BASE_URL";
/// Environment variable holding the API key (optional).
pub const ENV_API_KEY: &str = "NANOVM_OPENAI_API_KEY";
/// Environment variable holding the default model name (required by
/// [`OpenAiModel::from_env`]).
pub const ENV_MODEL: &str = "NANOVM_OPENAI_MODEL";
/// Environment variable holding the constraint mode for `choose` steps (optional; see
/// [`ChoiceConstraint`]'s names).
pub const ENV_CONSTRAIN: &str = "NANOVM_OPENAI_CONSTRAIN";

/// `max_tokens` sent for a `choose` step that sets none (and when no
/// [`OpenAiBuilder::default_max_tokens`] is configured): enough for the longest admissible
/// answer wrapped as `{"choice": "..."}`, too few for a paragraph. An answer cut short by it is
/// an invalid answer, which follows `on invalid`.
pub const DEFAULT_CHOICE_MAX_TOKENS: u32 = 24;

/// Default whole-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default connect timeout (capped by the request timeout).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on how long a `Retry-After` may hold the adapter back (see
/// [`OpenAiBuilder::max_retry_after`]).
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Default cap on a response body; a larger body is a permanent error.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// How many characters of server-supplied text (a refusal, an error message) an error quotes.
pub const QUOTE_CHARS: usize = 200;
/// How much of an error response's body is read to explain it.
const ERROR_BODY_BYTES: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Whether and how a `choose` step's admissible answers constrain decoding.
///
/// Structured output is not universally supported by OpenAI-compatible servers, and the two
/// common spellings differ, so this is off by default. Either way the runtime still matches the
/// answer against the admissible set.
///
/// The JSON modes ask for an object `{"choice": <one of the choices>}` (a bare string root is
/// rejected by OpenAI's structured outputs); the adapter unwraps a reply of that shape (or a
/// bare JSON string) back into the plain choice text, and records what the server sent. A reply
/// of any other shape is passed through unchanged, for the runtime to judge. The grammar mode
/// makes the server emit one of the choices, nothing else.
///
/// The names ([`as_str`](Self::as_str), and what [`FromStr`](std::str::FromStr) reads) are
/// `off`, `json_schema`, `json_object` and `grammar`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChoiceConstraint {
    /// Send no constraint (the default).
    #[default]
    Off,
    /// OpenAI structured outputs:
    /// `{"type":"json_schema","json_schema":{"name":"choice","strict":true,"schema":{...}}}`.
    /// Supported by OpenAI, vLLM and current llama.cpp `llama-server`; llama-cpp-python's
    /// server rejects it (HTTP 500, a validation error).
    JsonSchema,
    /// `{"type":"json_object","schema":{...}}`, the spelling llama-cpp-python's server accepts.
    JsonObjectSchema,
    /// llama.cpp's own `grammar` field (GBNF): `root ::= "yes" | "no"`. Understood by
    /// llama-cpp-python's server and llama.cpp `llama-server`; the most reliable constraint
    /// there. Other servers ignore or reject the field.
    Grammar,
}

impl ChoiceConstraint {
    /// Every mode, in the order of their names in messages.
    pub const ALL: [ChoiceConstraint; 4] = [
        ChoiceConstraint::Off,
        ChoiceConstraint::JsonSchema,
        ChoiceConstraint::JsonObjectSchema,
        ChoiceConstraint::Grammar,
    ];

    /// The mode's name: `off`, `json_schema`, `json_object` or `grammar`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChoiceConstraint::Off => "off",
            ChoiceConstraint::JsonSchema => "json_schema",
            ChoiceConstraint::JsonObjectSchema => "json_object",
            ChoiceConstraint::Grammar => "grammar",
        }
    }

    /// The names of every mode, comma-separated.
    fn names() -> String {
        ChoiceConstraint::ALL
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for ChoiceConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ChoiceConstraint {
    type Err = OpenAiConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        ChoiceConstraint::ALL
            .into_iter()
            .find(|c| {
                c.as_str() == t
                    || (*c == ChoiceConstraint::JsonObjectSchema && t == "json_object_schema")
            })
            .ok_or_else(|| OpenAiConfigError::UnknownConstraint {
                given: s.to_string(),
                known: ChoiceConstraint::names(),
            })
    }
}

/// A configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAiConfigError {
    /// A required environment variable is unset or empty.
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    /// An environment variable has a value that cannot be used.
    #[error("environment variable {name}: {message}")]
    BadEnv {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The base URL does not parse or is not `http`/`https`.
    #[error("invalid base URL {url:?}: {message}")]
    BadBaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// No default model name: a step that names none could not be answered.
    #[error(
        "no model name: set one with `.model(NAME)` (or {ENV_MODEL}); the server's own name for \
         its model, e.g. `smollm2`"
    )]
    MissingModel,
    /// A constraint mode that does not exist.
    #[error("unknown constraint mode {given:?} (known: {known})")]
    UnknownConstraint {
        /// The name as given.
        given: String,
        /// The known names.
        known: String,
    },
    /// An `https` base URL without the crate's `rustls` feature.
    #[error("base URL {0:?} uses https, but nanovm-runtime was built without its `rustls` feature")]
    TlsNotEnabled(String),
    /// The API key cannot be sent in an HTTP header.
    #[error("the API key contains characters not allowed in an HTTP header")]
    BadApiKey,
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Why a successful (2xx) reply holds no answer the runtime may read. The adapter reports it as
/// a permanent [`ModelError`] whose message reads `openai: invalid answer from <endpoint>:
/// <this>`: it is never turned into answer text, not even an empty one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidAnswer {
    /// The model refused (`message.refusal`, or a content part of type `refusal`); what it said,
    /// cut to a bounded length.
    #[error("the model refused ({0:?})")]
    Refusal(String),
    /// The model asked for a tool call (`message.tool_calls` / `function_call`) instead of
    /// answering; the function names asked for.
    #[error("the model asked for a tool call{} instead of answering", in_parens(.0))]
    ToolCall(String),
    /// A content part that is not text (its type).
    #[error("a content part of type {0:?} is not text")]
    NonTextPart(String),
    /// The answer was cut short (`finish_reason` `length`): what is there is a prefix, and a
    /// prefix of an answer is not an answer.
    #[error("the answer was truncated (finish_reason {0:?})")]
    Truncated(String),
    /// A content filter withheld (part of) the answer (`finish_reason` `content_filter`).
    #[error("a content filter withheld the answer")]
    Filtered,
}

/// Builds an [`OpenAiModel`]. Start with [`OpenAiModel::builder`] or [`OpenAiBuilder::from_env`].
#[derive(Clone)]
pub struct OpenAiBuilder {
    base_url: String,
    api_key: Option<String>,
    model: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    temperature: Option<f64>,
    seed: Option<u64>,
    max_tokens: Option<u32>,
    choice_max_tokens: u32,
    constrain_choices: ChoiceConstraint,
    logprobs: bool,
    max_response_bytes: usize,
    max_retry_after: Duration,
    no_proxy: bool,
}

impl fmt::Debug for OpenAiBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiBuilder")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("temperature", &self.temperature)
            .field("seed", &self.seed)
            .field("max_tokens", &self.max_tokens)
            .field("choice_max_tokens", &self.choice_max_tokens)
            .field("constrain_choices", &self.constrain_choices)
            .field("logprobs", &self.logprobs)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_retry_after", &self.max_retry_after)
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl OpenAiBuilder {
    /// A builder for the endpoint at `base_url` (the part before `/chat/completions`, e.g.
    /// `http://127.0.0.1:8088/v1`), with no key, temperature 0, no seed and a 60 s timeout. It
    /// has no default model yet: [`build`](Self::build) requires one ([`model`](Self::model)).
    pub fn new(base_url: impl Into<String>) -> Self {
        OpenAiBuilder {
            base_url: base_url.into(),
            api_key: None,
            model: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            temperature: Some(0.0),
            seed: None,
            max_tokens: None,
            choice_max_tokens: DEFAULT_CHOICE_MAX_TOKENS,
            constrain_choices: ChoiceConstraint::Off,
            logprobs: true,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            no_proxy: false,
        }
    }

    /// A builder configured from the environment:
    ///
    /// * `NANOVM_OPENAI_BASE_URL` (required), e.g. `http://127.0.0.1:8088/v1`;
    /// * `NANOVM_OPENAI_API_KEY` (optional), sent as `Authorization: Bearer <key>`;
    /// * `NANOVM_OPENAI_MODEL` (required), the model used when a step names none;
    /// * `NANOVM_OPENAI_CONSTRAIN` (optional), the constraint mode for `choose` steps
    ///   (`off`, `json_schema`, `json_object`, `grammar`).
    ///
    /// Empty values count as unset. Everything else keeps the [`new`](Self::new) defaults and
    /// can still be changed on the returned builder.
    pub fn from_env() -> Result<Self, OpenAiConfigError> {
        fn var(name: &'static str) -> Result<Option<String>, OpenAiConfigError> {
            match std::env::var(name) {
                Ok(v) if v.trim().is_empty() => Ok(None),
                Ok(v) => Ok(Some(v.trim().to_string())),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => Err(OpenAiConfigError::BadEnv {
                    name,
                    message: "not valid UTF-8".into(),
                }),
            }
        }
        let base = var(ENV_BASE_URL)?.ok_or(OpenAiConfigError::MissingEnv(ENV_BASE_URL))?;
        let mut b = OpenAiBuilder::new(base);
        b.api_key = var(ENV_API_KEY)?;
        b.model = Some(var(ENV_MODEL)?.ok_or(OpenAiConfigError::MissingEnv(ENV_MODEL))?);
        if let Some(mode) = var(ENV_CONSTRAIN)? {
            b.constrain_choices =
                mode.parse()
                    .map_err(|e: OpenAiConfigError| OpenAiConfigError::BadEnv {
                        name: ENV_CONSTRAIN,
                        message: e.to_string(),
                    })?;
        }
        Ok(b)
    }

    /// The API key, sent as `Authorization: Bearer <key>`. Without one no `Authorization` header
    /// is sent.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The model used when a step names none (`model: "..."` in the program wins).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// The whole-request timeout (connect, send, and reading the full response). A timeout is a
    /// retryable error.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The connect timeout (default 10 s; never longer than the request timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The sampling temperature sent with every request (default 0, for reproducible answers).
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sends no `temperature` at all (for models that reject the parameter).
    pub fn no_temperature(mut self) -> Self {
        self.temperature = None;
        self
    }

    /// A sampling seed sent with every request (none by default; not every server honours it).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// `max_tokens` for requests whose step sets none (by default none is sent).
    pub fn default_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// `max_tokens` for `choose` steps that set none, when no
    /// [`default_max_tokens`](Self::default_max_tokens) is configured (default
    /// [`DEFAULT_CHOICE_MAX_TOKENS`]).
    pub fn choice_max_tokens(mut self, max_tokens: u32) -> Self {
        self.choice_max_tokens = max_tokens;
        self
    }

    /// Whether a `choose` step's choices constrain decoding (default [`ChoiceConstraint::Off`]).
    pub fn constrain_choices(mut self, how: ChoiceConstraint) -> Self {
        self.constrain_choices = how;
        self
    }

    /// Whether `choose` requests ask for log-probabilities (`"logprobs": true`, the default),
    /// from which the reply's [`probability`](ModelReply::probability) is computed. Turn it off
    /// for a server that rejects the field; a step with `min_confidence` then always finds its
    /// answers invalid.
    pub fn logprobs(mut self, on: bool) -> Self {
        self.logprobs = on;
        self
    }

    /// The largest response body accepted (default 8 MiB); a larger one is a permanent error.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The longest wait a `Retry-After` header may impose (default 60 s).
    ///
    /// A retryable refusal (429, 503, ...) that carries `Retry-After` (seconds, or an HTTP
    /// date) holds back this adapter's next request until that moment: the next
    /// [`Model::complete`] waits first, then sends. A server asking for a longer wait than this
    /// gets a permanent error instead (retrying early would only be refused again). The wait
    /// happens inside the model call, which the executor races against the run's
    /// `max_duration` budget and cancellation, so the duration budget still bounds it.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Ignores proxy settings from the environment (`HTTP_PROXY`, `ALL_PROXY`, ...), which are
    /// honoured by default.
    pub fn no_proxy(mut self) -> Self {
        self.no_proxy = true;
        self
    }

    /// Checks the configuration and builds the adapter.
    pub fn build(self) -> Result<OpenAiModel, OpenAiConfigError> {
        let bad_url = |message: &str| OpenAiConfigError::BadBaseUrl {
            url: self.base_url.clone(),
            message: message.to_string(),
        };
        let trimmed = self.base_url.trim();
        if !trimmed.contains("://") {
            return Err(bad_url(&format!(
                "no scheme; did you mean \"http://{trimmed}\"?"
            )));
        }
        let parsed = reqwest::Url::parse(trimmed).map_err(|e| bad_url(&e.to_string()))?;
        match parsed.scheme() {
            "http" => {}
            "https" if cfg!(feature = "rustls") => {}
            "https" => return Err(OpenAiConfigError::TlsNotEnabled(self.base_url.clone())),
            other => return Err(bad_url(&format!("unsupported scheme {other:?}"))),
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad_url("a base URL has no query or fragment"));
        }
        let endpoint = format!("{}/chat/completions", parsed.as_str().trim_end_matches('/'));
        if self.model.as_deref().is_none_or(|m| m.trim().is_empty()) {
            return Err(OpenAiConfigError::MissingModel);
        }

        let authorization = match &self.api_key {
            None => None,
            Some(key) => {
                let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| OpenAiConfigError::BadApiKey)?;
                v.set_sensitive(true);
                Some(v)
            }
        };

        let mut client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout.min(self.timeout))
            .user_agent(concat!("nanovm/", env!("CARGO_PKG_VERSION")))
            // A redirect would send the prompt (and the API key's holder's request) somewhere
            // the configuration never named: a 3xx is an error.
            .redirect(reqwest::redirect::Policy::none());
        if self.no_proxy {
            client = client.no_proxy();
        }
        let client = client
            .build()
            .map_err(|e| OpenAiConfigError::Client(error_chain(&e)))?;

        Ok(OpenAiModel {
            client,
            endpoint,
            authorization,
            config: self,
            not_before: std::sync::Mutex::new(None),
            rejected: std::sync::Mutex::new(None),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Wire types: what is sent (strict)
// ---------------------------------------------------------------------------------------------

/// The body of a `POST /chat/completions`, exactly as sent. Fields serialize in declaration
/// order; absent optional fields are omitted.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChatRequest {
    /// The model name: the step's `model`, else the configured default.
    pub model: String,
    /// The system prompt (if any), then the user prompt.
    pub messages: Vec<ChatMessage>,
    /// The step's `max_tokens`, else the configured default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The configured temperature (0 unless changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The configured seed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The choice constraint, when a JSON mode is enabled and the step is a `choose`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// llama.cpp's GBNF grammar, in [`ChoiceConstraint::Grammar`] mode for a `choose`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
    /// `true` for a `choose` step unless turned off ([`OpenAiBuilder::logprobs`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// `1` with `logprobs`: llama-cpp-python returns no log-probabilities without it (it
    /// passes this number on as its completion's `logprobs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
}

/// The `name` of a `json_schema` constraint for a type: OpenAI accepts `[A-Za-z0-9_-]{1,64}`,
/// so `list<Item>` is sent as `list_Item_`.
fn schema_name(ty: &str) -> String {
    let name: String = ty
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "answer".into()
    } else {
        name
    }
}

/// The GBNF grammar whose only sentences are the choices: `root ::= "yes" | "no"`.
pub fn choice_grammar(choices: &[&str]) -> String {
    let alts: Vec<String> = choices
        .iter()
        .map(|c| {
            let mut q = String::from("\"");
            for ch in c.chars() {
                match ch {
                    '"' => q.push_str("\\\""),
                    '\\' => q.push_str("\\\\"),
                    _ => q.push(ch),
                }
            }
            q.push('"');
            q
        })
        .collect();
    format!("root ::= {}", alts.join(" | "))
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// A message's role (the adapter only ever sends these two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The system prompt.
    System,
    /// The prompt.
    User,
}

/// `response_format`, in one of the two spellings of [`ChoiceConstraint`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// `{"type":"json_schema","json_schema":{...}}`.
    JsonSchema {
        /// The named schema.
        json_schema: NamedSchema,
    },
    /// `{"type":"json_object","schema":{...}}`.
    JsonObject {
        /// The schema.
        schema: Schema,
    },
}

/// A named, strict JSON schema (OpenAI structured outputs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamedSchema {
    /// `"choice"` for a `choose` step; the type's name for `answer VAR: TYPE`.
    pub name: String,
    /// Always `true`.
    pub strict: bool,
    /// The schema.
    pub schema: Schema,
}

/// The schema a constraint sends: a `choose` step's, or the JSON Schema of the type an
/// `answer VAR: TYPE` step asks for (generated by the compiler, sent as it is).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Schema {
    /// `{"choice": <one of the choices>}`.
    Choice(ChoiceSchema),
    /// A declared type's JSON Schema.
    Type(Json),
}

/// `{"type":"object","properties":{"choice":{"type":"string","enum":[...]}},
/// "required":["choice"],"additionalProperties":false}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChoiceSchema {
    /// Always `"object"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The single `choice` property.
    pub properties: ChoiceProperties,
    /// Always `["choice"]`.
    pub required: [&'static str; 1],
    /// Always `false`.
    #[serde(rename = "additionalProperties")]
    pub additional_properties: bool,
}

/// The properties of a [`ChoiceSchema`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChoiceProperties {
    /// The admissible answers.
    pub choice: StringEnum,
}

/// `{"type":"string","enum":[...]}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StringEnum {
    /// Always `"string"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The admissible values, in program order.
    #[serde(rename = "enum")]
    pub values: Vec<String>,
}

impl ChoiceSchema {
    fn of(choices: &[&str]) -> Self {
        ChoiceSchema {
            kind: "object",
            properties: ChoiceProperties {
                choice: StringEnum {
                    kind: "string",
                    values: choices.iter().map(|c| (*c).to_string()).collect(),
                },
            },
            required: ["choice"],
            additional_properties: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire types: what is read (lenient)
// ---------------------------------------------------------------------------------------------

/// Deserializes `T`, or `None` when the field is null or has an unexpected shape: fields the
/// adapter does not depend on must never fail a reply.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = Json::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

#[derive(Debug, Default, Deserialize)]
struct ChatResponse {
    #[serde(default, deserialize_with = "lenient")]
    #[allow(dead_code)]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    #[allow(dead_code)]
    created: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    choices: Option<Vec<Json>>,
    #[serde(default, deserialize_with = "lenient")]
    usage: Option<Usage>,
    /// Some proxies answer 200 with an error object.
    #[serde(default)]
    error: Option<Json>,
}

#[derive(Debug, Default, Deserialize)]
struct Choice {
    #[serde(default, deserialize_with = "lenient")]
    #[allow(dead_code)]
    index: Option<u64>,
    #[serde(default)]
    message: Option<Json>,
    #[serde(default, deserialize_with = "lenient")]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<Json>,
}

#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default, deserialize_with = "lenient")]
    prompt_tokens: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    completion_tokens: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// The adapter
// ---------------------------------------------------------------------------------------------

/// A [`Model`] over an OpenAI-compatible chat-completions endpoint. Cheap to share behind an
/// `Arc`; one instance pools its connections.
pub struct OpenAiModel {
    client: reqwest::Client,
    endpoint: String,
    authorization: Option<reqwest::header::HeaderValue>,
    config: OpenAiBuilder,
    /// No request is sent before this instant (set by a `Retry-After`).
    not_before: std::sync::Mutex<Option<Instant>>,
    /// Set when the server rejected the constraint mode as invalid: the error every later
    /// constrained request gets at once, without being sent.
    rejected: std::sync::Mutex<Option<String>>,
}

impl fmt::Debug for OpenAiModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiModel")
            .field("endpoint", &self.endpoint)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpenAiModel {
    /// A builder for the endpoint at `base_url` (see [`OpenAiBuilder::new`]).
    pub fn builder(base_url: impl Into<String>) -> OpenAiBuilder {
        OpenAiBuilder::new(base_url)
    }

    /// An adapter configured from `NANOVM_OPENAI_BASE_URL`, `NANOVM_OPENAI_API_KEY` and
    /// `NANOVM_OPENAI_MODEL` (see [`OpenAiBuilder::from_env`]).
    pub fn from_env() -> Result<Self, OpenAiConfigError> {
        OpenAiBuilder::from_env()?.build()
    }

    /// The full URL requests are posted to (`{base}/chat/completions`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The body that `req` is sent as. Fails (permanently) when neither the request nor the
    /// configuration names a model.
    pub fn chat_request(&self, req: &ModelRequest) -> Result<ChatRequest, ModelError> {
        let model = match (&req.model, &self.config.model) {
            (Some(m), _) => m.to_string(),
            (None, Some(m)) => m.clone(),
            (None, None) => {
                return Err(ModelError::permanent(format!(
                    "openai: step {:?} names no model and no default model is configured \
                     (set one with the builder or {ENV_MODEL})",
                    req.step
                )));
            }
        };
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = &req.system {
            messages.push(ChatMessage {
                role: Role::System,
                content: system.clone(),
            });
        }
        // The runtime's instruction for a `choose` goes last in the user's message, where a
        // small model heeds it most.
        let content = match &req.instruction {
            Some(i) => format!("{}\n\n{i}", req.prompt),
            None => req.prompt.clone(),
        };
        messages.push(ChatMessage {
            role: Role::User,
            content,
        });
        let mode = self.constraint_for(req);
        // A typed answer's schema: the compiler's JSON text (a malformed one, which the
        // compiler never writes, is sent unconstrained rather than guessed at).
        let typed = req.answer.and_then(|a| {
            serde_json::from_str::<Json>(a.schema)
                .ok()
                .map(|s| (a.name, s))
        });
        let response_format = match (mode, req.choices, typed) {
            (Some(ChoiceConstraint::JsonSchema), Some(cs), _) => Some(ResponseFormat::JsonSchema {
                json_schema: NamedSchema {
                    name: "choice".into(),
                    strict: true,
                    schema: Schema::Choice(ChoiceSchema::of(cs)),
                },
            }),
            (Some(ChoiceConstraint::JsonObjectSchema), Some(cs), _) => {
                Some(ResponseFormat::JsonObject {
                    schema: Schema::Choice(ChoiceSchema::of(cs)),
                })
            }
            (Some(ChoiceConstraint::JsonSchema), None, Some((name, schema))) => {
                Some(ResponseFormat::JsonSchema {
                    json_schema: NamedSchema {
                        name: schema_name(name),
                        strict: true,
                        schema: Schema::Type(schema),
                    },
                })
            }
            // llama.cpp's servers take a JSON Schema in `json_object`; a GBNF grammar for a
            // schema is theirs to derive, so `grammar` mode sends the schema the same way.
            (
                Some(ChoiceConstraint::JsonObjectSchema | ChoiceConstraint::Grammar),
                None,
                Some((_, schema)),
            ) => Some(ResponseFormat::JsonObject {
                schema: Schema::Type(schema),
            }),
            _ => None,
        };
        let grammar = match (mode, req.choices) {
            (Some(ChoiceConstraint::Grammar), Some(cs)) => Some(choice_grammar(cs)),
            _ => None,
        };
        let choose = req.choices.is_some();
        let max_tokens = req
            .max_tokens
            .or(self.config.max_tokens)
            .or(choose.then_some(self.config.choice_max_tokens));
        Ok(ChatRequest {
            model,
            messages,
            max_tokens,
            temperature: self.config.temperature,
            seed: self.config.seed,
            response_format,
            grammar,
            logprobs: (choose && self.config.logprobs).then_some(true),
            top_logprobs: (choose && self.config.logprobs).then_some(1),
        })
    }

    /// The constraint mode `req` is sent under: the configured one, for a `choose` step or an
    /// `answer VAR: TYPE` step.
    fn constraint_for(&self, req: &ModelRequest) -> Option<ChoiceConstraint> {
        match (
            self.config.constrain_choices,
            req.choices.is_some() || req.answer.is_some(),
        ) {
            (ChoiceConstraint::Off, _) | (_, false) => None,
            (mode, true) => Some(mode),
        }
    }

    /// The explanation of a rejected constraint mode, naming the modes to use instead.
    fn mode_rejected(&self, mode: ChoiceConstraint, said: &str) -> String {
        let instead = match mode {
            ChoiceConstraint::JsonSchema => {
                "use `json_object` or `grammar` (llama-cpp-python, llama.cpp), or `off`"
            }
            ChoiceConstraint::JsonObjectSchema => {
                "use `json_schema` (OpenAI, vLLM, llama-server) or `grammar` (llama.cpp), or `off`"
            }
            ChoiceConstraint::Grammar => {
                "use `json_schema` (OpenAI, vLLM) or `json_object`, or `off`"
            }
            _ => "use `off`",
        };
        format!(
            "openai: {} rejects constraint mode `{mode}` as an invalid request ({said}); {instead}",
            self.endpoint
        )
    }

    async fn call(&self, req: &ModelRequest) -> Result<ModelReply, ModelError> {
        let body = self.chat_request(req)?;
        let mode = self.constraint_for(req);
        if mode.is_some()
            && let Some(message) = self
                .rejected
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        {
            return Err(ModelError::permanent(message));
        }
        self.wait_for_retry_after().await;
        let mut http = self
            .client
            .post(&self.endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(&body);
        if let Some(auth) = &self.authorization {
            http = http.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let mut resp = http.send().await.map_err(|e| self.transport_error(e))?;

        let status = resp.status();
        if !status.is_success() {
            // Best effort: explain the failure from (the start of) the body; a body that cannot
            // be read does not change the classification.
            let body = read_body(&mut resp, ERROR_BODY_BYTES, true)
                .await
                .unwrap_or_default();
            let retryable =
                status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error();
            let mut retryable = retryable;
            let mut message = format!("openai: HTTP {status} from {}", self.endpoint);
            if status.is_redirection() {
                message.push_str(" (redirects are not followed; configure the final URL)");
            }
            if let Some(after) = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
            {
                message.push_str(&format!(" (retry-after: {})", bounded(after)));
                if retryable && let Some(wait) = retry_after(after, SystemTime::now()) {
                    if wait > self.config.max_retry_after {
                        retryable = false;
                        message.push_str(&format!(
                            " (the server asks for a wait of {} s, more than the configured \
                             maximum of {} s)",
                            wait.as_secs(),
                            self.config.max_retry_after.as_secs()
                        ));
                    } else {
                        self.hold_back(wait);
                    }
                }
            }
            let explained = explain_error_body(&body);
            // A request the server calls invalid will never succeed, whatever the status: some
            // servers (llama-cpp-python) answer a validation error with a 500.
            if is_validation_error(status.as_u16(), &body) {
                retryable = false;
                // Blamed on the mode only when the server names what the mode sends: a 400 for
                // a too-long prompt must not disable the mode for every later request.
                if let Some(mode) = mode.filter(|_| names_a_constraint(&body)) {
                    let message = self.mode_rejected(mode, &format!("HTTP {status}: {explained}"));
                    *self.rejected.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(message.clone());
                    return Err(ModelError::permanent(message));
                }
                message.push_str(" (the server rejects the request as invalid)");
            }
            message.push_str(": ");
            message.push_str(&explained);
            return Err(ModelError {
                message,
                retryable,
                invalid_answer: false,
            });
        }

        let body = match read_body(&mut resp, self.config.max_response_bytes, false).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return Err(ModelError::permanent(format!(
                    "openai: response body from {} exceeds {} bytes",
                    self.endpoint, self.config.max_response_bytes
                )));
            }
            Err(BodyError::Transport(e)) => return Err(self.transport_error(e)),
        };
        let parsed = parse_reply_body(&body, &self.endpoint)?;
        // Usage the server did not report, or reported as something no real call costs, is
        // estimated from what was sent and received: a budget must never see a free call.
        let reported_prompt = parsed.prompt_tokens.filter(|&n| n > 0);
        let reported_completion = parsed
            .completion_tokens
            .filter(|&n| n > 0 || parsed.text.is_empty());
        let tokens_estimated = reported_prompt.is_none() || reported_completion.is_none();
        let prompt_tokens =
            reported_prompt.unwrap_or_else(|| estimate_prompt_tokens(&body_of(req)));
        let completion_tokens =
            reported_completion.unwrap_or_else(|| estimate_completion_tokens(&parsed.text));
        let text = match (mode, req.choices) {
            (Some(ChoiceConstraint::JsonSchema | ChoiceConstraint::JsonObjectSchema), Some(_)) => {
                unwrap_choice(parsed.text.clone())
            }
            _ => parsed.text.clone(),
        };
        let probability = match (&parsed.logprobs, req.choices) {
            (Some(lp), Some(_)) => answer_probability(lp, &parsed.text, &text),
            _ => None,
        };
        let raw_text = (text != parsed.text).then_some(parsed.text);
        Ok(ModelReply {
            text,
            prompt_tokens,
            completion_tokens,
            cache_hit: false,
            tokens_estimated,
            probability,
            raw_text,
            constraint: mode.map(|m| m.as_str().to_string()),
        })
    }

    /// Sends nothing before `wait` from now (a later hold already in place stays).
    fn hold_back(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut nb = self
            .not_before
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if nb.is_none_or(|t| t < until) {
            *nb = Some(until);
        }
    }

    /// Waits out a `Retry-After` of an earlier reply, if one is still running.
    async fn wait_for_retry_after(&self) {
        let until = *self
            .not_before
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(until) = until {
            let now = Instant::now();
            if until > now {
                tokio::time::sleep(until - now).await;
            }
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> ModelError {
        let what = if e.is_timeout() {
            format!("timed out after {:?}", self.config.timeout)
        } else if e.is_connect() {
            "cannot connect".to_string()
        } else {
            "transport error".to_string()
        };
        let permanent = e.is_builder() || e.is_redirect();
        let message = format!(
            "openai: {what} ({}): {}",
            self.endpoint,
            error_chain(&e.without_url())
        );
        // A malformed request or a redirect loop will not get better; anything on the wire
        // (connect, timeout, reset, truncated body) might.
        if permanent {
            ModelError::permanent(message)
        } else {
            ModelError::transient(message)
        }
    }
}

impl Model for OpenAiModel {
    fn complete<'a>(
        &'a self,
        req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        Box::pin(self.call(req))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads at most `limit` bytes; past that, either truncates (`truncate`) or fails.
async fn read_body(
    resp: &mut reqwest::Response,
    limit: usize,
    truncate: bool,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            if truncate {
                body.extend_from_slice(&chunk[..limit - body.len()]);
                return Ok(body);
            }
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What a 2xx body says: the answer text, the usage as reported (`None`: missing or not a
/// non-negative integer) and the tokens' log-probabilities, if the server sent them.
#[derive(Debug, PartialEq)]
struct Parsed {
    text: String,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    logprobs: Option<Vec<(String, f64)>>,
}

/// The tokens of `choices[0].logprobs`, as `(token text, logprob)`: the chat form
/// (`{"content":[{"token":..,"logprob":..}]}`) or the legacy completions form
/// (`{"tokens":[..],"token_logprobs":[..]}`). `None` when absent or malformed in any entry.
fn read_logprobs(lp: &Json) -> Option<Vec<(String, f64)>> {
    let finite = |v: &Json| v.as_f64().filter(|f| f.is_finite() && *f <= 0.0);
    if let Some(content) = lp.get("content").and_then(Json::as_array) {
        return content
            .iter()
            .map(|t| {
                Some((
                    t.get("token")?.as_str()?.to_string(),
                    finite(t.get("logprob")?)?,
                ))
            })
            .collect();
    }
    let tokens = lp.get("tokens")?.as_array()?;
    let values = lp.get("token_logprobs")?.as_array()?;
    if tokens.len() != values.len() {
        return None;
    }
    tokens
        .iter()
        .zip(values)
        .map(|(t, v)| Some((t.as_str()?.to_string(), finite(v)?)))
        .collect()
}

/// The probability of the answer `answer` within the server's text `raw`: the product of the
/// probabilities of the tokens that spell it (for `{"choice":"yes"}`, the tokens of `yes`, not
/// of the wrapper). When the tokens do not spell `raw` exactly, or `answer` is not in it, the
/// product over all tokens (the probability of the whole reply, never more than the answer's).
fn answer_probability(tokens: &[(String, f64)], raw: &str, answer: &str) -> Option<f64> {
    if tokens.is_empty() {
        return None;
    }
    let all = || tokens.iter().map(|(_, lp)| lp).sum::<f64>().exp();
    let spelled: String = tokens.iter().map(|(t, _)| t.as_str()).collect();
    let answer = answer.trim();
    if spelled != raw || answer.is_empty() {
        return Some(all());
    }
    // Where the answer sits in the raw text: as a JSON string in a wrapper, or as the text.
    let start = raw
        .find(&format!("\"{answer}\""))
        .map(|i| i + 1)
        .or_else(|| raw.find(answer));
    let Some(start) = start else {
        return Some(all());
    };
    let end = start + answer.len();
    let mut at = 0;
    let mut sum = 0.0;
    for (t, lp) in tokens {
        let (from, to) = (at, at + t.len());
        at = to;
        if from < end && to > start {
            sum += lp;
        }
    }
    Some(sum.exp().clamp(0.0, 1.0))
}

/// Whether an error body names one of the fields a constraint mode sends.
fn names_a_constraint(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES)]);
    ["response_format", "json_schema", "json_object", "grammar"]
        .iter()
        .any(|k| text.contains(k))
}

/// Whether an error response says the request itself is invalid (so no retry can help): a
/// 400/422, or a body holding a validation error (FastAPI/pydantic's `loc`/`msg` entries,
/// "validation error", "Input should be ...").
fn is_validation_error(status: u16, body: &[u8]) -> bool {
    if status == 400 || status == 422 {
        return true;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES)]);
    let t = text.to_ascii_lowercase();
    t.contains("validation error")
        || t.contains("input should be")
        || t.contains("literal_error")
        || t.contains("extra inputs are not permitted")
        || (t.contains("\"loc\"") && t.contains("\"msg\""))
        || (t.contains("'loc'") && t.contains("'msg'"))
}

/// The texts a request sends, for estimating its tokens.
fn body_of(req: &ModelRequest) -> Vec<&str> {
    req.system
        .iter()
        .map(String::as_str)
        .chain([req.prompt.as_str()])
        .collect()
}

/// A deliberately high token estimate for `text`: one token per 3 bytes, rounded up (English
/// averages about 4 characters a token; most CJK characters are 3 bytes and about one token).
fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(3)
}

/// The estimated prompt tokens of the messages `texts`: each message's text plus 4 tokens of
/// chat framing, plus 3 for the reply's priming. Never 0.
fn estimate_prompt_tokens(texts: &[&str]) -> u64 {
    texts
        .iter()
        .map(|t| estimate_tokens(t).saturating_add(4))
        .fold(3u64, u64::saturating_add)
}

/// The estimated completion tokens of `text` (at least 1: even an empty answer ended a call).
fn estimate_completion_tokens(text: &str) -> u64 {
    estimate_tokens(text).max(1)
}

/// Text, reported usage and log-probabilities, from a 2xx body.
fn parse_reply_body(body: &[u8], endpoint: &str) -> Result<Parsed, ModelError> {
    let malformed = |why: &str| {
        ModelError::permanent(format!(
            "openai: malformed response from {endpoint}: {why}; body: {}",
            snippet(body)
        ))
    };
    let value: Json = serde_json::from_slice(body).map_err(|e| malformed(&e.to_string()))?;
    if !value.is_object() {
        return Err(malformed("expected a JSON object"));
    }
    let resp = ChatResponse::deserialize(value).map_err(|e| malformed(&e.to_string()))?;
    let Some(first) = resp.choices.as_ref().and_then(|c| c.first()) else {
        if let Some(err) = &resp.error {
            return Err(ModelError::permanent(format!(
                "openai: error from {endpoint}: {}",
                error_object_message(err).unwrap_or_else(|| snippet(body))
            )));
        }
        return Err(malformed("no choices"));
    };
    let choice: Choice = serde_json::from_value(first.clone())
        .map_err(|e| malformed(&format!("choices[0]: {e}")))?;
    let Some(message) = choice.message else {
        return Err(malformed("choices[0] has no message"));
    };
    let invalid = |why: InvalidAnswer| {
        ModelError::invalid_answer(format!("openai: invalid answer from {endpoint}: {why}"))
    };
    if let Some(why) = not_an_answer(&message) {
        return Err(invalid(why));
    }
    match choice.finish_reason.as_deref() {
        Some(r @ ("length" | "max_tokens")) => {
            return Err(invalid(InvalidAnswer::Truncated(r.to_string())));
        }
        Some("content_filter") => return Err(invalid(InvalidAnswer::Filtered)),
        Some("tool_calls" | "function_call") => {
            return Err(invalid(InvalidAnswer::ToolCall(String::new())));
        }
        _ => {}
    }
    let text = match message.get("content") {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        // Content as an array of parts: only text parts are text; any other part (a refusal,
        // a tool use, an image) makes the whole reply an invalid answer, never a fragment.
        Some(Json::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match content_part(part) {
                    Ok(t) => text.push_str(t),
                    Err(why) => return Err(invalid(why)),
                }
            }
            text
        }
        Some(_) => return Err(malformed("choices[0].message.content is not a string")),
    };
    let usage = resp.usage.unwrap_or_default();
    Ok(Parsed {
        text,
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        logprobs: choice.logprobs.as_ref().and_then(read_logprobs),
    })
}

/// ` (x)`, or nothing for an empty `x`.
fn in_parens(x: &str) -> String {
    if x.is_empty() {
        String::new()
    } else {
        format!(" ({x})")
    }
}

/// What a message says instead of answering: a tool call or a refusal (`None`: nothing of that
/// kind; the content is read next).
fn not_an_answer(message: &Json) -> Option<InvalidAnswer> {
    let present = |key: &str| match message.get(key) {
        None | Some(Json::Null) => false,
        Some(Json::Array(a)) => !a.is_empty(),
        Some(Json::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    if present("tool_calls") || present("function_call") {
        let names: Vec<String> = message
            .get("tool_calls")
            .and_then(Json::as_array)
            .map(|calls| {
                calls
                    .iter()
                    .filter_map(|c| c.pointer("/function/name").and_then(Json::as_str))
                    .map(bounded)
                    .collect()
            })
            .unwrap_or_default();
        return Some(InvalidAnswer::ToolCall(names.join(", ")));
    }
    if present("refusal") {
        let said = match message.get("refusal") {
            Some(Json::String(s)) => bounded(s),
            _ => String::new(),
        };
        return Some(InvalidAnswer::Refusal(said));
    }
    None
}

/// The text of one content part: a part of type `text` (or with no type) holding a string
/// `text`. Anything else is not text.
fn content_part(part: &Json) -> Result<&str, InvalidAnswer> {
    let kind = part.get("type");
    match kind.and_then(Json::as_str) {
        None if kind.is_none() || kind == Some(&Json::Null) => {}
        Some("text") => {}
        Some("refusal") => {
            let said = part
                .get("refusal")
                .or_else(|| part.get("text"))
                .and_then(Json::as_str)
                .map(bounded)
                .unwrap_or_default();
            return Err(InvalidAnswer::Refusal(said));
        }
        Some(other) => return Err(InvalidAnswer::NonTextPart(bounded(other))),
        None => return Err(InvalidAnswer::NonTextPart("?".into())),
    }
    part.get("text")
        .and_then(Json::as_str)
        .ok_or_else(|| InvalidAnswer::NonTextPart("text without a string `text`".into()))
}

/// The wait a `Retry-After` value asks for, read at `now`: delay-seconds (`120`) or an HTTP
/// date (`Sun, 06 Nov 1994 08:49:37 GMT`; a date in the past is no wait). `None`: neither.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly many digits saturate rather than fail: still "longer than the cap".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate (RFC 9110 §5.6.7), the form servers send: `Sun, 06 Nov 1994 08:49:37
/// GMT`. The day name is not checked against the date.
fn http_date(value: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = value.split_ascii_whitespace();
    let _weekday = parts.next().filter(|w| w.len() == 4 && w.ends_with(','))?;
    let day: i64 = parts.next().filter(|d| d.len() == 2)?.parse().ok()?;
    let month = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let year: i64 = parts.next().filter(|y| y.len() == 4)?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let mut field = |max: i64| -> Option<i64> {
        let v: i64 = hms.next().filter(|f| f.len() == 2)?.parse().ok()?;
        (v <= max).then_some(v)
    };
    let (h, m, sec) = (field(23)?, field(59)?, field(60)?);
    if hms.next().is_some() || parts.next() != Some("GMT") || parts.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || year < 1970 {
        return None;
    }
    let days = crate::time::days_from_civil(year, month, day);
    let secs = u64::try_from(days * 86_400 + h * 3600 + m * 60 + sec).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Unwraps `{"choice":"x"}` or `"x"` into `x`; anything else is returned unchanged.
fn unwrap_choice(text: String) -> String {
    match serde_json::from_str::<Json>(text.trim()) {
        Ok(Json::String(s)) => s,
        Ok(Json::Object(map)) => match map.get("choice") {
            Some(Json::String(s)) if map.len() == 1 => s.clone(),
            _ => text,
        },
        _ => text,
    }
}

/// `error.message` of an OpenAI-style error object (or the error itself, when a string),
/// [`bounded`].
fn error_object_message(err: &Json) -> Option<String> {
    match err {
        Json::String(s) => Some(bounded(&strip_internals(s))),
        Json::Object(o) => o
            .get("message")
            .and_then(Json::as_str)
            .map(|s| bounded(&strip_internals(s))),
        _ => None,
    }
}

/// The message of an error response: its `error.message` if it has one, else a snippet. Either
/// way at most [`QUOTE_CHARS`] characters of the server's text: error bodies carry tracebacks
/// and file paths, and this message is recorded in the trace.
fn explain_error_body(body: &[u8]) -> String {
    let message = serde_json::from_slice::<Json>(body).ok().and_then(|v| {
        v.get("error")
            .and_then(|e| match e {
                Json::String(s) => Some(s.clone()),
                Json::Object(o) => o.get("message").and_then(Json::as_str).map(str::to_string),
                _ => None,
            })
            // FastAPI's validation errors: `{"detail": [{"loc": [...], "msg": "..."}]}`.
            .or_else(|| match v.get("detail") {
                Some(Json::String(s)) => Some(s.clone()),
                Some(Json::Array(items)) => {
                    let msgs: Vec<String> = items
                        .iter()
                        .filter_map(|i| {
                            let msg = i.get("msg")?.as_str()?;
                            let loc = i.get("loc").and_then(Json::as_array).map(|l| {
                                l.iter()
                                    .map(|p| match p {
                                        Json::String(s) => s.clone(),
                                        other => other.to_string(),
                                    })
                                    .collect::<Vec<_>>()
                                    .join(".")
                            });
                            Some(match loc {
                                Some(loc) => format!("{loc}: {msg}"),
                                None => msg.to_string(),
                            })
                        })
                        .collect();
                    (!msgs.is_empty()).then(|| msgs.join("; "))
                }
                _ => None,
            })
    });
    match message {
        Some(m) => bounded(&strip_internals(&m)),
        None => snippet(strip_internals(&String::from_utf8_lossy(body)).as_bytes()),
    }
}

/// Server text without the server's internals, before it is quoted in an error (and so in the
/// trace): a Python traceback (or its first `File "..."` frame) and what follows are cut off, and file-system paths (`/srv/app/server.py`,
/// `C:\\app\\x.py`) become `<path>`.
fn strip_internals(text: &str) -> String {
    // A traceback, or the first frame of one, ends what is worth quoting.
    let cut = ["Traceback (most recent call last)", "File \""]
        .iter()
        .filter_map(|m| text.find(m))
        .min();
    let text = match cut {
        Some(i) => text[..i].trim_end(),
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let word_end = rest
            .find(|ch: char| {
                ch.is_whitespace() || matches!(ch, '"' | '\'' | ',' | '(' | ')' | '[' | ']')
            })
            .unwrap_or(rest.len());
        let len = if word_end == 0 {
            c.len_utf8()
        } else {
            word_end
        };
        let word = &rest[..len];
        let separators = word.matches(['/', '\\']).count();
        let rooted = word.starts_with('/')
            || word.starts_with("~/")
            || (word.len() > 2 && word.as_bytes()[1] == b':' && word.as_bytes()[2] == b'\\');
        let url = word.contains("://");
        if rooted && separators >= 2 && !url {
            out.push_str("<path>");
        } else {
            out.push_str(word);
        }
        rest = &rest[len..];
    }
    out
}

/// Server-supplied text as an error message may quote it: control characters escaped (one
/// line, no terminal escapes), at most [`QUOTE_CHARS`] characters, cut on a character boundary
/// and marked with `…` when cut.
fn bounded(text: &str) -> String {
    let mut out = String::new();
    let mut len = 0;
    for c in text.chars() {
        if len >= QUOTE_CHARS {
            out.push('…');
            return out;
        }
        if c.is_control() {
            for e in c.escape_default() {
                out.push(e);
                len += 1;
            }
        } else {
            out.push(c);
            len += 1;
        }
    }
    out
}

/// The start of a body, lossily decoded and [`bounded`], with the body's size when cut.
fn snippet(body: &[u8]) -> String {
    if body.is_empty() {
        return "<empty>".to_string();
    }
    // Enough bytes for QUOTE_CHARS characters of any width; a character the cut splits is
    // dropped rather than shown as U+FFFD.
    let cut = body.len().min(QUOTE_CHARS * 4 + 4);
    let mut head = &body[..cut];
    if let Err(e) = std::str::from_utf8(head)
        && e.error_len().is_none()
    {
        head = &head[..e.valid_up_to()];
    }
    let mut out = bounded(&String::from_utf8_lossy(head));
    if cut < body.len() && !out.ends_with('…') {
        out.push('…');
    }
    if out.ends_with('…') {
        out.push_str(&format!(" ({} bytes)", body.len()));
    }
    out
}

/// An error and its sources, joined by `": "` (reqwest's own message is terse).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwraps_constrained_choices_only_when_shaped_so() {
        assert_eq!(unwrap_choice(r#"{"choice":"refund"}"#.into()), "refund");
        assert_eq!(unwrap_choice(r#" "refund" "#.into()), "refund");
        assert_eq!(unwrap_choice("refund".into()), "refund");
        let other = r#"{"choice":"refund","why":"x"}"#;
        assert_eq!(unwrap_choice(other.into()), other);
    }

    #[test]
    fn snippet_is_bounded_and_one_line() {
        let long = "x\n".repeat(1000);
        let s = snippet(long.as_bytes());
        assert!(!s.contains('\n'));
        assert!(s.ends_with("(2000 bytes)"));
        assert_eq!(snippet(b""), "<empty>");
        assert_eq!(snippet(&[0xff, b'a']), "\u{fffd}a");
        // Cut on a character boundary, never inside one.
        let wide = "é".repeat(1000);
        let s = snippet(wide.as_bytes());
        assert!(!s.contains('\u{fffd}'), "{s}");
        assert_eq!(s, format!("{}… (2000 bytes)", "é".repeat(QUOTE_CHARS)));
        assert_eq!(bounded("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(bounded(&"x".repeat(QUOTE_CHARS)), "x".repeat(QUOTE_CHARS));
    }

    #[test]
    fn token_estimates_are_conservative_and_never_zero() {
        assert_eq!(estimate_completion_tokens(""), 1);
        assert_eq!(estimate_completion_tokens("refund"), 2);
        // Two messages: 4 framing tokens each, 3 for the reply's priming.
        assert_eq!(estimate_prompt_tokens(&["", "abcd"]), 4 + (2 + 4) + 3);
        // Above the usual 4 characters a token.
        let text = "The customer was charged twice for order 1234.";
        assert!(estimate_tokens(text) >= text.len() as u64 / 4);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_770); // 08:49:30
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            http_date("Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(retry_after(bad, now), None, "{bad}");
        }
        assert_eq!(
            retry_after(&"9".repeat(40), now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn reply_parsing_is_lenient() {
        let ok = |b: &str| {
            let p = parse_reply_body(b.as_bytes(), "e").unwrap();
            (p.text, p.prompt_tokens, p.completion_tokens)
        };
        assert_eq!(
            ok(r#"{"choices":[{"message":{"content":"hi"}}]}"#),
            ("hi".into(), None, None)
        );
        assert_eq!(
            ok(
                r#"{"id":7,"created":"now","choices":[{"index":"0","message":{"content":null},
               "finish_reason":5}],"usage":{"prompt_tokens":3.5,"completion_tokens":2}}"#
            ),
            (String::new(), None, Some(2))
        );
        assert_eq!(
            ok(
                r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"text":"b"}]}}]}"#
            )
            .0,
            "ab"
        );
        let err = |b: &str| parse_reply_body(b.as_bytes(), "e").unwrap_err();
        assert!(err(r#"{"choices":[]}"#).message.contains("no choices"));
        assert!(err(r#"{"choices":[{}]}"#).message.contains("no message"));
        assert!(
            err(r#"{"error":{"message":"quota"}}"#)
                .message
                .contains("quota")
        );
        assert!(!err("[1,2]").retryable);
    }
}
