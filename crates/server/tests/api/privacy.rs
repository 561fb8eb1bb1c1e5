//! Data policies enforced at routing, the identity firewall, and the data receipt.

use crate::helpers::*;
use serde_json::{Value, json};
use veil_domain::ErrorCode;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::{KeyOptions, spawn_app};

fn channel(name: &str, upstream: &MockUpstream, priority: i32, policy: &str) -> String {
    format!(
        "\n[[channel]]\nname = \"{name}\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o-mini\"]\npriority = {priority}\n{policy}\n",
        upstream.base_url()
    )
}

#[tokio::test]
async fn a_call_no_channel_qualifies_for_fails_closed_naming_the_constraint() {
    let upstream = MockUpstream::start().await;
    let config = format!(
        "[[group]]\nname = \"default\"\nmax_retention_days = 7\n{}",
        channel("keeps-30-days", &upstream, 0, "retention = \"30d\"")
    );
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("ivy").await;
    let response = post(&app, "/v1/chat/completions", &key, chat_body("hi")).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "policy_unsatisfiable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_retention_days = 7"), "{message}");
    assert_eq!(upstream.request_count(), 0);
    let records = stop_and_read_records(app).await;
    assert_eq!(records[0].record.error_code, Some(ErrorCode::PolicyUnsatisfiable));
}

#[tokio::test]
async fn routing_and_failover_never_leave_the_policy() {
    let us = MockUpstream::start().await;
    let eu = MockUpstream::start().await;
    eu.set_default(Reply::openai_error(503, "down", "server_busy"));
    let config = format!(
        "[[group]]\nname = \"default\"\nregions = [\"EU\"]\n{}{}",
        channel("us-fast", &us, 10, "region = \"US\""),
        channel("eu-slow", &eu, 1, "region = \"EU\"\nretention = \"none\"\noperator = \"self\"")
    ) + FREE_MODELS;
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("jan").await;
    // The EU channel fails; the US one is higher priority and healthy, but out of policy.
    let response = post(&app, "/v1/chat/completions", &key, chat_body("hi")).await;
    assert_eq!(response.status(), 502);
    assert_eq!(us.request_count(), 0, "a fallback left the caller's region");
    assert_eq!(eu.request_count(), 1);
    let receipt = response.headers()["veil-data-policy"].to_str().unwrap().to_owned();
    assert!(receipt.contains("channel=eu-slow") && receipt.contains("region=EU"), "{receipt}");
}

#[tokio::test]
async fn training_channels_need_the_groups_and_the_keys_consent() {
    let upstream = MockUpstream::start().await;
    let config = format!(
        "[[group]]\nname = \"free\"\nallow_training = true\nfirewall = \"identity\"\n{}",
        channel("free-tier", &upstream, 0, "training = true")
    ) + FREE_MODELS;
    let app = spawn_app(&config).await;
    let user = app.create_user("kim", "free").await;
    let (no_consent, _) = app.create_key(&user, KeyOptions::default()).await;
    let (consent, _) = app.create_key(&user, KeyOptions { allow_training: true, ..Default::default() }).await;
    let refused = post(&app, "/v1/chat/completions", &no_consent, chat_body("hi")).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("allow_training"));
    let allowed = post(&app, "/v1/chat/completions", &consent, chat_body("hi")).await;
    assert_eq!(allowed.status(), 200);
    let receipt = allowed.headers()["veil-data-policy"].to_str().unwrap().to_owned();
    assert!(receipt.starts_with("class=free;") && receipt.contains("training=yes"), "{receipt}");
    // A user of the default group cannot reach it even with consent: the group says no.
    let other = app.create_user("lee", "default").await;
    let (other_key, _) = app.create_key(&other, KeyOptions { allow_training: true, ..Default::default() }).await;
    assert_eq!(post(&app, "/v1/chat/completions", &other_key, chat_body("hi")).await.status(), 403);
    assert_eq!(upstream.request_count(), 1);
}

