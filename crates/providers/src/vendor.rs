//! [`VendorProvider`]: the adapter for upstreams whose chat API is not OpenAI's
//! (Anthropic, Gemini, Bedrock). A [`Dialect`] says where a call goes and how it is
//! authenticated; the translation itself is `veil-protocol`'s, so the request leaves in
//! the vendor's format and its answer — whole or streamed, event by event — comes back
//! as OpenAI Chat, the relay's working form.
//!
//! Promises: as for the OpenAI adapter (only the channel's credential is sent, every
//! call bounded by the channel's timeouts, bodies capped, dropping a stream cancels the
//! call), plus: a stream is complete only when the vendor's own end was seen; a body
//! that ends before it is [`UpstreamError::Truncated`].

use crate::error::UpstreamError;
use crate::http::HttpClient;
use crate::sse::SseEvent;
use crate::transport::{self, Body, MAX_BODY_BYTES};
use crate::{Endpoint, EventStream, Provider, UpstreamReply, UpstreamRequest};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderMap;
use std::collections::VecDeque;
use veil_domain::Timeouts;
use veil_protocol::translate::{self, StreamTranslator, UpstreamFormat};
use veil_protocol::{DecodeError, ProtocolError};

/// Where and how one vendor's chat calls are sent.
pub(crate) trait Dialect: Send + Sync + 'static {
    fn format(&self) -> UpstreamFormat;

    /// The URL and headers (credential included) of a chat call to `model`.
    fn target(&self, model: &str, stream: bool) -> Result<(String, HeaderMap), UpstreamError>;

    /// Puts what the vendor wants in the body itself (Anthropic: `model` and `stream`).
    fn complete_body(&self, _body: &mut serde_json::Value, _model: &str, _stream: bool) {}

    /// Last step before sending: request signing (Bedrock's SigV4).
    fn sign(&self, _url: &str, _headers: &mut HeaderMap, _body: &[u8]) -> Result<(), UpstreamError> {
        Ok(())
    }

    /// Turns a streamed answer's body into vendor events (SSE by default; Bedrock uses
    /// AWS event-stream framing).
    fn events(&self, body: Body) -> EventStream {
        transport::event_stream(body)
    }
}

pub(crate) struct VendorProvider<D> {
    http: HttpClient,
    timeouts: Timeouts,
    dialect: D,
}

impl<D: Dialect> VendorProvider<D> {
    pub(crate) fn new(http: HttpClient, timeouts: Timeouts, dialect: D) -> Self {
        Self { http, timeouts, dialect }
    }

    pub(crate) fn dialect(&self) -> &D {
        &self.dialect
    }

    /// Sends a body already in the vendor's format and returns the raw answer's body.
    pub(crate) async fn exchange(
        &self,
        url: &str,
        mut headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Body, UpstreamError> {
        self.dialect.sign(url, &mut headers, &body)?;
        transport::post(&self.http, url, headers, body, self.timeouts).await
    }

    pub(crate) async fn chat(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let format = self.dialect.format();
        let model = request.model.as_str();
        let mut body = translate::upstream_request(format, &request.body, model).map_err(untranslatable)?;
        self.dialect.complete_body(&mut body, model, request.stream);
        let (url, headers) = self.dialect.target(model, request.stream)?;
        let bytes =
            serde_json::to_vec(&body).map_err(|_| UpstreamError::Malformed("the request body could not be encoded"))?;
        let answer = self.exchange(&url, headers, bytes).await?;
        if request.stream {
            return Ok(UpstreamReply::Stream(translated(self.dialect.events(answer), format, model)));
        }
        let bytes = answer.read_all(MAX_BODY_BYTES).await?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| UpstreamError::Malformed("the upstream body is not JSON"))?;
        let openai = translate::upstream_response(format, &value, model).map_err(decode_error)?;
        let bytes = serde_json::to_vec(&openai)
            .map_err(|_| UpstreamError::Malformed("the translated answer could not be encoded"))?;
        Ok(UpstreamReply::Complete(Bytes::from(bytes)))
    }
}

#[async_trait]
impl<D: Dialect> Provider for VendorProvider<D> {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        match request.endpoint {
            Endpoint::ChatCompletions => self.chat(request).await,
            other => Err(UpstreamError::EndpointUnsupported(other.route())),
        }
    }
}

pub(crate) fn untranslatable(error: ProtocolError) -> UpstreamError {
    UpstreamError::Untranslatable(error.message)
}

pub(crate) fn decode_error(error: DecodeError) -> UpstreamError {
    match error {
        DecodeError::Malformed(reason) => UpstreamError::Malformed(reason),
        DecodeError::Upstream { kind, message } => UpstreamError::Reported { kind, message },
    }
}

struct Translating {
    raw: EventStream,
    translator: StreamTranslator,
    ready: VecDeque<SseEvent>,
    scratch: Vec<SseEvent>,
    ended: bool,
}

impl Translating {
    fn emit(&mut self) {
        self.ready.extend(self.scratch.drain(..));
    }

    fn complete(&mut self) {
        self.translator.finish(&mut self.scratch);
        self.emit();
        self.ended = true;
    }
}

/// The vendor's events as OpenAI Chat chunks, translated one event at a time and
/// ending with `[DONE]` once the vendor's own end was seen.
fn translated(raw: EventStream, format: UpstreamFormat, model: &str) -> EventStream {
    let state = Translating {
        raw,
        translator: StreamTranslator::from_upstream(format, model),
        ready: VecDeque::new(),
        scratch: Vec::new(),
        ended: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.ready.pop_front() {
                return Some((Ok(event), state));
            }
            if state.ended {
                return None;
            }
            match state.raw.next().await {
                Some(Ok(event)) => match state.translator.push(&event, &mut state.scratch) {
                    Ok(()) => {
                        state.emit();
                        if state.translator.is_complete() {
                            state.complete();
                        }
                    }
                    Err(error) => {
                        state.ended = true;
                        return Some((Err(decode_error(error)), state));
                    }
                },
                // The body ended: normal when the vendor's end was seen (Anthropic and
                // Gemini have no `[DONE]`), a cut otherwise.
                None | Some(Err(UpstreamError::Truncated)) if state.translator.is_complete() => state.complete(),
                None => {
                    state.ended = true;
                    return Some((Err(UpstreamError::Truncated), state));
                }
                Some(Err(error)) => {
                    state.ended = true;
                    return Some((Err(error), state));
                }
            }
        }
    }))
}
