//! `RedisWallets` against the machine's Redis (`VEIL_TEST_REDIS_URL`; skipped when it is
//! unreachable unless `VEIL_REQUIRE_SERVICES=1`) and a SQLite store: the in-memory
//! wallets' arithmetic and refusals, plus what only shared wallets have (several instances
//! on one balance, credits applied once, Redis failures).
// Helpers outside #[test] functions fail loudly too: this whole file is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use veil_billing::{Billing, HoldRequest, Refusal, SpendCaps};
use veil_cluster::{RedisWallets, RedisWalletsOptions};
use veil_domain::time::MILLIS_PER_DAY;
use veil_domain::{
    GroupName, KeyId, LedgerEntry, LedgerKind, Money, NewApiKey, NewUser, Role, Timestamp, UserId, UserName,
};
use veil_store::Store;
use veil_testkit::redis::{CutProxy, test_redis_cluster_url, test_redis_url, unique_prefix};

fn money(raw: &str) -> Money {
    Money::parse_decimal(raw).unwrap()
}

/// One store with a user and a key, shared by the instances of a test.
struct Ledger {
    store: Arc<dyn Store>,
    user: UserId,
    key: KeyId,
    _dir: tempfile::TempDir,
}

async fn ledger(balance: &str) -> Ledger {
    let dir = tempfile::tempdir().unwrap();
    let store = veil_store::connect(&format!("sqlite://{}/veil.db", dir.path().display()), 4).await.unwrap();
    store.migrate().await.unwrap();
    let user = store
        .create_user(NewUser {
            name: UserName::parse("alice").unwrap(),
            email: None,
            role: Role::User,
            group: GroupName::default_group(),
            password_hash: None,
        })
        .await
        .unwrap();
    let key = new_key(store.as_ref(), user.id, "hash").await;
    credit(store.as_ref(), user.id, balance).await;
    Ledger { store, user: user.id, key, _dir: dir }
}

async fn new_key(store: &dyn Store, user: UserId, hash: &str) -> KeyId {
    store
        .create_key(NewApiKey {
            user_id: user,
            name: None,
            prefix: "sk-veil-test".into(),
            hash: hash.into(),
            models: None,
            expires_at: None,
            quota: None,
            limits: Default::default(),
            daily_spend: None,
            monthly_spend: None,
            ip_allow: Vec::new(),
            allow_training: false,
            privacy: Default::default(),
        })
        .await
        .unwrap()
        .id
}

async fn credit(store: &dyn Store, user: UserId, amount: &str) -> i64 {
    store
        .append_ledger(&LedgerEntry {
            user_id: user,
            key_id: None,
            kind: LedgerKind::Topup,
            amount: money(amount),
            time: Timestamp::now(),
            request_id: None,
            note: None,
        })
        .await
        .unwrap()
}

