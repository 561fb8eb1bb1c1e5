//! Redemption codes as the store sees them: bearer credits an admin creates in batches and a
//! user spends once. The store never holds a code itself, only its keyed hash (made by the
//! caller, like an API key's) and a short display prefix; redeeming one marks it spent and
//! appends the user's top-up in a single transaction (see [`crate::Store::redeem_code`]).

use crate::StoreError;
use crate::codec::{self, Columns};
use veil_domain::{LedgerEntry, LedgerKind, Money, Timestamp, UserId, UserName};

/// Codes inserted per statement: 5 bind parameters each stays far below both backends'
/// limits (SQLite 32766, PostgreSQL 65535).
pub(crate) const CODES_PER_STATEMENT: usize = 1_000;

/// A code to store: its keyed hash and display prefix, never the code itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRedemptionCode {
    pub hash: String,
    /// What admins see of it (e.g. `veil-AbCd`).
    pub prefix: String,
    /// Positive; the database refuses anything else.
    pub amount: Money,
    pub created_at: Timestamp,
    /// `None`: never expires. Otherwise redeemable strictly before this instant.
    pub expires_at: Option<Timestamp>,
}

/// What [`crate::Store::redeem_code`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// The code was spent now: its amount was appended to the user's ledger as a `topup`
    /// stamped with `revision`.
    Credited { amount: Money, prefix: String, revision: i64 },
    /// No unspent, unexpired code has this hash. Unknown, already redeemed and expired codes
    /// are deliberately one outcome: telling them apart would help whoever guesses codes.
    NotRedeemable,
}

/// A stored code as an admin lists it: no hash, no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRedemptionCode {
    /// Assigned by the database, increasing in insertion order.
    pub id: i64,
    pub prefix: String,
    pub amount: Money,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub redeemed_at: Option<Timestamp>,
    /// `None` while unredeemed, and once the redeemer's account was erased.
    pub redeemed_by: Option<UserId>,
    pub redeemed_by_name: Option<UserName>,
}

/// The ledger row a redemption appends (the backend stamps its revision).
pub(crate) fn topup(user: UserId, amount: Money, prefix: &str, at: Timestamp) -> LedgerEntry {
    LedgerEntry {
        user_id: user,
        key_id: None,
        kind: LedgerKind::Topup,
        amount,
        time: at,
        request_id: None,
        note: Some(format!("redemption code {prefix}")),
    }
}

pub(crate) fn stored(row: &impl Columns) -> Result<StoredRedemptionCode, StoreError> {
    let name = row
        .opt_text("redeemed_by_name")?
        .map(|raw| UserName::parse(&raw).map_err(|_| codec::corrupt("redemption_codes.redeemed_by_name")))
        .transpose()?;
    Ok(StoredRedemptionCode {
        id: row.int("id")?,
        prefix: row.text("prefix")?,
        amount: Money::from_nanos(row.int("amount")?),
        created_at: Timestamp::from_unix_millis(row.int("created_at")?),
        expires_at: row.opt_int("expires_at")?.map(Timestamp::from_unix_millis),
        redeemed_at: row.opt_int("redeemed_at")?.map(Timestamp::from_unix_millis),
        redeemed_by: row.opt_uuid("redeemed_by")?.map(UserId::from_uuid),
        redeemed_by_name: name,
    })
}
