//! Rules about record, list and optional types (issue 16): the declarations themselves, the
//! names that use them, and the fields read through them.

use std::collections::HashMap;

use super::Ctx;
use super::suggest::did_you_mean;
use super::vars::uses;
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::syntax::ast::{Span, StepKind, Type, TypeKind};

/// A record type becomes one Rust struct, one JSON Schema and one run-time shape, so its
/// declaration must describe exactly one finite value: one declaration per name, one field per
/// name, and no type that contains itself (a record that holds itself, directly or through
/// other records, lists or optionals, has no finite JSON Schema-free shape and no Rust struct
/// without boxing).
pub(super) fn check_type_declarations(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for t in &ctx.types {
        if let Some(first) = seen.get(t.name.name.as_str()) {
            diags.push(
                Diagnostic::error(
                    codes::E0312,
                    format!("the type `{}` is declared twice", t.name),
                    t.name.span,
                )
                .with_label("declared again here")
                .with_secondary(*first, "first declared here")
                .with_help("rename one of them, or merge their fields"),
            );
            continue;
        }
        seen.insert(&t.name.name, t.name.span);
        let rust = super::names::pascal(&t.name.name);
        let choice = ctx
            .choices
            .iter()
            .any(|c| super::names::choice_type_name(c.var) == rust);
        if super::names::GENERATED_TYPES.contains(&rust.as_str()) || choice {
            diags.push(
                Diagnostic::error(
                    codes::E0312,
                    format!(
                        "the type `{}` would collide with the generated Rust type `{rust}`",
                        t.name
                    ),
                    t.name.span,
                )
                .with_label("name taken in the generated module")
                .with_help(format!("rename it, e.g. `{rust}Record`")),
            );
        }
        let mut fields: HashMap<&str, Span> = HashMap::new();
        for f in &t.fields {
            if let Some(first) = fields.get(f.name.name.as_str()) {
                diags.push(
                    Diagnostic::error(
                        codes::E0312,
                        format!("`{}` has two fields named `{}`", t.name, f.name),
                        f.name.span,
                    )
                    .with_label("declared again here")
                    .with_secondary(*first, "first declared here")
                    .with_help("a record has one field per name"),
                );
            } else {
                fields.insert(&f.name.name, f.name.span);
            }
        }
    }
    // Recursion: a depth-first search over "record A names record B in a field".
    for (i, t) in ctx.types.iter().enumerate() {
        if ctx.type_index.get(t.name.name.as_str()) != Some(&i) {
            continue;
        }
        let mut path = vec![t.name.name.as_str()];
        if let Some(cycle) = cycle_from(ctx, t.name.name.as_str(), &mut path) {
            diags.push(
                Diagnostic::error(
                    codes::E0312,
                    format!("the type `{}` contains itself", t.name),
                    t.name.span,
                )
                .with_label("recursive type")
                .with_note(format!("through {}", cycle.join(" -> ")))
                .with_help("a record holds plain data; refer to the other value by an id instead"),
            );
        }
    }
    ctx.diags.extend(diags);
}

/// The chain of type names from `root` back to itself, if a field of a type on `path` leads there.
fn cycle_from<'a>(ctx: &Ctx<'a>, root: &str, path: &mut Vec<&'a str>) -> Option<Vec<String>> {
    let current = *path.last()?;
    let &t = ctx.type_index.get(current)?;
    for f in &ctx.types[t].fields {
        let mut names = Vec::new();
        named_in(&f.ty.kind, &mut names);
        for n in names {
            if n == root {
                let mut out: Vec<String> = path.iter().map(|p| format!("`{p}`")).collect();
                out.push(format!("`{root}`"));
                return Some(out);
            }
            let Some((&name, _)) = ctx.type_index.get_key_value(n) else {
                continue;
            };
            if path.contains(&name) {
                continue; // another cycle, reported at its own root
            }
            path.push(name);
            if let Some(c) = cycle_from(ctx, root, path) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

/// The record type names a type mentions.
fn named_in<'k>(kind: &'k TypeKind, out: &mut Vec<&'k str>) {
    match kind {
        TypeKind::Named(n) => out.push(n),
        TypeKind::List(t) | TypeKind::Optional(t) | TypeKind::Secret(t) => named_in(t, out),
        _ => {}
    }
}

/// Every type the program writes (inputs, tool parameters and results, event payloads, typed
/// model answers, record fields) is generated as a Rust type and checked at the boundary by
/// its shape, so a name must be a declared record type: a misspelled one would mean nothing.
pub(super) fn check_type_names(ctx: &mut Ctx<'_>) {
    let written = written_types(ctx);
    let known: Vec<&str> = ctx.types.iter().map(|t| t.name.name.as_str()).collect();
    let mut diags = Vec::new();
    for ty in written {
        let mut names = Vec::new();
        named_in(&ty.kind, &mut names);
        for n in names {
            if ctx.type_index.contains_key(n) {
                continue;
            }
            let mut d = Diagnostic::error(codes::E0310, format!("unknown type `{n}`"), ty.span)
                .with_label("not a declared type");
            d = match did_you_mean(n, known.iter().copied()) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d.with_help(format!(
                    "declare it, e.g. `type {n} {{ id: string }}`; the built-in types are `string`, `int`, `float`, `bool` and `json`"
                )),
            };
            diags.push(d);
        }
    }
    ctx.diags.extend(diags);
}

