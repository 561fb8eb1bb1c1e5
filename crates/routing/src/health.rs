//! Per-channel health: what routing knows about how each upstream channel is doing.
//!
//! Pure state, no IO and no clock of its own: every method takes `now`, so the state
//! machine is tested deterministically. The server keeps one [`Board`] per instance and
//! feeds it each upstream attempt's [`Outcome`].
//!
//! Per channel it keeps a sliding window of outcomes (time buckets, so memory is fixed
//! whatever the traffic), a small ring of recent latencies (p50/p95), and a state:
//!
//! ```text
//!            error rate ≥ threshold            cool-down over
//! Healthy ─────(≥ min_calls in window)────▶ CoolingDown{until} ───────────▶ HalfOpen
//!    ▲                                          ▲                            │  one trial
//!    │                                          └───── trial failed ─────────┤  at a time
//!    └──────────────────────────── trial succeeded ──────────────────────────┘
//! ```
//!
//! Each failed trial doubles the next cool-down, up to `max_cooldown`; a success resets it.
//! A 429 with `retry-after` cools the channel for exactly that long (capped), and then it
//! is healthy again without a trial: a rate limit says nothing about the channel's health.
//! A channel with scheduled probes gets its trial from a probe, never from a live call.
//! A channel whose credential was rejected is marked disabled here until the store (which
//! is where disabling is durable) takes over.
//!
//! Several instances share what matters through the server (Redis): a cool-down or a
//! recovery another instance saw is applied with [`Board::cooled_elsewhere`] and
//! [`Board::recovered_elsewhere`], so every board refuses the channel, and recovers it, at
//! the same time; which instance sends the half-open trial is settled outside (a lease).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use veil_domain::{ChannelName, HealthState};

/// Time buckets per window: outcomes are forgotten a tenth of a window at a time.
const BUCKETS: u32 = 10;
/// Latency samples kept per channel.
const LATENCY_SAMPLES: usize = 64;
/// The longest exponent applied to the cool-down (2^16 × cool-down already exceeds any cap).
const MAX_DOUBLINGS: u32 = 16;

/// How health is judged (`[routing]` in the config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// Share of failed calls within `window` that trips the channel (0–1].
    pub error_rate_threshold: f64,
    /// Calls within `window` before the error rate counts.
    pub min_calls: u32,
    pub window: Duration,
    /// The first cool-down; doubled by each failed half-open trial.
    pub cooldown: Duration,
    pub max_cooldown: Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            error_rate_threshold: 0.5,
            min_calls: 5,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(600),
        }
    }
}

/// What one upstream attempt (or probe) showed about the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered (its response started) after `latency`.
    Success { latency: Duration },
    /// The upstream answered with a client error (bad request, unknown model): it works,
    /// so the call counts as a good one, without a latency sample.
    Answered,
    /// Could not connect, timed out, server error, broken answer.
    Failure,
    /// 429. Counts as a failure; with `retry_after` the channel also cools that long.
    RateLimited { retry_after: Option<Duration> },
    /// No verdict (the caller went away first): only frees a half-open trial.
    Abandoned,
}

/// Why a channel is cooling down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Its error rate passed the threshold, or a half-open trial failed.
    Errors,
    /// It answered 429 with `retry-after`.
    RateLimited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Healthy,
    CoolingDown {
        until: Instant,
        cause: Cause,
    },
    /// The cool-down is over; `trial` is when the one call allowed through started.
    HalfOpen {
        trial: Option<Instant>,
    },
}

/// Whether a call may go to a channel now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Open,
    /// The half-open trial: the only call let through until its outcome is recorded.
    Trial,
    /// Not now; `until` is when it may take calls again, if known.
    Refused {
        until: Option<Instant>,
    },
}

impl Admission {
    pub fn is_allowed(self) -> bool {
        !matches!(self, Self::Refused { .. })
    }
}

/// A change worth telling operators about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// Tripped by its error rate or a failed trial (rate-limit pauses are not reported).
    /// `failed_trials` is the exponent of this cool-down, for other instances to follow.
    CooledDown { until: Instant, error_rate: f64, failed_trials: u32 },
    /// A half-open trial (a live call or a probe) succeeded.
    Recovered,
}

/// A channel's health at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthView {
    pub state: HealthState,
    pub cooling_until: Option<Instant>,
    /// Failed share of the calls in the window; 0 without calls.
    pub error_rate: f64,
    pub calls: u32,
    pub failures: u32,
    pub latency_p50: Option<Duration>,
    pub latency_p95: Option<Duration>,
}

