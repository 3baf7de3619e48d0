//! Pictures of a program's graph: Mermaid and Graphviz DOT.
//!
//! Guards, effects and ends are drawn distinctly (guards as amber hexagons, effect calls as red
//! boxes, ends as green or grey circles), because those are what a reviewer of a workflow looks
//! for first: where are the checks, where does money move, where can it stop.
//!
//! A program that does not compile can still be sketched from its syntax tree
//! ([`sketch_mermaid`], [`sketch_dot`]): its steps and transitions, with the errors marked in
//! red where they point, because seeing a broken graph is what helps to fix it.

use std::fmt::Write as _;

use crate::Diagnostic;
use crate::check::{self, EdgeKind};
use crate::lower::{Program, StepKind};
use crate::syntax::ast;

/// How a step is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Look {
    Llm,
    Call,
    Effect,
    Guard,
    Branch,
    Parallel,
    ParallelEffect,
    Await,
    EndOk,
    EndFail,
}

fn look(p: &Program, kind: &StepKind) -> Look {
    match kind {
        StepKind::Llm(_) => Look::Llm,
        StepKind::Call(c) if p.is_effect(c.tool) => Look::Effect,
        StepKind::Call(_) => Look::Call,
        StepKind::Guard(_) => Look::Guard,
        StepKind::Branch(_) => Look::Branch,
        StepKind::Parallel(par) => {
            let effect = par
                .branches
                .iter()
                .any(|b| matches!(&b.kind, StepKind::Call(c) if p.is_effect(c.tool)));
            if effect {
                Look::ParallelEffect
            } else {
                Look::Parallel
            }
        }
        StepKind::Await(_) => Look::Await,
        StepKind::End { success: true, .. } => Look::EndOk,
        StepKind::End { .. } => Look::EndFail,
    }
}

/// A one-line description under the step's name.
fn detail(p: &Program, kind: &StepKind) -> String {
    match kind {
        StepKind::Llm(_) => "llm".into(),
        StepKind::Call(c) => {
            let t = &p.tools[c.tool];
            if t.effect {
                format!("effect {}", t.name)
            } else {
                format!("call {}", t.name)
            }
        }
        StepKind::Guard(_) => "guard".into(),
        StepKind::Branch(_) => "branch".into(),
        StepKind::Parallel(par) => format!(
            "parallel: {}",
            par.branches
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        StepKind::Await(a) => format!("await {}", a.event),
        StepKind::End { success: true, .. } => "success".into(),
        StepKind::End { .. } => "failure".into(),
    }
}

/// The graph as a Mermaid `flowchart TD`.
pub fn mermaid(p: &Program) -> String {
    let mut out = String::from("flowchart TD\n");
    let _ = writeln!(out, "    start([start]) --> s{}", p.start);
    for (i, s) in p.steps.iter().enumerate() {
        let l = look(p, &s.kind);
        let label = format!("{}<br/><small>{}</small>", s.name, detail(p, &s.kind));
        let label = label.replace('"', "#quot;");
        let node = match l {
            Look::Llm => format!("s{i}([\"{label}\"])"),
            Look::Call => format!("s{i}[\"{label}\"]"),
            Look::Effect | Look::ParallelEffect => format!("s{i}[[\"{label}\"]]"),
            Look::Guard => format!("s{i}{{{{\"{label}\"}}}}"),
            Look::Branch => format!("s{i}{{\"{label}\"}}"),
            Look::Parallel => format!("s{i}[/\"{label}\"/]"),
            Look::Await => format!("s{i}>\"{label}\"]"),
            Look::EndOk | Look::EndFail => format!("s{i}((\"{label}\"))"),
        };
        let _ = writeln!(out, "    {node}");
    }
    for (from, to, label) in p.edges() {
        if label.is_empty() {
            let _ = writeln!(out, "    s{from} --> s{to}");
        } else {
            let _ = writeln!(out, "    s{from} -->|{label}| s{to}");
        }
    }
    // A replanning edge leaves from any step: drawn from a node of its own, dotted.
    for (k, r) in p.replans.iter().enumerate() {
        let _ = writeln!(
            out,
            "    r{k}([\"on {}<br/><small>replans {}</small>\"]) -.-> s{}",
            r.on.as_str(),
            r.replans,
            r.target
        );
    }
    out.push_str("    classDef guard fill:#fde68a,stroke:#b45309,stroke-width:2px\n");
    out.push_str("    classDef effect fill:#fecaca,stroke:#b91c1c,stroke-width:2px\n");
    out.push_str("    classDef endok fill:#bbf7d0,stroke:#15803d\n");
    out.push_str("    classDef endfail fill:#e5e7eb,stroke:#4b5563\n");
    for (class, pick) in [
        ("guard", &[Look::Guard][..]),
        ("effect", &[Look::Effect, Look::ParallelEffect][..]),
        ("endok", &[Look::EndOk][..]),
        ("endfail", &[Look::EndFail][..]),
    ] {
        let ids: Vec<String> = p
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| pick.contains(&look(p, &s.kind)))
            .map(|(i, _)| format!("s{i}"))
            .collect();
        if !ids.is_empty() {
            let _ = writeln!(out, "    class {} {class}", ids.join(","));
        }
    }
    out
}

