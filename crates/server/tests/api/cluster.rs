//! Several instances sharing one Redis (and, for the RPM test, one PostgreSQL database):
//! a key's limit holds across instances, and a Redis outage fails closed or open as
//! configured and ends without a restart. Skipped when Redis or PostgreSQL is unreachable,
//! unless `VEIL_REQUIRE_SERVICES=1`.

use crate::helpers::{admin, chat_body, error_code, one_channel, post};
use std::time::Duration;
use veil_domain::KeyLimits;
use veil_testkit::mock_upstream::MockUpstream;
use veil_testkit::postgres::TestDatabase;
use veil_testkit::redis::{CutProxy, test_redis_cluster_url, test_redis_url, unique_prefix};
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

/// The same relay on a Redis Cluster (one `redis+cluster://` URL): a key's limit and a
/// balance hold across three instances, so the limiter's and the wallets' scripts find all
/// their keys in one slot.
#[tokio::test]
async fn instances_on_a_redis_cluster_share_limits_and_balances() {
    let Some(redis) = test_redis_cluster_url().await else { return };
    let Some(database) = TestDatabase::create().await else { return };
    let upstream = MockUpstream::start().await;
    upstream.set_default(
        veil_testkit::mock_upstream::Reply::chat_with_usage("ok", 5, 1_000, 0)
            .first_byte_delay(Duration::from_millis(400)),
    );
    let config = format!(
        "[server]\nrefresh_interval = \"30s\"\n[database]\nurl = \"{}\"\n{}{}",
        database.url,
        redis_section(&redis, &unique_prefix(), "closed"),
        paid_channel(&upstream)
    );
    let apps = three_instances(&config).await;

    let rich = apps[0].create_user("rich", "default").await;
    apps[0].credit(&rich, "10").await;
    let limits = KeyLimits { rpm: Some(6), ..KeyLimits::default() };
    let (limited, _) = apps[0].create_key(&rich, KeyOptions { limits, ..KeyOptions::default() }).await;
    assert_eq!(parallel_paid_calls(&apps, &limited, 18).await, 6, "a limit of 6 per minute over three instances");

    // A balance that covers four calls' holds (see the test above), not five.
    let (payer, key) = apps[0].user_with_key("payer").await;
    apps[0].credit(&payer, "0.009").await;
    let accepted = parallel_paid_calls(&apps, &key, 12).await;
    assert!((1..=4).contains(&accepted), "{accepted} calls accepted on a balance that covers four");
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

/// Three instances on one PostgreSQL and Redis billing one priced model ("paid": 1 in and
/// 2 out per million tokens, multiplier 1) whose upstream answers after `delay`, every
/// call using its whole 1000 `max_tokens` on a 5-token prompt: 0.002005 a call.
async fn billed_instances(delay: Duration) -> Option<(Vec<TestApp>, MockUpstream, TestDatabase)> {
    let redis = test_redis_url().await?;
    let database = TestDatabase::create().await?;
    let upstream = MockUpstream::start().await;
    upstream
        .set_default(veil_testkit::mock_upstream::Reply::chat_with_usage("ok", 5, 1_000, 0).first_byte_delay(delay));
    let config = format!(
        "[server]\nrefresh_interval = \"30s\"\n[database]\nurl = \"{}\"\n{}{}",
        database.url,
        redis_section(&redis, &unique_prefix(), "closed"),
        paid_channel(&upstream)
    );
    Some((three_instances(&config).await, upstream, database))
}

/// One channel serving the one priced model "paid" (1 in, 2 out per million tokens).
fn paid_channel(upstream: &MockUpstream) -> String {
    format!(
        "\n[[channel]]\nname = \"main\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"paid\"]\n\
         first_byte_timeout = \"5s\"\nidle_timeout = \"5s\"\n\n\
         [[model]]\nname = \"paid\"\nprice = {{ input = 1, output = 2 }}\n",
        upstream.base_url()
    )
}

const CALL_COST_NANOS: i64 = 2_005_000;

fn paid_call() -> serde_json::Value {
    serde_json::json!({"model": "paid", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]})
}

/// Sends `calls` calls at once, round-robin over `apps`; how many were answered 200 (the
/// others must be refused as unaffordable).
async fn parallel_paid_calls(apps: &[TestApp], key: &str, calls: usize) -> usize {
    let client = reqwest::Client::new();
    let sent = (0..calls).map(|i| {
        client.post(apps[i % apps.len()].url("/v1/chat/completions")).bearer_auth(key).json(&paid_call()).send()
    });
    let statuses: Vec<u16> =
        futures_util::future::join_all(sent).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    statuses.iter().filter(|s| **s == 200).count()
}

