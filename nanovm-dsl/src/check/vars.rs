//! Rules about variables: where they come from, whether they are assigned, what they may flow
//! into, and the types of the expressions that read them.

use std::collections::{HashMap, VecDeque};

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::suggest::did_you_mean;
use super::types::{Ty, expect_condition, infer};
use super::{Ctx, EdgeKind, Site, VarDef, outgoing, with_branches};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::{
    BinOp, Expr, ExprKind, Literal, LlmOutput, Path, Step, StepKind, TemplatePart,
};

/// How a variable is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UseKind {
    /// In a `guard`/`branch` condition.
    Cond,
    /// In a call argument.
    Arg,
    /// In a prompt or system template.
    Template,
}

/// One read of a variable.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Use<'a> {
    pub(crate) site: Site,
    pub(crate) path: &'a Path,
    pub(crate) kind: UseKind,
}

/// Every read of every variable, in source order.
pub(crate) fn uses<'a>(ctx: &Ctx<'a>) -> Vec<Use<'a>> {
    let mut out = Vec::new();
    for (i, step) in ctx.steps.iter().enumerate() {
        for (b, s) in with_branches(step).into_iter().enumerate() {
            let site = Site {
                step: i,
                branch: (b > 0).then(|| b - 1),
            };
            step_uses(site, s, &mut out);
        }
    }
    out.sort_by_key(|u| u.path.span.start);
    out
}

fn step_uses<'a>(site: Site, step: &'a Step, out: &mut Vec<Use<'a>>) {
    let mut push = |path: &'a Path, kind| out.push(Use { site, path, kind });
    match &step.kind {
        StepKind::Llm(l) => {
            for t in l.prompt.iter().chain(&l.system) {
                for part in &t.parts {
                    if let TemplatePart::Hole(p) = part {
                        push(p, UseKind::Template);
                    }
                }
            }
        }
        StepKind::Call(c) => {
            let mut paths = Vec::new();
            for a in &c.args {
                expr_paths(&a.value, &mut paths);
            }
            paths.into_iter().for_each(|p| push(p, UseKind::Arg));
        }
        StepKind::Guard(d) | StepKind::Branch(d) => {
            let mut paths = Vec::new();
            for a in &d.arms {
                expr_paths(&a.cond, &mut paths);
            }
            paths.into_iter().for_each(|p| push(p, UseKind::Cond));
        }
        _ => {}
    }
}

/// The paths an expression reads (depth is bounded by the parser's limits).
pub(crate) fn expr_paths<'a>(e: &'a Expr, out: &mut Vec<&'a Path>) {
    match &e.kind {
        ExprKind::Path(p) => out.push(p),
        ExprKind::Lit(_) => {}
        ExprKind::Not(x) | ExprKind::Paren(x) => expr_paths(x, out),
        ExprKind::Builtin { arg, .. } => expr_paths(arg, out),
        ExprKind::Binary { lhs, rhs, .. } => {
            expr_paths(lhs, out);
            expr_paths(rhs, out);
        }
        ExprKind::List(items) => items.iter().for_each(|i| expr_paths(i, out)),
    }
}

/// A variable has one type for its whole life (the generated `State` has one field per
/// variable), and inputs are what the caller passed: a step may not overwrite them.
pub(super) fn check_variable_types(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    for var in &ctx.vars {
        if let Some(input) = var.input {
            for def in &var.defs {
                diags.push(
                    Diagnostic::error(
                        codes::E0307,
                        format!("`{}` is an input and cannot be assigned", var.name),
                        def.ident.span,
                    )
                    .with_label("assigned here")
                    .with_secondary(input.name.span, "declared as an input here")
                    .with_help("use a different variable name"),
                );
            }
            continue;
        }
        let Some(first) = var.defs.first() else {
            continue;
        };
        for def in &var.defs[1..] {
            if def.ty != first.ty && def.ty != Ty::Error && first.ty != Ty::Error {
                diags.push(
                    Diagnostic::error(
                        codes::E0306,
                        format!(
                            "`{}` is assigned {} here, but {} by `{}`",
                            var.name,
                            def.ty.describe(&ctx.choices),
                            first.ty.describe(&ctx.choices),
                            ctx.site_name(first.site)
                        ),
                        def.ident.span,
                    )
                    .with_label(def.ty.describe(&ctx.choices))
                    .with_secondary(first.ident.span, first.ty.describe(&ctx.choices))
                    .with_help("a variable has one type; use a different name for one of them"),
                );
            }
        }
    }
    ctx.diags.extend(diags);
}

/// A name that is neither an input nor assigned anywhere can never hold a value; it is
/// usually a typo.
pub(super) fn check_unknown_variables(ctx: &mut Ctx<'_>) {
    let mut names: Vec<&str> = ctx.vars.iter().map(|v| v.name).collect();
    names.sort_unstable();
    let mut diags = Vec::new();
    for u in uses(ctx) {
        let root = u.path.root();
        if ctx.var_index.contains_key(root.name.as_str()) {
            continue;
        }
        let mut d = Diagnostic::error(
            codes::E0301,
            format!("unknown variable `{}`", root.name),
            root.span,
        )
        .with_label("not an input, and no step assigns it");
        d = match did_you_mean(&root.name, names.iter().copied()) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None => d.with_help("variables are inputs and names assigned with `into` or `choose`"),
        };
        diags.push(d);
    }
    ctx.diags.extend(diags);
}