impl HealthView {
    pub fn healthy() -> Self {
        Self {
            state: HealthState::Healthy,
            cooling_until: None,
            error_rate: 0.0,
            calls: 0,
            failures: 0,
            latency_p50: None,
            latency_p95: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    calls: u32,
    failures: u32,
}

/// One channel's window, latencies and state.
#[derive(Debug, Clone)]
pub struct ChannelHealth {
    buckets: VecDeque<Bucket>,
    latencies: [u32; LATENCY_SAMPLES],
    latency_count: usize,
    latency_next: usize,
    state: State,
    /// Failed trials since the channel was last healthy: the cool-down's exponent.
    trips: u32,
    /// Trials come from scheduled probes, not from live calls.
    probed: bool,
    /// The upstream rejected the channel's credential.
    disabled: bool,
}

impl Default for ChannelHealth {
    fn default() -> Self {
        Self {
            buckets: VecDeque::new(),
            latencies: [0; LATENCY_SAMPLES],
            latency_count: 0,
            latency_next: 0,
            state: State::Healthy,
            trips: 0,
            probed: false,
            disabled: false,
        }
    }
}

impl ChannelHealth {
    /// Whether a live call may go to the channel now; a granted trial is held until an
    /// outcome is recorded (or it goes stale after a window).
    pub fn admit(&mut self, policy: &HealthPolicy, now: Instant) -> Admission {
        if self.disabled {
            return Admission::Refused { until: None };
        }
        self.expire(now);
        match self.state {
            State::Healthy => Admission::Open,
            State::CoolingDown { until, .. } => Admission::Refused { until: Some(until) },
            // A probed channel waits for its probe.
            State::HalfOpen { .. } if self.probed => Admission::Refused { until: None },
            State::HalfOpen { trial: Some(started) } if now.saturating_duration_since(started) < policy.window => {
                Admission::Refused { until: None }
            }
            State::HalfOpen { .. } => {
                self.state = State::HalfOpen { trial: Some(now) };
                Admission::Trial
            }
        }
    }

    /// Records a live call's outcome.
    pub fn record(&mut self, policy: &HealthPolicy, outcome: Outcome, now: Instant) -> Option<Transition> {
        self.expire(now);
        if let Outcome::Success { latency } = outcome {
            self.sample_latency(latency);
        }
        let failed = match outcome {
            Outcome::Success { .. } | Outcome::Answered => false,
            Outcome::Failure | Outcome::RateLimited { .. } => true,
            Outcome::Abandoned => {
                if let State::HalfOpen { .. } = self.state {
                    self.state = State::HalfOpen { trial: None };
                }
                return None;
            }
        };
        self.count(now, failed, policy);
        match self.state {
            State::HalfOpen { .. } if failed => Some(self.reopen(policy, now)),
            State::HalfOpen { .. } => Some(self.close()),
            State::Healthy => {
                if self.tripped(policy) {
                    return Some(self.trip(policy, now));
                }
                if let Outcome::RateLimited { retry_after: Some(wait) } = outcome {
                    self.state =
                        State::CoolingDown { until: now + wait.min(policy.max_cooldown), cause: Cause::RateLimited };
                }
                None
            }
            State::CoolingDown { until, cause } => {
                // Calls that started before the cool-down still land; only a longer
                // rate-limit pause extends it.
                if let Outcome::RateLimited { retry_after: Some(wait) } = outcome {
                    let asked = now + wait.min(policy.max_cooldown);
                    if asked > until {
                        self.state = State::CoolingDown { until: asked, cause };
                    }
                }
                None
            }
        }
    }

    /// Records a scheduled probe's outcome: like a live call, and once the cool-down is
    /// over the probe is the half-open trial.
    pub fn record_probe(&mut self, policy: &HealthPolicy, outcome: Outcome, now: Instant) -> Option<Transition> {
        self.expire(now);
        if let State::HalfOpen { .. } = self.state {
            self.state = State::HalfOpen { trial: Some(now) };
        }
        self.record(policy, outcome, now)
    }

    /// Another instance cooled the channel down until `until` after `failed_trials` failed
    /// trials: refuse it here too (keeping a longer cool-down of its own), and let the
    /// next failed trial double from there. Returns whether anything changed.
    pub fn cooled_elsewhere(&mut self, until: Instant, failed_trials: u32, now: Instant) -> bool {
        self.expire(now);
        if self.disabled || until <= now {
            return false;
        }
        self.trips = self.trips.max(failed_trials);
        match self.state {
            State::CoolingDown { until: mine, cause: Cause::Errors } if mine >= until => false,
            State::CoolingDown { until: mine, .. } => {
                self.state = State::CoolingDown { until: until.max(mine), cause: Cause::Errors };
                true
            }
            State::Healthy | State::HalfOpen { .. } => {
                self.state = State::CoolingDown { until, cause: Cause::Errors };
                true
            }
        }
    }

    /// The half-open trial this instance was granted locally is another instance's (or the
    /// channel cooled down again meanwhile): refuse it until `until`, when this instance
    /// may ask again. Only while still half-open: news about the channel that arrived
    /// meanwhile is newer and stands. Returns whether anything changed.
    pub fn trial_elsewhere(&mut self, until: Instant, failed_trials: u32, now: Instant) -> bool {
        self.expire(now);
        match self.state {
            State::HalfOpen { .. } => self.cooled_elsewhere(until, failed_trials, now),
            State::Healthy | State::CoolingDown { .. } => false,
        }
    }

    /// Another instance's trial succeeded: healthy again, with a clean slate. A
    /// rate-limit pause of this instance's own stays. Returns whether anything changed.
    pub fn recovered_elsewhere(&mut self, now: Instant) -> bool {
        self.expire(now);
        match self.state {
            State::CoolingDown { cause: Cause::Errors, .. } | State::HalfOpen { .. } => {
                self.close();
                true
            }
            State::Healthy | State::CoolingDown { cause: Cause::RateLimited, .. } => false,
        }
    }

    pub fn view(&self, policy: &HealthPolicy, now: Instant) -> HealthView {
        let (calls, failures) = self.totals(now, policy);
        let state = match self.state {
            _ if self.disabled => HealthState::Disabled,
            State::Healthy => HealthState::Healthy,
            State::CoolingDown { until, cause } if until <= now => match cause {
                Cause::Errors => HealthState::HalfOpen,
                Cause::RateLimited => HealthState::Healthy,
            },
            State::CoolingDown { .. } => HealthState::CoolingDown,
            State::HalfOpen { .. } => HealthState::HalfOpen,
        };
        let cooling_until = match self.state {
            State::CoolingDown { until, .. } if until > now => Some(until),
            _ => None,
        };
        HealthView {
            state,
            cooling_until,
            error_rate: if calls == 0 { 0.0 } else { f64::from(failures) / f64::from(calls) },
            calls,
            failures,
            latency_p50: self.percentile(50),
            latency_p95: self.percentile(95),
        }
    }

    /// Moves an expired cool-down on: to half-open after errors, to healthy after a
    /// rate-limit pause.
    fn expire(&mut self, now: Instant) {
        if let State::CoolingDown { until, cause } = self.state
            && until <= now
        {
            self.state = match cause {
                Cause::Errors => State::HalfOpen { trial: None },
                Cause::RateLimited => State::Healthy,
            };
        }
    }

    fn tripped(&self, policy: &HealthPolicy) -> bool {
        let (calls, failures) = self.buckets.iter().fold((0u32, 0u32), |(c, f), b| (c + b.calls, f + b.failures));
        calls >= policy.min_calls && f64::from(failures) >= policy.error_rate_threshold * f64::from(calls)
    }

    fn trip(&mut self, policy: &HealthPolicy, now: Instant) -> Transition {
        let until = now + self.cooldown(policy);
        self.state = State::CoolingDown { until, cause: Cause::Errors };
        let (calls, failures) = self.buckets.iter().fold((0u32, 0u32), |(c, f), b| (c + b.calls, f + b.failures));
        let error_rate = if calls == 0 { 1.0 } else { f64::from(failures) / f64::from(calls) };
        Transition::CooledDown { until, error_rate, failed_trials: self.trips }
    }

    /// A failed trial: cool down again, for longer.
    fn reopen(&mut self, policy: &HealthPolicy, now: Instant) -> Transition {
        self.trips = self.trips.saturating_add(1);
        self.trip(policy, now)
    }

    /// A successful trial: healthy, with a clean slate (the failures that tripped it are
    /// history, and would trip it again at the first hiccup).
    fn close(&mut self) -> Transition {
        self.state = State::Healthy;
        self.trips = 0;
        self.buckets.clear();
        Transition::Recovered
    }

    fn cooldown(&self, policy: &HealthPolicy) -> Duration {
        let factor = 1u32 << self.trips.min(MAX_DOUBLINGS);
        policy.cooldown.saturating_mul(factor).min(policy.max_cooldown)
    }

    fn count(&mut self, now: Instant, failed: bool, policy: &HealthPolicy) {
        self.forget(now, policy);
        let width = bucket_width(policy);
        match self.buckets.back_mut() {
            Some(bucket) if now.saturating_duration_since(bucket.start) < width => {
                bucket.calls = bucket.calls.saturating_add(1);
                bucket.failures = bucket.failures.saturating_add(u32::from(failed));
            }
            _ => self.buckets.push_back(Bucket { start: now, calls: 1, failures: u32::from(failed) }),
        }
    }

    /// Drops buckets that started a whole window ago or more.
    fn forget(&mut self, now: Instant, policy: &HealthPolicy) {
        while self.buckets.front().is_some_and(|b| now.saturating_duration_since(b.start) >= policy.window) {
            self.buckets.pop_front();
        }
    }

    fn totals(&self, now: Instant, policy: &HealthPolicy) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|b| now.saturating_duration_since(b.start) < policy.window)
            .fold((0, 0), |(c, f), b| (c + b.calls, f + b.failures))
    }

