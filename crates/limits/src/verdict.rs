//! How a backend turns its per-scope checks into one answer, shared so that every backend
//! answers alike: how long a limit makes a call wait, the tightest scope (whose state the
//! rate-limit headers show), and the refusal naming the longest wait.

use crate::{NEVER_FITS_RETRY, RateHeaders, Refusal, Resource};
use std::time::Duration;

/// How long one limit makes a call wait; ordered so that the longest wait wins when
/// several limits refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wait {
    Now,
    After(Duration),
    /// The call can never fit this limit (a zero limit, or more tokens than a minute holds).
    Never,
}

/// One scope's state for one resource, as the headers show it.
#[derive(Debug, Clone, Copy)]
pub struct Level {
    pub limit: u32,
    pub remaining: u32,
    pub reset: Duration,
}

/// The tightest scope seen so far, separately for requests and tokens.
#[derive(Debug, Default)]
pub struct Tightest {
    pub requests: Option<Level>,
    pub tokens: Option<Level>,
}

impl Tightest {
    pub fn offer(slot: &mut Option<Level>, level: Level) {
        // Fewest remaining wins; on a tie, the one that takes longer to reset.
        let tighter = |a: &Level, b: &Level| (a.remaining, b.reset) < (b.remaining, a.reset);
        if slot.as_ref().is_none_or(|current| tighter(&level, current)) {
            *slot = Some(level);
        }
    }

    pub fn headers(&self) -> RateHeaders {
        RateHeaders {
            limit_requests: self.requests.map(|l| l.limit),
            remaining_requests: self.requests.map(|l| l.remaining),
            reset_requests: self.requests.map(|l| l.reset),
            limit_tokens: self.tokens.map(|l| l.limit),
            remaining_tokens: self.tokens.map(|l| l.remaining),
            reset_tokens: self.tokens.map(|l| l.reset),
        }
    }
}

/// The limit that refuses a call, if any: the one with the longest wait.
#[derive(Debug)]
pub struct Blocker {
    wait: Wait,
    scope_kind: &'static str,
    resource: Resource,
}

impl Blocker {
    /// Keeps the longer of the wait in `slot` and this one; a limit that admits
    /// (`Wait::Now`) blocks nothing.
    pub fn note(slot: &mut Option<Blocker>, wait: Wait, scope_kind: &'static str, resource: Resource) {
        if wait != Wait::Now && slot.as_ref().is_none_or(|current| wait > current.wait) {
            *slot = Some(Blocker { wait, scope_kind, resource });
        }
    }

    pub fn refusal(self, headers: RateHeaders) -> Refusal {
        let (retry_after, never_fits) = match self.wait {
            Wait::Now => (Duration::ZERO, false),
            Wait::After(wait) => (wait, false),
            Wait::Never => (NEVER_FITS_RETRY, true),
        };
        Refusal { scope_kind: self.scope_kind, resource: self.resource, retry_after, never_fits, headers }
    }
}
