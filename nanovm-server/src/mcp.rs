//! MCP (rmcp): each served program is a tool `start_<program>` whose input schema is the
//! program's; tools for a run's status, delivering an event, its trace and verifying it;
//! resources for traces and program graphs. An MCP client (an agent) only ever reaches the
//! same operations as the HTTP API: it can start a program and answer what a run waits for,
//! never call one of the program's tools, so every effect stays behind the compiled guards.
//!
//! Over Streamable HTTP (`/mcp`) the request needs a bearer token like the rest of the API, and
//! each tool call the scope of its HTTP twin (`start_*`: start; `deliver_event`: operate; the
//! others: read); rmcp's host allow-list (localhost names only) refuses DNS-rebinding requests.
//! Over stdio the client is the local user who started the process: every scope.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::http::request::Parts;
use nanovm_runtime::Json;
use nanovm_runtime::store::RunQuery;
use nanovm_runtime::trace::Actor;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::json;

use crate::api::{self, ApiError, Caller};
use crate::{App, Scope};

/// The MCP face of a server.
#[derive(Clone)]
pub(crate) struct Mcp {
    app: Arc<App>,
    /// stdio: the local user, every scope.
    trusted: bool,
}

impl Mcp {
    pub(crate) fn new(app: Arc<App>, trusted: bool) -> Self {
        Mcp { app, trusted }
    }

    /// The caller of this request: over HTTP from the bearer token the API checked.
    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Option<Caller> {
        if self.trusted {
            return Some(Caller {
                name: "mcp-stdio".into(),
                scopes: vec![Scope::Read, Scope::Start, Scope::Operate],
            });
        }
        ctx.extensions
            .get::<Parts>()
            .and_then(|p| p.extensions.get::<Caller>())
            .cloned()
    }
}

fn schema(v: Json) -> Arc<JsonObject> {
    match v {
        Json::Object(o) => Arc::new(o),
        _ => Arc::new(JsonObject::new()),
    }
}

fn run_id_schema() -> Json {
    json!({ "type": "string", "description": "the run id" })
}

fn text(v: &Json) -> CallToolResult {
    let mut r = CallToolResult::success(vec![ContentBlock::text(
        serde_json::to_string_pretty(v).unwrap_or_default(),
    )]);
    r.structured_content = Some(v.clone());
    r
}

fn refused(e: &ApiError) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(format!(
        "{} ({}): {}",
        e.code,
        e.status.as_u16(),
        e.message
    ))])
}

fn str_arg<'a>(args: &'a JsonObject, name: &str) -> Result<&'a str, ApiError> {
    args.get(name).and_then(Json::as_str).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("argument `{name}` (a string) is required"),
        )
    })
}

/// A run's stored trace, verified: (root, entries, JSONL).
async fn verified(app: &App, run_id: &str) -> Result<(String, usize, String), ApiError> {
    let entries = api::entries_of(app, run_id).await?;
    let n = entries.len();
    let trace = api::verified(entries)?;
    Ok((trace.root().to_hex(), n, trace.to_jsonl()))
}

