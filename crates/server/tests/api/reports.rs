//! Usage reports, bills and the OpenAI legacy balance endpoints, seen from outside. Call
//! records and ledger rows with known costs go straight into the store, so every number
//! asserted here is known exactly (and nothing depends on how calls get billed).

use crate::helpers::*;
use serde_json::{Value, json};
use veil_domain::{CallRecord, KeyId, LedgerEntry, LedgerKind, Money, Multiplier, Timestamp, TokenUsage, User, UserId};
use veil_testkit::{KeyOptions, TestApp, spawn_app};

const DAY: i64 = 86_400_000;

/// Midnight UTC `days_ago` days before today: recent enough that no retention purge
/// touches it while the test runs.
fn midnight(days_ago: i64) -> i64 {
    let now = Timestamp::now().unix_millis();
    now - now.rem_euclid(DAY) - days_ago * DAY
}

fn day_label(ms: i64) -> String {
    Timestamp::from_unix_millis(ms).to_rfc3339()[..10].to_owned()
}

fn money(raw: &str) -> Money {
    Money::parse_decimal(raw).unwrap()
}

fn record(id: &str, time: i64, user: &User, key: KeyId, model: &str, tokens: [u64; 3], cost: &str) -> CallRecord {
    CallRecord {
        request_id: id.parse().unwrap(),
        time: Timestamp::from_unix_millis(time),
        user_id: Some(user.id),
        key_id: Some(key),
        group: Some("default".parse().unwrap()),
        model: Some(model.parse().unwrap()),
        upstream_model: Some(model.parse().unwrap()),
        channel: Some("primary".parse().unwrap()),
        path: "/v1/chat/completions",
        stream: false,
        usage: TokenUsage {
            input_tokens: tokens[0],
            cached_tokens: tokens[1],
            output_tokens: tokens[2],
            ..TokenUsage::default()
        },
        cost: money(cost),
        multiplier: Multiplier::from_millionths(1_500_000),
        status: 200,
        error_code: None,
        latency_ms: 120,
        ttft_ms: None,
        client_ip: "203.0.113.0".to_owned(),
        user_agent: "=HYPERLINK(\"http://x\")".to_owned(),
        redactions: 0,
        rule_id: None,
        policy_class: None,
        estimated: false,
        channels_tried: vec!["primary".parse().unwrap()],
    }
}

fn movement(user: UserId, key: Option<KeyId>, kind: LedgerKind, amount: &str, time: i64) -> LedgerEntry {
    LedgerEntry {
        user_id: user,
        key_id: key,
        kind,
        amount: money(amount),
        time: Timestamp::from_unix_millis(time),
        request_id: None,
        note: None,
    }
}

/// Alice with two keys and Bob with one, and calls on two days: yesterday and the day
/// before, plus one older than the default report window would still show.
struct Seeded {
    app: TestApp,
    alice: User,
    alice_key: String,
    k1: KeyId,
    k2: KeyId,
    bob_key: String,
    bob_k: KeyId,
    d1: i64,
    d2: i64,
}

async fn seeded() -> Seeded {
    let app = spawn_app("").await;
    let alice = app.create_user("alice", "default").await;
    let (alice_key, first) = app.create_key(&alice, KeyOptions::default()).await;
    let (_, second) = app.create_key(&alice, KeyOptions::default()).await;
    let bob = app.create_user("bob", "default").await;
    let (bob_key, bob_k) = app.create_key(&bob, KeyOptions::default()).await;
    let (k1, k2, bob_k) = (first.id, second.id, bob_k.id);
    let (d1, d2) = (midnight(2), midnight(1));
    let records = [
        record("r1", d1 + 1_000, &alice, k1, "gpt-4o-mini", [100, 10, 5], "0.000123"),
        record("r2", d1 + 2_000, &alice, k2, "gpt-4o-mini", [200, 20, 10], "0.000246"),
        record("r3", d1 + 3_000, &alice, k1, "gpt-4o", [300, 0, 30], "0.0015"),
        record("r4", d2 + 4_000, &alice, k2, "gpt-4o-mini", [400, 40, 20], "0.0005"),
        record("b1", d2 + 5_000, &bob, bob_k, "gpt-4o-mini", [9_000, 0, 900], "0.9"),
    ];
    app.store.insert_call_records(&records, &[]).await.unwrap();
    Seeded { app, alice, alice_key, k1, k2, bob_key, bob_k, d1, d2 }
}

