//! Turning a failed pest run into one user-facing diagnostic.
//!
//! pest reports, with error detail enabled, the furthest position it reached and the literal
//! tokens it tried there. This module re-runs the failed item with detail on, moves the position
//! back to the start of a token when pest got stuck half-way into one (a keyword that is only a
//! prefix of a longer word, the `-` of `->`), and translates the tokens into user words: the
//! grammar's sentinels (`S_*`) become "a name", "an expression", ...; keywords and punctuation
//! are shown in backticks; character ranges and whitespace are dropped. Rule names never reach
//! the user.

use std::collections::BTreeSet;
use std::sync::Mutex;

use pest::Parser as _;
use pest::error::{Error, ErrorVariant};

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::Span;
use crate::syntax::grammar::{NvmParser, Rule};
use crate::syntax::keywords::{CLAUSE_WORDS, ITEM_KEYWORDS, is_reserved, keyword_help};
use crate::syntax::lexer::{Lexed, TokKind, Token};

/// A sentinel of the grammar: its token, what to call it, and the raw tokens it stands for.
struct Concept {
    token: &'static str,
    phrase: &'static str,
    covers: &'static [&'static str],
}

const EXPR_START: &[&str] = &[
    "not", "(", "[", "-", "true", "false", "null", "lower", "upper", "trim", "len", "trusted",
    "\0name", "\0string", "\0int", "\"",
];
const OPERATORS: &[&str] = &[
    "==",
    "!=",
    "<=",
    ">=",
    "<",
    ">",
    "contains",
    "starts_with",
    "ends_with",
    "in",
    "+",
    "-",
    "and",
    "or",
    ".",
];
const TYPES: &[&str] = &["string", "int", "float", "bool", "json", "secret", "list"];
const LLM_CLAUSES: &[&str] = &[
    "prompt",
    "system",
    "model",
    "max_tokens",
    "min_confidence",
    "choose",
    "into",
    "answer",
    "on",
    "retry",
    "after",
    ",",
    ";",
];

/// What can start an item: the item keywords, and `on` of a replanning edge.
const ITEM_STARTS: &[&str] = &[
    "input", "budget", "tool", "effect", "start", "llm", "call", "guard", "branch", "parallel",
    "await", "end", "on", "type",
];

const CONCEPTS: &[Concept] = &[
    Concept {
        token: "\0item",
        phrase: "a step or declaration",
        covers: ITEM_STARTS,
    },
    Concept {
        token: "\0llm_clause",
        phrase: "an `llm` clause",
        covers: LLM_CLAUSES,
    },
    Concept {
        token: "\0expr",
        phrase: "an expression",
        covers: EXPR_START,
    },
    Concept {
        token: "\0op",
        phrase: "an operator",
        covers: OPERATORS,
    },
    Concept {
        token: "\0lit",
        phrase: "a literal",
        covers: &["-", "true", "false", "null", "\"", "\0string"],
    },
    Concept {
        token: "\0type",
        phrase: "a type",
        covers: TYPES,
    },
    Concept {
        token: "\0value",
        phrase: "a number or a duration",
        covers: &["-"],
    },
    Concept {
        token: "\0duration",
        phrase: "a duration such as `30s`",
        covers: &[],
    },
    Concept {
        token: "\0int",
        phrase: "an integer",
        covers: &["-"],
    },
    Concept {
        token: "\0string",
        phrase: "a string",
        covers: &["\""],
    },
    Concept {
        token: "\0name",
        phrase: "a name",
        covers: &["_"],
    },
    Concept {
        token: "\0field",
        phrase: "a field name",
        covers: &["_"],
    },
];

/// Raw tokens that never help a user: whitespace, and pieces of lexical rules.
const NOISE: &[&str] = &[
    " ", "\t", "\r", "\n", "\u{c}", "\u{feff}", "_", "e", "E", "\"", "\\",
];

