//! Rules about the step graph.

use std::collections::VecDeque;

use petgraph::Direction;
use petgraph::algo::kosaraju_scc;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::names::sorted_steps;
use super::suggest::did_you_mean;
use super::{Ctx, outgoing};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::StepKind;

/// Every edge must lead somewhere: a target that names no step is almost always a typo, and
/// executing it would strand the run.
pub(super) fn check_targets(ctx: &mut Ctx<'_>) {
    let names = sorted_steps(ctx);
    let mut diags = Vec::new();
    for (i, step) in ctx.steps.iter().enumerate() {
        if ctx.duplicate_step[i] {
            continue;
        }
        for (_, target) in outgoing(step) {
            let name = target.name.name.as_str();
            if ctx.step_index.contains_key(name) {
                continue;
            }
            let mut d = Diagnostic::error(
                codes::E0102,
                format!("`{name}` names no step"),
                target.name.span,
            )
            .with_label(format!("no step named `{name}`"));
            if let Some(site) = ctx.branch_index.get(name) {
                d = d.with_note(format!(
                    "`{name}` is a branch of the parallel step `{}`; branches cannot be targets",
                    ctx.steps[site.step].name
                ));
            } else if let Some(s) = did_you_mean(name, names.iter().copied()) {
                d = d.with_help(format!("did you mean `{s}`?"));
            } else {
                d = d.with_help(format!(
                    "declare it, e.g. `end {name}: success`, or point the edge at an existing step"
                ));
            }
            diags.push(d);
        }
    }
    ctx.diags.extend(diags);
}

/// A step no path from `start` reaches is dead code in a graph that is supposed to be the whole
/// truth about what can happen; it usually means an edge is missing or misspelt. Each dead
/// region is reported once, at its entry: the steps only it leads to are named in a note.
pub(super) fn check_unreachable(ctx: &mut Ctx<'_>) {
    let Some(start) = ctx.start else {
        return;
    };
    let seen = reachable_with_replans(ctx, start);
    let dead = |i: usize| !seen[i] && !ctx.duplicate_step[i];
    let unresolved: Vec<&str> = ctx
        .steps
        .iter()
        .flat_map(|s| outgoing(s))
        .map(|(_, t)| t.name.name.as_str())
        .filter(|n| !ctx.step_index.contains_key(n))
        .collect();
    let start_name = ctx.steps[start].name.name.clone();
    let has_traps = !trap_regions(ctx).is_empty();
    let sccs = sorted_sccs(ctx);
    let mut scc_of = vec![0usize; ctx.steps.len()];
    for (k, scc) in sccs.iter().enumerate() {
        for &n in scc {
            scc_of[n] = k;
        }
    }
    let mut diags = Vec::new();
    let mut explained = vec![false; ctx.steps.len()];
    for scc in &sccs {
        if !dead(scc[0]) {
            continue;
        }
        // Entry regions only: nothing dead outside the region leads into it.
        let fed = scc.iter().any(|&n| {
            ctx.graph
                .edges_directed(NodeIndex::new(n), Direction::Incoming)
                .any(|e| dead(e.source().index()) && scc_of[e.source().index()] != scc_of[n])
        });
        if fed {
            continue;
        }
        // An `end` nothing reaches while a cycle has no way out is that cycle's missing exit;
        // the trap diagnostic says so.
        if has_traps && scc.len() == 1 && matches!(ctx.steps[scc[0]].kind, StepKind::End(_)) {
            continue;
        }
        let first = scc[0];
        let step = ctx.steps[first];
        let mut d = Diagnostic::error(
            codes::E0103,
            format!("step `{}` is unreachable", step.name),
            step.name.span,
        )
        .with_label(format!("no path from `start` (`{start_name}`) leads here"));
        // Everything dead that this region leads to is explained by it.
        let below = reachable_from(ctx, first, dead);
        let mut followers: Vec<&str> = Vec::new();
        for (i, &r) in below.iter().enumerate() {
            if r && i != first && dead(i) && !explained[i] {
                explained[i] = true;
                followers.push(ctx.steps[i].name.name.as_str());
            }
        }
        if !followers.is_empty() {
            d = d.with_note(format!(
                "{} {} unreachable too, because only `{}` leads there",
                list(&followers),
                if followers.len() == 1 { "is" } else { "are" },
                step.name
            ));
        }
        if let Some(typo) = unresolved
            .iter()
            .find(|u| did_you_mean(u, [step.name.name.as_str()]).is_some())
        {
            d = d.with_note(format!(
                "the target `{typo}` may have been meant to name it"
            ));
        } else {
            d = d.with_help(format!("add an edge to `{}`, or remove it", step.name));
        }
        diags.push(d);
    }
    ctx.diags.extend(diags);
}

