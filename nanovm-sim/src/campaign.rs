//! A campaign: one compiled program, a tools factory and an input generator, attacked seed by
//! seed. [`Campaign::run_seed`] is the whole simulation of one seed; [`Campaign::run`] many.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nanovm_runtime::__private_v0_1::{Program, StepKind};
use nanovm_runtime::store::{JournalError, JournalStore as _};
use nanovm_runtime::trace::{Entry, Event, Trace};
use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{
    Clock, DeliverError, Execution, Json, ReconcileError, Resolution, RunError, RunStatus, RunView,
    Runtime, Worker, replay,
};

use crate::faults::{Fault, Faults};
use crate::report::{Counters, Report, Violation, ViolationKind};
use crate::rng::Rng;
use crate::sabotage::{Sabotaged, SabotagedTools, SimModel};
use crate::sched::{self, TaskFuture};
use crate::store::{FaultStore, now};
use crate::world::World;

type InputFn<P> = dyn Fn(&mut Rng, &MemoryVault) -> <P as Program>::Input + Send + Sync;
type ToolsFn<P> = dyn Fn() -> Arc<<P as Program>::Tools> + Send + Sync;
type PayloadFn = dyn Fn(&str, &mut Rng) -> Json + Send + Sync;

/// Rounds with faults on, then calm rounds (no faults) until every run is at rest.
const CHAOS_ROUNDS: u32 = 8;
const MAX_ROUNDS: u32 = 40;
/// Events delivered to one run at most (a loop that waits again and again stays suspended).
const MAX_EVENTS: u32 = 6;

/// A sabotage campaign against one compiled program: its inputs, its host's tools and the
/// payloads of the events it awaits. Build one with [`Campaign::new`], run it with
/// [`Campaign::run`] (or one seed with [`Campaign::run_seed`]).
///
/// ```no_run
/// # use std::sync::Arc;
/// # use nanovm_sim::{Campaign, Faults};
/// # fn demo<P: nanovm_runtime::__private_v0_1::Program>(
/// #     input: impl Fn(&mut nanovm_sim::Rng, &nanovm_runtime::vault::MemoryVault) -> P::Input + Send + Sync + 'static,
/// #     tools: impl Fn() -> Arc<P::Tools> + Send + Sync + 'static) {
/// let report = Campaign::<P>::new("my_workflow", input, tools).run(0..1000, Faults::all());
/// println!("{report}");
/// assert_eq!(report.total_violations(), 0, "{:?}", report.violations);
/// # }
/// ```
pub struct Campaign<P: Program> {
    name: String,
    input: Arc<InputFn<P>>,
    tools: Arc<ToolsFn<P>>,
    payload: Arc<PayloadFn>,
    max_runs: u64,
    lease_ms: u64,
    replays: u64,
}

/// What one seed did and found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SeedOutcome {
    /// The counters.
    pub counters: Counters,
    /// The broken invariants.
    pub violations: Vec<Violation>,
    /// Each run's id and the root of its stored trace (hex) at the end: what the same seed
    /// must reproduce.
    pub roots: Vec<(String, String)>,
}

/// One workflow instance of a seed.
struct RunSpec {
    id: String,
    input_rng: Rng,
    events: u32,
    /// Event ids offered to this run, with their payloads.
    offered: Vec<(String, Json)>,
}

/// The default event payload: every field the shipped awaits read, random.
pub fn default_payload(_event: &str, rng: &mut Rng) -> Json {
    serde_json::json!({
        "ok": rng.chance(600),
        "approved": rng.chance(600),
        "cleared": rng.chance(600),
        "again": rng.chance(500),
    })
}

impl<P: Program> Campaign<P> {
    /// A campaign named `name` (it names the runs), making each run's input with `input` (it
    /// may seal secrets in the vault it is given) and the host's tools with `tools`. The
    /// tools are called for real: what the simulation injects happens around them, and an
    /// effect tool must honour its idempotency key as the runtime's contract asks.
    pub fn new(
        name: impl Into<String>,
        input: impl Fn(&mut Rng, &MemoryVault) -> P::Input + Send + Sync + 'static,
        tools: impl Fn() -> Arc<P::Tools> + Send + Sync + 'static,
    ) -> Self {
        Campaign {
            name: name.into(),
            input: Arc::new(input),
            tools: Arc::new(tools),
            payload: Arc::new(default_payload),
            max_runs: 3,
            lease_ms: 3_000,
            replays: 6,
        }
    }

