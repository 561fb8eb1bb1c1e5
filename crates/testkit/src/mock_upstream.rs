//! A scripted upstream for black-box tests: a real HTTP server on `127.0.0.1:0` that
//! records every request it receives and answers each with the next scripted [`Reply`]
//! (or the default one when the script is used up).
//!
//! The request path picks the wire format, so one script serves every upstream type:
//!
//! - `…/chat/completions` (also Azure's `/openai/deployments/{deployment}/chat/completions`),
//!   `…/completions`, `…/embeddings`: OpenAI.
//! - `…/v1/messages`: Anthropic Messages (see `anthropic.rs`).
//! - `…/models/{model}:generateContent` and `:streamGenerateContent`: Gemini (see `gemini.rs`).
//! - `…/model/{modelId}/converse` and `/converse-stream`: Bedrock Converse (see `bedrock.rs`).
//! - `…/images/generations`, `…/images/edits`, `…/audio/speech`, `…/audio/transcriptions`,
//!   `…/moderations`: OpenAI's media endpoints (see `media.rs`).
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

mod anthropic;
mod bedrock;
mod gemini;
mod https;
mod media;
mod videos;

pub use media::{DEFAULT_AUDIO_SECONDS, DEFAULT_TRANSCRIPT, FormPart, TINY_PNG};

pub use bedrock::{event_frame as bedrock_event_frame, exception_frame as bedrock_exception_frame};
pub use videos::{VideoOutcome, VideoPlan};

/// `prompt_tokens` reported when a reply does not set usage.
pub const DEFAULT_PROMPT_TOKENS: u64 = 10;
/// Text of the reply used when nothing was scripted.
pub const DEFAULT_REPLY_TEXT: &str = "Hello from the mock upstream.";
/// Largest request body the mock reads.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
const SYSTEM_FINGERPRINT: &str = "fp_mock";
const SSE_CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";
/// Longest argument fragment a streamed tool call sends at a time.
const TOOL_FRAGMENT_CHARS: usize = 8;

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

    /// The body's `model`, else Azure's deployment name (Azure bodies may omit `model`).
    fn model(&self) -> &str {
        self.body
            .get("model")
            .and_then(Value::as_str)
            .or_else(|| path_segment_after(&self.path, "/openai/deployments/"))
            .unwrap_or("mock-model")
    }
}

