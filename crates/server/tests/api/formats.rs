//! Every client format to every upstream type, through the real app and the scripted
//! mock speaking each vendor's wire format: requests arrive translated, answers and
//! streams come back in the client's format, errors in the client's shape, and call
//! records and usage stay exact whatever the pair.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::{TestApp, spawn_app};

const ANTHROPIC_SECRET: &str = "sk-ant-upstream-secret";
const GEMINI_SECRET: &str = "AIza-upstream-secret";
const BEDROCK_SECRET: &str = "AKIDEXAMPLE:wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY";
const AZURE_SECRET: &str = "azure-upstream-secret";

/// One channel of every upstream type, all in front of `upstream`; every model free.
fn vendor_config(upstream: &MockUpstream) -> String {
    let addr = upstream.addr();
    let mut config = format!(
        r#"
[[channel]]
name = "oa"
type = "openai"
base_url = "http://{addr}/v1"
models = ["gpt-x", "embed-x"]

[[channel]]
name = "claude"
type = "anthropic"
base_url = "http://{addr}"
api_key_env = "VEIL_FORMATS_TEST_UNSET_1"
models = ["claude-x"]
model_mapping = {{ "claude-x" = "claude-sonnet-4-5" }}

[[channel]]
name = "gem"
type = "gemini"
base_url = "http://{addr}"
api_key_env = "VEIL_FORMATS_TEST_UNSET_2"
models = ["gemini-x", "gemini-embed"]
model_mapping = {{ "gemini-x" = "gemini-2.5-flash" }}

[[channel]]
name = "rock"
type = "bedrock"
base_url = "http://{addr}"
api_key_env = "VEIL_FORMATS_TEST_UNSET_3"
models = ["nova-x"]
model_mapping = {{ "nova-x" = "amazon.nova-pro-v1:0" }}

[[channel]]
name = "az"
type = "azure"
base_url = "http://{addr}?api-version=2025-01-01-preview"
api_key_env = "VEIL_FORMATS_TEST_UNSET_4"
models = ["azure-x"]
model_mapping = {{ "azure-x" = "my-deployment" }}
"#
    );
    for model in ["gpt-x", "embed-x", "claude-x", "gemini-x", "gemini-embed", "nova-x", "azure-x"] {
        config.push_str(&format!("\n[[model]]\nname = \"{model}\"\nfree = true\n"));
    }
    config
}

/// The app with every vendor channel's credential stored through the admin API, and a
/// user key.
async fn vendor_app() -> (TestApp, MockUpstream, String) {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&vendor_config(&upstream)).await;
    let admin_key = admin(&app).await;
    for (channel, secret) in
        [("claude", ANTHROPIC_SECRET), ("gem", GEMINI_SECRET), ("rock", BEDROCK_SECRET), ("az", AZURE_SECRET)]
    {
        let stored = reqwest::Client::new()
            .put(app.url(&format!("/api/channels/{channel}/credential")))
            .bearer_auth(&admin_key)
            .json(&json!({"api_key": secret}))
            .send()
            .await
            .unwrap();
        assert_eq!(stored.status(), 200, "{channel}");
    }
    let (_, key) = app.user_with_key("alice").await;
    (app, upstream, key)
}

async fn anthropic_post(app: &TestApp, path: &str, key: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url(path))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn gemini_post(app: &TestApp, path: &str, key: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new().post(app.url(path)).header("x-goog-api-key", key).json(&body).send().await.unwrap()
}

/// A stream's events as `(name, data)`, parsed from the whole body.
async fn sse(response: reqwest::Response) -> Vec<(Option<String>, String)> {
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event: ") {
                name = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("data: ") {
                data.push_str(value);
            }
        }
        events.push((name, data));
    }
    events
}

fn json_of(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|_| panic!("not JSON: {data}"))
}

fn anthropic_request(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 256,
        "system": "Be brief.",
        "stream": stream,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]
    })
}

