//! The operator's acts on a stored run: `nanovm deliver`, `nanovm cancel`, `nanovm reconcile`.
//!
//! The command line has no compiled program and no tools, so it records the act at store level
//! ([`nanovm_runtime::act`]): under the run's lease, decided on what is stored under it, one
//! entry appended fenced by the lease and the lease given back in the same write. A worker that
//! has the program continues the run from there. A run held by a live lease (an execution in
//! progress) is waited for up to `--wait` seconds, then refused: exit 1, nothing written.
//!
//! Exit status: 0 when the act was recorded (or was a duplicate delivery: nothing to do); 1
//! when the run's state refuses it (unknown run, not waiting, not ambiguous, ended, held); 2 on
//! usage and store errors.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use nanovm_dsl::check::Ty;
use nanovm_dsl::lower::StepKind;
use nanovm_runtime::trace::Actor;
use nanovm_runtime::{Act, ActError, Acted, Digest, Json, SystemClock, act};

use crate::db::{self, Db};
use crate::error::{Error, Status};
use crate::escape::escape;
use crate::format::Format;
use crate::source;

/// What every act needs: the store, the run, who acts and why, how long to wait for a lease.
#[derive(clap::Args)]
pub struct Common {
    /// The store: a SQLite file (it must exist and hold a nanovm store) or a `postgres://` URL.
    #[arg(long, value_name = "DB", value_parser = Db::parse)]
    db: Db,
    /// Who acts (an operator's identity): recorded in the run's trace.
    #[arg(long, value_name = "ID")]
    by: String,
    /// Why (a ticket, a note): recorded in the run's trace.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// While someone else holds the run's lease (an execution in progress), wait up to this
    /// many seconds for it; then refuse (exit 1). Default: refuse at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    wait: u64,
    /// `text`: a sentence for people; `json`: one object for scripts (see docs/runtime.md).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Arguments of `nanovm cancel`.
#[derive(clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    common: Common,
    /// The run.
    #[arg(value_name = "RUN_ID")]
    run_id: String,
}

/// Arguments of `nanovm reconcile`.
#[derive(clap::Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    common: Common,
    /// The run (paused `needs_reconciliation`).
    #[arg(value_name = "RUN_ID")]
    run_id: String,
    /// The ambiguous effect (64 hex digits, as `nanovm runs --format json` lists it under
    /// `to_reconcile`).
    #[arg(value_name = "EFFECT_ID")]
    effect_id: String,
    /// The effect happened and the tool answered this JSON value: the run continues with it.
    #[arg(long, value_name = "JSON", required_unless_present = "not_done")]
    done: Option<String>,
    /// The effect did not happen. Refused here: calling the tool again is for a host that has
    /// the program (`Runtime::reconcile_as`), in the execution that records the answer.
    #[arg(long, conflicts_with = "done")]
    not_done: bool,
}

/// Arguments of `nanovm deliver`.
#[derive(clap::Args)]
pub struct DeliverArgs {
    #[command(flatten)]
    common: Common,
    /// The program's `.nvm` source: the run's program is found in it by its hash (a file
    /// changed since the run started is refused), and tells where the `await` goes and the
    /// payload's type.
    #[arg(long, value_name = "FILE.nvm")]
    program: PathBuf,
    /// The run (suspended at an `await`).
    #[arg(value_name = "RUN_ID")]
    run_id: String,
    /// The event's name.
    #[arg(value_name = "EVENT")]
    event: String,
    /// The event's id: the idempotency key (the same id and payload again is a duplicate and
    /// changes nothing; the same id with another payload is refused).
    #[arg(long = "id", value_name = "EVENT_ID")]
    event_id: String,
    /// The payload (JSON; default `null`).
    #[arg(long, value_name = "JSON", default_value = "null")]
    payload: String,
}

fn json_arg(flag: &str, text: &str) -> Result<Json, Error> {
    serde_json::from_str(text).map_err(|e| Error::Usage(format!("{flag} is not JSON: {e}")))
}

