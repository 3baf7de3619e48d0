//! The HTTP endpoints, their authentication and limits, and their JSON errors.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nanovm_runtime::store::{RunQuery, RunRecord};
use nanovm_runtime::trace::{Actor, Entry, Trace};
use nanovm_runtime::{
    Act, ActError, DeliverError, Delivery, Digest, InputError, Json, ReconcileError, Resolution,
    RunError, RunStatus, RunView,
};
use serde::Deserialize;
use serde_json::json;

use crate::served::{Served, SubmitError};
use crate::{App, Scope};
use nanovm_runtime::time::utc_millis;

/// A refused request: a status and a JSON body `{"error": {"code", "message", ..}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    extra: Option<Json>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }

    fn with(mut self, extra: Json) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let (Some(Json::Object(extra)), Json::Object(e)) = (self.extra, &mut error) {
            e.extend(extra);
        }
        let mut res = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"nanovm\""),
            );
        }
        res
    }
}

type ApiResult = Result<Response, ApiError>;

pub(crate) fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string())
}

/// 404 for a run the store does not hold.
pub(crate) fn unknown_run(run_id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_run",
        format!("no run `{run_id}`"),
    )
}

/// A run's stored entries as a [`Trace`], its hash chain checked once more before anything is
/// served from it: 500 `trace_corrupt` when it does not verify.
pub(crate) fn verified(entries: Vec<Entry>) -> Result<Trace, ApiError> {
    Trace::from_entries(entries).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "trace_corrupt",
            format!("the stored trace does not verify: {e}"),
        )
    })
}

/// Run `run_id`'s stored entries (the store verified them), or 404.
pub(crate) async fn entries_of(app: &App, run_id: &str) -> Result<Vec<Entry>, ApiError> {
    let store = app.runtime.store().expect("checked at bind");
    store
        .load(run_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| unknown_run(run_id))
}

fn run_error(e: RunError) -> ApiError {
    match e {
        RunError::UnknownRun(id) => unknown_run(&id),
        RunError::RunIdInUse { .. } => {
            ApiError::new(StatusCode::CONFLICT, "run_id_in_use", e.to_string())
        }
        RunError::SubjectInUse { .. } => {
            ApiError::new(StatusCode::CONFLICT, "subject_in_use", e.to_string())
        }
        RunError::InvalidSubject => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_subject", e.to_string())
        }
        RunError::InvalidRunId(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_run_id", e.to_string())
        }
        RunError::Leased { .. } => ApiError::new(StatusCode::CONFLICT, "busy", e.to_string()),
        RunError::Journal(_) => store_error(e),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "run", other.to_string()),
    }
}

/// The routes, each with its scope, under the limits.
pub(crate) fn router(app: Arc<App>) -> Router {
    let scoped = |scope: Scope, routes: Router<Arc<App>>| {
        routes.route_layer(middleware::from_fn_with_state(
            (app.clone(), Some(scope)),
            authorize,
        ))
    };
    let read = Router::new()
        .route("/v1/programs", get(programs))
        .route("/v1/programs/{program}", get(program))
        .route("/v1/runs", get(runs))
        .route("/v1/runs/{run_id}", get(run))
        .route("/v1/runs/{run_id}/trace", get(trace))
        .merge(crate::viewer::read())
        .route("/metrics", get(crate::metrics::scrape));
    let start = Router::new().route("/v1/programs/{program}/runs", post(start_run));
    let operate = Router::new()
        .route("/v1/runs/{run_id}/events/{event}", post(deliver))
        .route("/v1/runs/{run_id}/reconcile", post(reconcile))
        .route("/v1/runs/{run_id}/cancel", post(cancel));
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::viewer::page())
        .merge(scoped(Scope::Read, read))
        .merge(scoped(Scope::Start, start))
        .merge(scoped(Scope::Operate, operate))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), limit_time))
        .with_state(app.clone());
    // A run's stream lasts as long as the run: under its scope, outside the time limit.
    let streams = scoped(
        Scope::Read,
        Router::new()
            .route("/v1/runs/{run_id}/stream", get(crate::stream::stream))
            .route("/v1/stream", get(crate::stream::all)),
    )
    .with_state(app.clone());
    let api = api.merge(streams);
    #[cfg(feature = "mcp")]
    let api = api.merge(mcp_routes(app));
    api
}

