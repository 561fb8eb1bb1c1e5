//! `POST /api/redeem`: a code credits its amount exactly once, refusals do not tell unknown,
//! spent and expired codes apart, malformed bodies get OpenAI-shaped errors, guessing is
//! throttled per user, and racing users are credited once between them.

use crate::helpers::*;
use serde_json::{Value, json};
use veil_domain::{Money, Timestamp};
use veil_testkit::{TestApp, spawn_app};

const REFUSAL: &str = "This code is not valid or has already been redeemed.";

async fn redeem(app: &TestApp, key: &str, code: &str) -> reqwest::Response {
    post(app, "/api/redeem", key, json!({ "code": code })).await
}

/// Asserts the refusal every unusable code gets, and returns its message.
async fn refused(response: reqwest::Response) -> String {
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

fn money(raw: &str) -> Money {
    Money::parse_decimal(raw).unwrap()
}

#[tokio::test]
async fn a_code_credits_its_amount_once_and_is_audited_without_the_code() {
    let app = spawn_app("").await;
    let (alice, key) = app.user_with_key("alice").await;
    let code = app.create_codes("5", 1, None).await.remove(0);

    // A pasted code with a stray newline still counts.
    let response = redeem(&app, &key, &format!(" {code}\n")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"credited": "5.0", "balance": "5.0"}));
    assert_eq!(app.store.balance(alice.id).await.unwrap(), money("5"));

    // Twice is refused and changes nothing.
    assert_eq!(refused(redeem(&app, &key, &code).await).await, REFUSAL);
    assert_eq!(app.store.balance(alice.id).await.unwrap(), money("5"));
    let ledger = app.store.list_ledger(alice.id).await.unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].kind, veil_domain::LedgerKind::Topup);
    assert_eq!(ledger[0].note.as_deref(), Some(format!("redemption code {}", &code[..9]).as_str()));

    let audit = app.store.list_audit(Some(alice.id), 100).await.unwrap();
    let entries: Vec<_> = audit.iter().filter(|a| a.action == "code.redeem").collect();
    assert_eq!(entries.len(), 1, "one audit entry per redemption, none for the refusal");
    assert_eq!(entries[0].details, json!({"prefix": &code[..9], "amount": "5.0"}));
    assert_eq!(entries[0].actor, format!("user:{}", alice.id));
    let everything = format!("{audit:?}{ledger:?}{:?}", app.store.list_redemption_codes(0).await.unwrap());
    assert!(!everything.contains(&code[9..]), "the code (beyond its prefix) was kept somewhere");
}

#[tokio::test]
async fn expired_unknown_and_malformed_codes_are_refused_alike() {
    let app = spawn_app("").await;
    let (alice, key) = app.user_with_key("alice").await;
    let expired = app.create_codes("5", 1, Some(Timestamp::now().plus_millis(-1))).await.remove(0);
    let unknown = "veil-000000000000000000000000";
    let messages = [
        refused(redeem(&app, &key, &expired).await).await,
        refused(redeem(&app, &key, unknown).await).await,
        refused(redeem(&app, &key, "hello").await).await,
        refused(redeem(&app, &key, "").await).await,
    ];
    assert!(messages.iter().all(|m| m == REFUSAL), "{messages:?}");
    assert_eq!(app.store.balance(alice.id).await.unwrap(), Money::ZERO);
    // A code about to expire still works until it does.
    let later = app.create_codes("1.5", 1, Some(Timestamp::now().plus_millis(60_000))).await.remove(0);
    assert_eq!(redeem(&app, &key, &later).await.status(), 200);
    assert_eq!(app.store.balance(alice.id).await.unwrap(), money("1.5"));
}

