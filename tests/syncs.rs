//! The fewest syncs: an effect's result shares the run's next durable write, but is always
//! durable before the run's next external act (docs/runtime.md, "Durability and the
//! at-most-once guarantee"), so coalescing never widens the window in which a crash leaves a
//! non-idempotent effect ambiguous. Every write is counted (`MemoryStore::appends`: one per
//! `append`, `start_run` or `append_release`).

use std::sync::{Arc, Mutex};

use nanovm::model::{Model, ModelError, ModelReply, ModelRequest};
use nanovm::store::{JournalStore, MemoryStore};
use nanovm::trace::{Event, RunStatus};
use nanovm::{BoxFuture, Json, RunOptions, Runtime, ToolContext, ToolError};
use serde_json::json;

nanovm::nano_program! {
    /// A non-idempotent effect, then a model call; another, then a read-only tool call.
    program settle {
        input { id: string, ok: bool }
        effect tool send(id: string) -> json
        effect tool notify(id: string) -> json
        tool look(id: string) -> json
        start gate
        guard gate { when ok -> first otherwise -> done }
        call first = send(id: id) -> ask
        llm ask {
            prompt: "Proceed with {id}?"
            choose answer from [yes, no]
            on invalid -> done
        } -> approved
        guard approved { when answer == "yes" -> second otherwise -> done }
        call second = notify(id: id) -> check
        call check = look(id: id) -> done
        end done: success
    }
}

nanovm::nano_program! {
    /// An idempotent effect, then a read-only tool call, then the end.
    program relaxed {
        input { id: string, ok: bool }
        effect tool pay(id: string) -> json idempotent
        tool look(id: string) -> json
        start gate
        guard gate { when ok -> first otherwise -> done }
        call first = pay(id: id) -> check
        call check = look(id: id) -> done
        end done: success
    }
}

/// What the store held, at each external act, of the step results before it.
#[derive(Default)]
struct Seen(Mutex<Vec<(&'static str, Vec<String>)>>);

impl Seen {
    /// Records the steps whose `tool_result` is durable in `store` as `act` happens.
    fn at(&self, act: &'static str, store: &MemoryStore, run_id: &str) {
        let durable = store
            .entries(run_id)
            .into_iter()
            .filter_map(|e| match e.event {
                Event::ToolResult { step, .. } => Some(step.into_owned()),
                _ => None,
            })
            .collect();
        self.0.lock().unwrap().push((act, durable));
    }

    fn take(&self) -> Vec<(&'static str, Vec<String>)> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

struct Host {
    store: MemoryStore,
    seen: Arc<Seen>,
}

impl settle::Tools for Host {
    async fn send(&self, _: &ToolContext, _: String) -> Result<Json, ToolError> {
        Ok(json!({ "sent": true }))
    }
    async fn notify(&self, _: &ToolContext, _: String) -> Result<Json, ToolError> {
        Ok(json!({ "notified": true }))
    }
    async fn look(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.seen.at("look", &self.store, &ctx.run_id);
        Ok(json!({ "ok": true }))
    }
}

impl relaxed::Tools for Host {
    async fn pay(&self, _: &ToolContext, _: String) -> Result<Json, ToolError> {
        Ok(json!({ "paid": true }))
    }
    async fn look(&self, ctx: &ToolContext, _: String) -> Result<Json, ToolError> {
        self.seen.at("look", &self.store, &ctx.run_id);
        Ok(json!({ "ok": true }))
    }
}

/// Answers "yes", noting what the store holds when asked.
struct Yes {
    store: MemoryStore,
    seen: Arc<Seen>,
    run_id: &'static str,
}

impl Model for Yes {
    fn complete<'a>(
        &'a self,
        _req: &'a ModelRequest,
    ) -> BoxFuture<'a, Result<ModelReply, ModelError>> {
        self.seen.at("model", &self.store, self.run_id);
        Box::pin(std::future::ready(Ok(ModelReply::text("yes"))))
    }
}

fn setup() -> (Runtime, MemoryStore, Arc<Seen>, Arc<Host>) {
    let store = MemoryStore::new();
    let seen = Arc::new(Seen::default());
    let model = Yes {
        store: store.clone(),
        seen: seen.clone(),
        run_id: "r",
    };
    let rt = Runtime::builder()
        .store(store.clone())
        .model(Arc::new(model))
        .build();
    let host = Arc::new(Host {
        store: store.clone(),
        seen: seen.clone(),
    });
    (rt, store, seen, host)
}

#[tokio::test]
async fn a_non_idempotent_result_is_durable_before_the_next_model_or_tool_call() {
    let (rt, store, seen, host) = setup();
    let e = rt
        .run::<settle::Program>(
            settle::Input {
                id: "x".into(),
                ok: true,
            },
            host,
            RunOptions::new().run_id("r"),
        )
        .await
        .unwrap();
    assert_eq!(e.status, RunStatus::Success, "{:?}", e.message);
    assert_eq!(
        seen.take(),
        [
            ("model", vec!["first".to_string()]),
            ("look", vec!["first".to_string(), "second".to_string()]),
        ],
        "each effect's result was durable before the next act"
    );
    // The first intent; `send`'s result before the model call; the model's entries with
    // `notify`'s intent; `notify`'s result before `look`; the end, with the lease given back.
    assert_eq!(store.appends(), 5);
    assert_eq!(store.entries("r"), e.trace.entries());
    let record = store.run("r").await.unwrap().unwrap();
    assert_eq!(record.lease_owner, None);
}

#[tokio::test]
async fn an_idempotent_result_rides_along_to_the_next_write() {
    let (rt, store, seen, host) = setup();
    let e = rt
        .run::<relaxed::Program>(
            relaxed::Input {
                id: "x".into(),
                ok: true,
            },
            host,
            RunOptions::new().run_id("r"),
        )
        .await
        .unwrap();
    assert_eq!(e.status, RunStatus::Success, "{:?}", e.message);
    // A crash during `look` has recovery call `pay` again with the same key (the tool answers
    // without paying twice); no operator is ever needed for it, so its result waits for the
    // end's write.
    assert_eq!(seen.take(), [("look", Vec::<String>::new())]);
    assert_eq!(store.appends(), 2, "the intent; the rest with the end");
    assert_eq!(store.entries("r"), e.trace.entries());
}