/// The path segment right after `marker`, if the path has one.
fn path_segment_after<'a>(path: &'a str, marker: &str) -> Option<&'a str> {
    let (_, rest) = path.split_once(marker)?;
    rest.split('/').next().filter(|segment| !segment.is_empty())
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
    /// Every content chunk, then the vendor's mid-stream "overloaded" error and a clean
    /// end of body.
    Overloaded,
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
    /// A tool call, streamed when the request asks for a stream.
    ToolCall {
        name: String,
        arguments: String,
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
    /// Images, speech, transcriptions and moderations (see `media.rs`).
    Media(media::MediaReply),
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
    /// `/embeddings`, a chat answer in the vendor's format on the Anthropic, Gemini and
    /// Bedrock paths, each with [`DEFAULT_REPLY_TEXT`]; 404 elsewhere.
    pub fn auto() -> Self {
        Self::of(ReplyKind::Auto)
    }

    /// A `chat.completion` answering `text`, or the chunk sequence of it (one chunk per
    /// word) when the request asks for a stream (`"stream": true`; Gemini's
    /// `:streamGenerateContent`; Bedrock's `/converse-stream`), in the path's wire format.
    /// Usage: [`DEFAULT_PROMPT_TOKENS`] prompt tokens, one completion token per word, no
    /// cached tokens.
    pub fn chat(text: &str) -> Self {
        Self::of(ReplyKind::Chat { text: text.to_owned(), usage: None })
    }

    /// Like [`Reply::chat`] with exact usage; `cached` goes to
    /// `prompt_tokens_details.cached_tokens`. `prompt` includes `cached`, as OpenAI
    /// counts; Anthropic and Bedrock get `prompt - cached` as input tokens and `cached` as
    /// cache reads, Gemini gets `prompt` and `cachedContentTokenCount: cached`.
    pub fn chat_with_usage(text: &str, prompt: u64, completion: u64, cached: u64) -> Self {
        let usage = MockUsage { prompt_tokens: prompt, completion_tokens: completion, cached_tokens: cached };
        Self::of(ReplyKind::Chat { text: text.to_owned(), usage: Some(usage) })
    }

    /// OpenAI's chat chunk sequence, always streamed: a role chunk, one content chunk
    /// per piece with `gap` before each, a finish chunk, a usage chunk when the request
    /// set `stream_options.include_usage` (earlier chunks then carry `"usage": null`),
    /// and `data: [DONE]`. Usage: [`DEFAULT_PROMPT_TOKENS`] and one token per piece.
    /// On the other vendors' paths, the same pieces in their stream format.
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

    /// The whole chunk sequence except `[DONE]`, then a clean end of the body. On the
    /// Anthropic path the missing marker is `message_stop`; Gemini and Bedrock streams
    /// have no end marker, so they come whole.
    pub fn stream_without_done(pieces: Vec<&str>) -> Self {
        let gap = Duration::from_millis(10);
        Self::of(ReplyKind::Stream { pieces: owned(pieces), gap, usage: None, end: StreamEnd::WithoutDone })
    }

    /// Raw event-stream text, written chunk by chunk exactly as given (for broken or
    /// unusual streams: mid-stream error events, CRLF, comments, invalid JSON). The
    /// content type is `text/event-stream`, or `application/vnd.amazon.eventstream` on
    /// the Bedrock path.
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

    /// An error status with Anthropic's error body,
    /// `{"type": "error", "error": {"type": error_type, "message": message}}`.
    pub fn anthropic_error(status: u16, error_type: &str, message: &str) -> Self {
        Self::error(status, anthropic::error_body(error_type, message))
    }

    /// An error status with Gemini's (Google API) error body,
    /// `{"error": {"code": status, "message": message, "status": status_name}}`.
    pub fn gemini_error(status: u16, status_name: &str, message: &str) -> Self {
        Self::error(status, gemini::error_body(status, status_name, message))
    }

    /// An error status as Bedrock sends it: `{"message": message}` with the type in the
    /// `x-amzn-errortype` header, e.g. `ValidationException`.
    pub fn bedrock_error(status: u16, error_type: &str, message: &str) -> Self {
        Self::error(status, json!({"message": message}))
            .header("x-amzn-errortype", &bedrock::error_type_header(error_type))
    }

    /// A call of tool `name` with `arguments_json` (the arguments as a JSON text), in
    /// each vendor's format: OpenAI `tool_calls` (finish reason `tool_calls`), an
    /// Anthropic `tool_use` block, a Gemini `functionCall` part, a Bedrock `toolUse`
    /// block. Streamed when the request asks for a stream, the arguments in fragments of
    /// up to eight characters (Gemini sends the call whole in one chunk). Usage:
    /// [`DEFAULT_PROMPT_TOKENS`] and one token per fragment.
    pub fn tool_call(name: &str, arguments_json: &str) -> Self {
        Self::of(ReplyKind::ToolCall { name: name.to_owned(), arguments: arguments_json.to_owned() })
    }

    /// Always a stream: the opening events and one content chunk per piece (10 ms apart),
    /// then the vendor's mid-stream overload error and a clean end of the body. On the
    /// Anthropic path that is `event: error` with an `overloaded_error`; OpenAI gets a
    /// `data: {"error": …}` event, Gemini a `{"error": {"code": 503, …, "status":
    /// "UNAVAILABLE"}}` event, Bedrock a `serviceUnavailableException` frame.
    pub fn anthropic_overloaded_midstream(pieces: Vec<&str>) -> Self {
        let gap = Duration::from_millis(10);
        Self::of(ReplyKind::Stream { pieces: owned(pieces), gap, usage: None, end: StreamEnd::Overloaded })
    }

    /// Like [`Reply::error`] with a `retry-after` header in seconds.
    pub fn error_with_retry_after(status: u16, json_body: Value, retry_after_secs: u64) -> Self {
        Self::error(status, json_body).header("retry-after", &retry_after_secs.to_string())
    }

    /// Accepts the request and never answers.
    pub fn hang() -> Self {
        Self::of(ReplyKind::Hang)
    }

    /// Raw bytes written as a stream chunk by chunk, e.g. Bedrock frames built with
    /// [`bedrock_event_frame`] and [`bedrock_exception_frame`] (possibly corrupted). The
    /// content type is as for [`Reply::sse`].
    pub fn raw_stream(chunks: Vec<Bytes>, gap: Duration) -> Self {
        Self::of(ReplyKind::RawStream { chunks, gap })
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

fn count(items: usize) -> u64 {
    u64::try_from(items).unwrap_or(u64::MAX)
}

/// Pieces of up to [`TOOL_FRAGMENT_CHARS`] characters that join back to `arguments`,
/// the way vendors stream tool arguments (split anywhere, even inside a string).
fn fragments(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    chars.chunks(TOOL_FRAGMENT_CHARS).map(|chunk| chunk.iter().collect()).collect()
}

/// Tool arguments as a JSON value for the vendors that send them parsed; text that is
/// not JSON is passed on as a string so a test can still see it.
fn parsed_arguments(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_owned()))
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
    videos: videos::Videos,
    /// TLS connections accepted, and how many of them negotiated HTTP/2 (`https.rs`).
    tls_connections: AtomicUsize,
    h2_connections: AtomicUsize,
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
    /// `http`, or `https` for [`MockUpstream::start_https`].
    scheme: &'static str,
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
        Self { addr, scheme: "http", shared, server }
    }

    /// What an SDK would use as its base URL: `http://127.0.0.1:PORT/v1` (`https://` for
    /// [`MockUpstream::start_https`]).
    pub fn base_url(&self) -> String {
        format!("{}://{}/v1", self.scheme, self.addr)
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
    if let Some(response) = videos::answer(&shared, &recorded) {
        shared.script().requests.push(recorded);
        return response;
    }
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
    let request_id =
        HeaderValue::try_from(format!("req_mock_{serial}")).unwrap_or(HeaderValue::from_static("req_mock"));
    // Each vendor names its request id header differently; clients log the one they know.
    match Route::of(&recorded).wire {
        Wire::Anthropic => {
            response.headers_mut().insert("request-id", request_id.clone());
        }
        Wire::Bedrock => {
            response.headers_mut().insert("x-amzn-requestid", request_id.clone());
        }
        Wire::OpenAi | Wire::Gemini { .. } => {}
    }
    response.headers_mut().insert("x-request-id", request_id);
    response
}

