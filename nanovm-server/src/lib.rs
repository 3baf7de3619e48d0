//! An HTTP server for nanovm programs: other languages, scripts and webhooks start, inspect,
//! deliver events to and reconcile runs without writing Rust.
//!
//! A host embeds it with its compiled programs and its tool implementations:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use nanovm_runtime::{Runtime, __private_v0_1::Program};
//! # async fn demo<P: Program>(runtime: Runtime, tools: Arc<P::Tools>) -> Result<(), nanovm_server::ServerError>
//! # where P::Input: serde::de::DeserializeOwned {
//! use nanovm_server::{Scope, Server};
//! Server::new(runtime)                       // a runtime with a store (SQLite, PostgreSQL)
//!     .program::<P>(tools)                   // e.g. `customer_refund::Program`
//!     .token("ops-token", "ops", &[Scope::Read, Scope::Start, Scope::Operate])
//!     .serve("127.0.0.1:8080".parse().unwrap())
//!     .await
//! # }
//! ```
//!
//! Starting a run only records it (`Runtime::submit`); the server's workers (`Worker`, under
//! leases, on the runtime's store) execute it, so several server processes on one PostgreSQL
//! database share the work and a run that a crash interrupted is continued by whichever
//! worker claims it next. Every endpoint but `/healthz` and `/readyz` needs a bearer token
//! with a scope; request bodies and request time are bounded. The endpoints, their errors and
//! the table of refused requests are in `docs/runtime.md` ("The HTTP server").

#![warn(missing_docs)]
#![deny(unreachable_pub)]

mod api;
#[cfg(feature = "mcp")]
mod mcp;
mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
mod served;
mod stream;
mod viewer;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use nanovm_runtime::__private_v0_1::Program;
use nanovm_runtime::Runtime;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use crate::metrics::Metrics;
use crate::served::{Served, Typed};

/// What a bearer token may do. Each endpoint needs one scope (see `docs/runtime.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scope {
    /// Read programs, runs, states and traces.
    Read,
    /// Start runs.
    Start,
    /// Act on runs: deliver events, reconcile effects.
    Operate,
}

impl Scope {
    /// The scope's name, as error messages write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Start => "start",
            Scope::Operate => "operate",
        }
    }
}

/// Why the server could not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The runtime has no journal store: runs must outlive a request, so the server needs one.
    #[error("the runtime has no store: the server needs one (SQLite or PostgreSQL)")]
    NoStore,
    /// No token was configured: every endpoint but health would refuse every request.
    #[error("no bearer token configured: add one with Server::token")]
    NoToken,
    /// Binding or serving the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One configured bearer token: who it is (recorded as the actor of deliveries and
/// reconciliations) and what it may do. Only its blake3 hash is kept.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) hash: [u8; 32],
    pub(crate) name: String,
    pub(crate) scopes: Vec<Scope>,
}

/// The limits every request is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) body_bytes: usize,
    pub(crate) request_time: Duration,
}

/// The server's shared state.
pub(crate) struct App {
    pub(crate) runtime: Runtime,
    pub(crate) programs: BTreeMap<&'static str, Arc<dyn Served>>,
    /// Every registered version, the newest of each name also in `programs`.
    pub(crate) versions: Vec<Arc<dyn Served>>,
    pub(crate) tokens: Vec<Token>,
    pub(crate) limits: Limits,
    /// Wakes the workers when a run was started.
    pub(crate) work: Arc<Notify>,
    /// `/metrics`.
    pub(crate) metrics: Metrics,
    /// Becomes true when the server stops: open streams end.
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
}

impl App {
    /// The registered version with program hash `hash`.
    pub(crate) fn version(&self, hash: nanovm_runtime::Digest) -> Option<&Arc<dyn Served>> {
        self.versions.iter().find(|v| v.info().hash == hash)
    }
}

/// The server builder; see the crate docs.
pub struct Server {
    runtime: Runtime,
    programs: BTreeMap<&'static str, Arc<dyn Served>>,
    versions: Vec<Arc<dyn Served>>,
    tokens: Vec<Token>,
    limits: Limits,
    workers: usize,
    lease_ms: u64,
    poll: Duration,
    name: String,
    metrics: Metrics,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("programs", &self.programs.keys().collect::<Vec<_>>())
            .field("tokens", &self.tokens.len())
            .field("limits", &self.limits)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `runtime`, which must have a store. Defaults: bodies up to 64 KiB, 30 s
    /// per request, 2 workers per program with 30 s leases, polling the store every 200 ms
    /// for runs other processes left.
    pub fn new(runtime: Runtime) -> Server {
        let pid = std::process::id();
        let nonce = blake3::hash(format!("{pid}-{:?}", std::time::SystemTime::now()).as_bytes());
        Server {
            runtime,
            programs: BTreeMap::new(),
            versions: Vec::new(),
            tokens: Vec::new(),
            limits: Limits {
                body_bytes: 64 * 1024,
                request_time: Duration::from_secs(30),
            },
            workers: 2,
            lease_ms: 30_000,
            poll: Duration::from_millis(200),
            name: format!("server-{pid}-{}", &nonce.to_hex()[..8]),
            metrics: Metrics::new(),
        }
    }

