//! Risk control, black-box: suspended keys are refused before any upstream call and only
//! their owner's read-only view stays open; the networks rule suspends a key used from
//! too many networks (real connections from different loopback networks); a burst of
//! failed authentications blocks the address. Decisions land in the audit log.

use crate::helpers::*;
use serde_json::Value;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use veil_domain::{ApiKey, Timestamp};
use veil_store::AuditEntry;
use veil_testkit::mock_upstream::MockUpstream;
use veil_testkit::{KeyOptions, TestApp, spawn_app};

/// An HTTP client whose connections come from `source` (any 127.x.y.z works on Linux
/// loopback), so one test can call from several client networks.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(source.parse::<IpAddr>().unwrap()).build().unwrap()
}

async fn chat_from(client: &reqwest::Client, app: &TestApp, key: &str) -> reqwest::Response {
    client.post(app.url("/v1/chat/completions")).bearer_auth(key).json(&chat_body("hi")).send().await.unwrap()
}

/// Calls until the answer has `status` (the server applies store changes within its
/// refresh interval); the deadline only turns a hang into a failure.
async fn chat_until(app: &TestApp, key: &str, status: u16) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = post(app, "/v1/chat/completions", key, chat_body("hi")).await;
        if response.status().as_u16() == status {
            return response;
        }
        assert!(Instant::now() < deadline, "still {} instead of {status}", response.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the audit entry risk control writes in the background.
async fn audit_entry(app: &TestApp, action: &str) -> AuditEntry {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = app.store.list_audit(None, 100).await.unwrap();
        if let Some(entry) = entries.into_iter().find(|e| e.action == action) {
            return entry;
        }
        assert!(Instant::now() < deadline, "no {action} audit entry");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn app_with_risk(risk: &str) -> (TestApp, MockUpstream, ApiKey, String) {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&format!("{}\n[risk]\n{risk}\n", one_channel(&upstream))).await;
    let user = app.create_user("alice", "default").await;
    let (secret, key) = app.create_key(&user, KeyOptions::default()).await;
    (app, upstream, key, secret)
}

async fn get_json(app: &TestApp, path: &str, key: &str) -> (u16, Value) {
    let response = reqwest::Client::new().get(app.url(path)).bearer_auth(key).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_suspended_key_is_refused_before_any_upstream_call_and_unsuspending_restores_it() {
    let (app, upstream, key, secret) = app_with_risk("").await;
    assert_eq!(chat_from(&reqwest::Client::new(), &app, &secret).await.status(), 200);
    assert_eq!(upstream.request_count(), 1);

    assert!(app.store.set_key_suspended(key.id, Some(Timestamp::now())).await.unwrap());
    // Calls made before the server saw the change went through; none after.
    let refused = chat_until(&app, &secret, 403).await;
    assert_eq!(error_code(refused, 403).await, "key_suspended");
    let reached = upstream.request_count();
    let refused = post(&app, "/v1/chat/completions", &secret, chat_body("hi")).await;
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("suspended"));
    // Every relay route refuses it, and nothing reached the upstream.
    let (status, body) = get_json(&app, "/v1/models", &secret).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("key_suspended")));
    let embeddings =
        post(&app, "/v1/embeddings", &secret, serde_json::json!({"model": "text-embedding-3-small", "input": "a"}))
            .await;
    assert_eq!(error_code(embeddings, 403).await, "key_suspended");
    assert_eq!(upstream.request_count(), reached, "a suspended key reached the upstream");

    // Its owner still sees why: the risk view and the export work with the suspended key…
    let (status, risk) = get_json(&app, "/api/me/risk", &secret).await;
    assert_eq!(status, 200, "{risk}");
    assert_eq!(risk["keys"][0]["id"], key.id.to_string());
    assert_eq!(risk["keys"][0]["suspended"], true);
    assert!(risk["keys"][0]["suspended_at"].is_string());
    let (status, export) = get_json(&app, "/api/me/export", &secret).await;
    assert_eq!(status, 200, "{export}");
    assert!(export["keys"][0]["suspended_at"].is_string(), "{export}");
    // …but nothing that acts with the key: not even erasing the account.
    let erase = reqwest::Client::new().delete(app.url("/api/me")).bearer_auth(&secret).send().await.unwrap();
    assert_eq!(error_code(erase, 403).await, "key_suspended");

    assert!(app.store.set_key_suspended(key.id, None).await.unwrap());
    chat_until(&app, &secret, 200).await;
    assert_eq!(upstream.request_count(), reached + 1);
    let (_, risk) = get_json(&app, "/api/me/risk", &secret).await;
    assert_eq!(risk["keys"][0]["suspended"], false);
    let _data = app.stop().await;
}

