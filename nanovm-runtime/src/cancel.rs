//! Cooperative cancellation of a run.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::trace::Actor;

/// Cancels a run from outside.
///
/// Pass a clone in [`crate::RunOptions`]; calling [`CancelToken::cancel`] makes the run end with
/// status `cancelled`: the executor checks the token before every step and every retry, and
/// races it against in-flight model and tool calls (which are dropped). Cancelling is one-way
/// and idempotent; clones share the same flag.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    notify: Notify,
    /// Who cancelled and why ([`CancelToken::cancel_by`]); the first one counts.
    by: Mutex<Option<Actor>>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Requests cancellation and wakes every waiter.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        self.inner.notify.notify_waiters();
    }

    /// Requests cancellation on behalf of `by` (an operator's identity and reason, as the
    /// caller gives them): the run's closing `run_ended: cancelled` names them (see
    /// `docs/runtime.md`, "Cancellation"). Only the first actor is kept.
    pub fn cancel_by(&self, by: Actor) {
        self.inner
            .by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(by);
        self.cancel();
    }

    /// Who cancelled, if [`CancelToken::cancel_by`] said.
    pub fn actor(&self) -> Option<Actor> {
        self.inner
            .by
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True once [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Completes once the token is cancelled (at once if it already is).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Register before checking the flag, so a `cancel` between the check and the
            // await cannot be missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    #[test]
    fn cancelled_future_completes_after_cancel() {
        let token = CancelToken::new();
        let clone = token.clone();
        let mut fut = Box::pin(clone.cancelled());
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Pending);
        token.cancel();
        assert!(clone.is_cancelled());
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(()));
        // Already cancelled: completes on the first poll.
        assert_eq!(
            Box::pin(token.cancelled()).as_mut().poll(&mut cx),
            Poll::Ready(())
        );
    }
}
