//! `nanovm migrate --db FILE|postgres://... --from OLD.nvm --to NEW.nvm (RUN... | --all) --actor A --reason R`:
//! moves suspended runs of OLD to NEW where `nanovm compat` finds their step compatible.
//!
//! For each run: it must be pinned to OLD's hash and suspended at an `await`; the compat report
//! of OLD and NEW must call that step compatible; the variables NEW has assigned there are
//! taken from the run's trace (the value the step of OLD that assigned each last completed
//! with, read by [`RunView`]) and handed to the step of NEW that assigns the same variable.
//! Then [`nanovm_runtime::migrate_run`] claims the run's lease and appends `migrated` (naming
//! both hashes, the actor and the reason) and the re-issued `suspended`. A host with NEW's
//! compiled program continues the run on its next delivery or timeout.
//!
//! A run that is not migrated stays on OLD and is listed with the reason (another status, an
//! incompatible step, a value that cannot be carried, its lease held). Runs paused
//! `needs_reconciliation` are not migrated: reconcile them under OLD first.
//!
//! Exit code: 0 when every run asked for (with `--all`: every run of OLD found) was migrated,
//! 1 when any stays on OLD or a file has compile errors, 2 on usage and I/O errors.

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use nanovm_dsl::compat::{CompatReport, compare, definitely_assigned};
use nanovm_dsl::lower::{LlmOut, Program, Step, StepKind};
use nanovm_runtime::store::{JournalStore, RunQuery};
use nanovm_runtime::trace::{Actor, Carried, CarriedValue, RunStatus};
use nanovm_runtime::{Digest, Json, Migration, RunView, StepValue, migrate_run};

use crate::compat::load;
use crate::db::{self, Db};
use crate::error::{Error, Status};
use crate::escape::escape;

/// Arguments of `nanovm migrate`.
#[derive(clap::Args)]
pub struct Args {
    /// The store: a SQLite file (it must exist) or a `postgres://` URL.
    #[arg(long, value_name = "DB", value_parser = Db::parse)]
    db: Db,
    /// The program the runs are pinned to now.
    #[arg(long, value_name = "OLD.nvm")]
    from: PathBuf,
    /// The program they continue under.
    #[arg(long, value_name = "NEW.nvm")]
    to: PathBuf,
    /// Which program of the files; required when a file holds several.
    #[arg(long, value_name = "NAME")]
    program: Option<String>,
    /// The runs to migrate.
    #[arg(
        value_name = "RUN",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    runs: Vec<String>,
    /// Every suspended or paused run pinned to OLD.
    #[arg(long)]
    all: bool,
    /// Who migrates (recorded in the trace).
    #[arg(long, value_name = "ID")]
    actor: String,
    /// Why (recorded in the trace).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// How long the migration may hold a run's lease, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    lease_ms: u64,
}

/// Runs `nanovm migrate`.
pub fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<Status, Error> {
    if args.actor.trim().is_empty() || args.reason.trim().is_empty() {
        return Err(Error::Usage(
            "--actor and --reason must say who migrates and why".into(),
        ));
    }
    let old = load(&args.from, args.program.as_deref(), err)?;
    let new = load(&args.to, args.program.as_deref(), err)?;
    let (Some(old), Some(new)) = (old, new) else {
        return Ok(Status::Failed);
    };
    let report = compare(&old, &new);
    let from = Digest(old.hash);
    let by = Actor::new(args.actor.clone(), args.reason.clone());
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let lines = db::block_on(async {
        let store = args.db.open(true).await?;
        let ids: Vec<String> = if args.all {
            let mut ids = Vec::new();
            for status in [RunStatus::Suspended, RunStatus::NeedsReconciliation] {
                let query = RunQuery::new().program(old.name.clone()).status(status);
                for r in store.runs(&query).await.map_err(|e| args.db.error(e))? {
                    ids.push(r.run_id);
                }
            }
            ids
        } else {
            args.runs.clone()
        };
        let mut lines = Vec::new();
        for id in ids {
            let outcome = one(
                store.as_ref(),
                &id,
                &old,
                &new,
                &report,
                from,
                &by,
                now_ms,
                args.lease_ms,
                args.all,
            )
            .await;
            match outcome {
                Outcome::Skip => {}
                o => lines.push((id, o)),
            }
        }
        Ok::<_, Error>(lines)
    })??;
    let mut failed = false;
    for (id, outcome) in &lines {
        let line = match outcome {
            Outcome::Migrated { step, carried } => format!(
                "{}: migrated at `{step}` to {} ({carried} variable{} carried)",
                escape(id),
                &report.new_hash[..16],
                if *carried == 1 { "" } else { "s" }
            ),
            Outcome::Stays(why) => {
                failed = true;
                format!("{}: stays on {}: {why}", escape(id), &report.old_hash[..16])
            }
            Outcome::Skip => continue,
        };
        writeln!(out, "{line}").map_err(Error::stdout)?;
    }
    let migrated = lines
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Migrated { .. }))
        .count();
    writeln!(
        out,
        "{migrated} migrated, {} stay on OLD",
        lines.len() - migrated
    )
    .map_err(Error::stdout)?;
    Ok(if failed {
        Status::Failed
    } else {
        Status::Clean
    })
}

enum Outcome {
    Migrated {
        step: String,
        carried: usize,
    },
    Stays(String),
    /// `--all` found a run of the program's name pinned to another version: not ours.
    Skip,
}