#[tokio::test]
async fn the_identity_firewall_sends_no_identifiers_upstream() {
    let (app, upstream, key) = app_with_upstream().await;
    let mut body = chat_body("hi");
    body["user"] = json!("end-user-42");
    body["safety_identifier"] = json!("sid-42");
    body["metadata"] = json!({"customer": "acme"});
    body["prompt_cache_key"] = json!("pck-42");
    body["store"] = json!(true);
    let response = reqwest::Client::new()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("user-agent", "ClientApp/1.0 (device-id 42)")
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-real-ip", "198.51.100.7")
        .header("forwarded", "for=198.51.100.7")
        .header("openai-organization", "org-client")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let receipt = response.headers()["veil-data-policy"].to_str().unwrap();
    assert_eq!(
        receipt,
        "class=external; channel=primary; retention=30d; training=no; region=unspecified; firewall=identity; redactions=0"
    );

    let sent = upstream.last_request().unwrap();
    for field in ["user", "metadata", "prompt_cache_key"] {
        assert!(sent.body.get(field).is_none(), "{field} reached the upstream");
    }
    // The client's end-user id is replaced by a pseudonymous abuse id: a keyed hash of the
    // account, stable within the month, revealing nothing of what the client sent.
    let abuse_id = sent.body["safety_identifier"].as_str().unwrap().to_owned();
    let hex = abuse_id.strip_prefix("veil_").unwrap_or_default();
    assert!(hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()), "{abuse_id}");
    assert_eq!(sent.body["store"], false);
    let raw_headers = format!("{:?}", sent.headers);
    for leaked in ["198.51.100.7", "ClientApp", "device-id", "org-client", &key[..20]] {
        assert!(!raw_headers.contains(leaked), "{leaked} reached the upstream in {raw_headers}");
    }
    let mut again = chat_body("hi");
    again["user"] = json!("a-different-end-user");
    post(&app, "/v1/chat/completions", &key, again).await;
    assert_eq!(upstream.last_request().unwrap().body["safety_identifier"], abuse_id.as_str());
}

#[tokio::test]
async fn firewall_off_passes_identifiers_through() {
    let upstream = MockUpstream::start().await;
    let app =
        spawn_app(&format!("[[group]]\nname = \"default\"\nfirewall = \"off\"\n{}", one_channel(&upstream))).await;
    let (_, key) = app.user_with_key("max").await;
    let mut body = chat_body("hi");
    body["user"] = json!("end-user-42");
    let response = post(&app, "/v1/chat/completions", &key, body).await;
    assert!(response.headers()["veil-data-policy"].to_str().unwrap().contains("firewall=off"));
    assert_eq!(upstream.last_request().unwrap().body["user"], "end-user-42");
    assert!(upstream.last_request().unwrap().body.get("store").is_none());
}

#[tokio::test]
async fn the_transparency_pages_publish_what_routing_enforces() {
    let upstream = MockUpstream::start().await;
    let config = format!(
        "[privacy]\nlog_retention_days = 45\nip_logging = \"hashed\"\n{}\n[[model]]\nname = \"gpt-4o-mini\"\nprice = {{ input = 0.15, cached_input = 0.075, output = 0.6 }}\n",
        channel("eu-<b>", &upstream, 0, "region = \"EU\"\nretention = \"7d\"\noperator = \"acme\"")
            .replace("eu-<b>", "eu-main")
    );
    let app = spawn_app(&config).await;
    let client = reqwest::Client::new();

    let published: Value = client.get(app.url("/api/privacy/models")).send().await.unwrap().json().await.unwrap();
    let model = &published["models"][0];
    assert_eq!(model["name"], "gpt-4o-mini");
    assert_eq!(model["price"]["input"], "0.15");
    let policy = &model["data_policies"][0];
    assert_eq!(policy["class"], "external");
    assert_eq!(policy["retention"], "7d");
    assert_eq!(policy["training"], false);
    assert_eq!(policy["region"], "EU");
    assert_eq!(policy["operator"], "acme");
    assert_eq!(published["logging"]["content_stored"], false);
    assert_eq!(published["logging"]["call_record_retention_days"], 45);

    let html = client.get(app.url("/models")).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("gpt-4o-mini") && html.contains("7d") && html.contains("acme"), "{html}");
    let privacy = client.get(app.url("/privacy")).send().await.unwrap().text().await.unwrap();
    assert!(privacy.contains("45 days") && privacy.contains("hashed"), "{privacy}");
    assert_eq!(client.get(app.url("/")).send().await.unwrap().status(), 200);

    // The model list carries the same policy for a signed-in caller.
    let (_, key) = app.user_with_key("nia").await;
    let listed: Value = client.get(app.url("/v1/models")).bearer_auth(&key).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"][0]["data_policies"][0]["retention"], "7d");
}

