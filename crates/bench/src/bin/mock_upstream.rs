#![allow(clippy::print_stdout, clippy::print_stderr)]
//! A very cheap OpenAI-format mock upstream for load tests.
//!
//! `POST /v1/chat/completions` (also `/chat/completions`):
//! * non-stream: a fixed ~380-byte `chat.completion` with usage (12 prompt / 20 completion tokens);
//! * stream: `--chunks` `chat.completion.chunk` events `--chunk-gap-ms` apart, a finish chunk, a usage
//!   chunk when the request set `stream_options.include_usage`, then `data: [DONE]`.
//!
//! Every response is rendered once at start-up; a request costs a small JSON scan of its body (to see
//! `stream` and `include_usage`) and a reference-counted copy of the bytes. `GET /healthz` answers 200.

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use clap::Parser;
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
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

struct Mock {
    latency: Duration,
    gap: Duration,
    completion: Bytes,
    stream_plain: Arc<StreamParts>,
    stream_usage: Arc<StreamParts>,
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

async fn chat(State(mock): State<Arc<Mock>>, body: Bytes) -> Response {
    let flags: RequestFlags = match serde_json::from_slice(&body) {
        Ok(flags) => flags,
        Err(_) => {
            let mut response = with_type(
                Body::from(r#"{"error":{"message":"invalid JSON body","type":"invalid_request_error"}}"#),
                "application/json",
            );
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    if !mock.latency.is_zero() {
        tokio::time::sleep(mock.latency).await;
    }
    if !flags.stream.unwrap_or(false) {
        return with_type(Body::from(mock.completion.clone()), "application/json");
    }
    let include_usage = flags.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let parts = if include_usage { mock.stream_usage.clone() } else { mock.stream_plain.clone() };
    let body = if mock.gap.is_zero() {
        Body::from(parts.whole.clone())
    } else {
        let gap = mock.gap;
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
    if latency > Duration::from_secs(600) || gap > Duration::from_secs(60) || args.chunks > 100_000 {
        anyhow::bail!("limits: latency ≤ 600 s, chunk gap ≤ 60 s, chunks ≤ 100000");
    }
    let mock = Arc::new(Mock {
        latency,
        gap,
        completion: render_completion()?,
        stream_plain: Arc::new(render_stream(args.chunks, false)?),
        stream_usage: Arc::new(render_stream(args.chunks, true)?),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
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
