//! `[risk]`: the anomaly rules risk control applies, validated. Every rule is optional
//! and every field of a rule too; what is left out keeps the default below.
//!
//! ```toml
//! [risk]
//! # An hour's spend of one key above `factor` × that key's own hourly baseline (the mean
//! # of its previous hours with any spend, over the last 24 h, never below `min_spend`),
//! # and above `min_spend`.
//! spend_spike = { factor = 10, min_spend = "1.0", action = "warn" }
//! # More distinct client networks (IPv4 /24, IPv6 /48) using one key within `window`.
//! networks = { max = 5, window = "24h", action = "warn" }
//! # More failed authentications (no key, malformed, unknown, revoked or expired key)
//! # from one client address (IPv4 address, IPv6 /64) within `window`.
//! auth_failures = { max = 20, window = "1m", action = "block" }
//! ```
//!
//! Key rules take `off | warn | suspend`: `warn` writes a `risk.warn` audit entry and a
//! log line; `suspend` also suspends the key (`403 key_suspended` until an admin lifts
//! it). The address rule takes `off | warn | block`: `block` refuses every further attempt
//! from the address with `429 rate_limit_exceeded` and `retry-after` until one window
//! has passed since the block began.
//!
//! Defaults: spend spikes and new networks only warn (a false positive must not cut a
//! paying customer off unless the operator chose so); failed authentications block at
//! more than 20 a minute, which no honest client reaches but stops key guessing.

use crate::ConfigError;
use crate::decimal::DecimalText;
use crate::duration::parse_duration;
use crate::raw::{RawRisk, RawSpendSpike, RawWindowRule};
use std::time::Duration;
use veil_domain::{Money, Multiplier};

/// What a key rule does when it triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RiskAction {
    Off,
    /// Audit (`risk.warn`) and log.
    Warn,
    /// Audit (`key.suspend`), log, and suspend the key.
    Suspend,
}

