//! Channel states as the store keeps them (`channel_states`, migration 0013): whether a
//! channel is disabled and why, and the latest health snapshot a server reported.
//!
//! Disabling lives here rather than in `channels.enabled`, because the config file's seed
//! rewrites that column at every start: a channel whose credential the upstream rejected
//! must stay disabled until an admin enables it again. Disabling and enabling bump the
//! revision (servers drop or re-add the channel); health snapshots do not (they are for
//! `veil admin`, which reads the store without a server).

use crate::StoreError;
use crate::codec::{Columns, corrupt, in_table};
use veil_domain::{ChannelName, HealthState, Timestamp};

/// Why a channel is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisabledReason {
    /// The upstream answered 401 or 403 to the channel's own credential.
    CredentialRejected,
    /// An admin disabled it.
    Admin,
}

impl DisabledReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CredentialRejected => "credential_rejected",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "credential_rejected" => Some(Self::CredentialRejected),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// One channel's health snapshot, as a server reports it every few seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelHealthSnapshot {
    pub channel: ChannelName,
    pub state: HealthState,
    /// Calls, and failed calls, within the server's error-rate window.
    pub calls: u32,
    pub failures: u32,
    pub latency_p50_ms: Option<u32>,
    pub latency_p95_ms: Option<u32>,
    pub cooling_until: Option<Timestamp>,
    pub updated_at: Timestamp,
}

impl ChannelHealthSnapshot {
    /// The failed share of the window's calls; 0 without calls.
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { f64::from(self.failures) / f64::from(self.calls) }
    }
}

/// What the store holds about one channel's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelState {
    pub channel: ChannelName,
    /// `Some` while the channel is disabled (servers leave it out of routing).
    pub disabled_reason: Option<DisabledReason>,
    pub disabled_at: Option<Timestamp>,
    /// The latest snapshot any server reported, if one did.
    pub health: Option<ChannelHealthSnapshot>,
}

pub(crate) fn state(row: &impl Columns) -> Result<ChannelState, StoreError> {
    in_table("channel_states", || {
        let channel = ChannelName::parse(&row.text("channel")?).map_err(|_| corrupt("channel"))?;
        let disabled_reason = row
            .opt_text("disabled_reason")?
            .map(|text| DisabledReason::parse(&text).ok_or_else(|| corrupt("disabled_reason")))
            .transpose()?;
        let count = |column: &'static str| {
            row.opt_int(column)?.map(|value| u32::try_from(value).map_err(|_| corrupt(column))).transpose()
        };
        let health = match (row.opt_text("health_state")?, row.opt_int("health_updated_at")?) {
            (Some(state), Some(updated_at)) => Some(ChannelHealthSnapshot {
                channel: channel.clone(),
                state: HealthState::parse(&state).ok_or_else(|| corrupt("health_state"))?,
                calls: count("calls_in_window")?.unwrap_or(0),
                failures: count("failures_in_window")?.unwrap_or(0),
                latency_p50_ms: count("latency_p50_ms")?,
                latency_p95_ms: count("latency_p95_ms")?,
                cooling_until: row.opt_int("cooling_until")?.map(Timestamp::from_unix_millis),
                updated_at: Timestamp::from_unix_millis(updated_at),
            }),
            _ => None,
        };
        Ok(ChannelState {
            channel,
            disabled_reason,
            disabled_at: row.opt_int("disabled_at")?.map(Timestamp::from_unix_millis),
            health,
        })
    })
}
