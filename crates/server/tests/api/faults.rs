//! Fault injection: each way an upstream can fail, streaming and not, against a relay with
//! a faulty first channel and a healthy second one. For every fault the suite checks what
//! the client receives, whether the call failed over (only while nothing had reached the
//! client), that the money settled exactly (the served call charged, a failed call free,
//! a half-delivered stream charged its estimate) and that a call record lists the channels
//! tried.

use crate::helpers::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use veil_domain::{ErrorCode, Money, User};
use veil_store::{CallRecordFilter, Store};
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::{TestApp, spawn_app};

/// What the healthy channel reports: 1,000 prompt and 500 completion tokens, which cost
/// 0.002 at the prices below.
const PROMPT: u64 = 1_000;
const COMPLETION: u64 = 500;
const SERVED_COST: &str = "0.002";
const CREDIT: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Nothing listens on the channel's port.
    RefusesConnections,
    /// The request is accepted and never answered.
    HangsBeforeFirstByte,
    /// A stream that starts, delivers two chunks and breaks the connection.
    DiesMidStream,
    ServerError,
    RateLimitedWithRetryAfter,
    /// A 200 whose JSON body (or whose first stream event) does not parse.
    MalformedAnswer,
    /// A stream whose framing breaks after content was delivered.
    BrokenStreamAfterContent,
    /// The upstream rejects the channel's credential.
    RejectsCredential,
}

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    /// The healthy channel answers; the client sees a normal answer.
    FailsOver,
    /// Content reached the client, so no failover: the stream ends with an error event.
    ErrorEvent,
    /// Nothing was delivered and no failover is allowed: an OpenAI error with this status.
    Error(u16),
}

fn expected(fault: Fault, stream: bool) -> Expected {
    match fault {
        Fault::RefusesConnections
        | Fault::HangsBeforeFirstByte
        | Fault::ServerError
        | Fault::RateLimitedWithRetryAfter
        | Fault::RejectsCredential => Expected::FailsOver,
        // The first event is read before anything is sent to the client, so a stream whose
        // very first event is broken can still move on; a whole body cannot (the upstream
        // did the work, and whether it would again is unknown).
        Fault::MalformedAnswer if stream => Expected::FailsOver,
        Fault::MalformedAnswer => Expected::Error(502),
        Fault::DiesMidStream | Fault::BrokenStreamAfterContent => Expected::ErrorEvent,
    }
}

fn faulty_reply(fault: Fault, stream: bool) -> Reply {
    match fault {
        Fault::RefusesConnections => Reply::chat("unreachable"),
        Fault::HangsBeforeFirstByte => Reply::hang(),
        Fault::DiesMidStream => Reply::stream_then_drop(vec!["partial ", "answer ", "never"], 2),
        Fault::ServerError => Reply::openai_error(500, "internal failure", "server_error"),
        Fault::RateLimitedWithRetryAfter => Reply::error_with_retry_after(
            429,
            json!({"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}),
            7,
        ),
        Fault::MalformedAnswer if stream => Reply::sse(vec!["data: {\"choices\": [oops\n\n"], Duration::ZERO),
        Fault::MalformedAnswer => Reply::raw(200, "application/json", "{\"choices\": [oops"),
        Fault::BrokenStreamAfterContent => Reply::sse(
            vec![
                "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"paid\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"partial \"},\"finish_reason\":null}]}\n\n",
                "data: {\"id\":\"c1\",\"choices\": [broken\n\n",
            ],
            Duration::from_millis(10),
        ),
        Fault::RejectsCredential => Reply::openai_error(401, "Incorrect API key provided: sk-****", "invalid_api_key"),
    }
}

fn healthy_reply(stream: bool) -> Reply {
    if stream {
        Reply::stream_with_usage(vec!["all ", "good"], Duration::from_millis(5), PROMPT, COMPLETION, 0)
    } else {
        Reply::chat_with_usage("all good", PROMPT, COMPLETION, 0)
    }
}

fn config(faulty_base_url: &str, healthy: &MockUpstream) -> String {
    format!(
        r#"
[[channel]]
name = "faulty"
type = "openai"
base_url = "{faulty_base_url}"
models = ["paid"]
priority = 10
connect_timeout = "1s"
first_byte_timeout = "400ms"
idle_timeout = "1s"

[[channel]]
name = "healthy"
type = "openai"
base_url = "{}"
models = ["paid"]
priority = 1

[[model]]
name = "paid"
price = {{ input = 1, cached_input = 0.5, output = 2 }}
"#,
        healthy.base_url()
    )
}

fn closed_port_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}/v1")
}

struct Scene {
    app: TestApp,
    faulty: MockUpstream,
    healthy: MockUpstream,
    user: User,
    key: String,
}

async fn scene(fault: Fault, stream: bool) -> Scene {
    let faulty = MockUpstream::start().await;
    faulty.set_default(faulty_reply(fault, stream));
    let healthy = MockUpstream::start().await;
    healthy.set_default(healthy_reply(stream));
    let faulty_url = if fault == Fault::RefusesConnections { closed_port_url() } else { faulty.base_url() };
    let app = spawn_app(&config(&faulty_url, &healthy)).await;
    let (user, key) = app.user_with_key("victim").await;
    app.credit(&user, CREDIT).await;
    Scene { app, faulty, healthy, user, key }
}

fn request(stream: bool, canary: &str) -> Value {
    json!({
        "model": "paid",
        "stream": stream,
        "max_tokens": 600,
        "messages": [{"role": "user", "content": canary}],
    })
}