/// Σ recorded costs of `user`'s calls (every instance writes to the one store).
async fn recorded_costs(store: &dyn veil_store::Store, user: veil_domain::UserId) -> i64 {
    let filter = veil_store::CallRecordFilter { user_id: Some(user), limit: 1000, ..Default::default() };
    store.list_call_records(&filter).await.unwrap().iter().map(|stored| stored.record.cost.nanos()).sum()
}

#[tokio::test]
async fn parallel_calls_over_three_instances_never_overspend_a_balance_or_a_key_quota() {
    let Some((apps, upstream, _database)) = billed_instances(Duration::from_millis(400)).await else { return };
    let store = std::sync::Arc::clone(&apps[0].store);
    // A balance that covers four calls' holds (a hold is the 2000-token output at 2 per
    // million plus the locally counted prompt, a little over 0.002005), not five. Each
    // instance alone would let four through: twelve without shared wallets.
    let (payer, key) = apps[0].user_with_key("payer").await;
    apps[0].credit(&payer, "0.009").await;
    let accepted = parallel_paid_calls(&apps, &key, 24).await;
    assert!((1..=4).contains(&accepted), "{accepted} calls accepted on a balance that covers four");

    // The same bound on a key's quota, for a user whose balance covers everything.
    let quota_user = apps[0].create_user("quota", "default").await;
    apps[0].credit(&quota_user, "10").await;
    let options = KeyOptions { quota: Some(veil_domain::Money::from_nanos(9_000_000)), ..KeyOptions::default() };
    let (quota_key, _) = apps[0].create_key(&quota_user, options).await;
    let within_quota = parallel_paid_calls(&apps, &quota_key, 24).await;
    assert!((1..=4).contains(&within_quota), "{within_quota} calls accepted on a quota that covers four");
    assert_eq!(upstream.request_count(), accepted + within_quota, "refused calls never reached the upstream");

    for app in apps {
        app.stop().await;
    }
    // Every settlement is written now.
    let costs = recorded_costs(store.as_ref(), payer.id).await;
    assert_eq!(costs, CALL_COST_NANOS * i64::try_from(accepted).unwrap());
    let balance = store.balance(payer.id).await.unwrap();
    assert!(!balance.is_negative(), "overspent: {balance}");
    assert_eq!(balance.nanos(), 9_000_000 - costs, "the balance moved by the recorded charges exactly");
    let quota_costs = recorded_costs(store.as_ref(), quota_user.id).await;
    assert!(quota_costs <= 9_000_000, "the key spent {quota_costs} on a quota of 0.009");
    assert_eq!(store.balance(quota_user.id).await.unwrap().nanos(), 10_000_000_000 - quota_costs);
}

