//! Asynchronous video jobs (`/v1/videos`): submission, polling, content, per-second billing
//! with exactly-once adjustment and refund, time-outs, ownership, restart survival, and no
//! prompt at rest.

use crate::helpers::error_code;
use serde_json::{Value, json};
use std::time::Duration;
use veil_domain::{LedgerKind, Money, User};
use veil_testkit::mock_upstream::{MockUpstream, VideoOutcome, VideoPlan};
use veil_testkit::{TestApp, spawn_app, spawn_app_in};

const CONTENT: &[u8] = b"\x00\x00\x00\x18ftypmp42 a very short mock video";

/// One OpenAI channel serving `sora-2` at 0.1 per second, with fast polling.
fn config(upstream: &MockUpstream, timeout: &str, poll: &str) -> String {
    format!(
        r#"
[videos]
poll_interval = "{poll}"
max_poll_interval = "{poll}"
timeout = "{timeout}"

[[group]]
name = "default"
deny_keywords = ["forbidden phrase"]

[[channel]]
name = "video"
type = "openai"
base_url = "{}"
models = ["sora-2"]

[[model]]
name = "sora-2"
price = {{ per_second = 0.1 }}
"#,
        upstream.base_url()
    )
}

fn money(text: &str) -> Money {
    Money::parse_decimal(text).unwrap()
}

async fn funded(app: &TestApp, name: &str, amount: &str) -> (User, String) {
    let (user, key) = app.user_with_key(name).await;
    app.credit(&user, amount).await;
    // The running server applies the credit at its next refresh.
    tokio::time::sleep(Duration::from_millis(250)).await;
    (user, key)
}

async fn submit(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new().post(app.url("/v1/videos")).bearer_auth(key).json(&body).send().await.unwrap()
}

async fn get(app: &TestApp, key: &str, path: &str) -> reqwest::Response {
    reqwest::Client::new().get(app.url(path)).bearer_auth(key).send().await.unwrap()
}

/// Polls the job until it is final; returns its last object.
async fn wait_final(app: &TestApp, key: &str, id: &str) -> Value {
    for _ in 0..200 {
        let job: Value = get(app, key, &format!("/v1/videos/{id}")).await.json().await.unwrap();
        if job["status"] == "completed" || job["status"] == "failed" {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the video job never finished");
}

async fn submitted_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("veil-data-policy"));
    let job: Value = response.json().await.unwrap();
    assert_eq!(job["object"], "video");
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("video_") && !id.starts_with("video_mock"), "Veil's own id, not the upstream's: {id}");
    id
}

