//! The checker: every rule of docs/diagnostics.md, one `fn check_*` per rule.
//!
//! `analyze` first collects a program's symbols (steps, branches, tools, inputs, variables and
//! the step graph) into a `Ctx`, then runs each rule in a fixed order. Rules never stop at the
//! first problem: each pushes every diagnostic it finds and later rules still run, so a user sees
//! everything wrong with a file at once. Rules that depend on facts an earlier error made unclear
//! (a target that names no step) stay quiet about them rather than cascading.
//!
//! Nothing here iterates a `HashMap` to produce output; diagnostics come out in source order.

mod calls;
mod graph;
pub(crate) mod names;
mod records;
mod replan;
mod steps;
pub(crate) mod suggest;
pub mod types;
pub(crate) mod vars;

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};

use crate::diagnostic::Diagnostic;
use crate::syntax::ast::{
    self, Field, File, Ident, LlmOutput, Program, Step, StepKind, Target, ToolDecl,
};
pub use types::Ty;

/// Checks every program of a file; returns all diagnostics (errors and warnings) in source
/// order.
pub fn check(file: &File) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    names::check_duplicate_programs(file, &mut diags);
    for program in &file.programs {
        diags.extend(analyze(program).diags);
    }
    diags.sort_by_key(|d| (d.primary.span.start, d.primary.span.end, d.code));
    diags
}

/// Collects a program's symbols and runs every rule.
pub(crate) fn analyze(program: &Program) -> Ctx<'_> {
    let mut ctx = Ctx::collect(program);
    // Names and declarations.
    names::check_duplicate_names(&mut ctx);
    names::check_name_style(&mut ctx);
    names::check_budget(&mut ctx);
    names::check_start(&mut ctx);
    // The shape of each step. (A missing `-> S`, or one on a parallel branch, is a syntax
    // error: the grammar already requires exactly the right edges.)
    steps::check_otherwise(&mut ctx);
    steps::check_llm_steps(&mut ctx);
    steps::check_min_confidence(&mut ctx);
    steps::check_parallel_branches(&mut ctx);
    steps::check_counts(&mut ctx);
    // The graph.
    graph::check_targets(&mut ctx);
    graph::check_unreachable(&mut ctx);
    graph::check_traps(&mut ctx);
    graph::check_cycles_need_max_steps(&mut ctx);
    graph::check_unguarded_effects(&mut ctx);
    graph::check_guards_decide(&mut ctx);
    graph::check_effects_in_cycles(&mut ctx);
    // Replanning edges (`on budget_exceeded -> S`): the graph rules above count them as edges
    // from every step; these two are about the edges themselves.
    replan::check_replan_edges(&mut ctx);
    replan::check_replan_guarded(&mut ctx);
    // Record, list and optional types (issue 16).
    records::check_type_declarations(&mut ctx);
    records::check_type_names(&mut ctx);
    records::check_secret_types(&mut ctx);
    // Tools.
    calls::check_tool_declarations(&mut ctx);
    calls::check_calls(&mut ctx);
    // Variables, types and data flow.
    vars::check_variable_types(&mut ctx);
    vars::check_unknown_variables(&mut ctx);
    vars::check_definite_assignment(&mut ctx);
    vars::check_secrets_in_prompts(&mut ctx);
    vars::check_secrets_in_expressions(&mut ctx);
    vars::check_untrusted_into_effects(&mut ctx);
    records::check_record_fields(&mut ctx);
    vars::check_expression_types(&mut ctx);
    vars::check_template_types(&mut ctx);
    vars::check_choice_literals(&mut ctx);
    vars::check_free_text_into_guards(&mut ctx);
    vars::check_unused(&mut ctx);
    ctx.diags
        .sort_by_key(|d| (d.primary.span.start, d.primary.span.end, d.code));
    ctx
}

/// A node of the step graph: a top-level step, or a branch of a parallel step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Site {
    /// Index into [`Ctx::steps`].
    pub(crate) step: usize,
    /// Index into the parallel step's branches.
    pub(crate) branch: Option<usize>,
}

/// Which outgoing edge of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum EdgeKind {
    /// The normal successor `-> S`.
    Next,
    /// `on invalid -> S`
    OnInvalid,
    /// `on error -> S`
    OnError,
    /// The `when` arm with this index.
    Arm(usize),
    /// `otherwise -> S`
    Otherwise,
    /// `timeout D -> S`
    Timeout,
}