    fn sample_latency(&mut self, latency: Duration) {
        let millis = u32::try_from(latency.as_millis()).unwrap_or(u32::MAX);
        if let Some(slot) = self.latencies.get_mut(self.latency_next) {
            *slot = millis;
        }
        self.latency_next = (self.latency_next + 1) % LATENCY_SAMPLES;
        self.latency_count = (self.latency_count + 1).min(LATENCY_SAMPLES);
    }

    /// Nearest-rank percentile of the kept samples.
    fn percentile(&self, percent: usize) -> Option<Duration> {
        let mut samples: Vec<u32> = self.latencies.get(..self.latency_count)?.to_vec();
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = (percent * samples.len()).div_ceil(100).max(1);
        samples.get(rank - 1).map(|ms| Duration::from_millis(u64::from(*ms)))
    }
}

fn bucket_width(policy: &HealthPolicy) -> Duration {
    (policy.window / BUCKETS).max(Duration::from_millis(1))
}

/// Every channel's health, by name. One per server instance.
#[derive(Debug, Clone, Default)]
pub struct Board {
    policy: HealthPolicy,
    channels: HashMap<ChannelName, ChannelHealth>,
}

impl Board {
    pub fn new(policy: HealthPolicy) -> Self {
        Self { policy, channels: HashMap::new() }
    }

    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    pub fn admit(&mut self, channel: &ChannelName, now: Instant) -> Admission {
        match self.channels.get_mut(channel) {
            Some(health) => health.admit(&self.policy, now),
            None => Admission::Open,
        }
    }

