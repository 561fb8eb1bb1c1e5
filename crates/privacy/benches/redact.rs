//! Redaction throughput: a realistic ~4 KB chat prompt with a few values, and 1 MB of prose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use veil_privacy::{Detector, NON_TEXT_KEYS, Redactor};

const PROSE: &str = "The committee met on Tuesday to review the quarterly figures, which showed revenue \
    up 12 percent over the same period last year. Several members raised questions about the \
    allocation of the 2025 budget, in particular the 3.5 million set aside for infrastructure, and \
    asked for a detailed breakdown by the end of the month. The chair noted that version 1.4.2 of \
    the reporting tool had fixed the rounding problems seen in March (see section 4, items 7-9). \
    Discussion then turned to hiring: two of the 14 open positions have been filled, and interviews \
    for the remaining roles continue through the spring. ";

fn chat_prompt() -> String {
    let mut prompt = String::from(
        "You are a helpful assistant for our support team. Please draft a polite reply to the \
         customer below, summarise their issue in two sentences, and list any follow-up actions.\n\n\
         --- customer message ---\nHi, my name is Jane and I ordered the standing desk (order 88231) \
         three weeks ago. You can reach me at jane.doe@example.com or on +44 20 7946 0958. I was \
         charged twice on my card 4111 1111 1111 1111, so please refund one payment to IBAN \
         DE89 3704 0044 0532 0130 00. Our office network is 203.0.113.42 if that matters for the \
         delivery portal.\n--- end ---\n\n",
    );
    while prompt.len() < 4096 {
        prompt.push_str(PROSE);
    }
    prompt.truncate(4096);
    prompt
}

fn prose_megabyte() -> String {
    let mut text = String::with_capacity(1 << 20);
    while text.len() < (1 << 20) {
        text.push_str(PROSE);
    }
    text.truncate(1 << 20);
    text
}

fn redact(c: &mut Criterion) {
    let detector = Arc::new(Detector::new().unwrap());
    let mut group = c.benchmark_group("redact");
    let plain_4k = prose_megabyte()[..4096].to_owned();
    for (name, text) in
        [("chat_prompt_4k", chat_prompt()), ("prose_4k_no_values", plain_4k), ("prose_1mb", prose_megabyte())]
    {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut redactor = Redactor::new(Arc::clone(&detector));
                let redacted = redactor.redact(black_box(&text)).unwrap();
                black_box(redacted.len())
            });
        });
    }
    group.finish();
}

/// A chat request of 20 turns (~4 KB of text in 40 strings) plus a tool call.
fn chat_request() -> serde_json::Value {
    let mut messages = vec![serde_json::json!({"role": "system", "content": "You are a helpful support assistant."})];
    for turn in 0..10 {
        messages.push(serde_json::json!({"role": "user", "content": format!("Turn {turn}: {}", &PROSE[..150])}));
        messages.push(serde_json::json!({"role": "assistant", "content": format!("Noted. {}", &PROSE[150..300])}));
    }
    messages.push(serde_json::json!({"role": "user", "content": "Mail the summary to jane.doe@example.com please."}));
    messages.push(serde_json::json!({"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "send_mail", "arguments": "{\"to\":\"jane.doe@example.com\",\"cc\":\"+44 20 7946 0958\"}"}}]}));
    serde_json::json!({"model": "gpt-4o-mini", "stream": true, "messages": messages})
}

fn redact_json(c: &mut Criterion) {
    let detector = Arc::new(Detector::new().unwrap());
    let request = chat_request();
    let bytes = serde_json::to_vec(&request).unwrap().len();
    let mut group = c.benchmark_group("redact_json");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("chat_request_20_turns", |b| {
        b.iter_batched_ref(
            || request.clone(),
            |body| {
                let mut redactor = Redactor::new(Arc::clone(&detector));
                redactor.redact_json_strings(body, NON_TEXT_KEYS).unwrap();
                redactor.total()
            },
            criterion::BatchSize::SmallInput,
        );
    });
    group.finish();
}

fn restore(c: &mut Criterion) {
    let detector = Arc::new(Detector::new().unwrap());
    let mut redactor = Redactor::new(detector);
    let redacted = redactor.redact(&chat_prompt()).unwrap().into_owned();
    let restorer = redactor.restorer();
    let mut group = c.benchmark_group("restore");
    group.throughput(Throughput::Bytes(redacted.len() as u64));
    group.bench_function("stream_chunks_16b", |b| {
        b.iter(|| {
            let mut stream = restorer.stream();
            let mut emitted = 0;
            for chunk in redacted.as_bytes().chunks(16) {
                emitted += stream.push(std::str::from_utf8(chunk).unwrap_or("")).len();
            }
            emitted + stream.finish().len()
        });
    });
    group.finish();
}

criterion_group!(benches, redact, redact_json, restore);
criterion_main!(benches);
