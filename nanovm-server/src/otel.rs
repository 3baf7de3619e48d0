//! OTLP export of the runtime's `tracing` spans (feature `otel`).
//!
//! The runtime opens `tracing` spans for each run, step, model call and tool call (ids and
//! names only: `docs/metrics.md`, "Tracing and OTLP"). This module turns them into
//! OpenTelemetry spans (`tracing-opentelemetry`) and exports them over OTLP/HTTP with protobuf
//! (`opentelemetry-otlp`), batched on a thread of the SDK's own:
//!
//! ```no_run
//! # fn demo() -> Result<(), nanovm_server::otel::OtelError> {
//! let provider = nanovm_server::otel::otlp_provider("http://127.0.0.1:4318/v1/traces", "shop")?;
//! nanovm_server::otel::install(&provider)?; // the process's global subscriber
//! // ... serve ...
//! provider.shutdown().ok(); // flushes what is batched
//! # Ok(()) }
//! ```
//!
//! A host with a subscriber of its own adds [`layer`] to it instead of [`install`]. The feature
//! lives on the server, not on the runtime: exporting is the process's choice (where, how
//! batched, which service name), the runtime only emits spans, and a host that embeds the
//! runtime alone adds the same two crates itself.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;

/// The OpenTelemetry SDK this module builds on (its `SdkTracerProvider`, exporters, testing).
pub use opentelemetry_sdk as sdk;

/// Why the export could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    /// The OTLP exporter could not be built (a bad endpoint, no HTTP client).
    #[error("the OTLP exporter: {0}")]
    Exporter(String),
    /// Another global `tracing` subscriber is installed already.
    #[error("a global tracing subscriber is set already: {0}")]
    Subscriber(String),
}

/// A tracer provider that batches spans to the OTLP/HTTP (protobuf) endpoint `endpoint`
/// (e.g. `http://collector:4318/v1/traces`) as service `service`. Shut it down at exit to
/// flush.
pub fn otlp_provider(
    endpoint: &str,
    service: &str,
) -> Result<sdk::trace::SdkTracerProvider, OtelError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    Ok(sdk::trace::SdkTracerProvider::builder()
        .with_resource(
            sdk::Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .with_batch_exporter(exporter)
        .build())
}

/// The `tracing` layer that records spans as OpenTelemetry spans of `provider` (every span
/// field becomes an attribute).
pub fn layer<S>(
    provider: &sdk::trace::SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, sdk::trace::Tracer>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("nanovm"))
}

/// Sets a registry with [`layer`] as the process's global `tracing` subscriber.
pub fn install(provider: &sdk::trace::SdkTracerProvider) -> Result<(), OtelError> {
    let subscriber = tracing_subscriber::registry().with(layer(provider));
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| OtelError::Subscriber(e.to_string()))
}
