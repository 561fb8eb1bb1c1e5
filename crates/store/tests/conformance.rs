//! The store conformance suite: every check is written once against `dyn Store` and run on
//! both backends — SQLite in a temporary directory, PostgreSQL in a fresh database per test
//! (dropped afterwards). PostgreSQL is at `postgres://postgres@127.0.0.1:5432/postgres`
//! unless `VEIL_TEST_POSTGRES_URL` says otherwise; when it is unreachable the PostgreSQL
//! tests are skipped, or fail if `VEIL_REQUIRE_SERVICES=1`.

// Marks the harness (helpers outside `#[test]` functions) as test code, so clippy.toml's
// allow-unwrap/panic/print-in-tests covers it too.
#![cfg(test)]

use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use veil_domain::ModelName;
use veil_domain::{
    CallRecord, Channel, ChannelKind, DataPolicy, ErrorCode, FirewallMode, Group, GroupName, KeyId, KeyLimits,
    LedgerEntry, LedgerKind, Model, Money, Multiplier, NewApiKey, NewUser, PolicyClass, Price, Pricing,
    PrivacyRequirement, RequestId, Retention, Role, Timeouts, Timestamp, TokenUsage, UserId,
};
use veil_store::{
    AccountTotals, AuditVerification, CallRecordFilter, DailyUsage, ErasureReport, GENESIS_HASH, KeyTotals,
    NewAuditEntry, NewCapture, Store, StoreError, StoredCallRecord, StoredCapture, WrappedSecret,
};

// ---------------------------------------------------------------------------------------
// Harness

mod common;

use common::{TestDb, conformance, postgres_db, sqlite_db};

conformance!(
    migrate_twice_and_concurrently,
    revision_bumps_on_admin_writes_only,
    users_and_balances,
    keys,
    groups_round_trip_and_retire,
    channels_round_trip_and_retire,
    models_round_trip_and_retire,
    call_records_round_trip,
    call_records_order_limit_and_filter,
    wrapped_secrets_keep_the_first,
    wrapped_secret_copies_rotate,
    ledger_lists_oldest_first,
    audit_log_chains_and_lists,
    audit_verify_finds_tampering,
    audit_appends_from_two_processes_chain,
    purge_folds_old_records_into_daily_usage,
    concurrent_purges_count_each_record_once,
    erase_user_anonymises_and_keeps_totals,
    erase_during_purge_keeps_totals,
    key_capture_window,
    captures_list_newest_unexpired_and_purge,
    captures_go_with_their_key_and_user,
    channel_credentials_are_kept_sealed_and_go_with_their_channel,
    api_channels_are_created_replaced_and_deleted_but_never_managed_ones,
    ledger_credits_are_found_by_revision,
    settlements_land_with_their_records,
    account_and_key_totals,
    key_suspension_round_trips_and_bumps_the_revision,
    usage_by_day_sums_records_and_folded_days,
    call_records_filter_by_key_and_time_and_page,
    monthly_bills_split_the_ledger_by_month,
    charges_between_count_charges_only,
    redemption_codes_credit_once_and_list,
    concurrent_redemptions_credit_once,
    media_round_trips_and_purges_when_expired,
    media_goes_with_its_user,
    video_jobs_round_trip_and_finish_once,
    video_jobs_go_with_their_user,
    channel_disabling_is_durable_and_bumps_the_revision_once,
    channel_health_snapshots_keep_the_newest,
);

/// Raw SQL behind the store's back (tampering, inspection), on whichever backend `db` is.
/// The statements used here are written to be valid on both.
async fn raw_execute(db: &TestDb, sql: &'static str) -> u64 {
    use sqlx::Connection;
    if db.url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap().rows_affected()
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap().rows_affected()
    }
}

