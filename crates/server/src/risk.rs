//! Risk control (DESIGN §4): per-key anomaly rules and the failed-authentication rule, as
//! `[risk]` configures them (`veil_config::RiskSettings` documents each rule).
//!
//! What it owns: bounded in-memory state, never persisted. Per key: the client networks
//! (IPv4 /24, IPv6 /48) seen within the networks window and the spend of the last 24 whole
//! hours. Per client address (IPv4 address, IPv6 /64): recent failed authentications and
//! any block. Maps are sharded, capped per shard, and pruned of idle entries by the worker
//! every minute; a full shard stops tracking newcomers rather than grow.
//!
//! What it promises:
//! - The `note_*` and `auth_blocked` methods are synchronous, never wait on IO and hold one
//!   shard lock for a few map operations, so they are safe on the request path and in
//!   `Drop`. With a rule `off` they return at once.
//! - A rule triggers at most once per key per hour (spend), per key per window (networks)
//!   and per address per window (failed authentications).
//! - Every decision goes over a bounded queue to [`RiskWorker`] (owned by the application's
//!   task tracker, stopped by its cancellation token, draining the queue on shutdown),
//!   which audits it with actor `risk` — `risk.warn`, `key.suspend` or `risk.block` — and
//!   logs it. Details hold rule names, ids and numbers: never content, and client networks
//!   only as `privacy.ip_logging` allows. For `suspend` it suspends the key in the store and
//!   refreshes this instance at once, so the key's next call gets `403 key_suspended`
//!   (`auth.rs`); other instances follow within their refresh interval.
//! - A full queue drops the decision with a log line: risk control never slows a call.
//! - A spend spike seen with less than a day of this process's history (after a restart)
//!   is confirmed against the ledger before it is acted on, so a restart does not make
//!   every busy key look new.
//! - A rule that fired stays quiet for the rest of its hour or window, so an admin who
//!   lifts a suspension is not overruled at once by the same evidence.

use crate::account;
use crate::client_ip;
use crate::refresh;
use crate::state::{AppState, Principal};
use serde_json::{Value, json};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use veil_config::{BlockAction, NetworksRule, RiskAction, RiskSettings, SpendSpikeRule};
use veil_domain::{ApiKey, KeyId, Money, Timestamp, UserId};
use veil_store::{AuditEntry, StoreError};

/// Who risk-control decisions are audited as.
pub const ACTOR: &str = "risk";
/// Audit actions that concern a key's risk state: what `GET /api/me/risk` shows.
pub const AUDIT_ACTIONS: &[&str] = &["risk.warn", "key.suspend", "key.unsuspend"];

/// Decisions waiting for the worker; they are rare (once per key per hour at most).
const QUEUE: usize = 1_024;
const SHARDS: usize = 16;
/// Entries per shard: 16 × 16,384 keys and as many addresses, a few MB at most.
const SHARD_CAPACITY: usize = 16_384;
/// How often a full shard may be swept on the request path (otherwise the worker does it).
const FULL_SHARD_SWEEP_MS: i64 = 1_000;
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const HOUR_MS: i64 = 3_600_000;
/// Whole hours before the current one that make a key's spend baseline.
const SPEND_HOURS: i64 = 24;

/// The risk monitor: rules, state, and the sending half of the decision queue.
pub struct RiskMonitor {
    rules: RiskSettings,
    keys: Shards<KeyId, KeyState>,
    addresses: Shards<IpAddr, AddressState>,
    decisions: mpsc::Sender<Decision>,
}

/// Applies decisions; run it with [`RiskWorker::run`].
pub struct RiskWorker {
    decisions: mpsc::Receiver<Decision>,
}

/// A monitor for `rules` and the worker that applies its decisions.
pub fn monitor(rules: RiskSettings) -> (RiskMonitor, RiskWorker) {
    monitor_with_capacity(rules, SHARD_CAPACITY)
}

fn monitor_with_capacity(rules: RiskSettings, shard_capacity: usize) -> (RiskMonitor, RiskWorker) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    let monitor = RiskMonitor {
        rules,
        keys: Shards::new(shard_capacity),
        addresses: Shards::new(shard_capacity),
        decisions: sender,
    };
    (monitor, RiskWorker { decisions: receiver })
}

impl RiskMonitor {
    /// A successful authentication of `principal` from `client_ip`: the networks rule.
    pub fn note_call(&self, principal: &Principal, client_ip: IpAddr, now: Timestamp) {
        self.note_use(principal.key.id, principal.user.id, client_ip, now);
    }

    fn note_use(&self, key: KeyId, owner: UserId, client_ip: IpAddr, now: Timestamp) {
        let rule = self.rules.networks;
        if rule.action == RiskAction::Off {
            return;
        }
        let now_ms = now.unix_millis();
        let network = client_ip::truncate(client_ip);
        let mut shard = self.keys.lock(&key);
        let idle = |s: &KeyState| s.is_idle(now_ms, &self.rules);
        let Some(state) = shard.entry(key, now_ms, idle, KeyState::default) else { return };
        state.last_seen_ms = now_ms;
        if let Some(networks) = state.networks.note(&rule, network, now_ms) {
            self.decide(Decision::Networks { action: rule.action, key, owner, at: now, networks });
        }
    }