/// A variable: an input, or a name some step assigns with `into`/`choose`.
#[derive(Clone, Debug)]
pub(crate) struct Var<'a> {
    /// The name.
    pub(crate) name: &'a str,
    /// Its type (the type of its first definition when definitions disagree, which is an error).
    pub(crate) ty: Ty,
    /// For inputs, the declaration.
    pub(crate) input: Option<&'a Field>,
    /// Where it is assigned, in source order.
    pub(crate) defs: Vec<VarDef<'a>>,
}

/// One assignment of a variable.
#[derive(Clone, Debug)]
pub(crate) struct VarDef<'a> {
    /// The step (or branch) that assigns it.
    pub(crate) site: Site,
    /// The name as written in `into x` / `choose x`.
    pub(crate) ident: &'a Ident,
    /// The type assigned.
    pub(crate) ty: Ty,
}

/// The admissible set of a `choose`.
#[derive(Clone, Debug)]
pub(crate) struct ChoiceSet<'a> {
    /// The variable it is stored in.
    pub(crate) var: &'a str,
    /// The members in declaration order.
    pub(crate) members: Vec<&'a Ident>,
}

/// Everything the rules (and lowering) know about one program.
pub(crate) struct Ctx<'a> {
    /// The program.
    pub(crate) program: &'a Program,
    /// What the rules found.
    pub(crate) diags: Vec<Diagnostic>,
    /// Top-level steps in source order (duplicates included).
    pub(crate) steps: Vec<&'a Step>,
    /// Name -> first step with that name.
    pub(crate) step_index: HashMap<&'a str, usize>,
    /// Steps that repeat an earlier step's name (reported once; ignored by graph rules).
    pub(crate) duplicate_step: Vec<bool>,
    /// Branch name -> the parallel step it belongs to and its index there.
    pub(crate) branch_index: HashMap<&'a str, Site>,
    /// Declared tools in source order.
    pub(crate) tools: Vec<&'a ToolDecl>,
    /// Name -> first tool with that name.
    pub(crate) tool_index: HashMap<&'a str, usize>,
    /// Inputs first (declaration order), then assigned variables (order of first assignment).
    pub(crate) vars: Vec<Var<'a>>,
    /// Name -> variable.
    pub(crate) var_index: HashMap<&'a str, usize>,
    /// The `choose` sets.
    pub(crate) choices: Vec<ChoiceSet<'a>>,
    /// Declared record types in source order (duplicates included).
    pub(crate) types: Vec<&'a ast::TypeDecl>,
    /// Name -> first record type with that name.
    pub(crate) type_index: HashMap<&'a str, usize>,
    /// The entry step (the `start` target, else the first step).
    pub(crate) start: Option<usize>,
    /// The step graph: node `i` is `steps[i]`.
    pub(crate) graph: DiGraph<usize, EdgeKind>,
    /// Targets that name no step (reported by `check_targets`; graph rules stay quiet about
    /// steps that have one).
    pub(crate) unresolved: Vec<bool>,
    /// The steps replanning edges lead to (`on budget_exceeded -> S`), resolved, in source
    /// order. A budget can run out before any step, so each is an edge from every step: the
    /// graph rules treat these steps as entered from anywhere, with only the inputs assigned.
    pub(crate) replan_targets: Vec<usize>,
}