async fn raw_i64(db: &TestDb, sql: &'static str) -> i64 {
    use sqlx::Connection;
    if db.url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// Sample data

fn n<T: FromStr>(raw: &str) -> T
where
    T::Err: Debug,
{
    raw.parse().unwrap()
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn new_user(name: &str, group: &str) -> NewUser {
    NewUser {
        name: n(name),
        email: Some(format!("{name}@example.com")),
        role: Role::Admin,
        group: n(group),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
    }
}

fn new_key(user: UserId, hash: &str) -> NewApiKey {
    NewApiKey {
        user_id: user,
        name: Some("laptop \"main\"".to_owned()),
        prefix: "sk-veil-AbCd".to_owned(),
        hash: hash.to_owned(),
        models: Some(vec![n("gpt-4o-mini"), n("meta-llama/Llama-3.1-8B:free")]),
        expires_at: Some(at(1_800_000_000_000)),
        quota: Some(Money::from_nanos(12_500_000_000)),
        limits: KeyLimits { rpm: Some(60), tpm: Some(90_000), max_concurrent: Some(3) },
        daily_spend: Some(Money::from_nanos(1_000_000_001)),
        monthly_spend: Some(Money::from_nanos(20_000_000_000)),
        ip_allow: vec![n("10.0.0.0/8"), n("2001:db8::/48"), n("192.0.2.7/32")],
        allow_training: true,
        privacy: veil_domain::KeyPrivacy {
            max_retention_days: Some(7),
            regions: Some(vec!["EU".to_owned()]),
            firewall: Some(FirewallMode::Pii),
        },
    }
}

fn bare_key(user: UserId, hash: &str) -> NewApiKey {
    NewApiKey {
        user_id: user,
        name: None,
        prefix: "sk-veil-Zz".to_owned(),
        hash: hash.to_owned(),
        models: None,
        expires_at: None,
        quota: None,
        limits: KeyLimits::default(),
        daily_spend: None,
        monthly_spend: None,
        ip_allow: Vec::new(),
        allow_training: false,
        privacy: veil_domain::KeyPrivacy::default(),
    }
}

fn ledger(user: UserId, kind: LedgerKind, amount: &str) -> LedgerEntry {
    LedgerEntry {
        user_id: user,
        key_id: None,
        kind,
        amount: Money::parse_decimal(amount).unwrap(),
        time: at(1_700_000_000_000),
        request_id: Some("req_1".to_owned()),
        note: Some("credit by admin".to_owned()),
    }
}

fn full_group(name: &str, managed: bool) -> Group {
    Group {
        name: n(name),
        multiplier: Multiplier::from_millionths(1_250_000),
        privacy: PrivacyRequirement {
            max_retention_days: Some(31),
            allow_training: true,
            regions: Some(vec!["eu".to_owned(), "us-east".to_owned()]),
            firewall: FirewallMode::Pii,
        },
        limits: KeyLimits { rpm: Some(600), tpm: Some(1_000_000), max_concurrent: Some(16) },
        daily_spend: Some(Money::from_nanos(5_000_000_000)),
        monthly_spend: Some(Money::from_nanos(100_000_000_000)),
        deny_keywords: vec!["project \"x\"".to_owned(), "ünïcödé, comma".to_owned()],
        deny_patterns: vec![r"(?i)\bpassw(or)?d\b".to_owned()],
        managed,
    }
}

fn bare_group(name: &str, managed: bool) -> Group {
    Group { name: n(name), managed, ..Group::builtin_default() }
}

fn full_channel(name: &str, managed: bool) -> Channel {
    Channel {
        name: n(name),
        kind: ChannelKind::Azure,
        base_url: "https://example.openai.azure.com/openai".to_owned(),
        api_key_env: Some("AZURE_OPENAI_KEY".to_owned()),
        models: vec![n("gpt-4o"), n("gpt-4o-mini")],
        model_mapping: BTreeMap::from([
            (n("gpt-4o"), n("gpt-4o-2024-08-06")),
            (n("gpt-4o-mini"), n("deployments/mini:v2")),
        ]),
        priority: -5,
        weight: 7,
        groups: Some(vec![n("default"), n("vip")]),
        policy: DataPolicy {
            retention: Retention::Days(31),
            training: true,
            region: Some("eu-west".to_owned()),
            human_review: true,
            operator: "microsoft".to_owned(),
        },
        timeouts: Timeouts {
            connect: Duration::from_millis(1_500),
            first_byte: Duration::from_secs(30),
            idle: Duration::from_millis(90_250),
            total: Duration::from_secs(900),
        },
        limits: veil_domain::ChannelLimits { rpm: Some(120), max_concurrent: Some(8) },
        tls_verify: false,
        probe_interval: Some(Duration::from_secs(45)),
        enabled: false,
        managed,
    }
}

fn bare_channel(name: &str, managed: bool) -> Channel {
    Channel {
        name: n(name),
        kind: ChannelKind::Echo,
        base_url: "echo://local".to_owned(),
        api_key_env: None,
        models: Vec::new(),
        model_mapping: BTreeMap::new(),
        priority: 0,
        weight: 1,
        groups: None,
        policy: DataPolicy {
            retention: Retention::None,
            training: false,
            region: None,
            human_review: false,
            operator: "self".to_owned(),
        },
        timeouts: Timeouts::default(),
        limits: Default::default(),
        tls_verify: true,
        probe_interval: None,
        enabled: true,
        managed,
    }
}

fn model(name: &str, managed: bool) -> Model {
    Model {
        name: n(name),
        pricing: Pricing::Priced(Price {
            input: Money::parse_decimal("0.15").unwrap(),
            cached_input: Money::parse_decimal("0.075").unwrap(),
            cache_write: Money::parse_decimal("0.1875").unwrap(),
            output: Money::parse_decimal("0.6").unwrap(),
            per_image: Money::parse_decimal("0.04").unwrap(),
            per_second: Money::parse_decimal("0.006").unwrap(),
        }),
        max_output_tokens: Some(16_384),
        managed,
    }
}

fn full_record(request_id: &str, time: i64, user: Option<UserId>) -> CallRecord {
    CallRecord {
        request_id: n(request_id),
        time: at(time),
        user_id: user,
        key_id: Some(KeyId::generate()),
        group: Some(n("vip")),
        model: Some(n("gpt-4o")),
        upstream_model: Some(n("gpt-4o-2024-08-06")),
        channel: Some(n("azure-eu")),
        path: "/v1/chat/completions",
        stream: true,
        usage: TokenUsage {
            input_tokens: 1_234,
            cached_tokens: 1_000,
            cache_write_tokens: 200,
            output_tokens: 56,
            reasoning_tokens: 20,
            images: 2,
            media_ms: 4_500,
        },
        cost: Money::from_nanos(987_654),
        multiplier: Multiplier::from_millionths(1_250_000),
        status: 502,
        error_code: Some(ErrorCode::UpstreamTimeout),
        latency_ms: 1_234,
        ttft_ms: Some(321),
        client_ip: "203.0.113.0".to_owned(),
        user_agent: "openai-python/1.51.0".to_owned(),
        redactions: 3,
        rule_id: Some("deny-7".to_owned()),
        policy_class: Some(PolicyClass::SelfHosted),
        estimated: true,
        channels_tried: vec![n("openai-main"), n("azure-eu")],
    }
}

fn bare_record(request_id: &str, time: i64, user: Option<UserId>) -> CallRecord {
    CallRecord {
        request_id: n(request_id),
        time: at(time),
        user_id: user,
        key_id: None,
        group: None,
        model: None,
        upstream_model: None,
        channel: None,
        path: "/v1/models",
        stream: false,
        usage: TokenUsage::default(),
        cost: Money::ZERO,
        multiplier: Multiplier::ONE,
        status: 401,
        error_code: None,
        latency_ms: 0,
        ttft_ms: None,
        client_ip: String::new(),
        user_agent: String::new(),
        redactions: 0,
        rule_id: None,
        policy_class: None,
        estimated: false,
        channels_tried: Vec::new(),
    }
}

const DAY: i64 = 86_400_000;
/// 2023-11-14T00:00:00Z.
const D0: i64 = 19_675 * DAY;

/// A metered call whose usage is scaled by `n`, so sums identify which records went in.
fn metered(request_id: &str, time: i64, user: Option<UserId>, model: Option<&str>, scale: u64) -> CallRecord {
    let mut record = full_record(request_id, time, user);
    record.model = model.map(n);
    record.usage = TokenUsage {
        input_tokens: 1_000 * scale,
        cached_tokens: 100 * scale,
        output_tokens: 10 * scale,
        ..TokenUsage::default()
    };
    record.cost = Money::from_nanos(1_000_003 * scale as i64);
    record
}

/// The daily row `metered` records with these `ns` add up to.
fn usage_row(user: Option<UserId>, model: Option<&str>, day: &str, ns: &[u64]) -> DailyUsage {
    let total: u64 = ns.iter().sum();
    DailyUsage {
        user_id: user,
        model: model.map(n),
        day: day.to_owned(),
        calls: ns.len() as u64,
        input_tokens: 1_000 * total,
        cached_tokens: 100 * total,
        output_tokens: 10 * total,
        cost: Money::from_nanos(1_000_003 * total as i64),
    }
}

/// Sorted the way `daily_usage` lists: day, model (none first), user (anonymous first).
fn listing_order(mut rows: Vec<DailyUsage>) -> Vec<DailyUsage> {
    rows.sort_by(|a, b| (&a.day, &a.model, a.user_id).cmp(&(&b.day, &b.model, b.user_id)));
    rows
}

fn utc_day(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    at.date().to_string()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    calls: u64,
    input: u64,
    cached: u64,
    output: u64,
    cost: i64,
}

impl Totals {
    fn add(&mut self, calls: u64, input: u64, cached: u64, output: u64, cost: Money) {
        self.calls += calls;
        self.input += input;
        self.cached += cached;
        self.output += output;
        self.cost += cost.nanos();
    }
}

type ByModelDay = BTreeMap<(Option<ModelName>, String), Totals>;

/// Usage per (model, day), whoever it belongs to: what accounting must keep exact.
fn by_model_day(usage: &[DailyUsage], records: &[StoredCallRecord]) -> ByModelDay {
    let mut totals = ByModelDay::new();
    for row in usage {
        let entry = totals.entry((row.model.clone(), row.day.clone())).or_default();
        entry.add(row.calls, row.input_tokens, row.cached_tokens, row.output_tokens, row.cost);
    }
    for stored in records {
        let record = &stored.record;
        let entry = totals.entry((record.model.clone(), utc_day(record.time.unix_millis()))).or_default();
        let usage = record.usage;
        entry.add(1, usage.input_tokens, usage.cached_tokens, usage.output_tokens, record.cost);
    }
    totals
}

fn grand_total(totals: &ByModelDay) -> Totals {
    let mut sum = Totals::default();
    for t in totals.values() {
        sum.add(t.calls, t.input, t.cached, t.output, Money::from_nanos(t.cost));
    }
    sum
}

async fn all_records(store: &Arc<dyn Store>) -> Vec<StoredCallRecord> {
    store.list_call_records(&CallRecordFilter { user_id: None, limit: 1_000_000, ..Default::default() }).await.unwrap()
}

fn audit(action: &str, subject: Option<UserId>, target: Option<&str>, details: serde_json::Value) -> NewAuditEntry {
    NewAuditEntry {
        actor: "cli".to_owned(),
        action: action.to_owned(),
        subject_user: subject,
        target: target.map(str::to_owned),
        details,
    }
}

fn secret(master_key_id: &str, fill: u8) -> WrappedSecret {
    WrappedSecret {
        purpose: "key-hash".to_owned(),
        master_key_id: master_key_id.to_owned(),
        nonce: vec![fill; 24],
        ciphertext: vec![0, fill, 255, 7, 0],
    }
}

// ---------------------------------------------------------------------------------------
// Checks

async fn migrate_twice_and_concurrently(db: &TestDb) {
    db.store.migrate().await.unwrap();
    db.store.migrate().await.unwrap();
    assert_eq!(db.store.revision().await.unwrap(), 0);
    // Every installation has `default`.
    assert_eq!(db.store.list_groups().await.unwrap(), vec![Group::builtin_default()]);

    // Two more processes' worth of connections migrating at once.
    let a = veil_store::connect(&db.url, 2).await.unwrap();
    let b = veil_store::connect(&db.url, 2).await.unwrap();
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(a.revision().await.unwrap(), 0);
}

async fn revision_bumps_on_admin_writes_only(db: &TestDb) {
    let store = &db.store;
    let mut expected = store.revision().await.unwrap();
    let mut check = async |bumps: i64, what: &str| {
        expected += bumps;
        assert_eq!(store.revision().await.unwrap(), expected, "after {what}");
    };

    store.upsert_group(&full_group("vip", true)).await.unwrap();
    check(1, "new group").await;
    store.upsert_group(&full_group("vip", true)).await.unwrap();
    check(0, "unchanged group").await;
    let mut changed = full_group("vip", true);
    changed.privacy.regions = None;
    store.upsert_group(&changed).await.unwrap();
    check(1, "changed group").await;

    let user = store.create_user(new_user("alice", "vip")).await.unwrap();
    check(1, "create user").await;
    assert!(store.create_user(new_user("alice", "vip")).await.is_err());
    check(0, "failed create user").await;

    store.append_ledger(&ledger(user.id, LedgerKind::Topup, "5")).await.unwrap();
    check(1, "ledger entry").await;

    let key = store.create_key(new_key(user.id, "h1")).await.unwrap();
    check(1, "create key").await;
    assert!(store.revoke_key(key.id, at(1)).await.unwrap());
    check(1, "revoke key").await;
    assert!(store.revoke_key(key.id, at(2)).await.unwrap());
    check(0, "revoke again").await;
    assert!(!store.revoke_key(KeyId::generate(), at(2)).await.unwrap());
    check(0, "revoke unknown").await;

    store.upsert_channel(&full_channel("azure-eu", true)).await.unwrap();
    check(1, "new channel").await;
    store.upsert_channel(&full_channel("azure-eu", true)).await.unwrap();
    check(0, "unchanged channel").await;
    let mut changed = full_channel("azure-eu", true);
    changed.policy.region = None;
    store.upsert_channel(&changed).await.unwrap();
    check(1, "changed channel").await;

    store.upsert_model(&model("gpt-4o", true)).await.unwrap();
    check(1, "new model").await;
    store.upsert_model(&model("gpt-4o", true)).await.unwrap();
    check(0, "unchanged model").await;
    let mut changed = model("gpt-4o", true);
    changed.pricing = Pricing::Free;
    store.upsert_model(&changed).await.unwrap();
    check(1, "changed model").await;

    assert_eq!(store.retire_managed_models(&[n("gpt-4o")]).await.unwrap(), 0);
    check(0, "retire nothing").await;
    assert_eq!(store.retire_managed_models(&[]).await.unwrap(), 1);
    check(1, "retire a model").await;
    assert_eq!(store.retire_managed_channels(&[]).await.unwrap(), 1);
    check(1, "retire a channel").await;
    store.upsert_group(&bare_group("free", true)).await.unwrap();
    check(1, "new group").await;
    assert_eq!(store.retire_managed_groups(&[n("vip")]).await.unwrap(), 1);
    check(1, "retire a group").await;

    store
        .insert_call_records(&[full_record("req-1", 1, Some(user.id)), bare_record("req-2", 2, None)], &[])
        .await
        .unwrap();
    check(0, "call records").await;
    store.insert_wrapped_secret_if_absent(&secret("mk1", 1)).await.unwrap();
    check(0, "wrapped secret").await;

    store.append_audit(&audit("user.credit", Some(user.id), None, json!({})), at(3)).await.unwrap();
    check(0, "audit entry").await;
    assert_eq!(store.purge_call_records(at(i64::MAX), 0).await.unwrap(), 2);
    check(0, "purge").await;
    assert_eq!(store.erase_user(user.id).await.unwrap().keys_deleted, 1);
    check(1, "erase user").await;
    assert!(store.erase_user(user.id).await.is_err());
    check(0, "erase unknown user").await;
}

async fn users_and_balances(db: &TestDb) {
    let store = &db.store;
    let before = Timestamp::now();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    assert!(bob.created_at >= before);
    assert!(!bob.disabled);
    assert_eq!(bob.name.as_str(), "bob");
    assert_eq!(bob.role, Role::Admin);

    match store.create_user(new_user("bob", "default")).await {
        Err(StoreError::Conflict(what)) => assert_eq!(what, "user bob"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.create_user(new_user("carol", "nope")).await {
        Err(StoreError::NotFound(what)) => assert_eq!(what, "group nope"),
        other => panic!("expected not found, got {other:?}"),
    }

    let alice = store
        .create_user(NewUser {
            name: n("alice@example.com"),
            email: None,
            role: Role::User,
            group: GroupName::default_group(),
            password_hash: None,
        })
        .await
        .unwrap();

    assert_eq!(store.user_by_name(&n("bob")).await.unwrap(), Some(bob.clone()));
    assert_eq!(store.user_by_id(bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(store.user_by_id(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.user_by_name(&n("nobody")).await.unwrap(), None);
    assert_eq!(store.user_by_id(UserId::generate()).await.unwrap(), None);

    for (kind, amount) in [
        (LedgerKind::Topup, "10"),
        (LedgerKind::Hold, "-2.5"),
        (LedgerKind::Refund, "2.5"),
        (LedgerKind::Charge, "-3.000000001"),
        (LedgerKind::Adjustment, "0.5"),
    ] {
        store.append_ledger(&ledger(bob.id, kind, amount)).await.unwrap();
    }
    // A hold reserves and moves no money: the balance is every other row.
    assert_eq!(store.balance(bob.id).await.unwrap(), Money::parse_decimal("9.999999999").unwrap());
    assert_eq!(store.balance(alice.id).await.unwrap(), Money::ZERO);
    assert_eq!(store.balance(UserId::generate()).await.unwrap(), Money::ZERO);
    match store.append_ledger(&ledger(UserId::generate(), LedgerKind::Topup, "1")).await {
        Err(StoreError::NotFound(what)) => assert!(what.starts_with("user ")),
        other => panic!("expected not found, got {other:?}"),
    }

    // A balance can go negative (e.g. an adjustment after a settled overrun).
    store.append_ledger(&ledger(alice.id, LedgerKind::Adjustment, "-1")).await.unwrap();

    let listed = store.list_users().await.unwrap();
    let summary: Vec<_> = listed.iter().map(|s| (s.user.name.to_string(), s.balance)).collect();
    assert_eq!(
        summary,
        vec![
            ("alice@example.com".to_owned(), Money::parse_decimal("-1").unwrap()),
            ("bob".to_owned(), Money::parse_decimal("9.999999999").unwrap()),
        ]
    );
    assert_eq!(listed[1].user, bob);

    // Names sort bytewise on both backends (uppercase before lowercase).
    store.create_user(new_user("Zed", "default")).await.unwrap();
    let names: Vec<_> = store.list_users().await.unwrap().into_iter().map(|s| s.user.name.to_string()).collect();
    assert_eq!(names, ["Zed", "alice@example.com", "bob"]);
}

async fn keys(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();

    let before = Timestamp::now();
    let full = store.create_key(new_key(alice.id, "hash-full")).await.unwrap();
    assert!(full.created_at >= before);
    assert_eq!(full.revoked_at, None);
    let bare = store.create_key(bare_key(bob.id, "hash-bare")).await.unwrap();
    let third = store.create_key(bare_key(alice.id, "hash-third")).await.unwrap();

    assert_eq!(store.key_by_hash("hash-full").await.unwrap(), Some(full.clone()));
    assert_eq!(store.key_by_hash("hash-bare").await.unwrap(), Some(bare.clone()));
    assert_eq!(store.key_by_hash("hash-missing").await.unwrap(), None);

    match store.create_key(bare_key(bob.id, "hash-full")).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.create_key(bare_key(UserId::generate(), "hash-orphan")).await {
        Err(StoreError::NotFound(what)) => assert!(what.starts_with("user ")),
        other => panic!("expected not found, got {other:?}"),
    }

    assert_eq!(store.list_keys(None).await.unwrap(), vec![full.clone(), bare.clone(), third.clone()]);
    assert_eq!(store.list_keys(Some(alice.id)).await.unwrap(), vec![full.clone(), third.clone()]);
    assert_eq!(store.list_keys(Some(bob.id)).await.unwrap(), vec![bare.clone()]);
    assert_eq!(store.list_keys(Some(UserId::generate())).await.unwrap(), vec![]);

    assert!(store.revoke_key(full.id, at(1_700_000_000_001)).await.unwrap());
    assert!(store.revoke_key(full.id, at(1_700_000_000_999)).await.unwrap());
    assert!(!store.revoke_key(KeyId::generate(), at(5)).await.unwrap());
    let revoked = store.key_by_hash("hash-full").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(at(1_700_000_000_001)));
    assert_eq!(revoked, veil_domain::ApiKey { revoked_at: Some(at(1_700_000_000_001)), ..full });
    assert!(!revoked.is_usable_at(at(1_700_000_000_002)));
    assert_eq!(store.key_by_hash("hash-bare").await.unwrap().unwrap().revoked_at, None);
}

async fn groups_round_trip_and_retire(db: &TestDb) {
    let store = &db.store;
    let vip = full_group("vip", true);
    let mut empty_lists = bare_group("free", true);
    empty_lists.privacy.regions = Some(Vec::new());
    store.upsert_group(&vip).await.unwrap();
    store.upsert_group(&empty_lists).await.unwrap();
    store.upsert_group(&bare_group("old", true)).await.unwrap();
    store.upsert_group(&bare_group("hand-made", false)).await.unwrap();
    store.upsert_group(&bare_group("in-use", true)).await.unwrap();
    store.create_user(new_user("alice", "in-use")).await.unwrap();

    let names = |groups: Vec<Group>| groups.into_iter().map(|g| g.name.to_string()).collect::<Vec<_>>();
    let listed = store.list_groups().await.unwrap();
    assert_eq!(names(listed.clone()), ["default", "free", "hand-made", "in-use", "old", "vip"]);
    assert_eq!(listed[1], empty_lists);
    assert_eq!(listed[5], vip);

    // Upsert replaces every field.
    let mut vip2 = bare_group("vip", false);
    vip2.multiplier = Multiplier::from_millionths(0);
    store.upsert_group(&vip2).await.unwrap();
    assert_eq!(store.list_groups().await.unwrap()[5], vip2);
    store.upsert_group(&vip).await.unwrap();

    // A managed `default` stays, as does a group someone still belongs to.
    let mut managed_default = Group::builtin_default();
    managed_default.managed = true;
    store.upsert_group(&managed_default).await.unwrap();
    assert_eq!(store.retire_managed_groups(&[n("vip")]).await.unwrap(), 2);
    assert_eq!(names(store.list_groups().await.unwrap()), ["default", "hand-made", "in-use", "vip"]);
    assert_eq!(store.retire_managed_groups(&[]).await.unwrap(), 1);
    assert_eq!(names(store.list_groups().await.unwrap()), ["default", "hand-made", "in-use"]);
}

async fn channels_round_trip_and_retire(db: &TestDb) {
    let store = &db.store;
    let full = full_channel("azure-eu", true);
    let mut zero_days = bare_channel("local", false);
    zero_days.policy.retention = Retention::Days(0);
    zero_days.groups = Some(Vec::new());
    store.upsert_channel(&full).await.unwrap();
    store.upsert_channel(&zero_days).await.unwrap();
    store.upsert_channel(&bare_channel("echo-b", true)).await.unwrap();
    assert_eq!(
        store.list_channels().await.unwrap(),
        vec![full.clone(), bare_channel("echo-b", true), zero_days.clone()]
    );

    let replaced = bare_channel("azure-eu", true);
    store.upsert_channel(&replaced).await.unwrap();
    assert_eq!(store.list_channels().await.unwrap()[0], replaced);
    store.upsert_channel(&full).await.unwrap();
    assert_eq!(store.list_channels().await.unwrap()[0], full);

    assert_eq!(store.retire_managed_channels(&[n("azure-eu"), n("gone")]).await.unwrap(), 1);
    assert_eq!(store.list_channels().await.unwrap(), vec![full, zero_days.clone()]);
    assert_eq!(store.retire_managed_channels(&[]).await.unwrap(), 1);
    assert_eq!(store.list_channels().await.unwrap(), vec![zero_days]);
}

async fn models_round_trip_and_retire(db: &TestDb) {
    let store = &db.store;
    let mut free = model("meta-llama/Llama-3.1-8B:free", false);
    free.pricing = Pricing::Free;
    free.max_output_tokens = None;
    let mut unpriced = model("new-model", true);
    unpriced.pricing = Pricing::Unpriced;
    store.upsert_model(&unpriced).await.unwrap();
    store.upsert_model(&model("gpt-4o-mini", true)).await.unwrap();
    store.upsert_model(&model("gpt-4o", true)).await.unwrap();
    store.upsert_model(&free).await.unwrap();
    let mut repriced = model("gpt-4o", true);
    if let Pricing::Priced(price) = &mut repriced.pricing {
        price.input = Money::from_nanos(2_500_000_000);
    }
    store.upsert_model(&repriced).await.unwrap();
    assert_eq!(
        store.list_models().await.unwrap(),
        vec![repriced.clone(), model("gpt-4o-mini", true), free.clone(), unpriced]
    );
    assert_eq!(store.retire_managed_models(&[n("gpt-4o")]).await.unwrap(), 2);
    assert_eq!(store.list_models().await.unwrap(), vec![repriced, free]);
}

async fn call_records_round_trip(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let full = full_record("req_full", 2_000, Some(alice.id));
    let bare = bare_record("req_bare", 1_000, None);
    let orphan = full_record("req_orphan", 500, Some(UserId::generate()));
    let mut odd_path = bare_record("req_odd", 100, None);
    odd_path.path = "/v1/not-a-route";
    store.insert_call_records(&[], &[]).await.unwrap();
    store.insert_call_records(&[full.clone(), bare.clone(), orphan.clone(), odd_path], &[]).await.unwrap();

    let read = store.list_call_records(&CallRecordFilter::default()).await.unwrap();
    assert_eq!(read.len(), 4);
    assert_eq!(read[0].record, full);
    assert_eq!(read[0].user_name, Some(n("alice")));
    assert_eq!(read[1].record, bare);
    assert_eq!(read[1].user_name, None);
    assert_eq!(read[2].record, orphan);
    assert_eq!(read[2].user_name, None);
    assert_eq!(read[3].record.path, "other");

    // Every known route reads back as itself.
    let routes: Vec<_> = veil_store::ROUTE_PATHS
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let mut record = bare_record(&format!("req_route_{i:02}"), 10_000, None);
            record.path = path;
            record
        })
        .collect();
    store.insert_call_records(&routes, &[]).await.unwrap();
    let read = store
        .list_call_records(&CallRecordFilter { user_id: None, limit: routes.len() as u32, ..Default::default() })
        .await
        .unwrap();
    let mut paths: Vec<_> = read.iter().map(|r| r.record.path).collect();
    paths.reverse();
    assert_eq!(paths, veil_store::ROUTE_PATHS);
}

async fn call_records_order_limit_and_filter(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    // More than one statement's worth on SQLite, in one batch.
    let batch: Vec<_> = (0..1_500)
        .map(|i| {
            let user = if i % 3 == 0 { Some(alice.id) } else { Some(bob.id) };
            bare_record(&format!("req_{i:05}"), 1_000 + i64::from(i / 2), user)
        })
        .collect();
    store.insert_call_records(&batch, &[]).await.unwrap();
    // Equal times are ordered by request id, descending.
    let tie = [bare_record("req_tie_a", 5_000, None), bare_record("req_tie_b", 5_000, None)];
    store.insert_call_records(&tie, &[]).await.unwrap();

    let newest = store.list_call_records(&CallRecordFilter::default()).await.unwrap();
    assert_eq!(newest.len(), 100, "limit 0 means 100");
    let ids: Vec<_> = newest.iter().take(4).map(|r| r.record.request_id.to_string()).collect();
    assert_eq!(ids, ["req_tie_b", "req_tie_a", "req_01499", "req_01498"]);
    for pair in newest.windows(2) {
        let (a, b) = (&pair[0].record, &pair[1].record);
        assert!((a.time, &a.request_id) > (b.time, &b.request_id));
    }

    let three =
        store.list_call_records(&CallRecordFilter { user_id: None, limit: 3, ..Default::default() }).await.unwrap();
    assert_eq!(three.len(), 3);

    let all =
        store.list_call_records(&CallRecordFilter { user_id: None, limit: 5_000, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 1_502);

    let alices = store
        .list_call_records(&CallRecordFilter { user_id: Some(alice.id), limit: 1_000, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(alices.len(), 500);
    assert!(alices.iter().all(|r| r.record.user_id == Some(alice.id)));
    assert!(alices.iter().all(|r| r.user_name == Some(n("alice"))));
    assert_eq!(alices[0].record.request_id, n::<RequestId>("req_01497"));
    let nobody = store
        .list_call_records(&CallRecordFilter { user_id: Some(UserId::generate()), limit: 0, ..Default::default() })
        .await
        .unwrap();
    assert!(nobody.is_empty());
}

async fn wrapped_secrets_keep_the_first(db: &TestDb) {
    let store = &db.store;
    assert_eq!(store.wrapped_secrets("key-hash").await.unwrap(), vec![]);
    let first = secret("mk1", 1);
    assert_eq!(store.insert_wrapped_secret_if_absent(&first).await.unwrap(), first);
    assert_eq!(store.insert_wrapped_secret_if_absent(&secret("mk2", 2)).await.unwrap(), first);
    assert_eq!(store.wrapped_secrets("key-hash").await.unwrap(), vec![first.clone()]);

    // Two processes starting at once agree on one secret.
    let a = veil_store::connect(&db.url, 1).await.unwrap();
    let b = veil_store::connect(&db.url, 1).await.unwrap();
    let mut x = secret("mk-x", 3);
    x.purpose = "session".to_owned();
    let mut y = secret("mk-y", 4);
    y.purpose = "session".to_owned();
    let (kept_a, kept_b) = tokio::join!(a.insert_wrapped_secret_if_absent(&x), b.insert_wrapped_secret_if_absent(&y));
    let (kept_a, kept_b) = (kept_a.unwrap(), kept_b.unwrap());
    assert_eq!(kept_a, kept_b);
    assert!(kept_a == x || kept_a == y);
}

async fn wrapped_secret_copies_rotate(db: &TestDb) {
    let store = &db.store;
    let old = secret("mk1", 1);
    store.insert_wrapped_secret_if_absent(&old).await.unwrap();
    // A copy needs an existing purpose.
    let mut stray = secret("mk2", 9);
    stray.purpose = "nothing-yet".to_owned();
    assert!(matches!(store.add_wrapped_copy(&stray).await, Err(StoreError::NotFound(_))));

    let new = secret("mk2", 2);
    assert!(store.add_wrapped_copy(&new).await.unwrap());
    // Idempotent: a second copy for the same key keeps the first.
    assert!(!store.add_wrapped_copy(&secret("mk2", 3)).await.unwrap());
    assert_eq!(store.wrapped_secrets("key-hash").await.unwrap(), vec![old.clone(), new.clone()]);
    // Each master key finds its own copy.
    assert_eq!(store.insert_wrapped_secret_if_absent(&secret("mk2", 4)).await.unwrap(), new);
    assert_eq!(store.insert_wrapped_secret_if_absent(&secret("mk1", 5)).await.unwrap(), old);
    assert_eq!(store.insert_wrapped_secret_if_absent(&secret("mk0", 6)).await.unwrap(), old);

    let mut other = secret("mk1", 7);
    other.purpose = "session".to_owned();
    store.insert_wrapped_secret_if_absent(&other).await.unwrap();
    assert_eq!(store.list_wrapped_secrets().await.unwrap(), vec![old.clone(), new.clone(), other.clone()]);

    // Retiring the old key deletes its copies, except a purpose's last one.
    assert_eq!(store.retire_wrapped_copies("mk1").await.unwrap(), 1);
    assert_eq!(store.list_wrapped_secrets().await.unwrap(), vec![new.clone(), other.clone()]);
    assert_eq!(store.retire_wrapped_copies("mk1").await.unwrap(), 0);
    assert_eq!(store.retire_wrapped_copies("mk2").await.unwrap(), 0);
    assert_eq!(store.wrapped_secrets("key-hash").await.unwrap(), vec![new]);
}

async fn ledger_lists_oldest_first(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let entry = |user, kind, amount: &str, time: i64, note: Option<&str>| LedgerEntry {
        user_id: user,
        key_id: None,
        kind,
        amount: Money::parse_decimal(amount).unwrap(),
        time: at(time),
        request_id: None,
        note: note.map(str::to_owned),
    };
    let late = entry(alice.id, LedgerKind::Charge, "-1.5", 3_000, None);
    let early = entry(alice.id, LedgerKind::Topup, "10", 1_000, Some("credit by admin"));
    let same_time_first = entry(alice.id, LedgerKind::Hold, "-2", 2_000, None);
    let same_time_second =
        LedgerEntry { request_id: Some("req_9".to_owned()), ..entry(alice.id, LedgerKind::Refund, "2", 2_000, None) };
    for e in [&late, &early, &same_time_first, &same_time_second] {
        store.append_ledger(e).await.unwrap();
    }
    store.append_ledger(&entry(bob.id, LedgerKind::Topup, "1", 500, None)).await.unwrap();
    assert_eq!(store.list_ledger(alice.id).await.unwrap(), vec![early, same_time_first, same_time_second, late]);
    assert_eq!(store.list_ledger(bob.id).await.unwrap().len(), 1);
    assert!(store.list_ledger(UserId::generate()).await.unwrap().is_empty());
}

async fn audit_log_chains_and_lists(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let revision = store.revision().await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap(), AuditVerification { entries: 0, first_broken: None });
    assert!(store.list_audit(None, 0).await.unwrap().is_empty());

    let entries = [
        audit("key.create", Some(alice.id), Some("0190f0e2-key"), json!({"prefix": "sk-veil-AbCd"})),
        audit("user.credit", Some(bob.id), Some("bob"), json!({"amount": "5", "note": {"z": 1, "a": [1.5, "ü\"\n"]}})),
        audit("channel.upsert", None, Some("azure-eu"), json!({})),
        NewAuditEntry {
            actor: format!("user:{}", alice.id),
            ..audit("user.export", Some(alice.id), None, json!(null))
        },
    ];
    let mut written = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let time = at(1_700_000_000_000 + i as i64);
        let stored = store.append_audit(entry, time).await.unwrap();
        assert_eq!(stored.seq, i as i64 + 1);
        assert_eq!(stored.time, time);
        assert_eq!((&stored.actor, &stored.action), (&entry.actor, &entry.action));
        assert_eq!(
            (stored.subject_user, &stored.target, &stored.details),
            (entry.subject_user, &entry.target, &entry.details)
        );
        let prev = written.last().map_or(GENESIS_HASH.to_owned(), |e: &veil_store::AuditEntry| e.hash.clone());
        assert_eq!(stored.prev_hash, prev);
        let details = veil_store::canonical_json(&entry.details);
        let expected = veil_store::entry_hash(
            &prev,
            stored.seq,
            time,
            &entry.actor,
            &entry.action,
            entry.subject_user,
            entry.target.as_deref(),
            &details,
        );
        assert_eq!(stored.hash, expected);
        written.push(stored);
    }
    assert_eq!(store.revision().await.unwrap(), revision, "audit appends do not bump the revision");

    // Newest first, details read back as written (key order is not significant).
    let mut newest_first = written.clone();
    newest_first.reverse();
    assert_eq!(store.list_audit(None, 0).await.unwrap(), newest_first);
    assert_eq!(store.list_audit(None, 2).await.unwrap(), newest_first[..2]);
    assert_eq!(store.list_audit(Some(alice.id), 0).await.unwrap(), vec![written[3].clone(), written[0].clone()]);
    assert_eq!(store.list_audit(Some(bob.id), 0).await.unwrap(), vec![written[1].clone()]);
    assert!(store.list_audit(Some(UserId::generate()), 0).await.unwrap().is_empty());
    assert_eq!(store.verify_audit().await.unwrap(), AuditVerification { entries: 4, first_broken: None });

    // More than one verification page.
    for i in 0..1_100 {
        store.append_audit(&audit("key.revoke", None, Some("k"), json!({"i": i})), at(i)).await.unwrap();
    }
    assert_eq!(store.verify_audit().await.unwrap(), AuditVerification { entries: 1_104, first_broken: None });
    assert_eq!(store.list_audit(None, 1).await.unwrap()[0].seq, 1_104);
}

async fn audit_verify_finds_tampering(db: &TestDb) {
    let store = &db.store;
    for i in 1..=6 {
        let entry = audit("user.credit", None, Some("bob"), json!({"amount": i.to_string()}));
        store.append_audit(&entry, at(i)).await.unwrap();
    }
    assert_eq!(store.verify_audit().await.unwrap(), AuditVerification { entries: 6, first_broken: None });

    // A modified row.
    assert_eq!(raw_execute(db, "UPDATE audit_log SET details = '{\"amount\":\"500\"}' WHERE seq = 2").await, 1);
    assert_eq!(store.verify_audit().await.unwrap(), AuditVerification { entries: 6, first_broken: Some(2) });
    // Even an equivalent but differently written value breaks it: details are hashed as stored.
    raw_execute(db, "UPDATE audit_log SET details = '{\"amount\": \"2\"}' WHERE seq = 2").await;
    assert_eq!(store.verify_audit().await.unwrap().first_broken, Some(2));
    raw_execute(db, "UPDATE audit_log SET details = '{\"amount\":\"2\"}' WHERE seq = 2").await;
    assert_eq!(store.verify_audit().await.unwrap().first_broken, None);

    // Other columns are covered too.
    raw_execute(db, "UPDATE audit_log SET target = 'carol' WHERE seq = 3").await;
    assert_eq!(store.verify_audit().await.unwrap().first_broken, Some(3));
    raw_execute(db, "UPDATE audit_log SET target = 'bob' WHERE seq = 3").await;
    raw_execute(db, "UPDATE audit_log SET time = time + 1 WHERE seq = 5").await;
    assert_eq!(store.verify_audit().await.unwrap().first_broken, Some(5));
    raw_execute(db, "UPDATE audit_log SET time = time - 1 WHERE seq = 5").await;
    assert_eq!(store.verify_audit().await.unwrap().first_broken, None);

    // A changed hash breaks its own row, and a link to it does not mend that.
    raw_execute(db, "UPDATE audit_log SET hash = 'ab' WHERE seq = 4").await;
    assert_eq!(store.verify_audit().await.unwrap().first_broken, Some(4));
    raw_execute(db, "UPDATE audit_log SET prev_hash = 'ab' WHERE seq = 5").await;
    assert_eq!(store.verify_audit().await.unwrap().first_broken, Some(4));

    // Dropping the newest entries leaves an intact, shorter chain (DESIGN: compare the head
    // with one recorded elsewhere); appending continues from it.
    raw_execute(db, "DELETE FROM audit_log WHERE seq >= 4").await;
    assert_eq!(store.verify_audit().await.unwrap(), AuditVerification { entries: 3, first_broken: None });
    for i in 4..=6 {
        store
            .append_audit(&audit("user.credit", None, Some("bob"), json!({"amount": i.to_string()})), at(i))
            .await
            .unwrap();
    }
    assert_eq!(store.verify_audit().await.unwrap(), AuditVerification { entries: 6, first_broken: None });
    // A deleted middle row is found as a gap.
    assert_eq!(raw_execute(db, "DELETE FROM audit_log WHERE seq = 3").await, 1);
    assert_eq!(store.verify_audit().await.unwrap(), AuditVerification { entries: 5, first_broken: Some(3) });
    // The log goes on from the newest entry.
    assert_eq!(store.append_audit(&audit("x", None, None, json!({})), at(7)).await.unwrap().seq, 7);
    assert_eq!(store.verify_audit().await.unwrap(), AuditVerification { entries: 6, first_broken: Some(3) });
    // A deleted first row, too.
    raw_execute(db, "DELETE FROM audit_log WHERE seq = 1").await;
    assert_eq!(store.verify_audit().await.unwrap().first_broken, Some(1));
}

async fn audit_appends_from_two_processes_chain(db: &TestDb) {
    let a = veil_store::connect(&db.url, 2).await.unwrap();
    let b = veil_store::connect(&db.url, 2).await.unwrap();
    let append = async |store: &Arc<dyn Store>, who: &str| {
        for i in 0..25 {
            let entry = audit("key.create", None, Some(&format!("{who}-{i}")), json!({"i": i}));
            store.append_audit(&entry, Timestamp::now()).await.unwrap();
        }
    };
    let futures = (append(&a, "a"), append(&b, "b"), append(&db.store, "c"));
    tokio::join!(futures.0, futures.1, futures.2);
    assert_eq!(db.store.verify_audit().await.unwrap(), AuditVerification { entries: 75, first_broken: None });
    let seqs: Vec<_> = db.store.list_audit(None, 1_000).await.unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=75).rev().collect::<Vec<_>>());
}

async fn purge_folds_old_records_into_daily_usage(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let ghost = UserId::generate(); // an account that no longer exists
    let (a, b) = (Some(alice.id), Some(bob.id));
    let old = [
        metered("a1", D0 - 1, a, Some("gpt-4o"), 1),
        metered("a2", D0, a, Some("gpt-4o"), 2),
        metered("a3", D0 + DAY - 1, a, Some("gpt-4o"), 3),
        metered("a4", D0 + 5, a, Some("gpt-4o-mini"), 4),
        metered("a5", D0 + 6, a, None, 5),
        metered("b1", D0 + 7, b, Some("gpt-4o"), 6),
        metered("n1", D0 + 8, None, Some("gpt-4o"), 7),
        metered("g1", D0 + 9, Some(ghost), Some("gpt-4o"), 8),
        metered("e1", -1, None, None, 9),
    ];
    let recent = [metered("a6", D0 + DAY, a, Some("gpt-4o"), 10), metered("b2", D0 + 2 * DAY, b, None, 11)];
    store.insert_call_records(&old, &[]).await.unwrap();
    store.insert_call_records(&recent, &[]).await.unwrap();
    let revision = store.revision().await.unwrap();

    // A batch of 2 takes five transactions; the cutoff is exclusive.
    assert_eq!(store.purge_call_records(at(D0 + DAY), 2).await.unwrap(), 9);
    let left: Vec<_> = all_records(store).await.into_iter().map(|r| r.record.request_id.to_string()).collect();
    assert_eq!(left, ["b2", "a6"]);
    let expected = listing_order(vec![
        usage_row(None, None, "1969-12-31", &[9]),
        usage_row(a, Some("gpt-4o"), "2023-11-13", &[1]),
        usage_row(a, None, "2023-11-14", &[5]),
        usage_row(None, Some("gpt-4o"), "2023-11-14", &[7, 8]),
        usage_row(a, Some("gpt-4o"), "2023-11-14", &[2, 3]),
        usage_row(b, Some("gpt-4o"), "2023-11-14", &[6]),
        usage_row(a, Some("gpt-4o-mini"), "2023-11-14", &[4]),
    ]);
    assert_eq!(store.daily_usage(None).await.unwrap(), expected);
    assert_eq!(expected[0].day, "1969-12-31");
    assert_eq!(expected[1].day, "2023-11-13");
    assert_eq!(store.purge_call_records(at(D0 + DAY), 2).await.unwrap(), 0);
    assert_eq!(store.revision().await.unwrap(), revision, "a purge does not bump the revision");

    // A later purge adds into the existing row.
    store.insert_call_records(&[metered("a7", D0 + 10, a, Some("gpt-4o"), 12)], &[]).await.unwrap();
    assert_eq!(store.purge_call_records(at(D0 + DAY), 0).await.unwrap(), 1);
    assert_eq!(
        store.daily_usage(a).await.unwrap(),
        vec![
            usage_row(a, Some("gpt-4o"), "2023-11-13", &[1]),
            usage_row(a, None, "2023-11-14", &[5]),
            usage_row(a, Some("gpt-4o"), "2023-11-14", &[2, 3, 12]),
            usage_row(a, Some("gpt-4o-mini"), "2023-11-14", &[4]),
        ]
    );
    assert_eq!(store.daily_usage(b).await.unwrap(), vec![usage_row(b, Some("gpt-4o"), "2023-11-14", &[6])]);
    assert!(store.daily_usage(Some(ghost)).await.unwrap().is_empty());

    // Everything, in batches exactly the size of what is left.
    assert_eq!(store.purge_call_records(at(i64::MAX), 2).await.unwrap(), 2);
    assert!(all_records(store).await.is_empty());
    let days: Vec<_> = store.daily_usage(None).await.unwrap().into_iter().map(|r| r.day).collect();
    assert_eq!(days.last().map(String::as_str), Some("2023-11-16"));
    assert_eq!(store.daily_usage(b).await.unwrap()[1], usage_row(b, None, "2023-11-16", &[11]));
}

async fn concurrent_purges_count_each_record_once(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let users = [Some(alice.id), Some(bob.id), None];
    let records: Vec<_> = (0..2_000u64)
        .map(|i| {
            let model = if i % 2 == 0 { Some("gpt-4o") } else { Some("llama3:8b") };
            let time = D0 + (i % 5) as i64 * DAY + i as i64;
            metered(&format!("req_{i:05}"), time, users[(i % 3) as usize], model, i % 7 + 1)
        })
        .collect();
    store.insert_call_records(&records, &[]).await.unwrap();
    let before = by_model_day(&[], &all_records(store).await);

    let a = veil_store::connect(&db.url, 2).await.unwrap();
    let b = veil_store::connect(&db.url, 2).await.unwrap();
    let (x, y, z) = tokio::join!(
        a.purge_call_records(at(i64::MAX), 50),
        b.purge_call_records(at(i64::MAX), 50),
        store.purge_call_records(at(i64::MAX), 70)
    );
    assert_eq!(x.unwrap() + y.unwrap() + z.unwrap(), 2_000);
    assert!(all_records(store).await.is_empty());
    let usage = store.daily_usage(None).await.unwrap();
    assert_eq!(by_model_day(&usage, &[]), before);
    // 3 users × 2 models × 5 days, each once.
    assert_eq!(usage.len(), 30);
    assert_eq!(usage, listing_order(usage.clone()));
}

async fn erase_user_anonymises_and_keeps_totals(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let carol = store.create_user(new_user("carol", "default")).await.unwrap();
    let (a, b, c) = (Some(alice.id), Some(bob.id), Some(carol.id));
    store.create_key(new_key(alice.id, "alice-1")).await.unwrap();
    store.create_key(bare_key(alice.id, "alice-2")).await.unwrap();
    let bobs_key = store.create_key(bare_key(bob.id, "bob-1")).await.unwrap();
    for (user, amount) in [(alice.id, "10"), (alice.id, "-2.5"), (bob.id, "7"), (carol.id, "3")] {
        store.append_ledger(&ledger(user, LedgerKind::Topup, amount)).await.unwrap();
    }
    store.append_audit(&audit("user.credit", a, Some("alice"), json!({"amount": "10"})), at(1)).await.unwrap();
    store.append_audit(&audit("key.create", b, None, json!({})), at(2)).await.unwrap();

    // Old records (purged into per-user aggregates) and recent ones, for everyone.
    store
        .insert_call_records(
            &[
                metered("a1", D0, a, Some("gpt-4o"), 1),
                metered("a2", D0 + 1, a, None, 2),
                metered("b1", D0 + 2, b, Some("gpt-4o"), 3),
                metered("n1", D0 + 3, None, Some("gpt-4o"), 4),
                metered("c1", D0 + 4, c, Some("gpt-4o"), 5),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(store.purge_call_records(at(D0 + DAY), 0).await.unwrap(), 5);
    let recent = [
        metered("a3", D0 + DAY, a, Some("gpt-4o"), 6),
        metered("a4", D0 + DAY + 1, a, Some("gpt-4o"), 7),
        metered("a5", D0 + 2 * DAY, a, Some("gpt-4o-mini"), 8),
        metered("b2", D0 + DAY + 2, b, Some("gpt-4o"), 9),
        metered("n2", D0 + DAY + 3, None, Some("gpt-4o"), 10),
    ];
    store.insert_call_records(&recent, &[]).await.unwrap();

    let usage_before = store.daily_usage(None).await.unwrap();
    let records_before = all_records(store).await;
    let totals_before = by_model_day(&usage_before, &records_before);
    let bobs_usage = store.daily_usage(b).await.unwrap();
    let revision = store.revision().await.unwrap();
    let ledger_sum = "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger";
    let ledger_before = raw_i64(db, ledger_sum).await;

    let report = store.erase_user(alice.id).await.unwrap();
    assert_eq!(report, ErasureReport { keys_deleted: 2, records_anonymised: 3 });
    assert_eq!(store.revision().await.unwrap(), revision + 1);

    // The account, its keys and anything naming it are gone…
    assert_eq!(store.user_by_name(&n("alice")).await.unwrap(), None);
    assert_eq!(store.user_by_id(alice.id).await.unwrap(), None);
    assert_eq!(store.key_by_hash("alice-1").await.unwrap(), None);
    assert_eq!(store.key_by_hash("alice-2").await.unwrap(), None);
    assert_eq!(store.list_keys(None).await.unwrap(), vec![bobs_key]);
    let records_after = all_records(store).await;
    assert!(records_after.iter().all(|r| r.record.user_id != a));
    assert_eq!(records_after.len(), records_before.len() - 3);
    assert!(
        store
            .list_call_records(&CallRecordFilter { user_id: a, limit: 0, ..Default::default() })
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.daily_usage(a).await.unwrap().is_empty());
    let usage_after = store.daily_usage(None).await.unwrap();
    assert!(usage_after.iter().all(|r| r.user_id != a));
    assert!(store.list_ledger(alice.id).await.unwrap().is_empty());
    assert_eq!(store.balance(alice.id).await.unwrap(), Money::ZERO);
    assert!(!store.list_users().await.unwrap().iter().any(|u| u.user.id == alice.id));

    // …while accounting stays exact: per model and day, and in total.
    assert_eq!(by_model_day(&usage_after, &records_after), totals_before);
    assert_eq!(
        listing_order(usage_after.iter().filter(|r| r.user_id.is_none()).cloned().collect()),
        vec![
            usage_row(None, None, "2023-11-14", &[2]),
            usage_row(None, Some("gpt-4o"), "2023-11-14", &[1, 4]),
            usage_row(None, Some("gpt-4o"), "2023-11-15", &[6, 7]),
            usage_row(None, Some("gpt-4o-mini"), "2023-11-16", &[8]),
        ]
    );
    assert_eq!(raw_i64(db, ledger_sum).await, ledger_before);
    assert_eq!(raw_i64(db, "SELECT COUNT(*) FROM ledger WHERE user_id IS NULL").await, 2);
    assert_eq!(store.daily_usage(b).await.unwrap(), bobs_usage);
    assert_eq!(store.balance(bob.id).await.unwrap(), Money::parse_decimal("7").unwrap());

    // The audit log keeps what happened about the account, and still verifies.
    let about_alice = store.list_audit(a, 0).await.unwrap();
    assert_eq!(about_alice.len(), 1);
    assert_eq!(about_alice[0].action, "user.credit");
    assert_eq!(store.verify_audit().await.unwrap(), AuditVerification { entries: 2, first_broken: None });

    // An account with only aggregates left: daily_usage(None) sums to exactly the same.
    let before = store.daily_usage(None).await.unwrap();
    assert_eq!(store.erase_user(carol.id).await.unwrap(), ErasureReport { keys_deleted: 0, records_anonymised: 0 });
    let after = store.daily_usage(None).await.unwrap();
    assert_eq!(grand_total(&by_model_day(&after, &[])), grand_total(&by_model_day(&before, &[])));
    assert_eq!(by_model_day(&after, &[]), by_model_day(&before, &[]));
    assert!(after.iter().all(|r| r.user_id != c));
    assert_eq!(after.len(), before.len() - 1, "carol's row merged into the anonymous one");

    match store.erase_user(alice.id).await {
        Err(StoreError::NotFound(what)) => assert_eq!(what, format!("user {}", alice.id)),
        other => panic!("expected not found, got {other:?}"),
    }
    assert!(matches!(store.erase_user(UserId::generate()).await, Err(StoreError::NotFound(_))));
    // The name is free again; the new account is a different one with nothing attached.
    let again = store.create_user(new_user("alice", "default")).await.unwrap();
    assert_ne!(again.id, alice.id);
    assert!(store.list_ledger(again.id).await.unwrap().is_empty());
    // The erased user can no longer get ledger entries or keys.
    assert!(matches!(
        store.append_ledger(&ledger(alice.id, LedgerKind::Topup, "1")).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(store.create_key(bare_key(alice.id, "alice-3")).await, Err(StoreError::NotFound(_))));
}

async fn erase_during_purge_keeps_totals(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let users = [Some(alice.id), Some(bob.id), None];
    let records: Vec<_> = (0..1_500u64)
        .map(|i| {
            let model = if i % 2 == 0 { Some("gpt-4o") } else { None };
            let time = D0 + (i % 4) as i64 * DAY + i as i64;
            metered(&format!("req_{i:05}"), time, users[(i % 3) as usize], model, i % 5 + 1)
        })
        .collect();
    store.insert_call_records(&records, &[]).await.unwrap();
    // Some of alice's usage is already aggregated when the race starts.
    store.purge_call_records(at(D0 + DAY), 0).await.unwrap();
    let before = by_model_day(&store.daily_usage(None).await.unwrap(), &all_records(store).await);

    let a = veil_store::connect(&db.url, 2).await.unwrap();
    let b = veil_store::connect(&db.url, 2).await.unwrap();
    let (purged, erased) = tokio::join!(a.purge_call_records(at(D0 + 3 * DAY), 20), b.erase_user(alice.id));
    purged.unwrap();
    erased.unwrap();
    store.purge_call_records(at(i64::MAX), 0).await.unwrap();

    let usage = store.daily_usage(None).await.unwrap();
    assert_eq!(by_model_day(&usage, &[]), before);
    assert!(usage.iter().all(|r| r.user_id != Some(alice.id)));
    assert!(usage.iter().any(|r| r.user_id == Some(bob.id)));
}

// ---------------------------------------------------------------------------------------
// Upgrades

/// A database migrated to 0001 with ledger rows in it keeps them through 0002 (on SQLite the
/// ledger table is rebuilt), and erasure then works on them.
async fn upgrade_keeps_the_ledger(db: &TestDb) {
    let store = &db.store;
    let alice = store.user_by_name(&n("alice")).await.unwrap().unwrap();
    let entries = store.list_ledger(alice.id).await.unwrap();
    let amounts: Vec<_> = entries.iter().map(|e| e.amount.nanos()).collect();
    assert_eq!(amounts, [10_000_000_000, -2_500_000_000]);
    assert_eq!(entries[0].note.as_deref(), Some("credit by admin"));
    assert_eq!(store.balance(alice.id).await.unwrap(), Money::parse_decimal("7.5").unwrap());
    // The foreign key still refuses unknown users.
    assert!(matches!(
        store.append_ledger(&ledger(UserId::generate(), LedgerKind::Topup, "1")).await,
        Err(StoreError::NotFound(_))
    ));
    store.erase_user(alice.id).await.unwrap();
    assert_eq!(raw_i64(db, "SELECT COUNT(*) FROM ledger WHERE user_id IS NULL").await, 2);
}

/// Seeds a 0001 database the way an older Veil left it.
const SEED_0001: &str = "INSERT INTO users (id, name, email, role, group_name, password_hash, disabled, created_at) \
        VALUES ('0190f0e2-0000-7000-8000-000000000001', 'alice', NULL, 'user', 'default', NULL, FALSE, 1); \
    INSERT INTO ledger (user_id, kind, amount, time, request_id, note) \
        VALUES ('0190f0e2-0000-7000-8000-000000000001', 'topup', 10000000000, 5, NULL, 'credit by admin'); \
    INSERT INTO ledger (user_id, kind, amount, time, request_id, note) \
        VALUES ('0190f0e2-0000-7000-8000-000000000001', 'charge', -2500000000, 6, 'req_1', NULL);";

#[tokio::test]
async fn sqlite_upgrade_keeps_the_ledger() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/veil.db", dir.path().display());
    {
        let options =
            <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url).unwrap().create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/sqlite"
        )))
        .await
        .unwrap();
        migrator.run_to(1, &mut conn).await.unwrap();
        sqlx::raw_sql(SEED_0001).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
    let store = veil_store::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    upgrade_keeps_the_ledger(&TestDb { store, url, _cleanup: Box::new(dir) }).await;
}

#[tokio::test]
async fn postgres_upgrade_keeps_the_ledger() {
    use sqlx::Connection;
    let Some(database) = veil_testkit::postgres::TestDatabase::create().await else { return };
    let url = database.url.clone();
    {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations/postgres"
        )))
        .await
        .unwrap();
        migrator.run_to(1, &mut conn).await.unwrap();
        sqlx::raw_sql(SEED_0001).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
    }
    let store = veil_store::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    upgrade_keeps_the_ledger(&TestDb { store, url, _cleanup: Box::new(database) }).await;
}

