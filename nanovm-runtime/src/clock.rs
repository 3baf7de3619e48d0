//! Time, injected.
//!
//! The executor never reads the system time or sleeps on its own: it asks a [`Clock`]. That is
//! what makes retries, backoff and the `max_duration` budget testable without timing anything:
//! a [`ManualClock`] only moves when a test says so (or, in auto-advance mode, jumps over every
//! sleep at once and remembers what was asked for).
//!
//! Time never enters a trace except where it decides control flow (a suspension deadline, a
//! duration budget trip); those values are recorded as data, so replays do not consult a clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::program::BoxFuture;

/// A source of time for the executor.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        (**self).sleep(duration)
    }
}

/// Saturating conversion of a duration to whole milliseconds.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The real clock: [`SystemTime`] for `now_ms`, [`tokio::time::sleep`] for sleeping (so sleeping
/// needs a tokio runtime with the time driver enabled).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that moves only when told to: for tests and examples.
///
/// Two modes:
/// - [`ManualClock::new`]: sleeps stay pending until [`ManualClock::advance`] moves the time
///   past their deadline. Use [`ManualClock::waiting`] to see how many sleeps are pending.
/// - [`ManualClock::auto_advance`]: every sleep completes as soon as it is awaited and moves
///   the time to its deadline, so a run with retries finishes at once while its clock reads as
///   if it had waited.
///
/// In both modes every requested sleep is remembered ([`ManualClock::sleeps`]), so a test can
/// assert the exact backoff schedule. Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    shared: Arc<Mutex<ManualState>>,
}

#[derive(Debug)]
struct ManualState {
    now: Duration,
    auto: bool,
    slept: Vec<Duration>,
    sleepers: Vec<Sleeper>,
    next_id: u64,
}

#[derive(Debug)]
struct Sleeper {
    id: u64,
    deadline: Duration,
    waker: Option<Waker>,
}

impl ManualClock {
    /// A clock standing still at `start_ms` (milliseconds since the Unix epoch).
    pub fn new(start_ms: u64) -> Self {
        Self::with_mode(start_ms, false)
    }

    /// A clock at `start_ms` whose sleeps complete as soon as they are awaited, moving the time
    /// to their deadline.
    pub fn auto_advance(start_ms: u64) -> Self {
        Self::with_mode(start_ms, true)
    }

    fn with_mode(start_ms: u64, auto: bool) -> Self {
        ManualClock {
            shared: Arc::new(Mutex::new(ManualState {
                now: Duration::from_millis(start_ms),
                auto,
                slept: Vec::new(),
                sleepers: Vec::new(),
                next_id: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ManualState> {
        lock(&self.shared)
    }

    /// Moves the time forward and wakes every sleep whose deadline has passed.
    pub fn advance(&self, by: Duration) {
        let wakers: Vec<Waker> = {
            let mut s = self.lock();
            s.now = s.now.saturating_add(by);
            let now = s.now;
            s.sleepers
                .iter_mut()
                .filter(|sl| sl.deadline <= now)
                .filter_map(|sl| sl.waker.take())
                .collect()
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Every sleep requested so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.lock().slept.clone()
    }

    /// How many sleeps are pending (created, not yet past their deadline, not dropped).
    pub fn waiting(&self) -> usize {
        let s = self.lock();
        s.sleepers.iter().filter(|sl| sl.deadline > s.now).count()
    }
}

fn lock(m: &Mutex<ManualState>) -> MutexGuard<'_, ManualState> {
    // A panic while holding this lock cannot leave the state half-updated in a way that
    // matters to a test clock, so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        millis(self.lock().now)
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let mut s = self.lock();
        s.slept.push(duration);
        let deadline = s.now.saturating_add(duration);
        if s.auto {
            // Completes when first polled, moving the time to its deadline; a sleep that loses
            // a race (never polled) does not move the time.
            let shared = self.shared.clone();
            return Box::pin(std::future::poll_fn(move |_| {
                let mut s = lock(&shared);
                s.now = s.now.max(deadline);
                Poll::Ready(())
            }));
        }
        let id = s.next_id;
        s.next_id += 1;
        s.sleepers.push(Sleeper {
            id,
            deadline,
            waker: None,
        });
        Box::pin(ManualSleep {
            shared: self.shared.clone(),
            id,
            deadline,
        })
    }
}

struct ManualSleep {
    shared: Arc<Mutex<ManualState>>,
    id: u64,
    deadline: Duration,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = lock(&self.shared);
        if s.now >= self.deadline {
            return Poll::Ready(());
        }
        if let Some(sl) = s.sleepers.iter_mut().find(|sl| sl.id == self.id) {
            sl.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        let mut s = lock(&self.shared);
        s.sleepers.retain(|sl| sl.id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_sleep_completes_only_when_advanced_past() {
        let clock = ManualClock::new(1_000);
        let mut sleep = clock.sleep(Duration::from_millis(50));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(clock.waiting(), 1);
        clock.advance(Duration::from_millis(49));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(1));
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        assert_eq!(clock.now_ms(), 1_050);
        drop(sleep);
        assert_eq!(clock.waiting(), 0);
    }

    #[test]
    fn auto_advance_jumps_and_records() {
        let clock = ManualClock::auto_advance(0);
        let mut cx = Context::from_waker(Waker::noop());
        for ms in [100, 200] {
            assert!(
                clock
                    .sleep(Duration::from_millis(ms))
                    .as_mut()
                    .poll(&mut cx)
                    .is_ready()
            );
        }
        assert_eq!(clock.now_ms(), 300);
        assert_eq!(
            clock.sleeps(),
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
    }
}
