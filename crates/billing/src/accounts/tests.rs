use super::*;
use veil_domain::time::MILLIS_PER_DAY;
use veil_domain::{GroupName, NewApiKey, NewUser, Role, UserName};

struct Fixture {
    store: Arc<dyn Store>,
    billing: Arc<Billing>,
    user: UserId,
    key: KeyId,
    _dir: tempfile::TempDir,
}

fn money(raw: &str) -> Money {
    Money::parse_decimal(raw).unwrap()
}

async fn fixture(balance: &str) -> Fixture {
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
    let key = store
        .create_key(NewApiKey {
            user_id: user.id,
            name: None,
            prefix: "sk-veil-test".into(),
            hash: "hash".into(),
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
        .unwrap();
    credit(store.as_ref(), user.id, balance).await;
    let billing = Arc::new(Billing::new(Arc::clone(&store), store.revision().await.unwrap()));
    Fixture { store, billing, user: user.id, key: key.id, _dir: dir }
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

fn request(f: &Fixture, amount: &str) -> HoldRequest {
    HoldRequest {
        user: f.user,
        key: f.key,
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
    let f = fixture("1").await;
    let hold = f.billing.hold(request(&f, "0.4")).await.unwrap();
    assert_eq!(f.billing.balance(f.user).await, Some((money("1"), money("0.4"))));
    let second = f.billing.hold(request(&f, "0.6")).await.unwrap();
    // Fully held: even the smallest further call is refused.
    match f.billing.hold(request(&f, "0.000000001")).await {
        Err(Refusal::Balance { available, needed }) => {
            assert_eq!(available, Money::ZERO);
            assert_eq!(needed, Money::from_nanos(1));
        }
        other => panic!("expected a balance refusal, got {other:?}"),
    }
    let rows = hold.settle(money("0.123"), Timestamp::now());
    assert_eq!(
        rows.iter().map(|r| (r.kind, r.amount)).collect::<Vec<_>>(),
        [(LedgerKind::Hold, money("-0.4")), (LedgerKind::Charge, money("-0.123")),]
    );
    assert_eq!(f.billing.balance(f.user).await, Some((money("0.877"), money("0.6"))));
    // Dropped unsettled: released, nothing charged, nothing to write.
    drop(second);
    assert_eq!(f.billing.balance(f.user).await, Some((money("0.877"), Money::ZERO)));
}

#[tokio::test]
async fn a_failed_call_writes_its_hold_and_costs_nothing() {
    let f = fixture("1").await;
    let rows = f.billing.hold(request(&f, "0.5")).await.unwrap().settle(Money::ZERO, Timestamp::now());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kind, LedgerKind::Hold);
    assert_eq!(f.billing.balance(f.user).await, Some((money("1"), Money::ZERO)));
}

#[tokio::test]
async fn free_calls_pass_without_a_balance() {
    let f = fixture("0").await;
    let rows = f.billing.hold(request(&f, "0")).await.unwrap().settle(Money::ZERO, Timestamp::now());
    assert!(rows.is_empty());
    assert!(matches!(f.billing.hold(request(&f, "0.01")).await, Err(Refusal::Balance { .. })));
}

#[tokio::test]
async fn key_quota_counts_spent_and_held() {
    let f = fixture("10").await;
    let with_quota = |amount: &str| HoldRequest { key_quota: Some(money("1")), ..request(&f, amount) };
    let held = f.billing.hold(with_quota("0.7")).await.unwrap();
    match f.billing.hold(with_quota("0.5")).await {
        Err(Refusal::KeyQuota { remaining, .. }) => assert_eq!(remaining, money("0.3")),
        other => panic!("expected a quota refusal, got {other:?}"),
    }
    held.settle(money("0.6"), Timestamp::now());
    assert!(f.billing.hold(with_quota("0.4")).await.is_ok());
    assert!(matches!(f.billing.hold(with_quota("0.41")).await, Err(Refusal::KeyQuota { .. })));
}

#[tokio::test]
async fn spend_caps_refuse_until_the_period_turns() {
    let f = fixture("100").await;
    let caps = SpendCaps { daily: Some(money("1")), monthly: Some(money("1.5")) };
    let now = Timestamp::parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
    let at = |amount: &str, now: Timestamp| HoldRequest { caps, now, ..request(&f, amount) };
    f.billing.hold(at("0.9", now)).await.unwrap().settle(money("0.9"), now);
    match f.billing.hold(at("0.2", now)).await {
        Err(Refusal::DailyCap { resets_at }) => {
            assert_eq!(resets_at, Timestamp::parse_rfc3339("2026-11-24T00:00:00Z").unwrap());
        }
        other => panic!("expected the daily cap, got {other:?}"),
    }
    let tomorrow = now.plus_millis(MILLIS_PER_DAY);
    f.billing.hold(at("0.5", tomorrow)).await.unwrap().settle(money("0.5"), tomorrow);
    match f.billing.hold(at("0.2", tomorrow)).await {
        Err(Refusal::MonthlyCap { resets_at }) => {
            assert_eq!(resets_at, Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap());
        }
        other => panic!("expected the monthly cap, got {other:?}"),
    }
}

#[tokio::test]
async fn credits_from_other_processes_apply_once() {
    let f = fixture("1").await;
    f.billing.hold(request(&f, "0")).await.unwrap();
    credit(f.store.as_ref(), f.user, "2").await;
    assert_eq!(f.billing.balance(f.user).await.unwrap().0, money("1"), "not seen before the credits are applied");
    assert_eq!(f.billing.apply_credits().await.unwrap(), 1);
    assert_eq!(f.billing.balance(f.user).await.unwrap().0, money("3"));
    assert_eq!(f.billing.apply_credits().await.unwrap(), 0, "a credit is read once");
    assert_eq!(f.billing.balance(f.user).await.unwrap().0, money("3"));

    // An account loaded after a credit was written has it in its snapshot: applying
    // the credit scan afterwards must not count it again.
    let late = Billing::new(Arc::clone(&f.store), 0);
    late.hold(request(&f, "0")).await.unwrap();
    assert_eq!(late.balance(f.user).await.unwrap().0, money("3"));
    late.apply_credits().await.unwrap();
    assert_eq!(late.balance(f.user).await.unwrap().0, money("3"));
}

#[tokio::test]
async fn settlements_are_reloaded_as_they_were_charged() {
    let f = fixture("1").await;
    let now = Timestamp::now();
    let hold = f.billing.hold(request(&f, "0.5")).await.unwrap();
    let rows = hold.settle(money("0.25"), now);
    f.store.insert_call_records(&[], &rows).await.unwrap();
    let restarted = Billing::new(Arc::clone(&f.store), f.store.revision().await.unwrap());
    restarted.hold(request(&f, "0")).await.unwrap();
    assert_eq!(restarted.balance(f.user).await, Some((money("0.75"), Money::ZERO)));
    let totals = f.store.key_totals(f.key, now.day_start(), now.month_start()).await.unwrap();
    assert_eq!(totals.spent, money("0.25"));
}

/// The concurrency promise: many calls at once against a balance that covers only some of
/// them never overspend it, and the balance ends at the start minus the settled charges.
#[test]
fn concurrent_calls_never_overspend() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let config = ProptestConfig { cases: 24, ..ProptestConfig::default() };
    proptest!(config, |(calls in proptest::collection::vec((1..=500_i64, 0..=100_i64), 1..40), balance in 0..5_000_i64)| {
        runtime.block_on(async {
            let f = fixture(&Money::from_nanos(balance).to_decimal_string()).await;
            let mut tasks = tokio::task::JoinSet::new();
            for (hold, percent) in calls {
                let billing = Arc::clone(&f.billing);
                let request = HoldRequest { amount: Money::from_nanos(hold), ..request(&f, "0") };
                tasks.spawn(async move {
                    let hold = billing.hold(request).await.ok()?;
                    tokio::task::yield_now().await;
                    // A call is charged at most what it held (max_tokens bound the output).
                    let (_, held) = billing.balance(hold.user).await.unwrap();
                    assert!(held.nanos() >= hold.amount().nanos());
                    let charge = hold.amount().nanos() * percent / 100;
                    hold.settle(Money::from_nanos(charge), Timestamp::now());
                    Some(charge)
                });
            }
            let mut charged = 0;
            while let Some(result) = tasks.join_next().await {
                charged += result.unwrap().unwrap_or(0);
            }
            let (now_balance, held) = f.billing.balance(f.user).await.unwrap();
            assert_eq!(held, Money::ZERO);
            assert!(!now_balance.is_negative());
            assert_eq!(now_balance.nanos(), balance - charged);
        });
    });
}

#[tokio::test]
async fn key_spend_caps_bound_one_key_and_not_its_siblings() {
    let f = fixture("100").await;
    let now = Timestamp::parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
    let key_caps = SpendCaps { daily: Some(money("1")), monthly: None };
    let capped = |amount: &str| HoldRequest { key_caps, now, ..request(&f, amount) };
    f.billing.hold(capped("0.8")).await.unwrap().settle(money("0.8"), now);
    assert!(matches!(f.billing.hold(capped("0.3")).await, Err(Refusal::DailyCap { .. })));
    // The same user through another key is not bound by this key's cap.
    let sibling = HoldRequest { key: KeyId::generate(), now, ..request(&f, "0.3") };
    assert!(f.billing.hold(sibling).await.is_ok());
    let tomorrow = now.plus_millis(MILLIS_PER_DAY);
    assert!(f.billing.hold(HoldRequest { now: tomorrow, ..capped("0.9") }).await.is_ok());
}
