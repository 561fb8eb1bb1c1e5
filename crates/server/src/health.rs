//! The channel health board: every upstream attempt's outcome and latency, fed to the
//! pure state machine in `veil_routing::health`, and what follows from it.
//!
//! [`HealthBoard`] is the interface the relay and the prober use: [`HealthBoard::admit`]
//! before an attempt (a channel cooling down is refused; a half-open one lets exactly one
//! trial through), [`Attempt::finish`] after it, [`HealthBoard::record_probe`] for
//! scheduled probes. Each instance decides from its own board in memory, without a Redis
//! round trip per call.
//!
//! With `[redis]`, what changes routing is shared ([`veil_cluster::SharedHealth`]): the
//! instance that cools a channel down or sees it recover tells the others (within a round
//! trip), and they apply it to their boards, so no instance keeps sending calls to a channel
//! another one found failing. The half-open trial after a cool-down takes a lease in Redis
//! first, so one instance of the cluster sends it; the others wait for its news, asking
//! again every second in case it never comes (the trial's instance died). Redis being away
//! only makes each instance decide alone again, as without `[redis]`.
//!
//! A credential rejection (401/403 from the upstream) marks the channel disabled on this
//! instance at once, and the [`HealthWorker`] (owned by the app's task tracker) makes it
//! durable: `channel_states` in the store (which bumps the revision, so every instance
//! drops the channel), an audit entry, a `channel.disabled` webhook. Cool-downs and
//! recoveries become `channel.cooling_down` / `channel.recovered` webhooks. Every few
//! seconds the worker also writes each channel's health snapshot to the store (for `veil
//! admin`, which runs without a server) and to the metrics.
//!
//! Nothing here sees content: outcomes are kinds, statuses and durations.

use crate::state::{AppState, ProviderCatalogue};
use crate::{account, metrics, notify, refresh};
use serde_json::json;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veil_cluster::{HealthNews, SharedHealth, TrialLease};
use veil_config::{RoutingSettings, Settings};
use veil_domain::{ChannelName, Timestamp};
use veil_providers::{HttpClient, UpstreamError};
use veil_routing::health::{Admission, Board, HealthPolicy, HealthView, Outcome, Transition};
use veil_store::{ChannelHealthSnapshot, DisabledReason, HealthState, StoreError};

/// Health events waiting for the worker; more are dropped with a warning (the board
/// itself is already updated, only the webhook or the durable write is lost, and a
/// rejected credential is rejected again on the next call).
const QUEUE: usize = 1024;
/// How often health snapshots go to the store and the metrics.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// How long an instance waits before asking again for a trial another instance holds,
/// if that one's news has not come meanwhile.
const RECHECK_TRIAL: Duration = Duration::from_secs(1);
/// The audit log's actor for what routing does on its own.
pub const ACTOR: &str = "routing";

/// What the worker acts on.
#[derive(Debug, Clone, PartialEq)]
enum HealthEvent {
    CredentialRejected {
        channel: ChannelName,
        upstream_status: u16,
    },
    CooledDown {
        channel: ChannelName,
        until: Timestamp,
        remaining: Duration,
        error_rate: f64,
        failed_trials: u32,
    },
    Recovered {
        channel: ChannelName,
    },
    /// A half-open trial that held the shared lease is over: give the lease back.
    TrialDone {
        channel: ChannelName,
    },
}

pub struct HealthBoard {
    board: Mutex<Board>,
    events: mpsc::Sender<HealthEvent>,
    /// With `[redis]`: the other instances' boards.
    shared: Option<Arc<SharedHealth>>,
    /// How long a trial lease lasts: as long as a local trial counts as running.
    trial_ttl: Duration,
}

/// Makes durable, announces and saves what the board decides; see the module docs.
pub struct HealthWorker {
    events: mpsc::Receiver<HealthEvent>,
}

pub fn policy(settings: &RoutingSettings) -> HealthPolicy {
    HealthPolicy {
        error_rate_threshold: settings.error_rate_threshold,
        min_calls: settings.min_calls,
        window: settings.window,
        cooldown: settings.cooldown,
        max_cooldown: settings.max_cooldown,
    }
}