/// Builds the diagnostic for a failed pest run of `rule` over `blanked[pos..]`.
pub(crate) fn syntax_error(
    src: &str,
    lx: &Lexed,
    rule: Rule,
    pos: usize,
    err: Error<Rule>,
) -> Diagnostic {
    if let ErrorVariant::CustomError { message } = &err.variant {
        return limit_error(src, lx, pos, message.as_str());
    }
    let text = &lx.blanked[pos..];
    // Error detail makes pest several times slower, and the switch is process-wide: turn it
    // on only for these re-runs, one thread at a time, so that successful parses elsewhere in
    // the process stay fast and nobody turns it off under someone else's re-run.
    static DETAIL: Mutex<()> = Mutex::new(());
    let guard = DETAIL.lock().unwrap_or_else(|e| e.into_inner());
    pest::set_error_detail(true);
    let attempts = attempts_of(&err)
        .or_else(|| rerun(rule, text))
        .map(|first| {
            // Move back out of tokens that pest entered only half-way, by making their first
            // byte unmatchable and running again (offsets do not change).
            let mut attempts = first;
            let mut patched: Option<Vec<u8>> = None;
            for _ in 0..6 {
                let p = pos + attempts.max_position;
                let Some(tok) = lx.token_around(p) else {
                    break;
                };
                if tok.start < pos || !src.as_bytes()[tok.start].is_ascii() {
                    break;
                }
                let bytes = patched.get_or_insert_with(|| text.as_bytes().to_vec());
                bytes[tok.start - pos] = 0x01;
                let Ok(t) = std::str::from_utf8(bytes) else {
                    break;
                };
                match rerun(rule, t) {
                    Some(a) if a.max_position < attempts.max_position => attempts = a,
                    _ => break,
                }
            }
            attempts
        });
    pest::set_error_detail(false);
    drop(guard);
    let Some(attempts) = attempts else {
        // Unreachable in practice (detail is on); fall back to pest's own position.
        let p = pos
            + match err.location {
                pest::error::InputLocation::Pos(p) => p,
                pest::error::InputLocation::Span((s, _)) => s,
            };
        return build(src, lx, pos, p, &BTreeSet::new());
    };
    let p = pos + attempts.max_position;
    build(src, lx, pos, p, &attempts.raw)
}

/// What pest's detailed error says: the furthest position and the tokens expected there.
struct Attempts {
    max_position: usize,
    raw: BTreeSet<String>,
}

fn rerun(rule: Rule, text: &str) -> Option<Attempts> {
    match NvmParser::parse(rule, text) {
        Ok(_) => None,
        Err(e) => attempts_of(&e),
    }
}

fn attempts_of(e: &Error<Rule>) -> Option<Attempts> {
    let a = e.parse_attempts()?;
    // pest does not export its token type, only its `Display`: a literal shows as itself, a
    // character range as `a..z`, a built-in rule as `BUILTIN_RULE`. No literal of the grammar
    // contains `..`, so ranges are recognisable.
    let raw = a
        .expected_tokens()
        .into_iter()
        .map(|t| t.to_string())
        .filter(|t| !(t.contains("..") && t.chars().count() >= 4) && t != "BUILTIN_RULE")
        .filter(|t| !t.is_empty() && !NOISE.contains(&t.as_str()))
        .collect();
    Some(Attempts {
        max_position: a.max_position,
        raw,
    })
}

fn limit_error(src: &str, lx: &Lexed, pos: usize, message: &str) -> Diagnostic {
    let span = lx
        .token_at_or_after(pos)
        .map_or(Span::new(pos, pos), |t| token_span(src, t));
    Diagnostic::error(codes::E0002, "this item is too complex to parse", span)
        .with_label(format!("the parser gave up here ({message})"))
        .with_help("split it into smaller steps")
}

