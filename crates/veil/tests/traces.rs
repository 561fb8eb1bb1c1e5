//! Traces over OTLP (DESIGN §2): `veil serve` with `[telemetry] otlp_endpoint` set POSTs
//! protobuf spans to `{endpoint}/v1/traces`, flushes them on SIGTERM, and the spans carry
//! the request's metadata (route, request id, channel, model) and no content.
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, contains, veil_json};
use serde_json::json;
use veil_testkit::mock_upstream::{MockUpstream, Reply};

const CANARY: &str = "CANARYotlp5d1e27";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_the_collector_without_content() {
    let upstream = MockUpstream::start().await;
    // Any HTTP server that records what it is sent will do as the collector.
    let collector = MockUpstream::start().await;
    collector.set_default(Reply::raw(200, "application/x-protobuf", ""));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    std::fs::write(
        d.join("veil.toml"),
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[telemetry]
otlp_endpoint = "http://{}"
service_name = "veil-trace-test"

[[channel]]
name = "traced-channel"
type = "openai"
base_url = "{}"
models = ["gpt-4o-mini"]

[[model]]
name = "gpt-4o-mini"
free = true
"#,
            collector.addr(),
            upstream.base_url()
        ),
    )
    .unwrap();
    let (mut server, secret) = tokio::task::spawn_blocking(move || {
        veil_json(&d, &["--config", "veil.toml", "admin", "user", "add", "trace-user", "--json"]);
        let key = veil_json(&d, &["--config", "veil.toml", "admin", "key", "create", "--user", "trace-user", "--json"]);
        let (server, _) = Server::start(&d, &["--config", "veil.toml"], &[]);
        (server, key["secret"].as_str().unwrap().to_owned())
    })
    .await
    .unwrap();

    upstream.push(Reply::chat(&format!("answer {CANARY}")));
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.address))
        .bearer_auth(&secret)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("hello {CANARY}")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(response.text().await.unwrap().contains(CANARY));

    // SIGTERM: the server drains, then flushes the spans still buffered.
    let status = tokio::task::spawn_blocking(move || server.terminate()).await.unwrap();
    assert!(status.success());

    let exports: Vec<_> = collector.requests().into_iter().filter(|r| r.path == "/v1/traces").collect();
    assert!(!exports.is_empty(), "no spans were exported: {:?}", collector.requests());
    for export in &exports {
        assert_eq!(export.method, "POST");
        assert_eq!(export.header("content-type"), Some("application/x-protobuf"));
    }
    let sent: Vec<u8> = exports.iter().flat_map(|r| r.raw_body.to_vec()).collect();
    for expected in
        ["POST /v1/chat/completions", request_id.as_str(), "veil-trace-test", "traced-channel", "gpt-4o-mini"]
    {
        assert!(contains(&sent, expected.as_bytes()), "the spans lack {expected}");
    }
    for secret in [CANARY, secret.as_str(), "trace-user"] {
        assert!(!contains(&sent, secret.as_bytes()), "the spans carry {secret}");
    }
}