/// What the failed-authentication rule does when it triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAction {
    Off,
    /// Audit (`risk.warn`) and log.
    Warn,
    /// Audit (`risk.block`), log, and refuse the address until the window passes.
    Block,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendSpikeRule {
    /// How many times its baseline a key's hour may cost before the rule triggers.
    pub factor: Multiplier,
    /// The baseline's floor, and the least an hour must cost to trigger (more than 0).
    pub min_spend: Money,
    pub action: RiskAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworksRule {
    /// Distinct networks allowed per key within `window`; one more triggers.
    pub max: u32,
    pub window: Duration,
    pub action: RiskAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailuresRule {
    /// Failures allowed per address within `window`; one more triggers.
    pub max: u32,
    pub window: Duration,
    pub action: BlockAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiskSettings {
    pub spend_spike: SpendSpikeRule,
    pub networks: NetworksRule,
    pub auth_failures: AuthFailuresRule,
}

/// The largest `networks.max`: the monitor keeps up to `max + 1` networks per key.
pub const MAX_NETWORKS: u32 = 1_000;
/// The largest `auth_failures.max`: the monitor keeps up to `max + 1` failure times per address.
pub const MAX_AUTH_FAILURES: u32 = 10_000;
const MAX_WINDOW: Duration = Duration::from_secs(30 * 86_400);

impl Default for RiskSettings {
    fn default() -> Self {
        Self {
            spend_spike: SpendSpikeRule {
                factor: Multiplier::from_millionths(10_000_000),
                min_spend: Money::from_nanos(1_000_000_000),
                action: RiskAction::Warn,
            },
            networks: NetworksRule { max: 5, window: Duration::from_secs(86_400), action: RiskAction::Warn },
            auth_failures: AuthFailuresRule { max: 20, window: Duration::from_secs(60), action: BlockAction::Block },
        }
    }
}

pub(crate) fn validate(raw: &RawRisk) -> Result<RiskSettings, ConfigError> {
    let defaults = RiskSettings::default();
    Ok(RiskSettings {
        spend_spike: match &raw.spend_spike {
            Some(rule) => spend_spike(rule, defaults.spend_spike)?,
            None => defaults.spend_spike,
        },
        networks: match &raw.networks {
            Some(rule) => {
                let (max, window) =
                    window_rule("risk.networks", rule, defaults.networks.max, defaults.networks.window)?;
                if max > MAX_NETWORKS {
                    return Err(ConfigError::invalid("risk.networks.max", format!("must be at most {MAX_NETWORKS}")));
                }
                let action = match &rule.action {
                    Some(a) => key_action("risk.networks.action", a)?,
                    None => defaults.networks.action,
                };
                NetworksRule { max, window, action }
            }
            None => defaults.networks,
        },
        auth_failures: match &raw.auth_failures {
            Some(rule) => {
                let (max, window) =
                    window_rule("risk.auth_failures", rule, defaults.auth_failures.max, defaults.auth_failures.window)?;
                if max > MAX_AUTH_FAILURES {
                    return Err(ConfigError::invalid(
                        "risk.auth_failures.max",
                        format!("must be at most {MAX_AUTH_FAILURES}"),
                    ));
                }
                let action = match rule.action.as_deref() {
                    None => defaults.auth_failures.action,
                    Some("off") => BlockAction::Off,
                    Some("warn") => BlockAction::Warn,
                    Some("block") => BlockAction::Block,
                    Some(_) => {
                        return Err(ConfigError::invalid("risk.auth_failures.action", "must be off, warn or block"));
                    }
                };
                AuthFailuresRule { max, window, action }
            }
            None => defaults.auth_failures,
        },
    })
}

fn spend_spike(rule: &RawSpendSpike, defaults: SpendSpikeRule) -> Result<SpendSpikeRule, ConfigError> {
    let factor = match &rule.factor {
        Some(DecimalText(text)) => Multiplier::parse_decimal(text)
            .map_err(|e| ConfigError::invalid("risk.spend_spike.factor", e.to_string()))?,
        None => defaults.factor,
    };
    if factor < Multiplier::ONE {
        return Err(ConfigError::invalid("risk.spend_spike.factor", "must be at least 1"));
    }
    let min_spend = match &rule.min_spend {
        Some(DecimalText(text)) => {
            Money::parse_decimal(text).map_err(|e| ConfigError::invalid("risk.spend_spike.min_spend", e.to_string()))?
        }
        None => defaults.min_spend,
    };
    // A zero floor would make any first hour of spend a spike of an infinite factor.
    if min_spend.nanos() <= 0 {
        return Err(ConfigError::invalid("risk.spend_spike.min_spend", "must be more than 0"));
    }
    let action = match &rule.action {
        Some(a) => key_action("risk.spend_spike.action", a)?,
        None => defaults.action,
    };
    Ok(SpendSpikeRule { factor, min_spend, action })
}

fn window_rule(
    at: &str,
    rule: &RawWindowRule,
    default_max: u32,
    default_window: Duration,
) -> Result<(u32, Duration), ConfigError> {
    let max = rule.max.unwrap_or(default_max);
    if max == 0 {
        return Err(ConfigError::invalid(format!("{at}.max"), "must be at least 1"));
    }
    let window = match &rule.window {
        Some(text) => parse_duration(text).map_err(|m| ConfigError::invalid(format!("{at}.window"), m))?,
        None => default_window,
    };
    if window < Duration::from_secs(1) || window > MAX_WINDOW {
        return Err(ConfigError::invalid(format!("{at}.window"), "must be from 1s to 30d"));
    }
    Ok((max, window))
}

fn key_action(at: &str, raw: &str) -> Result<RiskAction, ConfigError> {
    match raw {
        "off" => Ok(RiskAction::Off),
        "warn" => Ok(RiskAction::Warn),
        "suspend" => Ok(RiskAction::Suspend),
        _ => Err(ConfigError::invalid(at, "must be off, warn or suspend")),
    }
}
