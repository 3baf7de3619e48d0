//! The parser: `.nvm` text -> [`ast::File`] plus diagnostics.
//!
//! Phases:
//! 1. size check ([`MAX_SOURCE_BYTES`]);
//! 2. the lexical pre-pass ([`lexer`](super::lexer)): comments blanked, nesting bounded,
//!    unterminated strings and comments rejected;
//! 3. pest, one item at a time: `program NAME {`, then each item, then `}`. When an item fails,
//!    its error is translated ([`errors`](super::errors)) and parsing resumes at the next line
//!    that starts an item keyword at brace depth 1 (or `program`), so each broken item gives one
//!    error and later items are still checked;
//! 4. the tree builder (this file): pest pairs -> AST, with the checks that are easier on a
//!    parsed item than in a grammar (literals and escapes, template holes, duplicate clauses,
//!    name length, expression depth).
//!
//! Nothing here recurses deeper than the expression nesting, which the pre-pass bounds.

use std::sync::Once;

use pest::Parser as _;
use pest::iterators::Pair;

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::*;
use crate::syntax::errors;
use crate::syntax::grammar::{NvmParser, Rule};
use crate::syntax::keywords::{ITEM_KEYWORDS, is_reserved, keyword_help};
use crate::syntax::lexer::{self, Lexed, TokKind};
use crate::syntax::limits::*;

/// The result of [`parse`]: the tree (only when there is no error) and every diagnostic.
#[derive(Clone, Debug)]
pub struct Parsed {
    /// The syntax tree; `Some` exactly when `diagnostics` holds no error.
    pub file: Option<File>,
    /// Errors (and, in principle, warnings) in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    fn new(file: Option<File>, mut diagnostics: Vec<Diagnostic>) -> Parsed {
        diagnostics.sort_by_key(|d| d.primary.span.start);
        let file = file.filter(|_| !diagnostics.iter().any(Diagnostic::is_error));
        Parsed { file, diagnostics }
    }

    fn one(d: Diagnostic) -> Parsed {
        Parsed::new(None, vec![d])
    }
}

/// Parses a `.nvm` source text.
///
/// Never panics, never overflows the stack and never hangs: inputs over the
/// [limits](super::limits) get an `E0002`. Every syntax error of the file is reported (one per
/// broken item, up to [`MAX_SYNTAX_ERRORS`]).
pub fn parse(source: &str) -> Parsed {
    if source.len() > MAX_SOURCE_BYTES {
        return Parsed::one(too_big(source.len()));
    }
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        pest::set_call_limit(std::num::NonZeroUsize::new(PEST_CALL_LIMIT));
    });
    let lexed = match lexer::lex(source) {
        Ok(l) => l,
        Err(d) => return Parsed::one(*d),
    };
    if lexed.tokens.is_empty() {
        return Parsed::one(
            Diagnostic::error(codes::E0004, "no program in this file", Span::new(0, 0))
                .with_label("the file is empty (or holds only comments)")
                .with_help("a file holds one or more `program NAME { ... }`"),
        );
    }
    let mut driver = Driver::new(source, &lexed);
    let programs = driver.run();
    Parsed::new(Some(File { programs }), driver.diags)
}

/// Parses raw bytes: invalid UTF-8 is an `Err` with an `E0003` at the first bad byte; anything
/// else is [`parse`]d. (Inputs over [`MAX_SOURCE_BYTES`] are `Ok` with an `E0002`.)
#[allow(clippy::result_large_err)] // the signature is the crate's API
pub fn parse_bytes(bytes: &[u8]) -> Result<Parsed, Diagnostic> {
    if bytes.len() > MAX_SOURCE_BYTES {
        return Ok(Parsed::one(too_big(bytes.len())));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(parse(s)),
        Err(e) => {
            let at = e.valid_up_to();
            let len = e.error_len().unwrap_or(bytes.len() - at);
            Err(Diagnostic::error(
                codes::E0003,
                "the file is not valid UTF-8",
                Span::new(at, at + len),
            )
            .with_label(format!("invalid byte 0x{:02X} at offset {at}", bytes[at]))
            .with_help("save the file as UTF-8"))
        }
    }
}

fn too_big(len: usize) -> Diagnostic {
    Diagnostic::error(
        codes::E0002,
        format!("the file is {len} bytes; the limit is {MAX_SOURCE_BYTES} bytes (1 MiB)"),
        Span::new(0, 0),
    )
    .with_help("split the programs over several files")
}

// ---------------------------------------------------------------------------------------------
// The driver: programs and items, with recovery.

struct Driver<'a> {
    src: &'a str,
    lx: &'a Lexed,
    diags: Vec<Diagnostic>,
    syntax_errors: usize,
    /// Offsets where parsing may resume after an error, and whether a `program` starts there.
    resume: Vec<(usize, bool)>,
    stopped: bool,
}

enum After {
    /// Continue with the next item of the current program.
    Item(usize),
    /// Continue at the top level.
    Program(usize),
    /// Nothing left to parse.
    Stop,
}

impl<'a> Driver<'a> {
    fn new(src: &'a str, lx: &'a Lexed) -> Self {
        let resume = lx
            .tokens
            .iter()
            .filter(|t| t.line_first && t.kind == TokKind::Word)
            .filter_map(|t| {
                let w = &src[t.start..t.end];
                if w == "program" {
                    Some((t.start, true))
                } else if t.brace_depth == 1 && ITEM_KEYWORDS.contains(&w) {
                    Some((t.start, false))
                } else {
                    None
                }
            })
            .collect();
        Driver {
            src,
            lx,
            diags: Vec::new(),
            syntax_errors: 0,
            resume,
            stopped: false,
        }
    }

    fn skip_ws(&self, mut pos: usize) -> usize {
        let b = self.lx.blanked.as_bytes();
        while pos < b.len() {
            match b[pos] {
                b' ' | b'\t' | b'\r' | b'\n' | 0x0C => pos += 1,
                0xEF if b[pos..].starts_with("\u{FEFF}".as_bytes()) => pos += 3,
                _ => break,
            }
        }
        pos
    }

