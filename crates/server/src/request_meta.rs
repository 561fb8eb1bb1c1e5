//! The outermost layer: gives every request its identity (request id, client address,
//! User-Agent, arrival time), stamps `x-request-id` on every response, and writes one
//! access-log line per request. The log line carries metadata only (method, route,
//! status, error code, latency); never a body, a query string or a header value other
//! than the request id.
//!
//! It also opens the request's span (`request`: request id, method, route template,
//! status, error code, and for relayed calls the channel and catalogue model — never a
//! body), which lasts until the last byte of the response is sent and becomes the
//! request's trace span when OpenTelemetry export is configured; and it counts the
//! request in the HTTP metrics (see `metrics.rs`).

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;
use veil_domain::{CallRecord, ErrorCode, RequestId};

use crate::error::ApiError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_USER_AGENT: usize = 256;

#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: RequestId,
    pub client_ip: IpAddr,
    pub user_agent: String,
    pub received: Instant,
    /// The client's session id (`x-session-id`, or Codex CLI's `session_id`), hashed at
    /// once for sticky routing: never kept, logged or forwarded as sent.
    pub session: Option<veil_routing::SessionKey>,
    /// The request's span; a relayed call notes its outcome on it (see [`note_call`]).
    pub span: tracing::Span,
}

pub async fn layer(mut request: Request, next: Next) -> Response {
    let received = Instant::now();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| RequestId::parse(v).ok())
        .unwrap_or_else(RequestId::generate);
    let client_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    let user_agent = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(MAX_USER_AGENT).collect())
        .unwrap_or_default();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let route_label = route.as_deref().unwrap_or("unmatched");
    let in_flight = crate::metrics::InFlight::begin();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {route_label}", crate::metrics::method_label(&method)),
        otel.kind = "server",
        otel.status_code = Empty,
        request_id = request_id.as_str(),
        method = crate::metrics::method_label(&method),
        route = route_label,
        status = Empty,
        error_code = Empty,
        channel = Empty,
        model = Empty,
    );
    let session = session_key(request.headers());
    request.extensions_mut().insert(RequestMeta {
        request_id: request_id.clone(),
        client_ip,
        user_agent,
        received,
        session,
        span: span.clone(),
    });

    let mut response = next.run(request).instrument(span.clone()).await;

    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let code = response.extensions().get::<ErrorCode>().map(|c| c.as_str());
    note_status(&span, response.status().as_u16(), code);
    crate::metrics::http_response(route_label, &method, response.status());
    tracing::info!(
        request_id = request_id.as_str(),
        method = %method,
        route = route.as_deref().unwrap_or("unmatched"),
        status = response.status().as_u16(),
        error_code = code,
        latency_us = received.elapsed().as_micros() as u64,
        "request"
    );
    crate::metrics::track_body(response, span, in_flight)
}

/// Notes a finished relayed call on its request's span: the final status (a stream can
/// fail or be abandoned after its 200), the error code, the channel that served and the
/// model, which the record holds only once the catalogue knows it.
pub fn note_call(span: &tracing::Span, record: &CallRecord) {
    note_status(span, record.status, record.error_code.map(ErrorCode::as_str));
    if let Some(channel) = &record.channel {
        span.record("channel", channel.as_str());
    }
    if let Some(model) = &record.model {
        span.record("model", model.as_str());
    }
}

fn note_status(span: &tracing::Span, status: u16, code: Option<&'static str>) {
    span.record("status", status);
    if let Some(code) = code {
        span.record("error_code", code);
    }
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The longest session id hashed; a longer header is not a session id.
const MAX_SESSION_ID: usize = 256;

fn session_key(headers: &axum::http::HeaderMap) -> Option<veil_routing::SessionKey> {
    ["x-session-id", "session_id"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .find(|id| !id.is_empty() && id.len() <= MAX_SESSION_ID)
        .map(veil_routing::SessionKey::from_client)
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<RequestMeta>().cloned().ok_or_else(ApiError::internal)
    }
}
