//! How long the compiler takes, per phase and end to end, on programs of 10, 100 and 1,000
//! steps. "expand" is what `nano_program!` does per invocation: compile the text and generate
//! the module's tokens (the macro's own token-to-text step is linear and small next to it).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nanovm_dsl::codegen::{self, Options};

/// A program of `n` steps mixing every step kind that runs in sequence: llm (choose), guard,
/// call with retry and on error, branch on a json field, ending in `end`.
fn program(n: usize) -> String {
    let mut s = String::from(
        "program bench {\n    input { text: string  limit: int }\n    budget { max_steps: 100000 }\n    tool lookup(q: string) -> json\n    effect tool act(q: string, n: int) -> json idempotent\n",
    );
    for i in 0..n {
        let next = format!("s{}", i + 1);
        let step = match i % 4 {
            0 => format!(
                "    llm s{i} {{ prompt: \"Classify {{text}} ({i})\" choose c{i} from [yes, no] on invalid -> failed }} -> {next}\n"
            ),
            1 => format!(
                "    guard s{i} {{ when c{} == \"yes\" and limit <= 5000 -> {next} otherwise -> failed }}\n",
                i - 1
            ),
            2 => format!(
                "    call s{i} = act(q: text, n: limit) into r{i} retry 2 on error -> failed -> {next}\n"
            ),
            _ => format!(
                "    branch s{i} {{ when r{}.ok == true -> {next} otherwise -> failed }}\n",
                i - 1
            ),
        };
        s.push_str(&step);
    }
    s.push_str(&format!(
        "    end s{n}: success\n    end failed: failure \"stopped\"\n}}\n"
    ));
    s
}

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
