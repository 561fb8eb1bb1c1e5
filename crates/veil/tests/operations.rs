//! Graceful operations of the real binary: SIGTERM during a slow stream lets it finish
//! (or, past `shutdown_grace`, cuts it off) and the process exits 0 with the call
//! recorded; SIGHUP re-reads the config file and applies its channels and models, and
//! a broken file changes nothing.
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use common::{Server, veil_json};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use veil_testkit::mock_upstream::{MockUpstream, Reply};

/// A config with one channel in front of `upstream` serving `models` (all free).
fn config(upstream: &MockUpstream, server: &str, models: &[&str], channel_extra: &str) -> String {
    let list = models.iter().map(|m| format!("\"{m}\"")).collect::<Vec<_>>().join(", ");
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nrefresh_interval = \"100ms\"\n{server}\n\n[[channel]]\nname = \"x\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [{list}]\n{channel_extra}\n",
        upstream.base_url()
    );
    for model in models {
        text.push_str(&format!("\n[[model]]\nname = \"{model}\"\nfree = true\n"));
    }
    text
}

/// Starts `veil serve` on `dir/veil.toml` with a user and key made by `veil admin`.
async fn start(dir: &Path) -> (Server, String) {
    let d = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        veil_json(&d, &["--config", "veil.toml", "admin", "user", "add", "ops", "--json"]);
        let key = veil_json(&d, &["--config", "veil.toml", "admin", "key", "create", "--user", "ops", "--json"]);
        let (server, _) = Server::start(&d, &["--config", "veil.toml"], &[]);
        (server, key["secret"].as_str().unwrap().to_owned())
    })
    .await
    .unwrap()
}

fn signal(server: &Server, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

async fn chat(server: &Server, key: &str, model: &str, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.address))
        .bearer_auth(key)
        .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "go"}]}))
        .send()
        .await
        .unwrap()
}

/// Sends SIGTERM and waits (off the runtime) for the process to exit.
async fn terminate(mut server: Server) -> (std::process::ExitStatus, Server) {
    tokio::task::spawn_blocking(move || (server.terminate(), server)).await.unwrap()
}

fn records(dir: &Path) -> Vec<Value> {
    veil_json(dir, &["--config", "veil.toml", "admin", "logs", "--json"]).as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_stream_finish_exits_zero_and_the_call_is_recorded() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("veil.toml"), config(&upstream, "shutdown_grace = \"20s\"", &["slow"], "")).unwrap();
    let (server, key) = start(d).await;

    upstream.push(Reply::stream(vec!["still ", "here ", "at ", "the ", "end"], Duration::from_millis(200)));
    let mut response = chat(&server, &key, "slow", true).await;
    let mut text = String::from_utf8(response.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert_eq!(upstream.completed_streams(), 0, "the stream must still be running at SIGTERM");
    let terminated = tokio::spawn(terminate(server));
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let (status, _server) = terminated.await.unwrap();
    assert!(status.success(), "veil exited with {status}");
    for word in ["still", "here", "at", "the", "end", "[DONE]"] {
        assert!(text.contains(word), "{word} is missing from the drained stream: {text}");
    }

    let records = records(d);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["status"], 200);
    assert_eq!(records[0]["stream"], true);
    assert_eq!(records[0]["error_code"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_longer_than_the_grace_is_cut_off_and_recorded_as_client_closed() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("veil.toml"), config(&upstream, "shutdown_grace = \"300ms\"", &["slow"], "")).unwrap();
    let (server, key) = start(d).await;

    // Twenty seconds of stream against a grace of 300 ms.
    upstream.push(Reply::stream(vec!["tick "; 100], Duration::from_millis(200)));
    let mut response = chat(&server, &key, "slow", true).await;
    assert!(!response.chunk().await.unwrap().unwrap().is_empty());
    let (status, _server) = terminate(server).await;
    assert!(status.success(), "veil exited with {status}");
    // Bounded: the process ended long before the upstream would have finished.
    assert_eq!(upstream.completed_streams(), 0);
    assert!(upstream.wait_for_disconnects(1, Duration::from_secs(5)).await, "the upstream call was not cancelled");

    let records = records(d);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["status"], 499);
    assert_eq!(records[0]["error_code"], "client_closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_models_and_a_broken_file_changes_nothing() {
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("veil.toml"), config(&upstream, "", &["model-a"], "")).unwrap();
    let (server, key) = start(d).await;
    assert_eq!(chat(&server, &key, "model-a", false).await.status(), 200);
    assert_eq!(chat(&server, &key, "model-b", false).await.status(), 404);

    std::fs::write(d.join("veil.toml"), config(&upstream, "", &["model-a", "model-b"], "")).unwrap();
    signal(&server, "HUP");
    let sent = Instant::now();
    loop {
        let status = chat(&server, &key, "model-b", false).await.status();
        if status == 200 {
            break;
        }
        assert!(sent.elapsed() < Duration::from_secs(5), "model-b not served 5 s after SIGHUP: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Broken: model-b gone and an invalid weight. Nothing of it may be applied.
    std::fs::write(d.join("veil.toml"), config(&upstream, "", &["model-a"], "weight = 0")).unwrap();
    signal(&server, "HUP");
    let logged = Instant::now();
    while !server.captured_stderr().contains("channel[0].weight") {
        assert!(logged.elapsed() < Duration::from_secs(10), "no error naming the key: {}", server.captured_stderr());
    }
    assert_eq!(chat(&server, &key, "model-b", false).await.status(), 200, "a broken file changed the catalogue");

    // A change only a restart can apply is reported, and the rest still applied.
    let restart_only = config(&upstream, "max_body_bytes = 1000", &["model-a", "model-b"], "")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    std::fs::write(d.join("veil.toml"), restart_only).unwrap();
    signal(&server, "HUP");
    let logged = Instant::now();
    while !server.captured_stderr().contains("server.listen") {
        assert!(logged.elapsed() < Duration::from_secs(10), "no ignored-key report: {}", server.captured_stderr());
    }
    assert!(server.captured_stderr().contains("server.max_body_bytes"));
    assert_eq!(chat(&server, &key, "model-b", false).await.status(), 200);

    let (status, _server) = terminate(server).await;
    assert!(status.success(), "veil exited with {status}");
}

#[test]
fn check_config_names_a_certificate_file_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("veil.toml"), "[server]\ntls_cert = \"missing-cert.pem\"\ntls_key = \"key.pem\"\n").unwrap();
    let out = common::veil(d, &["--config", "veil.toml", "check-config"]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("server.tls_cert") && said.contains("missing-cert.pem"), "{said}");

    std::fs::write(d.join("veil.toml"), "[server]\ntls_cert = \"cert.pem\"\n").unwrap();
    let out = common::veil(d, &["--config", "veil.toml", "check-config"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls_key"));
}
