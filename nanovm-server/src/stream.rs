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
//!
//! `GET /v1/stream`: every run's entries, in the order the store made them durable (its feed,
//! `JournalStore::feed`), as `id: POS`, `event: entry`, `data: {"run_id": ..., "entry": LINE}`.
//! `POS` is the entry's feed position, opaque to clients: a reconnecting client sends the last
//! one as `Last-Event-ID` (or `?after=POS`) and gets every entry after it, none twice and none
//! lost (the feed never puts an entry before one already read). It never ends. It reads the
//! store, so it shows every process's runs on a shared database. Each batch of the feed is
//! read with `JournalStore::load` of the runs it names (verified chains).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use nanovm_runtime::RunView;
use nanovm_runtime::store::{FeedPos, JournalStore};
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
    app: Arc<App>,
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

/// Waits one poll interval; `false` when the server stops meanwhile (the stream ends, so a
/// graceful shutdown is not held open by it).
async fn idle(app: &App) -> bool {
    let mut stop = app.stop.clone();
    let stopped = tokio::select! {
        () = tokio::time::sleep(POLL) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    !stopped && !*app.stop.borrow()
}

fn entry_event(e: &Entry) -> Event {
    Event::default()
        .id(e.seq.to_string())
        .event("entry")
        .data(entry_line(e))
}

/// The handler of a run's stream.
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
        app: app.clone(),
        store,
        run_id,
        next: last.map_or(0, |n| n.saturating_add(1)),
        queue: VecDeque::new(),
        done: false,
    };
    let events = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.queue.pop_front() {
                c.app.metrics.streamed("run");
                return Some((Ok::<_, Infallible>(e), c));
            }
            if c.done {
                return None;
            }
            c.read().await;
            if c.queue.is_empty() && !idle(&c.app).await {
                return None;
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The most feed entries read per poll of the all-runs stream.
const FEED_BATCH: usize = 256;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct After {
    /// The last feed position the client has (as `Last-Event-ID`).
    after: Option<String>,
}

/// Where one all-runs stream is.
struct Feed {
    app: Arc<App>,
    store: Arc<dyn JournalStore>,
    /// The last position sent.
    after: Option<FeedPos>,
    /// Entry events (counted when sent) and a final `error`.
    queue: VecDeque<(bool, Event)>,
    done: bool,
}

impl Feed {
    /// Reads the next batch of the feed and queues its entries.
    async fn read(&mut self) {
        if let Err(e) = self.try_read().await {
            self.queue
                .push_back((false, Event::default().event("error").data(e)));
            self.done = true;
        }
    }

    async fn try_read(&mut self) -> Result<(), String> {
        let items = self
            .store
            .feed(self.after, FEED_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        let mut runs: std::collections::HashMap<String, Vec<Entry>> = Default::default();
        for item in items {
            if !runs.contains_key(&item.run_id) {
                let entries = self
                    .store
                    .load(&item.run_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .unwrap_or_default();
                runs.insert(item.run_id.clone(), entries);
            }
            let entry = usize::try_from(item.seq)
                .ok()
                .and_then(|i| runs[&item.run_id].get(i))
                .filter(|e| e.seq == item.seq)
                .ok_or_else(|| {
                    format!(
                        "the feed names entry {} of run `{}`, which the store does not hold",
                        item.seq, item.run_id
                    )
                })?;
            let run = serde_json::to_string(&item.run_id).map_err(|e| e.to_string())?;
            self.queue.push_back((
                true,
                Event::default()
                    .id(item.pos.to_string())
                    .event("entry")
                    .data(format!(
                        "{{\"run_id\":{run},\"entry\":{}}}",
                        entry_line(entry)
                    )),
            ));
            self.after = Some(item.pos);
        }
        Ok(())
    }
}

/// The handler of the all-runs stream.
pub(crate) async fn all(
    State(app): State<Arc<App>>,
    Query(q): Query<After>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = app.runtime.store().expect("checked at bind").clone();
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_last_event_id",
            "Last-Event-ID must be the id of an event of this stream",
        )
    };
    let last = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| bad())?.trim().to_string()),
        None => q.after,
    };
    let after = match last {
        Some(s) => Some(s.parse::<FeedPos>().map_err(|_| bad())?),
        None => None,
    };
    // Refuse at once a store that keeps no feed.
    store.feed(after, 0).await.map_err(store_error)?;
    let feed = Feed {
        app: app.clone(),
        store,
        after,
        queue: VecDeque::new(),
        done: false,
    };
    let events = futures_util::stream::unfold(feed, |mut f| async move {
        loop {
            if let Some((entry, e)) = f.queue.pop_front() {
                if entry {
                    f.app.metrics.streamed("all");
                }
                return Some((Ok::<_, Infallible>(e), f));
            }
            if f.done {
                return None;
            }
            f.read().await;
            if f.queue.is_empty() && !idle(&f.app).await {
                return None;
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
