//! Channel probes: one real, minimal call through a channel — a one-token chat
//! completion, or a one-word embedding for embedding models — to see whether it answers
//! and how fast. `veil admin channel test`, `POST /api/channels/{name}/test` and the
//! scheduled prober all use [`probe`].
//!
//! The prober ([`schedule`], owned by the app's task tracker and stopped by its
//! cancellation token) probes each channel that has a `probe_interval` on that cadence,
//! from start-up on, and feeds the health board. With several instances on one Redis only
//! the one holding the jobs lease probes (the others hear its verdicts through the shared
//! channel health), so a channel sees one probe per interval, not one per instance. A
//! probed channel is never given a live
//! call as its half-open trial: once its cool-down is over it is probed at once, and a
//! successful probe brings it back. Probes are the operator's own traffic: they are not
//! billed and leave no call record. The probe's request is fixed text, not a client's.

use crate::relay::ChannelCandidate;
use crate::state::AppState;
use futures_util::future::join_all;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use veil_domain::HealthState;
use veil_domain::{Channel, ChannelName, ModelName};
use veil_providers::{Endpoint, Provider, UpstreamError, UpstreamRequest};

/// How often the prober looks for channels due a probe.
const TICK: Duration = Duration::from_millis(250);

/// A probe that got an answer.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The upstream's name of the model probed.
    pub model: ModelName,
    /// Until the answer was complete.
    pub latency: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("the channel serves no model")]
    NoModel,
    #[error("{0}")]
    Upstream(UpstreamError),
}

impl ProbeError {
    /// For the operator: the error's kind and the upstream's own explanation.
    pub fn describe(&self) -> String {
        match self {
            Self::NoModel => self.to_string(),
            Self::Upstream(error) => format!("{error}: {}", error.client_message()),
        }
    }
}

/// One minimal call through `provider` (built for `channel`) to its first model.
pub async fn probe(provider: &dyn Provider, channel: &Channel) -> Result<ProbeReport, ProbeError> {
    let public = channel.models.first().ok_or(ProbeError::NoModel)?;
    let upstream = channel.upstream_model(public).clone();
    let is_embedding = upstream.as_str().contains("embed");
    let (endpoint, body) = if is_embedding {
        (Endpoint::Embeddings, json!({"input": "ping"}))
    } else {
        (Endpoint::ChatCompletions, json!({"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}))
    };
    let Value::Object(body) = body else { return Err(ProbeError::NoModel) };
    let started = Instant::now();
    provider
        .send(UpstreamRequest { endpoint, body: Arc::new(body), model: upstream.clone(), stream: false, files: None })
        .await
        .map_err(ProbeError::Upstream)?;
    Ok(ProbeReport { model: upstream, latency: started.elapsed() })
}

/// Probes `candidate` and records the result on the health board.
pub(crate) async fn probe_and_record(
    state: &AppState,
    candidate: &ChannelCandidate,
) -> Result<ProbeReport, ProbeError> {
    let name = &candidate.channel.name;
    let result = probe(candidate.attached.as_ref(), &candidate.channel).await;
    match &result {
        Ok(report) => state.health.record_probe(name, Ok(report.latency)),
        Err(ProbeError::Upstream(error)) => {
            tracing::debug!(channel = name.as_str(), error = %error, "channel probe failed");
            state.health.record_probe(name, Err(error));
        }
        Err(ProbeError::NoModel) => {}
    }
    result
}

/// The scheduled prober; see the module docs.
pub(crate) async fn schedule(
    state: Arc<AppState>,
    leadership: Option<Arc<veil_cluster::Leadership>>,
    stop: CancellationToken,
) {
    let mut next_due: HashMap<ChannelName, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if leadership.as_ref().is_some_and(|lease| !lease.is_leader()) {
            continue;
        }
        let snapshot = state.snapshot.load_full();
        let now = Instant::now();
        next_due.retain(|name, _| {
            snapshot.catalogue.channel_by_name(name.as_str()).is_some_and(|c| c.channel.probe_interval.is_some())
        });
        let mut due: Vec<ChannelCandidate> = Vec::new();
        for candidate in snapshot.catalogue.channels() {
            let Some(interval) = candidate.channel.probe_interval else { continue };
            let name = &candidate.channel.name;
            // A cool-down just ended: the probe is the half-open trial, so it goes now.
            let awaiting_trial = state.health.view(name).state == HealthState::HalfOpen;
            let next = next_due.entry(name.clone()).or_insert(now);
            if now >= *next || awaiting_trial {
                *next = now + interval;
                due.push(Arc::clone(candidate));
            }
        }
        if due.is_empty() {
            continue;
        }
        let probes = join_all(due.iter().map(|candidate| probe_and_record(&state, candidate)));
        tokio::select! {
            () = stop.cancelled() => return,
            _ = probes => {}
        }
    }
}
