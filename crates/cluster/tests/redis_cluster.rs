//! Every shared-state piece on a real Redis Cluster (`VEIL_TEST_REDIS_CLUSTER_URL`, the three
//! nodes `scripts/redis-cluster` starts; skipped when absent unless `VEIL_REQUIRE_SERVICES=1`):
//! limits whose keys and scripts must all land in one slot, the change feed whose messages
//! must cross nodes, and the job lease.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use veil_cluster::{ChangeFeed, Leadership, RedisConnection, RedisLimiter, RedisLimiterOptions};
use veil_domain::{KeyId, UserId};
use veil_limits::{Demand, Limiter, Limits, Resource, Scope};
use veil_testkit::redis::{test_redis_cluster_url, unique_prefix};

async fn cluster() -> Option<(String, RedisConnection)> {
    let url = test_redis_cluster_url().await?;
    let conn = veil_cluster::connect(&url).await.expect("connects to the cluster");
    assert!(matches!(conn, RedisConnection::Cluster(_)), "a cluster URL gives a cluster connection");
    Some((url, conn))
}

#[tokio::test]
async fn limits_hold_on_a_cluster_across_two_limiters() {
    let Some((url, conn)) = cluster().await else { return };
    let options = RedisLimiterOptions { key_prefix: unique_prefix(), ..RedisLimiterOptions::default() };
    let stop = CancellationToken::new();
    let (first, worker) = RedisLimiter::new(conn, options.clone());
    #[allow(clippy::disallowed_methods)] // stopped below
    tokio::spawn(worker.run(stop.clone()));
    let (second, worker) = RedisLimiter::new(veil_cluster::connect(&url).await.unwrap(), options);
    #[allow(clippy::disallowed_methods)] // stopped below
    tokio::spawn(worker.run(stop.clone()));

    // A key and its user: two scopes, two keys, one call — one script on one slot.
    let demands = vec![
        Demand::new(Scope::Key(KeyId::generate()), Limits { rpm: Some(4), ..Limits::default() }),
        Demand::new(Scope::User(UserId::generate()), Limits { max_concurrent: Some(100), ..Limits::default() }),
    ];
    let mut admitted = Vec::new();
    for i in 0..8 {
        let limiter = if i % 2 == 0 { &first } else { &second };
        match limiter.admit(&demands, 0).await {
            Ok(admission) => admitted.push(admission),
            Err(refusal) => assert_eq!(refusal.resource, Resource::Requests),
        }
    }
    assert_eq!(admitted.len(), 4, "the RPM limit is shared, not doubled");
    stop.cancel();
}

#[tokio::test]
async fn store_changes_reach_an_instance_subscribed_through_another_node() {
    let Some((url, _conn)) = cluster().await else { return };
    let prefix = unique_prefix();
    let listener = Arc::new(ChangeFeed::connect(&url, &prefix).await.unwrap());
    let announcer = ChangeFeed::connect(&url, &prefix).await.unwrap();
    let heard = Arc::new(AtomicI64::new(0));
    let stop = CancellationToken::new();
    let follow = {
        let (listener, heard, stop) = (Arc::clone(&listener), Arc::clone(&heard), stop.clone());
        #[allow(clippy::disallowed_methods)] // awaited below
        tokio::spawn(async move {
            listener
                .follow(
                    |revision| {
                        let heard = Arc::clone(&heard);
                        async move {
                            if let Some(revision) = revision {
                                heard.store(revision, Ordering::SeqCst);
                            }
                        }
                    },
                    stop,
                )
                .await;
        })
    };
    // Announce until heard: the listener subscribes asynchronously.
    for revision in 1..=40 {
        announcer.announce(revision).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if heard.load(Ordering::SeqCst) > 0 {
            break;
        }
    }
    assert!(heard.load(Ordering::SeqCst) > 0, "an announcement crossed the cluster");
    stop.cancel();
    follow.await.unwrap();
}

#[tokio::test]
async fn one_instance_at_a_time_holds_the_job_lease_on_a_cluster() {
    let Some((url, conn)) = cluster().await else { return };
    let prefix = unique_prefix();
    let ttl = Duration::from_secs(2);
    let first = Arc::new(Leadership::new(conn, &prefix, "jobs", ttl));
    let second = Arc::new(Leadership::new(veil_cluster::connect(&url).await.unwrap(), &prefix, "jobs", ttl));
    let stop = CancellationToken::new();
    let runs: Vec<_> = [&first, &second]
        .into_iter()
        .map(|lease| {
            let (lease, stop) = (Arc::clone(lease), stop.clone());
            #[allow(clippy::disallowed_methods)] // awaited below
            tokio::spawn(async move { lease.run(stop).await })
        })
        .collect();
    let mut leaders_seen = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let leaders = usize::from(first.is_leader()) + usize::from(second.is_leader());
        assert!(leaders <= 1, "two leaders at once");
        leaders_seen = leaders_seen.max(leaders);
    }
    assert_eq!(leaders_seen, 1, "one of them took the lease");
    stop.cancel();
    for run in runs {
        run.await.unwrap();
    }
}
