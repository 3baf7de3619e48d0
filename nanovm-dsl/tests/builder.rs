//! `build::Builder::deny_warnings`: a build script can refuse warnings, such as a guard that
//! decides nothing (W0405), the way `nanovm check --deny-warnings` does.

use std::path::PathBuf;

use nanovm_dsl::build::Builder;

const WARNS: &str = r#"
program p {
    input { account: string }
    effect tool wire(to_account: string) -> json
    start g
    guard g { otherwise -> pay }
    call pay = wire(to_account: account) -> done
    end done: success
}
"#;

/// A fresh temporary directory holding `p.nvm`.
fn scratch(test: &str) -> (PathBuf, PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("nanovm-dsl-builder-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("p.nvm");
    std::fs::write(&src, WARNS).unwrap();
    (dir, src)
}

#[test]
fn warnings_pass_by_default() {
    let (dir, src) = scratch("default");
    let out = Builder::new()
        .cargo_directives(false)
        .out_dir(dir.join("out"))
        .compile(&src)
        .expect("warnings do not fail a build by default");
    assert_eq!(out.warnings, 1);
    assert_eq!(out.programs, ["p"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deny_warnings_fails_the_build_and_writes_nothing() {
    let (dir, src) = scratch("deny");
    let err = Builder::new()
        .cargo_directives(false)
        .deny_warnings(true)
        .out_dir(dir.join("out"))
        .compile(&src)
        .expect_err("a denied warning fails the build");
    assert_eq!(err.errors, 1, "{err}");
    assert!(err.rendered.contains("warning[W0405]"), "{err}");
    assert!(err.rendered.contains("warnings are denied"), "{err}");
    assert!(!dir.join("out/p.rs").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