async fn get(app: &TestApp, path: &str, key: &str) -> reqwest::Response {
    reqwest::Client::new().get(app.url(path)).bearer_auth(key).send().await.unwrap()
}

async fn get_json(app: &TestApp, path: &str, key: &str) -> Value {
    let response = get(app, path, key).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn usage_is_reported_by_day_and_model_with_and_without_a_key_filter() {
    let s = seeded().await;
    let (from, to) = (day_label(s.d1), day_label(s.d2));
    let usage = get_json(&s.app, &format!("/api/usage?from={from}&to={to}"), &s.alice_key).await;
    assert_eq!(
        usage,
        json!({
            "object": "usage",
            "user": "alice",
            "key_id": null,
            "currency": "USD",
            "from": from,
            "to": to,
            "data": [
                {"day": from, "model": "gpt-4o", "calls": 1, "input_tokens": 300, "cached_tokens": 0,
                 "output_tokens": 30, "cost": "0.0015"},
                {"day": from, "model": "gpt-4o-mini", "calls": 2, "input_tokens": 300, "cached_tokens": 30,
                 "output_tokens": 15, "cost": "0.000369"},
                {"day": to, "model": "gpt-4o-mini", "calls": 1, "input_tokens": 400, "cached_tokens": 40,
                 "output_tokens": 20, "cost": "0.0005"},
            ],
            "total_cost": "0.002369",
        })
    );

    let by_key = get_json(&s.app, &format!("/api/usage?from={from}&to={to}&key={}", s.k2), &s.alice_key).await;
    assert_eq!(by_key["key_id"], s.k2.to_string());
    let days: Vec<_> =
        by_key["data"].as_array().unwrap().iter().map(|d| (d["day"].clone(), d["calls"].clone())).collect();
    assert_eq!(days, [(json!(from), json!(1)), (json!(to), json!(1))]);
    assert_eq!(by_key["total_cost"], "0.000746");

    // The default window (the last 30 days up to today) holds them all; a window of one
    // day only that day.
    let default = get_json(&s.app, "/api/usage", &s.alice_key).await;
    assert_eq!(default["total_cost"], "0.002369");
    let one = get_json(&s.app, &format!("/api/usage?from={to}&to={to}"), &s.alice_key).await;
    assert_eq!(one["total_cost"], "0.0005");

    // Folded away by the retention purge, the calls still count without a key filter.
    veil_server::account::purge(s.app.store.as_ref(), Timestamp::now()).await.unwrap();
    let folded = get_json(&s.app, &format!("/api/usage?from={from}&to={to}"), &s.alice_key).await;
    assert_eq!(folded["data"], usage["data"]);
    let by_key = get_json(&s.app, &format!("/api/usage?from={from}&to={to}&key={}", s.k2), &s.alice_key).await;
    assert_eq!(by_key["data"], json!([]), "aggregates have no key");
}

#[tokio::test]
async fn usage_exports_as_csv_with_a_header_row() {
    let s = seeded().await;
    let (from, to) = (day_label(s.d1), day_label(s.d2));
    let response = get(&s.app, &format!("/api/usage?from={from}&to={to}&format=csv"), &s.alice_key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert_eq!(disposition, format!("attachment; filename=\"veil-usage-{from}-{to}.csv\""));
    let body = response.text().await.unwrap();
    assert_eq!(
        body,
        format!(
            "day,model,calls,input_tokens,cached_tokens,output_tokens,cost\r\n\
             {from},gpt-4o,1,300,0,30,0.0015\r\n\
             {from},gpt-4o-mini,2,300,30,15,0.000369\r\n\
             {to},gpt-4o-mini,1,400,40,20,0.0005\r\n"
        )
    );
}

#[tokio::test]
async fn call_records_export_as_json_pages_and_csv() {
    let s = seeded().await;
    let (from, to) = (day_label(s.d1), day_label(s.d2));
    let page = get_json(&s.app, &format!("/api/usage/calls?from={from}&to={to}&limit=3"), &s.alice_key).await;
    let ids: Vec<_> = page["data"].as_array().unwrap().iter().map(|r| r["request_id"].clone()).collect();
    assert_eq!(ids, [json!("r4"), json!("r3"), json!("r2")], "newest first, only alice's");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["next_offset"], 3);
    let first = &page["data"][0];
    for field in [
        "request_id",
        "time",
        "user",
        "key_id",
        "group",
        "model",
        "upstream_model",
        "channel",
        "path",
        "stream",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "cost",
        "multiplier",
        "status",
        "error_code",
        "latency_ms",
        "ttft_ms",
        "client_ip",
        "user_agent",
        "redactions",
        "rule_id",
        "policy_class",
        "estimated",
        "channels_tried",
    ] {
        assert!(first.get(field).is_some(), "no {field} in {first}");
    }
    assert_eq!(first["cost"], "0.0005");
    assert_eq!(first["multiplier"], "1.5");
    let rest = get_json(&s.app, &format!("/api/usage/calls?from={from}&to={to}&limit=3&offset=3"), &s.alice_key).await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["data"][0]["request_id"], "r1");
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["next_offset"], Value::Null);
    let k1 = get_json(&s.app, &format!("/api/usage/calls?from={from}&to={to}&key={}", s.k1), &s.alice_key).await;
    let ids: Vec<_> = k1["data"].as_array().unwrap().iter().map(|r| r["request_id"].clone()).collect();
    assert_eq!(ids, [json!("r3"), json!("r1")]);

    let response = get(&s.app, &format!("/api/usage/calls?from={from}&to={to}&format=csv"), &s.alice_key).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(response.headers()["content-disposition"].to_str().unwrap().starts_with("attachment;"));
    let body = response.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four records:\n{body}");
    assert!(lines[0].starts_with("request_id,time,user,key_id,group,model,"));
    assert!(lines[0].ends_with(",estimated,channels_tried"));
    assert!(lines[1].starts_with("r4,"));
    assert!(lines[1].contains(",0.0005,1.5,200,"));
    // A client-chosen User-Agent cannot turn into a spreadsheet formula.
    assert!(lines[1].contains(",\"'=HYPERLINK(\"\"http://x\"\")\","), "{}", lines[1]);
}

