//! Routing, health and failover: priority tiers and weights, sticky sessions, cooling a
//! failing channel down and bringing it back, `retry-after` waited out or passed on, a
//! rejected credential disabling its channel durably (audited, announced by a signed
//! webhook, shown by the admin API, lifted by an admin), the attempts a call record lists,
//! and the scheduled prober.

use crate::helpers::*;
use axum::body::Bytes;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::{TestApp, spawn_app, spawn_app_in};

const MODEL: &str = "gpt-4o-mini";

fn channel(name: &str, upstream: &MockUpstream, priority: i32, weight: u32, models: &[&str]) -> String {
    let models: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "\n[[channel]]\nname = \"{name}\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [{}]\npriority = {priority}\nweight = {weight}\nfirst_byte_timeout = \"2s\"\n",
        upstream.base_url(),
        models.join(", ")
    )
}

fn free(model: &str) -> String {
    format!("\n[[model]]\nname = \"{model}\"\nfree = true\n")
}

async fn chat(app: &TestApp, key: &str, model: &str) -> reqwest::Response {
    post(app, "/v1/chat/completions", key, json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .await
}

async fn chat_with_session(app: &TestApp, key: &str, header: &str, session: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header(header, session)
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

async fn channel_status(app: &TestApp, admin: &str, name: &str) -> Value {
    let response =
        reqwest::Client::new().get(app.url(&format!("/api/channels/{name}"))).bearer_auth(admin).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Polls the admin API until the channel's status satisfies `done` (a few seconds at most).
async fn wait_for(app: &TestApp, admin: &str, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = channel_status(app, admin, name).await;
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{name} never reached {what}: {status}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for_state(app: &TestApp, admin: &str, name: &str, state: &str) -> Value {
    wait_for(app, admin, name, state, |status| status["state"] == state).await
}

async fn admin_post(app: &TestApp, admin: &str, path: &str) -> Value {
    let response = reqwest::Client::new().post(app.url(path)).bearer_auth(admin).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_highest_priority_tier_serves_and_weights_spread_a_tier() {
    let (top, heavy, light) = (MockUpstream::start().await, MockUpstream::start().await, MockUpstream::start().await);
    let config = channel("top", &top, 10, 1, &[MODEL])
        + &channel("heavy", &heavy, 1, 3, &[MODEL, "spread"])
        + &channel("light", &light, 1, 1, &[MODEL, "spread"])
        + &free(MODEL)
        + &free("spread");
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("pat").await;
    for _ in 0..10 {
        assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    }
    assert_eq!((top.request_count(), heavy.request_count(), light.request_count()), (10, 0, 0));
    for _ in 0..80 {
        assert_eq!(chat(&app, &key, "spread").await.status(), 200);
    }
    let (heavy, light) = (heavy.request_count(), light.request_count());
    assert_eq!(heavy + light, 80);
    // Expected 60 and 20; chance alone puts either bound out of reach.
    assert!(light > 0 && heavy > light, "heavy {heavy}, light {light}");
}

#[tokio::test]
async fn a_session_key_sticks_to_one_channel_and_different_keys_spread() {
    let upstreams = [MockUpstream::start().await, MockUpstream::start().await, MockUpstream::start().await];
    let mut config = String::new();
    for (i, upstream) in upstreams.iter().enumerate() {
        config += &channel(&format!("c{i}"), upstream, 0, 1, &[MODEL]);
    }
    let app = spawn_app(&(config + &free(MODEL))).await;
    let (_, key) = app.user_with_key("sam").await;
    let counts = || upstreams.iter().map(MockUpstream::request_count).collect::<Vec<_>>();

    for _ in 0..20 {
        assert_eq!(chat_with_session(&app, &key, "x-session-id", "conversation-42").await.status(), 200);
    }
    let after_sticky = counts();
    assert_eq!(after_sticky.iter().filter(|n| **n == 20).count(), 1, "one channel took every call: {after_sticky:?}");
    // Codex CLI's header works the same way.
    for _ in 0..5 {
        chat_with_session(&app, &key, "session_id", "conversation-42").await;
    }
    assert_eq!(counts().iter().filter(|n| **n == 25).count(), 1, "{:?}", counts());

    let mut used = HashSet::new();
    for i in 0..30 {
        let before = counts();
        chat_with_session(&app, &key, "x-session-id", &format!("other-{i}")).await;
        let after = counts();
        used.insert((0..3).find(|&c| after[c] > before[c]).unwrap());
    }
    assert!(used.len() >= 2, "different sessions spread over the tier: {used:?}");
    // The session id never leaves Veil.
    for upstream in &upstreams {
        for request in upstream.requests() {
            assert_eq!(request.header("x-session-id"), None);
            assert_eq!(request.header("session_id"), None);
            assert!(!String::from_utf8_lossy(&request.raw_body).contains("conversation-42"));
        }
    }
}

#[tokio::test]
async fn a_failing_channel_cools_down_is_skipped_and_comes_back_after_a_trial() {
    let (flaky, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    flaky.set_default(Reply::openai_error(500, "boom", "server_error"));
    let config = "[routing]\nmin_calls = 2\nerror_rate_threshold = 0.5\nwindow = \"30s\"\ncooldown = \"300ms\"\n"
        .to_owned()
        + &channel("flaky", &flaky, 10, 1, &[MODEL])
        + &channel("backup", &backup, 1, 1, &[MODEL])
        + &free(MODEL);
    let app = spawn_app(&config).await;
    let admin = admin(&app).await;
    let (_, key) = app.user_with_key("fay").await;

    // Two failures (each failing over to the backup) trip the channel.
    for _ in 0..2 {
        assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    }
    assert_eq!(flaky.request_count(), 2);
    let cooling = channel_status(&app, &admin, "flaky").await;
    assert_eq!(cooling["state"], "cooling_down", "{cooling}");
    assert_eq!(cooling["error_rate"], 1.0);
    assert_eq!(cooling["calls"], 2);
    assert!(cooling["cooling_until"].is_string());
    // While it cools, calls go straight to the backup: the flaky upstream sees nothing.
    for _ in 0..3 {
        assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    }
    assert_eq!(flaky.request_count(), 2);
    assert_eq!(backup.request_count(), 5);

    // Fixed meanwhile: after the cool-down one trial call goes to it and closes the circuit.
    flaky.set_default(Reply::chat("back"));
    wait_for_state(&app, &admin, "flaky", "half_open").await;
    assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    assert_eq!(flaky.request_count(), 3);
    let recovered = channel_status(&app, &admin, "flaky").await;
    assert_eq!(recovered["state"], "healthy", "{recovered}");
    assert!(recovered["latency_p50_ms"].is_u64(), "{recovered}");
    assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    assert_eq!(flaky.request_count(), 4, "routed to again");

    let records = stop_and_read_records(app).await;
    let tried: Vec<Vec<&str>> =
        records.iter().rev().map(|r| r.record.channels_tried.iter().map(|c| c.as_str()).collect()).collect();
    assert_eq!(tried[0], ["flaky", "backup"]);
    assert_eq!(tried[2], ["backup"], "a cooling channel is not tried");
    assert_eq!(tried[5], ["flaky"]);
}

#[tokio::test]
async fn a_short_retry_after_on_the_only_channel_is_waited_out() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&(channel("only", &upstream, 0, 1, &[MODEL]) + &free(MODEL))).await;
    let (_, key) = app.user_with_key("rita").await;
    upstream.push(Reply::error_with_retry_after(429, json!({"error": {"message": "slow down"}}), 1));
    let started = Instant::now();
    let response = chat(&app, &key, MODEL).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(900), "the retry-after was honoured");
    assert_eq!(upstream.request_count(), 2, "tried once more");
    let records = stop_and_read_records(app).await;
    let tried: Vec<&str> = records[0].record.channels_tried.iter().map(|c| c.as_str()).collect();
    assert_eq!(tried, ["only", "only"]);
    assert_eq!(records[0].record.status, 200);
}

#[tokio::test]
async fn a_long_retry_after_is_passed_on_and_the_channel_rests_meanwhile() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&(channel("only", &upstream, 0, 1, &[MODEL]) + &free(MODEL))).await;
    let (_, key) = app.user_with_key("rob").await;
    upstream.push(Reply::error_with_retry_after(429, json!({"error": {"message": "slow down"}}), 30));
    let limited = chat(&app, &key, MODEL).await;
    assert_eq!(limited.headers()["retry-after"], "30");
    assert_eq!(error_code(limited, 429).await, "upstream_error");
    assert_eq!(upstream.request_count(), 1, "not waited for");

    // The channel rests for its retry-after: the next call is not sent to it at all.
    let resting = chat(&app, &key, MODEL).await;
    let retry_after: u64 = resting.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: Value = resting.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(body["error"]["message"].as_str().unwrap().to_lowercase().contains("cooling down"));
    assert_eq!(upstream.request_count(), 1);
}

#[tokio::test]
async fn channels_tried_lists_every_attempt_in_order_up_to_max_attempts() {
    let upstreams = [MockUpstream::start().await, MockUpstream::start().await, MockUpstream::start().await];
    for upstream in &upstreams[..2] {
        upstream.set_default(Reply::openai_error(503, "overloaded", "server_busy"));
    }
    let config = "[routing]\nmax_attempts = 2\n".to_owned()
        + &channel("first", &upstreams[0], 3, 1, &[MODEL])
        + &channel("second", &upstreams[1], 2, 1, &[MODEL])
        + &channel("third", &upstreams[2], 1, 1, &[MODEL])
        + &free(MODEL);
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("tia").await;
    assert_eq!(error_code(chat(&app, &key, MODEL).await, 502).await, "upstream_error");
    assert_eq!(upstreams.iter().map(MockUpstream::request_count).collect::<Vec<_>>(), [1, 1, 0]);
    let records = stop_and_read_records(app).await;
    let tried: Vec<&str> = records[0].record.channels_tried.iter().map(|c| c.as_str()).collect();
    assert_eq!(tried, ["first", "second"]);
}

/// A webhook receiver: every POST's headers and body.
struct Sink {
    url: String,
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn sink() -> Sink {
    let received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
    let kept = Arc::clone(&received);
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
            kept.lock().unwrap().push((headers, body));
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)] // the test owns the sink and aborts it on drop
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Sink { url, received, server }
}

