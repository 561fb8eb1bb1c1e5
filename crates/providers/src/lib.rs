//! Everything that talks to upstream model providers: one [`Provider`] trait, one file
//! per vendor, the shared HTTP client, and the SSE parser.
//!
//! A provider receives a request already in its wire format (today: OpenAI's, with the
//! upstream model name filled in) and answers with either a complete JSON body or a
//! stream of SSE events, forwarded as they arrive. Errors are normalised into
//! [`UpstreamError`]; upstream error bodies are parsed into a short message that may be
//! shown to the client but is never logged (it can echo the prompt).

mod echo;
mod error;
mod http;
mod openai;
pub mod sse;

pub use echo::EchoProvider;
pub use error::{TimeoutPhase, UpstreamError};
pub use http::HttpClient;
pub use openai::OpenAiProvider;
pub use sse::{SseEvent, SseParser};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use veil_domain::{Channel, ChannelKind};

/// Which OpenAI-style endpoint a call is for; the path is relative to the base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    pub fn upstream_path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }
    /// The client-facing route, used as the call record's `path`.
    pub fn route(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
        }
    }
}

/// One call to send upstream. `body` is the complete JSON request in the provider's
/// wire format, with the upstream model name already in place.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub endpoint: Endpoint,
    pub body: serde_json::Map<String, serde_json::Value>,
    pub stream: bool,
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, UpstreamError>> + Send>>;

/// A successful upstream answer.
pub enum UpstreamReply {
    /// A whole JSON body (non-streaming calls).
    Complete(Bytes),
    /// Events as the upstream sends them, ending with OpenAI's `[DONE]` event when the
    /// stream completed normally. Dropping the stream cancels the upstream call.
    Stream(EventStream),
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError>;
}

/// A channel type whose adapter is not built yet.
struct UnsupportedProvider(ChannelKind);

#[async_trait]
impl Provider for UnsupportedProvider {
    async fn send(&self, _request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        Err(UpstreamError::Unsupported(self.0))
    }
}

/// Builds the provider for a channel. Credentials are read from the channel's
/// `api_key_env` here, once; a missing variable is reported when a call is made.
pub fn provider_for(channel: &Channel, http: &HttpClient) -> Arc<dyn Provider> {
    match channel.kind {
        ChannelKind::Echo => Arc::new(EchoProvider::new()),
        ChannelKind::Openai => Arc::new(OpenAiProvider::new(channel, http.clone())),
        // Accepted in the config so operators can declare them now; every call through
        // them fails with a clear `upstream_error` until their adapters land.
        kind @ (ChannelKind::Azure | ChannelKind::Anthropic | ChannelKind::Gemini | ChannelKind::Bedrock) => {
            Arc::new(UnsupportedProvider(kind))
        }
    }
}
