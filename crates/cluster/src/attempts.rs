//! Failed console sign-ins counted in Redis, so the brute-force throttle holds across every
//! instance behind a balancer (an attacker spreading guesses over instances gets no more).
//!
//! Each throttled subject (an account, a client address) is a sorted set
//! `{prefix}:v1:signin:{subject}` of failure times on the Redis server's clock; a check
//! drops entries older than the window and refuses once the set holds the limit, with the
//! time until the oldest ages out. Subjects arrive already hashed by the caller, so no
//! e-mail address or IP address reaches Redis. Keys expire with their window.

use crate::{COMMAND_TIMEOUT, RedisConnection};
use std::time::Duration;

/// KEYS: the subjects' sets. ARGV[1]: window (ms); ARGV[2..]: each subject's limit.
/// Returns 0 when every subject is under its limit, else the milliseconds until the
/// furthest-out refusal ends.
const CHECK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= tonumber(ARGV[i + 1]) then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local left = tonumber(oldest[2]) + window - now
    if left > wait then wait = left end
  end
end
return wait";

/// KEYS: the subjects' sets. ARGV[1]: window (ms); ARGV[2]: a unique member.
const FAIL: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, ARGV[1])
end
return 1";

/// Failed sign-ins shared through Redis.
#[derive(Clone)]
pub struct SharedSignInAttempts {
    conn: RedisConnection,
    prefix: String,
    window: Duration,
}

impl std::fmt::Debug for SharedSignInAttempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSignInAttempts").field("window", &self.window).finish_non_exhaustive()
    }
}

/// Redis did not answer in time or refused the command; the caller falls back to its own count.
#[derive(Debug, thiserror::Error)]
#[error("the shared sign-in throttle is unavailable")]
pub struct AttemptsUnavailable;

impl SharedSignInAttempts {
    pub fn new(conn: RedisConnection, key_prefix: &str, window: Duration) -> Self {
        Self { conn, prefix: key_prefix.to_owned(), window }
    }

    fn key(&self, subject: &str) -> String {
        format!("{{{}}}:v1:signin:{subject}", self.prefix)
    }

    /// `Ok(Some(wait))` while one of the subjects has used up its failures; each subject
    /// comes with its limit.
    pub async fn check(&self, subjects: &[(&str, usize)]) -> Result<Option<Duration>, AttemptsUnavailable> {
        let script = redis::Script::new(CHECK);
        let mut invocation = script.prepare_invoke();
        for (subject, _) in subjects {
            invocation.key(self.key(subject));
        }
        invocation.arg(millis(self.window));
        for (_, limit) in subjects {
            invocation.arg(*limit);
        }
        let mut conn = self.conn.clone();
        match tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async::<u64>(&mut conn)).await {
            Ok(Ok(0)) => Ok(None),
            Ok(Ok(wait)) => Ok(Some(Duration::from_millis(wait).max(Duration::from_secs(1)))),
            _ => Err(AttemptsUnavailable),
        }
    }

    /// Counts a failure against each subject.
    pub async fn fail(&self, subjects: &[&str]) -> Result<(), AttemptsUnavailable> {
        let script = redis::Script::new(FAIL);
        let mut invocation = script.prepare_invoke();
        for subject in subjects {
            invocation.key(self.key(subject));
        }
        invocation.arg(millis(self.window)).arg(uuid::Uuid::now_v7().simple().to_string());
        let mut conn = self.conn.clone();
        match tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(AttemptsUnavailable),
        }
    }

    /// Forgets a subject's failures (an account after a successful sign-in).
    pub async fn clear(&self, subject: &str) -> Result<(), AttemptsUnavailable> {
        let mut conn = self.conn.clone();
        let mut del = redis::cmd("DEL");
        del.arg(self.key(subject));
        match tokio::time::timeout(COMMAND_TIMEOUT, del.query_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(AttemptsUnavailable),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
