//! The store conformance suite: every check is written once against `dyn Store` and run on
//! both backends — SQLite in a temporary directory, PostgreSQL in a fresh database per test
//! (dropped afterwards). PostgreSQL is at `postgres://postgres@127.0.0.1:5432/postgres`
//! unless `VEIL_TEST_POSTGRES_URL` says otherwise; when it is unreachable the PostgreSQL
//! tests are skipped, or fail if `VEIL_REQUIRE_SERVICES=1`.

// Marks the harness (helpers outside `#[test]` functions) as test code, so clippy.toml's
// allow-unwrap/panic/print-in-tests covers it too.
#![cfg(test)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use veil_domain::{
    CallRecord, Channel, ChannelKind, DataPolicy, ErrorCode, FirewallMode, Group, GroupName, KeyId, KeyLimits,
    LedgerEntry, LedgerKind, Model, Money, Multiplier, NewApiKey, NewUser, PolicyClass, Price, PrivacyRequirement,
    RequestId, Retention, Role, Timeouts, Timestamp, TokenUsage, UserId,
};
use veil_store::{CallRecordFilter, Store, StoreError, WrappedSecret};

// ---------------------------------------------------------------------------------------
// Harness

struct TestDb {
    store: Arc<dyn Store>,
    /// What `veil_store::connect` takes, for tests that open a second connection.
    url: String,
    /// Removes the database when the test ends, passed or not.
    _cleanup: Box<dyn Send + Sync>,
}

async fn sqlite_db() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    // A nested, missing directory: connect must create it.
    let url = format!("sqlite://{}/nested/veil.db", dir.path().display());
    let store = veil_store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    TestDb { store, url, _cleanup: Box::new(dir) }
}

async fn postgres_db() -> Option<TestDb> {
    let database = veil_testkit::postgres::TestDatabase::create().await?;
    let url = database.url.clone();
    let store = veil_store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    Some(TestDb { store, url, _cleanup: Box::new(database) })
}

/// Instantiates each check for both backends: `sqlite::NAME` and `postgres::NAME`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let db = super::sqlite_db().await;
                    super::$check(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $check() {
                    let Some(db) = super::postgres_db().await else { return };
                    super::$check(&db).await;
                }
            )*
        }
    };
}

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
);

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
        ip_allow: vec![n("10.0.0.0/8"), n("2001:db8::/48"), n("192.0.2.7/32")],
        allow_training: true,
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
        ip_allow: Vec::new(),
        allow_training: false,
    }
}

fn ledger(user: UserId, kind: LedgerKind, amount: &str) -> LedgerEntry {
    LedgerEntry {
        user_id: user,
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
        enabled: true,
        managed,
    }
}

fn model(name: &str, managed: bool) -> Model {
    Model {
        name: n(name),
        price: Price {
            input: Money::parse_decimal("0.15").unwrap(),
            cached_input: Money::parse_decimal("0.075").unwrap(),
            output: Money::parse_decimal("0.6").unwrap(),
        },
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
        usage: TokenUsage { input_tokens: 1_234, cached_tokens: 1_000, output_tokens: 56 },
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
    changed.price.output = Money::from_nanos(1);
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

    store.insert_call_records(&[full_record("req-1", 1, Some(user.id)), bare_record("req-2", 2, None)]).await.unwrap();
    check(0, "call records").await;
    store.insert_wrapped_secret_if_absent(&secret("mk1", 1)).await.unwrap();
    check(0, "wrapped secret").await;
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
    assert_eq!(store.balance(bob.id).await.unwrap(), Money::parse_decimal("7.499999999").unwrap());
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
            ("bob".to_owned(), Money::parse_decimal("7.499999999").unwrap()),
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
    free.price = Price::default();
    store.upsert_model(&model("gpt-4o-mini", true)).await.unwrap();
    store.upsert_model(&model("gpt-4o", true)).await.unwrap();
    store.upsert_model(&free).await.unwrap();
    let mut repriced = model("gpt-4o", true);
    repriced.price.input = Money::from_nanos(2_500_000_000);
    store.upsert_model(&repriced).await.unwrap();
    assert_eq!(store.list_models().await.unwrap(), vec![repriced.clone(), model("gpt-4o-mini", true), free.clone()]);
    assert_eq!(store.retire_managed_models(&[n("gpt-4o")]).await.unwrap(), 1);
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
    store.insert_call_records(&[]).await.unwrap();
    store.insert_call_records(&[full.clone(), bare.clone(), orphan.clone(), odd_path]).await.unwrap();

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
    store.insert_call_records(&routes).await.unwrap();
    let read = store.list_call_records(&CallRecordFilter { user_id: None, limit: routes.len() as u32 }).await.unwrap();
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
    store.insert_call_records(&batch).await.unwrap();
    // Equal times are ordered by request id, descending.
    let tie = [bare_record("req_tie_a", 5_000, None), bare_record("req_tie_b", 5_000, None)];
    store.insert_call_records(&tie).await.unwrap();

    let newest = store.list_call_records(&CallRecordFilter::default()).await.unwrap();
    assert_eq!(newest.len(), 100, "limit 0 means 100");
    let ids: Vec<_> = newest.iter().take(4).map(|r| r.record.request_id.to_string()).collect();
    assert_eq!(ids, ["req_tie_b", "req_tie_a", "req_01499", "req_01498"]);
    for pair in newest.windows(2) {
        let (a, b) = (&pair[0].record, &pair[1].record);
        assert!((a.time, &a.request_id) > (b.time, &b.request_id));
    }

    let three = store.list_call_records(&CallRecordFilter { user_id: None, limit: 3 }).await.unwrap();
    assert_eq!(three.len(), 3);

    let all = store.list_call_records(&CallRecordFilter { user_id: None, limit: 5_000 }).await.unwrap();
    assert_eq!(all.len(), 1_502);

    let alices = store.list_call_records(&CallRecordFilter { user_id: Some(alice.id), limit: 1_000 }).await.unwrap();
    assert_eq!(alices.len(), 500);
    assert!(alices.iter().all(|r| r.record.user_id == Some(alice.id)));
    assert!(alices.iter().all(|r| r.user_name == Some(n("alice"))));
    assert_eq!(alices[0].record.request_id, n::<RequestId>("req_01497"));
    let nobody =
        store.list_call_records(&CallRecordFilter { user_id: Some(UserId::generate()), limit: 0 }).await.unwrap();
    assert!(nobody.is_empty());
}

async fn wrapped_secrets_keep_the_first(db: &TestDb) {
    let store = &db.store;
    assert_eq!(store.wrapped_secret("key-hash").await.unwrap(), None);
    let first = secret("mk1", 1);
    assert_eq!(store.insert_wrapped_secret_if_absent(&first).await.unwrap(), first);
    assert_eq!(store.insert_wrapped_secret_if_absent(&secret("mk2", 2)).await.unwrap(), first);
    assert_eq!(store.wrapped_secret("key-hash").await.unwrap(), Some(first));

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
