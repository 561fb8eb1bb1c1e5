//! Rate limits: requests per minute, tokens per minute and concurrent calls, per API key,
//! user or upstream channel.
//!
//! This crate owns one decision: may this call start now? The caller names every scope the
//! call touches together with that scope's current limits (a [`Demand`]); a [`Limiter`]
//! admits the call against all of them or refuses it with how long to wait. Limits travel
//! with each call instead of being registered, so an operator's edit applies to the next
//! call. The crate does no IO and knows nothing about HTTP beyond the header names in
//! [`RateHeaders::pairs`].
//!
//! What every backend promises:
//!
//! - **All or nothing.** A refused call takes nothing from any scope.
//! - **Reserve, then reconcile.** A call's tokens are estimated up front and reserved against
//!   every tokens-per-minute limit; [`Admission::reconcile`] corrects them with the actual
//!   count. A call that used more than estimated puts the bucket in debt, so the next calls
//!   wait; an admission dropped without reconciling keeps its (conservative) reservation.
//! - **RAII leases.** An [`Admission`] holds its concurrency leases until dropped and does
//!   not borrow the limiter, so it can travel inside a response stream. Reconciling and
//!   releasing are synchronous because they run from `Drop`.
//! - **Requests per minute follow GCRA** with a burst of the whole minute: after a quiet
//!   minute `rpm` calls pass at once, then one per `60 s / rpm`. Over any span between two
//!   admitted calls at most `rpm + span · rpm / 60 s` calls are admitted, so a sliding
//!   60-second window can see up to `2 · rpm − 1`, while any longer stretch averages `rpm`.
//! - **A limit of zero blocks**: every call is refused with [`Refusal::never_fits`].
//!
//! [`InMemoryLimiter`] is the single-process backend; a shared one (Redis) implements the
//! same trait.

mod clock;
mod headers;
mod memory;
pub mod verdict;

pub use clock::{Clock, ManualClock, SystemClock};
pub use headers::{RateHeaders, retry_after_header};
pub use memory::InMemoryLimiter;

use std::fmt;
use std::time::Duration;
use veil_domain::{ChannelName, KeyId, KeyLimits, UserId};

/// One scope's limits; `None` means "not limited here".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub max_concurrent: Option<u32>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.max_concurrent.is_none()
    }
}

impl From<&KeyLimits> for Limits {
    fn from(limits: &KeyLimits) -> Self {
        Self { rpm: limits.rpm, tpm: limits.tpm, max_concurrent: limits.max_concurrent }
    }
}

/// Whose budget a call draws on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    Key(KeyId),
    User(UserId),
    Channel(ChannelName),
}

impl Scope {
    /// A stable, low-cardinality label for logs, metrics and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Key(_) => "key",
            Self::User(_) => "user",
            Self::Channel(_) => "channel",
        }
    }
}

/// A scope and the limits it has right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub scope: Scope,
    pub limits: Limits,
}

impl Demand {
    pub fn new(scope: Scope, limits: Limits) -> Self {
        Self { scope, limits }
    }
}

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Requests,
    Tokens,
    Concurrency,
    /// No limit refused: a shared backend could not be asked, and the operator chose to
    /// refuse calls rather than admit them unchecked ("fail closed"). Not the caller's
    /// fault, so the server answers it as a service error, not as a rate limit.
    Unavailable,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::Concurrency => "concurrency",
            Self::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call that may not start now.
///
/// When several limits refuse, this names the one with the longest wait, so `retry_after`
/// is how long until the call as a whole would be admitted (if nothing else happens).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}",
    if *resource == Resource::Unavailable { "rate limiting is unavailable".to_owned() }
    else if *never_fits { format!("{scope_kind} {resource} limit reached, and this call can never fit it") }
    else { format!("{scope_kind} {resource} limit reached; retry in {}s", retry_after_header(*retry_after)) }
)]
pub struct Refusal {
    /// [`Scope::kind`] of the refusing scope.
    pub scope_kind: &'static str,
    pub resource: Resource,
    pub retry_after: Duration,
    /// Waiting will not help: the estimate exceeds the whole tokens-per-minute budget, or
    /// the limit is zero; `retry_after` is then [`NEVER_FITS_RETRY`].
    pub never_fits: bool,
    /// The state as it was, since a refusal takes nothing.
    pub headers: RateHeaders,
}

