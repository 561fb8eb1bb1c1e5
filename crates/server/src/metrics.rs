//! Prometheus metrics: the names, units and help texts, the process-wide recorder, the
//! `GET /metrics` handler, and the few functions the rest of the server calls to record.
//!
//! Promise: every label is low-cardinality metadata — a route template, an HTTP method, a
//! status code, an [`ErrorCode`], a channel name, a model name known to the catalogue, a
//! fixed outcome word. Never a user, key, IP address, request id or any request or response
//! content: nothing a client types can create a new series (a model name reaches a label
//! only once the catalogue knows it, see `Call::set_model`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `veil_requests_total` | counter | `path`, `status`, `code` (relayed calls, final status) |
//! | `veil_request_duration_seconds` | histogram | `path` |
//! | `veil_time_to_first_token_seconds` | histogram | `path` |
//! | `veil_tokens_total` | counter | `model`, `kind` = `input` (cached included) / `cached` / `output` |
//! | `veil_cost_nanos_total` | counter | `model` (integer nano-units of the currency) |
//! | `veil_upstream_attempts_total` | counter | `channel`, `outcome` |
//! | `veil_http_requests_total` | counter | `route`, `method`, `status` (every HTTP request) |
//! | `veil_in_flight_requests` | gauge | — (until the last body byte is sent) |
//! | `veil_channel_up`, `veil_channel_health_state`, `veil_channel_error_rate` | gauge | `channel` |
//! | `veil_channel_enabled` | gauge | `channel` (the serving snapshot, at scrape time) |
//! | `veil_record_queue_depth` | gauge | — (this server's calls waiting to be written, at scrape time) |
//! | `veil_build_info` | gauge | `version` |
//! | `veil_redis_up`, `veil_limits_fail_open_total`, `veil_limits_fail_closed_total`, `veil_limits_dropped_total` | gauge, counters | — (with `[redis]`; see `veil-cluster`) |
//!
//! The recorder is global (one per process, installed once); several applications in one
//! process — as in the tests — share its counters. Scrape-time gauges are rendered from the
//! scraping application's own state.

use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use veil_domain::{CallRecord, ErrorCode};

pub const REQUESTS: &str = "veil_requests_total";
pub const REQUEST_DURATION: &str = "veil_request_duration_seconds";
pub const TIME_TO_FIRST_TOKEN: &str = "veil_time_to_first_token_seconds";
pub const TOKENS: &str = "veil_tokens_total";
pub const COST: &str = "veil_cost_nanos_total";
pub const UPSTREAM_ATTEMPTS: &str = "veil_upstream_attempts_total";
pub const HTTP_REQUESTS: &str = "veil_http_requests_total";
pub const IN_FLIGHT: &str = "veil_in_flight_requests";
pub const CHANNEL_UP: &str = "veil_channel_up";
pub const CHANNEL_HEALTH_STATE: &str = "veil_channel_health_state";
pub const CHANNEL_ERROR_RATE: &str = "veil_channel_error_rate";
pub const CHANNEL_ENABLED: &str = "veil_channel_enabled";
pub const RECORD_QUEUE_DEPTH: &str = "veil_record_queue_depth";
pub const BUILD_INFO: &str = "veil_build_info";

/// Whole-call latencies: from a fast cached answer to a long generation.
const DURATION_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// Time to first token: mostly the upstream's queueing and prompt processing.
const FIRST_TOKEN_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0];
/// Histograms are folded into their buckets at least this often, scraped or not, so
/// their samples do not pile up in memory between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// `None` when another recorder was installed first (then `/metrics` answers 503).
static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder, once; later calls return the same handle.
pub fn install() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), DURATION_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TIME_TO_FIRST_TOKEN.into()), FIRST_TOKEN_BUCKETS))
                .and_then(PrometheusBuilder::install_recorder);
            match built {
                Ok(handle) => {
                    describe();
                    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                    Some(handle)
                }
                Err(error) => {
                    tracing::error!(error = %error, "the metrics recorder could not be installed; /metrics is off");
                    None
                }
            }
        })
        .as_ref()
}

fn describe() {
    describe_counter!(REQUESTS, Unit::Count, "Relayed calls finished, by route, final status and error code");
    describe_histogram!(REQUEST_DURATION, Unit::Seconds, "Relayed call duration, to the last byte sent");
    describe_histogram!(TIME_TO_FIRST_TOKEN, Unit::Seconds, "Time from a call's arrival to its first output token");
    describe_counter!(TOKENS, Unit::Count, "Tokens billed, by model and kind (input includes cached)");
    describe_counter!(COST, Unit::Count, "Charges in nano-units of the configured currency, by model");
    describe_counter!(UPSTREAM_ATTEMPTS, Unit::Count, "Upstream attempts, by channel and outcome");
    describe_counter!(HTTP_REQUESTS, Unit::Count, "HTTP requests answered, by route template, method and status");
    describe_gauge!(IN_FLIGHT, Unit::Count, "HTTP requests whose response has not finished");
    describe_gauge!(CHANNEL_UP, Unit::Count, "1 while the channel is healthy, else 0");
    describe_gauge!(CHANNEL_HEALTH_STATE, Unit::Count, "0 healthy, 1 cooling down, 2 probing, 3 disabled");
    describe_gauge!(CHANNEL_ERROR_RATE, "The channel's error rate over the health window, 0 to 1");
    describe_gauge!(BUILD_INFO, Unit::Count, "Always 1; the version is the label");
}