/// MCP over Streamable HTTP at `/mcp`: any known token (each tool checks its own scope), and
/// rmcp's host allow-list (localhost names) against DNS rebinding.
#[cfg(feature = "mcp")]
fn mcp_routes(app: Arc<App>) -> Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let for_service = app.clone();
    let service = StreamableHttpService::new(
        move || Ok(crate::mcp::Mcp::new(for_service.clone(), false)),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    Router::new()
        .nest_service("/mcp", service)
        .layer(middleware::from_fn_with_state((app, None), authorize))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint (see docs/runtime.md, \"The HTTP server\")",
    )
}

/// The request-time limit: past it, 503 `timeout` (work already recorded goes on).
async fn limit_time(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(app.limits.request_time, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} ms; what it recorded stays recorded: read the run's state",
                app.limits.request_time.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Bearer-token authentication with a scope, before the body is read.
async fn authorize(
    State((app, scope)): State<(Arc<App>, Option<Scope>)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing bearer token (header `Authorization: Bearer TOKEN`)",
        )
        .into_response();
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = token else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the Authorization header is not `Bearer TOKEN`",
        )
        .into_response();
    };
    // Compare hashes: the comparison's time does not depend on how much of a guess matched.
    let hash = *blake3::hash(token.as_bytes()).as_bytes();
    let Some(known) = app
        .tokens
        .iter()
        .find(|t| blake3::Hash::from(t.hash) == blake3::Hash::from(hash))
    else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token")
            .into_response();
    };
    if let Some(scope) = scope
        && !known.scopes.contains(&scope)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token `{}` lacks the scope `{}` this endpoint needs",
                known.name,
                scope.as_str()
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(Caller {
        name: known.name.clone(),
        scopes: known.scopes.clone(),
    });
    next.run(req).await
}

/// Who made the request (the token's name) and what it may do.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) scopes: Vec<Scope>,
}

/// Reads a JSON body of at most the limit and decodes it as `T` (`deny_unknown_fields`).
async fn body<T: serde::de::DeserializeOwned>(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, ApiError> {
    let limit = app.limits.body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && !ct
            .to_str()
            .is_ok_and(|c| c.trim_start().starts_with("application/json"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "the body must be JSON (`Content-Type: application/json`)",
        ));
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let code = if e.is_data() {
            "bad_request"
        } else {
            "bad_json"
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, format!("the body: {e}"))
    })
}

async fn healthz() -> Response {
    axum::Json(json!({ "ok": true })).into_response()
}

/// Ready when the store answers.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let Some(store) = app.runtime.store() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", "no store").into_response();
    };
    match store.runs(&RunQuery::new().limit(1)).await {
        Ok(_) => axum::Json(json!({ "ready": true })).into_response(),
        Err(e) => store_error(e).into_response(),
    }
}

