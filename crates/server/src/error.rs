//! The one place where a failure becomes an HTTP status and an error body.
//!
//! Every client-visible error is an [`ApiError`]: a status, a stable [`ErrorCode`], and
//! a message written for the API client. It renders in OpenAI's error shape
//! (`{"error": {"message", "type", "param", "code"}}`) and carries itself in the
//! response's extensions, so the routes of other client formats re-render it in their
//! own shape ([`reshape`], applied as a layer to those routes: extractor rejections
//! and body-limit errors included). Messages may repeat what the client itself sent
//! (an upstream's explanation), so they are never logged: logs get the code only.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;
use std::time::Duration;
use veil_domain::ErrorCode;
use veil_protocol::{ClientFormat, ErrorInfo};
use veil_providers::{TimeoutPhase, UpstreamError};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// The request field the error is about (a fixed name, or one the client sent).
    pub param: Option<Cow<'static, str>>,
    pub retry_after: Option<Duration>,
    /// Further headers the client needs to react, e.g. OpenAI's `x-ratelimit-*`.
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), param: None, retry_after: None, headers: Vec::new() }
    }

    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequestError, message)
    }

    pub fn invalid_api_key(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidApiKey, message)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::ModelNotFound,
            format!("The model `{model}` does not exist or you do not have access to it."),
        )
        .with_param("model")
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RequestTooLarge,
            format!("The request body is larger than this server accepts ({limit} bytes)."),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::InternalError,
            "The server had an error while processing your request.",
        )
    }

    /// Maps an upstream failure that ended the call (after any failover).
    pub fn from_upstream(error: &UpstreamError) -> Self {
        match error {
            UpstreamError::Timeout(phase) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::UpstreamTimeout,
                match phase {
                    TimeoutPhase::Connect => "The upstream provider could not be reached in time.",
                    TimeoutPhase::FirstByte => "The upstream provider did not start answering in time.",
                    TimeoutPhase::Idle => "The upstream provider stopped sending data.",
                    TimeoutPhase::Total => "The upstream provider took too long to answer.",
                },
            ),
            UpstreamError::Status { status, retry_after, .. } => {
                // Client-side problems the upstream found keep their status so SDKs react
                // as they would against the vendor; server-side ones become 502.
                let mapped = match *status {
                    400 | 404 | 409 | 413 | 422 | 429 => {
                        StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
                    }
                    _ => StatusCode::BAD_GATEWAY,
                };
                let mut api = Self::new(mapped, ErrorCode::UpstreamError, error.client_message());
                api.retry_after = *retry_after;
                api
            }
            UpstreamError::Untranslatable(_) | UpstreamError::EndpointUnsupported(_) => {
                Self::invalid_request(error.client_message())
            }
            _ => Self::new(StatusCode::BAD_GATEWAY, ErrorCode::UpstreamError, error.client_message()),
        }
    }

    /// OpenAI's `type` for this error (SDKs mostly dispatch on the status).
    fn openai_type(&self) -> &'static str {
        match self.code {
            ErrorCode::InvalidApiKey => "authentication_error",
            ErrorCode::IpNotAllowed
            | ErrorCode::KeySuspended
            | ErrorCode::PolicyUnsatisfiable
            | ErrorCode::PermissionDenied => "permission_error",
            ErrorCode::RateLimitExceeded => "rate_limit_error",
            ErrorCode::InsufficientQuota => "insufficient_quota",
            ErrorCode::UpstreamError | ErrorCode::UpstreamTimeout => "upstream_error",
            ErrorCode::InternalError => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The OpenAI error object, as sent in a body or a stream's error event.
    pub fn openai_body(&self) -> serde_json::Value {
        veil_protocol::errors::openai(&self.info())
    }

    /// The error in the terms every client format's error shape is built from.
    pub fn info(&self) -> ErrorInfo {
        ErrorInfo {
            status: self.status.as_u16(),
            code: self.code.as_str().to_owned(),
            openai_type: self.openai_type().to_owned(),
            message: self.message.clone(),
            param: self.param.as_deref().map(str::to_owned),
        }
    }
}

/// Re-renders an error response in `format`'s shape; other responses pass unchanged.
pub fn reshape(format: ClientFormat, mut response: Response) -> Response {
    if format == ClientFormat::OpenAiChat || format == ClientFormat::OpenAiResponses {
        return response;
    }
    let Some(error) = response.extensions_mut().remove::<ApiError>() else { return response };
    let body = veil_protocol::errors::body(format, &error.info());
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut reshaped = Response::from_parts(parts, axum::body::Body::from(body.to_string()));
    reshaped.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reshaped
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.openai_body())).into_response();
        response.extensions_mut().insert(self.clone());
        if let Some(after) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&veil_limits::retry_after_header(after))
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
        response.extensions_mut().insert(self.code);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_map_to_stable_codes() {
        let timeout = ApiError::from_upstream(&UpstreamError::Timeout(TimeoutPhase::FirstByte));
        assert_eq!(timeout.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(timeout.code, ErrorCode::UpstreamTimeout);
        let server = ApiError::from_upstream(&UpstreamError::Status {
            status: 503,
            retry_after: None,
            message: "overloaded".into(),
            code: None,
        });
        assert_eq!(server.status, StatusCode::BAD_GATEWAY);
        assert_eq!(server.code, ErrorCode::UpstreamError);
        let client = ApiError::from_upstream(&UpstreamError::Status {
            status: 400,
            retry_after: None,
            message: "bad temperature".into(),
            code: None,
        });
        assert_eq!(client.status, StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::from_upstream(&UpstreamError::Connect).status, StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn the_body_has_openais_shape() {
        let body = ApiError::model_not_found("nope").openai_body();
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "model");
        assert!(body["error"]["message"].as_str().unwrap().contains("nope"));
    }
}
