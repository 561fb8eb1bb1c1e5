//! State shared by several Veil instances, kept in Redis.
//!
//! This crate owns the Redis connection and everything Veil stores there. For now that is
//! [`RedisLimiter`]: the rate limits of `veil-limits` (requests and tokens per minute,
//! concurrent calls) shared by every instance that points at the same Redis and key prefix,
//! with the same contract as the in-memory limiter (see the `veil-limits` crate docs), and
//! [`ChangeFeed`]: store changes announced to every instance over pub/sub, and
//! [`Leadership`]: the lease that lets one instance at a time run background jobs.
//!
//! Promises:
//! - Every decision is one atomic Lua script on the Redis server's clock, so instances
//!   with skewed clocks agree and a key's limit is not multiplied by the instance count.
//! - Every key it writes expires once its state is back at rest (drained buckets, leases
//!   past their time-to-live), so idle scopes cost nothing and a crashed instance's
//!   concurrency leases age out.
//! - Keys and scripts carry a version (`…:v1:…`, `admit_v1.lua`), so instances of two
//!   releases can share a Redis during a rolling deploy as long as the version matches.
//! - Only identifiers (key and user ids, channel names) reach Redis, never call content.
//!
//! Standalone Redis only for now: a cluster URL is refused at start. All keys share one
//! `{prefix}` hash tag so that one call's keys would sit in one slot under a cluster.

mod changes;
mod lease;
mod limiter;

pub use changes::{ChangeFeed, channel_name};
pub use lease::Leadership;

pub use limiter::{FailurePolicy, LimiterWorker, RedisLimiter, RedisLimiterOptions, TestClock};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
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
    #[error("Redis Cluster is not supported yet; point [redis] url at a standalone server")]
    ClusterUnsupported,
    #[error("cannot connect to Redis at {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// Registers the help texts of this crate's metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_gauge!(REDIS_UP, "1 while Redis answers this instance, 0 after a failed command");
    metrics::describe_counter!(LIMITS_FAIL_OPEN, "Calls admitted without limits because Redis was unreachable");
    metrics::describe_counter!(LIMITS_FAIL_CLOSED, "Calls refused because Redis was unreachable");
    metrics::describe_counter!(LIMITS_DROPPED, "Token reconciles or lease releases that could not reach Redis");
}

/// Connects to a standalone Redis. The manager reconnects by itself after a failure, so
/// an outage ends without a restart; each command fails fast while Redis is away.
pub async fn connect(url: &str) -> Result<ConnectionManager, ClusterError> {
    if url.starts_with("redis+cluster://") || url.starts_with("rediss+cluster://") || url.contains(',') {
        return Err(ClusterError::ClusterUnsupported);
    }
    let client = redis::Client::open(url).map_err(|e| ClusterError::Url(e.to_string()))?;
    let address = client.get_connection_info().addr().to_string();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    let manager = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|e| ClusterError::Connect { address, reason: e.to_string() })?;
    metrics::gauge!(REDIS_UP).set(1.0);
    Ok(manager)
}
