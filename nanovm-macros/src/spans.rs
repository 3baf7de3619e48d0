//! From macro input to `.nvm` text and back: the only logic this crate has.

use std::path::PathBuf;

use nanovm_dsl::codegen::{self, Options};
use nanovm_dsl::{Diagnostic, SourceFile};
use proc_macro2::{Delimiter, Ident, Span, TokenStream, TokenTree};
use quote::quote;

/// `nano_program! { ... }`: rebuild the text with the tokens' own layout, compile, map errors.
pub(crate) fn expand_inline(input: TokenStream) -> TokenStream {
    let text = Rebuilt::from_tokens(input);
    let compiled = nanovm_dsl::compile("nano_program!", &text.text);
    let opts = Options::default();
    let mut out: TokenStream = compiled
        .diagnostics
        .iter()
        .filter(|d| !d.is_error())
        .map(|d| {
            let (first, _) = text.spans_for(d.primary.span.start, d.primary.span.end);
            warning_at(first, d.code.id(), &message(d, &compiled.source, &text))
        })
        .collect();
    if !compiled.has_errors() {
        out.extend(
            compiled
                .programs
                .iter()
                .map(|p| codegen::generate(p, &opts)),
        );
        return out;
    }
    for d in compiled.diagnostics.iter().filter(|d| d.is_error()) {
        let (first, last) = text.spans_for(d.primary.span.start, d.primary.span.end);
        out.extend(error_between(
            first,
            last,
            &message(d, &compiled.source, &text),
        ));
    }
    out.extend(skeletons(&text.text, &opts));
    out
}

/// `include_program!("x.nvm")`: read the file, compile, report errors at the literal with the
/// file's own line, column and snippet.
pub(crate) fn expand_file(input: TokenStream) -> TokenStream {
    let lit: syn::LitStr = match syn::parse2(input) {
        Ok(l) => l,
        Err(e) => {
            return syn::Error::new(
                e.span(),
                "expected a path string, e.g. `include_program!(\"workflows/refund.nvm\")`",
            )
            .to_compile_error();
        }
    };
    let rel = lit.value();
    let candidates = candidate_paths(&rel, lit.span());
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let looked = candidates
            .iter()
            .map(|p| format!("`{}`", p.display()))
            .collect::<Vec<_>>()
            .join(" and ");
        return syn::Error::new(
            lit.span(),
            format!("cannot find `{rel}` (looked at {looked})"),
        )
        .to_compile_error();
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return syn::Error::new(lit.span(), format!("cannot read `{}`: {e}", path.display()))
                .to_compile_error();
        }
    };
    let abs = path.canonicalize().unwrap_or_else(|_| path.clone());
    let abs_str = abs.display().to_string();
    // Cargo rebuilds the crate when the included file changes.
    let track = quote!(
        const _: &[u8] = include_bytes!(#abs_str);
    );
    let compiled = nanovm_dsl::compile_bytes(&rel, &bytes);
    let opts = Options::default();
    let warnings = compiled
        .diagnostics
        .iter()
        .filter(|d| !d.is_error())
        .map(|d| {
            warning_at(
                lit.span(),
                d.code.id(),
                &rendered_in_file(d, &compiled.source),
            )
        });
    let mut out = quote!(#track #(#warnings)*);
    if !compiled.has_errors() {
        out.extend(
            compiled
                .programs
                .iter()
                .map(|p| codegen::generate(p, &opts)),
        );
        return out;
    }
    for d in compiled.diagnostics.iter().filter(|d| d.is_error()) {
        let rendered = rendered_in_file(d, &compiled.source);
        out.extend(syn::Error::new(lit.span(), rendered).to_compile_error());
    }
    out.extend(skeletons(&String::from_utf8_lossy(&bytes), &opts));
    out
}

/// Where `include_program!` looks: beside the calling file, then at the crate root.
fn candidate_paths(rel: &str, span: Span) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = span
        .local_file()
        .and_then(|f| f.parent().map(PathBuf::from))
    {
        out.push(dir.join(rel));
    }
    if let Some(root) = std::env::var_os("CARGO_MANIFEST_DIR") {
        out.push(PathBuf::from(root).join(rel));
    }
    if out.is_empty() {
        out.push(PathBuf::from(rel));
    }
    out
}

/// Skeleton modules for every program that at least parses.
fn skeletons(text: &str, opts: &Options) -> TokenStream {
    match nanovm_dsl::parse(text).file {
        Some(file) => file
            .programs
            .iter()
            .map(|p| codegen::skeleton(p, opts))
            .collect(),
        None => TokenStream::new(),
    }
}

/// A diagnostic of an included file as rustc will show it after its own `error: ` or
/// `warning: `: the message with the code, as inline diagnostics have it, then the compiler's
/// rendering of the place in the `.nvm` file (`--> file:line:col`, snippet, notes, help). The
/// rendering's own `error[E0102]: ` head is dropped, or rustc would print `error: error[...]`.
fn rendered_in_file(d: &Diagnostic, source: &SourceFile) -> String {
    let rendered = nanovm_dsl::render::render(d, source);
    let body = rendered.split_once('\n').map_or("", |(_, rest)| rest);
    format!("{} [{}]\n{}", d.message, d.code, body.trim_end())
}

/// A real rustc warning at `at` on stable Rust, which gives proc macros no warning API: a
/// `#[deprecated]` constant, named after the code, used at `at`. rustc reports the use as
/// `warning: use of deprecated constant ...: {message}`, which an `allow(deprecated)` on the
/// enclosing module silences like any other warning.
fn warning_at(at: Span, code: &str, message: &str) -> TokenStream {
    let name = Ident::new(code, Span::call_site());
    let used = Ident::new(code, Span::call_site().located_at(at));
    quote! {
        const _: () = {
            #[deprecated(note = #message)]
            const #name: () = ();
            #used
        };
    }
}

