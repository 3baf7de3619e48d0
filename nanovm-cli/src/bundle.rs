//! An auditor's bundle: `nanovm export --db DB --key PUBKEY --program FILE.nvm --bundle
//! OUT.tar RUN_ID` writes one run's evidence into a tar file, and `nanovm audit OUT.tar --key
//! PUBKEY` checks it offline, without the store.
//!
//! The bundle holds five files, always in this order and with fixed metadata (mode 0644,
//! time 0, owner 0), so that exporting the same run twice gives the same bytes:
//!
//! | file | what it is |
//! |---|---|
//! | `manifest.json` | `{"format": "nanovm-bundle/1", "run_id", "program", "program_hash", "entries", "root"}` |
//! | `trace.jsonl` | the run's trace, as `nanovm trace` exports it |
//! | `checkpoint.json` | the run's latest checkpoint signed by the key |
//! | `proof.json` | its RFC 6962 inclusion proof under the store's signed tree head |
//! | `program.nvm` | the source of the program the run ran (its hash is the checkpoint's) |
//!
//! The export refuses a run the store cannot prove (a broken or uncovered trace, no signed
//! head over its checkpoint, a program file whose hash is another), so a bundle that exists
//! was whole when it was made. The audit trusts nothing in it: every file is checked again
//! against the key, and every problem is one line (exit 1 if there is any).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nanovm_runtime::Digest;
use nanovm_runtime::evidence::{self, InclusionProof, PublicKey, SignedCheckpoint};
use nanovm_runtime::trace::{Entry, Event, MAX_LINE_BYTES, Trace};
use serde_json::json;

use crate::audit;
use crate::db::{self, Db};
use crate::error::{Error, Status};
use crate::escape::escape;
use crate::verify;

/// The format named in `manifest.json`.
const FORMAT: &str = "nanovm-bundle/1";

/// The files of a bundle, in the order they are written.
const FILES: [&str; 5] = [
    "manifest.json",
    "trace.jsonl",
    "checkpoint.json",
    "proof.json",
    "program.nvm",
];

/// The largest file the audit reads from a bundle: the trace may hold up to this many lines of
/// the longest allowed length before the audit gives up rather than fill memory.
const MAX_FILE_BYTES: u64 = 64 * MAX_LINE_BYTES as u64;

/// Arguments of `nanovm export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// The store: a SQLite file or a `postgres://` URL (read only).
    #[arg(long, value_name = "DB", value_parser = Db::parse)]
    db: Db,
    /// The public key the runtime signs with (a file, or 64 hex digits): the bundle holds the
    /// run's latest checkpoint signed by it and the proof under its tree head.
    #[arg(long, value_name = "PUBKEY")]
    key: String,
    /// The `.nvm` file of the program the run ran; its hash must be the run's.
    #[arg(long, value_name = "FILE.nvm")]
    program: PathBuf,
    /// Where to write the bundle (a tar file; replaced whole, never half written).
    #[arg(long, value_name = "OUT.tar")]
    bundle: PathBuf,
    /// The run.
    #[arg(value_name = "RUN_ID")]
    run_id: String,
}

