//! Starting a run (from its inputs or from a recorded prefix: `run_started`, the state
//! restored from the recorded inputs) and handing back what it gave ([`Execution`],
//! [`ReplayReport`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::recorder::{Claim, Halt, Mode, Recorder};
use super::{Engine, Exec, Inject};
use crate::budget::{Meter, Usage};
use crate::canonical::Encoder;
use crate::error::{Mismatch, RunError};
use crate::ids;
use crate::program::{BranchId, Next, Outcome, Program, ProgramInfo, StepId, StepKind};
use crate::run::{Execution, Metrics, ReplayReport, RunOptions};
use crate::trace::{Carried, CarriedValue, Entry, Event, RunStatus};
use crate::value::Digest;
use crate::view::RunView;

/// Where a run starts: from its inputs (owned from its first write when a [`Claim`] is
/// given), or from a recorded prefix.
pub(crate) enum Start<P: Program> {
    Live(P::Input, Option<Arc<Claim>>),
    /// With the [`Claim`] of the lease the continuation runs under, if any.
    Recorded(Mode, Vec<Entry>, Option<Arc<Claim>>),
}

/// How a run finished from the engine's point of view.
pub(crate) struct Ended {
    pub(crate) status: RunStatus,
    pub(crate) step: Option<StepId>,
    pub(crate) message: Option<String>,
    /// Not an end: a replanning edge continues the run at this step (see `Exec::trip`).
    pub(crate) replan_to: Option<StepId>,
}

// Built once per run and moved straight into the loop; boxing it would cost an allocation.
#[allow(
    clippy::large_enum_variant,
    reason = "built once per run and moved straight into the loop"
)]
pub(crate) enum Prepared<P: Program> {
    Ready(Exec<P>),
    /// `restore` refused the recorded inputs: the run ends `failed` right after `run_started`.
    Refused {
        rec: Recorder,
        message: String,
    },
}

pub(crate) async fn execute<P: Program>(
    engine: Arc<Engine>,
    start: Start<P>,
    tools: Option<Arc<P::Tools>>,
    opts: RunOptions,
    inject: Option<Inject>,
) -> Result<Execution, RunError> {
    let wall = Instant::now();
    let started_ms = engine.clock.now_ms();
    let info = P::info();
    let replay = matches!(start, Start::Recorded(Mode::Replay, ..));
    if engine.model.is_none()
        && !replay
        && let Some(step) = first_llm_step(info)
    {
        return Err(RunError::NoModel { step });
    }
    if !replay && let Some(model) = &engine.model {
        model
            .check_program(info)
            .map_err(|error| RunError::ModelRefused {
                program: info.name,
                error,
            })?;
    }
    // With a signer and a store, every execution that ends is checkpointed (not a replay).
    let evidence =
        (!replay && engine.signer.is_some() && engine.store.is_some()).then(|| Arc::clone(&engine));
    let prepared = prepare::<P>(engine, start, tools, opts, started_ms).map_err(halt_to_error)?;
    let mut exec = match prepared {
        Prepared::Ready(exec) => exec,
        Prepared::Refused { mut rec, message } => {
            let (status, message) =
                match rec.emit(run_ended(RunStatus::Failed, None, Some(&message))) {
                    Ok(_) => (RunStatus::Failed, message),
                    Err(Halt::ReplayEnd(why)) => (RunStatus::Running, why),
                    Err(Halt::Error(e)) => return Err(e),
                };
            check_leftover(&mut rec)?;
            rec.flush().await.map_err(halt_to_error)?;
            checkpoint(evidence.as_deref(), status, rec.trace.entries()).await?;
            return Ok(Execution {
                run_id: rec.run_id.to_string(),
                status,
                end_step: None,
                message: Some(message),
                outputs: BTreeMap::new(),
                path: Vec::new(),
                trace: rec.trace,
                usage: Usage::default(),
                metrics: Metrics {
                    started_ms,
                    elapsed: wall.elapsed(),
                    step_durations: Vec::new(),
                },
            });
        }
    };
    exec.inject = inject;
    // Ids and names only: no input, argument, answer or secret is ever a field.
    let span = tracing::info_span!(
        "nanovm.run",
        run_id = %exec.rec.run_id,
        program = P::info().name,
        program_hash = %P::info().hash.short(),
        replay = replay,
    );
    let ended = match tracing::Instrument::instrument(exec.drive(), span).await {
        Ok(ended) => ended,
        // Only a replay runs out of recorded entries: the trace stops mid-run.
        Err(Halt::ReplayEnd(why)) => Ended {
            status: RunStatus::Running,
            step: None,
            message: Some(why),
            replan_to: None,
        },
        Err(Halt::Error(e)) => {
            // A non-idempotent effect's result waiting for the next write is made durable
            // even though the run stops here (a broken program, a store failure): it was
            // known, and recovery must not find the effect ambiguous for want of it. Best
            // effort: the error that stopped the run is what the caller hears about.
            let _ = exec.rec.settle().await;
            return Err(e);
        }
    };
    exec.check_leftover()?;
    if let Some(inject) = exec.inject.take() {
        // The durable protocol checks where the run stands before injecting; reaching this
        // means the check and the executor disagree. Nothing was appended for the input.
        return Err(RunError::Internal(format!(
            "the run {} without reaching the point where {inject:?} applies",
            ended.status
        )));
    }
    let execution = exec.into_execution(ended, wall);
    checkpoint(
        evidence.as_deref(),
        execution.status,
        execution.trace.entries(),
    )
    .await?;
    Ok(execution)
}