/// What the client got: the status, and for a stream the `data:` payloads.
struct Received {
    status: u16,
    body: Option<Value>,
    events: Vec<String>,
}

async fn send(scene: &Scene, stream: bool) -> Received {
    let response = post(&scene.app, "/v1/chat/completions", &scene.key, request(stream, "fault canary")).await;
    let status = response.status().as_u16();
    assert!(response.headers().contains_key("x-request-id"));
    let is_stream = response.headers().get("content-type").is_some_and(|v| v == "text/event-stream");
    if !is_stream {
        return Received { status, body: Some(response.json().await.expect("JSON body")), events: Vec::new() };
    }
    let events = read_events(response).await.into_iter().map(|(_, data)| data).collect();
    Received { status, body: None, events }
}

fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

async fn check(fault: Fault, stream: bool) {
    let context = format!("{fault:?}, stream: {stream}");
    let scene = scene(fault, stream).await;
    let received = send(&scene, stream).await;
    let expectation = expected(fault, stream);

    // What the client receives.
    match expectation {
        Expected::FailsOver => {
            assert_eq!(received.status, 200, "{context}");
            if stream {
                assert_eq!(streamed_text(&received.events), "all good", "{context}");
                assert_eq!(received.events.last().map(String::as_str), Some("[DONE]"), "{context}");
            } else {
                let body = received.body.as_ref().unwrap();
                assert_eq!(body["choices"][0]["message"]["content"], "all good", "{context}");
            }
        }
        Expected::ErrorEvent => {
            assert_eq!(received.status, 200, "{context}");
            assert!(streamed_text(&received.events).starts_with("partial"), "{context}: {:?}", received.events);
            let last: Value = serde_json::from_str(received.events.last().unwrap()).unwrap();
            assert_eq!(last["error"]["code"], "upstream_error", "{context}");
            assert!(!received.events.iter().any(|e| e == "[DONE]"), "{context}");
        }
        Expected::Error(status) => {
            assert_eq!(received.status, status, "{context}");
            assert_eq!(received.body.as_ref().unwrap()["error"]["code"], "upstream_error", "{context}");
        }
    }

    // Whether failover happened, and only when allowed.
    let fails_over = expectation == Expected::FailsOver;
    assert_eq!(scene.healthy.request_count(), usize::from(fails_over), "{context}: healthy channel calls");
    if fault != Fault::RefusesConnections {
        assert_eq!(scene.faulty.request_count(), 1, "{context}: faulty channel calls");
    }

    // Money and the record, once everything is flushed.
    let store: Arc<dyn Store> = Arc::clone(&scene.app.store);
    let user = scene.user.id;
    let _data = scene.app.stop().await;
    let records = store
        .list_call_records(&CallRecordFilter { user_id: Some(user), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(records.len(), 1, "{context}: one call, one record");
    let record = &records[0].record;
    let tried: Vec<&str> = record.channels_tried.iter().map(|c| c.as_str()).collect();
    let balance = store.balance(user).await.unwrap();
    let credit = Money::parse_decimal(CREDIT).unwrap();
    assert_eq!(
        balance.nanos(),
        credit.nanos() - record.cost.nanos(),
        "{context}: the balance moved by exactly the recorded cost"
    );
    match expectation {
        Expected::FailsOver => {
            assert_eq!(tried, ["faulty", "healthy"], "{context}");
            assert_eq!(record.status, 200, "{context}");
            assert_eq!(record.cost, Money::parse_decimal(SERVED_COST).unwrap(), "{context}");
            assert!(!record.estimated, "{context}");
        }
        Expected::ErrorEvent => {
            assert_eq!(tried, ["faulty"], "{context}");
            assert_eq!(record.error_code, Some(ErrorCode::UpstreamError), "{context}");
            // No usage arrived: what was delivered is billed as estimated.
            assert!(record.estimated, "{context}");
            assert!(record.cost > Money::ZERO, "{context}");
        }
        Expected::Error(status) => {
            assert_eq!(tried, ["faulty"], "{context}");
            assert_eq!(record.status, status, "{context}");
            assert_eq!(record.error_code, Some(ErrorCode::UpstreamError), "{context}");
            assert_eq!(record.cost, Money::ZERO, "{context}");
        }
    }
}

#[tokio::test]
async fn refused_connections_fail_over() {
    check(Fault::RefusesConnections, false).await;
    check(Fault::RefusesConnections, true).await;
}

#[tokio::test]
async fn a_hang_before_the_first_byte_fails_over_after_the_first_byte_timeout() {
    check(Fault::HangsBeforeFirstByte, false).await;
    check(Fault::HangsBeforeFirstByte, true).await;
}

#[tokio::test]
async fn a_stream_dying_midway_ends_with_an_error_event_and_bills_the_estimate() {
    check(Fault::DiesMidStream, true).await;
}

#[tokio::test]
async fn server_errors_fail_over() {
    check(Fault::ServerError, false).await;
    check(Fault::ServerError, true).await;
}

#[tokio::test]
async fn rate_limits_with_retry_after_fail_over() {
    check(Fault::RateLimitedWithRetryAfter, false).await;
    check(Fault::RateLimitedWithRetryAfter, true).await;
}

#[tokio::test]
async fn malformed_answers_fail_over_only_before_anything_was_delivered() {
    check(Fault::MalformedAnswer, false).await;
    check(Fault::MalformedAnswer, true).await;
    check(Fault::BrokenStreamAfterContent, true).await;
}

#[tokio::test]
async fn a_rejected_credential_fails_over() {
    check(Fault::RejectsCredential, false).await;
    check(Fault::RejectsCredential, true).await;
}
