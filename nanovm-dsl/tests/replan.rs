//! Replanning edges (`on budget_exceeded -> S replans N budget { ... }`): every rule of the
//! checker applies to them, and the rules that are about them (E0115, E0116) have their
//! rendered diagnostics snapshotted, with a passing near-miss.

use nanovm_dsl::compile;

fn report(name: &str, src: &str) -> String {
    compile(&format!("{name}.nvm"), src).render()
}

fn codes(src: &str) -> Vec<&'static str> {
    compile("x.nvm", src)
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.code.id())
        .collect()
}

/// A planner that loops through a read-only search; `REPLAN` is the replanning edge, `AFTER`
/// the steps after its target.
fn planner(replan: &str, after: &str) -> String {
    format!(
        r#"
program p {{
    input {{ goal: string  amount_cents: int }}
    budget {{ max_steps: 4 }}
    tool search(q: string) -> json
    effect tool pay(amount_cents: int) -> json idempotent
    start plan
    llm plan {{
        prompt: "Plan for {{goal}}"
        choose next from [search, pay, done]
        on invalid -> plan
    }} -> route
    guard route {{
        when next == "search" -> look
        when next == "pay" and amount_cents <= 100 -> pay_out
        otherwise -> finished
    }}
    call look = search(q: goal) -> plan
    call pay_out = pay(amount_cents: amount_cents) -> finished
    {replan}
    {after}
    end finished: success
}}
"#
    )
}

#[test]
fn a_replan_to_a_step_that_plans_again_before_a_guard_compiles() {
    let src = planner(
        "on budget_exceeded -> replan replans 2 budget { max_steps: 4 }",
        r#"llm replan { prompt: "Out of budget for {goal}" choose verdict from [done, more] } -> decide
    branch decide { when verdict == "done" -> finished otherwise -> plan }"#,
    );
    let c = compile("ok.nvm", &src);
    assert!(!c.has_errors(), "{}", c.render());
}

#[test]
fn e0116_a_replan_that_would_bypass_the_guard() {
    // The budget can run out right after `route` let a search through; the replan target goes
    // straight to the payment, which no guard between it and the target protects.
    let src = planner(
        "on budget_exceeded -> settle replans 1 budget { max_steps: 2 }",
        r#"branch settle { when goal == "x" -> pay_out otherwise -> finished }"#,
    );
    assert_eq!(codes(&src), ["E0116"]);
    insta::assert_snapshot!("e0116_replan_bypasses_guard", report("e0116", &src));
}

#[test]
fn e0115_malformed_replan_edges() {
    let src = planner(
        "on budget_exceeded -> finished replans 0 budget { max_tokens: 10 }\n    on budget_exceeded -> plan replans 1 budget { max_steps: 2 }",
        "",
    );
    assert_eq!(codes(&src), ["E0115", "E0115", "E0115", "E0115"]);
    insta::assert_snapshot!("e0115_malformed_replan_edges", report("e0115", &src));
}

#[test]
fn e0109_and_e0102_in_a_slice_and_a_target() {
    let src = planner(
        "on stalled -> plann replans 1 budget { max_stepz: 2, max_duration: 5 }",
        "",
    );
    assert_eq!(codes(&src), ["E0102", "E0109", "E0109"]);
}

#[test]
fn e0302_a_replan_target_reads_only_what_every_step_has() {
    // `next` is assigned by `plan`, but the budget can run out before `plan` ever completed.
    let src = planner(
        "on budget_exceeded -> again replans 1 budget { max_steps: 4 }",
        r#"branch again { when next == "done" -> finished otherwise -> plan }"#,
    );
    assert_eq!(codes(&src), ["E0302"]);
    insta::assert_snapshot!(
        "e0302_replan_target_reads_unassigned",
        report("e0302", &src)
    );
}