#[tokio::test]
async fn a_job_is_submitted_polled_and_downloaded_and_billed_per_second() {
    let upstream = MockUpstream::start().await;
    upstream.set_video_plan(VideoPlan {
        polls_to_finish: 3,
        outcome: VideoOutcome::Complete { content: bytes::Bytes::from_static(CONTENT), seconds: None },
    });
    let app = spawn_app(&config(&upstream, "1m", "50ms")).await;
    let (user, key) = funded(&app, "alice", "10").await;

    let id =
        submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": "a cat", "seconds": "8"})).await).await;
    // Charged at submission: 8 s × 0.1.
    assert_eq!(app.store.balance(user.id).await.unwrap(), money("9.2"));

    // Not ready yet: no content.
    let early = get(&app, &key, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(early.status(), 409);

    let job = wait_final(&app, &key, &id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["progress"], 100);
    assert_eq!(job["seconds"], "8");
    assert_eq!(job["model"], "sora-2");
    assert!(job.get("prompt").is_none());

    let content = get(&app, &key, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(content.status(), 200);
    assert_eq!(content.headers()["content-type"], "video/mp4");
    assert_eq!(content.bytes().await.unwrap().as_ref(), CONTENT);

    // The upstream got the API's fields and its own model name; the job was polled.
    let sent = upstream.requests().into_iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(sent.path, "/v1/videos");
    assert_eq!(sent.body, json!({"model": "sora-2", "prompt": "a cat", "seconds": "8", "size": "720x1280"}));
    assert!(upstream.video_polls() >= 3);

    let store = std::sync::Arc::clone(&app.store);
    let _data = app.stop().await;
    assert_eq!(store.balance(user.id).await.unwrap(), money("9.2"), "a completed job is charged once");
    let records = store
        .list_call_records(&veil_store::CallRecordFilter { user_id: Some(user.id), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0].record;
    assert_eq!(record.path, "/v1/videos");
    assert_eq!(record.status, 200);
    assert_eq!(record.usage.media_ms, 8000);
    assert_eq!(record.cost, money("0.8"));
    assert_eq!(record.channel.as_ref().map(|c| c.as_str()), Some("video"));
}

#[tokio::test]
async fn a_shorter_video_than_asked_for_refunds_the_difference() {
    let upstream = MockUpstream::start().await;
    upstream.set_video_plan(VideoPlan {
        polls_to_finish: 1,
        outcome: VideoOutcome::Complete { content: bytes::Bytes::from_static(CONTENT), seconds: Some(4) },
    });
    let app = spawn_app(&config(&upstream, "1m", "50ms")).await;
    let (user, key) = funded(&app, "alice", "10").await;
    let id =
        submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": "a dog", "seconds": "12"})).await).await;
    assert_eq!(wait_final(&app, &key, &id).await["status"], "completed");
    assert_eq!(app.store.balance(user.id).await.unwrap(), money("9.6"), "4 of 12 seconds were produced");
    let refunds: Vec<_> =
        app.store.list_ledger(user.id).await.unwrap().into_iter().filter(|e| e.kind == LedgerKind::Refund).collect();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, money("0.8"));
}

#[tokio::test]
async fn a_failed_job_is_refunded_and_the_money_is_spendable_again() {
    let upstream = MockUpstream::start().await;
    upstream.set_video_plan(VideoPlan { polls_to_finish: 1, outcome: VideoOutcome::Fail });
    let app = spawn_app(&config(&upstream, "1m", "50ms")).await;
    // Exactly one 4-second video's worth.
    let (user, key) = funded(&app, "alice", "0.4").await;

    let id = submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": "a bird"})).await).await;
    assert_eq!(app.store.balance(user.id).await.unwrap(), Money::ZERO);
    // Nothing left for a second one meanwhile.
    let refused = submit(&app, &key, json!({"model": "sora-2", "prompt": "another"})).await;
    assert_eq!(error_code(refused, 429).await, "insufficient_quota");

    let job = wait_final(&app, &key, &id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "upstream_error");
    assert!(!job.to_string().contains("a bird"), "the upstream's message (echoing the prompt) is not passed on");
    assert_eq!(app.store.balance(user.id).await.unwrap(), money("0.4"), "refunded in full");
    let content = get(&app, &key, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(content.status(), 409);

    // The running server's cached balance learned the refund: the money is spendable again.
    upstream.set_video_plan(VideoPlan::default());
    submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": "again"})).await).await;
}

#[tokio::test]
async fn a_job_that_never_finishes_times_out_and_is_refunded() {
    let upstream = MockUpstream::start().await;
    upstream.set_video_plan(VideoPlan { polls_to_finish: 1, outcome: VideoOutcome::Never });
    let app = spawn_app(&config(&upstream, "700ms", "50ms")).await;
    let (user, key) = funded(&app, "alice", "1").await;
    let id = submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": "slow"})).await).await;
    let job = wait_final(&app, &key, &id).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error"]["code"], "upstream_timeout");
    assert_eq!(app.store.balance(user.id).await.unwrap(), money("1"));
    let ledger = app.store.list_ledger(user.id).await.unwrap();
    assert_eq!(ledger.iter().filter(|e| e.kind == LedgerKind::Refund).count(), 1, "refunded once");
}

#[tokio::test]
async fn only_the_owner_sees_a_job() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "1m", "50ms")).await;
    let (_, alice) = funded(&app, "alice", "1").await;
    let (_, mallory) = app.user_with_key("mallory").await;
    let id = submitted_id(submit(&app, &alice, json!({"model": "sora-2", "prompt": "mine"})).await).await;
    wait_final(&app, &alice, &id).await;
    assert_eq!(error_code(get(&app, &mallory, &format!("/v1/videos/{id}")).await, 404).await, "not_found");
    assert_eq!(error_code(get(&app, &mallory, &format!("/v1/videos/{id}/content")).await, 404).await, "not_found");
    assert_eq!(error_code(get(&app, &alice, "/v1/videos/video_nonexistent").await, 404).await, "not_found");
    let anonymous = reqwest::Client::new().get(app.url(&format!("/v1/videos/{id}"))).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn submissions_are_validated_screened_and_refused_without_money() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "1m", "50ms")).await;
    let (_, key) = funded(&app, "alice", "1").await;
    let bad = submit(&app, &key, json!({"model": "sora-2", "prompt": "x", "seconds": "5"})).await;
    assert_eq!(error_code(bad, 400).await, "invalid_request_error");
    let blocked = submit(&app, &key, json!({"model": "sora-2", "prompt": "a Forbidden Phrase here"})).await;
    assert_eq!(error_code(blocked, 400).await, "content_blocked");
    let (_, poor) = app.user_with_key("poor").await;
    let unaffordable = submit(&app, &poor, json!({"model": "sora-2", "prompt": "x"})).await;
    assert_eq!(error_code(unaffordable, 429).await, "insufficient_quota");
    assert!(upstream.requests().is_empty(), "nothing refused reached the upstream");
}