/// At volume the retention purge reads only the batch it deletes: PostgreSQL plans each
/// batch as an ordered range scan of the `(time, id)` index, without a table scan or a sort
/// of call_records, also for a batch starting after an earlier one.
#[tokio::test]
async fn postgres_purge_batches_are_index_range_scans() {
    use sqlx::Connection;
    let Some(db) = postgres_db().await else { return };
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // 200,000 records, one a second over ~2.3 days, as the planner sees them after ANALYZE.
    sqlx::raw_sql(
        "INSERT INTO call_records (request_id, time, path, stream, input_tokens, cached_tokens, \
            output_tokens, cost, multiplier, status, latency_ms, client_ip, user_agent, redactions, \
            estimated, channels_tried) \
         SELECT 'r' || n, 1700000000000 + n * 1000, '/v1/chat/completions', FALSE, 10, 0, 5, 100, \
            1000000000, 200, 20, '', '', 0, FALSE, '[]' FROM generate_series(1, 200000) AS n; \
         ANALYZE call_records;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let cutoff = 1_700_000_000_000_i64 + 150_000 * 1000;
    for after in [(i64::MIN, i64::MIN), (1_700_000_000_000 + 50_000 * 1000, 50_000)] {
        let explain = format!("EXPLAIN {}", veil_store::POSTGRES_PURGE_CALL_RECORDS);
        let lines: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
            .bind(cutoff)
            .bind(1000_i64)
            .bind(after.0)
            .bind(after.1)
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let plan = lines.join("\n");
        assert!(
            plan.contains("Index Scan using call_records_time_id on call_records"),
            "the batch is a range scan of (time, id):\n{plan}"
        );
        assert!(!plan.contains("Seq Scan on call_records"), "no table scan:\n{plan}");
        assert!(!plan.contains("Bitmap Heap Scan on call_records"), "no bitmap scan of the range:\n{plan}");
        assert!(!plan.contains("Sort Key: call_records.time"), "the index gives the order:\n{plan}");
    }
    // And the statement purges what it planned to, batch after batch.
    assert_eq!(db.store.purge_call_records(at(cutoff), 1000).await.unwrap(), 149_999);
    assert_eq!(raw_i64(&db, "SELECT COUNT(*) FROM call_records").await, 50_001);
}

// ---------------------------------------------------------------------------------------
// Debug capture (DESIGN §3.1 exception (a))

fn capture(key: KeyId, user: UserId, request_id: &str, time: i64, expires_at: i64) -> NewCapture {
    NewCapture {
        key_id: key,
        user_id: user,
        request_id: request_id.to_owned(),
        time: at(time),
        expires_at: at(expires_at),
        nonce: vec![time as u8; 12],
        // Bytes that are not valid UTF-8 and include NUL: stored as bytes, not text.
        ciphertext: vec![0, 0xff, 0xfe, time as u8, 0, 0x80],
    }
}

/// What was stored, without the id the database assigned.
fn read_back(captures: &[StoredCapture]) -> Vec<NewCapture> {
    captures
        .iter()
        .map(|c| NewCapture {
            key_id: c.key_id,
            user_id: c.user_id,
            request_id: c.request_id.clone(),
            time: c.time,
            expires_at: c.expires_at,
            nonce: c.nonce.clone(),
            ciphertext: c.ciphertext.clone(),
        })
        .collect()
}

async fn key_capture_window(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let key = store.create_key(new_key(alice.id, "hash-a")).await.unwrap();
    let other = store.create_key(bare_key(alice.id, "hash-b")).await.unwrap();
    assert_eq!(store.key_capture(key.id).await.unwrap(), None);
    assert_eq!(store.key_capture(KeyId::generate()).await.unwrap(), None);

    let r0 = store.revision().await.unwrap();
    assert!(store.set_key_capture(key.id, Some(at(1_700_000_600_000))).await.unwrap());
    let r1 = store.revision().await.unwrap();
    assert!(r1 > r0, "setting a capture window must bump the revision");
    assert_eq!(store.key_capture(key.id).await.unwrap(), Some(at(1_700_000_600_000)));
    assert_eq!(store.key_capture(other.id).await.unwrap(), None);
    // The key itself is unchanged.
    assert_eq!(store.key_by_hash("hash-a").await.unwrap(), Some(key.clone()));

    assert!(store.set_key_capture(key.id, Some(at(1_700_000_900_000))).await.unwrap());
    let r2 = store.revision().await.unwrap();
    assert!(r2 > r1);
    assert_eq!(store.key_capture(key.id).await.unwrap(), Some(at(1_700_000_900_000)));

    assert!(store.set_key_capture(key.id, None).await.unwrap());
    let r3 = store.revision().await.unwrap();
    assert!(r3 > r2, "clearing a capture window must bump the revision");
    assert_eq!(store.key_capture(key.id).await.unwrap(), None);

    // Unknown key: false, nothing bumped.
    assert!(!store.set_key_capture(KeyId::generate(), Some(at(1))).await.unwrap());
    assert_eq!(store.revision().await.unwrap(), r3);

    // A revoked key keeps its window readable (the server decides what a revoked key gets).
    assert!(store.set_key_capture(other.id, Some(at(42))).await.unwrap());
    assert!(store.revoke_key(other.id, at(50)).await.unwrap());
    assert_eq!(store.key_capture(other.id).await.unwrap(), Some(at(42)));
}

async fn captures_list_newest_unexpired_and_purge(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let a1 = store.create_key(new_key(alice.id, "hash-a1")).await.unwrap();
    let a2 = store.create_key(bare_key(alice.id, "hash-a2")).await.unwrap();
    let b1 = store.create_key(bare_key(bob.id, "hash-b1")).await.unwrap();
    let now = 10_000;

    let r0 = store.revision().await.unwrap();
    let old = capture(a1.id, alice.id, "req_old", 1_000, 5_000); // expired
    let edge = capture(a1.id, alice.id, "req_edge", 2_000, now); // expires exactly now
    let mid = capture(a2.id, alice.id, "req_mid", 3_000, 20_000);
    let tie_first = capture(a1.id, alice.id, "req_tie_1", 4_000, 30_000);
    let tie_second = capture(a2.id, alice.id, "req_tie_2", 4_000, 30_000);
    let newest = capture(a1.id, alice.id, "req_new", 6_000, 40_000);
    let bobs = capture(b1.id, bob.id, "req_bob", 5_000, 40_000);
    for c in [&mid, &old, &newest, &tie_first, &bobs, &edge, &tie_second] {
        store.insert_capture(c).await.unwrap();
    }
    assert_eq!(store.revision().await.unwrap(), r0, "captures must not bump the revision");

    let listed = store.list_captures(alice.id, at(now)).await.unwrap();
    // Newest first; equal times: the later insert first.
    assert_eq!(read_back(&listed), vec![newest.clone(), tie_second, tie_first, mid]);
    assert!(listed[1].id > listed[2].id);
    assert_eq!(read_back(&store.list_captures(bob.id, at(now)).await.unwrap()), vec![bobs]);
    assert_eq!(store.list_captures(UserId::generate(), at(now)).await.unwrap(), vec![]);
    // Earlier, the expired ones were still listed.
    assert_eq!(store.list_captures(alice.id, at(0)).await.unwrap().len(), 6);

    // Unknown key or user: not found.
    for orphan in [
        capture(KeyId::generate(), alice.id, "req_x", 1, 99_999),
        capture(a1.id, UserId::generate(), "req_y", 1, 99_999),
    ] {
        match store.insert_capture(&orphan).await {
            Err(StoreError::NotFound(_)) => {}
            other => panic!("expected not found, got {other:?}"),
        }
    }

    assert_eq!(store.purge_expired_captures(at(now)).await.unwrap(), 2);
    assert_eq!(store.purge_expired_captures(at(now)).await.unwrap(), 0);
    assert_eq!(store.list_captures(alice.id, at(0)).await.unwrap(), listed);
    assert_eq!(store.purge_expired_captures(at(30_000)).await.unwrap(), 3);
    assert_eq!(read_back(&store.list_captures(alice.id, at(0)).await.unwrap()), vec![newest]);
    assert_eq!(store.revision().await.unwrap(), r0, "purging captures must not bump the revision");
}

async fn captures_go_with_their_key_and_user(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let a1 = store.create_key(new_key(alice.id, "hash-a1")).await.unwrap();
    let a2 = store.create_key(bare_key(alice.id, "hash-a2")).await.unwrap();
    let b1 = store.create_key(bare_key(bob.id, "hash-b1")).await.unwrap();
    let b2 = store.create_key(bare_key(bob.id, "hash-b2")).await.unwrap();
    store.set_key_capture(a1.id, Some(at(99_000))).await.unwrap();
    for (i, (key, user)) in [(a1.id, alice.id), (a2.id, alice.id), (b1.id, bob.id), (b2.id, bob.id)].iter().enumerate()
    {
        store.insert_capture(&capture(*key, *user, &format!("req_{i}"), 1_000 + i as i64, 99_000)).await.unwrap();
    }
    assert_eq!(raw_i64(db, "SELECT COUNT(*) FROM debug_captures").await, 4);

    // Revoking keeps them; deleting the key (behind the store's back) takes its captures.
    store.revoke_key(b2.id, at(2_000)).await.unwrap();
    assert_eq!(store.list_captures(bob.id, at(0)).await.unwrap().len(), 2);
    assert_eq!(raw_execute(db, "DELETE FROM api_keys WHERE hash = 'hash-b2'").await, 1);
    let bobs = store.list_captures(bob.id, at(0)).await.unwrap();
    assert_eq!(bobs.iter().map(|c| c.key_id).collect::<Vec<_>>(), vec![b1.id]);

    // Erasure takes every capture of the account, and nobody else's.
    let report = store.erase_user(alice.id).await.unwrap();
    assert_eq!(report.keys_deleted, 2);
    assert_eq!(store.list_captures(alice.id, at(0)).await.unwrap(), vec![]);
    assert_eq!(raw_i64(db, "SELECT COUNT(*) FROM debug_captures").await, 1);
    assert_eq!(store.key_capture(a1.id).await.unwrap(), None);
    assert_eq!(store.list_captures(bob.id, at(0)).await.unwrap(), bobs);
    // An erased account cannot gain captures afterwards.
    assert!(matches!(
        store.insert_capture(&capture(a1.id, alice.id, "req_late", 3_000, 99_000)).await,
        Err(StoreError::NotFound(_))
    ));
}

// ---------------------------------------------------------------------------------------
// SQLite specifics

#[tokio::test]
async fn sqlite_corrupt_values_name_the_column() {
    let db = sqlite_db().await;
    let user = db.store.create_user(new_user("alice", "default")).await.unwrap();
    // Tamper behind the store's back, as a broken tool or a bad restore would.
    let mut conn = {
        use sqlx::Connection;
        sqlx::SqliteConnection::connect(&db.url).await.unwrap()
    };
    sqlx::query("UPDATE users SET role = 'superuser' WHERE name = 'alice'").execute(&mut conn).await.unwrap();
    match db.store.user_by_id(user.id).await {
        Err(StoreError::Corrupt(column)) => assert_eq!(column, "users.role"),
        other => panic!("expected corrupt, got {other:?}"),
    }
    sqlx::query("UPDATE users SET role = 'user', name = 'not a name' WHERE name = 'alice'")
        .execute(&mut conn)
        .await
        .unwrap();
    let error = db.store.list_users().await.unwrap_err();
    assert_eq!(error.to_string(), "stored data is invalid: users.name");
}

async fn channel_credentials_are_kept_sealed_and_go_with_their_channel(db: &TestDb) {
    use veil_store::SealedCredential;
    let store = &db.store;
    store.upsert_channel(&bare_channel("sealed", true)).await.unwrap();
    let name: veil_domain::ChannelName = n("sealed");
    let sealed = SealedCredential { channel: name.clone(), nonce: vec![1; 24], ciphertext: vec![7, 8, 9] };
    assert!(!store.set_channel_credential(&n("missing"), Some(sealed.clone())).await.unwrap());

    let r0 = store.revision().await.unwrap();
    assert!(store.set_channel_credential(&name, Some(sealed.clone())).await.unwrap());
    assert!(store.revision().await.unwrap() > r0, "servers must rebuild their providers");
    assert_eq!(store.channel_credentials().await.unwrap(), vec![sealed.clone()]);
    let replaced = SealedCredential { ciphertext: vec![4, 5], ..sealed.clone() };
    store.set_channel_credential(&name, Some(replaced.clone())).await.unwrap();
    assert_eq!(store.channel_credentials().await.unwrap(), vec![replaced]);
    // Re-seeding the channel from config leaves the credential alone.
    store.upsert_channel(&full_channel("sealed", true)).await.unwrap();
    assert_eq!(store.channel_credentials().await.unwrap().len(), 1);

    assert!(store.set_channel_credential(&name, None).await.unwrap());
    assert!(store.channel_credentials().await.unwrap().is_empty());
    store.set_channel_credential(&name, Some(sealed)).await.unwrap();
    store.retire_managed_channels(&[]).await.unwrap();
    assert!(store.channel_credentials().await.unwrap().is_empty(), "a retired channel's credential must go with it");
}

async fn api_channels_are_created_replaced_and_deleted_but_never_managed_ones(db: &TestDb) {
    use veil_store::{ApiChannelOutcome as Outcome, ApiChannelWrite as Write, DisabledReason, SealedCredential};
    let store = &db.store;
    store.upsert_channel(&bare_channel("from-file", true)).await.unwrap();
    let name: veil_domain::ChannelName = n("by-api");
    let sealed = SealedCredential { channel: name.clone(), nonce: vec![2; 24], ciphertext: vec![1, 2, 3] };
    let created = full_channel("by-api", false);

    let r0 = store.revision().await.unwrap();
    assert_eq!(store.write_api_channel(&created, Some(sealed.clone()), Write::Create).await.unwrap(), Outcome::Done);
    let r1 = store.revision().await.unwrap();
    assert!(r1 > r0, "servers must pick the new channel up");
    assert_eq!(store.channel_credentials().await.unwrap(), vec![sealed.clone()]);
    // Refusals write nothing, not even a revision.
    let other = bare_channel("by-api", false);
    assert_eq!(store.write_api_channel(&other, None, Write::Create).await.unwrap(), Outcome::Exists);
    let file_over = bare_channel("from-file", false);
    assert_eq!(store.write_api_channel(&file_over, None, Write::Create).await.unwrap(), Outcome::Exists);
    assert_eq!(store.write_api_channel(&file_over, None, Write::Replace).await.unwrap(), Outcome::Managed);
    let missing = bare_channel("missing", false);
    assert_eq!(store.write_api_channel(&missing, None, Write::Replace).await.unwrap(), Outcome::Missing);
    assert_eq!(store.delete_api_channel(&n("from-file")).await.unwrap(), Outcome::Managed);
    assert_eq!(store.delete_api_channel(&n("missing")).await.unwrap(), Outcome::Missing);
    assert_eq!(store.revision().await.unwrap(), r1);
    assert_eq!(store.list_channels().await.unwrap(), vec![created, bare_channel("from-file", true)]);

    // Replacing without a credential keeps the stored one.
    assert_eq!(store.write_api_channel(&other, None, Write::Replace).await.unwrap(), Outcome::Done);
    assert!(store.revision().await.unwrap() > r1);
    assert_eq!(store.list_channels().await.unwrap(), vec![other, bare_channel("from-file", true)]);
    assert_eq!(store.channel_credentials().await.unwrap(), vec![sealed]);
    // The file's seeding retires only managed channels.
    store.retire_managed_channels(&[n("from-file")]).await.unwrap();
    assert_eq!(store.list_channels().await.unwrap().len(), 2);

    store.disable_channel(&name, DisabledReason::Admin, at(3)).await.unwrap();
    let r2 = store.revision().await.unwrap();
    assert_eq!(store.delete_api_channel(&name).await.unwrap(), Outcome::Done);
    assert!(store.revision().await.unwrap() > r2);
    assert_eq!(store.list_channels().await.unwrap(), vec![bare_channel("from-file", true)]);
    assert!(store.channel_credentials().await.unwrap().is_empty(), "the credential goes with its channel");
    assert!(store.channel_states().await.unwrap().is_empty(), "the state goes with its channel");
}

// ---------------------------------------------------------------------------------------
// Billing

fn movement(user: UserId, key: Option<KeyId>, kind: LedgerKind, amount: &str, time: i64) -> LedgerEntry {
    LedgerEntry {
        user_id: user,
        key_id: key,
        kind,
        amount: Money::parse_decimal(amount).unwrap(),
        time: at(time),
        request_id: Some("req-bill".to_owned()),
        note: None,
    }
}

async fn ledger_credits_are_found_by_revision(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let start = store.revision().await.unwrap();
    let first = store.append_ledger(&movement(alice.id, None, LedgerKind::Topup, "5", 10)).await.unwrap();
    let second = store.append_ledger(&movement(alice.id, None, LedgerKind::Adjustment, "-1", 11)).await.unwrap();
    assert_eq!(first, start + 1, "a credit bumps the revision and is stamped with it");
    assert_eq!(second, first + 1);
    assert_eq!(store.revision().await.unwrap(), second);

    let all = store.ledger_credits_since(start).await.unwrap();
    assert_eq!(all.iter().map(|c| c.revision).collect::<Vec<_>>(), vec![first, second]);
    assert_eq!(all[0].entry, movement(alice.id, None, LedgerKind::Topup, "5", 10));
    let later = store.ledger_credits_since(first).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].entry.amount, Money::parse_decimal("-1").unwrap());
    assert!(store.ledger_credits_since(second).await.unwrap().is_empty());

    // Rows from the call path are never reported as credits, and do not bump the revision.
    let charge = movement(alice.id, None, LedgerKind::Charge, "-0.25", 12);
    store.insert_call_records(&[], &[charge]).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), second);
    assert!(store.ledger_credits_since(second).await.unwrap().is_empty());

    // An erased account's credits are not reported to anyone.
    store.erase_user(alice.id).await.unwrap();
    assert!(store.ledger_credits_since(start).await.unwrap().is_empty());
}