    /// A settled call of `key` (owned by `owner`) that cost `amount` (a positive charge;
    /// zero and negative amounts are ignored): the spend-spike rule. Called by settlement,
    /// also from `Drop` paths.
    pub fn note_spend(&self, key: KeyId, owner: UserId, amount: Money, now: Timestamp) {
        let rule = self.rules.spend_spike;
        if rule.action == RiskAction::Off || amount.nanos() <= 0 {
            return;
        }
        let now_ms = now.unix_millis();
        let mut shard = self.keys.lock(&key);
        let idle = |s: &KeyState| s.is_idle(now_ms, &self.rules);
        let Some(state) = shard.entry(key, now_ms, idle, KeyState::default) else { return };
        state.last_seen_ms = now_ms;
        if let Some((spike, complete)) = state.spend.note(&rule, amount.nanos(), now_ms) {
            self.decide(Decision::Spend { action: rule.action, key, owner, at: now, spike, confirm: !complete });
        }
    }

    /// How long attempts from `client_ip` are still refused, if they are.
    pub fn auth_blocked(&self, client_ip: IpAddr, now: Timestamp) -> Option<Duration> {
        if self.rules.auth_failures.action != BlockAction::Block {
            return None;
        }
        let unit = address_unit(client_ip);
        let now_ms = now.unix_millis();
        let shard = self.addresses.lock(&unit);
        shard.entries.get(&unit).and_then(|s| remaining(s.blocked_until_ms, now_ms))
    }

    /// A failed authentication from `client_ip`. Returns how long the address is now
    /// blocked if this failure tripped the rule (and its action is `block`).
    pub fn note_auth_failure(&self, client_ip: IpAddr, now: Timestamp) -> Option<Duration> {
        let rule = self.rules.auth_failures;
        if rule.action == BlockAction::Off {
            return None;
        }
        let unit = address_unit(client_ip);
        let now_ms = now.unix_millis();
        let window_ms = millis(rule.window);
        let mut shard = self.addresses.lock(&unit);
        let idle = |s: &AddressState| s.is_idle(now_ms, window_ms);
        let state = shard.entry(unit, now_ms, idle, AddressState::default)?;
        if let Some(left) = remaining(state.blocked_until_ms, now_ms) {
            return Some(left);
        }
        while state.failures.front().is_some_and(|&t| t <= now_ms - window_ms) {
            state.failures.pop_front();
        }
        state.failures.push_back(now_ms);
        // Only whether the count passed `max` matters: keep no more than that.
        let keep = usize::try_from(rule.max).unwrap_or(usize::MAX).saturating_add(1);
        while state.failures.len() > keep {
            state.failures.pop_front();
        }
        let failures = state.failures.len();
        if u32::try_from(failures).unwrap_or(u32::MAX) <= rule.max {
            return None;
        }
        match rule.action {
            BlockAction::Block => {
                state.blocked_until_ms = now_ms.saturating_add(window_ms);
                state.failures.clear();
                let until = Timestamp::from_unix_millis(state.blocked_until_ms);
                self.decide(Decision::Address { action: rule.action, address: unit, at: now, failures, until });
                Some(rule.window)
            }
            BlockAction::Warn => {
                if state.warned_at_ms.is_none_or(|t| now_ms - t >= window_ms) {
                    state.warned_at_ms = Some(now_ms);
                    self.decide(Decision::Address {
                        action: rule.action,
                        address: unit,
                        at: now,
                        failures,
                        until: now,
                    });
                }
                None
            }
            BlockAction::Off => None,
        }
    }

    /// Drops entries idle long enough that they could no longer trigger a rule.
    pub fn prune(&self, now: Timestamp) {
        let now_ms = now.unix_millis();
        let window_ms = millis(self.rules.auth_failures.window);
        self.keys.retain(|state| !state.is_idle(now_ms, &self.rules));
        self.addresses.retain(|state| !state.is_idle(now_ms, window_ms));
    }

