//! How long the compiler takes, per phase and end to end, on programs of 10, 100 and 1,000
//! steps. "expand" is what `nano_program!` does per invocation: compile the text and generate
//! the module's tokens (the macro's own token-to-text step is linear and small next to it).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
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
        // Code generation alone, from the lowered program (the rest of `expand`).
        g.bench_with_input(BenchmarkId::new("generate", n), &compiled, |b, c| {
            b.iter(|| {
                c.programs
                    .iter()
                    .map(|p| codegen::generate(p, &Options::default()))
                    .collect::<Vec<_>>()
            })
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
        // The same, with the generated tokens dropped outside the timing: inside rustc the
        // macro hands its tokens to the compiler instead of freeing a tree of them, so this is
        // the part of `expand` a build pays for when proc_macro2 is not in its fallback mode.
        g.bench_with_input(BenchmarkId::new("expand_kept", n), &src, |b, s| {
            b.iter_with_large_drop(|| {
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

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Not under `cargo test --benches` (`--test`), nor when only another benchmark was asked for.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filtered =
        args.iter().any(|a| !a.starts_with('-')) && !args.iter().any(|a| a.contains("expand"));
    if !args.iter().any(|a| a == "--test" || a == "--list") && !filtered {
        expansion_ratio();
    }
}

/// How many times the 1,000-step expansion costs the 100-step one (the target is at most ~12x:
/// linear, with room for the caches): from criterion's medians of `expand/100` and
/// `expand/1000`, and from an interleaved run that times the two sizes alternately, so both see
/// the same load on a shared machine. Printed, and recorded in
/// `target/criterion/compiler/expand_ratio.txt`.
fn expansion_ratio() {
    use std::time::Instant;
    const ROUNDS: usize = 15;
    let expand = |src: &str| {
        let c = nanovm_dsl::compile("bench.nvm", src);
        for p in &c.programs {
            drop(std::hint::black_box(codegen::generate(
                p,
                &Options::default(),
            )));
        }
    };
    let (small, large) = (program(100), program(1000));
    expand(&small);
    expand(&large);
    let (mut a, mut b) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..10 {
            expand(&small);
        }
        a.push(t.elapsed().as_secs_f64() * 1e3 / 10.0);
        let t = Instant::now();
        expand(&large);
        b.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut a), median(&mut b));
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("criterion/compiler")));
    let estimate = |n: usize| -> Option<f64> {
        let path = dir.as_ref()?.join(format!("expand/{n}/new/estimates.json"));
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        Some(json["median"]["point_estimate"].as_f64()? / 1e6)
    };
    let mut report = format!(
        "expand interleaved ({ROUNDS} rounds, medians): 100 steps {a:.2} ms, 1,000 steps {b:.2} ms, ratio {:.1}x\n",
        b / a
    );
    if let (Some(c100), Some(c1000)) = (estimate(100), estimate(1000)) {
        report.push_str(&format!(
            "expand criterion medians: 100 steps {c100:.2} ms, 1,000 steps {c1000:.2} ms, ratio {:.1}x\n",
            c1000 / c100
        ));
    }
    print!("{report}");
    if let Some(dir) = dir.filter(|d| d.is_dir()) {
        let _ = std::fs::write(dir.join("expand_ratio.txt"), &report);
    }
}
