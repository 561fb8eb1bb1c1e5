//! [`OpenAiProvider`]: calls any OpenAI-compatible upstream (OpenAI itself, vLLM,
//! Ollama, LiteLLM, …) with the request body exactly as given.
//!
//! Promises: only the channel's credential and the JSON content type are sent, never a
//! client header; every call is bounded by the channel's timeouts (connect plus first
//! byte until the response headers, idle between body chunks, total for the whole call,
//! streams included); bodies are size-capped; a streamed answer is parsed event by event
//! as bytes arrive, and dropping the stream drops the upstream response, which cancels
//! the upstream call.

use crate::error::{TimeoutPhase, UpstreamError};
use crate::http::HttpClient;
use crate::sse::{SseError, SseEvent, SseParser};
use crate::{EventStream, Provider, UpstreamReply, UpstreamRequest};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;
use veil_domain::{Channel, ChannelName, Timeouts};

/// Largest successful non-streaming body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest error body read; the rest is not needed to find the message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// After `[DONE]`, how long to wait for the body's end so that an HTTP/1.1 connection
/// can go back to the pool instead of being closed.
const DRAIN_GRACE: Duration = Duration::from_millis(50);
/// How much to read after `[DONE]` before giving up on reusing the connection.
const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// The credential as read from the environment at construction. The secret lives only
/// in a header value marked sensitive, so it is never shown by `Debug`.
enum Credential {
    /// The channel has no `api_key_env`: local servers need no credential.
    None,
    Bearer(HeaderValue),
    Missing {
        env: String,
    },
    Unusable,
}

pub struct OpenAiProvider {
    http: HttpClient,
    channel: ChannelName,
    /// The base URL without a trailing `/`, or `None` when it is not an http(s) URL.
    base_url: Option<String>,
    credential: Credential,
    timeouts: Timeouts,
    max_body_bytes: usize,
}

impl fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProvider").field("channel", &self.channel).finish_non_exhaustive()
    }
}

fn bearer(key: &str) -> Credential {
    match HeaderValue::try_from(format!("Bearer {}", key.trim())) {
        Ok(mut value) => {
            value.set_sensitive(true);
            Credential::Bearer(value)
        }
        Err(_) => Credential::Unusable,
    }
}

impl OpenAiProvider {
    /// Reads the credential from the environment variable `channel.api_key_env`, once.
    /// An unset or empty variable makes every call fail with
    /// [`UpstreamError::MissingCredential`].
    pub fn new(channel: &Channel, http: HttpClient) -> Self {
        let api_key = channel.api_key_env.as_deref().map(|env| std::env::var(env).ok());
        Self::with_api_key(channel, http, api_key)
    }

    /// With a credential stored (sealed) through the management API, which takes
    /// precedence over `api_key_env`. `None` means it was stored but could not be opened:
    /// calls then fail rather than fall back to another credential.
    pub fn with_stored_credential(channel: &Channel, http: HttpClient, credential: Option<&str>) -> Self {
        let mut provider = Self::with_api_key(channel, http, None);
        provider.credential = match credential {
            Some(key) if !key.trim().is_empty() => bearer(key),
            _ => Credential::Missing { env: "the stored credential".to_owned() },
        };
        provider
    }

