//! Lowering: a checked program becomes a resolved, typed model ([`Program`]) that codegen and
//! the graph renderers consume. Names are resolved to indices, arguments are put in parameter
//! order, conditions are typed, and nothing refers back to the syntax tree except spans.
//!
//! Lowering runs only on programs the checker accepted, so it never reports errors; where it
//! meets something the checker should have rejected it returns `None` instead of panicking.

use crate::check::types::{Scope, infer};
pub use crate::check::types::{TExpr, TKind};
use crate::check::{self, Ctx, Ty};
use crate::syntax::ast::{self, BudgetValue, LlmOutput, StepKind as AstKind, TemplatePart};

/// A program ready for code generation.
#[derive(Clone, Debug)]
pub struct Program {
    /// Its name.
    pub name: String,
    /// Doc comment lines.
    pub doc: Vec<String>,
    /// blake3 of the canonical program text and the semantics version.
    pub hash: [u8; 32],
    /// Variables: inputs first in declaration order, then assigned variables.
    pub vars: Vec<Var>,
    /// `choose` sets.
    pub choices: Vec<Choice>,
    /// Declared tools.
    pub tools: Vec<Tool>,
    /// Declared record types, in source order.
    pub types: Vec<Record>,
    /// Budgets.
    pub budget: Budget,
    /// Steps in source order; index = step id.
    pub steps: Vec<Step>,
    /// Entry step.
    pub start: usize,
    /// Replanning edges (`on budget_exceeded -> S replans N budget { ... }`), in source order.
    pub replans: Vec<Replan>,
}

/// A declared record type (`type Refund { id: string, amount: int }`).
#[derive(Clone, Debug)]
pub struct Record {
    /// Its name as written.
    pub name: String,
    /// Doc lines.
    pub doc: Vec<String>,
    /// The fields in declaration order, with their types.
    pub fields: Vec<(String, Ty)>,
}

/// A replanning edge.
#[derive(Clone, Debug)]
pub struct Replan {
    /// What it continues after.
    pub on: ast::ReplanOn,
    /// The step it continues at.
    pub target: usize,
    /// How many times at most.
    pub replans: u32,
    /// The fresh slice each replan gets.
    pub slice: Budget,
}

/// A variable.
#[derive(Clone, Debug)]
pub struct Var {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: Ty,
    /// True for inputs.
    pub input: bool,
}

/// The admissible answers of a `choose`.
#[derive(Clone, Debug)]
pub struct Choice {
    /// The variable it is stored in.
    pub var: String,
    /// Members in order.
    pub members: Vec<String>,
}

/// A declared tool.
#[derive(Clone, Debug)]
pub struct Tool {
    /// Its name.
    pub name: String,
    /// Doc lines.
    pub doc: Vec<String>,
    /// `effect tool`.
    pub effect: bool,
    /// `idempotent`.
    pub idempotent: bool,
    /// Parameters in order.
    pub params: Vec<(String, Ty)>,
    /// The result type.
    pub ret: Ty,
}

/// Budgets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// `max_steps`
    pub max_steps: Option<u64>,
    /// `max_tokens`
    pub max_tokens: Option<u64>,
    /// `max_stalled_steps`
    pub max_stalled_steps: Option<u64>,
    /// `max_duration` in milliseconds
    pub max_duration_ms: Option<u64>,
    /// `max_tool_calls`
    pub max_tool_calls: Option<u64>,
}

/// A step (or a parallel branch).
#[derive(Clone, Debug)]
pub struct Step {
    /// Its name.
    pub name: String,
    /// Doc lines.
    pub doc: Vec<String>,
    /// What it does.
    pub kind: StepKind,
}

/// Resolved step kinds; targets are step indices.
#[derive(Clone, Debug)]
pub enum StepKind {
    /// `llm`
    Llm(Llm),
    /// `call`
    Call(Call),
    /// `guard`
    Guard(Decision),
    /// `branch`
    Branch(Decision),
    /// `parallel`
    Parallel(Parallel),
    /// `await`
    Await(Await),
    /// `end`
    End {
        /// `success`
        success: bool,
        /// The failure message.
        message: Option<String>,
    },
}

