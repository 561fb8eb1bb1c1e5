//! Veil's canonical vocabulary: validated names and ids, money, data policies, accounts,
//! channels, models and the metadata-only call record.
//!
//! This crate does no IO. Everything here is parsed at the edge (config, CLI, HTTP) into
//! these types, so code below the edge never re-validates. The call record has no field
//! that can hold request or response content; that is the first privacy invariant, kept
//! by construction.

pub mod account;
pub mod catalogue;
pub mod error_code;
pub mod money;
pub mod names;
pub mod policy;
pub mod record;
pub mod time;

pub use account::{ApiKey, Group, KeyLimits, LedgerEntry, LedgerKind, NewApiKey, NewUser, Role, User};
pub use catalogue::{Channel, ChannelKind, ChannelLimits, HealthState, Model, Price, Pricing, Timeouts};
pub use error_code::ErrorCode;
pub use money::{Money, MoneyError, Multiplier};
pub use names::{ChannelName, GroupName, KeyId, ModelName, NameError, RequestId, UserId, UserName};
pub use policy::{
    DataPolicy, FirewallMode, IpLogging, KeyPrivacy, PolicyClass, PrivacyRequirement, Retention, UnmetConstraint,
};
pub use record::{CallRecord, TokenUsage};
pub use time::Timestamp;
