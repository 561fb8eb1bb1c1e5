//! Everything that talks to upstream model providers: one [`Provider`] trait, one file
//! per vendor, the shared HTTP client, and the SSE parser.
//!
//! A provider receives a request in the relay's working form (OpenAI's wire format),
//! sends it with the channel's upstream model name in place of the public one — in the
//! vendor's own format for Anthropic, Gemini and Bedrock (`vendor.rs`, translated by
//! `veil-protocol`) — and answers with either a complete OpenAI JSON body or a stream of
//! OpenAI SSE events, forwarded as they arrive. Errors are normalised into [`UpstreamError`]; upstream error bodies are
//! parsed into a short message that may be shown to the client but is never logged (it
//! can echo the prompt).

mod anthropic;
pub mod aws;
mod bedrock;
mod credential;
mod echo;
mod error;
mod gemini;
mod http;
pub mod identity;
mod openai;
mod transport;
mod vendor;
mod videos;
pub mod webhook;
pub use veil_protocol::sse;

pub use echo::EchoProvider;
pub use error::{TimeoutPhase, UpstreamError};
pub use gemini::GeminiProvider;
pub use http::{DEFAULT_CONNECTIONS, HttpClient, HttpClientError, Transport};
pub use openai::{AZURE_DEFAULT_API_VERSION, OpenAiProvider};
pub use sse::{SseEvent, SseParser};
pub use videos::{UpstreamVideo, UpstreamVideoStatus, VideoUpstream};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use veil_domain::{Channel, ChannelKind, ModelName};

/// Which OpenAI-style endpoint a call is for; the path is relative to the base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    // --- media endpoints (OpenAI and Azure channels only)
    ImageGenerations,
    /// Multipart in, JSON out.
    ImageEdits,
    /// JSON in, audio bytes out (streamed, see [`UpstreamReply::Bytes`]).
    AudioSpeech,
    /// Multipart in; JSON, or text for `srt`/`vtt`, out.
    AudioTranscriptions,
    Moderations,
}

impl Endpoint {
    pub fn upstream_path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
            Self::ImageGenerations => "/images/generations",
            Self::ImageEdits => "/images/edits",
            Self::AudioSpeech => "/audio/speech",
            Self::AudioTranscriptions => "/audio/transcriptions",
            Self::Moderations => "/moderations",
        }
    }
    /// The client-facing route, used as the call record's `path`.
    pub fn route(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::ImageGenerations => "/v1/images/generations",
            Self::ImageEdits => "/v1/images/edits",
            Self::AudioSpeech => "/v1/audio/speech",
            Self::AudioTranscriptions => "/v1/audio/transcriptions",
            Self::Moderations => "/v1/moderations",
        }
    }

    /// Whether the request is sent as `multipart/form-data` (text fields from
    /// [`UpstreamRequest::body`], files from [`UpstreamRequest::files`]).
    pub fn is_multipart(self) -> bool {
        matches!(self, Self::ImageEdits | Self::AudioTranscriptions)
    }

    /// The media endpoints, which only OpenAI-compatible and Azure channels serve.
    pub fn is_media(self) -> bool {
        matches!(
            self,
            Self::ImageGenerations
                | Self::ImageEdits
                | Self::AudioSpeech
                | Self::AudioTranscriptions
                | Self::Moderations
        )
    }
}

/// One file of a multipart request (an image, a mask, an audio file). Its bytes are
/// content: never logged, shared (never copied) between attempts.
#[derive(Clone)]
pub struct FilePart {
    /// The form field name, e.g. `file`, `image[]`, `mask`.
    pub field: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

impl std::fmt::Debug for FilePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilePart").field("field", &self.field).field("len", &self.bytes.len()).finish_non_exhaustive()
    }
}

