//! End to end with the official OpenAI Python SDK: `veil serve` (the compiled binary)
//! in front of the scripted mock upstream, driven by `tests/sdk/test_openai_sdk.py`.
//!
//! The Python interpreter comes from `VEIL_PYTHON` (set by `scripts/test`, which
//! prepares a venv with the SDK). Without it the test is skipped with a note, unless
//! `VEIL_REQUIRE_SERVICES=1`, as in CI, where a missing SDK is a failure.
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

mod common;

use common::{Server, veil_json};
use std::path::Path;
use std::process::Command;
use veil_testkit::mock_upstream::MockUpstream;

fn python() -> Option<String> {
    match std::env::var("VEIL_PYTHON") {
        Ok(python) if !python.is_empty() => Some(python),
        _ if std::env::var("VEIL_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("VEIL_PYTHON is not set but VEIL_REQUIRE_SERVICES=1: run through scripts/test")
        }
        _ => {
            eprintln!("skipped: VEIL_PYTHON is not set (run scripts/test to prepare the SDK venv)");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_works_through_veil() {
    let Some(python) = python() else { return };
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    std::fs::write(
        d.join("veil.toml"),
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[[channel]]
name = "mock-openai"
type = "openai"
base_url = "{}"
api_key_env = "VEIL_SDK_TEST_UPSTREAM_KEY"
models = ["gpt-4o-mini", "text-embedding-3-small"]
retention = "30d"
region = "US"
operator = "mock"

[[channel]]
name = "local-echo"
type = "echo"
models = ["veil-echo"]

[[group]]
name = "default"

[[group]]
name = "private"
firewall = "pii"

[[model]]
name = "gpt-4o-mini"
price = {{ input = 0.15, cached_input = 0.075, output = 0.60 }}

[[model]]
name = "text-embedding-3-small"
price = {{ input = 0.02 }}
"#,
            upstream.base_url()
        ),
    )
    .unwrap();

    let sdk_results = tokio::task::spawn_blocking(move || run_sdk(&d, &python)).await.unwrap();

    // The upstream got the operator's credential, never the client's key, and a usage
    // request on every stream.
    let requests = upstream.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request.header("authorization"), Some("Bearer upstream-secret"));
        if request.is_stream() {
            assert_eq!(request.body["stream_options"]["include_usage"], true);
        }
    }
    sdk_results.unwrap();
}

fn run_sdk(dir: &Path, python: &str) -> Result<(), String> {
    veil_json(dir, &["--config", "veil.toml", "admin", "user", "add", "sdk", "--credit", "10", "--json"]);
    let key = veil_json(dir, &["--config", "veil.toml", "admin", "key", "create", "--user", "sdk", "--json"]);
    let secret = key["secret"].as_str().unwrap().to_owned();
    veil_json(
        dir,
        &["--config", "veil.toml", "admin", "user", "add", "private", "--group", "private", "--credit", "10", "--json"],
    );
    let private = veil_json(dir, &["--config", "veil.toml", "admin", "key", "create", "--user", "private", "--json"]);
    let private_secret = private["secret"].as_str().unwrap().to_owned();
    // For the legacy balance endpoints: an account with a known credit, one key without a
    // quota and one with a quota and an expiry.
    veil_json(dir, &["--config", "veil.toml", "admin", "user", "add", "billing", "--credit", "12.5", "--json"]);
    let billing = veil_json(dir, &["--config", "veil.toml", "admin", "key", "create", "--user", "billing", "--json"]);
    let quota = veil_json(
        dir,
        &[
            "--config",
            "veil.toml",
            "admin",
            "key",
            "create",
            "--user",
            "billing",
            "--quota",
            "5",
            "--expires",
            "30d",
            "--json",
        ],
    );
    // For quota and rate-limit errors: an account without credit, and a key allowed one
    // request a minute.
    veil_json(dir, &["--config", "veil.toml", "admin", "user", "add", "broke", "--json"]);
    let broke = veil_json(dir, &["--config", "veil.toml", "admin", "key", "create", "--user", "broke", "--json"]);
    let rpm =
        veil_json(dir, &["--config", "veil.toml", "admin", "key", "create", "--user", "sdk", "--rpm", "1", "--json"]);
    let (mut server, _) =
        Server::start(dir, &["--config", "veil.toml"], &[("VEIL_SDK_TEST_UPSTREAM_KEY", "upstream-secret")]);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/test_openai_sdk.py");
    let output = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&script)
        .env("VEIL_BASE_URL", format!("{}/v1", server.address))
        .env("VEIL_API_KEY", &secret)
        .env("VEIL_PII_API_KEY", &private_secret)
        .env("VEIL_BILLING_API_KEY", billing["secret"].as_str().unwrap())
        .env("VEIL_QUOTA_API_KEY", quota["secret"].as_str().unwrap())
        .env("VEIL_QUOTA_EXPIRES_AT", quota["expires_at"].as_str().unwrap())
        .env("VEIL_BROKE_API_KEY", broke["secret"].as_str().unwrap())
        .env("VEIL_RPM_API_KEY", rpm["secret"].as_str().unwrap())
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let status = server.terminate();
    if !output.status.success() {
        return Err(format!("the SDK tests failed:\n{stdout}"));
    }
    if !status.success() {
        return Err(format!("veil did not stop cleanly: {status}"));
    }
    let logs = veil_json(dir, &["--config", "veil.toml", "admin", "logs", "--json", "--limit", "100"]);
    let records = logs.as_array().unwrap();
    if !records.iter().any(|r| r["stream"] == true && r["status"] == 200 && r["output_tokens"].as_u64() > Some(0)) {
        return Err(format!("no settled streaming record: {logs}"));
    }
    if !records.iter().any(|r| r["path"] == "/v1/embeddings") {
        return Err("no embeddings record".into());
    }
    Ok(())
}
