//! Instruction counts of one macro expansion (compile the text, generate the module's tokens,
//! drop them: what `expand` in the `compiler` benchmark times) at 100 and 1,000 steps
//! (gungraun, callgrind). Exact and repeatable where wall-clock time on a shared machine is
//! not, so the ratio between the two sizes is the robust check that expansion stays linear;
//! the wall-clock ratio, which also pays for caches and the allocator, is printed by the
//! `compiler` benchmark.
//!
//! ```sh
//! cargo install gungraun-runner --version 0.20.0     # once
//! cargo bench -p nanovm-dsl --bench compiler_instructions
//! ```

use std::hint::black_box;

use gungraun::{library_benchmark, library_benchmark_group, main};
use nanovm_dsl::codegen::{self, Options};

mod common;

/// The program's text, built outside the measurement; one expansion first, so one-time
/// initialisation (thread-locals, lazily built tables) is not counted.
fn source(steps: usize) -> String {
    let src = common::program(steps);
    black_box(expand(&src));
    src
}

fn expand(src: &str) -> usize {
    let compiled = nanovm_dsl::compile("bench.nvm", src);
    assert!(!compiled.has_errors(), "{}", compiled.render());
    compiled
        .programs
        .iter()
        .map(|p| usize::from(codegen::generate(p, &Options::default()).is_empty()))
        .sum()
}

#[library_benchmark]
#[bench::steps_100(args = (100), setup = source)]
#[bench::steps_1000(args = (1000), setup = source)]
fn expand_program(src: String) -> usize {
    black_box(expand(black_box(&src)))
}

library_benchmark_group!(name = compiler, benchmarks = [expand_program]);

main!(library_benchmark_groups = compiler);