/// The message of an inline diagnostic: code, message, notes and help. (The label is what the
/// caret already shows.) Secondary locations are named by line and column.
fn message(d: &Diagnostic, source: &SourceFile, text: &Rebuilt) -> String {
    let mut m = format!("{} [{}]", d.message, d.code);
    for s in &d.secondary {
        let (first, _) = text.spans_for(s.span.start, s.span.end);
        let at = first.start();
        let what = if s.message.is_empty() {
            format!("`{}`", source.snippet(s.span))
        } else {
            s.message.clone()
        };
        m.push_str(&format!(
            "\n= note: {what} (line {}, column {})",
            at.line,
            at.column + 1
        ));
    }
    for n in &d.notes {
        m.push_str(&format!("\n= note: {n}"));
    }
    if let Some(h) = &d.help {
        m.push_str(&format!("\n= help: {h}"));
    }
    m
}

/// A `compile_error!` underlining everything from `first` to `last` (the stable-Rust trick syn
/// itself uses: an error spanned over two tokens).
fn error_between(first: Span, last: Span, msg: &str) -> TokenStream {
    let a = Ident::new("a", first);
    let b = Ident::new("b", last);
    syn::Error::new_spanned(quote!(#a #b), msg).to_compile_error()
}

/// The `.nvm` text rebuilt from tokens, with each token's byte range and span.
struct Rebuilt {
    text: String,
    tokens: Vec<(usize, usize, Span)>,
    line: usize,
    col: usize,
}

impl Rebuilt {
    fn from_tokens(input: TokenStream) -> Rebuilt {
        let mut r = Rebuilt {
            text: String::new(),
            tokens: Vec::new(),
            line: 0,
            col: 0,
        };
        r.stream(input);
        r
    }

    /// Moves the cursor to `span`'s start, padding with newlines and spaces so columns (and
    /// therefore rustc's and our own line/column numbers) agree.
    fn seek(&mut self, span: Span) {
        let at = span.start();
        if self.line == 0 {
            self.line = at.line;
        }
        if at.line > self.line {
            for _ in self.line..at.line {
                self.text.push('\n');
            }
            self.line = at.line;
            self.col = 0;
        } else if at.line < self.line || (at.line == self.line && at.column < self.col) {
            // Spans out of order (tokens from another macro): keep tokens apart.
            self.text.push(' ');
            self.col += 1;
            return;
        }
        while self.col < at.column {
            self.text.push(' ');
            self.col += 1;
        }
    }

    fn push(&mut self, text: &str, span: Span) {
        self.seek(span);
        let start = self.text.len();
        self.text.push_str(text);
        self.tokens.push((start, self.text.len(), span));
        match text.rfind('\n') {
            Some(i) => {
                self.line += text.matches('\n').count();
                self.col = text[i + 1..].chars().count();
            }
            None => self.col += text.chars().count(),
        }
    }

    fn stream(&mut self, input: TokenStream) {
        let mut iter = input.into_iter().peekable();
        while let Some(tt) = iter.next() {
            match tt {
                TokenTree::Punct(p) if p.as_char() == '#' => {
                    // `///` and `//!` arrive as `#[doc = "..."]` / `#![doc = "..."]`.
                    let inner =
                        matches!(iter.peek(), Some(TokenTree::Punct(q)) if q.as_char() == '!');
                    if inner {
                        iter.next();
                    }
                    if let Some(TokenTree::Group(g)) = iter.peek()
                        && g.delimiter() == Delimiter::Bracket
                        && let Some(doc) = doc_text(g.stream())
                    {
                        let g_span = g.span_close();
                        iter.next();
                        if !inner {
                            let comment = if doc.contains('\n') {
                                format!("/**{doc}*/")
                            } else {
                                format!("///{doc}")
                            };
                            self.push(&comment, p.span());
                        }
                        let _ = g_span;
                        continue;
                    }
                    self.push("#", p.span());
                }
                TokenTree::Group(g) => {
                    let (open, close) = match g.delimiter() {
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::None => ("", ""),
                    };
                    if !open.is_empty() {
                        self.push(open, g.span_open());
                    }
                    self.stream(g.stream());
                    if !close.is_empty() {
                        self.push(close, g.span_close());
                    }
                }
                TokenTree::Ident(i) => self.push(&i.to_string(), i.span()),
                TokenTree::Punct(p) => self.push(&p.as_char().to_string(), p.span()),
                TokenTree::Literal(l) => self.push(&l.to_string(), l.span()),
            }
        }
    }

    /// The spans of the first and last tokens overlapping `start..end` (or the nearest token
    /// for an empty range).
    fn spans_for(&self, start: usize, end: usize) -> (Span, Span) {
        let overlapping: Vec<&(usize, usize, Span)> = self
            .tokens
            .iter()
            .filter(|(s, e, _)| *s < end.max(start + 1) && *e > start)
            .collect();
        match (overlapping.first(), overlapping.last()) {
            (Some(f), Some(l)) => (f.2, l.2),
            _ => {
                let near = self
                    .tokens
                    .iter()
                    .rev()
                    .find(|(s, _, _)| *s <= start)
                    .or(self.tokens.first())
                    .map_or(Span::call_site(), |t| t.2);
                (near, near)
            }
        }
    }
}

/// The text of `doc = "..."`.
fn doc_text(stream: TokenStream) -> Option<String> {
    let meta: syn::MetaNameValue = syn::parse2(stream).ok()?;
    if !meta.path.is_ident("doc") {
        return None;
    }
    match meta.value {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => Some(s.value()),
        _ => None,
    }
}
