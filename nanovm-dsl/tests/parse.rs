//! Tests of the `.nvm` parser: the examples, rendered syntax errors, spans, limits, and a
//! proptest that mutates programs.

use std::path::{Path as FsPath, PathBuf};

use nanovm_dsl::render::render_all;
use nanovm_dsl::syntax::ast::*;
use nanovm_dsl::syntax::limits::*;
use nanovm_dsl::{Diagnostic, Parsed, SourceFile, parse, parse_bytes};
use proptest::prelude::*;

fn programs_in(dir: &str) -> Vec<PathBuf> {
    let dir = FsPath::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "nvm"))
        .collect();
    out.sort();
    out
}

fn all_examples() -> Vec<(String, String)> {
    programs_in("tests/programs")
        .into_iter()
        .chain(programs_in("tests/programs/broken"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

fn render(src: &str) -> String {
    let parsed = parse(src);
    render_all(&parsed.diagnostics, &SourceFile::new("test.nvm", src))
}

fn errors(src: &str) -> Vec<Diagnostic> {
    let parsed = parse(src);
    assert_eq!(
        parsed.file.is_some(),
        !parsed.diagnostics.iter().any(Diagnostic::is_error)
    );
    parsed.diagnostics
}

fn file(src: &str) -> File {
    let parsed = parse(src);
    match parsed.file {
        Some(f) if parsed.diagnostics.is_empty() => f,
        _ => panic!("{}", render(src)),
    }
}

fn text(src: &str, span: Span) -> &str {
    &src[span.start..span.end]
}

/// Runs `f` on a thread with a 2 MiB stack, like a small worker thread would have.
fn small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

// ---- the examples ------------------------------------------------------------------------------

#[test]
fn every_example_parses_without_diagnostics() {
    let examples = all_examples();
    assert!(examples.len() >= 8, "examples missing: {}", examples.len());
    for (name, src) in examples {
        let parsed = parse(&src);
        assert!(
            parsed.diagnostics.is_empty(),
            "{name}:\n{}",
            render_all(&parsed.diagnostics, &SourceFile::new(&name, src.as_str()))
        );
        assert!(parsed.file.is_some(), "{name}");
    }
}

/// Every `.nvm` file under `dir`, recursively, as (path relative to `dir`, text), sorted.
fn nvm_tree(dir: &FsPath) -> Vec<(String, String)> {
    fn walk(root: &FsPath, dir: &FsPath, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|x| x == "nvm") {
                let rel = path.strip_prefix(root).unwrap();
                let rel = rel.to_string_lossy().replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The differences between two trees of programs, one line each.
fn tree_differences(a_name: &str, a: &FsPath, b_name: &str, b: &FsPath) -> Vec<String> {
    let (a_files, b_files) = (nvm_tree(a), nvm_tree(b));
    let mut problems = Vec::new();
    for (rel, text) in &a_files {
        match b_files.iter().find(|(r, _)| r == rel) {
            None => problems.push(format!("{rel} is in {a_name} but not in {b_name}")),
            Some((_, other)) if other != text => {
                problems.push(format!("{rel} differs between {a_name} and {b_name}"));
            }
            Some(_) => {}
        }
    }
    for (rel, _) in &b_files {
        if !a_files.iter().any(|(r, _)| r == rel) {
            problems.push(format!("{rel} is in {b_name} but not in {a_name}"));
        }
    }
    problems
}

/// Programs of `examples/workflows/` that are the project's own (the README's walkthrough), not
/// copies of a shared example.
const README_ONLY: &[&str] = &["refund.nvm"];

/// The repository keeps two copies of the example programs (`examples/workflows/` for users,
/// `nanovm-dsl/tests/programs/` for the tests); they must be identical, always. The source of
/// truth is `../shared/examples` next to the repository: when it is there (CI), both copies must
/// match it too; when it is not, that part is skipped visibly, and fails under
/// `NANOVM_REQUIRE_PEERS=1`.
#[test]
fn copies_match_the_shared_examples() {
    let root = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tests_copy = root.join("nanovm-dsl/tests/programs");
    let user_copy = root.join("examples/workflows");
    assert!(nvm_tree(&tests_copy).len() >= 8, "examples missing");
    let mut problems = tree_differences(
        "nanovm-dsl/tests/programs",
        &tests_copy,
        "examples/workflows",
        &user_copy,
    );
    // The README's own program lives beside the shared ones for users, and is no shared example.
    problems.retain(|p| {
        !README_ONLY
            .iter()
            .any(|name| p.starts_with(&format!("{name} is in examples/workflows but not")))
    });
    let shared = root.join("../shared/examples");
    if shared.is_dir() {
        problems.extend(tree_differences(
            "../shared/examples",
            &shared,
            "nanovm-dsl/tests/programs",
            &tests_copy,
        ));
    } else {
        println!(
            "skipped: ../shared/examples is not next to the repository; the copies were compared only with each other"
        );
        let required = std::env::var("NANOVM_REQUIRE_PEERS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "../shared/examples is missing but NANOVM_REQUIRE_PEERS=1"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn ast_of_customer_refund() {
    let src = std::fs::read_to_string(
        FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/customer_refund.nvm"),
    )
    .unwrap();
    insta::assert_debug_snapshot!(file(&src));
}

#[test]
fn ast_of_every_construct() {
    let src = r#"
/// Doc of the program.
program everything {
    input { a: string, b: int c: float
            d: bool e: json f: secret string }
    budget { max_steps: 20 max_duration: 500ms, custom_key: 3 }
    /// A read-only tool.
    tool t(x: string, y: int,) -> json
    effect tool e() -> json idempotent
    start first

    /// Asks the model.
    llm first {
        system: "sys {{literal}}";
        model: "m", max_tokens: 100
        prompt: "Hi\n{ a }, {x.in}"
        into answer
        retry 2
        on error -> fail
    } -> par
    parallel par max_concurrency 2 retry 1 {
        call one = t(x: "s", y: -5) into r1
        llm two { prompt: "p" choose c from [p, q,] after one };
        call three = t(x: a, y: 1) after one, two retry 3
    } on error -> fail -> wait
    await wait = ev into v: secret json timeout 2d -> fail -> route
    branch route {
        when not not (a == "x") or b + 1 - 2 >= 3 and lower(a) starts_with "x" -> ok,
        when c in [1, 2.5, -1.25, 1e3, true, null] -> ok
        otherwise -> fail
        otherwise -> ok
    }
    end ok: success
    end fail: failure "it \"failed\" \u{1F600}"
}
program second { end x: success }
"#;
    insta::assert_debug_snapshot!(file(src));
}

// ---- spans ---------------------------------------------------------------------------------

#[test]
fn spans_point_at_the_source() {
    let src = "program p {\n    input { request: string }\n    llm analyze {\n        prompt: \"a\\n\\t\\\"b\\\" {{x}} { request } and {v.in}\"\n    } -> done\n    guard g { when a and b or not c == 1 + 2 -> done otherwise -> done }\n    end done: success\n}\n";
    let f = file(src);
    let p = &f.programs[0];
    assert_eq!(text(src, p.name.span), "p");
    assert!(text(src, p.span).starts_with("program p {") && text(src, p.span).ends_with('}'));
    let steps: Vec<&Step> = p.steps().collect();
    assert_eq!(text(src, steps[0].name.span), "analyze");
    assert_eq!(
        text(src, steps[0].span),
        &src[src.find("llm analyze").unwrap()..src.find("-> done").unwrap() + 7]
    );
    let StepKind::Llm(llm) = &steps[0].kind else {
        panic!()
    };
    let prompt = llm.prompt.as_ref().unwrap();
    assert!(text(src, prompt.span).starts_with("\"a\\n"));
    let holes: Vec<&Path> = prompt
        .parts
        .iter()
        .filter_map(|p| match p {
            TemplatePart::Hole(h) => Some(h),
            TemplatePart::Text(_) => None,
        })
        .collect();
    assert_eq!(text(src, holes[0].span), "request");
    assert_eq!(text(src, holes[0].segments[0].span), "request");
    assert_eq!(text(src, holes[1].span), "v.in");
    assert_eq!(text(src, holes[1].segments[1].span), "in");
    assert_eq!(
        prompt.parts[0],
        TemplatePart::Text("a\n\t\"b\" {x} ".to_string())
    );
    assert_eq!(text(src, llm.next.as_ref().unwrap().span), "-> done");

    let StepKind::Guard(g) = &steps[1].kind else {
        panic!()
    };
    let cond = &g.arms[0].cond;
    assert_eq!(text(src, cond.span), "a and b or not c == 1 + 2");
    let ExprKind::Binary {
        op,
        op_span,
        lhs,
        rhs,
    } = &cond.kind
    else {
        panic!()
    };
    assert_eq!((*op, text(src, *op_span)), (BinOp::Or, "or"));
    assert_eq!(text(src, lhs.span), "a and b");
    assert_eq!(text(src, rhs.span), "not c == 1 + 2");
    let ExprKind::Not(inner) = &rhs.kind else {
        panic!()
    };
    assert_eq!(text(src, inner.span), "c == 1 + 2");
    assert_eq!(text(src, g.body_span).chars().next(), Some('{'));
    assert_eq!(text(src, g.otherwise[0].span), "otherwise -> done");
}

#[test]
fn binary_chains_are_left_deep() {
    let src = "program p { guard g { when a - b - c == d or e or f -> x otherwise -> x } }";
    let f = file(src);
    let Some(Item::Step(Step {
        kind: StepKind::Guard(g),
        ..
    })) = f.programs[0].items.first()
    else {
        panic!()
    };
    let ExprKind::Binary { op, lhs, .. } = &g.arms[0].cond.kind else {
        panic!()
    };
    assert_eq!(*op, BinOp::Or);
    assert_eq!(text(src, lhs.span), "a - b - c == d or e");
    let ExprKind::Binary { lhs, .. } = &lhs.kind else {
        panic!()
    };
    let ExprKind::Binary { op, lhs, .. } = &lhs.kind else {
        panic!()
    };
    assert_eq!((*op, text(src, lhs.span)), (BinOp::Eq, "a - b - c"));
    let ExprKind::Binary { op, lhs, .. } = &lhs.kind else {
        panic!()
    };
    assert_eq!((*op, text(src, lhs.span)), (BinOp::Sub, "a - b"));
}

#[test]
fn call_clauses_in_any_order_and_final_target() {
    let src = "program p { call c = t(a: 1,) on error -> bad retry 2 into v -> good }";
    let f = file(src);
    let Some(Item::Step(s)) = f.programs[0].items.first() else {
        panic!()
    };
    let StepKind::Call(c) = &s.kind else { panic!() };
    assert_eq!(c.on_error.as_ref().unwrap().name.name, "bad");
    assert_eq!(
        text(src, c.on_error.as_ref().unwrap().span),
        "on error -> bad"
    );
    assert_eq!(c.next.as_ref().unwrap().name.name, "good");
    assert_eq!(c.retry.unwrap().value, 2);
    assert_eq!(c.into.as_ref().unwrap().name, "v");
    assert_eq!(text(src, c.args_span), "(a: 1,)");
    assert_eq!(text(src, c.args[0].span), "a: 1");
}

#[test]
fn trusted_marks_a_whole_argument_and_round_trips() {
    let src = r#"program p { call c = t(a: trusted(rec.account, "own accounts only"), b: trusted(x,), c: trusted) -> good }"#;
    let f = file(src);
    let Some(Item::Step(s)) = f.programs[0].items.first() else {
        panic!()
    };
    let StepKind::Call(c) = &s.kind else { panic!() };
    let t = c.args[0].trust.as_ref().expect("marked");
    assert_eq!(
        text(src, t.span),
        r#"trusted(rec.account, "own accounts only")"#
    );
    assert_eq!(text(src, c.args[0].value.span), "rec.account");
    assert_eq!(t.reason.as_ref().unwrap().value, "own accounts only");
    let t = c.args[1].trust.as_ref().expect("marked");
    assert!(t.reason.is_none());
    // Not followed by `(`, `trusted` is a variable.
    assert!(c.args[2].trust.is_none());
    assert!(matches!(&c.args[2].value.kind, ExprKind::Path(p) if p.root().name == "trusted"));
    let printed = nanovm_dsl::canonical::print_program(&f.programs[0], true);
    assert!(
        printed
            .contains(r#"a: trusted(rec.account, "own accounts only"), b: trusted(x), c: trusted"#),
        "{printed}"
    );
    assert_eq!(file(&printed).programs[0].items.len(), 1);
}

#[test]
fn docs_attach_to_programs_tools_and_steps() {
    let src = "//! not a doc\n/// one\n///two\n//// not a doc\nprogram p {\n  /// tool doc\n  effect tool t() -> json\n  /// step doc\n  // plain comment\n  end e: success\n}";
    let f = file(src);
    let p = &f.programs[0];
    // `//!` and `////` are plain comments; as in Rust, plain comments do not detach docs.
    assert_eq!(p.doc, ["one", "two"]);
    let src2 = "/// one\nend_of_something\nprogram p { end e: success }";
    assert!(parse(src2).diagnostics.len() == 1);
    let src3 = "/// x\n\nprogram p {\n /// y\n start e end e: success }";
    let f3 = file(src3);
    assert_eq!(f3.programs[0].doc, ["x"]);
    assert!(f3.programs[0].steps().next().unwrap().doc.is_empty());
    assert_eq!(p.tools().next().unwrap().doc, ["tool doc"]);
    assert_eq!(p.steps().next().unwrap().doc, ["step doc"]);
}

#[test]
fn keywords_allowed_as_fields_and_contextual_words_as_names() {
    let src = "program p { input { prompt: string model: int retry: bool }\n call retry = t(system: x.in, error: receipt.error) into success -> retry }";
    let f = file(src);
    let inputs: Vec<&str> = f.programs[0]
        .inputs()
        .map(|i| i.name.name.as_str())
        .collect();
    assert_eq!(inputs, ["prompt", "model", "retry"]);
}

#[test]
fn literals_are_decoded() {
    let src = r#"program p { guard g { when x == "\u{48}i\0" and y == -9223372036854775808 and z == 0.5 -> a otherwise -> a } }"#;
    let f = file(src);
    let Some(Item::Step(Step {
        kind: StepKind::Guard(g),
        ..
    })) = f.programs[0].items.first()
    else {
        panic!()
    };
    let dump = format!("{:?}", g.arms[0].cond);
    assert!(dump.contains("Str(\"Hi\\0\")"), "{dump}");
    assert!(dump.contains("Int(-9223372036854775808)"), "{dump}");
    assert!(dump.contains("Float(0.5)"), "{dump}");
}

#[test]
fn durations_in_millis() {
    let src = "program p { budget { a: 500ms b: 30s c: 5m d: 24h e: 2d f: 7 } }";
    let f = file(src);
    let values: Vec<String> = f.programs[0]
        .budget()
        .unwrap()
        .entries
        .iter()
        .map(|e| match &e.value {
            BudgetValue::Int(i) => format!("int {}", i.value),
            BudgetValue::Duration(d) => format!("{}ms", d.millis),
        })
        .collect();
    assert_eq!(
        values,
        [
            "500ms",
            "30000ms",
            "300000ms",
            "86400000ms",
            "172800000ms",
            "int 7"
        ]
    );
}

// ---- rendered errors -----------------------------------------------------------------------

macro_rules! error_snapshot {
    ($name:ident, $src:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(render($src));
        }
    };
}

error_snapshot!(
    err_missing_arrow,
    "program p {\n    llm a { prompt: \"x\" choose d from [y, n] } policy\n    end policy: success\n}\n"
);
error_snapshot!(
    err_missing_arrow_at_line_end,
    "program p {\n    call c = t(x: 1)\n    end d: success\n}\n"
);
error_snapshot!(
    err_unknown_step_keyword,
    "program p {\n    lm a { prompt: \"x\" } -> b\n    end b: success\n}\n"
);
error_snapshot!(
    err_unclosed_brace,
    "program p {\n    llm a { prompt: \"x\"\n    end b: success\n"
);
error_snapshot!(err_unclosed_program, "program p {\n    end b: success\n");
error_snapshot!(
    err_bad_duration_unit,
    "program p {\n    await w = approval timeout 30sec -> late -> done\n}\n"
);
error_snapshot!(
    err_two_prompts,
    "program p {\n    llm a {\n        prompt: \"x\"\n        prompt: \"y\"\n    } -> b\n}\n"
);
error_snapshot!(
    err_two_retries,
    "program p {\n    call c = t() retry 2 retry 3 -> d\n}\n"
);
error_snapshot!(
    err_keyword_as_name,
    "program p {\n    llm end { prompt: \"x\" } -> b\n}\n"
);
error_snapshot!(
    err_secret_secret,
    "program p {\n    input { card: secret secret string }\n}\n"
);
error_snapshot!(
    err_comparison_chain,
    "program p {\n    guard g { when a == b == c -> x otherwise -> y }\n}\n"
);
error_snapshot!(
    err_bad_escape,
    "program p {\n    end x: failure \"bad \\q escape\"\n}\n"
);
error_snapshot!(
    err_bad_template_holes,
    "program p {\n    llm a { prompt: \"empty { } and unclosed {x\" } -> b\n}\n"
);
error_snapshot!(err_empty_file, "  // only a comment\n\n");
error_snapshot!(
    err_two_broken_steps,
    "program p {\n    llm a { prompt: \"x\" } policy\n    guard policy { when -> b otherwise -> b }\n    call b = t(x: 1) -> c\n    end c: success\n}\n"
);
error_snapshot!(
    err_integer_out_of_range,
    "program p {\n    call c = t() retry 99999999999999999999 -> d\n}\n"
);
error_snapshot!(
    err_missing_operand,
    "program p {\n    guard g { when a b -> x otherwise -> y }\n}\n"
);
error_snapshot!(
    err_branch_with_target,
    "program p {\n    parallel x {\n        call a = t() -> b\n    } -> c\n}\n"
);
error_snapshot!(
    err_choose_and_into,
    "program p {\n    llm a { prompt: \"x\" choose d from [y, n] into e } -> b\n}\n"
);
error_snapshot!(
    err_after_outside_parallel,
    "program p {\n    call c = t() after a -> d\n}\n"
);
error_snapshot!(
    err_unterminated_string,
    "program p {\n    end x: failure \"never closed\n}\n"
);
error_snapshot!(err_not_a_program, "llm a { prompt: \"x\" } -> b\n");

#[test]
fn two_broken_steps_give_exactly_two_errors() {
    let src = "program p {\n    llm a { prompt: \"x\" } policy\n    guard policy { when -> b otherwise -> b }\n    call b = t(x: 1) -> c\n    end c: success\n}\n";
    let d = errors(src);
    assert_eq!(d.len(), 2, "{}", render(src));
    assert!(d.iter().all(|d| d.code == "E0001"));
}

#[test]
fn errors_after_a_broken_header_are_still_found() {
    let src = "program {\n    llm a { prompt: \"x\" } -> b\n    end b: succes\n}\nprogram q { end x: success }\n";
    let d = errors(src);
    assert_eq!(d.len(), 2, "{}", render(src));
}

#[test]
fn error_codes() {
    let code = |src: &str| {
        errors(src)
            .iter()
            .map(|d| d.code.id())
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(code(""), "E0004");
    assert_eq!(code("/* a */ // b"), "E0004");
    assert_eq!(code("program p { x }"), "E0001");
    assert_eq!(code("program p { end when: success }"), "E0007");
    assert_eq!(
        code("program p { llm a { prompt: \"{end}\" } -> b }"),
        "E0007"
    );
    assert_eq!(
        code("program p { budget { d: 99999999999999999d } }"),
        "E0006"
    );
    assert_eq!(code("program p { budget { d: -5s } }"), "E0006");
    assert_eq!(code("program p { llm a { prompt: \"}\" } -> b }"), "E0006");
    assert_eq!(
        code("program p { llm a { prompt: \"{a b}\" } -> b }"),
        "E0006"
    );
    assert_eq!(code("program p { end x: failure \"\\u{D800}\" }"), "E0006");
    assert_eq!(
        code("program p { guard g { when x == 1e999 -> a } }"),
        "E0006"
    );
    assert_eq!(
        code("program p { guard g { when x == 12ab -> a } }"),
        "E0006"
    );
    assert_eq!(
        code("program p { parallel x max_concurrency 1 max_concurrency 2 { } -> y }"),
        "E0005"
    );
    assert_eq!(
        code("program p { await w = e into a timeout 1s -> x into b -> y }"),
        "E0005"
    );
    assert_eq!(code("program p { end x: success } }"), "E0001");
    assert_eq!(code("program p { end x: success \0 }"), "E0001");
    assert_eq!(code("program p { end x: success /* open"), "E0001");
    // Template escapes and literal braces in non-template strings are fine.
    assert_eq!(code("program p { end x: failure \"{not a hole}\" }"), "");
}

#[test]
fn parse_bytes_reports_invalid_utf8() {
    let d = parse_bytes(b"program p { end x: failure \"\xff\" }").unwrap_err();
    assert_eq!(d.code, "E0003");
    assert_eq!(d.primary.span, Span::new(28, 29));
    let ok = parse_bytes(b"program p { end x: success }").unwrap();
    assert!(ok.file.is_some());
}

// ---- limits --------------------------------------------------------------------------------

fn first_code(p: &Parsed) -> &'static str {
    p.diagnostics.first().map_or("", |d| d.code.id())
}

#[test]
fn nesting_limits_on_a_small_stack() {
    small_stack(|| {
        for n in [64usize, 65, 1_000, 100_000] {
            // guard g { ... } adds two levels of braces.
            let parens = format!(
                "program p {{ guard g {{ when {}x{} -> a otherwise -> a }} }}",
                "(".repeat(n),
                ")".repeat(n)
            );
            let nots = format!(
                "program p {{ guard g {{ when {}x -> a otherwise -> a }} }}",
                "not ".repeat(n)
            );
            let inner = format!(
                "program p {{ guard g {{ when {}x{} -> a otherwise -> a }} }}",
                "(".repeat(n.saturating_sub(2)),
                ")".repeat(n.saturating_sub(2))
            );
            for src in [&parens, &nots, &inner] {
                let p = parse(src);
                let fits = if std::ptr::eq(src, &inner) {
                    n <= 64
                } else {
                    n + 2 <= 64
                };
                if fits {
                    assert!(p.diagnostics.is_empty(), "{n}: {:?}", p.diagnostics);
                } else {
                    assert_eq!(first_code(&p), "E0002", "{n}");
                    assert_eq!(p.diagnostics[0].message, "nested deeper than 64 levels");
                }
            }
        }
        let braces = "{".repeat(MAX_SOURCE_BYTES);
        let p = parse(&braces);
        assert_eq!(first_code(&p), "E0002");
        assert_eq!(p.diagnostics[0].primary.span, Span::new(64, 65));
    });
}

#[test]
fn mixed_nesting_at_the_limit() {
    small_stack(|| {
        // 2 braces + 31 x (`not` + paren) = 64 levels.
        let cond = format!("{}x{}", "not (".repeat(31), ")".repeat(31));
        let src = format!("program p {{ guard g {{ when {cond} -> a otherwise -> a }} }}");
        assert!(parse(&src).diagnostics.is_empty());
        let lists = format!(
            "program p {{ guard g {{ when {}[1]{} -> a otherwise -> a }} }}",
            "len(".repeat(61),
            ")".repeat(61)
        );
        assert!(parse(&lists).diagnostics.is_empty(), "{}", render(&lists));
    });
}

#[test]
fn long_expressions_are_bounded() {
    small_stack(|| {
        for n in [100usize, 255, 256, 10_000, 100_000] {
            let cond = vec!["a"; n + 1].join(" or ");
            let src = format!("program p {{ guard g {{ when {cond} -> a otherwise -> a }} }}");
            let p = parse(&src);
            if n < MAX_EXPR_DEPTH {
                assert!(p.diagnostics.is_empty(), "{n}");
            } else {
                assert_eq!(first_code(&p), "E0002", "{n}");
                assert_eq!(p.diagnostics[0].message, "expression too long");
            }
        }
        let sum = vec!["1"; 5_000].join(" + ");
        let src = format!("program p {{ call c = t(x: {sum}) -> d }}");
        assert_eq!(first_code(&parse(&src)), "E0002");
    });
}

#[test]
fn size_limit_is_checked_first() {
    let big = " ".repeat(MAX_SOURCE_BYTES + 1);
    let p = parse(&big);
    assert_eq!(first_code(&p), "E0002");
    assert!(
        p.diagnostics[0]
            .message
            .contains(&(MAX_SOURCE_BYTES + 1).to_string())
    );
    let mut bytes = vec![0xffu8; MAX_SOURCE_BYTES + 1];
    bytes[0] = b'p';
    assert_eq!(first_code(&parse_bytes(&bytes).unwrap()), "E0002");
}

#[test]
fn long_names_and_many_steps() {
    let long = "n".repeat(MAX_IDENT_LEN + 1);
    let src = format!("program p {{ end {long}: success }}");
    assert_eq!(first_code(&parse(&src)), "E0002");
    let ok = "n".repeat(MAX_IDENT_LEN);
    assert!(
        parse(&format!("program p {{ end {ok}: success }}"))
            .file
            .is_some()
    );

    let mut src = String::from("program p {\n");
    for i in 0..=MAX_STEPS_PER_PROGRAM {
        src.push_str(&format!("end s{i}: success\n"));
    }
    src.push('}');
    let p = parse(&src);
    assert_eq!(p.diagnostics.len(), 1);
    assert_eq!(first_code(&p), "E0002");
}

#[test]
fn a_megabyte_of_valid_text_parses() {
    small_stack(|| {
        let step = "    guard g{i} { when a == \"x\" and b < 5 or lower(c) contains \"y\" -> e otherwise -> e }\n";
        let mut src = String::new();
        let mut i = 0usize;
        while src.len() + step.len() + 60 < MAX_SOURCE_BYTES {
            if i.is_multiple_of(5_000) {
                if i > 0 {
                    src.push_str("    end e: success\n}\n");
                }
                src.push_str(&format!("program p{i} {{\n"));
            }
            src.push_str(&step.replace("{i}", &i.to_string()));
            i += 1;
        }
        src.push_str("    end e: success\n}\n");
        let p = parse(&src);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics.first());
        assert!(src.len() > MAX_SOURCE_BYTES - 200);
        assert_eq!(p.file.unwrap().programs.len(), i.div_ceil(5_000));
    });
}

#[test]
fn many_errors_stop_at_the_cap() {
    let src = format!("program p {{\n{}}}\n", "  llm x\n".repeat(500));
    let p = parse(&src);
    assert_eq!(p.diagnostics.len(), MAX_SYNTAX_ERRORS);
    assert!(!p.diagnostics.last().unwrap().notes.is_empty());
}

// ---- proptest ------------------------------------------------------------------------------

fn check_invariants(src: &str) {
    let p = parse(src);
    assert_eq!(
        p.file.is_some(),
        !p.diagnostics.iter().any(Diagnostic::is_error),
        "{src:?}"
    );
    for d in &p.diagnostics {
        for l in std::iter::once(&d.primary).chain(&d.secondary) {
            let s = l.span;
            assert!(s.start <= s.end && s.end <= src.len(), "{src:?}: {d:?}");
            assert!(
                src.is_char_boundary(s.start) && src.is_char_boundary(s.end),
                "{src:?}: {d:?}"
            );
        }
        // No grammar internals: sentinels, rule names, character ranges.
        for internal in [
            "\0",
            "kw_",
            "call_step",
            "llm_clause",
            "BUILTIN",
            "a..z",
            "0..9",
        ] {
            assert!(!d.message.contains(internal), "{}", d.message);
        }
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    Swap(usize, usize, usize),
    Duplicate(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let piece = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("(".to_string()),
        Just("\"".to_string()),
        Just("->".to_string()),
        Just("not ".to_string()),
        Just("/*".to_string()),
        Just("end".to_string()),
        Just("\\".to_string()),
        Just("é".to_string()),
        "[ -~]{0,4}",
    ];
    prop_oneof![
        (any::<usize>(), 1..20usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), piece).prop_map(|(a, s)| Mutation::Insert(a, s)),
        (any::<usize>(), any::<usize>(), 1..10usize).prop_map(|(a, b, n)| Mutation::Swap(a, b, n)),
        (any::<usize>(), 1..30usize).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
    ]
}

fn apply(src: &str, m: &Mutation) -> String {
    let chars: Vec<char> = src.chars().collect();
    let n = chars.len().max(1);
    let mut out = chars.clone();
    match m {
        Mutation::Delete(a, len) => {
            let a = a % n;
            let b = (a + len).min(out.len());
            out.drain(a.min(out.len())..b);
        }
        Mutation::Insert(a, s) => {
            let a = a % (out.len() + 1);
            out.splice(a..a, s.chars());
        }
        Mutation::Swap(a, b, len) => {
            let (a, b) = (a % n, b % n);
            for k in 0..*len {
                if a + k < out.len() && b + k < out.len() {
                    out.swap(a + k, b + k);
                }
            }
        }
        Mutation::Duplicate(a, len) => {
            let a = a % n;
            let b = (a + len).min(chars.len());
            let slice: Vec<char> = chars[a.min(chars.len())..b].to_vec();
            out.splice(b..b, slice);
        }
    }
    out.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_breaks_the_parser(src in "\\PC{0,200}") {
        check_invariants(&src);
    }

    #[test]
    fn grammar_soup_never_breaks_the_parser(
        words in proptest::collection::vec(
            prop_oneof![
                Just("program"), Just("p"), Just("{"), Just("}"), Just("llm"), Just("call"),
                Just("guard"), Just("when"), Just("->"), Just("=="), Just("("), Just(")"),
                Just("\"{x}\""), Just("prompt:"), Just("end"), Just(":"), Just("success"),
                Just("not"), Just("and"), Just("1"), Just("30s"), Just("["), Just("]"), Just(","),
            ],
            0..60,
        )
    ) {
        check_invariants(&words.join(" "));
    }

    #[test]
    fn mutated_examples_never_break_the_parser(
        which in 0..8usize,
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let examples = all_examples();
        let mut src = examples[which % examples.len()].1.clone();
        for m in &muts {
            src = apply(&src, m);
        }
        check_invariants(&src);
    }
}

// ---- speed ---------------------------------------------------------------------------------

/// A program of `n` steps mixing every step kind.
fn big_program(n: usize) -> String {
    let mut src = String::from(
        "program big {\n    input { a: string b: int }\n    tool t(x: string) -> json\n    start s0\n",
    );
    for i in 0..n {
        let next = format!("s{}", i + 1);
        let step = match i % 4 {
            0 => format!(
                "    llm s{i} {{\n        prompt: \"Classify {{a}} for step {i}\"\n        choose c{i} from [yes, no]\n        on invalid -> {next}\n    }} -> {next}\n"
            ),
            1 => format!(
                "    guard s{i} {{\n        when c{} == \"yes\" and b <= 5000 or lower(a) contains \"x\" -> {next}\n        otherwise -> {next}\n    }}\n",
                i - 1
            ),
            2 => {
                format!("    call s{i} = t(x: a) into r{i} retry 2 on error -> {next} -> {next}\n")
            }
            _ => format!("    await s{i} = ev{i} into v{i} timeout 30s -> {next} -> {next}\n"),
        };
        src.push_str(&step);
    }
    src.push_str(&format!("    end s{n}: success\n}}\n"));
    src
}

/// A 1,000-step program parses completely (its speed is measured in `benches/compiler.rs`).
#[test]
fn a_thousand_steps_parse() {
    let src = big_program(1_000);
    let p = parse(&src);
    assert!(p.diagnostics.is_empty(), "{}", render(&src));
    assert_eq!(p.file.unwrap().programs[0].steps().count(), 1_001);
}

#[test]
fn record_list_optional_types_and_typed_answers_parse_and_round_trip() {
    let src = r#"program p {
        /// A line.
        type Item { sku: string, qty: int, note: string? }
        type Order { items: list<Item>, tags: list<string?>?, extra: json }
        input { order: Order }
        tool t(items: list<Item>) -> Item?
        llm ask { prompt: "{order.items}" answer best: list<Item> on invalid -> e } -> e
        await w = ev into o: Order -> e
        end e: success
    }"#;
    let f = file(src);
    let p = &f.programs[0];
    let types: Vec<_> = p.types().collect();
    assert_eq!(types.len(), 2);
    assert_eq!(types[0].doc, ["A line."]);
    assert_eq!(
        types[1]
            .fields
            .iter()
            .map(|f| format!("{}: {}", f.name, f.ty.kind))
            .collect::<Vec<_>>(),
        ["items: list<Item>", "tags: list<string?>?", "extra: json"]
    );
    assert_eq!(text(src, types[0].fields[2].ty.span), "string?");
    let Some(Item::Tool(t)) = p.items.get(3) else {
        panic!()
    };
    assert_eq!(
        t.ret.kind,
        TypeKind::Optional(Box::new(TypeKind::Named("Item".into())))
    );
    // Printed canonically and parsed again, the tree is the same (printing is stable).
    let printed = nanovm_dsl::canonical::print_program(p, true);
    assert!(
        printed.contains("    type Order {\n        items: list<Item>\n"),
        "{printed}"
    );
    assert!(printed.contains("answer best: list<Item>"), "{printed}");
    let again = file(&printed);
    assert_eq!(
        nanovm_dsl::canonical::print_program(&again.programs[0], true),
        printed
    );
}
