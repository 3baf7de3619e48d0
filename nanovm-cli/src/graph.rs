//! `nanovm graph FILE`: draw one program's graph as Mermaid or Graphviz DOT.
//!
//! The pictures are [`nanovm_dsl::graph`]'s; this command only compiles, picks the program and
//! writes the text. A program with errors is still drawn (a sketch from its syntax tree, the
//! errors marked in red where they point) with its diagnostics on stderr, and exits 1; a file
//! that does not parse exits 1 with its diagnostics only.

use std::io::Write;
use std::path::PathBuf;

use clap::ValueEnum;
use nanovm_dsl::graph;

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
    let file = c.source.name();
    let (text, status) = if c.has_errors() {
        // Drawn anyway from the syntax tree, the errors marked, when the file parses: seeing
        // the broken graph is what helps to fix it. The compiler read the same text, so the
        // diagnostics' spans are the tree's.
        let Some(tree) = nanovm_dsl::parse(c.source.text()).file else {
            return Ok(Status::Failed);
        };
        let names: Vec<&str> = tree.programs.iter().map(|p| p.name.name.as_str()).collect();
        let i = pick(file, &names, args.program.as_deref())?;
        let program = &tree.programs[i];
        let text = match args.format {
            Format::Mermaid => graph::sketch_mermaid(program, &c.diagnostics),
            Format::Dot => graph::sketch_dot(program, &c.diagnostics),
        };
        (text, Status::Failed)
    } else {
        let names: Vec<&str> = c.programs.iter().map(|p| p.name.as_str()).collect();
        let program = &c.programs[pick(file, &names, args.program.as_deref())?];
        let text = match args.format {
            Format::Mermaid => graph::mermaid(program),
            Format::Dot => graph::dot(program),
        };
        (text, Status::Clean)
    };
    match &args.output {
        Some(path) => std::fs::write(path, text).map_err(|e| Error::io(path, e))?,
        None => out.write_all(text.as_bytes()).map_err(Error::stdout)?,
    }
    Ok(status)
}

/// The index of the program named `wanted` among `programs` (their names), or of the only one
/// when no name is given.
pub(crate) fn pick(file: &str, programs: &[&str], wanted: Option<&str>) -> Result<usize, Error> {
    let names = || {
        programs
            .iter()
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (wanted, programs) {
        (Some(name), _) => programs.iter().position(|p| *p == name).ok_or_else(|| {
            Error::Usage(format!(
                "{file} has no program `{name}`; its programs: {}",
                names()
            ))
        }),
        (None, [_]) => Ok(0),
        (None, []) => Err(Error::Usage(format!("{file} holds no program"))),
        (None, _) => Err(Error::Usage(format!(
            "{file} holds {} programs: {}; choose one with --program NAME",
            programs.len(),
            names()
        ))),
    }
}