/// Runs `nanovm cancel`.
pub fn cancel(
    args: &CancelArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status, Error> {
    perform(&args.common, &args.run_id, Act::Cancel, out, err)
}

/// Runs `nanovm reconcile`.
pub fn reconcile(
    args: &ReconcileArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status, Error> {
    let Some(effect_id) = Digest::from_hex(&args.effect_id) else {
        return Err(Error::Usage(format!(
            "`{}` is not an effect id (64 hex digits)",
            args.effect_id
        )));
    };
    let Some(done) = &args.done else {
        return Err(Error::Usage(
            "--not-done lets the tool be called again, which only an execution that has the \
             program and its tools may do (a crash between the answer and the call must leave \
             the effect ambiguous): answer it with Runtime::reconcile_as in the host, or answer \
             --done with the tool's result if the effect happened"
                .into(),
        ));
    };
    let result = json_arg("--done", done)?;
    perform(
        &args.common,
        &args.run_id,
        Act::Reconcile { effect_id, result },
        out,
        err,
    )
}

/// Runs `nanovm deliver`.
pub fn deliver(
    args: &DeliverArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status, Error> {
    let payload = json_arg("--payload", &args.payload)?;
    let c = source::compile_file(&args.program)?;
    if c.has_errors() {
        let _ = err.write_all(crate::escape::escape_lines(&c.render()).as_bytes());
        return Err(Error::Usage(format!(
            "{} does not compile",
            args.program.display()
        )));
    }
    let db = &args.common.db;
    let record = db::block_on(async {
        let store = db.open(false).await?;
        store.run(&args.run_id).await.map_err(|e| db.error(e))
    })??;
    let Some(record) = record else {
        return refused(
            &args.common,
            &args.run_id,
            "deliver",
            &ActError::UnknownRun(args.run_id.clone()),
            out,
            err,
        );
    };
    let Some(program) = c.programs.iter().find(|p| p.hash == record.program_hash.0) else {
        return Err(Error::Usage(format!(
            "{} holds no program with the hash of run `{}`'s program `{}` ({}): the file is \
             another program, or changed since the run started",
            args.program.display(),
            args.run_id,
            record.program,
            record.program_hash.short()
        )));
    };
    // The await the run is suspended at, if it awaits this event; otherwise the first await
    // of the event (the act then refuses: the run is not waiting for it there).
    let awaits = program.steps.iter().filter_map(|s| match &s.kind {
        StepKind::Await(a) if a.event == args.event => Some((s.name.as_str(), a)),
        _ => None,
    });
    let mut awaits: Vec<_> = awaits.collect();
    awaits.sort_by_key(|(name, _)| Some(*name) != record.end_step.as_deref());
    let Some((step, a)) = awaits.first() else {
        return Err(Error::Usage(format!(
            "program `{}` has no `await` of event `{}`",
            program.name, args.event
        )));
    };
    check_payload(&payload, &a.ty, &args.event)?;
    let name = |i: usize| program.steps.get(i).map(|s| s.name.clone());
    let Some(next) = name(a.next) else {
        return Err(Error::Usage("the await's target is not a step".into()));
    };
    let what = Act::Deliver {
        step: (*step).to_string(),
        event: args.event.clone(),
        event_id: args.event_id.clone(),
        payload,
        next,
        timeout_next: a.timeout.and_then(|(_, t)| name(t)),
    };
    perform(&args.common, &args.run_id, what, out, err)
}

/// Refuses a payload the program's `await` would refuse (its generated code decodes it the
/// same way), so that a worker never meets a recorded delivery it cannot replay.
fn check_payload(payload: &Json, ty: &Ty, event: &str) -> Result<(), Error> {
    let ok = match ty {
        Ty::Json => true,
        Ty::Str => payload.is_string(),
        Ty::Int => payload.as_i64().is_some(),
        Ty::Float => payload.as_f64().is_some(),
        Ty::Bool => payload.is_boolean(),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "the payload of event `{event}` must be `{ty}`; --payload is {}",
        match payload {
            Json::Null => "null",
            Json::Bool(_) => "a bool",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    )))
}

/// Records `what` and reports it.
fn perform(
    common: &Common,
    run_id: &str,
    what: Act,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status, Error> {
    let name = what.name();
    let by = Actor::new(common.by.clone(), common.reason.clone());
    let wait = Duration::from_secs(common.wait);
    let db = &common.db;
    let acted = db::block_on(async {
        let store = db.open(true).await?;
        Ok::<_, Error>(act(store.as_ref(), &SystemClock, run_id, what, by, wait).await)
    })??;
    let acted = match acted {
        Ok(acted) => acted,
        Err(ActError::Journal(e)) => return Err(db.error(e)),
        Err(e) => return refused(common, run_id, name, &e, out, err),
    };
    let (outcome, status, entries, text) = match acted {
        Acted::Recorded { status, entries } => (
            "recorded",
            Some(status),
            Some(entries),
            if status.is_terminal() {
                format!("run `{run_id}`: {name} recorded; the run is {status}")
            } else {
                format!(
                    "run `{run_id}`: {name} recorded; the run is {status}: a worker with the \
                     program continues it"
                )
            },
        ),
        Acted::Duplicate => (
            "duplicate",
            None,
            None,
            format!("run `{run_id}`: this event id was delivered before; nothing recorded"),
        ),
        Acted::TimedOut { entries } => (
            "timed_out",
            Some(nanovm_runtime::RunStatus::Running),
            Some(entries),
            format!(
                "run `{run_id}`: the await's deadline had passed: its timeout was recorded \
                 instead of the event; a worker with the program continues it"
            ),
        ),
        _ => (
            "recorded",
            None,
            None,
            format!("run `{run_id}`: {name} recorded"),
        ),
    };
    match common.format {
        Format::Json => {
            let doc = serde_json::json!({
                "run_id": run_id,
                "act": name,
                "outcome": outcome,
                "status": status.map(|s| s.to_string()),
                "entries": entries,
                "error": null,
            });
            writeln!(out, "{doc}").map_err(Error::stdout)?;
        }
        Format::Text => writeln!(out, "{}", escape(&text)).map_err(Error::stdout)?,
    }
    Ok(Status::Clean)
}

/// Reports a refusal: the message on stderr (and the JSON object on stdout); exit 1.
fn refused(
    common: &Common,
    run_id: &str,
    name: &str,
    e: &ActError,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status, Error> {
    let message = match e {
        ActError::Leased {
            owner, expires_ms, ..
        } => format!(
            "run `{run_id}` is held by `{owner}` until {} (an execution in progress): an act \
             never interleaves with one; retry later or pass --wait SECONDS",
            nanovm_runtime::time::utc(*expires_ms)
        ),
        e => e.to_string(),
    };
    if common.format == Format::Json {
        let doc = serde_json::json!({
            "run_id": run_id,
            "act": name,
            "outcome": "refused",
            "status": null,
            "entries": null,
            "error": message,
        });
        writeln!(out, "{doc}").map_err(Error::stdout)?;
    }
    writeln!(err, "refused: {}", escape(&message)).map_err(Error::stderr)?;
    Ok(Status::Failed)
}

#[cfg(test)]
mod tests {
    use super::{Ty, check_payload};
    use serde_json::json;

    /// The payload check decodes as the generated code does: an int is an `i64`, a float any
    /// number, `json` anything.
    #[test]
    fn payloads_are_checked_against_the_awaits_type() {
        assert!(check_payload(&json!({"a": 1}), &Ty::Json, "e").is_ok());
        assert!(check_payload(&json!(3), &Ty::Int, "e").is_ok());
        assert!(check_payload(&json!(3.5), &Ty::Int, "e").is_err());
        assert!(check_payload(&json!(3), &Ty::Float, "e").is_ok());
        assert!(check_payload(&json!("x"), &Ty::Str, "e").is_ok());
        assert!(check_payload(&json!(true), &Ty::Bool, "e").is_ok());
        let e = check_payload(&json!("yes"), &Ty::Bool, "approval").unwrap_err();
        assert!(
            e.to_string()
                .contains("must be `bool`; --payload is a string"),
            "{e}"
        );
    }
}
