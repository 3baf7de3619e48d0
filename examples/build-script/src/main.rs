//! The build-script way: `build.rs` compiles `examples/workflows/*.nvm`, and
//! `nanovm::include_compiled!` brings the generated modules in.
//!
//! ```sh
//! cargo run -p nanovm-example-build-script -- DE 40
//! cargo run -p nanovm-example-build-script -- BR 40    # held for fraud review (suspends)
//! ```
//!
//! Durable, across processes (SQLite): a held order suspends at its `await`; a later process
//! delivers the review and the run continues from the store.
//!
//! ```sh
//! cargo run -p nanovm-example-build-script -- BR 40 --db o.db --run-id o1   # suspended
//! cargo run -p nanovm-example-build-script -- --db o.db --run-id o1 --deliver cleared --event-id rev-1
//! cargo run -p nanovm-example-build-script -- --db o.db --run-id o1 --deliver cleared --event-id rev-1   # duplicate: nothing new
//! ```
//!
//! After a crash, the command that started the run continues it from the store (a start of a
//! run id the store holds is a duplicate start; one it does not hold starts), whenever the crash
//! came; for a run that ended or is suspended it answers the recorded state and executes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use nanovm::Delivery;
use nanovm::store::SqliteStore;
use nanovm::vault::{MemoryVault, Vault};
use nanovm::{Execution, RunError, RunOptions, Runtime};
use nanovm::{Json, Secret};
use nanovm::{ToolContext, ToolError};
use serde_json::json;

nanovm::include_compiled!("order_pipeline");

/// Mock warehouse services.
struct Warehouse {
    risk: i64,
}

impl order_pipeline::Tools for Warehouse {
    async fn validate_order(&self, _: &ToolContext, id: String) -> Result<Json, ToolError> {
        Ok(json!({ "ok": true, "order_id": id }))
    }
    async fn fraud_score(&self, _: &ToolContext, _: String, _: String) -> Result<Json, ToolError> {
        Ok(json!({ "risk": self.risk }))
    }
    async fn reserve_inventory(&self, _: &ToolContext, _: String) -> Result<Json, ToolError> {
        Ok(json!({ "reserved": true }))
    }
    async fn confirm_order(&self, _: &ToolContext, _: String) -> Result<Json, ToolError> {
        Ok(json!({ "confirmed": true }))
    }
    async fn send_email(
        &self,
        _: &ToolContext,
        _email: Secret<String>,
        template: String,
    ) -> Result<Json, ToolError> {
        Ok(json!({ "queued": template }))
    }
    async fn notify_warehouse(&self, _: &ToolContext, _: String) -> Result<Json, ToolError> {
        Ok(json!({ "notified": true }))
    }
    async fn refund_order(&self, _: &ToolContext, _: String) -> Result<Json, ToolError> {
        Ok(json!({ "refunded": true }))
    }
}

const USAGE: &str = "usage: nanovm-example-build-script [COUNTRY [RISK]] [--db PATH] [--run-id ID] \
     [--deliver cleared|rejected [--event-id ID]]\n\
     With --db and --run-id, the same start command starts the run or continues it after a crash.";

struct Args {
    country: String,
    risk: i64,
    db: Option<PathBuf>,
    run_id: Option<String>,
    deliver: Option<bool>,
    event_id: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        country: "DE".into(),
        risk: 40,
        db: None,
        run_id: None,
        deliver: None,
        event_id: None,
    };
    let mut positional = 0;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--db" => a.db = Some(PathBuf::from(value()?)),
            "--run-id" => a.run_id = Some(value()?),
            "--deliver" => {
                a.deliver = Some(match value()?.as_str() {
                    "cleared" => true,
                    "rejected" => false,
                    other => {
                        return Err(format!(
                            "--deliver takes cleared or rejected, not `{other}`"
                        ));
                    }
                })
            }
            "--event-id" => a.event_id = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            flag if flag.starts_with("--") => return Err(format!("unknown flag `{flag}`")),
            _ if positional == 0 => {
                a.country = arg;
                positional += 1;
            }
            _ if positional == 1 => {
                a.risk = arg
                    .parse()
                    .map_err(|_| format!("RISK must be a whole number, not `{arg}`"))?;
                positional += 1;
            }
            _ => return Err(format!("unexpected argument `{arg}`")),
        }
    }
    if a.deliver.is_some() && (a.db.is_none() || a.run_id.is_none()) {
        return Err("--deliver needs --db and --run-id".into());
    }
    Ok(a)
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = args().unwrap_or_else(|e| {
        eprintln!("error: {e}\n{USAGE}");
        std::process::exit(2);
    });
    let tools = Arc::new(Warehouse { risk: args.risk });
    let (runtime, vault): (Runtime, Arc<dyn Vault>) = match &args.db {
        Some(path) => {
            let store = SqliteStore::open(path).await.unwrap_or_else(|e| fail(e));
            let vault: Arc<dyn Vault> = Arc::new(store.vault());
            let runtime = Runtime::builder().vault(vault.clone()).store(store).build();
            (runtime, vault)
        }
        None => {
            let vault: Arc<dyn Vault> = Arc::new(MemoryVault::new());
            (Runtime::builder().vault(vault.clone()).build(), vault)
        }
    };

    let execution = if let Some(cleared) = args.deliver {
        let run_id = args.run_id.as_deref().unwrap_or_default();
        let event_id = args.event_id.as_deref().unwrap_or("review-1");
        let delivery = runtime
            .deliver::<order_pipeline::Program>(
                run_id,
                "fraud_review",
                event_id,
                json!({ "cleared": cleared }),
                tools,
            )
            .await
            .unwrap_or_else(|e| fail(e));
        match &delivery {
            Delivery::Resumed(_) => println!("delivered: fraud_review {event_id}"),
            Delivery::Duplicate(_) => {
                println!("duplicate: fraud_review {event_id} was delivered before; nothing new")
            }
            Delivery::TimedOut(_) => {
                println!("too late: the review timed out; the timeout edge ran")
            }
            _ => println!("delivery answered: fraud_review {event_id}"),
        }
        delivery.into_execution()
    } else {
        // Start or continue: a run id the store holds is a duplicate start (see the module
        // docs); only the secret is sealed again.
        let email = nanovm::vault::seal(&*vault, &"buyer@example.com".to_string())
            .await
            .unwrap_or_else(|e| fail(e));
        let input = order_pipeline::Input {
            order_id: "ord_77".into(),
            country: args.country,
            amount_cents: 12_900,
            email,
        };
        let mut options = RunOptions::new();
        if let Some(id) = &args.run_id {
            options = options.run_id(id.as_str());
        }
        // A process killed while continuing the run holds its lease until it expires: wait it
        // out (a few times), then the same start continues the run.
        let mut waits = 0;
        loop {
            let run = runtime.run::<order_pipeline::Program>(
                input.clone(),
                tools.clone(),
                options.clone(),
            );
            match run.await {
                Err(RunError::Leased { expires_ms, .. }) if waits < 3 => {
                    waits += 1;
                    let now = runtime.clock().now_ms();
                    println!("waiting: the run is leased until {expires_ms}");
                    let wait = expires_ms.saturating_sub(now).saturating_add(5);
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                }
                other => break other.unwrap_or_else(|e| fail(e)),
            }
        }
    };
    report(&execution);
}

fn report(execution: &Execution) {
    for entry in execution.trace.entries() {
        println!("{:>3}  {}", entry.seq, entry.event.describe());
    }
    println!(
        "\nstatus: {}\npath:   {}",
        execution.status,
        execution.path.join(" -> ")
    );
    println!("root:   {}", execution.root());
}
