//! The canonical text of a program: one spelling for every program, whatever its layout,
//! comments and clause order.
//!
//! `PROGRAM_HASH` is blake3 over this text (plus the [`SEMANTICS_VERSION`]), so reformatting a
//! file, editing a comment or upgrading nanovm without changing what generated code does leaves
//! the hash alone, while any change of behaviour changes it. The printer
//! is also the inverse of the parser (tested: parse -> print -> parse gives the same tree up to
//! spans), which makes it a useful oracle for fuzzing.

use std::fmt::Write as _;

use crate::syntax::ast::*;

/// Prints a program canonically. With `docs`, doc comments are kept (for display); the hash is
/// computed without them, since they do not change what the program does.
pub fn print_program(p: &Program, docs: bool) -> String {
    let mut w = Printer {
        out: String::new(),
        docs,
    };
    w.program(p);
    w.out
}

/// The version of what generated code *does*, hashed into every `PROGRAM_HASH` in place of
/// the compiler's release number: a run recorded under one semantics version replays (and
/// resumes) only under a build with the same one, and a nanovm release that leaves it alone
/// keeps every stored run resumable.
///
/// Bump it (and add the new value to the runtime's `SEMANTICS_VERSIONS` once it executes it)
/// only when the code generated for an unchanged program behaves differently, that is when
/// any of these changes:
///
/// * the events a program's steps produce, their order or their fields (what replay compares);
/// * the successor a transition chooses for an outcome, how conditions, templates and
///   arithmetic evaluate, and which faults they raise;
/// * how inputs are recorded and restored ([`Program`]'s inputs as `Datum`s), effect ids and
///   idempotency keys (the arguments a tool call records), the admissible answers of `choose`;
/// * the budgets and retries a program declares as they reach the runtime (`ProgramInfo`).
///
/// Not a reason to bump it: diagnostics, new checks that only reject programs, new syntax that
/// old programs do not use, the generated code's Rust shape (names, docs, lints), Mermaid
/// output, the build script's files. Its value was the compiler version when the hash still
/// covered that ("0.1.0"), so every hash and trace recorded before it exists stays valid.
pub const SEMANTICS_VERSION: &str = "0.1.0";

/// blake3 of the canonical text (without docs) and the [`SEMANTICS_VERSION`]:
/// `blake3("nanovm-dsl " + SEMANTICS_VERSION + "\n" + canonical text)`.
pub fn program_hash(p: &Program) -> [u8; 32] {
    program_hash_for(p, SEMANTICS_VERSION)
}

/// [`program_hash`] under another semantics version (what another compiler would pin).
pub fn program_hash_for(p: &Program, semantics: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"nanovm-dsl ");
    h.update(semantics.as_bytes());
    h.update(b"\n");
    h.update(print_program(p, false).as_bytes());
    *h.finalize().as_bytes()
}

struct Printer {
    out: String,
    docs: bool,
}

impl Printer {
    fn doc(&mut self, doc: &[String], indent: &str) {
        if self.docs {
            for line in doc {
                let _ = writeln!(self.out, "{indent}/// {line}");
            }
        }
    }

    fn program(&mut self, p: &Program) {
        self.doc(&p.doc, "");
        let _ = writeln!(self.out, "program {} {{", p.name);
        for item in &p.items {
            match item {
                Item::Input(b) => {
                    self.out.push_str("    input {\n");
                    for f in &b.fields {
                        let _ = writeln!(self.out, "        {}: {}", f.name, f.ty.kind);
                    }
                    self.out.push_str("    }\n");
                }
                Item::Budget(b) => {
                    let _ = writeln!(self.out, "    budget {{ {} }}", budget_entries(b));
                }
                Item::Tool(t) => {
                    self.doc(&t.doc, "    ");
                    let params: Vec<String> = t
                        .params
                        .iter()
                        .map(|p| format!("{}: {}", p.name, p.ty.kind))
                        .collect();
                    let _ = writeln!(
                        self.out,
                        "    {}tool {}({}) -> {}{}",
                        if t.effect.is_some() { "effect " } else { "" },
                        t.name,
                        params.join(", "),
                        t.ret.kind,
                        if t.idempotent.is_some() {
                            " idempotent"
                        } else {
                            ""
                        }
                    );
                }
                Item::Start(s) => {
                    let _ = writeln!(self.out, "    start {}", s.target.name);
                }
                Item::Replan(r) => {
                    let _ = writeln!(
                        self.out,
                        "    on {} -> {} replans {} budget {{ {} }}",
                        r.on.as_str(),
                        r.target.name.name,
                        r.replans.value,
                        budget_entries(&r.slice)
                    );
                }
                Item::Step(s) => self.step(s, "    "),
                // Only programs that declare types print this, so every other program keeps
                // its canonical text (and its hash).
                Item::Type(t) => {
                    self.doc(&t.doc, "    ");
                    let _ = writeln!(self.out, "    type {} {{", t.name);
                    for f in &t.fields {
                        let _ = writeln!(self.out, "        {}: {}", f.name, f.ty.kind);
                    }
                    self.out.push_str("    }\n");
                }
            }
        }
        self.out.push_str("}\n");
    }

