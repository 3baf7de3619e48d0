//! The shared example programs: the good ones compile, and each broken one fails with the error
//! its first line names, pointing at the right text.

use std::path::{Path, PathBuf};

use nanovm_dsl::{Severity, compile};

fn programs(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "nvm"))
        .collect();
    v.sort();
    v
}

#[test]
fn good_examples_compile_with_only_the_expected_warnings() {
    let expected: &[(&str, &[&str])] = &[
        ("customer_refund.nvm", &[]),
        ("order_pipeline.nvm", &[]),
        ("payment_recovery.nvm", &[]),
    ];
    let found = programs("");
    assert_eq!(found.len(), expected.len());
    for (path, (name, warnings)) in found.iter().zip(expected) {
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), *name);
        let src = std::fs::read_to_string(path).unwrap();
        let c = compile(name, &src);
        assert!(!c.has_errors(), "{name}:\n{}", c.render());
        let codes: Vec<&str> = c.diagnostics.iter().map(|d| d.code.id()).collect();
        assert_eq!(codes, *warnings, "{name}:\n{}", c.render());
        assert!(
            c.diagnostics
                .iter()
                .all(|d| d.severity == Severity::Warning)
        );
        assert_eq!(c.programs.len(), 1);
    }
}

/// (file, code, message fragment, line, column, text under the caret)
const BROKEN: &[(&str, &str, &str, usize, usize, &str)] = &[
    (
        "choice_typo.nvm",
        "E0304",
        "\"yse\" is not one of the choices of `decision` (yes, no)",
        5,
        32,
        "\"yse\"",
    ),
    (
        "secret_in_prompt.nvm",
        "E0305",
        "the secret `card_number` cannot be interpolated into a prompt",
        4,
        28,
        "card_number",
    ),
    (
        "trap_cycle.nvm",
        "E0104",
        "steps `poll` and `wait` form a cycle with no way out; no `end` is reachable from them",
        6,
        10,
        "poll",
    ),
    (
        "typo_target.nvm",
        "E0102",
        "`reviw` names no step",
        4,
        72,
        "reviw",
    ),
    (
        "typo_target.nvm",
        "E0103",
        "step `review` is unreachable",
        5,
        11,
        "review",
    ),
    (
        "unguarded_effect.nvm",
        "E0106",
        "unguarded effect: the call `charge` is reachable from `start` without passing a guard",
        7,
        10,
        "charge",
    ),
];

#[test]
fn broken_examples_fail_with_the_named_error_at_the_right_place() {
    let files = programs("broken");
    assert_eq!(files.len(), 5);
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let src = std::fs::read_to_string(path).unwrap();
        let first = src.lines().next().unwrap();
        let expect = first
            .strip_prefix("// expect: error, ")
            .expect("first line names the error");
        let c = compile(name, &src);
        assert!(c.has_errors(), "{name} must not compile");
        // The first clause of the expectation is the first error's message (before any help).
        let main = expect
            .split(" (help:")
            .next()
            .unwrap()
            .split("; and")
            .next()
            .unwrap();
        assert!(
            c.diagnostics
                .iter()
                .any(|d| d.is_error() && main.contains(d.message.as_str())
                    || d.message.contains(main)),
            "{name}: no error says {main:?}:\n{}",
            c.render()
        );
        let expected: Vec<_> = BROKEN.iter().filter(|b| b.0 == name).collect();
        assert!(!expected.is_empty(), "{name} has no expectation in BROKEN");
        let errors: Vec<_> = c.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert_eq!(
            errors.len(),
            expected.len(),
            "{name}: exactly the named errors:\n{}",
            c.render()
        );
        for (d, (_, code, message, line, col, text)) in errors
            .iter()
            .zip(expected.iter().map(|b| **b).collect::<Vec<_>>())
        {
            assert_eq!(d.code, code, "{name}");
            assert_eq!(d.message, message, "{name}");
            assert_eq!(
                c.source.line_col(d.primary.span.start),
                (line, col),
                "{name}: {message}"
            );
            assert_eq!(c.source.snippet(d.primary.span), text, "{name}: {message}");
        }
        if expect.contains("help: did you mean `review`?") {
            assert_eq!(errors[0].help.as_deref(), Some("did you mean `review`?"));
        }
        insta::assert_snapshot!(format!("broken_{name}"), c.render());
    }
}
