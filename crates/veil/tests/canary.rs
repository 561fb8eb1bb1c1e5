//! No content at rest, no content in logs (DESIGN §3.1), proven: unique canary strings
//! go through every relay path — chat, streaming chat, completions, embeddings, tool
//! arguments, upstream errors that echo the prompt, a stream that dies mid-way, a
//! malformed body, the Anthropic, Gemini and Responses formats through an Anthropic
//! upstream and back, and a generated image kept in the media vault — with Veil logging
//! at `trace`. Then every byte Veil wrote (its data
//! directory, its stdout and stderr) is searched: the canaries must appear nowhere.
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr)]

mod common;

use common::{Server, contains, veil_json, walk};
use serde_json::json;
use std::time::Duration;
use veil_testkit::mock_upstream::{MockUpstream, Reply};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_never_reach_disk_or_logs_on_sqlite() {
    run_canaries(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_never_reach_the_database_or_logs_on_postgres() {
    let Some(database) = veil_testkit::postgres::TestDatabase::create().await else { return };
    let canary = run_canaries(Some(&database.url)).await;
    // Every row of every table, as text.
    use sqlx::{Connection, Row};
    let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap()
    .iter()
    .map(|row| row.get::<String, _>(0))
    .collect();
    assert!(tables.contains(&"call_records".to_owned()), "{tables:?}");
    for table in tables {
        let sql = format!("SELECT count(*) FROM \"{table}\" t WHERE t::text LIKE '%' || $1 || '%'");
        let hits: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(&canary).fetch_one(&mut connection).await.unwrap();
        assert_eq!(hits, 0, "canary stored in PostgreSQL table {table}");
    }
    connection.close().await.unwrap();
}

/// Priced models, so holds, charges and the ledger are on the canary's path too.
const PRICES: &str = "
[[model]]
name = \"gpt-4o-mini\"
price = { input = 0.15, cached_input = 0.075, output = 0.6 }

[[model]]
name = \"text-embedding-3-small\"
price = { input = 0.02 }

[[model]]
name = \"instruct\"
price = { input = 1.5, output = 2 }

[[model]]
name = \"claude-x\"
price = { input = 3, output = 15 }

[[model]]
name = \"image-x\"
price = { per_image = 0.04 }
";

/// Sends the canaries through every path; returns the canary for further searching.
async fn run_canaries(database_url: Option<&str>) -> String {
    let canary = format!("CANARY{}", uuid_like());
    let upstream = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    std::fs::write(
        d.join("veil.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[log]\nlevel = \"trace\"\n\n[[channel]]\nname = \"mock\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o-mini\", \"text-embedding-3-small\", \"instruct\", \"image-x\"]\n\n[[channel]]\nname = \"claude\"\ntype = \"anthropic\"\nbase_url = \"http://{}\"\nmodels = [\"claude-x\"]\n{PRICES}",
            database_url.map(|url| format!("\n[database]\nurl = \"{url}\"\n")).unwrap_or_default(),
            upstream.base_url(),
            upstream.addr()
        ),
    )
    .unwrap();
    let d2 = d.clone();
    let (server, secret) = tokio::task::spawn_blocking(move || {
        veil_json(&d2, &["--config", "veil.toml", "admin", "user", "add", "canary-user", "--credit", "5", "--json"]);
        let key =
            veil_json(&d2, &["--config", "veil.toml", "admin", "key", "create", "--user", "canary-user", "--json"]);
        let (server, _) = Server::start(&d2, &["--config", "veil.toml"], &[]);
        (server, key["secret"].as_str().unwrap().to_owned())
    })
    .await
    .unwrap();

    // The upstream answers with the canary too: outputs count as content.
    upstream.push(Reply::chat(&format!("answer {canary}")));
    upstream.push(Reply::stream(vec!["streamed ", &canary, " end"], Duration::from_millis(5)));
    upstream.push(Reply::openai_error(400, &format!("your prompt {canary} is invalid"), "invalid_prompt"));
    upstream.push(Reply::openai_error(500, &format!("internal failure near {canary}"), "server_error"));
    upstream.push(Reply::stream_then_drop(vec![&canary, "more", "never"], 1));
    upstream.push(Reply::completion(&format!("completed {canary}")));

    let client = reqwest::Client::new();
    let call = |path: &'static str, body: serde_json::Value| {
        client.post(format!("{}{path}", server.address)).bearer_auth(&secret).json(&body).send()
    };
    let chat = |content: String| {
        json!({"model": "gpt-4o-mini", "messages": [
            {"role": "system", "content": format!("system {canary}")},
            {"role": "user", "content": content},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": format!("{{\"q\": \"{canary}\"}}")}}]},
            {"role": "tool", "tool_call_id": "c1", "content": format!("result {canary}")}
        ], "user": canary.clone(), "metadata": {"note": canary.clone()}})
    };
    let ok = call("/v1/chat/completions", chat(format!("hello {canary}"))).await.unwrap();
    assert!(ok.text().await.unwrap().contains(&canary), "the mock's answer should reach the client");
    let mut streamed = chat(format!("stream {canary}"));
    streamed["stream"] = json!(true);
    assert!(call("/v1/chat/completions", streamed.clone()).await.unwrap().text().await.unwrap().contains(&canary));
    assert_eq!(call("/v1/chat/completions", chat(canary.clone())).await.unwrap().status(), 400);
    assert_eq!(call("/v1/chat/completions", chat(canary.clone())).await.unwrap().status(), 502);
    let died = call("/v1/chat/completions", streamed).await.unwrap().text().await.unwrap();
    assert!(died.contains("upstream_error"));
    call("/v1/completions", json!({"model": "instruct", "prompt": format!("complete {canary}")})).await.unwrap();
    call("/v1/embeddings", json!({"model": "text-embedding-3-small", "input": [canary.clone()]})).await.unwrap();
    // Unknown model named after the canary, and a malformed body containing it.
    call("/v1/chat/completions", json!({"model": format!("m-{canary}"), "messages": [{}]})).await.unwrap();
    client
        .post(format!("{}/v1/chat/completions", server.address))
        .bearer_auth(&secret)
        .header("content-type", "application/json")
        .body(format!("{{\"model\": \"gpt-4o-mini\", \"messages\": [{canary}"))
        .send()
        .await
        .unwrap();

    other_formats(&upstream, &client, &server.address, &secret, &canary).await;

    let mut server = server;
    let output = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        assert!(status.success());
        server.captured_stderr()
    })
    .await
    .unwrap();
    assert!(output.contains("TRACE") || output.contains("DEBUG"), "no trace output: the test would prove nothing");

    let logs = veil_json(&d, &["--config", "veil.toml", "admin", "logs", "--json"]);
    assert!(logs.as_array().unwrap().len() >= 8, "calls were not recorded: {logs}");

    if let Some(line) = output.lines().find(|l| l.contains(&canary) || l.contains(&secret)) {
        panic!("canary or API key in Veil's output: {line}");
    }
    let files = walk(&d.join("veil-data"));
    assert!(files.iter().any(|f| f.ends_with(if database_url.is_some() { "master.key" } else { "veil.db" })));
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!contains(&bytes, canary.as_bytes()), "canary found in {}", file.display());
    }
    canary
}

