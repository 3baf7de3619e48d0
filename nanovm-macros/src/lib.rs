//! Procedural macros for nanovm: [`nano_program!`] and [`include_program!`].
//!
//! A thin shim over `nanovm-dsl`: it turns the macro input into `.nvm` text, runs the same
//! compiler the CLI and build scripts use, and maps each diagnostic back to a span rustc can
//! underline. Nothing about the language lives here.
//!
//! Use them through the `nanovm` crate (`nanovm::nano_program!`); generated code refers to
//! `::nanovm`.

mod spans;

use proc_macro::TokenStream;

/// Compiles a program written inline, as Rust tokens, into a typed module.
///
/// ```ignore
/// nanovm::nano_program! {
///     program greet {
///         input { name: string }
///         llm ask { prompt: "Greet {name} politely." into greeting } -> done
///         end done: success
///     }
/// }
/// ```
///
/// The language is token-compatible with Rust: strings are double-quoted, comments are `//`
/// and `/* */`, durations are literals like `30s`. Errors point at the exact tokens at fault,
/// and every error of the program is reported at once. On errors the macro still emits a
/// skeleton of the module (same names, declared inputs and tool signatures), so code that uses
/// the program does not drown in follow-on errors.
///
/// Warnings (unused inputs and tools, effects in cycles) are real rustc warnings at the tokens
/// at fault, with their code (`W0401`) and message. Stable Rust gives proc macros no warning
/// API, so each is the use of a `#[deprecated]` constant named after the code: rustc words it
/// `use of deprecated constant`, and `#[allow(deprecated)]` on the enclosing module silences it.
#[proc_macro]
pub fn nano_program(input: TokenStream) -> TokenStream {
    spans::expand_inline(input.into()).into()
}

/// Compiles a `.nvm` file into typed modules, one per program in the file.
///
/// ```ignore
/// nanovm::include_program!("workflows/refund.nvm");
/// ```
///
/// The path is resolved like `include_str!`: relative to the directory of the file that
/// contains the macro call. If no file exists there, it is resolved relative to the crate root
/// (`CARGO_MANIFEST_DIR`). The crate rebuilds when the file changes. Errors and warnings are
/// reported at the path literal, each with the `.nvm` file's name, line, column and a snippet
/// (warnings as for [`nano_program!`]).
#[proc_macro]
pub fn include_program(input: TokenStream) -> TokenStream {
    spans::expand_file(input.into()).into()
}