    pub fn record(&mut self, channel: &ChannelName, outcome: Outcome, now: Instant) -> Option<Transition> {
        self.channels.entry(channel.clone()).or_default().record(&self.policy, outcome, now)
    }

    pub fn record_probe(&mut self, channel: &ChannelName, outcome: Outcome, now: Instant) -> Option<Transition> {
        self.channels.entry(channel.clone()).or_default().record_probe(&self.policy, outcome, now)
    }

    pub fn view(&self, channel: &ChannelName, now: Instant) -> HealthView {
        self.channels.get(channel).map_or_else(HealthView::healthy, |health| health.view(&self.policy, now))
    }

    /// See [`ChannelHealth::cooled_elsewhere`].
    pub fn cooled_elsewhere(
        &mut self,
        channel: &ChannelName,
        until: Instant,
        failed_trials: u32,
        now: Instant,
    ) -> bool {
        self.channels.entry(channel.clone()).or_default().cooled_elsewhere(until, failed_trials, now)
    }

    /// See [`ChannelHealth::trial_elsewhere`].
    pub fn trial_elsewhere(&mut self, channel: &ChannelName, until: Instant, failed_trials: u32, now: Instant) -> bool {
        self.channels.get_mut(channel).is_some_and(|health| health.trial_elsewhere(until, failed_trials, now))
    }

