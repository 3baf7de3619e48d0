//! The README shows `examples/workflows/refund.nvm` in full; its Rust block compiles that file
//! (a doctest of the facade), and its commands name it. The shown text must be the file's.

#[test]
fn the_readme_program_is_examples_workflows_refund_nvm() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README.md");
    let file = std::fs::read_to_string(format!("{root}/examples/workflows/refund.nvm"))
        .expect("examples/workflows/refund.nvm");
    let shown = readme
        .split_once("```nvm\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("README.md has an ```nvm block");
    assert_eq!(
        shown, file,
        "README.md's program and examples/workflows/refund.nvm differ"
    );
}