#[tokio::test]
async fn bad_parameters_and_other_users_keys_are_refused() {
    let s = seeded().await;
    let other = format!("/api/usage?key={}", s.bob_k);
    assert_eq!(error_code(get(&s.app, &other, &s.alice_key).await, 404).await, "not_found");
    let other = format!("/api/usage/calls?key={}", s.bob_k);
    assert_eq!(error_code(get(&s.app, &other, &s.alice_key).await, 404).await, "not_found");
    for bad in [
        "/api/usage?from=2026-02-30",
        "/api/usage?to=yesterday",
        "/api/usage?from=2026-11-02&to=2026-11-01",
        "/api/usage?key=not-a-key",
        "/api/usage?format=xml",
        "/api/usage/calls?limit=0",
        "/api/usage/calls?limit=10001",
        "/api/usage/calls?offset=-1",
    ] {
        let response = get(&s.app, bad, &s.alice_key).await;
        assert_eq!(error_code(response, 400).await, "invalid_request_error", "{bad}");
    }
    let body: Value = get(&s.app, "/api/usage?key=not-a-key", &s.alice_key).await.json().await.unwrap();
    assert_eq!(body["error"]["param"], "key");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let unauthenticated = reqwest::Client::new().get(s.app.url("/api/usage")).send().await.unwrap();
    assert_eq!(error_code(unauthenticated, 401).await, "invalid_api_key");
}

#[tokio::test]
async fn admins_may_read_another_users_reports_and_others_may_not() {
    let s = seeded().await;
    let (from, to) = (day_label(s.d1), day_label(s.d2));
    let path = format!("/api/usage?from={from}&to={to}&user=alice");
    let refused = get(&s.app, &path, &s.bob_key).await;
    assert_eq!(error_code(refused, 403).await, "permission_denied");
    let refused = get(&s.app, "/api/bills?user=alice", &s.bob_key).await;
    assert_eq!(error_code(refused, 403).await, "permission_denied");
    let refused = get(&s.app, "/api/usage/calls?user=alice", &s.bob_key).await;
    assert_eq!(error_code(refused, 403).await, "permission_denied");

    let admin = admin(&s.app).await;
    let read = get_json(&s.app, &path, &admin).await;
    assert_eq!(read["user"], "alice");
    assert_eq!(read["total_cost"], "0.002369");
    let keyed = get_json(&s.app, &format!("{path}&key={}", s.k1), &admin).await;
    assert_eq!(keyed["total_cost"], "0.001623");
    // The key must still be the named user's.
    let crossed = get(&s.app, &format!("{path}&key={}", s.bob_k), &admin).await;
    assert_eq!(error_code(crossed, 404).await, "not_found");
    let nobody = get(&s.app, "/api/usage?user=nobody", &admin).await;
    assert_eq!(error_code(nobody, 404).await, "not_found");
    // Reading someone else's data is audited; a user reading their own is not.
    let audit = s.app.store.list_audit(Some(s.alice.id), 100).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.action == "usage.read").count(), 2);
    get_json(&s.app, "/api/usage?user=alice", &s.alice_key).await;
    let audit = s.app.store.list_audit(Some(s.alice.id), 100).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.action == "usage.read").count(), 2);
}

