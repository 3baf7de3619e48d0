//! Pictures of a program's graph: Mermaid and Graphviz DOT.
//!
//! Guards, effects and ends are drawn distinctly (guards as amber hexagons, effect calls as red
//! boxes, ends as green or grey circles), because those are what a reviewer of a workflow looks
//! for first: where are the checks, where does money move, where can it stop.

use std::fmt::Write as _;

use crate::lower::{Program, StepKind};

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
