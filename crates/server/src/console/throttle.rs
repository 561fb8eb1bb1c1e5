//! Sign-in throttling: at most a few failed sign-ins per account and per client address in
//! a sliding window; beyond that every attempt is refused (429) without checking the
//! password, until the oldest failure ages out. It only has to make online guessing slow.
//!
//! With `[redis]` the failures are counted in Redis ([`veil_cluster::SharedSignInAttempts`]),
//! so guesses spread over several instances add up; the subjects go there as keyed hashes,
//! never as addresses. Every failure is also counted here, in memory, which is what decides
//! while Redis is unreachable (so an outage never switches the throttle off).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failed sign-ins are counted over this window.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures allowed per account, and per client address, within the window.
pub const PER_ACCOUNT: usize = 5;
pub const PER_ADDRESS: usize = 20;

/// Map size above which an attempt first sweeps out keys with nothing recent.
const PRUNE_ABOVE: usize = 10_000;

/// The console's sign-in throttle: the shared count when configured, else (and during a
/// Redis outage) this instance's own.
#[derive(Debug)]
pub struct SignInThrottle {
    local: LocalCounts,
    shared: Option<Shared>,
}

struct Shared {
    attempts: veil_cluster::SharedSignInAttempts,
    /// Keys the subjects' hashes: the same on every instance, secret.
    key: [u8; 32],
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("attempts", &self.attempts).finish_non_exhaustive()
    }
}

impl SignInThrottle {
    pub fn new(per_account: usize, per_address: usize, window: Duration) -> Self {
        Self { local: LocalCounts::new(per_account, per_address, window), shared: None }
    }

    /// Counts through Redis too; `secret` keys the hashes of accounts and addresses there.
    pub fn with_shared(mut self, attempts: veil_cluster::SharedSignInAttempts, secret: &str) -> Self {
        use sha2::{Digest, Sha256};
        self.shared = Some(Shared { attempts, key: Sha256::digest(secret.as_bytes()).into() });
        self
    }

    /// `Err(retry_after)` while the account or the address has used up its failures.
    pub async fn check(&self, account: &str, address: &str, now: Instant) -> Result<(), Duration> {
        let local = self.local.check(account, address, now);
        let Some(shared) = &self.shared else { return local };
        let subjects = [
            (shared.subject(&account_key(account)), self.local.per_account),
            (shared.subject(&address_key(address)), self.local.per_address),
        ];
        let subjects: Vec<(&str, usize)> = subjects.iter().map(|(subject, limit)| (subject.as_str(), *limit)).collect();
        match shared.attempts.check(&subjects).await {
            Ok(None) => local,
            Ok(Some(wait)) => Err(wait),
            Err(error) => {
                tracing::warn!(error = %error, "sign-in throttle: Redis unreachable, counting on this instance only");
                local
            }
        }
    }

    /// Counts a failed sign-in against the account and the address.
    pub async fn fail(&self, account: &str, address: &str, now: Instant) {
        self.local.fail(account, address, now);
        if let Some(shared) = &self.shared {
            let subjects = [shared.subject(&account_key(account)), shared.subject(&address_key(address))];
            let subjects: Vec<&str> = subjects.iter().map(String::as_str).collect();
            if let Err(error) = shared.attempts.fail(&subjects).await {
                tracing::warn!(error = %error, "sign-in throttle: a failure could not be counted in Redis");
            }
        }
    }

    /// A successful sign-in clears the account's failures (not the address's).
    pub async fn succeed(&self, account: &str) {
        self.local.succeed(account);
        if let Some(shared) = &self.shared
            && let Err(error) = shared.attempts.clear(&shared.subject(&account_key(account))).await
        {
            tracing::warn!(error = %error, "sign-in throttle: an account's failures could not be cleared in Redis");
        }
    }
}

impl Shared {
    /// The subject as Redis sees it: an HMAC, so a dump of Redis names no one.
    fn subject(&self, key: &str) -> String {
        use hmac::{Hmac, Mac};
        let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.key) else { return String::new() };
        mac.update(key.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// This instance's own count of recent failures.
#[derive(Debug)]
struct LocalCounts {
    per_account: usize,
    per_address: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl LocalCounts {
    fn new(per_account: usize, per_address: usize, window: Duration) -> Self {
        Self { per_account, per_address, window, failures: Mutex::new(HashMap::new()) }
    }

    /// `Err(retry_after)` while the account or the address has used up its failures.
    fn check(&self, account: &str, address: &str, now: Instant) -> Result<(), Duration> {
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
    fn fail(&self, account: &str, address: &str, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        for key in [account_key(account), address_key(address)] {
            failures.entry(key).or_default().push_back(now);
        }
    }

    /// A successful sign-in clears the account's failures (not the address's).
    fn succeed(&self, account: &str) {
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
        let throttle = LocalCounts::new(3, 5, Duration::from_secs(60));
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
