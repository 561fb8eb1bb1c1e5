//! `RedisLimiter` against the machine's Redis (`VEIL_TEST_REDIS_URL`; skipped when it is
//! unreachable unless `VEIL_REQUIRE_SERVICES=1`): the in-memory limiter's behaviour, on a
//! test clock passed to the scripts, plus what only a shared backend has (instances
//! sharing limits, lease expiry, Redis failures).
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;
use tokio_util::sync::CancellationToken;
use veil_cluster::{FailurePolicy, RedisLimiter, RedisLimiterOptions, TestClock};
use veil_domain::{ChannelName, KeyId, UserId};
use veil_limits::{Demand, Limiter, Limits, RateHeaders, Resource, Scope};
use veil_testkit::redis::{CutProxy, test_redis_url, unique_prefix};

const SEC: Duration = Duration::from_secs(1);

struct Setup {
    clock: TestClock,
    limiter: RedisLimiter,
    options: RedisLimiterOptions,
    url: String,
    stop: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn setup() -> Option<Setup> {
    let url = test_redis_url().await?;
    let options = RedisLimiterOptions { key_prefix: unique_prefix(), ..RedisLimiterOptions::default() };
    Some(on(url, options).await)
}

/// A limiter (with its running worker) on `url` sharing `options.key_prefix`.
async fn on(url: String, options: RedisLimiterOptions) -> Setup {
    let clock = TestClock::new();
    let conn = veil_cluster::connect(&url).await.expect("connects");
    let (limiter, worker) = RedisLimiter::with_test_clock(conn, options.clone(), clock.clone());
    let stop = CancellationToken::new();
    #[allow(clippy::disallowed_methods)] // stopped by the guard
    tokio::spawn(worker.run(stop.clone()));
    Setup { clock, limiter, options, url, stop }
}

fn key() -> Scope {
    Scope::Key(KeyId::generate())
}

fn rpm(n: u32) -> Limits {
    Limits { rpm: Some(n), ..Limits::default() }
}

fn tpm(n: u32) -> Limits {
    Limits { tpm: Some(n), ..Limits::default() }
}

fn concurrent(n: u32) -> Limits {
    Limits { max_concurrent: Some(n), ..Limits::default() }
}

fn one(scope: &Scope, limits: Limits) -> Vec<Demand> {
    vec![Demand::new(scope.clone(), limits)]
}

#[tokio::test]
async fn rpm_admits_a_full_burst_then_refuses_with_the_gcra_wait() {
    let Some(s) = setup().await else { return };
    let k = key();
    let demands = one(&k, rpm(3));
    for remaining in [2, 1, 0] {
        let admission = s.limiter.admit(&demands, 0).await.unwrap();
        let headers = admission.headers();
        assert_eq!(headers.limit_requests, Some(3));
        assert_eq!(headers.remaining_requests, Some(remaining));
        assert_eq!(headers.reset_requests, Some(20 * SEC * (3 - remaining)));
        assert_eq!(headers.limit_tokens, None);
    }
    let refusal = s.limiter.admit(&demands, 0).await.unwrap_err();
    assert_eq!((refusal.scope_kind, refusal.resource), ("key", Resource::Requests));
    assert_eq!(refusal.retry_after, 20 * SEC);
    assert!(!refusal.never_fits);
    assert_eq!(refusal.headers.remaining_requests, Some(0));
    assert_eq!(refusal.headers.reset_requests, Some(60 * SEC));
}

#[tokio::test]
async fn rpm_recovers_one_call_per_emission_interval() {
    let Some(s) = setup().await else { return };
    let k = key();
    let demands = one(&k, rpm(3));
    for _ in 0..3 {
        drop(s.limiter.admit(&demands, 0).await.unwrap());
    }
    s.clock.advance(20 * SEC - Duration::from_micros(1));
    assert_eq!(s.limiter.admit(&demands, 0).await.unwrap_err().retry_after, Duration::from_micros(1));
    s.clock.advance(Duration::from_micros(1));
    assert_eq!(s.limiter.admit(&demands, 0).await.unwrap().headers().remaining_requests, Some(0));
    assert!(s.limiter.admit(&demands, 0).await.is_err());
    s.clock.advance(60 * SEC);
    for _ in 0..3 {
        assert!(s.limiter.admit(&demands, 0).await.is_ok());
    }
}

#[tokio::test]
async fn tpm_reserves_the_estimate_and_refuses_until_enough_has_refilled() {
    let Some(s) = setup().await else { return };
    let k = key();
    let demands = one(&k, tpm(600));
    let admission = s.limiter.admit(&demands, 400).await.unwrap();
    assert_eq!(admission.headers().remaining_tokens, Some(200));
    assert_eq!(admission.headers().reset_tokens, Some(40 * SEC));
    let refusal = s.limiter.admit(&demands, 300).await.unwrap_err();
    assert_eq!(refusal.resource, Resource::Tokens);
    assert_eq!(refusal.retry_after, 10 * SEC);
    assert_eq!(refusal.headers.remaining_tokens, Some(200));
    s.clock.advance(10 * SEC);
    assert_eq!(s.limiter.admit(&demands, 300).await.unwrap().headers().remaining_tokens, Some(0));
}

#[tokio::test]
async fn an_estimate_over_the_whole_budget_never_fits_and_zero_blocks() {
    let Some(s) = setup().await else { return };
    let k = key();
    let refusal = s.limiter.admit(&one(&k, tpm(600)), 601).await.unwrap_err();
    assert!(refusal.never_fits);
    assert_eq!(refusal.retry_after, 60 * SEC);
    assert!(s.limiter.admit(&one(&k, tpm(600)), 600).await.is_ok());
    for (limits, resource) in
        [(rpm(0), Resource::Requests), (tpm(0), Resource::Tokens), (concurrent(0), Resource::Concurrency)]
    {
        let refusal = s.limiter.admit(&one(&key(), limits), 0).await.unwrap_err();
        assert_eq!(refusal.resource, resource);
        assert!(refusal.never_fits);
    }
}

#[tokio::test]
async fn reconcile_gives_back_what_the_estimate_overshot_once() {
    let Some(s) = setup().await else { return };
    let k = key();
    let demands = one(&k, tpm(1000));
    let mut admission = s.limiter.admit(&demands, 800).await.unwrap();
    admission.reconcile(300);
    admission.reconcile(0);
    s.limiter.settled().await;
    assert_eq!(s.limiter.admit(&demands, 0).await.unwrap().headers().remaining_tokens, Some(700));
}

#[tokio::test]
async fn reconcile_takes_the_shortfall_into_debt_and_the_next_call_waits() {
    let Some(s) = setup().await else { return };
    let k = key();
    let demands = one(&k, tpm(600));
    let mut admission = s.limiter.admit(&demands, 100).await.unwrap();
    admission.reconcile(900);
    drop(admission);
    s.limiter.settled().await;
    let refusal = s.limiter.admit(&demands, 0).await.unwrap_err();
    assert_eq!(refusal.resource, Resource::Tokens);
    assert_eq!(refusal.retry_after, 30 * SEC);
    assert_eq!(refusal.headers.reset_tokens, Some(90 * SEC));
    s.clock.advance(30 * SEC);
    assert_eq!(s.limiter.admit(&demands, 0).await.unwrap().headers().remaining_tokens, Some(0));
    s.clock.advance(SEC);
    assert_eq!(s.limiter.admit(&demands, 0).await.unwrap().headers().remaining_tokens, Some(10));
}

#[tokio::test]
async fn dropping_without_reconcile_keeps_the_reservation() {
    let Some(s) = setup().await else { return };
    let k = key();
    let demands = one(&k, tpm(1000));
    drop(s.limiter.admit(&demands, 800).await.unwrap());
    s.limiter.settled().await;
    assert_eq!(s.limiter.admit(&demands, 0).await.unwrap().headers().remaining_tokens, Some(200));
}

#[tokio::test]
async fn concurrency_leases_are_released_on_drop() {
    let Some(s) = setup().await else { return };
    let k = key();
    let demands = one(&k, concurrent(2));
    let first = s.limiter.admit(&demands, 0).await.unwrap();
    let _second = s.limiter.admit(&demands, 0).await.unwrap();
    let refusal = s.limiter.admit(&demands, 0).await.unwrap_err();
    assert_eq!(refusal.resource, Resource::Concurrency);
    assert_eq!(refusal.retry_after, SEC);
    assert!(!refusal.never_fits);
    drop(first);
    s.limiter.settled().await;
    let _third = s.limiter.admit(&demands, 0).await.unwrap();
}

#[tokio::test]
async fn a_lease_that_is_never_released_expires() {
    let Some(s) = setup().await else { return };
    let k = key();
    let demands = one(&k, concurrent(1));
    // The instance holding it "crashes": its release never reaches Redis.
    std::mem::forget(s.limiter.admit(&demands, 0).await.unwrap());
    assert!(s.limiter.admit(&demands, 0).await.is_err());
    s.clock.advance(s.options.lease_ttl);
    assert!(s.limiter.admit(&demands, 0).await.is_ok());
}

#[tokio::test]
async fn a_refused_demand_leaves_the_others_untouched() {
    let Some(s) = setup().await else { return };
    let (k, u) = (key(), Scope::User(UserId::generate()));
    let key_limits = Limits { rpm: Some(10), tpm: Some(1000), max_concurrent: Some(1) };
    let demands = vec![Demand::new(k.clone(), key_limits), Demand::new(u.clone(), rpm(1))];
    let _first = s.limiter.admit(&one(&u, rpm(1)), 0).await.unwrap();
    let refusal = s.limiter.admit(&demands, 500).await.unwrap_err();
    assert_eq!((refusal.scope_kind, refusal.resource), ("user", Resource::Requests));
    let admission = s.limiter.admit(&one(&k, key_limits), 500).await.unwrap();
    assert_eq!(admission.headers().remaining_requests, Some(9));
    assert_eq!(admission.headers().remaining_tokens, Some(500));
}

#[tokio::test]
async fn the_longest_wait_among_refusing_limits_is_reported() {
    let Some(s) = setup().await else { return };
    let (k, c) = (key(), Scope::Channel(ChannelName::parse("openai-main").unwrap()));
    let demands = vec![Demand::new(k, concurrent(1)), Demand::new(c, rpm(1))];
    let _held = s.limiter.admit(&demands, 0).await.unwrap();
    let refusal = s.limiter.admit(&demands, 0).await.unwrap_err();
    assert_eq!((refusal.scope_kind, refusal.resource), ("channel", Resource::Requests));
    assert_eq!(refusal.retry_after, 60 * SEC);
}

#[tokio::test]
async fn headers_report_the_tightest_scope_per_resource_and_unlimited_costs_nothing() {
    let Some(s) = setup().await else { return };
    let demands = vec![
        Demand::new(key(), Limits { rpm: Some(100), tpm: Some(500), max_concurrent: None }),
        Demand::new(Scope::User(UserId::generate()), Limits { rpm: Some(10), tpm: Some(10_000), max_concurrent: None }),
    ];
    let admission = s.limiter.admit(&demands, 100).await.unwrap();
    let headers = admission.headers();
    assert_eq!((headers.limit_requests, headers.remaining_requests), (Some(10), Some(9)));
    assert_eq!((headers.limit_tokens, headers.remaining_tokens), (Some(500), Some(400)));
    let unlimited = vec![Demand::new(key(), Limits::default())];
    assert_eq!(s.limiter.admit(&unlimited, u64::MAX).await.unwrap().headers(), &RateHeaders::default());
}

#[tokio::test]
async fn a_scope_named_twice_pays_twice_and_a_changed_limit_keeps_usage() {
    let Some(s) = setup().await else { return };
    let k = key();
    let twice = vec![Demand::new(k.clone(), rpm(3)), Demand::new(k.clone(), rpm(3))];
    assert_eq!(s.limiter.admit(&twice, 0).await.unwrap().headers().remaining_requests, Some(1));
    assert!(s.limiter.admit(&twice, 0).await.is_err());
    let k = key();
    for _ in 0..5 {
        drop(s.limiter.admit(&one(&k, rpm(10)), 0).await.unwrap());
    }
    let admission = s.limiter.admit(&one(&k, rpm(20)), 0).await.unwrap();
    assert_eq!(admission.headers().remaining_requests, Some(14));
    assert_eq!(admission.headers().reset_requests, Some(18 * SEC));
    let admission = s.limiter.admit(&one(&k, rpm(10)), 0).await.unwrap();
    assert_eq!(admission.headers().remaining_requests, Some(6));
    assert_eq!(admission.headers().reset_requests, Some(24 * SEC));
}

#[tokio::test]
async fn two_limiters_on_one_prefix_share_the_limit() {
    let Some(a) = setup().await else { return };
    let b = on(a.url.clone(), a.options.clone()).await;
    let k = key();
    let demands = one(&k, Limits { rpm: Some(4), tpm: None, max_concurrent: Some(1) });
    let held = a.limiter.admit(&demands, 0).await.unwrap();
    assert_eq!(b.limiter.admit(&demands, 0).await.unwrap_err().resource, Resource::Concurrency);
    drop(held);
    a.limiter.settled().await;
    let admission = b.limiter.admit(&demands, 0).await.unwrap();
    assert_eq!(admission.headers().remaining_requests, Some(2));
}

#[tokio::test]
async fn idle_state_expires_from_redis() {
    let Some(s) = setup().await else { return };
    let k = key();
    drop(s.limiter.admit(&one(&k, Limits { rpm: Some(60), tpm: Some(600), max_concurrent: Some(1) }), 6).await);
    s.limiter.settled().await;
    let client = redis::Client::open(s.url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg(format!("{{{}}}:*", s.options.key_prefix)).query_async(&mut conn).await.unwrap();
    assert!(!keys.is_empty());
    for key in keys {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        // A second for the one request and the six tokens to drain, plus a second's margin.
        assert!((0..=2_000).contains(&ttl), "{key} expires in {ttl} ms");
    }
}

#[tokio::test]
async fn an_unreachable_redis_fails_closed_or_open_and_recovers_without_restart() {
    let Some(url) = test_redis_url().await else { return };
    let proxy = CutProxy::start(&url).await;
    let prefix = unique_prefix();
    let closed = on(proxy.url(), RedisLimiterOptions { key_prefix: prefix.clone(), ..Default::default() }).await;
    let open = on(
        proxy.url(),
        RedisLimiterOptions { key_prefix: prefix, on_failure: FailurePolicy::Open, ..Default::default() },
    )
    .await;
    let demands = one(&key(), rpm(1));
    drop(closed.limiter.admit(&demands, 0).await.unwrap());
    assert_eq!(closed.limiter.admit(&demands, 0).await.unwrap_err().resource, Resource::Requests);

    proxy.cut();
    let refusal = closed.limiter.admit(&demands, 0).await.unwrap_err();
    assert!(refusal.is_unavailable());
    assert_eq!(refusal.to_string(), "rate limiting is unavailable");
    let admitted = open.limiter.admit(&demands, 0).await.unwrap();
    assert_eq!(admitted.headers(), &RateHeaders::default(), "admitted without limits");

    proxy.restore();
    // The connection manager reconnects on its own; the limit is enforced again.
    let mut refusal = closed.limiter.admit(&demands, 0).await.unwrap_err();
    for _ in 0..50 {
        if !refusal.is_unavailable() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        refusal = closed.limiter.admit(&demands, 0).await.unwrap_err();
    }
    assert_eq!(refusal.resource, Resource::Requests, "Redis answers again after the cut");
    closed.clock.advance(60 * SEC);
    assert!(closed.limiter.admit(&demands, 0).await.is_ok());
}

#[tokio::test]
async fn a_live_calls_lease_is_refreshed_and_outlives_the_ttl() {
    let Some(s) = setup().await else { return };
    let k = key();
    let demands = one(&k, concurrent(1));
    let held = s.limiter.admit(&demands, 0).await.unwrap();
    let two_thirds = s.options.lease_ttl * 2 / 3;
    s.clock.advance(two_thirds);
    s.limiter.refresh_leases().await;
    s.limiter.settled().await;
    s.clock.advance(two_thirds);
    assert_eq!(s.limiter.admit(&demands, 0).await.unwrap_err().resource, Resource::Concurrency);
    drop(held);
    s.limiter.settled().await;
    // Released: nothing to refresh, and the slot is free.
    s.limiter.refresh_leases().await;
    s.limiter.settled().await;
    assert!(s.limiter.admit(&demands, 0).await.is_ok());
}