pub(crate) fn served<'a>(app: &'a App, name: &str) -> Result<&'a Arc<dyn Served>, ApiError> {
    app.programs.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_program",
            format!(
                "no program `{name}` (served: {})",
                app.programs.keys().copied().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

pub(crate) fn describe(served: &dyn Served) -> Json {
    let info = served.info();
    json!({
        "name": info.name,
        "hash": info.hash,
        "input_schema": nanovm_runtime::input_schema(info),
        "mermaid": served.graph(),
        "steps": info.steps.iter().map(|s| s.name).collect::<Vec<_>>(),
        "events": served.events().iter().map(|e| json!({
            "step": e.step, "event": e.event, "type": e.ty,
            "payload_schema": e.shape.map_or_else(
                || nanovm_runtime::value_schema(e.ty),
                |shape| shape.json_schema(),
            ),
        })).collect::<Vec<_>>(),
        "tools": info.tools.iter().map(|t| json!({
            "name": t.name, "effect": t.effect, "idempotent": t.idempotent
        })).collect::<Vec<_>>(),
    })
}

async fn programs(State(app): State<Arc<App>>) -> Response {
    let list: Vec<Json> = app.programs.values().map(|s| describe(&**s)).collect();
    axum::Json(json!({ "programs": list })).into_response()
}

async fn program(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    Ok(axum::Json(describe(&**served(&app, &name)?)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    /// The run id: a repeat with the same id is answered with the existing run.
    #[serde(default)]
    run_id: Option<String>,
    /// The program's inputs, plaintext (secrets go to the vault).
    input: Json,
    /// The data subject the run's personal data belongs to (a pseudonymous id), for
    /// `nanovm erase --subject`: kept in the store's erasure index, never in the trace.
    #[serde(default)]
    subject: Option<String>,
}

/// Starts a run (records it; the workers execute it). 201 when created, 200 when the run id
/// exists already (the run as it stands).
async fn start_run(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> ApiResult {
    served(&app, &name)?;
    let req: StartBody = body(&app, &headers, raw).await?;
    let (created, state) = start(
        &app,
        &name,
        req.run_id.as_deref(),
        &req.input,
        req.subject.as_deref(),
    )
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(state)).into_response())
}

/// Starts a run of program `name` on `input` (plaintext JSON), idempotent on `run_id`,
/// tied to the data subject `subject` if given (a repeat naming another subject is refused,
/// 409 `subject_in_use`): whether it was created, and the run's state.
pub(crate) async fn start(
    app: &App,
    name: &str,
    run_id: Option<&str>,
    input: &Json,
    subject: Option<&str>,
) -> Result<(bool, Json), ApiError> {
    let served = served(app, name)?.clone();
    let info = served.info();
    if subject.is_some_and(|s| s.trim().is_empty() || s.len() > 256) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_subject",
            "`subject` must be a non-empty string of at most 256 bytes (a pseudonymous id)",
        ));
    }
    // Refuse a bad input before anything else, whether or not the run exists.
    nanovm_runtime::check_input(info, input).map_err(input_error)?;
    if let Some(id) = run_id {
        nanovm_runtime::validate_run_id(id)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_run_id", e.to_string()))?;
        // A repeat: answered from the store, nothing stored again (not even the secrets).
        if let Some(existing) = existing(app, id, &*served, input).await? {
            // The same request: tied to its subject unless it is tied to another one.
            if let Some(subject) = subject {
                app.runtime
                    .link_start_subject(id, subject)
                    .await
                    .map_err(run_error)?;
            }
            return Ok((false, existing));
        }
    }
    let submitted = served
        .submit(&app.runtime, input, run_id, subject)
        .await
        .map_err(|e| match e {
            SubmitError::Input(e) => input_error(e),
            SubmitError::Run(e) => run_error(e),
        })?;
    app.work.notify_waiters();
    let mut state = state_of(app, &submitted.run_id).await?;
    if let Json::Object(o) = &mut state {
        o.insert("created".into(), submitted.created.into());
    }
    Ok((submitted.created, state))
}

/// The stored run `id` as a repeat of this start would see it: `None` if there is none; 409
/// when it belongs to another program or was started with other plain inputs.
async fn existing(
    app: &App,
    id: &str,
    served: &dyn Served,
    input: &Json,
) -> Result<Option<Json>, ApiError> {
    let store = app.runtime.store().expect("checked at bind");
    let Some(entries) = store.load(id).await.map_err(store_error)? else {
        return Ok(None);
    };
    let info = served.info();
    let view = served.view(&entries);
    let same_plain = view
        .plain_inputs()
        .iter()
        .all(|(name, v)| input.get(name.as_str()) == Some(v));
    if view.program() != Some(info.name) || !same_plain {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "run_id_in_use",
            format!("run id `{id}` is in use by another request (another program or other inputs)"),
        ));
    }
    Ok(Some(render(id, &view, info.name, false)))
}