/// After an execution that ended (`status` is not `running`) of an engine that signs
/// (`evidence`): signs a checkpoint of its trace into the store's evidence log
/// (`crate::evidence`).
async fn checkpoint(
    evidence: Option<&Engine>,
    status: RunStatus,
    entries: &[Entry],
) -> Result<(), RunError> {
    let Some(engine) = evidence else {
        return Ok(());
    };
    let (Some(signer), Some(store)) = (&engine.signer, &engine.store) else {
        return Ok(());
    };
    if status == RunStatus::Running {
        return Ok(());
    }
    engine
        .evidence_log
        .checkpoint(
            store.as_ref(),
            signer.as_ref(),
            engine.clock.now_ms(),
            entries,
        )
        .await?;
    Ok(())
}

/// Refuses a program compiled to a semantics version this runtime does not execute
/// ([`crate::SEMANTICS_VERSIONS`]), before anything is recorded.
pub(crate) fn check_semantics<P: Program>() -> Result<(), RunError> {
    let found = P::semantics();
    if crate::program::SEMANTICS_VERSIONS.contains(&found) {
        return Ok(());
    }
    Err(RunError::UnsupportedSemantics {
        program: P::info().name,
        found,
        supported: crate::program::SEMANTICS_VERSIONS,
    })
}

/// After a run ended: a recorded prefix must not hold more than the run produced.
pub(crate) fn check_leftover(rec: &mut Recorder) -> Result<(), RunError> {
    match rec.leftover().map_err(halt_to_error)? {
        None => Ok(()),
        Some(entry) => Err(RunError::Divergence(Box::new(Mismatch {
            index: usize::try_from(entry.seq).unwrap_or(usize::MAX),
            expected: None,
            recorded: Some(entry.event.clone()),
            context: "the run ended, but the trace records more".into(),
        }))),
    }
}

fn halt_to_error(h: Halt) -> RunError {
    match h {
        Halt::Error(e) => e,
        Halt::ReplayEnd(why) => RunError::Internal(format!("replay end outside a replay: {why}")),
    }
}

fn first_llm_step(info: &ProgramInfo) -> Option<&'static str> {
    info.steps.iter().find_map(|s| {
        let branch_llm = s
            .parallel
            .is_some_and(|p| p.branches.iter().any(|b| b.kind == StepKind::Llm));
        (s.kind == StepKind::Llm || branch_llm).then_some(s.name)
    })
}

