//! The single-process limiter.
//!
//! Each resource is a bucket that records *usage* rather than what is left, in units small
//! enough that one request (or token) is [`UNIT`] of them and a limit of `L` per minute
//! drains exactly `L` per nanosecond. Everything stays an exact integer (no
//! `60 s / rpm` rounding), and usage survives a change of limit. For requests this is GCRA
//! with the TAT kept as the backlog it implies (`tat − now = used / rpm`): a call is
//! admitted when `used + UNIT ≤ rpm · UNIT`, i.e. when `tat + 60 s / rpm − now ≤ 60 s`.

use crate::verdict::{Blocker, Level, Tightest, Wait};
use crate::{Admission, CONCURRENCY_RETRY, Clock, Demand, Limiter, Refusal, Reservation, Resource, Scope, SystemClock};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Nanoseconds per minute: the units one request or token occupies in a bucket.
const UNIT: u128 = 60_000_000_000;

fn units(count: u64) -> u128 {
    u128::from(count).saturating_mul(UNIT)
}

/// How long a bucket draining `rate` units per nanosecond takes to shed `units`.
fn drain_time(units: u128, rate: u32) -> Duration {
    if units == 0 {
        return Duration::ZERO;
    }
    let ns = match rate {
        0 => u128::MAX,
        rate => units.div_ceil(u128::from(rate)),
    };
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    used: u128,
    /// The limit last applied; usage drains at this rate until the next call brings a new one.
    rate: u32,
    /// Nanoseconds since the limiter's epoch when `used` was last brought up to date.
    at: u64,
}