/// One instance's wallets, with its worker running until dropped.
struct Instance {
    wallets: RedisWallets,
    billing: Arc<Billing>,
    stop: CancellationToken,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn instance(url: &str, prefix: &str, store: &Arc<dyn Store>) -> Instance {
    let options = RedisWalletsOptions { key_prefix: prefix.to_owned(), ..RedisWalletsOptions::default() };
    instance_with(url, options, store).await
}

async fn instance_with(url: &str, options: RedisWalletsOptions, store: &Arc<dyn Store>) -> Instance {
    let conn = veil_cluster::connect(url).await.expect("connects");
    let revision = store.revision().await.unwrap();
    let (wallets, worker) = RedisWallets::new(conn, Arc::clone(store), revision, options);
    let stop = CancellationToken::new();
    #[allow(clippy::disallowed_methods)] // stopped by the guard
    tokio::spawn(worker.run(stop.clone()));
    let billing = Arc::new(Billing::with_wallets(Arc::new(wallets.clone())));
    Instance { wallets, billing, stop }
}

impl Instance {
    /// Balance and holds once every queued settle and release has reached Redis.
    async fn balance(&self, user: UserId) -> Option<(Money, Money)> {
        self.wallets.settled().await;
        self.billing.balance(user).await
    }
}

fn request(l: &Ledger, amount: &str) -> HoldRequest {
    HoldRequest {
        user: l.user,
        key: l.key,
        key_quota: None,
        caps: SpendCaps::default(),
        key_caps: SpendCaps::default(),
        amount: money(amount),
        request_id: "req".into(),
        now: Timestamp::now(),
    }
}

#[tokio::test]
async fn holds_reserve_and_settle_charges_exactly_once() {
    let Some(url) = test_redis_url().await else { return };
    let l = ledger("1").await;
    let a = instance(&url, &unique_prefix(), &l.store).await;
    let hold = a.billing.hold(request(&l, "0.4")).await.unwrap();
    assert_eq!(a.balance(l.user).await, Some((money("1"), money("0.4"))));
    let second = a.billing.hold(request(&l, "0.6")).await.unwrap();
    match a.billing.hold(request(&l, "0.000000001")).await {
        Err(Refusal::Balance { available, needed }) => {
            assert_eq!(available, Money::ZERO);
            assert_eq!(needed, Money::from_nanos(1));
        }
        other => panic!("expected a balance refusal, got {other:?}"),
    }
    let rows = hold.settle(money("0.123"), Timestamp::now());
    assert_eq!(
        rows.iter().map(|r| (r.kind, r.amount)).collect::<Vec<_>>(),
        [(LedgerKind::Hold, money("-0.4")), (LedgerKind::Charge, money("-0.123"))]
    );
    assert_eq!(a.balance(l.user).await, Some((money("0.877"), money("0.6"))));
    drop(second);
    assert_eq!(a.balance(l.user).await, Some((money("0.877"), Money::ZERO)));

    // Free calls pass whatever the balance; a failed call costs nothing.
    let rows = a.billing.hold(request(&l, "0")).await.unwrap().settle(Money::ZERO, Timestamp::now());
    assert!(rows.is_empty());
    a.billing.hold(request(&l, "0.8")).await.unwrap().settle(Money::ZERO, Timestamp::now());
    assert_eq!(a.balance(l.user).await, Some((money("0.877"), Money::ZERO)));
    // A call that held nothing but is charged anyway (a price its worst case does not
    // cover) is charged, once.
    let rows = a.billing.hold(request(&l, "0")).await.unwrap().settle(money("0.077"), Timestamp::now());
    assert_eq!(rows.len(), 1);
    assert_eq!(a.balance(l.user).await, Some((money("0.8"), Money::ZERO)));
}

/// An instance that dies mid-call never closes its hold: past `hold_ttl` the hold stops
/// standing in others' way, and if its call settles after all, the charge still lands once.
#[tokio::test]
async fn an_unclosed_hold_expires_and_a_late_settle_still_charges_once() {
    let Some(url) = test_redis_url().await else { return };
    let l = ledger("1").await;
    let options = RedisWalletsOptions {
        key_prefix: unique_prefix(),
        hold_ttl: Duration::from_millis(800),
        ..RedisWalletsOptions::default()
    };
    let dead = instance_with(&url, options.clone(), &l.store).await;
    let alive = instance_with(&url, options, &l.store).await;

    // The dead instance's hold is never dropped (its process is gone); the late one is
    // kept and settled after its expiry.
    std::mem::forget(dead.billing.hold(request(&l, "0.5")).await.unwrap());
    let late = dead.billing.hold(request(&l, "0.3")).await.unwrap();
    assert!(matches!(alive.billing.hold(request(&l, "0.4")).await, Err(Refusal::Balance { .. })));

    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Refused on the expired holds at first: they are released and the hold goes through.
    let fresh = alive.billing.hold(request(&l, "0.9")).await.unwrap();
    assert_eq!(alive.balance(l.user).await, Some((money("1"), money("0.9"))));

    // The late settle charges (its hold was released already, so only the charge moves),
    // and a retry of it would find nothing left to do.
    late.settle(money("0.1"), Timestamp::now());
    assert_eq!(dead.balance(l.user).await, Some((money("0.9"), money("0.9"))));
    drop(fresh);
    assert_eq!(alive.balance(l.user).await, Some((money("0.9"), Money::ZERO)));
}

#[tokio::test]
async fn wallets_start_from_the_ledger_including_settled_charges() {
    let Some(url) = test_redis_url().await else { return };
    let l = ledger("1").await;
    let now = Timestamp::now();
    let first = instance(&url, &unique_prefix(), &l.store).await;
    let rows = first.billing.hold(request(&l, "0.5")).await.unwrap().settle(money("0.25"), now);
    l.store.insert_call_records(&[], &rows).await.unwrap();
    // Another deployment (prefix) starts from the ledger, with the charge in it.
    let fresh = instance(&url, &unique_prefix(), &l.store).await;
    let quota = HoldRequest { key_quota: Some(money("0.5")), ..request(&l, "0.26") };
    match fresh.billing.hold(quota).await {
        Err(Refusal::KeyQuota { remaining, needed }) => {
            assert_eq!(remaining, money("0.25"), "the key's spend is loaded from the ledger");
            assert_eq!(needed, money("0.26"));
        }
        other => panic!("expected a key quota refusal, got {other:?}"),
    }
    assert_eq!(fresh.balance(l.user).await, Some((money("0.75"), Money::ZERO)));
}

#[tokio::test]
async fn key_quota_counts_spent_and_held() {
    let Some(url) = test_redis_url().await else { return };
    let l = ledger("10").await;
    let a = instance(&url, &unique_prefix(), &l.store).await;
    let with_quota = |amount: &str| HoldRequest { key_quota: Some(money("1")), ..request(&l, amount) };
    let held = a.billing.hold(with_quota("0.7")).await.unwrap();
    match a.billing.hold(with_quota("0.5")).await {
        Err(Refusal::KeyQuota { remaining, .. }) => assert_eq!(remaining, money("0.3")),
        other => panic!("expected a key quota refusal, got {other:?}"),
    }
    held.settle(money("0.6"), Timestamp::now());
    a.wallets.settled().await;
    assert!(a.billing.hold(with_quota("0.4")).await.is_ok());
    assert!(matches!(a.billing.hold(with_quota("0.41")).await, Err(Refusal::KeyQuota { .. })));
}

#[tokio::test]
async fn spend_caps_refuse_until_the_period_turns() {
    let Some(url) = test_redis_url().await else { return };
    let l = ledger("100").await;
    let a = instance(&url, &unique_prefix(), &l.store).await;
    let now = Timestamp::parse_rfc3339("2026-11-30T10:00:00Z").unwrap();
    let caps = SpendCaps { daily: Some(money("1")), monthly: Some(money("1.5")) };
    let at = |amount: &str, now| HoldRequest { caps, now, ..request(&l, amount) };
    a.billing.hold(at("0.9", now)).await.unwrap().settle(money("0.9"), now);
    a.wallets.settled().await;
    match a.billing.hold(at("0.2", now)).await {
        Err(Refusal::DailyCap { resets_at }) => {
            assert_eq!(resets_at, Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap());
        }
        other => panic!("expected the daily cap, got {other:?}"),
    }
    // Next day, and next month: the monthly cap counts from December.
    let tomorrow = now.plus_millis(MILLIS_PER_DAY);
    a.billing.hold(at("0.9", tomorrow)).await.unwrap().settle(money("0.9"), tomorrow);
    a.wallets.settled().await;
    let later = tomorrow.plus_millis(MILLIS_PER_DAY);
    a.billing.hold(at("0.5", later)).await.unwrap().settle(money("0.5"), later);
    a.wallets.settled().await;
    let next = later.plus_millis(MILLIS_PER_DAY);
    match a.billing.hold(at("0.2", next)).await {
        Err(Refusal::MonthlyCap { resets_at }) => {
            assert_eq!(resets_at, Timestamp::parse_rfc3339("2027-01-01T00:00:00Z").unwrap());
        }
        other => panic!("expected the monthly cap, got {other:?}"),
    }
    assert!(a.billing.hold(at("0.1", next)).await.is_ok(), "what is left of the month still fits");
}

#[tokio::test]
async fn key_spend_caps_bound_one_key_and_not_its_siblings() {
    let Some(url) = test_redis_url().await else { return };
    let l = ledger("100").await;
    let a = instance(&url, &unique_prefix(), &l.store).await;
    let now = Timestamp::parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
    let key_caps = SpendCaps { daily: Some(money("1")), monthly: None };
    let capped = |amount: &str| HoldRequest { key_caps, now, ..request(&l, amount) };
    a.billing.hold(capped("0.8")).await.unwrap().settle(money("0.8"), now);
    a.wallets.settled().await;
    match a.billing.hold(capped("0.3")).await {
        Err(Refusal::DailyCap { resets_at }) => {
            assert_eq!(resets_at, Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").unwrap());
        }
        other => panic!("expected the key's daily cap, got {other:?}"),
    }
    let sibling = new_key(l.store.as_ref(), l.user, "sibling").await;
    assert!(a.billing.hold(HoldRequest { key: sibling, ..capped("0.3") }).await.is_ok());
    let tomorrow = now.plus_millis(MILLIS_PER_DAY);
    assert!(a.billing.hold(HoldRequest { now: tomorrow, ..capped("0.9") }).await.is_ok());
}

/// The promise of shared wallets: many calls at once, spread over three instances, against
/// a balance that covers only some of them never hold or spend past it, and the balance
/// ends at the start minus the settled charges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_holds_on_three_instances_never_exceed_the_balance() {
    let Some(url) = test_redis_url().await else { return };
    concurrent_holds_never_exceed_the_balance(&url).await;
}

/// The same on a Redis Cluster: a hold's two wallets and its marker share one slot.
#[tokio::test]
async fn concurrent_holds_on_a_redis_cluster_never_exceed_the_balance() {
    let Some(url) = test_redis_cluster_url().await else { return };
    concurrent_holds_never_exceed_the_balance(&url).await;
}

async fn concurrent_holds_never_exceed_the_balance(url: &str) {
    let l = ledger("1").await;
    let prefix = unique_prefix();
    let instances = [
        instance(url, &prefix, &l.store).await,
        instance(url, &prefix, &l.store).await,
        instance(url, &prefix, &l.store).await,
    ];
    let calls = 60;
    // Every call holds 0.07: at most 14 fit in the balance of 1 at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(calls));
    let mut tasks = tokio::task::JoinSet::new();
    for call in 0..calls {
        let billing = Arc::clone(&instances[call % 3].billing);
        let request = request(&l, "0.07");
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            let hold = billing.hold(request).await;
            // Every hold is still open while the others are tried.
            barrier.wait().await;
            let hold = hold.ok()?;
            let charge = Money::from_nanos(hold.amount().nanos() * (call as i64 % 4) / 4);
            hold.settle(charge, Timestamp::now());
            Some(charge.nanos())
        });
    }
    let mut accepted = 0;
    let mut charged = 0;
    while let Some(result) = tasks.join_next().await {
        if let Some(charge) = result.unwrap() {
            accepted += 1;
            charged += charge;
        }
    }
    assert_eq!(accepted, 14, "exactly what the balance covers");
    for instance in &instances {
        instance.wallets.settled().await;
    }
    let (balance, held) = instances[1].balance(l.user).await.unwrap();
    assert_eq!(held, Money::ZERO);
    assert_eq!(balance.nanos(), 1_000_000_000 - charged);
    assert!(!balance.is_negative());
}

