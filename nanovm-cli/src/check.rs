//! `nanovm check PATH...`: compile each file and report every error and warning.
//!
//! A directory stands for every `.nvm` file under it, recursively, in sorted path order
//! (directories reached through symbolic links are not entered, so a link loop cannot make the
//! walk endless). A directory with no `.nvm` file under it is a usage error: checking nothing
//! must not look like a clean result.
//!
//! Text mode prints the compiler's rustc-style rendering to stderr; `--format json` prints one
//! JSON document to stdout (diagnostics as [`nanovm_dsl::render::to_json`] shapes them). A file
//! that cannot be read is reported and the others are still checked; the exit code is then 2.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use nanovm_dsl::{Compilation, render};
use serde_json::json;

use crate::error::{Error, Status};
use crate::source;

/// Arguments of `nanovm check`.
#[derive(clap::Args)]
pub struct Args {
    /// The .nvm files to check; a directory means every .nvm file under it (recursive).
    #[arg(required = true, value_name = "PATH")]
    files: Vec<PathBuf>,
    /// How to report: rustc-style text on stderr, or one JSON document on stdout.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Fail (exit 1) when there are warnings, not only errors.
    #[arg(long)]
    deny_warnings: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// rustc-style diagnostics on stderr.
    Text,
    /// One JSON document on stdout: per-file counts and diagnostics.
    Json,
}

/// Errors and warnings of one compilation.
fn counts(c: &Compilation) -> (usize, usize) {
    let errors = c.diagnostics.iter().filter(|d| d.is_error()).count();
    (errors, c.diagnostics.len() - errors)
}

/// Runs `nanovm check`.
pub fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<Status, Error> {
    let mut files = Vec::new();
    let (mut errors, mut warnings, mut unreadable, mut empty_dirs) = (0, 0, 0, 0);
    let mut paths = Vec::new();
    for path in &args.files {
        if !path.is_dir() {
            paths.push(path.clone());
            continue;
        }
        let mut found = Vec::new();
        match nvm_files_under(path, &mut found) {
            Ok(()) if found.is_empty() => {
                let _ = writeln!(err, "error: {}: no .nvm file under it", path.display());
                empty_dirs += 1;
            }
            Ok(()) => {
                found.sort();
                paths.extend(found);
            }
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                unreadable += 1;
            }
        }
    }
    for path in &paths {
        let c = match source::compile_file(path) {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                unreadable += 1;
                continue;
            }
        };
        let (e, w) = counts(&c);
        errors += e;
        warnings += w;
        match args.format {
            Format::Text => {
                let _ = err.write_all(c.render().as_bytes());
            }
            Format::Json => files.push(file_json(&c, e, w)),
        }
    }
    match args.format {
        Format::Text => {
            if paths.len() > 1 {
                let _ = writeln!(
                    err,
                    "checked {} files: {}, {}",
                    paths.len(),
                    plural(errors, "error"),
                    plural(warnings, "warning")
                );
            }
            if args.deny_warnings && warnings > 0 {
                let _ = writeln!(err, "error: warnings are denied (--deny-warnings)");
            }
        }
        Format::Json => {
            let doc = json!({ "files": files, "errors": errors, "warnings": warnings });
            writeln!(out, "{doc:#}").map_err(Error::stdout)?;
        }
    }
    if unreadable > 0 {
        return Err(Error::Usage(format!(
            "{} could not be read",
            plural(unreadable, "file")
        )));
    }
    if empty_dirs > 0 {
        return Err(Error::Usage(
            "a directory given holds no .nvm file".to_string(),
        ));
    }
    if errors > 0 || (args.deny_warnings && warnings > 0) {
        Ok(Status::Failed)
    } else {
        Ok(Status::Clean)
    }
}

/// Appends every `.nvm` file under `dir` to `found` (unsorted). Symbolic links to files count;
/// symbolic links to directories are not followed.
fn nvm_files_under(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            nvm_files_under(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "nvm") && path.is_file() {
            found.push(path);
        }
    }
    Ok(())
}

fn file_json(c: &Compilation, errors: usize, warnings: usize) -> serde_json::Value {
    json!({
        "file": c.source.name(),
        "programs": c.programs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        "errors": errors,
        "warnings": warnings,
        "diagnostics": c
            .diagnostics
            .iter()
            .map(|d| render::to_json(d, &c.source))
            .collect::<Vec<_>>(),
    })
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}
