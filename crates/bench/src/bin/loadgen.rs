#![allow(clippy::print_stdout, clippy::print_stderr)]
//! An open-loop load generator for OpenAI-compatible chat completions, loopback only.
//!
//! Requests are sent at planned times (constant arrival rate, `--rate` per second) by a pacing thread
//! that sleeps with the OS's high-resolution timer, whatever the state of earlier requests; latency is
//! measured from the *planned* send time, so a stall in the harness or the server is never hidden
//! (no coordinated omission). Streams also record the time to the first body byte and the gaps
//! between SSE events as they arrive (an event that arrives in the same read as the one before it
//! has a gap of 0). Requests planned during `--warmup` are sent but not recorded. In-flight
//! requests are bounded by `--concurrency-cap` (a request that would exceed it is dropped and
//! counted as an error), each request by `--timeout`, the recorded requests by `--requests` (when
//! given), and the whole run by warm-up + duration + timeout.
//!
//! Connections are kept alive and opened on demand (one per request in flight at most). The pool
//! reuses the most recently freed connection first, so at modest concurrency one or two connections
//! carry nearly every request. `--clients N` spreads requests round robin over N independent
//! connection pools instead (request i goes to pool i mod N; each pool still opens connections on
//! demand, so the send times stay open-loop): with N well above the requests in flight, each pool
//! holds about one connection and each connection carries 1/N of the load, which is what a
//! per-connection round-robin balancer in front of several servers needs to split the load evenly.
//!
//! Prints one JSON line: planned and achieved rate, errors, and percentiles (p50, p90, p99, p99.9,
//! max, in ms) of latency, and for streams of time to first byte and inter-event gap.

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "Open-loop load generator for OpenAI-compatible chat completions (loopback only)")]
struct Args {
    /// Full URL of the chat completions endpoint, e.g. http://127.0.0.1:8080/v1/chat/completions.
    #[arg(long)]
    url: String,
    /// Bearer token sent in the Authorization header.
    #[arg(long, env = "LOADGEN_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Requests per second (constant arrival rate).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Recorded seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before recording starts.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Ask for a stream (with `stream_options.include_usage`).
    #[arg(long)]
    stream: bool,
    /// Recorded requests: when given, the recorded part of the run lasts `requests / rate`
    /// seconds instead of `--duration`.
    #[arg(long)]
    requests: Option<u64>,
    /// Extra request header, `Name: value` (repeatable), e.g. a gateway's routing headers.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Most requests in flight; a request planned beyond it is dropped and counted as an error.
    #[arg(long, default_value_t = 4096)]
    concurrency_cap: usize,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Model name to request.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// Free-form label copied into the output line.
    #[arg(long)]
    label: Option<String>,
    /// Independent connection pools that requests are spread over, round robin.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Runtime worker threads; 1 uses a single-threaded runtime (cheapest on a shared core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

const MAX_RATE: f64 = 100_000.0;
const MAX_DURATION: f64 = 600.0;
const MAX_WARMUP: f64 = 120.0;
const MAX_REQUESTS: f64 = 10_000_000.0;
const MAX_CAP: usize = 50_000;
const MAX_CLIENTS: usize = 1024;
/// Inter-event gaps kept for the percentiles; later ones are dropped (counted in the output).
const MAX_GAP_SAMPLES: usize = 5_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Failure {
    Status(u16),
    Connect,
    Timeout,
    Body,
    Incomplete,
    OverCap,
    Other,
}

impl Failure {
    fn name(self) -> String {
        match self {
            Failure::Status(code) => format!("http_{code}"),
            Failure::Connect => "connect".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Body => "body".into(),
            Failure::Incomplete => "incomplete_stream".into(),
            Failure::OverCap => "over_concurrency_cap".into(),
            Failure::Other => "other".into(),
        }
    }
}

struct Sample {
    planned: Instant,
    /// Planned time to the moment the request task started (pacing and scheduling lag).
    send_lag: Duration,
    /// Planned time to the first body byte.
    ttfb: Option<Duration>,
    /// Time between consecutive SSE events of a stream, in µs, as they were read.
    gaps: Vec<u32>,
    /// Planned time to the end of the response.
    latency: Duration,
    done: Instant,
    outcome: Result<(), (Failure, String)>,
}

fn check_loopback(url: &reqwest::Url) -> anyhow::Result<()> {
    if !matches!(url.scheme(), "http" | "https") {
        bail!("only http(s) URLs are supported, not {}", url.scheme());
    }
    let host = url.host_str().context("the URL has no host")?;
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(()),
        _ => bail!("refusing to load a non-loopback host ({host}); use 127.x.x.x, [::1] or localhost"),
    }
}