/// Runs `nanovm export`.
pub fn export(
    args: &ExportArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Status, Error> {
    let key = audit::public_key(&args.key)?;
    let refuse = |err: &mut dyn Write, why: String| -> Result<Status, Error> {
        writeln!(
            err,
            "no bundle: run `{}`: {}",
            escape(&args.run_id),
            escape(&why)
        )
        .map_err(Error::stderr)?;
        Ok(Status::Failed)
    };
    let (entries, findings, proof) = db::block_on(async {
        let store = args.db.open(false).await?;
        let usage = |e| args.db.error(e);
        let entries = store.load(&args.run_id).await.map_err(usage)?;
        let findings = evidence::check_stored_run(store.as_ref(), &key, &args.run_id)
            .await
            .map_err(usage)?;
        let proof = evidence::prove_inclusion(store.as_ref(), &key, &args.run_id)
            .await
            .map_err(usage)?;
        Ok::<_, Error>((entries, findings, proof))
    })??;
    let Some(entries) = entries else {
        return Err(Error::Usage(format!(
            "run `{}` is not in {}",
            args.run_id,
            args.db.name()
        )));
    };
    let trace = match Trace::from_entries(entries) {
        Ok(t) => t,
        Err(e) => return refuse(err, format!("broken trace: {}", verify::describe(&e))),
    };
    if let Some(f) = findings.first() {
        return refuse(err, format!("{}: {}", audit::label(f.kind), f.message));
    }
    let Some(proof) = proof else {
        return refuse(
            err,
            "no checkpoint signed by this key under the store's signed tree head (run `nanovm audit`)"
                .into(),
        );
    };
    let cp = &proof.checkpoint.checkpoint;
    if cp.entries != trace.entries().len() as u64 || cp.root != trace.root() {
        return refuse(
            err,
            format!(
                "the store's signed tree head covers a checkpoint of {} entries, the run has {}: \
                 export again once its head is signed",
                cp.entries,
                trace.entries().len()
            ),
        );
    }
    let source = std::fs::read(&args.program).map_err(|e| Error::io(&args.program, e))?;
    let Some(program) = program_with_hash(&args.program, &source, &cp.program_hash)? else {
        return Err(Error::Usage(format!(
            "{} holds no program with the run's hash {} (another program, or changed since \
             the run)",
            args.program.display(),
            cp.program_hash
        )));
    };
    let manifest = json!({
        "format": FORMAT,
        "run_id": cp.run_id,
        "program": program,
        "program_hash": cp.program_hash.to_hex(),
        "entries": cp.entries,
        "root": cp.root.to_hex(),
    });
    let files: [Vec<u8>; 5] = [
        format!("{manifest}\n").into_bytes(),
        trace.to_jsonl().into_bytes(),
        format!("{}\n", proof.checkpoint.to_json()).into_bytes(),
        format!("{}\n", proof.to_json()).into_bytes(),
        source,
    ];
    write_tar(&args.bundle, &files)?;
    writeln!(
        out,
        "wrote {}: run `{}` ({} entries, root {}), checkpoint leaf {} of {}, program `{}`",
        args.bundle.display(),
        escape(&cp.run_id),
        cp.entries,
        cp.root,
        proof.index,
        proof.head.head.size,
        escape(&program)
    )
    .map_err(Error::stdout)?;
    Ok(Status::Clean)
}

/// The name of the program in `source` whose hash is `hash` (`None`: none is; a file that
/// does not compile holds none).
fn program_with_hash(path: &Path, source: &[u8], hash: &Digest) -> Result<Option<String>, Error> {
    let c = nanovm_dsl::compile_bytes(&path.display().to_string(), source);
    if c.has_errors() {
        return Ok(None);
    }
    Ok(c.programs
        .iter()
        .find(|p| p.hash == hash.0)
        .map(|p| p.name.clone()))
}

/// Writes the files as a tar with fixed metadata, to a temporary file renamed into place.
fn write_tar(path: &Path, files: &[Vec<u8>; 5]) -> Result<(), Error> {
    let tmp = path.with_extension("tar.partial");
    let write = || -> std::io::Result<()> {
        let mut tar = tar::Builder::new(std::fs::File::create(&tmp)?);
        for (name, bytes) in FILES.iter().zip(files) {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, name, bytes.as_slice())?;
        }
        tar.into_inner()?.sync_all()
    };
    write().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a bundle's files; the problems found reading it are pushed to `problems`.
fn read_tar(path: &Path, problems: &mut Vec<String>) -> Result<[Option<Vec<u8>>; 5], Error> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut files: [Option<Vec<u8>>; 5] = Default::default();
    let mut archive = tar::Archive::new(file);
    let entries = archive.entries().map_err(|e| Error::io(path, e))?;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("not a tar file, or cut short: {e}"));
                break;
            }
        };
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "(unreadable name)".into());
        let Some(i) = FILES.iter().position(|f| *f == name) else {
            problems.push(format!("unexpected file `{}` in the bundle", escape(&name)));
            continue;
        };
        if entry.header().entry_type() != tar::EntryType::Regular {
            problems.push(format!("`{name}` is not a regular file"));
            continue;
        }
        if files[i].is_some() {
            problems.push(format!(
                "`{name}` appears twice (which one would an auditor believe?)"
            ));
            continue;
        }
        let mut bytes = Vec::new();
        if let Err(e) = (&mut entry)
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
        {
            problems.push(format!("`{name}` cannot be read: {e}"));
            continue;
        }
        if bytes.len() as u64 > MAX_FILE_BYTES {
            problems.push(format!("`{name}` is larger than {MAX_FILE_BYTES} bytes"));
            continue;
        }
        files[i] = Some(bytes);
    }
    for (name, file) in FILES.iter().zip(&files) {
        if file.is_none() {
            problems.push(format!("`{name}` is missing"));
        }
    }
    Ok(files)
}