/// Reading a variable on a path where it was never assigned would read nothing. A must-assigned
/// data-flow analysis over the step graph (assignments happen on the edge that completes a step:
/// `into` is not assigned along `on error`, `choose` not along `on invalid`) proves every read
/// is preceded by an assignment on every path from `start`.
pub(super) fn check_definite_assignment(ctx: &mut Ctx<'_>) {
    let Some(start) = ctx.start else {
        return;
    };
    let flow = DataFlow::compute(ctx, start);
    let mut reported: HashMap<(usize, Site), ()> = HashMap::new();
    let mut diags = Vec::new();
    for u in uses(ctx) {
        let Some(&var) = ctx.var_index.get(u.path.root().name.as_str()) else {
            continue;
        };
        if ctx.vars[var].input.is_some() || !flow.reachable[u.site.step] {
            continue;
        }
        if flow.available(ctx, u.site, var) || reported.contains_key(&(var, u.site)) {
            continue;
        }
        reported.insert((var, u.site), ());
        let name = ctx.vars[var].name;
        let site_name = ctx.site_name(u.site);
        // A sibling branch assigns it, but this branch does not wait for it.
        let sibling = ctx.vars[var].defs.iter().find(|d| {
            d.site.step == u.site.step && d.site.branch.is_some() && u.site.branch.is_some()
        });
        let mut d = Diagnostic::error(
            codes::E0302,
            format!("`{name}` is not assigned on every path to `{site_name}`"),
            u.path.root().span,
        )
        .with_label("read here");
        if let Some(def) = sibling {
            let sib = ctx.site_name(def.site);
            d = d
                .with_note(format!(
                    "`{name}` is assigned by the sibling branch `{sib}`, which `{site_name}` does not wait for"
                ))
                .with_help(format!("add `after {sib}` to `{site_name}`"));
        } else {
            if let Some(path) = flow.witness(ctx, start, u.site.step, var) {
                d = d.with_note(format!(
                    "it is never assigned along {}",
                    ctx.path_text(&path)
                ));
            } else if let Some(path) = ctx
                .replan_targets
                .iter()
                .find_map(|&t| flow.witness(ctx, t, u.site.step, var))
            {
                d = d.with_note(format!(
                    "a replanning edge continues the run at `{}` with only the inputs assigned (a budget can run out before any step completed), and it is never assigned along {}",
                    ctx.steps[path[0]].name,
                    ctx.path_text(&path)
                ));
            }
            for def in &ctx.vars[var].defs {
                d = d.with_secondary(def.ident.span, format!("`{name}` is assigned here"));
            }
            d = d.with_help(format!(
                "assign `{name}` on every path to `{site_name}`, or read it only where it is set"
            ));
        }
        diags.push(d);
    }
    ctx.diags.extend(diags);
}

/// Secrets live in the vault and reach tools only. A prompt goes to a third-party model and
/// into the trace in clear text, so interpolating a secret into one leaks it.
pub(super) fn check_secrets_in_prompts(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    for u in uses(ctx) {
        if u.kind != UseKind::Template {
            continue;
        }
        if let Some(var) = secret_var(ctx, u.path) {
            diags.push(
                Diagnostic::error(
                    codes::E0305,
                    format!("the secret `{var}` cannot be interpolated into a prompt"),
                    u.path.span,
                )
                .with_label("secret")
                .with_note("prompts are sent to the model and recorded in the trace in clear text")
                .with_help(format!(
                    "pass `{var}` to a tool parameter declared `secret`; only tools may see secrets"
                )),
            );
        }
    }
    ctx.diags.extend(diags);
}

