//! Renderers for [`Diagnostic`]s: rustc-style text (CLI, build.rs, snapshots) and JSON
//! (`nanovm check --format json`).
//!
//! The text form follows rustc's layout on purpose: Rust users already read it fluently, editors
//! already link `--> file:line:col`, and it needs no colour to be clear.

use std::fmt::Write as _;

use crate::diagnostic::{Diagnostic, Label, SourceFile};

/// Renders one diagnostic as rustc-style text, ending with a newline.
pub fn render(diag: &Diagnostic, file: &SourceFile) -> String {
    let mut labels: Vec<(&Label, bool)> = vec![(&diag.primary, true)];
    labels.extend(diag.secondary.iter().map(|l| (l, false)));
    let mut lines: Vec<usize> = labels
        .iter()
        .map(|(l, _)| file.line_col(l.span.start).0)
        .collect();
    lines.sort_unstable();
    lines.dedup();
    let gutter = lines.last().map_or(1, |l| l.to_string().len());
    let pad = " ".repeat(gutter);

    let mut out = String::new();
    let (line, col) = file.line_col(diag.primary.span.start);
    let _ = writeln!(
        out,
        "{}[{}]: {}",
        diag.severity.as_str(),
        diag.code,
        diag.message
    );
    let _ = writeln!(out, "{pad}--> {}:{line}:{col}", file.name());
    let _ = writeln!(out, "{pad} |");
    for (i, &ln) in lines.iter().enumerate() {
        if i > 0 && ln > lines[i - 1] + 1 {
            let _ = writeln!(out, "{pad}...");
        }
        let text = file.line_text(ln);
        let _ = writeln!(out, "{ln:>gutter$} | {}", expand_tabs(text));
        // Labels on this line, left to right (the primary one first among equals).
        let mut here: Vec<&(&Label, bool)> = labels
            .iter()
            .filter(|(l, _)| file.line_col(l.span.start).0 == ln)
            .collect();
        here.sort_by_key(|(l, primary)| (l.span.start, !primary));
        for (label, primary) in here {
            let (_, start_col) = file.line_col(label.span.start);
            let (end_line, end_col) = file.line_col(label.span.end);
            let start_vis = visual_width(text, start_col);
            let end_vis = if end_line == ln {
                visual_width(text, end_col)
            } else {
                visual_width(text, text.chars().count() + 1)
            };
            let width = end_vis.saturating_sub(start_vis).max(1);
            let mark = if *primary { "^" } else { "-" };
            let mut underline = format!("{}{}", " ".repeat(start_vis), mark.repeat(width));
            if end_line != ln {
                underline.push_str("...");
            }
            if label.message.is_empty() {
                let _ = writeln!(out, "{pad} | {underline}");
            } else {
                let _ = writeln!(out, "{pad} | {underline} {}", label.message);
            }
        }
    }
    let _ = writeln!(out, "{pad} |");
    for note in &diag.notes {
        let _ = writeln!(out, "{pad} = note: {note}");
    }
    if let Some(help) = &diag.help {
        let _ = writeln!(out, "{pad} = help: {help}");
    }
    out
}

/// Renders every diagnostic, separated by blank lines, followed by a summary line such as
/// `error: could not compile `refund.nvm` (2 errors, 1 warning)` when anything was reported.
pub fn render_all(diags: &[Diagnostic], file: &SourceFile) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&render(d, file));
        out.push('\n');
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if errors > 0 {
        let _ = writeln!(
            out,
            "error: could not compile `{}` ({})",
            file.name(),
            counts(errors, warnings)
        );
    } else if warnings > 0 {
        let _ = writeln!(
            out,
            "warning: `{}` compiled with {}",
            file.name(),
            counts(0, warnings)
        );
    }
    out
}

fn counts(errors: usize, warnings: usize) -> String {
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, w) => plural(w, "warning"),
        (e, 0) => plural(e, "error"),
        (e, w) => format!("{}, {}", plural(e, "error"), plural(w, "warning")),
    }
}

/// The diagnostic as a JSON object with file, line and column resolved, for machine readers.
pub fn to_json(diag: &Diagnostic, file: &SourceFile) -> serde_json::Value {
    let label = |l: &Label| {
        let (line, column) = file.line_col(l.span.start);
        let (end_line, end_column) = file.line_col(l.span.end);
        serde_json::json!({
            "file": file.name(),
            "line": line,
            "column": column,
            "end_line": end_line,
            "end_column": end_column,
            "byte_start": l.span.start,
            "byte_end": l.span.end,
            "snippet": file.snippet(l.span),
            "message": l.message,
        })
    };
    serde_json::json!({
        "severity": diag.severity.as_str(),
        "code": diag.code.id(),
        "message": diag.message,
        "primary": label(&diag.primary),
        "secondary": diag.secondary.iter().map(label).collect::<Vec<_>>(),
        "notes": diag.notes,
        "help": diag.help,
        "rendered": render(diag, file),
    })
}

/// Tabs become four spaces so underlines stay aligned.
fn expand_tabs(text: &str) -> String {
    text.replace('\t', "    ")
}

/// The display width of the first `col - 1` characters of `text`.
fn visual_width(text: &str, col: usize) -> usize {
    text.chars()
        .take(col.saturating_sub(1))
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes;
    use crate::syntax::ast::Span;

    #[test]
    fn renders_rustc_style_with_help() {
        let src = "program p {\n    llm a { prompt: \"x\" } -> reviw\n}\n";
        let file = SourceFile::new("p.nvm", src);
        let start = src.find("reviw").unwrap();
        let d = Diagnostic::error(
            codes::E0102,
            "`reviw` names no step",
            Span::new(start, start + 5),
        )
        .with_label("no step named `reviw`")
        .with_help("did you mean `review`?");
        let text = render(&d, &file);
        assert_eq!(
            text,
            "error[E0102]: `reviw` names no step\n \
             --> p.nvm:2:30\n  |\n\
             2 |     llm a { prompt: \"x\" } -> reviw\n  \
             |                              ^^^^^ no step named `reviw`\n  |\n  \
             = help: did you mean `review`?\n"
        );
    }

    #[test]
    fn line_col_handles_multibyte_and_out_of_range() {
        let file = SourceFile::new("x", "é\nab");
        assert_eq!(file.line_col(0), (1, 1));
        assert_eq!(file.line_col(1), (1, 1)); // inside `é`: clamped back
        assert_eq!(file.line_col(2), (1, 2));
        assert_eq!(file.line_col(4), (2, 2));
        assert_eq!(file.line_col(999), (2, 3));
    }
}