/// The background work health needs: the health worker, the webhook sender (when one is
/// configured) and the scheduled prober.
pub struct Workers {
    health: HealthWorker,
    notify: Option<notify::NotifyWorker>,
    shared: Option<Arc<SharedHealth>>,
}

/// The board, the notifier and their workers, for `settings`; with `[redis] url`, the
/// board shares cool-downs, recoveries and trials through it.
pub async fn start(
    settings: &Settings,
    http: HttpClient,
) -> Result<(HealthBoard, notify::Notifier, Workers), veil_cluster::ClusterError> {
    let (mut board, health) = board(&settings.routing);
    if let Some(url) = settings.redis_url.as_deref() {
        board.shared = Some(Arc::new(SharedHealth::connect(url, &settings.redis_key_prefix).await?));
    }
    let shared = board.shared.clone();
    let (notifier, notify) = notify::channel(&settings.notifications, http);
    Ok((board, notifier, Workers { health, notify, shared }))
}

impl Workers {
    /// Runs the workers on `tracker` until `stop`. With `leadership` (several instances on
    /// one Redis) only the job leader sends scheduled probes; the others learn their verdicts
    /// through the shared health news.
    pub fn spawn(
        self,
        tracker: &TaskTracker,
        state: &Arc<AppState>,
        leadership: Option<Arc<veil_cluster::Leadership>>,
        stop: &CancellationToken,
    ) {
        tracker.spawn(self.health.run(Arc::clone(state), stop.clone()));
        if let Some(notify) = self.notify {
            // Ends once every sender is gone (the state is dropped last) or its grace ran out.
            tracker.spawn(notify.run(Arc::clone(&state.store), stop.clone()));
        }
        tracker.spawn(crate::probe::schedule(Arc::clone(state), leadership, stop.clone()));
        if let Some(shared) = self.shared {
            tracker.spawn(follow_shared(Arc::clone(state), shared, stop.clone()));
        }
    }
}

/// Applies the other instances' news to this board until `stop`.
async fn follow_shared(state: Arc<AppState>, shared: Arc<SharedHealth>, stop: CancellationToken) {
    let on_news = |news: HealthNews| {
        state.health.hear(news);
        std::future::ready(())
    };
    shared.follow(on_news, stop).await;
}

/// A board for `settings` and the worker that follows it.
pub fn board(settings: &RoutingSettings) -> (HealthBoard, HealthWorker) {
    let (sender, receiver) = mpsc::channel(QUEUE);
    let board = HealthBoard {
        board: Mutex::new(Board::new(policy(settings))),
        events: sender,
        shared: None,
        trial_ttl: settings.window,
    };
    (board, HealthWorker { events: receiver })
}

/// What an attempt's result says about the channel.
enum Verdict {
    Outcome(Outcome),
    /// The upstream refused the channel's own credential.
    CredentialRejected(u16),
    /// The request never reached the upstream (the channel's configuration, or a request
    /// this upstream type cannot take): nothing to learn about its health.
    NotSent,
}

fn verdict(result: Result<Duration, &UpstreamError>) -> Verdict {
    let error = match result {
        Ok(latency) => return Verdict::Outcome(Outcome::Success { latency }),
        Err(error) => error,
    };
    match error {
        UpstreamError::Status { status: status @ (401 | 403), .. } => Verdict::CredentialRejected(*status),
        UpstreamError::Status { status: 429, retry_after, .. } => {
            Verdict::Outcome(Outcome::RateLimited { retry_after: *retry_after })
        }
        UpstreamError::Status { status, .. } if *status >= 500 => Verdict::Outcome(Outcome::Failure),
        UpstreamError::Status { .. } => Verdict::Outcome(Outcome::Answered),
        UpstreamError::Connect
        | UpstreamError::Timeout(_)
        | UpstreamError::Malformed(_)
        | UpstreamError::Reported { .. }
        | UpstreamError::Truncated => Verdict::Outcome(Outcome::Failure),
        UpstreamError::MissingCredential { .. }
        | UpstreamError::Misconfigured(_)
        | UpstreamError::Unsupported(_)
        | UpstreamError::EndpointUnsupported(_)
        | UpstreamError::Untranslatable(_) => Verdict::NotSent,
    }
}

