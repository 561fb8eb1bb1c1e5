//! The protocol work on a relayed call's hot path: parsing an upstream's SSE bytes and writing
//! the events out again, and translating requests and streams between OpenAI Chat and
//! Anthropic Messages (the vendor fixtures of `tests/fixtures`, run through the same
//! compositions the server uses).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Map, Value};
use std::hint::black_box;
use veil_protocol::translate::{self, RouteHints, StreamTranslator, UpstreamFormat};
use veil_protocol::{ClientFormat, SseEvent, SseParser};

const OPENAI_REQUEST: &str = include_str!("../tests/fixtures/openai_chat/request.json");
const ANTHROPIC_REQUEST: &str = include_str!("../tests/fixtures/anthropic/request.json");
const ANTHROPIC_STREAM: &str = include_str!("../tests/fixtures/anthropic/stream_text.sse");

/// A 20-chunk OpenAI stream with a finish chunk, a usage chunk and `[DONE]`: what the load
/// test's mock upstream sends (case B of the benchmark protocol).
fn openai_stream(chunks: usize) -> Vec<String> {
    let head = r#""id":"chatcmpl-VeilBench0000000000000000001","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_veilbench""#;
    let mut events = Vec::with_capacity(chunks + 3);
    for i in 0..chunks {
        let delta =
            if i == 0 { r#"{"role":"assistant","content":"Hello","refusal":null}"# } else { r#"{"content":" tok"}"# };
        events.push(format!(
            r#"{{{head},"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":null}}],"usage":null}}"#
        ));
    }
    events.push(format!(
        r#"{{{head},"choices":[{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"stop"}}],"usage":null}}"#
    ));
    events.push(format!(
        r#"{{{head},"choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":{chunks},"total_tokens":{}}}}}"#,
        12 + chunks
    ));
    events.push("[DONE]".to_owned());
    events
}

fn wire(events: &[String]) -> Vec<u8> {
    events.iter().flat_map(|data| SseEvent::data(data.clone()).encode().to_vec()).collect()
}

fn parse_all(text: &str) -> Vec<SseEvent> {
    SseParser::new().push(text.as_bytes()).unwrap()
}

fn sse(c: &mut Criterion) {
    let events = openai_stream(20);
    let bytes = wire(&events);
    // As the upstream's reads arrive: one event per read (a paced stream), or the whole
    // stream in one read (an upstream that answers at once).
    let per_event: Vec<Vec<u8>> = events.iter().map(|data| SseEvent::data(data.clone()).encode().to_vec()).collect();
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("parse_reemit_openai_20_chunks_one_read_per_event", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            let mut parsed = Vec::with_capacity(4);
            let mut out = 0usize;
            for read in &per_event {
                parsed.clear();
                parser.push_into(black_box(read), &mut parsed).unwrap();
                for event in &parsed {
                    out += event.encode().len();
                }
            }
            black_box(out)
        });
    });
    group.bench_function("parse_reemit_openai_20_chunks_one_read", |b| {
        b.iter(|| {
            let mut parser = SseParser::new();
            let mut parsed = Vec::with_capacity(32);
            parser.push_into(black_box(&bytes), &mut parsed).unwrap();
            black_box(parsed.iter().map(|event| event.encode().len()).sum::<usize>())
        });
    });
    group.finish();
}

fn requests(c: &mut Criterion) {
    let openai: Value = serde_json::from_str(OPENAI_REQUEST).unwrap();
    let openai_map: Map<String, Value> = openai.as_object().unwrap().clone();
    let anthropic: Value = serde_json::from_str(ANTHROPIC_REQUEST).unwrap();
    let mut group = c.benchmark_group("translate_request");
    group.bench_function("openai_chat_to_anthropic", |b| {
        b.iter(|| {
            black_box(translate::upstream_request(
                UpstreamFormat::Anthropic,
                black_box(&openai_map),
                "claude-sonnet-4-5",
            ))
            .unwrap()
        });
    });
    group.bench_function("anthropic_to_openai_chat", |b| {
        b.iter(|| {
            black_box(translate::client_request(ClientFormat::Anthropic, black_box(&anthropic), RouteHints::default()))
                .unwrap()
        });
    });
    group.finish();
}

fn streams(c: &mut Criterion) {
    let anthropic_events = parse_all(ANTHROPIC_STREAM);
    let openai_events: Vec<SseEvent> = openai_stream(20).into_iter().map(SseEvent::data).collect();
    let mut group = c.benchmark_group("translate_stream");
    for (name, events, make) in [
        (
            "anthropic_upstream_to_openai_chat",
            &anthropic_events,
            (|| StreamTranslator::from_upstream(UpstreamFormat::Anthropic, "claude-sonnet-4-5"))
                as fn() -> StreamTranslator,
        ),
        ("openai_chat_to_anthropic_client_20_chunks", &openai_events, || {
            StreamTranslator::to_client(ClientFormat::Anthropic)
        }),
    ] {
        group.throughput(Throughput::Elements(events.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                make,
                |mut translator| {
                    let mut out = Vec::with_capacity(8);
                    let mut bytes = 0usize;
                    for event in events {
                        out.clear();
                        translator.push(black_box(event), &mut out).unwrap();
                        bytes += out.iter().map(|e| e.encode().len()).sum::<usize>();
                    }
                    out.clear();
                    translator.finish(&mut out);
                    black_box(bytes + out.len())
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, sse, requests, streams);
criterion_main!(benches);
