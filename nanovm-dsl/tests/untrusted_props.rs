//! E0309 against an independent oracle: random step graphs over one tool result `rec` (calls
//! that assign it, awaits that replace it, guards that read `rec.account`, read another field,
//! or read nothing, branches, and effect calls that pass `rec.account`), with cycles and
//! `on error` edges. The oracle explores (step, unchecked?) states from `start` directly; E0309
//! must be reported at exactly the effect calls where an unchecked state arrives.

use std::collections::{BTreeSet, VecDeque};

use nanovm_dsl::compile;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Kind {
    /// `call = find(...) into rec [on error -> e] -> n`
    Assign { on_error: Option<usize> },
    /// `await = evt into rec -> n`
    Replace,
    /// `guard { when rec.account != null -> a otherwise -> n }`
    GuardReads { arm: usize },
    /// `guard { when rec.status == "ok" -> a otherwise -> n }`
    GuardOtherField { arm: usize },
    /// `guard { when amount < 5 -> a otherwise -> n }`
    GuardNoRead { arm: usize },
    /// `call = wire(to: rec.account) -> n`
    Effect,
}

#[derive(Clone, Debug)]
struct Step {
    kind: Kind,
    next: usize,
}

/// Targets: `0..n` are steps, `n` is `done`.
fn steps(tape: &[u32]) -> Vec<Step> {
    let mut it = tape.iter().copied().chain(std::iter::repeat(0));
    let mut pick = |k: usize| it.next().unwrap() as usize % k;
    let n = 2 + pick(7);
    (0..n)
        .map(|_| {
            let kind = match pick(6) {
                0 => Kind::Assign {
                    on_error: (pick(2) == 1).then(|| pick(n + 1)),
                },
                1 => Kind::Replace,
                2 => Kind::GuardReads { arm: pick(n + 1) },
                3 => Kind::GuardOtherField { arm: pick(n + 1) },
                4 => Kind::GuardNoRead { arm: pick(n + 1) },
                _ => Kind::Effect,
            };
            Step {
                kind,
                next: pick(n + 1),
            }
        })
        .collect()
}

fn name(n: usize, t: usize) -> String {
    if t == n {
        "done".into()
    } else {
        format!("s{t}")
    }
}

fn source(steps: &[Step]) -> String {
    let n = steps.len();
    let mut src = String::from(
        "program p {\n    input { customer: string  amount: int }\n    budget { max_steps: 100 }\n    tool find(customer: string) -> json\n    effect tool wire(to: json) -> json\n    start s0\n",
    );
    for (i, s) in steps.iter().enumerate() {
        let next = name(n, s.next);
        let line = match &s.kind {
            Kind::Assign { on_error } => {
                let e = on_error.map_or(String::new(), |e| format!(" on error -> {}", name(n, e)));
                format!("call s{i} = find(customer: customer) into rec{e} -> {next}")
            }
            Kind::Replace => format!("await s{i} = evt into rec -> {next}"),
            Kind::GuardReads { arm } => format!(
                "guard s{i} {{ when rec.account != null -> {} otherwise -> {next} }}",
                name(n, *arm)
            ),
            Kind::GuardOtherField { arm } => format!(
                "guard s{i} {{ when rec.status == \"ok\" -> {} otherwise -> {next} }}",
                name(n, *arm)
            ),
            Kind::GuardNoRead { arm } => format!(
                "guard s{i} {{ when amount < 5 -> {} otherwise -> {next} }}",
                name(n, *arm)
            ),
            Kind::Effect => format!("call s{i} = wire(to: rec.account) -> {next}"),
        };
        src.push_str(&format!("    {line}\n"));
    }
    src.push_str("    end done: success\n}\n");
    src
}

/// Effect steps reached with an unchecked tool result.
fn oracle(steps: &[Step]) -> BTreeSet<usize> {
    let n = steps.len();
    let mut seen = vec![[false; 2]; n + 1];
    let mut queue = VecDeque::from([(0usize, false)]);
    seen[0][0] = true;
    let mut out = BTreeSet::new();
    while let Some((s, tainted)) = queue.pop_front() {
        if s == n {
            continue;
        }
        let step = &steps[s];
        if tainted && matches!(step.kind, Kind::Effect) {
            out.insert(s);
        }
        // (target, state after the edge)
        let edges: Vec<(usize, bool)> = match &step.kind {
            Kind::Assign { on_error } => {
                let mut v = vec![(step.next, true)];
                v.extend(on_error.map(|e| (e, tainted)));
                v
            }
            Kind::Replace => vec![(step.next, false)],
            Kind::GuardReads { arm } => vec![(*arm, false), (step.next, false)],
            Kind::GuardOtherField { arm } | Kind::GuardNoRead { arm } => {
                vec![(*arm, tainted), (step.next, tainted)]
            }
            Kind::Effect => vec![(step.next, tainted)],
        };
        for (t, st) in edges {
            if !seen[t][usize::from(st)] {
                seen[t][usize::from(st)] = true;
                queue.push_back((t, st));
            }
        }
    }
    out
}

/// Effect steps the compiler reports E0309 at (each step is on its own line: line 7 is `s0`).
fn reported(src: &str) -> BTreeSet<usize> {
    let c = compile("g.nvm", src);
    c.diagnostics
        .iter()
        .filter(|d| d.code == "E0309")
        .map(|d| c.source.line_col(d.primary.span.start).0 - 7)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn e0309_matches_the_oracle(tape in proptest::collection::vec(any::<u32>(), 0..40)) {
        let steps = steps(&tape);
        let src = source(&steps);
        prop_assert_eq!(reported(&src), oracle(&steps), "{}", src);
    }
}

#[test]
fn the_oracle_sees_both_outcomes() {
    // A guard that reads another field lets the result through; one that reads it stops it.
    let through = [
        Step {
            kind: Kind::Assign { on_error: None },
            next: 1,
        },
        Step {
            kind: Kind::GuardOtherField { arm: 2 },
            next: 3,
        },
        Step {
            kind: Kind::Effect,
            next: 3,
        },
    ];
    assert_eq!(oracle(&through), BTreeSet::from([2]));
    assert_eq!(reported(&source(&through)), BTreeSet::from([2]));
    let stopped = [
        Step {
            kind: Kind::Assign { on_error: None },
            next: 1,
        },
        Step {
            kind: Kind::GuardReads { arm: 2 },
            next: 3,
        },
        Step {
            kind: Kind::Effect,
            next: 3,
        },
    ];
    assert!(oracle(&stopped).is_empty());
    assert!(reported(&source(&stopped)).is_empty());
}
