//! `nanovm stats --db DB [--program P] [--since T] [--format json]`: drift metrics of the
//! runs of a store, per program: a thin printer over `nanovm_runtime::stats` (the formulas are
//! in docs/metrics.md).
//!
//! The runs created at or after `--since` are the window judged; the older ones the program's
//! own baseline (without `--since`: the newer half against the older half).

use std::io::Write;

use nanovm_runtime::stats::{ProgramStats, StatsOptions, report, samples, stats};
use nanovm_runtime::store::RunQuery;
use nanovm_runtime::time::utc;

use crate::db::{self, Db};
use crate::error::{Error, Status};
use crate::escape::escape_lines;
use crate::format::Format;

/// Arguments of `nanovm stats`.
#[derive(clap::Args)]
pub struct Args {
    /// The store: a SQLite file (opened read-only) or a `postgres://` URL.
    #[arg(long, value_name = "DB", value_parser = Db::parse)]
    db: Db,
    /// Only runs of this program.
    #[arg(long, value_name = "P")]
    program: Option<String>,
    /// The window starts here: milliseconds since the Unix epoch, an RFC 3339 UTC instant
    /// (`2026-12-07T18:30:00Z`) or a date (`2026-12-07`). Older runs are the baseline.
    /// Default: the newer half of each program's runs against the older half.
    #[arg(long, value_name = "T", value_parser = nanovm_runtime::time::parse_utc)]
    since: Option<u64>,
    /// Flag a window run on a metric above this percentile of the baseline's runs.
    #[arg(long, value_name = "P", default_value_t = 95.0)]
    percentile: f64,
    /// Flag nothing with fewer baseline runs than this.
    #[arg(long, value_name = "N", default_value_t = 5)]
    min_history: usize,
    /// The model's price per million prompt tokens (with --price-out: a cost per run).
    #[arg(long, value_name = "PRICE", requires = "price_out")]
    price_in: Option<f64>,
    /// The model's price per million completion tokens.
    #[arg(long, value_name = "PRICE", requires = "price_in")]
    price_out: Option<f64>,
    /// `text`: a report for people; `json`: one object for scripts (see docs/metrics.md).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs `nanovm stats`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Status, Error> {
    let mut query = RunQuery::new();
    if let Some(p) = &args.program {
        query = query.program(p.clone());
    }
    let samples = db::block_on(async {
        let store = args.db.open(false).await?;
        samples(store.as_ref(), &query)
            .await
            .map_err(|e| args.db.error(e))
    })??;
    let mut opts = StatsOptions::new()
        .percentile(args.percentile)
        .min_history(args.min_history);
    if let Some(since) = args.since {
        opts = opts.since_ms(since);
    }
    if let (Some(pi), Some(po)) = (args.price_in, args.price_out) {
        opts = opts.prices(pi, po);
    }
    let programs = stats(&samples, &opts);
    match args.format {
        Format::Json => {
            let doc = report(&programs, &opts);
            writeln!(out, "{doc}").map_err(Error::stdout)?;
        }
        Format::Text => {
            if programs.is_empty() {
                writeln!(out, "(no runs)").map_err(Error::stdout)?;
            }
            for p in &programs {
                write!(out, "{}", escape_lines(&text(p, args.since, &opts)))
                    .map_err(Error::stdout)?;
            }
        }
    }
    Ok(Status::Clean)
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

/// A program's report for people.
fn text(p: &ProgramStats, since: Option<u64>, opts: &StatsOptions) -> String {
    let percentile = opts.percentile;
    let mut s = String::new();
    let window = match since {
        Some(t) => format!("since {}", utc(t)),
        None => "the newer half".to_string(),
    };
    s += &format!(
        "{}: window {} runs ({window}), baseline {} runs\n",
        p.program, p.window_runs, p.baseline_runs
    );
    s += &format!(
        "  transitions {}  H(A|S) {:.3} bits  retries/transition {:.3}  rollbacks/transition {:.3}\n",
        p.transitions, p.transition_entropy, p.retry_density, p.rollback_density
    );
    s += &format!(
        "  violations/transition {:.3} (divergences {}, refusals {}, faults {}, budget trips {})\n",
        p.violation_rate, p.divergences, p.refusals, p.faults, p.budget_trips
    );
    s += &format!(
        "  tool churn {:.3}  tokens/run {:.1}  cost/run {}\n",
        p.tool_churn,
        p.tokens_per_run,
        opt(p.cost_per_run, |c| format!("{c:.6}"))
    );
    s += &format!(
        "  path divergence (Jensen-Shannon) {}  runs on paths unseen in the baseline {}\n",
        opt(p.path_divergence, |v| format!("{v:.3}")),
        opt(p.unseen_path_share, |v| format!("{:.1}%", v * 100.0))
    );
    if !p.decision_points.is_empty() {
        s += "  decision points (H(A|S=s), successors):\n";
        for d in &p.decision_points {
            let next: Vec<String> = d.next.iter().map(|(n, c)| format!("{n} {c}")).collect();
            s += &format!(
                "    {}  {:.3} bits  n={}  {}\n",
                d.step,
                d.entropy,
                d.count,
                next.join(", ")
            );
        }
    }
    if p.baseline_runs < opts.min_history.max(1) {
        s += &format!(
            "  too little history to flag runs ({} baseline runs, --min-history {})\n",
            p.baseline_runs, opts.min_history
        );
    } else if p.flagged.is_empty() {
        s += &format!("  no run above the baseline's p{percentile}\n");
    } else {
        s += &format!("  runs above the baseline's p{percentile}:\n");
        for r in &p.flagged {
            let flags: Vec<String> = r
                .flags
                .iter()
                .map(|f| format!("{} {} > {}", f.metric, f.value, f.threshold))
                .collect();
            s += &format!("    {}  {}\n", r.run_id, flags.join(", "));
        }
    }
    s
}
