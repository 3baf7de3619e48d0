//! The one function every printer of the CLI passes foreign text through: run ids, program and
//! step names read from a store, paths, error messages that quote their input.
//!
//! Such text can come from anyone who could write a store row or a trace file. Printed raw, an
//! escape sequence (`ESC [ 2 J`, `ESC ] 0 ; ... BEL`) clears an operator's screen, retitles the
//! terminal, or hides the line that matters; a bidi override makes `gnp.exe` read as `exe.png`.
//! [`escape`] writes every control character and every invisible formatting character as a
//! visible `\u{..}` (`\n`, `\r`, `\t` as those two-character forms), and leaves the rest alone.

use std::borrow::Cow;

/// `text` with control and invisible formatting characters made visible (see the module doc).
/// Borrows when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape`] applied line by line, keeping the line breaks: for multi-line text the CLI
/// itself lays out (a pretty-printed event).
pub fn escape_lines(text: &str) -> String {
    text.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

/// Control characters (C0, DEL, C1) and the invisible formatting characters that change how a
/// line reads: soft hyphen, zero-width and joiner characters, bidi marks, embeddings,
/// overrides and isolates, word joiner and invisible operators, BOM, interlinear annotation.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_control_and_format_characters_visible() {
        assert!(matches!(escape("order-17 é 注文"), Cow::Borrowed(_)));
        assert_eq!(escape("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(escape("\u{1b}]0;pwned\u{7}"), "\\u{1b}]0;pwned\\u{7}");
        assert_eq!(escape("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(escape("gnp\u{202e}.exe"), "gnp\\u{202e}.exe");
        assert_eq!(escape("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(escape("\u{7f}"), "\\u{7f}");
        assert_eq!(
            escape_lines("{\n  \"a\": \"\u{1b}\"\n}"),
            "{\n  \"a\": \"\\u{1b}\"\n}"
        );
    }
}