impl Mcp {
    fn tools(&self) -> Vec<Tool> {
        let mut tools = Vec::new();
        for served in self.app.programs.values() {
            let info = served.info();
            let mut s = nanovm_runtime::input_schema(info);
            // The run id rides along the inputs (unless the program has an input of that name).
            if let Some(Json::Object(props)) = s.get_mut("properties")
                && !props.contains_key("run_id")
            {
                props.insert(
                    "run_id".into(),
                    json!({ "type": "string", "description": "the run id: starting it again returns the existing run (give one for an idempotent start)" }),
                );
            }
            // So does the data subject (for `nanovm erase --subject`), unless an input has the name.
            if let Some(Json::Object(props)) = s.get_mut("properties")
                && !props.contains_key("subject")
            {
                props.insert(
                    "subject".into(),
                    json!({ "type": "string", "description": "the data subject the run's personal data belongs to (a pseudonymous id such as a customer number, never an email address): an erasure of that subject finds the run; starting the run again may not name another subject" }),
                );
            }
            s.as_object_mut().map(|o| o.remove("$schema"));
            tools.push(Tool::new(
                format!("start_{}", info.name),
                format!(
                    "Start a run of the compiled program `{}` (recorded, then executed by the server's workers under the program's guards). Secret inputs go to the vault, never into the trace. Returns the run's state.",
                    info.name
                ),
                schema(s),
            ));
        }
        tools.push(Tool::new(
            "run_status",
            "A run's state: status, current step, what it waits for and until when, open effects.",
            schema(json!({ "type": "object", "properties": { "run_id": run_id_schema() }, "required": ["run_id"] })),
        ));
        tools.push(Tool::new(
            "deliver_event",
            "Deliver the event a suspended run waits for (an approval, a webhook). The event id makes it idempotent: a repeat is acknowledged and applied once.",
            schema(json!({
                "type": "object",
                "properties": {
                    "run_id": run_id_schema(),
                    "event": { "type": "string", "description": "the event's name (what the run waits for)" },
                    "event_id": { "type": "string", "description": "the event's unique id" },
                    "payload": { "description": "the event's payload (checked against the await's declared type)" },
                    "reason": { "type": "string" }
                },
                "required": ["run_id", "event", "event_id"]
            })),
        ));
        tools.push(Tool::new(
            "cancel_run",
            "Cancel a run that waits (suspended at an await, paused for reconciliation, or pending): it ends `cancelled` under its lease, with the token's name and the reason recorded. Refused for an ended run or one a worker is executing.",
            schema(json!({
                "type": "object",
                "properties": { "run_id": run_id_schema(), "reason": { "type": "string" } },
                "required": ["run_id"]
            })),
        ));
        tools.push(Tool::new(
            "get_trace",
            "A run's hash-chained trace as JSON Lines (verified before it is returned).",
            schema(json!({ "type": "object", "properties": { "run_id": run_id_schema() }, "required": ["run_id"] })),
        ));
        tools.push(Tool::new(
            "verify",
            "Verify a run's stored trace (the blake3 hash chain): its root hash and length, or what is broken.",
            schema(json!({ "type": "object", "properties": { "run_id": run_id_schema() }, "required": ["run_id"] })),
        ));
        tools
    }

