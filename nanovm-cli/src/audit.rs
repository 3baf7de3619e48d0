//! `nanovm audit --db PATH --key PUBKEY [--head HEAD.json] [--save-head FILE]`: checks a
//! store's evidence (`nanovm_runtime::evidence::audit`): every checkpoint signed by the key,
//! the log extending the tree head kept from the last audit, every run as checkpointed. Each
//! problem is one line naming what is wrong; exit 1 if there is any.

use std::io::Write;
use std::path::{Path, PathBuf};

use nanovm_runtime::evidence::{self, FindingKind, PublicKey, SignedTreeHead};

use crate::db;
use crate::error::{Error, Status};
use crate::escape::escape;

/// Arguments of `nanovm audit`.
#[derive(clap::Args)]
pub struct Args {
    /// The SQLite store (opened read-only).
    #[arg(long, value_name = "PATH")]
    db: PathBuf,
    /// The public key the runtime signs with: a file holding 64 hex digits or an SPKI PEM
    /// block, or the 64 hex digits themselves.
    #[arg(long, value_name = "PUBKEY")]
    key: String,
    /// The signed tree head kept from an earlier audit (or published): the store's log must
    /// extend it. Without it, a store rolled back to an older backup cannot be told.
    #[arg(long, value_name = "HEAD.json")]
    head: Option<PathBuf>,
    /// After a clean audit, write the store's latest signed tree head here: the head to keep
    /// (elsewhere than the store) for the next audit.
    #[arg(long, value_name = "FILE")]
    save_head: Option<PathBuf>,
}

/// Reads `--key`: a file, or the key itself.
pub fn public_key(arg: &str) -> Result<PublicKey, Error> {
    let path = Path::new(arg);
    let parsed = if path.is_file() {
        PublicKey::from_file(path)
    } else {
        PublicKey::parse(arg)
    };
    parsed.map_err(|e| Error::Usage(format!("--key {arg}: {e}")))
}

/// The word a finding is printed with.
pub fn label(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::ForgedLeaf => "forged checkpoint",
        FindingKind::BadHead => "bad tree head",
        FindingKind::RolledBack => "rolled back",
        FindingKind::LogRewritten => "log rewritten",
        FindingKind::DeletedRun => "deleted run",
        FindingKind::SwappedRun => "swapped run",
        FindingKind::RewrittenRun => "rewritten run",
        FindingKind::Unsigned => "unsigned run",
        FindingKind::Uncovered => "warning",
        _ => "problem",
    }
}

/// Runs `nanovm audit`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Status, Error> {
    let key = public_key(&args.key)?;
    let kept = match &args.head {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            Some(
                SignedTreeHead::from_json(&text)
                    .map_err(|e| Error::Usage(format!("{}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    let report = db::block_on(async {
        let store = db::open(&args.db).await?;
        evidence::audit(&store, &key, kept.as_ref())
            .await
            .map_err(|e| Error::Usage(format!("{}: {e}", args.db.display())))
    })??;
    let w = |out: &mut dyn Write, line: String| writeln!(out, "{line}").map_err(Error::stdout);
    for f in &report.findings {
        w(out, format!("{}: {}", label(f.kind), escape(&f.message)))?;
    }
    let head = report
        .head
        .as_ref()
        .map_or("no signed head".to_string(), |h| {
            format!(
                "head {} leaves, root {}",
                h.head.size,
                h.head
                    .root
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        });
    let problems = report
        .findings
        .iter()
        .filter(|f| f.kind != FindingKind::Uncovered)
        .count();
    if problems > 0 {
        w(
            out,
            format!(
                "audit failed: {problems} problem(s); {} runs, {} checkpoints",
                report.runs, report.leaves
            ),
        )?;
        return Ok(Status::Failed);
    }
    w(
        out,
        format!(
            "ok: {} runs, {} checkpoints, {head}{}",
            report.runs,
            report.leaves,
            if kept.is_some() {
                ", extends the kept head"
            } else {
                ""
            }
        ),
    )?;
    if let Some(path) = &args.save_head {
        let Some(h) = &report.head else {
            return Err(Error::Usage(
                "--save-head: the store has no signed tree head over its whole log".into(),
            ));
        };
        std::fs::write(path, format!("{}\n", h.to_json())).map_err(|e| Error::io(path, e))?;
    }
    Ok(Status::Clean)
}