#[tokio::test]
async fn bills_are_per_month_from_the_ledger() {
    let app = spawn_app("").await;
    let alice = app.create_user("alice", "default").await;
    let (key, stored) = app.create_key(&alice, KeyOptions::default()).await;
    let bob = app.create_user("bob", "default").await;
    // 2026-10-31T23:59:59.999Z and 2026-11-01T00:00:00Z.
    let november = Timestamp::parse_rfc3339("2026-11-01T00:00:00Z").unwrap().unix_millis();
    let (a, k) = (alice.id, Some(stored.id));
    for entry in [
        movement(a, None, LedgerKind::Topup, "10", november - 5 * DAY),
        movement(a, None, LedgerKind::Adjustment, "-1", november - 4 * DAY),
        movement(a, None, LedgerKind::Topup, "2.5", november + DAY),
        movement(bob.id, None, LedgerKind::Topup, "100", november + DAY),
    ] {
        app.store.append_ledger(&entry).await.unwrap();
    }
    let records = [
        record("o1", november - 1, &alice, stored.id, "gpt-4o", [1, 0, 1], "0.25"),
        record("n1", november, &alice, stored.id, "gpt-4o", [1, 0, 1], "0.125"),
        record("n2", november + 10, &alice, stored.id, "gpt-4o", [1, 0, 1], "0"),
    ];
    let ledger = [
        movement(a, k, LedgerKind::Hold, "-3", november - 1),
        movement(a, k, LedgerKind::Charge, "-0.25", november - 1),
        movement(a, k, LedgerKind::Charge, "-0.125", november),
        movement(a, k, LedgerKind::Refund, "0.05", november + 2),
        movement(bob.id, None, LedgerKind::Charge, "-50", november),
    ];
    app.store.insert_call_records(&records, &ledger).await.unwrap();

    let bills = get_json(&app, "/api/bills", &key).await;
    assert_eq!(
        bills,
        json!({
            "object": "list",
            "user": "alice",
            "currency": "USD",
            "data": [
                {"month": "2026-11", "charged": "0.125", "credited": "2.55", "debited": "0.0", "calls": 2},
                {"month": "2026-10", "charged": "0.25", "credited": "10.0", "debited": "1.0", "calls": 1},
            ],
        })
    );
}

async fn legacy(app: &TestApp, path: &str, key: &str) -> Value {
    get_json(app, path, key).await
}

#[tokio::test]
async fn legacy_balance_endpoints_for_a_key_without_a_quota() {
    let app = spawn_app("").await;
    let alice = app.create_user("alice", "default").await;
    let (key, stored) = app.create_key(&alice, KeyOptions::default()).await;
    let (_, other) = app.create_key(&alice, KeyOptions::default()).await;
    let d1 = midnight(3);
    let (a, k) = (alice.id, Some(stored.id));
    app.store.append_ledger(&movement(a, None, LedgerKind::Topup, "20", d1 - DAY)).await.unwrap();
    app.store.append_ledger(&movement(a, None, LedgerKind::Adjustment, "-2", d1 - DAY)).await.unwrap();
    let ledger = [
        movement(a, k, LedgerKind::Charge, "-1.25", d1),
        movement(a, Some(other.id), LedgerKind::Charge, "-0.5", d1 + DAY),
        movement(a, k, LedgerKind::Hold, "-3", d1 + DAY),
    ];
    app.store.insert_call_records(&[], &ledger).await.unwrap();

    // Balance 16.25 plus 1.75 spent: what the front-end subtracts the usage from.
    let expected = json!({
        "object": "billing_subscription",
        "has_payment_method": true,
        "soft_limit_usd": 18.0,
        "hard_limit_usd": 18.0,
        "system_hard_limit_usd": 18.0,
        "access_until": 0,
    });
    assert_eq!(legacy(&app, "/v1/dashboard/billing/subscription", &key).await, expected);
    assert_eq!(legacy(&app, "/dashboard/billing/subscription", &key).await, expected);
    // Every key of the account reports the account's charges: all of them, or a range.
    let all = json!({"object": "list", "total_usage": 175.0});
    assert_eq!(legacy(&app, "/v1/dashboard/billing/usage", &key).await, all);
    let (from, to) = (day_label(d1 + DAY), day_label(d1 + 2 * DAY));
    let ranged = format!("/dashboard/billing/usage?start_date={from}&end_date={to}");
    assert_eq!(legacy(&app, &ranged, &key).await, json!({"object": "list", "total_usage": 50.0}));
    let open = format!("/v1/dashboard/billing/usage?start_date={}", day_label(d1 - 10 * DAY));
    assert_eq!(legacy(&app, &open, &key).await, all);

    let bad = get(&app, "/v1/dashboard/billing/usage?start_date=2026-1-1", &key).await;
    assert_eq!(error_code(bad, 400).await, "invalid_request_error");
    let backwards = get(&app, "/v1/dashboard/billing/usage?start_date=2026-02-01&end_date=2026-01-01", &key).await;
    assert_eq!(error_code(backwards, 400).await, "invalid_request_error");
    let anonymous = reqwest::Client::new().get(app.url("/v1/dashboard/billing/subscription")).send().await.unwrap();
    assert_eq!(error_code(anonymous, 401).await, "invalid_api_key");
}