#[tokio::test]
async fn anthropic_clients_are_served_by_an_openai_upstream() {
    let (app, upstream, key) = vendor_app().await;
    upstream.push(Reply::chat_with_usage("Hello there, friend", 30, 4, 10));
    let response = anthropic_post(&app, "/v1/messages", &key, anthropic_request("gpt-x", false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("veil-data-policy"));
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"][0], json!({"type": "text", "text": "Hello there, friend"}));
    assert_eq!(message["stop_reason"], "end_turn");
    // Anthropic counts cache reads apart from input.
    assert_eq!(message["usage"]["input_tokens"], 20);
    assert_eq!(message["usage"]["cache_read_input_tokens"], 10);
    assert_eq!(message["usage"]["output_tokens"], 4);

    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(sent.body["messages"][1]["role"], "user");
    assert_eq!(sent.body["max_tokens"], 256);

    let records = stop_and_read_records(app).await;
    let record = &records[0].record;
    assert_eq!(record.path, "/v1/messages");
    assert_eq!(record.channel.as_ref().unwrap().as_str(), "oa");
    assert_eq!((record.usage.input_tokens, record.usage.cached_tokens, record.usage.output_tokens), (30, 10, 4));
}

#[tokio::test]
async fn anthropic_streams_are_reencoded_event_by_event() {
    let (app, upstream, key) = vendor_app().await;
    upstream.push(Reply::stream_with_usage(vec!["Hel", "lo", " world"], Duration::from_millis(5), 12, 3, 0));
    let events = sse(anthropic_post(&app, "/v1/messages", &key, anthropic_request("gpt-x", true)).await).await;
    let names: Vec<&str> = events.iter().filter_map(|(name, _)| name.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(names.iter().filter(|n| **n == "content_block_start").count(), 1);
    assert_eq!(names.iter().filter(|n| **n == "content_block_stop").count(), 1);
    for (name, data) in &events {
        assert_eq!(json_of(data)["type"].as_str(), name.as_deref(), "each event's data names its type");
    }
    let text: String = events
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("content_block_delta"))
        .map(|(_, data)| json_of(data)["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Hello world");
    let delta = json_of(&events[events.len() - 2].1);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 3);
    assert_eq!(delta["usage"]["input_tokens"], 12);
    let records = stop_and_read_records(app).await;
    assert_eq!(records[0].record.path, "/v1/messages");
    assert!(records[0].record.stream);
    assert_eq!(records[0].record.usage.output_tokens, 3);
}

#[tokio::test]
async fn openai_clients_are_served_by_an_anthropic_upstream() {
    let (app, upstream, key) = vendor_app().await;
    upstream.push(Reply::chat_with_usage("Bonjour", 50, 2, 20));
    let body = json!({"model": "claude-x", "messages": [
        {"role": "system", "content": "You translate."},
        {"role": "user", "content": "Hello"}
    ], "user": "end-user-7"});
    let response = post(&app, "/v1/chat/completions", &key, body).await;
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert_eq!(reply["usage"]["prompt_tokens"], 50);
    assert_eq!(reply["usage"]["prompt_tokens_details"]["cached_tokens"], 20);

    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(ANTHROPIC_SECRET));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent.header("authorization"), None);
    assert_eq!(sent.body["model"], "claude-sonnet-4-5");
    assert_eq!(sent.body["system"], "You translate.");
    assert_eq!(sent.body["messages"], json!([{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]));
    assert!(sent.body["max_tokens"].as_u64().is_some_and(|m| m > 0), "Anthropic requires max_tokens");
    // The identity firewall's pseudonym, never the client's own end-user id.
    let user_id = sent.body["metadata"]["user_id"].as_str().unwrap_or_default();
    assert!(!user_id.contains("end-user-7"), "{user_id}");

    let records = stop_and_read_records(app).await;
    let usage = records[0].record.usage;
    assert_eq!((usage.input_tokens, usage.cached_tokens, usage.output_tokens), (50, 20, 2));
}

#[tokio::test]
async fn openai_streams_come_from_gemini_and_bedrock_upstreams() {
    let (app, upstream, key) = vendor_app().await;
    for model in ["gemini-x", "nova-x"] {
        upstream.push(Reply::stream_with_usage(vec!["One", " two", " three"], Duration::from_millis(5), 9, 3, 0));
        let body = json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "count"}]});
        let events = sse(post(&app, "/v1/chat/completions", &key, body).await).await;
        assert_eq!(events.last().unwrap().1, "[DONE]", "{model}");
        let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, data)| json_of(data)).collect();
        let text: String =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<String>();
        assert_eq!(text, "One two three", "{model}");
        assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"), "{model}");
        // The client did not ask for usage: it is not shown, but it was settled.
        assert!(chunks.iter().all(|c| c.get("usage").is_none_or(Value::is_null)), "{model}");
    }
    let requests = upstream.requests();
    let gemini = &requests[0];
    assert_eq!(gemini.path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent");
    assert_eq!(gemini.query.as_deref(), Some("alt=sse"));
    assert_eq!(gemini.header("x-goog-api-key"), Some(GEMINI_SECRET));
    assert_eq!(gemini.body["contents"][0]["parts"][0]["text"], "count");
    let bedrock = &requests[1];
    assert!(bedrock.path.starts_with("/model/amazon.nova-pro-v1") && bedrock.path.ends_with("/converse-stream"));
    let authorization = bedrock.header("authorization").unwrap();
    assert!(authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{authorization}");
    assert!(authorization.contains("/bedrock/aws4_request"), "{authorization}");
    assert!(bedrock.header("x-amz-date").is_some());
    assert_eq!(bedrock.body["messages"][0]["content"][0]["text"], "count");

    let records = stop_and_read_records(app).await;
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!((record.record.usage.input_tokens, record.record.usage.output_tokens), (9, 3));
        assert!(!record.record.estimated);
    }
}

