//! Leadership for background jobs: one instance at a time holds a named lease in Redis.
//!
//! The lease is the key `{prefix}:v1:lease:{name}`, holding the holder's random owner id
//! with a time-to-live. [`Leadership::run`] tries to take it (`SET NX PX`) and, while it
//! holds it, renews it every third of the time-to-live with a compare-and-renew script, so
//! only the holder can extend it; on stop it releases it with a compare-and-delete script.
//!
//! Promises:
//! - At most one instance believes it leads at any moment, as long as a renewal is not
//!   delayed past the time-to-live: an instance that cannot renew (Redis unreachable, a
//!   renewal refused) stops leading at once, before its lease can have expired.
//! - If the holder dies, its lease expires and another instance takes over within
//!   the time-to-live plus one renewal beat.
//! - The key holds an opaque owner id, nothing else.

use crate::COMMAND_TIMEOUT;
use crate::RedisConnection;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Extends the lease only if `ARGV[1]` still holds it.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Deletes the lease only if `ARGV[1]` still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// One named lease, contended by every instance sharing the Redis and key prefix.
pub struct Leadership {
    conn: RedisConnection,
    key: String,
    owner: String,
    ttl: Duration,
    leading: watch::Sender<bool>,
}

impl Leadership {
    pub fn new(conn: RedisConnection, key_prefix: &str, name: &str, ttl: Duration) -> Self {
        let (leading, _) = watch::channel(false);
        Self {
            conn,
            key: format!("{key_prefix}:v1:lease:{name}"),
            owner: uuid::Uuid::now_v7().simple().to_string(),
            ttl,
            leading,
        }
    }

    /// Whether this instance holds the lease now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Contends for the lease until `stop`, then releases it if held.
    pub async fn run(&self, stop: CancellationToken) {
        let beat = self.ttl / 3;
        loop {
            let held = if self.is_leader() { self.renew().await } else { self.acquire().await };
            if held != self.is_leader() {
                tracing::info!(lease = %self.key, leading = held, "background-job leadership changed");
            }
            self.leading.send_replace(held);
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(beat) => {}
            }
        }
        if self.leading.send_replace(false) {
            self.release().await;
        }
    }

    async fn acquire(&self) -> bool {
        let mut conn = self.conn.clone();
        let mut set = redis::cmd("SET");
        set.arg(&self.key).arg(&self.owner).arg("NX").arg("PX").arg(millis(self.ttl));
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, set.query_async::<Option<String>>(&mut conn)).await;
        matches!(reply, Ok(Ok(Some(_))))
    }

    async fn renew(&self) -> bool {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(RENEW);
        let mut invocation = script.key(&self.key);
        invocation.arg(&self.owner).arg(millis(self.ttl));
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async::<i64>(&mut conn)).await;
        match reply {
            Ok(Ok(1)) => true,
            Ok(Ok(_)) => false,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "could not renew the background-job lease; stepping down");
                false
            }
            Err(_) => {
                tracing::warn!("renewing the background-job lease timed out; stepping down");
                false
            }
        }
    }

    async fn release(&self) {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(RELEASE);
        let mut invocation = script.key(&self.key);
        invocation.arg(&self.owner);
        if !matches!(tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async::<i64>(&mut conn)).await, Ok(Ok(_)))
        {
            tracing::warn!("could not release the background-job lease; it expires by itself");
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
