use super::*;
use crate::{Limits, ManualClock, RateHeaders};
use veil_domain::{ChannelName, KeyId, UserId};

const SEC: Duration = Duration::from_secs(1);

fn setup() -> (ManualClock, InMemoryLimiter) {
    let clock = ManualClock::new();
    (clock.clone(), InMemoryLimiter::with_clock(clock))
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

#[test]
fn scope_kinds_are_stable_labels() {
    assert_eq!(key().kind(), "key");
    assert_eq!(Scope::User(UserId::generate()).kind(), "user");
    assert_eq!(Scope::Channel(ChannelName::parse("openai-main").unwrap()).kind(), "channel");
}

#[tokio::test]
async fn rpm_admits_a_full_burst_then_refuses_with_the_gcra_wait() {
    let (_clock, limiter) = setup();
    let k = key();
    let demands = one(&k, rpm(3));
    for remaining in [2, 1, 0] {
        let admission = limiter.admit(&demands, 0).await.unwrap();
        let headers = admission.headers();
        assert_eq!(headers.limit_requests, Some(3));
        assert_eq!(headers.remaining_requests, Some(remaining));
        // Full again once every admitted call has drained at one per 20 s.
        assert_eq!(headers.reset_requests, Some(20 * SEC * (3 - remaining)));
        assert_eq!(headers.limit_tokens, None);
    }
    let refusal = limiter.admit(&demands, 0).await.unwrap_err();
    assert_eq!((refusal.scope_kind, refusal.resource), ("key", Resource::Requests));
    assert_eq!(refusal.retry_after, 20 * SEC);
    assert!(!refusal.never_fits);
    assert_eq!(refusal.headers.remaining_requests, Some(0));
    assert_eq!(refusal.headers.reset_requests, Some(60 * SEC));
    assert_eq!(refusal.to_string(), "key requests limit reached; retry in 20s");
}

#[test]
fn rpm_recovers_one_call_per_emission_interval() {
    let (clock, limiter) = setup();
    let k = key();
    let demands = one(&k, rpm(3));
    for _ in 0..3 {
        drop(limiter.admit_now(&demands, 0).unwrap());
    }
    clock.advance(20 * SEC - Duration::from_nanos(1));
    assert_eq!(limiter.admit_now(&demands, 0).unwrap_err().retry_after, Duration::from_nanos(1));
    clock.advance(Duration::from_nanos(1));
    let admission = limiter.admit_now(&demands, 0).unwrap();
    assert_eq!(admission.headers().remaining_requests, Some(0));
    assert!(limiter.admit_now(&demands, 0).is_err());

    clock.advance(60 * SEC);
    for _ in 0..3 {
        assert!(limiter.admit_now(&demands, 0).is_ok());
    }
}

#[test]
fn tpm_reserves_the_estimate_and_refuses_until_enough_has_refilled() {
    let (clock, limiter) = setup();
    let k = key();
    let demands = one(&k, tpm(600));
    let admission = limiter.admit_now(&demands, 400).unwrap();
    assert_eq!(admission.headers().limit_tokens, Some(600));
    assert_eq!(admission.headers().remaining_tokens, Some(200));
    assert_eq!(admission.headers().reset_tokens, Some(40 * SEC));
    assert_eq!(admission.headers().limit_requests, None);

    // 300 needed, 200 left: 100 tokens at 10 per second.
    let refusal = limiter.admit_now(&demands, 300).unwrap_err();
    assert_eq!(refusal.resource, Resource::Tokens);
    assert_eq!(refusal.retry_after, 10 * SEC);
    assert!(!refusal.never_fits);
    assert_eq!(refusal.headers.remaining_tokens, Some(200));

    clock.advance(10 * SEC);
    assert_eq!(limiter.admit_now(&demands, 300).unwrap().headers().remaining_tokens, Some(0));
}

#[test]
fn an_estimate_over_the_whole_budget_never_fits() {
    let (_clock, limiter) = setup();
    let k = key();
    let refusal = limiter.admit_now(&one(&k, tpm(600)), 601).unwrap_err();
    assert!(refusal.never_fits);
    assert_eq!(refusal.resource, Resource::Tokens);
    assert_eq!(refusal.retry_after, 60 * SEC);
    assert_eq!(refusal.headers.remaining_tokens, Some(600));
    assert_eq!(refusal.to_string(), "key tokens limit reached, and this call can never fit it");
    assert!(limiter.is_empty(), "a refusal stores nothing");
    assert!(limiter.admit_now(&one(&k, tpm(600)), 600).is_ok());
}

#[test]
fn a_zero_limit_blocks_every_call() {
    let (_clock, limiter) = setup();
    let k = key();
    for (limits, resource) in
        [(rpm(0), Resource::Requests), (tpm(0), Resource::Tokens), (concurrent(0), Resource::Concurrency)]
    {
        let refusal = limiter.admit_now(&one(&k, limits), 0).unwrap_err();
        assert_eq!(refusal.resource, resource);
        assert!(refusal.never_fits);
    }
}

#[test]
fn reconcile_gives_back_what_the_estimate_overshot() {
    let (_clock, limiter) = setup();
    let k = key();
    let demands = one(&k, tpm(1000));
    let mut admission = limiter.admit_now(&demands, 800).unwrap();
    admission.reconcile(300);
    assert_eq!(limiter.admit_now(&demands, 0).unwrap().headers().remaining_tokens, Some(700));
    // Only the first reconcile counts.
    admission.reconcile(0);
    assert_eq!(limiter.admit_now(&demands, 0).unwrap().headers().remaining_tokens, Some(700));
}

#[test]
fn giving_back_never_fills_past_capacity() {
    let (clock, limiter) = setup();
    let k = key();
    let demands = one(&k, tpm(1000));
    let mut admission = limiter.admit_now(&demands, 800).unwrap();
    clock.advance(60 * SEC);
    admission.reconcile(0);
    assert_eq!(limiter.admit_now(&demands, 0).unwrap().headers().remaining_tokens, Some(1000));
}

#[test]
fn reconcile_takes_the_shortfall_into_debt_and_the_next_call_waits() {
    let (clock, limiter) = setup();
    let k = key();
    let demands = one(&k, tpm(600));
    let mut admission = limiter.admit_now(&demands, 100).unwrap();
    admission.reconcile(900);
    drop(admission);
    // 900 used of 600: 300 in debt, so even a zero-token call waits 30 s.
    let refusal = limiter.admit_now(&demands, 0).unwrap_err();
    assert_eq!(refusal.resource, Resource::Tokens);
    assert_eq!(refusal.retry_after, 30 * SEC);
    assert_eq!(refusal.headers.remaining_tokens, Some(0));
    assert_eq!(refusal.headers.reset_tokens, Some(90 * SEC));
    clock.advance(30 * SEC);
    assert_eq!(limiter.admit_now(&demands, 0).unwrap().headers().remaining_tokens, Some(0));
    clock.advance(SEC);
    assert_eq!(limiter.admit_now(&demands, 0).unwrap().headers().remaining_tokens, Some(10));
}

#[test]
fn dropping_without_reconcile_keeps_the_reservation() {
    let (_clock, limiter) = setup();
    let k = key();
    let demands = one(&k, tpm(1000));
    drop(limiter.admit_now(&demands, 800).unwrap());
    assert_eq!(limiter.admit_now(&demands, 0).unwrap().headers().remaining_tokens, Some(200));
}

#[test]
fn reconcile_after_prune_still_charges_the_shortfall() {
    let (clock, limiter) = setup();
    let k = key();
    let demands = one(&k, tpm(600));
    let mut admission = limiter.admit_now(&demands, 60).unwrap();
    clock.advance(60 * SEC);
    limiter.prune();
    assert!(limiter.is_empty());
    admission.reconcile(660);
    assert_eq!(limiter.admit_now(&demands, 0).unwrap().headers().remaining_tokens, Some(0));
    clock.advance(SEC);
    assert_eq!(limiter.admit_now(&demands, 0).unwrap().headers().remaining_tokens, Some(10));
}

#[test]
fn concurrency_leases_are_released_on_drop() {
    let (_clock, limiter) = setup();
    let k = key();
    let demands = one(&k, concurrent(2));
    let first = limiter.admit_now(&demands, 0).unwrap();
    let second = limiter.admit_now(&demands, 0).unwrap();
    let refusal = limiter.admit_now(&demands, 0).unwrap_err();
    assert_eq!(refusal.resource, Resource::Concurrency);
    assert_eq!(refusal.retry_after, SEC);
    assert!(!refusal.never_fits);
    drop(first);
    let third = limiter.admit_now(&demands, 0).unwrap();
    drop((second, third));
    limiter.prune();
    assert!(limiter.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_moved_into_another_task_is_released_there() {
    let (_clock, limiter) = setup();
    let k = key();
    let demands = one(&k, concurrent(1));
    let admission = limiter.admit(&demands, 0).await.unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    #[allow(clippy::disallowed_methods)] // joined below
    let task = tokio::spawn(async move {
        released.await.unwrap();
        drop(admission);
    });
    // Still held while the other task owns it, even though the limiter is free.
    assert_eq!(limiter.admit(&demands, 0).await.unwrap_err().resource, Resource::Concurrency);
    release.send(()).unwrap();
    task.await.unwrap();
    assert!(limiter.admit(&demands, 0).await.is_ok());
}

#[test]
fn a_refused_demand_leaves_the_others_untouched() {
    let (_clock, limiter) = setup();
    let (k, u) = (key(), Scope::User(UserId::generate()));
    let key_limits = Limits { rpm: Some(10), tpm: Some(1000), max_concurrent: Some(1) };
    let demands = vec![Demand::new(k.clone(), key_limits), Demand::new(u.clone(), rpm(1))];
    let _first = limiter.admit_now(&one(&u, rpm(1)), 0).unwrap();

    let refusal = limiter.admit_now(&demands, 500).unwrap_err();
    assert_eq!((refusal.scope_kind, refusal.resource), ("user", Resource::Requests));
    // The key's requests, tokens and lease are all still there.
    let admission = limiter.admit_now(&one(&k, key_limits), 500).unwrap();
    assert_eq!(admission.headers().remaining_requests, Some(9));
    assert_eq!(admission.headers().remaining_tokens, Some(500));
}

#[test]
fn the_longest_wait_among_refusing_limits_is_reported() {
    let (_clock, limiter) = setup();
    let (k, c) = (key(), Scope::Channel(ChannelName::parse("openai-main").unwrap()));
    let demands = vec![Demand::new(k.clone(), concurrent(1)), Demand::new(c.clone(), rpm(1))];
    let _held = limiter.admit_now(&demands, 0).unwrap();
    let refusal = limiter.admit_now(&demands, 0).unwrap_err();
    assert_eq!((refusal.scope_kind, refusal.resource), ("channel", Resource::Requests));
    assert_eq!(refusal.retry_after, 60 * SEC);
    assert!(!refusal.never_fits);
}

#[test]
fn headers_report_the_tightest_scope_per_resource() {
    let (_clock, limiter) = setup();
    let (k, u) = (key(), Scope::User(UserId::generate()));
    let demands = vec![
        Demand::new(k, Limits { rpm: Some(100), tpm: Some(500), max_concurrent: None }),
        Demand::new(u, Limits { rpm: Some(10), tpm: Some(10_000), max_concurrent: None }),
    ];
    let admission = limiter.admit_now(&demands, 100).unwrap();
    let headers = admission.headers();
    assert_eq!((headers.limit_requests, headers.remaining_requests), (Some(10), Some(9)));
    assert_eq!((headers.limit_tokens, headers.remaining_tokens), (Some(500), Some(400)));
    let names: Vec<&str> = headers.pairs().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names.len(), 6);
}

#[test]
fn unlimited_scopes_cost_nothing() {
    let (_clock, limiter) = setup();
    let demands = vec![Demand::new(key(), Limits::default()), Demand::new(key(), Limits::default())];
    assert!(Limits::default().is_unlimited());
    let admission = limiter.admit_now(&demands, u64::MAX).unwrap();
    assert_eq!(admission.headers(), &RateHeaders::default());
    assert!(limiter.is_empty());
}

#[test]
fn a_scope_named_twice_pays_twice() {
    let (_clock, limiter) = setup();
    let k = key();
    let demands = vec![Demand::new(k.clone(), rpm(3)), Demand::new(k.clone(), rpm(3))];
    assert_eq!(limiter.admit_now(&demands, 0).unwrap().headers().remaining_requests, Some(1));
    assert!(limiter.admit_now(&demands, 0).is_err());
    assert_eq!(limiter.admit_now(&one(&k, rpm(3)), 0).unwrap().headers().remaining_requests, Some(0));
}

#[test]
fn a_changed_limit_applies_to_the_next_call_and_keeps_usage() {
    let (_clock, limiter) = setup();
    let k = key();
    for _ in 0..5 {
        drop(limiter.admit_now(&one(&k, rpm(10)), 0).unwrap());
    }
    // Raised: the five calls still count, the extra room is there at once.
    let admission = limiter.admit_now(&one(&k, rpm(20)), 0).unwrap();
    assert_eq!(admission.headers().remaining_requests, Some(14));
    assert_eq!(admission.headers().reset_requests, Some(18 * SEC));
    // Lowered: six of twenty (18 s to drain) become three of ten (still 18 s), then one more.
    let admission = limiter.admit_now(&one(&k, rpm(10)), 0).unwrap();
    assert_eq!(admission.headers().remaining_requests, Some(6));
    assert_eq!(admission.headers().reset_requests, Some(24 * SEC));
}

#[test]
fn huge_values_saturate_instead_of_panicking() {
    let (clock, limiter) = setup();
    let k = key();
    let max = Limits { rpm: Some(u32::MAX), tpm: Some(u32::MAX), max_concurrent: Some(u32::MAX) };
    let refusal = limiter.admit_now(&one(&k, max), u64::MAX).unwrap_err();
    assert!(refusal.never_fits);

    let mut admission = limiter.admit_now(&one(&k, max), u64::from(u32::MAX)).unwrap();
    assert_eq!(admission.headers().remaining_requests, Some(u32::MAX - 1));
    assert_eq!(admission.headers().remaining_tokens, Some(0));
    admission.reconcile(u64::MAX);
    let refusal = limiter.admit_now(&one(&k, max), 0).unwrap_err();
    assert_eq!(refusal.resource, Resource::Tokens);
    assert!(refusal.retry_after > Duration::from_secs(3600 * 24 * 365));
    assert!(!refusal.headers.pairs().is_empty());
    drop(admission);

    // Lowering a limit on a deep debt.
    assert!(limiter.admit_now(&one(&k, tpm(1)), 0).is_err());
    clock.advance(Duration::MAX);
    limiter.prune();
}

#[test]
fn prune_keeps_only_scopes_away_from_rest() {
    let (clock, limiter) = setup();
    let (busy, used, idle) = (key(), key(), key());
    let lease = limiter.admit_now(&one(&busy, concurrent(1)), 0).unwrap();
    drop(limiter.admit_now(&one(&used, rpm(60)), 0).unwrap());
    drop(limiter.admit_now(&one(&idle, tpm(60)), 0).unwrap());
    assert_eq!(limiter.len(), 3);

    limiter.prune();
    assert_eq!(limiter.len(), 2, "a zero-token reservation leaves the bucket at rest");
    clock.advance(SEC - Duration::from_nanos(1));
    limiter.prune();
    assert_eq!(limiter.len(), 2);
    clock.advance(Duration::from_nanos(1));
    limiter.prune();
    assert_eq!(limiter.len(), 1, "the drained requests bucket goes, the lease stays");
    drop(lease);
    limiter.prune();
    assert!(limiter.is_empty());
}

#[test]
fn key_limits_convert() {
    let limits = veil_domain::KeyLimits { rpm: Some(1), tpm: None, max_concurrent: Some(3) };
    assert_eq!(Limits::from(&limits), Limits { rpm: Some(1), tpm: None, max_concurrent: Some(3) });
}

#[test]
fn admissions_can_travel_across_threads() {
    fn travels<T: Send + Sync + 'static>() {}
    travels::<Admission>();
    travels::<Refusal>();
    travels::<InMemoryLimiter>();
}
