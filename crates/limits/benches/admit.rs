//! The limit check on every relayed call: admitting one call against the key, user and
//! channel scopes (requests/min, tokens/min and concurrency each), reconciling its tokens,
//! and releasing its leases, with the in-memory limiter holding 10,000 keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use veil_domain::{ChannelName, KeyId, UserId};
use veil_limits::{Demand, InMemoryLimiter, Limiter, Limits, Scope};

/// Polls a future that does not wait on anything (the in-memory limiter) to completion.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-memory limiter should not wait"),
    }
}

fn demands() -> Vec<Demand> {
    let generous = Limits { rpm: Some(100_000_000), tpm: Some(4_000_000_000), max_concurrent: Some(1_000_000) };
    vec![
        Demand::new(Scope::Key(KeyId::generate()), generous),
        Demand::new(Scope::User(UserId::generate()), generous),
        Demand::new(Scope::Channel(ChannelName::parse("openai-main").unwrap()), generous),
    ]
}

fn admit(c: &mut Criterion) {
    let limiter = InMemoryLimiter::new();
    for _ in 0..10_000 {
        let mut admission = ready(limiter.admit(&demands(), 40)).unwrap();
        admission.reconcile(32);
    }
    let call = demands();
    let mut group = c.benchmark_group("limits");
    group.bench_function("admit_reconcile_release_3_scopes", |b| {
        b.iter(|| {
            let mut admission = ready(limiter.admit(black_box(&call), 40)).unwrap();
            admission.reconcile(black_box(32));
            drop(admission);
        });
    });
    let unlimited = vec![Demand::new(Scope::Key(KeyId::generate()), Limits::default())];
    group.bench_function("admit_unlimited_key", |b| {
        b.iter(|| black_box(ready(limiter.admit(black_box(&unlimited), 40)).unwrap()));
    });
    group.finish();
}

criterion_group!(benches, admit);
criterion_main!(benches);