/// `nanovm audit BUNDLE --key PUBKEY`: checks an auditor's bundle offline.
pub fn audit(path: &Path, key: &PublicKey, out: &mut dyn Write) -> Result<Status, Error> {
    let mut problems = Vec::new();
    let [manifest, trace, checkpoint, proof, program] = read_tar(path, &mut problems)?;
    let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let checkpoint = text(&checkpoint).and_then(|t| {
        SignedCheckpoint::from_json(&t)
            .map_err(|e| problems.push(format!("`checkpoint.json`: {e}")))
            .ok()
    });
    let proof = text(&proof).and_then(|t| {
        InclusionProof::from_json(&t)
            .map_err(|e| problems.push(format!("`proof.json`: {e}")))
            .ok()
    });
    // The trace: its chain and completeness, then the checkpoint's coverage of it.
    if let Some(bytes) = &trace {
        let at = checkpoint
            .as_ref()
            .map(|cp| cp.checkpoint.entries.checked_sub(1));
        let mut started = None;
        let mut hash_at = None;
        let each = |e: Entry| {
            if let (
                0,
                Event::RunStarted {
                    run_id,
                    program_hash,
                    ..
                },
            ) = (e.seq, &e.event)
            {
                started = Some((run_id.clone(), *program_hash));
            }
            if at == Some(Some(e.seq)) {
                hash_at = Some(e.hash);
            }
        };
        match verify::read_from(Path::new("trace.jsonl"), bytes.as_slice(), each)? {
            Err(e) => problems.push(format!("`trace.jsonl` broken: {}", verify::describe(&e))),
            Ok(summary) => {
                let (line, status) = verify::verdict(&summary, false);
                if status != Status::Clean {
                    problems.push(format!("`trace.jsonl` {line}"));
                } else if let Some(cp) = &checkpoint {
                    let (line, status) =
                        verify::covered(key, cp, &summary, started.as_ref(), hash_at, false);
                    if status != Status::Clean {
                        problems.push(format!("`checkpoint.json` against `trace.jsonl`: {line}"));
                    }
                }
            }
        }
    }
    // The proof: signed, leading to the head's root, and of this very checkpoint.
    if let Some(p) = &proof {
        if !p.verifies(key) {
            problems.push(
                "`proof.json` does not verify under the key (a signature, or the audit path \
                 from the leaf to the head's root)"
                    .into(),
            );
        }
        if let Some(cp) = &checkpoint
            && p.checkpoint != *cp
        {
            problems.push("`proof.json` proves another checkpoint than `checkpoint.json`".into());
        }
    }
    // The program: its hash must be the one the run ran.
    if let (Some(source), Some(cp)) = (&program, &checkpoint) {
        let hash = cp.checkpoint.program_hash;
        if program_with_hash(Path::new("program.nvm"), source, &hash)?.is_none() {
            problems.push(format!(
                "`program.nvm` holds no program with the run's hash {hash} (another program, or \
                 one that does not compile)"
            ));
        }
    }
    // The manifest is an index for people: it must not say anything the evidence does not.
    if let (Some(m), Some(cp)) = (text(&manifest), &checkpoint) {
        let c = &cp.checkpoint;
        let m: serde_json::Value = serde_json::from_str(&m).unwrap_or_default();
        let expected = json!({
            "format": FORMAT,
            "run_id": c.run_id,
            "program_hash": c.program_hash.to_hex(),
            "entries": c.entries,
            "root": c.root.to_hex(),
        });
        for (field, want) in expected.as_object().into_iter().flatten() {
            if m.get(field) != Some(want) {
                problems.push(format!(
                    "`manifest.json`: `{field}` is {}, the evidence says {want}",
                    m.get(field).map_or("missing".into(), ToString::to_string)
                ));
            }
        }
    }
    for p in &problems {
        writeln!(out, "problem: {}", escape(p)).map_err(Error::stdout)?;
    }
    match (problems.len(), &proof) {
        (0, Some(p)) => {
            let (c, h) = (&p.checkpoint.checkpoint, &p.head.head);
            writeln!(
                out,
                "ok: run `{}` ({} entries, root {}) is whole, signed, and leaf {} of the log under \
                 the head of {} leaves (root {}, signed at {} ms); program hash {} matches \
                 `program.nvm`; compare that head with one you kept or published",
                escape(&c.run_id),
                c.entries,
                c.root,
                p.index,
                h.size,
                Digest(h.root).to_hex(),
                h.time_ms,
                c.program_hash
            )
            .map_err(Error::stdout)?;
            Ok(Status::Clean)
        }
        (n, _) => {
            writeln!(out, "bundle failed: {} problem(s)", n.max(1)).map_err(Error::stdout)?;
            Ok(Status::Failed)
        }
    }
}