#[tokio::test]
async fn a_credit_on_one_instance_is_spendable_on_another_within_a_second() {
    let Some((apps, _upstream, _database)) = billed_instances(Duration::ZERO).await else { return };
    let admin_key = admin(&apps[0]).await;
    let (_, key) = apps[0].user_with_key("topped").await;
    let refused = post(&apps[1], "/v1/chat/completions", &key, paid_call()).await;
    assert_eq!(error_code(refused, 429).await, "insufficient_quota");

    let credited = reqwest::Client::new()
        .post(apps[0].url("/api/users/topped/credit"))
        .bearer_auth(&admin_key)
        .json(&serde_json::json!({"amount": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(credited.status(), 200);
    let mut status = 429;
    for _ in 0..20 {
        status = post(&apps[1], "/v1/chat/completions", &key, paid_call()).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "instance 2 spends the credit made on instance 1 (store polled only every 30 s)");
    for app in apps {
        app.stop().await;
    }
}

/// `flaky` (preferred, priority 10) and `backup` for the free model `gpt-4o-mini`, with a
/// `[routing]` that trips after two calls of which half failed and cools for `cooldown`.
fn flaky_and_backup(flaky: &MockUpstream, backup: &MockUpstream, cooldown: &str) -> String {
    let channel = |name: &str, upstream: &MockUpstream, priority: i32| {
        format!(
            "\n[[channel]]\nname = \"{name}\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o-mini\"]\npriority = {priority}\nfirst_byte_timeout = \"2s\"\n",
            upstream.base_url()
        )
    };
    format!(
        "[routing]\nmin_calls = 2\nerror_rate_threshold = 0.5\nwindow = \"30s\"\ncooldown = \"{cooldown}\"\nmax_cooldown = \"60s\"\n{}{}\n[[model]]\nname = \"gpt-4o-mini\"\nfree = true\n",
        channel("flaky", flaky, 10),
        channel("backup", backup, 1)
    )
}

/// Three instances on one PostgreSQL database and one Redis, routing by `routing`.
async fn three_sharing_health(routing: &str) -> Option<(Vec<TestApp>, TestDatabase)> {
    let redis = test_redis_url().await?;
    let database = TestDatabase::create().await?;
    let config = format!(
        "[database]\nurl = \"{}\"\n{}{routing}",
        database.url,
        redis_section(&redis, &unique_prefix(), "closed")
    );
    Some((three_instances(&config).await, database))
}

/// Polls the admin API of `app` (every 20 ms, up to `limit`) until `channel` is in `state`.
async fn channel_reaches(app: &TestApp, admin: &str, channel: &str, state: &str, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let response = reqwest::Client::new()
            .get(app.url(&format!("/api/channels/{channel}")))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        let status: serde_json::Value = response.json().await.unwrap();
        if status["state"] == state {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_channel_cooled_down_by_one_instance_is_avoided_by_the_others_within_a_second() {
    let (flaky, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    flaky.set_default(veil_testkit::mock_upstream::Reply::openai_error(500, "boom", "server_error"));
    let Some((apps, _database)) = three_sharing_health(&flaky_and_backup(&flaky, &backup, "30s")).await else {
        return;
    };
    let admin_key = admin(&apps[0]).await;
    let key = key_with(&apps[0], "hana", KeyLimits::default()).await;

    // Instance 1 alone meets the failures: two calls, each failing over to the backup.
    for _ in 0..2 {
        assert_eq!(post(&apps[0], "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
    }
    assert_eq!(flaky.request_count(), 2);
    assert!(channel_reaches(&apps[0], &admin_key, "flaky", "cooling_down", Duration::ZERO).await);
    for (i, app) in apps.iter().enumerate().skip(1) {
        assert!(
            channel_reaches(app, &admin_key, "flaky", "cooling_down", Duration::from_secs(1)).await,
            "instance {} learnt of the cool-down within a second",
            i + 1
        );
    }

    // Instances 2 and 3 never send the failing channel a call.
    for app in &apps[1..] {
        for _ in 0..5 {
            assert_eq!(post(app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
        }
    }
    assert_eq!(flaky.request_count(), 2, "only instance 1's two calls reached the failing channel");
    assert_eq!(backup.request_count(), 12);

    let store = std::sync::Arc::clone(&apps[0].store);
    for app in apps {
        app.stop().await;
    }
    let records = store
        .list_call_records(&veil_store::CallRecordFilter { user_id: None, limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(records.len(), 12);
    let tried_flaky = records.iter().filter(|r| r.record.channels_tried.iter().any(|c| c.as_str() == "flaky")).count();
    assert_eq!(tried_flaky, 2, "the ten calls on instances 2 and 3 list only the backup");
}

#[tokio::test]
async fn after_a_shared_cool_down_one_instance_sends_the_trial_and_its_verdict_reaches_all() {
    let (flaky, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    flaky.set_default(veil_testkit::mock_upstream::Reply::openai_error(500, "boom", "server_error"));
    let Some((apps, _database)) = three_sharing_health(&flaky_and_backup(&flaky, &backup, "700ms")).await else {
        return;
    };
    let admin_key = admin(&apps[0]).await;
    let key = key_with(&apps[0], "tess", KeyLimits::default()).await;
    for _ in 0..2 {
        assert_eq!(post(&apps[0], "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
    }
    for app in &apps {
        assert!(channel_reaches(app, &admin_key, "flaky", "cooling_down", Duration::from_secs(1)).await);
    }

    // Once the cool-down is over, calls arrive on all three instances at once: one of them
    // sends the trial (which fails), the others go to the backup.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let calls = (0..9).map(|i| post(&apps[i % 3], "/v1/chat/completions", &key, chat_body("hi")));
    for response in futures_util::future::join_all(calls).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(flaky.request_count(), 3, "one trial for the whole cluster");
    // The failed trial cools every instance down again, for twice as long.
    for app in &apps {
        assert!(channel_reaches(app, &admin_key, "flaky", "cooling_down", Duration::from_secs(1)).await);
    }

    // Fixed meanwhile: the next trial succeeds on whichever instance sends it, and every
    // instance routes to the channel again.
    flaky.set_default(veil_testkit::mock_upstream::Reply::chat("back"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = (0..6).map(|i| post(&apps[i % 3], "/v1/chat/completions", &key, chat_body("hi")));
    for response in futures_util::future::join_all(calls).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(flaky.request_count(), 4, "again exactly one trial");
    for app in &apps {
        assert!(channel_reaches(app, &admin_key, "flaky", "healthy", Duration::from_secs(1)).await);
    }
    for app in &apps {
        assert_eq!(post(app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
    }
    assert_eq!(flaky.request_count(), 7, "every instance routes to it again");
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test]
async fn paid_calls_fail_closed_while_redis_is_away_even_with_limits_open() {
    let Some(redis) = test_redis_url().await else { return };
    let proxy = CutProxy::start(&redis).await;
    let upstream = MockUpstream::start().await;
    upstream.set_default(veil_testkit::mock_upstream::Reply::chat_with_usage("ok", 5, 1_000, 0));
    let app =
        spawn_app(&format!("{}{}", redis_section(&proxy.url(), &unique_prefix(), "open"), paid_channel(&upstream)))
            .await;
    let (user, key) = app.user_with_key("payer").await;
    app.credit(&user, "1").await;
    assert_eq!(post(&app, "/v1/chat/completions", &key, paid_call()).await.status(), 200);

    proxy.cut();
    // The limiter admits (open), but money is never spent unchecked.
    let refused = post(&app, "/v1/chat/completions", &key, paid_call()).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal_error", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("Balances are unavailable"), "{body}");
    assert_eq!(upstream.request_count(), 1, "the refused call never reached the upstream");

    proxy.restore();
    let mut status = 503;
    for _ in 0..50 {
        status = post(&app, "/v1/chat/completions", &key, paid_call()).await.status().as_u16();
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "paid calls go through again once Redis is back");
    let store = std::sync::Arc::clone(&app.store);
    app.stop().await;
    let costs = recorded_costs(store.as_ref(), user.id).await;
    assert_eq!(costs, 2 * CALL_COST_NANOS, "two calls answered, two charged");
    assert_eq!(store.balance(user.id).await.unwrap().nanos(), 1_000_000_000 - costs);
}

#[tokio::test]
async fn without_redis_an_instance_judges_channels_alone_and_calls_are_not_held_up() {
    let Some(redis) = test_redis_url().await else { return };
    let proxy = CutProxy::start(&redis).await;
    let (flaky, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    flaky.set_default(veil_testkit::mock_upstream::Reply::openai_error(500, "boom", "server_error"));
    let config = format!(
        "{}{}",
        redis_section(&proxy.url(), &unique_prefix(), "open"),
        flaky_and_backup(&flaky, &backup, "30s")
    );
    let app = spawn_app(&config).await;
    let admin_key = admin(&app).await;
    let key = key_with(&app, "olga", KeyLimits::default()).await;

    proxy.cut();
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(3), "calls were held up: {:?}", started.elapsed());
    assert!(channel_reaches(&app, &admin_key, "flaky", "cooling_down", Duration::ZERO).await);
    assert_eq!(flaky.request_count(), 2, "cooled down by this instance's own board");
    assert_eq!(backup.request_count(), 5);
    app.stop().await;
}

/// Scheduled probes are background work: with three instances on one Redis only the job
/// leader sends them, so the channel sees one probe per interval rather than three.
#[tokio::test]
async fn scheduled_probes_come_from_one_instance_only() {
    let Some(redis) = test_redis_url().await else { return };
    let Some(database) = TestDatabase::create().await else { return };
    let upstream = MockUpstream::start().await;
    let config = format!(
        "[database]\nurl = \"{}\"\n{}\n[[channel]]\nname = \"probed\"\ntype = \"openai\"\nbase_url = \"{}\"\n\
         models = [\"gpt-4o-mini\"]\nprobe_interval = \"5s\"\n",
        database.url,
        redis_section(&redis, &unique_prefix(), "closed"),
        upstream.base_url()
    );
    let apps = three_instances(&config).await;
    // From start-up: a probe at once, the next 5 s later; three probing instances would
    // have sent six by now.
    tokio::time::sleep(Duration::from_millis(6_000)).await;
    let probes = upstream.request_count();
    assert!((1..=3).contains(&probes), "{probes} probes in 6 s from three instances");
    for app in apps {
        app.stop().await;
    }
}

/// A price set through one instance is charged by the others within a second: the model
/// was free, and once it costs more than the caller's balance covers, the other instances
/// refuse the call instead of serving it free.
#[tokio::test]
async fn a_price_change_on_one_instance_reaches_every_instance_within_a_second() {
    let Some((apps, _upstream, _redis, _prefix, _database)) = coherent_instances().await else { return };
    let admin_key = admin(&apps[0]).await;
    let (user, key) = apps[0].user_with_key("pricey").await;
    apps[0].credit(&user, "0.001").await;
    for app in &apps {
        assert_eq!(post(app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200, "free for now");
    }
    let priced = reqwest::Client::new()
        .put(apps[0].url("/api/models/gpt-4o-mini"))
        .bearer_auth(&admin_key)
        .json(&serde_json::json!({"price": {"input": "1000", "output": "1000"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(priced.status(), 200);
    for app in &apps[1..] {
        assert_eq!(status_within_a_second(app, &key, 200).await, 429, "the new price applies everywhere");
    }
    for app in apps {
        app.stop().await;
    }
}
