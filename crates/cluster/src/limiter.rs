//! [`RedisLimiter`]: the `veil-limits` contract over Redis, for several instances.
//!
//! Admission is one Lua script (`lua/admit_v1.lua`) that checks every demand and takes
//! from all of them or none, on the Redis server's clock. Buckets use the in-memory
//! limiter's model (usage in integer units that drain at the limit's rate), in
//! microseconds instead of nanoseconds. Concurrency leases are members of a sorted set
//! scored by their expiry ([`RedisLimiterOptions::lease_ttl`]), so the leases of an
//! instance that died age out; the worker pushes back the expiry of its live calls' leases
//! every third of the TTL (`lua/refresh_v1.lua`), so a long call keeps counting.
//!
//! Reconciling a token reservation and releasing leases happen in `Drop` and must not
//! block, so [`Held`] queues them on a bounded channel that [`LimiterWorker`] drains; the
//! application runs the worker under its task tracker. A full queue or a failed command
//! loses that one correction (counted in `veil_limits_dropped_total`): a lost release
//! ages out with the lease, a lost give-back only makes the limit stricter for a minute.
//!
//! When Redis cannot be reached, [`FailurePolicy`] decides: refuse with
//! [`Refusal::unavailable`] or admit unchecked. Either way one warning is logged per outage
//! and `veil_redis_up` drops to 0; the connection manager reconnects by itself.

use crate::RedisConnection;
use crate::{COMMAND_TIMEOUT, LIMITS_DROPPED, LIMITS_FAIL_CLOSED, LIMITS_FAIL_OPEN, REDIS_UP};
use redis::Script;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use veil_limits::verdict::{Blocker, Level, Tightest, Wait};
use veil_limits::{Admission, CONCURRENCY_RETRY, Demand, Limiter, ManualClock, Refusal, Reservation, Resource, Scope};

/// A [`ManualClock`] standing in for the Redis server's clock, so tests never sleep.
pub type TestClock = ManualClock;

/// What a call gets when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Refuse the call (503): no limit is ever exceeded, at the cost of availability.
    #[default]
    Closed,
    /// Admit the call without limits: availability first, limits unenforced meanwhile.
    Open,
}

#[derive(Debug, Clone)]
pub struct RedisLimiterOptions {
    /// First part of every key, in a `{…}` hash tag: instances sharing it share limits.
    pub key_prefix: String,
    /// How long a concurrency lease counts if its release never arrives.
    pub lease_ttl: Duration,
    pub on_failure: FailurePolicy,
    /// Reconciles and releases waiting for the worker before new ones are dropped.
    pub queue: usize,
}

impl Default for RedisLimiterOptions {
    fn default() -> Self {
        Self {
            key_prefix: "veil".to_owned(),
            lease_ttl: Duration::from_secs(600),
            on_failure: FailurePolicy::Closed,
            queue: 4096,
        }
    }
}

const ADMIT: &str = concat!(include_str!("lua/common.lua"), include_str!("lua/admit_v1.lua"));
const RECONCILE: &str = concat!(include_str!("lua/common.lua"), include_str!("lua/reconcile_v1.lua"));
const REFRESH: &str = concat!(include_str!("lua/common.lua"), include_str!("lua/refresh_v1.lua"));
/// Numbers the admit script returns per demand.
const ROW: usize = 15;
/// Where a [`TestClock`] starts, in microseconds: far enough from zero to look like a
/// real clock to the scripts.
const TEST_EPOCH_US: u64 = 1_000_000_000_000_000;

enum Job {
    Reconcile {
        keys: Vec<String>,
        tpms: Vec<u32>,
        used_more: bool,
        difference: u64,
        now: String,
    },
    /// Leases just taken, to refresh until released.
    Track(Vec<(String, String)>),
    Release(Vec<(String, String)>),
    Refresh,
    Flush(oneshot::Sender<()>),
}

struct Inner {
    conn: RedisConnection,
    admit: Script,
    options: RedisLimiterOptions,
    clock: Option<TestClock>,
    jobs: mpsc::Sender<Job>,
    /// Set from the first failed command until the next success: one warning per outage.
    down: AtomicBool,
}