/// The same reason as for prompts: a condition's inputs are recorded and replayed, and an
/// argument that is not a `secret` parameter is recorded in clear text. A secret may only be
/// passed, as is, to a parameter declared `secret`.
pub(super) fn check_secrets_in_expressions(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    for step in ctx.steps.iter().flat_map(|s| with_branches(s)) {
        match &step.kind {
            StepKind::Guard(d) | StepKind::Branch(d) => {
                for arm in &d.arms {
                    let mut paths = Vec::new();
                    expr_paths(&arm.cond, &mut paths);
                    for p in paths {
                        if let Some(var) = secret_var(ctx, p) {
                            diags.push(
                                Diagnostic::error(
                                    codes::E0308,
                                    format!("the secret `{var}` cannot be read by a condition"),
                                    p.span,
                                )
                                .with_label("secret")
                                .with_help("decide on a tool's result instead: pass the secret to a tool that checks it"),
                            );
                        }
                    }
                }
            }
            StepKind::Call(c) => {
                let tool = ctx
                    .tool_index
                    .get(c.tool.name.as_str())
                    .map(|&t| ctx.tools[t]);
                for arg in &c.args {
                    let param =
                        tool.and_then(|t| t.params.iter().find(|p| p.name.name == arg.name.name));
                    let secret_param =
                        param.is_some_and(|p| matches!(Ty::from_kind(&p.ty.kind), Ty::Secret(_)));
                    let bare = match &arg.value.kind {
                        ExprKind::Path(p) => Some(p),
                        _ => None,
                    };
                    let mut paths = Vec::new();
                    expr_paths(&arg.value, &mut paths);
                    for p in paths {
                        let Some(var) = secret_var(ctx, p) else {
                            continue;
                        };
                        let is_bare =
                            bare.is_some_and(|b| std::ptr::eq(b, p)) && p.segments.len() == 1;
                        if is_bare && (secret_param || param.is_none()) {
                            continue;
                        }
                        let d = if is_bare {
                            Diagnostic::error(
                                codes::E0308,
                                format!(
                                    "the secret `{var}` can only be passed to a parameter declared `secret`"
                                ),
                                p.span,
                            )
                            .with_label("secret")
                            .with_note("arguments of other parameters are recorded in the trace in clear text")
                            .with_help(format!(
                                "declare the parameter `{}: secret ...` in the tool",
                                arg.name
                            ))
                        } else {
                            Diagnostic::error(
                                codes::E0308,
                                format!("the secret `{var}` cannot be used inside an expression"),
                                p.span,
                            )
                            .with_label("secret")
                            .with_help("pass it to a `secret` parameter as is")
                        };
                        diags.push(d);
                    }
                }
            }
            _ => {}
        }
    }
    ctx.diags.extend(diags);
}

/// Where an untrusted value came from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// `llm STEP { ... into x }`: whatever text the model wrote.
    FreeText(&'a str),
    /// `llm STEP { ... answer x: T }`: a value of the type, whatever it says.
    ModelAnswer(&'a str),
    /// `call STEP = TOOL(...) into x`: whatever the tool returned.
    ToolResult(&'a str, &'a str),
}

/// Whether a definition of a variable is untrusted data: a model's free text (`into` of an
/// `llm` step) or a tool's result (`into` of a call). `choose` answers are one of the
/// program's own names, `await` payloads are delivered by the application like inputs.
fn source_of<'a>(ctx: &Ctx<'a>, def: &VarDef<'a>) -> Option<Source<'a>> {
    let step = ctx.site_step(def.site);
    match &step.kind {
        StepKind::Llm(l) if matches!(l.output, Some(LlmOutput::Into { .. })) => {
            Some(Source::FreeText(&step.name.name))
        }
        // A typed answer is checked for its shape, not for its content: it is as untrusted as
        // free text.
        StepKind::Llm(l) if matches!(l.output, Some(LlmOutput::Answer { .. })) => {
            Some(Source::ModelAnswer(&step.name.name))
        }
        StepKind::Call(c) if c.into.is_some() => {
            Some(Source::ToolResult(&step.name.name, &c.tool.name))
        }
        _ => None,
    }
}

/// The model proposes, the compiled graph decides: an effect's argument that came from the
/// model's free text or from a tool's result is whatever that text or that service said (an
/// injected prompt can name any account). Such a value may reach an argument of an `effect`
/// tool only if, on every path from where it was assigned, a `guard` reads it (its path or a
/// prefix of it, in a `when` condition), or if the argument says `trusted(value, "reason")`.
/// Every `trusted` needs a reason, so the trust is written down where a reviewer sees it.
pub(super) fn check_untrusted_into_effects(ctx: &mut Ctx<'_>) {
    let flow = ctx.start.map(|start| DataFlow::compute(ctx, start));
    let mut taint = Taint::default();
    let mut diags = Vec::new();
    for (i, step) in ctx.steps.iter().enumerate() {
        if ctx.duplicate_step[i] {
            continue;
        }
        for (b, st) in with_branches(step).into_iter().enumerate() {
            let site = Site {
                step: i,
                branch: (b > 0).then(|| b - 1),
            };
            let StepKind::Call(c) = &st.kind else {
                continue;
            };
            let Some(&tool) = ctx.tool_index.get(c.tool.name.as_str()) else {
                continue; // undeclared: E0201
            };
            let effect = ctx.tools[tool].is_effect();
            for arg in &c.args {
                let mut seen: Vec<String> = Vec::new();
                if let Some(t) = &arg.trust {
                    if t.reason.as_ref().is_none_or(|r| r.value.trim().is_empty()) {
                        diags.push(
                            Diagnostic::error(
                                codes::E0309,
                                "`trusted(...)` needs a reason",
                                t.span,
                            )
                            .with_label("no reason given")
                            .with_note("the reason is what a reviewer reads instead of a guard")
                            .with_help(format!(
                                "say why the value is safe: `{}: trusted({}, \"...\")`",
                                arg.name,
                                crate::canonical::expr(&arg.value)
                            )),
                        );
                    }
                    if let Some(why) =
                        needless_trust(ctx, flow.as_ref(), &mut taint, effect, site, &arg.value)
                    {
                        diags.push(
                            Diagnostic::warning(
                                codes::W0406,
                                "`trusted(...)` vouches for nothing here",
                                t.span,
                            )
                            .with_label(why)
                            .with_note("a marker where nothing needs it would silently cover an untrusted value added later")
                            .with_help(format!(
                                "pass it as is: `{}: {}`",
                                arg.name,
                                crate::canonical::expr(&arg.value)
                            )),
                        );
                    }
                    continue;
                }
                let (true, Some(flow)) = (effect, &flow) else {
                    continue;
                };
                let mut paths = Vec::new();
                expr_paths(&arg.value, &mut paths);
                for path in paths {
                    let Some(&var) = ctx.var_index.get(path.root().name.as_str()) else {
                        continue;
                    };
                    let text = path_text(path);
                    if seen.contains(&text) || !flow.reachable[i] {
                        continue;
                    }
                    let Some(found) = taint.unchecked(ctx, flow, site, var, path) else {
                        continue;
                    };
                    seen.push(text.clone());
                    diags.push(untrusted_diag(ctx, st, c, arg, path, &text, &found));
                }
            }
        }
    }
    ctx.diags.extend(diags);
}

/// Why a `trusted(...)` around `value` is needless, if it is: the tool is read-only, or no
/// untrusted value reaches the argument unchecked.
fn needless_trust(
    ctx: &Ctx<'_>,
    flow: Option<&DataFlow>,
    taint: &mut Taint,
    effect: bool,
    site: Site,
    value: &Expr,
) -> Option<String> {
    if !effect {
        return Some("a read-only tool may take any value".into());
    }
    let flow = flow?;
    if !flow.reachable[site.step] {
        return None;
    }
    let mut paths = Vec::new();
    expr_paths(value, &mut paths);
    let needed = paths.iter().any(|p| {
        ctx.var_index
            .get(p.root().name.as_str())
            .is_some_and(|&v| taint.unchecked(ctx, flow, site, v, p).is_some())
    });
    (!needed)
        .then(|| "nothing here comes unchecked from a model's free text or a tool's result".into())
}

/// An untrusted definition that reaches a use with no guard reading it in between.
struct Unchecked<'a> {
    def: VarDef<'a>,
    source: Source<'a>,
    /// Steps from the defining step to the using step.
    path: Vec<usize>,
    /// A guard on that path that reads the variable, but not this part of it.
    near: Option<(usize, String)>,
}