#[tokio::test]
async fn a_credit_reaches_the_shared_wallet_once_whichever_instances_apply_it() {
    let Some(url) = test_redis_url().await else { return };
    let l = ledger("1").await;
    let prefix = unique_prefix();
    let a = instance(&url, &prefix, &l.store).await;
    let b = instance(&url, &prefix, &l.store).await;
    // Any paid hold creates the wallet (a free one touches no Redis).
    drop(a.billing.hold(request(&l, "0.000000001")).await.unwrap());
    credit(l.store.as_ref(), l.user, "2").await;
    assert_eq!(a.balance(l.user).await.unwrap().0, money("1"), "not seen before the credits are applied");
    assert_eq!(a.billing.apply_credits().await.unwrap(), 1);
    assert_eq!(b.billing.apply_credits().await.unwrap(), 1, "b reads it too");
    assert_eq!(b.balance(l.user).await.unwrap().0, money("3"), "applied once");
    assert_eq!(a.billing.apply_credits().await.unwrap(), 0, "a credit is read once per instance");

    // A wallet created after a credit was written has it in its snapshot: an instance
    // that reads the credit afterwards must not count it again.
    credit(l.store.as_ref(), l.user, "4").await;
    let now = Timestamp::now();
    a.billing.forget_user(l.user);
    a.wallets.settled().await;
    assert_eq!(a.billing.balance(l.user).await, None, "forgotten");
    let late = instance(&url, &prefix, &l.store).await;
    drop(late.billing.hold(HoldRequest { now, ..request(&l, "0.000000001") }).await.unwrap());
    b.billing.apply_credits().await.unwrap();
    a.billing.apply_credits().await.unwrap();
    assert_eq!(late.balance(l.user).await.unwrap().0, money("7"));

    // Several credits read at once all count, once.
    let before = b.balance(l.user).await.unwrap().0;
    for amount in ["0.5", "0.25"] {
        credit(l.store.as_ref(), l.user, amount).await;
    }
    a.billing.apply_credits().await.unwrap();
    b.billing.apply_credits().await.unwrap();
    assert_eq!(b.balance(l.user).await.unwrap().0, before.checked_add(money("0.75")).unwrap());
}