    fn run(&mut self) -> Vec<Program> {
        let mut programs = Vec::new();
        let mut pos = 0;
        while !self.stopped {
            pos = self.skip_ws(pos);
            if pos >= self.src.len() {
                break;
            }
            match self.pest(Rule::program_open, pos) {
                Ok((pair, end)) => {
                    let mut b = Builder::new(self.lx, pos, &mut self.diags);
                    let doc = b.docs(pos);
                    let name = pair
                        .into_inner()
                        .find(|p| p.as_rule() == Rule::name)
                        .map(|p| b.ident(&p));
                    let Some(name) = name else { break };
                    let open = end - 1;
                    let (items, next) = self.items(end, open);
                    let close = match next {
                        After::Program(p) => p,
                        _ => self.src.len(),
                    };
                    programs.push(Program {
                        doc,
                        name,
                        items,
                        span: Span::new(pos, close),
                    });
                    match next {
                        After::Program(p) => pos = p,
                        After::Item(_) | After::Stop => break,
                    }
                }
                Err(d) => match self.recover(*d, pos) {
                    After::Program(p) => pos = p,
                    After::Item(p) => {
                        // Resume inside a program whose header was broken; its items are still
                        // checked, then the top level goes on after its `}`.
                        match self.items(p, p).1 {
                            After::Program(p) => pos = p,
                            _ => break,
                        }
                    }
                    After::Stop => break,
                },
            }
        }
        programs
    }

    /// Parses items from `pos` to the program's closing `}`. Returns the items and where the top
    /// level continues (`Program(offset after the })`), or `Stop`.
    fn items(&mut self, mut pos: usize, open: usize) -> (Vec<Item>, After) {
        let mut items = Vec::new();
        let mut steps = 0usize;
        loop {
            if self.stopped {
                return (items, After::Stop);
            }
            pos = self.skip_ws(pos);
            if pos >= self.src.len() {
                let at = self.lx.prev_token_end(pos).unwrap_or(pos);
                self.syntax(
                    Diagnostic::error(
                        codes::E0001,
                        "expected `}` to close the program, found end of file",
                        Span::new(at, at),
                    )
                    .with_label("expected `}` here")
                    .with_secondary(Span::new(open, open + 1), "this `{` is never closed"),
                );
                return (items, After::Stop);
            }
            if self.lx.blanked.as_bytes()[pos] == b'}' {
                return (items, After::Program(pos + 1));
            }
            match self.pest(Rule::item, pos) {
                Ok((pair, end)) => {
                    let mut b = Builder::new(self.lx, pos, &mut self.diags);
                    if let Some(item) = b.item(pair) {
                        if let Item::Step(s) = &item {
                            let before = steps;
                            steps += 1 + s.branch_count();
                            if before <= MAX_STEPS_PER_PROGRAM && steps > MAX_STEPS_PER_PROGRAM {
                                self.diags.push(
                                    Diagnostic::error(
                                        codes::E0002,
                                        format!(
                                            "more than {MAX_STEPS_PER_PROGRAM} steps in one program"
                                        ),
                                        s.name.span,
                                    )
                                    .with_label("this step is over the limit")
                                    .with_help("split the workflow into several programs"),
                                );
                            }
                        }
                        items.push(item);
                    }
                    pos = end;
                }
                Err(d) => match self.recover(*d, pos) {
                    After::Item(p) => pos = p,
                    other => return (items, other),
                },
            }
        }
    }

    /// Runs pest for one `rule` at `pos`; on failure, the translated diagnostic.
    fn pest(&self, rule: Rule, pos: usize) -> Result<(Pair<'a, Rule>, usize), Box<Diagnostic>> {
        let text = &self.lx.blanked[pos..];
        match NvmParser::parse(rule, text) {
            Ok(mut pairs) => match pairs.next() {
                Some(pair) => {
                    let end = pos + pair.as_span().end();
                    Ok((pair, end))
                }
                None => Err(Box::new(Diagnostic::error(
                    codes::E0001,
                    "syntax error",
                    Span::new(pos, pos),
                ))),
            },
            Err(e) => {
                let mut d = errors::syntax_error(self.src, self.lx, rule, pos, e);
                if rule == Rule::item && d.primary.span.start == pos && d.code == codes::E0001 {
                    // At an item's first token the program's `}` would also do.
                    d.message = d.message.replace(
                        "expected a step or declaration,",
                        "expected a step, a declaration or `}`,",
                    );
                }
                Err(Box::new(d))
            }
        }
    }

    fn syntax(&mut self, d: Diagnostic) {
        self.syntax_errors += 1;
        if self.syntax_errors >= MAX_SYNTAX_ERRORS {
            self.stopped = true;
            self.diags.push(d.with_note(format!(
                "stopped after {MAX_SYNTAX_ERRORS} syntax errors; fix these first"
            )));
        } else {
            self.diags.push(d);
        }
    }

    /// Records a failed item's error and finds where to resume.
    fn recover(&mut self, d: Diagnostic, pos: usize) -> After {
        let stop_at_limit = d.code == codes::E0002;
        let failed_at = d.primary.span.start.max(d.primary.span.end);
        self.syntax(d);
        if stop_at_limit || self.stopped {
            self.stopped = true;
            return After::Stop;
        }
        let from = failed_at.max(pos + 1);
        let i = self.resume.partition_point(|&(o, _)| o < from);
        match self.resume.get(i) {
            Some(&(o, true)) => After::Program(o),
            Some(&(o, false)) => After::Item(o),
            None => After::Stop,
        }
    }
}