#[tokio::test]
async fn azure_channels_call_their_deployment_with_an_api_key() {
    let (app, upstream, key) = vendor_app().await;
    let response = post(
        &app,
        "/v1/chat/completions",
        &key,
        json!({"model": "azure-x", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, "/openai/deployments/my-deployment/chat/completions");
    assert_eq!(sent.query.as_deref(), Some("api-version=2025-01-01-preview"));
    assert_eq!(sent.header("api-key"), Some(AZURE_SECRET));
    assert_eq!(sent.header("authorization"), None);
}

#[tokio::test]
async fn tool_calls_cross_formats_both_ways() {
    let (app, upstream, key) = vendor_app().await;
    // OpenAI client, Anthropic upstream.
    upstream.push(Reply::tool_call("get_weather", r#"{"city":"Paris"}"#));
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body = json!({"model": "claude-x", "tools": tools, "messages": [{"role": "user", "content": "Weather?"}]});
    let reply: Value = post(&app, "/v1/chat/completions", &key, body).await.json().await.unwrap();
    let call = &reply["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(json_of(call["function"]["arguments"].as_str().unwrap()), json!({"city": "Paris"}));
    assert_eq!(reply["choices"][0]["finish_reason"], "tool_calls");
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.body["tools"][0]["name"], "get_weather");
    assert_eq!(sent.body["tools"][0]["input_schema"]["type"], "object");

    // The tool result goes back in Anthropic's shape.
    let id = call["id"].as_str().unwrap();
    let body = json!({"model": "claude-x", "tools": tools, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "sunny"}
    ]});
    assert_eq!(post(&app, "/v1/chat/completions", &key, body).await.status(), 200);
    let sent = upstream.last_request().unwrap();
    let messages = sent.body["messages"].as_array().unwrap();
    assert_eq!(messages[1]["content"][0]["type"], "tool_use");
    assert_eq!(messages[1]["content"][0]["input"], json!({"city": "Paris"}));
    assert_eq!(messages[2]["content"][0]["type"], "tool_result");
    assert_eq!(messages[2]["content"][0]["content"], "sunny");

    // Anthropic client, OpenAI upstream, streamed: a tool_use block with JSON deltas.
    upstream.push(Reply::tool_call("get_weather", r#"{"city":"Oslo","unit":"c"}"#));
    let body = json!({"model": "gpt-x", "max_tokens": 100, "stream": true,
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Weather?"}]});
    let events = sse(anthropic_post(&app, "/v1/messages", &key, body).await).await;
    let start = events.iter().find(|(name, _)| name.as_deref() == Some("content_block_start")).unwrap();
    assert_eq!(json_of(&start.1)["content_block"]["type"], "tool_use");
    assert_eq!(json_of(&start.1)["content_block"]["name"], "get_weather");
    let arguments: String = events
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("content_block_delta"))
        .map(|(_, data)| json_of(data)["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(json_of(&arguments), json!({"city": "Oslo", "unit": "c"}));
    let delta = events.iter().find(|(name, _)| name.as_deref() == Some("message_delta")).unwrap();
    assert_eq!(json_of(&delta.1)["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn gemini_clients_stream_as_sse_or_as_a_json_array() {
    let (app, upstream, key) = vendor_app().await;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
        "systemInstruction": {"parts": [{"text": "Be kind."}]}});

    upstream.push(Reply::chat_with_usage("Hello from Claude", 7, 3, 0));
    let response = gemini_post(&app, "/v1beta/models/claude-x:generateContent", &key, body.clone()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["candidates"][0]["content"]["parts"][0]["text"], "Hello from Claude");
    assert_eq!(answer["candidates"][0]["finishReason"], "STOP");
    assert_eq!(answer["usageMetadata"]["promptTokenCount"], 7);
    assert_eq!(answer["usageMetadata"]["candidatesTokenCount"], 3);
    assert_eq!(upstream.last_request().unwrap().body["system"], "Be kind.");

    // Google's SDKs default to API version `v1`, whose paths share OpenAI's `/v1/models`.
    upstream.push(Reply::chat("Hello again"));
    let response = gemini_post(&app, "/v1/models/claude-x:generateContent", &key, body.clone()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["candidates"][0]["content"]["parts"][0]["text"], "Hello again");
    let unknown = gemini_post(&app, "/v1/models/no-such-model:generateContent", &key, body.clone()).await;
    assert_gemini_error(unknown, 404, "NOT_FOUND").await;

    // `?key=` works as Google's REST API allows, and `alt=sse` gives server-sent events.
    upstream.push(Reply::stream(vec!["a", "b", "c"], Duration::from_millis(5)));
    let url = app.url(&format!("/v1beta/models/claude-x:streamGenerateContent?alt=sse&key={key}"));
    let events = sse(reqwest::Client::new().post(url).json(&body).send().await.unwrap()).await;
    let chunks: Vec<Value> = events.iter().map(|(_, data)| json_of(data)).collect();
    let text: String =
        chunks.iter().filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str()).collect();
    assert_eq!(text, "abc");
    assert_eq!(chunks.last().unwrap()["candidates"][0]["finishReason"], "STOP");

    // Without `alt=sse`: one JSON array, streamed element by element.
    upstream.push(Reply::stream(vec!["x", "y"], Duration::from_millis(5)));
    let response = gemini_post(&app, "/v1beta/models/gpt-x:streamGenerateContent", &key, body).await;
    assert_eq!(response.status(), 200);
    let array: Value = response.json().await.unwrap();
    let text: String = array
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "xy");

    let records = stop_and_read_records(app).await;
    let paths: Vec<&str> = records.iter().map(|r| r.record.path).collect();
    assert!(paths.contains(&"/v1beta/models/{model}:generateContent"), "{paths:?}");
    assert!(paths.contains(&"/v1beta/models/{model}:streamGenerateContent"), "{paths:?}");
}

#[tokio::test]
async fn responses_clients_are_served_by_a_gemini_upstream() {
    let (app, upstream, key) = vendor_app().await;
    upstream.push(Reply::chat_with_usage("It is 42.", 11, 4, 0));
    let body = json!({"model": "gemini-x", "instructions": "Answer.", "input": "What is the answer?"});
    let response = post(&app, "/v1/responses", &key, body.clone()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["store"], false);
    let message = answer["output"].as_array().unwrap().iter().find(|item| item["type"] == "message").unwrap();
    assert_eq!(message["content"][0]["text"], "It is 42.");
    assert_eq!(answer["usage"]["input_tokens"], 11);
    assert_eq!(answer["usage"]["output_tokens"], 4);
    assert_eq!(upstream.last_request().unwrap().body["systemInstruction"]["parts"][0]["text"], "Answer.");

    upstream.push(Reply::stream(vec!["4", "2"], Duration::from_millis(5)));
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let events = sse(post(&app, "/v1/responses", &key, streamed).await).await;
    let names: Vec<&str> = events.iter().filter_map(|(name, _)| name.as_deref()).collect();
    assert_eq!(names.first(), Some(&"response.created"));
    assert_eq!(names.last(), Some(&"response.completed"));
    let sequence: Vec<u64> =
        events.iter().map(|(_, data)| json_of(data)["sequence_number"].as_u64().unwrap()).collect();
    assert!(sequence.windows(2).all(|w| w[1] == w[0] + 1), "{sequence:?}");
    let text: String = events
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("response.output_text.delta"))
        .map(|(_, data)| json_of(data)["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "42");

    // Veil stores no conversation to continue.
    let refused = post(
        &app,
        "/v1/responses",
        &key,
        json!({"model": "gemini-x", "input": "go on", "previous_response_id": "resp_1"}),
    )
    .await;
    assert_eq!(error_code(refused, 400).await, "invalid_request_error");
}

#[tokio::test]
async fn each_format_answers_errors_in_its_own_shape() {
    let (app, upstream, key) = vendor_app().await;
    let client = reqwest::Client::new();

    // Anthropic: malformed JSON, no key, a bad key, an unknown model, a missing field.
    let malformed = client
        .post(app.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_anthropic_error(malformed, 400, "invalid_request_error").await;
    let anonymous = client.post(app.url("/v1/messages")).json(&anthropic_request("gpt-x", false)).send().await.unwrap();
    assert_anthropic_error(anonymous, 401, "authentication_error").await;
    let unknown = anthropic_post(&app, "/v1/messages", &key, anthropic_request("no-such-model", false)).await;
    assert_anthropic_error(unknown, 404, "not_found_error").await;
    let mut missing = anthropic_request("gpt-x", false);
    missing.as_object_mut().unwrap().remove("max_tokens");
    assert_anthropic_error(anthropic_post(&app, "/v1/messages", &key, missing).await, 400, "invalid_request_error")
        .await;

    // Gemini: a bad key and malformed JSON.
    let bad_key = gemini_post(&app, "/v1beta/models/gpt-x:generateContent", "sk-veil-nope", json!({})).await;
    assert_gemini_error(bad_key, 401, "UNAUTHENTICATED").await;
    let malformed = client
        .post(app.url("/v1beta/models/gpt-x:generateContent"))
        .header("x-goog-api-key", &key)
        .body("[not json")
        .send()
        .await
        .unwrap();
    assert_gemini_error(malformed, 400, "INVALID_ARGUMENT").await;
    let no_contents = gemini_post(&app, "/v1beta/models/gpt-x:generateContent", &key, json!({})).await;
    assert_gemini_error(no_contents, 400, "INVALID_ARGUMENT").await;

    // An upstream refusal keeps the client's shape too.
    upstream.push(Reply::openai_error(429, "slow down", "rate_limit_exceeded"));
    let limited = anthropic_post(&app, "/v1/messages", &key, anthropic_request("gpt-x", false)).await;
    assert_anthropic_error(limited, 429, "rate_limit_error").await;

    // Legacy completions cannot go to an Anthropic channel: a clear client error.
    let completion = post(&app, "/v1/completions", &key, json!({"model": "claude-x", "prompt": "hi"})).await;
    assert_eq!(error_code(completion, 400).await, "invalid_request_error");
}

async fn assert_anthropic_error(response: reqwest::Response, status: u16, kind: &str) {
    assert_eq!(response.status().as_u16(), status);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

async fn assert_gemini_error(response: reqwest::Response, status: u16, name: &str) {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], status, "{body}");
    assert_eq!(body["error"]["status"], name, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn failures_mid_stream_end_with_the_client_formats_error_event() {
    let (app, upstream, key) = vendor_app().await;
    // Anthropic upstream overloaded mid-stream, OpenAI client.
    upstream.push(Reply::anthropic_overloaded_midstream(vec!["partial", " answer"]));
    let body = json!({"model": "claude-x", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let events = sse(post(&app, "/v1/chat/completions", &key, body).await).await;
    let last = json_of(&events.last().unwrap().1);
    assert_eq!(last["error"]["code"], "upstream_error", "{last}");
    assert!(events.iter().all(|(_, data)| data != "[DONE]"));

    // OpenAI upstream cut mid-stream, Anthropic client.
    upstream.push(Reply::stream_then_drop(vec!["a", "b", "c", "d"], 2));
    let events = sse(anthropic_post(&app, "/v1/messages", &key, anthropic_request("gpt-x", true)).await).await;
    let (name, data) = events.last().unwrap();
    assert_eq!(name.as_deref(), Some("error"));
    assert_eq!(json_of(data)["type"], "error");
    assert!(events.iter().all(|(name, _)| name.as_deref() != Some("message_stop")));

    let records = stop_and_read_records(app).await;
    assert!(records.iter().all(|r| r.record.error_code == Some(veil_domain::ErrorCode::UpstreamError)));
}

#[tokio::test]
async fn models_are_listed_in_the_callers_format_and_tokens_counted_locally() {
    let (app, _upstream, key) = vendor_app().await;
    let client = reqwest::Client::new();
    let openai: Value = client.get(app.url("/v1/models")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(openai["object"], "list");
    let anthropic: Value = client
        .get(app.url("/v1/models"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anthropic["has_more"], false);
    assert!(anthropic["data"].as_array().unwrap().iter().any(|m| m["type"] == "model" && m["id"] == "claude-x"));
    let gemini: Value = client
        .get(app.url("/v1beta/models"))
        .header("x-goog-api-key", &key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(gemini["models"].as_array().unwrap().iter().any(|m| m["name"] == "models/gemini-x"));
    let one: Value = client.get(app.url(&format!("/v1/models?key={key}"))).send().await.unwrap().json().await.unwrap();
    assert!(one["models"].is_array(), "a Gemini-style key gets Gemini's list: {one}");

    let count = anthropic_post(
        &app,
        "/v1/messages/count_tokens",
        &key,
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "one two three four"}]}),
    )
    .await;
    assert_eq!(count.status(), 200);
    let short = count.json::<Value>().await.unwrap()["input_tokens"].as_u64().unwrap();
    let count = anthropic_post(
        &app,
        "/v1/messages/count_tokens",
        &key,
        json!({"model": "claude-x", "messages": [{"role": "user", "content": "one two three four ".repeat(50)}]}),
    )
    .await;
    let long = count.json::<Value>().await.unwrap()["input_tokens"].as_u64().unwrap();
    assert!(short > 0 && long > short * 10, "{short} {long}");
    let gemini = gemini_post(
        &app,
        "/v1beta/models/gemini-x:countTokens",
        &key,
        json!({"contents": [{"parts": [{"text": "one two three four"}]}]}),
    )
    .await;
    assert_eq!(gemini.json::<Value>().await.unwrap()["totalTokens"].as_u64(), Some(short));
}

#[tokio::test]
async fn embeddings_go_to_gemini_upstreams_in_openais_shape() {
    let (app, upstream, key) = vendor_app().await;
    let body = json!({"model": "gemini-embed", "input": ["first text", "second"], "dimensions": 8});
    let response = post(&app, "/v1/embeddings", &key, body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "list");
    let data = answer["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, "/v1beta/models/gemini-embed:batchEmbedContents");
    assert_eq!(sent.body["requests"][1]["content"]["parts"][0]["text"], "second");
    assert_eq!(sent.body["requests"][0]["model"], "models/gemini-embed");
    assert_eq!(sent.body["requests"][0]["outputDimensionality"], 8);

    let base64 =
        post(&app, "/v1/embeddings", &key, json!({"model": "gemini-embed", "input": "x", "encoding_format": "base64"}))
            .await;
    let answer: Value = base64.json().await.unwrap();
    // 16 little-endian f32s, base64-encoded.
    assert_eq!(answer["data"][0]["embedding"].as_str().unwrap().len(), 88);

    let records = stop_and_read_records(app).await;
    assert!(records.iter().all(|r| r.record.path == "/v1/embeddings" && r.record.status == 200));
    assert!(records.iter().all(|r| r.record.estimated && r.record.usage.input_tokens > 0), "counted locally");
}

#[tokio::test]
async fn vendor_error_bodies_reach_the_client_with_their_message_and_status() {
    let (app, upstream, key) = vendor_app().await;
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let cases = [
        (
            "claude-x",
            Reply::anthropic_error(400, "invalid_request_error", "max_tokens: too large for this model"),
            400,
            "max_tokens: too large for this model",
        ),
        (
            "gemini-x",
            Reply::gemini_error(400, "INVALID_ARGUMENT", "Invalid value at 'contents[0]'"),
            400,
            "Invalid value at 'contents[0]'",
        ),
        (
            "nova-x",
            Reply::bedrock_error(400, "ValidationException", "The model is not ready"),
            400,
            "The model is not ready",
        ),
    ];
    for (model, reply, status, message) in cases {
        upstream.push(reply);
        let response = post(&app, "/v1/chat/completions", &key, chat(model)).await;
        assert_eq!(response.status().as_u16(), status, "{model}");
        let body: Value = response.json().await.unwrap();
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{model}: {text}");
        assert!(!text.contains(ANTHROPIC_SECRET), "{text}");
    }

    // Anthropic's retry signal survives the translation: 429 with retry-after.
    upstream.push(Reply::error_with_retry_after(
        429,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}),
        7,
    ));
    let limited = post(&app, "/v1/chat/completions", &key, chat("claude-x")).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "7");

    // Last, and on a channel not used above: a rejected credential disables the channel
    // (and the 429 above cools `claude` for its retry-after). 502 naming the credential,
    // never the upstream's own message.
    upstream.push(Reply::gemini_error(401, "UNAUTHENTICATED", "invalid x-goog-api-key"));
    let rejected = post(&app, "/v1/chat/completions", &key, chat("gemini-x")).await;
    assert_eq!(rejected.status(), 502);
    let body: Value = rejected.json().await.unwrap();
    let text = body["error"]["message"].as_str().unwrap();
    assert!(text.contains("credential") && !text.contains("invalid x-goog-api-key"), "{text}");
}
