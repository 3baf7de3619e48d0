//! `nanovm verify TRACE.jsonl`: check a trace's hash chain and print its root hash.
//!
//! The checking is [`nanovm_runtime::trace::Trace::from_jsonl`]'s: every line must parse, be in
//! canonical form and chain to the one before. This module only reads the file and words the
//! verdict.

use std::io::Write;
use std::path::{Path, PathBuf};

use nanovm_runtime::trace::{Trace, VerifyError};

use crate::error::{Error, Status};

/// Arguments of `nanovm verify`.
#[derive(clap::Args)]
pub struct Args {
    /// The trace, as JSON Lines (one entry per line).
    #[arg(value_name = "TRACE.jsonl")]
    trace: PathBuf,
}

/// Runs `nanovm verify`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Status, Error> {
    let (line, status) = match load(&args.trace)? {
        Ok(trace) => (
            format!(
                "ok: {} entries, root {}",
                trace.len(),
                trace.root().to_hex()
            ),
            Status::Clean,
        ),
        Err(e) => (format!("broken: {}", describe(&e)), Status::Failed),
    };
    writeln!(out, "{line}").map_err(Error::stdout)?;
    Ok(status)
}

/// Reads and verifies a trace file. The outer error is I/O; the inner one is the first broken
/// entry (bytes that are not UTF-8 break the entry whose line holds them).
pub fn load(path: &Path) -> Result<Result<Trace, VerifyError>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => Trace::from_jsonl(&text),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            Err(VerifyError {
                index: bytes[..at].iter().filter(|&&b| b == b'\n').count(),
                reason: format!("not valid UTF-8 (byte 0x{:02X} at offset {at})", bytes[at]),
            })
        }
    })
}

/// `entry I (line I+1): reason`.
pub fn describe(e: &VerifyError) -> String {
    format!("entry {} (line {}): {}", e.index, e.index + 1, e.reason)
}