#[tokio::test]
async fn the_prompt_never_reaches_the_store() {
    const CANARY: &str = "CANARY-7f3a9c-video-prompt";
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream, "1m", "50ms")).await;
    let (_, key) = funded(&app, "alice", "10").await;
    let done = submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": CANARY})).await).await;
    wait_final(&app, &key, &done).await;
    // A failing upstream echoes the prompt in its error message: that is not kept either.
    upstream.set_video_plan(VideoPlan { polls_to_finish: 1, outcome: VideoOutcome::Fail });
    let failed = submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": CANARY})).await).await;
    wait_final(&app, &key, &failed).await;
    assert!(upstream.requests().iter().any(|r| r.body["prompt"] == CANARY), "the prompt did reach the upstream");

    let data = app.stop().await;
    let mut checked = 0;
    for entry in std::fs::read_dir(data.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()), "prompt found in {}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 2, "the database files were read");
}

#[tokio::test]
async fn a_job_survives_a_restart_and_is_billed_once() {
    let upstream = MockUpstream::start().await;
    upstream.set_video_plan(VideoPlan {
        polls_to_finish: 2,
        outcome: VideoOutcome::Complete { content: bytes::Bytes::from_static(CONTENT), seconds: None },
    });
    // The first poll is due a second after submission: the app is stopped before.
    let config = config(&upstream, "1m", "1s");
    let app = spawn_app(&config).await;
    let (user, key) = funded(&app, "alice", "10").await;
    let id = submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": "survive"})).await).await;
    let data = app.stop().await;
    assert_eq!(upstream.video_polls(), 0, "stopped before the first poll");

    let app = spawn_app_in(&config, data).await;
    let job = wait_final(&app, &key, &id).await;
    assert_eq!(job["status"], "completed");
    let content = get(&app, &key, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(content.bytes().await.unwrap().as_ref(), CONTENT);
    assert_eq!(app.store.balance(user.id).await.unwrap(), money("9.6"));
    let ledger = app.store.list_ledger(user.id).await.unwrap();
    assert_eq!(ledger.iter().filter(|e| e.kind == LedgerKind::Charge).count(), 1, "charged once");
    assert_eq!(ledger.iter().filter(|e| e.kind == LedgerKind::Refund).count(), 0);
}

// --- kept content (the generated-media vault)

/// A marker inside the mock's video bytes, searched for in the data directory.
const MARKER: &[u8] = b"VIDEO-MARKER-5d1e2b-plaintext";

fn marked_content() -> bytes::Bytes {
    bytes::Bytes::from([b"\x00\x00\x00\x18ftypmp42 ".as_slice(), MARKER, b" more frames"].concat())
}

/// One channel serving `sora-2`: `extra` adds to the channel (its policy), `privacy` to `[privacy]`.
fn vault_config(upstream: &MockUpstream, extra: &str, privacy: &str) -> String {
    format!(
        r#"
[privacy]
{privacy}

[videos]
poll_interval = "50ms"
max_poll_interval = "50ms"
timeout = "1m"

[[channel]]
name = "video"
type = "openai"
base_url = "{}"
models = ["sora-2"]
{extra}

[[model]]
name = "sora-2"
price = {{ per_second = 0.1 }}
"#,
        upstream.base_url()
    )
}

fn content_calls(upstream: &MockUpstream) -> usize {
    upstream.requests().iter().filter(|r| r.method == "GET" && r.path.ends_with("/content")).count()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_finished_video_is_kept_sealed_and_served_without_asking_the_upstream_again() {
    let upstream = MockUpstream::start().await;
    upstream.set_video_plan(VideoPlan {
        polls_to_finish: 1,
        outcome: VideoOutcome::Complete { content: marked_content(), seconds: None },
    });
    let app = spawn_app(&vault_config(&upstream, r#"operator = "openai""#, r#"media_ttl = "1h""#)).await;
    let (_, key) = funded(&app, "alice", "10").await;
    let id = submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": "kept"})).await).await;
    let job = wait_final(&app, &key, &id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(content_calls(&upstream), 1, "the poller downloaded the video once");
    // `expires_at` is the kept content's expiry: about an hour from now.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expires = job["expires_at"].as_u64().expect("expires_at is set");
    assert!((now + 3500..=now + 3600).contains(&expires), "expires_at {expires}, now {now}");
    assert!(job.get("url").is_none(), "OpenAI's shape: no extra field");

    for _ in 0..2 {
        let content = get(&app, &key, &format!("/v1/videos/{id}/content")).await;
        assert_eq!(content.status(), 200);
        assert_eq!(content.headers()["content-type"], "video/mp4");
        assert_eq!(content.bytes().await.unwrap(), marked_content());
    }
    assert_eq!(content_calls(&upstream), 1, "served from the vault, not the upstream");

    let data = app.stop().await;
    let mut checked = 0;
    for entry in std::fs::read_dir(data.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(!contains(&bytes, MARKER), "video bytes in plaintext in {}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 2, "the database files were read");
}

#[tokio::test]
async fn a_kept_video_is_gone_once_it_expires() {
    let upstream = MockUpstream::start().await;
    upstream.set_video_plan(VideoPlan {
        polls_to_finish: 1,
        outcome: VideoOutcome::Complete { content: marked_content(), seconds: None },
    });
    let app = spawn_app(&vault_config(&upstream, "", r#"media_ttl = "2s""#)).await;
    let (_, key) = funded(&app, "alice", "10").await;
    let id = submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": "brief"})).await).await;
    let job = wait_final(&app, &key, &id).await;
    let expires = job["expires_at"].as_u64().expect("expires_at is set");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    tokio::time::sleep(Duration::from_secs(expires.saturating_sub(now) + 1)).await;
    let content = get(&app, &key, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(error_code(content, 410).await, "media_expired");
    assert_eq!(content_calls(&upstream), 1, "an expired video is not fetched again");
}

#[tokio::test]
async fn a_self_hosted_channels_video_is_not_kept_and_streams_from_the_upstream() {
    let upstream = MockUpstream::start().await;
    upstream.set_video_plan(VideoPlan {
        polls_to_finish: 1,
        outcome: VideoOutcome::Complete { content: marked_content(), seconds: None },
    });
    let app = spawn_app(&vault_config(&upstream, "operator = \"self\"\nretention = \"none\"", "")).await;
    let (_, key) = funded(&app, "alice", "10").await;
    let id = submitted_id(submit(&app, &key, json!({"model": "sora-2", "prompt": "local"})).await).await;
    let job = wait_final(&app, &key, &id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["expires_at"], Value::Null, "nothing kept");
    assert_eq!(content_calls(&upstream), 0, "the poller downloaded nothing");
    let content = get(&app, &key, &format!("/v1/videos/{id}/content")).await;
    assert_eq!(content.status(), 200);
    assert_eq!(content.bytes().await.unwrap(), marked_content());
    assert_eq!(content_calls(&upstream), 1, "streamed from the upstream");
    let data = app.stop().await;
    for entry in std::fs::read_dir(data.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            assert!(!contains(&std::fs::read(&path).unwrap(), MARKER), "nothing kept in {}", path.display());
        }
    }
}