/// One call to send upstream.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub endpoint: Endpoint,
    /// The complete JSON request in the provider's wire format, shared (never copied)
    /// between attempts on different channels. Its `model` is not sent: see `model`.
    pub body: Arc<serde_json::Map<String, serde_json::Value>>,
    /// The model name this channel's upstream knows; sent as the body's `model`.
    pub model: ModelName,
    pub stream: bool,
    /// The file parts of a multipart request ([`Endpoint::is_multipart`]); `None` for JSON.
    pub files: Option<Arc<[FilePart]>>,
}

impl UpstreamRequest {
    /// The body as JSON with `model` set to [`UpstreamRequest::model`] (added when the
    /// body has none), written straight from the shared body without copying it.
    pub fn encode_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&BodyWithModel { body: &self.body, model: self.model.as_str() })
    }
}

struct BodyWithModel<'a> {
    body: &'a serde_json::Map<String, serde_json::Value>,
    model: &'a str,
}

impl serde::Serialize for BodyWithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let has_model = self.body.contains_key("model");
        let mut map = serializer.serialize_map(Some(self.body.len() + usize::from(!has_model)))?;
        if !has_model {
            map.serialize_entry("model", self.model)?;
        }
        for (key, value) in self.body {
            if key == "model" {
                map.serialize_entry(key, self.model)?;
            } else {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, UpstreamError>> + Send>>;
/// Raw body chunks as the upstream sends them; any error is the last item.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

/// A successful upstream answer.
pub enum UpstreamReply {
    /// A whole JSON body (non-streaming calls).
    Complete(Bytes),
    /// Events as the upstream sends them, ending with OpenAI's `[DONE]` event when the
    /// stream completed normally. Dropping the stream cancels the upstream call.
    Stream(EventStream),
    /// A non-JSON body (generated audio, subtitle text), chunk by chunk as it arrives,
    /// with the upstream's content type. Dropping the stream cancels the upstream call.
    Bytes { content_type: String, body: ByteStream },
}

impl UpstreamReply {
    /// Waits for a stream's first event before the answer is committed to the client, so
    /// an upstream that accepted the call and then broke, stalled past its idle timeout or
    /// reported an error before saying anything can still be replaced by another channel.
    /// The event is put back in front of the rest; other replies are returned as they are.
    pub async fn started(self) -> Result<Self, UpstreamError> {
        use futures_util::StreamExt;
        let Self::Stream(mut events) = self else { return Ok(self) };
        match events.next().await {
            // Every event of a relayed stream is OpenAI JSON; a first one that is not means
            // the upstream is broken, and nothing has been promised to the client yet.
            Some(Ok(first))
                if !first.is_done() && serde_json::from_str::<serde::de::IgnoredAny>(&first.data).is_err() =>
            {
                Err(UpstreamError::Malformed("the first stream event is not JSON"))
            }
            Some(Ok(first)) => {
                Ok(Self::Stream(Box::pin(futures_util::stream::once(async { Ok(first) }).chain(events))))
            }
            Some(Err(error)) => Err(error),
            None => Err(UpstreamError::Truncated),
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError>;

    /// The upstream's asynchronous video API, for the channel types that have one.
    fn videos(&self) -> Option<&dyn VideoUpstream> {
        None
    }
}

/// The pool for the channel's transport: its connect timeout (reqwest only has a
/// client-wide one) and whether its certificate is verified. Pools are built once and
/// shared by every channel, and every catalogue rebuild, with the same transport.
fn client_for(channel: &Channel, shared: &HttpClient) -> HttpClient {
    let transport = Transport { connect_timeout: channel.timeouts.connect, tls_verify: channel.tls_verify };
    shared.for_transport(transport).unwrap_or_else(|error| {
        // The shared pool verifies certificates: a fallback never weakens TLS.
        tracing::warn!(channel = channel.name.as_str(), error = %error, "using the default upstream transport");
        shared.clone()
    })
}

/// Builds the provider for a channel. Credentials are read from the channel's
/// `api_key_env` here, once; a missing variable is reported when a call is made.
pub fn provider_for(channel: &Channel, http: &HttpClient) -> Arc<dyn Provider> {
    provider_with(channel, http, None)
}

/// Like [`provider_for`], for a channel whose credential was stored through the
/// management API: `Some(Some(secret))` when it opened, `Some(None)` when it was stored
/// but could not be opened (calls then fail closed), `None` when none is stored.
pub fn provider_with(channel: &Channel, http: &HttpClient, stored: Option<Option<&str>>) -> Arc<dyn Provider> {
    match channel.kind {
        ChannelKind::Echo => Arc::new(EchoProvider::new()),
        ChannelKind::Openai | ChannelKind::Azure => match stored {
            Some(credential) => {
                Arc::new(OpenAiProvider::with_stored_credential(channel, client_for(channel, http), credential))
            }
            None => Arc::new(OpenAiProvider::new(channel, client_for(channel, http))),
        },
        ChannelKind::Anthropic => Arc::new(vendor::VendorProvider::new(
            client_for(channel, http),
            channel.timeouts,
            anthropic::Anthropic::new(channel, stored),
        )),
        ChannelKind::Gemini => Arc::new(GeminiProvider::new(channel, client_for(channel, http), stored)),
        ChannelKind::Bedrock => Arc::new(vendor::VendorProvider::new(
            client_for(channel, http),
            channel.timeouts,
            bedrock::Bedrock::new(channel, stored),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use serde_json::json;

    fn events(items: Vec<Result<SseEvent, UpstreamError>>) -> UpstreamReply {
        UpstreamReply::Stream(Box::pin(futures_util::stream::iter(items)))
    }

    #[tokio::test]
    async fn a_started_stream_keeps_its_first_event() {
        let reply = events(vec![Ok(SseEvent::data("{}")), Ok(SseEvent::data("two")), Ok(SseEvent::done())]);
        let Ok(UpstreamReply::Stream(stream)) = reply.started().await else { panic!("expected a stream") };
        let data: Vec<String> = stream.map(|event| event.unwrap().data).collect().await;
        assert_eq!(data, ["{}", "two", "[DONE]"]);
    }

    #[tokio::test]
    async fn a_stream_failing_before_its_first_event_is_an_error() {
        let broken = events(vec![Err(UpstreamError::Malformed("bad event")), Ok(SseEvent::data("late"))]);
        assert!(matches!(broken.started().await, Err(UpstreamError::Malformed("bad event"))));
        assert!(matches!(events(Vec::new()).started().await, Err(UpstreamError::Truncated)));
        let not_json = events(vec![Ok(SseEvent::data("{\"choices\": [oops")), Ok(SseEvent::done())]);
        assert!(matches!(not_json.started().await, Err(UpstreamError::Malformed(_))));
        let whole = UpstreamReply::Complete(Bytes::from_static(b"{}")).started().await;
        assert!(matches!(whole, Ok(UpstreamReply::Complete(_))));
    }

    fn request(body: serde_json::Value) -> UpstreamRequest {
        let serde_json::Value::Object(body) = body else { panic!("an object") };
        UpstreamRequest {
            endpoint: Endpoint::ChatCompletions,
            body: Arc::new(body),
            model: ModelName::parse("gpt-4o-mini-2024-07-18").unwrap(),
            stream: false,
            files: None,
        }
    }

    #[test]
    fn the_upstream_model_replaces_the_public_one() {
        let request = request(json!({"model": "gpt-4o-mini", "messages": [], "temperature": 0.5}));
        let sent: serde_json::Value = serde_json::from_slice(&request.encode_body().unwrap()).unwrap();
        assert_eq!(sent, json!({"model": "gpt-4o-mini-2024-07-18", "messages": [], "temperature": 0.5}));
        // The shared body is untouched for the next attempt.
        assert_eq!(request.body["model"], "gpt-4o-mini");
    }

    #[test]
    fn a_missing_model_is_added() {
        let sent: serde_json::Value =
            serde_json::from_slice(&request(json!({"input": "x"})).encode_body().unwrap()).unwrap();
        assert_eq!(sent, json!({"model": "gpt-4o-mini-2024-07-18", "input": "x"}));
    }
}
