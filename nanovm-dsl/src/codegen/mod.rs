//! Code generation: a lowered [`Program`] becomes one Rust module of typed items.
//!
//! For `program customer_refund` the module `customer_refund` holds one struct per declared
//! record type (with its `SHAPE` and `SCHEMA`), `Input`, one enum per `choose`, `Step`, `State`, the `Tools` trait (one typed method per declared tool), `Call`,
//! the `action` and `transition` functions (plain `match`es; conditions are plain Rust
//! expressions), `PROGRAM_HASH`, `MERMAID`, and `Program`, which implements the runtime's
//! program trait. Generated code reaches the runtime only through its hidden, versioned
//! `__private_v0_1` module.
//!
//! Output is deterministic byte for byte: everything is emitted in source order from vectors,
//! never from hash maps.
//!
//! One file per part of the generated module: `records` (the declared record types), `items`
//! (the program's data types), `tools` (the
//! host's trait and the typed calls), `info` (the static tables), `program` (the runtime
//! trait impl), `action` and `transition` (behaviour), `expr` (typed expressions) and
//! `skeleton` (the stand-in emitted next to diagnostics). This file holds the entry points,
//! the generator state and the type mapping shared by all of them.

mod action;
mod expr;
mod info;
mod items;
mod program;
mod records;
mod skeleton;
mod tools;
mod transition;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::fmt::Display;

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

use crate::check::Ty;
use crate::check::names::{choice_type_name, pascal};
use crate::lower::{Program, StepKind};

pub use skeleton::skeleton;

/// The version tag of the runtime's hidden module that generated code uses.
pub const PRIVATE_MODULE: &str = "__private_v0_1";

/// Code generation settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// The path of the crate that re-exports the runtime, e.g. `::nanovm` (the default) or
    /// `::nanovm_runtime`.
    pub runtime_path: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            runtime_path: "::nanovm".into(),
        }
    }
}

/// Generates the module for one program.
pub fn generate(p: &Program, opts: &Options) -> TokenStream {
    Gen::new(p, opts).module()
}