    fn step(&mut self, s: &Step, indent: &str) {
        self.doc(&s.doc, indent);
        let o = &mut self.out;
        match &s.kind {
            StepKind::Llm(l) => {
                let _ = writeln!(o, "{indent}llm {} {{", s.name);
                let inner = format!("{indent}    ");
                if let Some(t) = &l.system {
                    let _ = writeln!(o, "{inner}system: {}", template(t));
                }
                if let Some(t) = &l.prompt {
                    let _ = writeln!(o, "{inner}prompt: {}", template(t));
                }
                if let Some(m) = &l.model {
                    let _ = writeln!(o, "{inner}model: {}", string(&m.value));
                }
                if let Some(m) = &l.max_tokens {
                    let _ = writeln!(o, "{inner}max_tokens: {}", m.value);
                }
                if let Some(m) = &l.min_confidence {
                    let _ = writeln!(o, "{inner}min_confidence {:?}", m.value);
                }
                match &l.output {
                    Some(LlmOutput::Choose { var, choices, .. }) => {
                        let cs: Vec<&str> = choices.iter().map(|c| c.name.as_str()).collect();
                        let _ = writeln!(o, "{inner}choose {var} from [{}]", cs.join(", "));
                    }
                    Some(LlmOutput::Into { var, .. }) => {
                        let _ = writeln!(o, "{inner}into {var}");
                    }
                    Some(LlmOutput::Answer { var, ty, .. }) => {
                        let _ = writeln!(o, "{inner}answer {var}: {}", ty.kind);
                    }
                    None => {}
                }
                if let Some(t) = &l.on_invalid {
                    let _ = writeln!(o, "{inner}on invalid -> {}", t.name);
                }
                if let Some(r) = &l.retry {
                    let _ = writeln!(o, "{inner}retry {}", r.value);
                }
                if let Some(t) = &l.on_error {
                    let _ = writeln!(o, "{inner}on error -> {}", t.name);
                }
                if !l.after.is_empty() {
                    let _ = writeln!(o, "{inner}after {}", names(&l.after));
                }
                let _ = write!(o, "{indent}}}");
                if let Some(t) = &l.next {
                    let _ = write!(o, " -> {}", t.name);
                }
                o.push('\n');
            }
            StepKind::Call(c) => {
                let args: Vec<String> = c
                    .args
                    .iter()
                    .map(|a| match &a.trust {
                        // The marker is part of what the program says, so it is hashed.
                        Some(t) => match &t.reason {
                            Some(r) => format!(
                                "{}: trusted({}, {})",
                                a.name,
                                expr(&a.value),
                                string(&r.value)
                            ),
                            None => format!("{}: trusted({})", a.name, expr(&a.value)),
                        },
                        None => format!("{}: {}", a.name, expr(&a.value)),
                    })
                    .collect();
                let _ = write!(
                    o,
                    "{indent}call {} = {}({})",
                    s.name,
                    c.tool,
                    args.join(", ")
                );
                if let Some(v) = &c.into {
                    let _ = write!(o, " into {v}");
                }
                if let Some(r) = &c.retry {
                    let _ = write!(o, " retry {}", r.value);
                }
                if let Some(t) = &c.on_error {
                    let _ = write!(o, " on error -> {}", t.name);
                }
                if !c.after.is_empty() {
                    let _ = write!(o, " after {}", names(&c.after));
                }
                if let Some(t) = &c.next {
                    let _ = write!(o, " -> {}", t.name);
                }
                o.push('\n');
            }
            StepKind::Guard(d) | StepKind::Branch(d) => {
                let _ = writeln!(o, "{indent}{} {} {{", s.kind.keyword(), s.name);
                let mut arms: Vec<(usize, String)> = d
                    .arms
                    .iter()
                    .map(|a| {
                        (
                            a.span.start,
                            format!("when {} -> {}", expr(&a.cond), a.target.name),
                        )
                    })
                    .collect();
                arms.extend(
                    d.otherwise
                        .iter()
                        .map(|t| (t.span.start, format!("otherwise -> {}", t.name))),
                );
                arms.sort_by_key(|(at, _)| *at);
                for (_, arm) in arms {
                    let _ = writeln!(o, "{indent}    {arm}");
                }
                let _ = writeln!(o, "{indent}}}");
            }
            StepKind::Parallel(p) => {
                let _ = write!(o, "{indent}parallel {}", s.name);
                if let Some(m) = &p.max_concurrency {
                    let _ = write!(o, " max_concurrency {}", m.value);
                }
                if let Some(r) = &p.retry {
                    let _ = write!(o, " retry {}", r.value);
                }
                o.push_str(" {\n");
                let inner = format!("{indent}    ");
                for b in &p.branches {
                    self.step(b, &inner);
                }
                let o = &mut self.out;
                let _ = write!(o, "{indent}}}");
                if let Some(t) = &p.on_error {
                    let _ = write!(o, " on error -> {}", t.name);
                }
                if let Some(t) = &p.next {
                    let _ = write!(o, " -> {}", t.name);
                }
                o.push('\n');
            }
            StepKind::Await(a) => {
                let _ = write!(o, "{indent}await {} = {}", s.name, a.event);
                if let Some(v) = &a.into {
                    let _ = write!(o, " into {v}");
                    if let Some(t) = &a.ty {
                        let _ = write!(o, ": {}", t.kind);
                    }
                }
                if let Some((d, t)) = &a.timeout {
                    let _ = write!(o, " timeout {} -> {}", duration(d.millis), t.name);
                }
                if let Some(t) = &a.next {
                    let _ = write!(o, " -> {}", t.name);
                }
                o.push('\n');
            }
            StepKind::End(e) => {
                if e.success {
                    let _ = writeln!(o, "{indent}end {}: success", s.name);
                } else {
                    let msg = e
                        .message
                        .as_ref()
                        .map_or(String::new(), |m| format!(" {}", string(&m.value)));
                    let _ = writeln!(o, "{indent}end {}: failure{msg}", s.name);
                }
            }
        }
    }
}

