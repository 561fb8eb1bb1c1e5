//! [`RedisWallets`]: veil-billing's money state in Redis, so that calls spread over several
//! instances never spend past a balance, a key's quota or a spend cap by more than their
//! holds.
//!
//! Each user has a wallet hash (balance, outstanding holds, spend in the current day and
//! month, the store revision it was created at, one field per outstanding hold and one per
//! credit applied) and each key one (charged in all, holds, day and month spend, its
//! holds); see `lua/wallet_common.lua` for the layout. Every change is one Lua script:
//! `hold_v1` checks the balance, the key's quota and both pairs of caps and reserves on
//! both wallets, all or nothing, with the refusals and numbers of veil-billing's in-memory
//! wallets; `settle_v1` and `release_v1` close a hold (idempotently: the hold's field is
//! removed once); `credit_v1` applies credits. A zero hold (a free call) touches no
//! Redis and passes even while it is away; if such a call is charged anyway, the charge is
//! applied once (`settle_v1` remembers it under a marker key).
//!
//! Creation: a wallet missing in Redis is created by `init_wallet_v1` from the store's
//! figures only if still absent, so instances creating it at once agree on one snapshot.
//! Credits (ledger rows other processes stamp with a store revision) reach every wallet
//! exactly once: a wallet applies a credit only if its revision is later than the snapshot
//! it was created from and not yet recorded in it, whichever instance sends it. An
//! instance creates wallets and reads credits under one lock, so the snapshot a wallet is
//! created from is never older than the credits that instance has already read: every
//! later credit is sent by it at least once.
//!
//! Periods: day and month starts come from the instance's clock (the hold's `now`) and
//! only ever move forward in a wallet, so a lagging instance cannot reopen a period.
//!
//! Holds of a dead instance: an instance killed mid-call never closes its holds. Each hold
//! therefore carries an expiry on the Redis clock ([`RedisWalletsOptions::hold_ttl`], an
//! hour by default); when a hold would be refused, `hold_v1` first releases the expired
//! holds in its way and looks again. A released hold leaves a marker, so if its call was
//! alive after all and settles later, the charge still lands (the balance could then
//! dip below zero by that call's cost, once: keep `hold_ttl` above the longest call).
//!
//! Closing a hold happens in `Drop` or in the synchronous `Hold::settle`, so [`RedisHold`]
//! queues it to [`WalletWorker`], which the application runs under its task tracker. The
//! queue is unbounded on purpose: losing a settle would leave its hold reserved until the
//! wallet expires, and new holds stop anyway while Redis is away. A settle that cannot
//! reach Redis is retried a few times with a doubling wait ([`RedisWalletsOptions::attempts`]),
//! then set aside and retried every second until Redis is back (at most
//! [`RedisWalletsOptions::deferred`] of them); retries are counted in
//! `veil_billing_settle_retries_total`, settles given up (past that bound, or still failing
//! at shutdown) in `veil_billing_settle_lost_total`. Retrying is safe because closing is
//! idempotent.
//!
//! Redis down: a hold fails closed ([`Refusal::Unavailable`], counted in
//! `veil_billing_unavailable_total`, one warning per outage, `veil_redis_up` at 0);
//! credits read meanwhile are re-read by the worker until they reach Redis.
//!
//! Expiry and the one remaining window: every script refreshes the wallet's time-to-live
//! ([`RedisWalletsOptions::ttl`], a week by default), so only wallets idle that long
//! expire, and they are re-created from the ledger when next used. If a wallet disappears
//! while it is in use (Redis restarted without persistence, evicted under memory pressure,
//! flushed), the calls in flight at that moment are not charged to the re-created wallet
//! (their holds are gone, so their settlements are skipped) and settlements still in the
//! call-record batch (at most `billing.durability`'s 100 ms) are not in the ledger it is
//! created from: the account can then overspend by those charges, once. The ledger stays
//! exact either way. Run Redis with `maxmemory-policy noeviction` (or `volatile-*` with
//! room) to keep that window closed.

