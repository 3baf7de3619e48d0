//! `nanovm prune`: retention ([`nanovm_runtime::evidence::prune`]). Deletes the entries of runs
//! that ended before a date, each after a signed prune record (who, when, why) is appended to
//! the store's evidence log; their checkpoint leaves stay, so the log and every tree head kept
//! before still verify and `nanovm audit` reports them as pruned, not deleted. A run whose
//! latest checkpoint signed by the key does not cover its whole trace is left (what is deleted
//! must be proved). The secret inputs of a pruned run that no remaining run holds are erased
//! from the vault.
//!
//! Exit status: 0 when done (runs left are listed on stderr); 2 on usage and store errors.

use std::io::Write;
use std::path::PathBuf;

use nanovm_runtime::evidence::{self, KeySigner};
use nanovm_runtime::trace::Actor;
use nanovm_runtime::{Clock, SystemClock};

use crate::db::{self, Db};
use crate::error::{Error, Status};
use crate::escape::escape;
use crate::format::Format;

/// Arguments of `nanovm prune`.
#[derive(clap::Args)]
pub struct Args {
    /// The store: a SQLite file (it must exist and hold a nanovm store) or a `postgres://` URL.
    #[arg(long, value_name = "DB", value_parser = Db::parse)]
    db: Db,
    /// Prune runs that ended before this instant (UTC): `YYYY-MM-DD` (midnight) or
    /// `YYYY-MM-DDTHH:MM:SSZ`. A run's end is its record's last change.
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    ended_before: u64,
    /// Who prunes (an operator's identity): recorded in every prune record.
    #[arg(long, value_name = "ID")]
    by: String,
    /// Why (the retention policy, a ticket): recorded in every prune record.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// The signing key (64 hex digits or PKCS#8 PEM) that signs the prune records and the new
    /// tree heads; the runs' checkpoints must be signed by it.
    #[arg(long, value_name = "FILE")]
    signing_key: PathBuf,
    /// `text`: sentences for people; `json`: one object for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC) to milliseconds since the Unix epoch.
fn parse_date(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC)");
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let num = |t: &str, len: usize| -> Result<i64, String> {
        if t.len() == len && t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d) = (num(y, 4)?, num(m, 2)?, num(d, 2)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] || y < 1970 {
        return Err(bad());
    }
    let secs = match time {
        None => 0,
        Some(t) => {
            let parts: Vec<&str> = t.split(':').collect();
            let [h, mi, se] = parts.as_slice() else {
                return Err(bad());
            };
            let (h, mi, se) = (num(h, 2)?, num(mi, 2)?, num(se, 2)?);
            if h > 23 || mi > 59 || se > 59 {
                return Err(bad());
            }
            h * 3600 + mi * 60 + se
        }
    };
    let ms = (days_from_civil(y, m, d) * 86_400 + secs) * 1000;
    u64::try_from(ms).map_err(|_| bad())
}

/// Runs `nanovm prune`.
pub fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<Status, Error> {
    let signer = KeySigner::from_file(&args.signing_key)
        .map_err(|e| Error::Usage(format!("{}: {e}", args.signing_key.display())))?;
    let by = Actor::new(args.by.clone(), args.reason.clone());
    let db = &args.db;
    let report = db::block_on(async {
        let (store, vault) = db.open_with_vault().await?;
        evidence::prune(
            store.as_ref(),
            Some(vault.as_ref()),
            &signer,
            args.ended_before,
            by,
            SystemClock.now_ms(),
        )
        .await
        .map_err(|e| db.error(e))
    })??;
    for (run_id, why) in &report.skipped {
        writeln!(err, "left: run `{}`: {}", escape(run_id), escape(why)).map_err(Error::stderr)?;
    }
    match args.format {
        Format::Json => {
            let pruned: Vec<_> = report
                .pruned
                .iter()
                .map(|p| serde_json::json!({"run_id": p.run_id, "entries": p.entries, "leaf": p.leaf}))
                .collect();
            let skipped: Vec<_> = report
                .skipped
                .iter()
                .map(|(r, why)| serde_json::json!({"run_id": r, "why": why}))
                .collect();
            let doc = serde_json::json!({"pruned": pruned, "skipped": skipped});
            writeln!(out, "{doc}").map_err(Error::stdout)?;
        }
        Format::Text => {
            for p in &report.pruned {
                let line = format!(
                    "pruned run `{}` ({} entries; prune record: log leaf {})",
                    p.run_id, p.entries, p.leaf
                );
                writeln!(out, "{}", escape(&line)).map_err(Error::stdout)?;
            }
            writeln!(
                out,
                "{} run(s) pruned, {} left",
                report.pruned.len(),
                report.skipped.len()
            )
            .map_err(Error::stdout)?;
        }
    }
    Ok(Status::Clean)
}

#[cfg(test)]
mod tests {
    use super::parse_date;

    #[test]
    fn dates_parse_as_utc_instants() {
        assert_eq!(parse_date("1970-01-01"), Ok(0));
        assert_eq!(parse_date("2000-02-29"), Ok(951_782_400_000));
        assert_eq!(parse_date("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        for bad in [
            "2023-02-29",
            "2023-13-01",
            "23-01-01",
            "2023-01-01T10:00:00",
            "yesterday",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
