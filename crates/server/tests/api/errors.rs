use crate::helpers::*;
use serde_json::json;
use veil_domain::Timestamp;
use veil_testkit::mock_upstream::MockUpstream;
use veil_testkit::{KeyOptions, spawn_app};

#[tokio::test]
async fn missing_unknown_revoked_and_expired_keys_get_401_invalid_api_key() {
    let (app, upstream, key) = app_with_upstream().await;
    let client = reqwest::Client::new();
    let url = app.url("/v1/chat/completions");

    let missing = client.post(&url).json(&chat_body("hi")).send().await.unwrap();
    assert_eq!(error_code(missing, 401).await, "invalid_api_key");
    let garbage = post(&app, "/v1/chat/completions", "not-a-key", chat_body("hi")).await;
    assert_eq!(error_code(garbage, 401).await, "invalid_api_key");
    let unknown = post(&app, "/v1/chat/completions", &format!("sk-veil-{}", "A".repeat(43)), chat_body("hi")).await;
    assert_eq!(error_code(unknown, 401).await, "invalid_api_key");

    let user = app.create_user("frank", "default").await;
    let (expired, _) = app
        .create_key(&user, KeyOptions { expires_at: Some(Timestamp::now().plus_millis(-1_000)), ..Default::default() })
        .await;
    let response = post(&app, "/v1/chat/completions", &expired, chat_body("hi")).await;
    assert_eq!(error_code(response, 401).await, "invalid_api_key");

    // Revocation written to the store by another process is seen by the running server.
    assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("hi")).await.status(), 200);
    let keys = app.store.list_keys(None).await.unwrap();
    let alice_key = keys.iter().find(|k| key.starts_with(&k.prefix)).unwrap();
    app.store.revoke_key(alice_key.id, Timestamp::now()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut accepted = 1;
    loop {
        let response = post(&app, "/v1/chat/completions", &key, chat_body("hi")).await;
        if response.status() == 200 {
            accepted += 1;
        } else {
            assert_eq!(error_code(response, 401).await, "invalid_api_key");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "revoked key still accepted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(upstream.request_count(), accepted, "a refused call reached the upstream");
}

#[tokio::test]
async fn a_key_used_from_outside_its_networks_gets_403_ip_not_allowed() {
    let (app, upstream, _) = app_with_upstream().await;
    let user = app.create_user("grace", "default").await;
    let (outside, _) =
        app.create_key(&user, KeyOptions { ip_allow: vec!["10.0.0.0/8".parse().unwrap()], ..Default::default() }).await;
    let (inside, _) = app
        .create_key(&user, KeyOptions { ip_allow: vec!["127.0.0.0/8".parse().unwrap()], ..Default::default() })
        .await;
    let refused = post(&app, "/v1/chat/completions", &outside, chat_body("hi")).await;
    assert_eq!(error_code(refused, 403).await, "ip_not_allowed");
    assert_eq!(post(&app, "/v1/chat/completions", &inside, chat_body("hi")).await.status(), 200);
    assert_eq!(upstream.request_count(), 1);
}

#[tokio::test]
async fn malformed_and_mistyped_requests_are_refused_before_any_upstream_call() {
    let (app, upstream, key) = app_with_upstream().await;
    let client = reqwest::Client::new();
    let raw = |body: &'static str| {
        client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in ["{\"model\": \"gpt-4o-mini\", \"messages\": [", "[1,2]", "", "{\"model\": 42, \"messages\": []}"] {
        let response = raw(body).await.unwrap();
        assert_eq!(error_code(response, 400).await, "invalid_request_error", "body {body:?}");
    }
    let no_messages = post(&app, "/v1/chat/completions", &key, json!({"model": "gpt-4o-mini"})).await;
    assert_eq!(error_code(no_messages, 400).await, "invalid_request_error");
    let unknown_model = post(&app, "/v1/chat/completions", &key, json!({"model": "gpt-9", "messages": [{}]})).await;
    assert_eq!(error_code(unknown_model, 404).await, "model_not_found");
    assert_eq!(upstream.request_count(), 0);
    let records = stop_and_read_records(app).await;
    // The unknown name is client text: the record keeps the status, not the name.
    let not_found = records.iter().find(|r| r.record.status == 404).expect("a record of the refused call");
    assert_eq!(not_found.record.model, None);
}

#[tokio::test]
async fn oversized_bodies_get_413_request_too_large() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&format!("[server]\nmax_body_bytes = 2048\n{}", one_channel(&upstream))).await;
    let (_, key) = app.user_with_key("heidi").await;
    let response = post(&app, "/v1/chat/completions", &key, chat_body(&"x".repeat(4096))).await;
    assert_eq!(error_code(response, 413).await, "request_too_large");
    assert_eq!(upstream.request_count(), 0);
}

#[tokio::test]
async fn unknown_routes_answer_in_openai_shape_and_health_checks_need_no_key() {
    let (app, _, _) = app_with_upstream().await;
    let client = reqwest::Client::new();
    let missing = client.get(app.url("/v1/nothing-here")).send().await.unwrap();
    assert_eq!(error_code(missing, 404).await, "not_found");
    assert_eq!(client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(client.get(app.url("/readyz")).send().await.unwrap().status(), 200);
}

/// The OpenAPI document and the router agree: every documented operation exists with its
/// method, and refuses a missing credential unless it is public.
#[tokio::test]
async fn every_documented_operation_is_served() {
    use veil_server::openapi::{Access, OPERATIONS};
    let upstream = veil_testkit::mock_upstream::MockUpstream::start().await;
    // Every request below fails authentication on purpose: do not let the failures block us.
    let config = format!("[risk]\nauth_failures = {{ action = \"off\" }}\n{}", crate::helpers::one_channel(&upstream));
    let app = veil_testkit::spawn_app(&config).await;
    let client = reqwest::Client::new();
    let document: serde_json::Value =
        client.get(app.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    for operation in OPERATIONS {
        assert!(document["paths"][operation.path][operation.method].is_object());
        let path = operation.path.replace("{id}", "x").replace("{name}", "x");
        let method = reqwest::Method::from_bytes(operation.method.to_uppercase().as_bytes()).unwrap();
        let mut request = client.request(method, app.url(&path));
        if matches!(operation.method, "post" | "put") {
            request = request.json(&serde_json::json!({}));
        }
        let status = request.send().await.unwrap().status().as_u16();
        let expected = match operation.access {
            Access::Public => 200,
            Access::SignedUrl => 403,
            Access::Key | Access::Admin => 401,
        };
        assert_eq!(status, expected, "{} {}", operation.method, operation.path);
    }
}