#[allow(
    clippy::too_many_arguments,
    reason = "one run's migration needs all of it"
)]
async fn one(
    store: &dyn JournalStore,
    id: &str,
    old: &Program,
    new: &Program,
    report: &CompatReport,
    from: Digest,
    by: &Actor,
    now_ms: u64,
    lease_ms: u64,
    all: bool,
) -> Outcome {
    let entries = match store.load(id).await {
        Ok(Some(e)) => e,
        Ok(None) => return Outcome::Stays("no such run in the store".into()),
        Err(e) => return Outcome::Stays(e.to_string()),
    };
    let view = RunView::of(&entries);
    if view.program_hash() != Some(from) {
        if all {
            return Outcome::Skip;
        }
        return Outcome::Stays(match view.program_hash() {
            Some(h) => format!("it is pinned to program {}, not OLD", h.short()),
            None => "it has no `run_started`".into(),
        });
    }
    if view.status() != RunStatus::Suspended {
        let status = view.status();
        let mut why = format!("it is {status}; only runs suspended at an `await` are migrated");
        if status == RunStatus::NeedsReconciliation {
            why.push_str(" (reconcile it under OLD first)");
        }
        return Outcome::Stays(why);
    }
    let Some(step) = view.step().map(str::to_string) else {
        return Outcome::Stays("it waits at no step".into());
    };
    if !report.general.is_empty() {
        return Outcome::Stays(report.general.join("; "));
    }
    match report.point(&step) {
        Some(p) if p.compatible => {}
        Some(p) => {
            return Outcome::Stays(format!(
                "`{step}` is incompatible: {}",
                p.reasons.join("; ")
            ));
        }
        None => return Outcome::Stays(format!("`{step}` is not a pause point of OLD")),
    }
    let carried = match carry(old, new, &step, &view) {
        Ok(c) => c,
        Err(why) => return Outcome::Stays(why),
    };
    let n = carried.len();
    let m = Migration::new(
        id,
        from,
        Digest(new.hash),
        step.clone(),
        carried,
        by.clone(),
    );
    match migrate_run(store, &m, now_ms, lease_ms).await {
        Ok(_) => Outcome::Migrated { step, carried: n },
        Err(e) => Outcome::Stays(e.to_string()),
    }
}

/// The variables NEW has assigned at `step`, with the values the run's trace holds for them.
fn carry(old: &Program, new: &Program, step: &str, view: &RunView) -> Result<Vec<Carried>, String> {
    let Some(at) = new.steps.iter().position(|s| s.name == step) else {
        return Err(format!("NEW has no step `{step}`"));
    };
    let mut carried = Vec::new();
    for &v in &definitely_assigned(new)[at] {
        let var = &new.vars[v];
        if var.input {
            continue;
        }
        let old_sites = assigners(old, &var.name);
        let Some((o_step, o_branch, value)) = view
            .results()
            .filter(|(s, b, _)| {
                old_sites
                    .iter()
                    .any(|(os, ob, _)| os == s && ob.as_deref() == *b)
            })
            .last()
        else {
            return Err(format!("the trace holds no value for `{}`", var.name));
        };
        let new_sites = assigners(new, &var.name);
        let Some((n_step, n_branch, n_step_ref)) = new_sites
            .iter()
            .find(|(s, b, _)| s == o_step && b.as_deref() == o_branch)
            .or_else(|| new_sites.first())
        else {
            return Err(format!("NEW assigns `{}` nowhere", var.name));
        };
        let json = |v: &StepValue| match v {
            StepValue::Answer(t) => Json::String(t.clone()),
            StepValue::Tool(j) | StepValue::Event(j) => j.clone(),
            _ => Json::Null,
        };
        let value = match &n_step_ref.kind {
            StepKind::Llm(l) => match (&l.output, value) {
                (LlmOut::Choose { choice, .. }, StepValue::Answer(t)) => {
                    let members = &new.choices[*choice].members;
                    let Some(i) = members.iter().position(|m| m == t.trim()) else {
                        return Err(format!(
                            "`{}` is `{}`, not one of NEW's choices ({})",
                            var.name,
                            t.trim(),
                            members.join(", ")
                        ));
                    };
                    CarriedValue::Choice(i as u32)
                }
                // A typed answer is carried as the model's text; NEW's transition checks it
                // against NEW's type like a live answer.
                (LlmOut::Into { .. } | LlmOut::Answer { .. }, StepValue::Answer(t)) => {
                    CarriedValue::Text(t.clone())
                }
                _ => return Err(format!("`{}` was not a model's answer under OLD", var.name)),
            },
            StepKind::Call(_) => CarriedValue::Tool(json(value)),
            StepKind::Await(_) => CarriedValue::Event(json(value)),
            _ => return Err(format!("NEW's step `{n_step}` stores no value")),
        };
        carried.push(Carried::new(
            var.name.clone(),
            n_step.clone(),
            n_branch.clone(),
            value,
        ));
    }
    Ok(carried)
}

/// The steps (and branches) of `p` that assign `var`: (step, branch, the step or branch).
fn assigners<'a>(p: &'a Program, var: &str) -> Vec<(String, Option<String>, &'a Step)> {
    let assigns = |s: &Step| -> bool {
        let v = match &s.kind {
            StepKind::Llm(l) => match l.output {
                LlmOut::Choose { var, .. } | LlmOut::Into { var } | LlmOut::Answer { var, .. } => {
                    Some(var)
                }
                LlmOut::Discard => None,
            },
            StepKind::Call(c) => c.into,
            StepKind::Await(a) => a.into,
            _ => None,
        };
        v.is_some_and(|v| p.vars[v].name == var)
    };
    let mut out = Vec::new();
    for s in &p.steps {
        if assigns(s) {
            out.push((s.name.clone(), None, s));
        }
        if let StepKind::Parallel(par) = &s.kind {
            for b in &par.branches {
                if assigns(b) {
                    out.push((s.name.clone(), Some(b.name.clone()), b));
                }
            }
        }
    }
    out
}