/// A run that enters a region from which no `end` is reachable can never finish: it would loop
/// until a budget kills it. Each such region is reported once, at the cycle that traps it.
pub(super) fn check_traps(ctx: &mut Ctx<'_>) {
    let Some(start) = ctx.start else {
        return;
    };
    let reachable = reachable_with_replans(ctx, start);
    let lost_ends: Vec<&str> = ctx
        .steps
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            !reachable[*i] && !ctx.duplicate_step[*i] && matches!(s.kind, StepKind::End(_))
        })
        .map(|(_, s)| s.name.name.as_str())
        .collect();
    let mut diags = Vec::new();
    for scc in trap_regions(ctx) {
        let names = list(
            &scc.iter()
                .map(|&i| ctx.steps[i].name.name.as_str())
                .collect::<Vec<_>>(),
        );
        let message = if scc.len() == 1 {
            format!("step {names} loops to itself with no way out; no `end` is reachable from it")
        } else {
            format!("steps {names} form a cycle with no way out; no `end` is reachable from them")
        };
        let mut d = Diagnostic::error(codes::E0104, message, ctx.steps[scc[0]].name.span)
            .with_label("a run that gets here can never finish");
        for &n in &scc[1..] {
            d = d.with_secondary(ctx.steps[n].name.span, "part of the cycle");
        }
        if !lost_ends.is_empty() {
            d = d.with_note(format!(
                "no path leads to {} either; it may be the way out this cycle is missing",
                list(&lost_ends)
            ));
        }
        diags.push(d.with_help("give one of these steps an edge that leads to an `end`"));
    }
    ctx.diags.extend(diags);
}

/// The trapped cycles reachable from `start` (sink regions only: a trapped step that merely
/// leads into a trap is a consequence, not a separate problem).
fn trap_regions(ctx: &Ctx<'_>) -> Vec<Vec<usize>> {
    let Some(start) = ctx.start else {
        return Vec::new();
    };
    let reachable = reachable_with_replans(ctx, start);
    // Steps from which an end (or an unresolved target, already reported) is reachable.
    let mut finishes = vec![false; ctx.steps.len()];
    let mut queue: VecDeque<usize> = VecDeque::new();
    for (i, step) in ctx.steps.iter().enumerate() {
        if matches!(step.kind, StepKind::End(_)) || ctx.unresolved[i] {
            finishes[i] = true;
            queue.push_back(i);
        }
    }
    while let Some(n) = queue.pop_front() {
        for e in ctx
            .graph
            .edges_directed(NodeIndex::new(n), Direction::Incoming)
        {
            let p = e.source().index();
            if !finishes[p] {
                finishes[p] = true;
                queue.push_back(p);
            }
        }
    }
    let trapped = |i: usize| reachable[i] && !finishes[i] && !ctx.duplicate_step[i];
    sorted_sccs(ctx)
        .into_iter()
        .filter(|scc| trapped(scc[0]) && is_cycle(ctx, scc))
        .filter(|scc| {
            !scc.iter().any(|&n| {
                ctx.graph
                    .edges(NodeIndex::new(n))
                    .any(|e| !scc.contains(&e.target().index()) && trapped(e.target().index()))
            })
        })
        .collect()
}

/// A cycle is fine only if something bounds it: without `max_steps` a model that keeps
/// answering the same way would loop forever.
pub(super) fn check_cycles_need_max_steps(ctx: &mut Ctx<'_>) {
    if ctx.budget_entry("max_steps").is_some() {
        return;
    }
    let Some(start) = ctx.start else {
        return;
    };
    let reachable = reachable_with_replans(ctx, start);
    let mut diags = Vec::new();
    for scc in sorted_sccs(ctx) {
        if !reachable[scc[0]] || !is_cycle(ctx, &scc) {
            continue;
        }
        let names = list(
            &scc.iter()
                .map(|&i| ctx.steps[i].name.name.as_str())
                .collect::<Vec<_>>(),
        );
        let mut d = Diagnostic::error(
            codes::E0105,
            if scc.len() == 1 {
                format!("step {names} repeats itself, but the program sets no `max_steps`")
            } else {
                format!("steps {names} form a cycle, but the program sets no `max_steps`")
            },
            ctx.steps[scc[0]].name.span,
        )
        .with_label("a cycle starts here");
        for &n in &scc[1..] {
            d = d.with_secondary(ctx.steps[n].name.span, "part of the cycle");
        }
        if let Some(b) = ctx.program.budget() {
            d = d.with_secondary(b.span, "this budget has no `max_steps`");
        }
        diags.push(
            d.with_help("bound the cycle: add `max_steps: N` to the program's `budget { ... }`"),
        );
    }
    ctx.diags.extend(diags);
}

