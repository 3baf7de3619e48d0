//! Budgets, usage counters and the retry backoff.
//!
//! The checks here are pure: the executor asks before each step, batch, model call and tool
//! invocation whether a limit would be crossed, and records the answer as a
//! `budget_exceeded` event naming the step. What counts, exactly, is documented in
//! `docs/runtime.md`; in short:
//!
//! | budget | checked | trips when |
//! | --- | --- | --- |
//! | `max_steps` | before every non-end step, and before each parallel batch | steps executed would exceed the limit (a parallel step counts 1, each branch run 1 more) |
//! | `max_tool_calls` | before every tool invocation (retries included) | invocations would exceed the limit |
//! | `max_tokens` | before a model call; after each reply | used ≥ limit before; used > limit after (the reply is recorded, its outcome not applied) |
//! | `max_stalled_steps` | after an invalid answer without `on invalid` | consecutive stalls exceed the limit (default [`DEFAULT_MAX_STALLED_STEPS`]) |
//! | `max_duration` | before every step and attempt; races in-flight calls | elapsed ≥ limit on the run's clock |

use std::time::Duration;

use crate::program::Budget;
use crate::trace::BudgetKind;

/// The stall limit applied when a program declares no `max_stalled_steps`: an `llm` step
/// without `on invalid` may stall this many times in a row; one more ends the run `stalled`.
pub(crate) const DEFAULT_MAX_STALLED_STEPS: u64 = 3;

/// Exponential backoff between retry attempts: the wait before attempt `k + 1` (after `k`
/// failed attempts) is `min(base * 2^(k-1), cap)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub base: Duration,
    /// No wait is longer than this.
    pub cap: Duration,
}

impl Default for Backoff {
    /// 100 ms, doubling, capped at 10 s.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// Waits start at `base` and double up to `cap`.
    pub const fn exponential(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap }
    }

    /// No waiting between attempts.
    pub const fn none() -> Self {
        Backoff {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        }
    }

    /// The wait after `failures` failed attempts (`failures` ≥ 1; 0 waits nothing).
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// What a run consumed. Recomputed identically by replays (it is derived from recorded events).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Steps executed (see the module docs for what counts).
    pub steps: u64,
    /// Model calls, retries included.
    pub model_calls: u64,
    /// Prompt tokens reported by the model.
    pub prompt_tokens: u64,
    /// Completion tokens reported by the model.
    pub completion_tokens: u64,
    /// Tool invocations, retries included.
    pub tool_calls: u64,
    /// Attempts beyond the first (model, tool and branch retries).
    pub retries: u64,
    /// Invalid model answers that re-ran their step.
    pub stalls: u64,
    /// Model replies served from a response cache.
    pub cache_hits: u64,
}

impl Usage {
    /// Prompt and completion tokens together.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// A budget that would be crossed: what the `budget_exceeded` event records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Trip {
    pub budget: BudgetKind,
    pub limit: u64,
    pub used: u64,
}

/// The budgets of one run, with the documented defaults applied, and its usage.
#[derive(Debug)]
pub(crate) struct Meter {
    pub usage: Usage,
    budget: Budget,
    max_stalled: u64,
    consecutive_stalls: u64,
}

impl Meter {
    pub(crate) fn new(budget: Budget) -> Self {
        Meter {
            usage: Usage::default(),
            max_stalled: budget
                .max_stalled_steps
                .unwrap_or(DEFAULT_MAX_STALLED_STEPS),
            budget,
            consecutive_stalls: 0,
        }
    }

    /// `max_duration` in milliseconds, if the program sets one.
    pub(crate) fn duration_limit_ms(&self) -> Option<u64> {
        self.budget.max_duration.map(crate::clock::millis)
    }

    /// Before running `n` more steps.
    pub(crate) fn check_steps(&self, n: u64) -> Option<Trip> {
        exceeds(
            BudgetKind::MaxSteps,
            self.budget.max_steps,
            self.usage.steps,
            n,
        )
    }

    /// Before `n` more tool invocations.
    pub(crate) fn check_tool_calls(&self, n: u64) -> Option<Trip> {
        exceeds(
            BudgetKind::MaxToolCalls,
            self.budget.max_tool_calls,
            self.usage.tool_calls,
            n,
        )
    }

    /// Before a model call: the tokens are already used up.
    pub(crate) fn check_tokens_before(&self) -> Option<Trip> {
        let limit = self.budget.max_tokens?;
        let used = self.usage.tokens();
        (used >= limit).then_some(Trip {
            budget: BudgetKind::MaxTokens,
            limit,
            used,
        })
    }

    /// After a reply was accounted: more tokens were used than allowed.
    pub(crate) fn check_tokens_after(&self) -> Option<Trip> {
        let limit = self.budget.max_tokens?;
        let used = self.usage.tokens();
        (used > limit).then_some(Trip {
            budget: BudgetKind::MaxTokens,
            limit,
            used,
        })
    }