impl Sink {
    /// Waits for an event named `event` and returns it with its signature header.
    async fn event(&self, event: &str) -> (Value, String, Bytes) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.received.lock().unwrap().iter().find_map(|(headers, body)| {
                let json: Value = serde_json::from_slice(body).ok()?;
                let signature = headers.get("veil-signature")?.to_str().ok()?.to_owned();
                (json["event"] == event).then(|| (json, signature, body.clone()))
            });
            if let Some(found) = found {
                return found;
            }
            assert!(Instant::now() < deadline, "no {event} event reached the webhook");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

const WEBHOOK_SECRET: &str = "whsec-routing-test";

fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_rejected_credential_disables_the_channel_durably_until_an_admin_enables_it() {
    let (main, other) = (MockUpstream::start().await, MockUpstream::start().await);
    let hook = sink().await;
    let config = format!("[notifications]\nwebhook_url = \"{}\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n", hook.url)
        + &channel("main", &main, 10, 1, &[MODEL])
        + &channel("other", &other, 1, 1, &[MODEL])
        + &free(MODEL);
    let app = spawn_app(&config).await;
    let admin_key = admin(&app).await;
    let (_, key) = app.user_with_key("cora").await;

    main.push(Reply::openai_error(401, "Incorrect API key provided: sk-proj-****abcd", "invalid_api_key"));
    assert_eq!(chat(&app, &key, MODEL).await.status(), 200, "fails over to the other channel");
    // At once on this instance; durably (with its reason) once the store has it.
    let disabled = wait_for(&app, &admin_key, "main", "a durable disabling", |status| {
        status["disabled_reason"] == "credential_rejected"
    })
    .await;
    assert_eq!(disabled["state"], "disabled", "{disabled}");
    assert!(disabled["disabled_at"].is_string());
    assert_eq!(disabled["enabled"], true, "the config's own switch is untouched");
    for _ in 0..3 {
        assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    }
    assert_eq!(main.request_count(), 1, "no call reaches a channel whose credential was rejected");

    // The admins were told, with a signature they can check.
    let (event, signature, body) = hook.event("channel.disabled").await;
    assert_eq!(event["channel"], "main");
    assert_eq!(event["reason"], "credential_rejected");
    assert_eq!(event["upstream_status"], 401);
    assert!(
        time::OffsetDateTime::parse(event["time"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    assert_eq!(signature, expected_signature(&body));
    assert!(!String::from_utf8_lossy(&body).contains("sk-proj"), "the upstream's message is not passed on");
    // And it is audited.
    let audit = app.store.list_audit(None, 50).await.unwrap();
    let entry = audit.iter().find(|a| a.action == "channel.disable").expect("an audit entry");
    assert_eq!((entry.actor.as_str(), entry.target.as_deref()), ("routing", Some("main")));
    assert_eq!(entry.details["reason"], "credential_rejected");

    // A restart (which re-seeds the channel from the config) keeps it disabled.
    let data = app.stop().await;
    let app = spawn_app_in(&config, data).await;
    assert_eq!(channel_status(&app, &admin_key, "main").await["state"], "disabled");
    assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    assert_eq!(main.request_count(), 1);

    // The list shows it too, with the other channel healthy.
    let list: Value = reqwest::Client::new()
        .get(app.url("/api/channels"))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let states: Vec<(&str, &str)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("main", "disabled"), ("other", "healthy")]);

    // An admin enables it once the credential is fixed: routed to at once.
    let enabled = admin_post(&app, &admin_key, "/api/channels/main/enable").await;
    assert_eq!(enabled["state"], "healthy", "{enabled}");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    assert_eq!(main.request_count(), 2);
    let audit = app.store.list_audit(None, 50).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "channel.enable" && a.target.as_deref() == Some("main")));