/// The graph in Graphviz DOT.
pub fn dot(p: &Program) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&p.name));
    out.push_str("    rankdir=TB;\n    node [fontname=\"Helvetica\", fontsize=11];\n    edge [fontname=\"Helvetica\", fontsize=9];\n");
    let _ = writeln!(
        out,
        "    start [shape=point, width=0.15];\n    start -> s{};",
        p.start
    );
    for (i, s) in p.steps.iter().enumerate() {
        let label = quote(&format!("{}\n{}", s.name, detail(p, &s.kind)));
        let attrs = match look(p, &s.kind) {
            Look::Llm => "shape=box, style=rounded",
            Look::Call => "shape=box",
            Look::Effect | Look::ParallelEffect => {
                "shape=box, style=\"filled,bold\", fillcolor=\"#fecaca\", color=\"#b91c1c\""
            }
            Look::Guard => "shape=hexagon, style=filled, fillcolor=\"#fde68a\", color=\"#b45309\"",
            Look::Branch => "shape=diamond",
            Look::Parallel => "shape=parallelogram",
            Look::Await => "shape=cds",
            Look::EndOk => "shape=doublecircle, style=filled, fillcolor=\"#bbf7d0\"",
            Look::EndFail => "shape=doublecircle, style=filled, fillcolor=\"#e5e7eb\"",
        };
        let _ = writeln!(out, "    s{i} [label={label}, {attrs}];");
    }
    for (from, to, label) in p.edges() {
        if label.is_empty() {
            let _ = writeln!(out, "    s{from} -> s{to};");
        } else {
            let style = if label == "error" || label == "invalid" || label == "timeout" {
                ", style=dashed"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    s{from} -> s{to} [label={}{style}];",
                quote(&label)
            );
        }
    }
    for (k, r) in p.replans.iter().enumerate() {
        let label = quote(&format!("on {}\nreplans {}", r.on.as_str(), r.replans));
        let _ = writeln!(
            out,
            "    r{k} [label={label}, shape=note, style=dashed];\n    r{k} -> s{} [style=dotted];",
            r.target
        );
    }
    out.push_str("}\n");
    out
}

/// A DOT double-quoted string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Red, for what a diagnostic marks in a sketch.
const ERROR_COLOR: &str = "#dc2626";

/// A drawing of a program that did not compile, made from its syntax tree: every step under its
/// name and keyword, every transition by the name it targets. A step an error points into
/// carries the error's code and is drawn red; a target that names no step becomes a red
/// `name?` node, its edge red. Only a parsed program can be sketched.
struct Sketch<'a> {
    name: &'a str,
    /// Node label lines (name, detail, codes) and whether it is marked.
    nodes: Vec<(Vec<String>, bool)>,
    /// (from, to, label, marked).
    edges: Vec<(usize, usize, String, bool)>,
    start: Option<usize>,
}

