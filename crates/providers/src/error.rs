//! [`UpstreamError`]: every way an upstream call can fail, normalised across vendors.
//!
//! The `Display` form goes to logs, so it never holds a URL, a request or response body,
//! or an upstream error message (upstreams echo prompts in those). The upstream's
//! message is kept apart, truncated, and only [`UpstreamError::client_message`] hands it
//! on, to the client whose request caused it.

use std::fmt;
use std::time::Duration;
use veil_domain::ChannelKind;

/// Longest upstream error message passed on to a client, in characters.
const MAX_MESSAGE_CHARS: usize = 500;
/// Longest upstream error code kept; anything longer is not a code.
const MAX_CODE_CHARS: usize = 64;
/// The longest wait a `retry-after` header can ask for; larger values are clamped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Which deadline of an upstream call ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutPhase {
    /// Opening the connection (TCP and TLS).
    Connect,
    /// Waiting for the response headers after sending the request.
    FirstByte,
    /// Silence between two chunks of the body.
    Idle,
    /// The whole call, body included.
    Total,
}

impl TimeoutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::FirstByte => "first_byte",
            Self::Idle => "idle",
            Self::Total => "total",
        }
    }
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// The connection could not be opened, or broke before the response started.
    #[error("could not connect to the upstream")]
    Connect,
    #[error("upstream {0} timeout")]
    Timeout(TimeoutPhase),
    /// The upstream answered with a non-2xx status.
    #[error("upstream returned HTTP {status}{}", code_suffix(code.as_deref()))]
    Status {
        status: u16,
        /// From `retry-after-ms` or `retry-after` (seconds).
        retry_after: Option<Duration>,
        /// The upstream's own message, at most 500 characters. May echo the prompt:
        /// for the client only, never for logs.
        message: String,
        /// The upstream's error `code` (or its `type` when there is no code), only when
        /// it looks like an identifier.
        code: Option<String>,
    },
    /// The upstream's answer broke the protocol: invalid JSON or SSE, or too large.
    #[error("malformed upstream response: {0}")]
    Malformed(&'static str),
    #[error("the channel's credential variable {env} is not set")]
    MissingCredential { env: String },
    /// The channel itself is unusable (its base URL or credential cannot be used in a
    /// request); a config check should have caught it.
    #[error("the channel is misconfigured: {0}")]
    Misconfigured(&'static str),
    #[error("channels of type {0} are not supported yet")]
    Unsupported(ChannelKind),
    /// The channel's upstream type cannot serve this endpoint (e.g. legacy completions
    /// on an Anthropic channel).
    #[error("this channel type does not serve {0}")]
    EndpointUnsupported(&'static str),
    /// The request cannot be expressed in the upstream's format; the client's to fix.
    /// The message names fields, never their content.
    #[error("the request cannot be translated for this upstream")]
    Untranslatable(String),
    /// The upstream reported an error inside a stream it had started (e.g. Anthropic's
    /// `overloaded_error` event). The message may echo the prompt: client only.
    #[error("the upstream reported an error mid-stream{}", code_suffix(kind.as_deref()))]
    Reported { kind: Option<String>, message: String },
    /// The stream ended (or broke) before OpenAI's `[DONE]` marker, or a body was cut.
    #[error("the upstream response ended early")]
    Truncated,
}

fn code_suffix(code: Option<&str>) -> String {
    code.map(|code| format!(" ({code})")).unwrap_or_default()
}

impl UpstreamError {
    /// Whether another channel may be tried, as long as nothing reached the client yet:
    /// the upstream either never saw the request or refused it for reasons of its own
    /// (rate limit, overload, server fault).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect | Self::Timeout(TimeoutPhase::Connect | TimeoutPhase::FirstByte) => true,
            Self::Status { status, .. } => *status == 429 || (500..=599).contains(status),
            Self::Timeout(TimeoutPhase::Idle | TimeoutPhase::Total)
            | Self::Malformed(_)
            | Self::MissingCredential { .. }
            | Self::Misconfigured(_)
            | Self::Unsupported(_)
            | Self::EndpointUnsupported(_)
            | Self::Untranslatable(_)
            | Self::Reported { .. }
            | Self::Truncated => false,
        }
    }

    /// The upstream's HTTP status, when it answered with an error status.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the upstream asked callers to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the upstream refused the channel's own credential (the operator's
    /// problem, not the client's).
    pub fn is_credential_rejected(&self) -> bool {
        matches!(self, Self::Status { status: 401 | 403, .. })
    }

    /// A clear sentence for the API client. It names no channel, URL or environment
    /// variable. For upstream error statuses it carries the upstream's message, except
    /// when the upstream rejected Veil's credential: those messages often quote part of
    /// the operator's key, and the client cannot fix them anyway.
    pub fn client_message(&self) -> String {
        match self {
            Self::Connect => "Could not connect to the upstream provider.".to_owned(),
            Self::Timeout(TimeoutPhase::Connect) => "Timed out connecting to the upstream provider.".to_owned(),
            Self::Timeout(TimeoutPhase::FirstByte) => {
                "The upstream provider did not start answering in time.".to_owned()
            }
            Self::Timeout(TimeoutPhase::Idle) => "The upstream provider stopped sending data.".to_owned(),
            Self::Timeout(TimeoutPhase::Total) => "The upstream call took longer than allowed.".to_owned(),
            Self::Status { status: status @ (401 | 403), .. } => {
                format!("The upstream provider rejected this relay's credential (HTTP {status}).")
            }
            Self::Status { status, message, .. } if message.is_empty() => {
                format!("The upstream provider returned HTTP {status}.")
            }
            Self::Status { status, message, .. } => {
                format!("The upstream provider returned HTTP {status}: {message}")
            }
            Self::Malformed(reason) => {
                format!("The upstream provider sent an invalid response ({reason}).")
            }
            Self::MissingCredential { .. } | Self::Misconfigured(_) => {
                "The upstream channel for this model is not configured correctly.".to_owned()
            }
            Self::Unsupported(kind) => {
                format!("Upstream channels of type {kind} are not supported yet.")
            }
            Self::EndpointUnsupported(endpoint) => {
                format!("The upstream serving this model does not offer {endpoint}.")
            }
            Self::Untranslatable(reason) => reason.clone(),
            Self::Reported { message, .. } if message.is_empty() => {
                "The upstream provider reported an error.".to_owned()
            }
            Self::Reported { message, .. } => format!("The upstream provider reported an error: {message}"),
            Self::Truncated => "The upstream response ended before it was complete.".to_owned(),
        }
    }

    /// Builds a [`UpstreamError::Status`] from an upstream error response: `headers` for
    /// `retry-after`, and `body` read as OpenAI's `{"error": {"message", "type",
    /// "code"}}` or the shapes other OpenAI-compatible servers use (`{"error": "…"}`,
    /// `{"message": "…"}`, FastAPI's `{"detail": "…"}`). A body of another form (an
    /// HTML error page, say) gives an empty message: it is not passed on.
    pub fn from_status(status: u16, headers: &http::HeaderMap, body: &[u8]) -> Self {
        let (message, code) = parse_error_body(body);
        Self::Status { status, retry_after: parse_retry_after(headers), message, code }
    }
}