fn validate(args: &Args) -> anyhow::Result<()> {
    if !(args.rate > 0.0 && args.rate <= MAX_RATE) {
        bail!("--rate must be in (0, {MAX_RATE}]");
    }
    if !(args.duration > 0.0 && args.duration <= MAX_DURATION) {
        bail!("--duration must be in (0, {MAX_DURATION}] seconds");
    }
    if !(args.warmup >= 0.0 && args.warmup <= MAX_WARMUP) {
        bail!("--warmup must be in [0, {MAX_WARMUP}] seconds");
    }
    if !(args.timeout > 0.0 && args.timeout <= 120.0) {
        bail!("--timeout must be in (0, 120] seconds");
    }
    if args.concurrency_cap == 0 || args.concurrency_cap > MAX_CAP {
        bail!("--concurrency-cap must be in [1, {MAX_CAP}]");
    }
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        bail!("--clients must be in [1, {MAX_CLIENTS}]");
    }
    if args.requests == Some(0) {
        bail!("--requests must be at least 1");
    }
    if args.rate * (args.duration + args.warmup) > MAX_REQUESTS {
        bail!("rate × (duration + warmup) exceeds {MAX_REQUESTS} requests");
    }
    Ok(())
}

/// What every request of a run shares.
#[derive(Clone)]
struct RequestPlan {
    client: reqwest::Client,
    url: reqwest::Url,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
    stream: bool,
    timeout: Duration,
}

/// Counts SSE event ends (`\n\n`, or `\r\n\r\n`) in a body read, carrying the last byte(s) of the
/// previous read so a delimiter split across reads is still seen.
#[derive(Default)]
struct EventCounter {
    carry: Vec<u8>,
}

impl EventCounter {
    fn count(&mut self, chunk: &[u8]) -> usize {
        self.carry.extend_from_slice(chunk);
        let mut events = 0;
        let mut from = 0;
        while let Some(at) = find_event_end(&self.carry[from..]) {
            events += 1;
            from += at;
        }
        // Keep only what could start a delimiter that ends in the next read.
        let keep_from = self.carry.len().saturating_sub(3).max(from);
        self.carry.drain(..keep_from);
        events
    }
}

/// Offset just past the first blank line (event end) in `bytes`.
fn find_event_end(bytes: &[u8]) -> Option<usize> {
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn one_request(plan: RequestPlan, planned: Instant) -> Sample {
    let RequestPlan { client, url, headers, body, stream, timeout } = plan;
    let started = Instant::now();
    let send_lag = started.saturating_duration_since(planned);
    let mut ttfb = None;
    let mut gaps: Vec<u32> = Vec::new();
    let work = async {
        let request = client.post(url).headers(headers).body(body);
        let mut response = request.send().await.map_err(|e| {
            let kind = if e.is_connect() { Failure::Connect } else { Failure::Other };
            (kind, chain(&e))
        })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err((Failure::Status(status.as_u16()), text.chars().take(200).collect()));
        }
        // Keep the last bytes to check that a stream ended with [DONE].
        let mut tail: Vec<u8> = Vec::new();
        let mut total = 0usize;
        let mut counter = EventCounter::default();
        let mut last_event: Option<Instant> = None;
        while let Some(chunk) = response.chunk().await.map_err(|e| (Failure::Body, chain(&e)))? {
            if chunk.is_empty() {
                continue;
            }
            let now = Instant::now();
            if ttfb.is_none() {
                ttfb = Some(now.saturating_duration_since(planned));
            }
            total += chunk.len();
            if stream {
                let events = counter.count(&chunk);
                if events > 0 {
                    // The first event of a stream has no gap (its wait is the time to first byte).
                    if let Some(last) = last_event {
                        gaps.push(u32::try_from(now.saturating_duration_since(last).as_micros()).unwrap_or(u32::MAX));
                    }
                    // The other events of this read came with it: no gap between them.
                    gaps.extend(std::iter::repeat_n(0, events - 1));
                    last_event = Some(now);
                }
                tail.extend_from_slice(&chunk);
                if tail.len() > 64 {
                    tail.drain(..tail.len() - 64);
                }
            }
        }
        if total == 0 {
            return Err((Failure::Incomplete, "empty body".into()));
        }
        if stream && !tail.windows(12).any(|w| w == b"data: [DONE]") {
            return Err((Failure::Incomplete, "stream did not end with data: [DONE]".into()));
        }
        Ok(())
    };
    let outcome = match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err((Failure::Timeout, format!("no complete answer within {timeout:?}"))),
    };
    let done = Instant::now();
    Sample { planned, send_lag, ttfb, gaps, latency: done.saturating_duration_since(planned), done, outcome }
}

