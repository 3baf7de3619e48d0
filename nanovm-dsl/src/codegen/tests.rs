//! The internal-error net: the helper's output, and lowered programs the checker could never
//! produce reaching it instead of becoming plausible code.

use std::path::Path;

use super::{Options, generate, generate_file, ice};
use crate::check::Ty;
use crate::lower::{Program, StepKind, TExpr, TKind};
use crate::syntax::ast::{Literal, Span};

fn refund() -> Program {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/customer_refund.nvm");
    let src = std::fs::read_to_string(path).unwrap();
    let c = crate::compile("customer_refund.nvm", &src);
    assert!(!c.has_errors(), "{}", c.render());
    c.programs.into_iter().next().unwrap()
}

/// The `compile_error!` messages in generated code.
fn compile_errors(code: &str) -> Vec<String> {
    let file = syn::parse_file(code).expect("generated code with an ICE still parses");
    let mut found = Vec::new();
    collect(&quote::quote!(#file), &mut found);
    found
}

fn collect(tokens: &proc_macro2::TokenStream, out: &mut Vec<String>) {
    let tts: Vec<_> = tokens.clone().into_iter().collect();
    for (i, tt) in tts.iter().enumerate() {
        if let proc_macro2::TokenTree::Group(g) = tt {
            let is_ice = i >= 2
                && matches!(&tts[i - 2], proc_macro2::TokenTree::Ident(id) if id == "compile_error");
            if is_ice {
                let lit: syn::LitStr = syn::parse2(g.stream()).expect("one string literal");
                out.push(lit.value());
            } else {
                collect(&g.stream(), out);
            }
        }
    }
}

fn texpr(kind: TKind, ty: Ty) -> TExpr {
    TExpr {
        kind,
        ty,
        span: Span { start: 0, end: 0 },
    }
}

fn guard_arm<'p>(p: &'p mut Program, step: &str) -> &'p mut TExpr {
    let s = p.steps.iter_mut().find(|s| s.name == step).unwrap();
    let StepKind::Guard(d) = &mut s.kind else {
        panic!("{step} is a guard")
    };
    &mut d.arms[0].0
}

#[test]
fn the_helper_emits_a_compile_error_naming_the_construct() {
    let tokens = ice("an `int` expression of type `string` in `guard policy`");
    let expr: syn::ExprMacro = syn::parse2(tokens).expect("a macro call");
    let path: Vec<String> = expr
        .mac
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    assert_eq!(path, ["core", "compile_error"]);
    assert!(expr.mac.path.leading_colon.is_some());
    let message: syn::LitStr = expr.mac.parse_body().unwrap();
    assert_eq!(
        message.value(),
        "internal compiler error: an `int` expression of type `string` in `guard policy` (please report)"
    );
}

#[test]
fn the_examples_generate_no_internal_error() {
    let code = generate_file(&[refund()], &Options::default(), "");
    assert_eq!(compile_errors(&code), Vec::<String>::new());
}

#[test]
fn an_int_as_a_condition_is_an_internal_error_not_false() {
    let mut p = refund();
    *guard_arm(&mut p, "policy") = texpr(TKind::Lit(Literal::Int(1)), Ty::Int);
    let code = generate_file(&[p], &Options::default(), "");
    assert_eq!(
        compile_errors(&code),
        [
            "internal compiler error: a `bool` expression of type `int` (a literal) in `guard policy` (please report)"
        ]
    );
}

#[test]
fn a_mistyped_operand_is_an_internal_error_where_it_stands() {
    // `amount_cents <= 5000` with the literal typed as a string: the comparison is `int` vs
    // `int` by the left side, so the right side reaches `int_expr` with the wrong type.
    let mut p = refund();
    let arm = guard_arm(&mut p, "policy");
    let TKind::Binary { rhs, .. } = &mut arm.kind else {
        panic!("`and`")
    };
    let TKind::Binary { rhs: limit, .. } = &mut rhs.kind else {
        panic!("`<=`")
    };
    limit.ty = Ty::Str;
    let code = generate_file(&[p], &Options::default(), "");
    let errors = compile_errors(&code);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("expression of type `string` (a literal) in `guard policy`"),
        "{errors:?}"
    );
}

