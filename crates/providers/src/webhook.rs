//! Posting an operator's notification to a webhook: one JSON body, a few headers, a
//! deadline. It lives here because this crate owns Veil's outbound HTTP client; what is
//! sent, signed and retried is the server's business (`notify.rs`).

use crate::HttpClient;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The receiver could not be reached, or did not answer within the deadline.
    #[error("the webhook could not be reached")]
    Unreachable,
    /// The receiver answered with a non-2xx status.
    #[error("the webhook answered HTTP {0}")]
    Status(u16),
}

impl WebhookError {
    /// Whether trying again later may help (a 4xx other than 408/429 will not).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable => true,
            Self::Status(status) => *status == 408 || *status == 429 || *status >= 500,
        }
    }
}

/// POSTs `body` as `application/json` to `url` with `headers`, waiting at most `deadline`
/// for the whole exchange. The URL is the operator's own; it is never logged here.
pub async fn post_json(
    http: &HttpClient,
    url: &str,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
    deadline: Duration,
) -> Result<(), WebhookError> {
    let mut request =
        http.reqwest().post(url).timeout(deadline).header(http::header::CONTENT_TYPE, "application/json").body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.map_err(|_| WebhookError::Unreachable)?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(WebhookError::Status(status.as_u16())) }
}