impl<'a> Sketch<'a> {
    fn new(p: &'a ast::Program, diagnostics: &[Diagnostic]) -> Sketch<'a> {
        let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
        let inside = |span: ast::Span| -> Vec<String> {
            let mut codes: Vec<String> = errors
                .iter()
                .filter(|d| d.primary.span.start >= span.start && d.primary.span.end <= span.end)
                .map(|d| d.code.to_string())
                .collect();
            codes.dedup();
            codes
        };
        let steps: Vec<&ast::Step> = p.steps().collect();
        let mut nodes: Vec<(Vec<String>, bool)> = Vec::new();
        // Codes already shown on a missing-target node are not repeated on its step.
        let mut on_targets: Vec<ast::Span> = Vec::new();
        let mut edges = Vec::new();
        let mut missing: Vec<(String, usize)> = Vec::new();
        let mut target_node = |t: &ast::Target, nodes: &mut Vec<(Vec<String>, bool)>| {
            if let Some(i) = steps.iter().position(|s| s.name.name == t.name.name) {
                return (i, false);
            }
            on_targets.push(t.span);
            if let Some((_, i)) = missing.iter().find(|(n, _)| *n == t.name.name) {
                return (*i, true);
            }
            let i = steps.len() + missing.len();
            missing.push((t.name.name.clone(), i));
            let mut lines = vec![format!("{}?", t.name.name), "no such step".to_string()];
            lines.extend(inside(t.span));
            nodes.push((lines, true));
            (i, true)
        };
        let mut extra = Vec::new();
        // Without a `start` declaration a program starts at its first step.
        let start = match p.start() {
            Some(s) => {
                let t = ast::Target {
                    name: s.target.clone(),
                    span: s.target.span,
                };
                Some(target_node(&t, &mut extra).0)
            }
            None => (!steps.is_empty()).then_some(0),
        };
        for (i, s) in steps.iter().enumerate() {
            for (kind, t) in check::outgoing(s) {
                let (to, bad) = target_node(t, &mut extra);
                let label = match kind {
                    EdgeKind::Next => String::new(),
                    EdgeKind::OnInvalid => "invalid".into(),
                    EdgeKind::OnError => "error".into(),
                    EdgeKind::Arm(k) => format!("when #{}", k + 1),
                    EdgeKind::Otherwise => "otherwise".into(),
                    EdgeKind::Timeout => "timeout".into(),
                };
                edges.push((i, to, label, bad || !inside(t.span).is_empty()));
            }
        }
        for s in &steps {
            let detail = match &s.kind {
                ast::StepKind::Call(c) => {
                    let effect = p
                        .tools()
                        .any(|t| t.name.name == c.tool.name && t.is_effect());
                    format!("{} {}", if effect { "effect" } else { "call" }, c.tool.name)
                }
                ast::StepKind::Await(a) => format!("await {}", a.event.name),
                ast::StepKind::End(e) if e.success => "success".into(),
                ast::StepKind::End(_) => "failure".into(),
                k => k.keyword().to_string(),
            };
            let codes: Vec<String> = errors
                .iter()
                .filter(|d| {
                    let sp = d.primary.span;
                    sp.start >= s.span.start
                        && sp.end <= s.span.end
                        && !on_targets
                            .iter()
                            .any(|t| sp.start >= t.start && sp.end <= t.end)
                })
                .map(|d| d.code.to_string())
                .fold(Vec::new(), |mut v, c| {
                    if !v.contains(&c) {
                        v.push(c);
                    }
                    v
                });
            let marked = !codes.is_empty();
            let mut lines = vec![s.name.name.clone(), detail];
            if marked {
                lines.push(codes.join(", "));
            }
            nodes.push((lines, marked));
        }
        // Steps first (their indices are their positions), then the missing targets.
        nodes.extend(extra);
        Sketch {
            name: &p.name.name,
            nodes,
            edges,
            start,
        }
    }
}

/// A Mermaid `flowchart TD` of a program that did not compile, its errors marked (see
/// [`sketch_dot`]). `diagnostics` are the compilation's; only their errors are drawn.
pub fn sketch_mermaid(p: &ast::Program, diagnostics: &[Diagnostic]) -> String {
    let sk = Sketch::new(p, diagnostics);
    let mut out = String::from("flowchart TD\n");
    if let Some(s) = sk.start {
        let _ = writeln!(out, "    start([start]) --> s{s}");
    }
    for (i, (lines, _)) in sk.nodes.iter().enumerate() {
        let mut label = lines[0].clone();
        for l in &lines[1..] {
            let _ = write!(label, "<br/><small>{l}</small>");
        }
        let _ = writeln!(out, "    s{i}[\"{}\"]", label.replace('"', "#quot;"));
    }
    let mut red_links = Vec::new();
    for (n, (from, to, label, marked)) in sk.edges.iter().enumerate() {
        // The start edge is link 0 when there is one.
        let link = n + usize::from(sk.start.is_some());
        if *marked {
            red_links.push(link.to_string());
        }
        if label.is_empty() {
            let _ = writeln!(out, "    s{from} --> s{to}");
        } else {
            let _ = writeln!(out, "    s{from} -->|{label}| s{to}");
        }
    }
    let _ = writeln!(
        out,
        "    classDef error fill:#fee2e2,stroke:{ERROR_COLOR},stroke-width:3px,color:{ERROR_COLOR}"
    );
    let marked: Vec<String> = sk
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, (_, m))| *m)
        .map(|(i, _)| format!("s{i}"))
        .collect();
    if !marked.is_empty() {
        let _ = writeln!(out, "    class {} error", marked.join(","));
    }
    if !red_links.is_empty() {
        let _ = writeln!(
            out,
            "    linkStyle {} stroke:{ERROR_COLOR},stroke-width:2px",
            red_links.join(",")
        );
    }
    out
}