impl<'a> Ctx<'a> {
    fn collect(program: &'a Program) -> Ctx<'a> {
        let steps: Vec<&Step> = program.steps().collect();
        let mut step_index = HashMap::new();
        let mut duplicate_step = Vec::with_capacity(steps.len());
        for (i, s) in steps.iter().enumerate() {
            let first = *step_index.entry(s.name.name.as_str()).or_insert(i);
            duplicate_step.push(first != i);
        }
        let mut branch_index = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            if let StepKind::Parallel(p) = &s.kind {
                for (b, branch) in p.branches.iter().enumerate() {
                    branch_index
                        .entry(branch.name.name.as_str())
                        .or_insert(Site {
                            step: i,
                            branch: Some(b),
                        });
                }
            }
        }
        let tools: Vec<&ToolDecl> = program.tools().collect();
        let mut tool_index = HashMap::new();
        for (i, t) in tools.iter().enumerate() {
            tool_index.entry(t.name.name.as_str()).or_insert(i);
        }

        let types: Vec<&ast::TypeDecl> = program.types().collect();
        let mut type_index = HashMap::new();
        for (i, t) in types.iter().enumerate() {
            type_index.entry(t.name.name.as_str()).or_insert(i);
        }
        let mut ctx = Ctx {
            program,
            types,
            type_index,
            diags: Vec::new(),
            steps,
            step_index,
            duplicate_step,
            branch_index,
            tools,
            tool_index,
            vars: Vec::new(),
            var_index: HashMap::new(),
            choices: Vec::new(),
            start: None,
            graph: DiGraph::new(),
            unresolved: Vec::new(),
            replan_targets: Vec::new(),
        };
        ctx.collect_vars();
        ctx.start = match program.start() {
            Some(s) => ctx.step_index.get(s.target.name.as_str()).copied(),
            None => (!ctx.steps.is_empty()).then_some(0),
        };
        ctx.build_graph();
        ctx.replan_targets = program
            .replans()
            .filter_map(|r| ctx.step_index.get(r.target.name.name.as_str()).copied())
            .collect();
        ctx
    }

    fn collect_vars(&mut self) {
        for field in self.program.inputs() {
            let name = field.name.name.as_str();
            if self.var_index.contains_key(name) {
                continue; // duplicate input: reported by check_duplicate_names
            }
            self.var_index.insert(name, self.vars.len());
            self.vars.push(Var {
                name,
                ty: Ty::from_kind(&field.ty.kind),
                input: Some(field),
                defs: Vec::new(),
            });
        }
        let mut defs: Vec<(Site, &'a Ident, Ty)> = Vec::new();
        let steps = self.steps.clone();
        for (i, step) in steps.iter().enumerate() {
            let site = Site {
                step: i,
                branch: None,
            };
            self.step_defs(site, step, &mut defs);
            if let StepKind::Parallel(p) = &step.kind {
                for (b, branch) in p.branches.iter().enumerate() {
                    let site = Site {
                        step: i,
                        branch: Some(b),
                    };
                    self.step_defs(site, branch, &mut defs);
                }
            }
        }
        for (site, ident, ty) in defs {
            let name = ident.name.as_str();
            let idx = match self.var_index.get(name) {
                Some(&i) => i,
                None => {
                    self.var_index.insert(name, self.vars.len());
                    self.vars.push(Var {
                        name,
                        ty: ty.clone(),
                        input: None,
                        defs: Vec::new(),
                    });
                    self.vars.len() - 1
                }
            };
            self.vars[idx].defs.push(VarDef { site, ident, ty });
        }
    }

    /// The variables a step assigns, with their types.
    fn step_defs(&mut self, site: Site, step: &'a Step, out: &mut Vec<(Site, &'a Ident, Ty)>) {
        match &step.kind {
            StepKind::Llm(l) => match &l.output {
                Some(LlmOutput::Choose { var, choices, .. }) => {
                    let members: Vec<&Ident> = choices.iter().collect();
                    let id = match self.choices.iter().position(|c| {
                        c.var == var.name
                            && c.members
                                .iter()
                                .map(|m| &m.name)
                                .eq(members.iter().map(|m| &m.name))
                    }) {
                        Some(id) => id,
                        None => {
                            self.choices.push(ChoiceSet {
                                var: &var.name,
                                members,
                            });
                            self.choices.len() - 1
                        }
                    };
                    out.push((site, var, Ty::Choice(id)));
                }
                Some(LlmOutput::Into { var, .. }) => out.push((site, var, Ty::Str)),
                Some(LlmOutput::Answer { var, ty, .. }) => {
                    out.push((site, var, Ty::from_kind(&ty.kind)));
                }
                None => {}
            },
            StepKind::Call(c) => {
                if let Some(var) = &c.into {
                    let ty = self
                        .tool_index
                        .get(c.tool.name.as_str())
                        .map_or(Ty::Error, |&t| Ty::from_kind(&self.tools[t].ret.kind));
                    out.push((site, var, ty));
                }
            }
            StepKind::Await(a) => {
                if let Some(var) = &a.into {
                    let ty = a.ty.as_ref().map_or(Ty::Json, |t| Ty::from_kind(&t.kind));
                    out.push((site, var, ty));
                }
            }
            _ => {}
        }
    }

