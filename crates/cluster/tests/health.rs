//! `SharedHealth` against the machine's Redis (`VEIL_TEST_REDIS_URL`; skipped when it is
//! unreachable unless `VEIL_REQUIRE_SERVICES=1`): cool-downs and recoveries reach the other
//! instances (also one that joins late), an instance does not hear itself, the half-open
//! trial goes to exactly one instance, and a Redis outage answers fast instead of blocking.
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use veil_cluster::{HealthNews, SharedHealth, TrialLease};
use veil_testkit::redis::{CutProxy, test_redis_url, unique_prefix};

/// An instance following the news, with what it heard so far.
struct Listener {
    shared: Arc<SharedHealth>,
    heard: Arc<Mutex<Vec<HealthNews>>>,
    stop: CancellationToken,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn listener(url: &str, prefix: &str) -> Listener {
    let shared = Arc::new(SharedHealth::connect(url, prefix).await.expect("connects"));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let (following, log, until) = (Arc::clone(&shared), Arc::clone(&heard), stop.clone());
    #[allow(clippy::disallowed_methods)] // stopped by the guard
    tokio::spawn(async move {
        following
            .follow(
                |news| {
                    log.lock().unwrap().push(news);
                    async {}
                },
                until,
            )
            .await;
    });
    Listener { shared, heard, stop }
}

/// Waits up to a second for `listener` to have heard `count` pieces of news.
async fn heard(listener: &Listener, count: usize) -> Vec<HealthNews> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let heard = listener.heard.lock().unwrap().clone();
        if heard.len() >= count || Instant::now() > deadline {
            return heard;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn cool_downs_and_recoveries_reach_the_others_and_a_late_joiner_reads_them() {
    let Some(url) = test_redis_url().await else { return };
    let prefix = unique_prefix();
    let (first, second) = (listener(&url, &prefix).await, listener(&url, &prefix).await);
    // Both subscribed (an empty read of the keys happens first).
    tokio::time::sleep(Duration::from_millis(200)).await;

    first.shared.cooled_down("flaky", Duration::from_secs(30), 1).await;
    let news = heard(&second, 1).await;
    assert!(
        matches!(&news[..], [HealthNews::CooledDown { channel, remaining, failed_trials: 1 }]
            if channel == "flaky" && *remaining == Duration::from_secs(30)),
        "{news:?}"
    );

    // Joining later, an instance reads the cool-down from its key, with what is left of it.
    let late = listener(&url, &prefix).await;
    let news = heard(&late, 1).await;
    assert!(
        matches!(&news[..], [HealthNews::CooledDown { channel, remaining, failed_trials: 1 }]
            if channel == "flaky" && *remaining <= Duration::from_secs(30) && *remaining > Duration::from_secs(25)),
        "{news:?}"
    );

    first.shared.recovered("flaky").await;
    assert_eq!(heard(&second, 2).await[1], HealthNews::Recovered { channel: "flaky".into() });
    assert_eq!(heard(&late, 2).await[1], HealthNews::Recovered { channel: "flaky".into() });
    assert!(first.shared.current().await.unwrap().is_empty(), "a recovery deletes the key");
    assert!(heard(&first, 1).await.is_empty(), "an instance does not hear its own news");
}

#[tokio::test]
async fn a_cool_down_key_expires_with_the_cool_down() {
    let Some(url) = test_redis_url().await else { return };
    let shared = SharedHealth::connect(&url, &unique_prefix()).await.unwrap();
    shared.cooled_down("brief", Duration::from_millis(150), 0).await;
    assert_eq!(shared.current().await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(shared.current().await.unwrap().is_empty());
}

#[tokio::test]
async fn exactly_one_instance_gets_the_trial_until_it_releases_or_the_lease_expires() {
    let Some(url) = test_redis_url().await else { return };
    let prefix = unique_prefix();
    let mut instances = Vec::new();
    for _ in 0..5 {
        instances.push(SharedHealth::connect(&url, &prefix).await.unwrap());
    }
    let ttl = Duration::from_millis(400);
    let asked = futures_util::future::join_all(instances.iter().map(|i| i.take_trial("flaky", ttl))).await;
    let granted: Vec<usize> =
        asked.iter().enumerate().filter(|(_, a)| **a == TrialLease::Granted).map(|(i, _)| i).collect();
    assert_eq!(granted.len(), 1, "{asked:?}");
    assert!(asked.iter().all(|a| *a != TrialLease::Unknown), "{asked:?}");
    let holder = granted[0];
    let other = (holder + 1) % instances.len();

    assert!(
        matches!(asked[other], TrialLease::Elsewhere { lease_left } if lease_left <= ttl && !lease_left.is_zero()),
        "{asked:?}"
    );

    // Only the holder's release frees it.
    instances[other].release_trial("flaky").await;
    assert!(matches!(instances[other].take_trial("flaky", ttl).await, TrialLease::Elsewhere { .. }));
    instances[holder].release_trial("flaky").await;
    assert_eq!(instances[other].take_trial("flaky", ttl).await, TrialLease::Granted);
    // Another channel's trial is its own.
    assert_eq!(instances[holder].take_trial("steady", ttl).await, TrialLease::Granted);

    // A holder that never releases (it died) blocks the others only for the time-to-live.
    assert!(matches!(instances[holder].take_trial("flaky", ttl).await, TrialLease::Elsewhere { .. }));
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(instances[holder].take_trial("flaky", ttl).await, TrialLease::Granted);
}

#[tokio::test]
async fn no_trial_is_granted_while_a_cool_down_is_shared() {
    let Some(url) = test_redis_url().await else { return };
    let prefix = unique_prefix();
    let (tripped, other) =
        (SharedHealth::connect(&url, &prefix).await.unwrap(), SharedHealth::connect(&url, &prefix).await.unwrap());
    // A trial failed and cooled the channel again; its lease is released right after.
    assert_eq!(tripped.take_trial("flaky", Duration::from_secs(5)).await, TrialLease::Granted);
    tripped.cooled_down("flaky", Duration::from_millis(300), 2).await;
    tripped.release_trial("flaky").await;
    // An instance that has not heard the news yet is told, rather than granted a second trial.
    match other.take_trial("flaky", Duration::from_secs(5)).await {
        TrialLease::Cooling { remaining, failed_trials: 2 } => assert!(remaining <= Duration::from_millis(300)),
        other => panic!("expected the shared cool-down, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(other.take_trial("flaky", Duration::from_secs(5)).await, TrialLease::Granted);
}

#[tokio::test]
async fn without_redis_the_answers_come_fast_and_sharing_resumes_after() {
    let Some(url) = test_redis_url().await else { return };
    let proxy = CutProxy::start(&url).await;
    let prefix = unique_prefix();
    let cut_off = SharedHealth::connect(&proxy.url(), &prefix).await.unwrap();
    let direct = listener(&url, &prefix).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    proxy.cut();
    let started = Instant::now();
    assert_eq!(cut_off.take_trial("flaky", Duration::from_secs(5)).await, TrialLease::Unknown);
    assert!(started.elapsed() < Duration::from_millis(600), "a trial is not held up: {:?}", started.elapsed());
    let started = Instant::now();
    cut_off.cooled_down("flaky", Duration::from_secs(5), 0).await;
    assert!(started.elapsed() < Duration::from_millis(1500), "publishing gives up: {:?}", started.elapsed());
    assert!(heard(&direct, 1).await.is_empty());

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        cut_off.cooled_down("flaky", Duration::from_secs(5), 0).await;
        if !direct.heard.lock().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "sharing never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