/// The fixed word the attempt metric counts the outcome under.
fn outcome_label(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Outcome(Outcome::Success { .. }) => "ok",
        Verdict::Outcome(Outcome::Answered) => "client_error",
        Verdict::Outcome(Outcome::Failure) => "failed",
        Verdict::Outcome(Outcome::RateLimited { .. }) => "rate_limited",
        Verdict::Outcome(Outcome::Abandoned) => "abandoned",
        Verdict::CredentialRejected(_) => "credential_rejected",
        Verdict::NotSent => "not_sent",
    }
}

/// An attempt the board let through. Finish it with the result; dropped unfinished (the
/// client went away mid-attempt) it frees a half-open trial.
pub struct Attempt<'a> {
    board: &'a HealthBoard,
    channel: ChannelName,
    finished: bool,
    /// The attempt is the half-open trial and holds the shared trial lease.
    holds_lease: bool,
}

impl Attempt<'_> {
    fn new(board: &HealthBoard, channel: ChannelName, holds_lease: bool) -> Attempt<'_> {
        Attempt { board, channel, finished: false, holds_lease }
    }

    /// Records the attempt: `Ok(latency until the answer started)` or the error.
    pub fn finish(mut self, result: Result<Duration, &UpstreamError>) {
        self.finished = true;
        let verdict = verdict(result);
        metrics::upstream_attempt(self.channel.as_str(), outcome_label(&verdict));
        self.board.apply(&self.channel, verdict, false);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.board.apply(&self.channel, Verdict::Outcome(Outcome::Abandoned), false);
        }
        if self.holds_lease {
            // After the outcome's news in the queue, so the others hear the verdict before
            // another of them may take the next trial.
            self.board.queue(HealthEvent::TrialDone { channel: self.channel.clone() });
        }
    }
}

