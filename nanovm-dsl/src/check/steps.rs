//! Rules about the shape of individual steps.

use std::collections::HashMap;

use super::suggest::did_you_mean;
use super::{Ctx, with_branches};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::{IntLit, LlmOutput, LlmStep, Span, StepKind};

/// Largest `retry N` accepted: beyond this a retry loop is a denial of service, not resilience.
pub(crate) const MAX_RETRY: i64 = 100;
/// Largest `max_concurrency N` accepted.
pub(crate) const MAX_CONCURRENCY: i64 = 1024;

/// A guard must decide something for every input, or the run would stop in the middle of a
/// decision: `otherwise` is mandatory, comes once, and comes last (an arm after it could never
/// fire).
pub(super) fn check_otherwise(ctx: &mut Ctx<'_>) {
    for step in &ctx.steps {
        let (StepKind::Guard(d) | StepKind::Branch(d)) = &step.kind else {
            continue;
        };
        let kw = step.kind.keyword();
        match d.otherwise.as_slice() {
            [] => ctx.diags.push(
                Diagnostic::error(
                    codes::E0107,
                    format!("{kw} `{}` has no `otherwise` arm", step.name),
                    step.name.span,
                )
                .with_label(format!("this {kw} must decide for every input"))
                .with_help("add `otherwise -> STEP` as its last arm"),
            ),
            [first, rest @ ..] => {
                for extra in rest {
                    ctx.diags.push(
                        Diagnostic::error(
                            codes::E0107,
                            format!("{kw} `{}` has more than one `otherwise` arm", step.name),
                            extra.span,
                        )
                        .with_label("second `otherwise`")
                        .with_secondary(first.span, "first `otherwise`"),
                    );
                }
                for arm in d.arms.iter().filter(|a| a.span.start > first.span.start) {
                    ctx.diags.push(
                        Diagnostic::error(
                            codes::E0107,
                            "this arm can never fire: `otherwise` above it always wins",
                            arm.span,
                        )
                        .with_label("unreachable arm")
                        .with_secondary(first.span, "`otherwise` is here")
                        .with_help("move `otherwise` to the end"),
                    );
                }
            }
        }
    }
}

/// An `llm` step without a prompt asks nothing; `on invalid` only makes sense when there is an
/// admissible set to miss (free text is never invalid).
pub(super) fn check_llm_steps(ctx: &mut Ctx<'_>) {
    for step in ctx.steps.iter().flat_map(|s| with_branches(s)) {
        let StepKind::Llm(l) = &step.kind else {
            continue;
        };
        if l.prompt.is_none() {
            ctx.diags.push(
                Diagnostic::error(
                    codes::E0112,
                    format!("llm step `{}` has no `prompt`", step.name),
                    step.name.span,
                )
                .with_label("nothing to ask the model")
                .with_help("add `prompt: \"...\"` inside the braces"),
            );
        }
        if let (Some(inv), None | Some(LlmOutput::Into { .. })) = (&l.on_invalid, &l.output) {
            ctx.diags.push(
                Diagnostic::error(
                    codes::E0112,
                    "`on invalid` needs `choose` or `answer`: a free-text answer is never invalid",
                    inv.span,
                )
                .with_label("this edge can never be taken")
                .with_help(
                    "add `choose VAR from [a, b]` or `answer VAR: TYPE`, or remove `on invalid`",
                ),
            );
        }
    }
}

