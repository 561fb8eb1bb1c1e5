//! Holds and settlement seen from outside: what a call costs on every ending, what is
//! refused before any upstream call, and that concurrent calls never overspend.

use crate::helpers::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use veil_domain::{ErrorCode, LedgerKind, Money, User};
use veil_store::{CallRecordFilter, Store};
use veil_testkit::mock_upstream::{MockUpstream, Reply};
use veil_testkit::{KeyOptions, TestApp, spawn_app};

/// One priced model (1 / 0.5 / 2 per million tokens), one free, one unpriced, all on one
/// channel; the default group bills at 1.5×.
fn priced(upstream: &MockUpstream, extra: &str) -> String {
    format!(
        r#"
[[group]]
name = "default"
multiplier = 1.5
{extra}

[[channel]]
name = "main"
type = "openai"
base_url = "{}"
models = ["paid", "gratis", "nobody-priced"]
first_byte_timeout = "2s"
idle_timeout = "2s"

[[model]]
name = "paid"
price = {{ input = 1, cached_input = 0.5, output = 2 }}

[[model]]
name = "gratis"
free = true
"#,
        upstream.base_url()
    )
}

fn money(raw: &str) -> Money {
    Money::parse_decimal(raw).unwrap()
}

fn ask(model: &str, max_tokens: u64) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]})
}

async fn funded(app: &TestApp, name: &str, amount: &str) -> (User, String) {
    let (user, key) = app.user_with_key(name).await;
    app.credit(&user, amount).await;
    (user, key)
}

/// Stops the app (flushing every settlement) and returns the user's stored balance and
/// ledger with the records.
async fn settle_and_read(
    app: TestApp,
    user: &User,
) -> (Money, Vec<veil_domain::LedgerEntry>, Vec<veil_domain::CallRecord>) {
    let store: Arc<dyn Store> = Arc::clone(&app.store);
    let _data = app.stop().await;
    let balance = store.balance(user.id).await.unwrap();
    let ledger = store.list_ledger(user.id).await.unwrap();
    let records = store
        .list_call_records(&CallRecordFilter { user_id: Some(user.id), limit: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|stored| stored.record)
        .collect();
    (balance, ledger, records)
}

#[tokio::test]
async fn a_call_holds_its_worst_case_and_settles_the_reported_usage_exactly_once() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&priced(&upstream, "")).await;
    let (user, key) = funded(&app, "ana", "1").await;
    upstream.push(Reply::chat_with_usage("hello", 1_000, 500, 400));
    let response = post(&app, "/v1/chat/completions", &key, ask("paid", 100)).await;
    assert_eq!(response.status(), 200);

    let (balance, ledger, records) = settle_and_read(app, &user).await;
    // (600 × 1 + 400 × 0.5 + 500 × 2) per million × 1.5 = 0.0027: cached tokens are billed
    // once, at the cached price.
    let cost = money("0.0027");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].cost, cost);
    assert_eq!(records[0].multiplier.to_decimal_string(), "1.5");
    assert_eq!((records[0].usage.input_tokens, records[0].usage.cached_tokens), (1_000, 400));
    assert!(!records[0].estimated);
    let kinds: Vec<_> = ledger.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [LedgerKind::Topup, LedgerKind::Hold, LedgerKind::Charge]);
    let hold = &ledger[1];
    assert!(hold.amount.is_negative(), "a hold reserves money");
    assert_eq!(ledger[2].amount, Money::from_nanos(-cost.nanos()));
    assert_eq!(ledger[2].request_id, Some(records[0].request_id.to_string()));
    assert_eq!(balance, money("0.9973"));
}