    /// `api_key`: `None` when the channel has no credential variable, `Some(None)` when
    /// the variable is unset.
    fn with_api_key(channel: &Channel, http: HttpClient, api_key: Option<Option<String>>) -> Self {
        let credential = match (api_key, &channel.api_key_env) {
            (None, _) | (_, None) => Credential::None,
            (Some(Some(key)), Some(_)) if !key.trim().is_empty() => bearer(&key),
            (Some(_), Some(env)) => Credential::Missing { env: env.clone() },
        };
        let base_url = channel.base_url.trim().trim_end_matches('/');
        let base_url = reqwest::Url::parse(base_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .map(|_| base_url.to_owned());
        Self {
            http,
            channel: channel.name.clone(),
            base_url,
            credential,
            timeouts: channel.timeouts,
            max_body_bytes: MAX_BODY_BYTES,
        }
    }

    fn authorization(&self) -> Result<Option<&HeaderValue>, UpstreamError> {
        match &self.credential {
            Credential::None => Ok(None),
            Credential::Bearer(value) => Ok(Some(value)),
            Credential::Missing { env } => Err(UpstreamError::MissingCredential { env: env.clone() }),
            Credential::Unusable => Err(UpstreamError::Misconfigured("the credential is not a valid header value")),
        }
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamReply, UpstreamError> {
        let authorization = self.authorization()?;
        let base_url =
            self.base_url.as_deref().ok_or(UpstreamError::Misconfigured("the base URL is not an http(s) URL"))?;
        let body =
            request.encode_body().map_err(|_| UpstreamError::Malformed("the request body could not be encoded"))?;

        let started = Instant::now();
        let deadline = started + self.timeouts.total;
        let mut call = self
            .http
            .reqwest()
            .post(format!("{base_url}{}", request.endpoint.upstream_path()))
            .header(CONTENT_TYPE, "application/json")
            // What OpenAI's own SDKs send, for streams too.
            .header(ACCEPT, "application/json")
            .body(body);
        if let Some(authorization) = authorization {
            call = call.header(AUTHORIZATION, authorization.clone());
        }

        let response = headers_within(call.send(), started, self.timeouts, deadline).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(error_from_response(response, self.timeouts.idle, deadline).await);
        }
        let body = Body { response, idle: self.timeouts.idle, deadline };
        if request.stream {
            if is_json(body.response.headers()) {
                return Err(UpstreamError::Malformed("a stream was asked for but the upstream sent JSON"));
            }
            return Ok(UpstreamReply::Stream(event_stream(body)));
        }
        let bytes = body.read_all(self.max_body_bytes).await?;
        if !is_json_object(&bytes) {
            return Err(UpstreamError::Malformed("the upstream body is not a JSON object"));
        }
        Ok(UpstreamReply::Complete(bytes))
    }
}

/// Waits for the response headers within the first-byte budget (counted from sending,
/// connection setup included) and within the total. The connect timeout itself is the
/// client's (see `provider_for`).
async fn headers_within(
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
fn send_error(error: &reqwest::Error) -> UpstreamError {
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

async fn error_from_response(response: reqwest::Response, idle: Duration, deadline: Instant) -> UpstreamError {
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

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// A syntactically valid JSON object, checked without building it.
fn is_json_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
}

/// A 2xx response body being read under the idle and total deadlines.
struct Body {
    response: reqwest::Response,
    idle: Duration,
    deadline: Instant,
}

impl Body {
    /// The next chunk, `None` at the end of the body. A transport failure after the
    /// headers means the body was cut off.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
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

    async fn read_all(mut self, max_bytes: usize) -> Result<Bytes, UpstreamError> {
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
    async fn drain(mut self) {
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

struct StreamState {
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
fn event_stream(body: Body) -> EventStream {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Endpoint;
    use futures_util::StreamExt;
    use std::collections::BTreeMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;
    use veil_domain::{ChannelKind, DataPolicy, Retention};

    /// What the scripted server does after reading the request.
    enum Step {
        Write(Vec<u8>),
        Sleep(Duration),
        /// Drop the connection at once.
        Close,
    }

    fn write(text: &str) -> Step {
        Step::Write(text.as_bytes().to_vec())
    }

    fn chunk(data: &str) -> Step {
        Step::Write(format!("{:x}\r\n{data}\r\n", data.len()).into_bytes())
    }

    fn stream_head() -> Step {
        write("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    }

    fn json_response(status: &str, extra_headers: &str, body: &str) -> Step {
        write(&format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
            body.len()
        ))
    }

    struct Seen {
        /// The request head, lower-cased.
        head: String,
        body: serde_json::Value,
    }

    struct Scripted {
        base_url: String,
        request: oneshot::Receiver<Seen>,
        /// Fires when the client closed its side after the script ran.
        client_closed: oneshot::Receiver<()>,
    }

    /// A one-connection HTTP/1.1 server that plays `steps` byte for byte, then waits
    /// for the client to close the connection.
    #[allow(clippy::disallowed_methods)] // the test owns the task; the runtime ends it
    async fn scripted(steps: Vec<Step>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1/", listener.local_addr().unwrap());
        let (request_tx, request) = oneshot::channel();
        let (closed_tx, client_closed) = oneshot::channel();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                let n = socket.read(&mut buf).await.unwrap();
                received.extend_from_slice(&buf[..n]);
                if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
            };
            let head = String::from_utf8(received[..head_end].to_vec()).unwrap().to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |len| len.trim().parse().unwrap());
            while received.len() < head_end + length {
                let n = socket.read(&mut buf).await.unwrap();
                received.extend_from_slice(&buf[..n]);
            }
            let body = serde_json::from_slice(&received[head_end..]).unwrap_or_default();
            let _ = request_tx.send(Seen { head, body });
            for step in steps {
                match step {
                    Step::Write(bytes) => {
                        if socket.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Step::Sleep(pause) => tokio::time::sleep(pause).await,
                    Step::Close => return,
                }
            }
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = closed_tx.send(());
        });
        Scripted { base_url, request, client_closed }
    }

    fn fast_timeouts() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(2),
            first_byte: Duration::from_millis(300),
            idle: Duration::from_millis(300),
            total: Duration::from_secs(5),
        }
    }

    fn channel(base_url: &str, api_key_env: Option<&str>, timeouts: Timeouts) -> Channel {
        Channel {
            name: ChannelName::parse("test-channel").unwrap(),
            kind: ChannelKind::Openai,
            base_url: base_url.to_owned(),
            api_key_env: api_key_env.map(str::to_owned),
            models: vec![],
            model_mapping: BTreeMap::new(),
            priority: 0,
            weight: 1,
            groups: None,
            policy: DataPolicy {
                retention: Retention::None,
                training: false,
                region: None,
                human_review: false,
                operator: "self".to_owned(),
            },
            timeouts,
            limits: Default::default(),
            enabled: true,
            managed: false,
        }
    }

    fn provider(base_url: &str, key: Option<&str>) -> OpenAiProvider {
        let channel = channel(base_url, key.map(|_| "TEST_KEY"), fast_timeouts());
        OpenAiProvider::with_api_key(&channel, HttpClient::new().unwrap(), key.map(|k| Some(k.to_owned())))
    }

    fn chat(stream: bool) -> UpstreamRequest {
        let body =
            serde_json::json!({"model": "public", "messages": [{"role": "user", "content": "hi"}], "stream": stream});
        let serde_json::Value::Object(body) = body else { unreachable!() };
        let model = veil_domain::ModelName::parse("upstream-m").unwrap();
        UpstreamRequest { endpoint: Endpoint::ChatCompletions, body: std::sync::Arc::new(body), model, stream }
    }

    fn complete(reply: UpstreamReply) -> serde_json::Value {
        match reply {
            UpstreamReply::Complete(bytes) => serde_json::from_slice(&bytes).unwrap(),
            UpstreamReply::Stream(_) => panic!("expected a complete body"),
        }
    }

    fn stream(reply: UpstreamReply) -> EventStream {
        match reply {
            UpstreamReply::Stream(events) => events,
            UpstreamReply::Complete(_) => panic!("expected a stream"),
        }
    }

    #[tokio::test]
    async fn posts_the_body_with_only_the_channel_credential() {
        let server = scripted(vec![json_response("200 OK", "", r#"{"id":"x","choices":[]}"#)]).await;
        let reply = provider(&server.base_url, Some("sk-test")).send(chat(false)).await.unwrap();
        assert_eq!(complete(reply), serde_json::json!({"id": "x", "choices": []}));
        let seen = server.request.await.unwrap();
        assert!(seen.head.starts_with("post /v1/chat/completions http/1.1\r\n"), "{}", seen.head);
        assert!(seen.head.contains("\r\nauthorization: bearer sk-test\r\n"));
        assert!(seen.head.contains("\r\ncontent-type: application/json\r\n"));
        assert_eq!(seen.body["messages"][0]["content"], "hi");
        assert_eq!(seen.body["model"], "upstream-m");
        let names: Vec<&str> =
            seen.head.lines().skip(1).filter_map(|line| line.split_once(':')).map(|(name, _)| name).collect();
        for name in &names {
            assert!(
                ["authorization", "content-type", "accept", "user-agent", "host", "content-length"].contains(name),
                "unexpected header {name}"
            );
        }
    }

    #[tokio::test]
    async fn sends_no_authorization_without_a_credential_variable() {
        let server = scripted(vec![json_response("200 OK", "", "{}")]).await;
        provider(&server.base_url, None).send(chat(false)).await.unwrap();
        assert!(!server.request.await.unwrap().head.contains("authorization"));
    }

    #[tokio::test]
    async fn an_unset_credential_fails_every_call_without_connecting() {
        let channel = channel("http://127.0.0.1:9/v1", Some("VEIL_TEST_SURELY_UNSET_7f3a9c"), fast_timeouts());
        let provider = OpenAiProvider::new(&channel, HttpClient::new().unwrap());
        let error = provider.send(chat(false)).await.err().unwrap();
        assert_eq!(error, UpstreamError::MissingCredential { env: "VEIL_TEST_SURELY_UNSET_7f3a9c".to_owned() });
        assert!(!format!("{provider:?}").contains("VEIL_TEST"));
    }

    #[tokio::test]
    async fn a_bad_base_url_is_a_misconfiguration() {
        let provider = provider("ftp://example.com/v1", None);
        assert!(matches!(provider.send(chat(false)).await, Err(UpstreamError::Misconfigured(_))));
    }

    #[tokio::test]
    async fn error_statuses_carry_message_code_and_retry_after() {
        let body = r#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#;
        let server = scripted(vec![json_response("429 Too Many Requests", "retry-after: 7\r\n", body)]).await;
        let error = provider(&server.base_url, Some("k")).send(chat(true)).await.err().unwrap();
        assert_eq!(
            error,
            UpstreamError::Status {
                status: 429,
                retry_after: Some(Duration::from_secs(7)),
                message: "slow down".to_owned(),
                code: Some("rate_limit_exceeded".to_owned()),
            }
        );
    }

    #[tokio::test]
    async fn a_non_json_success_body_is_malformed() {
        let server = scripted(vec![write("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nnot json!")]).await;
        let error = provider(&server.base_url, None).send(chat(false)).await.err().unwrap();
        assert_eq!(error, UpstreamError::Malformed("the upstream body is not a JSON object"));
        let server = scripted(vec![json_response("200 OK", "", "[1,2]")]).await;
        assert!(matches!(provider(&server.base_url, None).send(chat(false)).await, Err(UpstreamError::Malformed(_))));
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_refused() {
        let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(200));
        let server = scripted(vec![
            write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            chunk(&body[..100]),
            Step::Sleep(Duration::from_millis(20)),
            chunk(&body[100..]),
            write("0\r\n\r\n"),
        ])
        .await;
        let mut provider = provider(&server.base_url, None);
        provider.max_body_bytes = 150;
        assert_eq!(provider.send(chat(false)).await.err(), Some(UpstreamError::Malformed("upstream body too large")));
    }

    #[tokio::test]
    async fn a_slow_non_stream_body_hits_the_idle_timeout() {
        let server = scripted(vec![
            write("HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n{\"a\":"),
            Step::Sleep(Duration::from_secs(3)),
        ])
        .await;
        let error = provider(&server.base_url, None).send(chat(false)).await.err();
        assert_eq!(error, Some(UpstreamError::Timeout(TimeoutPhase::Idle)));
    }

    #[tokio::test]
    async fn streams_events_as_they_arrive_and_ends_after_done() {
        let server = scripted(vec![
            stream_head(),
            chunk("data: {\"n\":1}\n\n: comment\n\ndata: {\"n\""),
            Step::Sleep(Duration::from_millis(50)),
            chunk(":2}\r\n\r\n"),
            Step::Sleep(Duration::from_millis(50)),
            chunk("data: [DONE]\n\n"),
            write("0\r\n\r\n"),
        ])
        .await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("{\"n\":1}"))));
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("{\"n\":2}"))));
        assert_eq!(events.next().await, Some(Ok(SseEvent::done())));
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn a_stream_ending_without_done_is_truncated() {
        let server = scripted(vec![stream_head(), chunk("data: {\"n\":1}\n\n"), write("0\r\n\r\n")]).await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("{\"n\":1}"))));
        assert_eq!(events.next().await, Some(Err(UpstreamError::Truncated)));
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn a_stream_cut_mid_body_is_truncated() {
        // Half a chunk, then the connection goes away.
        let server =
            scripted(vec![stream_head(), chunk("data: {\"n\":1}\n\n"), write("40\r\ndata: {\"n"), Step::Close]).await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("{\"n\":1}"))));
        assert_eq!(events.next().await, Some(Err(UpstreamError::Truncated)));
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn a_silent_stream_hits_the_idle_timeout() {
        let server = scripted(vec![stream_head(), chunk("data: 1\n\n"), Step::Sleep(Duration::from_secs(3))]).await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("1"))));
        let started = std::time::Instant::now();
        assert_eq!(events.next().await, Some(Err(UpstreamError::Timeout(TimeoutPhase::Idle))));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn invalid_sse_is_malformed() {
        let server = scripted(vec![
            stream_head(),
            chunk("data: ok\n\ndata: \u{0}\n\n"),
            Step::Write(b"4\r\n\xFF\xFE\n\n\r\n".to_vec()),
        ])
        .await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("ok"))));
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("\u{0}"))));
        assert_eq!(events.next().await, Some(Err(UpstreamError::Malformed("upstream stream is not valid UTF-8"))));
        assert_eq!(events.next().await, None);
    }

    #[tokio::test]
    async fn a_json_answer_to_a_stream_request_is_malformed() {
        let server = scripted(vec![json_response("200 OK", "", "{}")]).await;
        assert!(matches!(provider(&server.base_url, None).send(chat(true)).await, Err(UpstreamError::Malformed(_))));
    }

    #[tokio::test]
    async fn dropping_the_stream_closes_the_upstream_connection() {
        // The body never ends: the server waits for the client to go away.
        let server = scripted(vec![stream_head(), chunk("data: 1\n\n")]).await;
        let mut events = stream(provider(&server.base_url, None).send(chat(true)).await.unwrap());
        assert_eq!(events.next().await, Some(Ok(SseEvent::data("1"))));
        drop(events);
        let closed = tokio::time::timeout(Duration::from_secs(2), server.client_closed).await;
        assert!(matches!(closed, Ok(Ok(()))), "the upstream connection stayed open");
    }

    #[tokio::test]
    async fn no_headers_in_time_is_a_first_byte_timeout() {
        let server = scripted(vec![Step::Sleep(Duration::from_secs(5))]).await;
        let started = std::time::Instant::now();
        let error = provider(&server.base_url, None).send(chat(false)).await.err();
        assert_eq!(error, Some(UpstreamError::Timeout(TimeoutPhase::FirstByte)));
        // Connect (2 s) + first byte (0.3 s) bound the wait for the headers.
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn the_total_budget_bounds_a_slow_stream() {
        let mut steps = vec![stream_head()];
        for _ in 0..20 {
            steps.push(chunk("data: tick\n\n"));
            steps.push(Step::Sleep(Duration::from_millis(100)));
        }
        let server = scripted(steps).await;
        let mut timeouts = fast_timeouts();
        timeouts.total = Duration::from_millis(500);
        let channel = channel(&server.base_url, None, timeouts);
        let provider = OpenAiProvider::with_api_key(&channel, HttpClient::new().unwrap(), None);
        let mut events = stream(provider.send(chat(true)).await.unwrap());
        let mut last = None;
        while let Some(item) = events.next().await {
            last = Some(item);
        }
        assert_eq!(last, Some(Err(UpstreamError::Timeout(TimeoutPhase::Total))));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        drop(listener);
        let error = provider(&base_url, Some("sk-secret")).send(chat(false)).await.err().unwrap();
        assert_eq!(error, UpstreamError::Connect);
        assert!(error.is_retryable());
        assert!(!error.to_string().contains("127.0.0.1"));
    }
}