/// Where one untrusted value (a variable's path) is live, unchecked, at the entry of each step.
struct Live {
    /// Live at the entry of the step.
    live: Vec<bool>,
    /// The predecessor that made it live there (a tree: following it ends at a generator).
    from: Vec<Option<usize>>,
    /// When that predecessor assigned it: the definition (index into the variable's defs).
    generated: Vec<Option<usize>>,
}

/// Memoised liveness per (variable, path): one forward pass over the graph for each distinct
/// value passed to an effect, so checking is linear in the program per value, not per use.
#[derive(Default)]
struct Taint {
    cache: HashMap<(usize, String), Live>,
}

impl Taint {
    /// An untrusted definition of `var` that reaches `site` along a path on which no guard
    /// reads `path` (or a prefix of it) and no trusted definition (`choose`, `await`)
    /// overwrites it.
    fn unchecked<'a>(
        &mut self,
        ctx: &Ctx<'a>,
        flow: &DataFlow,
        site: Site,
        var: usize,
        path: &Path,
    ) -> Option<Unchecked<'a>> {
        let defs = &ctx.vars[var].defs;
        if !defs.iter().any(|d| source_of(ctx, d).is_some()) {
            return None;
        }
        // A sibling branch this branch waits for hands its result over directly.
        if let (Some(b), Some(waits)) = (site.branch, flow.waits.get(&site.step)) {
            for def in defs {
                if def.site.step == site.step
                    && def.site.branch.is_some_and(|d| waits[b].contains(&d))
                    && let Some(source) = source_of(ctx, def)
                {
                    return Some(Unchecked {
                        def: def.clone(),
                        source,
                        path: vec![site.step],
                        near: None,
                    });
                }
            }
        }
        let live = self
            .cache
            .entry((var, path_text(path)))
            .or_insert_with(|| Live::compute(ctx, flow, var, path));
        if !live.live[site.step] {
            return None;
        }
        // Follow the tree back to the definition that generated it.
        let mut steps = vec![site.step];
        let mut t = site.step;
        let def = loop {
            let p = live.from[t]?;
            steps.push(p);
            if let Some(d) = live.generated[t] {
                break &defs[d];
            }
            t = p;
        };
        steps.reverse();
        let near = steps.iter().find_map(|&g| {
            let StepKind::Guard(d) = &ctx.steps[g].kind else {
                return None;
            };
            let mut reads = Vec::new();
            for arm in &d.arms {
                expr_paths(&arm.cond, &mut reads);
            }
            reads
                .iter()
                .find(|r| r.root().name == path.root().name)
                .map(|r| (g, path_text(r)))
        });
        Some(Unchecked {
            def: def.clone(),
            source: source_of(ctx, def)?,
            path: steps,
            near,
        })
    }
}