/// The wire format a request path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    OpenAi,
    Anthropic,
    /// `sse`: the query has `alt=sse`; without it Gemini streams one JSON array.
    Gemini {
        sse: bool,
    },
    Bedrock,
}

/// What the request path and body say about the answer's shape.
struct Route {
    wire: Wire,
    /// Whether the request asked for a stream (the body's flag, or the streaming path).
    stream: bool,
    model: String,
}

impl Route {
    fn of(request: &RecordedRequest) -> Self {
        let path = request.path.as_str();
        if let Some(model) = gemini_model(path) {
            let sse = request.query.as_deref().unwrap_or_default().split('&').any(|pair| pair == "alt=sse");
            let stream = path.ends_with(":streamGenerateContent");
            return Self { wire: Wire::Gemini { sse }, stream, model: model.to_owned() };
        }
        if let Some(model) = path_segment_after(path, "/model/")
            && (path.ends_with("/converse") || path.ends_with("/converse-stream"))
        {
            let stream = path.ends_with("/converse-stream");
            return Self { wire: Wire::Bedrock, stream, model: percent_decode(model) };
        }
        let wire = if path.ends_with("/v1/messages") { Wire::Anthropic } else { Wire::OpenAi };
        Self { wire, stream: request.is_stream(), model: request.model().to_owned() }
    }
}

/// The model of a Gemini `…/models/{model}:generateContent` or `:streamGenerateContent` path.
fn gemini_model(path: &str) -> Option<&str> {
    let (_, rest) = path.rsplit_once("/models/")?;
    let (model, method) = rest.split_once(':')?;
    (matches!(method, "generateContent" | "streamGenerateContent") && !model.is_empty()).then_some(model)
}

/// Undoes `%XX` escapes (Bedrock clients escape the `:` of model ids as `%3A`); anything
/// malformed is kept as it came.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .filter(|hex| bytes[index] == b'%' && hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// What a scripted chat answer says, before any vendor's wire format.
#[derive(Debug, Clone)]
enum Output {
    /// Text in the pieces a stream sends; a whole answer joins them.
    Text(Vec<String>),
    /// A tool call with its arguments as JSON text.
    Tool { name: String, arguments: String },
}

