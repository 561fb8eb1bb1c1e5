//! The PII firewall: personal data replaced by placeholders before a call leaves, and put
//! back in the response — whole bodies, streams split mid-placeholder, tool arguments.

use crate::helpers::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::Duration;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::{TestApp, spawn_app};

const EMAIL: &str = "jane.doe@example.com";
const PHONE: &str = "+44 20 7946 0958";
const CARD: &str = "4111 1111 1111 1111";

async fn pii_app() -> (TestApp, MockUpstream, String) {
    let upstream = MockUpstream::start().await;
    let app =
        spawn_app(&format!("[[group]]\nname = \"default\"\nfirewall = \"pii\"\n{}", one_channel(&upstream))).await;
    let (_, key) = app.user_with_key("pia").await;
    (app, upstream, key)
}

fn personal_message() -> Value {
    json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": format!("The user's phone is {PHONE}.")},
        {"role": "user", "content": [{"type": "text", "text": format!("Email {EMAIL}, card {CARD}.")}]},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "send", "arguments": format!("{{\"to\":\"{EMAIL}\"}}")}}]},
        {"role": "tool", "tool_call_id": "c1", "content": format!("sent to {EMAIL}")}
    ]})
}

async fn streamed_text(response: reqwest::Response) -> (String, String) {
    let mut raw = String::new();
    let mut body = response.bytes_stream();
    while let Some(Ok(chunk)) = body.next().await {
        raw.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let mut content = String::new();
    let mut arguments = String::new();
    for event in raw.split("\n\n") {
        let Some(data) = event.strip_prefix("data: ") else { continue };
        let Ok(chunk) = serde_json::from_str::<Value>(data) else { continue };
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            for call in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
                arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
    }
    (content, arguments)
}

#[tokio::test]
async fn personal_data_never_reaches_the_upstream_and_comes_back_restored() {
    let (app, upstream, key) = pii_app().await;
    upstream.push(Reply::chat("I will write to [EMAIL_1] and call [PHONE_1]."));
    let response = post(&app, "/v1/chat/completions", &key, personal_message()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["veil-data-policy"].to_str().unwrap().ends_with("firewall=pii; redactions=3"));
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], format!("I will write to {EMAIL} and call {PHONE}."));

    let sent = upstream.last_request().unwrap();
    let raw = String::from_utf8_lossy(&sent.raw_body).into_owned();
    for original in [EMAIL, PHONE, CARD, "4111111111111111"] {
        assert!(!raw.contains(original), "{original} reached the upstream: {raw}");
    }
    assert!(raw.contains("[EMAIL_1]") && raw.contains("[PHONE_1]") && raw.contains("[CARD_1]"), "{raw}");
    // Tool arguments stay valid JSON with the placeholder inside.
    let arguments = sent.body["messages"][2]["tool_calls"][0]["function"]["arguments"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(arguments).unwrap()["to"], "[EMAIL_1]");

    let records = stop_and_read_records(app).await;
    assert_eq!(records[0].record.redactions, 3);
}

#[tokio::test]
async fn a_placeholder_split_across_stream_chunks_is_restored() {
    let (app, upstream, key) = pii_app().await;
    upstream
        .push(Reply::stream(vec!["Mail ", "[EMA", "IL_", "1]", " now, card [CARD_1]", "."], Duration::from_millis(5)));
    let mut body = personal_message();
    body["stream"] = json!(true);
    let (content, _) = streamed_text(post(&app, "/v1/chat/completions", &key, body).await).await;
    assert_eq!(content, format!("Mail {EMAIL} now, card {CARD}."));
}

#[tokio::test]
async fn tool_call_arguments_are_restored_whole_and_streamed() {
    let (app, upstream, key) = pii_app().await;
    let whole = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_9", "type": "function",
                "function": {"name": "send", "arguments": "{\"to\":\"[EMAIL_1]\"}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}});
    upstream.push(Reply::raw(200, "application/json", whole.to_string()));
    let reply: Value = post(&app, "/v1/chat/completions", &key, personal_message()).await.json().await.unwrap();
    let arguments = reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(arguments).unwrap()["to"], EMAIL);

    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let events = [
        chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_9", "type": "function",
            "function": {"name": "send", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"to\":\"[EM"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "AIL_1]\"}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        "[DONE]".to_owned(),
    ];
    let raw: Vec<String> = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    upstream.push(Reply::sse(raw.iter().map(String::as_str).collect(), Duration::from_millis(5)));
    let mut body = personal_message();
    body["stream"] = json!(true);
    let (_, arguments) = streamed_text(post(&app, "/v1/chat/completions", &key, body).await).await;
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap()["to"], EMAIL, "{arguments}");
}

#[tokio::test]
async fn the_echo_test_provider_round_trips_through_the_pii_firewall() {
    let app = spawn_app("[[group]]\nname = \"default\"\nfirewall = \"pii\"\n").await;
    let (_, key) = app.user_with_key("eve").await;
    let text = format!("reach me at {EMAIL} or {PHONE}");
    let body = json!({"model": "veil-echo", "stream": true, "messages": [{"role": "user", "content": text}]});
    let (content, _) = streamed_text(post(&app, "/v1/chat/completions", &key, body).await).await;
    assert_eq!(content, format!("Echo: {text}"));
}