    /// See [`ChannelHealth::recovered_elsewhere`].
    pub fn recovered_elsewhere(&mut self, channel: &ChannelName, now: Instant) -> bool {
        self.channels.get_mut(channel).is_some_and(|health| health.recovered_elsewhere(now))
    }

    /// Whether the channel's trials come from scheduled probes.
    pub fn set_probed(&mut self, channel: &ChannelName, probed: bool) {
        if probed || self.channels.contains_key(channel) {
            self.channels.entry(channel.clone()).or_default().probed = probed;
        }
    }

    /// Marks the channel's credential as rejected: no call goes to it from here on.
    /// Returns whether it was not marked yet.
    pub fn disable(&mut self, channel: &ChannelName) -> bool {
        let health = self.channels.entry(channel.clone()).or_default();
        !std::mem::replace(&mut health.disabled, true)
    }

    /// Forgets everything about the channel (an admin re-enabled it).
    pub fn reset(&mut self, channel: &ChannelName) {
        self.channels.remove(channel);
    }

    /// Forgets the channels `keep` refuses (gone from the catalogue): a channel disabled
    /// durably is gone from it, so its local mark is no longer needed.
    pub fn retain(&mut self, mut keep: impl FnMut(&ChannelName) -> bool) {
        self.channels.retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            error_rate_threshold: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(2),
            max_cooldown: Duration::from_secs(5),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ok() -> Outcome {
        Outcome::Success { latency: ms(100) }
    }

    #[test]
    fn the_rate_counts_only_after_min_calls() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = ChannelHealth::default();
        for i in 0..3 {
            assert_eq!(h.record(&p, Outcome::Failure, t0 + ms(i)), None);
            assert_eq!(h.admit(&p, t0 + ms(i)), Admission::Open);
        }
        // The fourth call reaches min_calls: 4 of 4 failed.
        let tripped = h.record(&p, Outcome::Failure, t0 + ms(3));
        assert!(matches!(tripped, Some(Transition::CooledDown { until, .. }) if until == t0 + ms(3) + p.cooldown));
        assert_eq!(h.admit(&p, t0 + ms(4)), Admission::Refused { until: Some(t0 + ms(3) + p.cooldown) });
        assert_eq!(h.view(&p, t0 + ms(4)).state, HealthState::CoolingDown);
    }