/// Rate limits shared through Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

/// Applies queued reconciles and lease releases; run it for as long as the limiter lives.
pub struct LimiterWorker {
    conn: RedisConnection,
    reconcile: Script,
    refresh: Script,
    jobs: mpsc::Receiver<Job>,
    lease_ttl: Duration,
    clock: Option<TestClock>,
    /// This instance's leases in use: member → sorted set.
    live: HashMap<String, String>,
}

impl RedisLimiter {
    pub fn new(conn: RedisConnection, options: RedisLimiterOptions) -> (Self, LimiterWorker) {
        Self::build(conn, options, None)
    }

    /// For tests: scripts read `clock` instead of the Redis server's time.
    pub fn with_test_clock(
        conn: RedisConnection,
        options: RedisLimiterOptions,
        clock: TestClock,
    ) -> (Self, LimiterWorker) {
        Self::build(conn, options, Some(clock))
    }

    fn build(conn: RedisConnection, options: RedisLimiterOptions, clock: Option<TestClock>) -> (Self, LimiterWorker) {
        let (jobs, receiver) = mpsc::channel(options.queue.max(1));
        let worker = LimiterWorker {
            conn: conn.clone(),
            reconcile: Script::new(RECONCILE),
            refresh: Script::new(REFRESH),
            jobs: receiver,
            lease_ttl: options.lease_ttl,
            clock: clock.clone(),
            live: HashMap::new(),
        };
        let inner = Inner { conn, admit: Script::new(ADMIT), options, clock, jobs, down: AtomicBool::new(false) };
        (Self { inner: Arc::new(inner) }, worker)
    }

    /// Refreshes this instance's live leases now, as the worker does every third of the TTL.
    pub async fn refresh_leases(&self) {
        let _ = self.inner.jobs.send(Job::Refresh).await;
    }

    /// Waits until every reconcile and release queued before this call has been applied.
    pub async fn settled(&self) {
        let (done, waited) = oneshot::channel();
        if self.inner.jobs.send(Job::Flush(done)).await.is_ok() {
            let _ = waited.await;
        }
    }

    fn keys(&self, scope: &Scope) -> (String, String) {
        let id = match scope {
            Scope::Key(id) => id.to_string(),
            Scope::User(id) => id.to_string(),
            Scope::Channel(name) => name.to_string(),
        };
        let (prefix, kind) = (&self.inner.options.key_prefix, scope.kind());
        (format!("{{{prefix}}}:v1:bucket:{kind}:{id}"), format!("{{{prefix}}}:v1:leases:{kind}:{id}"))
    }

    async fn run_admit(&self, active: &[&Demand], tokens: u64, lease: &str) -> redis::RedisResult<Vec<i64>> {
        let limit = |value: Option<u32>| value.map_or(-1, i64::from);
        let mut invocation = self.inner.admit.prepare_invoke();
        invocation
            .arg(now_arg(self.inner.clock.as_ref()))
            .arg(micros(self.inner.options.lease_ttl))
            .arg(lease)
            .arg(tokens);
        for demand in active {
            let (bucket, leases) = self.keys(&demand.scope);
            invocation.key(bucket).key(leases);
            invocation
                .arg(limit(demand.limits.rpm))
                .arg(limit(demand.limits.tpm))
                .arg(limit(demand.limits.max_concurrent));
        }
        let mut conn = self.inner.conn.clone();
        match tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async(&mut conn)).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))),
        }
    }

    fn reachable(&self) {
        metrics::gauge!(REDIS_UP).set(1.0);
        if self.inner.down.swap(false, Ordering::AcqRel) {
            tracing::info!("Redis is reachable again: rate limits are enforced");
        }
    }

    fn unreachable(&self, error: &redis::RedisError) -> Result<Admission, Refusal> {
        metrics::gauge!(REDIS_UP).set(0.0);
        let policy = self.inner.options.on_failure;
        if !self.inner.down.swap(true, Ordering::AcqRel) {
            let consequence = match policy {
                FailurePolicy::Closed => "calls are refused until it is back",
                FailurePolicy::Open => "calls are admitted without rate limits until it is back",
            };
            tracing::warn!(error = %error, "Redis is unreachable for rate limits; {consequence}");
        }
        match policy {
            FailurePolicy::Closed => {
                metrics::counter!(LIMITS_FAIL_CLOSED).increment(1);
                Err(Refusal::unavailable())
            }
            FailurePolicy::Open => {
                metrics::counter!(LIMITS_FAIL_OPEN).increment(1);
                Ok(Admission::unlimited())
            }
        }
    }
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn now_arg(clock: Option<&TestClock>) -> String {
    clock.map_or_else(String::new, |clock| {
        let elapsed = u64::try_from(clock.elapsed().as_micros()).unwrap_or(u64::MAX);
        TEST_EPOCH_US.saturating_add(elapsed).to_string()
    })
}

