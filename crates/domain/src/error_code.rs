//! The stable error codes clients and call records see. One enum, so a code can never
//! be misspelled and the call record stores a closed set of labels, not free text.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidApiKey,
    ModelNotFound,
    InvalidRequestError,
    RequestTooLarge,
    UpstreamError,
    UpstreamTimeout,
    IpNotAllowed,
    KeySuspended,
    PolicyUnsatisfiable,
    ContentBlocked,
    RateLimitExceeded,
    InsufficientQuota,
    /// The model exists but the operator has neither priced it nor marked it free.
    ModelNotPriced,
    /// The client went away before the call finished.
    ClientClosed,
    NotFound,
    /// Authenticated, but the account's role does not allow this.
    PermissionDenied,
    /// A generated-media URL past its expiry, or whose media was purged.
    MediaExpired,
    /// The change collides with what exists: a name taken, or an item the config file
    /// owns (it is changed there).
    Conflict,
    InternalError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 19] = [
        Self::InvalidApiKey,
        Self::ModelNotFound,
        Self::InvalidRequestError,
        Self::RequestTooLarge,
        Self::UpstreamError,
        Self::UpstreamTimeout,
        Self::IpNotAllowed,
        Self::KeySuspended,
        Self::PolicyUnsatisfiable,
        Self::ContentBlocked,
        Self::RateLimitExceeded,
        Self::InsufficientQuota,
        Self::ModelNotPriced,
        Self::ClientClosed,
        Self::NotFound,
        Self::PermissionDenied,
        Self::MediaExpired,
        Self::Conflict,
        Self::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidApiKey => "invalid_api_key",
            Self::ModelNotFound => "model_not_found",
            Self::InvalidRequestError => "invalid_request_error",
            Self::RequestTooLarge => "request_too_large",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::IpNotAllowed => "ip_not_allowed",
            Self::KeySuspended => "key_suspended",
            Self::PolicyUnsatisfiable => "policy_unsatisfiable",
            Self::ContentBlocked => "content_blocked",
            Self::RateLimitExceeded => "rate_limit_exceeded",
            Self::InsufficientQuota => "insufficient_quota",
            Self::ModelNotPriced => "model_not_priced",
            Self::ClientClosed => "client_closed",
            Self::NotFound => "not_found",
            Self::PermissionDenied => "permission_denied",
            Self::MediaExpired => "media_expired",
            Self::Conflict => "conflict",
            Self::InternalError => "internal_error",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == raw)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(serde_json::to_value(code).unwrap(), serde_json::json!(code.as_str()));
        }
    }
}
