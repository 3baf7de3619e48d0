//! `nanovm compat OLD.nvm NEW.nvm`: for every step at which a run of OLD can be waiting (an
//! `await`, an effect call that may need reconciliation), whether it can continue under NEW,
//! with the reasons ([`nanovm_dsl::compat`] decides; this command compiles and prints).
//!
//! Exit code: 0 when every pause point is compatible, 1 when any is not or when either file
//! has compile errors (printed on stderr), 2 on usage and I/O errors. A script that migrates
//! runs after a deploy can stop on 1 without parsing the report.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use nanovm_dsl::compat::compare;
use nanovm_dsl::lower::Program;

use crate::error::{Error, Status};
use crate::{graph, source};

/// Arguments of `nanovm compat`.
#[derive(clap::Args)]
pub struct Args {
    /// The version runs were started under.
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The version they would continue under.
    #[arg(value_name = "NEW")]
    new: PathBuf,
    /// Which program to compare; required when a file holds several.
    #[arg(long, value_name = "NAME")]
    program: Option<String>,
    /// How to report: text, or one JSON document.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One block per pause point.
    Text,
    /// The report as one JSON document.
    Json,
}

/// Compiles `path` and picks the program (`None` when it has errors, which are printed).
pub(crate) fn load(
    path: &Path,
    program: Option<&str>,
    err: &mut dyn Write,
) -> Result<Option<Program>, Error> {
    let c = source::compile_file(path)?;
    if c.has_errors() {
        let _ = err.write_all(c.render().as_bytes());
        return Ok(None);
    }
    let names: Vec<&str> = c.programs.iter().map(|p| p.name.as_str()).collect();
    let i = graph::pick(&path.display().to_string(), &names, program)?;
    Ok(c.programs.into_iter().nth(i))
}

/// Runs `nanovm compat`.
pub fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<Status, Error> {
    let old = load(&args.old, args.program.as_deref(), err)?;
    let new = load(&args.new, args.program.as_deref(), err)?;
    let (Some(old), Some(new)) = (old, new) else {
        return Ok(Status::Failed);
    };
    let report = compare(&old, &new);
    match args.format {
        Format::Text => out.write_all(report.render().as_bytes()),
        Format::Json => {
            let json = serde_json::to_string_pretty(&report).expect("a report is plain data");
            writeln!(out, "{json}")
        }
    }
    .map_err(Error::stdout)?;
    Ok(if report.all_compatible() {
        Status::Clean
    } else {
        Status::Failed
    })
}
