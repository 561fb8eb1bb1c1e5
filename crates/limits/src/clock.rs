//! Time as the limiter sees it, injectable so tests never sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to. Clones share the same time, so a test keeps one
/// clone and hands another to the limiter.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    elapsed_ns: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self { start: Instant::now(), elapsed_ns: Arc::new(AtomicU64::new(0)) }
    }

    /// Moves time forward, saturating at about 584 years.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed is enough: the counter is the only data, and a single atomic's
        // modification order is total.
        let _ = self.elapsed_ns.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |ns| Some(ns.saturating_add(by)));
    }

    /// How far the clock has been advanced since it was made.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.elapsed_ns.load(Ordering::Relaxed))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        // Beyond the platform's Instant range, read the start instead of panicking; the
        // limiter treats time that goes backwards as standing still.
        self.start.checked_add(self.elapsed()).unwrap_or(self.start)
    }
}
