//! Throttles guessing of redemption codes: one user gets at most `limit` failed attempts
//! within `window`; further attempts are refused until the oldest failure ages out.
//!
//! Every attempt counts as a failure from the moment it starts ([`GuessThrottle::try_begin`])
//! and is forgiven only when it turns out not to be a wrong guess (a success, a server
//! failure): checking and counting under one lock means a burst of parallel guesses is cut at
//! `limit` too, not only a sequence of them.
//!
//! In memory and per instance: a code has ≈ 143 bits, so this only has to make guessing
//! visibly pointless and cheap to refuse, not be exact across instances. Memory stays bounded:
//! each user keeps at most `limit` instants, and users whose attempts all aged out are dropped
//! whenever the map grows past [`PRUNE_ABOVE`] entries.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use veil_domain::UserId;

/// Map size above which starting an attempt first sweeps out users with nothing recent.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug)]
pub struct GuessThrottle {
    limit: usize,
    window: Duration,
    failures: Mutex<HashMap<UserId, VecDeque<Instant>>>,
}

impl GuessThrottle {
    /// `limit` failures (at least 1) within `window` close the door.
    pub fn new(limit: usize, window: Duration) -> Self {
        Self { limit: limit.max(1), window, failures: Mutex::new(HashMap::new()) }
    }

    /// Starts an attempt by `user` at `now`, counted as a failure unless [`Self::forgive`]n;
    /// `Err(retry_after)` (nothing counted) while the user has `limit` failures in the window.
    pub fn try_begin(&self, user: UserId, now: Instant) -> Result<(), Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() > PRUNE_ABOVE {
            failures
                .retain(|_, times| times.back().is_some_and(|last| now.saturating_duration_since(*last) < self.window));
        }
        let times = failures.entry(user).or_default();
        while times.front().is_some_and(|oldest| now.saturating_duration_since(*oldest) >= self.window) {
            times.pop_front();
        }
        match times.front() {
            Some(oldest) if times.len() >= self.limit => {
                Err(self.window.saturating_sub(now.saturating_duration_since(*oldest)))
            }
            _ => {
                times.push_back(now);
                Ok(())
            }
        }
    }

    /// Takes back the attempt `user` began at `started`: it was no wrong guess.
    pub fn forgive(&self, user: UserId, started: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(times) = failures.get_mut(&user) {
            if let Some(index) = times.iter().rposition(|at| *at == started) {
                times.remove(index);
            }
            if times.is_empty() {
                failures.remove(&user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_closes_the_door_until_the_oldest_failure_ages_out() {
        let throttle = GuessThrottle::new(3, Duration::from_secs(600));
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let start = Instant::now();
        for second in 0..3 {
            assert!(throttle.try_begin(alice, start + Duration::from_secs(second)).is_ok());
        }
        let later = start + Duration::from_secs(100);
        assert_eq!(throttle.try_begin(alice, later), Err(Duration::from_secs(500)));
        assert_eq!(throttle.try_begin(alice, later), Err(Duration::from_secs(500)), "refusals count nothing");
        assert!(throttle.try_begin(bob, later).is_ok(), "throttling is per user");
        // The first failure ages out at 600 s: one more attempt is allowed, then closed again.
        let aged = start + Duration::from_secs(600);
        assert!(throttle.try_begin(alice, aged).is_ok());
        assert_eq!(throttle.try_begin(alice, aged), Err(Duration::from_secs(1)));
    }

    #[test]
    fn forgiven_attempts_do_not_count() {
        let throttle = GuessThrottle::new(2, Duration::from_secs(60));
        let user = UserId::generate();
        let now = Instant::now();
        for i in 0..10 {
            let at = now + Duration::from_millis(i);
            assert!(throttle.try_begin(user, at).is_ok(), "attempt {i}");
            throttle.forgive(user, at);
        }
        assert!(throttle.failures.lock().unwrap().is_empty(), "nothing left behind");
        assert!(throttle.try_begin(user, now).is_ok());
        assert!(throttle.try_begin(user, now).is_ok());
        assert!(throttle.try_begin(user, now).is_err());
        assert_eq!(throttle.failures.lock().unwrap()[&user].len(), 2, "at most `limit` instants per user");
    }
}
