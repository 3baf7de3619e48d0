//! Compatibility of two versions of a program, decided by the compiler: can a run that is
//! waiting under OLD continue under NEW?
//!
//! A run stops between executions only at a *pause point*: an `await` (status `suspended`), or
//! a step that calls an `effect` tool, directly or in a `parallel` branch (status
//! `needs_reconciliation`, when the effect's outcome is unknown). Everything else a run does
//! happens inside one execution, under one program. [`compare`] looks at every pause point of
//! OLD and says whether a run waiting there can go on under NEW, with the reasons:
//!
//! * the step exists in NEW under the same name, of the same kind: an `await` of the same event
//!   (its `into` variable, if any, of the same type), or a call of the same effect tool with the
//!   same parameter and result types and the same `idempotent` flag (so the recorded effect's
//!   id and reconciliation mean the same);
//! * the inputs are the same (names, types, order: a run's recorded inputs are restored by
//!   position);
//! * every variable NEW has definitely assigned at that step is definitely assigned there in
//!   OLD too, with the same type (for a `choose` answer, the same members), and is not a secret
//!   (a secret is carried by the vault, not the trace). Variables OLD has and NEW no longer
//!   reads are dropped, which is noted;
//! * the continuation is well formed: NEW passed the checker (both programs given to
//!   [`compare`] are lowered, so they did), and no effect NEW reaches from the step is
//!   unguarded there while OLD guarded it on the way (a run that got past a guard under OLD
//!   cannot be assumed to have passed a guard NEW added before the step);
//! * budgets that NEW lowers are noted: the run's usage so far counts against NEW's limits.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::{self, Write as _};

use serde::Serialize;

use crate::check::Ty;
use crate::lower::{Budget, LlmOut, Program, Step, StepKind};

/// The answer of [`compare`] for one pair of programs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CompatReport {
    /// OLD's name.
    pub old_program: String,
    /// NEW's name.
    pub new_program: String,
    /// OLD's hash (hex).
    pub old_hash: String,
    /// NEW's hash (hex).
    pub new_hash: String,
    /// Reasons that concern every pause point (inputs, the program's name).
    pub general: Vec<String>,
    /// Notes that concern every pause point but do not stop a run (lowered budgets).
    pub notes: Vec<String>,
    /// One verdict per pause point of OLD, in OLD's step order.
    pub points: Vec<PausePoint>,
}

/// Where a run of OLD can be waiting, and whether it can continue under NEW.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PausePoint {
    /// The step.
    pub step: String,
    /// What a run waiting there looks like: `suspended` (an `await`) or
    /// `needs_reconciliation` (an effect call).
    pub status: &'static str,
    /// What the step does in OLD, e.g. "await `approval`".
    pub what: String,
    /// True when a run waiting here can continue under NEW.
    pub compatible: bool,
    /// Why not (empty when compatible).
    pub reasons: Vec<String>,
    /// What changes for a run that continues (dropped variables...).
    pub notes: Vec<String>,
    /// The variables a run has when waiting here in OLD, `name: type`.
    pub assigned: Vec<String>,
}

impl CompatReport {
    /// True when every pause point is compatible (and there is nothing general against it).
    pub fn all_compatible(&self) -> bool {
        self.general.is_empty() && self.points.iter().all(|p| p.compatible)
    }

    /// The pause point at `step`, if OLD has one there.
    pub fn point(&self, step: &str) -> Option<&PausePoint> {
        self.points.iter().find(|p| p.step == step)
    }

    /// The report as text, one block per pause point.
    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for CompatReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "compat {} {} -> {} {}",
            self.old_program,
            &self.old_hash[..16],
            self.new_program,
            &self.new_hash[..16]
        )?;
        for r in &self.general {
            writeln!(f, "  every step: {r}")?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        for p in &self.points {
            let verdict = if p.compatible && self.general.is_empty() {
                "compatible"
            } else {
                "incompatible"
            };
            writeln!(f, "  {} ({}, {}): {verdict}", p.step, p.what, p.status)?;
            if !p.assigned.is_empty() {
                writeln!(f, "    assigned: {}", p.assigned.join(", "))?;
            }
            for r in &p.reasons {
                writeln!(f, "    - {r}")?;
            }
            for n in &p.notes {
                writeln!(f, "    note: {n}")?;
            }
        }
        let ok = self
            .points
            .iter()
            .filter(|p| p.compatible && self.general.is_empty())
            .count();
        writeln!(
            f,
            "{} pause point{}: {ok} compatible, {} incompatible",
            self.points.len(),
            if self.points.len() == 1 { "" } else { "s" },
            self.points.len() - ok
        )
    }
}

