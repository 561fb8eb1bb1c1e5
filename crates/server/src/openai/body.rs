//! Reading an OpenAI-format request body. Every way a body can be unusable (too large,
//! not JSON, not an object) is answered in OpenAI's error shape before any routing or
//! upstream work, and the parse error names a position, never the offending content.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::{Map, Value};

pub struct OpenAiJson(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for OpenAiJson {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = request.extensions().get::<BodyLimit>().map_or(usize::MAX, |l| l.0);
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(limit)
            } else {
                ApiError::invalid_request("The request body could not be read.")
            }
        })?;
        parse_object(&bytes).map(OpenAiJson)
    }
}

/// The configured body limit, made visible to the extractor for its message.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid_request(
            "The request body is empty. Send a JSON object (Content-Type: application/json).",
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_request("The request body must be a JSON object.")),
        Err(error) => Err(ApiError::invalid_request(format!(
            "We could not parse the JSON body of your request: {} at line {} column {}. (HINT: This likely means you aren't using your HTTP library correctly.)",
            describe(&error),
            error.line(),
            error.column()
        ))),
    }
}

/// serde_json's category, without its message (which can quote the input).
fn describe(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Eof => "unexpected end of input",
        serde_json::error::Category::Syntax => "invalid JSON syntax",
        serde_json::error::Category::Data => "invalid data",
        serde_json::error::Category::Io => "read error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_bodies_get_clear_errors_without_echoing_content() {
        let error = parse_object(b"{\"model\": \"secret-canary\",").unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert!(error.message.contains("unexpected end of input"), "{}", error.message);
        assert!(!error.message.contains("secret-canary"));
        let error = parse_object(b"{\"a\": secret-canary}").unwrap_err();
        assert!(!error.message.contains("secret-canary"));
        assert!(parse_object(b"[1, 2]").unwrap_err().message.contains("JSON object"));
        assert!(parse_object(b"").unwrap_err().message.contains("empty"));
        assert_eq!(parse_object(b"{\"model\": \"m\"}").unwrap()["model"], "m");
    }
}