    fn decide(&self, decision: Decision) {
        if let Err(error) = self.decisions.try_send(decision) {
            let reason = match error {
                mpsc::error::TrySendError::Full(_) => "the decision queue is full",
                mpsc::error::TrySendError::Closed(_) => "the server is stopping",
            };
            tracing::warn!(reason, "a risk-control decision was dropped");
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (self.keys.len(), self.addresses.len())
    }
}

/// The unit the failed-authentication rule counts: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64, so counting single IPv6 addresses would limit nothing).
fn address_unit(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn remaining(until_ms: i64, now_ms: i64) -> Option<Duration> {
    (until_ms > now_ms).then(|| Duration::from_millis(u64::try_from(until_ms - now_ms).unwrap_or(0)))
}

// ---------------------------------------------------------------------------------------
// Per-key state and the key rules

#[derive(Default)]
struct KeyState {
    last_seen_ms: i64,
    networks: NetworkHistory,
    spend: SpendHistory,
}

impl KeyState {
    /// Idle past every window: its networks expired, its spend history fell out of the
    /// baseline, and no trigger suppression is still running.
    fn is_idle(&self, now_ms: i64, rules: &RiskSettings) -> bool {
        let horizon = millis(rules.networks.window).max((SPEND_HOURS + 1) * HOUR_MS);
        now_ms.saturating_sub(self.last_seen_ms) > horizon
    }
}

/// The networks one key was used from, each with when it was last seen.
#[derive(Default)]
struct NetworkHistory {
    seen: Vec<(IpAddr, i64)>,
    fired_ms: Option<i64>,
}

impl NetworkHistory {
    /// Records a use from `network`; returns the networks seen within the window when
    /// there are more than `max` and the rule has not fired within the window.
    fn note(&mut self, rule: &NetworksRule, network: IpAddr, now_ms: i64) -> Option<Vec<IpAddr>> {
        let window_ms = millis(rule.window);
        self.seen.retain(|(_, seen)| now_ms - seen < window_ms);
        match self.seen.iter_mut().find(|(n, _)| *n == network) {
            Some(entry) => entry.1 = now_ms,
            None => {
                // Only whether the count passed `max` matters: keep no more than that,
                // forgetting the network seen longest ago.
                let keep = usize::try_from(rule.max).unwrap_or(usize::MAX).saturating_add(1);
                if self.seen.len() >= keep
                    && let Some(oldest) =
                        self.seen.iter().enumerate().min_by_key(|(_, (_, seen))| *seen).map(|(i, _)| i)
                {
                    self.seen.swap_remove(oldest);
                }
                self.seen.push((network, now_ms));
            }
        }
        let over = u32::try_from(self.seen.len()).unwrap_or(u32::MAX) > rule.max;
        if !over || self.fired_ms.is_some_and(|t| now_ms - t < window_ms) {
            return None;
        }
        self.fired_ms = Some(now_ms);
        Some(self.seen.iter().map(|(n, _)| *n).collect())
    }
}

/// What one hour cost one key, against its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spike {
    /// Hours since the epoch.
    pub hour: i64,
    pub hour_spend: Money,
    pub baseline: Money,
    /// How many of the previous 24 hours had spend (0: the baseline is `min_spend`).
    pub hours_with_spend: u32,
}

/// One key's spend per whole hour: the current hour and the 24 before it.
#[derive(Default)]
struct SpendHistory {
    /// (hour since the epoch, nanos), oldest first.
    hours: VecDeque<(i64, i64)>,
    /// The first hour this process saw spend for the key: history before it is unknown.
    first_hour: Option<i64>,
    fired_hour: Option<i64>,
}

impl SpendHistory {
    /// Adds `nanos` at `now_ms`; returns a spike of the current hour (once per hour) and
    /// whether this process saw all 24 hours before it.
    fn note(&mut self, rule: &SpendSpikeRule, nanos: i64, now_ms: i64) -> Option<(Spike, bool)> {
        let hour = now_ms.div_euclid(HOUR_MS);
        let first_hour = *self.first_hour.get_or_insert(hour);
        let newest = self.hours.back().map(|(h, _)| *h);
        match newest {
            Some(newest) if newest == hour => {
                if let Some(back) = self.hours.back_mut() {
                    back.1 = back.1.saturating_add(nanos);
                }
            }
            Some(newest) if newest > hour => {
                // A call settled late, into an hour already past: it still counts toward
                // the baseline, but a past hour is not judged again.
                match self.hours.iter_mut().find(|(h, _)| *h == hour) {
                    Some(entry) => entry.1 = entry.1.saturating_add(nanos),
                    None if hour >= newest - SPEND_HOURS => {
                        let at = self.hours.iter().position(|(h, _)| *h > hour).unwrap_or(self.hours.len());
                        self.hours.insert(at, (hour, nanos));
                    }
                    None => {}
                }
                return None;
            }
            _ => self.hours.push_back((hour, nanos)),
        }
        while self.hours.front().is_some_and(|(h, _)| *h < hour - SPEND_HOURS) {
            self.hours.pop_front();
        }
        if self.fired_hour == Some(hour) {
            return None;
        }
        let spike = spike(rule, self.hours.iter().copied(), hour)?;
        self.fired_hour = Some(hour);
        Some((spike, hour - first_hour >= SPEND_HOURS))
    }
}

/// The spend-spike rule on hourly spend: the current hour triggers when it cost more than
/// `min_spend` and more than `factor` × the baseline, the mean of the previous 24 hours
/// that had any spend, never below `min_spend`. `hours` may hold any hours; others are
/// ignored.
pub fn spike(rule: &SpendSpikeRule, hours: impl Iterator<Item = (i64, i64)>, current_hour: i64) -> Option<Spike> {
    let (mut current, mut sum, mut count) = (0i128, 0i128, 0u32);
    for (hour, nanos) in hours {
        if hour == current_hour {
            current += i128::from(nanos);
        } else if hour < current_hour && hour >= current_hour - SPEND_HOURS && nanos > 0 {
            sum += i128::from(nanos);
            count += 1;
        }
    }
    let floor = i128::from(rule.min_spend.nanos());
    let baseline = if count == 0 { floor } else { (sum / i128::from(count)).max(floor) };
    let factor = i128::from(rule.factor.millionths());
    // factor is in millionths: compare current × 10^6 with factor × baseline, exactly.
    let spiked = current > floor && current.saturating_mul(1_000_000) > factor.saturating_mul(baseline);
    let money = |n: i128| Money::from_nanos(i64::try_from(n).unwrap_or(i64::MAX));
    spiked.then(|| Spike {
        hour: current_hour,
        hour_spend: money(current),
        baseline: money(baseline),
        hours_with_spend: count,
    })
}

// ---------------------------------------------------------------------------------------
// Per-address state

#[derive(Default)]
struct AddressState {
    /// Times of recent failures, oldest first; at most `max + 1`.
    failures: VecDeque<i64>,
    /// Refused until then (0: not blocked).
    blocked_until_ms: i64,
    warned_at_ms: Option<i64>,
}

impl AddressState {
    fn is_idle(&self, now_ms: i64, window_ms: i64) -> bool {
        let last = self.failures.back().copied().unwrap_or(i64::MIN);
        let warned = self.warned_at_ms.unwrap_or(i64::MIN);
        self.blocked_until_ms <= now_ms
            && now_ms.saturating_sub(last) >= window_ms
            && now_ms.saturating_sub(warned) >= window_ms
    }
}

// ---------------------------------------------------------------------------------------
// Sharded, capped maps

struct Shards<K, V> {
    hasher: RandomState,
    shards: [Mutex<Shard<K, V>>; SHARDS],
}

struct Shard<K, V> {
    entries: HashMap<K, V>,
    capacity: usize,
    last_sweep_ms: i64,
}

impl<K: Hash + Eq + Copy, V> Shards<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| {
                Mutex::new(Shard { entries: HashMap::new(), capacity, last_sweep_ms: i64::MIN })
            }),
        }
    }

    fn lock(&self, key: &K) -> MutexGuard<'_, Shard<K, V>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        // The state is counters: a panic elsewhere cannot leave it unusable.
        self.shards[index].lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn retain(&self, keep: impl Fn(&V) -> bool) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(PoisonError::into_inner).entries.retain(|_, v| keep(v));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).entries.len()).sum()
    }
}

