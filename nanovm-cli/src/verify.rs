//! `nanovm verify [--partial] TRACE.jsonl`: check a trace's hash chain and completeness, and
//! print its root hash.
//!
//! The checking is the runtime's ([`nanovm_runtime::trace::read_jsonl`]): every line must parse,
//! be in canonical form and chain to the one before, read as a stream (one line in memory at a
//! time, none longer than [`MAX_LINE_BYTES`]); and the trace must be the complete record of one
//! run ([`nanovm_runtime::trace::completeness`]): `run_started` first and nowhere else, and a
//! closing `run_ended` or `suspended` last. `--partial` accepts a well-formed prefix (a run
//! still going, e.g. cut by a crash) on purpose. With `--key PUBKEY --checkpoint FILE`, a signed
//! checkpoint (`nanovm trace --key --checkpoint-out`) must also be the key's and cover the
//! whole trace (`docs/compliance.md`). This module only opens the files and words the verdict.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use nanovm_runtime::Digest;
use nanovm_runtime::evidence::{PublicKey, SignedCheckpoint};
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
    /// Also check a signed checkpoint of the run (`--checkpoint`, as `nanovm trace --key
    /// --checkpoint-out` writes it) against this public key (a file, or 64 hex digits): it
    /// must be signed by the key and cover the whole trace. Entries beyond it are reported and
    /// exit 1 (`--partial` accepts them).
    #[arg(long, value_name = "PUBKEY", requires = "checkpoint")]
    key: Option<String>,
    /// The signed checkpoint (JSON) for `--key`.
    #[arg(long, value_name = "FILE", requires = "key")]
    checkpoint: Option<PathBuf>,
}

/// Runs `nanovm verify`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Status, Error> {
    let signed = match (&args.key, &args.checkpoint) {
        (Some(key), Some(path)) => {
            let key = crate::audit::public_key(key)?;
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let cp = SignedCheckpoint::from_json(&text)
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?;
            Some((key, cp))
        }
        _ => None,
    };
    // What the checkpoint check needs from the stream: the run id and program hash of
    // `run_started`, and the hash of the entry the checkpoint says is the last.
    let at = signed
        .as_ref()
        .map(|(_, cp)| cp.checkpoint.entries.checked_sub(1));
    let mut started = None;
    let mut hash_at = None;
    let each = |e: Entry| {
        if e.seq == 0
            && let nanovm_runtime::trace::Event::RunStarted {
                run_id,
                program_hash,
                ..
            } = &e.event
        {
            started = Some((run_id.clone(), *program_hash));
        }
        if at == Some(Some(e.seq)) {
            hash_at = Some(e.hash);
        }
    };
    let (line, status) = match read(&args.trace, each)? {
        Err(e) => (format!("broken: {}", describe(&e)), Status::Failed),
        Ok(summary) => {
            let (line, status) = verdict(&summary, args.partial);
            match &signed {
                Some((key, cp)) if status == Status::Clean => {
                    covered(key, cp, &summary, started.as_ref(), hash_at, args.partial)
                }
                _ => (line, status),
            }
        }
    };
    writeln!(out, "{line}").map_err(Error::stdout)?;
    Ok(status)
}

/// The verdict on a trace whose chain verified, against a signed checkpoint.
pub fn covered(
    key: &PublicKey,
    cp: &SignedCheckpoint,
    summary: &JsonlSummary,
    started: Option<&(String, Digest)>,
    hash_at: Option<Digest>,
    partial: bool,
) -> (String, Status) {
    let c = &cp.checkpoint;
    let forged = |why: String| (format!("forged: {why}"), Status::Failed);
    if !cp.verifies(key) {
        return forged("the checkpoint is not signed by this key".into());
    }
    let Some((run_id, program_hash)) = started else {
        return forged("the trace has no `run_started`".into());
    };
    if *run_id != c.run_id || *program_hash != c.program_hash {
        return forged(format!(
            "the checkpoint is of run `{}` (program {}), the trace of run `{run_id}` (program {program_hash})",
            c.run_id, c.program_hash
        ));
    }
    let counted = format!(
        "{} entries, root {}",
        summary.entries,
        summary.root.to_hex()
    );
    let entries = summary.entries as u64;
    if entries == c.entries && summary.root == c.root {
        return (
            format!("ok: {counted}; the signed checkpoint covers the whole trace"),
            Status::Clean,
        );
    }
    if entries > c.entries && hash_at == Some(c.root) {
        let beyond = entries - c.entries;
        let line = format!(
            "{counted}; {beyond} entries beyond the last signed checkpoint ({} entries)",
            c.entries
        );
        return if partial {
            (format!("ok: {line} (--partial)"), Status::Clean)
        } else {
            (format!("uncovered: {line}"), Status::Failed)
        };
    }
    forged(format!(
        "the trace ({counted}) is not the one the checkpoint signs ({} entries, root {}): rewritten and rechained, or cut short",
        c.entries, c.root
    ))
}

/// The line to print for a trace whose chain verified, and the exit status.
pub fn verdict(summary: &JsonlSummary, partial: bool) -> (String, Status) {
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
    read_from(path, BufReader::new(file), each)
}

/// [`read`] over any reader (a file inside an auditor's bundle); `path` names it in errors.
pub fn read_from(
    path: &Path,
    reader: impl std::io::BufRead,
    each: impl FnMut(Entry),
) -> Result<Result<JsonlSummary, VerifyError>, Error> {
    match trace::read_jsonl(reader, MAX_LINE_BYTES, each) {
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