/// An `llm` step.
#[derive(Clone, Debug)]
pub struct Llm {
    /// `system: "..."`
    pub system: Option<Template>,
    /// `prompt: "..."`
    pub prompt: Template,
    /// `model: "..."`
    pub model: Option<String>,
    /// `max_tokens: N`
    pub max_tokens: Option<u32>,
    /// `min_confidence P`
    pub min_confidence: Option<f64>,
    /// Where the answer goes.
    pub output: LlmOut,
    /// `retry N`
    pub retry: u32,
    /// `-> S` (absent for branches)
    pub next: Option<usize>,
    /// `on invalid -> S`
    pub on_invalid: Option<usize>,
    /// `on error -> S`
    pub on_error: Option<usize>,
    /// `after` (branches; indices into the block)
    pub after: Vec<usize>,
}

/// Where an llm answer goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LlmOut {
    /// `choose var from [...]`
    Choose {
        /// The variable.
        var: usize,
        /// The choice set.
        choice: usize,
    },
    /// `into var`
    Into {
        /// The variable.
        var: usize,
    },
    /// `answer var: Type`
    Answer {
        /// The variable.
        var: usize,
        /// The type asked for.
        ty: Ty,
    },
    /// Neither: the text is recorded and dropped.
    Discard,
}

/// A `call` step.
#[derive(Clone, Debug)]
pub struct Call {
    /// The tool.
    pub tool: usize,
    /// One argument per parameter, in parameter order.
    pub args: Vec<TExpr>,
    /// `into var`
    pub into: Option<usize>,
    /// `retry N`
    pub retry: u32,
    /// `-> S` (absent for branches)
    pub next: Option<usize>,
    /// `on error -> S`
    pub on_error: Option<usize>,
    /// `after` (branches)
    pub after: Vec<usize>,
}

/// A `guard` or `branch`.
#[derive(Clone, Debug)]
pub struct Decision {
    /// `when` arms: typed condition and target.
    pub arms: Vec<(TExpr, usize)>,
    /// `otherwise` target.
    pub otherwise: usize,
}

/// A `parallel` step.
#[derive(Clone, Debug)]
pub struct Parallel {
    /// The branches, each an `Llm` or `Call` step.
    pub branches: Vec<Step>,
    /// `max_concurrency N`
    pub max_concurrency: Option<u32>,
    /// `retry N`
    pub retry: u32,
    /// `-> S`
    pub next: usize,
    /// `on error -> S`
    pub on_error: Option<usize>,
}

/// An `await` step.
#[derive(Clone, Debug)]
pub struct Await {
    /// The event name.
    pub event: String,
    /// `into var`
    pub into: Option<usize>,
    /// The payload type (`json` unless annotated).
    pub ty: Ty,
    /// `timeout D -> S`: milliseconds and target.
    pub timeout: Option<(u64, usize)>,
    /// `-> S`
    pub next: usize,
}

/// A rendered string with variable holes.
#[derive(Clone, Debug)]
pub struct Template {
    /// Pieces in order.
    pub parts: Vec<Part>,
}

/// A piece of a template.
#[derive(Clone, Debug)]
pub enum Part {
    /// Literal text.
    Text(String),
    /// A variable, optionally a field path into it (json), with the path as written.
    Hole {
        /// The variable.
        var: usize,
        /// Field names after the variable.
        fields: Vec<String>,
        /// The path as written, for run-time error messages.
        text: String,
    },
}