impl Live {
    fn compute(ctx: &Ctx<'_>, flow: &DataFlow, var: usize, path: &Path) -> Live {
        let n = ctx.steps.len();
        let defs = &ctx.vars[var].defs;
        let mut assigns = vec![false; n];
        for d in defs {
            assigns[d.site.step] = true;
        }
        // A guard whose `when` conditions read the path (or a prefix) checks it on every edge.
        let checks = |s: usize| match &ctx.steps[s].kind {
            StepKind::Guard(d) => d.arms.iter().any(|a| {
                let mut reads = Vec::new();
                expr_paths(&a.cond, &mut reads);
                reads.iter().any(|r| covers(r, path))
            }),
            _ => false,
        };
        let mut live = Live {
            live: vec![false; n],
            from: vec![None; n],
            generated: vec![None; n],
        };
        let mut queue = VecDeque::new();
        // Generators: the `Next` edges of steps that assign it from an untrusted source.
        for (di, d) in defs.iter().enumerate() {
            let p = d.site.step;
            if !flow.reachable[p] || source_of(ctx, d).is_none() {
                continue;
            }
            for e in ctx.graph.edges(NodeIndex::new(p)) {
                let t = e.target().index();
                if *e.weight() == EdgeKind::Next && !live.live[t] {
                    live.live[t] = true;
                    live.from[t] = Some(p);
                    live.generated[t] = Some(di);
                    queue.push_back(t);
                }
            }
        }
        while let Some(t) = queue.pop_front() {
            if checks(t) {
                continue;
            }
            for e in ctx.graph.edges(NodeIndex::new(t)) {
                // Along `Next`, an assignment replaces the value (a new untrusted one is a
                // generator above; a trusted one ends it).
                if *e.weight() == EdgeKind::Next && assigns[t] {
                    continue;
                }
                let u = e.target().index();
                if !live.live[u] {
                    live.live[u] = true;
                    live.from[u] = Some(t);
                    queue.push_back(u);
                }
            }
        }
        live
    }
}

/// A path as `a -> b -> c`, with the middle of a long one elided so that a long program's
/// diagnostics stay short (one per use, each naming at most a dozen steps).
fn short_path_text(ctx: &Ctx<'_>, path: &[usize]) -> String {
    const ENDS: usize = 5;
    if path.len() <= 2 * ENDS + 1 {
        return ctx.path_text(path);
    }
    format!(
        "{} -> ({} more steps) -> {}",
        ctx.path_text(&path[..ENDS]),
        path.len() - 2 * ENDS,
        ctx.path_text(&path[path.len() - ENDS..])
    )
}

/// Whether reading `read` in a guard checks `used`: the same path or a prefix of it.
fn covers(read: &Path, used: &Path) -> bool {
    read.segments.len() <= used.segments.len()
        && read
            .segments
            .iter()
            .zip(&used.segments)
            .all(|(a, b)| a.name == b.name)
}