#[derive(Debug, Clone)]
struct Answer {
    output: Output,
    usage: MockUsage,
    end: StreamEnd,
}

impl Answer {
    /// What a stream sends piece by piece: text pieces or argument fragments.
    fn pieces(&self) -> Vec<String> {
        match &self.output {
            Output::Text(pieces) => pieces.clone(),
            Output::Tool { arguments, .. } => fragments(arguments),
        }
    }

    /// How many pieces a stream sends before its end: all, or as many as a drop allows.
    fn sent(&self, pieces: usize) -> usize {
        match self.end {
            StreamEnd::DropAfter(after) => after.min(pieces),
            StreamEnd::Done | StreamEnd::WithoutDone | StreamEnd::Overloaded => pieces,
        }
    }
}

fn default_usage(completion_tokens: u64) -> MockUsage {
    MockUsage { prompt_tokens: DEFAULT_PROMPT_TOKENS, completion_tokens, cached_tokens: 0 }
}

/// Renders `answer` in the route's wire format, as a stream when `stream`.
fn respond(
    shared: &Arc<Shared>,
    call: &CallInfo,
    wire: Wire,
    answer: &Answer,
    stream: bool,
    gap: Duration,
) -> Response {
    if !stream {
        let body = match wire {
            Wire::OpenAi => chat_completion(call, answer),
            Wire::Anthropic => anthropic::message(call, answer),
            Wire::Gemini { .. } => gemini::response(call, answer),
            Wire::Bedrock => bedrock::converse(answer),
        };
        return json_response(200, &body);
    }
    let (events, content_type) = match wire {
        Wire::OpenAi => (chat_events(call, answer), SSE_CONTENT_TYPE),
        Wire::Anthropic => (anthropic::events(call, answer), SSE_CONTENT_TYPE),
        Wire::Gemini { sse: true } => (gemini::sse_events(call, answer), gemini::SSE_CONTENT_TYPE),
        Wire::Gemini { sse: false } => (gemini::array_events(call, answer), "application/json; charset=UTF-8"),
        Wire::Bedrock => (bedrock::events(answer), bedrock::CONTENT_TYPE),
    };
    event_stream(shared, events, gap, content_type)
}

