//! Turning an upstream OpenAI event stream into the client's SSE response.
//!
//! Each upstream event is forwarded as soon as it is parsed; nothing is buffered beyond
//! the event in hand, so memory stays flat however long the stream runs. On the way the
//! usage is captured (Veil always asks the upstream for it) and hidden again from
//! clients that did not ask, and generated text is counted so a stream that ends without
//! usage can still be settled from an estimate. When the stream ends — completed,
//! failed, or dropped because the client went away — the call record is finished.
//!
//! A client of another format (Anthropic, Gemini, Responses) gets the same stream
//! re-encoded event by event in its own format ([`ClientStream`]): each OpenAI chunk is
//! read for usage and restored as above, then translated, so billing and the firewall
//! see one form whatever the client speaks.
//!
//! A stream the upstream leaves silent for `[server] stream_keepalive` gets a keep-alive
//! toward the client ([`KeepAlive`]), so proxies and clients with read timeouts do not cut
//! a long think short. It is written beside the upstream events, never into them: the
//! upstream's own idle timeout, the accounting, the PII restorer and the debug capture
//! see only what the upstream sent.

use crate::call::Call;
use crate::capture::{CaptureSink, Capturing};
use crate::error::ApiError;
use crate::openai::restore::ChunkRestorer;
use crate::openai::usage;
use crate::records::Committed;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::{Map, Value};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::time::Instant;
use veil_domain::{ErrorCode, TokenUsage};
use veil_protocol::translate::StreamTranslator;
use veil_providers::{EventStream, SseEvent, UpstreamError};

pub struct StreamPlan {
    pub client_wants_usage: bool,
    /// The request as sent, kept (shared, not copied) so the prompt is counted locally
    /// only if the upstream never reports usage.
    pub request: Arc<Map<String, Value>>,
    /// Set when the PII firewall replaced values in the request.
    pub restore: Option<veil_privacy::Restorer>,
    /// Set when the key's owner turned debug capture on: what the client receives is
    /// copied (bounded) and sealed when the stream ends.
    pub capture: Option<(Capturing, CaptureSink)>,
    /// Set when the client speaks another format than OpenAI Chat.
    pub client: Option<ClientStream>,
}

/// Re-encoding for a client of another format.
pub struct ClientStream {
    pub translator: StreamTranslator,
    pub framing: Framing,
}

/// How a translated stream's events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events.
    Sse,
    /// One JSON array whose elements arrive as they are generated (Gemini's
    /// `streamGenerateContent` without `alt=sse`).
    JsonArray,
}