    // Admins disable and test channels by hand too; users may not.
    let disabled = admin_post(&app, &admin_key, "/api/channels/main/disable").await;
    assert_eq!((disabled["state"].as_str(), disabled["disabled_reason"].as_str()), (Some("disabled"), Some("admin")));
    assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    assert_eq!(main.request_count(), 2);
    let tested = admin_post(&app, &admin_key, "/api/channels/main/test").await;
    assert_eq!(tested["ok"], true, "{tested}");
    assert!(tested["latency_ms"].is_u64());
    assert_eq!(main.request_count(), 3, "the probe reached the disabled channel");
    let refused = reqwest::Client::new().get(app.url("/api/channels")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(error_code(refused, 403).await, "permission_denied");
    let missing =
        reqwest::Client::new().post(app.url("/api/channels/nope/enable")).bearer_auth(&admin_key).send().await.unwrap();
    assert_eq!(error_code(missing, 404).await, "not_found");
}

#[tokio::test]
async fn cooling_down_and_recovering_are_announced() {
    let (flaky, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    flaky.set_default(Reply::openai_error(502, "bad gateway", "bad_gateway"));
    let hook = sink().await;
    let config = format!(
        "[routing]\nmin_calls = 1\ncooldown = \"100ms\"\n\n[notifications]\nwebhook_url = \"{}\"\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n",
        hook.url
    ) + &channel("flaky", &flaky, 10, 1, &[MODEL])
        + &channel("backup", &backup, 1, 1, &[MODEL])
        + &free(MODEL);
    let app = spawn_app(&config).await;
    let admin_key = admin(&app).await;
    let (_, key) = app.user_with_key("nia").await;
    assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    let (cooling, signature, body) = hook.event("channel.cooling_down").await;
    assert_eq!(signature, expected_signature(&body));
    assert_eq!(cooling["channel"], "flaky");
    assert_eq!(cooling["error_rate"], 1.0);
    assert!(cooling["until"].is_string());

    flaky.set_default(Reply::chat("fine"));
    wait_for_state(&app, &admin_key, "flaky", "half_open").await;
    assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    let (recovered, _, _) = hook.event("channel.recovered").await;
    assert_eq!(recovered["channel"], "flaky");
}

#[tokio::test]
async fn the_prober_marks_a_dead_channel_and_brings_it_back() {
    let (probed, backup) = (MockUpstream::start().await, MockUpstream::start().await);
    probed.set_default(Reply::openai_error(503, "down", "unavailable"));
    let config = "[routing]\nmin_calls = 1\ncooldown = \"200ms\"\nmax_cooldown = \"400ms\"\n".to_owned()
        + &channel("probed", &probed, 10, 1, &[MODEL])
        + "probe_interval = \"5s\"\n"
        + &channel("backup", &backup, 1, 1, &[MODEL])
        + &free(MODEL);
    let app = spawn_app(&config).await;
    let admin_key = admin(&app).await;
    let (_, key) = app.user_with_key("pia").await;

    // No client call: the start-up probe finds it dead.
    let cooling = wait_for_state(&app, &admin_key, "probed", "cooling_down").await;
    assert!(cooling["calls"].as_u64().unwrap() >= 1, "{cooling}");
    let probe = probed.last_request().expect("the prober called the upstream");
    assert_eq!(probe.body["max_tokens"], 1);
    assert!(probed.requests().iter().all(|r| r.header("x-session-id").is_none()));
    // Live calls are not its trials: they go to the backup while it is down.
    let before = probed.request_count();
    assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    assert_eq!(backup.request_count(), 1);

    // Back up: the next probe after the cool-down closes it again, with no client call.
    probed.set_default(Reply::chat("pong"));
    wait_for_state(&app, &admin_key, "probed", "healthy").await;
    assert!(probed.request_count() > before, "recovered by a probe");
    assert_eq!(chat(&app, &key, MODEL).await.status(), 200);
    assert_eq!(backup.request_count(), 1, "routed to the recovered channel again");
}
