//! Input limits of the parser.
//!
//! `.nvm` text can come from anywhere (a build script, a proc macro, a CLI user, a fuzzer), so
//! the parser bounds everything that could make it slow, deep or large. Going over a limit is an
//! `E0002` diagnostic pointing at the place that went over, never a panic, a stack overflow or a
//! hang. The numbers are far above anything a hand-written workflow needs.

/// Largest accepted source, in bytes (1 MiB). Checked before anything else; a larger input gets
/// one `E0002` at offset 0 that states its size.
pub const MAX_SOURCE_BYTES: usize = 1 << 20;

/// Deepest nesting of `{`, `(`, `[` and `not`, counted over the text (strings and comments
/// skipped) before the grammar runs, and again while expressions are built. The 65th level is an
/// `E0002` ("nested deeper than 64 levels") at the bracket or `not` that went too deep.
pub const MAX_NESTING: usize = 64;

/// Deepest expression tree, counting every operator of a chain: `a or b or c` is three levels
/// deep because binary expressions are left-deep. Deeper is an `E0002` ("expression too long").
pub const MAX_EXPR_DEPTH: usize = 256;

/// Longest name (step, variable, tool, field, ...) in bytes.
pub const MAX_IDENT_LEN: usize = 256;

/// Most steps in one program, `parallel` branches included.
pub const MAX_STEPS_PER_PROGRAM: usize = 10_000;

/// Most syntax errors reported for one file; after that the parser stops and says so in a note
/// on the last one. Past the first few, more errors rarely help anyone.
pub const MAX_SYNTAX_ERRORS: usize = 100;

/// Backstop given to `pest::set_call_limit`: the most grammar-rule calls one pest run may make
/// (the parser runs pest once per item). The grammar makes roughly 20 calls per input byte on
/// dense expressions, so this is generous for a whole 1 MiB item while still bounding a
/// pathological one. Hitting it is an `E0002`.
pub const PEST_CALL_LIMIT: usize = 200_000_000;
