//! Rules about names and declarations.

use std::collections::HashMap;

use super::suggest::did_you_mean;
use super::{Ctx, with_branches};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::{BudgetValue, File, Ident, Item, LlmOutput, StepKind};

/// Names generated code defines in every program module, and the prelude names it relies on
/// (`Option`, `Some`, `Ok`, `String`, ...): a choice enum never takes one of them.
pub(crate) const GENERATED_TYPES: &[&str] = &[
    "Input", "State", "Step", "Call", "Tools", "ToolsDyn", "Program", "Outcome", "Next", "Option",
    "Some", "None", "Result", "Ok", "Err", "String", "Vec", "Box", "Send", "Sync",
];

/// The budget keys (docs/language.md, "Files and programs"), and whether each takes a duration.
pub(crate) const BUDGET_KEYS: &[(&str, bool)] = &[
    ("max_steps", false),
    ("max_tokens", false),
    ("max_stalled_steps", false),
    ("max_duration", true),
    ("max_tool_calls", false),
];

/// Programs of one file become sibling Rust modules, so two with the same name cannot coexist.
pub(crate) fn check_duplicate_programs(file: &File, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &Ident> = HashMap::new();
    for p in &file.programs {
        if let Some(first) = seen.get(p.name.name.as_str()) {
            diags.push(duplicate("program", &p.name, first));
        } else {
            seen.insert(&p.name.name, &p.name);
        }
    }
}

/// A name that means two things makes every reference to it ambiguous: steps and parallel
/// branches share one namespace (targets and `after` name them), tools another, inputs a third;
/// parameters, arguments, choices and budget keys must each be unique in their list, and a
/// program has at most one `start` and one `budget`.
pub(super) fn check_duplicate_names(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    let mut steps: HashMap<&str, &Ident> = HashMap::new();
    for step in &ctx.steps {
        let mut all = vec![&step.name];
        if let StepKind::Parallel(p) = &step.kind {
            all.extend(p.branches.iter().map(|b| &b.name));
        }
        for name in all {
            match steps.get(name.name.as_str()) {
                Some(first) => diags.push(duplicate("step", name, first)),
                None => {
                    steps.insert(&name.name, name);
                }
            }
        }
    }
    let mut tools: HashMap<&str, &Ident> = HashMap::new();
    for tool in &ctx.tools {
        match tools.get(tool.name.name.as_str()) {
            Some(first) => diags.push(duplicate("tool", &tool.name, first)),
            None => {
                tools.insert(&tool.name.name, &tool.name);
            }
        }
        unique_in_list(tool.params.iter().map(|p| &p.name), "parameter", &mut diags);
    }
    unique_in_list(ctx.program.inputs().map(|f| &f.name), "input", &mut diags);
    for step in ctx.steps.iter().flat_map(|s| with_branches(s)) {
        match &step.kind {
            StepKind::Llm(l) => {
                if let Some(LlmOutput::Choose { choices, .. }) = &l.output {
                    unique_in_list(choices.iter(), "choice", &mut diags);
                }
            }
            StepKind::Call(c) => {
                unique_in_list(c.args.iter().map(|a| &a.name), "argument", &mut diags)
            }
            _ => {}
        }
    }
    let mut first_start = None;
    let mut first_budget = None;
    for item in &ctx.program.items {
        match item {
            Item::Start(s) => match first_start {
                None => first_start = Some(s.span),
                Some(first) => diags.push(
                    Diagnostic::error(codes::E0101, "`start` is declared twice", s.span)
                        .with_label("second `start`")
                        .with_secondary(first, "first declared here")
                        .with_help("a program has exactly one entry step; remove one of them"),
                ),
            },
            Item::Budget(b) => {
                match first_budget {
                    None => first_budget = Some(b.span),
                    Some(first) => diags.push(
                        Diagnostic::error(codes::E0101, "`budget` is declared twice", b.span)
                            .with_label("second `budget`")
                            .with_secondary(first, "first declared here")
                            .with_help("merge the two blocks into one"),
                    ),
                }
                unique_in_list(b.entries.iter().map(|e| &e.key), "budget key", &mut diags);
            }
            _ => {}
        }
    }
    ctx.diags.extend(diags);
}

