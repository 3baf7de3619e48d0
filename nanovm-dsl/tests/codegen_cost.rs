//! What generating a program costs, in operations that do not depend on the machine: heap
//! allocations per step, and text parsed back into tokens. Wall-clock time of large token trees
//! is dominated by the allocator and the caches (docs/performance.md, "The compiler"), so these
//! are the counts that keep `expand` linear: every allocation is a token tree node the caches
//! must hold, and every string parsed into tokens is, inside rustc, a round trip through the
//! proc-macro bridge and a new source file in the compiler's source map.
//!
//! The program is the one `cargo bench -p nanovm-dsl --bench compiler` compiles.

#[path = "../benches/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use nanovm_dsl::codegen::{self, Options};

/// The system allocator, counting the allocations of the thread that asked to be counted.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to `System`; the counter is a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count() {
    // `try_with`: the thread-local may be gone while a thread shuts down.
    if COUNTED.try_with(std::cell::Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Relaxed);
    COUNTED.with(|c| c.set(true));
    f();
    COUNTED.with(|c| c.set(false));
    ALLOCATIONS.load(Relaxed) - before
}

fn lowered(steps: usize) -> nanovm_dsl::lower::Program {
    let compiled = nanovm_dsl::compile("bench.nvm", &common::program(steps));
    assert!(!compiled.has_errors(), "{}", compiled.render());
    compiled.programs.into_iter().next().expect("one program")
}

/// Allocations per step of generating (and dropping) the module of an `n`-step program.
fn per_step(n: usize) -> f64 {
    let p = lowered(n);
    let opts = Options::default();
    // One run first, so one-time initialisation (thread-locals, lazily built tables) is not
    // counted.
    drop(codegen::generate(&p, &opts));
    let count = allocations(|| drop(codegen::generate(&p, &opts)));
    count as f64 / n as f64
}

/// Generation costs the same per step at 100 and at 1,000 steps, and at most a fixed budget:
/// a pass that copied the whole module per step, or a token stream rebuilt per item, shows
/// up here long before it shows up in a wall-clock benchmark on a shared machine.
#[test]
fn generation_allocates_a_fixed_budget_per_step() {
    let small = per_step(100);
    let large = per_step(1000);
    eprintln!("allocations per step: {small:.0} at 100 steps, {large:.0} at 1,000 steps");
    assert!(
        large <= small * 1.02,
        "generation allocates more per step at 1,000 steps ({large:.0}) than at 100 ({small:.0})"
    );
    // Measured: 540 per step at 100 steps and 517 at 1,000 before the fixes this test came
    // with; 451 and 431 after them. (The aim was 400; the rest is the tokens themselves: in
    // proc_macro2's fallback each identifier is a heap string, and each `quote!` and group a
    // new stream.) The budget is the measured cost with a little room, so a pass that copies
    // every arm again, or a name parsed per step, fails here.
    const BUDGET: f64 = 460.0;
    assert!(
        large <= BUDGET && small <= BUDGET,
        "generation allocates {small:.0} (100 steps) and {large:.0} (1,000 steps) per step, over the budget of {BUDGET}"
    );
}

/// The name of the next source file `proc_macro2` would create for text parsed into tokens
/// (its fallback numbers them; inside rustc each is a new source file of the compiler's).
fn next_parsed_file() -> String {
    let probe: proc_macro2::TokenStream = "probe".parse().expect("an identifier parses");
    let token = probe.into_iter().next().expect("one token");
    token.span().file()
}

/// Text parsed into tokens while generating an `n`-step program.
fn parses(n: usize) -> usize {
    let p = lowered(n);
    let opts = Options::default();
    let number = |s: &str| -> usize {
        s.trim_start_matches("<parsed string ")
            .trim_end_matches('>')
            .parse()
            .unwrap_or_else(|_| {
                panic!("proc_macro2 names parsed text `<parsed string N>`, got {s}")
            })
    };
    let before = number(&next_parsed_file());
    drop(codegen::generate(&p, &opts));
    let after = number(&next_parsed_file());
    after - before - 1
}

/// Generating tokens parses no text into tokens per step: every identifier, path and literal
/// of a step is built as a token. (Checking a name against Rust's keywords by parsing it, for
/// one, cost a parse and a source file per name and step; so does a literal written inside a
/// `quote!` template, which `quote` parses at run time.) What is parsed once per module (the
/// doc comments and lint reasons of the module's fixed items) does not grow with the program.
#[test]
fn generation_parses_no_text_per_step() {
    let (small, large) = (parses(20), parses(40));
    assert_eq!(
        small, large,
        "generating 20 steps parsed {small} strings into tokens, 40 steps {large}"
    );
}
