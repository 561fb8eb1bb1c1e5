//! Channel health shared between instances: cool-downs, recoveries and the half-open trial.
//!
//! Each instance keeps its own health board and decides routing from it without asking
//! Redis; this module only spreads what changes the decision. When an instance cools a
//! channel down it writes `{prefix}:v1:health:cool:{channel}` (the failed-trial count,
//! expiring when the cool-down ends) and publishes the news on `{prefix}:health`; a
//! recovery deletes the key and is published the same way. Every instance listens there
//! and, after each (re)connection, reads the cool-down keys again, because news published
//! while it was away is lost. The half-open trial after a cool-down is a lease,
//! `{prefix}:v1:health:trial:{channel}` (`SET NX PX`, refused while the cool-down key
//! still exists), so exactly one instance sends it.
//!
//! Promises:
//! - Only channel names, counts and durations reach Redis, never call content.
//! - Every key expires by itself: a cool-down key when the cool-down ends, a trial lease
//!   after its time-to-live (a crashed trial-holder blocks the others no longer than that).
//! - An instance ignores its own news (it already applied it), so news does not echo.
//! - Redis being away never blocks or fails a call: publishing is best effort, and a trial
//!   lease that cannot be asked for is [`TrialLease::Unknown`], which the caller treats as
//!   granted (its local board already allows just one trial per instance). The first
//!   failure is logged, the recovery too, and each failure counts in
//!   `veil_health_shared_failures_total`.

use crate::RedisConnection;
use crate::subscriber::{self, Interruption};
use crate::{COMMAND_TIMEOUT, ClusterError, REDIS_UP};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `veil_health_shared_failures_total`: shared-health commands that could not reach Redis.
pub const HEALTH_SHARED_FAILURES: &str = "veil_health_shared_failures_total";

/// How long asking for a trial lease may take: the call waits for the answer, so this is
/// kept well below a command's usual timeout.
const TRIAL_TIMEOUT: Duration = Duration::from_millis(250);
/// The news format's version: instances of another one ignore each other's news.
const NEWS_VERSION: &str = "v1";

/// Takes the trial lease `KEYS[1]` for `ARGV[1]` (for `ARGV[2]` ms) unless the cool-down
/// `KEYS[2]` is still running. `{1}`: taken; `{0, lease ms left}`: another instance holds
/// it; `{2, cool-down ms left, failed trials}`: still cooling down (a trial finished and
/// failed just before, and its news has not arrived yet).
const TAKE_TRIAL: &str = r"
local cooling = redis.call('PTTL', KEYS[2])
if cooling > 0 then
  return {2, cooling, tonumber(redis.call('GET', KEYS[2])) or 0}
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1}
end
return {0, redis.call('PTTL', KEYS[1])}";

/// Deletes the trial lease only if `ARGV[1]` still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// What another instance learnt about a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthNews {
    /// The channel cools down for `remaining` from now, after `failed_trials` failed trials.
    CooledDown { channel: String, remaining: Duration, failed_trials: u32 },
    /// A trial succeeded: the channel takes calls again.
    Recovered { channel: String },
}

/// The answer to a trial-lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialLease {
    /// This instance sends the trial.
    Granted,
    /// Another instance is sending it; its lease lasts `lease_left` more at most.
    Elsewhere { lease_left: Duration },
    /// The channel is cooling down again (a trial failed a moment ago).
    Cooling { remaining: Duration, failed_trials: u32 },
    /// Redis did not answer: the caller decides alone.
    Unknown,
}

/// One instance's link to the shared health state.
pub struct SharedHealth {
    client: redis::Client,
    conn: RedisConnection,
    prefix: String,
    /// Random id of this instance: tells its own news from others', and owns its leases.
    instance: String,
    /// Whether the last command failed (so an outage is logged once, not per call).
    failing: AtomicBool,
}

impl SharedHealth {
    pub async fn connect(url: &str, key_prefix: &str) -> Result<Self, ClusterError> {
        let conn = crate::connect(url).await?;
        let client = redis::Client::open(crate::pubsub_url(url)?).map_err(|e| ClusterError::Url(e.to_string()))?;
        Ok(Self {
            client,
            conn,
            prefix: key_prefix.to_owned(),
            instance: uuid::Uuid::now_v7().simple().to_string(),
            failing: AtomicBool::new(false),
        })
    }