use crate::RedisConnection;
use crate::{COMMAND_TIMEOUT, REDIS_UP};
use redis::Script;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use veil_billing::{HoldRequest, Refusal, Reserved, Wallets};
use veil_domain::time::MILLIS_PER_DAY;
use veil_domain::{KeyId, Money, Timestamp, UserId};
use veil_store::{Store, StoreError};

/// `veil_billing_unavailable_total`: holds refused because Redis was unreachable.
pub const BILLING_UNAVAILABLE: &str = "veil_billing_unavailable_total";
/// `veil_billing_settle_retries_total`: settles and releases retried after a failed attempt.
pub const BILLING_SETTLE_RETRIES: &str = "veil_billing_settle_retries_total";
/// `veil_billing_settle_lost_total`: settles and releases given up (more waiting for Redis
/// than [`RedisWalletsOptions::deferred`], or still failing at shutdown).
pub const BILLING_SETTLE_LOST: &str = "veil_billing_settle_lost_total";

const HOLD: &str = concat!(include_str!("lua/wallet_common.lua"), include_str!("lua/hold_v1.lua"));
const SETTLE: &str = concat!(include_str!("lua/wallet_common.lua"), include_str!("lua/settle_v1.lua"));
const RELEASE: &str = concat!(include_str!("lua/wallet_common.lua"), include_str!("lua/release_v1.lua"));
const CREDIT: &str = concat!(include_str!("lua/wallet_common.lua"), include_str!("lua/credit_v1.lua"));
const INIT: &str = concat!(include_str!("lua/wallet_common.lua"), include_str!("lua/init_wallet_v1.lua"));

/// How often the worker retries credits and settlements that could not reach Redis.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// After the stop, how long the worker waits for another hold to close before it returns.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// Holds that find their wallets missing create them and try again, this many times.
const HOLD_TRIES: usize = 3;

#[derive(Debug, Clone)]
pub struct RedisWalletsOptions {
    /// First part of every key, in a `{…}` hash tag: instances sharing it share wallets.
    pub key_prefix: String,
    /// How long an idle wallet stays in Redis; every hold, settle and credit refreshes it.
    pub ttl: Duration,
    /// How long one hold lasts unclosed. Past it, a hold that would stand in another's way
    /// is released (an instance that died mid-call never closes its holds); a settle that
    /// still comes later charges in full. Longer than any call should last.
    pub hold_ttl: Duration,
    /// Quick attempts at one settle or release before it is set aside and retried every
    /// second with the others that failed.
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    pub backoff: Duration,
    /// How many settles and releases may wait for Redis to come back; beyond that they
    /// are given up (and counted).
    pub deferred: usize,
}

impl Default for RedisWalletsOptions {
    fn default() -> Self {
        Self {
            key_prefix: "veil".to_owned(),
            ttl: Duration::from_secs(7 * 24 * 3600),
            hold_ttl: Duration::from_secs(3600),
            attempts: 4,
            backoff: Duration::from_millis(100),
            deferred: 100_000,
        }
    }
}

struct Shared {
    conn: RedisConnection,
    store: Arc<dyn Store>,
    options: RedisWalletsOptions,
    hold: Script,
    init: Script,
    credit: Script,
    /// The store revision up to which credits reached Redis. Held while creating a user
    /// wallet, so its snapshot is never older than the credits read (see the module docs).
    credits: tokio::sync::Mutex<i64>,
    /// Set when credits could not reach Redis: the worker reads them again.
    credits_behind: AtomicBool,
    /// Set from the first failed command until the next success: one warning per outage.
    down: AtomicBool,
}

impl Shared {
    fn user_wallet(&self, user: UserId) -> String {
        format!("{{{}}}:v1:wallet:user:{user}", self.options.key_prefix)
    }

    fn ttl_arg(&self) -> String {
        ttl_millis(&self.options).to_string()
    }