#[tokio::test]
async fn legacy_balance_endpoints_for_a_key_with_a_quota() {
    let app = spawn_app("").await;
    let alice = app.create_user("alice", "default").await;
    let expires = Timestamp::from_unix_millis(midnight(-10) + 1_234);
    let options = KeyOptions { quota: Some(money("5")), expires_at: Some(expires), ..KeyOptions::default() };
    let (key, stored) = app.create_key(&alice, options).await;
    let (_, other) = app.create_key(&alice, KeyOptions::default()).await;
    let d1 = midnight(2);
    let a = alice.id;
    app.store.append_ledger(&movement(a, None, LedgerKind::Topup, "100", d1)).await.unwrap();
    let ledger = [
        movement(a, Some(stored.id), LedgerKind::Charge, "-0.75", d1),
        movement(a, Some(stored.id), LedgerKind::Charge, "-0.0005", d1 + DAY),
        movement(a, Some(other.id), LedgerKind::Charge, "-30", d1),
    ];
    app.store.insert_call_records(&[], &ledger).await.unwrap();

    let subscription = legacy(&app, "/v1/dashboard/billing/subscription", &key).await;
    assert_eq!(
        subscription,
        json!({
            "object": "billing_subscription",
            "has_payment_method": true,
            "soft_limit_usd": 5.0,
            "hard_limit_usd": 5.0,
            "system_hard_limit_usd": 5.0,
            "access_until": expires.unix_millis() / 1_000,
        })
    );
    // Only this key's charges: 0.7505 of the quota is gone.
    let usage = legacy(&app, "/v1/dashboard/billing/usage", &key).await;
    assert_eq!(usage, json!({"object": "list", "total_usage": 75.05}));
    let first_day = format!("/dashboard/billing/usage?start_date={}&end_date={}", day_label(d1), day_label(d1 + DAY));
    assert_eq!(legacy(&app, &first_day, &key).await, json!({"object": "list", "total_usage": 75.0}));
}

/// The real `curl`, as shell scripts and monitoring probes call these endpoints.
#[tokio::test]
async fn curl_reads_the_legacy_balance_endpoints() {
    let found = std::process::Command::new("which").arg("curl").output();
    if !found.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let app = spawn_app("").await;
    let alice = app.create_user("alice", "default").await;
    let (key, stored) = app.create_key(&alice, KeyOptions::default()).await;
    app.credit(&alice, "3").await;
    let charge = movement(alice.id, Some(stored.id), LedgerKind::Charge, "-0.5", midnight(1));
    app.store.insert_call_records(&[], &[charge]).await.unwrap();

    let curl = |path: &'static str| {
        let url = app.url(path);
        let key = key.clone();
        async move {
            let output = tokio::process::Command::new("curl")
                .args(["--silent", "--show-error", "--fail-with-body", "-H"])
                .arg(format!("Authorization: Bearer {key}"))
                .arg(url)
                .output()
                .await
                .unwrap();
            assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
            serde_json::from_slice::<Value>(&output.stdout).unwrap()
        }
    };
    let subscription = curl("/v1/dashboard/billing/subscription").await;
    assert_eq!(subscription["object"], "billing_subscription");
    assert_eq!(subscription["hard_limit_usd"], json!(3.0));
    assert_eq!(subscription["access_until"], 0);
    assert_eq!(curl("/dashboard/billing/usage").await, json!({"object": "list", "total_usage": 50.0}));
}