fn path_text(p: &Path) -> String {
    p.segments
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

fn untrusted_diag(
    ctx: &Ctx<'_>,
    step: &Step,
    call: &crate::syntax::ast::CallStep,
    arg: &crate::syntax::ast::Arg,
    path: &Path,
    text: &str,
    found: &Unchecked<'_>,
) -> Diagnostic {
    let (from, assigned) = match found.source {
        Source::FreeText(s) => (
            format!("the model's free-text answer in `{s}`"),
            "assigned here from the model's free text".to_string(),
        ),
        Source::ModelAnswer(s) => (
            format!("the model's typed answer in `{s}` (checked for its type, not its content)"),
            "assigned here from the model's answer".to_string(),
        ),
        Source::ToolResult(s, tool) => (
            format!("the result of the call `{s}`"),
            format!("assigned here from what `{tool}` returned"),
        ),
    };
    let mut d = Diagnostic::error(
        codes::E0309,
        format!(
            "`{text}` reaches the effect tool `{}` unchecked: it comes from {from}",
            call.tool
        ),
        path.span,
    )
    .with_label(format!("passed to `{}`", arg.name))
    .with_secondary(found.def.ident.span, assigned);
    d = if found.path.len() == 1 {
        d.with_note(format!(
            "`{}` waits for `{}` and takes its result with no guard in between",
            step.name,
            ctx.site_name(found.def.site)
        ))
    } else {
        d.with_note(format!(
            "no guard reads `{text}` along {}",
            short_path_text(ctx, &found.path)
        ))
    };
    if let Some((g, read)) = &found.near
        && found.path.contains(g)
    {
        d = d.with_note(format!(
            "the guard `{}` reads `{read}`, which says nothing about `{text}`",
            ctx.steps[*g].name
        ));
    }
    let trusted = format!(
        "`{}: trusted({}, \"...\")`",
        arg.name,
        crate::canonical::expr(&arg.value)
    );
    let at = &ctx.steps[found.path[found.path.len() - 1]].name;
    d.with_help(if found.path.len() == 1 {
        format!(
            "move `{}` out of `{at}` to a step after a `guard` that reads `{text}`, or, if it is safe as it is, say why: {trusted}",
            step.name
        )
    } else {
        format!(
            "check it in a `guard` before `{at}` (`when ... {text} ... -> {at}`), or, if it is safe as it is, say why: {trusted}"
        )
    })
}

/// A template hole is rendered by generated code of a fixed type, so `{request.length}` on a
/// `string` is as wrong in a prompt as it is in a condition: only records and `json` values
/// have fields (a record's fields are resolved against its declaration).
pub(super) fn check_template_types(ctx: &mut Ctx<'_>) {
    let scope = ctx.scope();
    let mut diags = Vec::new();
    for u in uses(ctx) {
        if u.kind != UseKind::Template || u.path.segments.len() < 2 {
            continue;
        }
        let Some(&v) = ctx.var_index.get(u.path.root().name.as_str()) else {
            continue; // unknown: reported by check_unknown_variables
        };
        if matches!(ctx.vars[v].ty, Ty::Json | Ty::Error | Ty::Secret(_)) {
            continue; // secrets: reported by check_secrets_in_prompts
        }
        let path = Expr {
            kind: ExprKind::Path(u.path.clone()),
            span: u.path.span,
        };
        infer(&path, &scope, &mut diags);
    }
    ctx.diags.extend(diags);
}

/// Conditions compile to plain Rust, so their types are checked here rather than discovered at
/// run time: comparisons need comparable operands and a condition must be a `bool`. (Operations
/// on `json` values are the documented exception, checked at run time with a typed error.)
pub(super) fn check_expression_types(ctx: &mut Ctx<'_>) {
    let scope = ctx.scope();
    let mut diags = Vec::new();
    for step in &ctx.steps {
        if let StepKind::Guard(d) | StepKind::Branch(d) = &step.kind {
            for arm in &d.arms {
                let t = infer(&arm.cond, &scope, &mut diags);
                expect_condition(&t, &scope, &mut diags);
            }
        }
    }
    ctx.diags.extend(diags);
}

/// A `choose` can only ever produce one of its members, so comparing it with anything else is
/// a condition that can never be true: `decision == "yse"` is a typo that would silently
/// route every run to `otherwise`.
pub(super) fn check_choice_literals(ctx: &mut Ctx<'_>) {
    let mut exprs: Vec<&Expr> = Vec::new();
    for step in &ctx.steps {
        if let StepKind::Guard(d) | StepKind::Branch(d) = &step.kind {
            exprs.extend(d.arms.iter().map(|a| &a.cond));
        }
    }
    let mut diags = Vec::new();
    let mut stack = exprs;
    while let Some(e) = stack.pop() {
        match &e.kind {
            ExprKind::Binary { op, lhs, rhs, .. } => {
                stack.push(lhs);
                stack.push(rhs);
                let (l, r) = (strip(lhs), strip(rhs));
                match op {
                    BinOp::Eq | BinOp::Ne => {
                        for (var_side, lit_side) in [(l, r), (r, l)] {
                            if let Some(set) = choice_of(ctx, var_side) {
                                check_member(ctx, set, lit_side, &mut diags);
                            }
                        }
                    }
                    BinOp::In => {
                        if let (Some(set), ExprKind::List(items)) = (choice_of(ctx, l), &r.kind) {
                            for item in items {
                                check_member(ctx, set, item, &mut diags);
                            }
                        }
                    }
                    _ => {}
                }
            }
            ExprKind::Not(x) | ExprKind::Paren(x) => stack.push(x),
            ExprKind::Builtin { arg, .. } => stack.push(arg),
            _ => {}
        }
    }
    ctx.diags.extend(diags);
}

/// A free-text answer deciding a guard puts the model back in charge of control flow: any
/// text can come back. `choose` constrains it to an admissible set.
pub(super) fn check_free_text_into_guards(ctx: &mut Ctx<'_>) {
    let guard_reads: Vec<&str> = uses(ctx)
        .into_iter()
        .filter(|u| {
            u.kind == UseKind::Cond
                && u.site.branch.is_none()
                && matches!(ctx.steps[u.site.step].kind, StepKind::Guard(_))
        })
        .map(|u| u.path.root().name.as_str())
        .collect();
    let mut diags = Vec::new();
    for var in &ctx.vars {
        for def in &var.defs {
            let step = ctx.site_step(def.site);
            let StepKind::Llm(l) = &step.kind else {
                continue;
            };
            if l.output
                .as_ref()
                .is_some_and(|o| matches!(o, crate::syntax::ast::LlmOutput::Into { .. }))
                && guard_reads.contains(&var.name)
            {
                diags.push(
                    Diagnostic::warning(
                        codes::W0402,
                        format!(
                            "free-text output `{}` of llm step `{}` decides a guard",
                            var.name, step.name
                        ),
                        def.ident.span,
                    )
                    .with_label("any text can come back here")
                    .with_help(format!("constrain it: `choose {} from [...]`", var.name)),
                );
            }
        }
    }
    ctx.diags.extend(diags);
}

/// An input nobody reads and a tool nobody calls are usually leftovers, or a sign that a step
/// meant to use them does not.
pub(super) fn check_unused(ctx: &mut Ctx<'_>) {
    let read: Vec<&str> = uses(ctx)
        .into_iter()
        .map(|u| u.path.root().name.as_str())
        .collect();
    let mut diags = Vec::new();
    for field in ctx.program.inputs() {
        if !read.contains(&field.name.name.as_str()) {
            diags.push(
                Diagnostic::warning(
                    codes::W0403,
                    format!("input `{}` is never used", field.name),
                    field.name.span,
                )
                .with_label("unused input")
                .with_help("remove it, or use it in a step"),
            );
        }
    }
    let called: Vec<&str> = ctx
        .steps
        .iter()
        .flat_map(|s| with_branches(s))
        .filter_map(|s| match &s.kind {
            StepKind::Call(c) => Some(c.tool.name.as_str()),
            _ => None,
        })
        .collect();
    for (i, tool) in ctx.tools.iter().enumerate() {
        if ctx.tool_index.get(tool.name.name.as_str()) == Some(&i)
            && !called.contains(&tool.name.name.as_str())
        {
            diags.push(
                Diagnostic::warning(
                    codes::W0404,
                    format!("tool `{}` is never called", tool.name),
                    tool.name.span,
                )
                .with_label("unused tool")
                .with_help("remove the declaration, or call it from a step"),
            );
        }
    }
    ctx.diags.extend(diags);
}

fn strip(e: &Expr) -> &Expr {
    match &e.kind {
        ExprKind::Paren(x) => strip(x),
        _ => e,
    }
}

/// The choice set of a bare choice variable.
fn choice_of(ctx: &Ctx<'_>, e: &Expr) -> Option<usize> {
    let ExprKind::Path(p) = &e.kind else {
        return None;
    };
    if p.segments.len() != 1 {
        return None;
    }
    let &v = ctx.var_index.get(p.root().name.as_str())?;
    match ctx.vars[v].ty {
        Ty::Choice(c) => Some(c),
        _ => None,
    }
}

fn check_member(ctx: &Ctx<'_>, set: usize, lit: &Expr, diags: &mut Vec<Diagnostic>) {
    let ExprKind::Lit(Literal::Str(s)) = &strip(lit).kind else {
        return;
    };
    let choices = &ctx.choices[set];
    if choices.members.iter().any(|m| m.name == *s) {
        return;
    }
    let members: Vec<&str> = choices.members.iter().map(|m| m.name.as_str()).collect();
    let mut d = Diagnostic::error(
        codes::E0304,
        format!(
            "\"{s}\" is not one of the choices of `{}` ({})",
            choices.var,
            members.join(", ")
        ),
        lit.span,
    )
    .with_label("not a choice")
    .with_secondary(
        choices.members[0]
            .span
            .to(choices.members[members.len() - 1].span),
        "the choices",
    );
    if let Some(m) = did_you_mean(s, members.iter().copied()) {
        d = d.with_help(format!("did you mean \"{m}\"?"));
    }
    diags.push(d);
}

fn secret_var<'a>(ctx: &Ctx<'a>, path: &Path) -> Option<&'a str> {
    let &v = ctx.var_index.get(path.root().name.as_str())?;
    matches!(ctx.vars[v].ty, Ty::Secret(_)).then_some(ctx.vars[v].name)
}