#[test]
fn an_impossible_variable_type_is_an_internal_error_in_type_position() {
    let mut p = refund();
    let v = p.vars.iter_mut().find(|v| v.name == "receipt").unwrap();
    v.ty = Ty::Null;
    let code = generate_file(&[p], &Options::default(), "");
    let errors = compile_errors(&code);
    assert!(
        errors.contains(
            &"internal compiler error: a variable, parameter or result of type `null` in variable `receipt` (please report)".to_string()
        ),
        "{errors:?}"
    );
    // The output variable is refused too, rather than converted as if it were json.
    assert!(
        errors
            .iter()
            .any(|e| e.contains("an output variable `receipt` of type `null`")),
        "{errors:?}"
    );
}

#[test]
fn a_step_without_a_successor_is_an_internal_error_not_a_self_loop() {
    let mut p = refund();
    let s = p.steps.iter_mut().find(|s| s.name == "refund").unwrap();
    let StepKind::Call(c) = &mut s.kind else {
        panic!("a call")
    };
    c.next = None;
    let tokens = generate(&p, &Options::default()).to_string();
    assert!(
        tokens.contains(
            "internal compiler error: a step without a successor (`-> S`) in `call refund`"
        ),
        "{tokens}"
    );
}

#[test]
fn a_runtime_path_that_is_not_a_path_is_an_error_not_nanovm() {
    let opts = Options {
        runtime_path: "nanovm-runtime".into(),
    };
    let code = generate_file(&[refund()], &opts, "");
    assert_eq!(
        compile_errors(&code),
        ["nanovm: the runtime path \"nanovm-runtime\" is not a Rust path (e.g. `::nanovm`)"]
    );
}

#[test]
fn a_parameter_is_named_by_whether_it_is_read() {
    use quote::quote;
    let named = |body: proc_macro2::TokenStream| {
        super::param(std::slice::from_ref(&body), "state").to_string()
    };
    assert_eq!(named(quote!(state.x)), "state");
    assert_eq!(named(quote!(f(g(state)))), "state");
    assert_eq!(named(quote!(Call::T { state: 1 })), "_state");
    assert_eq!(named(quote!(Call::T { state: state.x })), "state");
    assert_eq!(named(quote!(state::x)), "state");
    assert_eq!(named(quote!(other.state)), "state");
    assert_eq!(named(quote!(1 + 2)), "_state");
    // Arms searched one by one: a read in any of them counts, a label in all of them does not.
    let arms = [
        quote!(A => 1,),
        quote!(B => Call::T { state: 1 },),
        quote!(C => state.x,),
    ];
    assert_eq!(super::param(&arms, "state").to_string(), "state");
    assert_eq!(super::param(&arms[..2], "state").to_string(), "_state");
    assert_eq!(super::param(&[], "state").to_string(), "_state");
}

/// `snake_ident` decides plain names without parsing them, exactly as `syn` would: every word
/// `syn` refuses becomes raw (or panics where Rust has no raw form, as before), every other
/// name stays as written.
#[test]
fn snake_ident_agrees_with_the_parser() {
    let by_parser = |name: &str| {
        std::panic::catch_unwind(|| {
            if syn::parse_str::<proc_macro2::Ident>(name).is_ok() {
                proc_macro2::Ident::new(name, proc_macro2::Span::call_site()).to_string()
            } else {
                proc_macro2::Ident::new_raw(name, proc_macro2::Span::call_site()).to_string()
            }
        })
        .ok()
    };
    let ours = |name: &str| std::panic::catch_unwind(|| super::snake_ident(name).to_string()).ok();
    let mut names: Vec<&str> = super::RUST_KEYWORDS.to_vec();
    names.extend([
        "state",
        "input",
        "r2",
        "_x",
        "x_",
        "gen",
        "union",
        "auto",
        "default",
        "raw",
        "macro_rules",
        "static_",
        "Self_",
        "self_",
        "selfie",
        "types",
        "typ",
        "a1b2",
        "__nv",
    ]);
    for name in names {
        assert_eq!(ours(name), by_parser(name), "`{name}`");
    }
}