impl HealthBoard {
    fn lock(&self) -> MutexGuard<'_, Board> {
        // The board is plain data updated in short critical sections: a panic elsewhere
        // cannot leave it half-written in a way that matters.
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a live call may go to `channel` now. `Err` carries when it may again, if
    /// known (a cool-down's end). Only the half-open trial asks Redis (for the trial
    /// lease); every other decision is this board's alone.
    pub async fn admit(&self, channel: &ChannelName) -> Result<Attempt<'_>, Option<Instant>> {
        let admission = self.lock().admit(channel, Instant::now());
        match admission {
            Admission::Open => Ok(Attempt::new(self, channel.clone(), false)),
            Admission::Trial => {
                let Some(shared) = &self.shared else { return Ok(Attempt::new(self, channel.clone(), false)) };
                match shared.take_trial(channel.as_str(), self.trial_ttl).await {
                    TrialLease::Granted => Ok(Attempt::new(self, channel.clone(), true)),
                    // Redis is away: this instance's one local trial goes, as without Redis.
                    TrialLease::Unknown => Ok(Attempt::new(self, channel.clone(), false)),
                    // Another instance sends it: wait for its news, and ask again after a
                    // short while in case the news never comes (that instance died).
                    TrialLease::Elsewhere { lease_left } => {
                        Err(self.cool_locally(channel, lease_left.min(RECHECK_TRIAL), 0))
                    }
                    // A trial failed a moment ago and its news is on its way.
                    TrialLease::Cooling { remaining, failed_trials } => {
                        Err(self.cool_locally(channel, remaining, failed_trials))
                    }
                }
            }
            Admission::Refused { until } => Err(until),
        }
    }

    /// The trial this board granted is not this instance's to send: refuses `channel` here
    /// for `remaining` (unless news about it arrived while Redis was asked, which is newer);
    /// when the channel may take calls again, if known.
    fn cool_locally(&self, channel: &ChannelName, remaining: Duration, failed_trials: u32) -> Option<Instant> {
        let now = Instant::now();
        let until = now + remaining.max(Duration::from_millis(1));
        self.lock().trial_elsewhere(channel, until, failed_trials, now).then_some(until)
    }

    /// Applies another instance's news to this board.
    fn hear(&self, news: HealthNews) {
        let now = Instant::now();
        match news {
            HealthNews::CooledDown { channel, remaining, failed_trials } => {
                let Ok(name) = ChannelName::parse(&channel) else { return };
                if self.lock().cooled_elsewhere(&name, now + remaining, failed_trials, now) {
                    tracing::info!(channel = name.as_str(), "channel cooling down (seen by another instance)");
                }
            }
            HealthNews::Recovered { channel } => {
                let Ok(name) = ChannelName::parse(&channel) else { return };
                if self.lock().recovered_elsewhere(&name, now) {
                    tracing::info!(channel = name.as_str(), "channel recovered (seen by another instance)");
                }
            }
        }
    }

    fn queue(&self, event: HealthEvent) {
        if self.events.try_send(event).is_err() {
            tracing::warn!("the health event queue is full; an event was dropped");
        }
    }

    /// Records a scheduled probe's result (the half-open trial of a probed channel).
    pub fn record_probe(&self, channel: &ChannelName, result: Result<Duration, &UpstreamError>) {
        let verdict = verdict(result);
        self.apply(channel, verdict, true);
    }

    fn apply(&self, channel: &ChannelName, verdict: Verdict, probe: bool) {
        let now = Instant::now();
        let event = match verdict {
            Verdict::NotSent => {
                // Frees a trial, like an attempt without a verdict.
                self.lock().record(channel, Outcome::Abandoned, now);
                None
            }
            Verdict::CredentialRejected(status) => {
                let first = self.lock().disable(channel);
                first.then(|| HealthEvent::CredentialRejected { channel: channel.clone(), upstream_status: status })
            }
            Verdict::Outcome(outcome) => {
                let transition = {
                    let mut board = self.lock();
                    if probe { board.record_probe(channel, outcome, now) } else { board.record(channel, outcome, now) }
                };
                match transition {
                    Some(Transition::CooledDown { until, error_rate, failed_trials }) => {
                        Some(HealthEvent::CooledDown {
                            channel: channel.clone(),
                            until: timestamp_at(until, now),
                            remaining: until.saturating_duration_since(now),
                            error_rate,
                            failed_trials,
                        })
                    }
                    Some(Transition::Recovered) => Some(HealthEvent::Recovered { channel: channel.clone() }),
                    None => None,
                }
            }
        };
        if let Some(event) = event {
            match &event {
                HealthEvent::CredentialRejected { upstream_status, .. } => tracing::error!(
                    channel = channel.as_str(),
                    upstream_status,
                    "the upstream rejected the channel's credential; disabling the channel"
                ),
                HealthEvent::CooledDown { error_rate, .. } => {
                    tracing::warn!(channel = channel.as_str(), error_rate, "channel cooling down")
                }
                HealthEvent::Recovered { .. } => tracing::info!(channel = channel.as_str(), "channel recovered"),
                HealthEvent::TrialDone { .. } => {}
            }
            self.queue(event);
        }
    }

    /// The channel's health on this instance now.
    pub fn view(&self, channel: &ChannelName) -> HealthView {
        self.lock().view(channel, Instant::now())
    }

    /// The channel's health as the store keeps it.
    pub fn snapshot(&self, channel: &ChannelName) -> ChannelHealthSnapshot {
        let now = Instant::now();
        let view = self.lock().view(channel, now);
        snapshot_of(channel, &view, now, Timestamp::now())
    }

    /// Forgets what this instance knows about the channel (an admin enabled it again).
    pub fn reset(&self, channel: &ChannelName) {
        self.lock().reset(channel);
    }

    /// Follows a new catalogue: which channels take their trials from probes, and
    /// forgetting channels no longer routed to (a durably disabled channel leaves the
    /// catalogue, so its local mark is no longer needed).
    pub fn follow(&self, catalogue: &ProviderCatalogue) {
        let mut board = self.lock();
        board.retain(|name| catalogue.channel_by_name(name.as_str()).is_some());
        for candidate in catalogue.channels() {
            board.set_probed(&candidate.channel.name, candidate.channel.probe_interval.is_some());
        }
    }
}