    async fn call(&self, name: &str, args: JsonObject, caller: &Caller) -> Result<Json, ApiError> {
        let need = |scope: Scope| {
            if caller.scopes.contains(&scope) {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "token `{}` lacks the scope `{}` this tool needs",
                        caller.name,
                        scope.as_str()
                    ),
                ))
            }
        };
        if let Some(program) = name.strip_prefix("start_")
            && self.app.programs.contains_key(program)
        {
            need(Scope::Start)?;
            let mut input = args;
            let has_run_id_input = self.app.programs[program]
                .info()
                .inputs
                .iter()
                .any(|i| i.name == "run_id");
            let run_id = if has_run_id_input {
                None
            } else {
                match input.remove("run_id") {
                    Some(Json::String(s)) => Some(s),
                    None | Some(Json::Null) => None,
                    Some(_) => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_run_id",
                            "`run_id` must be a string",
                        ));
                    }
                }
            };
            let has_subject_input = self.app.programs[program]
                .info()
                .inputs
                .iter()
                .any(|i| i.name == "subject");
            let subject = if has_subject_input {
                None
            } else {
                match input.remove("subject") {
                    Some(Json::String(s)) => Some(s),
                    None | Some(Json::Null) => None,
                    Some(_) => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_subject",
                            "`subject` must be a string",
                        ));
                    }
                }
            };
            let (created, mut state) = api::start(
                &self.app,
                program,
                run_id.as_deref(),
                &Json::Object(input),
                subject.as_deref(),
            )
            .await?;
            if let Json::Object(o) = &mut state {
                o.insert("created".into(), created.into());
            }
            return Ok(state);
        }
        match name {
            "run_status" => {
                need(Scope::Read)?;
                let mut s = api::state_of(&self.app, str_arg(&args, "run_id")?).await?;
                if let Json::Object(o) = &mut s {
                    o.remove("created");
                }
                Ok(s)
            }
            "deliver_event" => {
                need(Scope::Operate)?;
                let run_id = str_arg(&args, "run_id")?;
                let served = api::program_of(&self.app, run_id).await?;
                let reason = args
                    .get("reason")
                    .and_then(Json::as_str)
                    .unwrap_or("mcp")
                    .to_string();
                api::deliver_to(
                    &self.app,
                    served,
                    run_id,
                    str_arg(&args, "event")?,
                    str_arg(&args, "event_id")?.to_string(),
                    args.get("payload").cloned().unwrap_or(Json::Null),
                    Actor::new(caller.name.clone(), reason),
                )
                .await
            }
            "cancel_run" => {
                need(Scope::Operate)?;
                let reason = args
                    .get("reason")
                    .and_then(Json::as_str)
                    .unwrap_or("mcp")
                    .to_string();
                let by = Actor::new(caller.name.clone(), reason);
                api::cancel_run(&self.app, str_arg(&args, "run_id")?, by).await
            }
            "get_trace" => {
                need(Scope::Read)?;
                let (root, entries, jsonl) = verified(&self.app, str_arg(&args, "run_id")?).await?;
                Ok(json!({ "root": root, "entries": entries, "jsonl": jsonl }))
            }
            "verify" => {
                need(Scope::Read)?;
                match verified(&self.app, str_arg(&args, "run_id")?).await {
                    Ok((root, entries, _)) => {
                        Ok(json!({ "ok": true, "root": root, "entries": entries }))
                    }
                    Err(e) if e.code == "trace_corrupt" => {
                        Ok(json!({ "ok": false, "error": e.message }))
                    }
                    Err(e) => Err(e),
                }
            }
            other => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_tool",
                format!(
                    "no tool `{other}`: an MCP client starts programs and answers what runs wait for; the programs' own tools run only inside the compiled graph"
                ),
            )),
        }
    }
}

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("nanovm", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "nanovm runs compiled workflows. Start one with start_<program>; read where it stands with run_status; answer what it waits for with deliver_event. Effects happen only inside the compiled graph, behind its guards.",
        )
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(caller) = self.caller(&context) else {
            return Err(ErrorData::invalid_request("no bearer token", None));
        };
        let args = request.arguments.unwrap_or_default();
        Ok(match self.call(&request.name, args, &caller).await {
            Ok(v) => text(&v),
            Err(e) => refused(&e),
        }
        .into())
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        if !self
            .caller(&context)
            .is_some_and(|c| c.scopes.contains(&Scope::Read))
        {
            return Err(ErrorData::invalid_request("needs the scope `read`", None));
        }
        let mut out = Vec::new();
        for served in self.app.programs.values() {
            let name = served.info().name;
            out.push(
                Resource::new(
                    format!("nanovm://programs/{name}/graph"),
                    format!("{name} graph"),
                )
                .with_description(format!("The compiled graph of `{name}` (Mermaid)"))
                .with_mime_type("text/vnd.mermaid"),
            );
        }
        let store = self.app.runtime.store().expect("checked at bind");
        let runs = store
            .runs(&RunQuery::new().limit(100))
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        for r in runs {
            out.push(
                Resource::new(
                    format!("nanovm://runs/{}/trace", r.run_id),
                    format!("trace of {}", r.run_id),
                )
                .with_description(format!("{} run, {}", r.program, r.status))
                .with_mime_type("application/jsonl"),
            );
        }
        Ok(ListResourcesResult::with_all_items(out))
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("nanovm://runs/{run_id}/trace", "run trace")
                .with_mime_type("application/jsonl"),
            ResourceTemplate::new("nanovm://programs/{program}/graph", "program graph")
                .with_mime_type("text/vnd.mermaid"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if !self
            .caller(&context)
            .is_some_and(|c| c.scopes.contains(&Scope::Read))
        {
            return Err(ErrorData::invalid_request("needs the scope `read`", None));
        }
        let uri = request.uri.as_str();
        let not_found = || ErrorData::resource_not_found(format!("no resource `{uri}`"), None);
        let rest = uri.strip_prefix("nanovm://").ok_or_else(not_found)?;
        if let Some(run_id) = rest
            .strip_prefix("runs/")
            .and_then(|r| r.strip_suffix("/trace"))
        {
            let (_, _, jsonl) = verified(&self.app, run_id)
                .await
                .map_err(|e| ErrorData::resource_not_found(e.message, None))?;
            return Ok(ReadResourceResult::new(vec![
                ResourceContents::text(jsonl, uri).with_mime_type("application/jsonl"),
            ])
            .into());
        }
        if let Some(program) = rest
            .strip_prefix("programs/")
            .and_then(|r| r.strip_suffix("/graph"))
        {
            let served = self.app.programs.get(program).ok_or_else(not_found)?;
            let graph = served.graph().unwrap_or("");
            return Ok(ReadResourceResult::new(vec![
                ResourceContents::text(graph, uri).with_mime_type("text/vnd.mermaid"),
            ])
            .into());
        }
        Err(not_found())
    }
}