fn names(ids: &[Ident]) -> String {
    ids.iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A duration with the largest unit that divides it exactly.
fn duration(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for (size, unit) in UNITS {
        if ms != 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// A string literal with the language's escapes.
pub(crate) fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        escape(c, &mut out);
    }
    out.push('"');
    out
}

fn escape(c: char, out: &mut String) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\0' => out.push_str("\\0"),
        c if c.is_control() => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

fn template(t: &Template) -> String {
    let mut out = String::from("\"");
    for part in &t.parts {
        match part {
            TemplatePart::Text(s) => {
                for c in s.chars() {
                    match c {
                        '{' => out.push_str("{{"),
                        '}' => out.push_str("}}"),
                        c => escape(c, &mut out),
                    }
                }
            }
            TemplatePart::Hole(p) => {
                let _ = write!(out, "{{{p}}}");
            }
        }
    }
    out.push('"');
    out
}

/// An expression as written: the tree keeps explicit parentheses, so this round-trips.
pub(crate) fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Lit(l) => literal(l),
        ExprKind::Path(p) => p.to_string(),
        ExprKind::Not(x) => format!("not {}", expr(x)),
        ExprKind::Paren(x) => format!("({})", expr(x)),
        ExprKind::Binary { op, lhs, rhs, .. } => {
            format!("{} {} {}", expr(lhs), op.as_str(), expr(rhs))
        }
        ExprKind::Builtin { func, arg, .. } => format!("{}({})", func.as_str(), expr(arg)),
        ExprKind::List(items) => {
            format!(
                "[{}]",
                items.iter().map(expr).collect::<Vec<_>>().join(", ")
            )
        }
    }
}

fn literal(l: &Literal) -> String {
    match l {
        Literal::Str(s) => string(s),
        Literal::Int(i) => i.to_string(),
        Literal::Float(f) => {
            let s = format!("{f:?}");
            if s.contains(['.', 'e', 'E']) {
                s
            } else {
                format!("{s}.0")
            }
        }
        Literal::Bool(b) => b.to_string(),
        Literal::Null => "null".into(),
    }
}

/// A budget block's entries as `key: value, ...`.
fn budget_entries(b: &crate::syntax::ast::BudgetBlock) -> String {
    let entries: Vec<String> = b
        .entries
        .iter()
        .map(|e| {
            let v = match &e.value {
                BudgetValue::Int(n) => n.value.to_string(),
                BudgetValue::Duration(d) => duration(d.millis),
            };
            format!("{}: {v}", e.key)
        })
        .collect();
    entries.join(", ")
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_use_the_largest_exact_unit() {
        assert_eq!(duration(30_000), "30s");
        assert_eq!(duration(86_400_000), "1d");
        assert_eq!(duration(90_000), "90s");
        assert_eq!(duration(1_500), "1500ms");
        assert_eq!(duration(0), "0ms");
    }
}