/// Compares OLD and NEW (both checked and lowered) at every pause point of OLD.
pub fn compare(old: &Program, new: &Program) -> CompatReport {
    let mut general = Vec::new();
    if old.name != new.name {
        general.push(format!(
            "the program is `{}` in OLD and `{}` in NEW",
            old.name, new.name
        ));
    }
    let old_inputs: Vec<(&str, String)> = inputs(old);
    let new_inputs: Vec<(&str, String)> = inputs(new);
    if old_inputs != new_inputs {
        general.push(format!(
            "the inputs differ: OLD has ({}), NEW has ({}); a run's recorded inputs are restored by position",
            list(&old_inputs),
            list(&new_inputs)
        ));
    }
    let notes = budget_notes(&old.budget, &new.budget);
    let old_in = definitely_assigned(old);
    let new_in = definitely_assigned(new);
    let old_free = unguarded_effects(old);
    let new_free = unguarded_effects(new);
    let mut points = Vec::new();
    for (i, step) in old.steps.iter().enumerate() {
        let Some((status, what)) = pause(old, step) else {
            continue;
        };
        let mut point = PausePoint {
            step: step.name.clone(),
            status,
            what,
            compatible: true,
            reasons: Vec::new(),
            notes: Vec::new(),
            assigned: old_in[i]
                .iter()
                .filter(|&&v| !old.vars[v].input)
                .map(|&v| format!("{}: {}", old.vars[v].name, ty_text(old, &old.vars[v].ty)))
                .collect(),
        };
        match new.steps.iter().position(|s| s.name == step.name) {
            None => point
                .reasons
                .push(format!("NEW has no step `{}`", step.name)),
            Some(j) => {
                same_step(old, step, new, &new.steps[j], &mut point);
                same_variables(old, &old_in[i], new, &new_in[j], &mut point);
                for (tool, via) in &new_free[j] {
                    if !old_free[i].iter().any(|(t, _)| t == tool) {
                        point.reasons.push(format!(
                            "under NEW, `{}` reaches the effect `{tool}` (step `{via}`) with no guard in between, and a run waiting here under OLD passed no guard NEW put before it",
                            step.name
                        ));
                    }
                }
            }
        }
        point.compatible = point.reasons.is_empty();
        points.push(point);
    }
    CompatReport {
        old_program: old.name.clone(),
        new_program: new.name.clone(),
        old_hash: hex(&old.hash),
        new_hash: hex(&new.hash),
        general,
        notes,
        points,
    }
}

/// What kind of pause a step can be: `suspended` at an `await`, `needs_reconciliation` at a
/// step that calls an effect (itself or in a branch).
fn pause(p: &Program, step: &Step) -> Option<(&'static str, String)> {
    match &step.kind {
        StepKind::Await(a) => Some(("suspended", format!("await `{}`", a.event))),
        StepKind::Call(c) if p.is_effect(c.tool) => Some((
            "needs_reconciliation",
            format!("effect `{}`", p.tools[c.tool].name),
        )),
        StepKind::Parallel(par) => {
            let effects: Vec<String> = par
                .branches
                .iter()
                .filter_map(|b| match &b.kind {
                    StepKind::Call(c) if p.is_effect(c.tool) => {
                        Some(format!("`{}`", p.tools[c.tool].name))
                    }
                    _ => None,
                })
                .collect();
            (!effects.is_empty()).then(|| {
                (
                    "needs_reconciliation",
                    format!("parallel with effects {}", effects.join(", ")),
                )
            })
        }
        _ => None,
    }
}