#[async_trait::async_trait]
impl Limiter for RedisLimiter {
    async fn admit(&self, demands: &[Demand], tokens: u64) -> Result<Admission, Refusal> {
        let active: Vec<&Demand> = demands.iter().filter(|d| !d.limits.is_unlimited()).collect();
        if active.is_empty() {
            return Ok(Admission::unlimited());
        }
        let lease = uuid::Uuid::now_v7().to_string();
        let reply = match self.run_admit(&active, tokens, &lease).await {
            Ok(reply) if reply.len() == 1 + ROW * active.len() => reply,
            Ok(_) => {
                let error = redis::RedisError::from((redis::ErrorKind::Parse, "unexpected admit reply"));
                return self.unreachable(&error);
            }
            Err(error) => return self.unreachable(&error),
        };
        self.reachable();
        let admitted = reply[0] == 1;
        let mut before = Tightest::default();
        let mut after = Tightest::default();
        let mut blocker: Option<Blocker> = None;
        let mut leases = Vec::new();
        let mut reserved = Vec::new();
        for (index, (demand, row)) in active.iter().zip(reply[1..].chunks_exact(ROW)).enumerate() {
            let kind = demand.scope.kind();
            let (bucket, lease_key) = self.keys(&demand.scope);
            if demand.limits.rpm.is_some() {
                Tightest::offer(&mut before.requests, level_from_row(&row[3..6]));
                Tightest::offer(&mut after.requests, level_from_row(&row[9..12]));
                Blocker::note(&mut blocker, bucket_wait(row[0]), kind, Resource::Requests);
            }
            if let Some(tpm) = demand.limits.tpm {
                Tightest::offer(&mut before.tokens, level_from_row(&row[6..9]));
                Tightest::offer(&mut after.tokens, level_from_row(&row[12..15]));
                Blocker::note(&mut blocker, bucket_wait(row[1]), kind, Resource::Tokens);
                reserved.push((bucket, tpm));
            }
            if demand.limits.max_concurrent.is_some() {
                let wait = match row[2] {
                    0 => Wait::Now,
                    -1 => Wait::Never,
                    _ => Wait::After(CONCURRENCY_RETRY),
                };
                Blocker::note(&mut blocker, wait, kind, Resource::Concurrency);
                // The script names a lease `{id}:{demand number}`, counting from one.
                leases.push((lease_key, format!("{lease}:{}", index + 1)));
            }
        }
        match blocker {
            Some(blocker) if !admitted => Err(blocker.refusal(before.headers())),
            // Admitted (or a reply that contradicts itself, which the script never sends).
            _ => {
                let held = Held {
                    jobs: self.inner.jobs.clone(),
                    clock: self.inner.clock.clone(),
                    leases,
                    reserved,
                    estimate: tokens,
                };
                if !held.leases.is_empty() {
                    held.queue(Job::Track(held.leases.clone()));
                }
                let reservation: Option<Box<dyn Reservation>> =
                    if held.leases.is_empty() && held.reserved.is_empty() { None } else { Some(Box::new(held)) };
                Ok(Admission::new(after.headers(), reservation))
            }
        }
    }
}

fn bucket_wait(code: i64) -> Wait {
    match code {
        -1 => Wait::Never,
        code if code > 0 => Wait::After(Duration::from_micros(code.unsigned_abs())),
        _ => Wait::Now,
    }
}