impl<K: Hash + Eq + Copy, V> Shard<K, V> {
    /// The entry for `key`, created when there is room. A full shard is swept of idle
    /// entries at most once a second; if still full, the newcomer is not tracked.
    fn entry(&mut self, key: K, now_ms: i64, idle: impl Fn(&V) -> bool, fresh: impl FnOnce() -> V) -> Option<&mut V> {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            if now_ms.saturating_sub(self.last_sweep_ms) >= FULL_SHARD_SWEEP_MS {
                self.last_sweep_ms = now_ms;
                self.entries.retain(|_, v| !idle(v));
            }
            if self.entries.len() >= self.capacity {
                tracing::warn!("risk control is tracking as much as it may; a newcomer is not tracked");
                return None;
            }
        }
        Some(self.entries.entry(key).or_insert_with(fresh))
    }
}

// ---------------------------------------------------------------------------------------
// Decisions and the worker

#[derive(Debug)]
enum Decision {
    Spend { action: RiskAction, key: KeyId, owner: UserId, at: Timestamp, spike: Spike, confirm: bool },
    Networks { action: RiskAction, key: KeyId, owner: UserId, at: Timestamp, networks: Vec<IpAddr> },
    Address { action: BlockAction, address: IpAddr, at: Timestamp, failures: usize, until: Timestamp },
}

impl RiskWorker {
    /// Applies decisions until `stop`, pruning idle state every minute; then applies what
    /// is still queued and returns.
    pub async fn run(mut self, state: Arc<AppState>, stop: CancellationToken) {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        prune.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                decision = self.decisions.recv() => match decision {
                    Some(decision) => apply(&state, decision).await,
                    None => return,
                },
                _ = prune.tick() => state.risk.prune(Timestamp::now()),
            }
        }
        // Decisions of calls that finished before shutdown are still applied.
        self.decisions.close();
        while let Some(decision) = self.decisions.recv().await {
            apply(&state, decision).await;
        }
    }
}

async fn apply(state: &AppState, decision: Decision) {
    let rules = state.risk.rules;
    match decision {
        Decision::Spend { action, key, owner, at, spike, confirm } => {
            let spike = if confirm {
                let charged = |from, to| state.store.charges_between(owner, Some(key), from, to);
                match confirm_spike(&rules.spend_spike, spike, charged).await {
                    Ok(Some(confirmed)) => confirmed,
                    Ok(None) => {
                        tracing::debug!(key_id = %key, "a spend spike was not confirmed by the ledger");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, key_id = %key, "could not confirm a spend spike; not acted on");
                        return;
                    }
                }
            } else {
                spike
            };
            let rule = rules.spend_spike;
            let details = json!({
                "rule": "spend_spike",
                "action": action_name(action),
                "key_id": key,
                "hour_start": Timestamp::from_unix_millis(spike.hour.saturating_mul(HOUR_MS)).to_rfc3339(),
                "hour_spend": spike.hour_spend.to_decimal_string(),
                "baseline": spike.baseline.to_decimal_string(),
                "hours_with_spend": spike.hours_with_spend,
                "factor": rule.factor.to_decimal_string(),
                "min_spend": rule.min_spend.to_decimal_string(),
            });
            act_on_key(state, action, "spend_spike", key, owner, at, details).await;
        }
        Decision::Networks { action, key, owner, at, networks } => {
            let rule = rules.networks;
            let mut details = json!({
                "rule": "networks",
                "action": action_name(action),
                "key_id": key,
                "networks": networks.len(),
                "max": rule.max,
                "window_seconds": rule.window.as_secs(),
            });
            // The networks themselves only as the operator's IP logging policy allows.
            let shown: Vec<String> = networks
                .iter()
                .map(|n| client_ip::for_record(*n, state.ip_logging, &state.hasher, at))
                .filter(|s| !s.is_empty())
                .collect();
            if !shown.is_empty()
                && let Some(object) = details.as_object_mut()
            {
                object.insert("seen".into(), json!(shown));
            }
            act_on_key(state, action, "networks", key, owner, at, details).await;
        }
        Decision::Address { action, address, at, failures, until } => {
            let rule = rules.auth_failures;
            let shown = client_ip::for_record(address, state.ip_logging, &state.hasher, at);
            let target = (!shown.is_empty()).then_some(shown);
            let mut details = json!({
                "rule": "auth_failures",
                "action": match action { BlockAction::Block => "block", BlockAction::Warn => "warn", BlockAction::Off => "off" },
                "failures": failures,
                "max": rule.max,
                "window_seconds": rule.window.as_secs(),
            });
            let audit_action = if action == BlockAction::Block {
                if let Some(object) = details.as_object_mut() {
                    object.insert("blocked_until".into(), json!(until.to_rfc3339()));
                }
                tracing::warn!(failures, "risk control: too many failed authentications; address blocked");
                "risk.block"
            } else {
                tracing::warn!(failures, "risk control: too many failed authentications from one address");
                "risk.warn"
            };
            if let Err(error) =
                account::audit(state.store.as_ref(), ACTOR.to_owned(), audit_action, None, target, details).await
            {
                tracing::error!(error = %error, "could not audit a risk-control decision");
            }
        }
    }
}

