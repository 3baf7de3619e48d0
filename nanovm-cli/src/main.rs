//! `nanovm`: check `.nvm` workflows, draw their graphs, verify and compare run traces; list the
//! runs of a store (SQLite or PostgreSQL), export their traces, act on them as an operator
//! (deliver an event, cancel, reconcile) and measure their drift.
//!
//! Exit codes, for every subcommand: 0 when all is well, 1 when the command found what it looks
//! for (compile errors, a broken trace entry or an incomplete trace, two traces that differ), 2
//! on usage and I/O errors.

mod act;
mod audit;
mod bundle;
mod check;
mod compat;
mod db;
mod diff;
mod erase;
mod error;
mod escape;
mod format;
mod graph;
mod migrate;
mod prune;
mod redrive;
mod runs;
mod source;
mod stats;
mod trace;
mod verify;

use std::io::{self, Write as _};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Status;

#[derive(Parser)]
#[command(
    name = "nanovm",
    version,
    about,
    long_about = None,
    after_help = "Exit status: 0 all well; 1 compile errors, a broken or incomplete trace or \
                  differing traces; 2 usage or I/O error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile .nvm files and report their errors and warnings.
    Check(check::Args),
    /// Report, for every step where a run of OLD can be waiting, whether it can continue
    /// under NEW (exit 1 when any cannot).
    Compat(compat::Args),
    /// Move suspended runs of OLD to NEW where `compat` finds their step compatible, recorded
    /// as a `migrated` event naming both hashes, the actor and the reason (exit 1 when any
    /// run stays on OLD).
    Migrate(migrate::Args),
    /// Draw a program's graph as Mermaid or Graphviz DOT.
    Graph(graph::Args),
    /// Check a trace (JSON Lines): its hash chain, and that it is one whole run (`run_started`
    /// first, a closing `run_ended` or `suspended` last; `--partial` accepts a prefix), and
    /// with `--key --checkpoint` that a signed checkpoint covers it. Prints its root hash.
    Verify(verify::Args),
    /// Compare two traces and show the first entry where they differ.
    Diff(diff::Args),
    /// List the runs of a store (SQLite file opened read-only, or postgres:// URL): id,
    /// program, status, where each is; `--format json` for scripts. Text from the store is
    /// printed with control characters escaped.
    Runs(runs::Args),
    /// Export a stored run's trace as JSON Lines (verified first; exit 1 if broken).
    Trace(trace::Args),
    /// Deliver an event to a suspended run, recorded under the run's lease; a worker with the
    /// program continues the run (exit 1 if the run refuses it).
    Deliver(act::DeliverArgs),
    /// Cancel a run that is suspended, paused for reconciliation, or pending, under its lease
    /// (exit 1 if the run refuses it).
    Cancel(act::CancelArgs),
    /// Erase a data subject's secrets (--subject) or one secret (--vault-id) end to end: an
    /// `erased` tombstone naming --by and --reason appended to every run that holds it, under
    /// the run's lease, then the values erased from the store's vault and its logs scrubbed.
    Erase(erase::Args),
    /// Retention: delete the runs that ended before --ended-before, each after a signed prune
    /// record (--by, --reason) in the evidence log, so `nanovm audit` reports them as pruned.
    Prune(prune::Args),
    /// Answer an ambiguous effect of a run paused `needs_reconciliation` (`--done RESULT`),
    /// under the run's lease; a worker with the program continues the run.
    Reconcile(act::ReconcileArgs),
    /// Drift metrics of a store's runs per program: transition entropy, retry and rollback
    /// density, violation rate, tool churn, tokens and cost, path variance against the
    /// program's own baseline, and the runs above a baseline percentile.
    Stats(stats::Args),
    /// Record an operator's redrive of a failed, budget_exceeded or stalled run (SQLite file,
    /// written): a worker with its program continues it from the step where it stopped.
    Redrive(redrive::Args),
    /// Audit a store's evidence against the signing key and a tree head kept from the last
    /// audit: names deleted, swapped, rewritten and forged runs and a rolled-back store (exit 1);
    /// or, given a bundle (`nanovm audit OUT.tar --key PUBKEY`), check it offline.
    Audit(audit::Args),
    /// Write an auditor's bundle of one run (trace, signed checkpoint, inclusion proof under the
    /// signed tree head, program source) to a tar file, for `nanovm audit OUT.tar --key`.
    Export(bundle::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let result = match &cli.command {
        Command::Check(args) => check::run(args, &mut out, &mut err),
        Command::Graph(args) => graph::run(args, &mut out, &mut err),
        Command::Compat(args) => compat::run(args, &mut out, &mut err),
        Command::Migrate(args) => migrate::run(args, &mut out, &mut err),
        Command::Verify(args) => verify::run(args, &mut out),
        Command::Diff(args) => diff::run(args, &mut out),
        Command::Runs(args) => runs::run(args, &mut out),
        Command::Trace(args) => trace::run(args, &mut out, &mut err),
        Command::Deliver(args) => act::deliver(args, &mut out, &mut err),
        Command::Cancel(args) => act::cancel(args, &mut out, &mut err),
        Command::Erase(args) => erase::run(args, &mut out, &mut err),
        Command::Prune(args) => prune::run(args, &mut out, &mut err),
        Command::Reconcile(args) => act::reconcile(args, &mut out, &mut err),
        Command::Stats(args) => stats::run(args, &mut out),
        Command::Audit(args) => audit::run(args, &mut out),
        Command::Export(args) => bundle::export(args, &mut out, &mut err),
        Command::Redrive(args) => redrive::run(args, &mut out, &mut err),
    };
    let result = result.and_then(|status| {
        out.flush().map_err(error::Error::stdout)?;
        Ok(status)
    });
    match result {
        Ok(Status::Clean) => ExitCode::SUCCESS,
        Ok(Status::Failed) => ExitCode::from(1),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::from(2)
        }
    }
}