#[tokio::test]
async fn a_key_used_from_more_networks_than_allowed_is_suspended_and_audited() {
    let (app, upstream, key, secret) =
        app_with_risk(r#"networks = { max = 1, window = "1h", action = "suspend" }"#).await;
    let home = client_from("127.0.0.1");
    // Several addresses of one /24 are one network.
    assert_eq!(chat_from(&home, &app, &secret).await.status(), 200);
    assert_eq!(chat_from(&client_from("127.0.0.2"), &app, &secret).await.status(), 200);
    // A second network trips the rule; this call was authenticated before the decision.
    assert_eq!(chat_from(&client_from("127.0.1.1"), &app, &secret).await.status(), 200);
    assert_eq!(upstream.request_count(), 3);

    // The worker suspends, refreshes this instance, then audits: once audited, refused.
    let suspension = audit_entry(&app, "key.suspend").await;
    let refused = chat_from(&home, &app, &secret).await;
    assert_eq!(error_code(refused, 403).await, "key_suspended");
    assert_eq!(upstream.request_count(), 3, "a suspended key reached the upstream");

    assert_eq!(suspension.actor, "risk");
    assert_eq!(suspension.subject_user, Some(key.user_id));
    assert_eq!(suspension.target.as_deref(), Some(key.id.to_string().as_str()));
    let details = &suspension.details;
    assert_eq!(details["rule"], "networks");
    assert_eq!(details["networks"], 2);
    assert_eq!(details["max"], 1);
    // Networks appear only as `privacy.ip_logging` (truncated by default) allows.
    let mut seen: Vec<&str> = details["seen"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, ["127.0.0.0", "127.0.1.0"]);
    let text = details.to_string();
    assert!(!text.contains("127.0.0.1") && !text.contains("127.0.1.1"), "raw address in the audit log: {text}");
    let stored = app.store.list_keys(Some(key.user_id)).await.unwrap();
    assert!(stored[0].suspended_at.is_some());

    // The owner sees the decision.
    let (status, risk) = get_json(&app, "/api/me/risk", &secret).await;
    assert_eq!(status, 200);
    assert_eq!(risk["events"][0]["action"], "key.suspend");
    assert_eq!(risk["events"][0]["actor"], "risk");
    assert_eq!(risk["events"][0]["details"]["rule"], "networks");
    let _data = app.stop().await;
}

#[tokio::test]
async fn a_warn_rule_audits_and_lets_calls_through() {
    let (app, upstream, key, secret) =
        app_with_risk("networks = { max = 1, action = \"warn\" }\n\n[privacy]\nip_logging = \"off\"\n").await;
    for source in ["127.0.0.1", "127.0.2.1", "127.0.3.1"] {
        assert_eq!(chat_from(&client_from(source), &app, &secret).await.status(), 200);
    }
    let warning = audit_entry(&app, "risk.warn").await;
    assert_eq!(warning.actor, "risk");
    assert_eq!(warning.subject_user, Some(key.user_id));
    assert_eq!(warning.details["rule"], "networks");
    assert_eq!(warning.details["action"], "warn");
    // With IP logging off, no network is named at all.
    assert!(warning.details.get("seen").is_none(), "{}", warning.details);
    assert!(!warning.details.to_string().contains("127."));
    assert_eq!(upstream.request_count(), 3);
    assert_eq!(chat_from(&client_from("127.0.4.1"), &app, &secret).await.status(), 200);
    // Once per window: no second warning, and no suspension.
    let entries = app.store.list_audit(None, 100).await.unwrap();
    assert_eq!(entries.iter().filter(|e| e.action == "risk.warn").count(), 1);
    assert!(entries.iter().all(|e| e.action != "key.suspend"));
    let _data = app.stop().await;
}

#[tokio::test]
async fn a_burst_of_failed_authentications_blocks_the_address_until_the_window_passes() {
    let (app, upstream, _key, secret) =
        app_with_risk(r#"auth_failures = { max = 3, window = "2s", action = "block" }"#).await;
    let attacker = client_from("127.0.0.1");
    let guess = |n: usize| {
        attacker
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(format!("sk-veil-guess{n}"))
            .json(&chat_body("hi"))
            .send()
    };
    for n in 0..3 {
        assert_eq!(error_code(guess(n).await.unwrap(), 401).await, "invalid_api_key");
    }
    let blocked = guess(3).await.unwrap();
    let retry_after: u64 = blocked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(error_code(blocked, 429).await, "rate_limit_exceeded");

    // Now even a valid key from that address is refused, and so is a call with no key.
    let refused = chat_from(&attacker, &app, &secret).await;
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(error_code(refused, 429).await, "rate_limit_exceeded");
    let no_key = attacker.get(app.url("/v1/models")).send().await.unwrap();
    assert_eq!(error_code(no_key, 429).await, "rate_limit_exceeded");
    assert_eq!(upstream.request_count(), 0);
    // Another address is not affected.
    assert_eq!(chat_from(&client_from("127.0.1.1"), &app, &secret).await.status(), 200);

    let block = audit_entry(&app, "risk.block").await;
    assert_eq!(block.actor, "risk");
    assert_eq!(block.subject_user, None);
    assert_eq!(block.target.as_deref(), Some("127.0.0.0"), "the address as ip_logging (truncated) allows");
    assert_eq!(block.details["rule"], "auth_failures");
    assert_eq!(block.details["failures"], 4);
    assert!(!block.details.to_string().contains("127.0.0.1"));

    // Once the window has passed, the valid key works from there again.
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(200)).await;
    assert_eq!(chat_from(&attacker, &app, &secret).await.status(), 200);
    let _data = app.stop().await;
}