#[tokio::test]
async fn an_unaffordable_call_is_refused_before_any_upstream_call() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&priced(&upstream, "")).await;
    let (_, broke) = app.user_with_key("ben").await;
    let response = post(&app, "/v1/chat/completions", &broke, ask("paid", 100)).await;
    assert_eq!(error_code(response, 429).await, ErrorCode::InsufficientQuota.as_str());

    // The hold is the worst case: a balance that covers a small answer does not cover
    // a huge `max_tokens`.
    let (_, small) = funded(&app, "cy", "0.001").await;
    assert_eq!(post(&app, "/v1/chat/completions", &small, ask("paid", 10)).await.status(), 200);
    let huge = post(&app, "/v1/chat/completions", &small, ask("paid", 1_000_000)).await;
    assert_eq!(error_code(huge, 429).await, "insufficient_quota");

    // Free models need no balance; unpriced ones are refused whatever the balance.
    assert_eq!(post(&app, "/v1/chat/completions", &broke, ask("gratis", 100)).await.status(), 200);
    let unpriced = post(&app, "/v1/chat/completions", &small, ask("nobody-priced", 10)).await;
    assert_eq!(error_code(unpriced, 403).await, "model_not_priced");
    assert_eq!(upstream.request_count(), 2, "only the affordable and the free call went upstream");
}

#[tokio::test]
async fn a_key_quota_bounds_what_the_key_spends() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&priced(&upstream, "")).await;
    let user = app.create_user("dee", "default").await;
    app.credit(&user, "10").await;
    let (key, _) = app.create_key(&user, KeyOptions { quota: Some(money("0.003")), ..Default::default() }).await;
    upstream.set_default(Reply::chat_with_usage("ok", 1_000, 500, 0));
    // Each call costs (1000 + 1000) per million × 1.5 = 0.003 and holds less than that.
    assert_eq!(post(&app, "/v1/chat/completions", &key, ask("paid", 10)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refused = post(&app, "/v1/chat/completions", &key, ask("paid", 10)).await;
    assert_eq!(error_code(refused, 429).await, "insufficient_quota");
    assert_eq!(upstream.request_count(), 1);
}

#[tokio::test]
async fn failed_calls_cost_nothing_and_interrupted_streams_are_billed_from_what_was_seen() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&priced(&upstream, "")).await;
    let (user, key) = funded(&app, "eve", "1").await;
    let stream = |max_tokens| {
        let mut body = ask("paid", max_tokens);
        body["stream"] = json!(true);
        body
    };

    // 1. The upstream refuses before the first byte: nothing charged.
    upstream.push(Reply::openai_error(500, "boom", "server_error"));
    assert_eq!(post(&app, "/v1/chat/completions", &key, ask("paid", 10)).await.status(), 502);
    // 2. A stream that completes with usage: billed from the usage.
    upstream.push(Reply::stream_with_usage(vec!["a", "b"], Duration::from_millis(5), 100, 20, 0));
    let text = post(&app, "/v1/chat/completions", &key, stream(50)).await.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    // 3. The upstream dies mid-stream: billed from a local count, marked estimated.
    upstream.push(Reply::stream_then_drop(vec!["one ", "two ", "three"], 2));
    let text = post(&app, "/v1/chat/completions", &key, stream(50)).await.text().await.unwrap();
    assert!(text.contains("\"error\""));
    // 4. The client goes away mid-stream: billed from what was delivered, estimated.
    upstream.push(Reply::stream(vec!["slow "; 50], Duration::from_millis(100)));
    let mut response = post(&app, "/v1/chat/completions", &key, stream(50)).await;
    let first = response.chunk().await.unwrap();
    assert!(first.is_some());
    drop(response);
    assert!(upstream.wait_for_disconnects(1, Duration::from_secs(5)).await);

    let (balance, ledger, records) = settle_and_read(app, &user).await;
    assert_eq!(records.len(), 4);
    let by_status = |status: u16, estimated: bool| {
        records
            .iter()
            .find(|r| r.status == status && r.estimated == estimated)
            .unwrap_or_else(|| panic!("no record with status {status} (estimated {estimated}) in {records:?}"))
    };
    assert_eq!(by_status(502, false).cost, Money::ZERO);
    let completed = by_status(200, false);
    assert_eq!(completed.cost, money("0.00021"), "(100 × 1 + 20 × 2) per million × 1.5");
    let died = records.iter().find(|r| r.status == 200 && r.estimated).expect("the cut stream");
    assert!(died.cost > Money::ZERO && died.usage.output_tokens > 0);
    let gone = by_status(499, true);
    assert!(gone.cost > Money::ZERO && gone.usage.input_tokens > 0);

    // The ledger and the records agree to the nano-unit.
    let charged: i64 = ledger.iter().filter(|e| e.kind == LedgerKind::Charge).map(|e| -e.amount.nanos()).sum();
    let recorded: i64 = records.iter().map(|r| r.cost.nanos()).sum();
    assert_eq!(charged, recorded);
    assert_eq!(balance.nanos(), money("1").nanos() - recorded);
    assert_eq!(ledger.iter().filter(|e| e.kind == LedgerKind::Hold).count(), 4, "every call held first");
}