fn same_step(old: &Program, a: &Step, new: &Program, b: &Step, point: &mut PausePoint) {
    let reasons = &mut point.reasons;
    let notes = &mut point.notes;
    match (&a.kind, &b.kind) {
        (StepKind::Await(x), StepKind::Await(y)) => {
            if x.event != y.event {
                reasons.push(format!(
                    "`{}` waits for the event `{}` in OLD and `{}` in NEW",
                    a.name, x.event, y.event
                ));
            }
            let into = |p: &Program, v: Option<usize>, ty: &Ty| {
                v.map(|v| format!("{}: {}", p.vars[v].name, ty_text(p, ty)))
            };
            let (ix, iy) = (into(old, x.into, &x.ty), into(new, y.into, &y.ty));
            if ix != iy {
                // The payload has not arrived yet: NEW's `await` stores it when it does.
                notes.push(format!(
                    "`{}` stores its payload as {} in OLD and {} in NEW",
                    a.name,
                    ix.map_or("nothing".into(), |s| format!("`{s}`")),
                    iy.map_or("nothing".into(), |s| format!("`{s}`")),
                ));
            }
        }
        (StepKind::Call(x), StepKind::Call(y)) => {
            let (tx, ty) = (&old.tools[x.tool], &new.tools[y.tool]);
            if tx.name != ty.name {
                reasons.push(format!(
                    "`{}` calls `{}` in OLD and `{}` in NEW: the recorded effect would be answered by another tool",
                    a.name, tx.name, ty.name
                ));
            } else {
                let sig = |p: &Program, t: &crate::lower::Tool| {
                    let params: Vec<String> = t
                        .params
                        .iter()
                        .map(|(n, ty)| format!("{n}: {}", ty_text(p, ty)))
                        .collect();
                    format!(
                        "{}({}) -> {}{}{}",
                        t.name,
                        params.join(", "),
                        ty_text(p, &t.ret),
                        if t.effect { " effect" } else { "" },
                        if t.idempotent { " idempotent" } else { "" }
                    )
                };
                let (sx, sy) = (sig(old, tx), sig(new, ty));
                if sx != sy {
                    reasons.push(format!(
                        "the tool of `{}` is declared `{sx}` in OLD and `{sy}` in NEW",
                        a.name
                    ));
                }
            }
            let into = |p: &Program, v: Option<usize>| v.map(|v| p.vars[v].name.clone());
            if into(old, x.into) != into(new, y.into) {
                // The result is applied by NEW's transition when the effect is settled.
                notes.push(format!(
                    "`{}` stores its result in {} in OLD and {} in NEW",
                    a.name,
                    into(old, x.into).map_or("nothing".into(), |s| format!("`{s}`")),
                    into(new, y.into).map_or("nothing".into(), |s| format!("`{s}`")),
                ));
            }
        }
        (StepKind::Parallel(x), StepKind::Parallel(y)) => {
            let names = |p: &crate::lower::Parallel| -> Vec<String> {
                p.branches.iter().map(|b| b.name.clone()).collect()
            };
            if names(x) != names(y) {
                reasons.push(format!(
                    "`{}` has the branches ({}) in OLD and ({}) in NEW",
                    a.name,
                    names(x).join(", "),
                    names(y).join(", ")
                ));
            }
            for (bx, by) in x.branches.iter().zip(&y.branches) {
                if bx.name == by.name {
                    same_step(old, bx, new, by, point);
                }
            }
        }
        (StepKind::Llm(x), StepKind::Llm(y)) => {
            let out = |p: &Program, o: &LlmOut| match o {
                LlmOut::Choose { var, .. } | LlmOut::Into { var } | LlmOut::Answer { var, .. } => {
                    Some(format!(
                        "{}: {}",
                        p.vars[*var].name,
                        ty_text(p, &p.vars[*var].ty)
                    ))
                }
                LlmOut::Discard => None,
            };
            if out(old, &x.output) != out(new, &y.output) {
                reasons.push(format!(
                    "the branch `{}` stores another answer in NEW",
                    a.name
                ));
            }
        }
        _ => reasons.push(format!(
            "`{}` is {} in OLD and {} in NEW",
            a.name,
            kind(a),
            kind(b)
        )),
    }
}