/// Must-assigned sets per step (bitsets over variables).
struct DataFlow {
    words: usize,
    /// Variables assigned on every path into each step.
    into: Vec<Vec<u64>>,
    reachable: Vec<bool>,
    /// Variables each branch of each parallel step assigns: step -> [branch bitset].
    branch_defs: HashMap<usize, Vec<Vec<u64>>>,
    /// `after` closure: step -> branch -> branches it transitively waits for.
    waits: HashMap<usize, Vec<Vec<usize>>>,
}

impl DataFlow {
    fn compute(ctx: &Ctx<'_>, start: usize) -> DataFlow {
        let n = ctx.steps.len();
        let words = ctx.vars.len().div_ceil(64).max(1);
        let set = |bits: &mut Vec<u64>, v: usize| bits[v / 64] |= 1 << (v % 64);
        // Definitions carried by each edge kind of each step.
        let mut edge_defs: Vec<Vec<u64>> = vec![vec![0; words]; n]; // on the Next edge
        let mut branch_defs: HashMap<usize, Vec<Vec<u64>>> = HashMap::new();
        for (vi, var) in ctx.vars.iter().enumerate() {
            for def in &var.defs {
                set(&mut edge_defs[def.site.step], vi);
                if let Some(b) = def.site.branch {
                    let entry = branch_defs.entry(def.site.step).or_insert_with(|| {
                        let count = match &ctx.steps[def.site.step].kind {
                            StepKind::Parallel(p) => p.branches.len(),
                            _ => 0,
                        };
                        vec![vec![0; words]; count]
                    });
                    set(&mut entry[b], vi);
                }
            }
        }
        let mut inputs = vec![0u64; words];
        for (vi, var) in ctx.vars.iter().enumerate() {
            if var.input.is_some() {
                set(&mut inputs, vi);
            }
        }
        // Reachability and a processing order (BFS order approximates reverse post-order).
        let mut reachable = vec![false; n];
        let mut order = Vec::new();
        // A replanning edge leads to its target from every step (checked by `check_replan_*`).
        let mut queue = VecDeque::from([start]);
        reachable[start] = true;
        for &t in &ctx.replan_targets {
            if !reachable[t] {
                reachable[t] = true;
                queue.push_back(t);
            }
        }
        while let Some(s) = queue.pop_front() {
            order.push(s);
            for e in ctx.graph.edges(NodeIndex::new(s)) {
                let t = e.target().index();
                if !reachable[t] {
                    reachable[t] = true;
                    queue.push_back(t);
                }
            }
        }
        let full = vec![u64::MAX; words];
        let mut into: Vec<Vec<u64>> = vec![full.clone(); n];
        into[start] = inputs.clone();
        let mut changed = true;
        while changed {
            changed = false;
            for &s in &order {
                // The start, and a replan target (a run can replan before any step assigned
                // anything), are entered with only the inputs.
                let mut acc = if s == start || ctx.replan_targets.contains(&s) {
                    inputs.clone()
                } else {
                    full.clone()
                };
                for e in ctx
                    .graph
                    .edges_directed(NodeIndex::new(s), petgraph::Direction::Incoming)
                {
                    let p = e.source().index();
                    if !reachable[p] {
                        continue;
                    }
                    for w in 0..words {
                        let mut out = into[p][w];
                        if *e.weight() == EdgeKind::Next {
                            out |= edge_defs[p][w];
                        }
                        acc[w] &= out;
                    }
                }
                if acc != into[s] {
                    into[s] = acc;
                    changed = true;
                }
            }
        }
        // Transitive `after` closure for every parallel step.
        let mut waits = HashMap::new();
        for (i, step) in ctx.steps.iter().enumerate() {
            let StepKind::Parallel(p) = &step.kind else {
                continue;
            };
            let idx: HashMap<&str, usize> = p
                .branches
                .iter()
                .enumerate()
                .map(|(b, s)| (s.name.name.as_str(), b))
                .collect();
            let direct: Vec<Vec<usize>> = p
                .branches
                .iter()
                .map(|b| {
                    let after = match &b.kind {
                        StepKind::Llm(l) => &l.after,
                        StepKind::Call(c) => &c.after,
                        _ => return Vec::new(),
                    };
                    after
                        .iter()
                        .filter_map(|a| idx.get(a.name.as_str()).copied())
                        .collect()
                })
                .collect();
            let closure: Vec<Vec<usize>> = (0..direct.len())
                .map(|b| {
                    let mut seen = vec![false; direct.len()];
                    let mut stack = direct[b].clone();
                    while let Some(x) = stack.pop() {
                        if !seen[x] {
                            seen[x] = true;
                            stack.extend(direct[x].iter().copied());
                        }
                    }
                    (0..direct.len()).filter(|&x| seen[x] && x != b).collect()
                })
                .collect();
            waits.insert(i, closure);
        }
        DataFlow {
            words,
            into,
            reachable,
            branch_defs,
            waits,
        }
    }