#[tokio::test]
async fn malformed_bodies_are_refused_in_openai_shape_and_never_count_as_guesses() {
    let app = spawn_app("").await;
    let (alice, key) = app.user_with_key("alice").await;
    let client = reqwest::Client::new();
    let raw = |body: &'static str| {
        client
            .post(app.url("/api/redeem"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for _ in 0..3 {
        for body in ["", "{not json", "[\"veil-x\"]", "{}", "{\"code\": 5}", "{\"code\": null}", "{\"codes\": \"x\"}"] {
            let response = raw(body).await.unwrap();
            assert_eq!(error_code(response, 400).await, "invalid_request_error", "body {body:?}");
        }
    }
    let missing: Value = raw("{}").await.unwrap().json().await.unwrap();
    assert_eq!(missing["error"]["param"], "code");

    let unauthenticated = client.post(app.url("/api/redeem")).json(&json!({"code": "veil-x"})).send().await.unwrap();
    assert_eq!(error_code(unauthenticated, 401).await, "invalid_api_key");

    // 22 malformed requests, yet no throttle: only presented codes are guesses.
    let code = app.create_codes("2", 1, None).await.remove(0);
    assert_eq!(redeem(&app, &key, &code).await.status(), 200);
    assert_eq!(app.store.balance(alice.id).await.unwrap(), money("2"));
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_user() {
    let app = spawn_app("").await;
    let (alice, key) = app.user_with_key("alice").await;
    let (bob, bob_key) = app.user_with_key("bob").await;
    let code = app.create_codes("3", 1, None).await.remove(0);
    for i in 0..10 {
        let guess = format!("veil-{i:024}");
        assert_eq!(refused(redeem(&app, &key, &guess).await).await, REFUSAL, "guess {i}");
    }
    // The door is shut, even for a valid code, and says for how long.
    let throttled = redeem(&app, &key, &code).await;
    let retry_after: u64 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(error_code(throttled, 429).await, "rate_limit_exceeded");
    assert_eq!(app.store.balance(alice.id).await.unwrap(), Money::ZERO);

    // Someone else is not affected, and the code was not spent by the refused attempt.
    let response = redeem(&app, &bob_key, &code).await;
    assert_eq!(response.status(), 200);
    assert_eq!(app.store.balance(bob.id).await.unwrap(), money("3"));
}

#[tokio::test]
async fn users_racing_for_one_code_are_credited_once() {
    let app = spawn_app("").await;
    let (alice, alice_key) = app.user_with_key("alice").await;
    let (bob, bob_key) = app.user_with_key("bob").await;
    let code = app.create_codes("7.25", 1, None).await.remove(0);
    let attempts = (0..8).map(|i| {
        let key = if i % 2 == 0 { &alice_key } else { &bob_key };
        redeem(&app, key, &code)
    });
    let statuses: Vec<u16> =
        futures_util::future::join_all(attempts).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 7, "{statuses:?}");
    let total = app.store.balance(alice.id).await.unwrap().nanos() + app.store.balance(bob.id).await.unwrap().nanos();
    assert_eq!(total, money("7.25").nanos(), "credited exactly once between them");
}

#[tokio::test]
async fn a_redeemed_credit_is_spendable_at_once_on_the_running_server() {
    use veil_testkit::mock_upstream::{MockUpstream, Reply};
    let upstream = MockUpstream::start().await;
    // A refresh interval far beyond the test: only the redemption's own refresh can make
    // the credit visible to the cached balance in time.
    let app = spawn_app(&format!(
        r#"
[server]
refresh_interval = "1h"

[[channel]]
name = "main"
type = "openai"
base_url = "{}"
models = ["paid"]

[[model]]
name = "paid"
price = {{ input = 1, output = 2 }}
"#,
        upstream.base_url()
    ))
    .await;
    let (_, key) = app.user_with_key("alice").await;
    upstream.set_default(Reply::chat_with_usage("ok", 10, 0, 5));
    let ask = json!({"model": "paid", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let broke = post(&app, "/v1/chat/completions", &key, ask.clone()).await;
    assert_eq!(error_code(broke, 429).await, "insufficient_quota");

    let code = app.create_codes("1", 1, None).await.remove(0);
    assert_eq!(redeem(&app, &key, &code).await.status(), 200);
    let response = post(&app, "/v1/chat/completions", &key, ask).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn a_burst_of_parallel_guesses_is_cut_at_the_limit() {
    let app = spawn_app("").await;
    let (_, key) = app.user_with_key("alice").await;
    let guesses: Vec<String> = (0..30).map(|i| format!("veil-{i:024}")).collect();
    let statuses: Vec<u16> = futures_util::future::join_all(guesses.iter().map(|g| redeem(&app, &key, g)))
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 10, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20, "{statuses:?}");
}

#[tokio::test]
async fn successful_redemptions_never_use_up_the_guess_budget() {
    let app = spawn_app("").await;
    let (alice, key) = app.user_with_key("alice").await;
    for code in app.create_codes("0.5", 12, None).await {
        assert_eq!(redeem(&app, &key, &code).await.status(), 200);
    }
    assert_eq!(app.store.balance(alice.id).await.unwrap(), money("6"));
}