/// Names become Rust identifiers (modules, fields, enum variants) and appear in traces and
/// pictures; one spelling convention keeps generated code warning-free and names predictable.
/// Names must be snake_case, must not be reserved by Rust in a way `r#` cannot escape, must not
/// collide once converted to PascalCase, and a `choose` variable's enum must not shadow a type
/// the generated module defines.
pub(super) fn check_name_style(ctx: &mut Ctx<'_>) {
    let program = ctx.program;
    let mut names: Vec<&Ident> = vec![&program.name];
    names.extend(ctx.tools.iter().map(|t| &t.name));
    names.extend(
        ctx.tools
            .iter()
            .flat_map(|t| t.params.iter().map(|p| &p.name)),
    );
    names.extend(program.inputs().map(|f| &f.name));
    for step in ctx.steps.iter().flat_map(|s| with_branches(s)) {
        names.push(&step.name);
        match &step.kind {
            StepKind::Llm(l) => match &l.output {
                Some(LlmOutput::Choose { var, choices, .. }) => {
                    names.push(var);
                    names.extend(choices.iter());
                }
                Some(LlmOutput::Into { var, .. }) | Some(LlmOutput::Answer { var, .. }) => {
                    names.push(var)
                }
                None => {}
            },
            StepKind::Call(c) => names.extend(c.into.iter()),
            StepKind::Await(a) => {
                names.push(&a.event);
                names.extend(a.into.iter());
            }
            _ => {}
        }
    }
    for name in names {
        if let Some(d) = style_error(name) {
            ctx.diags.push(d);
        }
    }

    // PascalCase collisions: steps (the `Step` enum), tools (the `Call` enum), choice members.
    let mut diags = Vec::new();
    let steps: Vec<&Ident> = ctx.steps.iter().map(|s| &s.name).collect();
    pascal_collisions(&steps, "step", "Step", &mut diags);
    let tools: Vec<&Ident> = ctx.tools.iter().map(|t| &t.name).collect();
    pascal_collisions(&tools, "tool", "Call", &mut diags);
    for set in &ctx.choices {
        pascal_collisions(
            &set.members,
            "choice",
            &choice_type_name(set.var),
            &mut diags,
        );
    }
    // Two choice variables whose enums would get the same name.
    let mut enums: HashMap<String, &str> = HashMap::new();
    for set in &ctx.choices {
        let name = choice_type_name(set.var);
        match enums.get(&name) {
            Some(first) if *first != set.var => {
                let span = ctx
                    .vars
                    .iter()
                    .find(|v| v.name == set.var)
                    .and_then(|v| v.defs.first())
                    .map_or(set.members[0].span, |d| d.ident.span);
                diags.push(
                    Diagnostic::error(
                        codes::E0101,
                        format!(
                            "the choice variables `{first}` and `{}` would both become the enum `{name}` in generated Rust",
                            set.var
                        ),
                        span,
                    )
                    .with_label("clashes with an earlier choice variable")
                    .with_help("rename one of them"),
                );
            }
            Some(_) => {}
            None => {
                enums.insert(name, set.var);
            }
        }
    }
    ctx.diags.extend(diags);
}

/// A budget entry the runtime would not understand, or one of the wrong kind, would silently
/// not limit anything, which is the opposite of what a budget is for.
pub(super) fn check_budget(ctx: &mut Ctx<'_>) {
    let Some(budget) = ctx.program.budget() else {
        return;
    };
    for entry in &budget.entries {
        let key = entry.key.name.as_str();
        let Some(&(_, wants_duration)) = BUDGET_KEYS.iter().find(|(k, _)| *k == key) else {
            let mut d = Diagnostic::error(
                codes::E0109,
                format!("`{key}` is not a budget"),
                entry.key.span,
            )
            .with_label("unknown budget key")
            .with_note(format!(
                "budgets are {}",
                BUDGET_KEYS
                    .iter()
                    .map(|(k, _)| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            if let Some(s) = did_you_mean(key, BUDGET_KEYS.iter().map(|(k, _)| *k)) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            ctx.diags.push(d);
            continue;
        };
        match (&entry.value, wants_duration) {
            (BudgetValue::Int(n), false) => {
                let min = if key == "max_stalled_steps" { 0 } else { 1 };
                if n.value < min {
                    ctx.diags.push(
                        Diagnostic::error(
                            codes::E0109,
                            format!("`{key}` must be at least {min}"),
                            n.span,
                        )
                        .with_label(format!("{} is not a usable limit", n.value)),
                    );
                }
            }
            (BudgetValue::Duration(d), true) => {
                if d.millis == 0 {
                    ctx.diags.push(
                        Diagnostic::error(
                            codes::E0109,
                            "`max_duration` must be longer than zero",
                            d.span,
                        )
                        .with_label("zero duration"),
                    );
                }
            }
            (BudgetValue::Int(n), true) => ctx.diags.push(
                Diagnostic::error(codes::E0109, format!("`{key}` takes a duration"), n.span)
                    .with_label("a bare number")
                    .with_help(format!(
                        "add a unit, e.g. `{}s` or `{}ms`",
                        n.value, n.value
                    )),
            ),
            (BudgetValue::Duration(d), false) => ctx.diags.push(
                Diagnostic::error(
                    codes::E0109,
                    format!("`{key}` takes a count, not a duration"),
                    d.span,
                )
                .with_label("a duration"),
            ),
        }
    }
}

/// The entry step must exist and be a step (a parallel branch only runs inside its block), and
/// a program without steps has nothing to run.
pub(super) fn check_start(ctx: &mut Ctx<'_>) {
    if ctx.steps.is_empty() {
        ctx.diags.push(
            Diagnostic::error(
                codes::E0110,
                format!("program `{}` has no steps", ctx.program.name),
                ctx.program.name.span,
            )
            .with_label("nothing to run")
            .with_help("add steps, at least one `end NAME: success`"),
        );
        return;
    }
    let Some(start) = ctx.program.start() else {
        return;
    };
    let name = start.target.name.as_str();
    if ctx.step_index.contains_key(name) {
        return;
    }
    let mut d = Diagnostic::error(
        codes::E0102,
        format!("`{name}` names no step"),
        start.target.span,
    )
    .with_label("`start` must name a step");
    if let Some(site) = ctx.branch_index.get(name) {
        d = d.with_note(format!(
            "`{name}` is a branch of the parallel step `{}`; branches only run inside their block",
            ctx.steps[site.step].name
        ));
    } else if let Some(s) = did_you_mean(name, sorted_steps(ctx)) {
        d = d.with_help(format!("did you mean `{s}`?"));
    }
    ctx.diags.push(d);
}

/// Step names in source order (for deterministic suggestions).
pub(super) fn sorted_steps<'a>(ctx: &Ctx<'a>) -> Vec<&'a str> {
    ctx.steps
        .iter()
        .enumerate()
        .filter(|(i, _)| !ctx.duplicate_step[*i])
        .map(|(_, s)| s.name.name.as_str())
        .collect()
}

fn duplicate(what: &str, name: &Ident, first: &Ident) -> Diagnostic {
    Diagnostic::error(
        codes::E0101,
        format!("the {what} `{}` is defined more than once", name.name),
        name.span,
    )
    .with_label(format!("`{}` redefined here", name.name))
    .with_secondary(first.span, "first defined here")
    .with_help(format!("rename or remove one of the two {what}s"))
}

fn unique_in_list<'a>(
    names: impl Iterator<Item = &'a Ident>,
    what: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let mut seen: HashMap<&str, &Ident> = HashMap::new();
    for name in names {
        match seen.get(name.name.as_str()) {
            Some(first) => diags.push(duplicate(what, name, first)),
            None => {
                seen.insert(&name.name, name);
            }
        }
    }
}