    /// With `elapsed_ms` since the run started: the time is up.
    pub(crate) fn check_duration(&self, elapsed_ms: u64) -> Option<Trip> {
        let limit = self.duration_limit_ms()?;
        (elapsed_ms >= limit).then_some(Trip {
            budget: BudgetKind::MaxDuration,
            limit,
            used: elapsed_ms,
        })
    }

    /// Counts a stalled step; trips when consecutive stalls exceed the limit.
    pub(crate) fn stall(&mut self) -> Option<Trip> {
        self.usage.stalls += 1;
        self.consecutive_stalls += 1;
        (self.consecutive_stalls > self.max_stalled).then_some(Trip {
            budget: BudgetKind::MaxStalledSteps,
            limit: self.max_stalled,
            used: self.consecutive_stalls,
        })
    }

    /// A replan: each budget `slice` sets allows that much more from here (the duration:
    /// `duration_ms` since the run started, as the replan recorded it), and the stall streak
    /// starts over.
    pub(crate) fn replan(&mut self, slice: &Budget, duration_ms: Option<u64>) {
        let more = |used: u64, n: Option<u64>, limit: &mut Option<u64>| {
            if let Some(n) = n {
                *limit = Some(used.saturating_add(n));
            }
        };
        more(
            self.usage.steps,
            slice.max_steps,
            &mut self.budget.max_steps,
        );
        more(
            self.usage.tokens(),
            slice.max_tokens,
            &mut self.budget.max_tokens,
        );
        more(
            self.usage.tool_calls,
            slice.max_tool_calls,
            &mut self.budget.max_tool_calls,
        );
        if let Some(ms) = duration_ms {
            self.budget.max_duration = Some(std::time::Duration::from_millis(ms));
        }
        if let Some(n) = slice.max_stalled_steps {
            self.max_stalled = n;
        }
        self.consecutive_stalls = 0;
    }

    /// A step completed normally: the stall streak is over.
    pub(crate) fn completed(&mut self) {
        self.consecutive_stalls = 0;
    }

    /// A redrive (`redriven`): each `(budget, by)` raises that budget's limit by `by` (a
    /// budget the program leaves unlimited stays so; `max_duration` in milliseconds), and the
    /// stall streak starts over.
    pub(crate) fn redrive(&mut self, extend: &[(BudgetKind, u64)]) {
        fn raise(limit: &mut Option<u64>, by: u64) {
            if let Some(l) = limit {
                *l = l.saturating_add(by);
            }
        }
        for &(kind, by) in extend {
            match kind {
                BudgetKind::MaxSteps => raise(&mut self.budget.max_steps, by),
                BudgetKind::MaxTokens => raise(&mut self.budget.max_tokens, by),
                BudgetKind::MaxToolCalls => raise(&mut self.budget.max_tool_calls, by),
                BudgetKind::MaxStalledSteps => {
                    self.max_stalled = self.max_stalled.saturating_add(by);
                }
                BudgetKind::MaxDuration => {
                    if let Some(d) = &mut self.budget.max_duration {
                        *d = d.saturating_add(std::time::Duration::from_millis(by));
                    }
                }
            }
        }
        self.consecutive_stalls = 0;
    }
}

fn exceeds(budget: BudgetKind, limit: Option<u64>, used: u64, more: u64) -> Option<Trip> {
    let limit = limit?;
    let would = used.saturating_add(more);
    (would > limit).then_some(Trip {
        budget,
        limit,
        used: would,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<u128> = (0..6).map(|k| b.delay(k).as_millis()).collect();
        assert_eq!(got, [0, 100, 200, 350, 350, 350]);
        assert_eq!(Backoff::default().delay(40), Duration::from_secs(10));
        assert_eq!(Backoff::none().delay(3), Duration::ZERO);
    }

    #[test]
    fn limits_trip_at_the_documented_points() {
        let mut m = Meter::new(Budget {
            max_steps: Some(2),
            max_tokens: Some(10),
            max_stalled_steps: None,
            max_duration: Some(Duration::from_secs(1)),
            max_tool_calls: Some(1),
        });
        assert_eq!(m.check_steps(1), None);
        m.usage.steps = 2;
        assert_eq!(m.check_steps(1).map(|t| t.used), Some(3));
        assert_eq!(m.check_tool_calls(1), None);
        assert!(m.check_tool_calls(2).is_some());
        m.usage.prompt_tokens = 10;
        assert_eq!(m.check_tokens_after(), None);
        assert!(m.check_tokens_before().is_some());
        assert_eq!(m.check_duration(999), None);
        assert!(m.check_duration(1000).is_some());
        for _ in 0..DEFAULT_MAX_STALLED_STEPS {
            assert_eq!(m.stall(), None);
        }
        assert_eq!(m.stall().map(|t| t.used), Some(4));
        m.completed();
        assert_eq!(m.stall(), None);
    }
}