async fn settlements_land_with_their_records(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let key = store.create_key(new_key(alice.id, "h-settle")).await.unwrap();
    store.append_ledger(&movement(alice.id, None, LedgerKind::Topup, "1", 1)).await.unwrap();
    let record = full_record("req-bill", 2, Some(alice.id));
    let hold = movement(alice.id, Some(key.id), LedgerKind::Hold, "-0.5", 2);
    let charge = movement(alice.id, Some(key.id), LedgerKind::Charge, "-0.123456789", 3);
    store.insert_call_records(std::slice::from_ref(&record), &[hold.clone(), charge.clone()]).await.unwrap();

    let ledger = store.list_ledger(alice.id).await.unwrap();
    assert_eq!(ledger[1..], [hold, charge]);
    assert_eq!(store.balance(alice.id).await.unwrap(), Money::parse_decimal("0.876543211").unwrap());
    let records = store
        .list_call_records(&CallRecordFilter { user_id: Some(alice.id), limit: 0, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].record, record);

    // A settlement for an account erased while the call ran keeps the money, unowned,
    // instead of failing the whole batch.
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    store.erase_user(bob.id).await.unwrap();
    let orphan = movement(bob.id, None, LedgerKind::Charge, "-0.5", 4);
    store.insert_call_records(&[bare_record("req-orphan", 4, Some(bob.id))], &[orphan]).await.unwrap();
    assert_eq!(raw_i64(db, "SELECT COUNT(*) FROM ledger WHERE user_id IS NULL AND amount = -500000000").await, 1);
}

