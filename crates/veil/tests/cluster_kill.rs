//! Killing one of three real `veil serve` processes (one PostgreSQL database, one Redis)
//! in the middle of a stream: every call completed before the kill has its record in the
//! database, with `durability = "strict"` the very last one too; the two survivors keep
//! serving; and the killed stream's hold stops blocking the user's balance once its
//! `hold_ttl` has passed. Skipped when PostgreSQL or Redis is unreachable, unless
//! `VEIL_REQUIRE_SERVICES=1`.
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod common;

use common::{Server, veil_json};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::postgres::TestDatabase;
use veil_testkit::redis::{test_redis_url, unique_prefix};

/// How long the killed instance's hold may block the balance.
const HOLD_TTL_SECS: u64 = 8;

/// One instance's config: the shared database and Redis, strict durability, one channel
/// serving `paid` at 1 per million tokens in and out.
fn config(upstream: &MockUpstream, database: &str, redis: &str, prefix: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
refresh_interval = "100ms"

[database]
url = "{database}"

[redis]
url = "{redis}"
key_prefix = "{prefix}"
hold_ttl = "{HOLD_TTL_SECS}s"

[billing]
durability = "strict"

[[channel]]
name = "x"
type = "openai"
base_url = "{}"
models = ["paid"]
first_byte_timeout = "2s"
idle_timeout = "5s"

[[model]]
name = "paid"
price = {{ input = 1, output = 1 }}
"#,
        upstream.base_url()
    )
}

/// A chat call on `server` for up to `max_tokens`; its status and request id.
async fn chat(server: &Server, key: &str, max_tokens: u64, stream: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.address))
        .bearer_auth(key)
        .json(&json!({"model": "paid", "stream": stream, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "go"}]}))
        .send()
        .await
        .unwrap()
}

async fn completed(server: &Server, key: &str) -> String {
    let response = chat(server, key, 20, false).await;
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    response.bytes().await.unwrap();
    request_id
}

fn start(dir: &Path) -> Server {
    Server::start(dir, &["--config", "veil.toml"], &[]).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_instance_mid_stream_loses_no_completed_call() {
    let Some(redis) = test_redis_url().await else { return };
    let Some(database) = TestDatabase::create().await else { return };
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::chat_with_usage("done", 10, 5, 0));
    let prefix = unique_prefix();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for dir in &dirs {
        std::fs::write(dir.path().join("veil.toml"), config(&upstream, &database.url, &redis, &prefix)).unwrap();
    }
    // One installation: a funded user and key made once, the master key copied to all.
    let first = dirs[0].path().to_owned();
    let key = tokio::task::spawn_blocking(move || {
        veil_json(&first, &["--config", "veil.toml", "admin", "user", "add", "ops", "--credit", "1", "--json"]);
        let key = veil_json(&first, &["--config", "veil.toml", "admin", "key", "create", "--user", "ops", "--json"]);
        key["secret"].as_str().unwrap().to_owned()
    })
    .await
    .unwrap();
    for dir in &dirs[1..] {
        std::fs::create_dir_all(dir.path().join("veil-data")).unwrap();
        std::fs::copy(dirs[0].path().join("veil-data/master.key"), dir.path().join("veil-data/master.key")).unwrap();
    }
    let paths: Vec<_> = dirs.iter().map(|d| d.path().to_owned()).collect();
    let mut servers =
        tokio::task::spawn_blocking(move || paths.iter().map(|p| start(p)).collect::<Vec<_>>()).await.unwrap();

    // Completed calls on every instance, the last one on instance 1 right before the kill.
    let mut request_ids = Vec::new();
    for _ in 0..3 {
        for server in &servers {
            request_ids.push(completed(server, &key).await);
        }
    }
    upstream.push(Reply::stream(vec!["tick "; 200], Duration::from_millis(100)));
    let mut stream = chat(&servers[0], &key, 600_000, true).await;
    assert_eq!(stream.status(), 200);
    assert!(!stream.chunk().await.unwrap().unwrap().is_empty(), "the stream is running");
    let last = completed(&servers[0], &key).await;
    request_ids.push(last.clone());

    // SIGKILL: no drain, no flush.
    let mut killed = servers.remove(0);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    // The client sees its stream end short of the upstream's.
    let mut rest = Vec::new();
    while let Ok(Some(chunk)) = stream.chunk().await {
        rest.extend_from_slice(&chunk);
    }
    assert!(!common::contains(&rest, b"[DONE]"), "the stream was cut off");

    // Every completed call is recorded, the last one before the kill included (strict).
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&database.url).await.unwrap();
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT request_id FROM call_records").fetch_all(&mut conn).await.unwrap();
    for id in &request_ids {
        assert!(recorded.contains(id), "the record of {id} was lost; recorded: {recorded:?}");
    }
    assert!(recorded.contains(&last), "strict durability: the last call before the kill is there");

    // The survivors keep serving.
    for server in &servers {
        for _ in 0..3 {
            completed(server, &key).await;
        }
    }

    // The killed stream's hold: its worst case, 600,000 output tokens at 1 per million (0.6),
    // stays reserved in the user's Redis wallet until its `hold_ttl`: a call that fits beside
    // it passes; one that needs its money is refused until then, and accepted after.
    let beside = chat(&servers[0], &key, 300_000, false).await;
    assert_eq!(beside.status(), 200, "{}", beside.text().await.unwrap());
    let needing_it = chat(&servers[1], &key, 600_000, false).await;
    let status = needing_it.status().as_u16();
    let body: serde_json::Value = needing_it.json().await.unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("insufficient_quota")), "{body}");

    tokio::time::sleep(Duration::from_secs(HOLD_TTL_SECS + 1)).await;
    let after_expiry = chat(&servers[1], &key, 600_000, false).await;
    assert_eq!(after_expiry.status(), 200, "the dead instance's hold expired: {}", after_expiry.text().await.unwrap());
}