fn same_variables(
    old: &Program,
    old_in: &[usize],
    new: &Program,
    new_in: &[usize],
    point: &mut PausePoint,
) {
    for &v in new_in {
        let var = &new.vars[v];
        if var.input {
            continue;
        }
        let ty = ty_text(new, &var.ty);
        match old_in
            .iter()
            .map(|&o| &old.vars[o])
            .find(|o| o.name == var.name)
        {
            None => point.reasons.push(format!(
                "NEW has `{}` assigned at `{}`, a run waiting here under OLD has not",
                var.name, point.step
            )),
            Some(o) => {
                let oty = ty_text(old, &o.ty);
                if oty != ty {
                    point.reasons.push(format!(
                        "`{}` is `{oty}` in OLD and `{ty}` in NEW",
                        var.name
                    ));
                } else if matches!(var.ty, Ty::Secret(_)) {
                    point.reasons.push(format!(
                        "`{}` is a secret: its value is not in the trace to carry over",
                        var.name
                    ));
                }
            }
        }
    }
    for &o in old_in {
        let var = &old.vars[o];
        if !var.input && !new_in.iter().any(|&v| new.vars[v].name == var.name) {
            point.notes.push(format!(
                "`{}` is dropped: NEW does not read it here",
                var.name
            ));
        }
    }
}

fn kind(s: &Step) -> &'static str {
    match &s.kind {
        StepKind::Llm(_) => "an `llm` step",
        StepKind::Call(_) => "a `call`",
        StepKind::Guard(_) => "a `guard`",
        StepKind::Branch(_) => "a `branch`",
        StepKind::Parallel(_) => "a `parallel` step",
        StepKind::Await(_) => "an `await`",
        StepKind::End { .. } => "an `end`",
    }
}

fn inputs(p: &Program) -> Vec<(&str, String)> {
    p.vars
        .iter()
        .filter(|v| v.input)
        .map(|v| (v.name.as_str(), ty_text(p, &v.ty)))
        .collect()
}

