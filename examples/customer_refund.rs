//! The main example: `workflows/customer_refund.nvm`, compiled into Rust by `include_program!`,
//! run with a scripted model and in-process mock tools.
//!
//! ```sh
//! cargo run --release --example customer_refund -- --trace-out /tmp/refund.jsonl
//! cargo run --release --example customer_refund -- --answer no
//! cargo run --release --example customer_refund -- --answer maybe   # invalid -> manual review
//! ```
//!
//! It prints each recorded event, the final status and the trace's root hash, and writes the
//! trace as JSON Lines (check it with `nanovm verify FILE`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nanovm::program::{ToolContext, ToolError};
use nanovm::value::{Json, Secret};
use nanovm::{MemoryVault, RunOptions, Runtime, ScriptedModel};
use serde_json::json;

nanovm::include_program!("workflows/customer_refund.nvm");

/// In-process stand-ins for the shop's services.
#[derive(Default)]
struct MockShop {
    refunds: AtomicUsize,
    rejections: AtomicUsize,
}

impl customer_refund::Tools for MockShop {
    async fn lookup_order(&self, _ctx: &ToolContext, order_id: String) -> Result<Json, ToolError> {
        Ok(json!({ "order_id": order_id, "status": "delivered" }))
    }

    async fn issue_refund(
        &self,
        ctx: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> Result<Json, ToolError> {
        self.refunds.fetch_add(1, Ordering::SeqCst);
        // A real payment API would receive `ctx.idempotency_key` as its idempotency key.
        Ok(json!({
            "refund_id": format!("rf_{}", &ctx.idempotency_key.to_hex()[..12]),
            "order_id": order_id,
            "amount_cents": amount_cents,
        }))
    }

    async fn send_rejection(
        &self,
        _ctx: &ToolContext,
        email: Secret<String>,
    ) -> Result<Json, ToolError> {
        self.rejections.fetch_add(1, Ordering::SeqCst);
        // The plaintext reaches the tool, and only the tool.
        let domain = email
            .expose()
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_string();
        Ok(json!({ "sent": true, "domain": domain }))
    }
}

struct Args {
    answer: String,
    trace_out: Option<String>,
    run_id: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        answer: "yes".into(),
        trace_out: None,
        run_id: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--answer" => a.answer = value()?,
            "--trace-out" => a.trace_out = Some(value()?),
            "--run-id" => a.run_id = Some(value()?),
            "-h" | "--help" => {
                println!(
                    "usage: customer_refund [--answer yes|no|maybe] [--trace-out FILE] [--run-id ID]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };

    // Secrets go into the vault first; the program only ever holds a handle and the trace only a
    // salted commitment. (A seeded vault makes the example's root hash reproducible; production
    // vaults use random salts.)
    let vault = MemoryVault::seeded(7);
    let email = vault
        .secret(&"ada@example.com".to_string())
        .expect("the vault stores the secret");
    let model = ScriptedModel::new().always("analyze", args.answer.as_str());
    let runtime = Runtime::builder().model(model).vault(vault).build();
    let shop = Arc::new(MockShop::default());

    let input = customer_refund::Input {
        request: "My parcel arrived broken. Please refund it.".into(),
        order_id: "ord_1042".into(),
        amount_cents: 4200,
        email,
    };
    let mut options = RunOptions::new();
    if let Some(id) = &args.run_id {
        options = options.run_id(id.as_str());
    }
    let run = runtime.run::<customer_refund::Program>(input, shop.clone(), options);
    let execution = match run.await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };

    for entry in execution.trace.entries() {
        println!("{:>3}  {}", entry.seq, entry.event.describe());
    }
    println!();
    println!("status:  {}", execution.status);
    if let Some(m) = &execution.message {
        println!("message: {m}");
    }
    println!("path:    {}", execution.path.join(" -> "));
    println!(
        "effects: {} refund(s), {} rejection(s)",
        shop.refunds.load(Ordering::SeqCst),
        shop.rejections.load(Ordering::SeqCst)
    );
    println!("root:    {}", execution.root());
    if let Some(path) = &args.trace_out {
        if let Err(e) = std::fs::write(path, execution.trace.to_jsonl()) {
            eprintln!("error: cannot write {path}: {e}");
            std::process::exit(1);
        }
        println!("trace:   {path} ({} entries)", execution.trace.len());
    }
}