#[tokio::test]
async fn deny_rules_block_before_any_upstream_call_and_record_only_the_rule() {
    let upstream = MockUpstream::start().await;
    let config = format!(
        "[[group]]\nname = \"default\"\ndeny_keywords = [\"forbidden phrase\"]\ndeny_patterns = ['\\bDROP\\s+TABLE\\b']\n{}",
        one_channel(&upstream)
    );
    let app = spawn_app(&config).await;
    let (_, key) = app.user_with_key("otto").await;
    let blocked = post(&app, "/v1/chat/completions", &key, chat_body("say the Forbidden Phrase now")).await;
    assert_eq!(error_code(blocked, 400).await, "content_blocked");
    let mut tool_args = chat_body("fine");
    tool_args["messages"][0]["content"] = json!([{"type": "text", "text": "x; DROP   TABLE users"}]);
    let blocked = post(&app, "/v1/chat/completions", &key, tool_args).await;
    assert_eq!(error_code(blocked, 400).await, "content_blocked");
    assert_eq!(post(&app, "/v1/chat/completions", &key, chat_body("harmless")).await.status(), 200);
    assert_eq!(upstream.request_count(), 1, "a blocked call reached the upstream");

    let records = stop_and_read_records(app).await;
    let mut rules: Vec<String> = records.iter().filter_map(|r| r.record.rule_id.clone()).collect();
    rules.sort();
    assert_eq!(rules, ["default:keyword:0", "default:pattern:0"]);
    assert!(
        records
            .iter()
            .filter(|r| r.record.rule_id.is_some())
            .all(|r| r.record.error_code == Some(ErrorCode::ContentBlocked) && r.record.cost.nanos() == 0)
    );
}

