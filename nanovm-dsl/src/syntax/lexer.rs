//! The lexical pre-pass that runs before the grammar.
//!
//! One linear, non-recursive scan over the bytes that:
//! - replaces every comment with spaces (newlines kept), so pest needs no comment rule and byte
//!   offsets stay the same;
//! - collects `///` doc comments, which the tree builder attaches to the item that follows;
//! - rejects unterminated strings and block comments, and stray NUL / control characters;
//! - enforces [`MAX_NESTING`] over `{ ( [` and `not`, so no recursive code ever sees a deeper
//!   input;
//! - records a coarse token list, which error reporting uses to describe what it found, to
//!   point at the end of the previous token, and to find where to resume after an error.

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::Span;
use crate::syntax::limits::MAX_NESTING;

/// What a coarse token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokKind {
    /// `[A-Za-z_][A-Za-z0-9_]*`
    Word,
    /// `[0-9][A-Za-z0-9_]*`
    Number,
    /// A string literal, quotes included.
    Str,
    /// Punctuation: `->`, `==`, `!=`, `<=`, `>=` or one ASCII character.
    Punct,
    /// Any other character.
    Other,
}

/// One coarse token.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) kind: TokKind,
    /// The first token on its line.
    pub(crate) line_first: bool,
    /// Number of `{` open before this token.
    pub(crate) brace_depth: usize,
}

/// A `///` comment.
#[derive(Clone, Debug)]
pub(crate) struct Doc {
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// The text after `///`, one leading space stripped.
    pub(crate) text: String,
}

/// The result of the pre-pass.
#[derive(Debug)]
pub(crate) struct Lexed {
    /// The source with comments replaced by spaces.
    pub(crate) blanked: String,
    pub(crate) tokens: Vec<Token>,
    pub(crate) docs: Vec<Doc>,
    /// Offsets of the `{` still open at the end of the file, outermost first.
    pub(crate) open_braces: Vec<usize>,
}

impl Lexed {
    /// The token that starts at or after `pos`.
    pub(crate) fn token_at_or_after(&self, pos: usize) -> Option<&Token> {
        let i = self.tokens.partition_point(|t| t.start < pos);
        self.tokens.get(i)
    }

    /// The token that contains `pos` strictly inside (not at its start).
    pub(crate) fn token_around(&self, pos: usize) -> Option<&Token> {
        let i = self.tokens.partition_point(|t| t.start < pos);
        let t = self.tokens.get(i.checked_sub(1)?)?;
        (t.start < pos && pos < t.end).then_some(t)
    }

    /// The last token that ends at or before `pos`.
    pub(crate) fn prev_token(&self, pos: usize) -> Option<&Token> {
        let i = self.tokens.partition_point(|t| t.end <= pos);
        self.tokens.get(i.checked_sub(1)?)
    }

    /// The end of the last token that ends at or before `pos`.
    pub(crate) fn prev_token_end(&self, pos: usize) -> Option<usize> {
        self.prev_token(pos).map(|t| t.end)
    }

