//! `nanovm runs --db DB [--status S] [--program P] [--registered FILE.nvm]... [--format json]`:
//! the runs of a store (a SQLite file or a `postgres://` URL), one per line, or one JSON object
//! (`{"version": 1, "runs": [...]}`, each run as `nanovm_runtime::run_state` shapes it); with
//! `--registered`, runs of versions no given program is are marked.
//!
//! Columns: run id, program, status, entries, where it is (the end step; for a running run the
//! step it works in or moves to, read from its entries by [`RunView`]; for a suspended run
//! the await step, the event it waits for and until when; for a leased run, the worker and
//! when its lease expires), and when the store last changed it. Every instant is shown as
//! RFC 3339 UTC (`2026-12-07T18:30:00Z`), never as epoch milliseconds. Oldest first, as the
//! store orders them.

use std::io::Write;
use std::path::PathBuf;

use nanovm_runtime::store::{RunQuery, RunRecord};
use nanovm_runtime::time::utc;
use nanovm_runtime::trace::RunStatus;
use nanovm_runtime::{RUN_STATE_VERSION, RunView, run_state};

use crate::db::{self, Db};
use crate::error::{Error, Status};
use crate::escape::escape;
use crate::format::Format;

/// Arguments of `nanovm runs`.
#[derive(clap::Args)]
pub struct Args {
    /// The store: a SQLite file (e.g. the example's `--db`; opened read-only, it must exist
    /// and hold a nanovm store) or a `postgres://` URL.
    #[arg(long, value_name = "DB", value_parser = Db::parse)]
    db: Db,
    /// Only runs with this status: running, suspended, success, failed, budget_exceeded,
    /// stalled, cancelled or needs_reconciliation.
    #[arg(long, value_name = "S", value_parser = parse_status)]
    status: Option<RunStatus>,
    /// Only runs of this program.
    #[arg(long, value_name = "P")]
    program: Option<String>,
    /// `text`: a table for people; `json`: one object for scripts (see docs/runtime.md).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The program versions the hosts serve (repeatable): every program of each file is
    /// compiled, and a run that is not ended but was started by a version none of them is (its
    /// program hash differs) is marked `(version HASH not registered)`: no worker will continue
    /// it until its build is registered again.
    #[arg(long, value_name = "FILE.nvm")]
    registered: Vec<PathBuf>,
}

/// The program hashes of every program in `files` (compile errors are usage errors).
fn registered_hashes(files: &[PathBuf]) -> Result<Vec<[u8; 32]>, Error> {
    let mut hashes = Vec::new();
    for f in files {
        let source = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        let compiled = nanovm_dsl::compile(&f.display().to_string(), &source);
        if compiled.has_errors() {
            return Err(Error::Usage(format!(
                "{}: does not compile (see nanovm check)",
                f.display()
            )));
        }
        hashes.extend(compiled.programs.iter().map(|p| p.hash));
    }
    Ok(hashes)
}

fn parse_status(s: &str) -> Result<RunStatus, String> {
    RunStatus::parse(s).ok_or_else(|| {
        format!(
            "`{s}` is not a status (running, suspended, success, failed, budget_exceeded, \
             stalled, cancelled, needs_reconciliation)"
        )
    })
}