    #[test]
    fn a_rate_below_the_threshold_keeps_the_channel_open() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = ChannelHealth::default();
        for i in 0..20 {
            let outcome = if i % 3 == 2 { Outcome::Failure } else { ok() };
            assert_eq!(h.record(&p, outcome, t0 + ms(i)), None);
        }
        let view = h.view(&p, t0 + ms(20));
        assert_eq!(view.state, HealthState::Healthy);
        assert_eq!((view.calls, view.failures), (20, 6));
        assert!((view.error_rate - 0.3).abs() < 1e-9);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = ChannelHealth::default();
        for i in 0..3 {
            h.record(&p, Outcome::Failure, t0 + ms(i));
        }
        // Eleven seconds later those three are forgotten: one more failure is 1 of 1,
        // below min_calls.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(h.record(&p, Outcome::Failure, later), None);
        let view = h.view(&p, later);
        assert_eq!((view.calls, view.failures), (1, 1));
        assert_eq!(h.admit(&p, later), Admission::Open);
    }

    #[test]
    fn half_open_lets_one_trial_through_and_success_closes() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = ChannelHealth::default();
        for i in 0..4 {
            h.record(&p, Outcome::Failure, t0 + ms(i));
        }
        let after = t0 + Duration::from_secs(3);
        assert_eq!(h.view(&p, after).state, HealthState::HalfOpen);
        assert_eq!(h.admit(&p, after), Admission::Trial);
        assert_eq!(h.admit(&p, after + ms(1)), Admission::Refused { until: None }, "one trial at a time");
        assert_eq!(h.record(&p, ok(), after + ms(5)), Some(Transition::Recovered));
        assert_eq!(h.admit(&p, after + ms(6)), Admission::Open);
        let view = h.view(&p, after + ms(6));
        assert_eq!((view.state, view.calls), (HealthState::Healthy, 0), "a clean slate");
    }

    #[test]
    fn failed_trials_double_the_cooldown_up_to_the_cap() {
        let p = policy();
        let mut now = Instant::now();
        let mut h = ChannelHealth::default();
        for _ in 0..4 {
            h.record(&p, Outcome::Failure, now);
        }
        let mut expected = vec![4, 5, 5]; // 2 s, then doubled to 4 s, then capped at 5 s
        let mut cooldown = p.cooldown;
        while let Some(next) = expected.first().copied() {
            now += cooldown;
            assert_eq!(h.admit(&p, now), Admission::Trial);
            match h.record(&p, Outcome::Failure, now) {
                Some(Transition::CooledDown { until, .. }) => {
                    assert_eq!(until - now, Duration::from_secs(next));
                    cooldown = until - now;
                }
                other => panic!("expected a longer cool-down, got {other:?}"),
            }
            expected.remove(0);
        }
        // Success resets the exponent.
        now += cooldown;
        assert_eq!(h.admit(&p, now), Admission::Trial);
        assert_eq!(h.record(&p, ok(), now), Some(Transition::Recovered));
        for i in 0..4 {
            h.record(&p, Outcome::Failure, now + ms(i));
        }
        assert_eq!(h.view(&p, now + ms(4)).cooling_until, Some(now + ms(3) + p.cooldown));
    }

    #[test]
    fn an_abandoned_trial_frees_the_slot_and_a_stale_one_expires() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = ChannelHealth::default();
        for i in 0..4 {
            h.record(&p, Outcome::Failure, t0 + ms(i));
        }
        let open = t0 + Duration::from_secs(3);
        assert_eq!(h.admit(&p, open), Admission::Trial);
        h.record(&p, Outcome::Abandoned, open + ms(1));
        assert_eq!(h.admit(&p, open + ms(2)), Admission::Trial);
        // Never reported: after a window another trial may go.
        assert_eq!(h.admit(&p, open + ms(3)), Admission::Refused { until: None });
        assert_eq!(h.admit(&p, open + ms(2) + p.window), Admission::Trial);
    }

    #[test]
    fn retry_after_cools_for_that_long_then_reopens_without_a_trial() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = ChannelHealth::default();
        let pause = Outcome::RateLimited { retry_after: Some(Duration::from_secs(1)) };
        assert_eq!(h.record(&p, pause, t0), None, "rate-limit pauses are not announced");
        assert_eq!(h.admit(&p, t0 + ms(999)), Admission::Refused { until: Some(t0 + Duration::from_secs(1)) });
        assert_eq!(h.admit(&p, t0 + Duration::from_secs(1)), Admission::Open);
        // A huge retry-after is capped at max_cooldown.
        let t1 = t0 + Duration::from_secs(2);
        h.record(&p, Outcome::RateLimited { retry_after: Some(Duration::from_secs(3600)) }, t1);
        assert_eq!(h.view(&p, t1).cooling_until, Some(t1 + p.max_cooldown));
    }

    #[test]
    fn probed_channels_wait_for_their_probe() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = ChannelHealth { probed: true, ..ChannelHealth::default() };
        for i in 0..4 {
            h.record(&p, Outcome::Failure, t0 + ms(i));
        }
        let open = t0 + Duration::from_secs(3);
        assert_eq!(h.admit(&p, open), Admission::Refused { until: None }, "no live trial");
        assert_eq!(
            h.record_probe(&p, Outcome::Failure, open),
            Some(Transition::CooledDown { until: open + Duration::from_secs(4), error_rate: 1.0, failed_trials: 1 })
        );
        let later = open + Duration::from_secs(4);
        assert_eq!(h.record_probe(&p, ok(), later), Some(Transition::Recovered));
        assert_eq!(h.admit(&p, later), Admission::Open);
    }

    #[test]
    fn client_errors_count_as_answers_and_latency_percentiles_use_nearest_rank() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = ChannelHealth::default();
        for i in 1..=100 {
            h.record(&p, Outcome::Success { latency: ms(i) }, t0);
        }
        h.record(&p, Outcome::Answered, t0);
        let view = h.view(&p, t0);
        // The ring keeps the last 64 samples: 37..=100 ms.
        assert_eq!(view.latency_p50, Some(ms(68)));
        assert_eq!(view.latency_p95, Some(ms(97)));
        assert_eq!((view.calls, view.failures), (101, 0));
        assert_eq!(ChannelHealth::default().view(&p, t0).latency_p50, None);
    }

    #[test]
    fn a_cool_down_from_elsewhere_is_followed_and_doubles_from_there() {
        let p = policy();
        let t0 = Instant::now();
        let mut h = ChannelHealth::default();
        assert!(h.cooled_elsewhere(t0 + Duration::from_secs(2), 1, t0));
        assert_eq!(h.admit(&p, t0 + ms(1)), Admission::Refused { until: Some(t0 + Duration::from_secs(2)) });
        assert_eq!(h.view(&p, t0 + ms(1)).state, HealthState::CoolingDown);
        assert!(!h.cooled_elsewhere(t0 + Duration::from_secs(1), 0, t0), "a shorter one changes nothing");
        assert!(!h.cooled_elsewhere(t0, 3, t0), "nor one already over");
        // After it, this instance may trial; failing it doubles from the shared exponent.
        let open = t0 + Duration::from_secs(2);
        assert_eq!(h.admit(&p, open), Admission::Trial);
        assert_eq!(
            h.record(&p, Outcome::Failure, open),
            Some(Transition::CooledDown { until: open + p.max_cooldown, error_rate: 1.0, failed_trials: 2 })
        );
        // A recovery seen elsewhere closes it at once.
        assert!(h.recovered_elsewhere(open + ms(1)));
        assert_eq!(h.admit(&p, open + ms(1)), Admission::Open);
        assert!(!h.recovered_elsewhere(open + ms(2)), "already healthy");
        // A rate-limit pause is this instance's own: a recovery elsewhere does not lift it.
        h.record(&p, Outcome::RateLimited { retry_after: Some(Duration::from_secs(1)) }, open + ms(3));
        assert!(!h.recovered_elsewhere(open + ms(4)));
        assert!(!h.admit(&p, open + ms(4)).is_allowed());
        // A disabled channel stays disabled.
        let mut off = ChannelHealth { disabled: true, ..ChannelHealth::default() };
        assert!(!off.cooled_elsewhere(t0 + Duration::from_secs(2), 0, t0));
    }

    #[test]
    fn a_trial_taken_elsewhere_keeps_this_instance_waiting_until_the_news() {
        let p = policy();
        let mut board = Board::new(p);
        let name = ChannelName::parse("a").unwrap();
        let t0 = Instant::now();
        assert!(board.cooled_elsewhere(&name, t0 + Duration::from_secs(2), 0, t0));
        let open = t0 + Duration::from_secs(2);
        // The local trial slot is taken while another instance sends the trial...
        assert_eq!(board.admit(&name, open), Admission::Trial);
        assert_eq!(board.admit(&name, open + ms(1)), Admission::Refused { until: None });
        // ...until its outcome arrives.
        assert!(board.recovered_elsewhere(&name, open + ms(5)));
        assert_eq!(board.admit(&name, open + ms(6)), Admission::Open);
        assert!(!board.recovered_elsewhere(&ChannelName::parse("unknown").unwrap(), open));

        // Cool-down over again: the lease says another instance holds the trial, so this
        // one waits a little before asking again...
        assert!(board.cooled_elsewhere(&name, open + Duration::from_secs(4), 0, open + ms(6)));
        let reopened = open + Duration::from_secs(4);
        assert_eq!(board.admit(&name, reopened), Admission::Trial);
        assert!(board.trial_elsewhere(&name, reopened + Duration::from_secs(1), 0, reopened));
        assert_eq!(board.admit(&name, reopened + ms(1)), Admission::Refused { until: Some(reopened + ms(1000)) });
        // ...unless that trial's verdict arrived while it asked: the newer news stands.
        let later = reopened + Duration::from_secs(1);
        assert_eq!(board.admit(&name, later), Admission::Trial);
        assert!(board.recovered_elsewhere(&name, later + ms(1)));
        assert!(!board.trial_elsewhere(&name, later + Duration::from_secs(1), 0, later + ms(2)));
        assert_eq!(board.admit(&name, later + ms(3)), Admission::Open);
    }

    #[test]
    fn the_board_disables_resets_and_forgets() {
        let mut board = Board::new(policy());
        let name = ChannelName::parse("a").unwrap();
        let now = Instant::now();
        assert_eq!(board.admit(&name, now), Admission::Open);
        assert!(board.disable(&name));
        assert!(!board.disable(&name), "already marked");
        assert_eq!(board.admit(&name, now), Admission::Refused { until: None });
        assert_eq!(board.view(&name, now).state, HealthState::Disabled);
        board.reset(&name);
        assert_eq!(board.admit(&name, now), Admission::Open);
        board.disable(&name);
        board.retain(|_| false);
        assert_eq!(board.view(&name, now), HealthView::healthy());
    }
}