/// Generates and pretty-prints several programs as one Rust file (build.rs output).
pub fn generate_file(programs: &[Program], opts: &Options, header: &str) -> String {
    let items: Vec<TokenStream> = programs.iter().map(|p| generate(p, opts)).collect();
    let tokens = quote!(#(#items)*);
    let body = match syn::parse2::<syn::File>(tokens.clone()) {
        Ok(file) => prettyplease::unparse(&file),
        // Unparseable output would be a codegen bug; keep the raw tokens so rustc points at it.
        Err(_) => tokens.to_string(),
    };
    format!("{header}{body}")
}

/// A Rust identifier for a snake_case name, raw if it is a Rust keyword.
///
/// A name made of ASCII letters, digits and `_` is decided against `syn`'s keyword list without
/// parsing it: parsing a string into tokens is, inside rustc, a round trip through the
/// proc-macro bridge and a lexer run per name (in `proc_macro2`'s fallback, an entry of a
/// source map that is never freed), and generation names a variable several times per step.
/// Any other name takes the parser's word, as before.
pub fn snake_ident(name: &str) -> Ident {
    let plain = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let ident = if plain {
        !RUST_KEYWORDS.contains(&name)
    } else {
        syn::parse_str::<Ident>(name).is_ok()
    };
    if ident {
        Ident::new(name, Span::call_site())
    } else {
        Ident::new_raw(name, Span::call_site())
    }
}

/// The words `syn` refuses as an identifier (its `accept_as_ident`): Rust's strict and
/// reserved keywords, and `_`.
const RUST_KEYWORDS: &[&str] = &[
    "_", "abstract", "as", "async", "await", "become", "box", "break", "const", "continue",
    "crate", "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "Self", "self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

fn pascal_ident(name: &str) -> Ident {
    Ident::new(&pascal(name), Span::call_site())
}

fn choice_ident(var: &str) -> Ident {
    Ident::new(&choice_type_name(var), Span::call_site())
}

/// An internal compiler error, in place of the code the generator cannot produce: a
/// `compile_error!` naming the construct (`what`), so rustc stops at it. The generator never
/// emits a plausible stand-in (`false`, `0`, `""`, `None`) for a case it does not handle: a
/// guard that is silently false is exactly the kind of bug nanovm exists to prevent. The
/// checker should make every such case impossible; this is the net under it.
fn ice(what: impl Display) -> TokenStream {
    let message = format!("internal compiler error: {what} (please report)");
    quote!(::core::compile_error!(#message))
}

/// `name` if one of `parts` (a function body, or the arms of its `match`) reads it, else
/// `_name`: a parameter some programs never read (a program whose steps read no variable never
/// reads `state` in `action`) is named so instead of allowing the warning. A field label
/// (`state: ...` in a struct literal) is not a read.
///
/// The parts are searched one by one and the search stops at the first read: iterating a token
/// stream copies its tokens, so joining the arms first would copy every arm of the function to
/// find a read that is usually in the first one.
fn param(parts: &[TokenStream], name: &str) -> Ident {
    fn reads(body: &TokenStream, name: &str) -> bool {
        let mut tts = body.clone().into_iter().peekable();
        while let Some(tt) = tts.next() {
            let read = match tt {
                proc_macro2::TokenTree::Ident(id) => {
                    id == name
                        && !matches!(
                            tts.peek(),
                            Some(proc_macro2::TokenTree::Punct(p))
                                if p.as_char() == ':' && p.spacing() == proc_macro2::Spacing::Alone
                        )
                }
                proc_macro2::TokenTree::Group(g) => reads(&g.stream(), name),
                _ => false,
            };
            if read {
                return true;
            }
        }
        false
    }
    named(parts.iter().any(|part| reads(part, name)), name)
}

/// `name` if it is `used`, else `_name`.
fn named(used: bool, name: &str) -> Ident {
    if used {
        Ident::new(name, Span::call_site())
    } else {
        format_ident!("_{name}")
    }
}

/// A number as an unsuffixed literal: every place generated code puts one has its type fixed
/// already (`retry: 3`, `Some(20)`), so `3u32` would only be noise.
fn num(n: impl Into<u64>) -> Literal {
    Literal::u64_unsuffixed(n.into())
}

fn doc_attrs(doc: &[String]) -> TokenStream {
    let lines = doc.iter().map(|l| format!(" {l}"));
    quote!(#(#[doc = #lines])*)
}

struct Gen<'p> {
    p: &'p Program,
    /// The full path of the runtime's hidden module, imported once as `__nv`.
    private: TokenStream,
    /// `__nv`, the alias every other item uses: one token, so each use copies one token
    /// rather than a stream.
    nv: Ident,
    /// What is being generated (`guard policy`, `the Program impl`), for internal errors.
    site: RefCell<String>,
    /// The `Step` variant of each step, by step index, built once: a step is named by its
    /// variant in several items and in every transition that goes to it.
    step_variants: Vec<Ident>,
    /// A `compile_error!` when `Options::runtime_path` is not a path (the module still uses
    /// `::nanovm`, so this is the only error the user sees).
    bad_path: Option<TokenStream>,
}

impl<'p> Gen<'p> {
    fn new(p: &'p Program, opts: &Options) -> Self {
        let (root, bad_path): (syn::Path, _) = match syn::parse_str(&opts.runtime_path) {
            Ok(root) => (root, None),
            Err(_) => {
                let message = format!(
                    "nanovm: the runtime path {:?} is not a Rust path (e.g. `::nanovm`)",
                    opts.runtime_path
                );
                (
                    syn::parse_quote!(::nanovm),
                    Some(quote!(::core::compile_error!(#message);)),
                )
            }
        };
        let private = Ident::new(PRIVATE_MODULE, Span::call_site());
        Gen {
            p,
            private: quote!(#root::#private),
            nv: Ident::new("__nv", Span::call_site()),
            site: RefCell::new(format!("program `{}`", p.name)),
            step_variants: p.steps.iter().map(|s| pascal_ident(&s.name)).collect(),
            bad_path,
        }
    }

    /// Runs `f` with `site` as the place internal errors name; restores the previous one.
    fn at<R>(&self, site: impl Into<String>, f: impl FnOnce() -> R) -> R {
        let outer = self.site.replace(site.into());
        let out = f();
        *self.site.borrow_mut() = outer;
        out
    }

    /// The place being generated, e.g. `` `guard policy` ``.
    fn site(&self) -> String {
        self.site.borrow().clone()
    }

    /// The `Step` variant of the step at `index` (`S0` for step `s0`).
    fn step_variant(&self, index: usize) -> Ident {
        self.step_variants[index].clone()
    }

    /// True when the program has a `parallel` step (and so branch functions).
    fn has_parallel(&self) -> bool {
        self.p
            .steps
            .iter()
            .any(|s| matches!(s.kind, StepKind::Parallel(_)))
    }

    fn module(&self) -> TokenStream {
        let p = self.p;
        let name = snake_ident(&p.name);
        let doc = doc_attrs(&p.doc);
        let private = &self.private;
        let bad_path = &self.bad_path;
        let hash = p.hash.iter().map(|b| Literal::u8_unsuffixed(*b));
        let semantics = crate::canonical::SEMANTICS_VERSION;
        let mermaid = crate::graph::mermaid(p);
        let records = self.records();
        let input = self.input();
        let choices = self.choices();
        let steps = self.step_enum();
        let state = self.state();
        let tools = self.tools();
        let info = self.info();
        let imp = self.program_impl();
        let action = self.action_fn();
        let transition = self.transition_fn();
        let decisions = self.decision_fns();
        let branches = self.branch_fns();
        quote! {
            #doc
            #[allow(
                clippy::module_name_repetitions,
                reason = "items keep the program's names; the module is their namespace"
            )]
            #[allow(
                clippy::match_same_arms,
                reason = "one arm per step and outcome mirrors the program, even where two arms agree"
            )]
            #[allow(
                clippy::match_single_binding,
                reason = "a program whose steps are all `end` leaves `transition` with its catch-all alone"
            )]
            #[allow(
                clippy::nonminimal_bool,
                clippy::overly_complex_bool_expr,
                clippy::neg_cmp_op_on_partial_ord,
                clippy::double_comparisons,
                clippy::eq_op,
                clippy::comparison_to_empty,
                reason = "conditions are compiled as the program states them; simplifying one is its author's call"
            )]
            pub mod #name {
                #bad_path
                use #private as __nv;

                /// blake3 of the canonical program text and the semantics version.
                pub const PROGRAM_HASH: [u8; 32] = [#(#hash),*];

                /// The semantics version the program was compiled to (hashed into
                /// `PROGRAM_HASH`; the runtime refuses one it does not execute).
                pub const SEMANTICS_VERSION: &str = #semantics;

                /// The program's graph as a Mermaid flowchart.
                pub const MERMAID: &str = #mermaid;

                #records
                #input
                #choices
                #steps
                #state
                #tools
                #info
                #imp
                #action
                #transition
                #decisions
                #branches
            }
        }
    }

    // ----- types shared by every part -----

    fn rust_ty(&self, ty: &Ty) -> TokenStream {
        let nv = &self.nv;
        match ty {
            Ty::Str => quote!(String),
            Ty::Int => quote!(i64),
            Ty::Float => quote!(f64),
            Ty::Bool => quote!(bool),
            // Records, lists and optionals are held as JSON checked against their shape.
            Ty::Json | Ty::Record(_) | Ty::List(_) | Ty::Optional(_) => quote!(#nv::Json),
            Ty::Error | Ty::Null => ice(format_args!(
                "a variable, parameter or result of type `{ty}` in {}",
                self.site()
            )),
            Ty::Secret(inner) => {
                let inner = self.rust_ty(inner);
                quote!(#nv::SecretRef<#inner>)
            }
            Ty::Choice(c) => {
                let e = choice_ident(&self.p.choices[*c].var);
                quote!(#e)
            }
        }
    }

    fn param_ty(&self, ty: &Ty) -> TokenStream {
        let nv = &self.nv;
        match ty {
            Ty::Secret(inner) => {
                let inner = self.rust_ty(inner);
                quote!(#nv::Secret<#inner>)
            }
            other => self.rust_ty(other),
        }
    }
}

fn keyword(k: &StepKind) -> &'static str {
    match k {
        StepKind::Llm(_) => "llm",
        StepKind::Call(_) => "call",
        StepKind::Guard(_) => "guard",
        StepKind::Branch(_) => "branch",
        StepKind::Parallel(_) => "parallel",
        StepKind::Await(_) => "await",
        StepKind::End { .. } => "end",
    }
}

fn kind_tokens(nv: &Ident, k: &StepKind) -> TokenStream {
    let v = format_ident!("{}", pascal(keyword(k)));
    quote!(#nv::StepKind::#v)
}

/// `retry N` of an llm or call step; other kinds have none (a parallel block's own retry is
/// in its `ParallelInfo`).
fn step_retry(k: &StepKind) -> u32 {
    match k {
        StepKind::Llm(l) => l.retry,
        StepKind::Call(c) => c.retry,
        StepKind::Guard(_)
        | StepKind::Branch(_)
        | StepKind::Parallel(_)
        | StepKind::Await(_)
        | StepKind::End { .. } => 0,
    }
}

/// How internal errors name a step: `` `guard policy` ``.
fn step_site(s: &crate::lower::Step) -> String {
    format!("`{} {}`", keyword(&s.kind), s.name)
}