    /// Applies credits read since the watermark; on a Redis failure the watermark stays
    /// and the worker tries again (wallets skip what they already have).
    async fn apply_credits(&self) -> Result<usize, StoreError> {
        let mut watermark = self.credits.lock().await;
        let credits = self.store.ledger_credits_since(*watermark).await?;
        let Some(newest) = credits.iter().map(|credit| credit.revision).max() else { return Ok(0) };
        // One sum per user and revision: the rows of one revision are written together.
        let mut by_user: HashMap<UserId, BTreeMap<i64, i64>> = HashMap::new();
        for credit in credits.iter().filter(|credit| credit.entry.kind.moves_money()) {
            let sum = by_user.entry(credit.entry.user_id).or_default().entry(credit.revision).or_default();
            *sum = sum.saturating_add(credit.entry.amount.nanos());
        }
        for (user, revisions) in by_user {
            let mut invocation = self.credit.prepare_invoke();
            invocation.key(self.user_wallet(user)).arg(self.ttl_arg());
            for (revision, amount) in revisions {
                invocation.arg(revision).arg(amount);
            }
            let mut conn = self.conn.clone();
            if let Err(error) = timed(invocation.invoke_async::<i64>(&mut conn)).await {
                metrics::gauge!(REDIS_UP).set(0.0);
                self.credits_behind.store(true, Ordering::Release);
                if !self.down.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %error, "credits could not reach Redis yet; they are retried");
                }
                return Ok(credits.len());
            }
        }
        reachable(self);
        *watermark = (*watermark).max(newest);
        self.credits_behind.store(false, Ordering::Release);
        Ok(credits.len())
    }
}

/// Balances, key quotas and spend caps shared through Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisWallets {
    shared: Arc<Shared>,
    jobs: mpsc::UnboundedSender<Job>,
}

/// Applies queued settles and releases (and re-reads credits that did not reach Redis);
/// run it for as long as the wallets live.
pub struct WalletWorker {
    shared: Arc<Shared>,
    jobs: mpsc::UnboundedReceiver<Job>,
    settle: Script,
    release: Script,
    /// Settles and releases that failed every quick attempt, retried every second.
    deferred: VecDeque<Job>,
}

#[derive(Debug)]
enum Job {
    Settle { hold: RedisHold, charge: i64, day: i64, month: i64 },
    Release(RedisHold),
    Forget(String),
    Flush(oneshot::Sender<()>),
}

