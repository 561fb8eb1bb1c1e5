//! The outermost layer: gives every request its identity (request id, client address,
//! User-Agent, arrival time), stamps `x-request-id` on every response, and writes one
//! access-log line per request. The log line carries metadata only (method, route,
//! status, error code, latency); never a body, a query string or a header value other
//! than the request id.

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;
use veil_domain::{ErrorCode, RequestId};

use crate::error::ApiError;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MAX_USER_AGENT: usize = 256;

#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub request_id: RequestId,
    pub client_ip: IpAddr,
    pub user_agent: String,
    pub received: Instant,
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
    request.extensions_mut().insert(RequestMeta { request_id: request_id.clone(), client_ip, user_agent, received });

    let mut response = next.run(request).await;

    if let Ok(value) = HeaderValue::from_str(request_id.as_str()) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let code = response.extensions().get::<ErrorCode>().map(|c| c.as_str());
    tracing::info!(
        request_id = request_id.as_str(),
        method = %method,
        route = route.as_deref().unwrap_or("unmatched"),
        status = response.status().as_u16(),
        error_code = code,
        latency_us = received.elapsed().as_micros() as u64,
        "request"
    );
    response
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<RequestMeta>().cloned().ok_or_else(ApiError::internal)
    }
}