/// The wall-clock time of `instant`, given that `now` is [`Timestamp::now`].
fn timestamp_at(instant: Instant, now: Instant) -> Timestamp {
    let ahead = i64::try_from(instant.saturating_duration_since(now).as_millis()).unwrap_or(i64::MAX);
    Timestamp::now().plus_millis(ahead)
}

fn millis(duration: Option<Duration>) -> Option<u32> {
    duration.map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
}

fn snapshot_of(channel: &ChannelName, view: &HealthView, now: Instant, wall: Timestamp) -> ChannelHealthSnapshot {
    ChannelHealthSnapshot {
        channel: channel.clone(),
        state: view.state,
        calls: view.calls,
        failures: view.failures,
        latency_p50_ms: millis(view.latency_p50),
        latency_p95_ms: millis(view.latency_p95),
        cooling_until: view.cooling_until.map(|until| {
            wall.plus_millis(i64::try_from(until.saturating_duration_since(now).as_millis()).unwrap_or(i64::MAX))
        }),
        updated_at: wall,
    }
}

/// The metric's encoding of a state (see `metrics::set_channel_health`).
fn metric_state(state: HealthState) -> u8 {
    match state {
        HealthState::Healthy => 0,
        HealthState::CoolingDown => 1,
        HealthState::HalfOpen => 2,
        HealthState::Disabled => 3,
    }
}

impl HealthWorker {
    /// Acts on health events and saves snapshots until `stop`; then acts on what is
    /// still queued, saves once more and returns.
    pub async fn run(mut self, state: Arc<AppState>, stop: CancellationToken) {
        let mut save = tokio::time::interval(SAVE_EVERY);
        save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                event = self.events.recv() => match event {
                    Some(event) => apply(&state, event).await,
                    None => return,
                },
                _ = save.tick() => save_snapshots(&state).await,
            }
        }
        self.events.close();
        while let Some(event) = self.events.recv().await {
            apply(&state, event).await;
        }
        save_snapshots(&state).await;
    }
}

async fn apply(state: &AppState, event: HealthEvent) {
    match event {
        HealthEvent::CredentialRejected { channel, upstream_status } => {
            // Failures are logged inside; the channel stays disabled on this instance.
            let _disabled =
                disable(state, &channel, DisabledReason::CredentialRejected, ACTOR.to_owned(), Some(upstream_status))
                    .await;
        }
        HealthEvent::CooledDown { channel, until, remaining, error_rate, failed_trials } => {
            if let Some(shared) = &state.health.shared {
                shared.cooled_down(channel.as_str(), remaining, failed_trials).await;
            }
            state.notifier.send(notify::Event::ChannelCoolingDown { channel, until, error_rate });
        }
        HealthEvent::Recovered { channel } => {
            if let Some(shared) = &state.health.shared {
                shared.recovered(channel.as_str()).await;
            }
            state.notifier.send(notify::Event::ChannelRecovered { channel });
        }
        HealthEvent::TrialDone { channel } => {
            if let Some(shared) = &state.health.shared {
                shared.release_trial(channel.as_str()).await;
            }
        }
    }
}

/// Disables `channel` durably for `reason`: the store (bumping the revision), an audit
/// entry and a webhook — each only if this call is the one that disabled it, so several
/// instances seeing one rejection report it once. Returns whether it did.
pub async fn disable(
    state: &AppState,
    channel: &ChannelName,
    reason: DisabledReason,
    actor: String,
    upstream_status: Option<u16>,
) -> Result<bool, StoreError> {
    let disabled = match state.store.disable_channel(channel, reason, Timestamp::now()).await {
        Ok(disabled) => disabled,
        Err(error) => {
            tracing::error!(channel = channel.as_str(), error = %error, "could not disable the channel in the store");
            return Err(error);
        }
    };
    if !disabled {
        return Ok(false);
    }
    let mut details = json!({"reason": reason.as_str()});
    if let Some(status) = upstream_status {
        details["upstream_status"] = json!(status);
    }
    if let Err(error) =
        account::audit(state.store.as_ref(), actor, "channel.disable", None, Some(channel.to_string()), details).await
    {
        tracing::error!(channel = channel.as_str(), error = %error, "could not audit a channel's disabling");
    }
    state.notifier.send(notify::Event::ChannelDisabled {
        channel: channel.clone(),
        reason: reason.as_str(),
        upstream_status,
    });
    if let Err(error) = refresh::refresh_once(state).await {
        tracing::warn!(error = %error, "could not refresh after disabling a channel");
    }
    Ok(true)
}

