//! Channels created, replaced and deleted through the management API: they serve calls as
//! soon as the answer arrives, keep their credential sealed and unseen, go through the
//! config file's own validation, leave the file's channels alone, and outlive a reload and
//! a restart.

use crate::helpers::{FREE_MODELS, admin, chat_body, error_code, one_channel, post};
use serde_json::{Value, json};
use veil_testkit::mock_upstream::MockUpstream;
use veil_testkit::{TestApp, spawn_app, spawn_app_in};

const SECRET: &str = "sk-upstream-API-CHANNEL-CANARY-7731";
const MODEL: &str = "api-model";

/// The app with one file channel (`primary`, managed) and a priced model no channel serves
/// yet; returns the admin's key and a user's key with credit.
async fn app_with_priced_model(file_upstream: &MockUpstream) -> (TestApp, String, String) {
    let app = spawn_app(&one_channel(file_upstream)).await;
    let admin_key = admin(&app).await;
    let (user, user_key) = app.user_with_key("alice").await;
    app.credit(&user, "10").await;
    price_the_model(&app, &admin_key).await;
    (app, admin_key, user_key)
}

/// Prices `MODEL` through the API as `admin_key`.
async fn price_the_model(app: &TestApp, admin_key: &str) {
    let priced = client()
        .put(app.url(&format!("/api/models/{MODEL}")))
        .bearer_auth(admin_key)
        .json(&json!({"price": {"input": "0.10", "output": "0.20"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(priced.status(), 200);
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn definition(upstream: &MockUpstream) -> Value {
    json!({
        "name": "api-chan",
        "type": "openai",
        "base_url": upstream.base_url(),
        "models": [MODEL],
        "retention": "none",
        "operator": "self",
        "first_byte_timeout": "2s",
        "api_key": SECRET,
    })
}

fn model_call() -> Value {
    let mut body = chat_body("hi");
    body["model"] = json!(MODEL);
    body
}

async fn create(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    client().post(app.url("/api/channels")).bearer_auth(key).json(body).send().await.unwrap()
}

async fn get_channel(app: &TestApp, key: &str, name: &str) -> reqwest::Response {
    client().get(app.url(&format!("/api/channels/{name}"))).bearer_auth(key).send().await.unwrap()
}

/// Calls `MODEL` until it answers 200, for at most a few seconds: the API promises routing
/// has the change when it answers, so the first try is expected to succeed.
async fn call_succeeds(app: &TestApp, key: &str) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = post(app, "/v1/chat/completions", key, model_call()).await;
        if response.status() == 200 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the call kept failing: {}", response.text().await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_channel_created_edited_and_deleted_through_the_api_serves_with_its_sealed_credential() {
    let file_upstream = MockUpstream::start().await;
    let upstream = MockUpstream::start().await;
    let (app, admin_key, user_key) = app_with_priced_model(&file_upstream).await;
    assert_eq!(
        error_code(post(&app, "/v1/chat/completions", &user_key, model_call()).await, 404).await,
        "model_not_found"
    );

    let created = create(&app, &admin_key, &definition(&upstream)).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["location"], "/api/channels/api-chan");
    let text = created.text().await.unwrap();
    assert!(!text.contains(SECRET), "the credential was echoed: {text}");
    let shown: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(shown["name"], "api-chan");
    assert_eq!(shown["managed"], false);
    assert_eq!(shown["has_stored_credential"], true);
    assert_eq!(shown["first_byte_timeout"], "2s");
    assert_eq!(shown["class"], "self-hosted");
    assert!(shown.get("api_key").is_none());

    call_succeeds(&app, &user_key).await;
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.header("authorization"), Some(&*format!("Bearer {SECRET}")));
    assert_eq!(seen.body["model"], MODEL);
    assert_eq!(file_upstream.request_count(), 0);
    for path in ["/api/channels/api-chan", "/api/channels"] {
        let listed = client().get(app.url(path)).bearer_auth(&admin_key).send().await.unwrap();
        assert_eq!(listed.status(), 200);
        let listed = listed.text().await.unwrap();
        assert!(listed.contains("api-chan") && !listed.contains(SECRET), "{listed}");
    }

    // A full replacement: the name comes from the path, the stored credential stays.
    let mut edited = definition(&upstream);
    edited.as_object_mut().unwrap().remove("name");
    edited.as_object_mut().unwrap().remove("api_key");
    edited["model_mapping"] = json!({MODEL: "upstream-v2"});
    let replaced =
        client().put(app.url("/api/channels/api-chan")).bearer_auth(&admin_key).json(&edited).send().await.unwrap();
    assert_eq!(replaced.status(), 200);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(replaced["model_mapping"], json!({MODEL: "upstream-v2"}));
    assert_eq!(replaced["first_byte_timeout"], "2s");
    assert_eq!(replaced["has_stored_credential"], true);
    call_succeeds(&app, &user_key).await;
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.body["model"], "upstream-v2");
    assert_eq!(seen.header("authorization"), Some(&*format!("Bearer {SECRET}")));

    let deleted = client().delete(app.url("/api/channels/api-chan")).bearer_auth(&admin_key).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(
        error_code(post(&app, "/v1/chat/completions", &user_key, model_call()).await, 404).await,
        "model_not_found"
    );
    assert_eq!(error_code(get_channel(&app, &admin_key, "api-chan").await, 404).await, "not_found");
    assert!(app.store.channel_credentials().await.unwrap().is_empty(), "the credential goes with its channel");
    let again = client().delete(app.url("/api/channels/api-chan")).bearer_auth(&admin_key).send().await.unwrap();
    assert_eq!(error_code(again, 404).await, "not_found");

    let audit = app.store.list_audit(None, 100).await.unwrap();
    for action in ["channel.create", "channel.update", "channel.delete"] {
        let entry = audit
            .iter()
            .find(|a| a.action == action && a.target.as_deref() == Some("api-chan"))
            .unwrap_or_else(|| panic!("no {action} audit entry"));
        assert!(entry.actor.starts_with("user:"), "{}", entry.actor);
        assert!(!entry.details.to_string().contains(SECRET));
    }
}

#[tokio::test]
async fn invalid_definitions_are_refused_naming_the_field_and_nothing_is_stored() {
    let upstream = MockUpstream::start().await;
    let (app, admin_key, _) = app_with_priced_model(&upstream).await;
    let valid = definition(&upstream);
    let with = |key: &str, value: Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = valid.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let mut third_party_without_tls_verification = with("tls_verify", json!(false));
    third_party_without_tls_verification["operator"] = json!("openai");
    let cases = [
        (with("colour", json!("red")), "colour"),
        (with("weight", json!("heavy")), "weight"),
        (with("weight", json!(0)), "weight"),
        (with("priority", json!(1.5)), "priority"),
        (third_party_without_tls_verification, "tls_verify"),
        (with("base_url", json!("ftp://example.test")), "base_url"),
        (with("model_mapping", json!({"other-model": "x"})), "model_mapping.other-model"),
        (with("retention", json!("forever")), "retention"),
        (with("probe_interval", json!("1s")), "probe_interval"),
        (with("name", json!("not a name!")), "name"),
        (with("api_key", json!(5)), "api_key"),
        (with("api_key", json!("   ")), "api_key"),
        (without("type"), "type"),
        (without("name"), "name"),
        (with("models", json!([])), "models"),
    ];
    for (body, field) in cases {
        let refused = create(&app, &admin_key, &body).await;
        assert_eq!(refused.status(), 400, "{body}");
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["code"], "invalid_request_error", "{body}");
        assert_eq!(error["error"]["param"], field, "{body}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(field), "{error}");
    }
    let not_an_object = client().post(app.url("/api/channels")).bearer_auth(&admin_key).json(&json!([1])).send().await;
    assert_eq!(error_code(not_an_object.unwrap(), 400).await, "invalid_request_error");
    // A replacement may repeat the path's name, not contradict it.
    let created = create(&app, &admin_key, &valid).await;
    assert_eq!(created.status(), 201);
    let renamed = with("name", json!("other-name"));
    let refused =
        client().put(app.url("/api/channels/api-chan")).bearer_auth(&admin_key).json(&renamed).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["param"], "name");
    let refused = client()
        .put(app.url("/api/channels/api-chan"))
        .bearer_auth(&admin_key)
        .json(&with("weight", json!(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);

    let names: Vec<String> = app.store.list_channels().await.unwrap().iter().map(|c| c.name.to_string()).collect();
    assert_eq!(names, ["api-chan", "primary"], "only the valid definition was stored");
    assert_eq!(app.store.list_channels().await.unwrap()[0].weight, 1, "a refused replacement changed nothing");
    let audit = app.store.list_audit(None, 100).await.unwrap();
    let changes = ["channel.create", "channel.update", "channel.delete"];
    assert_eq!(audit.iter().filter(|a| changes.contains(&a.action.as_str())).count(), 1, "one change was made");
}

#[tokio::test]
async fn the_files_channels_are_changed_in_the_file_and_only_admins_change_channels() {
    let upstream = MockUpstream::start().await;
    let (app, admin_key, user_key) = app_with_priced_model(&upstream).await;
    let mut from_file = definition(&upstream);
    from_file["name"] = json!("primary");

    let replaced =
        client().put(app.url("/api/channels/primary")).bearer_auth(&admin_key).json(&from_file).send().await.unwrap();
    assert_eq!(replaced.status(), 409);
    let body: Value = replaced.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
    assert!(body["error"]["message"].as_str().unwrap().contains("config file"), "{body}");
    let deleted = client().delete(app.url("/api/channels/primary")).bearer_auth(&admin_key).send().await.unwrap();
    assert_eq!(error_code(deleted, 409).await, "conflict");
    assert_eq!(error_code(create(&app, &admin_key, &from_file).await, 409).await, "conflict");
    let primary = app.store.list_channels().await.unwrap().into_iter().find(|c| c.name.as_str() == "primary").unwrap();
    assert!(primary.managed && primary.models.len() == 4, "the file's channel is untouched");

    let mut unnamed = definition(&upstream);
    unnamed.as_object_mut().unwrap().remove("name");
    let missing = client().put(app.url("/api/channels/nope")).bearer_auth(&admin_key).json(&unnamed).send().await;
    assert_eq!(error_code(missing.unwrap(), 404).await, "not_found");

    // Non-admins are refused every change.
    assert_eq!(error_code(create(&app, &user_key, &definition(&upstream)).await, 403).await, "permission_denied");
    let created = create(&app, &admin_key, &definition(&upstream)).await;
    assert_eq!(created.status(), 201);
    assert_eq!(error_code(create(&app, &admin_key, &definition(&upstream)).await, 409).await, "conflict");
    let put = client()
        .put(app.url("/api/channels/api-chan"))
        .bearer_auth(&user_key)
        .json(&definition(&upstream))
        .send()
        .await;
    assert_eq!(error_code(put.unwrap(), 403).await, "permission_denied");
    let delete = client().delete(app.url("/api/channels/api-chan")).bearer_auth(&user_key).send().await.unwrap();
    assert_eq!(error_code(delete, 403).await, "permission_denied");

    // Disabling, enabling and the credential route work on an API channel too.
    let disabled =
        client().post(app.url("/api/channels/api-chan/disable")).bearer_auth(&admin_key).send().await.unwrap();
    assert_eq!(disabled.json::<Value>().await.unwrap()["state"], "disabled");
    assert_eq!(
        error_code(post(&app, "/v1/chat/completions", &user_key, model_call()).await, 404).await,
        "model_not_found"
    );
    let enabled = client().post(app.url("/api/channels/api-chan/enable")).bearer_auth(&admin_key).send().await.unwrap();
    assert_eq!(enabled.json::<Value>().await.unwrap()["state"], "healthy");
    let rotated = "sk-upstream-ROTATED-4410";
    let stored = client()
        .put(app.url("/api/channels/api-chan/credential"))
        .bearer_auth(&admin_key)
        .json(&json!({"api_key": rotated}))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200);
    call_succeeds(&app, &user_key).await;
    assert_eq!(upstream.last_request().unwrap().header("authorization"), Some(&*format!("Bearer {rotated}")));
}

#[tokio::test]
async fn api_channels_outlive_a_reload_and_a_restart() {
    let upstream = MockUpstream::start().await;
    let config = format!(
        "[[channel]]\nname = \"from-file\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o-mini\"]\n{FREE_MODELS}",
        upstream.base_url()
    );
    let app = spawn_app(&config).await;
    let admin_key = admin(&app).await;
    let (user, user_key) = app.user_with_key("alice").await;
    app.credit(&user, "10").await;
    price_the_model(&app, &admin_key).await;
    assert_eq!(create(&app, &admin_key, &definition(&upstream)).await.status(), 201);

    // SIGHUP: the file's seeding retires only the file's own channels.
    app.reload().await.unwrap();
    assert_eq!(get_channel(&app, &admin_key, "api-chan").await.status(), 200);
    call_succeeds(&app, &user_key).await;

    let data_dir = app.stop().await;
    let app = spawn_app_in(&config, data_dir).await;
    let shown = get_channel(&app, &admin_key, "api-chan").await;
    assert_eq!(shown.status(), 200);
    let shown: Value = shown.json().await.unwrap();
    assert_eq!((shown["managed"].clone(), shown["has_stored_credential"].clone()), (json!(false), json!(true)));
    call_succeeds(&app, &user_key).await;
    let seen = upstream.last_request().unwrap();
    assert_eq!(seen.body["model"], MODEL);
    assert_eq!(seen.header("authorization"), Some(&*format!("Bearer {SECRET}")), "the sealed credential still opens");
}
