//! The failover policy of one relayed call, kept out of the relay loop so the loop reads
//! as "try the next candidate" and the rules live in one place:
//!
//! - at most `[routing] max_attempts` upstream attempts, retries of one channel included;
//! - connect errors, timeouts before the answer, 429, 5xx, a rejected credential (the
//!   channel's fault, not the client's), a channel type that cannot serve the endpoint, and
//!   any failure of a stream before its first event (nothing reached the client) move on
//!   to the next candidate; anything else ends the call with that error;
//! - between attempts a short exponential backoff with full jitter, so a burst of calls
//!   failing together does not hit the next channel in lockstep;
//! - when the candidates are used up and one of them answered 429 or 503 with a
//!   `retry-after` no longer than `max_retry_wait`, the call waits that long and tries it
//!   again, as long as that ends before the channel's total timeout; otherwise the error,
//!   `retry-after` included, goes to the client;
//! - channels skipped because they are cooling down are remembered: if nothing else was
//!   tried, the call fails with `503 upstream_error` and the soonest recovery as
//!   `retry-after`.

use crate::error::ApiError;
use axum::http::StatusCode;
use rand::Rng;
use std::time::{Duration, Instant};
use veil_config::RoutingSettings;
use veil_domain::ErrorCode;
use veil_providers::UpstreamError;

/// The first backoff between attempts; doubled for each further one.
const BACKOFF_BASE: Duration = Duration::from_millis(25);
const BACKOFF_CAP: Duration = Duration::from_millis(250);
/// `retry-after` when every candidate is cooling down but none said until when.
const UNKNOWN_RECOVERY: Duration = Duration::from_secs(1);

/// A channel worth trying again after its `retry-after`.
struct Waitable<T> {
    candidate: T,
    ready_at: Instant,
    /// The channel's total timeout, counted from the start of the call.
    deadline: Instant,
}

pub struct Failover<T> {
    max_attempts: u32,
    max_retry_wait: Duration,
    started: Instant,
    attempts: u32,
    /// The next attempt follows a `retry-after` wait: no backoff on top.
    waited: bool,
    waitable: Option<Waitable<T>>,
    /// Some candidate was skipped because it is cooling down, and when the soonest of
    /// them recovers (`None` inside: unknown, e.g. a half-open trial is running).
    cooling: Option<Option<Instant>>,
}

impl<T> Failover<T> {
    pub fn new(settings: &RoutingSettings) -> Self {
        Self {
            max_attempts: settings.max_attempts.max(1),
            max_retry_wait: settings.max_retry_wait,
            started: Instant::now(),
            attempts: 0,
            waited: false,
            waitable: None,
            cooling: None,
        }
    }

    /// Whether another attempt is allowed.
    pub fn may_attempt(&self) -> bool {
        self.attempts < self.max_attempts
    }

    /// Counts an attempt about to start and returns the pause to take before it.
    pub fn begin_attempt(&mut self) -> Duration {
        self.attempts += 1;
        if self.attempts == 1 || std::mem::take(&mut self.waited) {
            return Duration::ZERO;
        }
        let doublings = (self.attempts - 2).min(8);
        let ceiling = BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_CAP);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// A candidate skipped because it is cooling down until `until` (if known).
    pub fn note_cooling(&mut self, until: Option<Instant>) {
        self.cooling = Some(match (self.cooling.flatten(), until) {
            (Some(known), Some(new)) => Some(known.min(new)),
            (known, new) => known.or(new),
        });
    }

    /// After a failed attempt at `candidate`: whether the call moves on to the next
    /// candidate (`false`: it ends with this error). `before_first_event`: a stream that
    /// failed while starting (broke, stalled, reported an error), which another channel
    /// may always replace. A 429 or 503 with a short enough `retry-after` is remembered
    /// for [`Failover::retry_later`].
    pub fn after_failure(
        &mut self,
        candidate: T,
        error: &UpstreamError,
        before_first_event: bool,
        total_timeout: Duration,
    ) -> bool {
        let moves_on = before_first_event
            || error.is_retryable()
            || error.is_credential_rejected()
            || matches!(error, UpstreamError::EndpointUnsupported(_));
        if !moves_on {
            return false;
        }
        if let (Some(429 | 503), Some(wait)) = (error.upstream_status(), error.retry_after())
            && wait <= self.max_retry_wait
        {
            let now = Instant::now();
            let waitable = Waitable { candidate, ready_at: now + wait, deadline: self.started + total_timeout };
            if self.waitable.as_ref().is_none_or(|kept| waitable.ready_at < kept.ready_at) {
                self.waitable = Some(waitable);
            }
        }
        true
    }

    /// Once the candidates are used up: the channel to try again and when, if one asked
    /// for a short enough wait, attempts remain, and the wait ends before its total timeout.
    pub fn retry_later(&mut self) -> Option<(T, Instant)> {
        let waitable = self.waitable.take()?;
        if !self.may_attempt() || waitable.ready_at >= waitable.deadline {
            return None;
        }
        self.waited = true;
        Some((waitable.candidate, waitable.ready_at))
    }

