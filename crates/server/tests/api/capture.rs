//! Debug capture: opt-in per key, at most 24 h, sealed at rest, readable by the owner
//! alone, audited.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use veil_testkit::mock_upstream::Reply;

#[tokio::test]
async fn an_owner_captures_their_own_calls_sealed_and_reads_them_back() {
    let (app, upstream, key) = app_with_upstream().await;
    let (_, other_key) = app.user_with_key("mallory").await;
    let client = reqwest::Client::new();
    let keys = app.store.list_keys(None).await.unwrap();
    let alice_key = keys.iter().find(|k| key.starts_with(&k.prefix)).unwrap().id;
    let capture_url = app.url(&format!("/api/me/keys/{alice_key}/capture"));

    // Bounds and ownership.
    let too_long = client.put(&capture_url).bearer_auth(&key).json(&json!({"hours": 25})).send().await.unwrap();
    assert_eq!(error_code(too_long, 400).await, "invalid_request_error");
    let not_theirs = client.put(&capture_url).bearer_auth(&other_key).json(&json!({"hours": 1})).send().await.unwrap();
    assert_eq!(error_code(not_theirs, 404).await, "not_found");

    let enabled: Value = client
        .put(&capture_url)
        .bearer_auth(&key)
        .json(&json!({"hours": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(enabled["capture_until"].is_string());

    let canary = "CAPTURED-CANARY-7731";
    upstream.push(Reply::chat(&format!("reply {canary}")));
    assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body(&format!("ask {canary}"))).await.status(), 200);
    upstream.push(Reply::stream(vec!["streamed ", "answer"], Duration::from_millis(5)));
    let mut streamed = chat_body("stream please");
    streamed["stream"] = json!(true);
    post(&app, "/v1/chat/completions", &key, streamed).await.text().await.unwrap();
    // Another user's calls are not captured for anyone.
    post(&app, "/v1/chat/completions", &other_key, chat_body("not captured")).await.text().await.unwrap();

    let mut captures = Value::Null;
    for _ in 0..50 {
        captures =
            client.get(app.url("/api/me/captures")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
        if captures["data"].as_array().is_some_and(|d| d.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let data = captures["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{captures}");
    let text = captures.to_string();
    assert!(text.contains(&format!("ask {canary}")) && text.contains(&format!("reply {canary}")), "{text}");
    assert!(text.contains("streamed ") && text.contains("answer"));
    assert!(!text.contains("not captured"));
    let others: Value =
        client.get(app.url("/api/me/captures")).bearer_auth(&other_key).send().await.unwrap().json().await.unwrap();
    assert_eq!(others["data"].as_array().unwrap().len(), 0);

    // Sealed at rest: the canary is nowhere in the data directory.
    for entry in std::fs::read_dir(app.data_dir.path()).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "plaintext capture in {:?}",
            entry.path()
        );
    }

    // Off again: later calls are not captured.
    let off: Value = client.delete(&capture_url).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert!(off["capture_until"].is_null());
    post(&app, "/v1/chat/completions", &key, chat_body("after")).await.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Value =
        client.get(app.url("/api/me/captures")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(after["data"].as_array().unwrap().len(), 2);

    let audit = app.store.list_audit(None, 100).await.unwrap();
    for action in ["capture.enable", "capture.read", "capture.disable"] {
        assert!(audit.iter().any(|a| a.action == action), "{action} not audited");
    }
}