/// The client formats other than OpenAI Chat, an Anthropic upstream, and a generated
/// image: content crosses two translations each way, and image bytes are kept (sealed).
async fn other_formats(upstream: &MockUpstream, client: &reqwest::Client, address: &str, secret: &str, canary: &str) {
    upstream.push(Reply::chat(&format!("anthropic answer {canary}")));
    upstream.push(Reply::stream(vec!["claude ", canary, " streamed"], Duration::from_millis(5)));
    upstream.push(Reply::tool_call("lookup", &format!("{{\"q\": \"{canary}\"}}")));
    upstream.push(Reply::anthropic_error(400, "invalid_request_error", &format!("bad prompt {canary}")));
    upstream.push(Reply::anthropic_overloaded_midstream(vec![canary, "cut"]));
    upstream.push(Reply::image(format!("PNG-BYTES {canary}").as_bytes(), 1));

    let messages = json!({"model": "gpt-4o-mini", "max_tokens": 50, "system": format!("sys {canary}"),
    "metadata": {"user_id": canary},
    "messages": [
        {"role": "user", "content": format!("hi {canary}")},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": canary}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": format!("r {canary}")}]}
    ]});
    let anthropic = |path: &str, body: serde_json::Value| {
        client.post(format!("{address}{path}")).header("x-api-key", secret).json(&body).send()
    };
    let answer = anthropic("/v1/messages", messages.clone()).await.unwrap().text().await.unwrap();
    assert!(answer.contains(canary), "{answer}");
    let mut streamed = messages;
    streamed["model"] = json!("claude-x");
    streamed["stream"] = json!(true);
    assert!(anthropic("/v1/messages", streamed).await.unwrap().text().await.unwrap().contains(canary));

    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": format!("g {canary}")}]}],
        "systemInstruction": {"parts": [{"text": canary}]}});
    let url = format!("{address}/v1beta/models/claude-x:generateContent?key={secret}");
    let answer = client.post(url).json(&gemini).send().await.unwrap().text().await.unwrap();
    assert!(answer.contains("functionCall"), "{answer}");

    let responses = json!({"model": "claude-x", "instructions": canary, "input": format!("r {canary}")});
    let bearer = |path: &str, body: serde_json::Value| {
        client.post(format!("{address}{path}")).bearer_auth(secret).json(&body).send()
    };
    assert_eq!(bearer("/v1/responses", responses.clone()).await.unwrap().status(), 400);
    let mut streamed = responses;
    streamed["stream"] = json!(true);
    let died = bearer("/v1/responses", streamed).await.unwrap().text().await.unwrap();
    assert!(died.contains("event: error"), "{died}");
    let malformed = client
        .post(format!("{address}/v1beta/models/claude-x:generateContent"))
        .header("x-goog-api-key", secret)
        .body(format!("{{\"contents\": [{canary}"))
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    let image = bearer("/v1/images/generations", json!({"model": "image-x", "prompt": format!("draw {canary}")}));
    let image: serde_json::Value = image.await.unwrap().json().await.unwrap();
    let url = image["data"][0]["url"].as_str().unwrap_or_else(|| panic!("no kept image: {image}"));
    let url = if url.starts_with("http") { url.to_owned() } else { format!("{address}{url}") };
    let kept = client.get(url).send().await.unwrap().bytes().await.unwrap();
    assert!(contains(&kept, canary.as_bytes()), "the kept image comes back whole");
}

fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}
