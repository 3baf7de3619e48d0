//! Diagnostics: the value every phase produces when it rejects (or warns about) a program.
//!
//! A [`Diagnostic`] knows nothing about how it will be shown. The same value is rendered as text
//! by the CLI and build.rs ([`crate::render`]), as JSON by `nanovm check --format json`, and as a
//! `compile_error!` at the exact tokens by the proc macro. Codes are stable: tests, docs and users
//! refer to them, so a code is never reused for a different rule.

pub use crate::codes::Severity;

use crate::codes::Code;
use crate::syntax::ast::Span;

/// A span with a short explanation, e.g. "no step named `reviw`".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What to say there (may be empty).
    pub message: String,
}

/// One finding about a program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable code from the catalogue ([`crate::codes`]), e.g. `E0102`; see
    /// `docs/diagnostics.md`.
    pub code: Code,
    /// One sentence saying what is wrong.
    pub message: String,
    /// The exact text at fault.
    pub primary: Label,
    /// Other places that explain the finding (the first definition of a duplicate, a path).
    pub secondary: Vec<Label>,
    /// Extra facts, shown as `= note: ...`.
    pub notes: Vec<String>,
    /// A likely fix, shown as `= help: ...`.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error with a code, a message, and the span it points at. `code` must be an error code.
    pub fn error(code: Code, message: impl Into<String>, span: Span) -> Self {
        debug_assert_eq!(
            code.severity(),
            Severity::Error,
            "{code} is not an error code"
        );
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            primary: Label {
                span,
                message: String::new(),
            },
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// A warning with a code, a message, and the span it points at. `code` must be a warning
    /// code.
    pub fn warning(code: Code, message: impl Into<String>, span: Span) -> Self {
        debug_assert_eq!(
            code.severity(),
            Severity::Warning,
            "{code} is not a warning code"
        );
        Diagnostic {
            severity: Severity::Warning,
            code,
            message: message.into(),
            primary: Label {
                span,
                message: String::new(),
            },
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// Sets the text shown under the primary span.
    pub fn with_label(mut self, message: impl Into<String>) -> Self {
        self.primary.message = message.into();
        self
    }

    /// Adds a secondary span with its own text.
    pub fn with_secondary(mut self, span: Span, message: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    /// Adds a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// Sets the help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A named source text with a line index, for turning byte offsets into lines and columns.
#[derive(Clone, Debug)]
pub struct SourceFile {
    name: String,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Indexes `text`, shown to users as `name` (usually a path).
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// The name given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and 1-based column (in characters) of a byte offset. Offsets past the end,
    /// or inside a multi-byte character, are clamped to the nearest valid position.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = self.clamp(offset);
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let col = self.text[self.line_starts[line]..offset].chars().count() + 1;
        (line + 1, col)
    }

    /// The text of a 1-based line, without its line break.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |&next| next - 1);
        self.text[start..end].trim_end_matches('\r')
    }

    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// The text covered by a span (clamped to the source).
    pub fn snippet(&self, span: Span) -> &str {
        let (s, e) = (self.clamp(span.start), self.clamp(span.end));
        &self.text[s..e.max(s)]
    }

    fn clamp(&self, offset: usize) -> usize {
        let mut o = offset.min(self.text.len());
        while !self.text.is_char_boundary(o) {
            o -= 1;
        }
        o
    }
}