impl RedisWallets {
    /// `revision` is the store revision at start: credits up to it are in every wallet
    /// created from now on.
    pub fn new(
        conn: RedisConnection,
        store: Arc<dyn Store>,
        revision: i64,
        options: RedisWalletsOptions,
    ) -> (Self, WalletWorker) {
        let (jobs, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            conn,
            store,
            options,
            hold: Script::new(HOLD),
            init: Script::new(INIT),
            credit: Script::new(CREDIT),
            credits: tokio::sync::Mutex::new(revision),
            credits_behind: AtomicBool::new(false),
            down: AtomicBool::new(false),
        });
        let worker = WalletWorker {
            shared: Arc::clone(&shared),
            jobs: receiver,
            settle: Script::new(SETTLE),
            release: Script::new(RELEASE),
            deferred: VecDeque::new(),
        };
        (Self { shared, jobs }, worker)
    }

    /// Waits until every settle and release queued before this call has been applied.
    pub async fn settled(&self) {
        let (done, waited) = oneshot::channel();
        if self.jobs.send(Job::Flush(done)).is_ok() {
            let _ = waited.await;
        }
    }

    fn user_wallet(&self, user: UserId) -> String {
        self.shared.user_wallet(user)
    }

    fn key_wallet(&self, key: KeyId) -> String {
        format!("{{{}}}:v1:wallet:key:{key}", self.shared.options.key_prefix)
    }

    fn ttl_arg(&self) -> String {
        self.shared.ttl_arg()
    }

    async fn run_hold(&self, wallets: (&str, &str), id: &str, request: &HoldRequest, needed: Money) -> Reply {
        let cap = |value: Option<Money>| value.map_or(-1, Money::nanos);
        let mut invocation = self.shared.hold.prepare_invoke();
        invocation
            .key(wallets.0)
            .key(wallets.1)
            .arg(id)
            .arg(needed.nanos())
            .arg(request.now.day_start().unix_millis())
            .arg(request.now.month_start().unix_millis())
            .arg(cap(request.key_quota))
            .arg(cap(request.caps.daily))
            .arg(cap(request.caps.monthly))
            .arg(cap(request.key_caps.daily))
            .arg(cap(request.key_caps.monthly))
            .arg(self.ttl_arg())
            .arg(u64::try_from(self.shared.options.hold_ttl.as_millis()).unwrap_or(u64::MAX));
        let mut conn = self.shared.conn.clone();
        timed(invocation.invoke_async::<Vec<i64>>(&mut conn)).await
    }

    /// Creates the user's wallet from the ledger unless another instance just did.
    async fn create_user_wallet(&self, user: UserId, now: Timestamp) -> Result<(), Refusal> {
        let _serialised_with_credits = self.shared.credits.lock().await;
        let totals = self.shared.store.account_totals(user, now.day_start(), now.month_start()).await?;
        let fields = [
            ("bal", totals.balance.nanos()),
            ("held", 0),
            ("ds", now.day_start().unix_millis()),
            ("dsp", totals.spent_since_day.nanos()),
            ("ms", now.month_start().unix_millis()),
            ("msp", totals.spent_since_month.nanos()),
            ("base", totals.revision),
        ];
        self.create_wallet(&self.user_wallet(user), &fields).await
    }

    /// Creates the key's wallet from the ledger unless another instance just did. Keys are
    /// only charged by calls, whose holds need the wallet first.
    async fn create_key_wallet(&self, key: KeyId, now: Timestamp) -> Result<(), Refusal> {
        let totals = self.shared.store.key_totals(key, now.day_start(), now.month_start()).await?;
        let fields = [
            ("spent", totals.spent.nanos()),
            ("held", 0),
            ("ds", now.day_start().unix_millis()),
            ("dsp", totals.spent_since_day.nanos()),
            ("ms", now.month_start().unix_millis()),
            ("msp", totals.spent_since_month.nanos()),
        ];
        self.create_wallet(&self.key_wallet(key), &fields).await
    }

    async fn create_wallet(&self, wallet: &str, fields: &[(&str, i64)]) -> Result<(), Refusal> {
        let mut invocation = self.shared.init.prepare_invoke();
        invocation.key(wallet).arg(self.ttl_arg());
        for (field, value) in fields {
            invocation.arg(*field).arg(*value);
        }
        let mut conn = self.shared.conn.clone();
        match timed(invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(_) => Ok(()),
            Err(error) => Err(self.unreachable(&error)),
        }
    }

    fn reachable(&self) {
        reachable(&self.shared);
    }

    fn unreachable(&self, error: &redis::RedisError) -> Refusal {
        metrics::gauge!(REDIS_UP).set(0.0);
        metrics::counter!(BILLING_UNAVAILABLE).increment(1);
        if !self.shared.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %error, "Redis is unreachable for balances; paid calls are refused until it is back");
        }
        Refusal::Unavailable("Redis is unreachable".to_owned())
    }
}