impl Bucket {
    fn settle(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.at);
        self.used = self.used.saturating_sub(u128::from(elapsed).saturating_mul(u128::from(self.rate)));
        // A clock read just before another thread's update can be slightly behind it.
        self.at = self.at.max(now);
    }

    /// Raising a limit keeps the absolute usage, so the new room is there at once.
    /// Lowering it keeps the time until the bucket is full again (usage scales down with
    /// the limit), so an operator's cut never makes a scope wait longer than it already
    /// would have.
    fn set_limit(&mut self, limit: u32) {
        if limit < self.rate {
            let (old, new) = (u128::from(self.rate), u128::from(limit));
            // used · new / old, split so that a deep token debt cannot overflow.
            self.used = (self.used / old).saturating_mul(new).saturating_add(self.used % old * new / old);
        }
        self.rate = limit;
    }

    fn capacity(&self) -> u128 {
        u128::from(self.rate).saturating_mul(UNIT)
    }

    /// How long until `cost` units fit. Zero cost still needs the bucket out of debt.
    fn wait(&self, cost: u128) -> Wait {
        let capacity = self.capacity();
        if self.rate == 0 || cost > capacity {
            return Wait::Never;
        }
        match self.used.saturating_add(cost).checked_sub(capacity) {
            None | Some(0) => Wait::Now,
            Some(excess) => Wait::After(drain_time(excess, self.rate)),
        }
    }

    fn take(&mut self, cost: u128) {
        self.used = self.used.saturating_add(cost);
    }

    fn give_back(&mut self, cost: u128) {
        self.used = self.used.saturating_sub(cost);
    }

    fn level(&self) -> Level {
        let left = self.capacity().saturating_sub(self.used) / UNIT;
        Level {
            limit: self.rate,
            remaining: u32::try_from(left).unwrap_or(u32::MAX),
            reset: drain_time(self.used, self.rate),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    requests: Bucket,
    tokens: Bucket,
    in_flight: u32,
}

impl Entry {
    fn settle(&mut self, now: u64) {
        self.requests.settle(now);
        self.tokens.settle(now);
    }

    /// Indistinguishable from a missing entry, so dropping it changes no decision.
    fn is_resting(&self) -> bool {
        self.requests.used == 0 && self.tokens.used == 0 && self.in_flight == 0
    }
}

struct Shared {
    clock: Box<dyn Clock>,
    epoch: Instant,
    entries: Mutex<HashMap<Scope, Entry>>,
}

impl Shared {
    /// Read outside the lock, to keep the critical section to arithmetic.
    fn now(&self) -> u64 {
        let since = self.clock.now().saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Scope, Entry>> {
        // Nothing panics while the lock is held, so a poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Rate limits for one process, in a mutex-guarded map from scope to state.
///
/// Only scopes with state away from rest (usage not yet drained, or calls in flight) need
/// an entry; [`prune`](Self::prune) drops the others. The server calls it periodically
/// (about once a minute) so memory follows the set of recently active scopes.
#[derive(Clone)]
pub struct InMemoryLimiter {
    shared: Arc<Shared>,
}

impl InMemoryLimiter {
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    pub fn with_clock(clock: impl Clock) -> Self {
        let epoch = clock.now();
        Self { shared: Arc::new(Shared { clock: Box::new(clock), epoch, entries: Mutex::new(HashMap::new()) }) }
    }

    /// Drops every entry that is back at rest: buckets drained and no calls in flight.
    pub fn prune(&self) {
        let now = self.shared.now();
        self.shared.lock().retain(|_, entry| {
            entry.settle(now);
            !entry.is_resting()
        });
    }

    /// How many scopes currently hold state.
    pub fn len(&self) -> usize {
        self.shared.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole decision, synchronous: checks every demand against a staged copy of its
    /// entry and writes the copies back only if all pass.
    fn admit_now(&self, demands: &[Demand], tokens: u64) -> Result<Admission, Refusal> {
        let active = || demands.iter().filter(|d| !d.limits.is_unlimited());
        if active().next().is_none() {
            return Ok(Admission::unlimited());
        }
        let token_cost = units(tokens);
        let now = self.shared.now();

        // `before` answers a refusal (nothing was taken), `after` an admission.
        let mut before = Tightest::default();
        let mut after = Tightest::default();
        let mut blocker = None;
        let mut leases: Vec<&Scope> = Vec::new();
        let mut reserved: Vec<(&Scope, u32)> = Vec::new();
        {
            let mut entries = self.shared.lock();
            // Staging by scope (not by demand) makes a scope named twice pay twice.
            let mut staged: Vec<(&Scope, Entry)> = Vec::with_capacity(demands.len());
            for demand in active() {
                let index = match staged.iter().position(|(scope, _)| **scope == demand.scope) {
                    Some(index) => index,
                    None => {
                        let mut entry = entries.get(&demand.scope).copied().unwrap_or_default();
                        entry.settle(now);
                        staged.push((&demand.scope, entry));
                        staged.len() - 1
                    }
                };
                let entry = &mut staged[index].1;
                let kind = demand.scope.kind();

                if let Some(rpm) = demand.limits.rpm {
                    let bucket = &mut entry.requests;
                    bucket.set_limit(rpm);
                    Tightest::offer(&mut before.requests, bucket.level());
                    match bucket.wait(UNIT) {
                        Wait::Now => bucket.take(UNIT),
                        wait => Blocker::note(&mut blocker, wait, kind, Resource::Requests),
                    }
                    Tightest::offer(&mut after.requests, bucket.level());
                }
                if let Some(tpm) = demand.limits.tpm {
                    let bucket = &mut entry.tokens;
                    bucket.set_limit(tpm);
                    Tightest::offer(&mut before.tokens, bucket.level());
                    match bucket.wait(token_cost) {
                        Wait::Now => {
                            bucket.take(token_cost);
                            reserved.push((&demand.scope, tpm));
                        }
                        wait => Blocker::note(&mut blocker, wait, kind, Resource::Tokens),
                    }
                    Tightest::offer(&mut after.tokens, bucket.level());
                }
                if let Some(max) = demand.limits.max_concurrent {
                    match max {
                        0 => Blocker::note(&mut blocker, Wait::Never, kind, Resource::Concurrency),
                        max if entry.in_flight < max => {
                            entry.in_flight = entry.in_flight.saturating_add(1);
                            leases.push(&demand.scope);
                        }
                        _ => Blocker::note(&mut blocker, Wait::After(CONCURRENCY_RETRY), kind, Resource::Concurrency),
                    }
                }
            }
            if blocker.is_none() {
                for (scope, entry) in staged {
                    match entries.get_mut(scope) {
                        Some(slot) => *slot = entry,
                        None => {
                            entries.insert(scope.clone(), entry);
                        }
                    }
                }
            }
        }
        if let Some(blocker) = blocker {
            return Err(blocker.refusal(before.headers()));
        }

        let reservation: Option<Box<dyn Reservation>> = if leases.is_empty() && reserved.is_empty() {
            None
        } else {
            Some(Box::new(Held {
                shared: Arc::clone(&self.shared),
                leases: leases.into_iter().cloned().collect(),
                reserved: reserved.into_iter().map(|(scope, tpm)| (scope.clone(), tpm)).collect(),
                estimate: tokens,
            }))
        };
        Ok(Admission::new(after.headers(), reservation))
    }
}

impl Default for InMemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for InMemoryLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryLimiter").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Limiter for InMemoryLimiter {
    async fn admit(&self, demands: &[Demand], tokens: u64) -> Result<Admission, Refusal> {
        self.admit_now(demands, tokens)
    }

    fn prune(&self) {
        InMemoryLimiter::prune(self);
    }
}

/// What an admitted call holds: its leases and token reservations, and the shared state to
/// return them to without borrowing the limiter.
struct Held {
    shared: Arc<Shared>,
    leases: Vec<Scope>,
    /// Each scope the estimate was reserved against, with the `tpm` it was admitted under.
    reserved: Vec<(Scope, u32)>,
    estimate: u64,
}

impl Reservation for Held {
    fn reconcile(&mut self, actual_tokens: u64) {
        if self.reserved.is_empty() || actual_tokens == self.estimate {
            return;
        }
        let used_more = actual_tokens > self.estimate;
        let difference = units(actual_tokens.abs_diff(self.estimate));
        let now = self.shared.now();
        let mut entries = self.shared.lock();
        for (scope, tpm) in &self.reserved {
            if !entries.contains_key(scope) {
                // Pruned: the reservation has drained away, so there is nothing to give back.
                if !used_more {
                    continue;
                }
                entries.insert(scope.clone(), Entry::default());
            }
            let Some(entry) = entries.get_mut(scope) else { continue };
            let bucket = &mut entry.tokens;
            bucket.settle(now);
            if bucket.rate == 0 {
                // A fresh entry has no limit yet; debt drains at the one the call ran under.
                bucket.rate = *tpm;
            }
            if used_more {
                bucket.take(difference);
            } else {
                bucket.give_back(difference);
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.leases.is_empty() {
            return;
        }
        let mut entries = self.shared.lock();
        for scope in &self.leases {
            // Entries with calls in flight are never pruned, so the entry is there.
            if let Some(entry) = entries.get_mut(scope) {
                entry.in_flight = entry.in_flight.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
