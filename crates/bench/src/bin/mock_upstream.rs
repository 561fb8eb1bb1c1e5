#![allow(clippy::print_stdout, clippy::print_stderr)]
//! A very cheap OpenAI-format mock upstream for load tests.
//!
//! `POST /v1/chat/completions` (also `/chat/completions`):
//! * non-stream: a fixed ~380-byte `chat.completion` with usage (12 prompt / 20 completion tokens);
//! * stream: `--chunks` `chat.completion.chunk` events `--chunk-gap-ms` apart, a finish chunk, a usage
//!   chunk when the request set `stream_options.include_usage`, then `data: [DONE]`.
//!
//! The same under `/s/{scenario}/v1/chat/completions`, where `{scenario}` overrides the command-line
//! shape for that request: `-`-separated `c<chunks>`, `g<gap µs>`, `l<latency µs>`, e.g.
//! `/s/c20-g5000/v1` as a channel's base URL. One mock process can so serve every benchmark case,
//! each through its own base URL, and a gateway's channels tell the cases apart.
//!
//! Every response is rendered once (at start-up, or on first use of a stream length) and kept; a
//! request costs a small JSON scan of its body (to see `stream` and `include_usage`) and a
//! reference-counted copy of the bytes. `GET /healthz` answers 200.

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use clap::Parser;
use serde::Deserialize;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "mock_upstream", about = "Cheap OpenAI-format mock upstream for load tests")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Fixed delay before answering, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fixed delay before answering, in microseconds (overrides --latency-ms).
    #[arg(long)]
    latency_us: Option<u64>,
    /// Content chunks per streamed response.
    #[arg(long, default_value_t = 20)]
    chunks: u32,
    /// Delay between streamed chunks, in milliseconds (0: the whole stream is written at once).
    #[arg(long, default_value_t = 0)]
    chunk_gap_ms: u64,
    /// Delay between streamed chunks, in microseconds (overrides --chunk-gap-ms).
    #[arg(long)]
    chunk_gap_us: Option<u64>,
    /// Runtime worker threads; 1 uses a single-threaded runtime (cheapest on a shared core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// The pre-rendered events of one kind of stream.
struct StreamParts {
    /// One event per content chunk.
    chunks: Vec<Bytes>,
    /// Finish chunk, optional usage chunk and `[DONE]`, sent together.
    tail: Bytes,
    /// Everything concatenated, for a zero chunk gap.
    whole: Bytes,
}

/// The shape of one answer: delay, stream length and pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scenario {
    latency: Duration,
    gap: Duration,
    chunks: u32,
}

impl Scenario {
    /// Applies a `c20-g5000-l60000` path segment on top of `self`.
    fn with_overrides(mut self, spec: &str) -> Option<Self> {
        for part in spec.split('-').filter(|p| !p.is_empty()) {
            let (kind, value) = part.split_at(1);
            let value: u64 = value.parse().ok()?;
            match kind {
                "c" => self.chunks = u32::try_from(value).ok()?,
                "g" => self.gap = Duration::from_micros(value),
                "l" => self.latency = Duration::from_micros(value),
                _ => return None,
            }
        }
        self.check().ok()?;
        Some(self)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.latency > Duration::from_secs(600) || self.gap > Duration::from_secs(60) || self.chunks > 100_000 {
            anyhow::bail!("limits: latency ≤ 600 s, chunk gap ≤ 60 s, chunks ≤ 100000");
        }
        Ok(())
    }
}

/// Distinct stream lengths rendered at most (each kept for the life of the process).
const MAX_RENDERED_LENGTHS: usize = 64;

struct Mock {
    default: Scenario,
    completion: Bytes,
    /// Rendered streams by (chunks, include_usage).
    streams: Mutex<HashMap<(u32, bool), Arc<StreamParts>>>,
}

impl Mock {
    fn stream(&self, chunks: u32, include_usage: bool) -> Option<Arc<StreamParts>> {
        let mut streams = self.streams.lock().ok()?;
        if let Some(parts) = streams.get(&(chunks, include_usage)) {
            return Some(parts.clone());
        }
        if streams.len() >= MAX_RENDERED_LENGTHS {
            return None;
        }
        let parts = Arc::new(render_stream(chunks, include_usage).ok()?);
        streams.insert((chunks, include_usage), parts.clone());
        Some(parts)
    }
}

#[derive(Deserialize)]
struct RequestFlags {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

const ID: &str = "chatcmpl-VeilBench0000000000000000001";
const CREATED: u64 = 1_700_000_000;
const MODEL: &str = "gpt-4o-mini";
const FINGERPRINT: &str = "fp_veilbench";
const PROMPT_TOKENS: u32 = 12;
const COMPLETION_TOKENS: u32 = 20;
const CONTENT: &str = "Hello! This is a fixed twenty-token reply.";

fn render_completion() -> anyhow::Result<Bytes> {
    let value = serde_json::json!({
        "id": ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": CONTENT, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS
        },
        "system_fingerprint": FINGERPRINT
    });
    Ok(Bytes::from(serde_json::to_vec(&value)?))
}

