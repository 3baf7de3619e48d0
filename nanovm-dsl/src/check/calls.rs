//! Rules about tools and calls.

use std::collections::HashMap;

use super::Ctx;
use super::suggest::did_you_mean;
use super::types::{Ty, assignable, infer};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::{ExprKind, StepKind, TypeKind};

/// Declarations must describe something the runtime can honour: `idempotent` is a promise about
/// side effects, so it means nothing on a read-only tool; and a tool result becomes an ordinary
/// variable, which cannot hold a secret.
pub(super) fn check_tool_declarations(ctx: &mut Ctx<'_>) {
    for tool in &ctx.tools {
        if let (Some(span), None) = (tool.idempotent, tool.effect) {
            ctx.diags.push(
                Diagnostic::error(
                    codes::E0206,
                    format!(
                        "`idempotent` only applies to effect tools, and `{}` is read-only",
                        tool.name
                    ),
                    span,
                )
                .with_label("has no effect to repeat")
                .with_help(format!(
                    "declare it `effect tool {}`, or remove `idempotent`",
                    tool.name
                )),
            );
        }
        if matches!(tool.ret.kind, TypeKind::Secret(_)) {
            ctx.diags.push(
                Diagnostic::error(
                    codes::E0206,
                    "tools cannot return `secret` values",
                    tool.ret.span,
                )
                .with_label("a tool result is an ordinary variable")
                .with_help("return the value's vault reference as `json`, or a non-secret type"),
            );
        }
    }
}

/// A call is checked against the tool's declared signature so the host's typed `Tools` trait
/// and the program agree at compile time: the tool must be declared, and every parameter gets
/// exactly one argument of the declared type.
pub(super) fn check_calls(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    let scope = ctx.scope();
    let tool_names: Vec<&str> = ctx.tools.iter().map(|t| t.name.name.as_str()).collect();
    for step in ctx.steps.iter().flat_map(|s| super::with_branches(s)) {
        let StepKind::Call(call) = &step.kind else {
            continue;
        };
        let Some(&t) = ctx.tool_index.get(call.tool.name.as_str()) else {
            let mut d = Diagnostic::error(
                codes::E0201,
                format!("`{}` is not a declared tool", call.tool.name),
                call.tool.span,
            )
            .with_label("undeclared tool");
            d = match did_you_mean(&call.tool.name, tool_names.iter().copied()) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d.with_help(format!(
                    "declare it before use, e.g. `tool {}(...) -> json`; a program can only call the tools it declares",
                    call.tool.name
                )),
            };
            diags.push(d);
            continue;
        };
        let tool = ctx.tools[t];
        let params: HashMap<&str, usize> = tool
            .params
            .iter()
            .enumerate()
            .rev()
            .map(|(i, p)| (p.name.name.as_str(), i))
            .collect();
        let mut given = vec![false; tool.params.len()];
        for arg in &call.args {
            let Some(&p) = params.get(arg.name.name.as_str()) else {
                let mut d = Diagnostic::error(
                    codes::E0203,
                    format!("`{}` has no parameter `{}`", tool.name, arg.name),
                    arg.name.span,
                )
                .with_label("unknown argument")
                .with_secondary(tool.name.span, format!("`{}` is declared here", tool.name));
                if let Some(s) = did_you_mean(
                    &arg.name.name,
                    tool.params.iter().map(|p| p.name.name.as_str()),
                ) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                diags.push(d);
                continue;
            };
            given[p] = true;
            let param = &tool.params[p];
            let want = Ty::from_kind(&param.ty.kind);
            let is_secret_path = matches!(&arg.value.kind, ExprKind::Path(_))
                && matches!(infer(&arg.value, &scope, &mut Vec::new()).ty, Ty::Secret(_));
            let typed = infer(&arg.value, &scope, &mut diags);
            if is_secret_path || matches!(want, Ty::Secret(_)) && matches!(typed.ty, Ty::Secret(_))
            {
                continue; // secrets have their own rule
            }
            if scope.unknown_record(&want) || scope.unknown_record(&typed.ty) {
                continue; // an undeclared type: reported by check_type_names
            }
            if !assignable(&typed.ty, &want) {
                let mut d = Diagnostic::error(
                    codes::E0204,
                    format!(
                        "argument `{}` of `{}` must be {}, found {}",
                        arg.name,
                        tool.name,
                        want.describe(&ctx.choices),
                        typed.ty.describe(&ctx.choices)
                    ),
                    arg.value.span,
                )
                .with_label(format!("this is {}", typed.ty.describe(&ctx.choices)))
                .with_secondary(param.ty.span, "parameter declared here");
                if let Ty::Secret(inner) = &want {
                    d = d.with_help(format!(
                        "the parameter takes a secret: declare the value's input as `secret {inner}`"
                    ));
                }
                diags.push(d);
            }
        }
        let missing: Vec<String> = tool
            .params
            .iter()
            .zip(&given)
            .filter(|(_, g)| !**g)
            .map(|(p, _)| format!("`{}: {}`", p.name, p.ty.kind))
            .collect();
        if !missing.is_empty() {
            let s = if missing.len() == 1 { "" } else { "s" };
            diags.push(
                Diagnostic::error(
                    codes::E0202,
                    format!(
                        "call to `{}` is missing argument{s} {}",
                        tool.name,
                        missing.join(", ")
                    ),
                    call.args_span,
                )
                .with_label(format!("missing {}", missing.join(", ")))
                .with_secondary(tool.name.span, format!("`{}` is declared here", tool.name)),
            );
        }
    }
    ctx.diags.extend(diags);
}