fn is_snake_case(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.split('_').all(|part| !part.is_empty())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn style_error(name: &Ident) -> Option<Diagnostic> {
    let s = name.name.as_str();
    if matches!(s, "self" | "super" | "crate") {
        return Some(
            Diagnostic::error(
                codes::E0108,
                format!("`{s}` cannot be a name: Rust reserves it even as a raw identifier"),
                name.span,
            )
            .with_label("reserved"),
        );
    }
    if is_snake_case(s) {
        return None;
    }
    let suggestion = to_snake(s);
    let mut d = Diagnostic::error(
        codes::E0108,
        format!("`{s}` is not a snake_case name"),
        name.span,
    )
    .with_label("names are lowercase words joined by single underscores");
    if is_snake_case(&suggestion) {
        d = d.with_help(format!("write `{suggestion}`"));
    }
    Some(d)
}

fn to_snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '_' {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
        } else {
            out.push(c);
        }
    }
    out.trim_end_matches('_').to_string()
}

/// The Rust name of the enum holding a choice variable: its PascalCase spelling, with `Choice`
/// appended when that would shadow a name the generated module relies on (`ok` -> `OkChoice`,
/// `step` -> `StepChoice`).
pub(crate) fn choice_type_name(var: &str) -> String {
    let name = pascal(var);
    if GENERATED_TYPES.contains(&name.as_str()) {
        format!("{name}Choice")
    } else {
        name
    }
}

/// `order_id` -> `OrderId`: the spelling of a name as a Rust type or variant.
pub(crate) fn pascal(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn pascal_collisions(names: &[&Ident], what: &str, owner: &str, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<String, &Ident> = HashMap::new();
    for name in names {
        let p = pascal(&name.name);
        match seen.get(&p) {
            Some(first) if first.name != name.name => diags.push(
                Diagnostic::error(
                    codes::E0101,
                    format!(
                        "the {what}s `{}` and `{}` would both become `{owner}::{p}` in generated Rust",
                        first.name, name.name
                    ),
                    name.span,
                )
                .with_label("clashes with an earlier name")
                .with_secondary(first.span, "the earlier name")
                .with_help("rename one of them"),
            ),
            Some(_) => {}
            None => {
                seen.insert(p, name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case() {
        assert!(is_snake_case("order_id"));
        assert!(is_snake_case("a1_b2"));
        assert!(!is_snake_case("OrderId"));
        assert!(!is_snake_case("a__b"));
        assert!(!is_snake_case("_a"));
        assert!(!is_snake_case("a_"));
        assert_eq!(to_snake("OrderId"), "order_id");
        assert_eq!(pascal("order_id"), "OrderId");
    }
}
