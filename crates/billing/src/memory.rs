//! [`MemoryWallets`]: the money state in this process, for a single instance.
//!
//! Each active account's balance, outstanding holds and spend in the current day and
//! month are loaded once from the ledger and kept current by this process's own
//! settlements plus the credits other processes stamp with a store revision (see
//! [`Wallets::apply_credits`]). Several instances on one database each keep their own
//! view, so they can together spend past a balance: scale out with the Redis wallets of
//! `veil-cluster` instead.
//!
//! Locking: an account's and a key's state each sit behind a short `std` mutex, always
//! taken account first, never across an await. Loading an account and applying credits
//! are serialised by one async mutex (which also holds the credit watermark), so every
//! credit is either in the snapshot an account was loaded from or applied to it
//! afterwards — never neither, never both.

use crate::accounts::{HoldRequest, Refusal, Reserved, SpendCaps, Wallets};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::OnceCell;
use veil_domain::time::MILLIS_PER_DAY;
use veil_domain::{KeyId, Money, Timestamp, UserId};
use veil_store::{Store, StoreError};

/// Spend since the start of a period (positive nano-units).
#[derive(Debug)]
struct Period {
    start: Timestamp,
    spent: i64,
}

impl Period {
    fn roll_to(&mut self, start: Timestamp) {
        if start > self.start {
            self.start = start;
            self.spent = 0;
        }
    }
}

/// Charges in the current UTC day and calendar month, for the spend caps.
#[derive(Debug)]
struct Spend {
    day: Period,
    month: Period,
}

impl Spend {
    fn loaded(now: Timestamp, since_day: Money, since_month: Money) -> Self {
        Self {
            day: Period { start: now.day_start(), spent: since_day.nanos() },
            month: Period { start: now.month_start(), spent: since_month.nanos() },
        }
    }

    fn roll(&mut self, now: Timestamp) {
        self.day.roll_to(now.day_start());
        self.month.roll_to(now.month_start());
    }

    fn add(&mut self, charge: i64) {
        self.day.spent = self.day.spent.saturating_add(charge);
        self.month.spent = self.month.spent.saturating_add(charge);
    }

    /// Which cap `needed` more (on top of `held`) would pass, if any.
    fn over(&self, held: i64, needed: i64, caps: SpendCaps, now: Timestamp) -> Option<Refusal> {
        let over = |period: &Period, cap: Option<Money>| {
            cap.is_some_and(|cap| period.spent.saturating_add(held).saturating_add(needed) > cap.nanos())
        };
        if over(&self.day, caps.daily) {
            return Some(Refusal::DailyCap { resets_at: self.day.start.plus_millis(MILLIS_PER_DAY) });
        }
        if over(&self.month, caps.monthly) {
            return Some(Refusal::MonthlyCap { resets_at: now.next_month_start() });
        }
        None
    }
}

#[derive(Debug)]
struct Account {
    /// Sum of the money-moving ledger rows, including settlements not yet written.
    balance: i64,
    /// Outstanding holds.
    held: i64,
    spend: Spend,
    /// The store revision the account was loaded at: credits stamped later are applied.
    loaded_at: i64,
}

#[derive(Debug)]
struct KeySpend {
    /// Charged in all (for the quota).
    spent: i64,
    held: i64,
    spend: Spend,
}

type Shared<T> = Arc<Mutex<T>>;
type Slot<T> = Arc<OnceCell<Shared<T>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is plain integers updated in one step: a panic elsewhere cannot leave it
    // half-written, so a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct MemoryWallets {
    store: Arc<dyn Store>,
    users: Mutex<HashMap<UserId, Slot<Account>>>,
    keys: Mutex<HashMap<KeyId, Slot<KeySpend>>>,
    /// The highest credit revision applied; guards account loads (see the module docs).
    credits: tokio::sync::Mutex<i64>,
}

impl MemoryWallets {
    /// `revision` is the store revision at start: credits up to it are in every account
    /// loaded from now on.
    pub fn new(store: Arc<dyn Store>, revision: i64) -> Self {
        Self {
            store,
            users: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            credits: tokio::sync::Mutex::new(revision),
        }
    }

    fn loaded(&self, user: UserId) -> Option<Shared<Account>> {
        lock(&self.users).get(&user).and_then(|slot| slot.get().cloned())
    }

