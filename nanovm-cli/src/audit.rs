//! `nanovm audit --db PATH --key PUBKEY [--head HEAD.json] [--save-head FILE]`: checks a
//! store's evidence (`nanovm_runtime::evidence::audit`): every checkpoint signed by the key,
//! the log extending the tree head kept from the last audit, every run as checkpointed. Each
//! problem is one line naming what is wrong; exit 1 if there is any.
//!
//! `nanovm audit --db PATH --key PUBKEY --prove RUN_ID` prints the inclusion proof of the
//! run's latest checkpoint under the store's signed tree head as JSON;
//! `nanovm audit --verify-proof PROOF.json --key PUBKEY` checks one without the store, and
//! `nanovm audit BUNDLE.tar --key PUBKEY` a whole auditor's bundle (`crate::bundle`).

use std::io::Write;
use std::path::{Path, PathBuf};

use nanovm_runtime::evidence::{self, FindingKind, InclusionProof, PublicKey, SignedTreeHead};

use crate::db;
use crate::error::{Error, Status};
use crate::escape::escape;

/// Arguments of `nanovm audit`.
#[derive(clap::Args)]
pub struct Args {
    /// An auditor's bundle (`nanovm export --bundle`) to check offline, without the store.
    #[arg(value_name = "BUNDLE.tar", conflicts_with_all = ["db", "head", "save_head", "prove", "verify_proof"])]
    bundle: Option<PathBuf>,
    /// The SQLite store (opened read-only).
    #[arg(long, value_name = "PATH", required_unless_present_any = ["verify_proof", "bundle"])]
    db: Option<PathBuf>,
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
    #[arg(long, value_name = "FILE", conflicts_with = "prove")]
    save_head: Option<PathBuf>,
    /// Instead of auditing: print the proof (JSON) that run RUN_ID's latest checkpoint is a
    /// leaf of the log under the store's signed tree head, for an auditor to check offline.
    #[arg(long, value_name = "RUN_ID", conflicts_with = "head")]
    prove: Option<String>,
    /// Instead of auditing: check a proof printed by `--prove`, without the store (exit 0 if
    /// it verifies under the key, 1 if not).
    #[arg(long, value_name = "PROOF.json", conflicts_with_all = ["db", "head", "save_head", "prove"])]
    verify_proof: Option<PathBuf>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `--prove RUN_ID`: the run's inclusion proof as one line of JSON.
fn prove(db: &Path, key: &PublicKey, run_id: &str, out: &mut dyn Write) -> Result<Status, Error> {
    let proof = db::block_on(async {
        let store = db::open(db).await?;
        evidence::prove_inclusion(&store, key, run_id)
            .await
            .map_err(|e| Error::Usage(format!("{}: {e}", db.display())))
    })??;
    let Some(proof) = proof else {
        writeln!(
            out,
            "no proof: run `{}` has no checkpoint signed by this key under the store's signed tree head (or the head does not match the log: run the audit)",
            escape(run_id)
        )
        .map_err(Error::stdout)?;
        return Ok(Status::Failed);
    };
    writeln!(out, "{}", proof.to_json()).map_err(Error::stdout)?;
    Ok(Status::Clean)
}

/// `--verify-proof FILE`: checks a proof offline.
fn verify_proof(path: &Path, key: &PublicKey, out: &mut dyn Write) -> Result<Status, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let w = |out: &mut dyn Write, line: String| writeln!(out, "{line}").map_err(Error::stdout);
    let proof = match InclusionProof::from_json(&text) {
        Ok(p) => p,
        Err(e) => {
            w(
                out,
                format!("proof invalid: {}: {}", path.display(), escape(&e)),
            )?;
            return Ok(Status::Failed);
        }
    };
    let (cp, head) = (&proof.checkpoint.checkpoint, &proof.head.head);
    let why = if !proof.checkpoint.verifies(key) {
        Some("the checkpoint is not signed by this key")
    } else if !proof.head.verifies(key) {
        Some("the tree head is not signed by this key")
    } else if !proof.verifies(key) {
        Some("the audit path does not lead from the checkpoint at that index to the head's root")
    } else {
        None
    };
    if let Some(why) = why {
        w(
            out,
            format!(
                "proof invalid: run `{}`, leaf {} of {}: {why}",
                escape(&cp.run_id),
                proof.index,
                head.size
            ),
        )?;
        return Ok(Status::Failed);
    }
    w(
        out,
        format!(
            "ok: run `{}` ({} entries, root {}) is leaf {} of the log under the head of {} leaves (root {}, signed at {} ms); compare that head with one you kept or published",
            escape(&cp.run_id),
            cp.entries,
            cp.root,
            proof.index,
            head.size,
            hex(&head.root),
            head.time_ms
        ),
    )?;
    Ok(Status::Clean)
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
        FindingKind::Pruned => "pruned",
        FindingKind::Unindexed => "unindexed run",
        _ => "problem",
    }
}

/// Runs `nanovm audit`.
pub fn run(args: &Args, out: &mut dyn Write) -> Result<Status, Error> {
    let key = public_key(&args.key)?;
    if let Some(path) = &args.verify_proof {
        return verify_proof(path, &key, out);
    }
    if let Some(path) = &args.bundle {
        return crate::bundle::audit(path, &key, out);
    }
    let Some(db_path) = &args.db else {
        return Err(Error::Usage("--db is required".into()));
    };
    if let Some(run_id) = &args.prove {
        return prove(db_path, &key, run_id, out);
    }
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
        let store = db::open(db_path).await?;
        evidence::audit(&store, &key, kept.as_ref())
            .await
            .map_err(|e| Error::Usage(format!("{}: {e}", db_path.display())))
    })??;
    let w = |out: &mut dyn Write, line: String| writeln!(out, "{line}").map_err(Error::stdout);
    for f in &report.findings {
        w(out, format!("{}: {}", label(f.kind), escape(&f.message)))?;
    }
    let head = report
        .head
        .as_ref()
        .map_or("no signed head".to_string(), |h| {
            format!("head {} leaves, root {}", h.head.size, hex(&h.head.root))
        });
    let problems = report
        .findings
        .iter()
        .filter(|f| f.kind.is_problem())
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