#[tokio::test]
async fn channel_credentials_stored_through_the_api_are_sealed_and_write_only() {
    use veil_domain::{GroupName, NewUser, Role, UserName};
    let upstream = MockUpstream::start().await;
    let config = format!(
        "[[channel]]\nname = \"vault\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"gpt-4o-mini\"]\napi_key_env = \"VEIL_TEST_CREDENTIAL_THAT_IS_NEVER_SET\"\n",
        upstream.base_url()
    ) + FREE_MODELS;
    let app = spawn_app(&config).await;
    let admin = app
        .store
        .create_user(NewUser {
            name: UserName::parse("root-admin").unwrap(),
            email: None,
            role: Role::Admin,
            group: GroupName::default_group(),
            password_hash: None,
        })
        .await
        .unwrap();
    let (admin_key, _) = app.create_key(&admin, KeyOptions::default()).await;
    let (_, user_key) = app.user_with_key("ursula").await;
    let client = reqwest::Client::new();
    let url = app.url("/api/channels/vault/credential");
    let credential = "sk-upstream-SEALED-CANARY-5521";

    // Without a credential the channel fails closed.
    assert_eq!(
        error_code(post(&app, "/v1/chat/completions", &user_key, chat_body("hi")).await, 502).await,
        "upstream_error"
    );
    assert_eq!(upstream.request_count(), 0);

    let refused = client.put(&url).bearer_auth(&user_key).json(&json!({"api_key": credential})).send().await.unwrap();
    assert_eq!(error_code(refused, 403).await, "permission_denied");
    let missing = client
        .put(app.url("/api/channels/nope/credential"))
        .bearer_auth(&admin_key)
        .json(&json!({"api_key": credential}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(missing, 404).await, "not_found");

    let stored = client.put(&url).bearer_auth(&admin_key).json(&json!({"api_key": credential})).send().await.unwrap();
    assert_eq!(stored.status(), 200);
    let stored = stored.text().await.unwrap();
    assert!(!stored.contains(credential), "the credential was echoed back: {stored}");

    assert_eq!(post(&app, "/v1/chat/completions", &user_key, chat_body("hi")).await.status(), 200);
    assert_eq!(upstream.last_request().unwrap().header("authorization"), Some(&*format!("Bearer {credential}")));

    // Sealed at rest: not in any file of the data directory.
    for entry in std::fs::read_dir(app.data_dir.path()).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !bytes.windows(credential.len()).any(|w| w == credential.as_bytes()),
            "plaintext in {:?}",
            entry.path()
        );
    }
    let audit = app.store.list_audit(None, 100).await.unwrap();
    assert!(audit.iter().any(|a| a.action == "channel.credential.set" && a.target.as_deref() == Some("vault")));

    let cleared = client.delete(&url).bearer_auth(&admin_key).send().await.unwrap();
    assert_eq!(cleared.status(), 200);
    assert_eq!(
        error_code(post(&app, "/v1/chat/completions", &user_key, chat_body("hi")).await, 502).await,
        "upstream_error"
    );
}

#[tokio::test]
async fn a_key_narrows_its_groups_requirement() {
    use veil_domain::{FirewallMode, KeyPrivacy};
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&one_channel(&upstream)).await;
    let user = app.create_user("kai", "default").await;
    // Stricter firewall than the group's `identity`: personal data is replaced.
    let pii = KeyPrivacy { firewall: Some(FirewallMode::Pii), ..Default::default() };
    let (pii_key, _) = app.create_key(&user, KeyOptions { privacy: pii, ..Default::default() }).await;
    let response = post(&app, "/v1/chat/completions", &pii_key, chat_body("mail jane.doe@example.com")).await;
    assert!(response.headers()["veil-data-policy"].to_str().unwrap().contains("firewall=pii; redactions=1"));
    let sent = String::from_utf8_lossy(&upstream.last_request().unwrap().raw_body).into_owned();
    assert!(!sent.contains("jane.doe@example.com") && sent.contains("[EMAIL_1]"), "{sent}");
    // Shorter retention than the channel keeps: nothing qualifies.
    let short = KeyPrivacy { max_retention_days: Some(7), ..Default::default() };
    let (short_key, _) = app.create_key(&user, KeyOptions { privacy: short, ..Default::default() }).await;
    let refused = post(&app, "/v1/chat/completions", &short_key, chat_body("hi")).await;
    assert_eq!(error_code(refused, 403).await, "policy_unsatisfiable");
    // A key cannot loosen its group: `off` under an `identity` group stays `identity`.
    let off = KeyPrivacy { firewall: Some(FirewallMode::Off), ..Default::default() };
    let (off_key, _) = app.create_key(&user, KeyOptions { privacy: off, ..Default::default() }).await;
    let mut body = chat_body("hi");
    body["user"] = json!("end-user");
    let response = post(&app, "/v1/chat/completions", &off_key, body).await;
    assert!(response.headers()["veil-data-policy"].to_str().unwrap().contains("firewall=identity"));
    assert!(upstream.last_request().unwrap().body.get("user").is_none());
}