    /// The payloads of delivered events (by event name); default [`default_payload`].
    #[must_use]
    pub fn payloads(mut self, f: impl Fn(&str, &mut Rng) -> Json + Send + Sync + 'static) -> Self {
        self.payload = Arc::new(f);
        self
    }

    /// At most this many runs per seed (default 3, at least 1).
    #[must_use]
    pub fn runs_per_seed(mut self, n: u64) -> Self {
        self.max_runs = n.max(1);
        self
    }

    /// The most replays of each stored trace per seed with `replay-storm` (default 6).
    #[must_use]
    pub fn replays(mut self, n: u64) -> Self {
        self.replays = n;
        self
    }

    /// The campaign's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs seeds `seeds` with `faults`, re-running every 10th seed to check it gives the
    /// same roots, and reports.
    pub fn run(&self, seeds: std::ops::Range<u64>, faults: Faults) -> Report {
        let mut report = Report {
            programs: vec![self.name.clone()],
            faults,
            ..Report::default()
        };
        let start = Instant::now();
        for seed in seeds {
            self.run_one(seed, faults, seed % 10 == 0, &mut report);
        }
        report.wall = start.elapsed();
        report
    }

    /// Runs one seed into `report`, twice when `twice` (the determinism check).
    pub fn run_one(&self, seed: u64, faults: Faults, twice: bool, report: &mut Report) {
        let outcome = self.run_seed(seed, faults);
        let mut violations = outcome.violations.clone();
        if twice {
            report.determinism_checked += 1;
            let again = self.run_seed(seed, faults);
            if again.roots != outcome.roots || again.counters != outcome.counters {
                violations.push(Violation {
                    kind: ViolationKind::Nondeterminism,
                    seed,
                    run_id: String::new(),
                    detail: format!(
                        "the same seed gave other roots or counts: {:?} then {:?}",
                        outcome.roots, again.roots
                    ),
                });
            }
        }
        report.absorb(&outcome.counters, violations);
    }

