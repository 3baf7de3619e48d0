//! The simulation itself: every fault class is injected and the runtime breaks no invariant;
//! a seed replays exactly; a user's own workflow and tools can be sabotaged the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use nanovm_runtime::vault::MemoryVault;
use nanovm_runtime::{Json, Secret, ToolContext, ToolError};
use nanovm_sim::builtin::{self, customer_refund};
use nanovm_sim::{Campaign, Fault, Faults, Report, Rng};

#[test]
fn every_fault_class_is_injected_into_every_program_and_no_invariant_breaks() {
    let faults = Faults::all();
    let mut total = Report::new(Vec::new(), faults);
    let reports = [
        builtin::customer_refund().run(0..100, faults),
        builtin::order_pipeline().run(0..100, faults),
        builtin::payment_recovery().run(0..100, faults),
        builtin::review_loop().run(0..100, faults),
        builtin::fan().run(0..100, faults),
    ];
    for r in &reports {
        assert_eq!(
            r.total_violations(),
            0,
            "{}: {:#?}",
            r.programs[0],
            r.violations
        );
        total.absorb(&r.counters, Vec::new());
    }
    for fault in Fault::ALL {
        assert!(
            total.counters.faults.get(&fault).copied().unwrap_or(0) > 0,
            "no `{fault}` fault was injected in 500 seeds:\n{total}"
        );
    }
    assert!(total.counters.replays > total.counters.runs, "{total}");
}

#[test]
fn the_same_seed_gives_the_same_roots_and_counts() {
    let campaign = builtin::review_loop();
    for seed in 0..30 {
        let a = campaign.run_seed(seed, Faults::all());
        let b = campaign.run_seed(seed, Faults::all());
        assert_eq!(a.roots, b.roots, "seed {seed}");
        assert_eq!(a.counters, b.counters, "seed {seed}");
    }
    let fan = builtin::fan();
    for seed in 0..30 {
        assert_eq!(
            fan.run_seed(seed, Faults::all()).roots,
            fan.run_seed(seed, Faults::all()).roots,
            "seed {seed}"
        );
    }
}

#[test]
fn without_faults_every_run_comes_to_rest() {
    let report = builtin::customer_refund().run(0..50, Faults::none());
    assert_eq!(report.total_violations(), 0, "{:#?}", report.violations);
    assert_eq!(report.counters.injected(), 0);
    assert!(
        report
            .counters
            .statuses
            .get("success")
            .copied()
            .unwrap_or(0)
            > 0
    );
}

/// A user's bank: it remembers every refund by its idempotency key and pays each key once.
#[derive(Default)]
struct Bank {
    paid: Mutex<BTreeMap<String, (u32, Json)>>,
}

impl customer_refund::Tools for Bank {
    async fn issue_refund(
        &self,
        ctx: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> Result<Json, ToolError> {
        let mut paid = self.paid.lock().unwrap();
        let entry = paid.entry(ctx.idempotency_key.to_hex()).or_insert_with(|| {
            (
                0,
                serde_json::json!({"order": order_id, "paid": amount_cents}),
            )
        });
        entry.0 += 1;
        Ok(entry.1.clone())
    }

    async fn send_rejection(
        &self,
        _ctx: &ToolContext,
        email: Secret<String>,
    ) -> Result<Json, ToolError> {
        if !email.expose().contains('@') {
            return Err(ToolError::permanent("not an address"));
        }
        Ok(serde_json::json!({"sent": true}))
    }
}

#[test]
fn a_user_sabotages_their_own_workflow_with_their_own_tools() {
    let bank = Arc::new(Bank::default());
    let tools = bank.clone();
    let campaign = Campaign::<customer_refund::Program>::new(
        "my_refunds",
        |rng: &mut Rng, vault: &MemoryVault| customer_refund::Input {
            request: "refund".into(),
            order_id: format!("o-{}", rng.below(100)),
            amount_cents: 1000 + rng.below(5000) as i64,
            email: vault.secret(&"me@example.com".to_string()).unwrap(),
        },
        move || tools.clone() as Arc<dyn customer_refund::ToolsDyn>,
    )
    .payloads(|_event, rng| serde_json::json!({"approved": rng.chance(500)}));
    let report = campaign.run(0..200, Faults::all());
    assert_eq!(report.total_violations(), 0, "{:#?}", report.violations);
    assert!(report.counters.tool_calls > 0, "{report}");
    // The bank was called for real, and retried only with keys it had seen (it paid each once).
    let paid = bank.paid.lock().unwrap();
    assert!(!paid.is_empty());
    assert!(
        paid.values().any(|(calls, _)| *calls > 1),
        "no refund was retried: {report}"
    );
}
