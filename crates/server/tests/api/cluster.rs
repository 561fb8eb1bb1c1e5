//! Several instances sharing one Redis (and, for the RPM test, one PostgreSQL database):
//! a key's limit holds across instances, and a Redis outage fails closed or open as
//! configured and ends without a restart. Skipped when Redis or PostgreSQL is unreachable,
//! unless `VEIL_REQUIRE_SERVICES=1`.

use crate::helpers::{chat_body, error_code, one_channel, post};
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
    let first = spawn_app(&config).await;
    // One installation: the others share the first's master key (and so its key hashes).
    let mut apps = vec![first];
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(apps[0].data_dir.path().join("master.key"), dir.path().join("master.key")).unwrap();
        apps.push(spawn_app_in(&config, dir).await);
    }
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