impl Step {
    fn branch_count(&self) -> usize {
        match &self.kind {
            StepKind::Parallel(p) => p.branches.len(),
            _ => 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tree builder.

struct Builder<'a, 'd> {
    lx: &'a Lexed,
    /// Offset of the text pest ran on.
    base: usize,
    diags: &'d mut Vec<Diagnostic>,
}

/// First-seen spans of clauses, for E0005.
#[derive(Default)]
struct Seen(Vec<(&'static str, Span)>);

impl<'a, 'd> Builder<'a, 'd> {
    fn new(lx: &'a Lexed, base: usize, diags: &'d mut Vec<Diagnostic>) -> Self {
        Builder { lx, base, diags }
    }

    /// The span of a pair, without the trailing whitespace pest includes in a rule that ends
    /// with an optional or a repetition (`a ~ b?` skips whitespace before trying `b`).
    fn span(&self, p: &Pair<'_, Rule>) -> Span {
        let s = p.as_span();
        let text = s
            .as_str()
            .trim_end_matches([' ', '\t', '\r', '\n', '\u{c}', '\u{feff}']);
        Span::new(self.base + s.start(), self.base + s.start() + text.len())
    }

    fn docs(&self, start: usize) -> Vec<String> {
        self.lx.docs_before(start)
    }

    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// A clause seen in a step: E0005 when `key` was already seen.
    fn once(&mut self, seen: &mut Seen, key: &'static str, what: &str, step: &str, span: Span) {
        if let Some(&(_, first)) = seen.0.iter().find(|(k, _)| *k == key) {
            self.error(
                Diagnostic::error(
                    codes::E0005,
                    format!("{what} is given twice in {step}"),
                    span,
                )
                .with_label("given again here")
                .with_secondary(first, "first given here")
                .with_help("each clause may appear at most once in a step; remove one"),
            );
        } else {
            seen.0.push((key, span));
        }
    }

    /// `choose` or `into` in an `llm` step: one output at most.
    fn output_once(&mut self, seen: &mut Seen, key: &'static str, what: &str, span: Span) {
        match seen
            .0
            .iter()
            .find(|(k, _)| matches!(*k, "choose" | "into" | "answer"))
        {
            Some(&(first, first_span)) if first != key => self.error(
                Diagnostic::error(
                    codes::E0005,
                    format!("{what} has both `{first}` and `{key}`"),
                    span,
                )
                .with_label(format!("`{key}` given here"))
                .with_secondary(first_span, format!("`{first}` given here"))
                .with_help(
                    "an `llm` step stores one output: `choose VAR from [...]` for one of a set \
                     of answers, `answer VAR: TYPE` for a typed value, or `into VAR` for free text",
                ),
            ),
            _ => self.once(seen, key, &format!("`{key}`"), what, span),
        }
    }

    fn ident(&mut self, p: &Pair<'_, Rule>) -> Ident {
        let span = self.span(p);
        let name = p.as_str().to_string();
        if name.len() > MAX_IDENT_LEN {
            self.error(
                Diagnostic::error(
                    codes::E0002,
                    format!(
                        "name is {} bytes long; the limit is {MAX_IDENT_LEN}",
                        name.len()
                    ),
                    Span::new(span.start, span.start + MAX_IDENT_LEN),
                )
                .with_label("this name is too long"),
            );
        }
        Ident { name, span }
    }

    fn item(&mut self, pair: Pair<'_, Rule>) -> Option<Item> {
        let inner = pair.into_inner().next()?;
        let span = self.span(&inner);
        Some(match inner.as_rule() {
            Rule::input_block => Item::Input(InputBlock {
                fields: inner
                    .into_inner()
                    .filter(|p| p.as_rule() == Rule::field)
                    .map(|p| self.field(p))
                    .collect(),
                span,
            }),
            Rule::budget_block => Item::Budget(self.budget_block(inner)),
            Rule::replan_decl => {
                let target = self.target(&inner, span);
                let mut on = (ReplanOn::BudgetExceeded, span);
                let mut replans = IntLit { value: 0, span };
                let mut slice = BudgetBlock {
                    entries: Vec::new(),
                    span,
                };
                for c in inner.into_inner() {
                    match c.as_rule() {
                        Rule::replan_on => {
                            let word = if c.as_str() == "stalled" {
                                ReplanOn::Stalled
                            } else {
                                ReplanOn::BudgetExceeded
                            };
                            on = (word, self.span(&c));
                        }
                        Rule::int_lit => replans = self.int_lit(&c),
                        Rule::budget_block => slice = self.budget_block(c),
                        _ => {}
                    }
                }
                Item::Replan(ReplanDecl {
                    on: on.0,
                    on_span: on.1,
                    target,
                    replans,
                    slice,
                    span,
                })
            }
            Rule::tool_decl => Item::Tool(self.tool(inner)),
            Rule::type_decl => {
                let doc = self.docs(span.start);
                let mut name = None;
                let mut fields = Vec::new();
                for c in inner.into_inner() {
                    match c.as_rule() {
                        Rule::name => name = Some(self.ident(&c)),
                        Rule::record_field => fields.push(self.field(c)),
                        _ => {}
                    }
                }
                Item::Type(TypeDecl {
                    doc,
                    name: name.unwrap_or_else(|| placeholder_ident(span)),
                    fields,
                    span,
                })
            }
            Rule::start_decl => {
                let name = inner.into_inner().find(|p| p.as_rule() == Rule::name)?;
                Item::Start(StartDecl {
                    target: self.ident(&name),
                    span,
                })
            }
            _ => Item::Step(self.step(inner)?),
        })
    }

    fn field(&mut self, p: Pair<'_, Rule>) -> Field {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let name = it.next().map(|n| self.ident(&n));
        let ty = it.next().map(|t| {
            if t.as_rule() == Rule::ty_expr {
                let span = self.span(&t);
                Type {
                    kind: ty_expr(t),
                    span,
                }
            } else {
                self.ty(t)
            }
        });
        Field {
            name: name.unwrap_or_else(|| placeholder_ident(span)),
            ty: ty.unwrap_or(Type {
                kind: TypeKind::Json,
                span,
            }),
            span,
        }
    }

    fn ty(&mut self, p: Pair<'_, Rule>) -> Type {
        let span = self.span(&p);
        let mut secret = false;
        let mut kind = TypeKind::Json;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::kw_secret => secret = true,
                Rule::ty_expr => kind = ty_expr(c),
                _ => {}
            }
        }
        if secret {
            kind = TypeKind::Secret(Box::new(kind));
        }
        Type { kind, span }
    }

    fn budget_block(&mut self, p: Pair<'_, Rule>) -> BudgetBlock {
        let span = self.span(&p);
        BudgetBlock {
            entries: p
                .into_inner()
                .filter(|p| p.as_rule() == Rule::budget_entry)
                .map(|p| self.budget_entry(p))
                .collect(),
            span,
        }
    }

    fn budget_entry(&mut self, p: Pair<'_, Rule>) -> BudgetEntry {
        let span = self.span(&p);
        let mut it = p.into_inner();
        let key = it
            .next()
            .map_or_else(|| placeholder_ident(span), |k| self.ident(&k));
        let value = match it.next() {
            Some(v) => {
                let vspan = self.span(&v);
                let text = v.as_str();
                if text.bytes().any(|b| b.is_ascii_alphabetic() || b == b'_') {
                    BudgetValue::Duration(self.duration_text(text, vspan))
                } else {
                    BudgetValue::Int(self.int_text(text, vspan))
                }
            }
            None => BudgetValue::Int(IntLit { value: 0, span }),
        };
        BudgetEntry { key, value, span }
    }

    fn tool(&mut self, p: Pair<'_, Rule>) -> ToolDecl {
        let span = self.span(&p);
        let doc = self.docs(span.start);
        let mut effect = None;
        let mut idempotent = None;
        let mut name = None;
        let mut params = Vec::new();
        let mut ret = None;
        for c in p.into_inner() {
            match c.as_rule() {
                Rule::kw_effect => effect = Some(self.span(&c)),
                Rule::kw_idempotent => idempotent = Some(self.span(&c)),
                Rule::name => name = Some(self.ident(&c)),
                Rule::params => {
                    params = c
                        .into_inner()
                        .filter(|f| f.as_rule() == Rule::field)
                        .map(|f| self.field(f))
                        .collect()
                }
                Rule::ty => ret = Some(self.ty(c)),
                _ => {}
            }
        }
        ToolDecl {
            doc,
            effect,
            name: name.unwrap_or_else(|| placeholder_ident(span)),
            params,
            ret: ret.unwrap_or(Type {
                kind: TypeKind::Json,
                span,
            }),
            idempotent,
            span,
        }
    }

    fn step(&mut self, p: Pair<'_, Rule>) -> Option<Step> {
        let span = self.span(&p);
        let doc = self.docs(span.start);
        let rule = p.as_rule();
        let mut it = p.into_inner();
        it.next(); // the keyword
        let name_pair = it.next()?;
        let name = self.ident(&name_pair);
        let what = |kw: &str| format!("`{kw}` step `{}`", name.name);
        let kind = match rule {
            Rule::llm_step | Rule::branch_llm => StepKind::Llm(self.llm(it, &what("llm"))),
            Rule::call_step | Rule::branch_call => StepKind::Call(self.call(it, &what("call"))),
            Rule::guard_step => StepKind::Guard(self.decision(it.next()?)),
            Rule::branch_step => StepKind::Branch(self.decision(it.next()?)),
            Rule::parallel_step => StepKind::Parallel(self.parallel(it, &what("parallel"))),
            Rule::await_step => StepKind::Await(self.await_step(it, &what("await"))),
            Rule::end_step => {
                let mut success = true;
                let mut message = None;
                for c in it {
                    match c.as_rule() {
                        Rule::kw_failure => success = false,
                        Rule::string => message = Some(self.str_lit(&c)),
                        _ => {}
                    }
                }
                StepKind::End(EndStep { success, message })
            }
            _ => return None,
        };
        Some(Step {
            doc,
            name,
            kind,
            span,
        })
    }

    fn target(&mut self, p: &Pair<'_, Rule>, span: Span) -> Target {
        let name = p
            .clone()
            .into_inner()
            .rev()
            .find(|c| c.as_rule() == Rule::target)
            .and_then(|t| t.into_inner().find(|c| c.as_rule() == Rule::name))
            .or_else(|| p.clone().into_inner().find(|c| c.as_rule() == Rule::name));
        Target {
            name: name.map_or_else(|| placeholder_ident(span), |n| self.ident(&n)),
            span,
        }
    }

    fn retry(&mut self, p: &Pair<'_, Rule>) -> IntLit {
        let span = self.span(p);
        match p
            .clone()
            .into_inner()
            .find(|c| c.as_rule() == Rule::int_lit)
        {
            Some(i) => self.int_lit(&i),
            None => IntLit { value: 0, span },
        }
    }

    fn names(&mut self, p: &Pair<'_, Rule>) -> Vec<Ident> {
        p.clone()
            .into_inner()
            .filter(|c| c.as_rule() == Rule::name)
            .map(|c| self.ident(&c))
            .collect()
    }

    fn llm<'i>(&mut self, mut it: impl Iterator<Item = Pair<'i, Rule>>, what: &str) -> LlmStep {
        let mut s = LlmStep {
            prompt: None,
            system: None,
            model: None,
            max_tokens: None,
            min_confidence: None,
            output: None,
            on_invalid: None,
            retry: None,
            on_error: None,
            after: Vec::new(),
            next: None,
        };
        let mut seen = Seen::default();
        if let Some(body) = it.next() {
            for c in body.into_inner() {
                let span = self.span(&c);
                match c.as_rule() {
                    Rule::prompt => {
                        self.once(&mut seen, "prompt", "`prompt`", what, span);
                        let str_pair = c.into_inner().find(|x| x.as_rule() == Rule::string);
                        s.prompt = str_pair.map(|x| self.template(&x));
                    }
                    Rule::system => {
                        self.once(&mut seen, "system", "`system`", what, span);
                        let str_pair = c.into_inner().find(|x| x.as_rule() == Rule::string);
                        s.system = str_pair.map(|x| self.template(&x));
                    }
                    Rule::model => {
                        self.once(&mut seen, "model", "`model`", what, span);
                        let str_pair = c.into_inner().find(|x| x.as_rule() == Rule::string);
                        s.model = str_pair.map(|x| self.str_lit(&x));
                    }
                    Rule::max_tokens => {
                        self.once(&mut seen, "max_tokens", "`max_tokens`", what, span);
                        let int = c.into_inner().find(|x| x.as_rule() == Rule::int_lit);
                        s.max_tokens = int.map(|x| self.int_lit(&x));
                    }
                    Rule::min_confidence => {
                        self.once(&mut seen, "min_confidence", "`min_confidence`", what, span);
                        if let Some(n) = c.into_inner().find(|x| x.as_rule() == Rule::number) {
                            let nspan = self.span(&n);
                            let value = match self.number(n.as_str(), nspan) {
                                Literal::Int(i) => i as f64,
                                Literal::Float(f) => f,
                                _ => 0.0,
                            };
                            s.min_confidence = Some(NumLit { value, span: nspan });
                        }
                    }
                    Rule::choose => {
                        self.output_once(&mut seen, "choose", what, span);
                        let mut names = self.names(&c).into_iter();
                        if let Some(var) = names.next() {
                            s.output = Some(LlmOutput::Choose {
                                var,
                                choices: names.collect(),
                                span,
                            });
                        }
                    }
                    Rule::into => {
                        self.output_once(&mut seen, "into", what, span);
                        if let Some(var) = self.names(&c).into_iter().next() {
                            s.output = Some(LlmOutput::Into { var, span });
                        }
                    }
                    Rule::answer => {
                        self.output_once(&mut seen, "answer", what, span);
                        let mut var = None;
                        let mut ty = None;
                        for x in c.into_inner() {
                            match x.as_rule() {
                                Rule::name => var = Some(self.ident(&x)),
                                Rule::ty_expr => {
                                    let tspan = self.span(&x);
                                    ty = Some(Box::new(Type {
                                        kind: ty_expr(x),
                                        span: tspan,
                                    }));
                                }
                                _ => {}
                            }
                        }
                        if let (Some(var), Some(ty)) = (var, ty) {
                            s.output = Some(LlmOutput::Answer { var, ty, span });
                        }
                    }
                    Rule::on_invalid => {
                        self.once(&mut seen, "on_invalid", "`on invalid`", what, span);
                        s.on_invalid = Some(self.target(&c, span));
                    }
                    Rule::on_error => {
                        self.once(&mut seen, "on_error", "`on error`", what, span);
                        s.on_error = Some(self.target(&c, span));
                    }
                    Rule::retry => {
                        self.once(&mut seen, "retry", "`retry`", what, span);
                        s.retry = Some(self.retry(&c));
                    }
                    Rule::after => {
                        self.once(&mut seen, "after", "`after`", what, span);
                        s.after = self.names(&c);
                    }
                    _ => {}
                }
            }
        }
        if let Some(t) = it.next() {
            let span = self.span(&t);
            s.next = Some(self.target(&t, span));
        }
        s
    }

    fn call<'i>(&mut self, it: impl Iterator<Item = Pair<'i, Rule>>, what: &str) -> CallStep {
        let mut s = CallStep {
            tool: placeholder_ident(Span::default()),
            args: Vec::new(),
            args_span: Span::default(),
            into: None,
            retry: None,
            on_error: None,
            after: Vec::new(),
            next: None,
        };
        let mut seen = Seen::default();
        for c in it {
            let span = self.span(&c);
            match c.as_rule() {
                Rule::name => s.tool = self.ident(&c),
                Rule::args => {
                    s.args_span = span;
                    for a in c.into_inner().filter(|a| a.as_rule() == Rule::arg) {
                        let aspan = self.span(&a);
                        let mut ai = a.into_inner();
                        let name = ai.next().map(|n| self.ident(&n));
                        let mut trust = None;
                        let value = ai.next().and_then(|e| {
                            if e.as_rule() != Rule::trusted_arg {
                                return Some(self.expr(e));
                            }
                            let tspan = self.span(&e);
                            let mut value = None;
                            let mut reason = None;
                            for t in e.into_inner() {
                                match t.as_rule() {
                                    Rule::expr => value = Some(self.expr(t)),
                                    Rule::string => reason = Some(self.str_lit(&t)),
                                    _ => {}
                                }
                            }
                            trust = Some(Trust {
                                reason,
                                span: tspan,
                            });
                            value
                        });
                        s.args.push(Arg {
                            name: name.unwrap_or_else(|| placeholder_ident(aspan)),
                            value: value.unwrap_or_else(|| placeholder_expr(aspan)),
                            trust,
                            span: aspan,
                        });
                    }
                }
                Rule::into => {
                    self.once(&mut seen, "into", "`into`", what, span);
                    s.into = self.names(&c).into_iter().next();
                }
                Rule::retry => {
                    self.once(&mut seen, "retry", "`retry`", what, span);
                    s.retry = Some(self.retry(&c));
                }
                Rule::on_error => {
                    self.once(&mut seen, "on_error", "`on error`", what, span);
                    s.on_error = Some(self.target(&c, span));
                }
                Rule::after => {
                    self.once(&mut seen, "after", "`after`", what, span);
                    s.after = self.names(&c);
                }
                Rule::target => s.next = Some(self.target(&c, span)),
                _ => {}
            }
        }
        s
    }

    fn decision(&mut self, body: Pair<'_, Rule>) -> Decision {
        let body_span = self.span(&body);
        let mut d = Decision {
            arms: Vec::new(),
            otherwise: Vec::new(),
            body_span,
        };
        for arm in body.into_inner() {
            let span = self.span(&arm);
            match arm.as_rule() {
                Rule::when_arm => {
                    let mut cond = None;
                    let mut target = None;
                    for c in arm.into_inner() {
                        match c.as_rule() {
                            Rule::expr => cond = Some(self.expr(c)),
                            Rule::target => {
                                let tspan = self.span(&c);
                                target = Some(self.target(&c, tspan));
                            }
                            _ => {}
                        }
                    }
                    d.arms.push(Arm {
                        cond: cond.unwrap_or_else(|| placeholder_expr(span)),
                        target: target.unwrap_or_else(|| Target {
                            name: placeholder_ident(span),
                            span,
                        }),
                        span,
                    });
                }
                Rule::otherwise_arm => {
                    let t = self.target(&arm, span);
                    d.otherwise.push(t);
                }
                _ => {}
            }
        }
        d
    }

    fn parallel<'i>(
        &mut self,
        it: impl Iterator<Item = Pair<'i, Rule>>,
        what: &str,
    ) -> ParallelStep {
        let mut s = ParallelStep {
            max_concurrency: None,
            retry: None,
            branches: Vec::new(),
            on_error: None,
            next: None,
        };
        let mut seen = Seen::default();
        for c in it {
            let span = self.span(&c);
            match c.as_rule() {
                Rule::max_concurrency => {
                    self.once(
                        &mut seen,
                        "max_concurrency",
                        "`max_concurrency`",
                        what,
                        span,
                    );
                    let int = c.into_inner().find(|x| x.as_rule() == Rule::int_lit);
                    s.max_concurrency = int.map(|x| self.int_lit(&x));
                }
                Rule::retry => {
                    self.once(&mut seen, "retry", "`retry`", what, span);
                    s.retry = Some(self.retry(&c));
                }
                Rule::branch_call | Rule::branch_llm => {
                    if let Some(step) = self.step(c) {
                        s.branches.push(step);
                    }
                }
                Rule::on_error => s.on_error = Some(self.target(&c, span)),
                Rule::target => s.next = Some(self.target(&c, span)),
                _ => {}
            }
        }
        s
    }