/// The core safety rule: money moves, rows change and messages go out only after a guardrail
/// has looked at the situation. An effect reachable from `start` along a path that passes no
/// `guard` could fire on the model's word alone.
pub(super) fn check_unguarded_effects(ctx: &mut Ctx<'_>) {
    let Some(start) = ctx.start else {
        return;
    };
    // Breadth-first from start, never expanding through a guard; parents give one path.
    let n = ctx.steps.len();
    let mut parent: Vec<Option<usize>> = vec![None; n];
    let mut seen = vec![false; n];
    let mut queue = VecDeque::from([start]);
    seen[start] = true;
    let mut order = Vec::new();
    while let Some(s) = queue.pop_front() {
        order.push(s);
        if matches!(ctx.steps[s].kind, StepKind::Guard(_)) {
            continue;
        }
        for e in sorted_edges(ctx, s) {
            if !seen[e] {
                seen[e] = true;
                parent[e] = Some(s);
                queue.push_back(e);
            }
        }
    }
    order.sort_unstable();
    let mut diags = Vec::new();
    for s in order {
        for (site_name, tool, span) in effect_calls(ctx, s) {
            let mut path = vec![s];
            while let Some(p) = parent[*path.last().expect("nonempty")] {
                path.push(p);
            }
            path.reverse();
            let step = ctx.steps[s];
            let what = if matches!(step.kind, StepKind::Parallel(_)) {
                format!("the branch `{site_name}` of `{}`", step.name)
            } else {
                format!("the call `{site_name}`")
            };
            let mut d = Diagnostic::error(
                codes::E0106,
                format!(
                    "unguarded effect: {what} is reachable from `start` without passing a guard"
                ),
                span,
            )
            .with_label(format!("calls the effect tool `{tool}`"))
            .with_note(if path.len() == 1 {
                format!("`{}` is the first step the run executes", ctx.steps[s].name)
            } else {
                format!("for example along {}", ctx.path_text(&path))
            });
            let branch_on_path = path
                .iter()
                .find(|&&p| matches!(ctx.steps[p].kind, StepKind::Branch(_)));
            d = match branch_on_path {
                Some(&b) => d.with_help(format!(
                    "if `{}` is the policy check, declare it as `guard {}`; otherwise put a `guard` before `{}`",
                    ctx.steps[b].name, ctx.steps[b].name, ctx.steps[s].name
                )),
                None => d.with_help(format!(
                    "put a `guard` step on every path to `{}`",
                    ctx.steps[s].name
                )),
            };
            diags.push(d);
        }
    }
    ctx.diags.extend(diags);
}