fn input_error(e: InputError) -> ApiError {
    let fields: Vec<Json> = e
        .fields()
        .iter()
        .map(|f| json!({ "field": f.field(), "message": f.to_string() }))
        .collect();
    let status = match e {
        InputError::Vault(_) => StatusCode::SERVICE_UNAVAILABLE,
        InputError::Decode(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, "invalid_input", format!("the input: {e}"))
        .with(json!({ "fields": fields }))
}

/// A run's state, from its entries read by the program's `RunView`.
fn render(run_id: &str, view: &RunView, program: &str, created: bool) -> Json {
    let waiting = view.waiting().map(|w| {
        json!({
            "event": w.event,
            "deadline_ms": w.deadline_ms,
            "deadline": w.deadline_ms.map(utc_millis),
        })
    });
    let open: Vec<Json> = view
        .open_effects()
        .iter()
        .map(|o| {
            json!({
                "effect_id": o.effect_id,
                "tool": o.tool,
                "step": o.step,
                "idempotent": o.idempotent,
                "not_done": o.not_done,
            })
        })
        .collect();
    json!({
        "run_id": run_id,
        "program": program,
        "program_hash": view.program_hash().map(|h| h.to_hex()),
        "created": created,
        "status": view.status().to_string(),
        "step": view.step(),
        "at": view.at(),
        "message": view.message(),
        "waiting": waiting,
        "open_effects": open,
        "to_reconcile": view.to_reconcile(),
        "entries": view.entries(),
    })
}

/// The state of stored run `run_id` (404 if unknown).
pub(crate) async fn state_of(app: &App, run_id: &str) -> Result<Json, ApiError> {
    let entries = entries_of(app, run_id).await?;
    // The program, from the run's first event (read by RunView like everything else).
    let program = RunView::of(&entries[..entries.len().min(1)])
        .program()
        .unwrap_or_default()
        .to_string();
    let pinned = RunView::of(&entries).program_hash();
    let view = match pinned.and_then(|h| app.version(h)) {
        Some(s) => s.view(&entries),
        None => RunView::of(&entries),
    };
    Ok(render(run_id, &view, &program, true))
}

async fn run(State(app): State<Arc<App>>, Path(run_id): Path<String>) -> ApiResult {
    let mut state = state_of(&app, &run_id).await?;
    if let Json::Object(o) = &mut state {
        o.remove("created");
    }
    Ok(axum::Json(state).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    program: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

fn record(r: &RunRecord) -> Json {
    json!({
        "run_id": r.run_id,
        "program": r.program,
        "status": r.status.to_string(),
        "step": r.end_step,
        "message": r.message,
        "waiting_for": r.waiting_for,
        "deadline_ms": r.deadline_ms,
        "deadline": r.deadline_ms.map(utc_millis),
        "entries": r.entries,
        "created": utc_millis(r.created_ms),
        "updated": utc_millis(r.updated_ms),
    })
}

async fn runs(
    State(app): State<Arc<App>>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let mut rq = RunQuery::new().limit(q.limit.unwrap_or(100).min(1000));
    if let Some(p) = q.program {
        rq = rq.program(p);
    }
    if let Some(s) = q.status {
        let status = RunStatus::parse(&s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("unknown status `{s}` (running, suspended, success, failed, needs_reconciliation, budget_exceeded, stalled, cancelled)"),
            )
        })?;
        rq = rq.status(status);
    }
    let store = app.runtime.store().expect("checked at bind");
    let list = store.runs(&rq).await.map_err(store_error)?;
    let list: Vec<Json> = list.iter().map(record).collect();
    Ok(axum::Json(json!({ "runs": list })).into_response())
}

/// The run's trace as JSON Lines, verified (hash chain) before it is sent; its root hash is in
/// the header `x-nanovm-root`.
async fn trace(State(app): State<Arc<App>>, Path(run_id): Path<String>) -> ApiResult {
    let entries = entries_of(&app, &run_id).await?;
    let trace = verified(entries)?;
    let root = trace.root().to_hex();
    let mut res = trace.to_jsonl().into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jsonl"),
    );
    h.insert(
        "x-nanovm-root",
        HeaderValue::from_str(&root).expect("hex is a header value"),
    );
    Ok(res)
}