fn list(items: &[(&str, String)]) -> String {
    items
        .iter()
        .map(|(n, t)| format!("{n}: {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A type as written, with a choice's members spelled out (two programs number their choice
/// sets independently).
/// A type as two versions are compared on: choices by their members, record types by their
/// fields (spelled out, recursively: two versions' `Refund` are one type only if their fields
/// are), lists and optionals by what they hold.
fn ty_text(p: &Program, ty: &Ty) -> String {
    match ty {
        Ty::Choice(c) => match p.choices.get(*c) {
            Some(set) => format!("choice [{}]", set.members.join(", ")),
            None => "choice".into(),
        },
        Ty::Record(name) => match p.types.iter().find(|r| &r.name == name) {
            Some(r) => format!(
                "{name} {{ {} }}",
                r.fields
                    .iter()
                    .map(|(f, t)| format!("{f}: {}", ty_text(p, t)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => name.clone(),
        },
        Ty::List(t) => format!("list<{}>", ty_text(p, t)),
        Ty::Optional(t) => format!("{}?", ty_text(p, t)),
        other => other.to_string(),
    }
}

fn budget_notes(old: &Budget, new: &Budget) -> Vec<String> {
    let pairs = [
        ("max_steps", old.max_steps, new.max_steps),
        ("max_tokens", old.max_tokens, new.max_tokens),
        (
            "max_stalled_steps",
            old.max_stalled_steps,
            new.max_stalled_steps,
        ),
        ("max_duration", old.max_duration_ms, new.max_duration_ms),
        ("max_tool_calls", old.max_tool_calls, new.max_tool_calls),
    ];
    let mut notes = Vec::new();
    for (key, o, n) in pairs {
        let lower = match (o, n) {
            (Some(o), Some(n)) => n < o,
            (None, Some(_)) => true,
            _ => false,
        };
        if lower {
            let show = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
            notes.push(format!(
                "`{key}` goes from {} to {}: a run that has used more ends at its next step",
                show(o),
                show(n)
            ));
        }
    }
    notes
}

/// For every step, the variables (indices into `p.vars`) assigned on every path from `start`
/// into it: the checker's definite-assignment rule (E0302) over the lowered graph. An edge
/// carries the step's assignments only when it is the step's normal successor (`into` is not
/// assigned along `on error`, `choose` not along `on invalid`, an `await`'s payload not along
/// `timeout`).
pub fn definitely_assigned(p: &Program) -> Vec<Vec<usize>> {
    let n = p.steps.len();
    let inputs: Vec<bool> = p.vars.iter().map(|v| v.input).collect();
    let mut into: Vec<Option<Vec<bool>>> = vec![None; n];
    into[p.start] = Some(inputs.clone());
    let mut queue = VecDeque::from([p.start]);
    while let Some(s) = queue.pop_front() {
        let Some(here) = into[s].clone() else {
            continue;
        };
        for (to, assigns) in successors(p, s) {
            let mut out = here.clone();
            for v in assigns {
                out[v] = true;
            }
            let merged = match &into[to] {
                None => out,
                Some(cur) => cur.iter().zip(&out).map(|(a, b)| *a && *b).collect(),
            };
            let merged = if to == p.start {
                merged.iter().zip(&inputs).map(|(a, b)| *a || *b).collect()
            } else {
                merged
            };
            if into[to].as_ref() != Some(&merged) {
                into[to] = Some(merged);
                queue.push_back(to);
            }
        }
    }
    into.into_iter()
        .map(|bits| {
            bits.map(|b| (0..b.len()).filter(|&v| b[v]).collect())
                .unwrap_or_default()
        })
        .collect()
}

/// A step's successors, each with the variables the edge assigns.
fn successors(p: &Program, s: usize) -> Vec<(usize, Vec<usize>)> {
    let own = |st: &Step| -> Vec<usize> {
        match &st.kind {
            StepKind::Llm(l) => match l.output {
                LlmOut::Choose { var, .. } | LlmOut::Into { var } | LlmOut::Answer { var, .. } => {
                    vec![var]
                }
                LlmOut::Discard => Vec::new(),
            },
            StepKind::Call(c) => c.into.into_iter().collect(),
            _ => Vec::new(),
        }
    };
    let step = &p.steps[s];
    let mut out = Vec::new();
    match &step.kind {
        StepKind::Llm(l) => {
            out.extend(l.next.map(|t| (t, own(step))));
            out.extend(l.on_invalid.map(|t| (t, Vec::new())));
            out.extend(l.on_error.map(|t| (t, Vec::new())));
        }
        StepKind::Call(c) => {
            out.extend(c.next.map(|t| (t, own(step))));
            out.extend(c.on_error.map(|t| (t, Vec::new())));
        }
        StepKind::Guard(d) | StepKind::Branch(d) => {
            out.extend(d.arms.iter().map(|(_, t)| (*t, Vec::new())));
            out.push((d.otherwise, Vec::new()));
        }
        StepKind::Parallel(par) => {
            out.push((par.next, par.branches.iter().flat_map(own).collect()));
            out.extend(par.on_error.map(|t| (t, Vec::new())));
        }
        StepKind::Await(a) => {
            out.push((a.next, a.into.into_iter().collect()));
            out.extend(a.timeout.map(|(_, t)| (t, Vec::new())));
        }
        StepKind::End { .. } => {}
    }
    out
}

/// For every step, the effect tools reachable from it (the step itself included) along a path
/// with no `guard` after the step, with the step that calls each first.
fn unguarded_effects(p: &Program) -> Vec<Vec<(String, String)>> {
    (0..p.steps.len())
        .map(|from| {
            let mut found: BTreeMap<String, String> = BTreeMap::new();
            let mut seen = vec![false; p.steps.len()];
            let mut queue = VecDeque::from([from]);
            seen[from] = true;
            while let Some(s) = queue.pop_front() {
                let step = &p.steps[s];
                let mut calls = |st: &Step| {
                    if let StepKind::Call(c) = &st.kind
                        && p.is_effect(c.tool)
                    {
                        found
                            .entry(p.tools[c.tool].name.clone())
                            .or_insert_with(|| step.name.clone());
                    }
                };
                calls(step);
                if let StepKind::Parallel(par) = &step.kind {
                    par.branches.iter().for_each(&mut calls);
                }
                if matches!(step.kind, StepKind::Guard(_)) {
                    continue;
                }
                for (t, _) in successors(p, s) {
                    if !seen[t] {
                        seen[t] = true;
                        queue.push_back(t);
                    }
                }
            }
            found.into_iter().collect()
        })
        .collect()
}

fn hex(bytes: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