async fn account_and_key_totals(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let key = store.create_key(new_key(alice.id, "h-totals")).await.unwrap();
    let other = store.create_key(new_key(alice.id, "h-other")).await.unwrap();
    let month_start = 1_000;
    let day_start = 5_000;
    store.append_ledger(&movement(alice.id, None, LedgerKind::Topup, "10", 1)).await.unwrap();
    store
        .insert_call_records(
            &[],
            &[
                // Last month, this month, today; a hold never counts as spending.
                movement(alice.id, Some(key.id), LedgerKind::Charge, "-1", 500),
                movement(alice.id, Some(key.id), LedgerKind::Charge, "-2", 2_000),
                movement(alice.id, Some(other.id), LedgerKind::Charge, "-0.5", 6_000),
                movement(alice.id, Some(key.id), LedgerKind::Hold, "-4", 6_000),
                movement(alice.id, Some(key.id), LedgerKind::Charge, "-0.25", 7_000),
            ],
        )
        .await
        .unwrap();
    let revision = store.revision().await.unwrap();
    let totals = store.account_totals(alice.id, at(day_start), at(month_start)).await.unwrap();
    assert_eq!(
        totals,
        AccountTotals {
            balance: Money::parse_decimal("6.25").unwrap(),
            spent_since_day: Money::parse_decimal("0.75").unwrap(),
            spent_since_month: Money::parse_decimal("2.75").unwrap(),
            revision,
        }
    );
    assert_eq!(
        store.key_totals(key.id, at(day_start), at(month_start)).await.unwrap(),
        KeyTotals {
            spent: Money::parse_decimal("3.25").unwrap(),
            spent_since_day: Money::parse_decimal("0.25").unwrap(),
            spent_since_month: Money::parse_decimal("2.25").unwrap(),
        }
    );
    assert_eq!(store.key_totals(KeyId::generate(), at(0), at(0)).await.unwrap(), KeyTotals::default());
    assert_eq!(
        store.account_totals(UserId::generate(), at(0), at(0)).await.unwrap(),
        AccountTotals { revision, ..AccountTotals::default() }
    );
}

