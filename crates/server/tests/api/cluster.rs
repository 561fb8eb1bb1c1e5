//! Several instances sharing one Redis (and, for the RPM test, one PostgreSQL database):
//! a key's limit holds across instances, and a Redis outage fails closed or open as
//! configured and ends without a restart. Skipped when Redis or PostgreSQL is unreachable,
//! unless `VEIL_REQUIRE_SERVICES=1`.

use crate::helpers::{admin, chat_body, error_code, one_channel, post};
use std::time::Duration;
use veil_domain::KeyLimits;
use veil_testkit::mock_upstream::MockUpstream;
use veil_testkit::postgres::TestDatabase;
use veil_testkit::redis::{CutProxy, test_redis_url, unique_prefix};
use veil_testkit::{KeyOptions, TestApp, spawn_app, spawn_app_in};

fn redis_section(url: &str, prefix: &str, on_failure: &str) -> String {
    format!("[redis]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\nlimits_on_failure = \"{on_failure}\"\n")
}

/// A key with these limits on `app`'s store.
async fn key_with(app: &TestApp, name: &str, limits: KeyLimits) -> String {
    let user = app.create_user(name, "default").await;
    app.create_key(&user, KeyOptions { limits, ..KeyOptions::default() }).await.0
}

/// Three instances of one installation on `config`: the others share the first's master
/// key (and so its key hashes).
async fn three_instances(config: &str) -> Vec<TestApp> {
    let mut apps = vec![spawn_app(config).await];
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(apps[0].data_dir.path().join("master.key"), dir.path().join("master.key")).unwrap();
        apps.push(spawn_app_in(config, dir).await);
    }
    apps
}