fn parse_error_body(body: &[u8]) -> (String, Option<String>) {
    let Ok(serde_json::Value::Object(root)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (String::new(), None);
    };
    let text = |value: Option<&serde_json::Value>| value.and_then(serde_json::Value::as_str).map(str::to_owned);
    match root.get("error") {
        Some(serde_json::Value::Object(error)) => {
            let message = text(error.get("message")).unwrap_or_default();
            let code = match error.get("code") {
                Some(serde_json::Value::String(code)) => Some(code.clone()),
                Some(serde_json::Value::Number(code)) => Some(code.to_string()),
                _ => None,
            }
            .or_else(|| text(error.get("type")));
            (truncate(&message), code.filter(|code| looks_like_code(code)))
        }
        Some(serde_json::Value::String(message)) => (truncate(message), None),
        _ => {
            let message = text(root.get("message")).or_else(|| text(root.get("detail"))).unwrap_or_default();
            (truncate(&message), None)
        }
    }
}

fn truncate(message: &str) -> String {
    let message = message.trim();
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

/// Codes end up in logs, so only short identifier-like strings are kept.
fn looks_like_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_CODE_CHARS
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `retry-after-ms` (OpenAI's, in milliseconds) wins over `retry-after` (seconds; the
/// HTTP-date form is rare from APIs and is ignored).
fn parse_retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<f64>().ok())
            .filter(|value| value.is_finite() && *value >= 0.0)
    };
    let wait = number("retry-after-ms").map(|ms| ms / 1000.0).or_else(|| number("retry-after"))?;
    Some(Duration::from_secs_f64(wait.min(MAX_RETRY_AFTER.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn parses_openai_error_bodies() {
        let body = br#"{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
        let error = UpstreamError::from_status(429, &headers(&[("retry-after", "20")]), body);
        assert_eq!(
            error,
            UpstreamError::Status {
                status: 429,
                retry_after: Some(Duration::from_secs(20)),
                message: "Rate limit reached for gpt-4o".to_owned(),
                code: Some("rate_limit_exceeded".to_owned()),
            }
        );
        assert!(error.is_retryable());
        assert_eq!(error.retry_after(), Some(Duration::from_secs(20)));
        assert_eq!(error.to_string(), "upstream returned HTTP 429 (rate_limit_exceeded)");
    }

    #[test]
    fn display_never_carries_the_upstream_message() {
        let body = br#"{"error":{"message":"you said: my secret prompt","type":"invalid_request_error","code":null}}"#;
        let error = UpstreamError::from_status(400, &HeaderMap::new(), body);
        assert_eq!(error.to_string(), "upstream returned HTTP 400 (invalid_request_error)");
        assert!(!format!("{error}").contains("secret"));
        assert!(error.client_message().contains("my secret prompt"));
        assert!(!error.is_retryable());
    }

    #[test]
    fn odd_codes_are_dropped_and_long_messages_truncated() {
        let long = "x".repeat(2000);
        let body =
            serde_json::to_vec(&serde_json::json!({"error": {"message": long, "code": "has spaces in it"}})).unwrap();
        let UpstreamError::Status { message, code, .. } = UpstreamError::from_status(500, &HeaderMap::new(), &body)
        else {
            panic!("expected a status error");
        };
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(message.ends_with('…'));
        assert_eq!(code, None);
        let numeric = UpstreamError::from_status(500, &HeaderMap::new(), br#"{"error":{"message":"m","code":1234}}"#);
        assert!(numeric.to_string().ends_with("(1234)"));
    }

    #[test]
    fn other_error_shapes_and_non_json_bodies() {
        let shapes: [(&[u8], &str); 5] = [
            (br#"{"error":"model 'llama3' not found"}"#, "model 'llama3' not found"),
            (br#"{"message":"bad things"}"#, "bad things"),
            (br#"{"detail":"Not Found"}"#, "Not Found"),
            (b"<html><body>502 Bad Gateway</body></html>", ""),
            (b"", ""),
        ];
        for (body, expected) in shapes {
            let error = UpstreamError::from_status(502, &HeaderMap::new(), body);
            assert!(matches!(&error, UpstreamError::Status { message, .. } if message == expected), "{error:?}");
        }
        let html = UpstreamError::from_status(502, &HeaderMap::new(), b"<html>secret</html>");
        assert_eq!(html.client_message(), "The upstream provider returned HTTP 502.");
    }

    #[test]
    fn retry_after_forms() {
        let parse = |pairs: &[(&'static str, &'static str)]| parse_retry_after(&headers(pairs));
        assert_eq!(parse(&[("retry-after", "3")]), Some(Duration::from_secs(3)));
        assert_eq!(parse(&[("retry-after", "1.5")]), Some(Duration::from_millis(1500)));
        assert_eq!(parse(&[("retry-after-ms", "250"), ("retry-after", "9")]), Some(Duration::from_millis(250)));
        assert_eq!(parse(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]), None);
        assert_eq!(parse(&[("retry-after", "-1")]), None);
        assert_eq!(parse(&[("retry-after", "1e12")]), Some(MAX_RETRY_AFTER));
        assert_eq!(parse(&[]), None);
    }

    #[test]
    fn retryable_kinds() {
        let status = |status| UpstreamError::Status { status, retry_after: None, message: String::new(), code: None };
        assert!(UpstreamError::Connect.is_retryable());
        assert!(UpstreamError::Timeout(TimeoutPhase::Connect).is_retryable());
        assert!(UpstreamError::Timeout(TimeoutPhase::FirstByte).is_retryable());
        assert!(!UpstreamError::Timeout(TimeoutPhase::Idle).is_retryable());
        assert!(!UpstreamError::Timeout(TimeoutPhase::Total).is_retryable());
        assert!(status(429).is_retryable());
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!UpstreamError::Truncated.is_retryable());
        assert!(!UpstreamError::Malformed("x").is_retryable());
        assert!(!UpstreamError::MissingCredential { env: "K".to_owned() }.is_retryable());
        assert!(!UpstreamError::Unsupported(ChannelKind::Gemini).is_retryable());
    }

    #[test]
    fn client_messages_hide_operator_details() {
        let rejected = UpstreamError::from_status(
            401,
            &HeaderMap::new(),
            br#"{"error":{"message":"Incorrect API key provided: sk-proj-****abcd","code":"invalid_api_key"}}"#,
        );
        assert!(rejected.is_credential_rejected());
        assert!(!rejected.client_message().contains("sk-proj"));
        let missing = UpstreamError::MissingCredential { env: "OPENAI_API_KEY".to_owned() };
        assert!(missing.to_string().contains("OPENAI_API_KEY"));
        assert!(!missing.client_message().contains("OPENAI_API_KEY"));
        assert_eq!(UpstreamError::Timeout(TimeoutPhase::Idle).to_string(), "upstream idle timeout");
        assert!(UpstreamError::Unsupported(ChannelKind::Bedrock).client_message().contains("bedrock"));
    }
}
