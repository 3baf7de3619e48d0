//! Compatibility of two versions of a program (`nanovm_dsl::compat`): a pair with known
//! differences, the rendered report pinned by a snapshot.

use std::path::Path;

use nanovm_dsl::compat::{CompatReport, compare};
use nanovm_dsl::compile;

fn program(file: &str) -> nanovm_dsl::lower::Program {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat_programs")
        .join(file);
    let src = std::fs::read_to_string(&path).unwrap();
    let c = compile(file, &src);
    assert!(!c.has_errors(), "{file}:\n{}", c.render());
    c.programs.into_iter().next().unwrap()
}

fn report(old: &str, new: &str) -> CompatReport {
    compare(&program(old), &program(new))
}

#[test]
fn a_pair_with_known_differences() {
    let r = report("approval_v1.nvm", "approval_v2.nvm");
    // The await is unchanged and NEW needs nothing more there: a run waiting at it goes on.
    assert!(r.point("review").unwrap().compatible, "{r}");
    // The payment tool's signature changed: the recorded effect means something else.
    let pay = r.point("pay_out").unwrap();
    assert!(!pay.compatible, "{r}");
    assert!(pay.reasons.iter().any(|x| x.contains("currency")), "{r}");
    // NEW reads `second` after `confirm`, which a run past `check` under OLD never had.
    let tell = r.point("tell").unwrap();
    assert!(!tell.compatible, "{r}");
    assert!(tell.reasons.iter().any(|x| x.contains("`second`")), "{r}");
    assert!(!r.all_compatible());
    assert!(r.notes.iter().any(|n| n.contains("max_steps")), "{r}");
    insta::assert_snapshot!(r.render());
}

#[test]
fn a_program_is_compatible_with_itself() {
    let r = report("approval_v1.nvm", "approval_v1.nvm");
    assert!(r.all_compatible(), "{r}");
    assert_eq!(r.points.len(), 3, "{r}");
    assert!(r.notes.is_empty());
}

#[test]
fn a_new_guard_before_an_await_does_not_cover_runs_already_past_it() {
    // NEW checks the amount before the await; OLD did not. A run waiting at `review` under
    // OLD passed no such guard, so NEW's unguarded path from `review` to `pay` would be taken
    // without one: the reverse pair shows it, with OLD guarding only after the await.
    let old = r#"program p {
        input { amount_cents: int }
        effect tool pay(amount_cents: int) -> json idempotent
        start limit
        guard limit { when amount_cents <= 100 -> review otherwise -> no }
        await review = approval -> pay_out
        call pay_out = pay(amount_cents: amount_cents) -> done
        end done: success
        end no: success
    }"#;
    let new = r#"program p {
        input { amount_cents: int }
        effect tool pay(amount_cents: int) -> json idempotent
        start review
        await review = approval into verdict -> limit
        guard limit { when verdict.ok == true -> pay_out otherwise -> no }
        call pay_out = pay(amount_cents: amount_cents) -> done
        end done: success
        end no: success
    }"#;
    let lower = |name: &str, src: &str| {
        let c = compile(name, src);
        assert!(!c.has_errors(), "{}", c.render());
        c.programs.into_iter().next().unwrap()
    };
    let (a, b) = (lower("old", old), lower("new", new));
    // OLD -> NEW: NEW guards after the await, fine.
    assert!(compare(&a, &b).point("review").unwrap().compatible);
    // NEW -> OLD: OLD's path from `review` to `pay` has no guard after the await, and NEW (as
    // the old version here) did guard it on the way: a run waiting there never passed `limit`.
    let back = compare(&b, &a);
    let p = back.point("review").unwrap();
    assert!(!p.compatible, "{back}");
    assert!(p.reasons[0].contains("no guard"), "{back}");
}

#[test]
fn a_record_type_whose_fields_changed_is_another_type() {
    // The variable keeps its name and its type's name, but NEW's `Refund` has an `amount` of
    // another type: a run waiting at `review` holds OLD's value, which is not a NEW `Refund`.
    let old = r#"program p {
        type Refund { id: string, amount: int }
        input { order: string }
        tool quote(order: string) -> Refund
        call q = quote(order: order) into refund -> review
        await review = approval -> g
        guard g { when refund.amount < 10 -> done otherwise -> done }
        end done: success
    }"#;
    let new = old.replace("amount: int }", "amount: float }");
    let lower = |src: &str| compile("p.nvm", src).programs.into_iter().next().unwrap();
    let r = compare(&lower(old), &lower(&new));
    let review = r.point("review").unwrap();
    assert!(!review.compatible, "{r}");
    assert!(
        review.reasons.iter().any(|x| x.contains("amount: float")),
        "{r}"
    );
    assert!(compare(&lower(old), &lower(old)).all_compatible());
}
