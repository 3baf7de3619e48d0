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
    /// Prune runs that ended before this instant (UTC): `YYYY-MM-DD` (midnight),
    /// `YYYY-MM-DDTHH:MM:SS[.fff]Z` or milliseconds since the Unix epoch, as every command
    /// reads a time (`nanovm_runtime::time::parse_utc`). A run's end is its record's last change.
    #[arg(long, value_name = "DATE", value_parser = nanovm_runtime::time::parse_utc)]
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
