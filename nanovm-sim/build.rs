//! Compiles the programs the simulation attacks: the three shipped examples (the files
//! themselves, not copies) and the programs written for it (`programs/*.nvm`).

use std::path::PathBuf;

fn main() {
    let files: Vec<PathBuf> = [
        "../examples/workflows/customer_refund.nvm",
        "../examples/workflows/order_pipeline.nvm",
        "../examples/workflows/payment_recovery.nvm",
        "programs/review_loop.nvm",
        "programs/fan.nvm",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    nanovm_dsl::build::Builder::new()
        .runtime_path("::nanovm_runtime")
        .compile_files(&files)
        .expect("the simulation's programs compile");
}