/// The user phrases for a set of raw expected tokens, in display order.
fn phrases(raw: &BTreeSet<String>) -> Vec<String> {
    let mut covered: BTreeSet<&str> = BTreeSet::new();
    let mut concepts = Vec::new();
    for c in CONCEPTS {
        if raw.contains(c.token) {
            concepts.push(c.phrase.to_string());
            covered.extend(c.covers.iter().copied());
        }
    }
    // One concept subsumes another: an expression includes names, strings and integers.
    if raw.contains("\0expr") || raw.contains("\0lit") {
        concepts.retain(|p| p != "a name" && p != "a string" && p != "an integer");
    }
    let mut puncts = Vec::new();
    let mut words = Vec::new();
    for t in raw {
        if t.starts_with('\0') || covered.contains(t.as_str()) {
            continue;
        }
        if t.as_bytes()[0].is_ascii_alphabetic() {
            words.push(format!("`{t}`"));
        } else {
            puncts.push(format!("`{t}`"));
        }
    }
    // The arrow first: it is the most common thing to forget.
    puncts.sort_by_key(|p| (p != "`->`", p.clone()));
    // Optional separators are noise next to anything else.
    if puncts.len() + words.len() + concepts.len() > 1 {
        puncts.retain(|p| p != "`;`");
        if raw.contains("\0item") || raw.contains("when") || raw.contains("}") && !raw.contains(")")
        {
            puncts.retain(|p| p != "`,`");
        }
    }
    puncts.into_iter().chain(words).chain(concepts).collect()
}

fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The span of a token as shown to the user (a multi-line string is cut at its first line end).
fn token_span(src: &str, t: &Token) -> Span {
    let end = src[t.start..t.end]
        .find('\n')
        .map_or(t.end, |k| t.start + k)
        .max(t.start + 1)
        .min(t.end);
    Span::new(t.start, end)
}