    /// The `///` lines directly above `start` (only whitespace or other comments between).
    pub(crate) fn docs_before(&self, start: usize) -> Vec<String> {
        let bytes = self.blanked.as_bytes();
        let blank = |a: usize, b: usize| bytes[a..b].iter().all(u8::is_ascii_whitespace);
        let mut i = self.docs.partition_point(|d| d.end <= start);
        let mut until = start;
        let mut out = Vec::new();
        while i > 0 && blank(self.docs[i - 1].end, until) {
            i -= 1;
            out.push(self.docs[i].text.clone());
            until = self.docs[i].start;
        }
        out.reverse();
        out
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Runs the pre-pass. An `Err` is the one diagnostic that makes parsing pointless (an
/// unterminated string or comment, a NUL byte, nesting over the limit).
pub(crate) fn lex(src: &str) -> Result<Lexed, Box<Diagnostic>> {
    let b = src.as_bytes();
    let n = b.len();
    let mut blanked = b.to_vec();
    let mut tokens: Vec<Token> = Vec::new();
    let mut docs = Vec::new();
    let mut braces: Vec<usize> = Vec::new();
    // Nesting of `{ ( [` and `not`: one counter of pending `not`s per bracket level.
    let mut levels: Vec<usize> = vec![0];
    let mut pending_nots = 0usize;
    let mut line_first = true;
    let mut i = 0;

    while i < n {
        let c = b[i];
        match c {
            b'\n' => {
                line_first = true;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | 0x0C => {
                i += 1;
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..].iter().position(|&x| x == b'\n').map_or(n, |k| i + k);
                if b.get(i + 2) == Some(&b'/') && b.get(i + 3) != Some(&b'/') {
                    let text = &src[i + 3..end];
                    let text = text.strip_suffix('\r').unwrap_or(text);
                    let text = text.strip_prefix(' ').unwrap_or(text);
                    docs.push(Doc {
                        start: i,
                        end,
                        text: text.to_string(),
                    });
                }
                blanked[i..end].fill(b' ');
                i = end;
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 1usize;
                let mut j = i + 2;
                while depth > 0 {
                    if j + 1 >= n {
                        return Err(Box::new(
                            Diagnostic::error(
                                codes::E0001,
                                "unterminated block comment",
                                Span::new(i, i + 2),
                            )
                            .with_label("this comment is never closed")
                            .with_help("close it with `*/` (block comments nest, like Rust's)"),
                        ));
                    }
                    if b[j] == b'/' && b[j + 1] == b'*' {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b[j + 1] == b'/' {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                for x in &mut blanked[i..j] {
                    if *x != b'\n' {
                        *x = b' ';
                    }
                }
                i = j;
                continue;
            }
            _ => {}
        }

        // A significant token.
        let start = i;
        let kind;
        if c == b'"' {
            let mut j = i + 1;
            loop {
                if j >= n {
                    return Err(Box::new(
                        Diagnostic::error(
                            codes::E0001,
                            "unterminated string literal",
                            Span::new(i, i + 1),
                        )
                        .with_label("this string is never closed")
                        .with_help("close it with `\"`; write `\\\"` for a quote inside a string"),
                    ));
                }
                match b[j] {
                    b'\\' => j += 2,
                    b'"' => {
                        j += 1;
                        break;
                    }
                    _ => j += 1,
                }
            }
            i = j;
            kind = TokKind::Str;
        } else if is_ident_start(c) {
            while i < n && is_ident_char(b[i]) {
                i += 1;
            }
            kind = TokKind::Word;
        } else if c.is_ascii_digit() {
            while i < n && is_ident_char(b[i]) {
                i += 1;
            }
            kind = TokKind::Number;
        } else if c.is_ascii() {
            if c.is_ascii_control() {
                return Err(Box::new(
                    Diagnostic::error(
                        codes::E0001,
                        format!("unexpected control character U+{c:04X}"),
                        Span::new(i, i + 1),
                    )
                    .with_label("not allowed outside a string"),
                ));
            }
            let two = b.get(i..i + 2);
            i += match two {
                Some(b"->" | b"==" | b"!=" | b"<=" | b">=") => 2,
                _ => 1,
            };
            kind = TokKind::Punct;
        } else {
            let ch = src[i..].chars().next().unwrap_or('\u{FFFD}');
            i += ch.len_utf8();
            if ch == '\u{FEFF}' {
                continue; // a byte-order mark is whitespace
            }
            kind = TokKind::Other;
        }

        let depth_before = braces.len();
        // Nesting: brackets and `not`.
        let text = &b[start..i];
        let nesting = levels.len() - 1 + pending_nots;
        match (kind, text) {
            (TokKind::Punct, b"{" | b"(" | b"[") => {
                if nesting + 1 > MAX_NESTING {
                    return Err(Box::new(too_deep(start, i, "this bracket")));
                }
                levels.push(0);
            }
            (TokKind::Punct, b"}" | b")" | b"]") => {
                if levels.len() > 1 {
                    pending_nots -= levels.pop().unwrap_or(0);
                }
                reset_level(&mut levels, &mut pending_nots);
            }
            (TokKind::Word, b"not") => {
                if nesting + 1 > MAX_NESTING {
                    return Err(Box::new(too_deep(start, i, "this `not`")));
                }
                if let Some(top) = levels.last_mut() {
                    *top += 1;
                }
                pending_nots += 1;
            }
            _ => reset_level(&mut levels, &mut pending_nots),
        }
        if kind == TokKind::Punct {
            match text {
                b"{" => braces.push(start),
                b"}" => {
                    braces.pop();
                }
                _ => {}
            }
        }
        tokens.push(Token {
            start,
            end: i,
            kind,
            line_first,
            brace_depth: depth_before,
        });
        line_first = false;
    }

    let blanked = String::from_utf8(blanked).unwrap_or_else(|e| {
        // Unreachable: only whole comments (which start and end on character boundaries) were
        // replaced, byte for byte, by ASCII spaces. Stay total anyway.
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    });
    Ok(Lexed {
        blanked,
        tokens,
        docs,
        open_braces: braces,
    })
}

fn reset_level(levels: &mut [usize], pending_nots: &mut usize) {
    if let Some(top) = levels.last_mut() {
        *pending_nots -= *top;
        *top = 0;
    }
}

fn too_deep(start: usize, end: usize, what: &str) -> Diagnostic {
    Diagnostic::error(
        codes::E0002,
        format!("nested deeper than {MAX_NESTING} levels"),
        Span::new(start, end),
    )
    .with_label(format!("{what} is at level {}", MAX_NESTING + 1))
    .with_help("split the condition into several steps, or drop redundant parentheses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blanks_comments_and_keeps_offsets() {
        let src = "a /* x /* y */ z */ b // c\n/// doc\nd";
        let l = lex(src).unwrap();
        assert_eq!(l.blanked.len(), src.len());
        let words: Vec<&str> = l.tokens.iter().map(|t| &src[t.start..t.end]).collect();
        assert_eq!(words, ["a", "b", "d"]);
        assert_eq!(l.docs_before(src.rfind('d').unwrap()), ["doc"]);
    }

    #[test]
    fn nesting_counts_brackets_and_nots() {
        let ok = format!("{}x{}", "(".repeat(64), ")".repeat(64));
        assert!(lex(&ok).is_ok());
        let bad = format!("{}x{}", "(".repeat(65), ")".repeat(65));
        let d = lex(&bad).unwrap_err();
        assert_eq!((d.code, d.primary.span), (codes::E0002, Span::new(64, 65)));
        let nots = "not ".repeat(65) + "x";
        assert_eq!(lex(&nots).unwrap_err().primary.span, Span::new(256, 259));
        // `not` scopes end at the next operand: these do not accumulate.
        let flat = "not a and ".repeat(100) + "b";
        assert!(lex(&flat).is_ok());
    }

    #[test]
    fn unterminated() {
        assert_eq!(lex("x \"abc").unwrap_err().primary.span, Span::new(2, 3));
        assert_eq!(lex("/* /* */").unwrap_err().primary.span, Span::new(0, 2));
    }
}
