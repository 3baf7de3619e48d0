//! `nanovm erase`: erasure end to end, at store level ([`nanovm_runtime::erase()`]).
//!
//! The store's erasure index finds the runs (`--subject ID`: the runs started with that
//! subject; `--vault-id ID`: the runs holding that secret as an input). Every run is claimed
//! first and must be at rest (ended, suspended, paused for reconciliation); then each gets an
//! `erased` tombstone naming `--by` and `--reason`, appended under its lease, the values are
//! erased from the vault in the same database, and the store's logs are scrubbed (SQLite: the
//! WAL checkpointed and truncated). With `--signing-key`, each run that got a tombstone is
//! checkpointed again, so its latest checkpoint covers it.
//!
//! The output names runs and vault ids only, never the subject id or a value.
//!
//! Exit status: 0 when erased (or nothing referenced it); 1 when a run's state refuses it
//! (held by an execution, not at rest; nothing was written or erased); 2 on usage and store
//! errors.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use nanovm_runtime::evidence::{self, KeySigner};
use nanovm_runtime::trace::Actor;
use nanovm_runtime::{Clock, Erase, EraseError, SystemClock, VaultId, erase};

use crate::db::{self, Db};
use crate::error::{Error, Status};
use crate::escape::escape;
use crate::format::Format;

/// Arguments of `nanovm erase`.
#[derive(clap::Args)]
pub struct Args {
    /// The store: a SQLite file (it must exist and hold a nanovm store) or a `postgres://` URL.
    /// Its vault (the same database) holds the values.
    #[arg(long, value_name = "DB", value_parser = Db::parse)]
    db: Db,
    /// Erase every secret input of every run tied to this data subject.
    #[arg(long, value_name = "ID", required_unless_present = "vault_id")]
    subject: Option<String>,
    /// Erase this secret (32 hex digits) in every run that holds it.
    #[arg(long, value_name = "ID", conflicts_with = "subject")]
    vault_id: Option<String>,
    /// Who asks for the erasure (an operator's identity): recorded in every tombstone.
    #[arg(long, value_name = "ID")]
    by: String,
    /// Why (a ticket, the request): recorded in every tombstone.
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// While an execution holds an affected run's lease, wait up to this many seconds for it;
    /// then refuse (exit 1, nothing erased). Default: refuse at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    wait: u64,
    /// A signing key file (64 hex digits or PKCS#8 PEM): checkpoint every run that got a
    /// tombstone, so `nanovm audit` finds its latest checkpoint covering it.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// `text`: sentences for people; `json`: one object for scripts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs `nanovm erase`.
pub fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<Status, Error> {
    let what = match (&args.subject, &args.vault_id) {
        (Some(s), None) if !s.is_empty() => Erase::Subject(s.clone()),
        (None, Some(v)) => Erase::Secret(VaultId::from_hex(v).ok_or_else(|| {
            Error::Usage(format!("`{}` is not a vault id (32 hex digits)", escape(v)))
        })?),
        _ => {
            return Err(Error::Usage(
                "give one of --subject ID or --vault-id ID".into(),
            ));
        }
    };
    let signer = match &args.signing_key {
        Some(path) => Some(
            KeySigner::from_file(path)
                .map_err(|e| Error::Usage(format!("{}: {e}", path.display())))?,
        ),
        None => None,
    };
    let by = Actor::new(args.by.clone(), args.reason.clone());
    let db = &args.db;
    let erased = db::block_on(async {
        let (store, vault) = db.open_with_vault().await?;
        let erased = erase(
            store.as_ref(),
            vault.as_ref(),
            &SystemClock,
            &what,
            by,
            Duration::from_secs(args.wait),
        )
        .await;
        if let (Ok(report), Some(signer)) = (&erased, &signer) {
            for run in report.runs.iter().filter(|r| !r.erased.is_empty()) {
                let entries = store
                    .load(&run.run_id)
                    .await
                    .map_err(|e| db.error(e))?
                    .unwrap_or_default();
                evidence::checkpoint(store.as_ref(), signer, SystemClock.now_ms(), &entries)
                    .await
                    .map_err(|e| db.error(e))?;
            }
        }
        Ok::<_, Error>(erased)
    })??;
    let report = match erased {
        Ok(report) => report,
        Err(
            e @ (EraseError::Leased { .. } | EraseError::Executing { .. } | EraseError::NoActor),
        ) => {
            let message = e.to_string();
            if args.format == Format::Json {
                let doc = serde_json::json!({"outcome": "refused", "runs": [], "vault_ids": [], "error": message});
                writeln!(out, "{doc}").map_err(Error::stdout)?;
            }
            writeln!(err, "refused: {}", escape(&message)).map_err(Error::stderr)?;
            return Ok(Status::Failed);
        }
        Err(e) => return Err(db.error(e)),
    };
    let hex = |v: &[VaultId]| v.iter().map(VaultId::to_hex).collect::<Vec<_>>();
    match args.format {
        Format::Json => {
            let runs: Vec<_> = report
                .runs
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "run_id": r.run_id,
                        "status": r.status.to_string(),
                        "erased": hex(&r.erased),
                        "already_erased": hex(&r.already),
                        "entries": r.entries,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "outcome": "erased",
                "runs": runs,
                "vault_ids": hex(&report.vault_ids),
                "checkpointed": signer.is_some(),
                "error": null,
            });
            writeln!(out, "{doc}").map_err(Error::stdout)?;
        }
        Format::Text => {
            if report.runs.is_empty() {
                writeln!(
                    out,
                    "no stored run references it; {} vault value(s) erased",
                    report.vault_ids.len()
                )
                .map_err(Error::stdout)?;
            }
            for r in &report.runs {
                let line = format!(
                    "run `{}` ({}): {} tombstone(s) appended{}",
                    r.run_id,
                    r.status,
                    r.erased.len(),
                    if r.already.is_empty() {
                        String::new()
                    } else {
                        format!(", {} erased before", r.already.len())
                    }
                );
                writeln!(out, "{}", escape(&line)).map_err(Error::stdout)?;
            }
            if !report.runs.is_empty() {
                writeln!(
                    out,
                    "erased {} vault value(s) from {} run(s){}",
                    report.vault_ids.len(),
                    report.runs.len(),
                    if signer.is_some() {
                        "; the runs are checkpointed"
                    } else {
                        ""
                    }
                )
                .map_err(Error::stdout)?;
            }
        }
    }
    Ok(Status::Clean)
}