    /// Simulates one seed and checks every invariant.
    pub fn run_seed(&self, seed: u64, faults: Faults) -> SeedOutcome {
        let world = Arc::new(World::new(seed, faults, self.lease_ms));
        let started = world.clock.now_ms();
        let result = catch_unwind(AssertUnwindSafe(|| self.simulate(&world)));
        let mut roots = Vec::new();
        match result {
            Ok(runs) => roots = self.check(&world, &runs),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                world.violation(ViolationKind::RuntimeError, "", format!("panic: {what}"));
            }
        }
        let mut s = world.state();
        s.counters.seeds = 1;
        s.counters.sim_ms = world.clock.now_ms() - started;
        SeedOutcome {
            counters: s.counters.clone(),
            violations: std::mem::take(&mut s.violations),
            roots,
        }
    }

    fn runtime(&self, world: &Arc<World>, vault: &Arc<MemoryVault>) -> Runtime {
        Runtime::builder()
            .model(SimModel {
                world: world.clone(),
            })
            .vault(vault.clone())
            .clock(world.clock.clone())
            .store(FaultStore::new(world.clone()))
            .operation_lease(Duration::from_millis(self.lease_ms))
            .build()
    }

    fn tools(&self, world: &Arc<World>) -> Arc<SabotagedTools<P>> {
        Arc::new(SabotagedTools::new((self.tools)(), world.clone()))
    }

    fn simulate(&self, world: &Arc<World>) -> Vec<RunSpec> {
        let vault = Arc::new(MemoryVault::seeded(world.seed));
        let n = 1 + world.below(self.max_runs);
        let mut runs: Vec<RunSpec> = (0..n)
            .map(|i| RunSpec {
                id: format!("{}-s{}-r{i}", self.name, world.seed),
                input_rng: world.state().rng.fork(),
                events: 0,
                offered: Vec::new(),
            })
            .collect();
        world.count(|c| c.runs += n);

        // Round 0: every run is started (or submitted for workers), some several times at once.
        let mut tasks: Vec<TaskFuture> = Vec::new();
        let mut workers = false;
        for r in &runs {
            let input = (self.input)(&mut r.input_rng.clone(), &vault);
            if world.inject(Fault::Workers, 300) {
                workers = true;
                tasks.push(self.submit(world, &vault, r.id.clone(), input));
            } else {
                tasks.push(self.start(world, &vault, r.id.clone(), input));
            }
            if world.inject(Fault::DuplicateStart, 300) {
                for _ in 0..1 + world.below(2) {
                    let input = (self.input)(&mut r.input_rng.clone(), &vault);
                    let task = self.start(world, &vault, r.id.clone(), input);
                    tasks.push(self.later(world, task));
                }
            }
        }
        if workers {
            for w in 0..1 + world.below(3) {
                let task = self.worker(world, &vault, w, 1 + world.below(3));
                tasks.push(self.later(world, task));
            }
        }
        sched::run(world, tasks);

        for round in 1..=MAX_ROUNDS {
            let calm = round > CHAOS_ROUNDS;
            world.chaos.store(!calm, Ordering::SeqCst);
            if world.inject(Fault::Corruption, 30) {
                let r = &runs[world.below(runs.len() as u64) as usize];
                let len = world.disk.entries(&r.id).len() as u64;
                if len > 0 {
                    let which = world.below(len) as usize;
                    FaultStore::damage(world, &r.id, Some(which));
                }
            }
            if world.inject(Fault::ClockJump, 250) {
                let jumps = [
                    self.lease_ms + 1,
                    60_000,
                    3_600_001,
                    86_400_001,
                    172_800_001,
                ];
                let by = jumps[world.below(jumps.len() as u64) as usize];
                world.clock.advance(by);
            }
            let mut tasks: Vec<TaskFuture> = Vec::new();
            let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
            for r in &mut runs {
                if world.is_corrupted(&r.id) {
                    continue;
                }
                self.plan_run(world, &vault, r, &ids, calm, &mut tasks);
            }
            if tasks.is_empty() {
                break;
            }
            sched::run(world, tasks);
        }
        runs
    }

    /// The next operations on one run, from where it stands.
    fn plan_run(
        &self,
        world: &Arc<World>,
        vault: &Arc<MemoryVault>,
        r: &mut RunSpec,
        ids: &[String],
        calm: bool,
        tasks: &mut Vec<TaskFuture>,
    ) {
        let record = now(world.disk.run(&r.id)).ok().flatten();
        let Some(record) = record else {
            // Never written (the start crashed before its first write): start it again.
            let input = (self.input)(&mut r.input_rng.clone(), vault);
            tasks.push(self.start(world, vault, r.id.clone(), input));
            return;
        };
        // A lease a dead process left blocks the run until it expires: let time pass (always
        // in the calm rounds, sometimes before).
        if let Some(expires) = record.lease_expires_ms
            && expires > world.clock.now_ms()
            && (calm || world.chance(500))
        {
            world.clock.advance_to(expires);
        }
        match record.status {
            RunStatus::Running => {
                let copies = if world.inject(Fault::DuplicateStart, 200) {
                    2
                } else {
                    1
                };
                for copy in 0..copies {
                    let task = match world.below(3) {
                        0 => {
                            let input = (self.input)(&mut r.input_rng.clone(), vault);
                            self.start(world, vault, r.id.clone(), input)
                        }
                        1 => self.resume(world, vault, r.id.clone()),
                        _ => self.worker(world, vault, world.below(3), 1),
                    };
                    tasks.push(if copy == 0 {
                        task
                    } else {
                        self.later(world, task)
                    });
                }
            }
            RunStatus::Suspended => {
                if r.events >= MAX_EVENTS {
                    return;
                }
                let entries = world.disk.entries(&r.id);
                let view = RunView::of(&entries);
                let Some(waiting) = view.waiting().cloned() else {
                    return;
                };
                r.events += 1;
                if world.chance(150) {
                    if let Some(d) = waiting.deadline_ms {
                        world.clock.advance_to(d);
                    }
                    tasks.push(self.timeouts(world, vault));
                    return;
                }
                let mut rng = world.state().rng.fork();
                let payload = (self.payload)(&waiting.event, &mut rng);
                let id = format!("{}-ev{}", r.id, r.offered.len());
                r.offered.push((id.clone(), payload.clone()));
                tasks.push(self.deliver(
                    world,
                    vault,
                    r.id.clone(),
                    waiting.event.clone(),
                    id.clone(),
                    payload.clone(),
                ));
                if calm {
                    return;
                }
                // The adversarial deliveries, concurrent with the good one.
                if world.inject(Fault::Events, 400) {
                    // A message replayed under an id this run has seen (the case that
                    // matters once the run waits again) comes first when there is one.
                    let variant = if r.offered.len() > 1 && world.chance(500) {
                        2
                    } else {
                        world.below(7)
                    };
                    let (run, event, id, payload) = match variant {
                        // The same delivery again (a retrying client).
                        0 => (r.id.clone(), waiting.event.clone(), id, payload),
                        // The same id, another payload.
                        1 => (
                            r.id.clone(),
                            waiting.event.clone(),
                            id,
                            serde_json::json!({"ok": false, "tampered": true}),
                        ),
                        // An id used before (a replayed message), with its payload.
                        2 => {
                            let (old, p) =
                                r.offered[world.below(r.offered.len() as u64) as usize].clone();
                            (r.id.clone(), waiting.event.clone(), old, p)
                        }
                        // Another event name.
                        3 => (
                            r.id.clone(),
                            "no_such_event".to_string(),
                            format!("{id}-x"),
                            payload,
                        ),
                        // To the wrong run (another one of this seed, or one that does not exist).
                        4 => {
                            let other = ids[world.below(ids.len() as u64) as usize].clone();
                            let other = if world.chance(300) {
                                format!("{other}-ghost")
                            } else {
                                other
                            };
                            (other, waiting.event.clone(), format!("{id}-w"), payload)
                        }
                        // A payload of the wrong shape.
                        5 => (
                            r.id.clone(),
                            waiting.event.clone(),
                            format!("{id}-p"),
                            Json::from("\u{0}not an object\u{202e}"),
                        ),
                        // Reordered: another new event racing the first.
                        _ => (
                            r.id.clone(),
                            waiting.event.clone(),
                            format!("{id}-b"),
                            (self.payload)(&waiting.event, &mut rng),
                        ),
                    };
                    if world.chance(300) {
                        // Late: after the deadline.
                        if let Some(d) = waiting.deadline_ms {
                            world.clock.advance_to(d);
                        }
                    }
                    tasks.push(self.deliver(world, vault, run, event, id, payload));
                }
            }
            RunStatus::NeedsReconciliation => {
                let entries = world.disk.entries(&r.id);
                let ambiguous = RunView::of_program::<P>(&entries).to_reconcile();
                let Some(effect) = ambiguous.first().copied() else {
                    return;
                };
                // The operator asks the service (the ledger); a call still in flight is not
                // answered yet (docs/runtime.md: rule it out first).
                let known = world.state().effects.get(&(r.id.clone(), effect)).cloned();
                let resolution = match known {
                    Some(e) if e.in_flight > 0 => return,
                    Some(e) if e.applied > 0 => Resolution::Done(e.answer.unwrap_or(Json::Null)),
                    _ => Resolution::NotDone,
                };
                tasks.push(self.reconcile(world, vault, r.id.clone(), effect, resolution));
            }
            _ => {
                if world.inject(Fault::DuplicateStart, 100) {
                    let input = (self.input)(&mut r.input_rng.clone(), vault);
                    tasks.push(self.start(world, vault, r.id.clone(), input));
                }
            }
        }
    }

    // ---- the operations, each one simulated process ----

    /// `task`, started after a random delay of up to three leases (simulated): a duplicate
    /// that comes once the first one's lease may have lapsed.
    fn later(&self, world: &Arc<World>, task: TaskFuture) -> TaskFuture {
        let delay = Duration::from_millis(world.below(self.lease_ms * 3));
        let sleep = world.clock.sleep(delay);
        Box::pin(async move {
            sleep.await;
            task.await;
        })
    }

    fn start(
        &self,
        world: &Arc<World>,
        vault: &Arc<MemoryVault>,
        run_id: String,
        input: P::Input,
    ) -> TaskFuture {
        let rt = self.runtime(world, vault);
        let tools = self.tools(world);
        let world = world.clone();
        world.count(|c| c.operations += 1);
        let fut = rt.run::<Sabotaged<P>>(
            input,
            tools,
            nanovm_runtime::RunOptions::new().run_id(run_id.clone()),
        );
        Box::pin(async move {
            let r = fut.await;
            outcome(&world, &run_id, r);
        })
    }

    fn submit(
        &self,
        world: &Arc<World>,
        vault: &Arc<MemoryVault>,
        run_id: String,
        input: P::Input,
    ) -> TaskFuture {
        let rt = self.runtime(world, vault);
        let world = world.clone();
        world.count(|c| c.operations += 1);
        Box::pin(async move {
            let r = rt.submit::<Sabotaged<P>>(input, Some(&run_id)).await;
            if let Err(e) = r {
                error(&world, &run_id, &e);
            }
        })
    }

    fn resume(&self, world: &Arc<World>, vault: &Arc<MemoryVault>, run_id: String) -> TaskFuture {
        let rt = self.runtime(world, vault);
        let tools = self.tools(world);
        let world = world.clone();
        world.count(|c| c.operations += 1);
        let fut =
            rt.resume_journaled::<Sabotaged<P>>(&run_id, tools, nanovm_runtime::RunOptions::new());
        Box::pin(async move {
            let r = fut.await;
            outcome(&world, &run_id, r);
        })
    }

    fn worker(
        &self,
        world: &Arc<World>,
        vault: &Arc<MemoryVault>,
        n: u64,
        times: u64,
    ) -> TaskFuture {
        let rt = self.runtime(world, vault);
        let tools = self.tools(world);
        let world = world.clone();
        let worker = Worker::new(rt, format!("worker-{n}"), self.lease_ms);
        Box::pin(async move {
            for _ in 0..times {
                world.count(|c| c.operations += 1);
                match worker.run_once::<Sabotaged<P>>(tools.clone()).await {
                    Ok(Some(e)) => {
                        let id = e.run_id.clone();
                        outcome(&world, &id, Ok(e));
                    }
                    Ok(None) => break,
                    Err(e) => error(&world, "", &e),
                }
            }
        })
    }

    fn deliver(
        &self,
        world: &Arc<World>,
        vault: &Arc<MemoryVault>,
        run_id: String,
        event: String,
        event_id: String,
        payload: Json,
    ) -> TaskFuture {
        let rt = self.runtime(world, vault);
        let tools = self.tools(world);
        let world = world.clone();
        world.count(|c| {
            c.operations += 1;
            c.deliveries += 1;
        });
        Box::pin(async move {
            match rt
                .deliver::<Sabotaged<P>>(&run_id, &event, &event_id, payload, tools)
                .await
            {
                Ok(d) => outcome(&world, &run_id, Ok(d.into_execution())),
                Err(DeliverError::Run(e)) => error(&world, &run_id, &e),
                Err(_) => {}
            }
        })
    }

    fn timeouts(&self, world: &Arc<World>, vault: &Arc<MemoryVault>) -> TaskFuture {
        let rt = self.runtime(world, vault);
        let tools = self.tools(world);
        let world = world.clone();
        world.count(|c| c.operations += 1);
        Box::pin(async move {
            match rt.fire_timeouts::<Sabotaged<P>>(tools).await {
                Ok(done) => {
                    for e in done {
                        let id = e.run_id.clone();
                        outcome(&world, &id, Ok(e));
                    }
                }
                Err(e) => error(&world, "", &e),
            }
        })
    }

    fn reconcile(
        &self,
        world: &Arc<World>,
        vault: &Arc<MemoryVault>,
        run_id: String,
        effect: nanovm_runtime::Digest,
        resolution: Resolution,
    ) -> TaskFuture {
        let rt = self.runtime(world, vault);
        let tools = self.tools(world);
        let world = world.clone();
        world.count(|c| c.operations += 1);
        Box::pin(async move {
            match rt
                .reconcile::<Sabotaged<P>>(&run_id, effect, resolution, tools)
                .await
            {
                Ok(e) => outcome(&world, &run_id, Ok(e)),
                Err(ReconcileError::Run(e)) => error(&world, &run_id, &e),
                Err(_) => {}
            }
        })
    }

    // ---- the invariants, checked on what is stored at the end ----

    fn check(&self, world: &Arc<World>, runs: &[RunSpec]) -> Vec<(String, String)> {
        let info = P::info();
        let mut roots = Vec::new();
        let storm = world.faults.contains(Fault::ReplayStorm);
        for r in runs {
            let entries = world.disk.entries(&r.id);
            if entries.is_empty() {
                roots.push((r.id.clone(), "none".into()));
                continue;
            }
            if world.is_corrupted(&r.id) {
                roots.push((r.id.clone(), "damaged".into()));
                // It must stay refused: a load reports it corrupt.
                if now(world.disk.load(&r.id)).is_ok() {
                    world.violation(ViolationKind::CorruptLoaded, &r.id, "the damaged run loads");
                }
                *world
                    .state()
                    .counters
                    .statuses
                    .entry("damaged".into())
                    .or_default() += 1;
                continue;
            }
            world.count(|c| c.entries += entries.len() as u64);
            let trace = match Trace::from_entries(entries.clone()) {
                Ok(t) => t,
                Err(e) => {
                    world.violation(ViolationKind::TraceInvalid, &r.id, e.to_string());
                    continue;
                }
            };
            roots.push((r.id.clone(), trace.root().to_hex()));
            // Replays, many of them under a replay storm: each one regenerates the same root.
            let times = 1 + if storm {
                world.below(self.replays + 1)
            } else {
                0
            };
            if storm && times > 1 {
                world.count_fault(Fault::ReplayStorm);
            }
            let mut first = None;
            for _ in 0..times {
                world.count(|c| c.replays += 1);
                match replay::<P>(&trace) {
                    Ok(rep) if rep.root == trace.root() && rep.entries == trace.len() => {
                        first.get_or_insert(rep);
                    }
                    Ok(rep) => {
                        if std::env::var_os("NANOVM_SIM_DEBUG").is_some() {
                            eprintln!("{}: replay stopped: {:?}", r.id, rep.stopped);
                            for e in trace.entries() {
                                eprintln!("   {:?}", e.event);
                            }
                        }
                        world.violation(
                            ViolationKind::ReplayMismatch,
                            &r.id,
                            format!(
                                "replayed to {} ({} entries), stored {} ({}): {}",
                                rep.root.to_hex(),
                                rep.entries,
                                trace.root().to_hex(),
                                trace.len(),
                                rep.stopped.unwrap_or_default()
                            ),
                        );
                    }
                    Err(e) => {
                        if std::env::var_os("NANOVM_SIM_DEBUG").is_some() {
                            for e in trace.entries() {
                                eprintln!("   {:?}", e.event);
                            }
                        }
                        world.violation(ViolationKind::ReplayMismatch, &r.id, e.to_string());
                    }
                }
            }
            let Some(rep) = first else { continue };
            world.count(|c| c.steps += rep.path.len() as u64);
            // Steps: only the compiled program's.
            for e in trace.entries() {
                if let Some(step) = e.event.step()
                    && info.step_id(step).is_none()
                {
                    world.violation(
                        ViolationKind::StepOutsideGraph,
                        &r.id,
                        format!("step `{step}` at entry {}", e.seq),
                    );
                }
            }
            // Budgets: steps (the one that trips is entered and recorded) and tool calls.
            let entered = rep
                .path
                .iter()
                .filter(|s| {
                    info.step_id(s)
                        .is_some_and(|id| info.step(id).kind != StepKind::End)
                })
                .count() as u64;
            if let Some(max) = info.budget.max_steps
                && entered > max + 1
            {
                world.violation(
                    ViolationKind::BudgetOverrun,
                    &r.id,
                    format!("{entered} steps entered, max_steps {max}"),
                );
            }
            if let Some(max) = info.budget.max_tool_calls
                && rep.usage.tool_calls > max
            {
                world.violation(
                    ViolationKind::BudgetOverrun,
                    &r.id,
                    format!("{} tool calls, max_tool_calls {max}", rep.usage.tool_calls),
                );
            }
            // Events: no event id recorded twice.
            let mut seen = std::collections::BTreeSet::new();
            for e in trace.entries() {
                if let Event::Delivered { event_id, .. } = &e.event
                    && !seen.insert(event_id.clone())
                {
                    world.violation(
                        ViolationKind::EventAppliedTwice,
                        &r.id,
                        format!("event id `{event_id}` recorded twice"),
                    );
                }
            }
            if std::env::var_os("NANOVM_SIM_DEBUG").is_some()
                && rep.status == RunStatus::NeedsReconciliation
            {
                let view = RunView::of_program::<P>(trace.entries());
                eprintln!(
                    "{} {} open {:?} to_reconcile {:?}",
                    world.seed,
                    r.id,
                    view.open_effects(),
                    view.to_reconcile()
                );
                for e in trace.entries() {
                    eprintln!("   {}", e.event.describe());
                }
            }
            self.check_status(world, &r.id, trace.entries(), rep.status);
            *world
                .state()
                .counters
                .statuses
                .entry(rep.status.as_str().to_string())
                .or_default() += 1;
        }
        // Every execution answered `Ok` is a prefix of what is stored: nothing acknowledged
        // was lost.
        let acks = std::mem::take(&mut world.state().acks);
        for (run_id, trace) in acks {
            if world.is_corrupted(&run_id) {
                continue;
            }
            let stored = world.disk.entries(&run_id);
            let prefix = trace.len() <= stored.len()
                && trace.iter().zip(&stored).all(|(a, b)| a.hash == b.hash);
            if !prefix {
                world.violation(
                    ViolationKind::LostAcknowledged,
                    &run_id,
                    format!(
                        "an execution answered with {} entries that are not what is stored ({})",
                        trace.len(),
                        stored.len()
                    ),
                );
            }
        }
        roots
    }

    /// The status is legal for where the run stopped, and the store's record agrees with the
    /// events (read here from the last events, not through the runtime).
    fn check_status(&self, world: &World, run_id: &str, entries: &[Entry], replayed: RunStatus) {
        let info = P::info();
        let kind_of = |step: &str| info.step_id(step).map(|id| info.step(id).kind);
        let record = now(world.disk.run(run_id)).ok().flatten();
        let Some(last) = entries.last() else { return };
        let expected = match &last.event {
            Event::RunEnded { status, step, .. } => {
                let ok = match status {
                    RunStatus::Success => step.as_deref().and_then(kind_of) == Some(StepKind::End),
                    RunStatus::BudgetExceeded | RunStatus::Stalled => entries
                        .len()
                        .checked_sub(2)
                        .is_some_and(|i| matches!(entries[i].event, Event::BudgetExceeded { .. })),
                    RunStatus::NeedsReconciliation => matches!(
                        step.as_deref().and_then(kind_of),
                        Some(StepKind::Call | StepKind::Parallel)
                    ),
                    RunStatus::Running | RunStatus::Suspended => false,
                    _ => true,
                };
                if !ok {
                    world.violation(
                        ViolationKind::IllegalStatus,
                        run_id,
                        format!("ended {status} at {step:?}"),
                    );
                }
                *status
            }
            Event::Suspended { step, .. } => {
                if kind_of(step) != Some(StepKind::Await) {
                    world.violation(
                        ViolationKind::IllegalStatus,
                        run_id,
                        format!("suspended at `{step}`, not an await"),
                    );
                }
                RunStatus::Suspended
            }
            _ => RunStatus::Running,
        };
        if matches!(
            expected,
            RunStatus::Running | RunStatus::NeedsReconciliation
        ) {
            world.violation(
                ViolationKind::Stuck,
                run_id,
                format!(
                    "still running after the calm rounds ({} entries)",
                    entries.len()
                ),
            );
        }
        if replayed != expected {
            world.violation(
                ViolationKind::IllegalStatus,
                run_id,
                format!("replayed {replayed}, last event says {expected}"),
            );
        }
        if let Some(record) = record
            && record.status != expected
        {
            world.violation(
                ViolationKind::IllegalStatus,
                run_id,
                format!("the store says {}, the events {expected}", record.status),
            );
        }
    }
}

/// Records an operation's answer.
fn outcome(world: &World, run_id: &str, result: Result<Execution, RunError>) {
    match result {
        Ok(e) => {
            world
                .state()
                .acks
                .push((e.run_id.clone(), e.trace.entries().to_vec()));
        }
        Err(e) => error(world, run_id, &e),
    }
}

/// An operation's error: most are the protocol working (leased, fenced, conflicts, injected
/// I/O failures); a divergence or an internal error on an undamaged run is a finding.
fn error(world: &World, run_id: &str, e: &RunError) {
    let damaged = run_id.is_empty() || world.is_corrupted(run_id);
    let finding = match e {
        RunError::Divergence(_) | RunError::Internal(_) => true,
        RunError::Corrupt(_)
        | RunError::Journal(JournalError::Corrupt { .. } | JournalError::Invalid { .. }) => {
            !damaged
        }
        _ => false,
    };
    if finding {
        world.violation(ViolationKind::RuntimeError, run_id, e.to_string());
    }
}
