use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;
use veil_domain::ErrorCode;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::spawn_app;

#[tokio::test]
async fn chat_passes_through_untouched_fields_tools_and_images() {
    let (app, upstream, key) = app_with_upstream().await;
    upstream.push(Reply::chat_with_usage("Paris is sunny.", 40, 5, 8));
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "temperature": 0.2,
        "some_future_field": {"nested": [1, 2, 3]}
    });
    let response = post(&app, "/v1/chat/completions", &key, body.clone()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "Paris is sunny.");

    let sent = upstream.last_request().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    // Everything the client sent reaches the upstream as it was, except that the default
    // group's identity firewall turns upstream storage off.
    let mut expected = body.clone();
    expected["store"] = json!(false);
    assert_eq!(sent.body, expected);
    assert_eq!(sent.header("authorization"), None, "no api_key_env: no credential is invented");

    let records = stop_and_read_records(app).await;
    assert_eq!(records.len(), 1);
    let record = &records[0].record;
    assert_eq!(records[0].user_name.as_ref().unwrap().as_str(), "alice");
    assert_eq!(record.status, 200);
    assert_eq!((record.usage.input_tokens, record.usage.cached_tokens, record.usage.output_tokens), (40, 8, 5));
    assert!(!record.estimated);
    assert_eq!(record.channel.as_ref().unwrap().as_str(), "primary");
    assert_eq!(record.path, "/v1/chat/completions");
    assert_eq!(record.client_ip, "127.0.0.0");
    assert_eq!(record.policy_class, Some(veil_domain::PolicyClass::External));
}

