use serde_json::Value;
use std::sync::Arc;
use veil_store::{CallRecordFilter, Store, StoredCallRecord};
use veil_testkit::mock_upstream::MockUpstream;
use veil_testkit::{TestApp, spawn_app};

/// One OpenAI-compatible channel in front of `upstream`, with short timeouts.
pub fn one_channel(upstream: &MockUpstream) -> String {
    format!(
        r#"
[[channel]]
name = "primary"
type = "openai"
base_url = "{}"
models = ["gpt-4o-mini", "text-embedding-3-small", "gpt-3.5-turbo-instruct", "public-name"]
model_mapping = {{ "public-name" = "upstream-name" }}
first_byte_timeout = "1s"
idle_timeout = "1s"
{FREE_MODELS}"#,
        upstream.base_url()
    )
}

/// The models of [`one_channel`], served without charge: tests about relaying need no
/// balance. Billing tests price their models themselves.
pub const FREE_MODELS: &str = r#"
[[model]]
name = "gpt-4o-mini"
free = true

[[model]]
name = "text-embedding-3-small"
free = true

[[model]]
name = "gpt-3.5-turbo-instruct"
free = true

[[model]]
name = "public-name"
free = true
"#;

pub async fn app_with_upstream() -> (TestApp, MockUpstream, String) {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&one_channel(&upstream)).await;
    let (_, key) = app.user_with_key("alice").await;
    (app, upstream, key)
}

pub async fn post(app: &TestApp, path: &str, key: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new().post(app.url(path)).bearer_auth(key).json(&body).send().await.expect("request sent")
}

pub fn chat_body(text: &str) -> Value {
    serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
}

/// Stops the app (flushing records) and returns every call record, newest first.
pub async fn stop_and_read_records(app: TestApp) -> Vec<StoredCallRecord> {
    let store: Arc<dyn Store> = Arc::clone(&app.store);
    let _data = app.stop().await;
    store
        .list_call_records(&CallRecordFilter { user_id: None, limit: 1000, ..Default::default() })
        .await
        .expect("records readable")
}

/// Asserts the OpenAI error shape and returns its code.
pub async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.expect("error body is JSON");
    let error = &body["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {body}");
    assert!(error["type"].is_string(), "no type: {body}");
    error["code"].as_str().expect("error code").to_owned()
}

/// An admin account's API key.
pub async fn admin(app: &TestApp) -> String {
    use veil_domain::{NewUser, Role, UserName};
    let user = app
        .store
        .create_user(NewUser {
            name: UserName::parse("root-admin").unwrap(),
            email: None,
            role: Role::Admin,
            group: "default".parse().unwrap(),
            password_hash: None,
        })
        .await
        .unwrap();
    app.create_key(&user, veil_testkit::KeyOptions::default()).await.0
}

/// Reads an SSE response to its end (or until the connection breaks), returning each
/// `data:` payload with the time it arrived.
pub async fn read_events(response: reqwest::Response) -> Vec<(std::time::Instant, String)> {
    use futures_util::StreamExt;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.trim_end().strip_prefix("data: ") {
                events.push((std::time::Instant::now(), data.to_owned()));
            }
        }
    }
    events
}