/// `min_confidence P` makes an unsure answer invalid, so it needs an admissible set and an
/// `on invalid` edge for the unsure answer to take (a parallel branch has none), and `P` must be
/// a probability that some answer can meet: in (0, 1].
pub(super) fn check_min_confidence(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    for step in &ctx.steps {
        let mut each = |l: &LlmStep, branch_of: Option<&str>| {
            let Some(m) = &l.min_confidence else {
                return;
            };
            if !(m.value > 0.0 && m.value <= 1.0) {
                diags.push(
                    Diagnostic::error(
                        codes::E0114,
                        format!(
                            "`min_confidence {}` is not a probability in (0, 1]",
                            m.value
                        ),
                        m.span,
                    )
                    .with_label("outside (0, 1]")
                    .with_help("write a probability such as `min_confidence 0.9`"),
                );
            }
            if let Some(parallel) = branch_of {
                diags.push(
                    Diagnostic::error(
                        codes::E0114,
                        "a parallel branch cannot take `min_confidence`",
                        m.span,
                    )
                    .with_label(format!("inside parallel step `{parallel}`"))
                    .with_help(
                        "an unsure answer needs an `on invalid` edge to take, which branches \
                         cannot have; make it an `llm` step of its own",
                    ),
                );
                return;
            }
            if !matches!(l.output, Some(LlmOutput::Choose { .. })) {
                diags.push(
                    Diagnostic::error(
                        codes::E0114,
                        "`min_confidence` needs `choose`: only a choice has a confidence",
                        m.span,
                    )
                    .with_label("no admissible answers to be sure of")
                    .with_help("add `choose VAR from [a, b]`, or remove `min_confidence`"),
                );
            } else if l.on_invalid.is_none() {
                diags.push(
                    Diagnostic::error(
                        codes::E0114,
                        "`min_confidence` needs `on invalid`: an unsure answer must go somewhere",
                        m.span,
                    )
                    .with_label("an answer below this has no edge to take")
                    .with_help("add `on invalid -> S`, e.g. a step where a person decides"),
                );
            }
        };
        match &step.kind {
            StepKind::Llm(l) => each(l, None),
            StepKind::Parallel(p) => {
                for b in &p.branches {
                    if let StepKind::Llm(l) = &b.kind {
                        each(l, Some(step.name.name.as_str()));
                    }
                }
            }
            _ => {}
        }
    }
    ctx.diags.extend(diags);
}

/// Parallel branches run inside their block and report back to it: they cannot have error
/// edges of their own; `after` must name sibling branches and form no cycle (the block
/// is ordered at compile time); two branches assigning one variable would race.
pub(super) fn check_parallel_branches(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    for step in &ctx.steps {
        let StepKind::Parallel(p) = &step.kind else {
            continue;
        };
        if p.branches.is_empty() {
            diags.push(
                Diagnostic::error(
                    codes::E0111,
                    format!("parallel step `{}` has no branches", step.name),
                    step.name.span,
                )
                .with_label("nothing to run")
                .with_help("add `call` or `llm` branches inside the braces"),
            );
            continue;
        }
        let names: HashMap<&str, usize> = p
            .branches
            .iter()
            .enumerate()
            .rev()
            .map(|(i, b)| (b.name.name.as_str(), i))
            .collect();
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); p.branches.len()];
        for (bi, branch) in p.branches.iter().enumerate() {
            // (A branch's own `-> S` is already a syntax error.)
            let (on_error, on_invalid, after) = match &branch.kind {
                StepKind::Llm(l) => (&l.on_error, &l.on_invalid, &l.after),
                StepKind::Call(c) => (&c.on_error, &None, &c.after),
                _ => continue,
            };
            for (t, what) in [
                (on_error, "an `on error` edge"),
                (on_invalid, "an `on invalid` edge"),
            ] {
                if let Some(t) = t {
                    diags.push(
                        Diagnostic::error(
                            codes::E0111,
                            format!("a parallel branch cannot have {what} of its own"),
                            t.span,
                        )
                        .with_label(format!("inside parallel step `{}`", step.name))
                        .with_help(format!(
                            "branches report back to their block; put the edge on `{}` itself",
                            step.name
                        )),
                    );
                }
            }
            for a in after {
                match names.get(a.name.as_str()) {
                    Some(&d) if d == bi => diags.push(
                        Diagnostic::error(
                            codes::E0111,
                            format!("branch `{}` cannot run after itself", a.name),
                            a.span,
                        )
                        .with_label("self-dependency"),
                    ),
                    Some(&d) => deps[bi].push(d),
                    None => {
                        let mut d = Diagnostic::error(
                            codes::E0102,
                            format!("`{}` names no branch of `{}`", a.name, step.name),
                            a.span,
                        )
                        .with_label("`after` must name a sibling branch");
                        if let Some(s) =
                            did_you_mean(&a.name, p.branches.iter().map(|b| b.name.name.as_str()))
                        {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        }
                        diags.push(d);
                    }
                }
            }
        }
        if let Some(cycle) = dependency_cycle(&deps) {
            let names: Vec<String> = cycle
                .iter()
                .map(|&b| format!("`{}`", p.branches[b].name))
                .collect();
            let first = &p.branches[cycle[0]];
            let mut d = Diagnostic::error(
                codes::E0111,
                format!(
                    "branches {} wait for each other in a cycle",
                    names.join(", ")
                ),
                first.name.span,
            )
            .with_label("part of the cycle")
            .with_help("`after` must form an order; remove one dependency");
            for &b in &cycle[1..] {
                d = d.with_secondary(p.branches[b].name.span, "also in the cycle");
            }
            diags.push(d);
        }
        // Two branches writing one variable.
        let mut writers: HashMap<&str, (&str, Span)> = HashMap::new();
        for branch in &p.branches {
            let var = match &branch.kind {
                StepKind::Llm(l) => l.output.as_ref().map(|o| o.var()),
                StepKind::Call(c) => c.into.as_ref(),
                _ => None,
            };
            if let Some(var) = var {
                match writers.get(var.name.as_str()) {
                    Some((first, first_span)) => diags.push(
                        Diagnostic::error(
                            codes::E0113,
                            format!(
                                "branches `{first}` and `{}` both assign `{}`",
                                branch.name, var.name
                            ),
                            var.span,
                        )
                        .with_label("second assignment")
                        .with_secondary(*first_span, "first assignment")
                        .with_help("concurrent branches must write different variables"),
                    ),
                    None => {
                        writers.insert(&var.name, (&branch.name.name, var.span));
                    }
                }
            }
        }
    }
    ctx.diags.extend(diags);
}

