//! Simulated time: a clock that moves only when the scheduler (or a clock jump) moves it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use nanovm_runtime::{BoxFuture, Clock};

/// The simulation's clock: sleeps complete when the time is moved past their deadline, and the
/// scheduler moves it to the next deadline when nothing else can happen.
#[derive(Clone, Debug)]
pub struct SimClock {
    shared: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    now: u64,
    next_id: u64,
    sleepers: BTreeMap<(u64, u64), Option<Waker>>,
}

impl SimClock {
    /// A clock at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        SimClock {
            shared: Arc::new(Mutex::new(State {
                now: start_ms,
                next_id: 0,
                sleepers: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The earliest deadline of a pending sleep that is still in the future.
    pub fn next_deadline(&self) -> Option<u64> {
        let s = self.lock();
        let now = s.now;
        s.sleepers.keys().map(|(d, _)| *d).find(|d| *d > now)
    }

    /// Moves the time to `to_ms` (never back) and wakes the sleeps that are due.
    pub fn advance_to(&self, to_ms: u64) {
        let wakers: Vec<Waker> = {
            let mut s = self.lock();
            s.now = s.now.max(to_ms);
            let now = s.now;
            s.sleepers
                .iter_mut()
                .take_while(|((d, _), _)| *d <= now)
                .filter_map(|(_, w)| w.take())
                .collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: u64) {
        let now = self.now_ms();
        self.advance_to(now.saturating_add(ms));
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.lock().now
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let deadline = self.now_ms().saturating_add(ms);
        Box::pin(Sleep {
            clock: self.clone(),
            deadline,
            id: None,
        })
    }
}

struct Sleep {
    clock: SimClock,
    deadline: u64,
    id: Option<u64>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let mut s = self.clock.lock();
        if s.now >= deadline {
            if let Some(id) = self.id {
                s.sleepers.remove(&(deadline, id));
            }
            drop(s);
            self.id = None;
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = s.next_id;
                s.next_id += 1;
                id
            }
        };
        s.sleepers.insert((deadline, id), Some(cx.waker().clone()));
        drop(s);
        self.id = Some(id);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.clock.lock().sleepers.remove(&(self.deadline, id));
        }
    }
}