#[tokio::test]
async fn credits_made_while_the_server_runs_are_spendable_at_once() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&priced(&upstream, "")).await;
    let (user, key) = funded(&app, "fay", "0").await;
    let refused = post(&app, "/v1/chat/completions", &key, ask("paid", 10)).await;
    assert_eq!(error_code(refused, 429).await, "insufficient_quota");
    // As `veil admin user credit` from another process: seen within the refresh interval.
    app.credit(&user, "1").await;
    let mut status = 0;
    for _ in 0..40 {
        status = post(&app, "/v1/chat/completions", &key, ask("paid", 10)).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200);
}

/// N calls at once against a balance that covers fewer than N: the balance never goes
/// below zero by more than the outstanding holds, and ends at the start minus exactly
/// the settled charges.
async fn concurrent_calls_never_overspend(database_url: Option<&str>) {
    let upstream = MockUpstream::start().await;
    // Every call uses its whole `max_tokens` (1000) on a 5-token prompt: 0.0030075 at 1.5×,
    // just under its hold, so a balance of 0.02 covers six calls at once, not twenty.
    upstream.set_default(Reply::chat_with_usage("ok", 5, 1_000, 0).first_byte_delay(Duration::from_millis(30)));
    let database = database_url.map(|url| format!("[database]\nurl = \"{url}\"\n")).unwrap_or_default();
    let app = spawn_app(&format!("{database}{}", priced(&upstream, ""))).await;
    let (user, key) = funded(&app, "gus", "0.02").await;
    let client = reqwest::Client::new();
    let calls = (0..20)
        .map(|_| client.post(app.url("/v1/chat/completions")).bearer_auth(&key).json(&ask("paid", 1_000)).send());
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|response| response.unwrap().status().as_u16())
        .collect();
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!((1..20).contains(&accepted), "some but not all calls fit: {statuses:?}");
    assert_eq!(upstream.request_count(), accepted, "refused calls never reached the upstream");

    let (balance, ledger, records) = settle_and_read(app, &user).await;
    let recorded: i64 = records.iter().map(|r| r.cost.nanos()).sum();
    let charged: i64 = ledger.iter().filter(|e| e.kind == LedgerKind::Charge).map(|e| -e.amount.nanos()).sum();
    assert_eq!(recorded, charged);
    assert_eq!(balance.nanos(), money("0.02").nanos() - recorded, "the balance moved by the charges exactly");
    // Each call was admitted against the balance net of the others' holds and charged no
    // more than it held, so the balance never went below zero.
    assert!(!balance.is_negative(), "overspent: {balance}");
    for record in records.iter().filter(|r| r.status == 200) {
        let hold = ledger
            .iter()
            .find(|e| e.kind == LedgerKind::Hold && e.request_id.as_deref() == Some(record.request_id.as_str()));
        assert!(hold.is_some_and(|h| -h.amount.nanos() >= record.cost.nanos()), "charge within its hold");
    }
}

#[tokio::test]
async fn concurrent_calls_never_overspend_on_sqlite() {
    concurrent_calls_never_overspend(None).await;
}

#[tokio::test]
async fn concurrent_calls_never_overspend_on_postgres() {
    let Some(database) = veil_testkit::postgres::TestDatabase::create().await else { return };
    concurrent_calls_never_overspend(Some(&database.url)).await;
    drop(database);
}

