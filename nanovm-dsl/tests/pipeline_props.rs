//! Properties of the whole compiler on arbitrary input: parse -> check -> lower -> codegen never
//! panics, never overflows the stack and never hangs; whatever it accepts becomes Rust that
//! parses; printing a program canonically and compiling it again changes nothing.

use std::path::Path;

use nanovm_dsl::codegen::Options;
use nanovm_dsl::{canonical, compile};
use proptest::prelude::*;

fn examples() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs");
    let mut out = Vec::new();
    for sub in ["", "broken"] {
        let mut paths: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "nvm"))
            .collect();
        paths.sort();
        out.extend(paths.iter().map(|p| std::fs::read_to_string(p).unwrap()));
    }
    out
}

/// Runs the pipeline on a 2 MiB stack (the default for spawned threads and tokio workers) and
/// checks the invariants.
fn pipeline(src: String) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let c = compile("fuzz.nvm", &src);
            for d in &c.diagnostics {
                assert!(d.primary.span.start <= d.primary.span.end, "{d:?}");
                assert!(d.primary.span.end <= src.len(), "{d:?}");
            }
            let rendered = c.render();
            assert_eq!(rendered.is_empty(), c.diagnostics.is_empty());
            if c.has_errors() {
                assert!(c.programs.is_empty());
                return;
            }
            let code = c.to_rust(&Options::default()).expect("no errors, so code");
            syn::parse_file(&code).expect("generated code parses as Rust");
            // Canonical printing round-trips.
            let file = nanovm_dsl::parse(&src).file.expect("parsed before");
            for (p, lowered) in file.programs.iter().zip(&c.programs) {
                let printed = canonical::print_program(p, true);
                let again = compile("printed.nvm", &printed);
                assert!(!again.has_errors(), "{printed}\n{}", again.render());
                assert_eq!(again.programs[0].hash, lowered.hash, "{printed}");
            }
        })
        .expect("spawn")
        .join()
        .expect("the compiler must not panic");
}

#[derive(Clone, Debug)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Duplicate(usize, usize),
    Swap(usize, usize),
}

fn apply(src: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    for e in edits {
        let n = chars.len().max(1);
        match e {
            Edit::Delete(at, len) => {
                let at = at % n;
                let end = (at + len % 8).min(chars.len());
                chars.drain(at.min(chars.len())..end);
            }
            Edit::Insert(at, text) => {
                let at = at % (chars.len() + 1);
                for (i, c) in text.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
            Edit::Duplicate(at, len) => {
                let at = at % n;
                let end = (at + len % 40).min(chars.len());
                let piece: Vec<char> = chars[at.min(chars.len())..end].to_vec();
                for (i, c) in piece.into_iter().enumerate() {
                    chars.insert(end + i, c);
                }
            }
            Edit::Swap(a, b) => {
                if !chars.is_empty() {
                    let (a, b) = (a % chars.len(), b % chars.len());
                    chars.swap(a, b);
                }
            }
        }
    }
    chars.into_iter().collect()
}

fn edit() -> impl Strategy<Value = Edit> {
    let token = prop_oneof![
        Just("->".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just(" guard g { otherwise -> done } ".to_string()),
        Just(" effect ".to_string()),
        Just(" when x == \"y\" -> ".to_string()),
        Just(" not (".to_string()),
        Just("\"{".to_string()),
        Just(" retry 3 ".to_string()),
        Just(" after ".to_string()),
        Just(" secret ".to_string()),
        "[a-z_ {}()\\[\\]\".,:=<>!-]{0,6}",
    ];
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(a, l)| Edit::Delete(a, l)),
        (any::<usize>(), token).prop_map(|(a, t)| Edit::Insert(a, t)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, l)| Edit::Duplicate(a, l)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn mutated_examples_never_break_the_compiler(
        which in 0usize..8,
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let all = examples();
        pipeline(apply(&all[which % all.len()], &edits));
    }

    #[test]
    fn arbitrary_text_never_breaks_the_compiler(src in "\\PC{0,300}") {
        pipeline(src);
    }
}

#[test]
fn the_examples_round_trip_through_the_canonical_printer() {
    for src in examples().into_iter().take(3) {
        pipeline(src);
    }
}

#[test]
fn deepest_allowed_conditions_compile_on_a_small_stack() {
    // Parentheses as deep as the nesting limit allows inside `program { guard {`, and a chain as
    // long as the expression limit allows, through every phase.
    let nested = format!("{}n > 1{}", "(".repeat(61), ")".repeat(61));
    let chain = (0..255)
        .map(|i| format!("n == {i}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let src = format!(
        "program p {{\n    input {{ n: int }}\n    guard g {{ when {nested} -> done when {chain} -> done otherwise -> done }}\n    end done: success\n}}\n"
    );
    pipeline(src);
}
