//! `nanovm graph FILE`: draw one program's graph as Mermaid or Graphviz DOT.
//!
//! The pictures are [`nanovm_dsl::graph`]'s; this command only compiles, picks the program and
//! writes the text.

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;
use nanovm_dsl::graph;
use nanovm_dsl::lower::Program;

use crate::error::{Error, Status};
use crate::escape::escape_lines;
use crate::source;

/// Arguments of `nanovm graph`.
#[derive(clap::Args)]
pub struct Args {
    /// The .nvm file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Which program to draw; required when the file holds several.
    #[arg(long, value_name = "NAME")]
    program: Option<String>,
    /// The picture's language.
    #[arg(long, value_enum, default_value_t = Format::Mermaid)]
    format: Format,
    /// Write the picture here instead of stdout.
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A Mermaid `flowchart TD`.
    Mermaid,
    /// Graphviz DOT (`dot -Tsvg`).
    Dot,
}

/// Runs `nanovm graph`.
pub fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<Status, Error> {
    let c = source::compile_file(&args.file)?;
    if !c.diagnostics.is_empty() {
        let _ = err.write_all(escape_lines(&c.render()).as_bytes());
    }
    if c.has_errors() {
        return Ok(Status::Failed);
    }
    let file = c.source.name();
    let program = pick(file, &c.programs, args.program.as_deref())?;
    let text = match args.format {
        Format::Mermaid => graph::mermaid(program),
        Format::Dot => graph::dot(program),
    };
    match &args.output {
        Some(path) => std::fs::write(path, text).map_err(|e| Error::io(path, e))?,
        None => out.write_all(text.as_bytes()).map_err(Error::stdout)?,
    }
    Ok(Status::Clean)
}

/// The program named `wanted`, or the only one when no name is given.
fn pick<'a>(
    file: &str,
    programs: &'a [Program],
    wanted: Option<&str>,
) -> Result<&'a Program, Error> {
    let names = || {
        programs
            .iter()
            .map(|p| format!("`{}`", p.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (wanted, programs) {
        (Some(name), _) => programs.iter().find(|p| p.name == name).ok_or_else(|| {
            Error::Usage(format!(
                "{file} has no program `{name}`; its programs: {}",
                names()
            ))
        }),
        (None, [only]) => Ok(only),
        (None, []) => Err(Error::Usage(format!("{file} holds no program"))),
        (None, _) => Err(Error::Usage(format!(
            "{file} holds {} programs: {}; choose one with --program NAME",
            programs.len(),
            names()
        ))),
    }
}