/// Polls `status` every 50 ms for up to one second until it is not `from`; the last status.
async fn status_within_a_second(app: &TestApp, key: &str, from: u16) -> u16 {
    let mut status = from;
    for _ in 0..20 {
        status = post(app, "/v1/chat/completions", key, chat_body("hi")).await.status().as_u16();
        if status != from {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    status
}

#[tokio::test]
async fn a_keys_rpm_holds_across_three_instances() {
    let Some(redis) = test_redis_url().await else { return };
    let Some(database) = TestDatabase::create().await else { return };
    let upstream = MockUpstream::start().await;
    let config = format!(
        "[database]\nurl = \"{}\"\n{}{}",
        database.url,
        redis_section(&redis, &unique_prefix(), "closed"),
        one_channel(&upstream)
    );
    let apps = three_instances(&config).await;
    let key = key_with(&apps[0], "shared", KeyLimits { rpm: Some(10), ..KeyLimits::default() }).await;

    let calls = (0..30).map(|i| post(&apps[i % 3], "/v1/chat/completions", &key, chat_body("hi")));
    let responses = futures_util::future::join_all(calls).await;
    let mut accepted = 0;
    for response in responses {
        match response.status().as_u16() {
            200 => accepted += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                assert_eq!(error_code(response, 429).await, "rate_limit_exceeded");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // GCRA frees one call every 6 s; thirty calls take far less than that.
    assert_eq!(accepted, 10, "a limit of 10 per minute, whichever instance is asked");
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test]
async fn a_redis_outage_fails_closed_or_open_and_ends_without_restart() {
    let Some(redis) = test_redis_url().await else { return };
    let proxy = CutProxy::start(&redis).await;
    let upstream = MockUpstream::start().await;
    let prefix = unique_prefix();
    let closed =
        spawn_app(&format!("{}{}", redis_section(&proxy.url(), &prefix, "closed"), one_channel(&upstream))).await;
    let open = spawn_app(&format!("{}{}", redis_section(&proxy.url(), &prefix, "open"), one_channel(&upstream))).await;
    let limits = KeyLimits { rpm: Some(1), ..KeyLimits::default() };
    let closed_key = key_with(&closed, "closed", limits.clone()).await;
    let open_key = key_with(&open, "open", limits).await;
    let chat = |app, key| post(app, "/v1/chat/completions", key, chat_body("hi"));
    assert_eq!(chat(&open, &open_key).await.status().as_u16(), 200);
    assert_eq!(error_code(chat(&open, &open_key).await, 429).await, "rate_limit_exceeded");

    proxy.cut();
    let refused = chat(&closed, &closed_key).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused, 503).await, "internal_error");
    // Open: admitted although the key's one call a minute is spent.
    assert_eq!(chat(&open, &open_key).await.status().as_u16(), 200);

    proxy.restore();
    let mut status = chat(&closed, &closed_key).await.status().as_u16();
    for _ in 0..50 {
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = chat(&closed, &closed_key).await.status().as_u16();
    }
    assert_eq!(status, 200, "the closed instance admits again once Redis is back");
    assert_eq!(error_code(chat(&open, &open_key).await, 429).await, "rate_limit_exceeded", "limits enforced again");
    closed.stop().await;
    open.stop().await;
}

/// Instances sharing PostgreSQL and Redis, polling the store only every 30 s: only the
/// change announcements can explain a change seen within a second.
async fn coherent_instances() -> Option<(Vec<TestApp>, MockUpstream, String, String, TestDatabase)> {
    let redis = test_redis_url().await?;
    let database = TestDatabase::create().await?;
    let upstream = MockUpstream::start().await;
    let prefix = unique_prefix();
    let config = format!(
        "[server]\nrefresh_interval = \"30s\"\n[database]\nurl = \"{}\"\n{}{}",
        database.url,
        redis_section(&redis, &prefix, "closed"),
        one_channel(&upstream)
    );
    Some((three_instances(&config).await, upstream, redis, prefix, database))
}

#[tokio::test]
async fn an_erased_user_and_a_disabled_channel_reach_every_instance_within_a_second() {
    let Some((apps, _upstream, _redis, _prefix, _database)) = coherent_instances().await else { return };
    let admin_key = admin(&apps[0]).await;
    let key = key_with(&apps[0], "leaving", KeyLimits::default()).await;
    let staying = key_with(&apps[0], "staying", KeyLimits::default()).await;
    for app in &apps {
        // Cached now, stamped with the current revision.
        assert_eq!(post(app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
        assert_eq!(post(app, "/v1/chat/completions", &staying, chat_body("hi")).await.status(), 200);
    }

    let erased = reqwest::Client::new().delete(apps[0].url("/api/me")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(erased.status(), 200);
    assert_eq!(status_within_a_second(&apps[1], &key, 200).await, 401, "B refuses the erased user's key");
    assert_eq!(status_within_a_second(&apps[2], &key, 200).await, 401, "C refuses the erased user's key");

    let disabled = reqwest::Client::new()
        .post(apps[0].url("/api/channels/primary/disable"))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    assert_ne!(status_within_a_second(&apps[1], &staying, 200).await, 200, "B no longer routes to the channel");
    assert_ne!(status_within_a_second(&apps[2], &staying, 200).await, 200, "C no longer routes to the channel");
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test]
async fn a_key_revoked_from_the_cli_reaches_every_instance_within_a_second() {
    let Some((apps, _upstream, redis, prefix, database)) = coherent_instances().await else { return };
    let user = apps[0].create_user("revoked", "default").await;
    let (key, stored) = apps[0].create_key(&user, KeyOptions::default()).await;
    for app in &apps {
        assert_eq!(post(app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
    }
    // What `veil admin key revoke` does: write the store, then announce with its settings.
    assert!(apps[0].store.revoke_key(stored.id, veil_domain::Timestamp::now()).await.unwrap());
    let settings = veil_config::load(
        None,
        [
            ("VEIL_DATABASE__URL".to_owned(), database.url.clone()),
            ("VEIL_REDIS__URL".to_owned(), redis),
            ("VEIL_REDIS__KEY_PREFIX".to_owned(), prefix),
        ],
    )
    .unwrap();
    veil_server::announce_store_changes(&settings, apps[0].store.as_ref()).await;
    for app in &apps {
        assert_eq!(status_within_a_second(app, &key, 200).await, 401);
    }
    for app in apps {
        app.stop().await;
    }
}

/// Times (unix ms) of the purge rounds run so far, oldest first.
async fn purge_rounds(app: &TestApp) -> Vec<i64> {
    let mut audit = app.store.list_audit(None, 1000).await.unwrap();
    audit.retain(|entry| entry.action == "retention.purge" && entry.actor == "system");
    audit.sort_by_key(|entry| entry.seq);
    audit.iter().map(|entry| entry.time.unix_millis()).collect()
}

/// Waits (polling every 50 ms, up to `limit`) until more than `seen` purge rounds exist.
async fn next_round(app: &TestApp, seen: usize, limit: Duration) -> Option<Vec<i64>> {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let rounds = purge_rounds(app).await;
        if rounds.len() > seen {
            return Some(rounds);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn the_purge_runs_on_one_instance_and_moves_when_it_dies() {
    const EVERY_MS: i64 = 300;
    let Some(redis) = test_redis_url().await else { return };
    let Some(database) = TestDatabase::create().await else { return };
    let upstream = MockUpstream::start().await;
    let prefix = unique_prefix();
    let config = |redis_url: &str| {
        format!(
            "[privacy]\npurge_interval = \"{EVERY_MS}ms\"\n[database]\nurl = \"{}\"\n{}job_lease_ttl = \"1500ms\"\n{}",
            database.url,
            redis_section(redis_url, &prefix, "closed"),
            one_channel(&upstream)
        )
    };
    // The first instance reaches Redis through a proxy, so the test can make it vanish.
    let proxy = CutProxy::start(&redis).await;
    let leader = spawn_app(&config(&proxy.url())).await;
    assert!(next_round(&leader, 0, Duration::from_secs(5)).await.is_some(), "the only instance purges");
    let mut others = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(leader.data_dir.path().join("master.key"), dir.path().join("master.key")).unwrap();
        others.push(spawn_app_in(&config(&redis), dir).await);
    }

    // Ten rounds with three instances up: one beat apart, never three to a beat.
    let start = purge_rounds(&leader).await.len();
    let mut rounds = Vec::new();
    while rounds.len() < start + 10 {
        rounds = next_round(&leader, rounds.len().max(start), Duration::from_secs(5)).await.expect("purges go on");
    }
    for pair in rounds[start..].windows(2) {
        assert!(pair[1] - pair[0] >= EVERY_MS / 2, "two purges {} ms apart: more than one runner", pair[1] - pair[0]);
    }

    // The leader loses Redis as if it had died: its lease expires and another takes over.
    proxy.cut();
    let cut_at = rounds.len();
    while rounds.len() < cut_at + 5 {
        rounds =
            next_round(&others[0], rounds.len(), Duration::from_secs(5)).await.expect("another instance takes over");
    }
    let gaps: Vec<i64> = rounds[start..].windows(2).map(|pair| pair[1] - pair[0]).collect();
    assert!(gaps.iter().all(|gap| *gap >= EVERY_MS / 2), "never two runners, even while moving: {gaps:?}");
    // The old leader stops at its next failed renewal (a third of the lease after its last
    // one); the successor starts only once that lease (1.5 s) has expired.
    assert!(gaps.iter().any(|gap| *gap >= 1000), "the lease was waited out: {gaps:?}");
    for app in others {
        app.stop().await;
    }
    leader.stop().await;
}