    fn available(&self, _ctx: &Ctx<'_>, site: Site, var: usize) -> bool {
        let bit = |bits: &Vec<u64>| bits[var / 64] & (1 << (var % 64)) != 0;
        if bit(&self.into[site.step]) {
            return true;
        }
        let Some(b) = site.branch else {
            return false;
        };
        let (Some(defs), Some(waits)) =
            (self.branch_defs.get(&site.step), self.waits.get(&site.step))
        else {
            return false;
        };
        debug_assert!(self.words > 0);
        waits[b].iter().any(|&w| bit(&defs[w]))
    }

    /// A path from `start` to `to` along which `var` is never assigned.
    fn witness(&self, ctx: &Ctx<'_>, start: usize, to: usize, var: usize) -> Option<Vec<usize>> {
        let assigns = |s: usize, kind: EdgeKind| {
            kind == EdgeKind::Next && ctx.vars[var].defs.iter().any(|d| d.site.step == s)
        };
        let n = ctx.steps.len();
        let mut parent: Vec<Option<usize>> = vec![None; n];
        let mut seen = vec![false; n];
        seen[start] = true;
        let mut queue = VecDeque::from([start]);
        while let Some(s) = queue.pop_front() {
            if s == to {
                let mut path = vec![to];
                while let Some(p) = parent[*path.last()?] {
                    path.push(p);
                }
                path.reverse();
                return Some(path);
            }
            for (kind, target) in outgoing(ctx.steps[s]) {
                let Some(&t) = ctx.step_index.get(target.name.name.as_str()) else {
                    continue;
                };
                if !seen[t] && !assigns(s, kind) {
                    seen[t] = true;
                    parent[t] = Some(s);
                    queue.push_back(t);
                }
            }
        }
        None
    }
}