pub(crate) fn run_ended(
    status: RunStatus,
    step: Option<&'static str>,
    message: Option<&str>,
) -> Event {
    Event::RunEnded {
        status,
        step: step.map(Cow::Borrowed),
        message: message.map(str::to_owned),
    }
}

/// Builds the executor: records `run_started` and restores the state from the recorded inputs
/// (live runs, resumes and replays all start from the recorded form).
pub(crate) fn prepare<P: Program>(
    engine: Arc<Engine>,
    start: Start<P>,
    tools: Option<Arc<P::Tools>>,
    opts: RunOptions,
    started_ms: u64,
) -> Result<Prepared<P>, Halt> {
    check_semantics::<P>()?;
    let info = P::info();
    let names = info.inputs.iter().map(|i| Cow::Borrowed(i.name));
    // Room for a typical event's canonical encoding; the recorder keeps it for the whole run.
    let mut scratch = Encoder::with_capacity(512);
    let claim;
    let mut migrated: Option<Migration> = None;
    let (mode, run_id, datums, recorded) = match start {
        Start::Live(input, owned) => {
            claim = owned;
            let datums = P::record_input(&input);
            let run_id = match opts.run_id {
                Some(id) => id,
                None => ids::run_id_with(&mut scratch, &info.hash, info.inputs, &datums),
            };
            (Mode::Live, run_id, datums, Vec::new())
        }
        Start::Recorded(mode, entries, leased) => {
            claim = leased;
            let Some(first) = entries.first() else {
                return Err(RunError::NotARun("the trace is empty".into()).into());
            };
            let Event::RunStarted {
                run_id,
                program_hash,
                inputs,
                ..
            } = &first.event
            else {
                return Err(RunError::NotARun(format!(
                    "the first event is `{}`, not `run_started`",
                    first.event.kind()
                ))
                .into());
            };
            // A tombstone no erasure could have written is refused before anything replays.
            crate::trace::check_erasures(&entries).map_err(RunError::from)?;
            let datums = inputs.iter().map(|(_, d)| d.clone()).collect();
            let run_id = run_id.clone();
            let (entries, part) = program_part(info, mode, *program_hash, entries)?;
            migrated = part;
            (mode, run_id, datums, entries)
        }
    };
    let store = match mode {
        Mode::Replay => None,
        Mode::Live | Mode::Resume => engine.store.clone(),
    };
    // Room for the whole trace of a typical run: about two events per step.
    let capacity = match mode {
        Mode::Live => (info.steps.len() * 2 + 4).min(1024),
        Mode::Replay | Mode::Resume => recorded.len() + 8,
    };
    // A fork's trace starts with the original's `run_started`: it is stored (and its tools
    // see it) as the run its `forked` names, while its copied prefix keeps the original's
    // effect ids.
    let fork = recorded.iter().rev().find_map(|e| match &e.event {
        Event::Forked { run_id, .. } => Some(Arc::from(run_id.as_str())),
        _ => None,
    });
    let original: Arc<str> = Arc::from(run_id.as_str());
    let mut rec = Recorder::new(
        fork.unwrap_or_else(|| original.clone()),
        mode,
        store,
        opts.fence,
        recorded,
        capacity,
    )
    .with_scratch(scratch)
    .with_observer(engine.observer.clone());
    rec.effect_run = original;
    if let Some(claim) = claim {
        rec.claim(claim);
    }
    let state = P::restore(&datums);
    let mut first = None;
    let mut meter = Meter::new(info.budget);
    let mut visits = vec![0; info.steps.len()];
    let state = match migrated {
        // A run that another program wrote up to its migration: its entries up to the
        // `migrated` event are taken as recorded (the chain is checked), and this program
        // continues at the step it waits at, with the state the migration carried and the
        // usage the entries before the wait show.
        Some(m) => {
            rec.adopt(m.adopt)?;
            let mut state = state.map_err(|f| RunError::Migration(f.to_string()))?;
            carry::<P>(info, &mut state, &m.carried)?;
            first = Some(m.step);
            meter.usage = m.view.usage();
            for (i, s) in info.steps.iter().enumerate() {
                visits[i] = m.view.visits(s.name);
            }
            Ok(state)
        }
        None => {
            rec.emit(Event::RunStarted {
                run_id,
                program: Cow::Borrowed(info.name),
                program_hash: info.hash,
                inputs: names.zip(datums).collect(),
            })?;
            state
        }
    };
    let state = match state {
        Ok(s) => s,
        Err(fault) => {
            return Ok(Prepared::Refused {
                rec,
                message: fault.to_string(),
            });
        }
    };
    Ok(Prepared::Ready(Exec {
        meter,
        visits,
        path: Vec::with_capacity(info.steps.len().min(64)),
        cancel: opts.cancel,
        started_ms,
        step_clock: None,
        effect_key: None,
        step_durations: Vec::with_capacity(info.steps.len().min(64)),
        inject: None,
        first,
        replans_used: vec![0; P::replans().len()],
        inside: None,
        redrives: 0,
        engine,
        info,
        tools,
        state,
        rec,
    }))
}