/// The program that stored run `run_id` belongs to (404: unknown run; 409: a program this
/// server does not serve).
pub(crate) async fn program_of(app: &App, run_id: &str) -> Result<Arc<dyn Served>, ApiError> {
    let store = app.runtime.store().expect("checked at bind");
    let record = store
        .run(run_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| unknown_run(run_id))?;
    // A run is continued by the version it is pinned to, never by another one of the name.
    if let Some(served) = app.version(record.program_hash) {
        return Ok(served.clone());
    }
    Err(if app.programs.contains_key(record.program.as_str()) {
        ApiError::new(
            StatusCode::CONFLICT,
            "version_not_served",
            format!(
                "run `{run_id}` is pinned to version {} of `{}`, which this server does not \
                 serve (register that build next to the new one)",
                record.program_hash.short(),
                record.program
            ),
        )
    } else {
        ApiError::new(
            StatusCode::CONFLICT,
            "unknown_program",
            format!(
                "run `{run_id}` is a run of `{}`, which this server does not serve",
                record.program
            ),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    /// Why (recorded with the token's name as the cancellation's actor).
    #[serde(default)]
    reason: Option<String>,
}

/// Cancels run `run_id` as `by` (for the HTTP endpoint and the MCP tool): the run's state.
pub(crate) async fn cancel_run(app: &App, run_id: &str, by: Actor) -> Result<Json, ApiError> {
    let rt = app.runtime.clone();
    let id = run_id.to_string();
    let done = detached(Box::pin(async move {
        let store = rt.store().expect("checked at bind");
        nanovm_runtime::act(
            store.as_ref(),
            rt.clock().as_ref(),
            &id,
            Act::Cancel,
            by,
            Duration::from_secs(2),
        )
        .await
    }))
    .await?;
    done.map_err(|e| match e {
        ActError::UnknownRun(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_run", e.to_string())
        }
        ActError::Leased { .. } => ApiError::new(StatusCode::CONFLICT, "busy", e.to_string()),
        ActError::Ended { .. } => ApiError::new(StatusCode::CONFLICT, "ended", e.to_string()),
        ActError::Journal(_) => store_error(e),
        other => ApiError::new(StatusCode::CONFLICT, "refused", other.to_string()),
    })?;
    let mut state = state_of(app, run_id).await?;
    if let Json::Object(o) = &mut state {
        o.remove("created");
    }
    Ok(state)
}

/// `POST /v1/runs/{run_id}/cancel`: ends a suspended, paused or pending run `cancelled` under
/// its lease (`nanovm_runtime::act`, as `nanovm cancel` does). A run a worker is executing is
/// `409 busy` (retry), an ended one `409 ended`; nothing is written then.
async fn cancel(
    State(app): State<Arc<App>>,
    Path(run_id): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    raw: Body,
) -> ApiResult {
    let req: CancelBody = body(&app, &headers, raw).await?;
    let by = Actor::new(caller.name, req.reason.unwrap_or_else(|| "http".into()));
    let state = cancel_run(&app, &run_id, by).await?;
    Ok(axum::Json(state).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliverBody {
    /// The event's id: a redelivery with the same id is acknowledged and changes nothing.
    event_id: String,
    #[serde(default)]
    payload: Json,
    /// Why (recorded with the token's name as the delivery's actor).
    #[serde(default)]
    reason: Option<String>,
}

/// Runs `work` in its own task, so a request that times out does not cut it short.
async fn detached<T: Send + 'static>(
    work: nanovm_runtime::BoxFuture<'static, T>,
) -> Result<T, ApiError> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

async fn deliver(
    State(app): State<Arc<App>>,
    Path((run_id, event)): Path<(String, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    raw: Body,
) -> ApiResult {
    let served = program_of(&app, &run_id).await?;
    let req: DeliverBody = body(&app, &headers, raw).await?;
    if req.event_id.is_empty() || req.event_id.len() > 256 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_event_id",
            "the event id must be 1 to 256 bytes",
        ));
    }
    let by = Actor::new(caller.name, req.reason.unwrap_or_else(|| "http".into()));
    let state = deliver_to(&app, served, &run_id, &event, req.event_id, req.payload, by).await?;
    Ok(axum::Json(state).into_response())
}

/// Delivers `event` to run `run_id` of `served` (in its own task); the run's state with the
/// `outcome`.
pub(crate) async fn deliver_to(
    app: &App,
    served: Arc<dyn Served>,
    run_id: &str,
    event: &str,
    event_id: String,
    payload: Json,
    by: Actor,
) -> Result<Json, ApiError> {
    let done = detached(served.deliver(
        app.runtime.clone(),
        run_id.to_string(),
        event.to_string(),
        event_id,
        payload,
        by,
    ))
    .await?;
    let outcome = match done {
        Ok(Delivery::Resumed(_)) => "delivered",
        Ok(Delivery::Duplicate(_)) => "duplicate",
        Ok(Delivery::TimedOut(_)) => "timed_out",
        Ok(_) => "delivered",
        Err(e) => return Err(deliver_error(e)),
    };
    let mut state = state_of(app, run_id).await?;
    if let Json::Object(o) = &mut state {
        o.remove("created");
        o.insert("outcome".into(), outcome.into());
    }
    Ok(state)
}

fn deliver_error(e: DeliverError) -> ApiError {
    match e {
        DeliverError::UnknownRun(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_run", e.to_string())
        }
        DeliverError::NotWaiting { .. } => {
            ApiError::new(StatusCode::CONFLICT, "not_waiting", e.to_string())
        }
        DeliverError::Payload(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
            e.to_string(),
        ),
        DeliverError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, "event_id_reused", e.to_string())
        }
        DeliverError::Run(e) => run_error(e),
        other => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "deliver",
            other.to_string(),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileBody {
    effect_id: Digest,
    /// `done` (with the tool's answer in `result`) or `not_done`.
    resolution: String,
    #[serde(default)]
    result: Json,
    #[serde(default)]
    reason: Option<String>,
}

async fn reconcile(
    State(app): State<Arc<App>>,
    Path(run_id): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
    raw: Body,
) -> ApiResult {
    let served = program_of(&app, &run_id).await?;
    let req: ReconcileBody = body(&app, &headers, raw).await?;
    let resolution = match req.resolution.as_str() {
        "done" => Resolution::Done(req.result),
        "not_done" => Resolution::NotDone,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("resolution `{other}`: expected `done` or `not_done`"),
            ));
        }
    };
    let by = Actor::new(caller.name, req.reason.unwrap_or_else(|| "http".into()));
    let done = detached(served.reconcile(
        app.runtime.clone(),
        run_id.clone(),
        req.effect_id,
        resolution,
        by,
    ))
    .await?;
    if let Err(e) = done {
        return Err(match e {
            ReconcileError::UnknownRun(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_run", e.to_string())
            }
            ReconcileError::NotNeeded { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_needed", e.to_string())
            }
            ReconcileError::NotAmbiguous { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_ambiguous", e.to_string())
            }
            ReconcileError::Run(e) => run_error(e),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reconcile",
                other.to_string(),
            ),
        });
    }
    let mut state = state_of(&app, &run_id).await?;
    if let Json::Object(o) = &mut state {
        o.remove("created");
    }
    Ok(axum::Json(state).into_response())
}
