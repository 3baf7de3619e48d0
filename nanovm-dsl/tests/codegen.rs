//! Generated code: snapshots of what each shared example becomes, and byte-for-byte
//! determinism. (That it compiles warning-free and runs is tested in the `nanovm` crate.)

use std::path::Path;

use nanovm_dsl::codegen::Options;
use nanovm_dsl::compile;

fn example(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/programs")
            .join(name),
    )
    .unwrap()
}

fn rust(name: &str, src: &str) -> String {
    compile(name, src)
        .to_rust(&Options::default())
        .unwrap_or_else(|| panic!("{name} does not compile"))
}

#[test]
fn generated_code_of_the_examples() {
    for name in [
        "customer_refund.nvm",
        "order_pipeline.nvm",
        "payment_recovery.nvm",
    ] {
        insta::assert_snapshot!(format!("generated_{name}"), rust(name, &example(name)));
    }
}

#[test]
fn codegen_is_deterministic_byte_for_byte() {
    for name in [
        "customer_refund.nvm",
        "order_pipeline.nvm",
        "payment_recovery.nvm",
    ] {
        let src = example(name);
        let runs: Vec<String> = (0..3).map(|_| rust(name, &src)).collect();
        assert_eq!(runs[0], runs[1]);
        assert_eq!(runs[1], runs[2]);
    }
}

#[test]
fn layout_and_comments_do_not_change_the_output_or_the_hash() {
    let src = example("customer_refund.nvm");
    // Same program: comments added, blank lines and indentation changed, clauses reordered.
    let reformatted = src
        .replace("    budget {", "    // budgets first\n\n      budget {")
        .replace(
            "choose decision from [yes, no]\n        on invalid -> manual_review",
            "on invalid -> manual_review /* edge first */ choose decision from [yes, no]",
        );
    assert_ne!(src, reformatted);
    let a = compile("a.nvm", &src);
    let b = compile("b.nvm", &reformatted);
    assert!(!b.has_errors(), "{}", b.render());
    assert_eq!(a.programs[0].hash, b.programs[0].hash);
    assert_eq!(rust("a.nvm", &src), rust("b.nvm", &reformatted));
}

#[test]
fn any_change_of_behaviour_changes_the_hash() {
    let src = example("customer_refund.nvm");
    let base = compile("a.nvm", &src).programs[0].hash;
    for (from, to) in [
        ("amount_cents <= 5000", "amount_cents <= 5001"),
        ("max_steps: 20", "max_steps: 21"),
        ("retry 3", "retry 2"),
        ("\"refund tool failed\"", "\"the refund failed\""),
        ("Answer yes or no.", "Answer yes or no!"),
        (
            "issue_refund(order_id: string, amount_cents: int) -> json idempotent",
            "issue_refund(order_id: string, amount_cents: int) -> json",
        ),
    ] {
        assert!(src.contains(from), "{from}");
        let changed = src.replacen(from, to, 1);
        let c = compile("b.nvm", &changed);
        assert!(!c.has_errors(), "{from} -> {to}: {}", c.render());
        assert_ne!(
            c.programs[0].hash, base,
            "{from} -> {to} must change the hash"
        );
    }
}

/// The `decide_g` function of a one-guard program over `input { j: json, s: string, b: bool, f: float }`.
fn decide(condition: &str) -> String {
    let src = format!(
        "program p {{\n    input {{ j: json, s: string, b: bool, f: float }}\n    guard g {{\n        when {condition} -> done\n        otherwise -> done\n    }}\n    end done: success\n}}\n"
    );
    let code = rust("p.nvm", &src);
    let start = code.find("fn decide_g").expect("a decide function");
    let end = code[start..].find("\n    }\n").expect("its end") + start;
    code[start..end].to_string()
}

#[test]
fn conditions_compile_to_what_they_mean() {
    for (condition, expected) in [
        // Once `num_in(json_num(j)?, &[])`: silently false for every value.
        ("j in [null]", "if state.j.is_null() {"),
        // Once `&state.j.is_null()`, a `&bool` that does not type-check.
        ("j == null", "if state.j.is_null() {"),
        ("j != null", "if !state.j.is_null() {"),
        ("b == true", "if state.b {"),
        ("b == false", "if !state.b {"),
        ("s == \"\"", "if state.s.is_empty() {"),
        // Grouping survives even though no parentheses are written by default.
        (
            "not (b and s == \"x\")",
            "if !(state.b && state.s.as_str() == \"x\") {",
        ),
        (
            "(b or s == \"x\") and b",
            "if (state.b || state.s.as_str() == \"x\") && state.b {",
        ),
        (
            "s in [\"a\", \"a\", \"b\"]",
            "if matches!(state.s.as_str(), \"a\" | \"b\") {",
        ),
        // Float addition is not associative: the right operand keeps its group.
        (
            "f - (f + 1.5) > 0.5 - 2",
            "if state.f - (state.f + 1.5) > 0.5 - 2.0 {",
        ),
    ] {
        let code = decide(condition);
        assert!(code.contains(expected), "`{condition}`:\n{code}");
    }
}

