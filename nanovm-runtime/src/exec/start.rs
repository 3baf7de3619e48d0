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
use crate::program::{Program, ProgramInfo, StepId, StepKind};
use crate::run::{Execution, Metrics, ReplayReport, RunOptions};
use crate::trace::{Entry, Event, RunStatus};

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
    let evidence = match (&engine.signer, &engine.store) {
        (Some(signer), Some(store)) if !replay => {
            Some((signer.clone(), store.clone(), Arc::clone(&engine)))
        }
        _ => None,
    };
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
            if let Some((signer, store, engine)) = &evidence
                && status != RunStatus::Running
            {
                engine
                    .evidence_log
                    .checkpoint(
                        store.as_ref(),
                        signer.as_ref(),
                        engine.clock.now_ms(),
                        rec.trace.entries(),
                    )
                    .await?;
            }
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
    let ended = match exec.drive().await {
        Ok(ended) => ended,
        // Only a replay runs out of recorded entries: the trace stops mid-run.
        Err(Halt::ReplayEnd(why)) => Ended {
            status: RunStatus::Running,
            step: None,
            message: Some(why),
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
    if let Some((signer, store, engine)) = &evidence
        && execution.status != RunStatus::Running
    {
        engine
            .evidence_log
            .checkpoint(
                store.as_ref(),
                signer.as_ref(),
                engine.clock.now_ms(),
                execution.trace.entries(),
            )
            .await?;
    }
    Ok(execution)
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
            if *program_hash != info.hash {
                return Err(RunError::ProgramMismatch {
                    program: info.name,
                    compiled: info.hash,
                    recorded: *program_hash,
                }
                .into());
            }
            let datums = inputs.iter().map(|(_, d)| d.clone()).collect();
            (mode, run_id.clone(), datums, entries)
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
    .with_scratch(scratch);
    rec.effect_run = original;
    if let Some(claim) = claim {
        rec.claim(claim);
    }
    let state = P::restore(&datums);
    rec.emit(Event::RunStarted {
        run_id,
        program: Cow::Borrowed(info.name),
        program_hash: info.hash,
        inputs: names.zip(datums).collect(),
    })?;
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
        meter: Meter::new(info.budget),
        visits: vec![0; info.steps.len()],
        path: Vec::with_capacity(info.steps.len().min(64)),
        cancel: opts.cancel,
        started_ms,
        step_clock: None,
        effect_key: None,
        step_durations: Vec::with_capacity(info.steps.len().min(64)),
        inject: None,
        inside: None,
        redrives: 0,
        engine,
        info,
        tools,
        state,
        rec,
    }))
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
