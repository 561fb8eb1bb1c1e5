//! Each client format's error shape, for whole error responses. (Errors inside a stream
//! are written by each format's [`crate::StreamEncoder::error`].)

use crate::ClientFormat;
use crate::canonical::ErrorInfo;
use serde_json::{Value, json};

/// The error body a client of `format` expects for `error`.
pub fn body(format: ClientFormat, error: &ErrorInfo) -> Value {
    match format {
        ClientFormat::OpenAiChat | ClientFormat::OpenAiResponses => openai(error),
        ClientFormat::Anthropic => anthropic(error),
        ClientFormat::Gemini => gemini(error),
    }
}

/// `{"error": {"message", "type", "param", "code"}}`.
pub fn openai(error: &ErrorInfo) -> Value {
    json!({
        "error": {
            "message": error.message,
            "type": error.openai_type,
            "param": error.param,
            "code": error.code,
        }
    })
}

/// `{"type": "error", "error": {"type", "message"}}`, with Anthropic's error types.
/// Veil's own code rides along in the message's place it cannot: as `veil_code`.
pub fn anthropic(error: &ErrorInfo) -> Value {
    json!({
        "type": "error",
        "error": {
            "type": anthropic_type(error.status, &error.code),
            "message": error.message,
            "veil_code": error.code,
        }
    })
}

/// Anthropic's `error.type` for a status (their documented mapping).
pub fn anthropic_type(status: u16, code: &str) -> &'static str {
    match (status, code) {
        (_, "insufficient_quota") => "billing_error",
        (400, _) | (422, _) => "invalid_request_error",
        (401, _) => "authentication_error",
        (402, _) => "billing_error",
        (403, _) => "permission_error",
        (404, _) => "not_found_error",
        (413, _) => "request_too_large",
        (429, _) => "rate_limit_error",
        (504, _) => "timeout_error",
        (529, _) => "overloaded_error",
        _ => "api_error",
    }
}

/// Google's `{"error": {"code", "message", "status", "details"}}`.
pub fn gemini(error: &ErrorInfo) -> Value {
    json!({
        "error": {
            "code": error.status,
            "message": error.message,
            "status": gemini_status(error.status),
            "details": [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": error.code.to_ascii_uppercase(),
                "domain": "veil",
            }],
        }
    })
}

/// The canonical gRPC status name Google APIs use for an HTTP status.
pub fn gemini_status(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(status: u16, code: &str) -> ErrorInfo {
        ErrorInfo {
            status,
            code: code.into(),
            openai_type: "invalid_request_error".into(),
            message: "m".into(),
            param: None,
        }
    }

    #[test]
    fn each_format_has_its_own_shape() {
        let openai = body(ClientFormat::OpenAiChat, &info(404, "model_not_found"));
        assert_eq!(openai["error"]["code"], "model_not_found");
        let anthropic = body(ClientFormat::Anthropic, &info(404, "model_not_found"));
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "not_found_error");
        let gemini = body(ClientFormat::Gemini, &info(429, "rate_limit_exceeded"));
        assert_eq!(gemini["error"]["code"], 429);
        assert_eq!(gemini["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(anthropic_type(429, "insufficient_quota"), "billing_error");
    }
}
