//! Token estimation: what sizing a call's hold costs (a chat prompt's `messages`) and what
//! counting costs per byte of plain text, with the vocabulary and with the estimate the
//! relay's hot path uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;
use veil_tokens::Counter;

const PROSE: &str = "The committee met on Tuesday to review the quarterly figures, which showed revenue \
    up 12 percent over the same period last year. Several members raised questions about the \
    allocation of the 2025 budget, in particular the 3.5 million set aside for infrastructure, and \
    asked for a detailed breakdown by the end of the month. ";

fn text_of(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + PROSE.len());
    while text.len() < bytes {
        text.push_str(PROSE);
    }
    text.truncate(bytes);
    text
}

fn count(c: &mut Criterion) {
    veil_tokens::warm_up();
    let mut group = c.benchmark_group("tokens");
    // The load test's request: one short user message.
    let short = json!([{"role": "user", "content": "Say hello in a few words."}]);
    for (name, counter) in [("vocabulary", Counter::Vocabulary), ("estimate", Counter::Estimate)] {
        group.bench_function(format!("chat_prompt_one_short_message_{name}"), |b| {
            b.iter(|| black_box(veil_tokens::count_chat_prompt(black_box(&short), counter)));
        });
    }
    let chat = json!([
        {"role": "system", "content": "You are a helpful assistant. Answer concisely."},
        {"role": "user", "content": text_of(2048)},
        {"role": "assistant", "content": text_of(1024)},
        {"role": "user", "content": [{"type": "text", "text": text_of(1024)}]},
    ]);
    group.throughput(Throughput::Bytes(4096));
    for (name, counter) in [("vocabulary", Counter::Vocabulary), ("estimate", Counter::Estimate)] {
        group.bench_function(format!("chat_prompt_4k_{name}"), |b| {
            b.iter(|| black_box(veil_tokens::count_chat_prompt(black_box(&chat), counter)));
        });
    }
    for bytes in [4096, 64 * 1024] {
        let text = text_of(bytes);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(format!("text_{}k_vocabulary", bytes / 1024), |b| {
            b.iter(|| black_box(veil_tokens::count(black_box(&text))));
        });
        group.bench_function(format!("text_{}k_estimate", bytes / 1024), |b| {
            b.iter(|| black_box(veil_tokens::estimate(black_box(&text))));
        });
    }
    group.finish();
}

criterion_group!(benches, count);
criterion_main!(benches);