/// Graphviz DOT of a program that did not compile, drawn from its syntax tree: each step under
/// its name and kind, each transition to the step it names; a step an error points into shows
/// the error codes and is red, a target naming no step is a red `name?` node.
pub fn sketch_dot(p: &ast::Program, diagnostics: &[Diagnostic]) -> String {
    let sk = Sketch::new(p, diagnostics);
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(sk.name));
    out.push_str("    rankdir=TB;\n    node [fontname=\"Helvetica\", fontsize=11, shape=box];\n    edge [fontname=\"Helvetica\", fontsize=9];\n");
    if let Some(s) = sk.start {
        let _ = writeln!(
            out,
            "    start [shape=point, width=0.15];\n    start -> s{s};"
        );
    }
    for (i, (lines, marked)) in sk.nodes.iter().enumerate() {
        let label = quote(&lines.join("\n"));
        if *marked {
            let _ = writeln!(
                out,
                "    s{i} [label={label}, style=\"filled,bold\", fillcolor=\"#fee2e2\", color=\"{ERROR_COLOR}\", fontcolor=\"{ERROR_COLOR}\"];"
            );
        } else {
            let _ = writeln!(out, "    s{i} [label={label}];");
        }
    }
    for (from, to, label, marked) in &sk.edges {
        let mut attrs = Vec::new();
        if !label.is_empty() {
            attrs.push(format!("label={}", quote(label)));
        }
        if *marked {
            attrs.push(format!("color=\"{ERROR_COLOR}\", penwidth=2"));
        }
        if attrs.is_empty() {
            let _ = writeln!(out, "    s{from} -> s{to};");
        } else {
            let _ = writeln!(out, "    s{from} -> s{to} [{}];", attrs.join(", "));
        }
    }
    out.push_str("}\n");
    out
}
