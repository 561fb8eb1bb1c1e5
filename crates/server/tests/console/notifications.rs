//! Notifications, black-box: the real application mails a local SMTP sink
//! (`veil_testkit::smtp`) and posts to a local webhook. A console sign-in mails the user
//! and tells the webhook (ids only, no address); opting out stops the mail; a key that
//! expires in 6 days is reminded exactly once however often the job runs; no relayed
//! content ever reaches a mail or a webhook body.

use crate::support::{Console, config, relay_chat};
use axum::http::HeaderMap;
use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use veil_domain::{LedgerEntry, LedgerKind, Money, Role, Timestamp};
use veil_store::UserChange;
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::smtp::{SmtpMessage, SmtpSink};
use veil_testkit::{KeyOptions, TestApp, spawn_app};

const PASSWORD: &str = "correct horse battery";

/// Records every webhook body.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn hook() -> Hook {
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let kept = Arc::clone(&bodies);
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_: HeaderMap, body: Bytes| async move {
            kept.lock().unwrap().push(body);
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    #[allow(clippy::disallowed_methods)] // the test owns the hook and aborts it on drop
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    Hook { url, bodies, server }
}

impl Hook {
    fn events(&self, name: &str) -> Vec<Value> {
        let bodies = self.bodies.lock().unwrap().clone();
        bodies
            .iter()
            .filter_map(|body| serde_json::from_slice::<Value>(body).ok())
            .filter(|event| event["event"] == name)
            .collect()
    }

    async fn wait_for(&self, name: &str) -> Value {
        for _ in 0..200 {
            if let Some(event) = self.events(name).into_iter().next() {
                return event;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no {name} event reached the webhook");
    }

    fn raw(&self) -> Vec<String> {
        self.bodies.lock().unwrap().iter().map(|body| String::from_utf8_lossy(body).into_owned()).collect()
    }
}

async fn start(upstream: &MockUpstream, smtp: &SmtpSink, hook: &Hook, extra: &str) -> TestApp {
    let notifications = format!(
        "[privacy]\nip_logging = \"truncated\"\n\n[notifications]\nsmtp_url = \"{}\"\nsmtp_from = \"veil@relay.test\"\n\
         webhook_url = \"{}\"\n{extra}",
        smtp.url(),
        hook.url
    );
    spawn_app(&config(upstream, &notifications)).await
}

fn to(messages: &[SmtpMessage], address: &str, subject: &str) -> Vec<SmtpMessage> {
    messages.iter().filter(|m| m.to == [address] && m.data.contains(subject)).cloned().collect()
}

#[tokio::test]
async fn a_console_sign_in_mails_the_user_and_tells_the_webhook_without_any_content() {
    const PROMPT: &str = "CANARY-PROMPT-c3n0t1fy";
    const ANSWER: &str = "CANARY-ANSWER-c3n0t1fy";
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::chat(ANSWER));
    let (smtp, hook) = (SmtpSink::start().await, hook().await);
    let app = start(&upstream, &smtp, &hook, "").await;
    let mut console = Console::new(&app);
    console.sign_up("ann", "ann@example.com", PASSWORD).await;
    // A relayed call with a canary, so that a leak would have something to leak.
    let secret = console.create_key("canary").await;
    assert_eq!(relay_chat(&app, &secret, PROMPT).await.0, StatusCode::OK);

    let mut again = Console::new(&app);
    let signed_in = again.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER, "{}", signed_in.body);
    let messages = smtp.wait_for(1, Duration::from_secs(10)).await;
    let mails = to(&messages, "ann@example.com", "Subject: New sign-in to your Veil account");
    assert_eq!(mails.len(), 1, "{messages:#?}");
    let mail = &mails[0];
    assert_eq!(mail.from, "veil@relay.test");
    assert!(mail.data.contains("To: <ann@example.com>"), "{}", mail.data);
    // The time, and the address only as ip_logging = "truncated" allows.
    assert!(mail.data.contains("from 127.0.0.0."), "{}", mail.data);
    assert!(!mail.data.contains("127.0.0.1"), "{}", mail.data);
    assert!(mail.data.contains(&Timestamp::now().to_rfc3339()[..10]), "{}", mail.data);

