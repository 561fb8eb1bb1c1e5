use crate::helpers::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use veil_domain::ErrorCode;
use veil_testkit::mock_upstream::Reply;

fn stream_body(include_usage: bool) -> Value {
    let mut body = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "go"}]});
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn content(events: &[(Instant, String)]) -> String {
    events
        .iter()
        .filter(|(_, data)| data != "[DONE]")
        .filter_map(|(_, data)| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn each_chunk_is_forwarded_as_it_arrives() {
    let (app, upstream, key) = app_with_upstream().await;
    let gap = Duration::from_millis(300);
    upstream.push(Reply::stream(vec!["one ", "two ", "three ", "four"], gap));
    let sent = Instant::now();
    let events = read_events(post(&app, "/v1/chat/completions", &key, stream_body(false)).await).await;
    assert_eq!(content(&events), "one two three four");
    assert_eq!(events.last().unwrap().1, "[DONE]");
    // Chunks arrive spread out as the upstream sent them, not all at once at the end:
    // the first content is here long before the last.
    let first_content = events.iter().find(|(_, d)| d.contains("one")).unwrap().0;
    let last = events.last().unwrap().0;
    assert!(last.duration_since(first_content) >= gap * 2, "the stream was buffered");
    assert!(first_content.duration_since(sent) < last.duration_since(sent));

    let records = stop_and_read_records(app).await;
    let record = &records[0].record;
    assert!(record.stream);
    assert_eq!(record.status, 200);
    assert_eq!(record.error_code, None);
    assert!(record.ttft_ms.unwrap() < record.latency_ms);
    assert!(record.usage.output_tokens > 0 && !record.estimated, "usage not captured: {:?}", record.usage);
}

#[tokio::test]
async fn usage_is_always_requested_but_only_shown_to_clients_that_asked() {
    let (app, upstream, key) = app_with_upstream().await;
    upstream.set_default(Reply::stream(vec!["a ", "b"], Duration::ZERO));

    let hidden = read_events(post(&app, "/v1/chat/completions", &key, stream_body(false)).await).await;
    assert_eq!(upstream.last_request().unwrap().body["stream_options"]["include_usage"], true);
    for (_, data) in hidden.iter().filter(|(_, d)| d != "[DONE]") {
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert!(chunk.get("usage").is_none(), "usage leaked to a client that did not ask: {data}");
        assert!(!chunk["choices"].as_array().unwrap().is_empty());
    }

    let shown = read_events(post(&app, "/v1/chat/completions", &key, stream_body(true)).await).await;
    let usage_chunk: Value = serde_json::from_str(&shown[shown.len() - 2].1).unwrap();
    assert!(usage_chunk["choices"].as_array().unwrap().is_empty());
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let records = stop_and_read_records(app).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| !r.record.estimated && r.record.usage.output_tokens > 0));
}

#[tokio::test]
async fn a_failure_mid_stream_ends_with_an_error_event() {
    let (app, upstream, key) = app_with_upstream().await;
    upstream.push(Reply::stream_then_drop(vec!["partial ", "answer ", "never"], 2));
    let events = read_events(post(&app, "/v1/chat/completions", &key, stream_body(false)).await).await;
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "stream did not end with an error event: {events:?}");
    assert!(!events.iter().any(|(_, d)| d == "[DONE]"));
    assert!(content(&events).starts_with("partial"));

    let records = stop_and_read_records(app).await;
    let record = &records[0].record;
    assert_eq!(record.error_code, Some(ErrorCode::UpstreamError));
    // No usage arrived: it is estimated from what was delivered.
    assert!(record.estimated);
    assert!(record.usage.output_tokens > 0);
    assert!(record.usage.input_tokens > 0);
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_call_and_is_recorded() {
    let (app, upstream, key) = app_with_upstream().await;
    upstream.push(Reply::stream(vec!["slow "; 50], Duration::from_millis(100)));
    let response = post(&app, "/v1/chat/completions", &key, stream_body(false)).await;
    let mut body = response.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(body);
    assert!(upstream.wait_for_disconnects(1, Duration::from_secs(5)).await, "the upstream call was not cancelled");
    assert_eq!(upstream.completed_streams(), 0);

    let records = stop_and_read_records(app).await;
    let record = &records[0].record;
    assert_eq!(record.status, 499);
    assert_eq!(record.error_code, Some(ErrorCode::ClientClosed));
    assert!(record.estimated);
}

#[tokio::test]
async fn graceful_shutdown_lets_an_inflight_stream_finish_and_records_it() {
    let (app, upstream, key) = app_with_upstream().await;
    upstream.push(Reply::stream(vec!["still ", "here ", "at ", "the ", "end"], Duration::from_millis(150)));
    let response = post(&app, "/v1/chat/completions", &key, stream_body(false)).await;
    #[allow(clippy::disallowed_methods)] // joined below
    let reader = tokio::spawn(read_events(response));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let records = stop_and_read_records(app).await;
    let events = reader.await.unwrap();
    assert_eq!(content(&events), "still here at the end");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record.status, 200);
}
