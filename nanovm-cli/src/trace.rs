//! `nanovm trace --db DB RUN_ID`: exports a stored run's trace as JSON Lines on stdout (a
//! SQLite file or a `postgres://` URL).
//!
//! The store re-verifies what it loads (each line canonical, the hash chain intact), and the
//! chain is checked once more here before a byte is written: a broken stored trace prints
//! `broken: ...` on stderr and exits 1, with nothing on stdout.

use std::io::{IsTerminal as _, Write};
use std::path::PathBuf;

use nanovm_runtime::store::JournalError;
use nanovm_runtime::trace::Trace;

use nanovm_runtime::evidence;

use crate::audit;
use crate::db::{self, Db};
use crate::error::{Error, Status};
use crate::escape::{escape, escape_lines};
use crate::verify;

/// Arguments of `nanovm trace`.
#[derive(clap::Args)]
pub struct Args {
    /// The store: a SQLite file (e.g. the example's `--db`; opened read-only, it must exist
    /// and hold a nanovm store) or a `postgres://` URL.
    #[arg(long, value_name = "DB", value_parser = Db::parse)]
    db: Db,
    /// The run.
    #[arg(value_name = "RUN_ID")]
    run_id: String,
    /// Also check the run's latest checkpoint signed by this public key (a file, or 64 hex
    /// digits) covers the whole trace: a run that does not match it, or has none, exits 1
    /// with nothing on stdout; entries beyond the last checkpoint are reported on stderr.
    #[arg(long, value_name = "PUBKEY")]
    key: Option<String>,
    /// With `--key`: also write the run's latest signed checkpoint (JSON) here, to keep next
    /// to the exported trace for `nanovm verify --key --checkpoint`.
    #[arg(long, value_name = "FILE", requires = "key")]
    checkpoint_out: Option<PathBuf>,
}

/// Runs `nanovm trace`.
pub fn run(args: &Args, out: &mut dyn Write, err: &mut dyn Write) -> Result<Status, Error> {
    let loaded = db::block_on(async {
        let store = args.db.open(false).await?;
        Ok::<_, Error>(store.load(&args.run_id).await)
    })??;
    let mut broken = |reason: String| -> Result<Status, Error> {
        writeln!(
            err,
            "broken: run `{}`: {}",
            escape(&args.run_id),
            escape(&reason)
        )
        .map_err(Error::stderr)?;
        Ok(Status::Failed)
    };
    let entries = match loaded {
        Ok(Some(entries)) => entries,
        Ok(None) => {
            return Err(Error::Usage(format!(
                "run `{}` is not in {}",
                args.run_id,
                args.db.name()
            )));
        }
        Err(JournalError::Corrupt { reason, .. }) => return broken(reason),
        Err(e) => return Err(args.db.error(e)),
    };
    let trace = match Trace::from_entries(entries) {
        Ok(t) => t,
        Err(e) => return broken(verify::describe(&e)),
    };
    if let Some(key) = &args.key {
        let key = audit::public_key(key)?;
        let (findings, latest) = db::block_on(async {
            let store = args.db.open(false).await?;
            let usage = |e| args.db.error(e);
            let findings = evidence::check_stored_run(store.as_ref(), &key, &args.run_id)
                .await
                .map_err(usage)?;
            let latest = evidence::latest_checkpoint(store.as_ref(), &key, &args.run_id)
                .await
                .map_err(usage)?;
            Ok::<_, Error>((findings, latest))
        })??;
        let mut failed = false;
        for f in &findings {
            failed |= f.kind.is_problem();
            writeln!(err, "{}: {}", audit::label(f.kind), escape(&f.message))
                .map_err(Error::stderr)?;
        }
        if failed {
            return Ok(Status::Failed);
        }
        if let (Some(path), Some(cp)) = (&args.checkpoint_out, latest) {
            std::fs::write(path, format!("{}\n", cp.to_json())).map_err(|e| Error::io(path, e))?;
        }
    }
    let text = trace.to_jsonl();
    // The export is data: redirected, it is byte for byte the runtime's. JSON escapes the C0
    // controls inside strings but leaves C1 controls and bidi characters raw; on a terminal
    // those are escaped too (the text is then for reading, not for `nanovm verify`).
    let text = if std::io::stdout().is_terminal() {
        escape_lines(&text)
    } else {
        text
    };
    out.write_all(text.as_bytes()).map_err(Error::stdout)?;
    Ok(Status::Clean)
}
