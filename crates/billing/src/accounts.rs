//! The hold/settle protocol the request path uses, over a [`Wallets`] that keeps the money
//! state: in this process ([`crate::MemoryWallets`]) or shared by several instances (the
//! Redis wallets of `veil-cluster`).
//!
//! [`Billing`] is what the server holds; [`Hold`] is one call's reservation. A hold is
//! closed exactly once: [`Hold::settle`] consumes it with the real charge, and a hold
//! dropped unsettled is released at no charge. Both only hand the closing to the wallets,
//! which must not block (the Redis wallets queue it to their worker).

use std::sync::Arc;
use veil_domain::{KeyId, LedgerEntry, LedgerKind, Money, Timestamp, UserId};
use veil_store::{Store, StoreError};

/// Daily and monthly spend caps: a user's come from their group, a key's from the key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpendCaps {
    pub daily: Option<Money>,
    pub monthly: Option<Money>,
}

/// What a call asks to reserve.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub user: UserId,
    pub key: KeyId,
    /// The most the key may ever be charged in all.
    pub key_quota: Option<Money>,
    /// The user's caps (their group's).
    pub caps: SpendCaps,
    pub key_caps: SpendCaps,
    /// The call's worst case (see [`crate::worst_case`]).
    pub amount: Money,
    /// Written on the ledger rows so a charge can be matched to its call record.
    pub request_id: String,
    pub now: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the balance ({available}) does not cover what this call may cost ({needed})")]
    Balance { available: Money, needed: Money },
    #[error("the key's quota has {remaining} left; this call may cost {needed}")]
    KeyQuota { remaining: Money, needed: Money },
    #[error("the daily spend cap is reached")]
    DailyCap { resets_at: Timestamp },
    #[error("the monthly spend cap is reached")]
    MonthlyCap { resets_at: Timestamp },
    #[error("could not load the account: {0}")]
    Store(#[from] StoreError),
    /// The shared money state cannot be reached: holds fail closed.
    #[error("balances are unavailable: {0}")]
    Unavailable(String),
}

/// Where balances, outstanding holds and spend live. Implementations promise that a
/// hold is an atomic check-and-reserve against the balance, the key's quota and both
/// pairs of spend caps, refused with the [`Refusal`] (and numbers) the in-memory
/// implementation gives; and that every credit another process stamps with a store
/// revision reaches each wallet exactly once.
#[async_trait::async_trait]
pub trait Wallets: Send + Sync {
    /// Reserves `needed` (never negative) for `request`, or says why not. A zero amount
    /// passes whatever the balance.
    async fn hold(&self, request: &HoldRequest, needed: Money) -> Result<Box<dyn Reserved>, Refusal>;
    /// Applies the credits other processes wrote since the last call. Returns how many
    /// ledger rows it read.
    async fn apply_credits(&self) -> Result<usize, StoreError>;
    /// The user's balance and outstanding holds as the wallets see them, if known.
    async fn balance(&self, user: UserId) -> Option<(Money, Money)>;
    /// Drops an erased account's state.
    fn forget_user(&self, user: UserId);
}

/// One hold inside a [`Wallets`]; closed exactly once, by one of these (never blocking).
pub trait Reserved: Send + Sync + std::fmt::Debug {
    /// Releases the hold and charges `charge` (not negative) to the balance, the key's
    /// spend and both spend periods of `now`.
    fn settle(self: Box<Self>, charge: Money, now: Timestamp);
    /// Releases the hold at no charge.
    fn release(self: Box<Self>);
}

pub struct Billing {
    wallets: Arc<dyn Wallets>,
}

impl Billing {
    /// Money state in this process. `revision` is the store revision at start: credits up
    /// to it are in every account loaded from now on.
    pub fn new(store: Arc<dyn Store>, revision: i64) -> Self {
        Self::with_wallets(Arc::new(crate::MemoryWallets::new(store, revision)))
    }

    /// Money state kept by `wallets` (e.g. shared through Redis).
    pub fn with_wallets(wallets: Arc<dyn Wallets>) -> Self {
        Self { wallets }
    }

    /// Reserves `request.amount` atomically, or says why not. A zero amount (a free model,
    /// a zero multiplier) always passes.
    pub async fn hold(&self, request: HoldRequest) -> Result<Hold, Refusal> {
        let needed = Money::from_nanos(request.amount.nanos().max(0));
        let funds = self.wallets.hold(&request, needed).await?;
        Ok(Hold {
            funds: Some(funds),
            user: request.user,
            key_id: request.key,
            amount: needed.nanos(),
            taken_at: request.now,
            request_id: request.request_id,
        })
    }

    /// Applies the credits (top-ups, adjustments, redemptions) other processes wrote since
    /// the last call. Returns how many rows it read.
    pub async fn apply_credits(&self) -> Result<usize, StoreError> {
        self.wallets.apply_credits().await
    }

    /// The user's balance and outstanding holds as the wallets see them, if known.
    pub async fn balance(&self, user: UserId) -> Option<(Money, Money)> {
        self.wallets.balance(user).await
    }

    /// Drops an erased account's state.
    pub fn forget_user(&self, user: UserId) {
        self.wallets.forget_user(user);
    }
}

/// A reservation for one call. Settle it with [`Hold::settle`]; dropped unsettled, it is
/// released and the call costs nothing.
#[derive(Debug)]
pub struct Hold {
    funds: Option<Box<dyn Reserved>>,
    user: UserId,
    key_id: KeyId,
    amount: i64,
    taken_at: Timestamp,
    request_id: String,
}

impl Hold {
    pub fn amount(&self) -> Money {
        Money::from_nanos(self.amount)
    }

    /// Releases the hold and charges `charge`, once (the hold is consumed). Returns the
    /// ledger rows to persist: the hold (if anything was held) and the charge (if anything
    /// was charged).
    pub fn settle(mut self, charge: Money, now: Timestamp) -> Vec<LedgerEntry> {
        let charge = charge.nanos().max(0);
        if let Some(funds) = self.funds.take() {
            funds.settle(Money::from_nanos(charge), now);
        }
        let row = |kind, amount: i64, time| LedgerEntry {
            user_id: self.user,
            key_id: Some(self.key_id),
            kind,
            amount: Money::from_nanos(-amount),
            time,
            request_id: Some(self.request_id.clone()),
            note: None,
        };
        let mut rows = Vec::with_capacity(2);
        if self.amount > 0 {
            rows.push(row(LedgerKind::Hold, self.amount, self.taken_at));
        }
        if charge > 0 {
            rows.push(row(LedgerKind::Charge, charge, now));
        }
        rows
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(funds) = self.funds.take() {
            funds.release();
        }
    }
}

#[cfg(test)]
mod tests;
