//! The simulation must find known bugs: each test switches one back on in the runtime
//! (`nanovm_runtime::mutants`, per thread) and requires the campaign to report it, with the
//! expected kind of violation, within a bounded number of seeds. If the simulation goes blind
//! to one of them (a check removed, a fault class no longer reaching the bug), its test fails.
//! The same seeds without the mutant report nothing (so the finding is the mutant's).

use nanovm_runtime::__private_v0_1::Program;
use nanovm_runtime::mutants::{self, Mutant};
use nanovm_sim::{Campaign, Fault, Faults, Report, ViolationKind, builtin};

/// Switches `mutant` on for this thread while alive.
struct On;

impl On {
    fn new(mutant: Mutant) -> Self {
        mutants::set(Some(mutant));
        On
    }
}

impl Drop for On {
    fn drop(&mut self) {
        mutants::set(None);
    }
}

/// Runs seeds from 0 until the first violation of `kind` (at most `max`); returns the seed.
fn first_finding<P: Program>(
    campaign: &Campaign<P>,
    faults: Faults,
    kind: ViolationKind,
    max: u64,
) -> Option<(u64, Report)> {
    let mut report = Report::new(vec![campaign.name().to_string()], faults);
    for seed in 0..max {
        campaign.run_one(seed, faults, false, &mut report);
        if report.count(kind) > 0 {
            return Some((seed, report));
        }
    }
    None
}

fn caught<P: Program>(
    mutant: Mutant,
    campaign: Campaign<P>,
    faults: Faults,
    kind: ViolationKind,
    max: u64,
) -> u64 {
    let found = {
        let _on = On::new(mutant);
        first_finding(&campaign, faults, kind, max)
    };
    let Some((seed, report)) = found else {
        panic!(
            "{mutant:?} was not reported as {kind} within {max} seeds of {}",
            campaign.name()
        );
    };
    eprintln!(
        "{mutant:?}: {kind} at seed {seed} of {}: {}",
        campaign.name(),
        report
            .violations
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    // The same seeds without the mutant are clean: the finding is the bug's.
    let clean = campaign.run(0..seed + 1, faults);
    assert_eq!(
        clean.total_violations(),
        0,
        "without {mutant:?}: {:?}",
        clean.violations
    );
    seed
}

#[test]
fn starting_a_run_without_a_lease_is_found() {
    caught(
        Mutant::StartWithoutLease,
        builtin::customer_refund(),
        Faults::none()
            .with(Fault::DuplicateStart)
            .with(Fault::Crash),
        ViolationKind::UnfencedWrite,
        200,
    );
}

#[test]
fn calling_an_effect_before_its_intent_is_durable_is_found() {
    caught(
        Mutant::CallBeforeIntentDurable,
        builtin::review_loop(),
        Faults::all(),
        ViolationKind::CallBeforeIntent,
        50,
    );
}

#[test]
fn accepting_a_reused_event_id_is_found() {
    caught(
        Mutant::AcceptReusedEventId,
        builtin::review_loop(),
        Faults::none().with(Fault::Events),
        ViolationKind::EventAppliedTwice,
        500,
    );
}

#[test]
fn appending_without_fencing_is_found() {
    caught(
        Mutant::AppendWithoutFence,
        builtin::review_loop(),
        Faults::none()
            .with(Fault::Workers)
            .with(Fault::DuplicateStart),
        ViolationKind::StaleFenceAccepted,
        4000,
    );
}

#[test]
fn calling_without_the_ownership_check_is_found() {
    caught(
        Mutant::CallWithoutOwnershipCheck,
        builtin::review_loop(),
        Faults::none()
            .with(Fault::Workers)
            .with(Fault::DuplicateStart),
        ViolationKind::InvalidResume,
        2000,
    );
}

/// The feature is on in every workspace build that includes this crate's tests (feature
/// unification), so the switches must be off unless a test turns them on: on a fresh thread,
/// none is, and one thread's switch does not reach another.
#[test]
fn every_mutant_is_off_unless_switched_on_on_this_thread() {
    assert_eq!(std::thread::spawn(mutants::active).join().unwrap(), None);
    let _on = On::new(Mutant::AppendWithoutFence);
    assert_eq!(mutants::active(), Some(Mutant::AppendWithoutFence));
    assert_eq!(std::thread::spawn(mutants::active).join().unwrap(), None);
}
