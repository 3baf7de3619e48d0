//! The compiler's phases, timed one by one on the benchmark's programs (median of repeated
//! runs), with the allocations of each: the measurements behind docs/performance.md, "The
//! compiler". Criterion (`cargo bench -p nanovm-dsl --bench compiler`) gives the statistics;
//! this gives every phase at any size in one table, and the modes a profiler needs.
//!
//! ```sh
//! cargo run --release -p nanovm-dsl --example compiler_phases -- 100 1000 3000  # the table
//! cargo run --release -p nanovm-dsl --example compiler_phases -- allocs 100 1000
//! cargo run --release -p nanovm-dsl --example compiler_phases -- ratio 15       # expand 1,000 / 100, interleaved
//! cargo run --release -p nanovm-dsl --example compiler_phases -- loop generate 1000 20  # for perf/valgrind
//! cargo run --release -p nanovm-dsl --example compiler_phases -- program 1000   # print the .nvm text
//! ```
//!
//! Every allocation goes through a counting allocator (one relaxed atomic add each), in every
//! mode, so timings here include that small cost.

#[path = "../benches/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use nanovm_dsl::codegen::{self, Options};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        grew(l.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        if n > l.size() {
            grew(n - l.size());
        } else {
            LIVE.fetch_sub(l.size() - n, Relaxed);
        }
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f`, and the peak of live bytes above what was live before it.
fn allocations(f: impl FnOnce()) -> (usize, usize) {
    let (n0, live0) = (ALLOCATIONS.load(Relaxed), LIVE.load(Relaxed));
    PEAK.store(live0, Relaxed);
    f();
    (ALLOCATIONS.load(Relaxed) - n0, PEAK.load(Relaxed) - live0)
}

/// The median wall time of `f` in milliseconds over `reps` runs.
fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[reps / 2]
}

fn expand(src: &str) -> proc_macro2::TokenStream {
    let c = nanovm_dsl::compile("bench.nvm", src);
    codegen::generate(&c.programs[0], &Options::default())
}

fn table(sizes: &[usize]) {
    println!(
        "| steps | parse | check | parse+check+lower | generate | expand | tokens to text | text to syn::File | prettyplease |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in sizes {
        let reps = if n >= 3000 {
            5
        } else if n >= 1000 {
            11
        } else {
            31
        };
        let src = common::program(n);
        let parsed = nanovm_dsl::parse(&src).file.expect("parses");
        let c = nanovm_dsl::compile("bench.nvm", &src);
        let p = &c.programs[0];
        let tokens = codegen::generate(p, &Options::default());
        let text = tokens.to_string();
        let file = syn::parse2::<syn::File>(tokens.clone()).expect("generated code parses");
        let t = [
            median_ms(reps, || drop(black_box(nanovm_dsl::parse(&src)))),
            median_ms(reps, || drop(black_box(nanovm_dsl::check::check(&parsed)))),
            median_ms(reps, || {
                drop(black_box(nanovm_dsl::compile("bench.nvm", &src)))
            }),
            median_ms(reps, || {
                drop(black_box(codegen::generate(p, &Options::default())))
            }),
            median_ms(reps, || drop(black_box(expand(&src)))),
            median_ms(reps, || drop(black_box(tokens.to_string()))),
            median_ms(reps, || drop(black_box(syn::parse_str::<syn::File>(&text)))),
            median_ms(reps, || drop(black_box(prettyplease::unparse(&file)))),
        ];
        let cells: Vec<String> = t.iter().map(|ms| format!("{ms:.2} ms")).collect();
        println!("| {n} | {} |", cells.join(" | "));
    }
}

fn allocs(sizes: &[usize]) {
    for &n in sizes {
        let src = common::program(n);
        let c = nanovm_dsl::compile("bench.nvm", &src);
        let p = &c.programs[0];
        drop(expand(&src));
        let (a, peak) = allocations(|| drop(black_box(nanovm_dsl::compile("bench.nvm", &src))));
        println!(
            "{n} steps: compile {a} allocations ({:.0}/step), peak {:.2} MB",
            a as f64 / n as f64,
            peak as f64 / 1e6
        );
        let (a, peak) = allocations(|| drop(black_box(codegen::generate(p, &Options::default()))));
        println!(
            "{n} steps: generate {a} allocations ({:.0}/step), peak {:.2} MB",
            a as f64 / n as f64,
            peak as f64 / 1e6
        );
    }
}

fn ratio(rounds: usize) {
    let (small, large) = (common::program(100), common::program(1000));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..10 {
            drop(black_box(expand(&small)));
        }
        a.push(t.elapsed().as_secs_f64() * 100.0);
        let t = Instant::now();
        drop(black_box(expand(&large)));
        b.push(t.elapsed().as_secs_f64() * 1e3);
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (ma, mb) = (a[rounds / 2], b[rounds / 2]);
    println!(
        "expand, {rounds} interleaved rounds, medians: 100 steps {ma:.2} ms, 1,000 steps {mb:.2} ms, ratio {:.1}x",
        mb / ma
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| -> usize {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let sizes = |from: usize| -> Vec<usize> {
        let v: Vec<usize> = args[from.min(args.len())..]
            .iter()
            .map(|a| a.parse().expect("a number of steps"))
            .collect();
        if v.is_empty() {
            vec![100, 1000, 3000]
        } else {
            v
        }
    };
    match args.first().map(String::as_str) {
        Some("allocs") => allocs(&sizes(1)),
        Some("ratio") => ratio(num(1, 15)),
        Some("program") => print!("{}", common::program(num(1, 1000))),
        Some("loop") => {
            let (what, n, iters) = (args[1].as_str(), num(2, 1000), num(3, 10));
            let src = common::program(n);
            let c = nanovm_dsl::compile("bench.nvm", &src);
            for _ in 0..iters {
                match what {
                    "generate" => drop(black_box(codegen::generate(
                        &c.programs[0],
                        &Options::default(),
                    ))),
                    "compile" => drop(black_box(nanovm_dsl::compile("bench.nvm", &src))),
                    "expand" => drop(black_box(expand(&src))),
                    other => panic!("loop what? generate, compile or expand, not {other}"),
                }
            }
        }
        _ => table(&sizes(0)),
    }
}
