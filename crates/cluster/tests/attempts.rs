//! `SharedSignInAttempts` against the machine's Redis (`VEIL_TEST_REDIS_URL`; skipped when it
//! is unreachable unless `VEIL_REQUIRE_SERVICES=1`) and the test Redis Cluster: failures
//! counted by one instance refuse sign-ins on another, per subject and limit, age out with
//! the window, clear on success, and an outage answers fast with an error.
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use veil_cluster::SharedSignInAttempts;
use veil_testkit::redis::{CutProxy, test_redis_cluster_url, test_redis_url, unique_prefix};

async fn pair(url: &str, window: Duration) -> (SharedSignInAttempts, SharedSignInAttempts) {
    let prefix = unique_prefix();
    let one = SharedSignInAttempts::new(veil_cluster::connect(url).await.unwrap(), &prefix, window);
    let two = SharedSignInAttempts::new(veil_cluster::connect(url).await.unwrap(), &prefix, window);
    (one, two)
}

async fn failures_on_one_instance_refuse_on_another(url: &str) {
    let (one, two) = pair(url, Duration::from_secs(2)).await;
    for _ in 0..3 {
        assert_eq!(two.check(&[("a:ann", 3), ("i:1", 10)]).await.unwrap(), None);
        one.fail(&["a:ann", "i:1"]).await.unwrap();
    }
    let wait = two.check(&[("a:ann", 3), ("i:9", 10)]).await.unwrap().expect("the account is locked everywhere");
    assert!(wait > Duration::ZERO && wait <= Duration::from_secs(2), "{wait:?}");
    assert_eq!(two.check(&[("a:bob", 3), ("i:9", 10)]).await.unwrap(), None, "other accounts are not");
    assert!(two.check(&[("a:bob", 3), ("i:1", 3)]).await.unwrap().is_some(), "the address is at its limit of 3");
    // Success clears the account (not the address).
    two.clear("a:ann").await.unwrap();
    assert_eq!(one.check(&[("a:ann", 3), ("i:9", 10)]).await.unwrap(), None);
    assert!(one.check(&[("a:x", 3), ("i:1", 3)]).await.unwrap().is_some());
    // Failures age out with the window.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(one.check(&[("a:x", 3), ("i:1", 3)]).await.unwrap(), None);
}

#[tokio::test]
async fn failures_are_shared_on_a_standalone_redis() {
    let Some(url) = test_redis_url().await else { return };
    failures_on_one_instance_refuse_on_another(&url).await;
}

#[tokio::test]
async fn failures_are_shared_on_a_redis_cluster() {
    let Some(url) = test_redis_cluster_url().await else { return };
    failures_on_one_instance_refuse_on_another(&url).await;
}

#[tokio::test]
async fn an_outage_is_an_error_within_the_command_timeout() {
    let Some(url) = test_redis_url().await else { return };
    let proxy = CutProxy::start(&url).await;
    let attempts = SharedSignInAttempts::new(
        veil_cluster::connect(&proxy.url()).await.unwrap(),
        &unique_prefix(),
        Duration::from_secs(60),
    );
    attempts.fail(&["a:ann"]).await.unwrap();
    proxy.cut();
    let started = Instant::now();
    assert!(attempts.check(&[("a:ann", 3)]).await.is_err());
    assert!(attempts.fail(&["a:ann"]).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    proxy.restore();
}
