//! Every limit type refuses with `429 rate_limit_exceeded`, `retry-after` and OpenAI's
//! `x-ratelimit-*` headers, before any upstream call.

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;
use veil_domain::{KeyLimits, Money};
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::{KeyOptions, spawn_app};

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

async fn assert_rate_limited(response: reqwest::Response) -> reqwest::header::HeaderMap {
    let headers = response.headers().clone();
    let retry_after: u64 = headers.get("retry-after").expect("retry-after").to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(error_code(response, 429).await, "rate_limit_exceeded");
    headers
}

#[tokio::test]
async fn key_requests_per_minute_with_openai_headers() {
    let (app, upstream, _) = app_with_upstream().await;
    let user = app.create_user("rpm", "default").await;
    let limits = KeyLimits { rpm: Some(2), ..Default::default() };
    let (key, _) = app.create_key(&user, KeyOptions { limits, ..Default::default() }).await;

    let first = post(&app, "/v1/chat/completions", &key, chat_body("1")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-limit-requests").as_deref(), Some("2"));
    assert_eq!(header(&first, "x-ratelimit-remaining-requests").as_deref(), Some("1"));
    assert!(header(&first, "x-ratelimit-reset-requests").is_some_and(|v| v.ends_with('s')));
    assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("2")).await.status(), 200);

    let refused = post(&app, "/v1/chat/completions", &key, chat_body("3")).await;
    let headers = assert_rate_limited(refused).await;
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    // One call per 30 s comes back: the wait is about that long.
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((25..=30).contains(&wait), "retry-after {wait}");
    assert_eq!(upstream.request_count(), 2);

    // Another key of the same user is not affected by this key's limit.
    let (other, _) = app.create_key(&user, KeyOptions::default()).await;
    assert_eq!(post(&app, "/v1/chat/completions", &other, chat_body("4")).await.status(), 200);
}

#[tokio::test]
async fn key_tokens_per_minute_reserve_the_worst_case() {
    let (app, upstream, _) = app_with_upstream().await;
    let user = app.create_user("tpm", "default").await;
    let limits = KeyLimits { tpm: Some(1_000), ..Default::default() };
    let (key, _) = app.create_key(&user, KeyOptions { limits, ..Default::default() }).await;
    let ask = |max_tokens: u64| json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]});

    // Larger than the whole minute's budget: can never pass.
    let too_large = post(&app, "/v1/chat/completions", &key, ask(5_000)).await;
    let headers = assert_rate_limited(too_large).await;
    assert_eq!(headers["x-ratelimit-limit-tokens"], "1000");
    // 600 reserved, the upstream reports far fewer: the difference comes back at once.
    upstream.push(Reply::chat_with_usage("ok", 8, 2, 0));
    let ok = post(&app, "/v1/chat/completions", &key, ask(600)).await;
    assert_eq!(ok.status(), 200);
    assert!(header(&ok, "x-ratelimit-remaining-tokens").is_some());
    // A second 600 fits only because the first call's unused reservation came back.
    upstream.push(Reply::chat_with_usage("ok", 8, 600, 0));
    assert_eq!(post(&app, "/v1/chat/completions", &key, ask(600)).await.status(), 200, "reconciled");
    // That one used what it reserved: a third does not fit in the minute.
    let refused = assert_rate_limited(post(&app, "/v1/chat/completions", &key, ask(600)).await).await;
    let remaining: u64 = refused["x-ratelimit-remaining-tokens"].to_str().unwrap().parse().unwrap();
    assert!(remaining < 600, "remaining {remaining}");
    assert_eq!(upstream.request_count(), 2);
}

#[tokio::test]
async fn key_concurrency_is_capped_and_released_when_calls_end() {
    let (app, upstream, _) = app_with_upstream().await;
    let user = app.create_user("conc", "default").await;
    let limits = KeyLimits { max_concurrent: Some(1), ..Default::default() };
    let (key, _) = app.create_key(&user, KeyOptions { limits, ..Default::default() }).await;
    upstream.push(Reply::chat("slow").first_byte_delay(Duration::from_millis(500)));
    #[allow(clippy::disallowed_methods)] // joined below
    let slow = tokio::spawn({
        let request =
            reqwest::Client::new().post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&chat_body("a"));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_rate_limited(post(&app, "/v1/chat/completions", &key, chat_body("b")).await).await;
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("c")).await.status(), 200, "lease released");
}

#[tokio::test]
async fn group_limits_apply_to_each_user_across_their_keys() {
    let upstream = MockUpstream::start().await;
    let config = format!("[[group]]\nname = \"default\"\nrpm = 1\n{}", one_channel(&upstream));
    let app = spawn_app(&config).await;
    let user = app.create_user("grp", "default").await;
    let (first, _) = app.create_key(&user, KeyOptions::default()).await;
    let (second, _) = app.create_key(&user, KeyOptions::default()).await;
    assert_eq!(post(&app, "/v1/chat/completions", &first, chat_body("1")).await.status(), 200);
    assert_rate_limited(post(&app, "/v1/chat/completions", &second, chat_body("2")).await).await;
    // Another member of the group has their own allowance.
    let (_, neighbour) = app.user_with_key("neighbour").await;
    assert_eq!(post(&app, "/v1/chat/completions", &neighbour, chat_body("3")).await.status(), 200);
}