#[tokio::test]
async fn the_model_name_is_mapped_for_the_upstream() {
    let (app, upstream, key) = app_with_upstream().await;
    let body = json!({"model": "public-name", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(post(&app, "/v1/chat/completions", &key, body).await.status(), 200);
    assert_eq!(upstream.last_request().unwrap().body["model"], "upstream-name");
    let records = stop_and_read_records(app).await;
    assert_eq!(records[0].record.model.as_ref().unwrap().as_str(), "public-name");
    assert_eq!(records[0].record.upstream_model.as_ref().unwrap().as_str(), "upstream-name");
}

#[tokio::test]
async fn a_well_formed_client_request_id_is_kept_and_a_bad_one_replaced() {
    let (app, _upstream, key) = app_with_upstream().await;
    let client = reqwest::Client::new();
    let send = |id: &'static str| {
        client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("x-request-id", id)
            .json(&chat_body("hi"))
            .send()
    };
    let kept = send("trace-123.abc_DEF").await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-123.abc_DEF");
    let replaced = send("bad id with spaces").await.unwrap();
    assert_ne!(replaced.headers()["x-request-id"], "bad id with spaces");
    // Errors carry it too.
    let unauthenticated = client.get(app.url("/v1/models")).header("x-request-id", "err-1").send().await.unwrap();
    assert_eq!(unauthenticated.headers()["x-request-id"], "err-1");
    let records = stop_and_read_records(app).await;
    assert!(records.iter().any(|r| r.record.request_id.as_str() == "trace-123.abc_DEF"));
}

#[tokio::test]
async fn completions_and_embeddings_are_relayed() {
    let (app, upstream, key) = app_with_upstream().await;
    let completion =
        post(&app, "/v1/completions", &key, json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this"})).await;
    assert_eq!(completion.status(), 200);
    let completion: Value = completion.json().await.unwrap();
    assert_eq!(completion["object"], "text_completion");

    let embeddings =
        post(&app, "/v1/embeddings", &key, json!({"model": "text-embedding-3-small", "input": ["a", "b"]})).await;
    assert_eq!(embeddings.status(), 200);
    let embeddings: Value = embeddings.json().await.unwrap();
    assert_eq!(embeddings["data"].as_array().unwrap().len(), 2);
    let paths: Vec<String> = upstream.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/v1/completions", "/v1/embeddings"]);

    let records = stop_and_read_records(app).await;
    let mut record_paths: Vec<&str> = records.iter().map(|r| r.record.path).collect();
    record_paths.sort();
    assert_eq!(record_paths, ["/v1/completions", "/v1/embeddings"]);
    assert!(records.iter().all(|r| r.record.usage.input_tokens > 0));
}

#[tokio::test]
async fn models_lists_only_what_the_key_may_use() {
    let upstream = MockUpstream::start().await;
    let config = format!(
        "{}\n[[group]]\nname = \"vip\"\n\n[[channel]]\nname = \"vip-only\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"vip-model\"]\ngroups = [\"vip\"]\n",
        one_channel(&upstream),
        upstream.base_url()
    );
    let app = spawn_app(&config).await;
    let user = app.create_user("carol", "default").await;
    let (all, _) = app.create_key(&user, Default::default()).await;
    let (narrow, _) = app
        .create_key(&user, veil_testkit::KeyOptions { models: Some(vec!["gpt-4o-mini"]), ..Default::default() })
        .await;
    let ids = |body: Value| -> Vec<String> {
        body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
    };
    let client = reqwest::Client::new();
    let listed: Value = client.get(app.url("/v1/models")).bearer_auth(&all).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["object"], "list");
    let all_ids = ids(listed);
    assert!(all_ids.contains(&"gpt-4o-mini".to_owned()));
    assert!(!all_ids.contains(&"vip-model".to_owned()), "another group's model is listed");
    let listed: Value =
        client.get(app.url("/v1/models")).bearer_auth(&narrow).send().await.unwrap().json().await.unwrap();
    assert_eq!(ids(listed), ["gpt-4o-mini"]);

    let one = client.get(app.url("/v1/models/gpt-4o-mini")).bearer_auth(&narrow).send().await.unwrap();
    assert_eq!(one.status(), 200);
    let hidden = client.get(app.url("/v1/models/text-embedding-3-small")).bearer_auth(&narrow).send().await.unwrap();
    assert_eq!(error_code(hidden, 404).await, "model_not_found");
    // The allow-list is enforced on calls, not only on listings.
    let refused = post(&app, "/v1/embeddings", &narrow, json!({"model": "text-embedding-3-small", "input": "x"})).await;
    assert_eq!(error_code(refused, 404).await, "model_not_found");
    let other_group = post(&app, "/v1/chat/completions", &all, json!({"model": "vip-model", "messages": [{}]})).await;
    assert_eq!(error_code(other_group, 404).await, "model_not_found");
    assert_eq!(upstream.request_count(), 0);
}

#[tokio::test]
async fn a_failing_channel_fails_over_to_the_next_in_priority_order() {
    let broken = MockUpstream::start().await;
    broken.set_default(Reply::openai_error(503, "overloaded", "server_busy"));
    let healthy = MockUpstream::start().await;
    let config = format!(
        r#"
[[channel]]
name = "first"
type = "openai"
base_url = "{}"
models = ["gpt-4o-mini"]
priority = 10

[[channel]]
name = "second"
type = "openai"
base_url = "{}"
models = ["gpt-4o-mini"]
priority = 1
"#,
        broken.base_url(),
        healthy.base_url()
    ) + FREE_MODELS;
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("dave").await;
    let response = post(&app, "/v1/chat/completions", &key, chat_body("hi")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(broken.request_count(), 1);
    assert_eq!(healthy.request_count(), 1);
    let records = stop_and_read_records(app).await;
    let tried: Vec<&str> = records[0].record.channels_tried.iter().map(|c| c.as_str()).collect();
    assert_eq!(tried, ["first", "second"]);
    assert_eq!(records[0].record.channel.as_ref().unwrap().as_str(), "second");
}

#[tokio::test]
async fn upstream_client_errors_are_not_retried_and_keep_their_status() {
    let (app, upstream, key) = app_with_upstream().await;
    upstream.push(Reply::openai_error(400, "temperature must be at most 2", "invalid_value"));
    let response = post(&app, "/v1/chat/completions", &key, chat_body("hi")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("temperature"));
    assert_eq!(upstream.request_count(), 1);
    let records = stop_and_read_records(app).await;
    assert_eq!(records[0].record.status, 400);
    assert_eq!(records[0].record.error_code, Some(ErrorCode::UpstreamError));
}

#[tokio::test]
async fn a_slow_first_byte_times_out_with_upstream_timeout() {
    let (app, upstream, key) = app_with_upstream().await;
    upstream.set_default(Reply::slow_first_byte(Reply::chat("late"), Duration::from_secs(5)));
    let response = post(&app, "/v1/chat/completions", &key, chat_body("hi")).await;
    assert_eq!(error_code(response, 504).await, "upstream_timeout");
    let records = stop_and_read_records(app).await;
    assert_eq!(records[0].record.error_code, Some(ErrorCode::UpstreamTimeout));
}

#[tokio::test]
async fn a_broken_upstream_reply_is_an_upstream_error() {
    let (app, upstream, key) = app_with_upstream().await;
    upstream.set_default(Reply::raw(200, "application/json", "{\"choices\": [oops"));
    let response = post(&app, "/v1/chat/completions", &key, chat_body("hi")).await;
    assert_eq!(error_code(response, 502).await, "upstream_error");
}

#[tokio::test]
async fn an_unreachable_upstream_is_an_upstream_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let app = spawn_app(&format!(
        "[[channel]]\nname = \"down\"\ntype = \"openai\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodels = [\"m\"]\n\n[[model]]\nname = \"m\"\nfree = true\n"
    ))
    .await;
    let (_, key) = app.user_with_key("erin").await;
    let response = post(&app, "/v1/chat/completions", &key, json!({"model": "m", "messages": [{}]})).await;
    assert_eq!(error_code(response, 502).await, "upstream_error");
}

#[tokio::test]
async fn a_client_giving_up_on_a_non_streaming_call_cancels_it_upstream() {
    let (app, upstream, key) = app_with_upstream().await;
    upstream.set_default(Reply::slow_first_byte(Reply::chat("late"), Duration::from_millis(900)));
    let client = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let gave_up = client.post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&chat_body("hi")).send().await;
    assert!(gave_up.is_err());
    assert!(upstream.wait_for_disconnects(1, Duration::from_secs(5)).await, "the upstream call was not cancelled");
    let records = stop_and_read_records(app).await;
    assert_eq!(records[0].record.status, 499);
    assert_eq!(records[0].record.error_code, Some(ErrorCode::ClientClosed));
}
