//! Key lookup on every relayed call, without the database: the shape check, the keyed hash
//! of the presented secret, and a hit in a revision-stamped cache built like the server's
//! principal cache (`moka::future::Cache`, 100,000 entries), with 10,000 keys cached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, criterion_group, criterion_main};
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use veil_secrets::{ApiKeySecret, KeyHasher};

/// What the server caches per key hash (a stand-in for its `CachedPrincipal`).
#[derive(Clone)]
struct Cached {
    revision: i64,
    principal: Option<Arc<[u8; 256]>>,
}

/// Polls a future that does not wait on anything (a cache hit) to completion.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a cache hit should not wait"),
    }
}

fn key_lookup(c: &mut Criterion) {
    let hasher = KeyHasher::new(&[7u8; 32]);
    let secrets: Vec<ApiKeySecret> = (0..10_000).map(|_| ApiKeySecret::generate()).collect();
    let cache: moka::future::Cache<String, Cached> =
        moka::future::Cache::builder().max_capacity(100_000).time_to_live(Duration::from_secs(300)).build();
    for secret in &secrets {
        let principal = Some(Arc::new([0u8; 256]));
        ready(cache.insert(hasher.hash(secret.expose()), Cached { revision: 1, principal }));
    }
    let presented = secrets[4321].expose().to_owned();

    let mut group = c.benchmark_group("key_lookup");
    group.bench_function("shape_check_and_keyed_hash", |b| {
        b.iter(|| {
            assert!(KeyHasher::looks_like_key(black_box(&presented)));
            black_box(hasher.hash(black_box(&presented)))
        });
    });
    group.bench_function("hash_then_cache_hit", |b| {
        b.iter(|| {
            let hash = hasher.hash(black_box(&presented));
            let cached = ready(cache.get(&hash)).unwrap();
            assert!(cached.revision >= 1);
            black_box(cached.principal)
        });
    });
    group.finish();
}

criterion_group!(benches, key_lookup);
criterion_main!(benches);