/// What an admitted call holds in Redis, returned through the worker.
struct Held {
    jobs: mpsc::Sender<Job>,
    clock: Option<TestClock>,
    /// (sorted set, member) of each lease taken.
    leases: Vec<(String, String)>,
    /// Each bucket the estimate was reserved against, with the `tpm` admitted under.
    reserved: Vec<(String, u32)>,
    estimate: u64,
}

impl Held {
    fn queue(&self, job: Job) {
        if self.jobs.try_send(job).is_err() {
            metrics::counter!(LIMITS_DROPPED).increment(1);
        }
    }
}

impl Reservation for Held {
    fn reconcile(&mut self, actual_tokens: u64) {
        if self.reserved.is_empty() || actual_tokens == self.estimate {
            return;
        }
        self.queue(Job::Reconcile {
            keys: self.reserved.iter().map(|(key, _)| key.clone()).collect(),
            tpms: self.reserved.iter().map(|(_, tpm)| *tpm).collect(),
            used_more: actual_tokens > self.estimate,
            difference: actual_tokens.abs_diff(self.estimate),
            now: now_arg(self.clock.as_ref()),
        });
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.leases.is_empty() {
            let leases = std::mem::take(&mut self.leases);
            self.queue(Job::Release(leases));
        }
    }
}

impl LimiterWorker {
    /// Applies jobs in order until every sender is gone, or until `stop` fires; then
    /// applies what is already queued and returns.
    pub async fn run(mut self, stop: CancellationToken) {
        let period = (self.lease_ttl / 3).max(Duration::from_secs(1));
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                job = self.jobs.recv() => match job {
                    Some(job) => self.apply(job).await,
                    None => return,
                },
                _ = refresh.tick() => self.apply(Job::Refresh).await,
                () = stop.cancelled() => break,
            }
        }
        while let Ok(job) = self.jobs.try_recv() {
            self.apply(job).await;
        }
    }

    async fn apply(&mut self, job: Job) {
        let result = match job {
            Job::Flush(done) => {
                let _ = done.send(());
                return;
            }
            Job::Reconcile { keys, tpms, used_more, difference, now } => {
                let mut invocation = self.reconcile.prepare_invoke();
                invocation.arg(now).arg(if used_more { 1 } else { 0 }).arg(difference);
                for (key, tpm) in keys.iter().zip(&tpms) {
                    invocation.key(key).arg(*tpm);
                }
                timed(invocation.invoke_async::<i64>(&mut self.conn)).await.map(drop)
            }
            Job::Track(leases) => {
                self.live.extend(leases.into_iter().map(|(key, member)| (member, key)));
                return;
            }
            Job::Refresh => {
                if self.live.is_empty() {
                    return;
                }
                let mut invocation = self.refresh.prepare_invoke();
                invocation.arg(now_arg(self.clock.as_ref())).arg(micros(self.lease_ttl));
                for (member, key) in &self.live {
                    invocation.key(key).arg(member);
                }
                timed(invocation.invoke_async::<i64>(&mut self.conn)).await.map(drop)
            }
            Job::Release(leases) => {
                for (_, member) in &leases {
                    self.live.remove(member);
                }
                let mut pipe = redis::pipe();
                for (key, member) in &leases {
                    pipe.zrem(key, member).ignore();
                }
                timed(pipe.query_async::<()>(&mut self.conn)).await
            }
        };
        if let Err(error) = result {
            metrics::counter!(LIMITS_DROPPED).increment(1);
            tracing::debug!(error = %error, "a rate-limit correction did not reach Redis");
        }
    }
}

async fn timed<T>(command: impl Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, command)
        .await
        .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))))
}

// Headers and refusals come from `veil_limits::verdict`, so they are chosen exactly as the
// in-memory limiter chooses them.

/// A scope's level from the script's `limit, remaining, reset µs`.
fn level_from_row(row: &[i64]) -> Level {
    let count = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    let reset = row.get(2).copied().unwrap_or(0);
    Level {
        limit: count(row.first().copied().unwrap_or(0)),
        remaining: count(row.get(1).copied().unwrap_or(0)),
        reset: Duration::from_micros(reset.max(0).unsigned_abs()),
    }
}