/// Runs `nanovm runs`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Status, Error> {
    let registered = registered_hashes(&args.registered)?;
    let mut query = RunQuery::new();
    if let Some(p) = &args.program {
        query = query.program(p.clone());
    }
    if let Some(s) = args.status {
        query = query.status(s);
    }
    let json = args.format == Format::Json;
    let (records, views) = db::block_on(async {
        let store = args.db.open(false).await?;
        let records = store.runs(&query).await.map_err(|e| args.db.error(e))?;
        // Where a run is, and its open effects, read from its entries by the runtime's own
        // reading of them (a running run's record keeps no step).
        let mut views = Vec::with_capacity(records.len());
        for r in &records {
            views.push(if json || r.status == RunStatus::Running {
                Some(
                    store
                        .load(&r.run_id)
                        .await
                        .map(|e| e.map(|e| RunView::of(&e))),
                )
            } else {
                None
            });
        }
        Ok::<_, Error>((records, views))
    })??;
    let unregistered = |r: &RunRecord| {
        !args.registered.is_empty()
            && !r.status.is_terminal()
            && !registered.contains(&r.program_hash.0)
    };
    if json {
        let runs: Vec<_> = records
            .iter()
            .zip(&views)
            .map(|(r, v)| {
                let view = v
                    .as_ref()
                    .and_then(|v| v.as_ref().ok())
                    .and_then(Option::as_ref);
                let mut state = run_state(r, view);
                if !args.registered.is_empty() {
                    state["version_registered"] = serde_json::Value::Bool(!unregistered(r));
                }
                state
            })
            .collect();
        let doc = serde_json::json!({"version": RUN_STATE_VERSION, "runs": runs});
        writeln!(out, "{doc}").map_err(Error::stdout)?;
        return Ok(Status::Clean);
    }
    let at = records.iter().zip(views).map(|(r, v)| {
        (r.status == RunStatus::Running).then(|| match v {
            Some(Ok(Some(view))) => view
                .at()
                .map_or_else(|| "(starting)".to_string(), str::to_string),
            Some(Ok(None)) | None => "-".to_string(),
            Some(Err(_)) => "(unreadable: see nanovm trace)".to_string(),
        })
    });
    let rows: Vec<[String; 6]> = records
        .iter()
        .zip(at)
        .map(|(r, at)| {
            let mut row = row(r, at);
            if unregistered(r) {
                row[4] = cell(&format!(
                    "{} (version {} not registered)",
                    row[4],
                    r.program_hash.short()
                ));
            }
            row
        })
        .collect();
    let header = ["RUN ID", "PROGRAM", "STATUS", "ENTRIES", "AT", "UPDATED"].map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            // Padding by hand: `format!("{:w$}")` panics for widths past u16::MAX.
            let pad = " ".repeat(w.saturating_sub(cell.chars().count()));
            if i + 1 == r.len() {
                line.push_str(cell);
            } else if i == 3 {
                // Numbers right-aligned.
                line.push_str(&pad);
                line.push_str(cell);
                line.push_str("  ");
            } else {
                line.push_str(cell);
                line.push_str(&pad);
                line.push_str("  ");
            }
        }
        writeln!(out, "{}", line.trim_end()).map_err(Error::stdout)?;
    }
    if rows.is_empty() {
        writeln!(out, "(no runs)").map_err(Error::stdout)?;
    }
    Ok(Status::Clean)
}

/// The most characters a cell shows; a longer value (only a store written by something else can
/// hold one: run ids are at most 256 bytes) is cut with `…`, so one row cannot flood the table.
const MAX_CELL_CHARS: usize = 256;

/// `text` as a table cell: control characters escaped, at most [`MAX_CELL_CHARS`] characters.
fn cell(text: &str) -> String {
    let text = escape(text);
    match text.char_indices().nth(MAX_CELL_CHARS) {
        None => text.to_string(),
        Some((cut, _)) => {
            let shown: String = text[..cut].chars().take(MAX_CELL_CHARS - 1).collect();
            format!("{shown}…")
        }
    }
}

/// One table row; `running_at` is where a running run is (read from its entries).
fn row(r: &RunRecord, running_at: Option<String>) -> [String; 6] {
    let mut at = running_at.unwrap_or_else(|| match (&r.end_step, &r.waiting_for) {
        (Some(step), Some(event)) if r.status == RunStatus::Suspended => match r.deadline_ms {
            Some(deadline) => format!("{step} (waiting for {event} until {})", utc(deadline)),
            None => format!("{step} (waiting for {event})"),
        },
        (Some(step), _) => step.clone(),
        (None, _) => "-".into(),
    });
    // A lease matters while the run can still move: who holds it and until when.
    if matches!(r.status, RunStatus::Running | RunStatus::Suspended)
        && let (Some(owner), Some(expires)) = (&r.lease_owner, r.lease_expires_ms)
    {
        at.push_str(&format!(" (lease {owner} until {})", utc(expires)));
    }
    [
        cell(&r.run_id),
        cell(&r.program),
        r.status.to_string(),
        r.entries.to_string(),
        cell(&at),
        utc(r.updated_ms),
    ]
}

#[cfg(test)]
mod tests {
    use super::{MAX_CELL_CHARS, cell};

    #[test]
    fn cells_are_bounded() {
        assert_eq!(cell("r-1"), "r-1");
        let exact = "é".repeat(MAX_CELL_CHARS);
        assert_eq!(cell(&exact), exact);
        let long = cell(&"x".repeat(65_536));
        assert_eq!(long.chars().count(), MAX_CELL_CHARS);
        assert!(long.ends_with('…'));
    }
}
