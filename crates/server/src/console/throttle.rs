//! Sign-in throttling: at most a few failed sign-ins per account and per client address in
//! a sliding window; beyond that every attempt is refused (429) without checking the
//! password, until the oldest failure ages out. In memory and per instance (Redis later):
//! it only has to make online guessing slow.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Map size above which an attempt first sweeps out keys with nothing recent.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug)]
pub struct SignInThrottle {
    per_account: usize,
    per_address: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl SignInThrottle {
    pub fn new(per_account: usize, per_address: usize, window: Duration) -> Self {
        Self { per_account, per_address, window, failures: Mutex::new(HashMap::new()) }
    }

    /// `Err(retry_after)` while the account or the address has used up its failures.
    pub fn check(&self, account: &str, address: &str, now: Instant) -> Result<(), Duration> {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() > PRUNE_ABOVE {
            failures
                .retain(|_, times| times.back().is_some_and(|last| now.saturating_duration_since(*last) < self.window));
        }
        for (key, limit) in [(account_key(account), self.per_account), (address_key(address), self.per_address)] {
            if let Some(times) = failures.get_mut(&key) {
                while times.front().is_some_and(|oldest| now.saturating_duration_since(*oldest) >= self.window) {
                    times.pop_front();
                }
                if let Some(oldest) = times.front()
                    && times.len() >= limit
                {
                    return Err(self
                        .window
                        .saturating_sub(now.saturating_duration_since(*oldest))
                        .max(Duration::from_secs(1)));
                }
            }
        }
        Ok(())
    }

    /// Counts a failed sign-in against the account and the address.
    pub fn fail(&self, account: &str, address: &str, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for key in [account_key(account), address_key(address)] {
            failures.entry(key).or_default().push_back(now);
        }
    }

    /// A successful sign-in clears the account's failures (not the address's).
    pub fn succeed(&self, account: &str) {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner).remove(&account_key(account));
    }
}

fn account_key(account: &str) -> String {
    format!("a:{}", account.to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("i:{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_per_account_and_per_address() {
        let throttle = SignInThrottle::new(3, 5, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..3 {
            assert!(throttle.check("Ann@x", "1.2.3.4", now).is_ok());
            throttle.fail("ann@x", "1.2.3.4", now);
        }
        assert!(throttle.check("ann@X", "9.9.9.9", now).is_err(), "the account is locked from anywhere");
        assert!(throttle.check("bob@x", "9.9.9.9", now).is_ok());
        throttle.fail("bob@x", "1.2.3.4", now);
        throttle.fail("carl@x", "1.2.3.4", now);
        assert!(throttle.check("dave@x", "1.2.3.4", now).is_err(), "the address is locked for every account");
        assert!(throttle.check("ann@x", "9.9.9.9", now + Duration::from_secs(61)).is_ok(), "ages out");
        throttle.succeed("bob@x");
    }
}
