//! The HTTP exchange every provider shares: send a request under the channel's
//! timeouts (connect plus first byte until the response headers, idle between body
//! chunks, total for the whole call), turn a non-2xx answer into an [`UpstreamError`]
//! from a bounded read of its body, read a whole body under a size cap, or parse an
//! event stream event by event as bytes arrive. Dropping a [`Body`] or an event stream
//! drops the response, which cancels the upstream call.

use crate::EventStream;
use crate::error::{TimeoutPhase, UpstreamError};
use crate::sse::{SseError, SseEvent, SseParser};
use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;
use veil_domain::Timeouts;

/// Largest successful non-streaming body accepted.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest error body read; the rest is not needed to find the message.
pub(crate) const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// After `[DONE]`, how long to wait for the body's end so that an HTTP/1.1 connection
/// can go back to the pool instead of being closed.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_millis(50);
/// How much to read after `[DONE]` before giving up on reusing the connection.
pub(crate) const MAX_DRAIN_BYTES: usize = 64 * 1024;
/// Waits for the response headers within the first-byte budget (counted from sending,
/// connection setup included) and within the total. The connect timeout itself is the
/// client's (see `provider_for`).
pub(crate) async fn headers_within(
    send: impl Future<Output = Result<reqwest::Response, reqwest::Error>>,
    started: Instant,
    timeouts: Timeouts,
    deadline: Instant,
) -> Result<reqwest::Response, UpstreamError> {
    let first_byte_deadline = started + timeouts.first_byte;
    let (limit, phase) = if first_byte_deadline < deadline {
        (first_byte_deadline, TimeoutPhase::FirstByte)
    } else {
        (deadline, TimeoutPhase::Total)
    };
    match tokio::time::timeout_at(limit, send).await {
        Err(_) => Err(UpstreamError::Timeout(phase)),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(send_error(&error)),
    }
}

/// Maps a failure before the response headers. No URL or body is carried along.
pub(crate) fn send_error(error: &reqwest::Error) -> UpstreamError {
    if error.is_connect() && error.is_timeout() {
        UpstreamError::Timeout(TimeoutPhase::Connect)
    } else if error.is_timeout() {
        UpstreamError::Timeout(TimeoutPhase::FirstByte)
    } else if error.is_builder() {
        UpstreamError::Misconfigured("the request could not be built for this base URL")
    } else {
        // Refused, reset, TLS failure, or a connection that broke before answering.
        UpstreamError::Connect
    }
}

pub(crate) async fn error_from_response(
    response: reqwest::Response,
    idle: Duration,
    deadline: Instant,
) -> UpstreamError {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    // Whatever part of the body arrives in time is enough to find the message.
    let mut body = Body { response, idle, deadline };
    let mut bytes = BytesMut::new();
    while bytes.len() < MAX_ERROR_BODY_BYTES {
        match body.next_chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(MAX_ERROR_BODY_BYTES);
    UpstreamError::from_status(status, &headers, &bytes)
}

pub(crate) fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// A syntactically valid JSON object, checked without building it.
pub(crate) fn is_json_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// A 2xx response body being read under the idle and total deadlines.
pub(crate) struct Body {
    response: reqwest::Response,
    idle: Duration,
    deadline: Instant,
}

impl Body {
    /// The next chunk, `None` at the end of the body. A transport failure after the
    /// headers means the body was cut off.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        let idle_deadline = Instant::now() + self.idle;
        let (limit, phase) = if idle_deadline < self.deadline {
            (idle_deadline, TimeoutPhase::Idle)
        } else {
            (self.deadline, TimeoutPhase::Total)
        };
        match tokio::time::timeout_at(limit, self.response.chunk()).await {
            Err(_) => Err(UpstreamError::Timeout(phase)),
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(_)) => Err(UpstreamError::Truncated),
        }
    }

    pub(crate) async fn read_all(mut self, max_bytes: usize) -> Result<Bytes, UpstreamError> {
        const TOO_LARGE: UpstreamError = UpstreamError::Malformed("upstream body too large");
        let announced = self.response.content_length().and_then(|len| usize::try_from(len).ok());
        if announced.is_some_and(|len| len > max_bytes) {
            return Err(TOO_LARGE);
        }
        // The usual case, one chunk, is returned without copying.
        let Some(first) = self.next_chunk().await? else {
            return Ok(Bytes::new());
        };
        if first.len() > max_bytes {
            return Err(TOO_LARGE);
        }
        let Some(second) = self.next_chunk().await? else {
            return Ok(first);
        };
        let mut all = BytesMut::with_capacity(announced.unwrap_or(first.len() + second.len()));
        all.extend_from_slice(&first);
        let mut next = Some(second);
        while let Some(chunk) = next {
            if all.len() + chunk.len() > max_bytes {
                return Err(TOO_LARGE);
            }
            all.extend_from_slice(&chunk);
            next = self.next_chunk().await?;
        }
        Ok(all.freeze())
    }

    /// Reads what follows `[DONE]` for a moment, so a finished HTTP/1.1 connection can
    /// be reused; gives up quietly (the connection is then closed).
    pub(crate) async fn drain(mut self) {
        let grace_deadline = Instant::now() + DRAIN_GRACE.min(self.idle);
        let mut drained = 0;
        while drained < MAX_DRAIN_BYTES {
            match tokio::time::timeout_at(grace_deadline, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => drained += chunk.len(),
                _ => return,
            }
        }
    }
}