    /// `{prefix}:health`, where news is published.
    pub fn news_channel(&self) -> String {
        format!("{}:health", self.prefix)
    }

    fn cool_key(&self, channel: &str) -> String {
        format!("{{{}}}:v1:health:cool:{channel}", self.prefix)
    }

    fn cool_pattern(&self) -> String {
        format!("{{{}}}:v1:health:cool:*", self.prefix)
    }

    fn trial_key(&self, channel: &str) -> String {
        format!("{{{}}}:v1:health:trial:{channel}", self.prefix)
    }

    /// Tells every instance that `channel` cools down for `remaining`.
    pub async fn cooled_down(&self, channel: &str, remaining: Duration, failed_trials: u32) {
        let ttl = millis(remaining).max(1);
        let news = format!("{NEWS_VERSION} {} cool {failed_trials} {ttl} {channel}", self.instance);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.cool_key(channel))
            .arg(failed_trials)
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("PUBLISH")
            .arg(self.news_channel())
            .arg(news)
            .ignore();
        self.run(pipe, "announce a cool-down").await;
    }

    /// Tells every instance that `channel` recovered.
    pub async fn recovered(&self, channel: &str) {
        let news = format!("{NEWS_VERSION} {} recovered {channel}", self.instance);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.cool_key(channel))
            .ignore()
            .cmd("PUBLISH")
            .arg(self.news_channel())
            .arg(news)
            .ignore();
        self.run(pipe, "announce a recovery").await;
    }

    async fn run(&self, pipe: redis::Pipeline, what: &str) {
        let mut conn = self.conn.clone();
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
        self.note(matches!(reply, Ok(Ok(()))), what);
    }

    /// Asks to send `channel`'s half-open trial; the lease lasts `ttl` unless released.
    pub async fn take_trial(&self, channel: &str, ttl: Duration) -> TrialLease {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(TAKE_TRIAL);
        let mut invocation = script.key(self.trial_key(channel));
        invocation.key(self.cool_key(channel)).arg(&self.instance).arg(millis(ttl).max(1));
        let reply = tokio::time::timeout(TRIAL_TIMEOUT, invocation.invoke_async::<Vec<i64>>(&mut conn)).await;
        let Ok(Ok(reply)) = reply else {
            self.note(false, "ask for a trial lease");
            return TrialLease::Unknown;
        };
        self.note(true, "ask for a trial lease");
        let left = |ms: Option<&i64>| Duration::from_millis(ms.and_then(|ms| u64::try_from(*ms).ok()).unwrap_or(0));
        match reply.first() {
            Some(1) => TrialLease::Granted,
            Some(2) => TrialLease::Cooling {
                remaining: left(reply.get(1)),
                failed_trials: reply.get(2).and_then(|n| u32::try_from(*n).ok()).unwrap_or(0),
            },
            _ => TrialLease::Elsewhere { lease_left: left(reply.get(1)) },
        }
    }

    /// Gives `channel`'s trial lease back if this instance holds it.
    pub async fn release_trial(&self, channel: &str) {
        let mut conn = self.conn.clone();
        let script = redis::Script::new(RELEASE);
        let mut invocation = script.key(self.trial_key(channel));
        invocation.arg(&self.instance);
        let reply = tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async::<i64>(&mut conn)).await;
        self.note(matches!(reply, Ok(Ok(_))), "release a trial lease");
    }

    /// Every channel cooling down now, as the keys in Redis say.
    pub async fn current(&self) -> redis::RedisResult<Vec<HealthNews>> {
        let mut conn = self.conn.clone();
        let key_start = self.cool_key("");
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.cool_pattern())
                .arg("COUNT")
                .arg(200)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut news = Vec::with_capacity(keys.len());
        for key in keys {
            let (trials, ttl): (Option<u32>, i64) =
                redis::pipe().cmd("GET").arg(&key).cmd("PTTL").arg(&key).query_async(&mut conn).await?;
            let (Some(failed_trials), Ok(left @ 1..)) = (trials, u64::try_from(ttl)) else { continue };
            let Some(channel) = key.strip_prefix(&key_start) else { continue };
            news.push(HealthNews::CooledDown {
                channel: channel.to_owned(),
                remaining: Duration::from_millis(left),
                failed_trials,
            });
        }
        Ok(news)
    }

    /// Follows other instances' news until `stop`, calling `on_news` with each; after every
    /// (re)connection, first with every cool-down Redis holds.
    pub async fn follow<F, Fut>(&self, on_news: F, stop: CancellationToken)
    where
        F: Fn(HealthNews) -> Fut,
        Fut: Future<Output = ()>,
    {
        // Subscribed first, read second: a cool-down published in between is both read and
        // heard, never missed.
        let on_subscribed = || async {
            match self.current().await {
                Ok(current) => {
                    self.note(true, "read the shared cool-downs");
                    for news in current {
                        on_news(news).await;
                    }
                }
                Err(_) => self.note(false, "read the shared cool-downs"),
            }
        };
        let on_message = |message: redis::Msg| {
            let news = match message.get_payload::<String>().ok().as_deref().map(parse_news) {
                Some(Some((sender, _))) if sender == self.instance => None,
                Some(Some((_, news))) => Some(news),
                Some(None) => {
                    tracing::warn!("ignored malformed channel-health news");
                    None
                }
                None => None,
            };
            let handled = news.map(&on_news);
            async move {
                if let Some(handled) = handled {
                    handled.await;
                }
            }
        };
        let on_interruption = |interruption| match interruption {
            Interruption::Lost => self.note(false, "follow channel-health news"),
            Interruption::Refused(_) => self.note(false, "subscribe to channel-health news"),
        };
        let channel = self.news_channel();
        subscriber::follow(&self.client, &channel, on_subscribed, on_message, on_interruption, stop).await;
    }

    /// Logs the first failure after a success (and the first success after a failure),
    /// and counts every failure.
    fn note(&self, succeeded: bool, what: &str) {
        let was_failing = self.failing.swap(!succeeded, Ordering::AcqRel);
        if succeeded {
            if was_failing {
                metrics::gauge!(REDIS_UP).set(1.0);
                tracing::info!("channel health is shared through Redis again");
            }
            return;
        }
        metrics::counter!(HEALTH_SHARED_FAILURES).increment(1);
        metrics::gauge!(REDIS_UP).set(0.0);
        if !was_failing {
            tracing::warn!(
                action = what,
                "cannot reach Redis for channel health; each instance decides alone until it is back"
            );
        }
    }
}