    async fn account(&self, user: UserId, now: Timestamp) -> Result<Shared<Account>, StoreError> {
        let slot = Arc::clone(lock(&self.users).entry(user).or_default());
        slot.get_or_try_init(|| async {
            let _serialised_with_credits = self.credits.lock().await;
            let totals = self.store.account_totals(user, now.day_start(), now.month_start()).await?;
            Ok(Arc::new(Mutex::new(Account {
                balance: totals.balance.nanos(),
                held: 0,
                spend: Spend::loaded(now, totals.spent_since_day, totals.spent_since_month),
                loaded_at: totals.revision,
            })))
        })
        .await
        .cloned()
    }

    async fn key(&self, key: KeyId, now: Timestamp) -> Result<Shared<KeySpend>, StoreError> {
        let slot = Arc::clone(lock(&self.keys).entry(key).or_default());
        slot.get_or_try_init(|| async {
            // Keys are only ever charged by calls, which this process makes after loading.
            let totals = self.store.key_totals(key, now.day_start(), now.month_start()).await?;
            Ok(Arc::new(Mutex::new(KeySpend {
                spent: totals.spent.nanos(),
                held: 0,
                spend: Spend::loaded(now, totals.spent_since_day, totals.spent_since_month),
            })))
        })
        .await
        .cloned()
    }
}

#[async_trait::async_trait]
impl Wallets for MemoryWallets {
    async fn hold(&self, request: &HoldRequest, needed: Money) -> Result<Box<dyn Reserved>, Refusal> {
        let account = self.account(request.user, request.now).await?;
        let key = self.key(request.key, request.now).await?;
        let needed = needed.nanos().max(0);
        {
            let mut a = lock(&account);
            let mut k = lock(&key);
            a.spend.roll(request.now);
            k.spend.roll(request.now);
            if needed > 0 {
                let available = a.balance.saturating_sub(a.held);
                if available < needed {
                    return Err(Refusal::Balance {
                        available: Money::from_nanos(available),
                        needed: Money::from_nanos(needed),
                    });
                }
                if let Some(quota) = request.key_quota {
                    let remaining = quota.nanos().saturating_sub(k.spent).saturating_sub(k.held);
                    if remaining < needed {
                        return Err(Refusal::KeyQuota {
                            remaining: Money::from_nanos(remaining.max(0)),
                            needed: Money::from_nanos(needed),
                        });
                    }
                }
                let capped = a.spend.over(a.held, needed, request.caps, request.now);
                if let Some(refusal) = capped.or_else(|| k.spend.over(k.held, needed, request.key_caps, request.now)) {
                    return Err(refusal);
                }
            }
            a.held = a.held.saturating_add(needed);
            k.held = k.held.saturating_add(needed);
        }
        Ok(Box::new(MemoryHold { account, key, amount: needed }))
    }

    async fn apply_credits(&self) -> Result<usize, StoreError> {
        let mut watermark = self.credits.lock().await;
        let credits = self.store.ledger_credits_since(*watermark).await?;
        for credit in &credits {
            *watermark = (*watermark).max(credit.revision);
            let Some(account) = self.loaded(credit.entry.user_id) else { continue };
            let mut a = lock(&account);
            if credit.revision > a.loaded_at && credit.entry.kind.moves_money() {
                a.balance = a.balance.saturating_add(credit.entry.amount.nanos());
            }
        }
        Ok(credits.len())
    }

    async fn balance(&self, user: UserId) -> Option<(Money, Money)> {
        let account = self.loaded(user)?;
        let a = lock(&account);
        Some((Money::from_nanos(a.balance), Money::from_nanos(a.held)))
    }

    fn forget_user(&self, user: UserId) {
        lock(&self.users).remove(&user);
    }
}

/// A hold on this process's account and key state.
#[derive(Debug)]
struct MemoryHold {
    account: Shared<Account>,
    key: Shared<KeySpend>,
    amount: i64,
}

impl MemoryHold {
    fn close(&self, charge: i64, now: Timestamp) {
        let mut a = lock(&self.account);
        let mut k = lock(&self.key);
        a.held = a.held.saturating_sub(self.amount);
        a.balance = a.balance.saturating_sub(charge);
        a.spend.roll(now);
        a.spend.add(charge);
        k.held = k.held.saturating_sub(self.amount);
        k.spent = k.spent.saturating_add(charge);
        k.spend.roll(now);
        k.spend.add(charge);
    }
}

impl Reserved for MemoryHold {
    fn settle(self: Box<Self>, charge: Money, now: Timestamp) {
        self.close(charge.nanos().max(0), now);
    }

    fn release(self: Box<Self>) {
        self.close(0, Timestamp::now());
    }
}
