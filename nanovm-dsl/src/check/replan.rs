//! Rules about replanning edges (`on budget_exceeded -> S replans N budget { ... }`).
//!
//! The graph rules (unreachable steps, traps, cycles, definite assignment) already count a
//! replanning edge as an edge from every step to its target (`Ctx::replan_targets`); these
//! rules are about the edges themselves.

use std::collections::{HashMap, VecDeque};

use super::graph::{effect_calls, sorted_edges};
use super::suggest::did_you_mean;
use super::{Ctx, names::sorted_steps};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::{BudgetValue, ReplanOn, StepKind};

/// The budget keys a slice may set, and whether each is a duration.
const KEYS: &[(&str, bool)] = &[
    ("max_steps", false),
    ("max_tokens", false),
    ("max_stalled_steps", false),
    ("max_duration", true),
    ("max_tool_calls", false),
];

/// A replan must be bounded and land somewhere that can plan again: at most one edge per
/// interruption (the run could not tell which to take), `replans` between 1 and 100, a target
/// that is a step and not an `end` (an edge to an end is the run ending, which needs no edge),
/// and a slice of known, positive budgets that sets every budget the program declares (one it
/// leaves out is used up already when a budget trips, so the replan would trip again at once).
pub(super) fn check_replan_edges(ctx: &mut Ctx<'_>) {
    let names = sorted_steps(ctx);
    let declared: Vec<&str> = ctx
        .program
        .budget()
        .map(|b| b.entries.iter().map(|e| e.key.name.as_str()).collect())
        .unwrap_or_default();
    let mut seen: HashMap<ReplanOn, crate::syntax::ast::Span> = HashMap::new();
    let mut diags = Vec::new();
    for r in ctx.program.replans() {
        if let Some(first) = seen.get(&r.on) {
            diags.push(
                Diagnostic::error(
                    codes::E0115,
                    format!("`on {}` is declared twice", r.on.as_str()),
                    r.on_span,
                )
                .with_label("second edge")
                .with_secondary(*first, "first declared here")
                .with_help("a run can continue in one place only; keep one of them"),
            );
        } else {
            seen.insert(r.on, r.on_span);
        }
        if !(1..=100).contains(&r.replans.value) {
            diags.push(
                Diagnostic::error(
                    codes::E0115,
                    format!("`replans {}` is out of range", r.replans.value),
                    r.replans.span,
                )
                .with_label("must be 1..=100")
                .with_help("bound the replans: the run ends as before once they are used"),
            );
        }
        let target = r.target.name.name.as_str();
        match ctx.step_index.get(target) {
            None => {
                let mut d = Diagnostic::error(
                    codes::E0102,
                    format!("`{target}` names no step"),
                    r.target.name.span,
                )
                .with_label(format!("no step named `{target}`"));
                if let Some(s) = did_you_mean(target, names.iter().copied()) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                diags.push(d);
            }
            Some(&t) if matches!(ctx.steps[t].kind, StepKind::End(_)) => diags.push(
                Diagnostic::error(
                    codes::E0115,
                    format!("the replanning edge leads to the `end` `{target}`"),
                    r.target.name.span,
                )
                .with_label("an end, not a step that plans again")
                .with_help(format!(
                    "without the edge the run ends `{}` already; point it at a step that plans again",
                    r.on.as_str()
                )),
            ),
            Some(_) => {}
        }
        for e in &r.slice.entries {
            let key = e.key.name.as_str();
            let Some(&(_, duration)) = KEYS.iter().find(|(k, _)| *k == key) else {
                let mut d =
                    Diagnostic::error(codes::E0109, format!("`{key}` is not a budget"), e.key.span)
                        .with_label("unknown budget key");
                if let Some(s) = did_you_mean(key, KEYS.iter().map(|(k, _)| *k)) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                diags.push(d);
                continue;
            };
            let bad = match &e.value {
                BudgetValue::Int(n) => duration || n.value <= 0,
                BudgetValue::Duration(d) => !duration || d.millis == 0,
            };
            if bad {
                diags.push(
                    Diagnostic::error(
                        codes::E0109,
                        format!(
                            "`{key}` in a replan slice must be a positive {}",
                            if duration { "duration" } else { "count" }
                        ),
                        e.span,
                    )
                    .with_label("a slice that limits nothing, or the wrong kind of value"),
                );
            }
        }
        if r.on == ReplanOn::BudgetExceeded {
            let missing: Vec<&str> = declared
                .iter()
                .copied()
                .filter(|k| *k != "max_stalled_steps")
                .filter(|k| !r.slice.entries.iter().any(|e| e.key.name == *k))
                .collect();
            if !missing.is_empty() {
                diags.push(
                    Diagnostic::error(
                        codes::E0115,
                        format!(
                            "the replan slice leaves out {}, which the program's budget declares",
                            super::graph::list(&missing)
                        ),
                        r.slice.span,
                    )
                    .with_label("a fresh slice for every budget that can trip")
                    .with_help(
                        "a budget the slice leaves out is used up when another trips, so the replan would end at once; give each a value",
                    ),
                );
            }
        }
    }
    ctx.diags.extend(diags);
}

/// The guardrail rule for replanning: a budget can run out after any step, including right
/// after a guard let one effect through, and the run then continues at the target. So the
/// guard the run passed before the interruption proves nothing about what the target leads
/// to: every path from a replan target to an `effect` call must pass a `guard` of its own.
pub(super) fn check_replan_guarded(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    for r in ctx.program.replans() {
        let Some(&target) = ctx.step_index.get(r.target.name.name.as_str()) else {
            continue;
        };
        // Breadth-first from the target, never expanding through a guard; parents give a path.
        let n = ctx.steps.len();
        let mut parent: Vec<Option<usize>> = vec![None; n];
        let mut seen = vec![false; n];
        seen[target] = true;
        let mut queue = VecDeque::from([target]);
        let mut order = Vec::new();
        while let Some(s) = queue.pop_front() {
            order.push(s);
            if matches!(ctx.steps[s].kind, StepKind::Guard(_)) {
                continue;
            }
            for t in sorted_edges(ctx, s) {
                if !seen[t] {
                    seen[t] = true;
                    parent[t] = Some(s);
                    queue.push_back(t);
                }
            }
        }
        order.sort_unstable();
        for s in order {
            for (site, tool, span) in effect_calls(ctx, s) {
                let mut path = vec![s];
                while let Some(p) = parent[*path.last().expect("nonempty")] {
                    path.push(p);
                }
                path.reverse();
                diags.push(
                    Diagnostic::error(
                        codes::E0116,
                        format!(
                            "replanning bypasses a guard: `on {}` continues at `{}`, which reaches the effect call `{site}` without passing a guard",
                            r.on.as_str(),
                            r.target.name.name
                        ),
                        r.target.name.span,
                    )
                    .with_label("the run continues here after the interruption")
                    .with_secondary(span, format!("calls the effect tool `{tool}`"))
                    .with_note(format!("for example along {}", ctx.path_text(&path)))
                    .with_help(format!(
                        "put a `guard` between `{}` and `{site}`, or replan to a step before a guard",
                        r.target.name.name
                    )),
                );
            }
        }
    }
    ctx.diags.extend(diags);
}
