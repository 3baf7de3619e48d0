//! The words of the language: reserved keywords, the words that start an item, and the
//! contextual words that are keywords only where they introduce a clause.

/// Reserved keywords: never names (`E0007`). docs/language.md lists the same words.
pub const RESERVED: &[&str] = &[
    "program",
    "input",
    "budget",
    "tool",
    "effect",
    "idempotent",
    "start",
    "llm",
    "call",
    "guard",
    "branch",
    "parallel",
    "await",
    "end",
    "when",
    "otherwise",
    "into",
    "on",
    "choose",
    "from",
    "timeout",
    "and",
    "or",
    "not",
    "contains",
    "starts_with",
    "ends_with",
    "in",
    "true",
    "false",
    "null",
    "string",
    "int",
    "float",
    "bool",
    "json",
    "secret",
    "lower",
    "upper",
    "trim",
    "len",
];

/// Words that start an item of a program body.
pub(crate) const ITEM_KEYWORDS: &[&str] = &[
    "input", "budget", "tool", "effect", "start", "llm", "call", "guard", "branch", "parallel",
    "await", "end",
];

/// Contextual words that introduce a clause (`retry N`, `after a, b`) and are ordinary names
/// elsewhere (`call retry = ...`, `-> after`). A syntax error right before one of them is a
/// missing token, reported at the end of the previous line like before a keyword.
pub(crate) const CLAUSE_WORDS: &[&str] = &["retry", "after"];

/// True for a reserved keyword.
pub fn is_reserved(word: &str) -> bool {
    RESERVED.contains(&word)
}

/// A name to use instead of the reserved keyword `word`: snake_case, not reserved, and clear of
/// the names Rust reserves, so applying the suggestion gives a name the checker accepts.
pub(crate) fn name_for_keyword(word: &str) -> String {
    format!("my_{word}")
}

/// The help of `E0007` for the reserved keyword `word`.
pub(crate) fn keyword_help(word: &str) -> String {
    format!(
        "pick another name, e.g. `{}`; keywords are listed in docs/language.md",
        name_for_keyword(word)
    )
}
