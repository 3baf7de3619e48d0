//! `nanovm redrive --db PATH RUN --actor A --reason R [--extend-budget steps=N,...]`: records
//! an operator's redrive of a `failed`, `budget_exceeded` or `stalled` run.
//!
//! The CLI has no program to continue the run with, so it only records the redrive: under the
//! run's lease it appends `redriven { step, by, extend }` (the step where the run stopped, who
//! and why, the raised budgets) and gives the lease back. The run is `running` again, and a
//! worker that has its program (`Worker::run_once` / `run_once_any`) claims it and continues
//! it from that step, as `Runtime::redrive` would. A completed, suspended, cancelled or
//! reconciliation-waiting run is refused, and nothing is written.

use std::io::Write;

use nanovm_runtime::trace::{Actor, BudgetKind};
use nanovm_runtime::{RedriveOptions, RunError, Runtime};

use crate::db::{self, Db};
use crate::error::{Error, Status};
use crate::escape::escape;

/// Arguments of `nanovm redrive`.
#[derive(clap::Args)]
pub struct Args {
    /// The store: a SQLite file (it must exist) or a `postgres://` URL. Written to: the
    /// redrive is appended.
    #[arg(long, value_name = "DB", value_parser = Db::parse)]
    db: Db,
    /// The run to redrive.
    #[arg(value_name = "RUN")]
    run: String,
    /// Who redrives it (recorded in the trace).
    #[arg(long, value_name = "A")]
    actor: String,
    /// Why (recorded in the trace).
    #[arg(long, value_name = "R")]
    reason: String,
    /// Budgets to raise, comma-separated `NAME=N`: `steps`, `tokens`, `tool_calls`,
    /// `stalled_steps`, `duration` (milliseconds); `max_` prefixes are accepted too.
    #[arg(long, value_name = "NAME=N,...", value_parser = parse_extend)]
    extend_budget: Option<Extend>,
}

/// Parsed `--extend-budget`.
#[derive(Clone, Debug)]
pub struct Extend(Vec<(BudgetKind, u64)>);

fn parse_extend(s: &str) -> Result<Extend, String> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (name, n) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not NAME=N"))?;
        let kind = match name.trim().trim_start_matches("max_") {
            "steps" => BudgetKind::MaxSteps,
            "tokens" => BudgetKind::MaxTokens,
            "tool_calls" => BudgetKind::MaxToolCalls,
            "stalled_steps" => BudgetKind::MaxStalledSteps,
            "duration" => BudgetKind::MaxDuration,
            other => {
                return Err(format!(
                    "`{other}` is not a budget (steps, tokens, tool_calls, stalled_steps, duration)"
                ));
            }
        };
        let n: u64 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{n}` is not a non-negative number"))?;
        out.push((kind, n));
    }
    Ok(Extend(out))
}

/// Runs `nanovm redrive`.
pub fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<Status, Error> {
    let mut opts = RedriveOptions::new(Actor::new(args.actor.clone(), args.reason.clone()));
    for &(kind, n) in args.extend_budget.as_ref().map_or(&[][..], |e| &e.0[..]) {
        opts = opts.extend(kind, n);
    }
    let step = db::block_on(async {
        let store = args.db.open(true).await?;
        let runtime = Runtime::builder().store(store.clone()).build();
        match runtime.request_redrive(&args.run, opts).await {
            Ok(()) => {}
            // The run's state refuses it (it succeeded, it is running, ...): exit 1, as the
            // other operator acts do, nothing written.
            Err(e @ RunError::NotRedrivable { .. }) => return Ok(Err(e.to_string())),
            Err(e) => return Err(args.db.error(e)),
        }
        let entries = store
            .load(&args.run)
            .await
            .map_err(|e| args.db.error(e))?
            .unwrap_or_default();
        Ok(Ok(nanovm_runtime::RunView::of(&entries)
            .at()
            .map(str::to_string)))
    })??;
    let step = match step {
        Ok(step) => step,
        Err(refused) => {
            writeln!(err, "refused: {}", escape(&refused)).map_err(Error::stderr)?;
            return Ok(Status::Failed);
        }
    };
    writeln!(
        out,
        "run {} redriven at `{}` by {}: running again, for a worker with its program to continue",
        escape(&args.run),
        escape(step.as_deref().unwrap_or("?")),
        escape(&args.actor)
    )
    .map_err(Error::stdout)?;
    Ok(Status::Clean)
}
