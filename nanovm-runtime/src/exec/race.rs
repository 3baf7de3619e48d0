//! Racing an in-flight call against cancellation and the duration budget.

use std::future::Future;
use std::task::Poll;

use crate::cancel::CancelToken;
use crate::program::BoxFuture;

/// Races `fut` against cancellation and the duration deadline.
///
/// The call is polled once first: a call that completes at once (a cached reply, an in-memory
/// tool) never creates the deadline timer. `deadline` is asked for the timer only when the call
/// has to wait.
pub(super) async fn race<F: Future>(
    fut: F,
    cancel: Option<&CancelToken>,
    deadline: impl FnOnce() -> Option<BoxFuture<'static, ()>>,
) -> Result<F::Output, Verdict> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(v) = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Ok(v);
    }
    let deadline = deadline();
    if cancel.is_none() && deadline.is_none() {
        return Ok(fut.await);
    }
    let cancelled = async {
        match cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let timeout = async {
        match deadline {
            Some(d) => d.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        v = fut => Ok(v),
        () = cancelled => Err(Verdict::Cancelled),
        () = timeout => Err(Verdict::OutOfTime(0)),
    }
}

/// Something outside the program stopped an in-flight call or a step from starting.
#[derive(Clone, Copy, Debug)]
pub(super) enum Verdict {
    Cancelled,
    /// The duration budget ran out, with this much time used (ms).
    OutOfTime(u64),
}