pub(crate) struct StreamState {
    /// `None` once the stream has ended or failed: the response is dropped at once.
    body: Option<Body>,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    /// Yielded after the events already parsed, then the stream ends.
    failure: Option<UpstreamError>,
    /// `[DONE]` was passed on; what follows is drained and dropped.
    done: bool,
}

/// Events as they are parsed, each chunk read within the idle and total deadlines.
/// Ends after `[DONE]`; a body ending without it yields `Err(Truncated)` last, and any
/// error is the last item.
pub(crate) fn event_stream(body: Body) -> EventStream {
    let state =
        StreamState { body: Some(body), parser: SseParser::new(), ready: VecDeque::new(), failure: None, done: false };
    Box::pin(futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.ready.pop_front() {
                if event.is_done() {
                    state.done = true;
                    state.ready.clear();
                    state.failure = None;
                }
                return Some((Ok(event), state));
            }
            if let Some(failure) = state.failure.take() {
                return Some((Err(failure), state));
            }
            let mut body = state.body.take()?;
            if state.done {
                body.drain().await;
                return None;
            }
            match body.next_chunk().await {
                Ok(Some(chunk)) => match state.parser.push_into(&chunk, &mut state.ready) {
                    Ok(()) => state.body = Some(body),
                    Err(SseError::EventTooLarge { .. }) => {
                        state.failure = Some(UpstreamError::Malformed("upstream stream event too large"));
                    }
                    Err(SseError::InvalidUtf8) => {
                        state.failure = Some(UpstreamError::Malformed("upstream stream is not valid UTF-8"));
                    }
                },
                Ok(None) => state.failure = Some(UpstreamError::Truncated),
                Err(error) => state.failure = Some(error),
            }
        }
    }))
}

/// POSTs `body` to `url` with `headers` (the credential among them) under `timeouts`;
/// on a 2xx answer, its body to be read under the same call's deadlines.
pub(crate) async fn post(
    http: &crate::HttpClient,
    url: &str,
    headers: http::HeaderMap,
    body: Vec<u8>,
    timeouts: Timeouts,
) -> Result<Body, UpstreamError> {
    send(http.reqwest().post(url).headers(headers).body(body), timeouts).await
}

/// Sends a built request (a multipart form, say) under `timeouts`, like [`post`].
pub(crate) async fn send(call: reqwest::RequestBuilder, timeouts: Timeouts) -> Result<Body, UpstreamError> {
    let started = Instant::now();
    let deadline = started + timeouts.total;
    let response = headers_within(call.send(), started, timeouts, deadline).await?;
    if !response.status().is_success() {
        return Err(error_from_response(response, timeouts.idle, deadline).await);
    }
    Ok(Body { response, idle: timeouts.idle, deadline })
}

/// GETs `url` with `headers` under `timeouts`; like [`post`] otherwise.
pub(crate) async fn get(
    http: &crate::HttpClient,
    url: &str,
    headers: http::HeaderMap,
    timeouts: Timeouts,
) -> Result<Body, UpstreamError> {
    let started = Instant::now();
    let deadline = started + timeouts.total;
    let call = http.reqwest().get(url).headers(headers);
    let response = headers_within(call.send(), started, timeouts, deadline).await?;
    if !response.status().is_success() {
        return Err(error_from_response(response, timeouts.idle, deadline).await);
    }
    Ok(Body { response, idle: timeouts.idle, deadline })
}

impl Body {
    pub(crate) fn headers(&self) -> &http::HeaderMap {
        self.response.headers()
    }
}

/// The body's raw chunks as they arrive, each within the idle and total deadlines; any
/// error is the last item. Dropping the stream drops the response (cancels the call).
pub(crate) fn byte_stream(body: Body) -> crate::ByteStream {
    Box::pin(futures_util::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match body.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
            Ok(None) => None,
            Err(error) => Some((Err(error), None)),
        }
    }))
}

/// The response's content type, when it is a usable header value.
pub(crate) fn content_type(headers: &http::HeaderMap) -> Option<String> {
    headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned)
}