/// A guard is what E0106 trusts to stand between the model and an effect, so a guard that
/// cannot tell one run from another (no `when` arm, only conditions that read no variable, or
/// every arm to the same step before an effect) is a guardrail in name only: every run takes the same way and the effect after it fires
/// unchecked. It is a warning (the program is well-formed), naming the effects it stands
/// before; `--deny-warnings` / `Builder::deny_warnings` make it fail a build.
pub(super) fn check_guards_decide(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    for (g, step) in ctx.steps.iter().enumerate() {
        let StepKind::Guard(d) = &step.kind else {
            continue;
        };
        if ctx.duplicate_step[g] || d.otherwise.is_empty() || decides(step) {
            continue; // no `otherwise`: E0107 already says the guard is malformed
        }
        let to = &d.otherwise[0].name;
        let reads = d.arms.iter().any(|a| {
            let mut paths = Vec::new();
            super::vars::expr_paths(&a.cond, &mut paths);
            !paths.is_empty()
        });
        // The effects it stands before: reachable from it without passing a guard that decides.
        let behind = reachable_from(ctx, g, |s| {
            s == g || !(matches!(ctx.steps[s].kind, StepKind::Guard(_)) && decides(ctx.steps[s]))
        });
        let effects: Vec<String> = (0..ctx.steps.len())
            .filter(|&s| behind[s] && s != g)
            .flat_map(|s| effect_calls(ctx, s))
            .map(|(call, tool, _)| format!("`{call}` (tool `{tool}`)"))
            .collect();
        // Arms that all lead to one step are a common shorthand before an `end`; they matter
        // where an effect is behind the guard.
        let one_way = !d.arms.is_empty() && reads;
        if one_way && effects.is_empty() {
            continue;
        }
        let mut d_out = if one_way {
            Diagnostic::warning(
                codes::W0405,
                format!(
                    "guard `{}` decides nothing: every arm goes to `{to}`",
                    step.name
                ),
                step.name.span,
            )
            .with_label(format!("every run goes on to `{to}`"))
        } else if d.arms.is_empty() {
            Diagnostic::warning(
                codes::W0405,
                format!(
                    "guard `{}` decides nothing: it has no `when` arm",
                    step.name
                ),
                step.name.span,
            )
            .with_label(format!("every run goes on to `{to}`"))
        } else {
            let mut w = Diagnostic::warning(
                codes::W0405,
                format!(
                    "guard `{}` decides nothing: no `when` condition reads a variable",
                    step.name
                ),
                step.name.span,
            )
            .with_label("every run takes the same way");
            for arm in &d.arms {
                w = w.with_secondary(arm.cond.span, "reads no variable");
            }
            w
        };
        if !effects.is_empty() {
            let refs: Vec<&str> = effects.iter().map(String::as_str).collect();
            d_out = d_out.with_note(format!(
                "it is the guard before the effect {} {}, which would fire without any check",
                if effects.len() == 1 { "call" } else { "calls" },
                join(&refs)
            ));
        }
        let first = d
            .arms
            .first()
            .map_or(d.otherwise[0].name.name.as_str(), |a| {
                a.target.name.name.as_str()
            });
        diags.push(d_out.with_help(if one_way {
            format!(
                "send the runs that must not reach `{to}` somewhere else (`otherwise -> ...`), or make it a `branch` if it is not a policy check"
            )
        } else {
            format!(
                "give it a `when` arm whose condition reads this run's data (`when ... -> {first}`), or make it a `branch` if it is not a policy check"
            )
        }));
    }
    ctx.diags.extend(diags);
}

/// Whether a guard or branch can tell runs apart: some `when` condition reads a variable, and
/// not every arm leads to the same step.
fn decides(step: &crate::syntax::ast::Step) -> bool {
    let (StepKind::Guard(d) | StepKind::Branch(d)) = &step.kind else {
        return false;
    };
    let reads = d.arms.iter().any(|a| {
        let mut paths = Vec::new();
        super::vars::expr_paths(&a.cond, &mut paths);
        !paths.is_empty()
    });
    let mut targets = d
        .arms
        .iter()
        .map(|a| &a.target.name.name)
        .chain(d.otherwise.iter().map(|t| &t.name.name));
    let first = targets.next();
    let one_way = first.is_some_and(|f| targets.all(|t| t == f));
    reads && !one_way
}