/// Where a migrated run continues: what the recorder takes as recorded, the step, the
/// carried variables and the view of the run before its wait (its usage and visits).
pub(crate) struct Migration {
    adopt: usize,
    step: StepId,
    carried: Vec<Carried>,
    view: RunView,
}

/// The part of `entries` that belongs to this program, and how it continues.
///
/// A run is pinned to the program it started under until a `migrated` event moves it to
/// another (`nanovm migrate`). The program the run is pinned to now continues it: after the
/// last migration when there is one ([`Migration`]). A program the run was migrated away from
/// may only replay its part (the entries before the migration that ended it); continuing the
/// run is refused, as is any other program ([`RunError::ProgramMismatch`], naming the hash the
/// run is pinned to).
fn program_part(
    info: &'static ProgramInfo,
    mode: Mode,
    started: Digest,
    mut entries: Vec<Entry>,
) -> Result<(Vec<Entry>, Option<Migration>), Halt> {
    let migrations: Vec<(usize, Digest, Digest)> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match &e.event {
            Event::Migrated { from, to, .. } => Some((i, *from, *to)),
            _ => None,
        })
        .collect();
    if migrations.is_empty() {
        if started != info.hash {
            return Err(mismatch(info, started));
        }
        return Ok((entries, None));
    }
    let pinned = migrations.last().map_or(started, |m| m.2);
    // Segments: [0, first migration) under `started`, then after each migration under its `to`.
    let mut begin: Option<usize> = (started == info.hash).then_some(0);
    let mut chosen = None;
    for &(i, _, to) in &migrations {
        if let Some(b) = begin.take() {
            chosen = Some((b, Some(i)));
        }
        if to == info.hash {
            begin = Some(i + 1);
            chosen = None;
        }
    }
    if let Some(b) = begin {
        chosen = Some((b, None));
    }
    let Some((begin, end)) = chosen else {
        return Err(mismatch(info, pinned));
    };
    if let Some(end) = end {
        // A part the run has left: only a replay, of that part.
        if mode != Mode::Replay {
            return Err(mismatch(info, pinned));
        }
        entries.truncate(end);
    }
    if begin == 0 {
        return Ok((entries, None));
    }
    let at = begin - 1;
    let Event::Migrated { step, carried, .. } = &entries[at].event else {
        return Err(
            RunError::Internal("a migration index is not a `migrated` event".into()).into(),
        );
    };
    let Some(step_id) = info.step_id(step) else {
        return Err(RunError::Migration(format!(
            "program `{}` has no step `{step}` to continue at",
            info.name
        ))
        .into());
    };
    // The usage and visits up to the wait the run was migrated at: continuing there enters the
    // step again, as a resume does.
    let wait = entries[..at]
        .iter()
        .rposition(|e| matches!(e.event, Event::Suspended { .. }))
        .unwrap_or(at);
    let migration = Migration {
        adopt: begin,
        step: step_id,
        carried: carried.clone(),
        view: RunView::of(&entries[..wait]),
    };
    Ok((entries, Some(migration)))
}

