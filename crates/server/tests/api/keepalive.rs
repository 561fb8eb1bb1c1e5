//! Keep-alives toward the client: a relayed stream the upstream leaves silent longer than
//! `[server] stream_keepalive` carries SSE comments (whitespace in Gemini's JSON-array
//! framing) between its events, and every client format still parses the stream as its
//! vendor's SDK would, with the call accounted as usual.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::{TestApp, spawn_app};

/// The upstream pauses four keep-alive intervals before each piece.
const KEEPALIVE: &str = "100ms";
const GAP: Duration = Duration::from_millis(400);

async fn app_with_keepalive() -> (TestApp, MockUpstream, String) {
    let upstream = MockUpstream::start().await;
    let config = format!("[server]\nstream_keepalive = \"{KEEPALIVE}\"\n{}", one_channel(&upstream));
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("alice").await;
    (app, upstream, key)
}

/// Server-sent events as the WHATWG parser (and so every vendor SDK) sees them:
/// comment lines are skipped, `event:` names and `data:` lines are kept.
fn parse_sse(text: &str) -> Vec<(Option<String>, String)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut name = None;
        let mut data: Option<String> = None;
        for line in block.lines().filter(|line| !line.starts_with(':')) {
            if let Some(value) = line.strip_prefix("event:") {
                name = Some(value.trim_start().to_owned());
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                data = Some(match data {
                    Some(before) => format!("{before}\n{value}"),
                    None => value.to_owned(),
                });
            }
        }
        if let Some(data) = data {
            events.push((name, data));
        }
    }
    events
}

/// The byte offset of `needle` in `text`, which must contain it.
fn at(text: &str, needle: &str) -> usize {
    text.find(needle).unwrap_or_else(|| panic!("{needle:?} is missing from {text:?}"))
}

#[tokio::test]
async fn a_silent_openai_stream_gets_keepalive_comments_between_its_chunks() {
    let (app, upstream, key) = app_with_keepalive().await;
    upstream.push(Reply::stream(vec!["first ", "second"], GAP));
    let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "go"}]});
    let response = post(&app, "/v1/chat/completions", &key, body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();

    let (first, second) = (at(&text, "first "), at(&text, "second"));
    assert!(text[first..second].contains("\n\n: keep-alive\n\n"), "no keep-alive between the chunks: {text:?}");

    let events = parse_sse(&text);
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let content: String = events
        .iter()
        .filter(|(_, data)| data != "[DONE]")
        .map(|(_, data)| serde_json::from_str::<Value>(data).unwrap())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "first second");

    // The keep-alives are transport: the upstream's own idle timeout (1 s, longer than
    // the gaps) did not fire, and usage came from the upstream as usual.
    let records = stop_and_read_records(app).await;
    let record = &records[0].record;
    assert_eq!((record.status, record.error_code), (200, None));
    assert!(!record.estimated && record.usage.output_tokens > 0, "{:?}", record.usage);
}

#[tokio::test]
async fn anthropic_and_gemini_sse_clients_get_comments_and_the_json_array_gets_whitespace() {
    let (app, upstream, key) = app_with_keepalive().await;

    upstream.push(Reply::stream(vec!["first ", "second"], GAP));
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "go"}]});
    let response = reqwest::Client::new()
        .post(app.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text[at(&text, "first ")..at(&text, "second")].contains(": keep-alive\n\n"), "{text:?}");
    let events = parse_sse(&text);
    let content: String = events
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("content_block_delta"))
        .filter_map(|(_, data)| serde_json::from_str::<Value>(data).ok())
        .filter_map(|event| event["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "first second");
    assert_eq!(events.last().unwrap().0.as_deref(), Some("message_stop"));

    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "go"}]}]});
    upstream.push(Reply::stream(vec!["first ", "second"], GAP));
    let url = app.url("/v1beta/models/gpt-4o-mini:streamGenerateContent?alt=sse");
    let response = reqwest::Client::new().post(url).header("x-goog-api-key", &key).json(&gemini).send().await.unwrap();
    let text = response.text().await.unwrap();
    assert!(text[at(&text, "first ")..at(&text, "second")].contains(": keep-alive\n\n"), "{text:?}");
    let content: String = parse_sse(&text)
        .iter()
        .map(|(_, data)| serde_json::from_str::<Value>(data).unwrap())
        .filter_map(|chunk| chunk["candidates"][0]["content"]["parts"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(content, "first second");

    // Without `alt=sse` the stream is one JSON array: no comment syntax, so the silence
    // is filled with whitespace between elements, and the whole body is still JSON.
    upstream.push(Reply::stream(vec!["first ", "second"], GAP));
    let url = app.url("/v1beta/models/gpt-4o-mini:streamGenerateContent");
    let response = reqwest::Client::new().post(url).header("x-goog-api-key", &key).json(&gemini).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    assert!(text.starts_with('['), "the array must open first: {text:?}");
    assert!(!text.contains(": keep-alive"));
    // Elements are separated by ",\r\n"; a bare "}\n" is a keep-alive.
    assert!(text[at(&text, "first ")..at(&text, "second")].contains("}\n"), "{text:?}");
    let array: Value = serde_json::from_str(&text).unwrap();
    let content: String = array
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|chunk| chunk["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(content, "first second");
}
