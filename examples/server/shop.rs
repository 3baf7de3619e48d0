//! The three example workflows, compiled, and in-process mock tools for each: shared by the
//! `server` example and the `server_load` benchmark.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;

use nanovm::{Json, Secret, ToolContext, ToolError};
use serde_json::json;

nanovm::include_program!("../workflows/customer_refund.nvm");
nanovm::include_program!("../workflows/order_pipeline.nvm");
nanovm::include_program!("../workflows/payment_recovery.nvm");

/// Stand-ins for the shop's, the warehouse's and the bank's services. Every execution of an
/// effect tool is appended to the ledger (`effect_id tool`, one line, flushed), when there is
/// one: the load test reads it to prove that no effect executed twice.
#[derive(Default)]
pub struct MockShop {
    ledger: Option<Mutex<std::fs::File>>,
}

impl MockShop {
    /// Mocks writing their effects to `ledger` (appending).
    pub fn with_ledger(path: Option<PathBuf>) -> std::io::Result<MockShop> {
        let ledger = match path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(MockShop { ledger })
    }

    fn effect(&self, ctx: &ToolContext, tool: &str, answer: Json) -> Result<Json, ToolError> {
        if let Some(l) = &self.ledger {
            let mut f = l.lock().expect("ledger lock");
            writeln!(f, "{} {tool}", ctx.idempotency_key.to_hex())
                .and_then(|()| f.flush())
                .map_err(|e| ToolError::transient(format!("ledger: {e}")))?;
        }
        Ok(answer)
    }
}

impl customer_refund::Tools for MockShop {
    async fn issue_refund(
        &self,
        ctx: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> Result<Json, ToolError> {
        let id = format!("rf_{}", &ctx.idempotency_key.to_hex()[..12]);
        self.effect(
            ctx,
            "issue_refund",
            json!({ "refund_id": id, "order_id": order_id, "amount_cents": amount_cents }),
        )
    }

    async fn send_rejection(
        &self,
        ctx: &ToolContext,
        email: Secret<String>,
    ) -> Result<Json, ToolError> {
        let domain = email.expose().split('@').nth(1).unwrap_or("").to_string();
        self.effect(
            ctx,
            "send_rejection",
            json!({ "sent": true, "domain": domain }),
        )
    }
}

impl order_pipeline::Tools for MockShop {
    async fn validate_order(&self, _: &ToolContext, order_id: String) -> Result<Json, ToolError> {
        Ok(json!({ "ok": true, "order_id": order_id }))
    }
    async fn fraud_score(
        &self,
        _: &ToolContext,
        _: String,
        country: String,
    ) -> Result<Json, ToolError> {
        Ok(json!({ "risk": if country == "US" { 20 } else { 10 } }))
    }
    async fn reserve_inventory(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.effect(ctx, "reserve_inventory", json!({ "reserved": true }))
    }
    async fn confirm_order(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.effect(ctx, "confirm_order", json!({ "confirmed": true }))
    }
    async fn send_email(
        &self,
        ctx: &ToolContext,
        _: Secret<String>,
        template: String,
    ) -> Result<Json, ToolError> {
        self.effect(
            ctx,
            "send_email",
            json!({ "sent": true, "template": template }),
        )
    }
    async fn notify_warehouse(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.effect(ctx, "notify_warehouse", json!({ "notified": true }))
    }
    async fn refund_order(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.effect(ctx, "refund_order", json!({ "refunded": true }))
    }
}

impl payment_recovery::Tools for MockShop {
    async fn fetch_invoice(&self, _: &ToolContext, invoice_id: String) -> Result<Json, ToolError> {
        Ok(json!({ "invoice_id": invoice_id, "status": "open" }))
    }
    async fn retry_charge(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.effect(ctx, "retry_charge", json!({ "status": "succeeded" }))
    }
    async fn send_sms(
        &self,
        ctx: &ToolContext,
        _: Secret<String>,
        _: String,
    ) -> Result<Json, ToolError> {
        self.effect(ctx, "send_sms", json!({ "sent": true }))
    }
    async fn send_card_update_link(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.effect(ctx, "send_card_update_link", json!({ "sent": true }))
    }
    async fn block_account(
        &self,
        ctx: &ToolContext,
        _: String,
        _: String,
    ) -> Result<Json, ToolError> {
        self.effect(ctx, "block_account", json!({ "blocked": true }))
    }
    async fn alert_support(
        &self,
        ctx: &ToolContext,
        _: String,
        _: String,
    ) -> Result<Json, ToolError> {
        self.effect(ctx, "alert_support", json!({ "alerted": true }))
    }
}
