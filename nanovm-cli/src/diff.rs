//! `nanovm diff A.jsonl B.jsonl`: the first entry where two traces differ.
//!
//! Both traces are verified first: comparing a tampered trace would report the tampering as a
//! divergence of the run, which it is not. The comparison is
//! [`nanovm_runtime::trace::diff`]'s (entry hashes, so equal hashes mean equal histories).

use std::io::Write;
use std::path::{Path, PathBuf};

use nanovm_runtime::trace::{self, Entry, Trace};

use crate::error::{Error, Status};
use crate::escape::{escape, escape_lines};
use crate::verify;

/// Arguments of `nanovm diff`.
#[derive(clap::Args)]
pub struct Args {
    /// The first trace (JSON Lines).
    #[arg(value_name = "A.jsonl")]
    a: PathBuf,
    /// The second trace (JSON Lines).
    #[arg(value_name = "B.jsonl")]
    b: PathBuf,
}

/// Runs `nanovm diff`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Status, Error> {
    let a = verify::load(&args.a)?;
    let b = verify::load(&args.b)?;
    let broken: Vec<String> = [(&args.a, &a), (&args.b, &b)]
        .into_iter()
        .filter_map(|(path, t)| {
            t.as_ref().err().map(|e| {
                format!(
                    "{} is broken: {}",
                    escape(&path.display().to_string()),
                    verify::describe(e)
                )
            })
        })
        .collect();
    let (Ok(a), Ok(b)) = (a, b) else {
        return Err(Error::Broken(broken));
    };
    let (text, status) = match trace::diff(&a, &b) {
        None => (
            format!(
                "identical: {} entries, root {}\n",
                a.len(),
                a.root().to_hex()
            ),
            Status::Clean,
        ),
        Some(d) => (
            format!(
                "differ: first divergence at entry {} (line {})\n{}{}",
                d.index,
                d.index + 1,
                side("---", &args.a, &a, d.left.as_ref()),
                side("+++", &args.b, &b, d.right.as_ref()),
            ),
            Status::Failed,
        ),
    };
    out.write_all(text.as_bytes()).map_err(Error::stdout)?;
    Ok(status)
}

/// One side of a divergence: a header naming the trace, then the entry's event as pretty JSON.
fn side(mark: &str, path: &Path, t: &Trace, entry: Option<&Entry>) -> String {
    let body = match entry {
        // Events that came out of a parsed trace always serialize again.
        Some(e) => serde_json::to_string_pretty(&e.event)
            .unwrap_or_else(|err| format!("(cannot show the event: {err})")),
        None => "(trace ended)".to_string(),
    };
    format!(
        "{mark} {} ({} entries, root {})\n{}\n",
        escape(&path.display().to_string()),
        t.len(),
        t.root().to_hex(),
        escape_lines(&body)
    )
}