    fn build_graph(&mut self) {
        for i in 0..self.steps.len() {
            self.graph.add_node(i);
        }
        self.unresolved = vec![false; self.steps.len()];
        for i in 0..self.steps.len() {
            if self.duplicate_step[i] {
                continue;
            }
            for (kind, target) in outgoing(self.steps[i]) {
                match self.step_index.get(target.name.name.as_str()) {
                    Some(&to) => {
                        self.graph
                            .add_edge(NodeIndex::new(i), NodeIndex::new(to), kind);
                    }
                    None => self.unresolved[i] = true,
                }
            }
        }
    }

    /// The name of a site, e.g. `checks` or the branch `validation`.
    pub(crate) fn site_name(&self, site: Site) -> &'a str {
        let step = self.steps[site.step];
        match (site.branch, &step.kind) {
            (Some(b), StepKind::Parallel(p)) => &p.branches[b].name.name,
            _ => &step.name.name,
        }
    }

    /// The step (or branch) at a site.
    pub(crate) fn site_step(&self, site: Site) -> &'a Step {
        let step = self.steps[site.step];
        match (site.branch, &step.kind) {
            (Some(b), StepKind::Parallel(p)) => &p.branches[b],
            _ => step,
        }
    }

    /// What type inference needs: the variables, the choice sets and the record types.
    pub(crate) fn scope(&self) -> types::Scope<'_, 'a> {
        types::Scope {
            vars: &self.vars,
            index: &self.var_index,
            choices: &self.choices,
            types: &self.types,
            type_index: &self.type_index,
        }
    }

    /// The budget entry with this key, if declared.
    pub(crate) fn budget_entry(&self, key: &str) -> Option<&'a ast::BudgetEntry> {
        self.program
            .budget()
            .and_then(|b| b.entries.iter().find(|e| e.key.name == key))
    }

    /// Steps (indices) in the order of a path, rendered as `a -> b -> c`.
    pub(crate) fn path_text(&self, path: &[usize]) -> String {
        path.iter()
            .map(|&i| format!("`{}`", self.steps[i].name.name))
            .collect::<Vec<_>>()
            .join(" -> ")
    }

    /// True when any error was found.
    pub(crate) fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }
}

/// A step's outgoing edges, in source order.
pub(crate) fn outgoing(step: &Step) -> Vec<(EdgeKind, &Target)> {
    let mut out = Vec::new();
    match &step.kind {
        StepKind::Llm(l) => {
            out.extend(l.on_invalid.iter().map(|t| (EdgeKind::OnInvalid, t)));
            out.extend(l.on_error.iter().map(|t| (EdgeKind::OnError, t)));
            out.extend(l.next.iter().map(|t| (EdgeKind::Next, t)));
        }
        StepKind::Call(c) => {
            out.extend(c.on_error.iter().map(|t| (EdgeKind::OnError, t)));
            out.extend(c.next.iter().map(|t| (EdgeKind::Next, t)));
        }
        StepKind::Guard(d) | StepKind::Branch(d) => {
            out.extend(
                d.arms
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (EdgeKind::Arm(i), &a.target)),
            );
            out.extend(d.otherwise.iter().map(|t| (EdgeKind::Otherwise, t)));
        }
        StepKind::Parallel(p) => {
            out.extend(p.on_error.iter().map(|t| (EdgeKind::OnError, t)));
            out.extend(p.next.iter().map(|t| (EdgeKind::Next, t)));
        }
        StepKind::Await(a) => {
            out.extend(a.timeout.iter().map(|(_, t)| (EdgeKind::Timeout, t)));
            out.extend(a.next.iter().map(|t| (EdgeKind::Next, t)));
        }
        StepKind::End(_) => {}
    }
    out
}

/// A step followed by its parallel branches, if any.
pub(crate) fn with_branches(step: &Step) -> Vec<&Step> {
    let mut v = vec![step];
    if let StepKind::Parallel(p) = &step.kind {
        v.extend(p.branches.iter());
    }
    v
}
