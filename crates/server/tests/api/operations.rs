//! Graceful operations inside one process: `/readyz` turns 503 as soon as shutdown
//! starts while an in-flight stream still finishes, and a configuration reload applies
//! new models, leaves everything as it was when the file is broken, and reports keys
//! that need a restart. (SIGTERM and SIGHUP on the real binary: crates/veil/tests.)

use crate::helpers::*;
use serde_json::json;
use std::time::Duration;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::spawn_app;

#[tokio::test]
async fn readyz_answers_503_once_shutdown_starts_while_an_inflight_stream_finishes() {
    let upstream = MockUpstream::start().await;
    // Connections are still accepted for a while after shutdown starts, so a load
    // balancer can see the 503.
    let app = spawn_app(&format!("[server]\nshutdown_delay = \"3s\"\n{}", one_channel(&upstream))).await;
    let (_, key) = app.user_with_key("alice").await;
    let readyz = app.url("/readyz");
    assert_eq!(reqwest::get(&readyz).await.unwrap().status(), 200);

    upstream.push(Reply::stream(vec!["still ", "here ", "at ", "the ", "end"], Duration::from_millis(200)));
    let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "go"}]});
    let mut response = post(&app, "/v1/chat/completions", &key, body).await;
    assert!(!response.chunk().await.unwrap().unwrap().is_empty());
    let store = std::sync::Arc::clone(&app.store);
    #[allow(clippy::disallowed_methods)] // joined below
    let stopping = tokio::spawn(app.stop());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        // A new client each time: a fresh connection, as a load balancer's probe.
        let status = reqwest::Client::new().get(&readyz).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/readyz still {status} during shutdown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.completed_streams(), 0, "not ready must come before the stream ends");

    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("end") && text.ends_with("data: [DONE]\n\n"), "{text}");
    let _data = stopping.await.unwrap();
    let records = store
        .list_call_records(&veil_store::CallRecordFilter { user_id: None, limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record.status, 200);
}

/// [`one_channel`]'s config file as the app wrote it, with `model-b` added.
fn with_model_b(config: &str) -> String {
    let served = "\"public-name\"]";
    assert!(config.contains(served), "{config}");
    format!("{}\n[[model]]\nname = \"model-b\"\nfree = true\n", config.replace(served, "\"public-name\", \"model-b\"]"))
}

#[tokio::test]
async fn a_reload_applies_new_models_and_a_broken_file_changes_nothing() {
    let (app, _upstream, key) = app_with_upstream().await;
    let path = app.config_path();
    let started = std::fs::read_to_string(&path).unwrap();
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        error_code(post(&app, "/v1/chat/completions", &key, chat("model-b")).await, 404).await,
        "model_not_found"
    );

    std::fs::write(&path, with_model_b(&started)).unwrap();
    let report = app.reload().await.unwrap();
    assert!(report.ignored.is_empty(), "{report:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while post(&app, "/v1/chat/completions", &key, chat("model-b")).await.status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "model-b not served after the reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Broken: model-b left out, and a channel weight of 0. Nothing may be applied.
    let revision = app.store.revision().await.unwrap();
    let broken = started.replace("[[channel]]\n", "[[channel]]\nweight = 0\n");
    assert_ne!(broken, started);
    std::fs::write(&path, broken).unwrap();
    let error = app.reload().await.unwrap_err().to_string();
    assert!(error.contains("channel[0].weight"), "{error}");
    std::fs::write(&path, "[server\nnot toml").unwrap();
    assert!(app.reload().await.is_err());
    assert_eq!(app.store.revision().await.unwrap(), revision, "a broken file wrote to the store");
    assert_eq!(post(&app, "/v1/chat/completions", &key, chat("model-b")).await.status(), 200);

    // A listen address can only change with a restart: reported, the rest applied.
    let moved = with_model_b(&started).replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(&path, moved).unwrap();
    assert_eq!(app.reload().await.unwrap().ignored, vec!["server.listen"]);
}
