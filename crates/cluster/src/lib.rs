//! State shared by several Veil instances, kept in Redis.
//!
//! This crate owns the Redis connection and everything Veil stores there. For now that is
//! [`RedisLimiter`]: the rate limits of `veil-limits` (requests and tokens per minute,
//! concurrent calls) shared by every instance that points at the same Redis and key prefix,
//! with the same contract as the in-memory limiter (see the `veil-limits` crate docs), and
//! [`ChangeFeed`]: store changes announced to every instance over pub/sub, and
//! [`Leadership`]: the lease that lets one instance at a time run background jobs, and
//! [`RedisWallets`]: balances, holds, key quotas and spend caps (veil-billing's money
//! state), so parallel calls spread over the instances never overspend, and
//! [`SharedHealth`]: channel cool-downs, recoveries and the one half-open trial, shared so
//! no instance keeps calling a channel another found failing, and
//! [`SharedSignInAttempts`]: failed console sign-ins, so the brute-force throttle counts
//! guesses spread over every instance.
//!
//! Promises:
//! - Every decision is one atomic Lua script on the Redis server's clock, so instances
//!   with skewed clocks agree and a key's limit is not multiplied by the instance count.
//! - Every key it writes expires once its state is back at rest (drained buckets, leases
//!   past their time-to-live), so idle scopes cost nothing and a crashed instance's
//!   concurrency leases age out. Wallets expire too, but as they hold money only once
//!   idle for their whole time-to-live (a week by default).
//! - Wallet day and month boundaries come from the instance's clock but only move forward,
//!   so a lagging instance never reopens a spend period.
//! - Only identifiers and amounts (key and user ids, channel names, nano-unit figures)
//!   reach Redis, never call content.
//! - Keys and scripts carry a version (`…:v1:…`, `admit_v1.lua`), so instances of two
//!   releases can share a Redis during a rolling deploy as long as the version matches.
//!
//! A standalone Redis or a Redis Cluster (see [`connect`] for the URLs): all keys share one
//! `{prefix}` hash tag, so every script's keys sit in one slot on one node.

mod attempts;
mod changes;
mod connection;
mod health;
mod lease;
mod limiter;
mod subscriber;
mod wallets;

pub use attempts::{AttemptsUnavailable, SharedSignInAttempts};
pub use changes::{ChangeFeed, channel_name};
pub use connection::{RedisConnection, cluster_nodes, connect, pubsub_url};
pub use health::{HEALTH_SHARED_FAILURES, HealthNews, SharedHealth, TrialLease};
pub use lease::Leadership;

pub use limiter::{FailurePolicy, LimiterWorker, RedisLimiter, RedisLimiterOptions, TestClock};
pub use wallets::{
    BILLING_SETTLE_LOST, BILLING_SETTLE_RETRIES, BILLING_UNAVAILABLE, RedisHold, RedisWallets, RedisWalletsOptions,
    WalletWorker,
};

use std::time::Duration;

/// `veil_redis_up`: 1 while the last Redis command succeeded, 0 after one failed.
pub const REDIS_UP: &str = "veil_redis_up";
/// `veil_limits_fail_open_total`: calls admitted unchecked because Redis was unreachable.
pub const LIMITS_FAIL_OPEN: &str = "veil_limits_fail_open_total";
/// `veil_limits_fail_closed_total`: calls refused because Redis was unreachable.
pub const LIMITS_FAIL_CLOSED: &str = "veil_limits_fail_closed_total";
/// `veil_limits_dropped_total`: reconciles or lease releases lost (queue full or Redis
/// down); a lost release ages out with the lease's time-to-live.
pub const LIMITS_DROPPED: &str = "veil_limits_dropped_total";

/// How long one command may take before Redis counts as unreachable for that call.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the Redis URL is not valid: {0}")]
    Url(String),
    #[error("cannot connect to Redis at {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// Registers the help texts of this crate's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_gauge!(REDIS_UP, "1 while Redis answers this instance, 0 after a failed command");
    metrics::describe_counter!(LIMITS_FAIL_OPEN, "Calls admitted without limits because Redis was unreachable");
    metrics::describe_counter!(LIMITS_FAIL_CLOSED, "Calls refused because Redis was unreachable");
    metrics::describe_counter!(LIMITS_DROPPED, "Token reconciles or lease releases that could not reach Redis");
    metrics::describe_counter!(BILLING_UNAVAILABLE, "Holds refused because Redis was unreachable for balances");
    metrics::describe_counter!(BILLING_SETTLE_RETRIES, "Settles and releases of holds retried after Redis failed");
    metrics::describe_counter!(
        BILLING_SETTLE_LOST,
        "Settles and releases of holds given up while Redis was unreachable"
    );
    metrics::describe_counter!(HEALTH_SHARED_FAILURES, "Shared channel-health commands that could not reach Redis");
}