/// A field read through a record (`refund.amount`, `{order.customer.name}`) is resolved
/// against the declared type at compile time, so a misspelled field is an error here rather
/// than a missing-field fault in the middle of a run.
pub(super) fn check_record_fields(ctx: &mut Ctx<'_>) {
    let scope = ctx.scope();
    let mut diags = Vec::new();
    for u in uses(ctx) {
        let Some(&v) = ctx.var_index.get(u.path.root().name.as_str()) else {
            continue; // unknown variable: its own rule
        };
        let mut ty = ctx.vars[v].ty.clone();
        for (i, field) in u.path.segments.iter().enumerate().skip(1) {
            let super::Ty::Record(r) = &ty else {
                break; // json fields, and fields of non-records (E0303), are not this rule's
            };
            let Some(&t) = ctx.type_index.get(r.as_str()) else {
                break; // unknown type: reported by check_type_names
            };
            match scope.field_ty(r, &field.name) {
                Some(next) => ty = next,
                None => {
                    let decl = ctx.types[t];
                    let base = u.path.segments[..i]
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(".");
                    let mut d = Diagnostic::error(
                        codes::E0311,
                        format!("`{base}` is a `{r}`, which has no field `{}`", field.name),
                        field.span,
                    )
                    .with_label("unknown field")
                    .with_secondary(decl.name.span, format!("`{r}` is declared here"));
                    let names = decl.fields.iter().map(|f| f.name.name.as_str());
                    d = match did_you_mean(&field.name, names.clone()) {
                        Some(s) => d.with_help(format!("did you mean `{s}`?")),
                        None => d.with_help(format!(
                            "the fields of `{r}` are {}",
                            names
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    };
                    diags.push(d);
                    break;
                }
            }
        }
    }
    ctx.diags.extend(diags);
}

/// Every type the program writes, in source order.
fn written_types<'a>(ctx: &Ctx<'a>) -> Vec<&'a Type> {
    let mut written: Vec<&'a Type> = Vec::new();
    written.extend(ctx.program.inputs().map(|f| &f.ty));
    for t in &ctx.tools {
        written.extend(t.params.iter().map(|p| &p.ty));
        written.push(&t.ret);
    }
    for t in &ctx.types {
        written.extend(t.fields.iter().map(|f| &f.ty));
    }
    for step in ctx.steps.iter().flat_map(|s| super::with_branches(s)) {
        match &step.kind {
            StepKind::Await(a) => written.extend(a.ty.iter()),
            StepKind::Llm(l) => {
                if let Some(crate::syntax::ast::LlmOutput::Answer { ty, .. }) = &l.output {
                    written.push(ty);
                }
            }
            _ => {}
        }
    }
    written.sort_by_key(|t| t.span.start);
    written
}

/// A `secret` lives in the vault as one opaque value per handle, and only tools see it: a
/// record, list or optional behind `secret` would be a typed value whose fields the program
/// could never read, and whose generated Rust type has no vault form.
pub(super) fn check_secret_types(ctx: &mut Ctx<'_>) {
    let mut diags = Vec::new();
    for ty in written_types(ctx) {
        if let TypeKind::Secret(inner) = &ty.kind
            && !matches!(
                **inner,
                TypeKind::String
                    | TypeKind::Int
                    | TypeKind::Float
                    | TypeKind::Bool
                    | TypeKind::Json
            )
        {
            diags.push(
                Diagnostic::error(
                    codes::E0313,
                    format!("`secret {inner}` cannot be stored in the vault"),
                    ty.span,
                )
                .with_label("not a `string`, `int`, `float`, `bool` or `json`")
                .with_help("declare the sensitive parts as separate `secret` inputs or parameters"),
            );
        }
    }
    ctx.diags.extend(diags);
}
