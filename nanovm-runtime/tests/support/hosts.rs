//! [`Host`] as the tools of every test program: the only hand-written code around the
//! generated programs. Each method records the call and answers from the script.

use std::future::Future;
use std::sync::Arc;

use nanovm_runtime::__private_v0_1::Program;
use nanovm_runtime::{Json, Secret, ToolContext, ToolError};
use serde_json::json;

use super::{Host, customer_refund, fanout};

impl customer_refund::Tools for Host {
    fn issue_refund(
        &self,
        ctx: &ToolContext,
        order_id: String,
        amount_cents: i64,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call(
            "issue_refund",
            ctx,
            json!({ "order_id": order_id, "amount_cents": amount_cents }),
        )
    }

    fn send_rejection(
        &self,
        ctx: &ToolContext,
        email: Secret<String>,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("send_rejection", ctx, json!({ "email": email.expose() }))
    }
}

impl fanout::Tools for Host {
    fn validate(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("validate", ctx, json!({ "order_id": order_id }))
    }

    fn reserve(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("reserve", ctx, json!({ "order_id": order_id }))
    }

    fn score(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("score", ctx, json!({ "order_id": order_id }))
    }

    fn charge(
        &self,
        ctx: &ToolContext,
        order_id: String,
    ) -> impl Future<Output = Result<Json, ToolError>> + Send {
        self.call("charge", ctx, json!({ "order_id": order_id }))
    }
}

/// The budget variants of `small` (tests/support/programs/small.nvm): one graph, six programs
/// that differ only in their `budget {}`, so in their `ProgramInfo`, hash and types. Generic
/// tests take `P: Small`.
pub trait Small: Program {
    /// The input `{ topic }`.
    fn input(topic: &str) -> Self::Input;
    /// `host` as the program's tools.
    fn tools(host: &Host) -> Arc<Self::Tools>;
}

macro_rules! small_variants {
    ($($m:ident),* $(,)?) => {$(
        impl super::$m::Input {
            /// The input `{ topic }`.
            pub fn new(topic: &str) -> Self {
                super::$m::Input {
                    topic: topic.to_string(),
                }
            }
        }

        impl super::$m::Tools for Host {
            fn fetch(
                &self,
                ctx: &ToolContext,
                topic: String,
            ) -> impl Future<Output = Result<Json, ToolError>> + Send {
                self.call("fetch", ctx, json!({ "topic": topic }))
            }

            fn count(
                &self,
                ctx: &ToolContext,
                topic: String,
            ) -> impl Future<Output = Result<Json, ToolError>> + Send {
                self.call("count", ctx, json!({ "topic": topic }))
            }
        }

        impl Small for super::$m::Program {
            fn input(topic: &str) -> Self::Input {
                super::$m::Input::new(topic)
            }

            fn tools(host: &Host) -> Arc<Self::Tools> {
                Arc::new(host.clone())
            }
        }
    )*};
}

small_variants!(
    small,
    small_steps5,
    small_tokens100,
    small_tool_calls2,
    small_duration1s,
    small_stalls1,
);