async fn key_suspension_round_trips_and_bumps_the_revision(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let key = store.create_key(new_key(alice.id, "hash-suspend")).await.unwrap();
    let other = store.create_key(bare_key(alice.id, "hash-other")).await.unwrap();
    assert_eq!(key.suspended_at, None);

    let r0 = store.revision().await.unwrap();
    assert!(store.set_key_suspended(key.id, Some(at(1_700_000_000_000))).await.unwrap());
    let r1 = store.revision().await.unwrap();
    assert!(r1 > r0, "suspending must bump the revision (servers cache keys)");
    // Every key query reads it back; other keys are untouched.
    let read = store.key_by_hash("hash-suspend").await.unwrap().unwrap();
    assert_eq!(read.suspended_at, Some(at(1_700_000_000_000)));
    assert_eq!(read, veil_domain::ApiKey { suspended_at: Some(at(1_700_000_000_000)), ..key.clone() });
    let listed = store.list_keys(Some(alice.id)).await.unwrap();
    assert_eq!(listed.iter().find(|k| k.id == key.id).unwrap().suspended_at, Some(at(1_700_000_000_000)));
    assert_eq!(listed.iter().find(|k| k.id == other.id).unwrap().suspended_at, None);

    // Suspending again keeps the first time, and still bumps.
    assert!(store.set_key_suspended(key.id, Some(at(1_800_000_000_000))).await.unwrap());
    let r2 = store.revision().await.unwrap();
    assert!(r2 > r1);
    assert_eq!(store.key_by_hash("hash-suspend").await.unwrap().unwrap().suspended_at, Some(at(1_700_000_000_000)));

    // Lifting clears it.
    assert!(store.set_key_suspended(key.id, None).await.unwrap());
    let r3 = store.revision().await.unwrap();
    assert!(r3 > r2, "lifting a suspension must bump the revision");
    assert_eq!(store.key_by_hash("hash-suspend").await.unwrap().unwrap(), key);

    // Unknown key: false, nothing bumped.
    assert!(!store.set_key_suspended(KeyId::generate(), Some(at(1))).await.unwrap());
    assert!(!store.set_key_suspended(KeyId::generate(), None).await.unwrap());
    assert_eq!(store.revision().await.unwrap(), r3);

    // A revoked key can be suspended too; the two are independent.
    assert!(store.revoke_key(other.id, at(50)).await.unwrap());
    assert!(store.set_key_suspended(other.id, Some(at(60))).await.unwrap());
    let other = store.key_by_hash("hash-other").await.unwrap().unwrap();
    assert_eq!((other.revoked_at, other.suspended_at), (Some(at(50)), Some(at(60))));
}

// ---------------------------------------------------------------------------------------
// Reports

/// A `metered` call (usage scaled by `scale`) made with `key`.
fn keyed(request_id: &str, time: i64, user: UserId, key: KeyId, model: Option<&str>, scale: u64) -> CallRecord {
    let mut record = metered(request_id, time, Some(user), model, scale);
    record.key_id = Some(key);
    record
}

/// The report row `metered` calls with these scales add up to.
fn usage_day(day: &str, model: Option<&str>, ns: &[u64]) -> veil_store::UsageDay {
    let row = usage_row(None, model, day, ns);
    veil_store::UsageDay {
        day: row.day,
        model: row.model,
        calls: row.calls,
        input_tokens: row.input_tokens,
        cached_tokens: row.cached_tokens,
        output_tokens: row.output_tokens,
        cost: row.cost,
    }
}

async fn usage_by_day_sums_records_and_folded_days(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let k1 = store.create_key(bare_key(alice.id, "h-usage-1")).await.unwrap().id;
    let k2 = store.create_key(bare_key(alice.id, "h-usage-2")).await.unwrap().id;
    let kb = store.create_key(bare_key(bob.id, "h-usage-b")).await.unwrap().id;
    let a = alice.id;
    store
        .insert_call_records(
            &[
                keyed("a0", D0 - 1, a, k1, Some("gpt-4o"), 7),
                keyed("a1", D0 + 10, a, k1, Some("gpt-4o"), 1),
                keyed("a2", D0 + 20, a, k2, Some("gpt-4o"), 2),
                keyed("a3", D0 + 30, a, k1, Some("gpt-4o-mini"), 3),
                keyed("a7", D0 + 50, a, k1, Some("gpt-4o"), 9),
                keyed("a4", D0 + DAY + 5, a, k1, Some("gpt-4o"), 4),
                keyed("a5", D0 + DAY + 6, a, k2, None, 5),
                keyed("a6", D0 + 2 * DAY, a, k1, Some("gpt-4o"), 6),
                keyed("b1", D0 + 40, bob.id, kb, Some("gpt-4o"), 8),
            ],
            &[],
        )
        .await
        .unwrap();
    let two_days = |key| store.usage_by_day(a, key, at(D0), at(D0 + 2 * DAY));
    let everything = vec![
        usage_day("2023-11-14", Some("gpt-4o"), &[1, 2, 9]),
        usage_day("2023-11-14", Some("gpt-4o-mini"), &[3]),
        usage_day("2023-11-15", None, &[5]),
        usage_day("2023-11-15", Some("gpt-4o"), &[4]),
    ];
    assert_eq!(two_days(None).await.unwrap(), everything, "[from, to) by day, then model (none first)");
    let k1_only = vec![
        usage_day("2023-11-14", Some("gpt-4o"), &[1, 9]),
        usage_day("2023-11-14", Some("gpt-4o-mini"), &[3]),
        usage_day("2023-11-15", Some("gpt-4o"), &[4]),
    ];
    assert_eq!(two_days(Some(k1)).await.unwrap(), k1_only);
    assert_eq!(
        store.usage_by_day(a, None, at(D0 - DAY), at(D0)).await.unwrap(),
        vec![usage_day("2023-11-13", Some("gpt-4o"), &[7])]
    );

    // The purge cuts 2023-11-14 in two: its first calls are folded away, the rest kept.
    // Without a key the totals do not move; with one, only kept records can answer.
    assert_eq!(store.purge_call_records(at(D0 + 25), 0).await.unwrap(), 3);
    assert_eq!(two_days(None).await.unwrap(), everything, "folded rows still count");
    assert_eq!(
        two_days(Some(k1)).await.unwrap(),
        vec![
            usage_day("2023-11-14", Some("gpt-4o"), &[9]),
            usage_day("2023-11-14", Some("gpt-4o-mini"), &[3]),
            usage_day("2023-11-15", Some("gpt-4o"), &[4]),
        ]
    );
    assert_eq!(
        store.usage_by_day(a, None, at(D0 - DAY), at(D0)).await.unwrap(),
        vec![usage_day("2023-11-13", Some("gpt-4o"), &[7])],
        "a folded day counts when its midnight is in range"
    );
    assert!(store.usage_by_day(a, None, at(D0 + 3 * DAY), at(D0 + 4 * DAY)).await.unwrap().is_empty());
    // Everything folded: the same totals, from aggregates alone.
    store.purge_call_records(at(i64::MAX), 0).await.unwrap();
    assert_eq!(two_days(None).await.unwrap(), everything);
    assert!(two_days(Some(k1)).await.unwrap().is_empty());

    // Each user sees their own usage only, also through someone else's key.
    assert_eq!(
        store.usage_by_day(bob.id, None, at(D0), at(D0 + 2 * DAY)).await.unwrap(),
        vec![usage_day("2023-11-14", Some("gpt-4o"), &[8])]
    );
    store.insert_call_records(&[keyed("b2", D0 + DAY, bob.id, kb, Some("gpt-4o"), 10)], &[]).await.unwrap();
    assert!(store.usage_by_day(a, Some(kb), at(D0), at(D0 + 2 * DAY)).await.unwrap().is_empty());
    assert!(store.usage_by_day(bob.id, Some(k1), at(D0), at(D0 + 2 * DAY)).await.unwrap().is_empty());
    assert!(store.usage_by_day(UserId::generate(), None, at(0), at(i64::MAX)).await.unwrap().is_empty());
}

