//! The nanovm workflow compiler.
//!
//! `.nvm` text goes through four phases, each a module, in this order:
//!
//! 1. [`syntax`]: pest grammar -> [`syntax::ast`], every node with its byte span;
//! 2. [`check`]: the rules of docs/diagnostics.md, one function per rule, all errors collected;
//! 3. [`lower`]: the checked tree -> a typed, resolved program model;
//! 4. [`codegen`]: the model -> Rust tokens (enums, `match` transitions, `PROGRAM_HASH`).
//!
//! The same core serves the proc macros (`nanovm-macros`), build scripts ([`build::Builder`]),
//! the `nanovm` CLI and the benchmarks. Nothing here depends on how diagnostics are shown:
//! [`Diagnostic`] is a plain value and [`render`] is one way to print it.

#![warn(missing_docs)]
#![deny(unreachable_pub)]

pub mod canonical;
pub mod check;
pub mod codegen;
pub mod codes;
pub mod compat;
pub mod diagnostic;
pub mod graph;
pub mod lower;
pub mod render;
pub mod syntax;

pub use codes::Code;
pub use diagnostic::{Diagnostic, Label, Severity, SourceFile};
pub use syntax::{Parsed, parse, parse_bytes};
pub mod build;

/// Everything the compiler produced for one source text.
#[derive(Clone, Debug)]
pub struct Compilation {
    /// The source, for rendering diagnostics.
    pub source: SourceFile,
    /// The lowered programs (empty when there are errors).
    pub programs: Vec<lower::Program>,
    /// Every diagnostic, errors and warnings, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Compilation {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The diagnostics rendered as rustc-style text with a summary line.
    pub fn render(&self) -> String {
        render::render_all(&self.diagnostics, &self.source)
    }

    /// The generated Rust for every program, pretty-printed; `None` when there are errors.
    pub fn to_rust(&self, opts: &codegen::Options) -> Option<String> {
        if self.has_errors() {
            return None;
        }
        Some(codegen::generate_file(&self.programs, opts, ""))
    }
}

/// Runs the whole front end on one source text: parse -> check -> lower. `name` is how the
/// source is shown in diagnostics (usually its path).
pub fn compile(name: &str, source: &str) -> Compilation {
    let parsed = parse(source);
    finish(name, source, parsed)
}

/// Like [`compile`], for bytes that may not be UTF-8 (reported as a diagnostic, not a panic).
pub fn compile_bytes(name: &str, bytes: &[u8]) -> Compilation {
    match parse_bytes(bytes) {
        Ok(parsed) => finish(name, &String::from_utf8_lossy(bytes), parsed),
        Err(diag) => Compilation {
            source: SourceFile::new(name, String::from_utf8_lossy(bytes).into_owned()),
            programs: Vec::new(),
            diagnostics: vec![diag],
        },
    }
}

fn finish(name: &str, source: &str, parsed: Parsed) -> Compilation {
    let source_file = SourceFile::new(name, source);
    let Some(file) = parsed.file else {
        return Compilation {
            source: source_file,
            programs: Vec::new(),
            diagnostics: parsed.diagnostics,
        };
    };
    let (programs, mut diagnostics) = lower::check_and_lower(&file);
    diagnostics.splice(0..0, parsed.diagnostics);
    Compilation {
        source: source_file,
        programs,
        diagnostics,
    }
}