fn action_name(action: RiskAction) -> &'static str {
    match action {
        RiskAction::Off => "off",
        RiskAction::Warn => "warn",
        RiskAction::Suspend => "suspend",
    }
}

async fn act_on_key(
    state: &AppState,
    action: RiskAction,
    rule: &'static str,
    key: KeyId,
    owner: UserId,
    at: Timestamp,
    details: Value,
) {
    let audit_action = match action {
        RiskAction::Off => return,
        RiskAction::Warn => {
            tracing::warn!(rule, key_id = %key, "risk control: rule triggered (warning only)");
            "risk.warn"
        }
        RiskAction::Suspend => {
            match state.store.set_key_suspended(key, Some(at)).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(rule, key_id = %key, "risk control: the key to suspend no longer exists");
                    return;
                }
                Err(error) => {
                    tracing::error!(error = %error, rule, key_id = %key, "risk control could not suspend a key");
                    return;
                }
            }
            tracing::warn!(rule, key_id = %key, "risk control: key suspended");
            state.notifier.send(crate::notify::Event::KeySuspended { user: owner, key });
            // Take effect on this instance before anything else.
            if let Err(error) = refresh::refresh_once(state).await {
                tracing::warn!(error = %error, "could not refresh after a suspension; it applies within the refresh interval");
            }
            "key.suspend"
        }
    };
    if let Err(error) = account::audit(
        state.store.as_ref(),
        ACTOR.to_owned(),
        audit_action,
        Some(owner),
        Some(key.to_string()),
        details,
    )
    .await
    {
        tracing::error!(error = %error, "could not audit a risk-control decision");
    }
}

/// Recomputes a spike from the ledger (every instance's charges), for when this process
/// has not seen the key's whole baseline period. `charged(from, to)` is what the key was
/// charged in `[from, to)`. The current hour counts whichever is larger: the ledger's, or
/// this process's (whose latest charges may not be written yet).
async fn confirm_spike<F, Fut>(rule: &SpendSpikeRule, seen: Spike, charged: F) -> Result<Option<Spike>, StoreError>
where
    F: Fn(Timestamp, Timestamp) -> Fut,
    Fut: Future<Output = Result<Money, StoreError>>,
{
    let hour_bounds = |hour: i64| {
        let start = Timestamp::from_unix_millis(hour.saturating_mul(HOUR_MS));
        (start, start.plus_millis(HOUR_MS))
    };
    let mut hours = Vec::with_capacity(usize::try_from(SPEND_HOURS + 1).unwrap_or(25));
    for hour in (seen.hour - SPEND_HOURS)..seen.hour {
        let (from, to) = hour_bounds(hour);
        hours.push((hour, charged(from, to).await?.nanos()));
    }
    let (from, to) = hour_bounds(seen.hour);
    let current = charged(from, to).await?;
    hours.push((seen.hour, current.nanos().max(seen.hour_spend.nanos())));
    Ok(spike(rule, hours.into_iter(), seen.hour))
}

// ---------------------------------------------------------------------------------------
// What the owner sees