fn event(value: &serde_json::Value) -> anyhow::Result<Bytes> {
    let mut out = b"data: ".to_vec();
    serde_json::to_writer(&mut out, value)?;
    out.extend_from_slice(b"\n\n");
    Ok(Bytes::from(out))
}

fn render_stream(chunks: u32, include_usage: bool) -> anyhow::Result<StreamParts> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        let mut value = serde_json::json!({
            "id": ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        });
        if include_usage && let Some(object) = value.as_object_mut() {
            object.insert("usage".into(), serde_json::Value::Null);
        }
        event(&value)
    };
    let mut events = Vec::with_capacity(chunks as usize);
    for i in 0..chunks {
        let delta = if i == 0 {
            serde_json::json!({"role": "assistant", "content": "Hello", "refusal": null})
        } else {
            serde_json::json!({"content": " tok"})
        };
        events.push(chunk(delta, serde_json::Value::Null)?);
    }
    let mut tail = chunk(serde_json::json!({}), serde_json::json!("stop"))?.to_vec();
    if include_usage {
        let usage = serde_json::json!({
            "id": ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": {
                "prompt_tokens": PROMPT_TOKENS,
                "completion_tokens": chunks,
                "total_tokens": PROMPT_TOKENS + chunks
            }
        });
        tail.extend_from_slice(&event(&usage)?);
    }
    tail.extend_from_slice(b"data: [DONE]\n\n");
    let mut whole = Vec::new();
    for e in &events {
        whole.extend_from_slice(e);
    }
    whole.extend_from_slice(&tail);
    Ok(StreamParts { chunks: events, tail: Bytes::from(tail), whole: Bytes::from(whole) })
}

fn with_type(body: Body, content_type: &'static str) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn bad_request(message: &'static str) -> Response {
    let body = format!(r#"{{"error":{{"message":"{message}","type":"invalid_request_error"}}}}"#);
    let mut response = with_type(Body::from(body), "application/json");
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

async fn chat_default(State(mock): State<Arc<Mock>>, body: Bytes) -> Response {
    let scenario = mock.default;
    answer(&mock, scenario, &body).await
}

async fn chat_scenario(State(mock): State<Arc<Mock>>, Path(spec): Path<String>, body: Bytes) -> Response {
    match mock.default.with_overrides(&spec) {
        Some(scenario) => answer(&mock, scenario, &body).await,
        None => bad_request("bad scenario: use c<chunks>-g<gap us>-l<latency us>"),
    }
}

async fn answer(mock: &Mock, scenario: Scenario, body: &[u8]) -> Response {
    let Ok(flags) = serde_json::from_slice::<RequestFlags>(body) else {
        return bad_request("invalid JSON body");
    };
    if !scenario.latency.is_zero() {
        tokio::time::sleep(scenario.latency).await;
    }
    if !flags.stream.unwrap_or(false) {
        return with_type(Body::from(mock.completion.clone()), "application/json");
    }
    let include_usage = flags.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let Some(parts) = mock.stream(scenario.chunks, include_usage) else {
        return bad_request("too many distinct stream lengths");
    };
    let body = if scenario.gap.is_zero() {
        Body::from(parts.whole.clone())
    } else {
        let gap = scenario.gap;
        // Chunk i is due `i × gap` after the first one and the tail `chunks × gap` after it, on a fixed
        // schedule, so the timer's 1 ms ticks do not add up over the stream.
        let start = tokio::time::Instant::now();
        let events = futures_util::stream::unfold(0usize, move |i| {
            let parts = parts.clone();
            async move {
                if i > parts.chunks.len() {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep_until(start + gap * u32::try_from(i).unwrap_or(u32::MAX)).await;
                }
                let bytes = parts.chunks.get(i).cloned().unwrap_or_else(|| parts.tail.clone());
                Some((Ok::<Bytes, Infallible>(bytes), i + 1))
            }
        });
        Body::from_stream(events)
    };
    let mut response = with_type(body, "text/event-stream");
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let latency = args.latency_us.map_or(Duration::from_millis(args.latency_ms), Duration::from_micros);
    let gap = args.chunk_gap_us.map_or(Duration::from_millis(args.chunk_gap_ms), Duration::from_micros);
    let default = Scenario { latency, gap, chunks: args.chunks };
    default.check()?;
    let mock = Arc::new(Mock { default, completion: render_completion()?, streams: Mutex::new(HashMap::new()) });
    for include_usage in [false, true] {
        mock.stream(args.chunks, include_usage).context("cannot render the default stream")?;
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_default))
        .route("/chat/completions", post(chat_default))
        .route("/s/{scenario}/v1/chat/completions", post(chat_scenario))
        .route("/s/{scenario}/chat/completions", post(chat_scenario))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    eprintln!(
        "mock_upstream listening on http://{address} (latency {latency:?}, {} chunks, gap {gap:?}, completion {} B)",
        args.chunks,
        mock.completion.len()
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    // Without TCP_NODELAY, a stream's small writes meet the client's delayed ACKs and stall ~40 ms.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("server failed")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(serve(args)),
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mock_upstream: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
