//! Delivering events to generated programs: the await's declared type decides which payloads
//! are accepted (a refused payload changes nothing), and timeouts fire from the injected clock.

use std::sync::Arc;
use std::time::Duration;

use nanovm::Json;
use nanovm::store::MemoryStore;
use nanovm::testing::ManualClock;
use nanovm::trace::{Event, RunStatus};
use nanovm::{DeliverError, Delivery, RunOptions, Runtime};
use nanovm::{ToolContext, ToolError};
use serde_json::json;

nanovm::nano_program! {
    /// A payout waits for a typed approval.
    program payout {
        input { id: string }
        effect tool pay(id: string) -> json idempotent
        start wait
        await wait = approval into approved: bool timeout 1h -> expired -> check
        guard check { when approved == true -> send otherwise -> declined }
        call send = pay(id: id) -> paid
        end paid: success
        end declined: success
        end expired: failure "nobody approved"
    }
}

#[derive(Default)]
struct Bank {
    paid: std::sync::atomic::AtomicUsize,
}

impl payout::Tools for Bank {
    async fn pay(&self, _: &ToolContext, id: String) -> Result<Json, ToolError> {
        self.paid.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(json!({ "paid": id }))
    }
}

const START: u64 = 1_700_000_000_000;

fn setup() -> (Runtime, MemoryStore, ManualClock, Arc<Bank>) {
    let store = MemoryStore::new();
    let clock = ManualClock::new(START);
    let rt = Runtime::builder()
        .store(store.clone())
        .clock(clock.clone())
        .build();
    (rt, store, clock, Arc::new(Bank::default()))
}

async fn suspended(rt: &Runtime, bank: &Arc<Bank>, id: &str) {
    let e = rt
        .run::<payout::Program>(
            payout::Input { id: "p-1".into() },
            bank.clone(),
            RunOptions::new().run_id(id),
        )
        .await
        .unwrap();
    assert_eq!(e.status, RunStatus::Suspended);
}

#[tokio::test]
async fn a_payload_of_the_wrong_type_is_refused_and_changes_nothing() {
    let (rt, store, _, bank) = setup();
    suspended(&rt, &bank, "r").await;
    let before = store.entries("r");
    for bad in [
        json!("yes"),
        json!(1),
        json!({"approved": true}),
        json!(null),
    ] {
        let err = rt
            .deliver::<payout::Program>("r", "approval", "ev-1", bad.clone(), bank.clone())
            .await
            .expect_err("refused");
        assert!(
            matches!(&err, DeliverError::Payload(m) if m.contains("approval")),
            "{bad}: {err}"
        );
        assert_eq!(store.entries("r"), before, "{bad}: nothing recorded");
    }
    // The same event id with a good payload is not a duplicate: the refusals recorded nothing.
    let d = rt
        .deliver::<payout::Program>("r", "approval", "ev-1", json!(true), bank.clone())
        .await
        .expect("delivered");
    let Delivery::Resumed(e) = d else {
        panic!("{d:?}")
    };
    assert_eq!(e.status, RunStatus::Success);
    assert_eq!(e.path, ["wait", "check", "send", "paid"]);
    assert_eq!(e.outputs["approved"], json!(true));
    assert_eq!(bank.paid.load(std::sync::atomic::Ordering::SeqCst), 1);
    let report = nanovm::replay::<payout::Program>(&e.trace).unwrap();
    assert_eq!(report.root, e.root());
}

#[tokio::test]
async fn a_declined_payload_takes_its_branch_and_a_due_timeout_fires_once() {
    let (rt, store, clock, bank) = setup();
    suspended(&rt, &bank, "no").await;
    let d = rt
        .deliver::<payout::Program>("no", "approval", "ev-9", json!(false), bank.clone())
        .await
        .unwrap();
    assert_eq!(d.execution().end_step.as_deref(), Some("declined"));

    suspended(&rt, &bank, "late").await;
    clock.advance(Duration::from_secs(3599));
    assert!(
        rt.fire_timeouts::<payout::Program>(bank.clone())
            .await
            .unwrap()
            .is_empty()
    );
    clock.advance(Duration::from_secs(1));
    let fired = rt
        .fire_timeouts::<payout::Program>(bank.clone())
        .await
        .unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].status, RunStatus::Failed);
    assert_eq!(fired[0].message.as_deref(), Some("nobody approved"));
    assert!(
        store
            .entries("late")
            .iter()
            .any(|e| matches!(&e.event, Event::TimedOut { next, .. } if next == "expired"))
    );
    assert!(
        rt.fire_timeouts::<payout::Program>(bank.clone())
            .await
            .unwrap()
            .is_empty(),
        "a timeout fires once"
    );
    assert_eq!(bank.paid.load(std::sync::atomic::Ordering::SeqCst), 0);
}