async fn call_records_filter_by_key_and_time_and_page(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let k1 = store.create_key(bare_key(alice.id, "h-page-1")).await.unwrap().id;
    let k2 = store.create_key(bare_key(alice.id, "h-page-2")).await.unwrap().id;
    let kb = store.create_key(bare_key(bob.id, "h-page-b")).await.unwrap().id;
    let mut batch = Vec::new();
    for i in 0..30_i64 {
        let key = if i % 3 == 0 { k2 } else { k1 };
        batch.push(keyed(&format!("a{i:02}"), 1_000 + i * 10, alice.id, key, Some("gpt-4o"), 1));
        batch.push(keyed(&format!("b{i:02}"), 1_000 + i * 10, bob.id, kb, Some("gpt-4o"), 1));
    }
    store.insert_call_records(&batch, &[]).await.unwrap();
    let ids = |records: Vec<StoredCallRecord>| -> Vec<String> {
        records.into_iter().map(|r| r.record.request_id.to_string()).collect()
    };

    // [from, to), newest first.
    let window = CallRecordFilter {
        user_id: Some(alice.id),
        from: Some(at(1_100)),
        to: Some(at(1_150)),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(ids(store.list_call_records(&window).await.unwrap()), ["a14", "a13", "a12", "a11", "a10"]);
    let k2_window = CallRecordFilter { key_id: Some(k2), ..window.clone() };
    assert_eq!(ids(store.list_call_records(&k2_window).await.unwrap()), ["a12"]);
    // A key filter alone, and a key with another user: nothing of someone else's.
    let by_key = store.list_call_records(&CallRecordFilter { key_id: Some(k2), ..Default::default() }).await.unwrap();
    assert_eq!(by_key.len(), 10);
    assert!(by_key.iter().all(|r| r.record.key_id == Some(k2) && r.record.user_id == Some(alice.id)));
    let crossed = CallRecordFilter { user_id: Some(bob.id), key_id: Some(k1), ..Default::default() };
    assert!(store.list_call_records(&crossed).await.unwrap().is_empty());

    // Pages of 7 add up to the whole listing, in order, without overlap.
    let all = CallRecordFilter { user_id: Some(alice.id), limit: 1_000, ..Default::default() };
    let whole = ids(store.list_call_records(&all).await.unwrap());
    assert_eq!(whole.len(), 30);
    let mut paged = Vec::new();
    for page in 0..5 {
        let filter = CallRecordFilter { user_id: Some(alice.id), limit: 7, offset: page * 7, ..Default::default() };
        paged.extend(ids(store.list_call_records(&filter).await.unwrap()));
    }
    assert_eq!(paged, whole);
    let past_the_end = CallRecordFilter { offset: 30, ..all.clone() };
    assert!(store.list_call_records(&past_the_end).await.unwrap().is_empty());

    // By model: only the calls for it (with the other filters).
    store.insert_call_records(&[keyed("a-mini", 1_120, alice.id, k1, Some("gpt-4o-mini"), 1)], &[]).await.unwrap();
    let mini = CallRecordFilter { model: Some("gpt-4o-mini".parse().unwrap()), ..window.clone() };
    assert_eq!(ids(store.list_call_records(&mini).await.unwrap()), ["a-mini"]);
    let k2_mini = CallRecordFilter { key_id: Some(k2), ..mini.clone() };
    assert!(store.list_call_records(&k2_mini).await.unwrap().is_empty());
    let bobs = CallRecordFilter { user_id: Some(bob.id), ..mini };
    assert!(store.list_call_records(&bobs).await.unwrap().is_empty());
}

async fn monthly_bills_split_the_ledger_by_month(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let key = store.create_key(bare_key(alice.id, "h-bills")).await.unwrap().id;
    let a = alice.id;
    // 2023-12-01 and 2024-01-01, UTC.
    let december = D0 + 17 * DAY;
    let january = D0 + 48 * DAY;
    store.append_ledger(&movement(a, None, LedgerKind::Topup, "10", D0)).await.unwrap();
    store.append_ledger(&movement(a, None, LedgerKind::Adjustment, "-2", D0 + 4)).await.unwrap();
    store.append_ledger(&movement(a, None, LedgerKind::Adjustment, "1", D0 + 5)).await.unwrap();
    store.append_ledger(&movement(bob.id, None, LedgerKind::Topup, "100", D0)).await.unwrap();
    store
        .insert_call_records(
            &[
                metered("n1", D0 + 1, Some(a), Some("gpt-4o"), 1),
                metered("n2", december - 1, Some(a), Some("gpt-4o"), 1),
                metered("d1", december, Some(a), None, 1),
                metered("j1", january + 1, Some(a), Some("gpt-4o"), 1),
                metered("b1", december, Some(bob.id), Some("gpt-4o"), 1),
            ],
            &[
                movement(a, Some(key), LedgerKind::Hold, "-4", D0 + 1),
                movement(a, Some(key), LedgerKind::Charge, "-1.5", D0 + 1),
                movement(a, Some(key), LedgerKind::Refund, "0.25", D0 + 3),
                // The last millisecond of November is November's.
                movement(a, Some(key), LedgerKind::Charge, "-0.125", december - 1),
                movement(a, Some(key), LedgerKind::Hold, "-1", december),
                movement(a, Some(key), LedgerKind::Charge, "-0.5", december),
                movement(bob.id, None, LedgerKind::Charge, "-7", december),
            ],
        )
        .await
        .unwrap();
    // Calls counted from folded aggregates too.
    assert_eq!(store.purge_call_records(at(D0 + 2), 0).await.unwrap(), 1);
    let money = |raw: &str| Money::parse_decimal(raw).unwrap();
    let bill = |month: &str, charged: &str, credited: &str, debited: &str, calls: u64| veil_store::MonthlyBill {
        month: month.to_owned(),
        charged: money(charged),
        credited: money(credited),
        debited: money(debited),
        calls,
    };
    let bills = store.monthly_bills(a).await.unwrap();
    assert_eq!(
        bills,
        vec![
            bill("2024-01", "0", "0", "0", 1),
            bill("2023-12", "0.5", "0", "0", 1),
            bill("2023-11", "1.625", "11.25", "2", 2),
        ],
        "newest month first; holds move no money"
    );
    // The bills add up to the balance.
    let mut net = Money::ZERO;
    for b in &bills {
        net = Money::from_nanos(net.nanos() + b.credited.nanos() - b.debited.nanos() - b.charged.nanos());
    }
    assert_eq!(net, store.balance(a).await.unwrap());
    assert_eq!(
        store.monthly_bills(bob.id).await.unwrap(),
        vec![bill("2023-12", "7", "0", "0", 1), bill("2023-11", "0", "100", "0", 0)]
    );
    assert!(store.monthly_bills(UserId::generate()).await.unwrap().is_empty());
}

async fn charges_between_count_charges_only(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let key = store.create_key(bare_key(alice.id, "h-charges-1")).await.unwrap().id;
    let other = store.create_key(bare_key(alice.id, "h-charges-2")).await.unwrap().id;
    let a = alice.id;
    store.append_ledger(&movement(a, None, LedgerKind::Topup, "10", 1)).await.unwrap();
    store
        .insert_call_records(
            &[],
            &[
                movement(a, Some(key), LedgerKind::Charge, "-1", 1_000),
                movement(a, Some(key), LedgerKind::Hold, "-4", 1_500),
                movement(a, Some(other), LedgerKind::Charge, "-0.5", 2_000),
                movement(a, Some(key), LedgerKind::Charge, "-0.25", 2_999),
                movement(a, Some(key), LedgerKind::Refund, "0.125", 2_500),
                movement(a, Some(key), LedgerKind::Charge, "-2", 3_000),
                movement(bob.id, None, LedgerKind::Charge, "-9", 2_000),
            ],
        )
        .await
        .unwrap();
    let money = |raw: &str| Money::parse_decimal(raw).unwrap();
    let all = (at(i64::MIN), at(i64::MAX));
    assert_eq!(store.charges_between(a, None, all.0, all.1).await.unwrap(), money("3.75"));
    assert_eq!(store.charges_between(a, None, at(1_000), at(3_000)).await.unwrap(), money("1.75"), "[from, to)");
    assert_eq!(store.charges_between(a, Some(key), at(1_000), at(3_000)).await.unwrap(), money("1.25"));
    assert_eq!(store.charges_between(a, Some(other), all.0, all.1).await.unwrap(), money("0.5"));
    assert_eq!(store.charges_between(bob.id, None, all.0, all.1).await.unwrap(), money("9"));
    assert_eq!(store.charges_between(bob.id, Some(key), all.0, all.1).await.unwrap(), Money::ZERO);
    assert_eq!(store.charges_between(a, None, at(5_000), at(6_000)).await.unwrap(), Money::ZERO);
}

// ---------------------------------------------------------------------------------------
// Redemption codes

fn code(hash: &str, amount: &str, created: i64, expires: Option<i64>) -> veil_store::NewRedemptionCode {
    veil_store::NewRedemptionCode {
        hash: hash.to_owned(),
        prefix: format!("veil-{}", &hash[2..6]),
        amount: Money::parse_decimal(amount).unwrap(),
        created_at: at(created),
        expires_at: expires.map(at),
    }
}

fn credited(amount: &str, prefix: &str, revision: i64) -> veil_store::Redemption {
    veil_store::Redemption::Credited {
        amount: Money::parse_decimal(amount).unwrap(),
        prefix: prefix.to_owned(),
        revision,
    }
}

async fn redemption_codes_credit_once_and_list(db: &TestDb) {
    use veil_store::Redemption::NotRedeemable;
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let start = store.revision().await.unwrap();
    store
        .create_redemption_codes(&[
            code("h-five", "5", 1_000, None),
            code("h-soon", "2.5", 2_000, Some(10_000)),
            code("h-gone", "1", 3_000, Some(5_000)),
        ])
        .await
        .unwrap();
    store.create_redemption_codes(&[]).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), start, "servers cache no codes: creating them bumps nothing");
    // A batch with a taken hash, or a non-positive amount, is refused whole.
    let taken = [code("h-newx", "1", 4_000, None), code("h-five", "1", 4_000, None)];
    assert!(matches!(store.create_redemption_codes(&taken).await.unwrap_err(), StoreError::Conflict(_)));
    assert!(store.create_redemption_codes(&[code("h-zero", "0", 4_000, None)]).await.is_err());
    assert!(store.create_redemption_codes(&[code("h-less", "-1", 4_000, None)]).await.is_err());
    assert_eq!(store.list_redemption_codes(0).await.unwrap().len(), 3);

    // Redeeming credits the amount as a top-up stamped with the revision it bumps.
    assert_eq!(store.redeem_code("h-five", alice.id, at(6_000)).await.unwrap(), credited("5", "veil-five", start + 1));
    assert_eq!(store.revision().await.unwrap(), start + 1);
    assert_eq!(store.balance(alice.id).await.unwrap(), Money::parse_decimal("5").unwrap());
    let credits = store.ledger_credits_since(start).await.unwrap();
    assert_eq!(credits.len(), 1);
    assert_eq!(credits[0].revision, start + 1);
    assert_eq!(
        credits[0].entry,
        LedgerEntry {
            user_id: alice.id,
            key_id: None,
            kind: LedgerKind::Topup,
            amount: Money::parse_decimal("5").unwrap(),
            time: at(6_000),
            request_id: None,
            note: Some("redemption code veil-five".to_owned()),
        }
    );

    // Once only, by anyone; expired (at the instant of expiry too) and unknown codes alike
    // are not redeemable, and none of that changes anything.
    assert_eq!(store.redeem_code("h-five", alice.id, at(6_001)).await.unwrap(), NotRedeemable);
    assert_eq!(store.redeem_code("h-five", bob.id, at(6_001)).await.unwrap(), NotRedeemable);
    assert_eq!(store.redeem_code("h-gone", bob.id, at(6_000)).await.unwrap(), NotRedeemable);
    assert_eq!(store.redeem_code("h-soon", bob.id, at(10_000)).await.unwrap(), NotRedeemable);
    assert_eq!(store.redeem_code("h-none", bob.id, at(1)).await.unwrap(), NotRedeemable);
    assert_eq!(store.revision().await.unwrap(), start + 1);
    assert_eq!(store.balance(alice.id).await.unwrap(), Money::parse_decimal("5").unwrap());
    assert_eq!(store.balance(bob.id).await.unwrap(), Money::ZERO);
    assert_eq!(store.redeem_code("h-soon", bob.id, at(9_999)).await.unwrap(), credited("2.5", "veil-soon", start + 2));

    // An unknown user: refused, and the code stays redeemable.
    store.create_redemption_codes(&[code("h-late", "0.000000001", 7_000, None)]).await.unwrap();
    let ghost = store.redeem_code("h-late", UserId::generate(), at(8_000)).await;
    assert!(matches!(ghost, Err(StoreError::NotFound(_))), "{ghost:?}");
    assert_eq!(store.revision().await.unwrap(), start + 2);
    assert_eq!(
        store.redeem_code("h-late", alice.id, at(8_000)).await.unwrap(),
        credited("0.000000001", "veil-late", start + 3)
    );

    // Newest first, with who redeemed what; never a hash.
    let listed = store.list_redemption_codes(0).await.unwrap();
    let prefixes: Vec<&str> = listed.iter().map(|c| c.prefix.as_str()).collect();
    assert_eq!(prefixes, ["veil-late", "veil-gone", "veil-soon", "veil-five"]);
    assert_eq!(
        listed[3],
        veil_store::StoredRedemptionCode {
            id: listed[3].id,
            prefix: "veil-five".to_owned(),
            amount: Money::parse_decimal("5").unwrap(),
            created_at: at(1_000),
            expires_at: None,
            redeemed_at: Some(at(6_000)),
            redeemed_by: Some(alice.id),
            redeemed_by_name: Some(n("alice")),
        }
    );
    assert_eq!((listed[1].expires_at, listed[1].redeemed_at, listed[1].redeemed_by), (Some(at(5_000)), None, None));
    assert_eq!(listed[2].redeemed_by_name, Some(n("bob")));
    assert!(listed[3].id < listed[2].id);
    let limited = store.list_redemption_codes(2).await.unwrap();
    assert_eq!(limited, listed[..2]);

    // Erasing the redeemer keeps the code spent, without the account.
    store.erase_user(bob.id).await.unwrap();
    let soon = store.list_redemption_codes(0).await.unwrap().into_iter().find(|c| c.prefix == "veil-soon").unwrap();
    assert_eq!((soon.redeemed_at, soon.redeemed_by, soon.redeemed_by_name), (Some(at(9_999)), None, None));
    assert_eq!(store.redeem_code("h-soon", alice.id, at(9_000)).await.unwrap(), NotRedeemable);
}

async fn concurrent_redemptions_credit_once(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    store.create_redemption_codes(&[code("h-race", "3", 1, None), code("h-calm", "1", 1, None)]).await.unwrap();
    let start = store.revision().await.unwrap();
    // Three pools, as if three processes raced for the same code.
    let stores = [
        Arc::clone(store),
        veil_store::connect(&db.url, 4).await.unwrap(),
        veil_store::connect(&db.url, 4).await.unwrap(),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let store = Arc::clone(&stores[i % stores.len()]);
        let user = if i % 2 == 0 { alice.id } else { bob.id };
        tasks.spawn(async move { store.redeem_code("h-race", user, at(2)).await.unwrap() });
    }
    let outcomes = tasks.join_all().await;
    let winners: Vec<_> = outcomes.iter().filter(|o| matches!(o, veil_store::Redemption::Credited { .. })).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert_eq!(*winners[0], credited("3", "veil-race", start + 1));
    let total = store.balance(alice.id).await.unwrap().nanos() + store.balance(bob.id).await.unwrap().nanos();
    assert_eq!(total, 3_000_000_000, "credited exactly once");
    let rows = store.list_ledger(alice.id).await.unwrap().len() + store.list_ledger(bob.id).await.unwrap().len();
    assert_eq!(rows, 1);
    assert_eq!(store.revision().await.unwrap(), start + 1);
    // The other code was untouched by the race.
    assert!(matches!(
        store.redeem_code("h-calm", bob.id, at(3)).await.unwrap(),
        veil_store::Redemption::Credited { .. }
    ));
}