#[tokio::test]
async fn redis_down_fails_holds_closed_and_settles_are_retried() {
    let Some(url) = test_redis_url().await else { return };
    let l = ledger("1").await;
    let proxy = CutProxy::start(&url).await;
    let prefix = unique_prefix();
    let a = instance(&proxy.url(), &prefix, &l.store).await;
    let direct = instance(&url, &prefix, &l.store).await;
    let hold = a.billing.hold(request(&l, "0.5")).await.unwrap();

    proxy.cut();
    match a.billing.hold(request(&l, "0.1")).await {
        Err(Refusal::Unavailable(_)) => {}
        other => panic!("expected the hold to fail closed, got {other:?}"),
    }
    assert!(a.billing.hold(request(&l, "0")).await.is_ok(), "free calls need no balance, nor Redis");
    // Settled while Redis is away: the worker keeps trying.
    hold.settle(money("0.2"), Timestamp::now());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(direct.balance(l.user).await, Some((money("1"), money("0.5"))), "not applied yet");

    proxy.restore();
    // Retried quickly a few times, then every second until Redis is back.
    let mut seen = None;
    for _ in 0..50 {
        seen = direct.balance(l.user).await;
        if seen == Some((money("0.8"), Money::ZERO)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, Some((money("0.8"), Money::ZERO)), "applied once, after the outage");
    let mut held = a.billing.hold(request(&l, "0.8")).await;
    for _ in 0..50 {
        if !matches!(held, Err(Refusal::Unavailable(_))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = a.billing.hold(request(&l, "0.8")).await;
    }
    assert!(held.is_ok(), "holds work again once Redis is back: {held:?}");
}