impl Refusal {
    /// The limiter's backend cannot be reached and calls fail closed ([`Resource::Unavailable`]).
    pub fn unavailable() -> Self {
        Self {
            scope_kind: "limiter",
            resource: Resource::Unavailable,
            retry_after: CONCURRENCY_RETRY,
            never_fits: false,
            headers: RateHeaders::default(),
        }
    }

    /// Whether this refusal is [`Refusal::unavailable`] rather than a limit reached.
    pub fn is_unavailable(&self) -> bool {
        self.resource == Resource::Unavailable
    }
}

/// `retry_after` when a concurrency limit is full. Leases come back when calls end, which
/// no clock predicts, so every backend gives this same short hint.
pub const CONCURRENCY_RETRY: Duration = Duration::from_secs(1);

/// `retry_after` for a call that can never be admitted under the current limits.
pub const NEVER_FITS_RETRY: Duration = Duration::from_secs(60);

/// Admits calls against a set of limits. Backend-neutral: the in-memory limiter and a
/// shared (Redis) one implement the same contract, described in the crate docs.
#[async_trait::async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Admits one call against every demand at once, all or nothing: if any demand is over
    /// its limit, nothing is taken from any of them. `tokens` is the call's estimated token
    /// count, reserved against every `tpm` limit (reserve, then reconcile). Demands whose
    /// limits are all `None` are skipped.
    async fn admit(&self, demands: &[Demand], tokens: u64) -> Result<Admission, Refusal>;

    /// Drops state that is back at rest. The server calls it about once a minute; backends
    /// whose state expires by itself (Redis keys have a time-to-live) need not do anything.
    fn prune(&self) {}
}

/// A backend's hold on an admitted call. Dropping it releases the concurrency leases;
/// implement `Drop` for that.
///
/// Both reconciling and dropping run synchronously, often from the `Drop` of a response
/// stream, so they must not block: a networked backend hands the work to a background task.
pub trait Reservation: Send + Sync {
    /// Corrects the token reservations from the estimate to `actual_tokens`. [`Admission`]
    /// calls this at most once.
    fn reconcile(&mut self, actual_tokens: u64);
}

/// An admitted call. Keep it alive for as long as the call runs: dropping it ends the
/// call's concurrency leases.
#[must_use = "dropping an admission releases its concurrency leases at once"]
pub struct Admission {
    headers: RateHeaders,
    reservation: Option<Box<dyn Reservation>>,
    reconciled: bool,
}

impl Admission {
    /// For backends: wraps what they hold for an admitted call.
    pub fn new(headers: RateHeaders, reservation: Option<Box<dyn Reservation>>) -> Self {
        Self { headers, reservation, reconciled: false }
    }

    /// A call no limit applies to.
    pub fn unlimited() -> Self {
        Self::new(RateHeaders::default(), None)
    }

    /// The rate-limit state just after this call was admitted.
    pub fn headers(&self) -> &RateHeaders {
        &self.headers
    }

    /// Settles the token reservation with the call's actual token count: gives back what
    /// the estimate overshot, or takes the shortfall (possibly into debt). Only the first
    /// call counts, since a reservation can be corrected once; later calls do nothing.
    pub fn reconcile(&mut self, actual_tokens: u64) {
        if self.reconciled {
            return;
        }
        self.reconciled = true;
        if let Some(reservation) = self.reservation.as_mut() {
            reservation.reconcile(actual_tokens);
        }
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("headers", &self.headers)
            .field("reconciled", &self.reconciled)
            .finish_non_exhaustive()
    }
}