fn build(shared: &Arc<Shared>, request: &RecordedRequest, kind: ReplyKind, serial: u64) -> Response {
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let route = Route::of(request);
    let call = CallInfo { serial, created, model: route.model.clone(), include_usage: request.include_usage() };
    match kind {
        ReplyKind::Auto => {
            let path = request.path.as_str();
            let kind = if let Some(kind) = media::auto(path).filter(|_| route.wire == Wire::OpenAi) {
                kind
            } else if path.ends_with("/chat/completions") || route.wire != Wire::OpenAi {
                ReplyKind::Chat { text: DEFAULT_REPLY_TEXT.to_owned(), usage: None }
            } else if path.ends_with("/completions") {
                ReplyKind::Completion { text: DEFAULT_REPLY_TEXT.to_owned() }
            } else if path.ends_with("/embeddings") || path.ends_with(":batchEmbedContents") {
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
            let usage = usage.unwrap_or(default_usage(word_count(&text)));
            let answer = Answer { output: Output::Text(words(&text)), usage, end: StreamEnd::Done };
            respond(shared, &call, route.wire, &answer, route.stream, Duration::ZERO)
        }
        ReplyKind::Stream { pieces, gap, usage, end } => {
            let usage = usage.unwrap_or(default_usage(count(pieces.len())));
            let answer = Answer { output: Output::Text(pieces), usage, end };
            respond(shared, &call, route.wire, &answer, true, gap)
        }
        ReplyKind::ToolCall { name, arguments } => {
            let usage = default_usage(count(fragments(&arguments).len().max(1)));
            let answer = Answer { output: Output::Tool { name, arguments }, usage, end: StreamEnd::Done };
            respond(shared, &call, route.wire, &answer, route.stream, Duration::ZERO)
        }
        ReplyKind::Completion { text } => {
            let usage = default_usage(word_count(&text));
            if request.is_stream() {
                let events = completion_events(&call, &words(&text), usage);
                return event_stream(shared, events, Duration::ZERO, SSE_CONTENT_TYPE);
            }
            json_response(200, &text_completion(&call, &text, usage))
        }
        ReplyKind::Embeddings { dims } if request.path.ends_with(":batchEmbedContents") => {
            json_response(200, &gemini::batch_embeddings(request, dims))
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
            let content_type = if route.wire == Wire::Bedrock { bedrock::CONTENT_TYPE } else { SSE_CONTENT_TYPE };
            event_stream(shared, chunks.into_iter().map(Emit::Chunk).collect(), gap, content_type)
        }
        ReplyKind::Media(reply) => media::build(shared, request, reply),
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

fn chat_completion(call: &CallInfo, answer: &Answer) -> Value {
    let (message, finish_reason) = match &answer.output {
        Output::Text(pieces) => {
            (json!({"role": "assistant", "content": pieces.concat(), "refusal": null, "annotations": []}), "stop")
        }
        Output::Tool { name, arguments } => {
            let call = json!({"id": tool_call_id(call), "type": "function", "function": {"name": name, "arguments": arguments}});
            (
                json!({"role": "assistant", "content": null, "tool_calls": [call], "refusal": null, "annotations": []}),
                "tool_calls",
            )
        }
    };
    json!({
        "id": format!("chatcmpl-mock-{}", call.serial),
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        "usage": answer.usage.to_json(),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT
    })
}

fn tool_call_id(call: &CallInfo) -> String {
    format!("call_mock_{}", call.serial)
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

fn chat_events(call: &CallInfo, answer: &Answer) -> Vec<Emit> {
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
    let pieces = answer.pieces();
    let sent = &pieces[..answer.sent(pieces.len())];
    // OpenAI opens a tool call with its id, name and empty arguments, then streams the
    // arguments alone.
    let (first, finish_reason) = match &answer.output {
        Output::Text(_) => (json!({"role": "assistant", "content": "", "refusal": null}), "stop"),
        Output::Tool { name, .. } => {
            let opening = json!({"index": 0, "id": tool_call_id(call), "type": "function", "function": {"name": name, "arguments": ""}});
            (json!({"role": "assistant", "content": null, "tool_calls": [opening], "refusal": null}), "tool_calls")
        }
    };
    let mut events = vec![chunk(first, Value::Null)];
    events.extend(sent.iter().map(|piece| {
        let delta = match &answer.output {
            Output::Text(_) => json!({"content": piece}),
            Output::Tool { .. } => json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
        };
        chunk(delta, Value::Null)
    }));
    match answer.end {
        StreamEnd::DropAfter(_) => {
            events.push(Emit::Cut);
            return events;
        }
        StreamEnd::Overloaded => {
            let error = json!({"error": {"message": "The server is overloaded. Please try again later.", "type": "server_error", "param": null, "code": null}});
            events.push(sse(&error.to_string()));
            return events;
        }
        StreamEnd::Done | StreamEnd::WithoutDone => {}
    }
    events.push(chunk(json!({}), json!(finish_reason)));
    if call.include_usage {
        events.push(sse(&usage_chunk(call, &id, "chat.completion.chunk", answer.usage.to_json()).to_string()));
    }
    if answer.end == StreamEnd::Done {
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

fn event_stream(shared: &Arc<Shared>, events: Vec<Emit>, gap: Duration, content_type: &'static str) -> Response {
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
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Seconds since the Unix epoch, as OpenAI's objects stamp them.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
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

    async fn post_to(mock: &MockUpstream, path_and_query: &str, body: Value) -> reqwest::Response {
        client().post(format!("http://{}{path_and_query}", mock.addr())).json(&body).send().await.unwrap()
    }

    #[tokio::test]
    async fn azure_paths_take_the_model_from_the_deployment() {
        let mock = MockUpstream::start().await;
        let path = "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21";
        let body: Value = post_to(&mock, path, json!({"messages": []})).await.json().await.unwrap();
        assert_eq!(body["model"], "gpt-4o-prod");
        assert_eq!(body["choices"][0]["message"]["content"], DEFAULT_REPLY_TEXT);
        assert_eq!(mock.last_request().unwrap().query.as_deref(), Some("api-version=2024-10-21"));
    }

    #[tokio::test]
    async fn anthropic_paths_speak_messages() {
        let mock = MockUpstream::start().await;
        mock.push(Reply::chat_with_usage("Hi there", 30, 2, 12));
        mock.push(Reply::stream(vec!["Hel", "lo"], Duration::from_millis(20)));
        mock.push(Reply::anthropic_error(529, "overloaded_error", "Overloaded"));
        mock.push(Reply::anthropic_overloaded_midstream(vec!["a", "b"]));

        let response = post_to(&mock, "/v1/messages", json!({"model": "claude-x", "messages": []})).await;
        assert!(response.headers().get("request-id").is_some());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "message");
        assert_eq!(body["content"], json!([{"type": "text", "text": "Hi there"}]));
        assert_eq!(body["usage"]["input_tokens"], 18);
        assert_eq!(body["usage"]["cache_read_input_tokens"], 12);

        let started = std::time::Instant::now();
        let response = post_to(&mock, "/v1/messages", json!({"model": "claude-x", "stream": true})).await;
        assert_eq!(response.headers()["content-type"], SSE_CONTENT_TYPE);
        let text = response.text().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(20 * 4), "events must be paced");
        let names: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("event: ")).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );

        let response = post_to(&mock, "/v1/messages", json!({})).await;
        assert_eq!(response.status(), 529);
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["type"], "overloaded_error");

        let text = post_to(&mock, "/v1/messages", json!({"stream": true})).await.text().await.unwrap();
        let last = text.trim_end().rsplit("\n\n").next().unwrap();
        let (name, data) = last.split_once('\n').unwrap();
        assert_eq!(name, "event: error");
        let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        assert_eq!(mock.completed_streams(), 2);
    }

    #[tokio::test]
    async fn gemini_paths_speak_generate_content() {
        let mock = MockUpstream::start().await;
        mock.push(Reply::chat_with_usage("Hi there", 20, 2, 5));
        mock.push(Reply::chat("one two"));
        mock.push(Reply::chat("one two"));
        mock.push(Reply::gemini_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded."));

        let body: Value =
            post_to(&mock, "/v1beta/models/gemini-x:generateContent?key=k", json!({})).await.json().await.unwrap();
        assert_eq!(body["candidates"][0]["content"], json!({"parts": [{"text": "Hi there"}], "role": "model"}));
        assert_eq!(body["candidates"][0]["finishReason"], "STOP");
        assert_eq!(body["usageMetadata"]["cachedContentTokenCount"], 5);
        assert_eq!(body["modelVersion"], "gemini-x");

        let response = post_to(&mock, "/v1beta/models/gemini-x:streamGenerateContent?alt=sse", json!({})).await;
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = response.text().await.unwrap();
        let chunks: Vec<Value> = text
            .split_terminator("\r\n\r\n")
            .map(|event| serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1]["candidates"][0]["content"]["parts"][0]["text"], " two");

        let text =
            post_to(&mock, "/v1beta/models/gemini-x:streamGenerateContent", json!({})).await.text().await.unwrap();
        assert_eq!(serde_json::from_str::<Vec<Value>>(&text).unwrap().len(), 2);

        let response = post_to(&mock, "/v1beta/models/gemini-x:generateContent", json!({})).await;
        assert_eq!(response.status(), 429);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED"}}));
    }

    #[tokio::test]
    async fn bedrock_paths_speak_converse() {
        let mock = MockUpstream::start().await;
        mock.push(Reply::chat("Hi there"));
        mock.push(Reply::stream_then_drop(vec!["a", "b", "c"], 1));
        mock.push(Reply::bedrock_error(400, "ValidationException", "Bad input."));

        let path = "/model/anthropic.claude-x-v1%3A0/converse";
        let request = client()
            .post(format!("http://{}{path}", mock.addr()))
            .header("authorization", "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/bedrock/aws4_request")
            .json(&json!({"messages": []}));
        let body: Value = request.send().await.unwrap().json().await.unwrap();
        assert_eq!(body["output"]["message"], json!({"role": "assistant", "content": [{"text": "Hi there"}]}));
        assert_eq!(body["stopReason"], "end_turn");
        let seen = mock.last_request().unwrap();
        assert_eq!(seen.path, path);
        assert!(seen.header("authorization").unwrap().starts_with("AWS4-HMAC-SHA256 Credential="));

        let response = post_to(&mock, "/model/anthropic.claude-x-v1%3A0/converse-stream", json!({})).await;
        assert_eq!(response.headers()["content-type"], "application/vnd.amazon.eventstream");
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
        // messageStart and one delta, each a whole frame whose length the prelude gives.
        let first = u32::from_be_bytes(received[..4].try_into().unwrap()) as usize;
        let second = u32::from_be_bytes(received[first..first + 4].try_into().unwrap()) as usize;
        assert_eq!(first + second, received.len());

        let response = post_to(&mock, "/model/m/converse", json!({})).await;
        assert_eq!(response.status(), 400);
        let error_type = response.headers()["x-amzn-errortype"].to_str().unwrap().to_owned();
        assert!(error_type.starts_with("ValidationException:"));
        assert_eq!(response.json::<Value>().await.unwrap(), json!({"message": "Bad input."}));
    }

    #[tokio::test]
    async fn tool_calls_in_every_format() {
        let mock = MockUpstream::start().await;
        mock.set_default(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));

        let body: Value = post(&mock, "/chat/completions", json!({})).await.json().await.unwrap();
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["tool_calls"][0]["function"]["name"], "get_weather");
        assert_eq!(choice["message"]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);

        let text = post(&mock, "/chat/completions", json!({"stream": true})).await.text().await.unwrap();
        let chunks: Vec<Value> =
            data_lines(&text).iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
        let opening = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(opening["id"], "call_mock_2");
        assert_eq!(opening["function"], json!({"name": "get_weather", "arguments": ""}));
        let arguments: String = chunks[1..]
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(arguments, r#"{"city":"Paris"}"#);
        assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");

        let body: Value = post_to(&mock, "/v1/messages", json!({})).await.json().await.unwrap();
        assert_eq!(body["stop_reason"], "tool_use");
        assert_eq!(body["content"][0]["input"], json!({"city": "Paris"}));

        let body: Value = post_to(&mock, "/v1beta/models/g:generateContent", json!({})).await.json().await.unwrap();
        let part = &body["candidates"][0]["content"]["parts"][0];
        assert_eq!(part["functionCall"], json!({"name": "get_weather", "args": {"city": "Paris"}}));

        let body: Value = post_to(&mock, "/model/m/converse", json!({})).await.json().await.unwrap();
        assert_eq!(body["stopReason"], "tool_use");
        assert_eq!(body["output"]["message"]["content"][0]["toolUse"]["name"], "get_weather");
    }

    #[test]
    fn routes_by_path() {
        let request = |path: &str, query: Option<&str>, body: Value| RecordedRequest {
            method: "POST".to_owned(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            headers: Vec::new(),
            body,
            raw_body: Bytes::new(),
        };
        let route = Route::of(&request("/v1/chat/completions", None, json!({"model": "m", "stream": true})));
        assert_eq!((route.wire, route.stream, route.model.as_str()), (Wire::OpenAi, true, "m"));
        let route = Route::of(&request("/proxy/v1/messages", None, json!({"model": "c"})));
        assert_eq!((route.wire, route.stream, route.model.as_str()), (Wire::Anthropic, false, "c"));
        let route = Route::of(&request(
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            Some("key=k&alt=sse"),
            json!({}),
        ));
        assert_eq!(
            (route.wire, route.stream, route.model.as_str()),
            (Wire::Gemini { sse: true }, true, "gemini-2.5-flash")
        );
        let route = Route::of(&request("/v1beta/models/g:generateContent", None, json!({"stream": true})));
        assert_eq!((route.wire, route.stream), (Wire::Gemini { sse: false }, false));
        let route = Route::of(&request("/model/us.anthropic.claude-x-v1%3A0/converse-stream", None, json!({})));
        assert_eq!(
            (route.wire, route.stream, route.model.as_str()),
            (Wire::Bedrock, true, "us.anthropic.claude-x-v1:0")
        );
        assert_eq!(percent_decode("a%3Ab%2x%+1%"), "a:b%2x%+1%");
    }

    #[test]
    fn words_join_back() {
        for text in ["", "a", "one two", "one  two ", " lead"] {
            assert_eq!(words(text).concat(), text, "{text:?}");
        }
        assert_eq!(words("one two three"), ["one", " two", " three"]);
    }
}
