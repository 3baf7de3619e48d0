//! The seeded scheduler: a single-threaded executor that polls the simulated processes'
//! futures in an order drawn from the seed, drops ("kills") them at await points, stalls them,
//! and moves simulated time forward only when nothing else can happen.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use nanovm_runtime::Clock;

use crate::faults::Fault;
use crate::world::World;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The task being polled (`usize::MAX`: none).
pub(crate) fn current_task() -> usize {
    CURRENT.with(Cell::get)
}

/// One simulated process's work: a runtime operation and what it records.
pub(crate) type TaskFuture = Pin<Box<dyn Future<Output = ()>>>;

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Task {
    id: usize,
    fut: TaskFuture,
    flag: Arc<Flag>,
    waker: Waker,
    stalled_until: Option<u64>,
}

/// A future that is pending once (and wakes itself): an await point.
pub(crate) struct YieldOnce(bool);

impl YieldOnce {
    pub(crate) fn new() -> Self {
        YieldOnce(false)
    }
}

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// How long (simulated) a batch may go on without any task finishing before the processes
/// still waiting are considered hung and killed.
const HUNG_AFTER_MS: u64 = 120_000;

/// Runs `futures` to completion (or death) under the seed's schedule.
pub(crate) fn run(world: &World, futures: Vec<TaskFuture>) {
    let mut tasks: Vec<Task> = futures
        .into_iter()
        .map(|fut| {
            let flag = Arc::new(Flag(AtomicBool::new(true)));
            Task {
                id: world.next_task_id(),
                fut,
                waker: Waker::from(flag.clone()),
                flag,
                stalled_until: None,
            }
        })
        .collect();
    let mut last_progress = world.clock.now_ms();
    while !tasks.is_empty() {
        let now = world.clock.now_ms();
        let ready: Vec<usize> = tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.flag.0.load(Ordering::SeqCst) && t.stalled_until.is_none_or(|s| s <= now)
            })
            .map(|(i, _)| i)
            .collect();
        if ready.is_empty() {
            let stall_end = tasks
                .iter()
                .filter_map(|t| t.stalled_until)
                .filter(|s| *s > now)
                .min();
            let next = match (world.clock.next_deadline(), stall_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match next {
                Some(t) if t.saturating_sub(last_progress) <= HUNG_AFTER_MS => {
                    world.clock.advance_to(t);
                    continue;
                }
                _ => {
                    // Everything left waits for something that will not come: those
                    // processes are killed.
                    for t in tasks.drain(..) {
                        world.count_fault_hung();
                        drop(t);
                    }
                    return;
                }
            }
        }
        let pick = ready[world.below(ready.len() as u64) as usize];
        let task = &mut tasks[pick];
        task.flag.0.store(false, Ordering::SeqCst);
        task.stalled_until = None;
        CURRENT.with(|c| c.set(task.id));
        let mut cx = Context::from_waker(&task.waker);
        let polled = task.fut.as_mut().poll(&mut cx);
        CURRENT.with(|c| c.set(usize::MAX));
        match polled {
            Poll::Ready(()) => {
                tasks.swap_remove(pick);
                last_progress = world.clock.now_ms();
            }
            Poll::Pending => {
                let id = task.id;
                if world.take_crash(id) {
                    drop(tasks.swap_remove(pick));
                    continue;
                }
                if world.inject(Fault::Crash, 15) {
                    // Killed at this await point.
                    drop(tasks.swap_remove(pick));
                    continue;
                }
                if world.inject(Fault::Workers, 30) {
                    // Frozen past its lease (a GC pause, a stopped VM).
                    let lease = world.lease_ms;
                    let task = &mut tasks[pick];
                    task.stalled_until = Some(now + lease + world.below(lease * 2));
                    task.flag.0.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}