#[tokio::test]
async fn admins_price_models_and_credit_users_through_the_api() {
    use veil_domain::{GroupName, NewUser, Role, UserName};
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&priced(&upstream, "")).await;
    let admin = app
        .store
        .create_user(NewUser {
            name: UserName::parse("root").unwrap(),
            email: None,
            role: Role::Admin,
            group: GroupName::default_group(),
            password_hash: None,
        })
        .await
        .unwrap();
    let (admin_key, _) = app.create_key(&admin, KeyOptions::default()).await;
    let (user, key) = app.user_with_key("hal").await;
    let client = reqwest::Client::new();
    let put = |model: &str, body: Value, bearer: &str| {
        client.put(app.url(&format!("/api/models/{model}"))).bearer_auth(bearer).json(&body).send()
    };

    // Refused before anyone priced it; users may not price models.
    let refused = post(&app, "/v1/chat/completions", &key, ask("nobody-priced", 10)).await;
    assert_eq!(error_code(refused, 403).await, "model_not_priced");
    let denied = put("nobody-priced", json!({"free": true}), &key).await.unwrap();
    assert_eq!(error_code(denied, 403).await, "permission_denied");
    let malformed = put("nobody-priced", json!({"price": {"input": "-1"}}), &admin_key).await.unwrap();
    assert_eq!(error_code(malformed, 400).await, "invalid_request_error");
    let unknown_field = put("nobody-priced", json!({"price": {"inptu": "1"}}), &admin_key).await.unwrap();
    assert_eq!(error_code(unknown_field, 400).await, "invalid_request_error");

    let priced =
        put("nobody-priced", json!({"price": {"input": "4", "output": 8}, "max_output_tokens": 64}), &admin_key)
            .await
            .unwrap();
    assert_eq!(priced.status(), 200);
    let body: Value = priced.json().await.unwrap();
    assert_eq!(body["price"]["input"], "4.0");
    assert_eq!(body["price"]["cached_input"], "4.0", "no cache discount unless priced");

    let credit = client
        .post(app.url("/api/users/hal/credit"))
        .bearer_auth(&admin_key)
        .json(&json!({"amount": "0.5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(credit.status(), 200);
    let body: Value = credit.json().await.unwrap();
    assert_eq!(body["balance"], "0.5");

    upstream.push(Reply::chat_with_usage("ok", 1_000, 1_000, 0));
    assert_eq!(post(&app, "/v1/chat/completions", &key, ask("nobody-priced", 10)).await.status(), 200);
    // Audited as they happened, before the answers went out.
    let audit = app.store.list_audit(None, 0).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "model.price"));
    assert!(audit.iter().any(|e| e.action == "user.credit" && e.subject_user == Some(user.id)));
    let (balance, _, records) = settle_and_read(app, &user).await;
    // (1000 × 4 + 1000 × 8) per million × 1.5 = 0.018
    assert_eq!(records[0].cost, money("0.018"));
    assert_eq!(balance, money("0.482"));
}

#[tokio::test]
async fn with_strict_durability_an_answer_means_its_settlement_is_committed() {
    let upstream = MockUpstream::start().await;
    let app = spawn_app(&format!("[billing]\ndurability = \"strict\"\n{}", priced(&upstream, ""))).await;
    let (user, key) = funded(&app, "ida", "1").await;
    let committed = |kind: LedgerKind| {
        let store = Arc::clone(&app.store);
        async move { store.list_ledger(user.id).await.unwrap().iter().filter(|e| e.kind == kind).count() }
    };
    upstream.push(Reply::chat_with_usage("ok", 100, 10, 0));
    assert_eq!(post(&app, "/v1/chat/completions", &key, ask("paid", 10)).await.status(), 200);
    // No waiting: the answer was held until the commit.
    assert_eq!(committed(LedgerKind::Charge).await, 1);
    let filter = CallRecordFilter { user_id: Some(user.id), ..Default::default() };
    assert_eq!(app.store.list_call_records(&filter).await.unwrap().len(), 1);

    upstream.push(Reply::stream_with_usage(vec!["a", "b"], Duration::from_millis(5), 100, 10, 0));
    let mut streamed = ask("paid", 10);
    streamed["stream"] = json!(true);
    let text = post(&app, "/v1/chat/completions", &key, streamed).await.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(committed(LedgerKind::Charge).await, 2, "the stream's body ends after its commit");

    upstream.push(Reply::openai_error(500, "boom", "server_error"));
    assert_eq!(post(&app, "/v1/chat/completions", &key, ask("paid", 10)).await.status(), 502);
    assert_eq!(committed(LedgerKind::Hold).await, 3, "a failed call's hold is committed before its error");
}
