//! `nanovm verify [--partial] TRACE.jsonl`: check a trace's hash chain and completeness, and
//! print its root hash.
//!
//! The checking is the runtime's ([`nanovm_runtime::trace::read_jsonl`]): every line must parse,
//! be in canonical form and chain to the one before, read as a stream (one line in memory at a
//! time, none longer than [`MAX_LINE_BYTES`]); and the trace must be the complete record of one
//! run ([`nanovm_runtime::trace::completeness`]): `run_started` first and nowhere else, and a
//! closing `run_ended` or `suspended` last. `--partial` accepts a well-formed prefix (a run
//! still going, e.g. cut by a crash) on purpose. This module only opens the file and words the
//! verdict.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use nanovm_runtime::trace::{
    self, Entry, Incomplete, JsonlSummary, MAX_LINE_BYTES, ReadJsonlError, Trace, VerifyError,
};

use crate::error::{Error, Status};
use crate::escape::escape;

/// Arguments of `nanovm verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The trace, as JSON Lines (one entry per line).
    #[arg(value_name = "TRACE.jsonl")]
    trace: PathBuf,
    /// Accept a prefix of a run: a trace that starts with `run_started` but stops before its
    /// closing `run_ended` or `suspended` (a run still going, or cut by a crash). Without it
    /// such a trace is incomplete evidence and exits 1.
    #[arg(long)]
    partial: bool,
}

/// Runs `nanovm verify`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Status, Error> {
    let (line, status) = match read(&args.trace, drop)? {
        Err(e) => (format!("broken: {}", describe(&e)), Status::Failed),
        Ok(summary) => verdict(&summary, args.partial),
    };
    writeln!(out, "{line}").map_err(Error::stdout)?;
    Ok(status)
}

/// The line to print for a trace whose chain verified, and the exit status.
fn verdict(summary: &JsonlSummary, partial: bool) -> (String, Status) {
    let counted = format!(
        "{} entries, root {}",
        summary.entries,
        summary.root.to_hex()
    );
    match &summary.completeness {
        Ok(_) => (format!("ok: {counted}"), Status::Clean),
        Err(e) if partial && e.is_prefix() => {
            (format!("ok: {counted} (a prefix: {e})"), Status::Clean)
        }
        Err(e) if e.is_prefix() => (
            format!("incomplete: {counted}: {e} (--partial accepts a prefix)"),
            Status::Failed,
        ),
        Err(e @ (Incomplete::Empty | Incomplete::NotStarted { .. })) => {
            (format!("incomplete: {counted}: {e}"), Status::Failed)
        }
        Err(e) => (format!("broken: {counted}: {e}"), Status::Failed),
    }
}

/// Streams and verifies a trace file, handing each entry to `each`. The outer error is I/O;
/// the inner one is the first broken entry (bytes that are not UTF-8, or a line longer than
/// [`MAX_LINE_BYTES`], break the entry whose line holds them).
fn read(path: &Path, each: impl FnMut(Entry)) -> Result<Result<JsonlSummary, VerifyError>, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    match trace::read_jsonl(BufReader::new(file), MAX_LINE_BYTES, each) {
        Ok(summary) => Ok(Ok(summary)),
        Err(ReadJsonlError::Broken(e)) => Ok(Err(e)),
        Err(ReadJsonlError::Io(e)) => Err(Error::io(path, e)),
        Err(e) => Err(Error::Usage(format!("{}: {e}", path.display()))),
    }
}

/// Reads and verifies a trace file into memory (for `diff`, which compares whole traces; a
/// prefix is fine there). Errors as for [`read`].
pub fn load(path: &Path) -> Result<Result<Trace, VerifyError>, Error> {
    let mut entries = Vec::new();
    Ok(match read(path, |e| entries.push(e))? {
        Ok(_) => Trace::from_entries(entries),
        Err(e) => Err(e),
    })
}

/// `entry I (line I+1): reason`, the reason escaped (a parse error quotes the line's text).
pub fn describe(e: &VerifyError) -> String {
    format!(
        "entry {} (line {}): {}",
        e.index,
        e.index + 1,
        escape(&e.reason)
    )
}
