//! How long the compiler takes, per phase and end to end, on programs of 10, 100 and 1,000
//! steps. "expand" is what `nano_program!` does per invocation: compile the text and generate
//! the module's tokens (the macro's own token-to-text step is linear and small next to it).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nanovm_dsl::codegen::{self, Options};

mod common;
use common::program;

fn phases(c: &mut Criterion) {
    let mut g = c.benchmark_group("compiler");
    for n in [10usize, 100, 1000] {
        let src = program(n);
        let parsed = nanovm_dsl::parse(&src).file.expect("parses");
        let compiled = nanovm_dsl::compile("bench.nvm", &src);
        assert!(!compiled.has_errors(), "{}", compiled.render());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("parse", n), &src, |b, s| {
            b.iter(|| nanovm_dsl::parse(s))
        });
        g.bench_with_input(BenchmarkId::new("check", n), &parsed, |b, f| {
            b.iter(|| nanovm_dsl::check::check(f))
        });
        g.bench_with_input(BenchmarkId::new("parse_check_lower", n), &src, |b, s| {
            b.iter(|| nanovm_dsl::compile("bench.nvm", s))
        });
        g.bench_with_input(BenchmarkId::new("expand", n), &src, |b, s| {
            b.iter(|| {
                let c = nanovm_dsl::compile("bench.nvm", s);
                c.programs
                    .iter()
                    .map(|p| codegen::generate(p, &Options::default()))
                    .collect::<Vec<_>>()
            })
        });
        g.bench_with_input(BenchmarkId::new("expand_pretty", n), &compiled, |b, c| {
            b.iter(|| c.to_rust(&Options::default()))
        });
    }
    g.finish();
}

criterion_group!(benches, phases);
criterion_main!(benches);