    // The operators' webhook gets the same event: the user's id, never the address.
    let event = hook.wait_for("security.sign_in").await;
    let user = app.store.user_by_email("ann@example.com").await.unwrap().unwrap();
    assert_eq!(event["user"], user.id.to_string());
    for body in hook.raw() {
        assert!(!body.contains("ann@example.com"), "{body}");
        assert!(!body.contains("127.0.0"), "{body}");
    }
    for text in smtp.messages().iter().map(|m| m.data.clone()).chain(hook.raw()) {
        assert!(!text.contains(PROMPT) && !text.contains(ANSWER), "relayed content leaked:\n{text}");
    }
}

#[tokio::test]
async fn opting_out_of_security_alerts_stops_the_sign_in_mail() {
    let upstream = MockUpstream::start().await;
    let (smtp, hook) = (SmtpSink::start().await, hook().await);
    let app = start(&upstream, &smtp, &hook, "").await;
    let mut console = Console::new(&app);
    console.sign_up("bea", "bea@example.com", PASSWORD).await;
    let page = console.get("/console/notifications").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"<label class="inline" for="security">"#), "{}", page.body);
    assert!(page.body.contains(r#"id="security" name="security" type="checkbox" value="on" checked"#));
    // Without the CSRF token nothing changes.
    let refused = console.post("/console/notifications", &[("spending", "on")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let bad = console.post("/console/notifications", &[("csrf", &page.csrf()), ("balance_alert", "lots")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let saved = console
        .post(
            "/console/notifications",
            &[("csrf", &page.csrf()), ("spending", "on"), ("key_expiry", "on"), ("balance_alert", "2.50")],
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
    assert!(saved.body.contains("were saved"));
    assert!(!saved.body.contains(r#"name="security" type="checkbox" value="on" checked"#), "{}", saved.body);
    assert!(saved.body.contains(r#"value="2.5""#) || saved.body.contains(r#"value="2.50""#), "{}", saved.body);

    let mut elsewhere = Console::new(&app);
    assert_eq!(elsewhere.sign_in("bea@example.com", PASSWORD).await.status, StatusCode::SEE_OTHER);
    // The webhook still hears of it: that is the operators' choice, not the user's.
    hook.wait_for("security.sign_in").await;
    // Opt back in and sign in again: events go out in order, so once the second mail is
    // here the first sign-in had its turn and sent nothing.
    let csrf = console.get("/console/notifications").await.csrf();
    let saved = console.post("/console/notifications", &[("csrf", &csrf), ("security", "on")]).await;
    assert_eq!(saved.status, StatusCode::OK);
    let mut third = Console::new(&app);
    assert_eq!(third.sign_in("bea@example.com", PASSWORD).await.status, StatusCode::SEE_OTHER);
    smtp.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = to(&smtp.messages(), "bea@example.com", "New sign-in");
    assert_eq!(messages.len(), 1, "only the sign-in after opting back in is mailed: {messages:#?}");
    assert_eq!(hook.events("security.sign_in").len(), 2);
    // The export shows the choices.
    let export = console.get("/console/privacy/export").await;
    assert!(export.body.contains("notification_preferences"), "{}", export.body);
}

#[tokio::test]
async fn a_key_expiring_in_six_days_is_reminded_exactly_once() {
    let upstream = MockUpstream::start().await;
    let (smtp, hook) = (SmtpSink::start().await, hook().await);
    // The job runs every 100 ms: many times during this test.
    let app = start(&upstream, &smtp, &hook, "check_interval = \"100ms\"\n").await;
    let mut console = Console::new(&app);
    console.sign_up("cai", "cai@example.com", PASSWORD).await;
    let user = app.store.user_by_email("cai@example.com").await.unwrap().unwrap();
    let six_days = Timestamp::now().plus_millis(6 * 24 * 3600 * 1000);
    let (_, key) = app.create_key(&user, KeyOptions { expires_at: Some(six_days), ..KeyOptions::default() }).await;
    let far = Timestamp::now().plus_millis(30 * 24 * 3600 * 1000);
    app.create_key(&user, KeyOptions { expires_at: Some(far), ..KeyOptions::default() }).await;

    let event = hook.wait_for("key.expiring").await;
    assert_eq!(event["key"], key.id.to_string());
    assert_eq!(event["days_before"], 7);
    // Let the job run several more times.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hook.events("key.expiring").len(), 1, "one reminder, however often the job runs");
    let mails = to(&smtp.messages(), "cai@example.com", "Subject: An API key expires within 7 days");
    assert_eq!(mails.len(), 1, "{:#?}", smtp.messages());
    assert!(mails[0].data.contains(&key.id.to_string()));
}

#[tokio::test]
async fn a_low_balance_and_a_nearly_used_quota_are_told_once() {
    let upstream = MockUpstream::start().await;
    let (smtp, hook) = (SmtpSink::start().await, hook().await);
    let app = start(&upstream, &smtp, &hook, "check_interval = \"100ms\"\n").await;
    let mut console = Console::new(&app);
    console.sign_up("dan", "dan@example.com", PASSWORD).await;
    let user = app.store.user_by_email("dan@example.com").await.unwrap().unwrap();
    app.credit(&user, "10").await;
    let csrf = console.get("/console/notifications").await.csrf();
    let fields = [("csrf", csrf.as_str()), ("spending", "on"), ("balance_alert", "5")];
    assert_eq!(console.post("/console/notifications", &fields).await.status, StatusCode::OK);
    let quota = Money::parse_decimal("1").unwrap();
    let (_, key) = app.create_key(&user, KeyOptions { quota: Some(quota), ..KeyOptions::default() }).await;
    // Spending: 0.85 of the key's quota of 1, and the balance falls to 10 - 0.85 - 5 = 4.15 < 5.
    for amount in ["-0.85", "-5"] {
        let entry = LedgerEntry {
            user_id: user.id,
            key_id: Some(key.id),
            kind: LedgerKind::Charge,
            amount: Money::parse_decimal(amount).unwrap(),
            time: Timestamp::now(),
            request_id: None,
            note: None,
        };
        app.store.append_ledger(&entry).await.unwrap();
    }
    let low = hook.wait_for("spending.balance_low").await;
    assert_eq!(low["user"], user.id.to_string());
    let quota_event = hook.wait_for("spending.key_quota").await;
    assert_eq!(quota_event["key"], key.id.to_string());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hook.events("spending.balance_low").len(), 1, "told once while the balance stays low");
    assert_eq!(hook.events("spending.key_quota").len(), 1);
    let mails = smtp.messages();
    assert_eq!(to(&mails, "dan@example.com", "Subject: Your Veil balance is low").len(), 1, "{mails:#?}");
    assert_eq!(to(&mails, "dan@example.com", "Subject: An API key has nearly used its quota").len(), 1);
}

#[tokio::test]
async fn a_disabled_channel_is_mailed_to_admins_only() {
    let upstream = MockUpstream::start().await;
    let (smtp, hook) = (SmtpSink::start().await, hook().await);
    let app = start(&upstream, &smtp, &hook, "").await;
    for (name, email) in [("ada", "ada@example.com"), ("bob", "bob@example.com")] {
        Console::new(&app).sign_up(name, email, PASSWORD).await;
    }
    let ada = app.store.user_by_email("ada@example.com").await.unwrap().unwrap();
    let promote = UserChange { role: Some(Role::Admin), group: None, disabled: None };
    assert!(app.store.update_user(ada.id, &promote).await.unwrap());
    let (_, key) = app.user_with_key("caller").await;
    upstream.push(Reply::openai_error(401, "Incorrect API key provided", "invalid_api_key"));
    let _ = reqwest::Client::new()
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let event = hook.wait_for("channel.disabled").await;
    assert_eq!(event["channel"], "primary");
    smtp.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let messages = smtp.messages();
    assert_eq!(to(&messages, "ada@example.com", "Subject: Channel primary was disabled").len(), 1, "{messages:#?}");
    assert!(messages.iter().all(|m| m.to != ["bob@example.com"]), "a user is not told about channels");
}