/// A program's identity is its semantics: the hash covers the canonical text and
/// `SEMANTICS_VERSION` ("0.1.0", the value the compiler version had when the hash covered
/// that), never `CARGO_PKG_VERSION`. The hash below is pinned: releasing nanovm under another
/// crate version must leave it (and so every stored run) alone; another semantics version
/// must change it.
#[test]
fn program_hash_covers_the_semantics_version_not_the_crate_version() {
    use nanovm_dsl::canonical::{SEMANTICS_VERSION, print_program, program_hash_for};
    assert_eq!(SEMANTICS_VERSION, "0.1.0");
    let src = example("customer_refund.nvm");
    let compiled = compile("customer_refund.nvm", &src);
    let program = &compiled.programs[0];
    let hex: String = program.hash.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex, "da05a8d72a104253db6e385f36f33f06a913190c909d8b3903f2b25f9f98406d",
        "the pinned hash of customer_refund moved"
    );
    let parsed = nanovm_dsl::parse(&src);
    let ast = &parsed.file.as_ref().expect("parses").programs[0];
    let mut h = blake3::Hasher::new();
    h.update(b"nanovm-dsl 0.1.0\n");
    h.update(print_program(ast, false).as_bytes());
    assert_eq!(program.hash, *h.finalize().as_bytes());
    assert_eq!(program.hash, program_hash_for(ast, SEMANTICS_VERSION));
    assert_ne!(program.hash, program_hash_for(ast, "0.2.0"));
    // The generated header names the semantics version, not the compiler's release.
    let out = tempfile::tempdir().expect("a temporary directory");
    let path = out.path().join("customer_refund.nvm");
    std::fs::write(&path, &src).expect("the source");
    let built = nanovm_dsl::build::Builder::new()
        .cargo_directives(false)
        .out_dir(out.path())
        .compile_files(&[path])
        .expect("compiles");
    let code = std::fs::read_to_string(&built.files[0]).expect("generated");
    assert!(code.starts_with("// @generated by nanovm-dsl (semantics 0.1.0) from "));
    assert!(code.contains("pub const SEMANTICS_VERSION: &str = \"0.1.0\";"));
}

/// A program with record, list and optional types (issue 16).
const TYPED: &str = r#"
program typed {
    /// A line of an order.
    type Item { sku: string, qty: int, note: string? }
    type Refund { id: string, amount: int, lines: list<Item>, reason: string? }
    input { order_id: string, items: list<Item> }
    tool quote(order_id: string, items: list<Item>) -> Refund
    effect tool pay(refund: Refund) -> json idempotent
    call q = quote(order_id: order_id, items: items) into refund -> g
    guard g { when refund.amount < 100 and refund.reason != null -> p otherwise -> done }
    call p = pay(refund: trusted(refund, "g checked it")) -> done
    end done: success
}
"#;

#[test]
fn generated_record_structs_shapes_and_schemas() {
    let code = rust("typed.nvm", TYPED);
    // The part of the module the new types add: the structs, with SHAPE and SCHEMA.
    let from = code
        .find("    /// A line of an order.")
        .expect("the first record");
    let to = code
        .find("    /// The program's typed inputs.")
        .expect("Input");
    insta::assert_snapshot!("generated_record_types", &code[from..to]);
    // ... and how the host sees them: typed inputs, parameters and results.
    assert!(code.contains("pub items: Vec<Item>,"), "{code}");
    assert!(code.contains("items: Vec<Item>,\n"), "{code}");
    assert!(
        code.contains("Output = Result<Refund, __nv::ToolError>"),
        "{code}"
    );
    assert!(code.contains("refund: Refund,"), "{code}");
    assert_eq!(code, rust("typed.nvm", TYPED), "deterministic");
}

#[test]
fn a_program_without_the_new_types_keeps_its_canonical_text() {
    // Types print in the canonical text only where a program declares them, so every program
    // written before them keeps its hash; the typed one's hash covers its declarations.
    for name in [
        "customer_refund.nvm",
        "order_pipeline.nvm",
        "payment_recovery.nvm",
    ] {
        let parsed = nanovm_dsl::parse(&example(name));
        let text = nanovm_dsl::canonical::print_program(&parsed.file.unwrap().programs[0], false);
        assert!(!text.contains("    type "), "{name}");
    }
    let typed = compile("typed.nvm", TYPED).programs[0].hash;
    let changed = compile(
        "typed.nvm",
        &TYPED.replace("qty: int, note", "qty: float, note"),
    );
    assert_ne!(
        changed.programs[0].hash, typed,
        "a field's type is behaviour"
    );
}