/// `a`, `a` and `b`, ... for already formatted items.
fn join(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// An effect inside a cycle runs once per trip around it. That can be right (retrying a charge
/// after a new card arrives), but it should never be a surprise.
pub(super) fn check_effects_in_cycles(ctx: &mut Ctx<'_>) {
    let Some(start) = ctx.start else {
        return;
    };
    let reachable = reachable_with_replans(ctx, start);
    let mut diags = Vec::new();
    for scc in sorted_sccs(ctx) {
        if !reachable[scc[0]] || !is_cycle(ctx, &scc) {
            continue;
        }
        for &s in &scc {
            for (site_name, tool, span) in effect_calls(ctx, s) {
                diags.push(
                    Diagnostic::warning(
                        codes::W0401,
                        format!("the effect call `{site_name}` is inside a cycle and may fire more than once"),
                        span,
                    )
                    .with_label(format!("calls the effect tool `{tool}`"))
                    .with_note("each trip around the cycle is a new effect with its own effect id")
                    .with_help("make sure repeating it is intended, or move it out of the cycle"),
                );
            }
        }
    }
    // A replanning edge closes a cycle through every effect its target leads to: the effect may
    // have run before the budget ran out, and the run comes back to it after the replan.
    let mut warned: Vec<usize> = Vec::new();
    for (r, &t) in ctx.program.replans().zip(&ctx.replan_targets) {
        let again = reachable_from(ctx, t, |_| true);
        for s in 0..ctx.steps.len() {
            if !again[s] || !reachable[s] || warned.contains(&s) {
                continue;
            }
            // A budget is checked before a step that is not an `end`: unless one can follow
            // the effect, no budget runs out after it ran.
            let can_trip_after = sorted_edges(ctx, s).into_iter().any(|n| {
                reachable_from(ctx, n, |_| true)
                    .iter()
                    .enumerate()
                    .any(|(x, &r)| r && !matches!(ctx.steps[x].kind, StepKind::End(_)))
            });
            if !can_trip_after {
                continue;
            }
            let in_cycle = diags.iter().any(|d: &Diagnostic| {
                effect_calls(ctx, s)
                    .iter()
                    .any(|(_, _, span)| d.primary.span == *span)
            });
            for (site_name, tool, span) in effect_calls(ctx, s) {
                if in_cycle {
                    continue;
                }
                warned.push(s);
                diags.push(
                    Diagnostic::warning(
                        codes::W0401,
                        format!("the effect call `{site_name}` may fire again after a replan"),
                        span,
                    )
                    .with_label(format!("calls the effect tool `{tool}`"))
                    .with_secondary(r.target.name.span, "the replan continues here")
                    .with_note(format!(
                        "`on {}` can continue the run at `{}` after `{site_name}` ran, and `{}` leads to it again: a new effect with its own effect id",
                        r.on.as_str(),
                        r.target.name.name,
                        r.target.name.name
                    ))
                    .with_help("make sure repeating it is intended, or replan to a step that cannot reach it"),
                );
            }
        }
    }
    ctx.diags.extend(diags);
}

/// The effect calls a step makes: (call or branch name, tool name, span to point at).
pub(crate) fn effect_calls<'a>(
    ctx: &Ctx<'a>,
    s: usize,
) -> Vec<(&'a str, &'a str, crate::syntax::ast::Span)> {
    let step = ctx.steps[s];
    let mut out = Vec::new();
    let mut visit = |st: &'a crate::syntax::ast::Step| {
        if let StepKind::Call(c) = &st.kind
            && let Some(&t) = ctx.tool_index.get(c.tool.name.as_str())
            && ctx.tools[t].is_effect()
        {
            out.push((
                st.name.name.as_str(),
                ctx.tools[t].name.name.as_str(),
                st.name.span,
            ));
        }
    };
    match &step.kind {
        StepKind::Parallel(p) => p.branches.iter().for_each(&mut visit),
        _ => visit(step),
    }
    out
}

/// Steps reachable from `start`, and from the target of every replanning edge (a budget can run
/// out at any step the run reaches, so a replan target is reached whenever any step is).
pub(crate) fn reachable_with_replans(ctx: &Ctx<'_>, start: usize) -> Vec<bool> {
    let mut seen = reachable_from(ctx, start, |_| true);
    for &t in &ctx.replan_targets {
        if seen[t] {
            continue;
        }
        for (i, r) in reachable_from(ctx, t, |_| true).into_iter().enumerate() {
            seen[i] |= r;
        }
    }
    seen
}

/// Steps reachable from `from`, expanding only through steps `expand` accepts.
pub(crate) fn reachable_from(
    ctx: &Ctx<'_>,
    from: usize,
    expand: impl Fn(usize) -> bool,
) -> Vec<bool> {
    let mut seen = vec![false; ctx.steps.len()];
    seen[from] = true;
    let mut queue = VecDeque::from([from]);
    while let Some(s) = queue.pop_front() {
        if !expand(s) {
            continue;
        }
        for e in ctx.graph.edges(NodeIndex::new(s)) {
            let t = e.target().index();
            if !seen[t] {
                seen[t] = true;
                queue.push_back(t);
            }
        }
    }
    seen
}

/// Successors of a step in source order of the edges (petgraph lists them newest first).
pub(crate) fn sorted_edges(ctx: &Ctx<'_>, s: usize) -> Vec<usize> {
    let mut v: Vec<(usize, usize)> = ctx
        .graph
        .edges(NodeIndex::new(s))
        .map(|e| (e.id().index(), e.target().index()))
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(_, t)| t).collect()
}

/// Strongly connected components, each sorted, ordered by their first step.
fn sorted_sccs(ctx: &Ctx<'_>) -> Vec<Vec<usize>> {
    let mut sccs: Vec<Vec<usize>> = kosaraju_scc(&ctx.graph)
        .into_iter()
        .map(|c| {
            let mut v: Vec<usize> = c.into_iter().map(NodeIndex::index).collect();
            v.sort_unstable();
            v
        })
        .collect();
    sccs.sort_unstable();
    sccs
}

fn is_cycle(ctx: &Ctx<'_>, scc: &[usize]) -> bool {
    scc.len() > 1
        || ctx
            .graph
            .contains_edge(NodeIndex::new(scc[0]), NodeIndex::new(scc[0]))
}

/// `a`, `a` and `b`, `a`, `b` and `c`.
pub(crate) fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