#[tokio::test]
async fn a_daily_spend_cap_refuses_until_midnight() {
    let upstream = MockUpstream::start().await;
    let config = format!(
        r#"
[[group]]
name = "default"
daily_spend = 0.005

[[channel]]
name = "main"
type = "openai"
base_url = "{}"
models = ["paid"]

[[model]]
name = "paid"
price = {{ input = 1, output = 1 }}
"#,
        upstream.base_url()
    );
    let app = spawn_app(&config).await;
    let (user, key) = app.user_with_key("cap").await;
    app.credit(&user, "100").await;
    upstream.set_default(Reply::chat_with_usage("ok", 2_000, 2_000, 0));
    let ask = json!({"model": "paid", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    // Each call costs 0.004: the first fits, the second would pass the 0.005 cap.
    assert_eq!(post(&app, "/v1/chat/completions", &key, ask.clone()).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(post(&app, "/v1/chat/completions", &key, ask.clone()).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = post(&app, "/v1/chat/completions", &key, ask).await;
    let headers = assert_rate_limited(refused).await;
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait <= 86_400, "resets by the next UTC midnight");
    assert_eq!(upstream.request_count(), 2);
    let spent = app.store.balance(user.id).await.unwrap();
    assert!(spent < Money::parse_decimal("100").unwrap());
}

#[tokio::test]
async fn channel_limits_skip_a_busy_channel_and_refuse_when_all_are_busy() {
    let busy = MockUpstream::start().await;
    let spare = MockUpstream::start().await;
    let channels = |with_spare: bool| {
        let mut config = format!(
            "[[channel]]\nname = \"busy\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o-mini\"]\npriority = 10\nrpm = 1\n",
            busy.base_url()
        );
        if with_spare {
            config += &format!(
                "\n[[channel]]\nname = \"spare\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o-mini\"]\npriority = 1\n",
                spare.base_url()
            );
        }
        config + "\n[[model]]\nname = \"gpt-4o-mini\"\nfree = true\n"
    };
    let app = spawn_app(&channels(true)).await;
    let (_, key) = app.user_with_key("chan").await;
    for _ in 0..3 {
        assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("x")).await.status(), 200);
    }
    assert_eq!(busy.request_count(), 1, "the limited channel took one call a minute");
    assert_eq!(spare.request_count(), 2, "the rest went to the next channel");
    app.stop().await;

    let app = spawn_app(&channels(false)).await;
    let (_, key) = app.user_with_key("chan2").await;
    assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("x")).await.status(), 200);
    assert_rate_limited(post(&app, "/v1/chat/completions", &key, chat_body("y")).await).await;
    assert_eq!(busy.request_count(), 2);
}

#[tokio::test]
async fn a_keys_monthly_spend_cap_binds_that_key_only() {
    let upstream = MockUpstream::start().await;
    let config = format!(
        "[[channel]]\nname = \"main\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"paid\"]\n\n[[model]]\nname = \"paid\"\nprice = {{ input = 1, output = 1 }}\n",
        upstream.base_url()
    );
    let app = spawn_app(&config).await;
    let user = app.create_user("capped", "default").await;
    app.credit(&user, "100").await;
    let options = KeyOptions { monthly_spend: Some(Money::parse_decimal("0.005").unwrap()), ..Default::default() };
    let (capped, _) = app.create_key(&user, options).await;
    let (free_hand, _) = app.create_key(&user, KeyOptions::default()).await;
    upstream.set_default(Reply::chat_with_usage("ok", 2_000, 2_000, 0));
    let ask = json!({"model": "paid", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&app, "/v1/chat/completions", &capped, ask.clone()).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(post(&app, "/v1/chat/completions", &capped, ask.clone()).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_rate_limited(post(&app, "/v1/chat/completions", &capped, ask.clone()).await).await;
    assert_eq!(post(&app, "/v1/chat/completions", &free_hand, ask).await.status(), 200, "a sibling key is not capped");
}

#[tokio::test]
async fn a_channels_concurrency_cap_holds_while_its_calls_run() {
    let upstream = MockUpstream::start().await;
    let config = format!(
        "[[channel]]\nname = \"narrow\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o-mini\"]\nmax_concurrent = 1\n\n[[model]]\nname = \"gpt-4o-mini\"\nfree = true\n",
        upstream.base_url()
    );
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("narrow").await;
    upstream.push(Reply::chat("slow").first_byte_delay(Duration::from_millis(500)));
    #[allow(clippy::disallowed_methods)] // joined below
    let slow = tokio::spawn({
        let request =
            reqwest::Client::new().post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&chat_body("a"));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_rate_limited(post(&app, "/v1/chat/completions", &key, chat_body("b")).await).await;
    assert_eq!(slow.await.unwrap(), 200);
    assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("c")).await.status(), 200, "lease released");
    assert_eq!(upstream.request_count(), 2);
}