    fn await_step<'i>(
        &mut self,
        it: impl Iterator<Item = Pair<'i, Rule>>,
        what: &str,
    ) -> AwaitStep {
        let mut s = AwaitStep {
            event: placeholder_ident(Span::default()),
            into: None,
            ty: None,
            timeout: None,
            next: None,
        };
        let mut seen = Seen::default();
        for c in it {
            let span = self.span(&c);
            match c.as_rule() {
                Rule::name => s.event = self.ident(&c),
                Rule::await_into => {
                    self.once(&mut seen, "into", "`into`", what, span);
                    for x in c.into_inner() {
                        match x.as_rule() {
                            Rule::name => s.into = Some(self.ident(&x)),
                            Rule::ty => s.ty = Some(self.ty(x)),
                            _ => {}
                        }
                    }
                }
                Rule::timeout => {
                    self.once(&mut seen, "timeout", "`timeout`", what, span);
                    let dur = c
                        .clone()
                        .into_inner()
                        .find(|x| x.as_rule() == Rule::duration);
                    let dur = match dur {
                        Some(d) => {
                            let dspan = self.span(&d);
                            self.duration_text(d.as_str(), dspan)
                        }
                        None => DurationLit { millis: 0, span },
                    };
                    let t = self.target(&c, span);
                    s.timeout = Some((dur, t));
                }
                Rule::target => s.next = Some(self.target(&c, span)),
                _ => {}
            }
        }
        s
    }

    // ---- literals --------------------------------------------------------------------------

    fn int_lit(&mut self, p: &Pair<'_, Rule>) -> IntLit {
        let span = self.span(p);
        self.int_text(p.as_str(), span)
    }

    fn int_text(&mut self, text: &str, span: Span) -> IntLit {
        let digits = text.strip_prefix('-').unwrap_or(text);
        let value = if !digits.bytes().all(|b| b.is_ascii_digit()) {
            let bad = span.start + text.len()
                - text
                    .trim_start_matches(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
                    .len();
            self.error(
                Diagnostic::error(codes::E0006, format!("invalid integer `{text}`"), span)
                    .with_label("an integer is only digits")
                    .with_secondary(Span::new(bad, span.end), "unexpected"),
            );
            0
        } else {
            match text.parse::<i64>() {
                Ok(v) => v,
                Err(_) => {
                    self.error(
                        Diagnostic::error(
                            codes::E0006,
                            format!("integer `{text}` does not fit in 64 bits"),
                            span,
                        )
                        .with_label("out of range")
                        .with_note(format!(
                            "integers range from {} to {}",
                            i64::MIN,
                            i64::MAX
                        )),
                    );
                    0
                }
            }
        };
        IntLit { value, span }
    }

    fn duration_text(&mut self, text: &str, span: Span) -> DurationLit {
        let neg = text.starts_with('-');
        let body = text.trim_start_matches('-');
        let split = body
            .bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(body.len());
        let (digits, unit) = body.split_at(split);
        let unit_start = span.end - unit.len();
        let factor: Option<u64> = match unit {
            "ms" => Some(1),
            "s" => Some(1_000),
            "m" => Some(60_000),
            "h" => Some(3_600_000),
            "d" => Some(86_400_000),
            _ => None,
        };
        let bad = |msg: String, at: Span, label: &str| {
            Diagnostic::error(codes::E0006, msg, at)
                .with_label(label.to_string())
                .with_help(
                    "a duration is an integer and a unit: `500ms`, `30s`, `5m`, `24h` or `2d`",
                )
        };
        let Some(factor) = factor else {
            let d = if unit.is_empty() {
                bad(format!("duration `{text}` has no unit"), span, "add a unit")
            } else {
                bad(
                    format!("unknown duration unit `{unit}`"),
                    Span::new(unit_start, span.end),
                    "not one of `ms`, `s`, `m`, `h`, `d`",
                )
            };
            self.error(d);
            return DurationLit { millis: 0, span };
        };
        if neg {
            self.error(bad(
                format!("duration `{text}` is negative"),
                span,
                "durations cannot be negative",
            ));
            return DurationLit { millis: 0, span };
        }
        match digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(factor))
        {
            Some(millis) => DurationLit { millis, span },
            None => {
                self.error(bad(
                    format!("duration `{text}` is too long"),
                    span,
                    "does not fit in 64 bits of milliseconds",
                ));
                DurationLit { millis: 0, span }
            }
        }
    }

    fn str_lit(&mut self, p: &Pair<'_, Rule>) -> StrLit {
        let span = self.span(p);
        let value = self.decode(p.as_str(), span.start, false).0;
        StrLit { value, span }
    }

    fn template(&mut self, p: &Pair<'_, Rule>) -> Template {
        let span = self.span(p);
        let parts = self.decode(p.as_str(), span.start, true).1;
        Template { parts, span }
    }

    /// Decodes a string literal (quotes included) starting at `abs`. With `holes`, `{path}`,
    /// `{{` and `}}` are template syntax. Returns the decoded text and the template parts.
    fn decode(&mut self, raw: &str, abs: usize, holes: bool) -> (String, Vec<TemplatePart>) {
        let inner = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        let base = abs + 1;
        let mut text = String::new();
        let mut all = String::new();
        let mut parts = Vec::new();
        let b = inner.as_bytes();
        let mut i = 0;
        while i < inner.len() {
            let c = b[i];
            if c == b'\\' {
                let (decoded, len) = self.escape(&inner[i..], base + i);
                if let Some(ch) = decoded {
                    text.push(ch);
                    all.push(ch);
                }
                i += len;
            } else if holes && c == b'{' && b.get(i + 1) == Some(&b'{') {
                text.push('{');
                all.push('{');
                i += 2;
            } else if holes && c == b'}' && b.get(i + 1) == Some(&b'}') {
                text.push('}');
                all.push('}');
                i += 2;
            } else if holes && c == b'{' {
                let close = inner[i + 1..]
                    .find(['}', '{', '"', '\n'])
                    .map(|k| i + 1 + k);
                match close {
                    Some(k) if b[k] == b'}' => {
                        if let Some(path) =
                            self.hole(&inner[i + 1..k], base + i + 1, base + i, base + k + 1)
                        {
                            if !text.is_empty() {
                                parts.push(TemplatePart::Text(std::mem::take(&mut text)));
                            }
                            all.push_str(&inner[i..=k]);
                            parts.push(TemplatePart::Hole(path));
                        }
                        i = k + 1;
                    }
                    _ => {
                        self.error(
                            Diagnostic::error(
                                codes::E0006,
                                "unclosed `{` in template",
                                Span::new(base + i, base + i + 1),
                            )
                            .with_label("this `{` starts a hole that has no `}`")
                            .with_help("write `{name}` for a value, or `{{` for a literal `{`"),
                        );
                        i += 1;
                    }
                }
            } else if holes && c == b'}' {
                self.error(
                    Diagnostic::error(
                        codes::E0006,
                        "unmatched `}` in template",
                        Span::new(base + i, base + i + 1),
                    )
                    .with_label("no `{` opens this")
                    .with_help("write `}}` for a literal `}`"),
                );
                i += 1;
            } else {
                let ch = inner[i..].chars().next().unwrap_or('\u{FFFD}');
                text.push(ch);
                all.push(ch);
                i += ch.len_utf8();
            }
        }
        if !text.is_empty() {
            parts.push(TemplatePart::Text(text));
        }
        (all, parts)
    }

    /// One escape sequence at the start of `s` (which starts with `\`), at offset `abs`.
    /// Returns the character (None after an error) and the bytes consumed.
    fn escape(&mut self, s: &str, abs: usize) -> (Option<char>, usize) {
        let mut chars = s.chars();
        chars.next(); // the backslash
        let Some(c) = chars.next() else {
            return (None, 1);
        };
        let simple = match c {
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            '\\' => Some('\\'),
            '"' => Some('"'),
            '0' => Some('\0'),
            _ => None,
        };
        if let Some(ch) = simple {
            return (Some(ch), 2);
        }
        let help = "the escapes are `\\n`, `\\t`, `\\r`, `\\\\`, `\\\"`, `\\0` and `\\u{XXXX}`";
        if c == 'u' {
            let rest = &s[2..];
            let close = rest.find('}');
            if let (true, Some(k)) = (rest.starts_with('{'), close) {
                let hex = &rest[1..k];
                let len = 2 + k + 1;
                let ch = (1..=6)
                    .contains(&hex.len())
                    .then(|| u32::from_str_radix(hex, 16).ok())
                    .flatten()
                    .and_then(char::from_u32);
                if ch.is_some() {
                    return (ch, len);
                }
                self.error(
                    Diagnostic::error(
                        codes::E0006,
                        format!("invalid unicode escape `\\u{{{hex}}}`"),
                        Span::new(abs, abs + len),
                    )
                    .with_label("not a Unicode scalar value in 1 to 6 hex digits")
                    .with_help(help),
                );
                return (None, len);
            }
            self.error(
                Diagnostic::error(
                    codes::E0006,
                    "invalid unicode escape",
                    Span::new(abs, abs + 2),
                )
                .with_label("expected `\\u{XXXX}`")
                .with_help(help),
            );
            return (None, 2);
        }
        let len = 1 + c.len_utf8();
        self.error(
            Diagnostic::error(
                codes::E0006,
                format!("unknown escape `\\{}`", c.escape_debug()),
                Span::new(abs, abs + len),
            )
            .with_label("unknown escape")
            .with_help(help),
        );
        (None, len)
    }

    /// The path of a template hole; `inner` is the text between the braces at `abs`.
    fn hole(&mut self, inner: &str, abs: usize, open: usize, close: usize) -> Option<Path> {
        let lead = inner.len() - inner.trim_start_matches([' ', '\t']).len();
        let trimmed = inner.trim_matches([' ', '\t']);
        let start = abs + lead;
        let bad = |msg: &str, label: &str| {
            Diagnostic::error(codes::E0006, msg.to_string(), Span::new(open, close))
                .with_label(label.to_string())
                .with_help(
                    "a hole is `{name}` or `{name.field}`; write `{{` and `}}` for literal braces",
                )
        };
        if trimmed.is_empty() {
            self.error(bad("empty template hole", "nothing between the braces"));
            return None;
        }
        let mut segments = Vec::new();
        let mut off = start;
        for seg in trimmed.split('.') {
            let ok = seg
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                self.error(bad(
                    &format!("invalid template hole `{{{inner}}}`"),
                    "expected a name or a dotted path",
                ));
                return None;
            }
            let span = Span::new(off, off + seg.len());
            if seg.len() > MAX_IDENT_LEN {
                self.error(
                    Diagnostic::error(
                        codes::E0002,
                        format!(
                            "name is {} bytes long; the limit is {MAX_IDENT_LEN}",
                            seg.len()
                        ),
                        span,
                    )
                    .with_label("this name is too long"),
                );
            }
            segments.push(Ident {
                name: seg.to_string(),
                span,
            });
            off += seg.len() + 1;
        }
        if is_reserved(&segments[0].name) {
            self.error(
                Diagnostic::error(
                    codes::E0007,
                    format!("`{}` is a keyword and cannot be a name", segments[0].name),
                    segments[0].span,
                )
                .with_label("reserved keyword")
                .with_help(keyword_help(&segments[0].name)),
            );
        }
        Some(Path {
            segments,
            span: Span::new(start, start + trimmed.len()),
        })
    }

    // ---- expressions -----------------------------------------------------------------------

    /// Builds an expression; errors (depth, literals) are recorded and a placeholder returned.
    fn expr(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span = self.span(&p);
        match self.or_expr(p, 0) {
            Ok((e, _)) => e,
            Err(d) => {
                self.error(*d);
                placeholder_expr(span)
            }
        }
    }

    fn too_long(&self, at: Span) -> Box<Diagnostic> {
        Box::new(
            Diagnostic::error(codes::E0002, "expression too long", at)
                .with_label(format!(
                    "the expression is deeper than {MAX_EXPR_DEPTH} levels here"
                ))
                .with_help("split the condition over several `guard` or `branch` steps"),
        )
    }

    fn too_deep(&self, at: Span) -> Box<Diagnostic> {
        Box::new(
            Diagnostic::error(
                codes::E0002,
                format!("nested deeper than {MAX_NESTING} levels"),
                at,
            )
            .with_label(format!("this is level {}", MAX_NESTING + 1))
            .with_help("split the condition into several steps, or drop redundant parentheses"),
        )
    }

    /// Folds `x (op x)*` left-deep. `sub` builds an operand.
    fn fold(
        &mut self,
        p: Pair<'_, Rule>,
        nest: usize,
        sub: fn(&mut Self, Pair<'_, Rule>, usize) -> Built,
    ) -> Built {
        let mut it = p.into_inner();
        let first = it.next().ok_or_else(|| self.too_long(Span::default()))?;
        let (mut lhs, mut depth) = sub(self, first, nest)?;
        while let Some(op) = it.next() {
            let op_span = self.span(&op);
            let Some(rhs) = it.next() else { break };
            let (rhs, rd) = sub(self, rhs, nest)?;
            depth = depth.max(rd) + 1;
            if depth > MAX_EXPR_DEPTH {
                return Err(self.too_long(op_span));
            }
            let op = binop(op.as_str());
            let span = lhs.span.to(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary {
                    op,
                    op_span,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            };
        }
        Ok((lhs, depth))
    }

    fn or_expr(&mut self, p: Pair<'_, Rule>, nest: usize) -> Built {
        self.fold(p, nest, Self::and_expr)
    }

    fn and_expr(&mut self, p: Pair<'_, Rule>, nest: usize) -> Built {
        self.fold(p, nest, Self::not_expr)
    }

    fn not_expr(&mut self, p: Pair<'_, Rule>, nest: usize) -> Built {
        let mut nots = Vec::new();
        let mut inner = None;
        for c in p.into_inner() {
            if c.as_rule() == Rule::kw_not {
                let s = self.span(&c);
                if nest + nots.len() + 1 > MAX_NESTING {
                    return Err(self.too_deep(s));
                }
                nots.push(s);
            } else {
                inner = Some(c);
            }
        }
        let inner = inner.ok_or_else(|| self.too_long(Span::default()))?;
        let (mut e, mut depth) = self.cmp_expr(inner, nest + nots.len())?;
        for s in nots.into_iter().rev() {
            depth += 1;
            if depth > MAX_EXPR_DEPTH {
                return Err(self.too_long(s));
            }
            let span = s.to(e.span);
            e = Expr {
                kind: ExprKind::Not(Box::new(e)),
                span,
            };
        }
        Ok((e, depth))
    }

    fn cmp_expr(&mut self, p: Pair<'_, Rule>, nest: usize) -> Built {
        self.fold(p, nest, Self::sum_expr)
    }

    fn sum_expr(&mut self, p: Pair<'_, Rule>, nest: usize) -> Built {
        self.fold(p, nest, Self::atom)
    }

    fn atom(&mut self, p: Pair<'_, Rule>, nest: usize) -> Built {
        let span = self.span(&p);
        let rule = p.as_rule();
        let nested = |b: &Self| {
            if nest + 1 > MAX_NESTING {
                Err(b.too_deep(Span::new(span.start, span.start + 1)))
            } else {
                Ok(())
            }
        };
        let (kind, depth) = match rule {
            Rule::paren => {
                nested(self)?;
                let inner = p.into_inner().next().ok_or_else(|| self.too_long(span))?;
                let (e, d) = self.or_expr(inner, nest + 1)?;
                (ExprKind::Paren(Box::new(e)), d + 1)
            }
            Rule::builtin_call => {
                nested(self)?;
                let mut it = p.into_inner();
                let f = it.next().ok_or_else(|| self.too_long(span))?;
                let func_span = self.span(&f);
                let func = match f.as_str() {
                    "lower" => Builtin::Lower,
                    "upper" => Builtin::Upper,
                    "trim" => Builtin::Trim,
                    _ => Builtin::Len,
                };
                let arg = it.next().ok_or_else(|| self.too_long(span))?;
                let (e, d) = self.or_expr(arg, nest + 1)?;
                (
                    ExprKind::Builtin {
                        func,
                        func_span,
                        arg: Box::new(e),
                    },
                    d + 1,
                )
            }
            Rule::list => {
                nested(self)?;
                let items = p.into_inner().map(|c| self.literal(&c)).collect::<Vec<_>>();
                (ExprKind::List(items), 2)
            }
            Rule::path => (ExprKind::Path(self.path(p)), 1),
            _ => return Ok((self.literal(&p), 1)),
        };
        Ok((Expr { kind, span }, depth))
    }

    fn literal(&mut self, p: &Pair<'_, Rule>) -> Expr {
        let span = self.span(p);
        let lit = match p.as_rule() {
            Rule::kw_true => Literal::Bool(true),
            Rule::kw_false => Literal::Bool(false),
            Rule::kw_null => Literal::Null,
            Rule::string => Literal::Str(self.decode(p.as_str(), span.start, false).0),
            _ => self.number(p.as_str(), span),
        };
        Expr {
            kind: ExprKind::Lit(lit),
            span,
        }
    }

    fn number(&mut self, text: &str, span: Span) -> Literal {
        let digits = text.strip_prefix('-').unwrap_or(text);
        if digits.bytes().all(|b| b.is_ascii_digit()) {
            return Literal::Int(self.int_text(text, span).value);
        }
        let well_formed = text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
        match text.parse::<f64>() {
            Ok(f) if well_formed && f.is_finite() => Literal::Float(f),
            Ok(_) if well_formed => {
                self.error(
                    Diagnostic::error(
                        codes::E0006,
                        format!("float `{text}` is out of range"),
                        span,
                    )
                    .with_label("too large for a 64-bit float"),
                );
                Literal::Float(0.0)
            }
            _ => {
                self.error(
                    Diagnostic::error(codes::E0006, format!("invalid number `{text}`"), span)
                        .with_label("not a number")
                        .with_help("numbers look like `42`, `-7`, `0.5` or `1e3`; durations are not values in conditions"),
                );
                Literal::Int(0)
            }
        }
    }

    fn path(&mut self, p: Pair<'_, Rule>) -> Path {
        let span = self.span(&p);
        let segments = p.into_inner().map(|c| self.ident(&c)).collect();
        Path { segments, span }
    }
}

/// An expression and its depth, or the limit it hit.
type Built = Result<(Expr, usize), Box<Diagnostic>>;

fn binop(op: &str) -> BinOp {
    match op {
        "or" => BinOp::Or,
        "and" => BinOp::And,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<" => BinOp::Lt,
        "<=" => BinOp::Le,
        ">" => BinOp::Gt,
        ">=" => BinOp::Ge,
        "contains" => BinOp::Contains,
        "starts_with" => BinOp::StartsWith,
        "ends_with" => BinOp::EndsWith,
        "in" => BinOp::In,
        "+" => BinOp::Add,
        _ => BinOp::Sub,
    }
}

fn placeholder_ident(span: Span) -> Ident {
    Ident {
        name: String::new(),
        span,
    }
}

fn placeholder_expr(span: Span) -> Expr {
    Expr {
        kind: ExprKind::Lit(Literal::Null),
        span,
    }
}

/// The kind of a `ty_expr`: a base type, `list<T>` or a record type's name, optionally `?`.
/// (Nesting is bounded by the lexical pre-pass, like every other recursion.)
fn ty_expr(p: Pair<'_, Rule>) -> TypeKind {
    let mut kind = TypeKind::Json;
    let mut optional = false;
    for c in p.into_inner() {
        match c.as_rule() {
            Rule::base_ty => {
                kind = match c.as_str() {
                    "string" => TypeKind::String,
                    "int" => TypeKind::Int,
                    "float" => TypeKind::Float,
                    "bool" => TypeKind::Bool,
                    _ => TypeKind::Json,
                }
            }
            Rule::list_ty => {
                let inner = c.into_inner().find(|x| x.as_rule() == Rule::ty_expr);
                kind = TypeKind::List(Box::new(inner.map_or(TypeKind::Json, ty_expr)));
            }
            Rule::type_ref => kind = TypeKind::Named(c.as_str().trim().to_string()),
            Rule::optional => optional = true,
            _ => {}
        }
    }
    if optional {
        TypeKind::Optional(Box::new(kind))
    } else {
        kind
    }
}
