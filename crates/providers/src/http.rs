//! [`HttpClient`]: the one pooled HTTP client every provider shares, built once at
//! start-up and cheap to clone.
//!
//! It keeps connections alive between calls, speaks HTTP/2 where the upstream offers it
//! through ALPN, and verifies TLS with rustls against the platform's roots. It has no
//! overall timeout on purpose: a stream may legitimately last minutes, so each provider
//! enforces the channel's connect, first-byte, idle and total budgets per call.
//!
//! Known limit, from hyper: one HTTP/2 connection per origin, and requests beyond the
//! server's concurrent-stream limit (usually 100) queue. If that ever binds, shard calls
//! over several clients per channel.

use std::time::Duration;

/// How long opening a connection may take unless a channel's budget is shorter: the
/// client-level cap, since reqwest has no per-request connect timeout. Providers bound
/// connect plus first byte per call on top of it.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle pooled connections are closed after this long; upstream load balancers
/// typically drop them after 60–350 s.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("could not build the upstream HTTP client")]
pub struct HttpClientError(#[source] reqwest::Error);

#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    /// A client with [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn new() -> Result<Self, HttpClientError> {
        Self::with_connect_timeout(DEFAULT_CONNECT_TIMEOUT)
    }

    pub fn with_connect_timeout(connect_timeout: Duration) -> Result<Self, HttpClientError> {
        let inner = reqwest::Client::builder()
            .user_agent(concat!("veil/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .tcp_keepalive(TCP_KEEPALIVE)
            .http2_adaptive_window(true)
            // A redirect would replay the request, credential included, somewhere the
            // operator did not configure; upstream APIs do not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .build()
            .map_err(HttpClientError)?;
        Ok(Self { inner })
    }

    pub(crate) fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_clones_cheaply() {
        let client = HttpClient::new().unwrap();
        let _copy = client.clone();
    }
}