/// An error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).map(|us| *us as f64 / 1000.0)
}

fn summary(mut us: Vec<u64>) -> serde_json::Value {
    us.sort_unstable();
    let mean = if us.is_empty() { None } else { Some(us.iter().sum::<u64>() as f64 / us.len() as f64 / 1000.0) };
    let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
    json!({
        "p50": round(percentile(&us, 50.0)),
        "p90": round(percentile(&us, 90.0)),
        "p99": round(percentile(&us, 99.0)),
        "p99_9": round(percentile(&us, 99.9)),
        "max": round(us.last().map(|v| *v as f64 / 1000.0)),
        "mean": round(mean),
    })
}

fn reap(result: Result<Sample, tokio::task::JoinError>, samples: &mut Vec<Sample>, join_errors: &mut u64) {
    match result {
        Ok(sample) => samples.push(sample),
        Err(_) => *join_errors += 1,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The request headers: JSON content, the bearer key, and the `--header` extras.
fn request_headers(args: &Args) -> anyhow::Result<reqwest::header::HeaderMap> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = &args.key {
        let mut value = HeaderValue::from_str(&format!("Bearer {key}")).context("the key is not a valid header")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    for header in &args.headers {
        let (name, value) =
            header.split_once(':').with_context(|| format!("--header {header:?} is not `Name: value`"))?;
        let name = reqwest::header::HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("bad header name in {header:?}"))?;
        let value = HeaderValue::from_str(value.trim()).with_context(|| format!("bad header value in {header:?}"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

async fn run(mut args: Args) -> anyhow::Result<serde_json::Value> {
    let url = reqwest::Url::parse(&args.url).with_context(|| format!("bad --url {}", args.url))?;
    check_loopback(&url)?;
    if let Some(requests) = args.requests
        && args.rate > 0.0
    {
        args.duration = requests as f64 / args.rate;
    }
    validate(&args)?;
    let headers = request_headers(&args)?;
    let mut request = json!({
        "model": args.model,
        "messages": [{"role": "user", "content": "Say hello in a few words."}],
        "max_tokens": 20,
    });
    if args.stream
        && let Some(object) = request.as_object_mut()
    {
        object.insert("stream".into(), json!(true));
        object.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let body = Bytes::from(serde_json::to_vec(&request)?);
    let clients = (0..args.clients)
        .map(|_| {
            reqwest::Client::builder()
                .http1_only()
                .no_proxy()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(args.concurrency_cap)
                .pool_idle_timeout(Duration::from_secs(120))
                .connect_timeout(Duration::from_secs(2))
                .build()
                .context("cannot build the HTTP client")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first_client = clients.first().context("no HTTP client")?.clone();
    let timeout = Duration::from_secs_f64(args.timeout);
    let plan = RequestPlan { client: first_client, url: url.clone(), headers, body, stream: args.stream, timeout };

    let total = match args.requests {
        Some(requests) => (args.rate * args.warmup).ceil() as u64 + requests,
        None => (args.rate * (args.warmup + args.duration)).floor() as u64,
    };
    let interval = 1.0 / args.rate;
    let start = Instant::now() + Duration::from_millis(20);
    let record_from = start + Duration::from_secs_f64(args.warmup);

    // The pacing thread: sleeps to each planned time with the OS timer (tokio's timer has 1 ms ticks).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            for i in 0..total {
                let planned = start + Duration::from_secs_f64(i as f64 * interval);
                let now = Instant::now();
                if planned > now {
                    std::thread::sleep(planned - now);
                }
                if tx.send(planned).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the pacing thread")?;

    let mut tasks: JoinSet<Sample> = JoinSet::new();
    let mut samples: Vec<Sample> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut max_in_flight = 0usize;
    let mut join_errors = 0u64;
    let mut next_client = clients.iter().cycle();
    while let Some(planned) = rx.recv().await {
        while let Some(result) = tasks.try_join_next() {
            reap(result, &mut samples, &mut join_errors);
        }
        if tasks.len() >= args.concurrency_cap {
            let now = Instant::now();
            samples.push(Sample {
                planned,
                send_lag: now.saturating_duration_since(planned),
                ttfb: None,
                gaps: Vec::new(),
                latency: Duration::ZERO,
                done: now,
                outcome: Err((Failure::OverCap, format!("{} requests already in flight", tasks.len()))),
            });
            continue;
        }
        let mut request = plan.clone();
        if let Some(client) = next_client.next() {
            request.client = client.clone();
        }
        tasks.spawn(one_request(request, planned));
        max_in_flight = max_in_flight.max(tasks.len());
    }
    // Every task ends within its timeout; allow a little more, then abandon the rest.
    let drain_deadline = Instant::now() + timeout + Duration::from_secs(2);
    loop {
        let next = tokio::time::timeout_at(drain_deadline.into(), tasks.join_next()).await;
        match next {
            Ok(Some(result)) => reap(result, &mut samples, &mut join_errors),
            Ok(None) => break,
            Err(_) => {
                join_errors += tasks.len() as u64;
                tasks.abort_all();
                break;
            }
        }
    }
    let _ = pacer.join();

    let all_ok = samples.iter().filter(|s| s.outcome.is_ok()).count();
    let recorded: Vec<&Sample> = samples.iter().filter(|s| s.planned >= record_from).collect();
    let mut errors: BTreeMap<Failure, u64> = BTreeMap::new();
    let mut error_samples: BTreeMap<String, String> = BTreeMap::new();
    let (mut latency, mut ttfb, mut lag) = (Vec::new(), Vec::new(), Vec::new());
    let (mut gaps, mut gaps_dropped, mut events) = (Vec::new(), 0usize, 0usize);
    let (mut first_done, mut last_done): (Option<Instant>, Option<Instant>) = (None, None);
    for sample in &recorded {
        lag.push(micros(sample.send_lag));
        match &sample.outcome {
            Ok(()) => {
                latency.push(micros(sample.latency));
                if let Some(t) = sample.ttfb {
                    ttfb.push(micros(t));
                }
                if !sample.gaps.is_empty() {
                    events += sample.gaps.len() + 1;
                    let room = MAX_GAP_SAMPLES.saturating_sub(gaps.len()).min(sample.gaps.len());
                    gaps.extend(sample.gaps.iter().take(room).map(|us| u64::from(*us)));
                    gaps_dropped += sample.gaps.len() - room;
                }
                first_done = Some(first_done.map_or(sample.done, |t| t.min(sample.done)));
                last_done = Some(last_done.map_or(sample.done, |t| t.max(sample.done)));
            }
            Err((kind, message)) => {
                *errors.entry(*kind).or_default() += 1;
                error_samples.entry(kind.name()).or_insert_with(|| message.clone());
            }
        }
    }
    let ok = latency.len();
    let error_count: u64 = errors.values().sum::<u64>() + join_errors;
    // Completions per second between the first and the last recorded completion: equal to the offered
    // rate when the server keeps up, lower when it falls behind.
    let achieved = match (first_done, last_done) {
        (Some(first), Some(last)) if ok >= 2 && last > first => (ok - 1) as f64 / (last - first).as_secs_f64(),
        _ => ok as f64 / args.duration,
    };
    let offered = recorded.len();
    let error_breakdown: BTreeMap<String, u64> = errors.iter().map(|(k, v)| (k.name(), *v)).collect();
    let mut out = json!({
        "label": args.label,
        "url": url.as_str(),
        "stream": args.stream,
        "rate": args.rate,
        "planned_rate": args.rate,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "offered": offered,
        "ok": ok,
        "achieved_rate": (achieved * 10.0).round() / 10.0,
        "achieved_ratio": if offered == 0 { 0.0 } else { ((ok as f64 / offered as f64) * 10000.0).round() / 10000.0 },
        "errors": error_count,
        "error_kinds": error_breakdown,
        "error_samples": error_samples,
        "total_sent": samples.len(),
        "total_ok": all_ok,
        "max_in_flight": max_in_flight,
        "clients": args.clients,
        "latency_ms": summary(latency),
        "send_lag_ms": summary(lag),
    });
    if args.stream
        && let Some(object) = out.as_object_mut()
    {
        object.insert("ttfb_ms".into(), summary(ttfb));
        object.insert("gap_ms".into(), summary(gaps));
        object.insert("events".into(), json!(events));
        object.insert("gaps_dropped".into(), json!(gaps_dropped));
    }
    Ok(out)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(args)).and_then(|out| Ok(serde_json::to_string(&out)?)),
        Err(error) => Err(error.into()),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
