//! `nanovm diff A.jsonl B.jsonl`: the first entry where two traces differ.
//!
//! Both traces are verified first: comparing a tampered trace would report the tampering as a
//! divergence of the run, which it is not. The comparison is
//! [`nanovm_runtime::trace::diff`]'s (entry hashes, so equal hashes mean equal histories); the
//! output names the first diverging entry and its kind, then only the fields that differ.

use std::io::Write;
use std::path::{Path, PathBuf};

use nanovm_runtime::trace::{self, Entry, Trace};
use serde_json::Value;

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
                "differ: first divergence at entry {} (line {}): {}\n{}{}{}",
                d.index,
                d.index + 1,
                kinds(d.left.as_ref(), d.right.as_ref()),
                header("---", &args.a, &a),
                header("+++", &args.b, &b),
                escape_lines(&changes(d.left.as_ref(), d.right.as_ref())),
            ),
            Status::Failed,
        ),
    };
    out.write_all(text.as_bytes()).map_err(Error::stdout)?;
    Ok(status)
}

/// The kind of the diverging entry, or `left -> right` when the kinds differ.
fn kinds(left: Option<&Entry>, right: Option<&Entry>) -> String {
    let kind = |e: Option<&Entry>| e.map_or(ENDED, |e| e.event.kind());
    let (l, r) = (kind(left), kind(right));
    if l == r {
        l.to_string()
    } else {
        format!("{l} -> {r}")
    }
}

/// What a side shows when its trace has no entry at the divergence.
const ENDED: &str = "(trace ended)";

/// A header naming one trace.
fn header(mark: &str, path: &Path, t: &Trace) -> String {
    format!(
        "{mark} {} ({} entries, root {})\n",
        escape(&path.display().to_string()),
        t.len(),
        t.root().to_hex(),
    )
}

/// The fields that differ between the two diverging entries, one `path: left -> right` line
/// each (values as compact JSON, `(absent)` for a field only one side has). When one trace has
/// ended, the other side's whole event is the change.
fn changes(left: Option<&Entry>, right: Option<&Entry>) -> String {
    // Events that came out of a parsed trace always serialize again.
    let json = |e: &Entry| serde_json::to_value(&e.event).unwrap_or(Value::Null);
    let mut lines = Vec::new();
    match (left, right) {
        (Some(l), Some(r)) => walk(
            &mut String::new(),
            Some(&json(l)),
            Some(&json(r)),
            &mut lines,
        ),
        (l, r) => {
            // The event's own field order (`type` first), not the sorted order of a `Value`.
            let side = |e: Option<&Entry>| {
                e.map_or(ENDED.to_string(), |e| {
                    serde_json::to_string(&e.event).unwrap_or_else(|_| json(e).to_string())
                })
            };
            lines.push(format!("{} -> {}", side(l), side(r)));
        }
    }
    if lines.is_empty() {
        // Same event, different entry hash: only possible if the entry's position or chain
        // differs, which verification rules out for a first divergence; said rather than hidden.
        lines.push("(the events are equal; the entry hashes differ)".to_string());
    }
    lines.join("\n") + "\n"
}

/// Collects `path: left -> right` for every leaf where `l` and `r` differ. Objects are walked by
/// key (`a.b`), arrays by index (`a[2]`); anything else that differs is one change.
fn walk(path: &mut String, l: Option<&Value>, r: Option<&Value>, lines: &mut Vec<String>) {
    if l == r {
        return;
    }
    match (l, r) {
        (Some(Value::Object(lo)), Some(Value::Object(ro))) => {
            let mut keys: Vec<&String> = lo.keys().collect();
            keys.extend(ro.keys().filter(|k| !lo.contains_key(*k)));
            for k in keys {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk(path, lo.get(k), ro.get(k), lines);
                path.truncate(len);
            }
        }
        (Some(Value::Array(la)), Some(Value::Array(ra))) => {
            for i in 0..la.len().max(ra.len()) {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(path, la.get(i), ra.get(i), lines);
                path.truncate(len);
            }
        }
        _ => {
            let show = |v: Option<&Value>| v.map_or("(absent)".to_string(), Value::to_string);
            let at = if path.is_empty() {
                "(event)"
            } else {
                path.as_str()
            };
            lines.push(format!("{at}: {} -> {}", show(l), show(r)));
        }
    }
}
