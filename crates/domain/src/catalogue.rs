//! Channels (upstream endpoints with a credential reference and a data policy) and
//! public models with their prices.

use crate::money::{Money, Multiplier};
use crate::names::{ChannelName, GroupName, ModelName};
use crate::policy::DataPolicy;
use crate::record::TokenUsage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Openai,
    Azure,
    Anthropic,
    Gemini,
    Bedrock,
    /// Veil's built-in test provider: answers locally, never leaves the process.
    Echo,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Bedrock => "bedrock",
            Self::Echo => "echo",
        }
    }
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "openai" => Some(Self::Openai),
            "azure" => Some(Self::Azure),
            "anthropic" => Some(Self::Anthropic),
            "gemini" => Some(Self::Gemini),
            "bedrock" => Some(Self::Bedrock),
            "echo" => Some(Self::Echo),
            _ => None,
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-channel upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    /// Longest silence between two stream events.
    pub idle: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(120),
            total: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    pub name: ChannelName,
    pub kind: ChannelKind,
    /// What the vendor's own SDK uses as its base URL, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Name of the environment variable holding the credential (never the credential).
    pub api_key_env: Option<String>,
    pub models: Vec<ModelName>,
    /// Public name → upstream name.
    pub model_mapping: BTreeMap<ModelName, ModelName>,
    /// Larger is tried first.
    pub priority: i32,
    /// Share inside one priority tier.
    pub weight: u32,
    /// `None`: every group.
    pub groups: Option<Vec<GroupName>>,
    pub policy: DataPolicy,
    pub timeouts: Timeouts,
    pub enabled: bool,
    pub managed: bool,
}

impl Channel {
    pub fn serves(&self, model: &ModelName) -> bool {
        self.models.iter().any(|m| m == model)
    }
    pub fn upstream_model<'a>(&'a self, model: &'a ModelName) -> &'a ModelName {
        self.model_mapping.get(model).unwrap_or(model)
    }
    pub fn admits_group(&self, group: &GroupName) -> bool {
        self.groups.as_ref().is_none_or(|groups| groups.contains(group))
    }
}

/// Prices in nano-units per one million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input: Money,
    pub cached_input: Money,
    pub output: Money,
}

impl Price {
    /// The charge for `usage` at this price times `multiplier`, rounded half up to a
    /// nano-unit. Cached input tokens are part of `input_tokens` and billed at the cached
    /// price only, never twice.
    pub fn charge(&self, usage: &TokenUsage, multiplier: Multiplier) -> Money {
        let cached = i128::from(usage.cached_tokens.min(usage.input_tokens));
        let uncached = i128::from(usage.input_tokens) - cached;
        let per_million = uncached * i128::from(self.input.nanos())
            + cached * i128::from(self.cached_input.nanos())
            + i128::from(usage.output_tokens) * i128::from(self.output.nanos());
        let scaled = per_million * i128::from(multiplier.millionths());
        let denominator: i128 = 1_000_000 * 1_000_000;
        let rounded = (scaled + denominator / 2) / denominator;
        Money::from_nanos(i64::try_from(rounded).unwrap_or(i64::MAX))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub name: ModelName,
    pub price: Price,
    pub managed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charge_bills_cached_tokens_once() {
        let price = Price {
            input: Money::parse_decimal("0.15").unwrap(),
            cached_input: Money::parse_decimal("0.075").unwrap(),
            output: Money::parse_decimal("0.60").unwrap(),
        };
        let usage = TokenUsage { input_tokens: 1_000_000, cached_tokens: 400_000, output_tokens: 1_000_000 };
        // 600k × 0.15 + 400k × 0.075 + 1M × 0.60 = 0.09 + 0.03 + 0.60
        assert_eq!(price.charge(&usage, Multiplier::ONE), Money::parse_decimal("0.72").unwrap());
        let half = Multiplier::parse_decimal("0.5").unwrap();
        assert_eq!(price.charge(&usage, half), Money::parse_decimal("0.36").unwrap());
        assert_eq!(price.charge(&TokenUsage::default(), Multiplier::ONE), Money::ZERO);
    }
}
