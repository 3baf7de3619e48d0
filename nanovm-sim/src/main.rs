//! `nanovm-sim`: sabotage mode from the command line.
//!
//! ```text
//! cargo run --release -p nanovm-sim -- --seeds 100000 [--faults all|CLASS,..] [--program NAME,..]
//! cargo run --release -p nanovm-sim -- --seed 4242 --program review_loop    # reproduce one seed
//! ```
//!
//! Seeds are dealt to the programs in turn (seed `s` attacks program `s mod k`). Prints the
//! report table, then every violation with the command that reproduces it; exits 1 on any
//! violation, 2 on a usage error.

use std::process::ExitCode;
use std::time::Instant;

use nanovm_sim::{Faults, Report, builtin};

type Attack = Box<dyn Fn(u64, Faults, bool, &mut Report)>;

fn programs() -> Vec<(&'static str, Attack)> {
    vec![
        (
            "customer_refund",
            Box::new(|s, f, t, r: &mut Report| builtin::customer_refund().run_one(s, f, t, r)),
        ),
        (
            "order_pipeline",
            Box::new(|s, f, t, r: &mut Report| builtin::order_pipeline().run_one(s, f, t, r)),
        ),
        (
            "payment_recovery",
            Box::new(|s, f, t, r: &mut Report| builtin::payment_recovery().run_one(s, f, t, r)),
        ),
        (
            "review_loop",
            Box::new(|s, f, t, r: &mut Report| builtin::review_loop().run_one(s, f, t, r)),
        ),
        (
            "fan",
            Box::new(|s, f, t, r: &mut Report| builtin::fan().run_one(s, f, t, r)),
        ),
    ]
}

const USAGE: &str = "usage: nanovm-sim [--seeds N] [--first S] [--seed S] [--faults all|none|CLASS,..] \
[--program all|NAME,..] [--check-every N] [--mutant NAME]\n\
fault classes: crash, torn, store-error, dup-start, workers, events, tool-failure, timeout, \
model-noise, replay-storm, corruption, clock-jump\n\
programs: customer_refund, order_pipeline, payment_recovery, review_loop, fan\n\
mutants (built with --features mutants): start-without-lease, call-before-intent-durable, \
accept-reused-event-id, append-without-fence, call-without-ownership-check";

struct Args {
    first: u64,
    seeds: u64,
    faults: Faults,
    programs: Vec<String>,
    check_every: u64,
    faults_text: String,
    mutant: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        first: 0,
        seeds: 1000,
        faults: Faults::all(),
        programs: Vec::new(),
        check_every: 10,
        faults_text: "all".into(),
        mutant: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| {
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{v}: {e}"))
        };
        match flag.as_str() {
            "--seeds" => a.seeds = num(value()?)?,
            "--first" => a.first = num(value()?)?,
            "--seed" => {
                a.first = num(value()?)?;
                a.seeds = 1;
            }
            "--faults" => {
                a.faults_text = value()?;
                a.faults = Faults::parse(&a.faults_text).map_err(|e| e.to_string())?;
            }
            "--program" => {
                let v = value()?;
                if v != "all" {
                    a.programs = v.split(',').map(str::to_string).collect();
                }
            }
            "--check-every" => a.check_every = num(value()?)?.max(1),
            "--mutant" => a.mutant = Some(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(name) = &args.mutant
        && let Err(e) = switch_on(name)
    {
        eprintln!("error: {e}\n{USAGE}");
        return ExitCode::from(2);
    }
    let mut targets = programs();
    if !args.programs.is_empty() {
        for p in &args.programs {
            if !targets.iter().any(|(n, _)| n == p) {
                eprintln!("error: unknown program `{p}`\n{USAGE}");
                return ExitCode::from(2);
            }
        }
        targets.retain(|(n, _)| args.programs.iter().any(|p| p == n));
    }
    let mut report = Report::new(
        targets.iter().map(|(n, _)| (*n).to_string()).collect(),
        args.faults,
    );
    let start = Instant::now();
    let k = targets.len() as u64;
    let mut by_seed = Vec::new();
    for seed in args.first..args.first + args.seeds {
        let (name, attack) = &targets[(seed % k) as usize];
        let before = report.total_violations();
        attack(seed, args.faults, seed % args.check_every == 0, &mut report);
        if report.total_violations() > before {
            by_seed.push((seed, *name));
        }
    }
    report.wall = start.elapsed();
    println!("{report}");
    if report.total_violations() == 0 {
        return ExitCode::SUCCESS;
    }
    println!("\nviolations (first {}):", report.violations.len());
    for v in &report.violations {
        println!("  {v}");
    }
    println!("\nreproduce:");
    for (seed, name) in by_seed.iter().take(20) {
        println!(
            "  cargo run --release -p nanovm-sim -- --seed {seed} --program {name} --faults {}",
            args.faults_text
        );
    }
    ExitCode::FAILURE
}

/// Switches a known bug of the runtime back on (this thread: the whole simulation runs on it).
#[cfg(feature = "mutants")]
fn switch_on(name: &str) -> Result<(), String> {
    use nanovm_runtime::mutants::{self, Mutant};
    let m = match name {
        "start-without-lease" => Mutant::StartWithoutLease,
        "call-before-intent-durable" => Mutant::CallBeforeIntentDurable,
        "accept-reused-event-id" => Mutant::AcceptReusedEventId,
        "append-without-fence" => Mutant::AppendWithoutFence,
        "call-without-ownership-check" => Mutant::CallWithoutOwnershipCheck,
        other => return Err(format!("unknown mutant `{other}`")),
    };
    mutants::set(Some(m));
    eprintln!("mutant `{name}` switched on: the runtime has this known bug for this run");
    Ok(())
}

#[cfg(not(feature = "mutants"))]
fn switch_on(name: &str) -> Result<(), String> {
    Err(format!(
        "--mutant {name} needs a build with the mutants: cargo run -p nanovm-sim --features mutants -- ..."
    ))
}