fn mismatch(info: &'static ProgramInfo, recorded: Digest) -> Halt {
    RunError::ProgramMismatch {
        program: info.name,
        compiled: info.hash,
        recorded,
    }
    .into()
}

/// Hands each carried variable to the transition of the step that assigns it.
fn carry<P: Program>(
    info: &'static ProgramInfo,
    state: &mut P::State,
    carried: &[Carried],
) -> Result<(), RunError> {
    for c in carried {
        let Some(step) = info.step_id(&c.step) else {
            return Err(RunError::Migration(format!(
                "`{}` is carried to step `{}`, which program `{}` does not have",
                c.var, c.step, info.name
            )));
        };
        let outcome = match &c.value {
            CarriedValue::Choice(i) => Outcome::Choice(*i as usize),
            CarriedValue::Text(t) => Outcome::Text(t),
            CarriedValue::Tool(v) => Outcome::Tool(v),
            CarriedValue::Event(v) => Outcome::Event(v),
        };
        let next = match &c.branch {
            None => P::transition(step, state, outcome),
            Some(b) => {
                let branch = info
                    .step(step)
                    .parallel
                    .and_then(|p| p.branches.iter().position(|x| x.name == b.as_str()));
                let Some(branch) = branch else {
                    return Err(RunError::Migration(format!(
                        "`{}` is carried to branch `{}.{b}`, which program `{}` does not have",
                        c.var, c.step, info.name
                    )));
                };
                P::apply_branch(step, branch as BranchId, state, outcome)
            }
        };
        if !matches!(next, Next::Go(_) | Next::Decided { .. }) {
            return Err(RunError::Migration(format!(
                "step `{}` of program `{}` refuses the value carried for `{}`: {next:?}",
                c.step, info.name, c.var
            )));
        }
    }
    Ok(())
}

impl<P: Program> Exec<P> {
    /// After the run ended: a recorded prefix must not hold more than the run produced.
    pub(crate) fn check_leftover(&mut self) -> Result<(), RunError> {
        check_leftover(&mut self.rec)
    }

    /// What a replay reports once the engine stopped: `status` at `end_step`, or `stopped`
    /// early (the recorded trace ends mid-run).
    pub(crate) fn into_report(
        self,
        status: RunStatus,
        end_step: Option<StepId>,
        stopped: Option<String>,
    ) -> ReplayReport {
        let info = self.info;
        ReplayReport {
            run_id: self.rec.run_id.to_string(),
            status,
            end_step: end_step.and_then(|s| info.steps.get(s as usize).map(|i| i.name.to_string())),
            path: self.path,
            root: self.rec.trace.root(),
            entries: self.rec.trace.len(),
            stopped,
            usage: self.meter.usage,
        }
    }

    pub(crate) fn into_execution(mut self, ended: Ended, wall: Instant) -> Execution {
        let now = Instant::now();
        self.close_step(now);
        let info = self.info;
        let name = |s: StepId| info.steps.get(s as usize).map_or("?", |i| i.name);
        Execution {
            run_id: self.rec.run_id.to_string(),
            status: ended.status,
            end_step: ended.step.map(|s| name(s).to_string()),
            message: ended.message,
            outputs: {
                // Inserted one by one: a handful of variables, no need to collect and sort.
                let mut outputs = BTreeMap::new();
                for (k, v) in P::outputs(&self.state) {
                    outputs.insert(k.to_string(), v);
                }
                outputs
            },
            path: self.path,
            trace: self.rec.trace,
            usage: self.meter.usage,
            metrics: Metrics {
                started_ms: self.started_ms,
                elapsed: now.saturating_duration_since(wall),
                step_durations: self.step_durations,
            },
        }
    }
}
