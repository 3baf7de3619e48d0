//! Moving a waiting run to another version of its program: [`migrate_run`], what `nanovm
//! migrate` writes once `nanovm compat` found the step compatible.
//!
//! The migration needs no compiled program: the caller (the CLI, with both `.nvm` files)
//! decides which variables the new program takes and how ([`Carried`]); here the run is
//! claimed like every other operation on a stored run (its lease, fenced appends), checked to
//! still wait where the caller saw it, and two entries are appended in one write:
//! `migrated { step, from, to, carried, by }` and a `suspended` that re-issues the wait (same
//! step, event and deadline), so the run stays `suspended`, its trace complete, and a delivery
//! or timeout continues it under the new program (`exec::start`).

use crate::canonical::Encoder;
use crate::store::{JournalError, JournalStore};
use crate::trace::{Actor, Carried, Entry, Event, RunStatus, Trace};
use crate::value::Digest;
use crate::view::RunView;

/// What to migrate: one stored run, from the program it is pinned to, at the step it waits at.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Migration {
    /// The run.
    pub run_id: String,
    /// The hash of the program the run must be pinned to now.
    pub from: Digest,
    /// The hash of the program it continues under.
    pub to: Digest,
    /// The `await` step it must be suspended at.
    pub step: String,
    /// The variables the new program takes.
    pub carried: Vec<Carried>,
    /// Who migrates it and why.
    pub by: Actor,
}

impl Migration {
    /// Migrates `run_id`, suspended at `step` under `from`, to `to`.
    pub fn new(
        run_id: impl Into<String>,
        from: Digest,
        to: Digest,
        step: impl Into<String>,
        carried: Vec<Carried>,
        by: Actor,
    ) -> Self {
        Migration {
            run_id: run_id.into(),
            from,
            to,
            step: step.into(),
            carried,
            by,
        }
    }
}

/// Why a run was not migrated. Nothing was appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The store has no such run.
    #[error("run `{0}` is not in the store")]
    UnknownRun(String),
    /// Only a run suspended at an `await` is migrated.
    #[error("run `{run_id}` is {status}, not suspended at `{step}`")]
    NotWaiting {
        /// The run.
        run_id: String,
        /// Its status.
        status: RunStatus,
        /// Where the migration expected it.
        step: String,
    },
    /// The run is pinned to another program than the migration's `from`.
    #[error("run `{run_id}` is pinned to program {pinned}, not {from}")]
    Pinned {
        /// The run.
        run_id: String,
        /// The hash it is pinned to.
        pinned: Digest,
        /// The migration's `from`.
        from: Digest,
    },
    /// Someone holds the run's lease (a worker or an operation is continuing it).
    #[error("run `{0}` is in progress elsewhere (its lease is held); try again later")]
    Leased(String),
    /// The store failed or refused the write.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Migrates one run: claims it (`lease_ms` long, owner `nanovm migrate`), checks under the
/// lease that it is suspended at `m.step` and pinned to `m.from`, appends `migrated` and the
/// re-issued `suspended` fenced by the lease, and gives the lease back in the same write.
/// Returns the two appended entries.
pub async fn migrate_run(
    store: &dyn JournalStore,
    m: &Migration,
    now_ms: u64,
    lease_ms: u64,
) -> Result<Vec<Entry>, MigrateError> {
    let unknown = || MigrateError::UnknownRun(m.run_id.clone());
    // Cheap refusals first, without a lease.
    let entries = store.load(&m.run_id).await?.ok_or_else(unknown)?;
    check(m, &entries)?;
    let Some(lease) = store
        .claim_run(&m.run_id, "nanovm migrate", now_ms, lease_ms)
        .await?
    else {
        return Err(MigrateError::Leased(m.run_id.clone()));
    };
    // What is stored now, under the lease, is what counts.
    let entries = match store.load(&m.run_id).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            store.release(&lease).await?;
            return Err(unknown());
        }
        Err(e) => {
            let _ = store.release(&lease).await;
            return Err(e.into());
        }
    };
    let suspended = match check(m, &entries) {
        Ok(s) => s,
        Err(e) => {
            store.release(&lease).await?;
            return Err(e);
        }
    };
    let stored = entries.len();
    let mut trace = Trace::from_entries(entries).map_err(|e| JournalError::Io(e.to_string()))?;
    let mut scratch = Encoder::new();
    trace.push(
        Event::Migrated {
            step: m.step.clone().into(),
            from: m.from,
            to: m.to,
            carried: m.carried.clone(),
            by: m.by.clone(),
        },
        &mut scratch,
    );
    trace.push(suspended, &mut scratch);
    let new = trace.entries()[stored..].to_vec();
    if let Err(e) = store.append_release(&m.run_id, &new, &lease).await {
        let _ = store.release(&lease).await;
        return Err(e.into());
    }
    Ok(new)
}

/// The run is suspended at `m.step` and pinned to `m.from`; returns its `suspended` event.
fn check(m: &Migration, entries: &[Entry]) -> Result<Event, MigrateError> {
    let view = RunView::of(entries);
    if view.status() != RunStatus::Suspended || view.step() != Some(m.step.as_str()) {
        return Err(MigrateError::NotWaiting {
            run_id: m.run_id.clone(),
            status: view.status(),
            step: m.step.clone(),
        });
    }
    let pinned = view.program_hash().unwrap_or(Digest::ZERO);
    if pinned != m.from {
        return Err(MigrateError::Pinned {
            run_id: m.run_id.clone(),
            pinned,
            from: m.from,
        });
    }
    entries
        .iter()
        .rev()
        .map(|e| &e.event)
        .find(|e| matches!(e, Event::Suspended { .. }))
        .cloned()
        .ok_or_else(|| MigrateError::NotWaiting {
            run_id: m.run_id.clone(),
            status: view.status(),
            step: m.step.clone(),
        })
}