    /// Serves program `P` with `tools` (`Arc::new(MyTools)`, the program's `Tools` trait).
    ///
    /// Another version of a program already served (the same name, another hash: two builds
    /// of a changed `.nvm` file) is served beside it: new runs start on the one registered
    /// last, and every stored run is continued (by the workers, deliveries, reconciliations)
    /// by the version it is pinned to, as `nanovm_runtime::Versions` routes. Registering the
    /// same build again replaces its tools.
    #[must_use]
    pub fn program<P: Program>(mut self, tools: Arc<P::Tools>) -> Server
    where
        P::Input: DeserializeOwned,
    {
        let served: Arc<dyn Served> = Arc::new(Typed::<P>::new(tools));
        self.versions.retain(|v| v.info().hash != P::info().hash);
        self.versions.push(served.clone());
        self.programs.insert(P::info().name, served);
        self
    }

    /// Accepts `token` as a bearer token named `name` (the actor recorded when it delivers or
    /// reconciles) with `scopes`.
    #[must_use]
    pub fn token(mut self, token: &str, name: &str, scopes: &[Scope]) -> Server {
        self.tokens.push(Token {
            hash: *blake3::hash(token.as_bytes()).as_bytes(),
            name: name.to_string(),
            scopes: scopes.to_vec(),
        });
        self
    }

    /// The largest request body accepted, in bytes (larger: 413, nothing read further).
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Server {
        self.limits.body_bytes = bytes;
        self
    }

    /// How long a request may take (longer: 503 `timeout`; work already recorded goes on).
    #[must_use]
    pub fn request_timeout(mut self, limit: Duration) -> Server {
        self.limits.request_time = limit;
        self
    }

    /// Worker tasks per program (0: this process executes nothing; another process's workers
    /// do).
    #[must_use]
    pub fn workers(mut self, n: usize) -> Server {
        self.workers = n;
        self
    }

    /// How long a worker's lease lasts (renewed every third of it while a run executes).
    #[must_use]
    pub fn lease_ms(mut self, ms: u64) -> Server {
        self.lease_ms = ms;
        self
    }

    /// The metrics `/metrics` serves: give the value set as the runtime's observer
    /// (`RuntimeBuilder::observer(metrics.clone())`) so this process's runs are counted; without
    /// it only the store-wide gauges and the streams' counts move (`docs/metrics.md`).
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Server {
        self.metrics = metrics;
        self
    }

    /// Binds `addr` (port 0: any free port), starts the workers and serves in the background.
    /// The returned handle says where and stops the server when asked (or dropped).
    pub async fn bind(self, addr: SocketAddr) -> Result<Running, ServerError> {
        if self.runtime.store().is_none() {
            return Err(ServerError::NoStore);
        }
        if self.tokens.is_empty() {
            return Err(ServerError::NoToken);
        }
        let listener = TcpListener::bind(addr).await?;
        let (_, running) = self.start(Some(listener)).await?;
        Ok(running)
    }

    /// Starts the workers and, with a listener, the HTTP server.
    async fn start(
        self,
        listener: Option<TcpListener>,
    ) -> Result<(Arc<App>, Running), ServerError> {
        let local = match &listener {
            Some(l) => l.local_addr()?,
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let work = Arc::new(Notify::new());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let app = Arc::new(App {
            runtime: self.runtime.clone(),
            programs: self.programs.clone(),
            versions: self.versions.clone(),
            tokens: self.tokens,
            limits: self.limits,
            work: work.clone(),
            metrics: self.metrics.clone(),
            stop: stop_rx.clone(),
        });
        let mut tasks = Vec::new();
        // Workers per version: each claims only runs pinned to its own build.
        for served in &self.versions {
            for i in 0..self.workers {
                let worker = nanovm_runtime::Worker::new(
                    self.runtime.clone(),
                    format!(
                        "{}-{}-{}-{i}",
                        self.name,
                        served.info().name,
                        served.info().hash.short()
                    ),
                    self.lease_ms,
                );
                tasks.push(tokio::spawn(served::work(
                    served.clone(),
                    worker,
                    work.clone(),
                    self.poll,
                    stop_rx.clone(),
                )));
            }
        }
        if let Some(listener) = listener {
            let router = api::router(app.clone());
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    eprintln!("nanovm-server: {e}");
                }
            }));
        }
        Ok((
            app,
            Running {
                addr: local,
                stop: stop_tx,
                tasks,
            },
        ))
    }

    /// Serves MCP over stdin/stdout (the client is the local user who started the process:
    /// every scope, no token) with the workers running, until the client closes the stream.
    /// Nothing else may write to stdout meanwhile.
    #[cfg(feature = "mcp")]
    pub async fn serve_stdio(self) -> Result<(), ServerError> {
        use rmcp::ServiceExt as _;
        if self.runtime.store().is_none() {
            return Err(ServerError::NoStore);
        }
        let (app, running) = self.start(None).await?;
        let service = crate::mcp::Mcp::new(app, true)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let _ = service.waiting().await;
        running.stop().await;
        Ok(())
    }

    /// Binds `addr`, serves until Ctrl-C, then stops.
    pub async fn serve(self, addr: SocketAddr) -> Result<(), ServerError> {
        let running = self.bind(addr).await?;
        tokio::signal::ctrl_c().await?;
        running.stop().await;
        Ok(())
    }
}

/// A server that is serving; see [`Server::bind`].
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets the workers finish the run they execute, and waits.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