pub fn sse_response(events: EventStream, call: Call, plan: StreamPlan) -> Response {
    let restore = plan.restore.clone().map(ChunkRestorer::new);
    let keepalive = KeepAlive::every(call.stream_keepalive());
    let body = RelayStream {
        keepalive,
        events,
        restore,
        call: Some(call),
        plan,
        usage: None,
        output_estimate: 0,
        generated: usage::GeneratedText::default(),
        state: State::Streaming,
        committed: Committed::default(),
        elements: 0,
    };
    let json_array = body.plan.client.as_ref().is_some_and(|c| c.framing == Framing::JsonArray);
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    let content_type = if json_array { "application/json" } else { "text/event-stream" };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell reverse proxies in front of Veil not to buffer the stream either.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[derive(PartialEq, Eq)]
enum State {
    Streaming,
    /// `[DONE]` was forwarded; the stream ends at the next poll.
    Done,
    Ended,
}

struct RelayStream {
    events: EventStream,
    /// `None` when keep-alives are turned off.
    keepalive: Option<KeepAlive>,
    restore: Option<ChunkRestorer>,
    call: Option<Call>,
    plan: StreamPlan,
    usage: Option<TokenUsage>,
    output_estimate: u64,
    /// Generated text of the fast path, counted in batches.
    generated: usage::GeneratedText,
    state: State,
    /// The settlement's commit; the body ends only once it resolves (strict durability).
    committed: Committed,
    /// Elements written so far, for [`Framing::JsonArray`].
    elements: usize,
}

impl RelayStream {
    /// What to send the client for one upstream event, if anything.
    fn forward(&mut self, event: SseEvent) -> Option<Bytes> {
        if self.plan.client.is_some() {
            return self.forward_translated(event);
        }
        if event.data == "[DONE]" {
            self.state = State::Done;
            // Whatever the PII restorer still holds goes out before the end.
            if let Some(closing) = self.restore.as_mut().and_then(ChunkRestorer::closing_chunk) {
                let mut bytes = frame(&closing.to_string()).to_vec();
                bytes.extend_from_slice(b"data: [DONE]\n\n");
                return Some(Bytes::from(bytes));
            }
            return Some(Bytes::from_static(b"data: [DONE]\n\n"));
        }
        if self.restore.is_none() {
            return self.forward_fast(event);
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(&event.data) else {
            // Not JSON: pass it on unchanged; it is the upstream's business.
            return Some(frame(&event.data));
        };
        let restored = self.restore.as_mut().is_some_and(|restore| restore.apply(&mut chunk));
        if let Some(seen) = usage::from_value(&chunk) {
            self.usage = Some(seen);
        }
        self.output_estimate += usage::estimate_output(&chunk);
        if chunk.get("choices").is_some_and(|c| c.as_array().is_some_and(|a| !a.is_empty()))
            && let Some(call) = self.call.as_mut()
        {
            call.mark_first_token();
        }
        if self.plan.client_wants_usage {
            return Some(if restored { frame(&chunk.to_string()) } else { frame(&event.data) });
        }
        // The client did not ask for usage: drop the usage-only chunk and the
        // `"usage": null` field the upstream adds to every other chunk.
        let is_usage_only = chunk.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty)
            && chunk.get("usage").is_some_and(Value::is_object);
        if is_usage_only {
            return None;
        }
        match chunk.as_object_mut() {
            Some(object) if object.get("usage").is_some_and(Value::is_null) => {
                object.remove("usage");
                Some(frame(&chunk.to_string()))
            }
            _ if restored => Some(frame(&chunk.to_string())),
            _ => Some(frame(&event.data)),
        }
    }

    /// The common path (no PII restore): read what is needed without building a JSON
    /// tree and forward the upstream's own bytes, trimmed only of what the client did not
    /// ask for.
    fn forward_fast(&mut self, event: SseEvent) -> Option<Bytes> {
        let generated = &mut self.generated;
        let Some(facts) = usage::probe_chunk(&event.data, |text| generated.note(text)) else {
            return Some(frame(&event.data));
        };
        let usage_only = !facts.has_choices && facts.usage.is_some();
        if let Some(seen) = facts.usage {
            self.usage = Some(seen);
        }
        if facts.has_choices
            && let Some(call) = self.call.as_mut()
        {
            call.mark_first_token();
        }
        if self.plan.client_wants_usage {
            return Some(frame(&event.data));
        }
        if usage_only {
            return None;
        }
        if let Some(stripped) = usage::strip_null_usage(&event.data) {
            return Some(frame(&stripped));
        }
        if event.data.contains("\"usage\"") && facts.usage.is_none() {
            // A `usage: null` in a form the text match does not know: take the slow way.
            if let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&event.data) {
                object.remove("usage");
                return Some(frame(&Value::Object(object).to_string()));
            }
        }
        Some(frame(&event.data))
    }

    /// [`RelayStream::forward`] for a client of another format: the chunk is read and
    /// restored as OpenAI's, then re-encoded.
    fn forward_translated(&mut self, event: SseEvent) -> Option<Bytes> {
        let mut out = Vec::new();
        if event.data == "[DONE]" {
            self.state = State::Done;
            if let Some(closing) = self.restore.as_mut().and_then(ChunkRestorer::closing_chunk) {
                self.translate(&SseEvent::data(closing.to_string()), &mut out);
            }
            self.translate(&event, &mut out);
            if let Some(client) = self.plan.client.as_mut() {
                client.translator.finish(&mut out);
            }
            let mut bytes = self.framed(&out);
            if self.is_json_array() {
                bytes.extend_from_slice(if self.elements == 0 { b"[]".as_slice() } else { b"]".as_slice() });
            }
            return Some(Bytes::from(bytes));
        }
        let Ok(mut chunk) = serde_json::from_str::<Value>(&event.data) else {
            // Not JSON: nothing a translation can carry.
            return None;
        };
        let restored = self.restore.as_mut().is_some_and(|restore| restore.apply(&mut chunk));
        if let Some(seen) = usage::from_value(&chunk) {
            self.usage = Some(seen);
        }
        self.output_estimate += usage::estimate_output(&chunk);
        if chunk.get("choices").is_some_and(|c| c.as_array().is_some_and(|a| !a.is_empty()))
            && let Some(call) = self.call.as_mut()
        {
            call.mark_first_token();
        }
        let event = if restored { SseEvent::data(chunk.to_string()) } else { event };
        self.translate(&event, &mut out);
        let bytes = self.framed(&out);
        (!bytes.is_empty()).then(|| Bytes::from(bytes))
    }

    fn translate(&mut self, event: &SseEvent, out: &mut Vec<SseEvent>) {
        let Some(client) = self.plan.client.as_mut() else { return };
        if let Err(error) = client.translator.push(event, out) {
            // A chunk the OpenAI decoder cannot read is the upstream's fault; it is
            // skipped rather than ending a stream the client is already reading.
            tracing::warn!(error = %error, "an upstream chunk could not be translated; skipped");
        }
    }

    /// The keep-alive to send now, if the client has heard nothing for the interval.
    fn keepalive_due(&mut self, cx: &mut Context<'_>) -> Option<Bytes> {
        let keepalive = self.keepalive.as_mut()?;
        if keepalive.poll_due(cx).is_pending() {
            return None;
        }
        if !self.is_json_array() {
            return Some(Bytes::from_static(SSE_KEEPALIVE));
        }
        // Whitespace is valid JSON between an array's elements, but before its `[` a
        // client that checks the first byte would stumble: nothing is sent until then.
        (self.elements > 0).then_some(Bytes::from_static(JSON_ARRAY_KEEPALIVE))
    }

    fn is_json_array(&self) -> bool {
        self.plan.client.as_ref().is_some_and(|c| c.framing == Framing::JsonArray)
    }

    /// Translated events in the client's framing.
    fn framed(&mut self, events: &[SseEvent]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for event in events {
            if self.is_json_array() {
                bytes.extend_from_slice(if self.elements == 0 { b"[".as_slice() } else { b",\r\n".as_slice() });
                bytes.extend_from_slice(event.data.as_bytes());
                self.elements += 1;
            } else {
                bytes.extend_from_slice(&event.encode());
            }
        }
        bytes
    }

    fn settle(&mut self) {
        let Some(call) = self.call.as_mut() else { return };
        match self.usage {
            Some(usage) => call.set_usage(usage, false),
            None => call.set_usage(
                TokenUsage {
                    input_tokens: usage::estimate_prompt(&self.plan.request),
                    output_tokens: self.output_estimate + self.generated.tokens(),
                    ..TokenUsage::default()
                },
                true,
            ),
        }
    }

    fn finish(&mut self, error: Option<ErrorCode>) {
        self.settle();
        if let Some((capture, sink)) = self.plan.capture.take() {
            capture.finish(&sink, 200);
        }
        if let Some(call) = self.call.take() {
            self.committed = call.finish(200, error);
        }
        self.state = State::Ended;
    }

    fn fail(&mut self, error: &UpstreamError) -> Bytes {
        let api = ApiError::from_upstream(error);
        let bytes = match self.plan.client.as_mut() {
            Some(client) => {
                let mut out = Vec::new();
                client.translator.error(&api.info(), &mut out);
                let mut bytes = self.framed(&out);
                if self.is_json_array() {
                    bytes.extend_from_slice(if self.elements == 0 { b"[]".as_slice() } else { b"]".as_slice() });
                }
                Bytes::from(bytes)
            }
            None => frame(&api.openai_body().to_string()),
        };
        if let Some((capture, _)) = self.plan.capture.as_mut() {
            capture.append(&bytes);
        }
        self.finish(Some(api.code));
        bytes
    }
}

