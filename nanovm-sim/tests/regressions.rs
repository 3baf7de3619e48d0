//! Seeds on which the simulation found a real bug of the runtime: each must stay clean.
//!
//! * `order_pipeline` 6051 (and 15106, 22736): a parallel round interrupted with a call in
//!   flight wrote its answers and its end in two writes; a crash in between left a trace no
//!   resume or replay could continue. Fixed in `exec/parallel/round.rs` (one write);
//!   `nanovm-runtime/tests/parallel.rs` has the focused test.
//! * `payment_recovery` 21267 (and 22807): two ambiguous effects of one round answered in two
//!   executions (`NotDone`, then `Done` by an execution that crashed before the calls' results),
//!   so the next execution pauses again for the first one; it recorded the operator's answer of
//!   the second as a branch result before the pause, which no replay or resume expects. Fixed
//!   in `exec/parallel/round.rs` (a pause records nothing of the round).

use nanovm_sim::{Faults, builtin};

#[test]
fn an_interrupted_round_crashed_between_its_answers_and_its_end() {
    let campaign = builtin::order_pipeline();
    for seed in [6051, 15106, 22736] {
        let outcome = campaign.run_seed(seed, Faults::all());
        assert!(
            outcome.violations.is_empty(),
            "seed {seed}: {:#?}",
            outcome.violations
        );
    }
}

#[test]
fn a_round_paused_again_after_answers_in_two_executions() {
    let campaign = builtin::payment_recovery();
    for seed in [21267, 22807] {
        let outcome = campaign.run_seed(seed, Faults::all());
        assert!(
            outcome.violations.is_empty(),
            "seed {seed}: {:#?}",
            outcome.violations
        );
    }
}