impl Program {
    /// The edges of the step graph as (from, to, label), in source order.
    pub fn edges(&self) -> Vec<(usize, usize, String)> {
        let mut out = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            let mut push = |to: Option<usize>, label: &str| {
                if let Some(t) = to {
                    out.push((i, t, label.to_string()));
                }
            };
            match &s.kind {
                StepKind::Llm(l) => {
                    push(l.next, "");
                    push(l.on_invalid, "invalid");
                    push(l.on_error, "error");
                }
                StepKind::Call(c) => {
                    push(c.next, "");
                    push(c.on_error, "error");
                }
                StepKind::Guard(d) | StepKind::Branch(d) => {
                    for (k, (_, t)) in d.arms.iter().enumerate() {
                        push(Some(*t), &format!("when #{}", k + 1));
                    }
                    push(Some(d.otherwise), "otherwise");
                }
                StepKind::Parallel(p) => {
                    push(Some(p.next), "");
                    push(p.on_error, "error");
                }
                StepKind::Await(a) => {
                    push(Some(a.next), "");
                    push(a.timeout.map(|t| t.1), "timeout");
                }
                StepKind::End { .. } => {}
            }
        }
        out
    }

    /// True when the tool at `index` is an effect.
    pub fn is_effect(&self, index: usize) -> bool {
        self.tools.get(index).is_some_and(|t| t.effect)
    }
}

