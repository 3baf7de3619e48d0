//! `nanovm`: check `.nvm` workflows, draw their graphs, verify and compare run traces, list the
//! runs of a store and export their traces.
//!
//! Exit codes, for every subcommand: 0 when all is well, 1 when the command found what it looks
//! for (compile errors, a broken trace entry or an incomplete trace, two traces that differ), 2
//! on usage and I/O errors.

mod audit;
mod check;
mod db;
mod diff;
mod error;
mod escape;
mod graph;
mod redrive;
mod runs;
mod source;
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
    /// Draw a program's graph as Mermaid or Graphviz DOT.
    Graph(graph::Args),
    /// Check a trace (JSON Lines): its hash chain, and that it is one whole run (`run_started`
    /// first, a closing `run_ended` or `suspended` last; `--partial` accepts a prefix), and
    /// with `--key --checkpoint` that a signed checkpoint covers it. Prints its root hash.
    Verify(verify::Args),
    /// Compare two traces and show the first entry where they differ.
    Diff(diff::Args),
    /// List the runs of a store (SQLite file, opened read-only): id, program, status, where
    /// each is. Text from the store is printed with control characters escaped.
    Runs(runs::Args),
    /// Export a stored run's trace as JSON Lines (store opened read-only; verified first; exit
    /// 1 if broken).
    Trace(trace::Args),
    /// Record an operator's redrive of a failed, budget_exceeded or stalled run (SQLite file,
    /// written): a worker with its program continues it from the step where it stopped.
    Redrive(redrive::Args),
    /// Audit a store's evidence against the signing key and a tree head kept from the last
    /// audit: names deleted, swapped, rewritten and forged runs and a rolled-back store (exit 1).
    Audit(audit::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    let result = match &cli.command {
        Command::Check(args) => check::run(args, &mut out, &mut err),
        Command::Graph(args) => graph::run(args, &mut out, &mut err),
        Command::Verify(args) => verify::run(args, &mut out),
        Command::Diff(args) => diff::run(args, &mut out),
        Command::Runs(args) => runs::run(args, &mut out),
        Command::Trace(args) => trace::run(args, &mut out, &mut err),
        Command::Audit(args) => audit::run(args, &mut out),
        Command::Redrive(args) => redrive::run(args, &mut out),
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