    /// The error when no attempt was made because every candidate left was cooling down.
    pub fn cooling_error(&self) -> Option<ApiError> {
        let soonest = self.cooling?;
        let wait = soonest.map_or(UNKNOWN_RECOVERY, |until| until.saturating_duration_since(Instant::now()));
        let mut error = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::UpstreamError,
            "Every channel serving this model is cooling down; retry later.",
        );
        // At least a second: `retry-after` is whole seconds, and 0 invites a hot loop.
        error.retry_after = Some(wait.max(Duration::from_secs(1)));
        Some(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_attempts: u32, max_retry_wait_ms: u64) -> RoutingSettings {
        RoutingSettings {
            max_attempts,
            max_retry_wait: Duration::from_millis(max_retry_wait_ms),
            ..RoutingSettings::default()
        }
    }

    fn status(status: u16, retry_after_ms: Option<u64>) -> UpstreamError {
        UpstreamError::Status {
            status,
            retry_after: retry_after_ms.map(Duration::from_millis),
            message: String::new(),
            code: None,
        }
    }

    const TOTAL: Duration = Duration::from_secs(60);

    #[test]
    fn attempts_are_bounded_and_backoff_is_short() {
        let mut failover: Failover<&str> = Failover::new(&settings(3, 0));
        assert_eq!(failover.begin_attempt(), Duration::ZERO);
        for _ in 0..2 {
            assert!(failover.may_attempt());
            assert!(failover.begin_attempt() <= BACKOFF_CAP);
        }
        assert!(!failover.may_attempt());
    }

    #[test]
    fn which_failures_move_on() {
        let mut failover: Failover<&str> = Failover::new(&settings(3, 0));
        assert!(failover.after_failure("a", &UpstreamError::Connect, false, TOTAL));
        assert!(failover.after_failure("a", &status(500, None), false, TOTAL));
        assert!(failover.after_failure("a", &status(429, None), false, TOTAL));
        assert!(
            failover.after_failure("a", &status(401, None), false, TOTAL),
            "the channel's credential, not the client's"
        );
        assert!(failover.after_failure("a", &UpstreamError::EndpointUnsupported("x"), false, TOTAL));
        assert!(!failover.after_failure("a", &status(400, None), false, TOTAL));
        assert!(!failover.after_failure("a", &UpstreamError::Truncated, false, TOTAL));
        assert!(failover.after_failure("a", &UpstreamError::Truncated, true, TOTAL), "a stream that never started");
        assert!(failover.after_failure("a", &UpstreamError::Timeout(veil_providers::TimeoutPhase::Idle), true, TOTAL));
        assert!(failover.retry_later().is_none(), "nothing asked for a wait");
    }

    #[test]
    fn a_short_retry_after_is_waited_out_once_a_long_one_is_passed_on() {
        let mut failover: Failover<&str> = Failover::new(&settings(3, 2_000));
        failover.begin_attempt();
        assert!(failover.after_failure("only", &status(429, Some(1_000)), false, TOTAL));
        let (candidate, ready_at) = failover.retry_later().unwrap();
        assert_eq!(candidate, "only");
        assert!(ready_at > Instant::now() + Duration::from_millis(900));
        assert_eq!(failover.begin_attempt(), Duration::ZERO, "no backoff on top of the wait");
        assert!(failover.retry_later().is_none(), "taken");

        let mut long: Failover<&str> = Failover::new(&settings(3, 2_000));
        long.begin_attempt();
        assert!(long.after_failure("only", &status(429, Some(30_000)), false, TOTAL));
        assert!(long.retry_later().is_none());
        // A wait past the channel's total timeout is not taken either.
        let mut late: Failover<&str> = Failover::new(&settings(3, 2_000));
        late.after_failure("only", &status(503, Some(1_500)), false, Duration::from_secs(1));
        assert!(late.retry_later().is_none());
        // Nor once the attempts are spent.
        let mut spent: Failover<&str> = Failover::new(&settings(1, 2_000));
        spent.begin_attempt();
        spent.after_failure("only", &status(429, Some(10)), false, TOTAL);
        assert!(spent.retry_later().is_none());
    }

    #[test]
    fn the_soonest_wait_is_kept() {
        let mut failover: Failover<&str> = Failover::new(&settings(3, 2_000));
        failover.after_failure("slow", &status(429, Some(1_500)), false, TOTAL);
        failover.after_failure("fast", &status(503, Some(100)), false, TOTAL);
        failover.after_failure("other", &status(500, None), false, TOTAL);
        assert_eq!(failover.retry_later().map(|(c, _)| c), Some("fast"));
    }

    #[test]
    fn cooling_candidates_give_503_with_the_soonest_recovery() {
        let mut failover: Failover<&str> = Failover::new(&settings(3, 0));
        assert!(failover.cooling_error().is_none());
        failover.note_cooling(None);
        failover.note_cooling(Some(Instant::now() + Duration::from_secs(20)));
        failover.note_cooling(Some(Instant::now() + Duration::from_secs(5)));
        let error = failover.cooling_error().unwrap();
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code, ErrorCode::UpstreamError);
        let wait = error.retry_after.unwrap();
        assert!(wait > Duration::from_secs(4) && wait <= Duration::from_secs(5), "{wait:?}");
        let mut unknown: Failover<&str> = Failover::new(&settings(3, 0));
        unknown.note_cooling(None);
        assert_eq!(unknown.cooling_error().unwrap().retry_after, Some(Duration::from_secs(1)));
    }
}