/// Lowers a checked program. Returns `None` if the checker reported errors.
pub(crate) fn lower(ctx: &Ctx<'_>) -> Option<Program> {
    if ctx.has_errors() {
        return None;
    }
    let program = ctx.program;
    // Record, list and optional values are held as checked JSON at run time (their shape was
    // checked where they entered: input, tool result, event payload), so the typed tree that
    // codegen sees reads them as `json`: the checker has already proved every field exists
    // and has the type it is used at.
    let erased: Vec<check::Var<'_>> = ctx
        .vars
        .iter()
        .map(|v| check::Var {
            ty: if v.ty.is_composite() {
                Ty::Json
            } else {
                v.ty.clone()
            },
            ..v.clone()
        })
        .collect();
    let scope = Scope {
        vars: &erased,
        index: &ctx.var_index,
        choices: &ctx.choices,
        types: &ctx.types,
        type_index: &ctx.type_index,
    };
    let target = |t: &Option<ast::Target>| -> Option<Option<usize>> {
        match t {
            None => Some(None),
            Some(t) => ctx.step_index.get(t.name.name.as_str()).map(|&i| Some(i)),
        }
    };
    let var_of = |name: &str| ctx.var_index.get(name).copied();
    let template = |t: &ast::Template| -> Option<Template> {
        let mut parts = Vec::new();
        for p in &t.parts {
            parts.push(match p {
                TemplatePart::Text(s) => Part::Text(s.clone()),
                TemplatePart::Hole(path) => Part::Hole {
                    var: var_of(&path.root().name)?,
                    fields: path.segments[1..].iter().map(|s| s.name.clone()).collect(),
                    text: path.to_string(),
                },
            });
        }
        Some(Template { parts })
    };
    let count =
        |n: &Option<ast::IntLit>| n.map_or(0, |n| n.value.clamp(0, i64::from(u32::MAX)) as u32);

    let lower_step = |s: &ast::Step, branches_of: Option<&ast::ParallelStep>| -> Option<Step> {
        let after = |names: &[ast::Ident]| -> Option<Vec<usize>> {
            let p = branches_of?;
            names
                .iter()
                .map(|n| p.branches.iter().position(|b| b.name.name == n.name))
                .collect()
        };
        let kind = match &s.kind {
            AstKind::Llm(l) => StepKind::Llm(Llm {
                system: match &l.system {
                    Some(t) => Some(template(t)?),
                    None => None,
                },
                prompt: template(l.prompt.as_ref()?)?,
                model: l.model.as_ref().map(|m| m.value.clone()),
                max_tokens: l
                    .max_tokens
                    .map(|m| m.value.clamp(1, i64::from(u32::MAX)) as u32),
                min_confidence: l.min_confidence.map(|m| m.value),
                output: match &l.output {
                    Some(LlmOutput::Choose { var, .. }) => {
                        let v = var_of(&var.name)?;
                        let Ty::Choice(choice) = ctx.vars[v].ty else {
                            return None;
                        };
                        LlmOut::Choose { var: v, choice }
                    }
                    Some(LlmOutput::Into { var, .. }) => LlmOut::Into {
                        var: var_of(&var.name)?,
                    },
                    Some(LlmOutput::Answer { var, ty, .. }) => LlmOut::Answer {
                        var: var_of(&var.name)?,
                        ty: Ty::from_kind(&ty.kind),
                    },
                    None => LlmOut::Discard,
                },
                retry: count(&l.retry),
                next: target(&l.next)?,
                on_invalid: target(&l.on_invalid)?,
                on_error: target(&l.on_error)?,
                after: if branches_of.is_some() {
                    after(&l.after)?
                } else {
                    Vec::new()
                },
            }),
            AstKind::Call(c) => {
                let tool = *ctx.tool_index.get(c.tool.name.as_str())?;
                let decl = ctx.tools[tool];
                let mut args = Vec::with_capacity(decl.params.len());
                for p in &decl.params {
                    let arg = c.args.iter().find(|a| a.name.name == p.name.name)?;
                    args.push(infer(&arg.value, &scope, &mut Vec::new()));
                }
                StepKind::Call(Call {
                    tool,
                    args,
                    into: match &c.into {
                        Some(v) => Some(var_of(&v.name)?),
                        None => None,
                    },
                    retry: count(&c.retry),
                    next: target(&c.next)?,
                    on_error: target(&c.on_error)?,
                    after: if branches_of.is_some() {
                        after(&c.after)?
                    } else {
                        Vec::new()
                    },
                })
            }
            AstKind::Guard(d) | AstKind::Branch(d) => {
                let arms = d
                    .arms
                    .iter()
                    .map(|a| {
                        let t = ctx.step_index.get(a.target.name.name.as_str())?;
                        Some((infer(&a.cond, &scope, &mut Vec::new()), *t))
                    })
                    .collect::<Option<Vec<_>>>()?;
                let otherwise = *ctx
                    .step_index
                    .get(d.otherwise.first()?.name.name.as_str())?;
                let dec = Decision { arms, otherwise };
                if matches!(s.kind, AstKind::Guard(_)) {
                    StepKind::Guard(dec)
                } else {
                    StepKind::Branch(dec)
                }
            }
            AstKind::Parallel(_) | AstKind::Await(_) | AstKind::End(_) => unreachable_kind(s, ctx)?,
        };
        Some(Step {
            name: s.name.name.clone(),
            doc: s.doc.clone(),
            kind,
        })
    };

    let mut steps = Vec::with_capacity(ctx.steps.len());
    for s in &ctx.steps {
        let step = match &s.kind {
            AstKind::Parallel(p) => Step {
                name: s.name.name.clone(),
                doc: s.doc.clone(),
                kind: StepKind::Parallel(Parallel {
                    branches: p
                        .branches
                        .iter()
                        .map(|b| lower_step(b, Some(p)))
                        .collect::<Option<Vec<_>>>()?,
                    max_concurrency: p
                        .max_concurrency
                        .map(|m| m.value.clamp(1, i64::from(u32::MAX)) as u32),
                    retry: count(&p.retry),
                    next: target(&p.next)??,
                    on_error: target(&p.on_error)?,
                }),
            },
            AstKind::Await(a) => Step {
                name: s.name.name.clone(),
                doc: s.doc.clone(),
                kind: StepKind::Await(Await {
                    event: a.event.name.clone(),
                    into: match &a.into {
                        Some(v) => Some(var_of(&v.name)?),
                        None => None,
                    },
                    ty: a.ty.as_ref().map_or(Ty::Json, |t| Ty::from_kind(&t.kind)),
                    timeout: match &a.timeout {
                        Some((d, t)) => {
                            Some((d.millis, *ctx.step_index.get(t.name.name.as_str())?))
                        }
                        None => None,
                    },
                    next: target(&a.next)??,
                }),
            },
            AstKind::End(e) => Step {
                name: s.name.name.clone(),
                doc: s.doc.clone(),
                kind: StepKind::End {
                    success: e.success,
                    message: e.message.as_ref().map(|m| m.value.clone()),
                },
            },
            _ => lower_step(s, None)?,
        };
        steps.push(step);
    }

    let budget = match program.budget() {
        Some(b) => budget_of(b)?,
        None => Budget::default(),
    };
    let replans = program
        .replans()
        .map(|r| {
            Some(Replan {
                on: r.on,
                target: *ctx.step_index.get(r.target.name.name.as_str())?,
                replans: u32::try_from(r.replans.value).ok()?,
                slice: budget_of(&r.slice)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;

    Some(Program {
        name: program.name.name.clone(),
        doc: program.doc.clone(),
        hash: crate::canonical::program_hash(program),
        vars: ctx
            .vars
            .iter()
            .map(|v| Var {
                name: v.name.to_string(),
                ty: v.ty.clone(),
                input: v.input.is_some(),
            })
            .collect(),
        choices: ctx
            .choices
            .iter()
            .map(|c| Choice {
                var: c.var.to_string(),
                members: c.members.iter().map(|m| m.name.clone()).collect(),
            })
            .collect(),
        tools: ctx
            .tools
            .iter()
            .map(|t| Tool {
                name: t.name.name.clone(),
                doc: t.doc.clone(),
                effect: t.is_effect(),
                idempotent: t.idempotent.is_some(),
                params: t
                    .params
                    .iter()
                    .map(|p| (p.name.name.clone(), Ty::from_kind(&p.ty.kind)))
                    .collect(),
                ret: Ty::from_kind(&t.ret.kind),
            })
            .collect(),
        types: ctx
            .types
            .iter()
            .map(|t| Record {
                name: t.name.name.clone(),
                doc: t.doc.clone(),
                fields: t
                    .fields
                    .iter()
                    .map(|f| (f.name.name.clone(), Ty::from_kind(&f.ty.kind)))
                    .collect(),
            })
            .collect(),
        budget,
        steps,
        start: ctx.start?,
        replans,
    })
}

/// The limits a budget block (the program's, or a replan slice) declares.
fn budget_of(b: &ast::BudgetBlock) -> Option<Budget> {
    let mut budget = Budget::default();
    for e in &b.entries {
        let v = match &e.value {
            BudgetValue::Int(n) => n.value.max(0) as u64,
            BudgetValue::Duration(d) => d.millis,
        };
        match e.key.name.as_str() {
            "max_steps" => budget.max_steps = Some(v),
            "max_tokens" => budget.max_tokens = Some(v),
            "max_stalled_steps" => budget.max_stalled_steps = Some(v),
            "max_duration" => budget.max_duration_ms = Some(v),
            "max_tool_calls" => budget.max_tool_calls = Some(v),
            _ => return None,
        }
    }
    Some(budget)
}

/// Parallel, await and end steps are lowered by the caller; reaching here means the tree is not
/// what the checker accepted.
fn unreachable_kind(_s: &ast::Step, _ctx: &Ctx<'_>) -> Option<StepKind> {
    None
}

/// Checks and lowers every program of a file: the common entry point of the CLI, build.rs and
/// the proc macro. Returns the lowered programs (empty if there were errors) and every
/// diagnostic, in source order.
pub fn check_and_lower(file: &ast::File) -> (Vec<Program>, Vec<crate::Diagnostic>) {
    let mut diags = Vec::new();
    check::names::check_duplicate_programs(file, &mut diags);
    let mut programs = Vec::new();
    for p in &file.programs {
        let ctx = check::analyze(p);
        if let Some(lowered) = lower(&ctx) {
            programs.push(lowered);
        }
        diags.extend(ctx.diags);
    }
    diags.sort_by_key(|d| (d.primary.span.start, d.primary.span.end, d.code));
    if diags.iter().any(crate::Diagnostic::is_error) {
        programs.clear();
    }
    (programs, diags)
}