impl std::fmt::Debug for RedisWallets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisWallets").field("options", &self.shared.options).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Wallets for RedisWallets {
    async fn hold(&self, request: &HoldRequest, needed: Money) -> Result<Box<dyn Reserved>, Refusal> {
        let user = self.user_wallet(request.user);
        let key = self.key_wallet(request.key);
        let id = uuid::Uuid::now_v7().simple().to_string();
        let hold = |written| {
            let marker = format!("{{{}}}:v1:settled:{id}", self.shared.options.key_prefix);
            Box::new(RedisHold {
                jobs: self.jobs.clone(),
                user: user.clone(),
                key: key.clone(),
                id: id.clone(),
                marker,
                written,
            })
        };
        if needed == Money::ZERO {
            // Nothing to check or reserve: free calls pass even while Redis is away.
            return Ok(hold(false));
        }
        for _ in 0..HOLD_TRIES {
            let reply = match self.run_hold((&user, &key), &id, request, needed).await {
                Ok(reply) if reply.len() == 3 => reply,
                Ok(_) => {
                    let error = redis::RedisError::from((redis::ErrorKind::Parse, "unexpected hold reply"));
                    return Err(self.unreachable(&error));
                }
                Err(error) => return Err(self.unreachable(&error)),
            };
            self.reachable();
            let figure = Money::from_nanos(reply[1]);
            return Err(match reply[0] {
                0 => return Ok(hold(true)),
                1 => {
                    if reply[1] & 1 != 0 {
                        self.create_user_wallet(request.user, request.now).await?;
                    }
                    if reply[1] & 2 != 0 {
                        self.create_key_wallet(request.key, request.now).await?;
                    }
                    continue;
                }
                2 => Refusal::Balance { available: figure, needed },
                3 => Refusal::KeyQuota { remaining: figure, needed },
                4 | 6 => {
                    Refusal::DailyCap { resets_at: Timestamp::from_unix_millis(reply[1]).plus_millis(MILLIS_PER_DAY) }
                }
                5 | 7 => Refusal::MonthlyCap { resets_at: request.now.next_month_start() },
                _ => {
                    let error = redis::RedisError::from((redis::ErrorKind::Parse, "unexpected hold reply"));
                    self.unreachable(&error)
                }
            });
        }
        Err(Refusal::Unavailable("the wallet could not be created in Redis".to_owned()))
    }

    async fn apply_credits(&self) -> Result<usize, StoreError> {
        self.shared.apply_credits().await
    }

    async fn balance(&self, user: UserId) -> Option<(Money, Money)> {
        let mut conn = self.shared.conn.clone();
        let wallet = self.user_wallet(user);
        let command = redis::cmd("HMGET").arg(&wallet).arg("bal").arg("held").to_owned();
        let (balance, held): (Option<i64>, Option<i64>) = timed(command.query_async(&mut conn)).await.ok()?;
        Some((Money::from_nanos(balance?), Money::from_nanos(held.unwrap_or(0))))
    }

    fn forget_user(&self, user: UserId) {
        queue(&self.jobs, Job::Forget(self.user_wallet(user)));
    }
}

/// One call's hold in Redis, closed through the worker.
#[derive(Debug)]
pub struct RedisHold {
    jobs: mpsc::UnboundedSender<Job>,
    user: String,
    key: String,
    id: String,
    /// Marks a zero hold's charge as applied (see `settle_v1.lua`).
    marker: String,
    /// Whether `hold_v1` wrote the hold (a zero hold is never written).
    written: bool,
}

impl Reserved for RedisHold {
    fn settle(self: Box<Self>, charge: Money, now: Timestamp) {
        let charge = charge.nanos().max(0);
        if !self.written && charge == 0 {
            return;
        }
        let jobs = self.jobs.clone();
        let day = now.day_start().unix_millis();
        let month = now.month_start().unix_millis();
        queue(&jobs, Job::Settle { hold: *self, charge, day, month });
    }

    fn release(self: Box<Self>) {
        if self.written {
            let jobs = self.jobs.clone();
            queue(&jobs, Job::Release(*self));
        }
    }
}

fn queue(jobs: &mpsc::UnboundedSender<Job>, job: Job) {
    if jobs.send(job).is_err() {
        // Only after the worker stopped, i.e. at shutdown.
        metrics::counter!(BILLING_SETTLE_LOST).increment(1);
    }
}