#[test]
fn e0104_a_replan_target_that_leads_into_a_trap() {
    let src = planner(
        "on stalled -> spin replans 1 budget { max_steps: 4 }",
        r#"branch spin { otherwise -> spin }"#,
    );
    assert_eq!(codes(&src), ["E0104"]);
}

#[test]
fn e0103_is_not_reported_for_a_step_only_a_replan_reaches() {
    let src = planner(
        "on stalled -> wrap_up replans 1 budget { max_steps: 4 }",
        r#"branch wrap_up { otherwise -> finished }"#,
    );
    assert!(codes(&src).is_empty(), "{}", report("x", &src));
}

#[test]
fn programs_without_replanning_edges_hash_as_before() {
    // The canonical text (and so the hash) of a program only changes where it has an edge.
    let without = planner("", "");
    let c = compile("a.nvm", &without);
    let printed = nanovm_dsl::canonical::print_program(
        &nanovm_dsl::parse(&without).file.unwrap().programs[0],
        false,
    );
    assert!(!printed.contains("replans"));
    let with = planner(
        "on stalled -> wrap_up replans 1 budget { max_steps: 4 }",
        r#"branch wrap_up { otherwise -> finished }"#,
    );
    let d = compile("b.nvm", &with);
    assert_ne!(c.programs[0].hash, d.programs[0].hash);
}

#[test]
fn w0401_an_effect_the_replan_target_leads_to_again() {
    // `pay_out` may have run before the budget ran out at `receipt`; the replan goes back to
    // `plan`, whose guard can let it through again: a second payment with a new effect id.
    let src = r#"
program p {
    input { goal: string  amount_cents: int }
    budget { max_steps: 6 }
    effect tool pay(amount_cents: int) -> json idempotent
    start plan
    llm plan { prompt: "Pay for {goal}?" choose next from [pay, done] } -> route
    guard route {
        when next == "pay" and amount_cents <= 100 -> pay_out
        otherwise -> finished
    }
    call pay_out = pay(amount_cents: amount_cents) into paid -> receipt
    llm receipt { prompt: "Write a receipt for {paid}" into text } -> finished
    on budget_exceeded -> plan replans 1 budget { max_steps: 6 }
    end finished: success
}
"#;
    let c = compile("w0401.nvm", src);
    assert!(!c.has_errors(), "{}", c.render());
    let warnings: Vec<&str> = c.diagnostics.iter().map(|d| d.code.id()).collect();
    assert!(warnings.contains(&"W0401"), "{}", c.render());
    insta::assert_snapshot!("w0401_effect_again_after_replan", c.render());

    // The planner pays as its last step before the end: no budget can run out after it, so
    // no warning.
    let quiet = planner(
        "on budget_exceeded -> replan replans 2 budget { max_steps: 4 }",
        r#"llm replan { prompt: "Out of budget for {goal}" choose verdict from [done, more] } -> decide
    branch decide { when verdict == "done" -> finished otherwise -> plan }"#,
    );
    let c = compile("quiet.nvm", &quiet);
    assert!(c.diagnostics.is_empty(), "{}", c.render());
}

#[test]
fn the_graph_pictures_draw_a_replanning_edge_from_a_node_of_its_own() {
    let src = planner(
        "on stalled -> wrap_up replans 3 budget { max_stalled_steps: 2 }",
        r#"branch wrap_up { otherwise -> finished }"#,
    );
    let c = compile("g.nvm", &src);
    assert!(!c.has_errors(), "{}", c.render());
    let p = &c.programs[0];
    let target = p.steps.iter().position(|s| s.name == "wrap_up").unwrap();
    let mermaid = nanovm_dsl::graph::mermaid(p);
    assert!(
        mermaid.contains(&format!(
            "r0([\"on stalled<br/><small>replans 3</small>\"]) -.-> s{target}"
        )),
        "{mermaid}"
    );
    let dot = nanovm_dsl::graph::dot(p);
    assert!(
        dot.contains(&format!("r0 -> s{target} [style=dotted];")),
        "{dot}"
    );
}