async fn save_snapshots(state: &AppState) {
    let snapshot = state.snapshot.load_full();
    let now = Instant::now();
    let wall = Timestamp::now();
    let saved: Vec<ChannelHealthSnapshot> = {
        let board = state.health.lock();
        snapshot
            .catalogue
            .channels()
            .map(|candidate| {
                let name = &candidate.channel.name;
                snapshot_of(name, &board.view(name, now), now, wall)
            })
            .collect()
    };
    for channel in &saved {
        metrics::set_channel_health(channel.channel.as_str(), metric_state(channel.state), channel.error_rate());
    }
    if let Err(error) = state.store.save_channel_health(&saved).await {
        tracing::warn!(error = %error, "could not save channel health snapshots");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<Duration>) -> UpstreamError {
        UpstreamError::Status { status, retry_after, message: String::new(), code: None }
    }

    #[test]
    fn results_are_judged_by_kind() {
        let judged = |result: Result<Duration, &UpstreamError>| outcome_label(&verdict(result));
        assert_eq!(judged(Ok(Duration::from_millis(5))), "ok");
        assert_eq!(judged(Err(&status(401, None))), "credential_rejected");
        assert_eq!(judged(Err(&status(403, None))), "credential_rejected");
        assert_eq!(judged(Err(&status(429, Some(Duration::from_secs(1))))), "rate_limited");
        assert_eq!(judged(Err(&status(503, None))), "failed");
        assert_eq!(judged(Err(&status(400, None))), "client_error");
        assert_eq!(judged(Err(&UpstreamError::Connect)), "failed");
        assert_eq!(judged(Err(&UpstreamError::EndpointUnsupported("x"))), "not_sent");
        assert_eq!(judged(Err(&UpstreamError::MissingCredential { env: "K".into() })), "not_sent");
    }

    #[tokio::test]
    async fn a_rejected_credential_disables_at_once_and_is_reported_once() {
        let (board, mut worker) = board(&RoutingSettings::default());
        let name = ChannelName::parse("a").unwrap();
        let attempt = board.admit(&name).await.unwrap();
        attempt.finish(Err(&status(401, None)));
        assert!(board.admit(&name).await.is_err(), "no further call goes to it");
        assert_eq!(board.view(&name).state, HealthState::Disabled);
        board.record_probe(&name, Err(&status(401, None)));
        assert_eq!(
            worker.events.try_recv().unwrap(),
            HealthEvent::CredentialRejected { channel: name.clone(), upstream_status: 401 }
        );
        assert!(worker.events.try_recv().is_err(), "reported once");
        board.reset(&name);
        assert!(board.admit(&name).await.is_ok());
    }

    #[tokio::test]
    async fn an_abandoned_trial_is_freed() {
        let settings = RoutingSettings {
            min_calls: 1,
            cooldown: Duration::from_millis(1),
            max_cooldown: Duration::from_millis(1),
            ..RoutingSettings::default()
        };
        let (board, mut worker) = board(&settings);
        let name = ChannelName::parse("a").unwrap();
        board.admit(&name).await.unwrap().finish(Err(&UpstreamError::Connect));
        assert!(matches!(worker.events.try_recv(), Ok(HealthEvent::CooledDown { .. })));
        std::thread::sleep(Duration::from_millis(2));
        let trial = board.admit(&name).await.unwrap();
        assert!(board.admit(&name).await.is_err(), "one trial at a time");
        drop(trial);
        board.admit(&name).await.unwrap().finish(Ok(Duration::from_millis(3)));
        assert_eq!(worker.events.try_recv().unwrap(), HealthEvent::Recovered { channel: name.clone() });
        assert_eq!(board.view(&name).state, HealthState::Healthy);
    }
}
