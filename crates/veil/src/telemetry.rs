//! Process logging and traces.
//!
//! Logs: text or JSON lines on stderr, filtered by `log.level` (or `RUST_LOG`). An event
//! inside a request carries that request's span (request id, method, route, status, error
//! code, channel, model): JSON lines hold it under `span` and `spans`. Log events carry
//! metadata fields only; request and response bodies are never passed to a log macro
//! anywhere in Veil.
//!
//! Traces: with `[telemetry] otlp_endpoint` set, Veil's own spans (the per-request span
//! opened in `veil-server`'s `request_meta`) are exported over OTLP/HTTP protobuf to
//! `{endpoint}/v1/traces`, sampled by `sample_ratio`. Only spans are exported, never log
//! events, so a trace holds exactly the span fields listed above. Export runs on the
//! exporter's own thread with a blocking HTTP client: a slow collector costs no time on
//! the async runtime. [`Telemetry::shutdown`] flushes what is still buffered.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use std::time::Duration;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};
use veil_config::Settings;

/// How long one export to the collector may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Owns the trace pipeline; shut it down to flush the last spans.
#[must_use = "shut telemetry down on exit, or the last spans are lost"]
pub struct Telemetry {
    traces: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes buffered spans and stops the exporter. Blocks until the export finishes
    /// (bounded by the export timeout): call it off the async runtime.
    pub fn shutdown(mut self) {
        if let Some(traces) = self.traces.take()
            && let Err(error) = traces.shutdown()
        {
            tracing::warn!(error = %error, "the last traces could not be exported");
        }
    }
}

/// Installs the process's subscriber: logs always, traces when configured.
pub fn init(settings: &Settings) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // `log_internal_errors(false)`: tracing-subscriber would otherwise report a failed
    // write with `eprintln!`, which panics when stderr is a closed pipe — inside whatever
    // task was logging, e.g. a request. A relay must not fail calls because its log sink
    // went away.
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).log_internal_errors(false);
    let logs = if settings.log_json { logs.json().boxed() } else { logs.boxed() };

    let (traces, trace_error) = match traces(settings) {
        Ok(traces) => (traces, None),
        Err(error) => (None, Some(error)),
    };
    let trace_layer = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("veil"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            // Veil's own spans at info and above only: no log events, no library internals.
            .with_filter(
                filter::filter_fn(|meta| {
                    meta.is_span() && *meta.level() <= tracing::Level::INFO && meta.target().starts_with("veil")
                })
                .with_max_level_hint(LevelFilter::INFO),
            )
    });

    let installed = tracing_subscriber::registry().with(logs.with_filter(filter)).with(trace_layer).try_init();
    if installed.is_err() {
        crate::output::note("logging was already initialised");
    }
    if let Some(error) = trace_error {
        tracing::error!(error = %error, "traces are off: the OTLP exporter could not be built");
    }
    Telemetry { traces }
}

/// The trace pipeline, if `[telemetry] otlp_endpoint` is set.
fn traces(settings: &Settings) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    let Some(url) = settings.telemetry.traces_url() else { return Ok(None) };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    let resource = Resource::builder()
        .with_service_name(settings.telemetry.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.telemetry.sample_ratio))))
        .with_resource(resource)
        .build();
    Ok(Some(provider))
}