// ---------------------------------------------------------------------------------------
// --- generated media (DESIGN §3.1 exception (b))

fn media(user: UserId, created_at: i64, expires_at: i64, fill: u8) -> veil_store::NewMedia {
    veil_store::NewMedia {
        id: uuid::Uuid::now_v7(),
        user_id: user,
        content_type: "image/png".into(),
        created_at: at(created_at),
        expires_at: at(expires_at),
        nonce: vec![fill; 24],
        ciphertext: vec![fill; 100 + usize::from(fill)],
    }
}

fn media_read_back(stored: veil_store::StoredMedia) -> veil_store::NewMedia {
    veil_store::NewMedia {
        id: stored.id,
        user_id: stored.user_id,
        content_type: stored.content_type,
        created_at: stored.created_at,
        expires_at: stored.expires_at,
        nonce: stored.nonce,
        ciphertext: stored.ciphertext,
    }
}

async fn media_round_trips_and_purges_when_expired(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let now = 10_000;
    let r0 = store.revision().await.unwrap();
    let old = media(alice.id, 1_000, 5_000, 1);
    let edge = media(alice.id, 2_000, now, 2); // expires exactly now
    let live = media(alice.id, 3_000, 20_000, 3);
    let mut bobs = media(bob.id, 4_000, 40_000, 4);
    bobs.content_type = "audio/mpeg".into();
    for m in [&old, &edge, &live, &bobs] {
        store.put_media(m).await.unwrap();
    }
    assert_eq!(store.revision().await.unwrap(), r0, "media must not bump the revision");

    // Read back exactly, expired or not: the caller decides.
    for m in [&old, &edge, &live, &bobs] {
        assert_eq!(media_read_back(store.media(m.id).await.unwrap().unwrap()), *m);
    }
    assert_eq!(store.media(uuid::Uuid::now_v7()).await.unwrap(), None);

    // A taken id conflicts; an unknown user is not found.
    match store.put_media(&veil_store::NewMedia { user_id: bob.id, ..live.clone() }).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected conflict, got {other:?}"),
    }
    match store.put_media(&media(UserId::generate(), 1, 99_999, 5)).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected not found, got {other:?}"),
    }

    assert_eq!(store.purge_expired_media(at(now)).await.unwrap(), 2);
    assert_eq!(store.purge_expired_media(at(now)).await.unwrap(), 0);
    assert_eq!(store.media(old.id).await.unwrap(), None);
    assert_eq!(store.media(edge.id).await.unwrap(), None);
    assert!(store.media(live.id).await.unwrap().is_some());
    assert_eq!(store.purge_expired_media(at(30_000)).await.unwrap(), 1);
    assert_eq!(store.media(live.id).await.unwrap(), None);
    assert_eq!(media_read_back(store.media(bobs.id).await.unwrap().unwrap()), bobs);
    assert_eq!(store.revision().await.unwrap(), r0, "purging media must not bump the revision");
}

async fn media_goes_with_its_user(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let bob = store.create_user(new_user("bob", "default")).await.unwrap();
    let mine = [media(alice.id, 1_000, 99_000, 1), media(alice.id, 2_000, 99_000, 2)];
    let theirs = media(bob.id, 1_000, 99_000, 3);
    for m in mine.iter().chain([&theirs]) {
        store.put_media(m).await.unwrap();
    }
    assert_eq!(raw_i64(db, "SELECT COUNT(*) FROM media").await, 3);

    store.erase_user(alice.id).await.unwrap();
    for m in &mine {
        assert_eq!(store.media(m.id).await.unwrap(), None);
    }
    assert_eq!(raw_i64(db, "SELECT COUNT(*) FROM media").await, 1);
    assert_eq!(media_read_back(store.media(theirs.id).await.unwrap().unwrap()), theirs);
    // An erased account cannot gain media afterwards.
    assert!(matches!(store.put_media(&media(alice.id, 3_000, 99_000, 4)).await, Err(StoreError::NotFound(_))));
}

// --- video jobs

fn video_job(user: UserId, id: &str, charged: i64) -> veil_store::VideoJob {
    veil_store::VideoJob {
        id: id.to_owned(),
        user_id: user,
        key_id: KeyId::generate(),
        request_id: format!("req-{id}"),
        channel: veil_domain::ChannelName::parse("video").unwrap(),
        upstream_id: format!("up_{id}"),
        model: veil_domain::ModelName::parse("sora-2").unwrap(),
        seconds: 8,
        size: "720x1280".into(),
        status: veil_store::VideoStatus::Queued,
        progress: 0,
        error_code: None,
        charged: Money::from_nanos(charged),
        created_at: at(1_000),
        updated_at: at(1_000),
        completed_at: None,
        next_poll_at: at(3_000),
        deadline: at(100_000),
        media_id: None,
        media_expires_at: None,
    }
}

fn video_ledger(job: &veil_store::VideoJob, kind: LedgerKind, amount: i64) -> LedgerEntry {
    LedgerEntry {
        user_id: job.user_id,
        key_id: Some(job.key_id),
        kind,
        amount: Money::from_nanos(amount),
        time: at(1_000),
        request_id: Some(job.request_id.clone()),
        note: None,
    }
}

async fn video_jobs_round_trip_and_finish_once(db: &TestDb) {
    use veil_store::{VideoFinish, VideoStatus};
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    let job = video_job(alice.id, "video_a", 800);
    store.append_ledger(&LedgerEntry { key_id: None, ..video_ledger(&job, LedgerKind::Topup, 1_000) }).await.unwrap();
    let settle = [video_ledger(&job, LedgerKind::Hold, -800), video_ledger(&job, LedgerKind::Charge, -800)];
    let r0 = store.revision().await.unwrap();
    store.insert_video_job(&job, &settle).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), r0, "a submission's settlement is not a credit");
    assert_eq!(store.balance(alice.id).await.unwrap(), Money::from_nanos(200));
    assert_eq!(store.video_job("video_a").await.unwrap(), Some(job.clone()));
    assert_eq!(store.video_job("video_none").await.unwrap(), None);
    match store.insert_video_job(&job, &[]).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let other = video_job(alice.id, "video_b", 400);
    store.insert_video_job(&other, &[]).await.unwrap();
    let ids = |jobs: Vec<veil_store::VideoJob>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(store.unfinished_video_jobs().await.unwrap()), ["video_a", "video_b"]);

    assert!(store.update_video_progress("video_a", VideoStatus::InProgress, 40, at(9_000), at(5_000)).await.unwrap());
    let polled = store.video_job("video_a").await.unwrap().unwrap();
    assert_eq!(
        (polled.status, polled.progress, polled.next_poll_at, polled.updated_at),
        (VideoStatus::InProgress, 40, at(9_000), at(5_000))
    );
    assert_eq!(ids(store.unfinished_video_jobs().await.unwrap()), ["video_b", "video_a"], "by next poll");

    let failed = VideoFinish {
        status: VideoStatus::Failed,
        progress: 40,
        error_code: Some("upstream_error".into()),
        charged: Money::ZERO,
        at: at(10_000),
        media_id: None,
        media_expires_at: None,
    };
    let refund = video_ledger(&job, LedgerKind::Refund, 800);
    assert!(store.finish_video_job("video_a", &failed, Some(&refund)).await.unwrap());
    let r1 = store.revision().await.unwrap();
    assert!(r1 > r0, "a refund is stamped like a credit");
    // Only the first transition counts: no second refund, whoever asks.
    assert!(!store.finish_video_job("video_a", &failed, Some(&refund)).await.unwrap());
    assert!(!store.update_video_progress("video_a", VideoStatus::InProgress, 50, at(1), at(1)).await.unwrap());
    assert_eq!(store.revision().await.unwrap(), r1);
    assert_eq!(store.balance(alice.id).await.unwrap(), Money::from_nanos(1_000));
    let credits = store.ledger_credits_since(r0).await.unwrap();
    assert_eq!(credits.len(), 1);
    assert_eq!(credits[0].entry.kind, LedgerKind::Refund);
    let ended = store.video_job("video_a").await.unwrap().unwrap();
    assert_eq!(ended.status, VideoStatus::Failed);
    assert_eq!(ended.error_code.as_deref(), Some("upstream_error"));
    assert_eq!((ended.charged, ended.completed_at), (Money::ZERO, Some(at(10_000))));
    assert_eq!(ids(store.unfinished_video_jobs().await.unwrap()), ["video_b"]);

    assert_eq!((ended.media_id, ended.media_expires_at), (None, None));

    // Completion without a refund, with the video kept in the media vault.
    let media_id = uuid::Uuid::now_v7();
    let done = VideoFinish {
        status: VideoStatus::Completed,
        progress: 100,
        error_code: None,
        charged: Money::from_nanos(400),
        at: at(11_000),
        media_id: Some(media_id),
        media_expires_at: Some(at(50_000)),
    };
    assert!(store.finish_video_job("video_b", &done, None).await.unwrap());
    assert_eq!(store.revision().await.unwrap(), r1);
    let completed = store.video_job("video_b").await.unwrap().unwrap();
    assert_eq!((completed.media_id, completed.media_expires_at), (Some(media_id), Some(at(50_000))));
    assert!(store.unfinished_video_jobs().await.unwrap().is_empty());
}

async fn video_jobs_go_with_their_user(db: &TestDb) {
    let store = &db.store;
    let alice = store.create_user(new_user("alice", "default")).await.unwrap();
    store.insert_video_job(&video_job(alice.id, "video_a", 0), &[]).await.unwrap();
    match store.insert_video_job(&video_job(UserId::generate(), "video_x", 0), &[]).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected not found, got {other:?}"),
    }
    store.erase_user(alice.id).await.unwrap();
    assert_eq!(store.video_job("video_a").await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------
// Channel health

async fn channel_disabling_is_durable_and_bumps_the_revision_once(db: &TestDb) {
    use veil_store::DisabledReason;
    let store = &db.store;
    store.upsert_channel(&bare_channel("flaky", true)).await.unwrap();
    let name: veil_domain::ChannelName = n("flaky");
    assert!(matches!(
        store.disable_channel(&n("missing"), DisabledReason::Admin, at(1)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(store.enable_channel(&n("missing")).await, Err(StoreError::NotFound(_))));
    assert!(store.channel_states().await.unwrap().is_empty());

    let r0 = store.revision().await.unwrap();
    assert!(store.disable_channel(&name, DisabledReason::CredentialRejected, at(5)).await.unwrap());
    let r1 = store.revision().await.unwrap();
    assert!(r1 > r0, "servers must drop the channel");
    // A second disabling (another instance, an admin) keeps the first reason and time.
    assert!(!store.disable_channel(&name, DisabledReason::Admin, at(9)).await.unwrap());
    assert_eq!(store.revision().await.unwrap(), r1);
    let states = store.channel_states().await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].channel, name);
    assert_eq!(states[0].disabled_reason, Some(DisabledReason::CredentialRejected));
    assert_eq!(states[0].disabled_at, Some(at(5)));
    assert_eq!(states[0].health, None);

    // Re-seeding the channel from config (enabled = true) does not re-enable it.
    store.upsert_channel(&bare_channel("flaky", true)).await.unwrap();
    assert_eq!(store.channel_states().await.unwrap()[0].disabled_reason, Some(DisabledReason::CredentialRejected));

    assert!(store.enable_channel(&name).await.unwrap());
    let r2 = store.revision().await.unwrap();
    assert!(r2 > r1);
    assert!(!store.enable_channel(&name).await.unwrap(), "enabling twice changes nothing");
    assert_eq!(store.revision().await.unwrap(), r2);
    assert_eq!(store.channel_states().await.unwrap()[0].disabled_reason, None);
    assert!(store.disable_channel(&name, DisabledReason::Admin, at(20)).await.unwrap());
    assert_eq!(store.channel_states().await.unwrap()[0].disabled_reason, Some(DisabledReason::Admin));

    store.retire_managed_channels(&[]).await.unwrap();
    assert!(store.channel_states().await.unwrap().is_empty(), "a retired channel's state goes with it");
}

async fn channel_health_snapshots_keep_the_newest(db: &TestDb) {
    use veil_store::{ChannelHealthSnapshot, DisabledReason, HealthState};
    let store = &db.store;
    store.upsert_channel(&bare_channel("a", true)).await.unwrap();
    store.upsert_channel(&bare_channel("b", true)).await.unwrap();
    let snapshot = |channel: &str, state: HealthState, calls: u32, failures: u32, updated: i64| ChannelHealthSnapshot {
        channel: n(channel),
        state,
        calls,
        failures,
        latency_p50_ms: Some(120),
        latency_p95_ms: Some(480),
        cooling_until: (state == HealthState::CoolingDown).then(|| at(updated + 30)),
        updated_at: at(updated),
    };
    let r0 = store.revision().await.unwrap();
    store
        .save_channel_health(&[
            snapshot("b", HealthState::CoolingDown, 8, 6, 100),
            snapshot("a", HealthState::Healthy, 4, 1, 100),
            // A channel that does not exist (retired meanwhile) is skipped.
            snapshot("gone", HealthState::Healthy, 1, 0, 100),
        ])
        .await
        .unwrap();
    assert_eq!(store.revision().await.unwrap(), r0, "health snapshots are not admin writes");
    let states = store.channel_states().await.unwrap();
    assert_eq!(states.iter().map(|s| s.channel.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let b = states[1].health.clone().unwrap();
    assert_eq!(b, snapshot("b", HealthState::CoolingDown, 8, 6, 100));
    assert_eq!(b.error_rate(), 0.75);
    assert_eq!(states[1].disabled_reason, None);

    // An older snapshot never replaces a newer one; a newer one does.
    store.save_channel_health(&[snapshot("a", HealthState::CoolingDown, 9, 9, 50)]).await.unwrap();
    assert_eq!(store.channel_states().await.unwrap()[0].health, Some(snapshot("a", HealthState::Healthy, 4, 1, 100)));
    let newer = ChannelHealthSnapshot {
        latency_p50_ms: None,
        latency_p95_ms: None,
        ..snapshot("a", HealthState::HalfOpen, 0, 0, 200)
    };
    store.save_channel_health(std::slice::from_ref(&newer)).await.unwrap();
    assert_eq!(store.channel_states().await.unwrap()[0].health, Some(newer.clone()));
    assert_eq!(newer.error_rate(), 0.0);

    // Disabling keeps the snapshot, and a snapshot keeps the disabling.
    store.disable_channel(&n("a"), DisabledReason::Admin, at(300)).await.unwrap();
    store.save_channel_health(&[snapshot("a", HealthState::Disabled, 0, 0, 400)]).await.unwrap();
    let a = store.channel_states().await.unwrap().remove(0);
    assert_eq!(a.disabled_reason, Some(DisabledReason::Admin));
    assert_eq!(a.health.unwrap().state, HealthState::Disabled);
}