/// Counts that are out of range would make a step useless (`max_tokens: 0`) or turn a retry
/// into an endless hammering of someone else's service.
pub(super) fn check_counts(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    let range = |lit: &IntLit, what: &str, min: i64, max: i64, diags: &mut Vec<Diagnostic>| {
        if lit.value < min || lit.value > max {
            diags.push(
                Diagnostic::error(
                    codes::E0112,
                    format!("{what} must be between {min} and {max}"),
                    lit.span,
                )
                .with_label(format!("{} is out of range", lit.value)),
            );
        }
    };
    for step in ctx.steps.iter().flat_map(|s| with_branches(s)) {
        match &step.kind {
            StepKind::Llm(l) => {
                if let Some(r) = &l.retry {
                    range(r, "`retry`", 0, MAX_RETRY, &mut diags);
                }
                if let Some(m) = &l.max_tokens {
                    range(m, "`max_tokens`", 1, i64::from(u32::MAX), &mut diags);
                }
            }
            StepKind::Call(c) => {
                if let Some(r) = &c.retry {
                    range(r, "`retry`", 0, MAX_RETRY, &mut diags);
                }
            }
            StepKind::Parallel(p) => {
                if let Some(r) = &p.retry {
                    range(r, "`retry`", 0, MAX_RETRY, &mut diags);
                }
                if let Some(m) = &p.max_concurrency {
                    range(m, "`max_concurrency`", 1, MAX_CONCURRENCY, &mut diags);
                }
            }
            StepKind::Await(a) => {
                if let Some((d, _)) = &a.timeout
                    && d.millis == 0
                {
                    diags.push(
                        Diagnostic::error(
                            codes::E0112,
                            "a timeout must be longer than zero",
                            d.span,
                        )
                        .with_label("zero duration"),
                    );
                }
            }
            _ => {}
        }
    }
    ctx.diags.extend(diags);
}

/// A cycle among `after` dependencies, as branch indices in order, if there is one.
fn dependency_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    // Iterative three-colour DFS; deps are small but never trust input sizes with recursion.
    let n = deps.len();
    let mut colour = vec![0u8; n];
    for root in 0..n {
        if colour[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        colour[root] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if *next < deps[node].len() {
                let to = deps[node][*next];
                *next += 1;
                match colour[to] {
                    0 => {
                        colour[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => {
                        let pos = stack.iter().position(|&(s, _)| s == to).unwrap_or(0);
                        return Some(stack[pos..].iter().map(|&(s, _)| s).collect());
                    }
                    _ => {}
                }
            } else {
                colour[node] = 2;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_dependency_cycles() {
        assert_eq!(dependency_cycle(&[vec![], vec![0], vec![1]]), None);
        assert_eq!(dependency_cycle(&[vec![1], vec![0]]), Some(vec![0, 1]));
        assert_eq!(
            dependency_cycle(&[vec![], vec![2], vec![1]]),
            Some(vec![1, 2])
        );
    }
}
