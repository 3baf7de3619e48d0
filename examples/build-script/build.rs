//! Compiles the example workflows into `$OUT_DIR/nanovm/<stem>.rs`, with Mermaid and DOT pictures
//! next to them. A broken workflow fails the build with its diagnostics (file, line, column,
//! snippet) in Cargo's output. (`Builder::compile("dir")` takes a whole directory, recursively;
//! here the broken examples live under `../workflows/broken`, so the good ones are named.)

fn main() {
    let files: Vec<std::path::PathBuf> = ["customer_refund", "order_pipeline", "payment_recovery"]
        .iter()
        .map(|name| format!("../workflows/{name}.nvm").into())
        .collect();
    nanovm_dsl::build::Builder::new()
        .graphs(true)
        .compile_files(&files)
        .expect("the workflows compile");
}
