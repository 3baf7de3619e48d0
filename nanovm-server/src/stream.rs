//! `GET /v1/runs/{run_id}/stream`: a run's entries as Server-Sent Events, as they become
//! durable, resumable with `Last-Event-ID`.
//!
//! The stream reads the store, not this process's memory, so it shows a run whichever server
//! process executes it (several processes on one PostgreSQL database) and never shows an entry
//! a crash could still take back. Each event is `id: SEQ`, `event: entry`, `data:` the entry's
//! JSON line as `nanovm trace` exports it (with its `prev` and `hash`: a client can check the
//! chain as it goes); the store verified the chain before anything is sent. A reconnecting
//! client sends `Last-Event-ID: SEQ` (or `?from=SEQ`) and gets the entries after it. When the
//! run has ended the stream sends `event: end` with its status and closes (a redrive appends
//! to an ended run: connect again with the last id to follow it).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use nanovm_runtime::RunView;
use nanovm_runtime::store::JournalStore;
use nanovm_runtime::trace::{Entry, entry_line};
use serde::Deserialize;

use crate::App;
use crate::api::{ApiError, store_error, unknown_run};

/// How often the store is read for new entries while the run goes on.
const POLL: Duration = Duration::from_millis(100);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct From {
    /// The last sequence number the client has (as `Last-Event-ID`).
    from: Option<u64>,
}

/// Where one stream is.
struct Cursor {
    store: Arc<dyn JournalStore>,
    run_id: String,
    /// The next sequence number to send.
    next: u64,
    queue: VecDeque<Event>,
    done: bool,
}

impl Cursor {
    /// Reads the run's entries from the store and queues the new ones (and `end`, once).
    async fn read(&mut self) {
        let entries = match self.store.load(&self.run_id).await {
            Ok(Some(entries)) => entries,
            Ok(None) => Vec::new(),
            Err(e) => {
                self.queue
                    .push_back(Event::default().event("error").data(e.to_string()));
                self.done = true;
                return;
            }
        };
        let from = self.next;
        for e in entries.iter().filter(|e| e.seq >= from) {
            self.queue.push_back(entry_event(e));
            self.next = e.seq + 1;
        }
        let status = RunView::of(&entries).status();
        if status.is_terminal() {
            self.queue
                .push_back(Event::default().event("end").data(status.to_string()));
            self.done = true;
        }
    }
}

fn entry_event(e: &Entry) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .event("entry")
        .data(entry_line(e))
}

/// The handler.
pub(crate) async fn stream(
    State(app): State<Arc<App>>,
    Path(run_id): Path<String>,
    Query(q): Query<From>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = app.runtime.store().expect("checked at bind").clone();
    if store.run(&run_id).await.map_err(store_error)?.is_none() {
        return Err(unknown_run(&run_id));
    }
    let last = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_last_event_id",
                        "Last-Event-ID must be the sequence number of an entry",
                    )
                })?,
        ),
        None => q.from,
    };
    let cursor = Cursor {
        store,
        run_id,
        next: last.map_or(0, |n| n.saturating_add(1)),
        queue: VecDeque::new(),
        done: false,
    };
    let events = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.queue.pop_front() {
                return Some((Ok::<_, Infallible>(e), c));
            }
            if c.done {
                return None;
            }
            c.read().await;
            if c.queue.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