/// Records one finished relayed call (called from `Call::complete`, on every path).
pub fn record_call(record: &CallRecord) {
    let code = record.error_code.map_or("none", ErrorCode::as_str);
    counter!(REQUESTS, "path" => record.path, "status" => record.status.to_string(), "code" => code).increment(1);
    histogram!(REQUEST_DURATION, "path" => record.path).record(seconds(record.latency_ms));
    if let Some(ttft) = record.ttft_ms {
        histogram!(TIME_TO_FIRST_TOKEN, "path" => record.path).record(seconds(ttft));
    }
    // `model` is set only once the catalogue knows the name; calls refused before that
    // used no tokens and cost nothing.
    let Some(model) = record.model.as_ref().map(|m| m.as_str().to_owned()) else { return };
    let usage = &record.usage;
    for (kind, count) in
        [("input", usage.input_tokens), ("cached", usage.cached_tokens), ("output", usage.output_tokens)]
    {
        counter!(TOKENS, "model" => model.clone(), "kind" => kind).increment(count);
    }
    counter!(COST, "model" => model).increment(u64::try_from(record.cost.nanos()).unwrap_or(0));
}

/// One attempt at an upstream channel. `outcome` is a fixed word chosen by the caller
/// (e.g. `ok`, `retryable`, `failed`, `timeout`), never text from a response.
pub fn upstream_attempt(channel: &str, outcome: &'static str) {
    counter!(UPSTREAM_ATTEMPTS, "channel" => channel.to_owned(), "outcome" => outcome).increment(1);
}

/// The health board's view of a channel. `state`: 0 healthy, 1 cooling down, 2 probing,
/// 3 disabled; `error_rate` from 0 to 1 over the board's window.
pub fn set_channel_health(channel: &str, state: u8, error_rate: f64) {
    gauge!(CHANNEL_UP, "channel" => channel.to_owned()).set(if state == 0 { 1.0 } else { 0.0 });
    gauge!(CHANNEL_HEALTH_STATE, "channel" => channel.to_owned()).set(f64::from(state));
    gauge!(CHANNEL_ERROR_RATE, "channel" => channel.to_owned()).set(error_rate);
}

/// Counts one answered HTTP request; `route` is the matched route template.
pub fn http_response(route: &str, method: &Method, status: StatusCode) {
    counter!(
        HTTP_REQUESTS,
        "route" => route.to_owned(),
        "method" => method_label(method),
        "status" => status.as_str().to_owned()
    )
    .increment(1);
}

/// A client can send any method name; only the standard ones become label values.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn seconds(millis: u32) -> f64 {
    f64::from(millis) / 1000.0
}

/// Counts a request in [`IN_FLIGHT`] from its arrival until dropped.
pub struct InFlight(());

impl InFlight {
    pub fn begin() -> Self {
        gauge!(IN_FLIGHT).increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(IN_FLIGHT).decrement(1.0);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted in flight, and its span open and
    /// entered while it is polled, until the last byte is sent or the body is dropped:
    /// a stream outlives the handler that returned it.
    struct TrackedBody {
        #[pin]
        inner: Body,
        span: tracing::Span,
        in_flight: InFlight,
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps `response`'s body so `in_flight` and `span` last as long as it does.
pub fn track_body(response: Response, span: tracing::Span, in_flight: InFlight) -> Response {
    response.map(|inner| Body::new(TrackedBody { inner, span, in_flight }))
}

/// Folds histogram samples into their buckets every few seconds until `stop`.
pub async fn upkeep(stop: CancellationToken) {
    let Some(handle) = RECORDER.get().and_then(Option::as_ref) else { return };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(UPKEEP_INTERVAL) => handle.run_upkeep(),
        }
    }
}

/// `GET /metrics`: the Prometheus text format. Unauthenticated, like `/healthz`: it
/// holds no content and no per-user data; expose it only where Prometheus scrapes it.
pub async fn scrape(State(state): State<Arc<AppState>>) -> Response {
    let Some(handle) = install() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are unavailable").into_response();
    };
    let mut body = handle.render();
    scrape_time_gauges(&state, &mut body);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

/// Gauges read from this application's own state when scraped, rather than kept in the
/// shared recorder, so they are exact per server and never go stale.
fn scrape_time_gauges(state: &AppState, out: &mut String) {
    family(out, RECORD_QUEUE_DEPTH, "Calls whose record and settlement wait to be written to the store");
    let _ = writeln!(out, "{RECORD_QUEUE_DEPTH} {}", state.records.depth());
    family(out, CHANNEL_ENABLED, "1 for each enabled channel in the serving snapshot");
    let snapshot = state.snapshot.load();
    for candidate in snapshot.catalogue.channels() {
        let _ = writeln!(out, "{CHANNEL_ENABLED}{{channel=\"{}\"}} 1", escape(candidate.channel.name.as_str()));
    }
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::POST), "POST");
    }
}