impl WalletWorker {
    /// Applies jobs in order until every sender is gone. After `stop` fires it goes on
    /// closing the holds still being dropped (one attempt each, no waits between
    /// attempts) until the senders are gone or the queue stays empty for [`DRAIN_IDLE`],
    /// then tries what was set aside once more.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut every_second = tokio::time::interval(RETRY_EVERY);
        every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let attempts = self.shared.options.attempts.max(1);
        loop {
            tokio::select! {
                job = self.jobs.recv() => match job {
                    Some(job) => self.apply(job, attempts, &stop).await,
                    None => break,
                },
                _ = every_second.tick() => {
                    self.retry_credits().await;
                    self.retry_deferred().await;
                }
                () = stop.cancelled() => break,
            }
        }
        while let Ok(Some(job)) = tokio::time::timeout(DRAIN_IDLE, self.jobs.recv()).await {
            self.apply(job, 1, &stop).await;
        }
        self.retry_deferred().await;
        if !self.deferred.is_empty() {
            let lost = self.deferred.len();
            metrics::counter!(BILLING_SETTLE_LOST).increment(u64::try_from(lost).unwrap_or(u64::MAX));
            tracing::warn!(lost, "settlements could not reach Redis before the stop and were given up");
        }
    }

    async fn retry_credits(&self) {
        if !self.shared.credits_behind.load(Ordering::Acquire) {
            return;
        }
        if let Err(error) = self.shared.apply_credits().await {
            tracing::warn!(error = %error, "could not read credits to retry");
        }
    }

    /// Tries the set-aside jobs in order until one fails (Redis is still away).
    async fn retry_deferred(&mut self) {
        while let Some(job) = self.deferred.pop_front() {
            if self.try_apply(&job).await.is_err() {
                metrics::counter!(BILLING_SETTLE_RETRIES).increment(1);
                self.deferred.push_front(job);
                return;
            }
            reachable(&self.shared);
        }
    }

    async fn apply(&mut self, job: Job, attempts: u32, stop: &CancellationToken) {
        if let Job::Flush(done) = job {
            let _ = done.send(());
            return;
        }
        let mut wait = self.shared.options.backoff;
        for attempt in 1..=attempts {
            match self.try_apply(&job).await {
                Ok(()) => {
                    reachable(&self.shared);
                    return;
                }
                Err(error) if attempt == attempts => {
                    metrics::gauge!(REDIS_UP).set(0.0);
                    if stop.is_cancelled() || self.deferred.len() >= self.shared.options.deferred {
                        metrics::counter!(BILLING_SETTLE_LOST).increment(1);
                        tracing::warn!(error = %error, "a settlement could not reach Redis and was given up");
                    } else {
                        tracing::debug!(error = %error, "a settlement could not reach Redis; retried every second");
                        self.deferred.push_back(job);
                    }
                    return;
                }
                Err(_) => {
                    metrics::counter!(BILLING_SETTLE_RETRIES).increment(1);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        // Shutting down: one last attempt rather than the whole schedule.
                        () = stop.cancelled() => {}
                    }
                    wait = wait.saturating_mul(2);
                }
            }
        }
    }

    async fn try_apply(&mut self, job: &Job) -> redis::RedisResult<()> {
        let ttl = ttl_millis(&self.shared.options);
        let mut conn = self.shared.conn.clone();
        match job {
            Job::Settle { hold, charge, day, month } => {
                let mut invocation = self.settle.prepare_invoke();
                invocation.key(&hold.user).key(&hold.key).key(&hold.marker);
                invocation.arg(&hold.id).arg(*charge).arg(*day).arg(*month).arg(ttl).arg(u8::from(hold.written));
                timed(invocation.invoke_async::<i64>(&mut conn)).await.map(drop)
            }
            Job::Release(hold) => {
                let mut invocation = self.release.prepare_invoke();
                invocation.key(&hold.user).key(&hold.key).arg(&hold.id).arg(ttl);
                timed(invocation.invoke_async::<i64>(&mut conn)).await.map(drop)
            }
            Job::Forget(wallet) => timed(redis::cmd("DEL").arg(wallet).query_async::<i64>(&mut conn)).await.map(drop),
            Job::Flush(_) => Ok(()),
        }
    }
}

fn reachable(shared: &Shared) {
    metrics::gauge!(REDIS_UP).set(1.0);
    if shared.down.swap(false, Ordering::AcqRel) {
        tracing::info!("Redis is reachable again: balances are shared");
    }
}

fn ttl_millis(options: &RedisWalletsOptions) -> u64 {
    u64::try_from(options.ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

type Reply = redis::RedisResult<Vec<i64>>;

async fn timed<T>(command: impl Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, command)
        .await
        .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "timed out"))))
}