/// `GET /api/me/risk`'s body: each key's suspension state, and the audit entries about
/// the owner's keys' risk state (warnings, suspensions, lifts), newest first.
pub fn owner_report(keys: &[ApiKey], entries: &[AuditEntry]) -> Value {
    json!({
        "keys": keys.iter().map(|k| json!({
            "id": k.id,
            "name": k.name,
            "prefix": k.prefix,
            "suspended": k.suspended_at.is_some(),
            "suspended_at": k.suspended_at.map(Timestamp::to_rfc3339),
            "revoked_at": k.revoked_at.map(Timestamp::to_rfc3339),
        })).collect::<Vec<_>>(),
        "events": entries
            .iter()
            .filter(|a| AUDIT_ACTIONS.contains(&a.action.as_str()))
            .map(|a| json!({
                "time": a.time.to_rfc3339(),
                "actor": a.actor,
                "action": a.action,
                "key_id": a.target,
                "details": a.details,
            }))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_config::{AuthFailuresRule, NetworksRule};

    const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % HOUR_MS;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    fn money(raw: &str) -> Money {
        Money::parse_decimal(raw).unwrap()
    }

    fn spend_rule(factor: &str, min: &str, action: RiskAction) -> SpendSpikeRule {
        SpendSpikeRule {
            factor: veil_domain::Multiplier::parse_decimal(factor).unwrap(),
            min_spend: money(min),
            action,
        }
    }

    fn rules() -> RiskSettings {
        RiskSettings {
            spend_spike: spend_rule("10", "1", RiskAction::Suspend),
            networks: NetworksRule { max: 3, window: Duration::from_secs(3_600), action: RiskAction::Suspend },
            auth_failures: AuthFailuresRule { max: 3, window: Duration::from_secs(60), action: BlockAction::Block },
        }
    }

    fn decisions(worker: &mut RiskWorker) -> Vec<Decision> {
        std::iter::from_fn(|| worker.decisions.try_recv().ok()).collect()
    }

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn the_baseline_is_the_mean_of_hours_with_spend_floored_at_min_spend() {
        let rule = spend_rule("10", "1", RiskAction::Warn);
        let n = |raw: &str| money(raw).nanos();
        // No history: the baseline is min_spend, so the hour must cost more than 10.
        assert_eq!(spike(&rule, [(100, n("10"))].into_iter(), 100), None);
        let first = spike(&rule, [(100, n("10.000000001"))].into_iter(), 100).unwrap();
        assert_eq!((first.baseline, first.hours_with_spend), (money("1"), 0));
        // Mean of the hours that had spend (2 and 4: 3), idle hours not counted: above 30.
        let history = [(90, n("2")), (95, n("4")), (97, 0), (99, -n("1"))];
        let with = |current: &str| history.into_iter().chain([(100, n(current))]);
        assert_eq!(spike(&rule, with("30"), 100), None);
        let found = spike(&rule, with("30.5"), 100).unwrap();
        assert_eq!(found, Spike { hour: 100, hour_spend: money("30.5"), baseline: money("3"), hours_with_spend: 2 });
        // A low mean is floored at min_spend.
        let cheap = [(99, n("0.1")), (100, n("10.5"))];
        assert_eq!(spike(&rule, cheap.into_iter(), 100).unwrap().baseline, money("1"));
        // Only the 24 hours before the current one count; later ones are ignored.
        let old = [(75, n("100")), (101, n("100")), (100, n("10.5"))];
        assert_eq!(spike(&rule, old.into_iter(), 100).unwrap().hours_with_spend, 0);
        let edge = [(76, n("100")), (100, n("10.5"))];
        assert_eq!(spike(&rule, edge.into_iter(), 100), None, "hour 76 is within the 24 before 100");
        // Fractional factors are exact.
        let rule = spend_rule("2.5", "0.5", RiskAction::Warn);
        assert_eq!(spike(&rule, [(99, n("2")), (100, n("5"))].into_iter(), 100), None);
        assert!(spike(&rule, [(99, n("2")), (100, n("5.000000001"))].into_iter(), 100).is_some());
    }

    #[test]
    fn a_spend_spike_triggers_once_per_key_per_hour() {
        let (monitor, mut worker) = monitor(rules());
        let (key, owner) = (KeyId::generate(), UserId::generate());
        for hour in 0..30 {
            monitor.note_spend(key, owner, money("1"), at(T0 + hour * HOUR_MS + 10));
        }
        assert!(decisions(&mut worker).is_empty(), "a steady 1.0 an hour is no spike");
        let hour = T0 + 30 * HOUR_MS;
        monitor.note_spend(key, owner, money("10"), at(hour + 1_000));
        assert!(decisions(&mut worker).is_empty(), "10.0 is not above 10 × 1.0");
        monitor.note_spend(key, owner, money("0.5"), at(hour + 2_000));
        let found = decisions(&mut worker);
        let [Decision::Spend { action, key: k, owner: o, spike, confirm, .. }] = found.as_slice() else {
            panic!("expected one spend decision, got {found:?}")
        };
        assert_eq!((*action, *k, *o), (RiskAction::Suspend, key, owner));
        assert_eq!((spike.hour_spend, spike.baseline, spike.hours_with_spend), (money("10.5"), money("1"), 24));
        assert!(!confirm, "30 hours seen: the in-memory baseline is complete");
        // Further spend in the same hour does not trigger again…
        monitor.note_spend(key, owner, money("50"), at(hour + 3_000));
        assert!(decisions(&mut worker).is_empty());
        // …the next hour is judged afresh against a baseline that now includes the spike
        // (the mean of 23 × 1.0 and 60.5 is 3.479…): 34 is not above 34.79…, 35 is.
        monitor.note_spend(key, owner, money("34"), at(hour + HOUR_MS));
        assert!(decisions(&mut worker).is_empty());
        monitor.note_spend(key, owner, money("1"), at(hour + HOUR_MS + 1));
        assert_eq!(decisions(&mut worker).len(), 1);
        // Other keys keep their own baselines; refunds and zero are ignored.
        let other = KeyId::generate();
        monitor.note_spend(other, owner, money("-50"), at(hour));
        monitor.note_spend(other, owner, Money::ZERO, at(hour));
        assert!(decisions(&mut worker).is_empty());
    }

    #[test]
    fn a_spike_with_less_than_a_day_of_history_asks_for_confirmation() {
        let (monitor, mut worker) = monitor(rules());
        let (key, owner) = (KeyId::generate(), UserId::generate());
        monitor.note_spend(key, owner, money("1"), at(T0));
        monitor.note_spend(key, owner, money("20"), at(T0 + 5 * HOUR_MS));
        let found = decisions(&mut worker);
        assert!(matches!(found.as_slice(), [Decision::Spend { confirm: true, .. }]), "{found:?}");
    }

    #[test]
    fn a_late_settlement_counts_toward_its_own_hour_without_judging_it() {
        let (monitor, mut worker) = monitor(rules());
        let (key, owner) = (KeyId::generate(), UserId::generate());
        monitor.note_spend(key, owner, money("1"), at(T0 + 2 * HOUR_MS));
        // An hour already past: far above any threshold, yet no decision.
        monitor.note_spend(key, owner, money("500"), at(T0 + HOUR_MS));
        assert!(decisions(&mut worker).is_empty());
        // It raised the baseline: 500 and 1 average 250.5, so 100 is no spike now.
        monitor.note_spend(key, owner, money("100"), at(T0 + 3 * HOUR_MS));
        assert!(decisions(&mut worker).is_empty());
    }

    #[tokio::test]
    async fn a_spike_is_confirmed_against_the_ledger_with_the_larger_current_hour() {
        let rule = spend_spike_rule();
        let seen = Spike { hour: 1_000, hour_spend: money("20"), baseline: money("1"), hours_with_spend: 0 };
        let asked = std::sync::Mutex::new(Vec::new());
        // The ledger: 5.0 in each of the three hours before; the current hour as given.
        let ledger = |current: &'static str| {
            let asked = &asked;
            move |from: Timestamp, to: Timestamp| {
                asked.lock().unwrap().push((from, to));
                let hour = from.unix_millis() / HOUR_MS;
                let amount = match hour {
                    997..=999 => money("5"),
                    1_000 => money(current),
                    _ => Money::ZERO,
                };
                async move { Ok::<_, StoreError>(amount) }
            }
        };
        // Other instances (or the time before a restart) show a baseline of 5: 20 is no
        // spike (threshold 50)…
        assert_eq!(confirm_spike(&rule, seen, ledger("0")).await.unwrap(), None);
        let calls = asked.lock().unwrap().clone();
        assert_eq!(calls.len(), 25, "24 hours of baseline and the current one");
        assert_eq!(calls[0].0, at(976 * HOUR_MS));
        assert_eq!(calls[24], (at(1_000 * HOUR_MS), at(1_001 * HOUR_MS)));
        // …but the ledger's current hour counts when it is larger than what this process saw.
        let confirmed = confirm_spike(&rule, seen, ledger("60")).await.unwrap().unwrap();
        assert_eq!(
            (confirmed.hour_spend, confirmed.baseline, confirmed.hours_with_spend),
            (money("60"), money("5"), 3)
        );
        // A store failure is reported, not guessed around.
        let failing = |_: Timestamp, _: Timestamp| async { Err::<Money, _>(StoreError::UnsupportedUrl) };
        assert!(confirm_spike(&rule, seen, failing).await.is_err());
    }

    fn spend_spike_rule() -> SpendSpikeRule {
        spend_rule("10", "1", RiskAction::Suspend)
    }

    #[test]
    fn networks_are_counted_by_ipv4_24_and_ipv6_48() {
        let (monitor, mut worker) = monitor(rules());
        let (key, owner) = (KeyId::generate(), UserId::generate());
        let mut t = T0;
        let mut use_from = |raw: &str| {
            t += 1_000;
            monitor.note_use(key, owner, ip(raw), at(t));
        };
        // Three networks, each from several addresses: at the limit, no decision.
        for raw in ["10.0.0.1", "10.0.0.254", "::ffff:10.0.0.9", "2001:db8:1::1", "2001:db8:1:ffff::1", "2001:db8:2::1"]
        {
            use_from(raw);
        }
        assert!(decisions(&mut worker).is_empty());
        // A fourth: the rule fires, naming the networks (never single addresses).
        use_from("10.0.1.1");
        let found = decisions(&mut worker);
        let [Decision::Networks { action: RiskAction::Suspend, networks, .. }] = found.as_slice() else {
            panic!("expected one networks decision, got {found:?}")
        };
        let mut networks: Vec<String> = networks.iter().map(ToString::to_string).collect();
        networks.sort();
        assert_eq!(networks, ["10.0.0.0", "10.0.1.0", "2001:db8:1::", "2001:db8:2::"]);
        // A fifth within the window: no second decision.
        use_from("10.0.2.1");
        assert!(decisions(&mut worker).is_empty());
    }

    #[test]
    fn networks_older_than_the_window_are_forgotten() {
        let (monitor, mut worker) = monitor(rules());
        let (key, owner) = (KeyId::generate(), UserId::generate());
        let hour = HOUR_MS;
        monitor.note_use(key, owner, ip("10.0.1.1"), at(T0));
        monitor.note_use(key, owner, ip("10.0.2.1"), at(T0 + hour / 2));
        monitor.note_use(key, owner, ip("10.0.3.1"), at(T0 + hour - 1));
        // The first network is an hour old: still three within the window.
        monitor.note_use(key, owner, ip("10.0.4.1"), at(T0 + hour));
        assert!(decisions(&mut worker).is_empty());
        // Returning to a network refreshes it; a fourth distinct one fires.
        monitor.note_use(key, owner, ip("10.0.2.7"), at(T0 + hour + 1));
        monitor.note_use(key, owner, ip("10.0.5.1"), at(T0 + hour + 2));
        assert_eq!(decisions(&mut worker).len(), 1);
        // An hour later the rule may fire again.
        for (i, net) in ["10.0.6.1", "10.0.7.1", "10.0.8.1", "10.0.9.1"].iter().enumerate() {
            monitor.note_use(key, owner, ip(net), at(T0 + 2 * hour + 10 + i as i64));
        }
        assert_eq!(decisions(&mut worker).len(), 1);
    }

    #[test]
    fn failed_authentications_block_an_address_for_one_window() {
        let (monitor, mut worker) = monitor(rules());
        let attacker = ip("203.0.113.7");
        for i in 0..3 {
            assert_eq!(monitor.note_auth_failure(attacker, at(T0 + i)), None);
        }
        assert_eq!(monitor.auth_blocked(attacker, at(T0 + 3)), None);
        assert_eq!(monitor.note_auth_failure(attacker, at(T0 + 3)), Some(Duration::from_secs(60)));
        let found = decisions(&mut worker);
        assert!(
            matches!(found.as_slice(), [Decision::Address { action: BlockAction::Block, failures: 4, .. }]),
            "{found:?}"
        );
        assert_eq!(monitor.auth_blocked(attacker, at(T0 + 30_003)), Some(Duration::from_secs(30)));
        // Neighbours are not blocked…
        assert_eq!(monitor.auth_blocked(ip("203.0.113.8"), at(T0 + 4)), None);
        // …and the block ends when the window has passed, with a fresh count.
        assert_eq!(monitor.auth_blocked(attacker, at(T0 + 60_003)), None);
        assert_eq!(monitor.note_auth_failure(attacker, at(T0 + 60_004)), None);
        assert!(decisions(&mut worker).is_empty());
    }

    #[test]
    fn the_failure_window_slides_and_ipv6_counts_by_64() {
        let (monitor, _worker) = monitor(rules());
        let slow = ip("198.51.100.1");
        // One failure every 20 s: never more than 3 within a minute.
        for i in 0..20 {
            assert_eq!(monitor.note_auth_failure(slow, at(T0 + i * 20_000)), None);
        }
        // Four addresses of one /64 are one unit; another /64 is not.
        for (i, raw) in ["2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:ffff::3"].iter().enumerate() {
            assert_eq!(monitor.note_auth_failure(ip(raw), at(T0 + i as i64)), None);
        }
        assert!(monitor.note_auth_failure(ip("2001:db8:0:1::4"), at(T0 + 3)).is_some());
        assert!(monitor.auth_blocked(ip("2001:db8:0:1:abcd::9"), at(T0 + 4)).is_some());
        assert_eq!(monitor.auth_blocked(ip("2001:db8:0:2::1"), at(T0 + 4)), None);
    }

    #[test]
    fn warn_never_blocks_and_warns_once_per_window() {
        let mut rules = rules();
        rules.auth_failures.action = BlockAction::Warn;
        let (monitor, mut worker) = monitor(rules);
        let address = ip("192.0.2.1");
        for i in 0..10 {
            assert_eq!(monitor.note_auth_failure(address, at(T0 + i)), None);
            assert_eq!(monitor.auth_blocked(address, at(T0 + i)), None);
        }
        let found = decisions(&mut worker);
        assert!(matches!(found.as_slice(), [Decision::Address { action: BlockAction::Warn, .. }]), "{found:?}");
        for i in 0..4 {
            monitor.note_auth_failure(address, at(T0 + 60_000 + i));
        }
        assert_eq!(decisions(&mut worker).len(), 1);
    }

    #[test]
    fn rules_turned_off_track_nothing() {
        let mut rules = rules();
        rules.spend_spike.action = RiskAction::Off;
        rules.networks.action = RiskAction::Off;
        rules.auth_failures.action = BlockAction::Off;
        let (monitor, mut worker) = monitor(rules);
        let (key, owner) = (KeyId::generate(), UserId::generate());
        for i in 0..10 {
            monitor.note_use(key, owner, ip(&format!("10.{i}.0.1")), at(T0));
            monitor.note_spend(key, owner, money("1000"), at(T0));
            assert_eq!(monitor.note_auth_failure(ip("10.0.0.1"), at(T0 + i)), None);
        }
        assert!(decisions(&mut worker).is_empty());
        assert_eq!(monitor.tracked(), (0, 0));
    }

    #[test]
    fn idle_state_is_pruned_and_a_full_monitor_stays_bounded() {
        let (monitor, _worker) = monitor_with_capacity(rules(), 2);
        let owner = UserId::generate();
        for i in 0..100 {
            monitor.note_use(KeyId::generate(), owner, ip("10.0.0.1"), at(T0));
            monitor.note_auth_failure(ip(&format!("10.0.{i}.1")), at(T0));
        }
        let (keys, addresses) = monitor.tracked();
        assert!(keys <= SHARDS * 2 && addresses <= SHARDS * 2, "unbounded: {keys} keys, {addresses} addresses");
        assert!(keys > 0 && addresses > 0);
        // Still within the windows: nothing is idle yet.
        monitor.prune(at(T0 + 30_000));
        assert_eq!(monitor.tracked(), (keys, addresses));
        // Addresses go once their failure window has passed; keys once the spend baseline
        // period (the longest window here) has.
        monitor.prune(at(T0 + 60_000));
        assert_eq!(monitor.tracked(), (keys, 0));
        monitor.prune(at(T0 + 25 * HOUR_MS + 1));
        assert_eq!(monitor.tracked(), (0, 0));
    }

    #[test]
    fn a_full_shard_sweeps_idle_entries_before_refusing_a_newcomer() {
        let mut shard: Shard<u32, i64> = Shard { entries: HashMap::new(), capacity: 1, last_sweep_ms: i64::MIN };
        // Entries hold when they were last active; idle after 1,000 ms.
        let idle_at = |now: i64| move |last: &i64| now - *last >= 1_000;
        *shard.entry(1, 0, idle_at(0), || 0).unwrap() = 0;
        assert!(shard.entry(2, 500, idle_at(500), || 500).is_none(), "full, nothing idle: not tracked");
        // The existing entry is still reachable when full.
        assert!(shard.entry(1, 600, idle_at(600), || 600).is_some());
        // Swept at most once a second: at 1,200 the last sweep (500) is too recent.
        assert!(shard.entry(2, 1_200, idle_at(1_200), || 1_200).is_none());
        assert_eq!(shard.entry(2, 1_600, idle_at(1_600), || 1_600).copied(), Some(1_600));
        assert_eq!(shard.entries.len(), 1);
    }
}
