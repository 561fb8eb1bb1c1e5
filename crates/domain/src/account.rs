//! Accounts, groups, API keys and ledger entries as the store keeps them. An API key is
//! held only as a keyed hash of its secret plus a short display prefix.

use crate::money::{Money, Multiplier};
use crate::names::{GroupName, KeyId, ModelName, UserId, UserName};
use crate::policy::PrivacyRequirement;
use crate::time::Timestamp;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
    Root,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
            Self::Root => "root",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "user" => Some(Self::User),
            "admin" => Some(Self::Admin),
            "root" => Some(Self::Root),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits shared by groups and keys; `None` means "not limited here".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub max_concurrent: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: GroupName,
    pub multiplier: Multiplier,
    pub privacy: PrivacyRequirement,
    pub limits: KeyLimits,
    pub daily_spend: Option<Money>,
    pub monthly_spend: Option<Money>,
    pub deny_keywords: Vec<String>,
    pub deny_patterns: Vec<String>,
    /// Declared in the config file (and so rewritten from it at every start).
    pub managed: bool,
}

impl Group {
    /// The group every installation has, also without a config file.
    pub fn builtin_default() -> Self {
        Self {
            name: GroupName::default_group(),
            multiplier: Multiplier::ONE,
            privacy: PrivacyRequirement::default(),
            limits: KeyLimits::default(),
            daily_spend: None,
            monthly_spend: None,
            deny_keywords: Vec::new(),
            deny_patterns: Vec::new(),
            managed: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: UserName,
    pub email: Option<String>,
    pub role: Role,
    pub group: GroupName,
    /// PHC string (Argon2id); `None` for accounts that only use API keys.
    pub password_hash: Option<String>,
    pub disabled: bool,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: UserName,
    pub email: Option<String>,
    pub role: Role,
    pub group: GroupName,
    pub password_hash: Option<String>,
}

/// An API key as stored: never the secret, only its keyed hash and a display prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: KeyId,
    pub user_id: UserId,
    pub name: Option<String>,
    /// The first characters of the secret (`sk-veil-AbCd`), for people to recognise it.
    pub prefix: String,
    /// Hex HMAC-SHA-256 of the whole secret under the installation's key-hash key.
    pub hash: String,
    pub models: Option<Vec<ModelName>>,
    pub expires_at: Option<Timestamp>,
    pub quota: Option<Money>,
    pub limits: KeyLimits,
    /// Caps on what the key may be charged per UTC day and calendar month.
    pub daily_spend: Option<Money>,
    pub monthly_spend: Option<Money>,
    pub ip_allow: Vec<IpNet>,
    pub allow_training: bool,
    /// Narrows the group's privacy requirement for calls with this key.
    pub privacy: crate::policy::KeyPrivacy,
    pub revoked_at: Option<Timestamp>,
    /// Set by risk control (or an admin): the key authenticates but every call is refused
    /// with `key_suspended` until it is lifted.
    pub suspended_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl ApiKey {
    pub fn is_usable_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub user_id: UserId,
    pub name: Option<String>,
    pub prefix: String,
    pub hash: String,
    pub models: Option<Vec<ModelName>>,
    pub expires_at: Option<Timestamp>,
    pub quota: Option<Money>,
    pub limits: KeyLimits,
    /// Caps on what the key may be charged per UTC day and calendar month.
    pub daily_spend: Option<Money>,
    pub monthly_spend: Option<Money>,
    pub ip_allow: Vec<IpNet>,
    pub allow_training: bool,
    pub privacy: crate::policy::KeyPrivacy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    Topup,
    Hold,
    Charge,
    Refund,
    Adjustment,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topup => "topup",
            Self::Hold => "hold",
            Self::Charge => "charge",
            Self::Refund => "refund",
            Self::Adjustment => "adjustment",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "topup" => Some(Self::Topup),
            "hold" => Some(Self::Hold),
            "charge" => Some(Self::Charge),
            "refund" => Some(Self::Refund),
            "adjustment" => Some(Self::Adjustment),
            _ => None,
        }
    }

    /// Whether rows of this kind move money (a hold only reserves it).
    pub fn moves_money(self) -> bool {
        self != Self::Hold
    }
}

/// One append-only money movement. Positive amounts add to the balance. A `hold` row
/// records what a call reserved (negative) and moves no money: balances are the sum of
/// every other kind. A call's hold and its charge are written together when it settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub user_id: UserId,
    /// The key a hold or charge was made with.
    pub key_id: Option<KeyId>,
    pub kind: LedgerKind,
    pub amount: Money,
    pub time: Timestamp,
    /// The call this movement belongs to, if any (never content).
    pub request_id: Option<String>,
    /// A short operator note such as "credit by admin".
    pub note: Option<String>,
}