/// `(sender, news)` from a published message, if well formed and of this version.
fn parse_news(payload: &str) -> Option<(&str, HealthNews)> {
    let mut words = payload.split(' ');
    if words.next()? != NEWS_VERSION {
        return None;
    }
    let sender = words.next()?;
    let news = match words.next()? {
        "cool" => {
            let failed_trials = words.next()?.parse().ok()?;
            let remaining = Duration::from_millis(words.next()?.parse().ok()?);
            HealthNews::CooledDown { channel: words.next()?.to_owned(), remaining, failed_trials }
        }
        "recovered" => HealthNews::Recovered { channel: words.next()?.to_owned() },
        _ => return None,
    };
    words.next().is_none().then_some((sender, news))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_round_trips_and_junk_is_refused() {
        assert_eq!(
            parse_news("v1 abc cool 2 1500 primary-1"),
            Some((
                "abc",
                HealthNews::CooledDown {
                    channel: "primary-1".into(),
                    remaining: Duration::from_millis(1500),
                    failed_trials: 2
                }
            ))
        );
        assert_eq!(parse_news("v1 abc recovered a.b"), Some(("abc", HealthNews::Recovered { channel: "a.b".into() })));
        for junk in ["v2 abc recovered a", "v1 abc cool x 1 a", "v1 abc recovered", "v1 abc recovered a b", ""] {
            assert_eq!(parse_news(junk), None, "{junk}");
        }
    }
}
