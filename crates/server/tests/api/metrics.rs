//! `GET /metrics` seen from outside: a successful, a failed and a streamed call move the
//! counters and histograms, and the page carries no content, key, user or request id.
//!
//! The recorder is process-wide and other tests run beside this one, so route-level
//! series are compared as deltas (at least what this test did); series labelled with
//! this test's own model and channel names are compared exactly.

use crate::helpers::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use veil_domain::Money;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::{TestApp, spawn_app};

const MODEL: &str = "metrics-test-model";
const CHANNEL: &str = "metrics-test-channel";
const CANARY: &str = "CANARYmetrics7f3a9";

fn config(upstream: &MockUpstream) -> String {
    format!(
        r#"
[[channel]]
name = "{CHANNEL}"
type = "openai"
base_url = "{}"
models = ["{MODEL}"]
first_byte_timeout = "2s"
idle_timeout = "2s"

[[model]]
name = "{MODEL}"
price = {{ input = 1, cached_input = 0.5, output = 2 }}
"#,
        upstream.base_url()
    )
}

/// One sample of the text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(page: &str) -> Vec<Sample> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap();
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample { name: name.to_owned(), labels, value: value.parse().unwrap() }
        })
        .collect()
}

/// The value of the series `name` whose labels include `labels`, summed if several match.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

async fn scrape(app: &TestApp) -> (String, Vec<Sample>) {
    let response = reqwest::get(app.url("/metrics")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let page = response.text().await.unwrap();
    let samples = parse(&page);
    (page, samples)
}

fn chat(text: &str, stream: bool) -> serde_json::Value {
    json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn calls_move_the_counters_and_the_page_holds_no_content() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&config(&upstream)).await;
    let (user, key) = app.user_with_key("metrics-user-name").await;
    app.credit(&user, "1").await;
    let chat_path = [("path", "/v1/chat/completions")];
    let (_, before) = scrape(&app).await;

    let mut request_ids = Vec::new();
    // A successful call, a failed one (upstream 500 → 502) and a streamed one.
    upstream.push(Reply::chat_with_usage(&format!("answer {CANARY}"), 7, 5, 2));
    let ok = post(&app, "/v1/chat/completions", &key, chat(&format!("hello {CANARY}"), false)).await;
    assert_eq!(ok.status(), 200);
    request_ids.push(ok.headers()["x-request-id"].to_str().unwrap().to_owned());
    upstream.push(Reply::openai_error(500, &format!("failed near {CANARY}"), "server_error"));
    let failed = post(&app, "/v1/chat/completions", &key, chat(&format!("fail {CANARY}"), false)).await;
    request_ids.push(failed.headers()["x-request-id"].to_str().unwrap().to_owned());
    assert_eq!(error_code(failed, 502).await, "upstream_error");
    upstream.push(Reply::stream_with_usage(vec!["streamed ", CANARY], Duration::from_millis(5), 11, 3, 0));
    let streamed = post(&app, "/v1/chat/completions", &key, chat(&format!("stream {CANARY}"), true)).await;
    request_ids.push(streamed.headers()["x-request-id"].to_str().unwrap().to_owned());
    assert!(streamed.text().await.unwrap().contains(CANARY));
    // A model name the catalogue does not know never becomes a label.
    let unknown = json!({"model": format!("m-{CANARY}"), "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(error_code(post(&app, "/v1/chat/completions", &key, unknown).await, 404).await, "model_not_found");

    // The streamed call is recorded when its stream ends, just after the client read it:
    // wait for its tokens (labelled with this test's own model) to show.
    let model = [("model", MODEL)];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (page, after) = loop {
        let (page, samples) = scrape(&app).await;
        if value(&samples, "veil_tokens_total", &[model[0], ("kind", "input")]) >= 18.0 {
            break (page, samples);
        }
        assert!(tokio::time::Instant::now() < deadline, "the calls were not counted:\n{page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let delta = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);

    // Exact, per this test's model: 7 + 11 input (2 cached), 5 + 3 output.
    assert_eq!(value(&after, "veil_tokens_total", &[model[0], ("kind", "input")]), 18.0);
    assert_eq!(value(&after, "veil_tokens_total", &[model[0], ("kind", "cached")]), 2.0);
    assert_eq!(value(&after, "veil_tokens_total", &[model[0], ("kind", "output")]), 8.0);
    let cost = value(&after, "veil_cost_nanos_total", &model);
    // At least this test's calls, per route and outcome.
    let counted =
        |status: &str, code: &str| delta("veil_requests_total", &[chat_path[0], ("status", status), ("code", code)]);
    assert!(counted("200", "none") >= 2.0, "{page}");
    assert!(counted("502", "upstream_error") >= 1.0, "{page}");
    assert!(counted("404", "model_not_found") >= 1.0, "{page}");
    assert!(delta("veil_request_duration_seconds_count", &chat_path) >= 4.0, "{page}");
    assert!(delta("veil_time_to_first_token_seconds_count", &chat_path) >= 2.0, "{page}");
    assert!(value(&after, "veil_request_duration_seconds_bucket", &[chat_path[0], ("le", "+Inf")]) >= 4.0);
    let http = [("route", "/v1/chat/completions"), ("method", "POST"), ("status", "200")];
    assert!(delta("veil_http_requests_total", &http) >= 2.0, "{page}");
    assert_eq!(value(&after, "veil_channel_enabled", &[("channel", CHANNEL)]), 1.0);
    assert!(after.iter().any(|s| s.name == "veil_record_queue_depth"), "{page}");
    assert!(after.iter().any(|s| s.name == "veil_in_flight_requests"), "{page}");
    assert_eq!(value(&after, "veil_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);

    // Nothing a client sent or an upstream answered, and nobody's identity.
    for secret in [CANARY, key.as_str(), "metrics-user-name", &user.id.to_string()]
        .into_iter()
        .chain(request_ids.iter().map(String::as_str))
    {
        assert!(!page.contains(secret), "/metrics shows {secret}");
    }

    // The cost counter is exactly what the calls were charged.
    let records = stop_and_read_records(app).await;
    let charged: i64 = records
        .iter()
        .filter(|r| r.record.model.as_ref().is_some_and(|m| m.as_str() == MODEL))
        .map(|r| r.record.cost.nanos())
        .sum();
    assert!(charged > Money::ZERO.nanos());
    assert_eq!(cost, charged as f64);
}