impl Drop for RelayStream {
    fn drop(&mut self) {
        // The client went away mid-stream: settle from what was seen; `Call`'s own drop
        // records the disconnect.
        if self.call.is_some() {
            self.settle();
        }
        if let Some((capture, sink)) = self.plan.capture.take() {
            capture.finish(&sink, 499);
        }
    }
}

/// An SSE comment: every SSE parser skips lines starting with `:` (the SDKs of OpenAI,
/// Anthropic and Google included), so it reaches no event handler.
const SSE_KEEPALIVE: &[u8] = b": keep-alive\n\n";
/// For Gemini's JSON-array framing, which has no comments: insignificant whitespace.
const JSON_ARRAY_KEEPALIVE: &[u8] = b"\n";

/// When the client is due a keep-alive: after `every` without a byte sent to it.
///
/// Sending a chunk only notes the time; the timer is re-armed when it fires early, so a
/// busy stream costs one clock read per chunk rather than one timer reset.
struct KeepAlive {
    every: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    last_sent: Instant,
}

impl KeepAlive {
    fn every(every: Duration) -> Option<Self> {
        if every.is_zero() {
            return None;
        }
        let now = Instant::now();
        Some(Self { every, timer: Box::pin(tokio::time::sleep_until(now + every)), last_sent: now })
    }

    fn sent(&mut self) {
        self.last_sent = Instant::now();
    }

    /// Ready once `every` has passed since the last byte; the wait then starts again.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.timer.as_mut().poll(cx));
            let due = self.last_sent + self.every;
            let now = Instant::now();
            if due <= now {
                self.last_sent = now;
                self.timer.as_mut().reset(now + self.every);
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(due);
        }
    }
}

fn frame(data: &str) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

impl Stream for RelayStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Ended => return Pin::new(&mut this.committed).poll(cx).map(|()| None),
                State::Done => {
                    this.finish(None);
                    continue;
                }
                State::Streaming => {}
            }
            match this.events.as_mut().poll_next(cx) {
                Poll::Pending => {
                    // Not captured: it is transport, not part of the answer.
                    return match this.keepalive_due(cx) {
                        Some(bytes) => Poll::Ready(Some(Ok(bytes))),
                        None => Poll::Pending,
                    };
                }
                Poll::Ready(Some(Ok(event))) => {
                    if let Some(bytes) = this.forward(event) {
                        if let Some((capture, _)) = this.plan.capture.as_mut() {
                            capture.append(&bytes);
                        }
                        if let Some(keepalive) = this.keepalive.as_mut() {
                            keepalive.sent();
                        }
                        return Poll::Ready(Some(Ok(bytes)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(error = %error, "upstream stream failed after the first byte");
                    return Poll::Ready(Some(Ok(this.fail(&error))));
                }
                Poll::Ready(None) => {
                    // Ended without `[DONE]`: the upstream died mid-stream.
                    return Poll::Ready(Some(Ok(this.fail(&UpstreamError::Truncated))));
                }
            }
        }
    }
}
