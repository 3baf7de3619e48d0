//! The build-script way: `build.rs` compiles `examples/workflows/*.nvm`, and
//! `nanovm::include_compiled!` brings the generated modules in.
//!
//! ```sh
//! cargo run -p nanovm-example-build-script -- DE 40
//! cargo run -p nanovm-example-build-script -- BR 40    # held for fraud review
//! ```

use std::sync::Arc;

use nanovm::program::{ToolContext, ToolError};
use nanovm::value::{Json, Secret};
use nanovm::{MemoryVault, RunOptions, Runtime};
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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let country = args.next().unwrap_or_else(|| "DE".into());
    let risk: i64 = args.next().and_then(|r| r.parse().ok()).unwrap_or(40);

    let vault = MemoryVault::new();
    let email = vault
        .secret(&"buyer@example.com".to_string())
        .expect("the vault stores the secret");
    let runtime = Runtime::builder().vault(vault).build();
    let input = order_pipeline::Input {
        order_id: "ord_77".into(),
        country,
        amount_cents: 12_900,
        email,
    };
    let run = runtime.run::<order_pipeline::Program>(
        input,
        Arc::new(Warehouse { risk }),
        RunOptions::new(),
    );
    match run.await {
        Ok(execution) => {
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
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
