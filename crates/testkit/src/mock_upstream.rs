//! A scripted OpenAI-format upstream for black-box tests: a real HTTP server on
//! `127.0.0.1:0` that records every request it receives and answers each with the next
//! scripted [`Reply`] (or the default one when the script is used up).
//!
//! It promises what streaming tests need and wiremock cannot give: SSE bodies sent
//! chunk by chunk with real delays, slow first bytes, answers that never come,
//! connections dropped mid-stream, and a count of calls the client abandoned before the
//! mock finished answering ([`MockUpstream::disconnects`]), which is how a test proves
//! that a client disconnect cancels the upstream call.
//!
//! It is written independently of Veil's own echo provider on purpose, so a mistake in
//! one is not silently repeated by the other.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// `prompt_tokens` reported when a reply does not set usage.
pub const DEFAULT_PROMPT_TOKENS: u64 = 10;
/// Text of the reply used when nothing was scripted.
pub const DEFAULT_REPLY_TEXT: &str = "Hello from the mock upstream.";
/// Largest request body the mock reads.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
const SYSTEM_FINGERPRINT: &str = "fp_mock";

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path only, e.g. `/v1/chat/completions`.
    pub path: String,
    pub query: Option<String>,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Null` when it was not JSON.
    pub body: Value,
    pub raw_body: Bytes,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str())
    }

    pub fn is_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool).unwrap_or(false)
    }

    fn include_usage(&self) -> bool {
        self.body
            .get("stream_options")
            .and_then(|options| options.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    fn model(&self) -> &str {
        self.body.get("model").and_then(Value::as_str).unwrap_or("mock-model")
    }
}

/// Token counts a reply reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
}

impl MockUsage {
    fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0
            }
        })
    }
}

/// How a scripted stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    /// Finish chunk, usage chunk if asked for, `data: [DONE]`, clean end of body.
    Done,
    /// Everything but `[DONE]`, then a clean end of body.
    WithoutDone,
    /// The role chunk and this many content chunks, then the connection is cut.
    DropAfter(usize),
}

#[derive(Debug, Clone)]
enum ReplyKind {
    /// The default: chosen by the request path.
    Auto,
    /// A chat answer, streamed when the request asks for a stream.
    Chat {
        text: String,
        usage: Option<MockUsage>,
    },
    /// Always a stream, whatever the request asked.
    Stream {
        pieces: Vec<String>,
        gap: Duration,
        usage: Option<MockUsage>,
        end: StreamEnd,
    },
    /// A completions answer, streamed when the request asks for a stream.
    Completion {
        text: String,
    },
    Embeddings {
        dims: usize,
    },
    Error {
        status: u16,
        body: Value,
    },
    Raw {
        status: u16,
        content_type: String,
        body: Bytes,
    },
    /// Raw bytes written as an event stream, chunk by chunk.
    RawStream {
        chunks: Vec<Bytes>,
        gap: Duration,
    },
    Hang,
}

/// One scripted answer. Build with the constructors, adjust with the modifiers.
#[derive(Debug, Clone)]
pub struct Reply {
    kind: ReplyKind,
    first_byte_delay: Duration,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn of(kind: ReplyKind) -> Self {
        Self { kind, first_byte_delay: Duration::ZERO, headers: Vec::new() }
    }

    /// Chat for `/chat/completions`, a completion for `/completions`, embeddings for
    /// `/embeddings`, each with [`DEFAULT_REPLY_TEXT`]; 404 elsewhere.
    pub fn auto() -> Self {
        Self::of(ReplyKind::Auto)
    }

    /// A `chat.completion` answering `text`, or the chunk sequence of it (one chunk per
    /// word) when the request has `"stream": true`. Usage: [`DEFAULT_PROMPT_TOKENS`]
    /// prompt tokens, one completion token per word, no cached tokens.
    pub fn chat(text: &str) -> Self {
        Self::of(ReplyKind::Chat { text: text.to_owned(), usage: None })
    }

    /// Like [`Reply::chat`] with exact usage; `cached` goes to
    /// `prompt_tokens_details.cached_tokens`.
    pub fn chat_with_usage(text: &str, prompt: u64, completion: u64, cached: u64) -> Self {
        let usage = MockUsage { prompt_tokens: prompt, completion_tokens: completion, cached_tokens: cached };
        Self::of(ReplyKind::Chat { text: text.to_owned(), usage: Some(usage) })
    }

    /// OpenAI's chat chunk sequence, always streamed: a role chunk, one content chunk
    /// per piece with `gap` before each, a finish chunk, a usage chunk when the request
    /// set `stream_options.include_usage` (earlier chunks then carry `"usage": null`),
    /// and `data: [DONE]`. Usage: [`DEFAULT_PROMPT_TOKENS`] and one token per piece.
    pub fn stream(pieces: Vec<&str>, gap: Duration) -> Self {
        Self::of(ReplyKind::Stream { pieces: owned(pieces), gap, usage: None, end: StreamEnd::Done })
    }

    /// Like [`Reply::stream`] with exact usage for the usage chunk.
    pub fn stream_with_usage(pieces: Vec<&str>, gap: Duration, prompt: u64, completion: u64, cached: u64) -> Self {
        let usage = MockUsage { prompt_tokens: prompt, completion_tokens: completion, cached_tokens: cached };
        Self::of(ReplyKind::Stream { pieces: owned(pieces), gap, usage: Some(usage), end: StreamEnd::Done })
    }

    /// Sends the role chunk and the first `after_n` content chunks (10 ms apart; see
    /// [`Reply::with_gap`]), then cuts the connection: no finish chunk, no `[DONE]`.
    pub fn stream_then_drop(pieces: Vec<&str>, after_n: usize) -> Self {
        let gap = Duration::from_millis(10);
        Self::of(ReplyKind::Stream { pieces: owned(pieces), gap, usage: None, end: StreamEnd::DropAfter(after_n) })
    }

    /// The whole chunk sequence except `[DONE]`, then a clean end of the body.
    pub fn stream_without_done(pieces: Vec<&str>) -> Self {
        let gap = Duration::from_millis(10);
        Self::of(ReplyKind::Stream { pieces: owned(pieces), gap, usage: None, end: StreamEnd::WithoutDone })
    }

    /// Raw event-stream text, written chunk by chunk exactly as given (for broken or
    /// unusual streams: mid-stream error events, CRLF, comments, invalid JSON).
    pub fn sse(chunks: Vec<&str>, gap: Duration) -> Self {
        let chunks = chunks.into_iter().map(|chunk| Bytes::copy_from_slice(chunk.as_bytes())).collect();
        Self::of(ReplyKind::RawStream { chunks, gap })
    }

    /// An error status with a JSON body.
    pub fn error(status: u16, json_body: Value) -> Self {
        Self::of(ReplyKind::Error { status, body: json_body })
    }

    /// An error status with OpenAI's error body.
    pub fn openai_error(status: u16, message: &str, code: &str) -> Self {
        let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
        Self::error(status, body)
    }

    /// Like [`Reply::error`] with a `retry-after` header in seconds.
    pub fn error_with_retry_after(status: u16, json_body: Value, retry_after_secs: u64) -> Self {
        Self::error(status, json_body).header("retry-after", &retry_after_secs.to_string())
    }

    /// Accepts the request and never answers.
    pub fn hang() -> Self {
        Self::of(ReplyKind::Hang)
    }

    /// Any status, content type and body, for malformed answers.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self::of(ReplyKind::Raw { status, content_type: content_type.to_owned(), body: body.into() })
    }

    /// An embeddings list with one unit vector of `dims` per input (a string or an array
    /// of strings), as floats or as base64 when the request asks for it. Usage: one
    /// prompt token per word of input.
    pub fn embeddings(dims: usize) -> Self {
        Self::of(ReplyKind::Embeddings { dims })
    }

    /// A `text_completion` answering `text` (streamed when the request asks for it).
    /// Usage: [`DEFAULT_PROMPT_TOKENS`] and one token per word.
    pub fn completion(text: &str) -> Self {
        Self::of(ReplyKind::Completion { text: text.to_owned() })
    }

    /// `reply` with its response headers held back for `delay`.
    pub fn slow_first_byte(reply: Reply, delay: Duration) -> Self {
        reply.first_byte_delay(delay)
    }

    /// Holds the response headers back for `delay`.
    pub fn first_byte_delay(mut self, delay: Duration) -> Self {
        self.first_byte_delay = delay;
        self
    }

    /// For streams: the pause before each chunk after the first.
    pub fn with_gap(mut self, new_gap: Duration) -> Self {
        match &mut self.kind {
            ReplyKind::Stream { gap, .. } | ReplyKind::RawStream { gap, .. } => *gap = new_gap,
            _ => {}
        }
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

fn owned(pieces: Vec<&str>) -> Vec<String> {
    pieces.into_iter().map(str::to_owned).collect()
}

/// Word-sized pieces that join back to `text`, each with the whitespace before it.
fn words(text: &str) -> Vec<String> {
    let mut pieces: Vec<String> = Vec::new();
    for (index, word) in text.split(' ').enumerate() {
        match pieces.last_mut() {
            Some(last) if word.is_empty() || last.trim().is_empty() => {
                last.push(' ');
                last.push_str(word);
            }
            _ if index == 0 => pieces.push(word.to_owned()),
            _ => pieces.push(format!(" {word}")),
        }
    }
    pieces.retain(|piece| !piece.is_empty());
    pieces
}

fn word_count(text: &str) -> u64 {
    u64::try_from(text.split_whitespace().count()).unwrap_or(u64::MAX)
}

#[derive(Default)]
struct Script {
    queue: VecDeque<Reply>,
    default: Option<Reply>,
    requests: Vec<RecordedRequest>,
}

#[derive(Default)]
struct Shared {
    script: Mutex<Script>,
    serial: AtomicU64,
    started_streams: AtomicUsize,
    completed_streams: AtomicUsize,
    disconnects: AtomicUsize,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        // A panicking test thread must not hide the script from the others.
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running mock. Dropping it stops accepting connections.
pub struct MockUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MockUpstream {
    /// Starts the mock on a fresh loopback port.
    #[allow(clippy::expect_used)] // a test helper: failing to bind loopback must fail the test loudly
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the mock upstream");
        let addr = listener.local_addr().expect("the mock upstream's address");
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(answer).with_state(Arc::clone(&shared));
        // The mock owns its accept loop and aborts it on drop; the test runtime ends
        // whatever connections are still open.
        #[allow(clippy::disallowed_methods)]
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, server }
    }

    /// What an SDK would use as its base URL: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues `reply` for the next request not yet answered by an earlier one.
    pub fn push(&self, reply: Reply) {
        self.shared.script().queue.push_back(reply);
    }

    /// The reply for requests once the queue is empty (initially [`Reply::auto`]).
    pub fn set_default(&self, reply: Reply) {
        self.shared.script().default = Some(reply);
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.script().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.script().requests.len()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.script().requests.last().cloned()
    }

    /// Streamed bodies begun.
    pub fn started_streams(&self) -> usize {
        self.shared.started_streams.load(Ordering::SeqCst)
    }

    /// Streamed bodies sent to their scripted end (a scripted drop counts as its end).
    pub fn completed_streams(&self) -> usize {
        self.shared.completed_streams.load(Ordering::SeqCst)
    }

    /// Calls the client abandoned before the mock finished answering: a stream whose
    /// body was dropped early, or a request dropped while its first byte was held back
    /// or while it hung.
    pub fn disconnects(&self) -> usize {
        self.shared.disconnects.load(Ordering::SeqCst)
    }

    /// Waits up to `within` for [`MockUpstream::disconnects`] to reach `count`. The
    /// server notices a closed connection asynchronously, so tests wait for it.
    pub async fn wait_for_disconnects(&self, count: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.disconnects() >= count {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Counts a call as abandoned when dropped before the mock finished answering it.
struct AbandonGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl AbandonGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        Self { shared: Arc::clone(shared), finished: false }
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let raw_body = axum::body::to_bytes(body, MAX_REQUEST_BYTES).await.unwrap_or_default();
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect(),
        body: serde_json::from_slice(&raw_body).unwrap_or(Value::Null),
        raw_body,
    };
    let reply = {
        let mut script = shared.script();
        script.requests.push(recorded.clone());
        let next = script.queue.pop_front();
        next.or_else(|| script.default.clone()).unwrap_or_else(Reply::auto)
    };
    let serial = shared.serial.fetch_add(1, Ordering::SeqCst) + 1;

    let mut waiting = AbandonGuard::new(&shared);
    if !reply.first_byte_delay.is_zero() {
        tokio::time::sleep(reply.first_byte_delay).await;
    }
    if matches!(reply.kind, ReplyKind::Hang) {
        std::future::pending::<()>().await;
    }
    waiting.finished = true;

    let mut response = build(&shared, &recorded, reply.kind, serial);
    for (name, value) in &reply.headers {
        if let (Ok(name), Ok(value)) =
            (header::HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()))
        {
            response.headers_mut().append(name, value);
        }
    }
    response.headers_mut().insert(
        "x-request-id",
        HeaderValue::try_from(format!("req_mock_{serial}")).unwrap_or(HeaderValue::from_static("req_mock")),
    );
    response
}

fn build(shared: &Arc<Shared>, request: &RecordedRequest, kind: ReplyKind, serial: u64) -> Response {
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let call = CallInfo { serial, created, model: request.model().to_owned(), include_usage: request.include_usage() };
    match kind {
        ReplyKind::Auto => {
            let path = request.path.as_str();
            let kind = if path.ends_with("/chat/completions") {
                ReplyKind::Chat { text: DEFAULT_REPLY_TEXT.to_owned(), usage: None }
            } else if path.ends_with("/completions") {
                ReplyKind::Completion { text: DEFAULT_REPLY_TEXT.to_owned() }
            } else if path.ends_with("/embeddings") {
                ReplyKind::Embeddings { dims: 16 }
            } else {
                let message = format!("Unknown request URL: {} {}", request.method, request.path);
                ReplyKind::Error {
                    status: 404,
                    body: json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": "unknown_url"}}),
                }
            };
            build(shared, request, kind, serial)
        }
        ReplyKind::Chat { text, usage } => {
            let usage = usage.unwrap_or(MockUsage {
                prompt_tokens: DEFAULT_PROMPT_TOKENS,
                completion_tokens: word_count(&text),
                cached_tokens: 0,
            });
            if request.is_stream() {
                let events = chat_events(&call, &words(&text), usage, StreamEnd::Done);
                return event_stream(shared, events, Duration::ZERO);
            }
            json_response(200, &chat_completion(&call, &text, usage))
        }
        ReplyKind::Stream { pieces, gap, usage, end } => {
            let usage = usage.unwrap_or(MockUsage {
                prompt_tokens: DEFAULT_PROMPT_TOKENS,
                completion_tokens: u64::try_from(pieces.len()).unwrap_or(u64::MAX),
                cached_tokens: 0,
            });
            event_stream(shared, chat_events(&call, &pieces, usage, end), gap)
        }
        ReplyKind::Completion { text } => {
            let usage = MockUsage {
                prompt_tokens: DEFAULT_PROMPT_TOKENS,
                completion_tokens: word_count(&text),
                cached_tokens: 0,
            };
            if request.is_stream() {
                return event_stream(shared, completion_events(&call, &words(&text), usage), Duration::ZERO);
            }
            json_response(200, &text_completion(&call, &text, usage))
        }
        ReplyKind::Embeddings { dims } => json_response(200, &embeddings(request, dims)),
        ReplyKind::Error { status, body } => json_response(status, &body),
        ReplyKind::Raw { status, content_type, body } => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status_code(status);
            if let Ok(value) = HeaderValue::try_from(content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
        ReplyKind::RawStream { chunks, gap } => {
            event_stream(shared, chunks.into_iter().map(Emit::Chunk).collect(), gap)
        }
        ReplyKind::Hang => json_response(500, &json!({"error": {"message": "unreachable: hang answered"}})),
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status_code(status);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

struct CallInfo {
    serial: u64,
    created: u64,
    model: String,
    include_usage: bool,
}

fn chat_completion(call: &CallInfo, text: &str, usage: MockUsage) -> Value {
    json!({
        "id": format!("chatcmpl-mock-{}", call.serial),
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": usage.to_json(),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT
    })
}

fn text_completion(call: &CallInfo, text: &str, usage: MockUsage) -> Value {
    json!({
        "id": format!("cmpl-mock-{}", call.serial),
        "object": "text_completion",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens
        }
    })
}

fn embeddings(request: &RecordedRequest, dims: usize) -> Value {
    let inputs: Vec<String> = match request.body.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items.iter().map(|item| item.as_str().unwrap_or_default().to_owned()).collect(),
        _ => vec![String::new()],
    };
    let base64 = request.body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let value = 1.0 / (dims.max(1) as f32).sqrt();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, _)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = std::iter::repeat_n(value.to_le_bytes(), dims).flatten().collect();
                json!(base64_encode(&bytes))
            } else {
                json!(vec![value; dims])
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|input| word_count(input).max(1)).sum();
    json!({
        "object": "list",
        "data": data,
        "model": request.model(),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    })
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What a scripted body writes next.
enum Emit {
    Chunk(Bytes),
    /// Cut the connection (the body fails, so hyper aborts it).
    Cut,
}

fn sse(data: &str) -> Emit {
    Emit::Chunk(Bytes::from(format!("data: {data}\n\n")))
}

fn chat_events(call: &CallInfo, pieces: &[String], usage: MockUsage, end: StreamEnd) -> Vec<Emit> {
    let id = format!("chatcmpl-mock-{}", call.serial);
    let chunk = |delta: Value, finish_reason: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]
        });
        if call.include_usage {
            chunk["usage"] = Value::Null;
        }
        sse(&chunk.to_string())
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": "", "refusal": null}), Value::Null)];
    let sent = match end {
        StreamEnd::DropAfter(count) => count.min(pieces.len()),
        StreamEnd::Done | StreamEnd::WithoutDone => pieces.len(),
    };
    events.extend(pieces[..sent].iter().map(|piece| chunk(json!({"content": piece}), Value::Null)));
    if let StreamEnd::DropAfter(_) = end {
        events.push(Emit::Cut);
        return events;
    }
    events.push(chunk(json!({}), json!("stop")));
    if call.include_usage {
        events.push(sse(&usage_chunk(call, &id, "chat.completion.chunk", usage.to_json()).to_string()));
    }
    if end == StreamEnd::Done {
        events.push(sse("[DONE]"));
    }
    events
}

fn completion_events(call: &CallInfo, pieces: &[String], usage: MockUsage) -> Vec<Emit> {
    let id = format!("cmpl-mock-{}", call.serial);
    let chunk = |text: &str, finish_reason: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "text_completion",
            "created": call.created,
            "model": call.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}]
        });
        if call.include_usage {
            chunk["usage"] = Value::Null;
        }
        sse(&chunk.to_string())
    };
    let mut events: Vec<Emit> = pieces.iter().map(|piece| chunk(piece, Value::Null)).collect();
    events.push(chunk("", json!("stop")));
    if call.include_usage {
        let usage = json!({
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens
        });
        events.push(sse(&usage_chunk(call, &id, "text_completion", usage).to_string()));
    }
    events.push(sse("[DONE]"));
    events
}

fn usage_chunk(call: &CallInfo, id: &str, object: &str, usage: Value) -> Value {
    json!({
        "id": id,
        "object": object,
        "created": call.created,
        "model": call.model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [],
        "usage": usage
    })
}

/// A body that writes `events` one by one, `gap` apart, counting how the stream ended.
struct BodyScript {
    events: VecDeque<Emit>,
    gap: Duration,
    first: bool,
    guard: AbandonGuard,
}

fn event_stream(shared: &Arc<Shared>, events: Vec<Emit>, gap: Duration) -> Response {
    shared.started_streams.fetch_add(1, Ordering::SeqCst);
    let script = BodyScript { events: events.into(), gap, first: true, guard: AbandonGuard::new(shared) };
    let body = futures_util::stream::unfold(script, |mut script| async move {
        let Some(next) = script.events.pop_front() else {
            script.guard.finished = true;
            script.guard.shared.completed_streams.fetch_add(1, Ordering::SeqCst);
            return None;
        };
        if !script.first && !script.gap.is_zero() {
            tokio::time::sleep(script.gap).await;
        }
        script.first = false;
        match next {
            Emit::Chunk(bytes) => Some((Ok(bytes), script)),
            Emit::Cut => {
                script.guard.finished = true;
                script.guard.shared.completed_streams.fetch_add(1, Ordering::SeqCst);
                Some((Err(std::io::Error::other("scripted connection drop")), script))
            }
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    async fn post(mock: &MockUpstream, path: &str, body: Value) -> reqwest::Response {
        client().post(format!("{}{path}", mock.base_url())).bearer_auth("sk-upstream").json(&body).send().await.unwrap()
    }

    /// The data of every event in an SSE body (simple parser: LF only).
    fn data_lines(body: &str) -> Vec<String> {
        body.split("\n\n").filter_map(|event| event.strip_prefix("data: ")).map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn records_requests_and_answers_chat() {
        let mock = MockUpstream::start().await;
        mock.push(Reply::chat_with_usage("Hi there", 12, 3, 4));
        let response = post(&mock, "/chat/completions", json!({"model": "gpt-x", "messages": []})).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("x-request-id").is_some());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "gpt-x");
        assert_eq!(body["choices"][0]["message"]["content"], "Hi there");
        assert_eq!(body["usage"]["total_tokens"], 15);
        assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 4);

        let seen = mock.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].path, "/v1/chat/completions");
        assert_eq!(seen[0].header("Authorization"), Some("Bearer sk-upstream"));
        assert_eq!(seen[0].body["model"], "gpt-x");

        // The queue is used up: the default (auto) reply answers now.
        let body: Value = post(&mock, "/chat/completions", json!({})).await.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY_TEXT);
    }

    #[tokio::test]
    async fn streams_chunks_with_usage_when_asked() {
        let mock = MockUpstream::start().await;
        mock.push(Reply::stream(vec!["Hel", "lo"], Duration::from_millis(30)));
        let request = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}});
        let started = std::time::Instant::now();
        let response = post(&mock, "/chat/completions", request).await;
        assert_eq!(response.headers()["content-type"], "text/event-stream; charset=utf-8");
        let text = response.text().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(60), "chunks must be paced");
        let data = data_lines(&text);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "lo");
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        assert!(chunks[..4].iter().all(|c| c["usage"].is_null() && c.get("usage").is_some()));
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(chunks[4]["usage"]["completion_tokens"], 2);
        assert_eq!(mock.started_streams(), 1);
        assert_eq!(mock.completed_streams(), 1);
        assert_eq!(mock.disconnects(), 0);
    }

    #[tokio::test]
    async fn chat_follows_the_stream_flag() {
        let mock = MockUpstream::start().await;
        mock.set_default(Reply::chat("one two  three"));
        let text = post(&mock, "/chat/completions", json!({"stream": true})).await.text().await.unwrap();
        let data = data_lines(&text);
        let content: String = data
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str::<Value>(d).unwrap())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(content, "one two  three");
        assert!(data.iter().all(|d| !d.contains("\"usage\"")), "no usage unless asked");
    }

    #[tokio::test]
    async fn a_dropped_client_is_counted_as_a_disconnect() {
        let mock = MockUpstream::start().await;
        mock.push(Reply::stream(vec!["a", "b", "c", "d"], Duration::from_millis(200)));
        let response = post(&mock, "/chat/completions", json!({"stream": true})).await;
        let mut body = response.bytes_stream();
        body.next().await.unwrap().unwrap();
        drop(body);
        assert!(mock.wait_for_disconnects(1, Duration::from_secs(2)).await);
        assert_eq!(mock.completed_streams(), 0);
    }

    #[tokio::test]
    async fn a_dropped_client_during_a_hang_is_counted() {
        let mock = MockUpstream::start().await;
        mock.push(Reply::hang());
        let call = tokio::time::timeout(Duration::from_millis(200), post(&mock, "/chat/completions", json!({})));
        assert!(call.await.is_err());
        assert!(mock.wait_for_disconnects(1, Duration::from_secs(2)).await);
        assert_eq!(mock.request_count(), 1);
    }

    #[tokio::test]
    async fn stream_then_drop_cuts_the_connection() {
        let mock = MockUpstream::start().await;
        mock.push(Reply::stream_then_drop(vec!["a", "b", "c"], 1));
        let response = post(&mock, "/chat/completions", json!({"stream": true})).await;
        let mut body = response.bytes_stream();
        let mut received = Vec::new();
        let mut failed = false;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => received.extend_from_slice(&bytes),
                Err(_) => failed = true,
            }
        }
        assert!(failed, "the body must end with an error");
        let text = String::from_utf8(received).unwrap();
        assert!(text.contains("\"content\":\"a\""));
        assert!(!text.contains("\"content\":\"b\""));
        assert!(!text.contains("[DONE]"));
        assert_eq!(mock.disconnects(), 0);
    }

    #[tokio::test]
    async fn errors_raw_bodies_and_slow_first_bytes() {
        let mock = MockUpstream::start().await;
        mock.push(Reply::error_with_retry_after(429, json!({"error": {"message": "slow down"}}), 3));
        mock.push(Reply::raw(200, "application/json", "{not json"));
        mock.push(Reply::slow_first_byte(Reply::chat("late"), Duration::from_millis(150)));

        let response = post(&mock, "/chat/completions", json!({})).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "3");
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["message"], "slow down");

        let response = post(&mock, "/chat/completions", json!({})).await;
        assert_eq!(response.text().await.unwrap(), "{not json");

        let started = std::time::Instant::now();
        let response = post(&mock, "/chat/completions", json!({})).await;
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(response.json::<Value>().await.unwrap()["choices"][0]["message"]["content"], "late");
    }

    #[tokio::test]
    async fn embeddings_and_completions() {
        let mock = MockUpstream::start().await;
        mock.push(Reply::embeddings(4));
        mock.push(Reply::embeddings(2));
        mock.push(Reply::completion("done"));
        let body: Value =
            post(&mock, "/embeddings", json!({"model": "e", "input": ["a b", "c"]})).await.json().await.unwrap();
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"][1]["index"], 1);
        assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 4);
        assert_eq!(body["usage"]["prompt_tokens"], 3);
        let body: Value =
            post(&mock, "/embeddings", json!({"input": "x", "encoding_format": "base64"})).await.json().await.unwrap();
        assert_eq!(body["data"][0]["embedding"].as_str().unwrap().len(), 12);
        let body: Value = post(&mock, "/completions", json!({"prompt": "p"})).await.json().await.unwrap();
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["text"], "done");
    }

    #[test]
    fn words_join_back() {
        for text in ["", "a", "one two", "one  two ", " lead"] {
            assert_eq!(words(text).concat(), text, "{text:?}");
        }
        assert_eq!(words("one two three"), ["one", " two", " three"]);
    }
}