fn describe(src: &str, t: Option<&Token>) -> String {
    let Some(t) = t else {
        return "end of file".into();
    };
    let text = &src[t.start..t.end];
    match t.kind {
        // `after` was reserved before it became contextual; where a syntax error meets it, it
        // stands where a clause or step was expected, so it is still the keyword to the reader.
        TokKind::Word if is_reserved(text) || text == "after" => format!("keyword `{text}`"),
        TokKind::Str => "a string".into(),
        TokKind::Other => format!("`{}`", text.escape_debug()),
        _ => format!("`{text}`"),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A keyword among the expected ones that `word` is probably a typo of.
fn did_you_mean(word: &str, raw: &BTreeSet<String>) -> Option<String> {
    let mut candidates: Vec<&str> = raw
        .iter()
        .filter(|t| t.as_bytes().first().is_some_and(u8::is_ascii_alphabetic))
        .map(String::as_str)
        .collect();
    if raw.contains("\0item") {
        candidates.extend(ITEM_KEYWORDS);
    }
    if raw.contains("\0llm_clause") {
        candidates.extend(LLM_CLAUSES.iter().filter(|c| c.len() > 1));
    }
    if raw.contains("\0type") {
        candidates.extend(TYPES);
    }
    let limit = (word.len() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c.to_string())
}

const COMPARISONS: &[&str] = &[
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "contains",
    "starts_with",
    "ends_with",
    "in",
];

/// Builds the E0001 (or E0007) for an item that started at `pos` and failed at `p`.
fn build(src: &str, lx: &Lexed, pos: usize, p: usize, raw: &BTreeSet<String>) -> Diagnostic {
    let found_tok = lx.token_at_or_after(p).filter(|_| p < src.len());
    let found = describe(src, found_tok);
    let found_text = found_tok.map_or("", |t| &src[t.start..t.end]);
    let found_span = found_tok.map_or(Span::new(src.len(), src.len()), |t| token_span(src, t));
    let list = phrases(raw);
    let expected = join(&list);

    // A reserved word where a name belongs.
    if found_tok.is_some_and(|t| t.kind == TokKind::Word)
        && is_reserved(found_text)
        && list.iter().any(|p| p == "a name")
    {
        return Diagnostic::error(
            codes::E0007,
            format!("`{found_text}` is a keyword and cannot be a name"),
            found_span,
        )
        .with_label("reserved keyword")
        .with_help(keyword_help(found_text));
    }

    // `a == b == c`
    if COMPARISONS.contains(&found_text) && raw.contains("and") && !raw.contains("==") {
        return Diagnostic::error(
            codes::E0001,
            "comparison operators cannot be chained",
            found_span,
        )
        .with_label("a second comparison")
        .with_help("compare twice and join with `and`, e.g. `a < b and b < c`");
    }

    let mut message = if expected.is_empty() {
        format!("unexpected {found}")
    } else {
        format!("expected {expected}, found {found}")
    };
    // Missing token: the next token is on a later line (or there is none), so point just after
    // the previous one, where the missing text belongs.
    let prev_end = lx.prev_token_end(p).filter(|&e| e > pos);
    let next_is_keyword_like = found_tok.is_none_or(|t| {
        let s = &src[t.start..t.end];
        (t.kind == TokKind::Word && (is_reserved(s) || CLAUSE_WORDS.contains(&s)))
            || matches!(s, "}" | "->" | ")" | "]")
    });
    let (span, label) = match prev_end {
        Some(e)
            if next_is_keyword_like
                && (found_tok.is_none() || src[e..found_span.start].contains('\n')) =>
        {
            (Span::new(e, e), format!("expected {expected} here"))
        }
        _ if expected.is_empty() => (found_span, "unexpected here".to_string()),
        _ => (found_span, format!("expected {expected}")),
    };
    if raw.contains("\0item") {
        message = format!("expected a step or declaration, found {found}");
    }
    let mut d = Diagnostic::error(codes::E0001, message, span).with_label(label);

    if let Some(kw) = found_tok
        .filter(|t| t.kind == TokKind::Word)
        .and_then(|_| did_you_mean(found_text, raw))
    {
        d = d.with_help(format!("did you mean `{kw}`?"));
    }
    if d.help.is_none() && raw.contains("\0item") {
        d = d.with_help(
            "a program holds `input`, `budget`, `tool`, `effect tool` and `start` declarations \
             and `llm`, `call`, `guard`, `branch`, `parallel`, `await` and `end` steps",
        );
    }
    if d.help.is_none() && raw.contains("\0llm_clause") && found_tok.is_some() {
        d = d.with_help(
            "an `llm` step takes `prompt:`, `system:`, `model:`, `max_tokens:`, \
             `choose VAR from [...]` or `into VAR`, `min_confidence P`, `on invalid -> S`, \
             `retry N`, `on error -> S`",
        );
    }
    if found_text == "secret" && raw.contains("\0type") && !raw.contains("secret") {
        d = d.with_help("a value is `secret` once: write `secret string`, not `secret secret`");
    }
    if found_text == "after" && !raw.contains("after") {
        d = d.with_help("`after` is only allowed on the branches of a `parallel` step");
    }
    if found_text == "->" && raw.contains("call") && raw.contains("llm") {
        d = d.with_help(
            "the branches of a `parallel` step have no `-> S`: the step continues with the \
             `-> S` after its closing `}`",
        );
    }
    let prev_is_number = lx.prev_token(p).is_some_and(|t| t.kind == TokKind::Number);
    if prev_is_number && matches!(found_text, "ms" | "s" | "m" | "h" | "d") {
        d = d.with_help("write a duration without a space, e.g. `30s`");
    }
    if let Some(&open) = lx
        .open_braces
        .last()
        .filter(|_| found_tok.is_none() && raw.contains("}"))
    {
        d = d.with_secondary(Span::new(open, open + 1), "unclosed `{` opened here");
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_distances() {
        assert_eq!(join(&["`a`".into()]), "`a`");
        assert_eq!(
            join(&["`a`".into(), "`b`".into(), "c".into()]),
            "`a`, `b` or c"
        );
        assert_eq!(levenshtein("lm", "llm"), 1);
        assert_eq!(levenshtein("gaurd", "guard"), 2);
    }
}
